#include "hermes_shm/status.h"

#include <gtest/gtest.h>

namespace {

using hshm::Status;
using hshm::StatusCode;
using hshm::StatusOr;

TEST(StatusTest, OkAndErrors) {
  Status ok;
  EXPECT_TRUE(ok.ok());
  EXPECT_EQ(ok.ToString(), "OK");
  Status nf = Status::NotFound("pool 'x'");
  EXPECT_FALSE(nf.ok());
  EXPECT_EQ(nf.code(), StatusCode::kNotFound);
  EXPECT_EQ(nf.ToString(), "NotFound: pool 'x'");
  Status io = Status::FromErrno("open(/x)", ENOENT);
  EXPECT_EQ(io.code(), StatusCode::kIoError);
  EXPECT_NE(io.message().find("open(/x)"), std::string::npos);
}

StatusOr<int> Half(int v) {
  if (v % 2) return Status::InvalidArgument("odd");
  return v / 2;
}

Status UseHalf(int v, int *out) {
  HSHM_ASSIGN_OR_RETURN(*out, Half(v));
  HSHM_RETURN_IF_ERROR(Status::Ok());
  return Status::Ok();
}

TEST(StatusTest, StatusOrAndMacros) {
  StatusOr<int> a = Half(4);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a, 2);
  StatusOr<int> b = Half(3);
  EXPECT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kInvalidArgument);
  int out = -1;
  EXPECT_TRUE(UseHalf(8, &out).ok());
  EXPECT_EQ(out, 4);
  EXPECT_EQ(UseHalf(5, &out).code(), StatusCode::kInvalidArgument);
  // An ok Status cannot masquerade as a value-less StatusOr.
  StatusOr<int> bad{Status::Ok()};
  EXPECT_EQ(bad.status().code(), StatusCode::kInternal);
}

}  // namespace
