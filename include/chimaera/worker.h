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
#include <deque>
#include <memory>
#include <mutex>
#include <unordered_set>
#include <vector>

#include "chimaera/container.h"
#include "chimaera/ipc_manager.h"
#include "chimaera/pool_manager.h"
#include "chimaera/task_graph.h"
#include "hermes_shm/util/tsan.h"

namespace chi {

class Worker;
class TraceRing;

/** Kinds of runtime threads. */
enum class WorkerKind : u32 {
  kLowLatency = 0,     ///< Drains low-latency lanes (incl. the process queue).
  kHighLatency = 1,    ///< Drains high-latency lanes.
  kReinforcement = 2,  ///< Refines ChiMod performance models.
  kProcessReaper = 3,  ///< Frees what dead clients left (ProcessReaper).
};

/** Tasks a worker pops at once from a shared-memory lane, before the first
 * of them is admitted (and so holds: lane_view::TryPopHeld). Small on purpose:
 * while a worker pops and prefetches a long batch, a client waiting on its
 * oldest task catches up and then spins on the state line of each task the
 * worker is about to complete, so every completion pays one more line transfer
 * and the worker stays behind. With 32, a client keeping 256 Noops in flight
 * found its oldest task not yet complete in 37-56% of its waits (2.9 M/s on the
 * VM's slower state); with 4, in about 1% (4.3-4.9 M/s). */
constexpr u32 kShmPopBatch = 4;

/** How long a worker thread waits for a heap lock another thread or process
 * holds before its allocation fails (hipc::HeapLockWaitLimit; the default
 * is 10 s). Well above what a heap walk or the largest merge (1M blocks:
 * about 0.4 s on a loaded 2-CPU VM) holds it; short enough that a client
 * holding the lock stops the worker's lanes for 2 s at most (a slow path
 * tries twice), not 20 s. */
constexpr u64 kHeapLockWaitMs = 1000;

/** Private task buffers are cached by size in steps of this many bytes, up
 * to kTaskBufClasses steps (larger tasks use new and delete), at most
 * kTaskBufsPerClass of each size per worker. */
constexpr size_t kTaskBufQuantum = 64;
constexpr size_t kTaskBufClasses = 16;
constexpr size_t kTaskBufsPerClass = 256;

/** Where an admitted task came from, and so how it completes. */
enum class TaskOrigin : u32 {
  kShm = 0,        ///< A task block in `main`: copy OUT fields back, wake.
  kRemote = 1,     ///< A request from another node: send the reply there.
  kBcastPart = 2,  ///< One node's share of a broadcast: merge into parent_.
};

struct NetMessage;  // a received record (remote_manager.h)

/** Runtime-private state of one admitted task (never in shared memory).
 *
 * A task's life: admit (copy the header and IN fields into task_, a private
 * object of the method's type, validate the copy, accept the task once) ->
 * resolve (a local container, another node, or every node) -> run in a fiber
 * here or forward -> complete through its origin. */
struct PoolInfo;

class RunContext {
 public:
  Task *task_ = nullptr;                 ///< The runtime's private copy.
  const MethodEntry *method_ = nullptr;  ///< Its method's table entry.
  Container *container_ = nullptr;       ///< Where it runs (acquired), or null.
  /** Monitor(kGlobalSchedule) only: the pool being scheduled. */
  const PoolInfo *pool_ = nullptr;
  Worker *worker_ = nullptr;  ///< The worker running it.
  TaskOrigin origin_ = TaskOrigin::kShm;
  FullPtr<Task> shm_task_;    ///< kShm: the submitter's task.
  NodeId from_node_ = 0;      ///< kRemote: the requesting node.
  u64 req_id_ = 0;            ///< kRemote: its request id.
  bool reply_wanted_ = true;  ///< kRemote: false for fire-and-forget.
  /** kRemote: the sender relayed it already (a container moved); it may
   * not be forwarded again. */
  bool relayed_ = false;
  /** kRemote: the node charged for this request (RemoteManager::Charge),
   * or 0; FreeRunContext releases the charge. */
  NodeId charged_node_ = 0;
  u64 charged_bytes_ = 0;               ///< kRemote: the bytes charged.
  RunContext *parent_ = nullptr;        ///< kBcastPart: the broadcast task.
  NodeId node_ = 0;                     ///< kBcastPart: the node it ran on.
  u32 bcast_pending_ = 0;               ///< Broadcast: parts not merged yet.
  bool bcast_first_ = true;             ///< Broadcast: no part merged yet.
  std::vector<hipc::Pointer> in_bufs_;  ///< Inputs copied in from the
                                        ///< network; freed at completion.
  NetMessage *net_ = nullptr;           ///< Inbox item: a request or a reply.
  /** Keeps method_ valid while the task waits on other nodes (set when it
   * is forwarded or broadcast; the pool may be destroyed meanwhile). */
  std::shared_ptr<Container> pool_hold_;
  boost::context::fiber fiber_;  ///< The task's fiber while suspended.
  boost::context::fiber sink_;   ///< The worker, while the task runs.
  char *stack_ = nullptr;        ///< Pooled stack of the fiber.
  Task *waiting_on_ = nullptr;   ///< Subtask the fiber waits for.
  bool sleeping_ = false;        ///< SleepUs: resume at the deadline only.
  /** A TaskGroup's counter the fiber waits to reach zero, or null. */
  std::atomic<u32> *waiting_group_ = nullptr;
  /** The count *waiting_group_ must reach (TaskGroupShm::done_). */
  u32 waiting_target_ = 0;
  /** kShm: the TaskGroup the task belongs to (validated at admission). */
  GroupRef group_;
  /** kShm: predecessors that must complete before it starts. */
  std::vector<hipc::Pointer> deps_;
  /** kShm: each predecessor's task node when first looked at, so that a
   * block freed and reused for another task is not taken for it. */
  std::vector<TaskNode> dep_ids_;
  u64 wait_deadline_ns_ = UINT64_MAX;  ///< Resume by then even if incomplete.
  bool done_ = false;                  ///< The method returned.
  u64 next_run_ns_ = 0;                ///< Periodic tasks: next start time.
  bool parked_ = false;  ///< Periodic: parked once (kMaxPeriodic checked).
  u64 start_ns_ = 0;     ///< When the current run started.

  void *tsan_fiber_ = nullptr;  ///< TSan's handle of fiber_ (TSan builds).
  void *tsan_sink_ = nullptr;   ///< TSan's handle of the worker's context.
  /** Tracing (trace.h): this run's id while the run is traced, else 0. */
  u64 trace_id_ = 0;
  u64 trace_start_ = 0;  ///< Tracing: TraceClock() when the run started.
  /** Bytes of the task's input buffers (its InBuf fields), for cost models. */
  u64 in_bytes_ = 0;
  /** Cost sampling: NowNs when this run started, or 0 if not sampled. */
  u64 sample_start_ns_ = 0;
  /** Monitor(kEstLoad) writes its estimate of the task's cost here (ns of
   * service time; negative: no estimate). */
  double est_load_ns_ = -1;

  /** True once the task's submitter gave up on it (AbandonTask, or the
   * reaper found its process dead): a long method may end early, as nobody
   * reads its result. Only shared-memory tasks are told; a hint read from
   * the submitter's block. From the task's own method. */
  bool SubmitterGaveUp() const {
    return origin_ == TaskOrigin::kShm && shm_task_.ptr_ &&
           (shm_task_->state_.load(std::memory_order_acquire) & kTaskAbandoned);
  }

  /** Suspends the calling task's fiber and returns to the worker. Only from
   * inside this context's fiber. The thread's synchronous-call deadline
   * (ScopedTaskTimeout) is the fiber's own: kept on its stack while it is
   * suspended, and the default (0) meanwhile for the worker's other tasks. */
  void Yield() {
    const u64 deadline_ms = IpcManager::SetThreadTaskTimeoutMs(0);
    HSHM_TSAN_FIBER_SWITCH(tsan_sink_);
    sink_ = std::move(sink_).resume();
    IpcManager::SetThreadTaskTimeoutMs(deadline_ms);
  }
};

/** One timed run of a task, for the per-method cost models. */
struct CostSample {
  PoolId pool;
  MethodId method = 0;
  u64 bytes = 0;  ///< Bytes of its input buffers.
  u64 ns = 0;     ///< Service time: first start to the end of the method.
};

/** One lane a worker drains: a process-queue lane (shared memory, holds
 * task Pointers) or a container lane (runtime-private, admitted tasks). */
struct WorkerLane {
  LaneView *lane = nullptr;        ///< Process-queue lane, or null.
  TaskLane *tlane = nullptr;       ///< Container lane, or null.
  Container *container = nullptr;  ///< Owner of a container lane, else null.
  u32 idle_polls = 0;              ///< Consecutive empty polls.
  u64 pops = 0;  ///< Tasks taken from it since the last lane move decision.
  /** A process lane pinned to another worker (it came here when that
   * worker was stuck): that worker's epoch() + 1 when last looked at, or 0.
   */
  u64 pin_epoch = 0;

  /** True if nothing is queued. */
  bool Empty() const {
    return lane ? lane->QueuedPastReleased() == 0 : tlane->Empty();
  }
  /** True once the owning container retired the lane. */
  bool Retired() const {
    return tlane &&
           (tlane->flags_.load(std::memory_order_acquire) & kLaneRetired);
  }
  /** True for a pinned container's lane, which stays on its worker. */
  bool Pinned() const {
    return tlane &&
           (tlane->flags_.load(std::memory_order_relaxed) & kLanePinned);
  }
};

/** While alive, lets a worker admit shared-memory task `task` of a
 * runtime-only method (MethodEntry::runtime_only) once: a runtime fiber
 * makes one before it submits such a subtask, and keeps it until the
 * subtask is done. Any runtime thread. */
class RuntimeOnlyVouch {
 public:
  explicit RuntimeOnlyVouch(const hipc::Pointer &task);
  ~RuntimeOnlyVouch();
  RuntimeOnlyVouch(const RuntimeOnlyVouch &) = delete;
  RuntimeOnlyVouch &operator=(const RuntimeOnlyVouch &) = delete;
  /** Consumes the vouch for `task`; false if there is none (a client's).
   * Worker threads, at admission. */
  static bool Take(const hipc::Pointer &task);

 private:
  hipc::Pointer task_;
};

/** A low- or high-latency worker. */
class Worker {
 public:
  Worker(u32 id, WorkerKind kind, WorkerShared *shared);
  ~Worker();
  Worker(const Worker &) = delete;
  Worker &operator=(const Worker &) = delete;

  /** Hands a process-queue `lane` to this worker. Any thread; takes effect
   * at the worker's next loop iteration. */
  void AddLane(LaneView *lane);
  /** Hands container `container`'s lane `lane` to this worker. Any thread.
   */
  void AddLane(TaskLane *lane, Container *container);
  /** Queues an inbox item (a network request to admit, or the reply to a
   * task this worker forwarded) and wakes the worker. Any thread. */
  void PostInbox(RunContext *rctx);
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
   * iteration (tasks waiting on predecessors none of which moved do not
   * count). Any thread. */
  bool idle() const { return idle_.load(std::memory_order_acquire); }
  /** Wakes the worker if it sleeps. Any thread. */
  void Wake();

  /** Completes `rctx`'s task with `status` (kept if ok and the method set
   * one) through its origin, releases its container and frees the context.
   * The owning worker's thread only. */
  void Complete(RunContext *rctx, const Status &status);

  /** The RunContext of the task whose fiber runs on the calling thread, or
   * null (also inside a method run without a fiber: see MethodEntry::
   * never_waits). Waits park this fiber. */
  static RunContext *CurrentRunContext();
  /** The RunContext of the task whose method runs on the calling thread,
   * with or without a fiber, or null: for subtask lineage and tracing. */
  static RunContext *RunningContext();
  /** Logs (rate-limited) that the method running on the calling worker
   * without a fiber (it declared kNeverWaits) waits or sleeps, naming its
   * pool and method. From that method, on its worker's thread. */
  static void NoteWaitWithoutFiber();
  /** Wakes the workers that nap while fibers of theirs wait on subtasks.
   * Call after marking a task complete with a seq_cst RMW. Any thread. */
  static void WakeNappers();
  /** From inside a task fiber: lets the worker run other work, then returns.
   * Returns false (doing nothing) outside a fiber. */
  static bool YieldCurrentFiber();
  /** Wakes every worker of this runtime (e.g. a container's move ended:
   * their held tasks go on). Any thread. */
  static void WakeAll();

  /** Tells the worker to re-read whether tracing is on (CHI_TRACE); it does
   * so at its next loop iteration. Any thread. */
  void RefreshTrace();
  /** Records that the task running in the calling fiber submits `task`
   * (task block `p` of `main`), if that task's run is traced. Called by
   * IpcManager::Send before the push; does nothing outside a task fiber.
   * Any thread. */
  static void TraceSubmit(const Task *task, const hipc::Pointer &p);

  /** Asks this worker to hand one of its busy lanes to worker `to` (of the
   * same kind) at its next loop iteration, if it has more than one: the
   * one whose recent share of its tasks is closest to half. The worker
   * stops polling the lane before `to` starts, so the lane's tasks are
   * neither lost, taken twice nor reordered. Any thread (the
   * reinforcement thread's balancer). */
  void RequestLaneMove(Worker *to);
  /** Makes the worker look at its mailbox (and at lanes pinned to other
   * workers, see WorkOrchestrator::PinProcessLane) at its next loop
   * iteration, waking it if asleep. Any thread. */
  void CheckMail() {
    has_mail_.store(true, std::memory_order_release);
    Wake();
  }
  /** Lanes this worker handed to others (moves done). Any thread. */
  u64 lanes_moved() const { return lanes_moved_.load(); }

  /** Moves the timed runs recorded since the last call into `out`. The
   * reinforcement thread; any thread. */
  void TakeSamples(std::vector<CostSample> *out);
  /** One run in this many is timed for the cost models. */
  static constexpr u32 kSampleEvery = 16;
  /** Most samples kept between two TakeSamples calls. */
  static constexpr size_t kMaxSamples = 4096;

  /** Loop iterations so far (any thread; advances while the worker runs). */
  u64 epoch() const { return epoch_.load(std::memory_order_acquire); }
  /** True from when a thief asks for this worker's lanes until the worker
   * came back and answered (see TakeLanesFromStuck). Any thread. */
  bool robbed() const { return steal_.load(std::memory_order_acquire) != 0; }
  /** Unwedging, from the reinforcement thread: if this worker is still in
   * the loop iteration `epoch` (it runs a task that does not yield) and is
   * not touching its lane lists, hands every lane it holds, except the one
   * whose batch it is admitting, to `to`. Returns the lanes moved (0: the
   * worker came back first, or has none). The worker notices at its next
   * look at its lanes. REQUIRES: Worker::EnableUnwedging() succeeded; one
   * caller at a time. */
  u32 TakeLanesFromStuck(u64 epoch, Worker *to);
  /** Registers this process for the expedited membarrier TakeLanesFromStuck
   * relies on; false (and unwedging stays off) if the kernel refuses. */
  static bool EnableUnwedging();
  /** True while the worker sleeps for lack of work. Any thread. */
  bool asleep() const {
    return shared_->sleeping_.load(std::memory_order_relaxed) != 0;
  }
  /** Lanes taken from this worker while it was stuck. Any thread. */
  u64 lanes_unwedged() const {
    return lanes_unwedged_.load(std::memory_order_relaxed);
  }
  /** True once Loop() returned. */
  bool exited() const { return exited_.load(std::memory_order_acquire); }
  u32 id() const { return id_; }
  WorkerKind kind() const { return kind_; }
  /** Lanes this worker drains (approximate; any thread). */
  u32 NumLanes() const { return shared_->num_lanes_.load(); }

 private:
  // The members declared inline below are defined in worker.cc, their only
  // caller, and inlined into every call there (each task calls them once).

  /** Pops and starts tasks from every lane; true if any work was done. */
  bool PollLanes();
  /** Handles the items of the inbox; true if there were any. */
  bool PollInbox();
  /** Admit stage for a task block popped from a shared-memory lane: `p`,
   * whose address in this process is `addr` (hipc::ToProcessAddress(p)). */
  void AdmitShm(const hipc::Pointer &p, const char *addr);
  /** Admit stage for a request that arrived from another node. */
  void AdmitRemote(RunContext *rctx);
  /** Resolve stage: runs `rctx` here, queues it on a container lane,
   * forwards it, or broadcasts it. `pool`, if not null, is the task's pool
   * as FindFast returned it in this loop iteration (else Route looks it
   * up). */
  void Route(RunContext *rctx, PoolInfo *pool = nullptr);
  /** Replicates `rctx` to every node of its pool. */
  void StartBcast(RunContext *rctx);
  /** Forwards `rctx` to `node`, where container `q` runs it. */
  void Forward(RunContext *rctx, NodeId node, const DomainQuery &q);
  /** Folds a finished broadcast part into its parent. */
  void MergePart(RunContext *part);
  /** Applies a reply (or a failure) to a task this worker forwarded. */
  void ApplyReply(RunContext *rctx);
  /** Runs `rctx` on its (acquired) container: on a container lane if the
   * container routes it there, else in a fiber on this worker. If its count
   * is in the batch hold (hold_task_), it is made real (OwnCount) before
   * the task leaves this thread's hands (queued for another worker, or
   * held for a move). */
  inline void RunLocal(RunContext *rctx);
  /** If `rctx` is hold_task_ (acquired under the batch hold, not counted
   * in its container yet): counts it there with a locked add and takes it
   * out of the hold's net. This thread only. */
  void OwnCount(RunContext *rctx);
  /** Counts a task acquired on local container `c` in the batch hold
   * (opened by PollLanes): moves the hold to `c` first if it is on another
   * container (one locked add for the new hold's own count), then counts the
   * task in hold_net_ with no locked instruction. This thread only, while
   * hold_open_ (inside PollLanes). */
  void CountInHold(Container *c);
  /** Ends the batch hold, if any: applies its deferred counts with one
   * locked add (PoolManager::ReleaseHold). This thread only. */
  void FlushHold() {
    if (hold_c_) {
      PoolManager::ReleaseHold(hold_c_, hold_net_, hold_done_);
      hold_c_ = nullptr;
      hold_task_ = nullptr;  // its count is real now
    }
  }
  /** Ends a task of container `c` (null: none): in the batch hold's counts
   * if the hold is on `c`, else with PoolManager::ReleaseCompleted. */
  void ReleaseDone(Container *c) {
    if (c == hold_c_ && c) {
      --hold_net_;
      ++hold_done_;
    } else if (c) {
      PoolManager::ReleaseCompleted(c);
    }
  }
  /** Creates the fiber of `rctx` and runs it until it finishes or yields;
   * a never_waits method runs to its end at once on this thread's stack. */
  inline void Start(RunContext *rctx);
  /** Switches into the fiber of `rctx`. */
  void Resume(RunContext *rctx);
  /** Resumes suspended fibers whose subtasks completed. */
  bool CheckBlocked();
  /** Starts (or fails) tasks in dep_wait_ whose predecessors completed:
   * the oldest first, then a few more round robin. True if any started. */
  bool CheckDeps();
  /** Looks at dep_wait_[i]: if its predecessors completed (or one failed,
   * or it was abandoned) removes it, keeping the order, and starts (or
   * fails) it; true then. This worker's thread only. */
  bool TryStartWaiting(size_t i);
  /** Counts one member of `group` (null: none) done at the end of this loop
   * iteration (FlushGroupCount), together with the members of the same
   * group completed before it: one update of the group's shared line for a
   * run of completions instead of one each, or before a task of no or
   * another group runs (FlushGroupCountBefore). This thread only. */
  void CountDownLater(const GroupRef &group);
  /** Applies the counts CountDownLater deferred. This thread only; called
   * once per loop iteration, before the worker may sleep, and by
   * FlushGroupCountBefore. */
  void FlushGroupCount();
  /** Before task `r` starts or resumes: applies the deferred group counts
   * unless `r` is a member of that group (which cannot complete before
   * `r` anyway). So a long method of another task does not hold up a
   * group's waiter, and a run of one group's members still costs one
   * update. This thread only. */
  void FlushGroupCountBefore(const RunContext *r) {
    if (count_pending_ != 0 && !(r->group_ == count_group_)) {
      FlushGroupCount();
    }
  }
  /** Marks the start of lane-list work (pops, list changes): true if the
   * lists are as they were, false if a thief took all but cur_lane_ (then
   * lanes_ holds at most that lane, at index 0). This thread only. */
  bool EnterLanes() {
    phase_.store(kLanesBusy, std::memory_order_relaxed);
    // StoreLoad against a thief: its membarrier() is our fence, which
    // orders only what the compiler emits in program order: the store must
    // not sink below the load (an acquire load does not stop that).
    std::atomic_signal_fence(std::memory_order_seq_cst);
    if (__builtin_expect(steal_.load(std::memory_order_acquire) == 0, 1)) {
      return true;
    }
    return !AnswerSteal();
  }
  /** Marks the end of lane-list work: task code runs next. */
  void LeaveLanes(size_t cur_lane) {
    cur_lane_ = cur_lane;
    phase_.store(kLanesFree, std::memory_order_release);
  }
  /** EnterLanes' slow path: refuses a steal still being asked, or drops the
   * lanes a thief took. True if the lists changed. */
  bool AnswerSteal();
  /** Parks `r`, acquired on a container that is moving, in held_. */
  void Hold(RunContext *r);
  /** Runs or routes again the held tasks whose container's move ended. */
  bool CheckHeld();
  /** Restarts periodic tasks that are due. */
  bool CheckPeriodic(u64 now);
  /** Hands what this worker staged for the network (RemoteManager::Stage)
   * to the transport. Worker thread only. */
  void FlushNet();
  /** Parks periodic task `r` until its next period, or, at its first park,
   * completes it with ResourceExhausted if this worker already parks
   * kMaxPeriodic. Worker thread only. */
  void ParkPeriodic(RunContext *r);
  /** Finishes a task whose method returned. */
  inline void Finish(RunContext *rctx);
  /** Starts tracing the run of `rctx` (tracing is on). */
  void TraceBegin(RunContext *rctx);
  /** Records the traced run of `rctx`, whose method returned. */
  void TraceEnd(RunContext *rctx);
  /** Adds the timed run `rctx` (sample_start_ns_ set) to samples_. */
  void RecordSample(RunContext *rctx);
  /** Sleeps until woken or `max_us` passed, unless work is visible. */
  void Sleep(u64 max_us);
  /** Aborts the tasks left in a retired container lane and releases the
   * worker's hold on it (after which the container may be freed). */
  void DrainRetired(const WorkerLane &wl);
  /** Hands one lane to `to` (see RequestLaneMove); false if it has fewer
   * than two lanes with recent work. The owning worker, at the top of its
   * loop (no popped task is pending then). */
  bool GiveLane(Worker *to);
  /** Moves long-idle active lanes to cold_ and busy cold lanes back. */
  void RebalanceLanes();
  /** Moves lanes from the mailbox into active_; then, if a process-queue
   * lane was pinned since the last look, hands those it holds that are
   * pinned to another worker to that worker (HandOverPinnedLanes). */
  void TakeMailbox();
  /** Hands each process-queue lane this worker holds that is pinned to
   * another worker to that worker; if `only_if_back`, only once that worker
   * is running its loop again or asleep (the lane came here when it was
   * stuck). The owning worker, at the top of its loop (as GiveLane) or in
   * RebalanceLanes. */
  void HandOverPinnedLanes(bool only_if_back = false);
  /** True if any lane has queued tasks. */
  bool AnyLaneBusy() const;
  /** True if a blocked fiber's subtask completed (it can resume), or one of
   * at most kReadyLooks looks at waiting tasks (round robin over calls)
   * finds a predecessor done or the task abandoned. The owning worker. */
  bool AnyBlockedReady();
  /** Like AnyBlockedReady for dep_wait_ alone, but looks at every waiting
   * task (for a stopping worker's idle report). This thread only. */
  bool AnyWaitingMoved() const;
  /** Completes every queued, periodic and suspended task with kAborted. */
  void AbortRemaining();
  inline RunContext *NewRunContext();
  /** A private task of method `e` (made by e->make_at in a buffer from
   * this worker's cache when its size has one, else in a fresh one). Free
   * it with FreePrivateTask. Worker threads. */
  inline Task *NewPrivateTask(const MethodEntry *e);
  /** Destroys and frees a task NewPrivateTask made (on any worker: the
   * buffer goes to this worker's cache). Worker threads. */
  inline void FreePrivateTask(const MethodEntry *e, Task *task);
  /** Frees `rctx`'s private task and input buffers, and recycles it. */
  inline void FreeRunContext(RunContext *rctx);
  /** A fiber stack (one of this worker's idle ones, or a new mapping) if
   * the runtime has fewer than workers.max_fibers fibers in use (an `admin`
   * pool task may use kAdminFiberReserve more); else null and `*why` set:
   * ResourceExhausted at the limit, OutOfMemory if mapping failed. This
   * worker's thread only. */
  char *GetStack(bool admin, Status *why);
  /** Ends a fiber's use of `stack` (from GetStack on this worker): keeps it
   * for reuse (at most max_idle_stacks_) or unmaps it. Null is a no-op.
   * This worker's thread only. */
  void PutStack(char *stack);

  u32 id_;
  WorkerKind kind_;
  WorkerShared *shared_;
  // CHI_IPC and CHI_POOL_MANAGER, read once: each use of the macros costs a
  // load through the GOT and a null check, several times per task.
  IpcManager *const ipc_;
  PoolManager *const pools_;
  /** Fault injection for tests (CHI_FAULT_SCRIBBLE_ADMITTED=1 in the
   * runtime's environment): AdmitShm overwrites the header fields of each
   * pushed task in the client's block once it has checked them, as a
   * client racing the admission would; the task must still run as
   * checked. Off in production. */
  const bool fault_scribble_;
  std::vector<WorkerLane> lanes_;  ///< Active lanes: polled every loop.
  std::vector<WorkerLane> cold_;   ///< Idle lanes: polled every kColdPeriod.
  u32 loop_count_ = 0;
  PoolCache pool_cache_;  ///< This worker's pool lookups.
  // The batch hold. While PollLanes admits tasks from shared-memory lanes,
  // the worker acquires the container they resolve to once (hold_c_, one
  // count in its counts_) and counts the tasks it acquires and completes
  // on it here instead of with two locked adds each; FlushHold applies the
  // sum at the end of the poll, or when a task of another container starts.
  // The hold's own count keeps the container's in-flight count above zero,
  // and above its held_ count, until then, so neither pool destruction nor
  // a move can pass a task the hold covers. A task that leaves this
  // thread's hands before the flush, or is still running when Route
  // returns, gets a real count (OwnCount).
  bool hold_open_ = false;       ///< Inside PollLanes: CountInHold may hold.
  Container *hold_c_ = nullptr;  ///< The held container, or null.
  /** The task Route runs under the hold, while its count is only in
   * hold_net_ (cleared when it completes or OwnCount counts it). */
  RunContext *hold_task_ = nullptr;
  i64 hold_net_ = 0;   ///< Tasks acquired minus released under the hold.
  u32 hold_done_ = 0;  ///< Tasks completed under the hold.
  /** The ring this worker records into while tracing is on, else null
   * (refreshed in TakeMailbox; this thread only). */
  TraceRing *trace_ = nullptr;
  u32 trace_seq_ = 0;  ///< Last run sequence number handed out.
  /** While admitting a batch popped from a process lane: the end stamp of
   * the batch's last run that ended, which the next run of the batch takes
   * as its start (one clock read per task instead of two); 0: read the
   * clock. Used only while trace_chain_ (a run outside a batch may start
   * after a later submission, so it always reads the clock). */
  u64 trace_last_ = 0;
  bool trace_chain_ = false;
  std::atomic<u64> epoch_{0};
  // Unwedging handshake with TakeLanesFromStuck (see EnterLanes). phase_:
  // kLanesBusy while this worker may pop from or change its lane lists,
  // kLanesFree while it runs task code. steal_: 0 idle, 1 a thief asks, 2
  // the thief took the lists, 3 it is done with them.
  static constexpr u32 kLanesBusy = 0, kLanesFree = 1;
  alignas(64) std::atomic<u32> phase_{kLanesBusy};
  std::atomic<u32> steal_{0};
  /** The lanes and cold lanes a thief left this worker, written by the
   * thief while steal_ is 2, taken by AnswerSteal once it is 3. */
  std::vector<WorkerLane> stolen_keep_, stolen_keep_cold_;
  /** Index in lanes_ of the lane whose popped batch is being admitted, or
   * SIZE_MAX (written before phase_ turns kLanesFree; a thief keeps it). */
  size_t cur_lane_ = SIZE_MAX;
  std::atomic<u64> lanes_unwedged_{0};
  std::atomic<bool> exited_{false};
  std::vector<RunContext *> blocked_;
  /** Admitted, predecessors pending; oldest first (CheckDeps). */
  std::deque<RunContext *> dep_wait_;
  /** Acquired on a moving container: wait for the move to end. */
  std::vector<RunContext *> held_;
  /** Where CheckDeps resumes its round-robin sweep of dep_wait_. */
  size_t dep_cursor_ = 0;
  /** Where AnyBlockedReady's next look at dep_wait_ starts. */
  size_t ready_cursor_ = 0;
  /** The group CountDownLater counts for, and how many members it owes. */
  GroupRef count_group_;
  u32 count_pending_ = 0;
  std::vector<RunContext *> periodic_;
  std::vector<RunContext *> free_rctx_;
  std::vector<char *> free_stacks_;
  u32 max_idle_stacks_ = 0;  ///< free_stacks_ keeps at most this many.
  u32 fibers_in_use_ = 0;    ///< Stacks of this worker's live fibers.
  /** Freed private task buffers by size class (kTaskBufQuantum bytes
   * each step); see NewPrivateTask. */
  std::vector<void *> task_bufs_[kTaskBufClasses];
  std::unordered_set<char *> all_stacks_;  ///< Every stack this worker mapped.
  std::mutex mailbox_mu_;
  std::vector<WorkerLane> mailbox_;
  TaskLane inbox_;  ///< Network requests and replies (see PostInbox).
  std::atomic<bool> has_mail_{false};
  /** RequestLaneMove's target, or null (read at TakeMailbox). */
  std::atomic<Worker *> move_to_{nullptr};
  /** WorkOrchestrator::lane_pin_gen() when this worker last looked. */
  u64 lane_pin_gen_seen_ = 0;
  std::atomic<u64> lanes_moved_{0};  ///< Lanes handed away so far.
  std::atomic<bool> stop_{false};
  /** This thread staged a forward or reply since its last FlushNet. */
  bool net_staged_ = false;
  std::atomic<bool> exit_{false};
  std::atomic<bool> idle_{false};
  std::atomic<u64> deadline_ns_{0};
  u64 idle_since_ns_ = 0;
  u32 idle_polls_ = 0;  ///< Empty polls since the last work (clock pacing).
  /** Load accounting, in TraceClock ticks: the first and the latest empty
   * poll of the current idle period (0 while busy). Unlike idle_since_ns_
   * they survive naps. */
  u64 idle_start_ = 0;
  u64 idle_last_ = 0;
  u32 sample_seq_ = 0;  ///< Runs started; every kSampleEvery-th is timed.
  /** Timed runs not yet taken by the reinforcement thread (TakeSamples). */
  std::vector<CostSample> samples_;
  std::mutex samples_mu_;  ///< Guards samples_ (worker vs reinforcement).
  u32 idle_spin_us_ = 100;
};

}  // namespace chi

#endif  // CHIMAERA_WORKER_H_
