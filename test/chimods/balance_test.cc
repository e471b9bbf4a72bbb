// Load balancing across nodes: three runtimes on 127.0.0.x exchange load
// reports, and GetDynamic() tasks go to the least loaded node (the default
// Monitor(kGlobalSchedule) of a pool on several nodes). The load is
// small_message's Io: each container models a device that serves one I/O at
// a time, and a task's fiber waits for its I/O, so 2 cores suffice.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "chimaera/chimaera.h"
#include "runtime_fixture.h"
#include "small_message/small_message_client.h"

namespace {

using chi::DomainQuery;
using chi::FullPtr;
using chi::small_message::IoTask;

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
// Sanitizer builds check races and memory, not speed: their runtimes are
// several times slower, so reports lag more and the spread is looser (TSan
// with a second multi-node test in parallel on 2 cores: up to 1.77; all on
// one node would be 3.0). Forwarding is slow enough there that spreading
// may not finish sooner (TSan in CI: 1.14 s spread against 1.04 s local),
// so the makespan is only checked not to be far worse.
constexpr double kMaxOverMean = 2.0;
constexpr double kMakespanRatio = 1.5;
#else
constexpr double kMaxOverMean = 1.10;  // the aim
constexpr double kMakespanRatio = 0.6;
#endif

constexpr char kWorkers[] =
    "workers:\n  low_latency: 1\n  high_latency: 1\n  reinforcement: 1\n";

/** Where a batch of Io tasks ran and how long it took. */
struct Batch {
  std::map<chi::u32, int> per_node;  ///< Tasks per node.
  double makespan_s = 0;             ///< First submit to last completion.
  int failed = 0;
  /** Max over mean of the tasks per node, over `nodes` nodes. */
  double MaxOverMean(int nodes) const {
    int total = 0, most = 0;
    for (auto &kv : per_node) {
      total += kv.second;
      most = std::max(most, kv.second);
    }
    return total ? most * static_cast<double>(nodes) / total : 0;
  }
};

/** Submits `n` Io tasks of `us` to `dom` at once and waits for all. */
Batch RunIo(chi::small_message::Client &sm, int n, chi::u32 us,
            const DomainQuery &dom) {
  Batch b;
  std::vector<FullPtr<IoTask>> tasks;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) tasks.push_back(sm.AsyncIo(us, dom));
  for (auto &t : tasks) {
    if (t.IsNull() || !t->WaitFor(20000000) || !t->GetStatus().ok()) {
      ++b.failed;
    } else {
      ++b.per_node[t->node_];
    }
  }
  b.makespan_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  for (auto &t : tasks) {
    if (!t.IsNull() && t->IsComplete()) CHI_IPC->DelTask(t);
  }
  return b;
}

std::string Describe(const Batch &b) {
  std::string s = "per node:";
  for (auto &kv : b.per_node) {
    s += " " + std::to_string(kv.first) + "=" + std::to_string(kv.second);
  }
  return s + ", makespan " + std::to_string(b.makespan_s) + " s, failed " +
         std::to_string(b.failed);
}

// Every dynamic task submitted at node 1: spread evenly over the three
// nodes (aim: max/mean <= 1.10), so the makespan is about a third of what
// it is when they all stay on node 1 (balance.dynamic: local).
TEST(BalanceTest, DynamicTasksSpreadOverTheNodesAndFinishSooner) {
  Batch spread, local;
  for (bool balanced : {true, false}) {
    chi_test::LocalCluster cluster(
        3, std::string(kWorkers) + "balance:\n  load_report_ms: 10\n" +
               (balanced ? "" : "  dynamic: local\n"));
    ASSERT_TRUE(cluster.Start().ok()) << cluster.Logs();
    ASSERT_TRUE(cluster.Connect(1).ok());
    chi::small_message::Client sm;
    ASSERT_TRUE(sm.Create("io", 3).ok()) << cluster.Logs();
    Batch b = RunIo(sm, 90, 10000, DomainQuery::GetDynamic());
    EXPECT_EQ(b.failed, 0) << Describe(b);
    (balanced ? spread : local) = b;
    EXPECT_EQ(cluster.StopAll().ToString(), "OK") << cluster.Logs();
  }
  printf("balanced: %s, max/mean %.2f\nlocal: %s, max/mean %.2f\n",
         Describe(spread).c_str(), spread.MaxOverMean(3),
         Describe(local).c_str(), local.MaxOverMean(3));
  EXPECT_LE(spread.MaxOverMean(3), kMaxOverMean) << Describe(spread);
  EXPECT_EQ(spread.per_node.size(), 3u);
  EXPECT_EQ(local.per_node.size(), 1u) << Describe(local);
  // 90 x 10 ms on one device is 0.9 s; spread over three, 0.3 s.
  EXPECT_LT(spread.makespan_s, kMakespanRatio * local.makespan_s)
      << Describe(spread) << " vs " << Describe(local);
}

// A node already busy with other work (its reports say so) gets few of the
// dynamic tasks: they go to the two idle nodes.
TEST(BalanceTest, ABusyNodeIsAvoided) {
  chi_test::LocalCluster cluster(
      3, std::string(kWorkers) + "balance:\n  load_report_ms: 10\n");
  ASSERT_TRUE(cluster.Start().ok()) << cluster.Logs();
  ASSERT_TRUE(cluster.Connect(1).ok());
  chi::small_message::Client sm;
  ASSERT_TRUE(sm.Create("io", 3).ok()) << cluster.Logs();
  // Container 1 lives on node 2: 80 I/Os of 20 ms queue there (1.6 s: a
  // TSan build under load once saw 7 of 40 dynamic tasks reach node 2 when
  // 40 queued I/Os (0.8 s) were all it had to finish).
  std::vector<FullPtr<IoTask>> busy;
  for (int i = 0; i < 80; ++i) {
    busy.push_back(sm.AsyncIo(20000, DomainQuery::GetGlobalId(1)));
    ASSERT_FALSE(busy.back().IsNull());
  }
  // Wait (bounded) until node 2's own report, seen from node 1, shows them.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (;;) {
    auto stat = chi::admin::Client().Stat();
    ASSERT_TRUE(stat.ok()) << stat.status() << cluster.Logs();
    size_t at = stat->find(" 2=", stat->find("node loads"));
    ASSERT_NE(at, std::string::npos) << *stat;
    if (std::atoi(stat->c_str() + at + 3) >= 30) break;
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << *stat;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  Batch b = RunIo(sm, 40, 5000, DomainQuery::GetDynamic());
  EXPECT_EQ(b.failed, 0) << Describe(b);
  printf("with node 2 busy: %s\n", Describe(b).c_str());
  EXPECT_LE(b.per_node[2], 2) << Describe(b);
  // Both idle nodes share the rest; not evenly: the submitting node counts
  // a 2-task margin for the hop to node 3. A Release build splits them
  // 21/19; under TSan, whose slowness lets load reports arrive while the
  // batch is placed, 25/15 with 32-task lane pops and 28-31/9-12 with 4
  // (and a shorter makespan, 0.15-0.19 s against 0.22-0.24 s).
  EXPECT_GE(b.per_node[1], 10) << Describe(b);
  EXPECT_GE(b.per_node[3], 7) << Describe(b);
  for (auto &t : busy) {
    ASSERT_TRUE(t->WaitFor(20000000));
    EXPECT_TRUE(t->GetStatus().ok()) << t->GetStatus();
    EXPECT_EQ(t->node_, 2u);
    CHI_IPC->DelTask(t);
  }
  // The reports are visible in the stat.
  auto stat = chi::admin::Client().Stat();
  ASSERT_TRUE(stat.ok()) << stat.status() << cluster.Logs();
  EXPECT_NE(stat->find("node loads"), std::string::npos) << *stat;
  EXPECT_EQ(stat->find("load reports received 0;"), std::string::npos) << *stat;
  EXPECT_EQ(cluster.StopAll().ToString(), "OK") << cluster.Logs();
}

// One task at a time on an idle cluster: nothing is gained by crossing the
// network, so every dynamic task stays on the submitting node.
TEST(BalanceTest, AnIdleClusterKeepsDynamicTasksLocal) {
  chi_test::LocalCluster cluster(
      3, std::string(kWorkers) + "balance:\n  load_report_ms: 10\n");
  ASSERT_TRUE(cluster.Start().ok()) << cluster.Logs();
  ASSERT_TRUE(cluster.Connect(2).ok());
  chi::small_message::Client sm;
  ASSERT_TRUE(sm.Create("io", 3).ok()) << cluster.Logs();
  std::map<chi::u32, int> per_node;
  for (int i = 0; i < 50; ++i) {
    auto t = sm.AsyncIo(0, DomainQuery::GetDynamic());
    ASSERT_FALSE(t.IsNull());
    ASSERT_TRUE(t->WaitFor(10000000));
    ASSERT_TRUE(t->GetStatus().ok()) << t->GetStatus();
    ++per_node[t->node_];
    CHI_IPC->DelTask(t);
  }
  EXPECT_EQ(per_node[2], 50);
  EXPECT_EQ(cluster.StopAll().ToString(), "OK") << cluster.Logs();
}

// With balance.dynamic: local, a dynamic task sent from a node that holds
// none of the pool's containers goes to one that does (before, the default
// Monitor asked for a local container there, and the task failed with
// NotFound).
TEST(BalanceTest, ALocalDynamicTaskFromANodeWithoutContainersRunsElsewhere) {
  chi_test::LocalCluster cluster(
      2, std::string(kWorkers) + "balance:\n  dynamic: local\n");
  ASSERT_TRUE(cluster.Start().ok()) << cluster.Logs();
  ASSERT_TRUE(cluster.Connect(2).ok());
  chi::small_message::Client sm;
  ASSERT_TRUE(sm.Create("one_container", 1).ok()) << cluster.Logs();
  for (int i = 0; i < 10; ++i) {
    auto t = sm.AsyncIo(0, DomainQuery::GetDynamic());
    ASSERT_FALSE(t.IsNull());
    ASSERT_TRUE(t->WaitFor(10000000));
    EXPECT_TRUE(t->GetStatus().ok()) << t->GetStatus();
    EXPECT_EQ(t->node_, 1u);
    CHI_IPC->DelTask(t);
  }
  EXPECT_EQ(cluster.StopAll().ToString(), "OK") << cluster.Logs();
}

// Io's own contract: the device serves one I/O at a time, in order, and
// refuses absurd lengths.
TEST(BalanceTest, IoModelsASerialDevice) {
  chi_test::LocalCluster cluster(1, kWorkers);
  ASSERT_TRUE(cluster.Start().ok()) << cluster.Logs();
  ASSERT_TRUE(cluster.Connect(1).ok());
  chi::small_message::Client sm;
  ASSERT_TRUE(sm.Create("io1", 1).ok());
  Batch b = RunIo(sm, 10, 20000, DomainQuery::GetLocalId(0));
  EXPECT_EQ(b.failed, 0);
  EXPECT_GE(b.makespan_s, 0.19) << Describe(b);  // 10 x 20 ms, serial
  EXPECT_LT(b.makespan_s, 2.0) << Describe(b);
  auto bad = sm.AsyncIo(20000000, DomainQuery::GetLocalId(0));
  ASSERT_FALSE(bad.IsNull());
  ASSERT_TRUE(bad->WaitFor(5000000));
  EXPECT_EQ(bad->GetStatus().code(), hshm::StatusCode::kInvalidArgument);
  CHI_IPC->DelTask(bad);
  EXPECT_EQ(cluster.StopAll().ToString(), "OK") << cluster.Logs();
}

// A node that answers heartbeats but not a request (its Io lasts 6 s): the
// forwarded task fails with Timeout after network.request_timeout_ms
// (1500 ms here), and the node still serves other tasks. (The timeout also
// bounds the pool's creation on node 2, which took over 500 ms under TSan
// on a loaded 2-core CI machine.)
TEST(BalanceTest, AForwardedTaskWithoutAReplyTimesOut) {
  chi_test::LocalCluster cluster(2, kWorkers, "  request_timeout_ms: 1500\n");
  ASSERT_TRUE(cluster.Start().ok()) << cluster.Logs();
  ASSERT_TRUE(cluster.Connect(1).ok());
  chi::small_message::Client sm;
  hshm::Status created = sm.Create("io_timeout", 2);  // container 1 on node 2
  ASSERT_TRUE(created.ok()) << created << cluster.Logs();
  auto t0 = std::chrono::steady_clock::now();
  auto slow = sm.AsyncIo(6000000, DomainQuery::GetGlobalId(1));
  ASSERT_FALSE(slow.IsNull());
  ASSERT_TRUE(slow->WaitFor(10000000));
  double s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  EXPECT_EQ(slow->GetStatus().code(), hshm::StatusCode::kTimeout)
      << slow->GetStatus();
  EXPECT_GE(s, 1.45);
  EXPECT_LT(s, 5.0);
  CHI_IPC->DelTask(slow);
  EXPECT_TRUE(sm.Noop(DomainQuery::GetGlobalId(1)).ok());
  EXPECT_EQ(cluster.StopAll().ToString(), "OK") << cluster.Logs();
}

// Booking the device more than 60 s ahead is refused at once: 7 x 10 s are
// booked, and the 8th would start 70 s from now. (The node is killed at the
// end: a clean stop would wait out its 10 s drain for the booked Ios.)
TEST(BalanceTest, IoBookedFarAheadIsRefused) {
  chi_test::LocalCluster cluster(1, kWorkers);
  ASSERT_TRUE(cluster.Start().ok()) << cluster.Logs();
  ASSERT_TRUE(cluster.Connect(1).ok());
  chi::small_message::Client sm;
  ASSERT_TRUE(sm.Create("io_backlog", 1).ok());
  std::vector<chi::FullPtr<chi::small_message::IoTask>> booked;
  for (int i = 0; i < 7; ++i) {
    booked.push_back(sm.AsyncIo(10000000, DomainQuery::GetLocalId(0)));
    ASSERT_FALSE(booked.back().IsNull());
  }
  auto late = sm.AsyncIo(10000000, DomainQuery::GetLocalId(0));
  ASSERT_FALSE(late.IsNull());
  ASSERT_TRUE(late->WaitFor(5000000));
  EXPECT_EQ(late->GetStatus().code(), hshm::StatusCode::kResourceExhausted)
      << late->GetStatus();
  CHI_IPC->DelTask(late);
  for (auto &t : booked) EXPECT_FALSE(t->IsComplete());
  for (auto &t : booked) CHI_IPC->AbandonTask(t);
  cluster.Disconnect();
  cluster.node(1).Kill(SIGKILL);
}

}  // namespace
