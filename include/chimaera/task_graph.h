// Task graphs from a client: dependencies between tasks, groups of tasks
// waited for with one wake-up, and per-thread wait policies.
//
//   chi::TaskGroup group;                      // a counter in `main`
//   auto a = client.AsyncCompute(...);         // (not yet sent: see below)
//   ...
//   chi::SetDependencies(b.ptr_, {a.ptr_});    // b starts once a completed
//   group.Add(b.ptr_);                         // before Send
//   chi::Submit(b);
//   group.Wait();                              // one wake-up for the batch
//
// Dependencies and group membership are written into a small extension
// block (TaskExt, in `main`) that the task names; both must be set before
// the task is sent. The runtime copies and validates the extension when it
// admits the task: a task whose predecessors have not all completed waits in
// the runtime (not in the client) and starts as soon as the last one
// completes; if a predecessor failed, the task fails with Aborted naming it,
// without running. The tasks of a graph are submitted on one node (a handle
// is that node's shared memory) and may run on any node: a dependent waits
// on the submitting node, where its remote predecessors' replies land, and
// then goes to its container. A predecessor must stay allocated
// until its dependents have started (free it after waiting for them).
// Tasks of a group count up the group's shared counter when they complete,
// after their results are visible (adding a member only counts in the
// client), and the last one wakes the waiter once.
//
// Threading: a TaskGroup is used by one thread at a time. SetDependencies
// and TaskGroup::Add are for tasks the calling thread has not sent yet.
#ifndef CHIMAERA_TASK_GRAPH_H_
#define CHIMAERA_TASK_GRAPH_H_

#include <atomic>
#include <initializer_list>
#include <vector>

#include "chimaera/ipc_manager.h"
#include "hermes_shm/thread_model.h"
#include "hermes_shm/util/futex.h"

namespace chi {

/** Marks a TaskExt block. */
static GLOBAL_CROSS_CONST u32 kTaskExtMagic = 0x43485458u;  // "CHTX"
/** Marks a TaskGroup's shared counter block. */
static GLOBAL_CROSS_CONST u32 kTaskGroupMagic = 0x43484752u;  // "CHGR"
/** Most predecessors one task may name. */
static GLOBAL_CROSS_CONST u32 kMaxTaskDeps = 64;

/** A group as a member's extension names it: its block and incarnation
 * (TaskGroupShm::gen_). Null when the task is in no group. */
struct GroupRef {
  hipc::Pointer ptr;
  u32 gen = 0;
  bool IsNull() const { return ptr.IsNull(); }
  bool operator==(const GroupRef &o) const {
    return ptr == o.ptr && gen == o.gen;
  }
};

/** The shared part of a TaskGroup (a block of `main`). Members are counted
 * where they are added (TaskGroup::added_, private to the client), so adding
 * one writes nothing shared; completions count up done_, and the waiter
 * publishes how many it waits for in target_ before it sleeps. Counts wrap
 * (compared as differences). */
struct TaskGroupShm {
  u32 magic_ = kTaskGroupMagic;
  /** This group's incarnation (never 0): members name it beside the block,
   * so that a late count for a group since freed misses a new group made
   * in the same block. */
  u32 gen_ = 0;
  /** Members completed so far; the futex word the waiter sleeps on. */
  std::atomic<u32> done_{0};
  /** The done_ value the waiter waits for (set before it sleeps). */
  std::atomic<u32> target_{0};
  /** 1 while the waiter sleeps (or is about to) on done_. */
  std::atomic<u32> waiter_asleep_{0};
};

/** True once counter `done` has reached `target` (counts wrap). */
HSHM_INLINE bool GroupReached(u32 done, u32 target) {
  return static_cast<i32>(target - done) <= 0;
}

/** True if adding `n` to counter `before` makes it reach `target` (it had
 * not before): the one count update that must wake the waiter. */
HSHM_INLINE bool GroupCrossed(u32 before, u32 n, u32 target) {
  return !GroupReached(before, target) && GroupReached(before + n, target);
}

/** A task's extension block (in `main`, named by Task::ext_): its group and
 * its predecessors (num_deps_ Pointers to tasks follow the struct). Written
 * by the submitter before Send; the runtime copies and checks it once. */
struct TaskExt {
  u32 magic_ = kTaskExtMagic;
  u32 num_deps_ = 0;     ///< Predecessors that follow (<= kMaxTaskDeps).
  hipc::Pointer group_;  ///< TaskGroupShm, or null.
  u32 group_gen_ = 0;    ///< The group's TaskGroupShm::gen_.
  /** The predecessor array right after this header. */
  hipc::Pointer *deps() { return reinterpret_cast<hipc::Pointer *>(this + 1); }
  const hipc::Pointer *deps() const {
    return reinterpret_cast<const hipc::Pointer *>(this + 1);
  }
  /** Bytes of an extension naming `n` predecessors. */
  static constexpr size_t Size(u32 n) {
    return sizeof(TaskExt) + static_cast<size_t>(n) * sizeof(hipc::Pointer);
  }
};

/** Makes `task` start only once every task of `preds` has completed, and
 * fail (Aborted, not run) if one of them failed. REQUIRES: `task` not sent;
 * every predecessor is a task of `main` that stays allocated until `task`
 * has started. Replaces earlier dependencies (keeps the group). Errors:
 * InvalidArgument (too many, null or self), OutOfMemory. */
Status SetDependencies(Task *task, const std::vector<Task *> &preds);

/** How a client thread waits for a task or a group: poll with pauses for
 * `pause_ns`, then poll yielding the core between polls until `yield_ns`
 * (counted from the start), then sleep on a futex. */
struct WaitPolicy {
  u64 pause_ns = 5000;
  u64 yield_ns = 50000;
  /** The default: 5 us of pauses, yields up to 50 us, then sleep. */
  static WaitPolicy Default() { return WaitPolicy(); }
  /** Poll with pauses for `ns` (burns a core), then sleep. */
  static WaitPolicy Spin(u64 ns) { return WaitPolicy{ns, ns}; }
  /** Yield the core between polls for `ns`, then sleep. */
  static WaitPolicy Yield(u64 ns) { return WaitPolicy{0, ns}; }
  /** Sleep on the futex at once (the cheapest on CPU, slowest to wake). */
  static WaitPolicy Block() { return WaitPolicy{0, 0}; }
};

/** The calling thread's wait policy. */
WaitPolicy GetThreadWaitPolicy();
/** Sets the calling thread's wait policy; returns the previous one. */
WaitPolicy SetThreadWaitPolicy(const WaitPolicy &policy);

/** Sets the calling thread's wait policy while it lives. */
class ScopedWaitPolicy {
 public:
  explicit ScopedWaitPolicy(const WaitPolicy &policy)
      : prev_(SetThreadWaitPolicy(policy)) {}
  ~ScopedWaitPolicy() { SetThreadWaitPolicy(prev_); }
  ScopedWaitPolicy(const ScopedWaitPolicy &) = delete;
  ScopedWaitPolicy &operator=(const ScopedWaitPolicy &) = delete;

 private:
  WaitPolicy prev_;
};

/** A check that the calling thread's blocking waits with a deadline
 * (Task::WaitFor, TaskGroup::WaitFor, and so every synchronous call) run
 * before each sleep, at least every 20 ms once the polling phase is over:
 * when it returns true the wait gives up as if its deadline had passed (a
 * synchronous call then abandons its task and fails with Timeout). Waits
 * without one (Task::Wait, TaskGroup::Wait), whose callers expect the task
 * complete after, never call it. For callers that must answer the user
 * while they wait, e.g. Python's Ctrl-C. Never runs in a runtime fiber. */
using WaitInterruptFn = bool (*)(void *arg);

/** Sets the calling thread's WaitInterruptFn (with `arg`) while it lives;
 * restores the previous one after. */
class ScopedWaitInterrupt {
 public:
  ScopedWaitInterrupt(WaitInterruptFn fn, void *arg);
  ~ScopedWaitInterrupt();
  ScopedWaitInterrupt(const ScopedWaitInterrupt &) = delete;
  ScopedWaitInterrupt &operator=(const ScopedWaitInterrupt &) = delete;

 private:
  WaitInterruptFn prev_fn_;
  void *prev_arg_;
};

namespace internal {
/** Runs the calling thread's WaitInterruptFn: true if it says to give up
 * (false when none is set). Client waits with a deadline, before each
 * sleep. */
bool WaitInterrupted();
}  // namespace internal

/** Tasks a client waits for together: the runtime counts them down and the
 * last to complete wakes the waiter once. Reusable after Wait returned. */
class TaskGroup {
 public:
  /** Allocates the shared counter; status() says whether that worked. */
  TaskGroup();
  /** Frees the counter. REQUIRES: Wait returned true, or every member
   * still pending was abandoned (their completion then finds no group).
   * While a member is still to be counted, the counter's block stays
   * allocated (until this process exits; in the runtime, until it restarts),
   * so that no later group is made in it for that member's late count to
   * reach. A group that outlives its process's attachment (ClientFinalize)
   * leaves its block alone. */
  ~TaskGroup();
  TaskGroup(const TaskGroup &) = delete;
  TaskGroup &operator=(const TaskGroup &) = delete;

  /** Ok, or OutOfMemory if the counter could not be allocated. */
  const Status &status() const { return status_; }
  /** Makes `task` a member (once: adding it again before it is sent
   * changes nothing; a task that completed and is sent again joins afresh).
   * REQUIRES: not sent yet. Errors: InvalidArgument if another group counts
   * it (it joined that group and was not sent since), OutOfMemory (this
   * group's counter or the task's extension could not be allocated). */
  Status Add(Task *task);
  /** Members not yet complete. */
  u32 pending() const;
  /** The counter's block in `main` (null if it could not be allocated). */
  hipc::Pointer block() const { return shm_.shm_; }
  /** Waits (with the thread's WaitPolicy) until every member completed:
   * true. False when `timeout_us` passed first, or when the runtime died
   * (its process gone, or its heartbeat silent past
   * client.runtime_stale_ms); the members are then still pending. */
  bool WaitFor(u64 timeout_us);
  /** Waits until every member completed (or the runtime died). */
  void Wait() { (void)WaitFor(UINT64_MAX); }

 private:
  FullPtr<TaskGroupShm> shm_;
  Status status_;
  u32 added_ = 0;  ///< Members added ever (done_ counts toward it).
};

namespace internal {
/** The polling phase of a client wait, by the calling thread's WaitPolicy:
 * polls `done()` with pauses for pause_ns, then yielding the core between
 * polls until yield_ns (both from the start). True as soon as done() is;
 * false when the budget is spent (the caller then sleeps on a futex). A
 * pause costs 10-150 cycles depending on the CPU, so the budget is time,
 * read every 64 pauses and after each yield. */
template <typename DoneFn>
bool SpinPhase(DoneFn &&done) {
  const WaitPolicy policy = GetThreadWaitPolicy();
  const u64 budget =
      policy.pause_ns > policy.yield_ns ? policy.pause_ns : policy.yield_ns;
  const u64 start = hshm::NowNs();
  bool yield = policy.pause_ns == 0;
  for (u32 i = 1; budget > 0; ++i) {
    if (done()) return true;
    if (yield) {
      HSHM_THREAD_MODEL->Yield();
    } else {
      hshm::CpuRelax();
    }
    if (yield || (i & 63) == 0) {
      u64 spun = hshm::NowNs() - start;
      if (spun > budget) break;
      yield = spun > policy.pause_ns;
    }
  }
  return done();
}

/** Runtime and client: the group `n` completed tasks belonged to (as their
 * admitted extensions named it) counts `n` more members done, unless its
 * block is no longer that group (freed, or another group's since); the
 * call that reaches the waiter's target wakes it. Any thread. */
void CountDownGroup(const GroupRef &group, u32 n = 1);
/** The group of a task of this process (from its extension), or null. */
GroupRef TaskGroupOf(Task *task);
/** Frees `task`'s extension block, if any, and clears ext_ (the submitter
 * frees it with the task). */
void FreeTaskExt(Task *task);
/** Frees extension block `ext` (kept in this thread's cache for its next
 * tasks when it can be). Null is a no-op. */
void FreeTaskExtBlock(const hipc::Pointer &ext);
}  // namespace internal

}  // namespace chi

#endif  // CHIMAERA_TASK_GRAPH_H_
