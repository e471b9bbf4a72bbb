// Task graphs from a client: dependencies, task groups, wait policies, and
// the extension block the runtime must treat as hostile input.
#include "chimaera/task_graph.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "chimaera/chimaera.h"
#include "queue_test_mod.h"
#include "runtime_fixture.h"

namespace {

using queue_test_mod::WhereTask;

/** A Where task (not sent) on container 0 of `pool` spinning `spin_us`. */
chi::FullPtr<WhereTask> NewWhere(const chi::PoolId &pool, chi::u32 spin_us,
                                 chi::u32 container = 0) {
  return CHI_IPC->NewTaskDefault<WhereTask>(
      CHI_IPC->NewTaskNode(), pool, chi::DomainQuery::GetLocalId(container),
      chi::kLowLatency, spin_us);
}

/** Makes `*never` (a task of `pool`, never sent) and submits a task of
 * `pool` that depends on it; checks that it waits in the runtime. */
chi::FullPtr<WhereTask> SubmitDependentOfUnsent(
    const chi::PoolId &pool, chi::FullPtr<WhereTask> *never) {
  *never = NewWhere(pool, 0);
  auto t = NewWhere(pool, 0);
  EXPECT_TRUE(chi::SetDependencies(t.ptr_, {never->ptr_}).ok());
  chi::Submit(t);
  EXPECT_FALSE(t->WaitFor(20000));  // it waits in the runtime
  return t;
}

/** A runtime with two low-latency workers and a 2-container test pool. */
class TaskGraphTest : public ::testing::Test {
 protected:
  void SetUp() override { StartRuntime(2, "graph"); }
  /** Starts a runtime with `low_latency` low-latency workers, attaches to
   * it and makes the 2-container test pool `pool_name` (pool_). */
  void StartRuntime(int low_latency, const std::string &pool_name) {
    rt_ = std::make_unique<chi_test::RuntimeProcess>(
        "workers:\n  low_latency: " + std::to_string(low_latency) +
        "\n  high_latency: 1\n  reinforcement: 0\n");
    ASSERT_TRUE(rt_->Start().ok()) << rt_->Log();
    ASSERT_TRUE(CHIMAERA_CLIENT_INIT().ok());
    auto pool =
        chi::admin::Client().GetOrCreatePool(pool_name, "queue_test_mod", 2);
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = *pool;
  }
  void TearDown() override {
    CHIMAERA->ClientFinalize();
    if (rt_) {
      hshm::Status s = rt_->Stop();
      EXPECT_TRUE(s.ok()) << s << "\n" << rt_->Log();
    }
  }

  std::unique_ptr<chi_test::RuntimeProcess> rt_;
  chi::PoolId pool_;
};

// A worker counts a run of completed members of one group in one update
// (Worker::CountDownLater); exactly the update that reaches the waiter's
// target must wake it, also when it jumps past it or the counts wrap.
TEST(GroupCountTest, OnlyTheUpdateThatReachesTheTargetCrossesIt) {
  EXPECT_TRUE(chi::GroupCrossed(4, 1, 5));
  EXPECT_TRUE(chi::GroupCrossed(3, 4, 5));  // jumps past the target
  EXPECT_TRUE(chi::GroupCrossed(0, 32, 32));
  EXPECT_FALSE(chi::GroupCrossed(3, 1, 5));  // not there yet
  EXPECT_FALSE(chi::GroupCrossed(5, 2, 5));  // reached before
  EXPECT_FALSE(chi::GroupCrossed(6, 1, 5));
  EXPECT_FALSE(chi::GroupCrossed(4, 0, 5));  // nothing counted
  // Wrapping counters (a group reused for 2^32 members).
  EXPECT_TRUE(chi::GroupCrossed(0xfffffffeu, 3, 1));
  EXPECT_FALSE(chi::GroupCrossed(0xfffffffeu, 2, 1));
  EXPECT_FALSE(chi::GroupCrossed(2, 5, 1));
}

TEST_F(TaskGraphTest, GroupWaitsForAllMembersOnce) {
  for (int round = 0; round < 20; ++round) {
    chi::TaskGroup group;
    ASSERT_TRUE(group.status().ok());
    std::vector<chi::FullPtr<WhereTask>> tasks;
    for (int i = 0; i < 16; ++i) {
      auto t = NewWhere(pool_, i % 4 == 0 ? 200 : 0, i % 2);
      ASSERT_FALSE(t.IsNull());
      ASSERT_TRUE(group.Add(t.ptr_).ok());
      tasks.push_back(chi::Submit(t));
    }
    ASSERT_TRUE(group.WaitFor(10 * 1000 * 1000));
    EXPECT_EQ(group.pending(), 0u);
    for (auto &t : tasks) {
      EXPECT_TRUE(t->IsComplete());  // results visible once the group is done
      EXPECT_TRUE(t->GetStatus().ok()) << t->GetStatus();
      CHI_IPC->DelTask(t);
    }
  }
}

// A task added to its group twice before it is sent counts once, and one
// in a group cannot join another until it completed (the first counts it).
// Before, each Add counted, and the group waited for a member that would
// never come. A task sent again after it completed joins a group afresh.
TEST_F(TaskGraphTest, AMemberAddedTwiceCountsOnce) {
  chi::TaskGroup group, other;
  auto t = NewWhere(pool_, 0);
  ASSERT_TRUE(group.Add(t.ptr_).ok());
  ASSERT_TRUE(group.Add(t.ptr_).ok());
  EXPECT_EQ(group.pending(), 1u);
  chi::Status s = other.Add(t.ptr_);
  EXPECT_EQ(s.code(), hshm::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(other.pending(), 0u);
  chi::Submit(t);
  EXPECT_TRUE(group.WaitFor(5 * 1000 * 1000)) << group.pending();
  EXPECT_TRUE(other.WaitFor(0));
  // Sent again once complete, it joins afresh: this group or another.
  for (chi::TaskGroup *g : {&group, &other}) {
    ASSERT_TRUE(g->Add(t.ptr_).ok());
    EXPECT_EQ(g->pending(), 1u);
    chi::Submit(t);
    EXPECT_TRUE(g->WaitFor(5 * 1000 * 1000)) << g->pending();
    EXPECT_TRUE(t->IsComplete());
  }
  CHI_IPC->DelTask(t);
}

// A fire-and-forget member that could not be sent (its lane stayed full
// while the runtime was stopped) counts as done: Submit freed it without
// counting it down, and the group's wait never ended.
TEST(GroupSendTest, AnUnsentFireAndForgetMemberCountsDown) {
  const int port = chi_test::FreePort();
  chi_test::RuntimeProcess rt(
      port, "network:\n  port: " + std::to_string(port) +
                "\n  client_timeout_ms: 300\n"
                "queue:\n  depth: 4\n"
                "workers:\n  low_latency: 1\n  high_latency: 1\n");
  ASSERT_TRUE(rt.Start().ok()) << rt.Log();
  ASSERT_TRUE(CHIMAERA_CLIENT_INIT().ok());
  auto pool = chi::admin::Client().GetOrCreatePool("fnf", "queue_test_mod", 1);
  ASSERT_TRUE(pool.ok()) << pool.status();
  chi::TaskGroup group;
  ASSERT_TRUE(group.status().ok());
  ASSERT_EQ(kill(rt.pid(), SIGSTOP), 0);
  int sent = 0, unsent = 0;
  bool made = true;  // checked once the runtime runs again
  for (int i = 0; i < 100000 && unsent == 0 && made; ++i) {
    auto t = NewWhere(*pool, 0);
    made = !t.IsNull();
    if (!made) break;
    t->SetFireAndForget();
    made = group.Add(t.ptr_).ok();
    if (!made) {
      CHI_IPC->DelTask(t);
      break;
    }
    if (chi::Submit(t).IsNull()) {
      ++unsent;
    } else {
      ++sent;
    }
  }
  ASSERT_EQ(kill(rt.pid(), SIGCONT), 0);
  ASSERT_TRUE(made) << "could not make or add a member";
  EXPECT_EQ(unsent, 1);
  EXPECT_GT(sent, 0);
  EXPECT_TRUE(group.WaitFor(10 * 1000 * 1000)) << group.pending();
  CHIMAERA->ClientFinalize();
  EXPECT_TRUE(rt.Stop().ok()) << rt.Log();
}

// One group reused round after round (its counts only grow): a waiter that
// sleeps at once is woken by the member that completes last, each round;
// members added after a wait extend it.
TEST_F(TaskGraphTest, AReusedGroupWakesItsSleepingWaiterEachRound) {
  chi::ScopedWaitPolicy block(chi::WaitPolicy::Block());
  chi::TaskGroup group;
  ASSERT_TRUE(group.status().ok());
  for (int round = 0; round < 30; ++round) {
    std::vector<chi::FullPtr<WhereTask>> tasks;
    const int n = 1 + round % 5;
    for (int i = 0; i < n; ++i) {
      // The last one is slow: the waiter is asleep when it completes.
      auto t = NewWhere(pool_, i == n - 1 ? 2000 : 0, i % 2);
      ASSERT_TRUE(group.Add(t.ptr_).ok());
      tasks.push_back(chi::Submit(t));
    }
    EXPECT_LE(group.pending(), static_cast<chi::u32>(n));
    ASSERT_TRUE(group.WaitFor(10 * 1000 * 1000)) << "round " << round;
    EXPECT_EQ(group.pending(), 0u);
    for (auto &t : tasks) {
      EXPECT_TRUE(t->IsComplete());
      CHI_IPC->DelTask(t);
    }
  }
  // Nothing pending: a wait returns at once.
  EXPECT_TRUE(group.WaitFor(0));
}

// A group destroyed while an abandoned member still runs (allowed): that
// member's late count does not reach the next group. (Once the thread's
// allocator made that group in the same block, and its wait returned while
// its own member still ran; the generation check stopped that, and now the
// block is kept as well: AGroupWithAMemberStillToCountKeepsItsBlock.)
TEST_F(TaskGraphTest, AnAbandonedMembersLateCountMissesTheNextGroup) {
  {
    chi::TaskGroup first;
    auto t = NewWhere(pool_, 300000, 0);
    ASSERT_TRUE(first.Add(t.ptr_).ok());
    chi::Submit(t);
    CHI_IPC->AbandonTask(t);  // the runtime frees it when it ends
  }
  chi::TaskGroup next;
  auto u = NewWhere(pool_, 1500000, 1);
  ASSERT_TRUE(next.Add(u.ptr_).ok());
  chi::Submit(u);
  EXPECT_FALSE(next.WaitFor(1000000))
      << "the abandoned member's count reached this group";
  EXPECT_EQ(next.pending(), u->IsComplete() ? 0u : 1u);
  ASSERT_TRUE(next.WaitFor(10000000));
  EXPECT_TRUE(u->IsComplete());
  CHI_IPC->DelTask(u);
}

// A group destroyed while a member is still to be counted keeps its block,
// so no later group is made there: a worker that checked the group just
// before its destruction could still count into the block. A group whose
// members were all counted frees its block.
TEST_F(TaskGraphTest, AGroupWithAMemberStillToCountKeepsItsBlock) {
  hipc::Pointer kept;
  {
    chi::TaskGroup first;
    kept = first.block();
    auto t = NewWhere(pool_, 300000, 0);
    ASSERT_TRUE(first.Add(t.ptr_).ok());
    chi::Submit(t);
    CHI_IPC->AbandonTask(t);  // the runtime frees it when it ends
  }
  EXPECT_GT(CHI_IPC->main_alloc()->LiveBlockSize(kept), 0u);
  chi::TaskGroup next;
  EXPECT_FALSE(next.block() == kept);
  hipc::Pointer freed;
  {
    chi::TaskGroup all_done;
    freed = all_done.block();
    auto u = NewWhere(pool_, 0, 1);
    ASSERT_TRUE(all_done.Add(u.ptr_).ok());
    chi::Submit(u);
    ASSERT_TRUE(all_done.WaitFor(10000000));
    CHI_IPC->DelTask(u);
  }
  EXPECT_EQ(CHI_IPC->main_alloc()->LiveBlockSize(freed), 0u);
}

TEST_F(TaskGraphTest, FailedMembersStillCountDown) {
  chi::TaskGroup group;
  auto good = NewWhere(pool_, 0);
  auto bad = NewWhere(pool_, 0);
  bad->method_ = 999;  // unknown method: fails at admission
  ASSERT_TRUE(group.Add(good.ptr_).ok());
  ASSERT_TRUE(group.Add(bad.ptr_).ok());
  chi::Submit(good);
  chi::Submit(bad);
  ASSERT_TRUE(group.WaitFor(10 * 1000 * 1000));
  EXPECT_TRUE(good->GetStatus().ok());
  EXPECT_EQ(bad->GetStatus().code(), chi::StatusCode::kNotFound);
  CHI_IPC->DelTask(good);
  CHI_IPC->DelTask(bad);
}

TEST_F(TaskGraphTest, DependentStartsAfterItsPredecessors) {
  for (int round = 0; round < 10; ++round) {
    // Two slow predecessors on both containers (so both workers), then a
    // fast dependent on container 1: it may only run after both ended.
    auto a = NewWhere(pool_, 3000, 0);
    auto b = NewWhere(pool_, 1500, 1);
    auto c = NewWhere(pool_, 0, 1);
    ASSERT_TRUE(chi::SetDependencies(c.ptr_, {a.ptr_, b.ptr_}).ok());
    chi::Submit(c);  // sent first: it must wait in the runtime
    chi::Submit(a);
    chi::Submit(b);
    c->Wait();
    ASSERT_TRUE(c->GetStatus().ok()) << c->GetStatus();
    ASSERT_TRUE(a->IsComplete());
    ASSERT_TRUE(b->IsComplete());
    EXPECT_GE(c->end_ns_, a->end_ns_);
    EXPECT_GE(c->end_ns_, b->end_ns_);
    CHI_IPC->DelTask(c);
    CHI_IPC->DelTask(a);
    CHI_IPC->DelTask(b);
  }
}

TEST_F(TaskGraphTest, FailedPredecessorFailsDependentsWithoutRunningThem) {
  auto a = NewWhere(pool_, 0);
  a->method_ = 999;
  auto b = NewWhere(pool_, 0);
  auto c = NewWhere(pool_, 0);  // follows b, which follows a: a chain
  ASSERT_TRUE(chi::SetDependencies(b.ptr_, {a.ptr_}).ok());
  ASSERT_TRUE(chi::SetDependencies(c.ptr_, {b.ptr_}).ok());
  chi::Submit(c);
  chi::Submit(b);
  chi::Submit(a);
  c->Wait();
  EXPECT_EQ(a->GetStatus().code(), chi::StatusCode::kNotFound);
  EXPECT_EQ(b->GetStatus().code(), chi::StatusCode::kAborted);
  EXPECT_NE(b->GetStatus().message().find("predecessor"), std::string::npos)
      << b->GetStatus();
  EXPECT_EQ(c->GetStatus().code(), chi::StatusCode::kAborted);
  EXPECT_EQ(b->worker_, ~0u);  // never ran
  EXPECT_EQ(c->worker_, ~0u);
  CHI_IPC->DelTask(a);
  CHI_IPC->DelTask(b);
  CHI_IPC->DelTask(c);
}

// The failure names the predecessor by its position in SetDependencies,
// also after an earlier one was found complete.
TEST_F(TaskGraphTest, TheFailedPredecessorIsNamedByItsPosition) {
  auto good = chi::Submit(NewWhere(pool_, 0));
  auto bad = NewWhere(pool_, 0);
  bad->method_ = 999;  // unknown method: fails at admission
  chi::Submit(bad);
  good->Wait();
  bad->Wait();
  ASSERT_TRUE(good->GetStatus().ok());
  ASSERT_FALSE(bad->GetStatus().ok());
  auto t = NewWhere(pool_, 0);
  ASSERT_TRUE(chi::SetDependencies(t.ptr_, {good.ptr_, bad.ptr_}).ok());
  chi::Submit(t)->Wait();
  EXPECT_EQ(t->GetStatus().code(), chi::StatusCode::kAborted);
  EXPECT_EQ(t->GetStatus().message().rfind("predecessor 1 failed: NotFound", 0),
            0u)
      << t->GetStatus();
  for (auto *x : {&t, &good, &bad}) CHI_IPC->DelTask(*x);
}

TEST_F(TaskGraphTest, AbandonedDependentOfAnUnsentTaskIsDropped) {
  chi::FullPtr<WhereTask> never;
  auto t = SubmitDependentOfUnsent(pool_, &never);
  CHI_IPC->AbandonTask(t);  // the runtime frees it
  // The runtime is healthy and the worker still takes tasks.
  for (int i = 0; i < 100; ++i) {
    auto e = chi::Submit(NewWhere(pool_, 0, i % 2));
    e->Wait();
    EXPECT_TRUE(e->GetStatus().ok());
    CHI_IPC->DelTask(e);
  }
  CHI_IPC->DelTask(never);
}

// A thread's WaitInterruptFn ends its task and group waits with a deadline
// early, as the deadline would; only the thread that set it is
// interrupted, and untimed waits never are.
TEST_F(TaskGraphTest, AWaitInterruptEndsTaskAndGroupWaits) {
  chi::FullPtr<WhereTask> never;
  auto t = SubmitDependentOfUnsent(pool_, &never);
  struct Clock {
    std::chrono::steady_clock::time_point until;
    int calls = 0;
  } clock;
  auto past = [](void *arg) {
    auto *c = static_cast<Clock *>(arg);
    ++c->calls;
    return std::chrono::steady_clock::now() >= c->until;
  };
  // Without one, the wait runs to its deadline.
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(t->WaitFor(300 * 1000));
  EXPECT_GE(std::chrono::steady_clock::now() - t0,
            std::chrono::milliseconds(300));
  {
    chi::ScopedWaitInterrupt interrupt(
        past, &clock);  // (a Python binding checks its signals here)
    clock.until =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
    t0 = std::chrono::steady_clock::now();
    EXPECT_FALSE(t->WaitFor(30 * 1000 * 1000));
    auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_GE(took, std::chrono::milliseconds(100));
    EXPECT_LT(took, std::chrono::seconds(5));
    EXPECT_GE(clock.calls, 2);
    // Group waits too.
    chi::TaskGroup group;
    ASSERT_TRUE(group.status().ok());
    chi::FullPtr<WhereTask> never2;
    auto member = NewWhere(pool_, 0);
    never2 = NewWhere(pool_, 0);
    ASSERT_TRUE(chi::SetDependencies(member.ptr_, {never2.ptr_}).ok());
    ASSERT_TRUE(group.Add(member.ptr_).ok());
    chi::Submit(member);
    clock.until =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
    t0 = std::chrono::steady_clock::now();
    EXPECT_FALSE(group.WaitFor(30 * 1000 * 1000));
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
    // Another thread's wait is not interrupted.
    std::thread other([&] { EXPECT_FALSE(t->WaitFor(300 * 1000)); });
    t0 = std::chrono::steady_clock::now();
    other.join();
    EXPECT_GE(std::chrono::steady_clock::now() - t0,
              std::chrono::milliseconds(250));
    // Untimed waits ignore it: Wait() returns with the task complete (its
    // caller reads and frees it next).
    clock.until = std::chrono::steady_clock::now();
    auto slow = chi::Submit(NewWhere(pool_, 100 * 1000, 1));
    ASSERT_FALSE(slow.IsNull());
    slow->Wait();
    EXPECT_TRUE(slow->IsComplete());
    CHI_IPC->DelTask(slow);
    CHI_IPC->AbandonTask(member);
    CHI_IPC->DelTask(never2);
  }
  CHI_IPC->AbandonTask(t);
  CHI_IPC->DelTask(never);
}

// A task waiting on predecessors keeps its pool's method table alive: its
// pool destroyed meanwhile (and another pool made and destroyed, reusing
// the memory), it still fails cleanly when its predecessor is freed. Before,
// the runtime read the freed method entry (ASan: heap-use-after-free).
TEST_F(TaskGraphTest, ADependentOutlivesItsDestroyedPool) {
  chi::admin::Client admin;
  auto tmp = admin.GetOrCreatePool("graph_tmp", "queue_test_mod", 2);
  ASSERT_TRUE(tmp.ok()) << tmp.status();
  chi::FullPtr<WhereTask> never;
  auto t = SubmitDependentOfUnsent(*tmp, &never);
  ASSERT_TRUE(admin.DestroyPool(*tmp).ok());
  for (int i = 0; i < 3; ++i) {
    auto other = admin.GetOrCreatePool("graph_other" + std::to_string(i),
                                       "small_message", 4);
    ASSERT_TRUE(other.ok()) << other.status();
    ASSERT_TRUE(admin.DestroyPool(*other).ok());
  }
  CHI_IPC->DelTask(never);  // the predecessor is gone: t fails
  ASSERT_TRUE(t->WaitFor(5000000)) << rt_->Log();
  EXPECT_FALSE(t->GetStatus().ok());
  CHI_IPC->DelTask(t);
  EXPECT_TRUE(admin.Echo(5).ok()) << rt_->Log();
}

// A task whose predecessor will never be sent does not hold a stop up for
// the whole drain (workers.stop_drain_ms, 10 s here): it fails at once.
TEST_F(TaskGraphTest, ADependentThatCanNeverRunDoesNotHoldUpTheStop) {
  chi::FullPtr<WhereTask> never;
  auto t = SubmitDependentOfUnsent(pool_, &never);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(rt_->Stop().ok()) << rt_->Log();
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  printf("the stop took %.2f s\n", took);
  EXPECT_LT(took, 3.0) << "the stop waited out the drain";
  ASSERT_TRUE(t->WaitFor(1000000));
  EXPECT_FALSE(t->GetStatus().ok());
  CHI_IPC->DelTask(t);
  CHI_IPC->DelTask(never);
  rt_.reset();  // stopped: TearDown has nothing to stop
}

/** CPU seconds (user + system) process `pid` has used, from /proc. */
double CpuSeconds(pid_t pid) {
  FILE *f = fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
  if (!f) return -1;
  char buf[1024] = {0};
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = 0;
  const char *p = strrchr(buf, ')');  // fields after the command name
  unsigned long long utime = 0, stime = 0;
  if (!p ||
      sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
             &utime, &stime) != 2) {
    return -1;
  }
  return static_cast<double>(utime + stime) / sysconf(_SC_CLK_TCK);
}

// A dependent whose first predecessor still runs and whose second is done:
// its worker sleeps while it waits, and a stop does not wait out the drain
// for it. Before, the check stopped at the first predecessor still running,
// never took the done one off the list, and every look at the waiting task
// found "a predecessor completed": the worker never slept (0.9 s of CPU a
// second) and the stop took the whole drain.
TEST_F(TaskGraphTest, ADependentWithOneDonePredecessorLetsItsWorkerSleep) {
  auto never = NewWhere(pool_, 0);  // never sent
  auto done = chi::Submit(NewWhere(pool_, 0));
  ASSERT_TRUE(done->WaitFor(5000000));
  auto t = NewWhere(pool_, 0);
  ASSERT_TRUE(chi::SetDependencies(t.ptr_, {never.ptr_, done.ptr_}).ok());
  chi::Submit(t);
  EXPECT_FALSE(t->WaitFor(50000));  // it waits in the runtime
  const double cpu0 = CpuSeconds(rt_->pid());
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const double cpu = CpuSeconds(rt_->pid()) - cpu0;
  ASSERT_GE(cpu0, 0);
  printf("the runtime used %.2f s of CPU in 1 s\n", cpu);
  EXPECT_LT(cpu, 0.3) << "a worker polls the waiting task";
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(rt_->Stop().ok()) << rt_->Log();
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  EXPECT_LT(took, 3.0) << "the stop waited out the drain";
  ASSERT_TRUE(t->WaitFor(1000000));
  EXPECT_FALSE(t->GetStatus().ok());
  CHI_IPC->DelTask(t);
  CHI_IPC->DelTask(done);
  CHI_IPC->DelTask(never);
  rt_.reset();  // stopped: TearDown has nothing to stop
}

// A periodic task ended by its pool's destruction completes with Aborted,
// and so its dependents fail; only a stop its submitter asks for is OK.
// Before, it completed OK, and a dependent ran as if it had been stopped.
TEST_F(TaskGraphTest, APeriodicTaskEndedByItsPoolsDestructionIsAborted) {
  chi::admin::Client admin;
  auto tmp = admin.GetOrCreatePool("graph_tmp", "queue_test_mod", 1);
  ASSERT_TRUE(tmp.ok()) << tmp.status();
  auto p = NewWhere(*tmp, 0);
  p->SetPeriodic(1e6);
  auto dep = NewWhere(pool_, 0);
  ASSERT_TRUE(chi::SetDependencies(dep.ptr_, {p.ptr_}).ok());
  chi::Submit(p);
  chi::Submit(dep);
  EXPECT_FALSE(p->WaitFor(50000));  // it runs every millisecond
  ASSERT_TRUE(admin.DestroyPool(*tmp).ok());
  ASSERT_TRUE(p->WaitFor(5000000));
  EXPECT_EQ(p->GetStatus().code(), hshm::StatusCode::kAborted)
      << p->GetStatus();
  EXPECT_NE(p->GetStatus().message().find("the pool was destroyed"),
            std::string::npos)
      << p->GetStatus();
  ASSERT_TRUE(dep->WaitFor(5000000));
  EXPECT_EQ(dep->GetStatus().code(), hshm::StatusCode::kAborted)
      << dep->GetStatus();
  CHI_IPC->DelTask(dep);
  CHI_IPC->DelTask(p);
  // Asked to stop, a periodic task still ends OK.
  auto q = NewWhere(pool_, 0);
  q->SetPeriodic(1e6);
  chi::Submit(q);
  EXPECT_FALSE(q->WaitFor(20000));
  q->RequestStop();
  ASSERT_TRUE(q->WaitFor(5000000));
  EXPECT_TRUE(q->GetStatus().ok()) << q->GetStatus();
  CHI_IPC->DelTask(q);
}

TEST_F(TaskGraphTest, ReadyTaskBehindManyWaitingOnesStarts) {
  // A worker looks at its waiting tasks oldest first and stops after a run
  // of them still waits; the few it then sweeps round robin must still
  // find a ready task queued behind hundreds that wait on an unsent one.
  auto never = NewWhere(pool_, 0);  // never sent
  std::vector<chi::FullPtr<WhereTask>> waiters;
  for (int i = 0; i < 300; ++i) {
    auto w = NewWhere(pool_, 0, 0);
    ASSERT_TRUE(chi::SetDependencies(w.ptr_, {never.ptr_}).ok());
    chi::Submit(w);
    waiters.push_back(w);
  }
  EXPECT_FALSE(waiters.back()->WaitFor(20000));  // all wait in the runtime
  for (int round = 0; round < 5; ++round) {
    auto pred = NewWhere(pool_, 0, 1);
    auto t = NewWhere(pool_, 0, 0);  // same worker as the waiters
    ASSERT_TRUE(chi::SetDependencies(t.ptr_, {pred.ptr_}).ok());
    chi::Submit(t);  // queued behind the waiters
    EXPECT_FALSE(t->WaitFor(5000));
    chi::Submit(pred);
    ASSERT_TRUE(t->WaitFor(2000000)) << "a ready task was never looked at";
    EXPECT_TRUE(t->GetStatus().ok()) << t->GetStatus();
    CHI_IPC->DelTask(t);
    CHI_IPC->DelTask(pred);
  }
  for (auto &w : waiters) {
    EXPECT_FALSE(w->IsComplete());
    CHI_IPC->AbandonTask(w);  // the runtime frees it
  }
  // The worker drops the abandoned waiters and still takes tasks.
  for (int i = 0; i < 20; ++i) {
    auto e = chi::Submit(NewWhere(pool_, 0, 0));
    e->Wait();
    EXPECT_TRUE(e->GetStatus().ok());
    CHI_IPC->DelTask(e);
  }
  CHI_IPC->DelTask(never);
}

TEST_F(TaskGraphTest, PredecessorFreedWhileItsDependentWaitsFailsIt) {
  // The runtime reads a pending predecessor's state word only, and checks
  // that it is still a live task every few looks: freeing it (API misuse)
  // fails the dependent with a clear error instead of leaving it waiting.
  for (int round = 0; round < 5; ++round) {
    auto never = NewWhere(pool_, 0);  // never sent
    auto t = NewWhere(pool_, 0, round % 2);
    ASSERT_TRUE(chi::SetDependencies(t.ptr_, {never.ptr_}).ok());
    chi::Submit(t);
    EXPECT_FALSE(t->WaitFor(5000));  // it waits in the runtime
    CHI_IPC->DelTask(never);
    ASSERT_TRUE(t->WaitFor(2000000)) << "the dependent still waits";
    EXPECT_EQ(t->GetStatus().code(), chi::StatusCode::kInvalidArgument);
    EXPECT_NE(t->GetStatus().message().find("not a live task"),
              std::string::npos)
        << t->GetStatus();
    EXPECT_EQ(t->worker_, ~0u);  // never ran
    CHI_IPC->DelTask(t);
  }
}

// A predecessor freed and its block reused for another task (API misuse)
// fails the dependent once that task completes, naming the predecessor:
// the runtime compares the block's task node with the one it first saw.
// Before, the other task's completion started the dependent.
TEST_F(TaskGraphTest, APredecessorsBlockReusedForAnotherTaskFailsTheDependent) {
  auto never = NewWhere(pool_, 0);  // never sent
  auto t = NewWhere(pool_, 0, 1);
  ASSERT_TRUE(chi::SetDependencies(t.ptr_, {never.ptr_}).ok());
  chi::Submit(t);
  // The runtime first looks at the predecessor when it admits the task. A
  // task sent after it through the same lane (container 1's; lanes stay on
  // their worker without reinforcement threads) completes after that.
  auto barrier = NewWhere(pool_, 0, 1);
  chi::Submit(barrier);
  ASSERT_TRUE(barrier->WaitFor(10000000));
  CHI_IPC->DelTask(barrier);
  EXPECT_FALSE(t->IsComplete());  // it waits in the runtime
  // The block becomes another task: here in place (a new task node, sent
  // and run), so that it never looks free to the runtime meanwhile, as it
  // may when freed and allocated again.
  never->task_node_ = CHI_IPC->NewTaskNode();
  chi::Submit(never);
  ASSERT_TRUE(never->WaitFor(2000000));
  ASSERT_TRUE(t->WaitFor(2000000)) << "the dependent still waits";
  EXPECT_EQ(t->GetStatus().code(), chi::StatusCode::kInvalidArgument)
      << t->GetStatus();
  EXPECT_NE(t->GetStatus().message().find(
                "predecessor 0 was freed before this task started"),
            std::string::npos)
      << t->GetStatus();
  EXPECT_EQ(t->worker_, ~0u);  // never ran
  CHI_IPC->DelTask(never);
  CHI_IPC->DelTask(t);
}

// A worker holds at most 16384 tasks waiting on predecessors; more fail
// at once with ResourceExhausted (each waiting one costs the runtime a few
// KiB of its own memory, its submitter one block of main).
TEST_F(TaskGraphTest, AWorkerHoldsABoundedNumberOfWaitingTasks) {
  constexpr int kLimit = 16384, kMore = 16;
  auto never = NewWhere(pool_, 0);  // never sent
  std::vector<chi::FullPtr<WhereTask>> waiting;
  for (int i = 0; i < kLimit + kMore; ++i) {
    auto t = NewWhere(pool_, 0, 0);  // all on container 0's worker
    ASSERT_FALSE(t.IsNull()) << i;
    ASSERT_TRUE(chi::SetDependencies(t.ptr_, {never.ptr_}).ok());
    waiting.push_back(chi::Submit(t));
  }
  int refused = 0;
  for (int i = 0; i < kLimit + kMore; ++i) {
    if (!waiting[i]->WaitFor(i < kLimit ? 0 : 2000000)) continue;
    EXPECT_EQ(waiting[i]->GetStatus().code(),
              chi::StatusCode::kResourceExhausted)
        << i << ": " << waiting[i]->GetStatus();
    ++refused;
  }
  EXPECT_EQ(refused, kMore);
  // The waiting ones fail once their predecessor is freed (not a live task).
  CHI_IPC->DelTask(never);
  for (auto &t : waiting) {
    ASSERT_TRUE(t->WaitFor(20000000));
    CHI_IPC->DelTask(t);
  }
}

/** Runs `n` pairs (a, then b depending on a and in a group) to completion,
 * checking each; inserts the offset of each b's extension block into
 * *exts. */
void RunDependentPairs(const chi::PoolId &pool, int n,
                       std::set<chi::u64> *exts) {
  chi::TaskGroup group;
  ASSERT_TRUE(group.status().ok());
  // Every extension of up to 4 predecessors gets a block of one size class.
  auto probe =
      CHI_IPC->main_alloc()->Allocate(HSHM_MCTX, chi::TaskExt::Size(4));
  ASSERT_FALSE(probe.IsNull());
  const chi::u64 ext_bytes = CHI_IPC->main_alloc()->LiveBlockSize(probe.shm_);
  ASSERT_TRUE(CHI_IPC->main_alloc()->Free(HSHM_MCTX, probe.shm_).ok());
  for (int i = 0; i < n; ++i) {
    auto a = NewWhere(pool, 0, i % 2);
    auto b = NewWhere(pool, 0, (i + 1) % 2);
    ASSERT_TRUE(chi::SetDependencies(b.ptr_, {a.ptr_}).ok());
    const hipc::Pointer ext = b->ext_;
    // The block is this process's, live, whatever the thread kept.
    ASSERT_EQ(CHI_IPC->main_alloc()->BlockOwner(b->ext_), getpid());
    ASSERT_EQ(CHI_IPC->main_alloc()->LiveBlockSize(b->ext_), ext_bytes);
    // ... and no other block of ours: not a or b.
    for (const auto *t : {a.ptr_, b.ptr_}) {
      chi::u64 off = CHI_IPC->main_alloc()->ToPointer(t).off_.off_;
      chi::u64 len = CHI_IPC->main_alloc()->LiveBlockSize(
          CHI_IPC->main_alloc()->ToPointer(t));
      chi::u64 e = b->ext_.off_.off_;
      ASSERT_TRUE(e + chi::TaskExt::Size(1) <= off || e >= off + len)
          << "the extension overlaps a task";
    }
    // Adding to the group writes into that same block.
    ASSERT_TRUE(group.Add(b.ptr_).ok());
    ASSERT_EQ(b->ext_, ext);
    exts->insert(b->ext_.off_.off_);
    chi::Submit(b);
    chi::Submit(a);
    ASSERT_TRUE(group.WaitFor(10000000));
    ASSERT_TRUE(b->GetStatus().ok()) << b->GetStatus();
    ASSERT_GE(b->end_ns_, a->end_ns_);
    CHI_IPC->DelTask(b);
    CHI_IPC->DelTask(a);
  }
}

TEST_F(TaskGraphTest, ExtensionBlocksAreReusedAndFreedAtThreadExit) {
  // A thread keeps the extension blocks of the tasks it freed for its next
  // extensions (freeing one costs a locked RMW on a line the runtime read);
  // they go back to the heap when the thread exits.
  const chi::u64 before = CHI_IPC->main_alloc()->LiveBytes(getpid());
  std::set<chi::u64> exts;
  std::thread th([&] { RunDependentPairs(pool_, 500, &exts); });
  th.join();
  EXPECT_LE(exts.size(), 2u) << "a new extension block per task";
  EXPECT_EQ(CHI_IPC->main_alloc()->LiveBytes(getpid()), before)
      << "the thread's kept blocks outlived it";
  // Extensions of more predecessors than are kept are freed as before.
  auto big = NewWhere(pool_, 0);
  std::vector<chi::FullPtr<WhereTask>> preds;
  std::vector<chi::Task *> ptrs;
  for (int i = 0; i < 8; ++i) {
    preds.push_back(chi::Submit(NewWhere(pool_, 0, i % 2)));
    ptrs.push_back(preds.back().ptr_);
  }
  ASSERT_TRUE(chi::SetDependencies(big.ptr_, ptrs).ok());
  chi::Submit(big)->Wait();
  EXPECT_TRUE(big->GetStatus().ok()) << big->GetStatus();
  CHI_IPC->DelTask(big);
  for (auto &p : preds) CHI_IPC->DelTask(p);
  EXPECT_EQ(CHI_IPC->main_alloc()->LiveBytes(getpid()), before);
}

TEST_F(TaskGraphTest, KeptExtensionBlocksOfAnEarlierRuntimeAreForgotten) {
  // This thread keeps blocks of this runtime's segment...
  std::set<chi::u64> exts;
  RunDependentPairs(pool_, 50, &exts);
  // ... which is gone after a restart: the new segment's blocks at those
  // offsets are not this thread's to reuse (RunDependentPairs checks each
  // extension is a live block of this process; with the kept blocks reused,
  // the first one is a free block). The new runtime has another worker
  // count, so that its segment is not laid out like the first one.
  CHIMAERA->ClientFinalize();
  ASSERT_TRUE(rt_->Stop().ok()) << rt_->Log();
  ASSERT_NO_FATAL_FAILURE(StartRuntime(3, "graph2"));
  std::set<chi::u64> later;
  RunDependentPairs(pool_, 50, &later);
}

TEST_F(TaskGraphTest, HostileExtensionsAreClearErrors) {
  // Not an extension at all: a task block.
  auto other = NewWhere(pool_, 0);
  auto t1 = NewWhere(pool_, 0);
  t1->ext_ = CHI_IPC->main_alloc()->ToPointer(other.ptr_);
  chi::Submit(t1)->Wait();
  EXPECT_EQ(t1->GetStatus().code(), chi::StatusCode::kInvalidArgument);
  t1->ext_ = hipc::Pointer::GetNull();  // not ours to free with it
  CHI_IPC->DelTask(t1);
  // An extension claiming more predecessors than its block holds, and more
  // than allowed.
  for (chi::u32 n : {5u, chi::kMaxTaskDeps + 1, 0xffffffffu}) {
    auto t = NewWhere(pool_, 0);
    ASSERT_TRUE(chi::SetDependencies(t.ptr_, {other.ptr_}).ok());
    auto *ext =
        reinterpret_cast<chi::TaskExt *>(hipc::ToProcessAddress(t->ext_));
    ext->num_deps_ = n;
    chi::Submit(t)->Wait();
    EXPECT_EQ(t->GetStatus().code(), chi::StatusCode::kInvalidArgument) << n;
    ext->num_deps_ = 1;
    CHI_IPC->DelTask(t);
  }
  // A group that is the process queue, and one that is a task.
  for (hipc::Pointer g : {CHI_IPC->shared()->process_queue_,
                          CHI_IPC->main_alloc()->ToPointer(other.ptr_)}) {
    auto t = NewWhere(pool_, 0);
    ASSERT_TRUE(chi::SetDependencies(t.ptr_, {}).ok());
    reinterpret_cast<chi::TaskExt *>(hipc::ToProcessAddress(t->ext_))->group_ =
        g;
    chi::Submit(t)->Wait();
    EXPECT_EQ(t->GetStatus().code(), chi::StatusCode::kInvalidArgument);
    CHI_IPC->DelTask(t);
  }
  // A predecessor that is null (a client's SetDependencies refuses it).
  {
    auto t = NewWhere(pool_, 0);
    ASSERT_TRUE(chi::SetDependencies(t.ptr_, {other.ptr_}).ok());
    reinterpret_cast<chi::TaskExt *>(hipc::ToProcessAddress(t->ext_))
        ->deps()[0] = hipc::Pointer::GetNull();
    chi::Submit(t)->Wait();
    EXPECT_EQ(t->GetStatus().code(), chi::StatusCode::kInvalidArgument);
    CHI_IPC->DelTask(t);
  }
  // A predecessor that is garbage.
  {
    auto t = NewWhere(pool_, 0);
    ASSERT_TRUE(chi::SetDependencies(t.ptr_, {other.ptr_}).ok());
    reinterpret_cast<chi::TaskExt *>(hipc::ToProcessAddress(t->ext_))
        ->deps()[0] = CHI_IPC->shared()->workers_;
    chi::Submit(t)->Wait();
    EXPECT_EQ(t->GetStatus().code(), chi::StatusCode::kInvalidArgument);
    CHI_IPC->DelTask(t);
  }
  // Failed predecessors whose error texts are huge or corrupt (their
  // clients set them): the dependent's message quotes the first (at most
  // 64 KiB of a message is read), and calls the second corrupt.
  for (bool corrupt : {false, true}) {
    auto pred = NewWhere(pool_, 0);
    pred->rc_ = static_cast<chi::u32>(chi::StatusCode::kInternal);
    CHI_IPC->SetTaskError(pred.ptr_, std::string(100000, 'x'));
    ASSERT_FALSE(pred->err_.IsNull());
    if (corrupt) {
      // The length word: past the end of the segment.
      *reinterpret_cast<chi::u32 *>(hipc::ToProcessAddress(pred->err_)) =
          0xfffffff0u;
    }
    pred->state_.fetch_or(chi::kTaskComplete);
    auto t = NewWhere(pool_, 0);
    ASSERT_TRUE(chi::SetDependencies(t.ptr_, {pred.ptr_}).ok());
    chi::Submit(t)->Wait();
    chi::Status st = t->GetStatus();
    EXPECT_EQ(st.code(), chi::StatusCode::kAborted);
    if (corrupt) {
      EXPECT_NE(st.message().find("(corrupt error message)"), std::string::npos)
          << st.message();
    } else {
      // Both reads (the runtime's of the predecessor, this one's of the
      // dependent) stop at 64 KiB.
      EXPECT_EQ(st.message().rfind("predecessor 0 failed: Internal: xxx", 0),
                0u)
          << st.message().substr(0, 200);
      EXPECT_EQ(st.message().size(), 64u * 1024);
    }
    CHI_IPC->DelTask(t);
    if (corrupt) {
      *reinterpret_cast<chi::u32 *>(hipc::ToProcessAddress(pred->err_)) = 1;
    }
    CHI_IPC->DelTask(pred);
  }
  // API misuse is refused on the client side.
  std::vector<chi::Task *> many(chi::kMaxTaskDeps + 1, other.ptr_);
  EXPECT_EQ(chi::SetDependencies(other.ptr_, many).code(),
            chi::StatusCode::kInvalidArgument);
  EXPECT_EQ(chi::SetDependencies(other.ptr_, {other.ptr_}).code(),
            chi::StatusCode::kInvalidArgument);
  EXPECT_EQ(chi::SetDependencies(other.ptr_, {nullptr}).code(),
            chi::StatusCode::kInvalidArgument);
  CHI_IPC->DelTask(other);
}

TEST_F(TaskGraphTest, EveryWaitPolicyCompletes) {
  for (const chi::WaitPolicy &p :
       {chi::WaitPolicy::Default(), chi::WaitPolicy::Spin(20000),
        chi::WaitPolicy::Yield(20000), chi::WaitPolicy::Block()}) {
    chi::ScopedWaitPolicy scoped(p);
    for (int i = 0; i < 50; ++i) {
      auto t = chi::Submit(NewWhere(pool_, i % 5 == 0 ? 100 : 0, i % 2));
      t->Wait();
      EXPECT_TRUE(t->GetStatus().ok());
      CHI_IPC->DelTask(t);
    }
    chi::TaskGroup group;
    std::vector<chi::FullPtr<WhereTask>> tasks;
    for (int i = 0; i < 8; ++i) {
      auto t = NewWhere(pool_, 100, i % 2);
      ASSERT_TRUE(group.Add(t.ptr_).ok());
      tasks.push_back(chi::Submit(t));
    }
    EXPECT_TRUE(group.WaitFor(10 * 1000 * 1000));
    for (auto &t : tasks) CHI_IPC->DelTask(t);
  }
  EXPECT_EQ(chi::GetThreadWaitPolicy().pause_ns,
            chi::WaitPolicy::Default().pause_ns);
}

TEST_F(TaskGraphTest, TasksNamingTheirContainerSpreadOverWorkers) {
  // Containers without queues of their own run tasks on the worker that
  // admitted them. One client thread, containers 0 and 1: each goes to its
  // own process-queue lane and so to its own low-latency worker (one hop),
  // not both through this thread's lane.
  auto pool = chi::admin::Client().GetOrCreatePool(
      "graph_inline", "queue_test_mod", 2, "inline");
  ASSERT_TRUE(pool.ok()) << pool.status();
  chi::u32 ran_on[2] = {~0u, ~0u};
  for (int i = 0; i < 40; ++i) {
    chi::u32 c = i % 2;
    auto t = chi::Submit(NewWhere(*pool, 0, c));
    t->Wait();
    ASSERT_TRUE(t->GetStatus().ok()) << t->GetStatus();
    ASSERT_EQ(t->container_, c);
    if (ran_on[c] == ~0u) ran_on[c] = t->worker_;
    EXPECT_EQ(t->worker_, ran_on[c]) << "container " << c << " moved";
    CHI_IPC->DelTask(t);
  }
  EXPECT_NE(ran_on[0], ran_on[1]);
  EXPECT_LT(ran_on[0], 2u);
  EXPECT_LT(ran_on[1], 2u);
}

}  // namespace
