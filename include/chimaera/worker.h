// Runtime workers and the per-task RunContext (runtime only).
//
// A worker drains its lanes (process-queue lanes and container lanes), resolves
// each task to a container, and runs the container method inside a fiber with
// a pooled 64 KB stack (Boost.Context). A task that waits on a subtask yields
// its fiber; the worker resumes it once the subtask completes. An idle worker
// polls for idle_spin_us, then sleeps on a futex that producers wake.
//
// Threading: each Worker object is used by its own thread, except AddLane
// (any thread: handed over through a mailbox) and the statistics.
#ifndef CHIMAERA_WORKER_H_
#define CHIMAERA_WORKER_H_

#if !CHIMAERA_RUNTIME
#error "chimaera/worker.h is runtime-only"
#endif

#include <boost/context/fiber.hpp>
#include <mutex>
#include <vector>

#include "chimaera/container.h"
#include "chimaera/ipc_manager.h"
#include "chimaera/pool_manager.h"

namespace chi {

class Worker;

/** Kinds of runtime threads. */
enum class WorkerKind : u32 {
  kLowLatency = 0,     ///< Drains low-latency lanes (incl. the process queue).
  kHighLatency = 1,    ///< Drains high-latency lanes.
  kReinforcement = 2,  ///< Refines ChiMod performance models.
  kProcessReaper = 3,  ///< Frees memory of dead clients (not implemented yet).
};

/** Runtime-private state of one executing task (never in shared memory). */
class RunContext {
 public:
  FullPtr<Task> task_;              ///< The task being run.
  Container *container_ = nullptr;  ///< Where it runs.
  Worker *worker_ = nullptr;        ///< The worker running it.
  boost::context::fiber fiber_;     ///< The task's fiber while suspended.
  boost::context::fiber sink_;      ///< The worker, while the task runs.
  char *stack_ = nullptr;           ///< Pooled stack of the fiber.
  Task *waiting_on_ = nullptr;      ///< Subtask the fiber waits for.
  bool done_ = false;               ///< The method returned.
  u64 next_run_ns_ = 0;             ///< Periodic tasks: next start time.
  u64 start_ns_ = 0;                ///< When the current run started.

  /** Suspends the calling task's fiber and returns to the worker. Only from
   * inside this context's fiber. */
  void Yield() { sink_ = std::move(sink_).resume(); }
};

/** One lane a worker drains: a process-queue lane or a container lane. */
struct WorkerLane {
  Lane *lane = nullptr;
  Container *container = nullptr;  ///< Owner of a container lane, else null.
  u32 idle_polls = 0;              ///< Consecutive empty polls.
};

/** A low- or high-latency worker. */
class Worker {
 public:
  Worker(u32 id, WorkerKind kind, WorkerShared *shared);
  ~Worker();
  Worker(const Worker &) = delete;
  Worker &operator=(const Worker &) = delete;

  /** Hands `lane` to this worker. Any thread; takes effect at the worker's
   * next loop iteration. */
  void AddLane(Lane *lane, Container *container);
  /** The thread body: runs until Stop() and every accepted task finished, or
   * until the drain deadline passed. */
  void Loop();
  /** Asks the loop to drain: keep running tasks and report idleness, until
   * Exit() or `deadline_ns` (NowNs clock); then abort what is left. Any
   * thread. */
  void Stop(u64 deadline_ns);
  /** Lets a draining worker leave its loop. Any thread. */
  void Exit();
  /** While draining: true when the worker had nothing to do in its last
   * iteration. Any thread. */
  bool idle() const { return idle_.load(std::memory_order_acquire); }
  /** Wakes the worker if it sleeps. Any thread. */
  void Wake();

  /** The RunContext of the task running on the calling thread, or null. */
  static RunContext *CurrentRunContext();
  /** From inside a task fiber: lets the worker run other work, then returns.
   * Returns false (doing nothing) outside a fiber. */
  static bool YieldCurrentFiber();

  /** Loop iterations so far (any thread; advances while the worker runs). */
  u64 epoch() const { return epoch_.load(std::memory_order_acquire); }
  /** True once Loop() returned. */
  bool exited() const { return exited_.load(std::memory_order_acquire); }
  u32 id() const { return id_; }
  WorkerKind kind() const { return kind_; }
  /** Lanes this worker drains (approximate; any thread). */
  u32 NumLanes() const { return shared_->num_lanes_.load(); }

 private:
  /** Pops and starts tasks from every lane; true if any work was done. */
  bool PollLanes();
  /** Resolves `task` (a live block of `block_size` usable bytes) and starts
   * it; completes it with an error on failure. */
  void Dispatch(FullPtr<Task> task, Container *known, u64 block_size);
  /** Creates the fiber of `rctx` and runs it until it finishes or yields. */
  void Start(RunContext *rctx);
  /** Switches into the fiber of `rctx`. */
  void Resume(RunContext *rctx);
  /** Resumes suspended fibers whose subtasks completed. */
  bool CheckBlocked();
  /** Restarts periodic tasks that are due. */
  bool CheckPeriodic(u64 now);
  /** Finishes a task whose method returned. */
  void Finish(RunContext *rctx);
  /** Sleeps until woken or `max_us` passed, unless work is visible. */
  void Sleep(u64 max_us);
  /** Aborts the tasks left in a retired container lane and releases the
   * worker's hold on it (after which the container may be freed). */
  void DrainRetired(const WorkerLane &wl);
  /** Moves long-idle active lanes to cold_ and busy cold lanes back. */
  void RebalanceLanes();
  /** Moves lanes from the mailbox into active_. */
  void TakeMailbox();
  /** True if any lane has queued tasks. */
  bool AnyLaneBusy() const;
  /** Completes every queued, periodic and suspended task with kAborted. */
  void AbortRemaining();
  RunContext *NewRunContext();
  void FreeRunContext(RunContext *rctx);
  char *GetStack();
  void PutStack(char *stack);

  u32 id_;
  WorkerKind kind_;
  WorkerShared *shared_;
  std::vector<WorkerLane> lanes_;  ///< Active lanes: polled every loop.
  std::vector<WorkerLane> cold_;   ///< Idle lanes: polled every kColdPeriod.
  u32 loop_count_ = 0;
  PoolCache pool_cache_;  ///< This worker's pool lookups.
  std::atomic<u64> epoch_{0};
  std::atomic<bool> exited_{false};
  std::vector<RunContext *> blocked_;
  std::vector<RunContext *> periodic_;
  std::vector<RunContext *> free_rctx_;
  std::vector<char *> free_stacks_;
  std::vector<char *> all_stacks_;
  std::mutex mailbox_mu_;
  std::vector<WorkerLane> mailbox_;
  std::atomic<bool> has_mail_{false};
  std::atomic<bool> stop_{false};
  std::atomic<bool> exit_{false};
  std::atomic<bool> idle_{false};
  std::atomic<u64> deadline_ns_{0};
  u64 idle_since_ns_ = 0;
  u32 idle_polls_ = 0;  ///< Empty polls since the last work (clock pacing).
  u32 idle_spin_us_ = 100;
};

}  // namespace chi

#endif  // CHIMAERA_WORKER_H_
