// The runtime's DelTask frees a task's error text and extension only where a
// client's rewrite of its own subtask's block cannot point it: never a
// data-segment buffer, the process queue, the worker table or the task
// itself (runtime library alone: the segments, no workers).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "chimaera/config_manager.h"
#include "chimaera/ipc_manager.h"
#include "chimaera/task.h"

namespace {

/** A free TCP port on 127.0.0.1 (bound once and released). */
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

/** This process as a runtime's IPC layer: its three segments (own port, so
 * own names), destroyed in TearDown whatever the test did. */
class RuntimeExtrasTest : public ::testing::Test {
 protected:
  void SetUp() override {
    conf_ = "/tmp/chimaera_extras_test_" + std::to_string(getpid()) + ".yaml";
    FILE *f = fopen(conf_.c_str(), "w");
    ASSERT_NE(f, nullptr);
    fprintf(f,
            "network:\n  port: %d\nshm:\n  main: 8m\n  client_data: 8m\n"
            "  runtime_data: 8m\n",
            FreePort());
    fclose(f);
    setenv("CHI_SERVER_CONF", conf_.c_str(), 1);
    ASSERT_TRUE(CHI_CONFIG_MANAGER->Load().ok());
    hshm::Status s = CHI_IPC->ServerInit();
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  void TearDown() override {
    CHI_IPC->Finalize();
    unsetenv("CHI_SERVER_CONF");
    unlink(conf_.c_str());
  }

  /** A fresh task of this (the runtime) process, as a subtask would be. */
  static chi::FullPtr<chi::Task> NewTask() {
    auto t = CHI_IPC->NewTaskDefault<chi::Task>();
    EXPECT_FALSE(t.IsNull());
    return t;
  }

  std::string conf_;
};

// What a client writes into a runtime subtask's err_ or ext_ is freed only
// if it is a live block of main other than the task and the runtime's
// structures.
TEST_F(RuntimeExtrasTest, ARewrittenSubtaskCannotFreeWhatIsNotItsOwn) {
  auto *main = CHI_IPC->main_alloc();
  const hipc::Pointer queue = main->ToPointer(CHI_IPC->process_queue());
  const hipc::Pointer table = main->ToPointer(CHI_IPC->workers());
  const chi::u64 queue_size = main->LiveBlockSize(queue);
  const chi::u64 table_size = main->LiveBlockSize(table);
  ASSERT_GT(queue_size, 0u);
  ASSERT_GT(table_size, 0u);
  auto rdata = CHI_IPC->AllocateBuffer(64);        // runtime_data
  auto cdata = CHI_IPC->AllocateClientBuffer(64);  // client_data
  ASSERT_FALSE(rdata.IsNull());
  ASSERT_FALSE(cdata.IsNull());
  const chi::u64 rdata_size = CHI_IPC->rdata_alloc()->LiveBlockSize(rdata.shm_);
  const chi::u64 cdata_size = CHI_IPC->cdata_alloc()->LiveBlockSize(cdata.shm_);
  ASSERT_GT(rdata_size, 0u);
  ASSERT_GT(cdata_size, 0u);

  const hipc::Pointer targets[] = {queue, table, rdata.shm_, cdata.shm_};
  for (const hipc::Pointer &p : targets) {
    auto t = NewTask();
    t->err_ = p;
    CHI_IPC->DelTask(t);
    auto u = NewTask();
    u->ext_ = p;
    CHI_IPC->DelTask(u);
  }
  EXPECT_EQ(main->LiveBlockSize(queue), queue_size);
  EXPECT_EQ(main->LiveBlockSize(table), table_size);
  EXPECT_EQ(CHI_IPC->rdata_alloc()->LiveBlockSize(rdata.shm_), rdata_size);
  EXPECT_EQ(CHI_IPC->cdata_alloc()->LiveBlockSize(cdata.shm_), cdata_size);

  // Its own block as its extension: freed once, as the task.
  auto t = NewTask();
  t->ext_ = t.shm_;
  t->err_ = t.shm_;
  const hipc::Pointer own = t.shm_;
  CHI_IPC->DelTask(t);
  EXPECT_EQ(main->LiveBlockSize(own), 0u);
  auto again = NewTask();  // the heap still hands out blocks
  EXPECT_FALSE(again.IsNull());
  CHI_IPC->DelTask(again);

  EXPECT_TRUE(CHI_IPC->FreeBuffer(rdata.shm_).ok());
  EXPECT_TRUE(CHI_IPC->FreeBuffer(cdata.shm_).ok());
}

// The runtime's own error text in its subtask is still freed with it.
TEST_F(RuntimeExtrasTest, ARealErrorTextIsFreedWithTheTask) {
  auto t = NewTask();
  CHI_IPC->SetTaskError(t.ptr_, "a runtime subtask failed");
  const hipc::Pointer err = t->err_;
  ASSERT_FALSE(err.IsNull());
  ASSERT_GT(CHI_IPC->main_alloc()->LiveBlockSize(err), 0u);
  CHI_IPC->DelTask(t);
  EXPECT_EQ(CHI_IPC->main_alloc()->LiveBlockSize(err), 0u);
}

}  // namespace
