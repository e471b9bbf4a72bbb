#include "hermes_shm/memory/posix_shm.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "test_util.h"

namespace {

using hipc::PosixShmMmap;
using hshm::StatusCode;

TEST(PosixShmTest, NameCarriesUserAndKey) {
  std::string n = PosixShmMmap::MakeName("node 2/x", "main");
  EXPECT_EQ(n.rfind("/chimaera_", 0), 0u);
  EXPECT_NE(n.find("node_2_x"), std::string::npos);
  EXPECT_EQ(n.find('/', 1), std::string::npos);
  EXPECT_NE(PosixShmMmap::MakeName("a", "main"),
            PosixShmMmap::MakeName("b", "main"));
}

TEST(PosixShmTest, CreateAttachDestroy) {
  std::string name = hshm_test::UniqueShmName("seg");
  PosixShmMmap a;
  ASSERT_TRUE(a.Create(name, 1 << 20).ok());
  EXPECT_EQ(a.data_size(), 1u << 20);
  EXPECT_EQ(a.creator_pid(), getpid());
  std::strcpy(a.data(), "hello");
  // Mode 0600.
  struct stat st;
  ASSERT_EQ(stat(("/dev/shm" + name).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // A second creator is refused.
  PosixShmMmap dup;
  EXPECT_EQ(dup.Create(name, 4096).code(), StatusCode::kAlreadyExists);
  // Another process sees the data.
  pid_t pid = fork();
  if (pid == 0) {
    PosixShmMmap b;
    bool ok = b.Attach(name).ok() && std::strcmp(b.data(), "hello") == 0;
    if (ok) std::strcpy(b.data(), "world");
    _exit(ok ? 0 : 1);
  }
  int wstatus = 0;
  waitpid(pid, &wstatus, 0);
  EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
  EXPECT_STREQ(a.data(), "world");
  EXPECT_TRUE(a.Destroy().ok());
  EXPECT_FALSE(PosixShmMmap::Exists(name));
  PosixShmMmap c;
  EXPECT_EQ(c.Attach(name).code(), StatusCode::kNotFound);
}

TEST(PosixShmTest, ExhaustedDevShmIsAnErrorAtCreation) {
  std::string name = hshm_test::UniqueShmName("huge");
  PosixShmMmap a;
  // Far more than any /dev/shm here: must fail cleanly, not SIGBUS later.
  hshm::Status s = a.Create(name, size_t(1) << 46);
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(s.code() == StatusCode::kOutOfMemory ||
              s.code() == StatusCode::kIoError)
      << s;
  EXPECT_FALSE(PosixShmMmap::Exists(name));
}

TEST(PosixShmTest, AttachRejectsForeignSegment) {
  std::string name = hshm_test::UniqueShmName("foreign");
  int fd = shm_open(name.c_str(), O_CREAT | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, 8192), 0);
  close(fd);
  PosixShmMmap a;
  EXPECT_EQ(a.Attach(name).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(PosixShmMmap::Unlink(name).ok());
}

}  // namespace
