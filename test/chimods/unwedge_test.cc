// A task that never yields cannot wedge the other lanes of its worker: the
// reinforcement thread sees the worker stuck in one loop iteration and
// hands its other lanes to an idle worker, and every task still completes
// exactly once.
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "chimaera/stop_signal.h"
#include "chimaera/task_graph.h"
#include "chimod_test_fixture.h"
#include "hermes_shm/memory/posix_shm.h"
#include "queue_test_mod.h"
#include "small_message/small_message_client.h"

namespace {

using chi::DomainQuery;
using chi::small_message::ComputeTask;
using chi::small_message::NoopTask;
using chi_tools::JsonValue;
using queue_test_mod::WhereTask;

using UnwedgeTest = chi_test::TwoWorkerTest;

/** Seconds `fn` takes. */
template <typename Fn>
double Seconds(Fn &&fn) {
  auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
      .count();
}

TEST_F(UnwedgeTest, ATaskThatNeverYieldsCannotWedgeItsWorkersOtherLanes) {
  chi::small_message::Client sm;
  ASSERT_TRUE(sm.Create("wedge", 4).ok());
  ASSERT_EQ(CHI_IPC->num_lanes(), 4u);
  ASSERT_TRUE(sm.Noop(DomainQuery::GetLocalId(2)).ok());
  // Container 0 (lane 0, worker 0): a Compute of about a second that never
  // yields.
  const chi::u64 kIters = 800000000ull;
  auto wedge =
      sm.Async<ComputeTask>(DomainQuery::GetLocalId(0), kIters, chi::u64{7});
  ASSERT_TRUE(wedge.status().code() != hshm::StatusCode::kOutOfMemory);
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  // Lane 2 is worker 0's too: its Noop must not wait for the Compute.
  chi::Status st;
  double s = Seconds([&] { st = sm.Noop(DomainQuery::GetLocalId(2)); });
  bool wedge_done = wedge.done();
  printf("Noop on the stuck worker's other lane: %.1f ms (Compute %s)\n",
         s * 1000, wedge_done ? "done" : "still running");
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_FALSE(wedge_done) << "the Compute was too short to test anything";
  EXPECT_LT(s, 1.0);
  // More work on every lane meanwhile: all of it completes.
  std::vector<chi::Future<NoopTask>> more;
  for (int i = 0; i < 400; ++i) {
    more.push_back(sm.Async<NoopTask>(
        DomainQuery::GetLocalId(1 + static_cast<chi::u32>(i) % 3)));
  }
  for (auto &f : more) {
    EXPECT_TRUE(f.WaitFor(10000000));
    EXPECT_TRUE(f.status().ok()) << f.status();
  }
  JsonValue stat = chi_test::StatJson();
  EXPECT_GE(stat["workers"].array[0]["lanes_unwedged"].Num(), 1)
      << "worker 0 kept its lanes";
  // The Compute itself finishes with its result; afterwards every lane
  // serves again.
  ASSERT_TRUE(wedge.WaitFor(60000000));
  ASSERT_TRUE(wedge.status().ok()) << wedge.status();
  for (int i = 0; i < 2000; ++i) {
    ASSERT_TRUE(sm.Noop(DomainQuery::GetLocalId(i % 4)).ok()) << i;
  }
}

TEST_F(UnwedgeTest, NewContainerLanesDoNotGoToAStuckWorker) {
  chi::small_message::Client sm;
  ASSERT_TRUE(sm.Create("wedge_first", 4).ok());
  ASSERT_EQ(CHI_IPC->num_lanes(), 4u);
  // The wedge's lane stays with its stuck worker: it must not be the lane
  // of this thread's admin calls (the stat polls, the pool creation).
  const chi::u32 wedged = (CHI_IPC->ThreadLane() + 1) % 4;
  ASSERT_TRUE(sm.Noop(DomainQuery::GetLocalId(wedged)).ok());
  // Container `wedged` (its lane, its worker): a Compute of 2-5 s that never
  // yields.
  const chi::u64 kIters = 1600000000ull;
  auto wedge = sm.Async<ComputeTask>(DomainQuery::GetLocalId(wedged), kIters,
                                     chi::u64{7});
  ASSERT_TRUE(wedge.status().code() != hshm::StatusCode::kOutOfMemory);
  // Wait until the runtime found the Compute's worker stuck (its other
  // lanes, if it still had any, then moved).
  bool stuck = false;
  for (int i = 0; i < 200 && !stuck; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    JsonValue stat = chi_test::StatJson();  // outlives the loop below
    for (const JsonValue &w : stat["workers"].array) {
      stuck = stuck || w["stuck"].boolean;
    }
  }
  ASSERT_TRUE(stuck) << "the Compute's worker was never found stuck";
  // A pool made now hands its containers' own queue lanes (2 low-latency
  // lanes each) to workers: none may go to the stuck worker, whose mailbox
  // nobody reads until its task returns. Its tasks name the containers
  // whose process lanes the thief moved (not lane `wedged`).
  hshm::StatusOr<chi::PoolId> pool = hshm::Status::Internal("not made");
  double made_s = Seconds([&] {
    pool = chi::admin::Client().GetOrCreatePool("late_queues", "queue_test_mod",
                                                4);
  });
  printf("pool made in %.1f ms\n", made_s * 1000);
  ASSERT_TRUE(pool.ok()) << pool.status();
  // The pool's lanes were handed out while that worker was stuck.
  ASSERT_FALSE(wedge.done()) << "the Compute was too short to test anything";
  std::vector<chi::FullPtr<WhereTask>> tasks;
  for (chi::u32 i = 0; i < 30; ++i) {
    chi::u32 c = (wedged + 1 + i % 3) % 4;
    tasks.push_back(chi::Submit(CHI_IPC->NewTaskDefault<WhereTask>(
        CHI_IPC->NewTaskNode(), *pool, DomainQuery::GetLocalId(c),
        chi::kLowLatency, 0u)));
    ASSERT_FALSE(tasks.back().IsNull());
  }
  int late = 0;
  double took = Seconds([&] {
    for (auto &t : tasks) late += t->WaitFor(500000) ? 0 : 1;
  });
  bool wedge_done = wedge.done();
  printf("30 tasks on the new pool's lanes: %d late, %.1f ms (Compute %s)\n",
         late, took * 1000, wedge_done ? "done" : "still running");
  EXPECT_EQ(late, 0) << "tasks waited for the stuck worker";
  EXPECT_FALSE(wedge_done) << "the Compute was too short to test anything";
  for (auto &t : tasks) {
    t->Wait();
    EXPECT_TRUE(t->GetStatus().ok()) << t->GetStatus();
    CHI_IPC->DelTask(t);
  }
  bool ended = false;
  double rest = Seconds([&] { ended = wedge.WaitFor(60000000); });
  ASSERT_TRUE(ended);
  ASSERT_TRUE(wedge.status().ok()) << wedge.status();
  printf("the Compute ended %.0f ms later\n", rest * 1000);
}

/** Waits (at most `timeout_s`) until `rt` has exited; the seconds it took,
 * or -1 if it still runs. */
double WaitExit(chi_test::RuntimeProcess &rt, double timeout_s) {
  auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
            .count();
    if (!rt.Running()) return s;
    if (s > timeout_s) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

/** Starts `rt`, attaches, and sends the longest Compute there is (2^32
 * iterations, about 12 s here), which never yields: its worker does not
 * return to its loop meanwhile. */
chi::Future<ComputeTask> StartEndlessCompute(chi_test::RuntimeProcess &rt,
                                             chi::small_message::Client *sm) {
  hshm::Status s = rt.Start();
  EXPECT_TRUE(s.ok()) << s << rt.Log();
  EXPECT_TRUE(CHIMAERA_CLIENT_INIT().ok());
  EXPECT_TRUE(sm->Create("endless", 1).ok());
  auto f = sm->Async<ComputeTask>(DomainQuery::GetLocalId(0), chi::u64{1} << 32,
                                  chi::u64{7});
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(f.done());
  return f;
}

using GroupCountTest = chi_test::ChiModTest;  // one low-latency worker

// A group's last member counts before its worker starts a long method of
// another pool: the worker's deferred group counts (one update for a run of
// members) are applied before a task that is not a member starts. Before,
// the waiter waited for that method too.
TEST_F(GroupCountTest, AMembersCountIsNotHeldUpByAnotherPoolsLongTask) {
  using chi::small_message::ProbeTask;
  chi::small_message::Client busy, quick;
  ASSERT_TRUE(busy.Create("busy", 1).ok());
  ASSERT_TRUE(quick.Create("quick", 1).ok());
  auto first = busy.Async<ProbeTask>(DomainQuery::GetLocalId(0), 50000u);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  // Behind the first Probe, in one lane: the member, then a long Probe.
  chi::TaskGroup group;
  auto member = quick.NewTask<NoopTask>(DomainQuery::GetLocalId(0));
  ASSERT_FALSE(member.IsNull());
  ASSERT_TRUE(group.Add(member.ptr_).ok());
  const auto t0 = std::chrono::steady_clock::now();
  chi::Submit(member);
  auto last = busy.Async<ProbeTask>(DomainQuery::GetLocalId(0), 800000u);
  ASSERT_TRUE(group.WaitFor(5000000));
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  const bool long_one_done = last.done();
  printf("the group's wait took %.0f ms\n", waited * 1000);
  EXPECT_FALSE(long_one_done) << "the long Probe had ended: nothing tested";
  EXPECT_LT(waited, 0.5) << "the count waited for the long Probe";
  EXPECT_TRUE(member->GetStatus().ok());
  CHI_IPC->DelTask(member);
  ASSERT_TRUE(first.Wait().ok());
  ASSERT_TRUE(last.Wait().ok());
}

// A method that does not return cannot make the runtime's stop hang: past
// workers.stop_drain_ms (plus 2 s for workers to leave their loops) the
// runtime says which worker is stuck and exits (status 3) without freeing
// what that worker may still use; the waiting client learns it is gone.
// chimaera_stop_runtime's request is not held up by that worker either.
TEST(StopTest, AMethodThatNeverReturnsCannotHangTheStop) {
  chi_test::RuntimeProcess rt("workers:\n  stop_drain_ms: 300\n");
  chi::small_message::Client sm;
  auto endless = StartEndlessCompute(rt, &sm);
  // The one low-latency worker runs the Compute: the stop request is taken
  // on a high-latency lane.
  const auto t0 = std::chrono::steady_clock::now();
  hshm::Status stop = chi::admin::Client().StopRuntime();
  const double asked =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  EXPECT_TRUE(stop.ok()) << stop;
  EXPECT_LT(asked, 2.0) << "the stop request waited behind the Compute";
  double took = WaitExit(rt, 20);
  printf("StopRuntime returned after %.3f s; the runtime exited %.2f s later\n",
         asked, took);
  EXPECT_GE(took, 0) << "the stop hung\n" << rt.Log();
  EXPECT_LT(took, 8) << rt.Log();
  EXPECT_EQ(rt.exit_note(), "exited with status 3") << rt.Log();
  EXPECT_NE(rt.Log().find("worker 0 is still inside a method"),
            std::string::npos)
      << rt.Log();
  ASSERT_TRUE(endless.WaitFor(15000000)) << "the client kept waiting";
  EXPECT_EQ(endless.status().code(), hshm::StatusCode::kUnavailable)
      << endless.status();
  endless.Reset();
  CHIMAERA->ClientFinalize();
}

// The trace (trace.output) is written also when a stuck worker makes the
// runtime exit without cleaning up: it shows what ran up to the stop.
TEST(StopTest, AStopThatLeavesAWorkerStuckStillWritesTheTrace) {
  const std::string path =
      "/tmp/chimaera_stuck_trace_" + std::to_string(getpid()) + ".json";
  std::remove(path.c_str());
  chi_test::RuntimeProcess rt(
      "workers:\n  stop_drain_ms: 300\ntrace:\n  enabled: true\n"
      "  output: \"" +
      path + "\"\n");
  chi::small_message::Client sm;
  auto endless = StartEndlessCompute(rt, &sm);
  EXPECT_TRUE(chi::admin::Client().StopRuntime().ok());
  EXPECT_GE(WaitExit(rt, 20), 0) << rt.Log();
  EXPECT_EQ(rt.exit_note(), "exited with status 3") << rt.Log();
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  // The pool's creation ran (and was recorded) before the Compute.
  EXPECT_NE(text.str().find("\"traceEvents\""), std::string::npos)
      << "no trace at " << path << "\n"
      << rt.Log();
  EXPECT_NE(text.str().find("GetOrCreatePool"), std::string::npos)
      << text.str().substr(0, 2000);
  std::remove(path.c_str());
  ASSERT_TRUE(endless.WaitFor(15000000)) << "the client kept waiting";
  endless.Reset();
  CHIMAERA->ClientFinalize();
}

// A second SIGTERM while the runtime stops ends it at once (status 2);
// chimaera_stop_runtime's (queued with kStopToolSignalValue) does not.
TEST(StopTest, ASecondSignalEndsAStopThatWaits) {
  chi_test::RuntimeProcess rt;  // the default 10 s drain
  chi::small_message::Client sm;
  auto endless = StartEndlessCompute(rt, &sm);
  ASSERT_GT(rt.pid(), 0);
  kill(rt.pid(), SIGTERM);
  ASSERT_LT(WaitExit(rt, 0.5), 0) << "the stop did not wait\n" << rt.Log();
  ASSERT_GT(rt.pid(), 0);  // never kill(-1)
  sigval tool;
  tool.sival_int = chi::kStopToolSignalValue;
  ASSERT_EQ(sigqueue(rt.pid(), SIGTERM, tool), 0);
  EXPECT_LT(WaitExit(rt, 0.5), 0) << "the tool's signal ended the stop\n"
                                  << rt.Log();
  ASSERT_GT(rt.pid(), 0);
  kill(rt.pid(), SIGTERM);
  double took = WaitExit(rt, 5);
  EXPECT_GE(took, 0) << "the second signal did nothing\n" << rt.Log();
  EXPECT_EQ(rt.exit_note(), "exited with status 2") << rt.Log();
  ASSERT_TRUE(endless.WaitFor(15000000)) << "the client kept waiting";
  EXPECT_FALSE(endless.status().ok());
  endless.Reset();
  CHIMAERA->ClientFinalize();
}

// Two signals at once (GNU timeout signals the runtime, then its process
// group) are one request: the runtime stops cleanly and removes its
// segments. Before, the second ended the stop at once (status 2).
TEST(StopTest, ASignalSentTwiceAtOnceStopsCleanly) {
  chi_test::RuntimeProcess rt;
  ASSERT_TRUE(rt.Start().ok()) << rt.Log();
  ASSERT_GT(rt.pid(), 0);  // never kill(-1)
  kill(rt.pid(), SIGTERM);
  // Apart enough not to merge into one pending signal, yet well inside
  // the half second.
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  if (rt.Running()) kill(rt.pid(), SIGTERM);
  EXPECT_GE(WaitExit(rt, 10), 0) << rt.Log();
  EXPECT_EQ(rt.exit_note(), "") << rt.Log();
  for (const char *seg : {"main", "client_data", "runtime_data"}) {
    EXPECT_FALSE(hipc::PosixShmMmap::Exists(rt.SegmentName(seg))) << seg;
  }
}

// Tasks from another node queued on a container's lane when their pool is
// destroyed are aborted by the lane's worker, which sends their replies from
// its own staging. On node 2 a Probe pinned to the lane's worker keeps it
// busy while the other low-latency worker admits requests from node 1 and
// queues them on that lane: the lane's worker used to stage their replies
// in the admitting worker's batch, from its own thread (a data race, which
// TSan reports). Every task ends.
TEST(MultiNodeTest, RemoteTasksQueuedOnAContainerLaneEndWhenTheirPoolGoes) {
  chi_test::LocalCluster cluster(
      2, "workers:\n  low_latency: 2\n  high_latency: 1\n  reinforcement: 0\n");
  ASSERT_TRUE(cluster.Start().ok()) << cluster.Logs();
  ASSERT_TRUE(cluster.Connect(1).ok());
  chi::admin::Client admin;
  auto doomed = admin.GetOrCreatePool("doomed", "queue_test_mod", 2);
  ASSERT_TRUE(doomed.ok()) << doomed.status();
  // Container 1 (node 2): which worker drains its low-latency lane.
  auto where = [&](chi::u32 spin_us) {
    return chi::Submit(CHI_IPC->NewTaskDefault<WhereTask>(
        CHI_IPC->NewTaskNode(), *doomed, DomainQuery::GetGlobalId(1),
        chi::kLowLatency, spin_us));
  };
  auto probe = where(0);
  ASSERT_TRUE(probe->WaitFor(10000000) && probe->GetStatus().ok());
  const chi::u32 lane_worker = probe->worker_;
  CHI_IPC->DelTask(probe);
  ASSERT_LT(lane_worker, 2u);
  chi::small_message::Client sm;
  ASSERT_TRUE(sm.Create("busy", 2).ok()) << cluster.Logs();
  ASSERT_TRUE(admin.PinContainer(sm.pool_id(), 1, lane_worker).ok());
  auto busy = sm.Async<chi::small_message::ProbeTask>(
      DomainQuery::GetGlobalId(1), 500000u);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::vector<chi::FullPtr<WhereTask>> tasks;
  for (int i = 0; i < 30; ++i) tasks.push_back(where(0));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(admin.DestroyPool(*doomed).ok()) << cluster.Logs();
  int aborted = 0;
  for (auto &t : tasks) {
    ASSERT_TRUE(t->WaitFor(10000000)) << "a task never ended\n"
                                      << cluster.Logs();
    const auto code = t->GetStatus().code();
    // Ran (before the destroy), aborted in the lane, or NotFound when
    // admitted after the destroy (from the busy worker's inbox).
    EXPECT_TRUE(code == hshm::StatusCode::kOk ||
                code == hshm::StatusCode::kAborted ||
                code == hshm::StatusCode::kNotFound)
        << t->GetStatus();
    aborted += code == hshm::StatusCode::kAborted;
    CHI_IPC->DelTask(t);
  }
  printf("%d of 30 aborted in the retired lane\n", aborted);
  EXPECT_GT(aborted, 0) << "no task was queued on the lane at the destroy";
  ASSERT_TRUE(busy.WaitFor(10000000));
  busy.Reset();
  EXPECT_TRUE(admin.Echo(1).ok());
  EXPECT_EQ(cluster.StopAll().ToString(), "OK") << cluster.Logs();
}

// When every worker is inside a long method, none takes the stop request:
// chimaera_stop_runtime then sends the runtime SIGTERM (after
// --signal-after), which needs no worker, and the stop ends within the
// drain bound instead of when a method happens to return.
TEST(StopTest, AStopRequestNoWorkerTakesFallsBackToASignal) {
  chi_test::RuntimeProcess rt("workers:\n  stop_drain_ms: 300\n");
  chi::small_message::Client sm;
  auto low = StartEndlessCompute(rt, &sm);  // the low-latency worker
  auto t = sm.NewTask<ComputeTask>(DomainQuery::GetLocalId(0),
                                   chi::u64{1} << 32, chi::u64{8});
  ASSERT_FALSE(t.IsNull());
  t->prio_ = chi::kHighLatency;  // the high-latency worker
  chi::Future<ComputeTask> high(chi::Submit(t));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_FALSE(high.done());
  std::string out;
  int rc = -1;
  const double took = Seconds([&] {
    rc = chi_test::RunProgram({chi_test::BinDir() + "/chimaera_stop_runtime",
                               "--signal-after", "1", "--timeout", "20"},
                              rt.config_path(), &out);
  });
  printf("chimaera_stop_runtime took %.2f s\n", took);
  // The runtime exits without cleaning up (a worker stays inside its
  // method): the tool says so (it said "stopped" and 0 before).
  EXPECT_EQ(rc, 2) << out << rt.Log();
  EXPECT_NE(out.find("no worker took the stop request in 1 s; sending "
                     "SIGTERM to runtime pid"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("stopped, but not cleanly"), std::string::npos) << out;
  EXPECT_LT(took, 8) << out << rt.Log();
  EXPECT_GE(WaitExit(rt, 5), 0) << rt.Log();
  EXPECT_EQ(rt.exit_note(), "exited with status 3") << rt.Log();
  for (auto *f : {&low, &high}) {
    ASSERT_TRUE(f->WaitFor(15000000)) << "the client kept waiting";
    EXPECT_EQ(f->status().code(), hshm::StatusCode::kUnavailable)
        << f->status();
    f->Reset();
  }
  CHIMAERA->ClientFinalize();
}

}  // namespace
