// Data buffers between nodes (127.0.0.x runtimes of one cluster): large
// inputs and outputs cross byte-exact, and neither side keeps them.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <vector>

#include "chimaera/chimaera.h"
#include "runtime_fixture.h"
#include "small_message/small_message_client.h"

namespace {

using chi::small_message::EchoTask;

constexpr char kWorkers[] =
    "workers:\n  low_latency: 1\n  high_latency: 1\n  reinforcement: 0\n";

/** Stops node `i`'s runtime (SIGSTOP, every thread stopped) for `us`
 * microseconds, then lets it go on. */
::testing::AssertionResult PauseNode(chi_test::LocalCluster &cluster, int i,
                                     hshm::u64 us) {
  const int pid = cluster.node(i).pid();
  if (pid <= 0 || kill(pid, SIGSTOP) != 0) {
    return ::testing::AssertionFailure() << "cannot stop node " << i;
  }
  const bool stopped = chi_test::WaitAllThreadsStopped(pid);
  if (stopped) usleep(us);
  if (kill(pid, SIGCONT) != 0) {
    return ::testing::AssertionFailure() << "cannot resume node " << i;
  }
  if (!stopped) return ::testing::AssertionFailure() << "node did not stop";
  return ::testing::AssertionSuccess();
}

/** Byte `j` of echo `i`'s input. */
char PatternByte(hshm::u64 i, hshm::u64 j) {
  return static_cast<char>((j * 131 + i * 7 + (j >> 12)) & 0xff);
}

// 1 MiB echoes to the container on node 2, 8 in flight, each with its own
// bytes. Node 2 sends each reply from the method's output buffer without a
// copy and frees it once ZeroMQ is done with it: every reply must arrive
// byte-exact, and 96 MiB of replies must pass through node 2's 32 MiB data
// segments (a leaked buffer would fill them within 32 echoes).
TEST(RemoteDataTest, LargeEchoesToAnotherNodeAreExactAndFreed) {
  constexpr hshm::u64 kSize = 1 << 20;
  constexpr size_t kInFlight = 8;
  constexpr hshm::u64 kEchoes = 96;
  chi_test::LocalCluster cluster(2, kWorkers);
  ASSERT_TRUE(cluster.Start().ok()) << cluster.Logs();
  ASSERT_TRUE(cluster.Connect(1).ok());
  chi::small_message::Client sm;
  ASSERT_TRUE(sm.Create("remote_echo", 2).ok());
  const chi::DomainQuery on_node_2 = chi::DomainQuery::GetGlobalId(1);
  std::vector<chi::FullPtr<char>> bufs(kInFlight);
  for (auto &b : bufs) {
    b = CHI_IPC->AllocateBuffer(kSize);
    ASSERT_FALSE(b.IsNull());
  }
  std::vector<chi::FullPtr<EchoTask>> tasks(kInFlight);
  std::vector<hshm::u64> echo_of(kInFlight);
  hshm::u64 exact = 0;
  for (hshm::u64 i = 0; i < kEchoes + kInFlight; ++i) {
    const size_t slot = i % kInFlight;
    chi::FullPtr<EchoTask> &t = tasks[slot];
    if (!t.IsNull()) {
      ASSERT_TRUE(t->WaitFor(10000000)) << "echo " << echo_of[slot];
      ASSERT_TRUE(t->GetStatus().ok())
          << "echo " << echo_of[slot] << ": " << t->GetStatus();
      ASSERT_EQ(t->ret_size_, kSize);
      const char *ret = CHI_IPC->DataBuffer(t->ret_, t->ret_size_);
      ASSERT_NE(ret, nullptr);
      hshm::u64 wrong = 0;
      for (hshm::u64 j = 0; j < kSize; ++j) {
        wrong += ret[j] != PatternByte(echo_of[slot], j);
      }
      EXPECT_EQ(wrong, 0u) << "echo " << echo_of[slot];
      exact += wrong == 0;
      (void)CHI_IPC->FreeBuffer(t->ret_);
      CHI_IPC->DelTask(t);
      t = chi::FullPtr<EchoTask>();
    }
    if (i >= kEchoes) continue;
    for (hshm::u64 j = 0; j < kSize; ++j)
      bufs[slot].ptr_[j] = PatternByte(i, j);
    echo_of[slot] = i;
    t = sm.AsyncEcho(bufs[slot].shm_, kSize, on_node_2);
    ASSERT_FALSE(t.IsNull());
  }
  EXPECT_EQ(exact, kEchoes);
  for (auto &b : bufs) (void)CHI_IPC->FreeBuffer(b.shm_);
  EXPECT_EQ(cluster.StopAll().ToString(), "OK") << cluster.Logs();
}

// A node whose requester stalls (stopped, its connection up) cannot pin
// its own data segments with the replies ZeroMQ holds for it: past an
// eighth of the smaller segment (4 MiB here), reply outputs are copied out
// and their buffers freed at once. Node 2 runs six 4 MiB echoes for node 1
// after node 1 stopped (they wait behind a long Compute there); a client
// of node 2 must then still get 20 of its 32 MiB client_data.
// A StencilRun sent to another node is refused there: that node could not
// tell when its submitter gives up, and would run all its steps.
TEST(RemoteDataTest, AStencilRunOnAnotherNodeIsRefused) {
  chi_test::LocalCluster cluster(2, kWorkers);
  ASSERT_TRUE(cluster.Start().ok()) << cluster.Logs();
  ASSERT_TRUE(cluster.Connect(1).ok());
  chi::small_message::Client sm;
  ASSERT_TRUE(sm.Create("remote_stencil", 2).ok());
  auto remote =
      sm.StencilRun(1, 1u << 20, 20000ull, chi::DomainQuery::GetGlobalId(1));
  ASSERT_FALSE(remote.ok());
  EXPECT_EQ(remote.status().code(), hshm::StatusCode::kInvalidArgument)
      << remote.status();
  EXPECT_NE(remote.status().message().find("could not be stopped"),
            std::string::npos)
      << remote.status();
  // Its own node's container still runs one.
  auto local = sm.StencilRun(2, 3, 10ull, chi::DomainQuery::GetGlobalId(0));
  ASSERT_TRUE(local.ok()) << local.status() << cluster.Logs();
  EXPECT_EQ(cluster.StopAll().ToString(), "OK") << cluster.Logs();
}

TEST(RemoteDataTest, AStalledRequesterCannotPinTheRepliersSegments) {
  constexpr hshm::u64 kSize = 4 << 20;
  constexpr int kEchoes = 6;
  chi_test::LocalCluster cluster(2, kWorkers);
  ASSERT_TRUE(cluster.Start().ok()) << cluster.Logs();
  ASSERT_TRUE(cluster.Connect(1).ok());
  chi::small_message::Client sm;
  ASSERT_TRUE(sm.Create("pin_replies", 2).ok());
  const chi::DomainQuery on_node_2 = chi::DomainQuery::GetGlobalId(1);
  chi::FullPtr<char> buf = CHI_IPC->AllocateBuffer(kSize);
  ASSERT_FALSE(buf.IsNull());
  for (hshm::u64 j = 0; j < kSize; ++j) buf.ptr_[j] = PatternByte(1, j);
  // About a second of work on node 2's only low-latency worker.
  auto busy = sm.AsyncCompute(hshm::u64{1} << 29, 1, on_node_2);
  ASSERT_FALSE(busy.IsNull());
  for (int i = 0; i < kEchoes; ++i) {
    ASSERT_FALSE(sm.AsyncEcho(buf.shm_, kSize, on_node_2).IsNull());
  }
  usleep(300000);  // node 1 forwards them; node 2 queues them
  const int pid = cluster.node(1).pid();
  ASSERT_GT(pid, 0);
  ASSERT_EQ(kill(pid, SIGSTOP), 0);
  ASSERT_TRUE(chi_test::WaitAllThreadsStopped(pid));
  // The Compute ends and node 2 replies to the stopped node 1. (The tasks
  // stay with node 1: this process no longer touches them.)
  sleep(3);
  ASSERT_TRUE(cluster.Connect(2).ok());
  chi::FullPtr<char> big = CHI_IPC->AllocateBuffer(20 << 20);
  EXPECT_FALSE(big.IsNull()) << "node 2's client_data is pinned by replies";
  if (!big.IsNull()) (void)CHI_IPC->FreeBuffer(big.shm_);
  cluster.Disconnect();
  ASSERT_EQ(kill(pid, SIGCONT), 0);
  EXPECT_EQ(cluster.StopAll().ToString(), "OK") << cluster.Logs();
}

// A requester that pauses (stopped) longer than the dead-node limit while
// its remote request's reply arrives must still get that reply: when it
// resumes, the time it did not run does not count towards its peers' death.
// (Before, its first heartbeat tick often took node 2 for dead and failed
// the Compute with "node 2 stopped answering": 3 of 4 runs.)
TEST(RemoteDataTest, ARequesterThatPausedStillGetsItsReply) {
  chi_test::LocalCluster cluster(2, kWorkers);
  ASSERT_TRUE(cluster.Start().ok()) << cluster.Logs();
  ASSERT_TRUE(cluster.Connect(1).ok());
  chi::small_message::Client sm;
  ASSERT_TRUE(sm.Create("pause", 2).ok());
  const chi::DomainQuery on_node_2 = chi::DomainQuery::GetGlobalId(1);
  auto t = sm.AsyncCompute(hshm::u64{1} << 27, 1, on_node_2);  // ~0.25 s
  ASSERT_FALSE(t.IsNull());
  usleep(100000);
  ASSERT_TRUE(PauseNode(cluster, 1, (chi_test::DeadAfterMs() + 500) * 1000));
  ASSERT_TRUE(t->WaitFor(10000000));
  EXPECT_TRUE(t->GetStatus().ok()) << t->GetStatus();
  CHI_IPC->DelTask(t);
  EXPECT_EQ(cluster.StopAll().ToString(), "OK") << cluster.Logs();
}

// A requester that node 2 took for dead (it was stopped) while node 2 ran
// its request learns it when it resumes, and the request fails at once with
// Unavailable: node 2 dropped the reply, as it goes to a dead node. Before,
// nothing told node 1, and the task waited out request_timeout_ms (60 s
// here).
TEST(RemoteDataTest, ARequesterTakenForDeadLearnsItAtOnce) {
  chi_test::LocalCluster cluster(2, kWorkers, "  request_timeout_ms: 60000\n");
  ASSERT_TRUE(cluster.Start().ok()) << cluster.Logs();
  ASSERT_TRUE(cluster.Connect(1).ok());
  chi::small_message::Client sm;
  ASSERT_TRUE(sm.Create("taken_for_dead", 2).ok());
  const chi::DomainQuery on_node_2 = chi::DomainQuery::GetGlobalId(1);
  ASSERT_TRUE(sm.Noop(on_node_2).ok());
  // Ends after node 2 took the stopped node 1 for dead.
  const chi::u32 io_us = (chi_test::DeadAfterMs() + 1000) * 1000;
  auto t = sm.AsyncIo(io_us, on_node_2);
  ASSERT_FALSE(t.IsNull());
  usleep(100000);
  ASSERT_TRUE(PauseNode(cluster, 1, io_us + 500000));
  const auto resumed = std::chrono::steady_clock::now();
  ASSERT_TRUE(t->WaitFor(10000000)) << cluster.Logs();
  EXPECT_LT(std::chrono::steady_clock::now() - resumed,
            std::chrono::seconds(3));
  EXPECT_EQ(t->GetStatus().code(), hshm::StatusCode::kUnavailable)
      << t->GetStatus();
  CHI_IPC->DelTask(t);
  // Node 2 still serves node 1.
  EXPECT_TRUE(sm.Noop(on_node_2).ok()) << cluster.Logs();
  EXPECT_EQ(cluster.StopAll().ToString(), "OK") << cluster.Logs();
}

// The reply to a forwarded task does not wait for the worker that forwarded
// it while that worker runs a long task that never yields. A reply that
// comes after the runtime took the stuck worker's lanes goes to another
// worker (the 300 ms Io); one already waiting in its inbox then (the 5 ms
// Io, whose reply comes before the runtime sees the worker stuck) moves
// with its lanes. Before, each Io completed only when the seconds-long
// Compute on its forwarding worker ended.
TEST(RemoteDataTest, AReplyDoesNotWaitForAStuckForwardingWorker) {
  chi_test::LocalCluster cluster(
      2, "workers:\n  low_latency: 3\n  high_latency: 1\n");
  ASSERT_TRUE(cluster.Start().ok()) << cluster.Logs();
  ASSERT_TRUE(cluster.Connect(1).ok());
  ASSERT_EQ(CHI_IPC->num_lanes(), 3u);
  chi::small_message::Client sm;
  // Even containers on node 1, odd ones on node 2; a container's tasks go
  // through lane (id % 3): 1 and 4 share lane 1, so one worker pops both.
  ASSERT_TRUE(sm.Create("stuck_forwarder", 6).ok());
  const chi::DomainQuery on_node_2 = chi::DomainQuery::GetGlobalId(1);
  ASSERT_TRUE(sm.Noop(on_node_2).ok());
  for (chi::u32 io_us : {300000u, 5000u}) {
    const auto t0 = std::chrono::steady_clock::now();
    auto io = sm.AsyncIo(io_us, on_node_2);
    ASSERT_FALSE(io.IsNull());
    if (io_us > 100000) usleep(30000);
    // About 1.5 s here (longer under the sanitizers).
    auto wedge = sm.AsyncCompute(hshm::u64{1} << 29, 7,
                                 chi::DomainQuery::GetGlobalId(4));
    ASSERT_FALSE(wedge.IsNull());
    ASSERT_TRUE(io->WaitFor(30000000));
    const double io_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
            .count();
    const bool wedge_done = wedge->IsComplete();
    EXPECT_TRUE(io->GetStatus().ok()) << io->GetStatus();
    EXPECT_FALSE(wedge_done) << "the Compute was too short to test anything";
    EXPECT_LT(io_s, 1.0) << "Io of " << io_us << " us";
    printf("remote Io of %u us: %.2f s\n", io_us, io_s);
    ASSERT_TRUE(wedge->WaitFor(120000000));
    EXPECT_TRUE(wedge->GetStatus().ok()) << wedge->GetStatus();
    CHI_IPC->DelTask(io);
    CHI_IPC->DelTask(wedge);
  }
  EXPECT_TRUE(sm.Noop(on_node_2).ok());
  EXPECT_EQ(cluster.StopAll().ToString(), "OK") << cluster.Logs();
}

}  // namespace
