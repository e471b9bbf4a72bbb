// Measured load against a real runtime: per-worker busy fractions and the
// per-method cost models, as chimaera_stat --json reports them.
#include <chrono>
#include <string>
#include <thread>

#include "chimod_test_fixture.h"
#include "small_message/small_message_client.h"

namespace {

using chi::small_message::EchoTask;
using chi_test::ChiModTest;
using chi_tools::JsonValue;

using LoadModelTest = ChiModTest;

/** The cost model of `method` ("module.Method") in `stat`, or null. */
const JsonValue *FindModel(const JsonValue &stat, const std::string &method) {
  for (const JsonValue &m : stat["cost_models"].array) {
    if (m["method"].str == method) return &m;
  }
  return nullptr;
}

/** The largest busy fraction of any worker in `stat`. */
double MaxBusy(const JsonValue &stat) {
  double busy = 0;
  for (const JsonValue &w : stat["workers"].array) {
    busy = std::max(busy, w["busy"].Num());
  }
  return busy;
}

TEST_F(LoadModelTest, EchoCostGrowsWithItsInputAndBusyFollowsTheLoad) {
  chi::small_message::Client sm;
  ASSERT_TRUE(sm.Create("load_model", 1).ok());
  const chi::u64 kSizes[] = {1024, 256 * 1024, 1024 * 1024};
  chi::FullPtr<char> buf = CHI_IPC->AllocateBuffer(kSizes[2]);
  ASSERT_FALSE(buf.IsNull());
  std::memset(buf.ptr_, 7, kSizes[2]);
  // Echo buffers of three sizes until the model has seen enough of them
  // (one run in 16 is timed; the stat refreshes every 100 ms).
  const JsonValue *model = nullptr;
  JsonValue stat;
  double busy_under_load = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    for (int i = 0; i < 60; ++i) {
      auto f = sm.Call<EchoTask>(buf.shm_, kSizes[i % 3]);
      ASSERT_TRUE(f.status().ok()) << f.status();
    }
    stat = chi_test::StatJson();
    busy_under_load = std::max(busy_under_load, MaxBusy(stat));
    model = FindModel(stat, "small_message.Echo");
    if (model && (*model)["samples"].Num() >= 20 && busy_under_load > 0.2) {
      break;
    }
  }
  ASSERT_NE(model, nullptr) << "no Echo cost model was learned";
  EXPECT_GE((*model)["samples"].Num(), 20);
  // Copying a MiB costs more than copying a KiB: a positive slope, and the
  // learned line ranks the sizes the way they cost.
  double per_byte = (*model)["ns_per_byte"].Num();
  double base = (*model)["base_ns"].Num();
  EXPECT_GT(per_byte, 0) << "base " << base;
  EXPECT_GT(base + per_byte * kSizes[2], base + per_byte * kSizes[0]);
  EXPECT_GT(busy_under_load, 0.2) << "a worker copying MiBs back to back";
  // Idle again: busy fractions decay towards 0 within a second or two.
  bool quiet = false;
  for (int i = 0; i < 50 && !quiet; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    stat = chi_test::StatJson();
    quiet = MaxBusy(stat) < 0.1;
  }
  EXPECT_TRUE(quiet) << "max busy " << MaxBusy(stat) << " on an idle runtime";
  EXPECT_GE(stat["load"]["busy_avg"].Num(-1), 0);
  EXPECT_EQ(stat["load"]["queued"].Num(-1), 0);
  EXPECT_TRUE(CHI_IPC->FreeBuffer(buf.shm_).ok());
}

}  // namespace
