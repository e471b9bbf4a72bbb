// ChiContainer: the runtime-side object that holds part of a pool's state and
// processes its tasks. Lives in runtime process memory, so it may use virtual
// functions and std:: containers.
//
// A module derives from Container, registers a typed handler per method in
// its constructor, and exports a factory with CHI_TASK_CC (module.h):
//
//   class Compressor : public chi::Container {
//    public:
//     Compressor() {
//       RegisterMethod(Method::kCompress, "Compress", &Compressor::Compress);
//     }
//     void Compress(CompressTask *task, chi::RunContext &rctx);
//   };
//
// Threading: methods of one container may run concurrently on several
// workers (one per lane); a container guards its own shared state. Create and
// Destroy run alone.
#ifndef CHIMAERA_CONTAINER_H_
#define CHIMAERA_CONTAINER_H_

#include <atomic>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "chimaera/ipc_manager.h"
#include "chimaera/task.h"

namespace chi {

class RunContext;
class Container;

/** One entry of a container's method table (type-erased typed handler). */
struct MethodEntry {
  const char *name = nullptr;
  /** Calls the typed handler. */
  void (*run)(Container *self, void *handler, Task *task,
              RunContext &rctx) = nullptr;
  /** Destroys a task of this method's type in place (before freeing). */
  void (*destroy)(Task *task) = nullptr;
  /** Constructs a task of this method's type in `mem` (task_size bytes,
   * aligned to task_align), in runtime-private memory; undo with destroy. */
  Task *(*make_at)(void *mem) = nullptr;
  /** Runs the task type's Fields() declaration with `ar`. */
  void (*fields)(FieldArchive &ar, Task *task) = nullptr;
  /** The handler (a member function pointer, stored opaquely). */
  alignas(16) char handler[16] = {};
  /** sizeof the task type, to validate tasks from untrusted clients. */
  size_t task_size = 0;
  /** alignof the task type. */
  size_t task_align = 0;
  /** TaskTypeTag of the task type; a shm task must carry the same. */
  u32 type_tag = 0;
  /** The task type declares `static constexpr bool kNeverWaits = true`: the
   * method never waits or yields (no subtask waits, no SleepUs), so workers
   * run it on their own stack, without a fiber (two context switches and a
   * stack less per task). A wait inside it would block the worker. */
  bool never_waits = false;
  /** The task type declares a Fields() of its own (internal::kHasOwnFields).
   * False only when its Fields() call reaches Task's empty declaration, so
   * the runtime may skip the field passes for it: nothing to check, copy
   * back or free. */
  bool has_fields = true;
  /** The task type declares `static constexpr bool kRuntimeOnly = true`:
   * a step the runtime itself takes (e.g. installing a migrating
   * container). A task of it from shared memory is admitted only if a
   * runtime fiber vouched for it (RuntimeOnlyVouch); a client's is refused.
   * Requests from other nodes are trusted as before. */
  bool runtime_only = false;
};

namespace internal {
/** True if task type T declares kNeverWaits = true (see MethodEntry). */
template <typename T, typename = void>
struct NeverWaits : std::false_type {};
template <typename T>
struct NeverWaits<T, std::void_t<decltype(T::kNeverWaits)>>
    : std::bool_constant<T::kNeverWaits> {};
/** True if task type T declares kRuntimeOnly = true (see MethodEntry). */
template <typename T, typename = void>
struct RuntimeOnly : std::false_type {};
template <typename T>
struct RuntimeOnly<T, std::void_t<decltype(T::kRuntimeOnly)>>
    : std::bool_constant<T::kRuntimeOnly> {};
/** True if calling Fields() on a T reaches a declaration other than Task's
 * empty one (which alone returns NoFields): overload resolution decides,
 * exactly as for the runtime's own calls. */
template <typename T>
inline constexpr bool kHasOwnFields =
    !std::is_same_v<decltype(std::declval<T &>().Fields(
                        std::declval<FieldArchive &>())),
                    NoFields>;
}  // namespace internal

/** A runtime-private lane of admitted tasks (a container queue's lane or a
 * worker's inbox). Bounded; any thread may Push, one worker Pops. */
class TaskLane {
 public:
  /** A lane holding at most `depth` tasks. */
  explicit TaskLane(u64 depth = 1024) : depth_(depth) {}
  /** Appends `rctx`; false when the lane is full or retired (kLaneRetired,
   * checked under the lock: see TakeAll). Any thread. */
  bool Push(RunContext *rctx);
  /** Appends `rctx` whatever the depth (inboxes must never drop); false only
   * when the lane is retired. Any thread. */
  [[nodiscard]] bool PushUnbounded(RunContext *rctx);
  /** The oldest task, or null. The draining worker only. */
  RunContext *Pop();
  /** Removes and returns every queued task, under the lock. Called by the
   * draining worker after it saw kLaneRetired: a push that missed the flag
   * went in before this, and every later one sees it and is refused, so no
   * task is left behind in a drained lane. */
  std::deque<RunContext *> TakeAll();
  /** True if no task is queued (relaxed; any thread). */
  bool Empty() const { return size_.load(std::memory_order_acquire) == 0; }
  /** Queued tasks (approximate; any thread). */
  u64 Size() const { return size_.load(std::memory_order_relaxed); }
  /** Worker that drains this lane (for wake-ups). */
  std::atomic<u32> worker_id_{~0u};
  /** kLaneRetired once the owning container is being destroyed;
   * kLanePinned for a pinned container's lane (set before it is handed to
   * its worker). */
  std::atomic<u32> flags_{0};

 private:
  std::mutex mu_;
  std::deque<RunContext *> q_;  // guarded by mu_
  std::atomic<u64> size_{0};
  u64 depth_;
};

/** Base methods every container answers; module methods start at kCustom. */
namespace BaseMethod {
static GLOBAL_CROSS_CONST MethodId kCreate = 0;
static GLOBAL_CROSS_CONST MethodId kDestroy = 1;
static GLOBAL_CROSS_CONST MethodId kCustom = 10;
}  // namespace BaseMethod

/** The method list of a module: the task type at index i is method
 * BaseMethod::kCustom + i. Each type may appear once. */
template <typename... TaskTs>
struct Methods {
  /** Number of methods. */
  static constexpr u32 kCount = sizeof...(TaskTs);

  /** The method id of task type T (a compile error if T is not listed). */
  template <typename T>
  static constexpr MethodId IdOf() {
    static_assert((0 + ... + std::is_same_v<T, TaskTs>) == 1,
                  "the task type must appear exactly once in the module's "
                  "Methods<...> list");
    constexpr bool kIs[] = {std::is_same_v<T, TaskTs>...};
    MethodId i = 0;
    while (!kIs[i]) ++i;
    return BaseMethod::kCustom + i;
  }
};

/** Allocates a task of method T of module Def (a struct with Methods, see
 * chimaera/module.h) as task node `node` of pool `pool`, routed by `dom`:
 * `args` initialise its first fields in order. Null if `main` is full. Any
 * thread; send with chi::Submit. */
template <typename Def, typename T, typename... Args>
FullPtr<T> NewMethodTask(const TaskNode &node, const PoolId &pool,
                         const DomainQuery &dom, Args &&...args) {
  static_assert(std::is_aggregate_v<T>,
                "a method's task type must be an aggregate: public fields, "
                "no constructors (see chimaera/module.h)");
  FullPtr<T> t = CHI_IPC->NewTaskDefault<T>(std::forward<Args>(args)...);
  if (!t.IsNull()) {
    t->SetBase(node, pool, dom, Def::Methods::template IdOf<T>());
  }
  return t;
}

/** A container of a pool. */
class Container {
 public:
  /** Frees the container's queues. REQUIRES: no worker polls them any more
   * (PoolManager::FinishDestroy retires them and waits first). */
  virtual ~Container();

  /** Called once after construction, before any task. `params` are the
   * module-specific creation parameters the client passed (may be empty).
   * An error fails the pool creation. */
  virtual Status Create(const std::string &params) { return Status::Ok(); }
  /** Called once before destruction, after the last task finished. */
  virtual void Destroy() {}
  /** Migration (admin MigrateContainer), on the node the container leaves:
   * appends its whole state to `out`. Called with no task running on it
   * (new ones wait until the move ends). The default refuses
   * (Unimplemented): a module must opt in to migration. */
  virtual Status SaveState(std::string *out);
  /** Migration, on the node the container moves to: restores the state
   * SaveState wrote, after Create(params) and before any task. The default
   * refuses (Unimplemented). Treat `in` as untrusted bytes. */
  virtual Status LoadState(const std::string &in);
  /** Create, SaveState and LoadState as the runtime calls them: an
   * exception they throw becomes an Internal status, so that the runtime
   * can undo what it started (a name reserved, a move begun). Fibers'
   * forced unwinding passes through. */
  Status GuardedCreate(const std::string &params);
  Status GuardedSaveState(std::string *out);
  Status GuardedLoadState(const std::string &in);
  /** Scheduling hook. With kGlobalSchedule, called for a GetDynamic() task:
   * set task->dom_query_ to a concrete query. The default, for a pool on
   * several nodes, picks a container on the least loaded node from the
   * nodes' load reports (PoolManager::LeastLoaded with rctx.pool_;
   * balance.dynamic: local turns it off), and otherwise hashes the task
   * node over the pool's local containers. With kEstLoad: set
   * rctx.est_load_ns_ to the task's expected service time (the default
   * asks the runtime's learned model of the method, linear in the bytes of
   * its input buffers, rctx.in_bytes_; -1 before any sample). The runtime
   * does not call kEstLoad itself: it is for modules' own policies. */
  virtual void Monitor(MonitorMode mode, Task *task, RunContext &rctx);
  /** Chooses where a task resolved to this container runs: a lane of one of
   * its queues (GetLane), or null to run it on the worker that admitted it.
   * The default runs kHighLatency tasks on the lanes of the container's
   * first high-latency queue, if it made one, and everything else inline.
   * `task` is the runtime's private copy. Called by workers, concurrently. */
  virtual TaskLane *Route(Task *task);
  /** Merges one node's reply to a GetGlobalBcast() task into `acc` (the
   * task its submitter waits on, on the submitter's node). The runtime has
   * already copied the OUT fields of the first reply into `acc` and applies
   * "first error wins" to the status; the default does nothing more.
   * Called by a worker of the submitter's node, once per node, on the
   * container of that node (or the pool's first local one). */
  virtual void MergeBcast(Task *acc, Task *reply, NodeId from) {}

  /** Creates queue `id`: `num_lanes` runtime-private lanes of `depth` tasks,
   * drained by workers of priority `prio` (low-latency lanes go to
   * low-latency workers, high-latency lanes to high-latency workers). Call
   * from Create(). Errors: AlreadyExists, OutOfMemory. */
  Status CreateQueue(QueueId id, u32 num_lanes, TaskPrio prio, u64 depth = 256);
  /** Lane `lane` (mod the lane count) of queue `id`, or null. */
  TaskLane *GetLane(QueueId id, u32 lane);
  /** Marks every lane of this container retired: workers abort what is left
   * in them and stop polling them. Pool destruction only. */
  void RetireQueues();
  /** Pins this container to worker `worker` (an index of the orchestrator's
   * workers, as chimaera_stat lists them): from now on every task of the
   * container runs there, whichever worker admitted it, one fiber at a
   * time. So the container's methods never run in parallel (they
   * interleave only where one waits: a subtask, SleepUs, a yield), and its
   * state needs no lock, as in a shard-per-core design. Its lane never
   * moves, neither by lane balancing nor away from a stuck worker; a
   * method that never yields therefore stalls the container. Tasks that
   * already started elsewhere finish there. Once per container: pinning
   * again to the same worker is Ok, to another AlreadyExists. Errors:
   * InvalidArgument (no such worker), Unavailable (being destroyed). From
   * Create() or any thread (admin::Client::PinContainer). Runtime only. */
  Status PinToWorker(u32 worker);
  /** Pins this container (PinToWorker) to the worker that now drains its
   * low-latency process-queue lane (container c uses lane c % lanes), so
   * that tasks addressed to it by id reach it in one hop. */
  Status PinToOwnLane();
  /** The runtime, once the container was created (or installed by a
   * migration): a kPinned module's container is pinned with PinToOwnLane;
   * another one, if `was_pinned_to` is not ~0u (the worker it was pinned to
   * on the node it left), to that worker, or with PinToOwnLane if this node
   * has no such worker. Ok if nothing is to be pinned. */
  Status PinAsDeclared(u32 was_pinned_to = ~0u);
  /** The lane of the worker this container is pinned to, or null. Any
   * thread. */
  TaskLane *PinnedLane() const {
    return pin_lane_.load(std::memory_order_acquire);
  }

  /** Runs `task` with the handler of task->method_. Unknown methods complete
   * the task with NotFound. */
  void Run(Task *task, RunContext &rctx);
  /** The method table entry of `method`, or null. */
  const MethodEntry *GetMethod(MethodId method) const {
    return method < methods_.size() && methods_[method].run ? &methods_[method]
                                                            : nullptr;
  }
  /** Names of the registered methods (index = MethodId). */
  std::vector<std::string> MethodNames() const;

  // Identity, set by the pool manager before Create().
  PoolId pool_id_;
  std::string pool_name_;
  std::string module_name_;
  ContainerId container_id_ = 0;
  u32 num_containers_ = 1;
  /** Tasks acquired on this container and not yet released (pool
   * destruction waits for zero) in the low 32 bits, and the tasks it
   * completed, mod 2^32, in the high 32 bits: a completion updates both with
   * one locked instruction (PoolManager::ReleaseCompleted). */
  std::atomic<u64> counts_{0};
  /** Times the completed half of counts_ wrapped. */
  std::atomic<u32> completed_wraps_{0};
  /** Tasks in flight on this container (the low half of counts_). */
  u32 Inflight(std::memory_order mo = std::memory_order_seq_cst) const {
    return static_cast<u32>(counts_.load(mo));
  }
  /** Tasks this container completed (a statistic: read without a lock). */
  u64 Completed() const {
    u64 hi = completed_wraps_.load(std::memory_order_relaxed);
    return (hi << 32) | (counts_.load(std::memory_order_relaxed) >> 32);
  }
  /** Lanes of this container that some worker still holds (in its lists or
   * mailbox). The container's queues are freed only at zero. */
  std::atomic<u32> lanes_held_{0};
  /** Set when the pool is being destroyed: periodic tasks stop. */
  std::atomic<bool> destroying_{false};
  /** Migration state (kServing, kMoving: tasks that reach it wait on
   * their worker; kMoved: they are routed again, to its new node). */
  std::atomic<u32> moving_{0};
  static constexpr u32 kServing = 0, kMoving = 1, kMoved = 2;
  /** Tasks acquired on this container that wait for a move to end (counted
   * in counts_ too). */
  std::atomic<u32> held_{0};

 protected:
  /** Registers `fn` as the handler of `method` (call from the constructor). */
  template <typename C, typename TaskT>
  void RegisterMethod(MethodId method, const char *name,
                      void (C::*fn)(TaskT *, RunContext &)) {
    static_assert(sizeof(fn) <= sizeof(MethodEntry::handler), "handler size");
    MethodEntry &e = NewEntry<TaskT>(method, name);
    std::memcpy(e.handler, &fn, sizeof(fn));
    e.run = [](Container *self, void *handler, Task *task, RunContext &rctx) {
      void (C::*f)(TaskT *, RunContext &);
      std::memcpy(&f, handler, sizeof(f));
      (static_cast<C *>(self)->*f)(static_cast<TaskT *>(task), rctx);
    };
  }

  /** Makes the table entry of `method` for tasks of type TaskT (all but
   * the handler: the caller sets run/handler). Constructor only. */
  template <typename TaskT>
  MethodEntry &NewEntry(MethodId method, const char *name) {
    static_assert(std::is_base_of<Task, TaskT>::value, "TaskT must be a Task");
    static_assert(std::is_trivially_destructible_v<TaskT>,
                  CHI_TASK_LAYOUT_RULE);
    if (methods_.size() <= method) methods_.resize(method + 1);
    MethodEntry &e = methods_[method];
    e.name = name;
    e.task_size = sizeof(TaskT);
    e.type_tag = kTaskTypeTag<TaskT>;
    e.never_waits = internal::NeverWaits<TaskT>::value;
    e.runtime_only = internal::RuntimeOnly<TaskT>::value;
    e.has_fields = internal::kHasOwnFields<TaskT>;
    e.destroy = [](Task *task) { static_cast<TaskT *>(task)->~TaskT(); };
    e.task_align = alignof(TaskT);
    e.make_at = [](void *mem) -> Task * {
      TaskT *t;
      if constexpr (std::is_aggregate_v<TaskT>) {
        t = new (mem) TaskT{};
      } else {
        t = new (mem)
            TaskT(hipc::CtxAllocator<CHI_ALLOC_T>(CHI_IPC->main_alloc()));
      }
      t->type_tag_ = kTaskTypeTag<TaskT>;
      return t;
    };
    e.fields = [](FieldArchive &ar, Task *task) {
      static_cast<TaskT *>(task)->Fields(ar);
    };
    return e;
  }

 private:
  /** A queue made by CreateQueue. */
  struct OwnedQueue {
    QueueId id;
    TaskPrio prio;
    std::vector<std::unique_ptr<TaskLane>> lanes;
  };
  std::vector<MethodEntry> methods_;
  std::vector<OwnedQueue> queues_;

 protected:
  /** Set by chi::Module for a module that declares kPinned. */
  bool pin_at_create_ = false;

 private:
  std::mutex pin_mu_;                    ///< Serializes PinToWorker.
  std::unique_ptr<TaskLane> pin_owned_;  // guarded by pin_mu_
  /** The process-queue lane of the tasks addressed to this container was
   * moved to its pinned worker (WorkOrchestrator::PinProcessLane); guarded
   * by pin_mu_. */
  bool pinned_process_lane_ = false;
  /** pin_owned_ once it is handed to its worker (never changes after). */
  std::atomic<TaskLane *> pin_lane_{nullptr};
};

}  // namespace chi

#endif  // CHIMAERA_CONTAINER_H_
