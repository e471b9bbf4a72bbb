// The base task: a container method to execute plus its parameters.
//
// Tasks live in the `main` shared-memory segment, so they hold no virtual
// functions, no process pointers and no std:: containers. A client allocates
// one with CHI_IPC->NewTask<T>(), submits it with CHI_IPC->Send(), waits with
// Wait() and frees it with CHI_IPC->DelTask(). The runtime never touches a
// task after completing it, except a TASK_FIRE_AND_FORGET task or one its
// submitter abandoned (internal::AbandonTask), which the runtime frees.
//
// Threading: the submitter owns the IN fields until Send; the runtime owns the
// task until it completes; after IsComplete() returns true (acquire order) the
// submitter owns it again and may read the OUT fields.
#ifndef CHIMAERA_TASK_H_
#define CHIMAERA_TASK_H_

#include <atomic>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "chimaera/chimaera_types.h"
#include "chimaera/task_fields.h"

/** Why a task type must be trivially destructible (a static_assert's
 * message): the runtime copies a task's bytes out of shared memory and
 * destroys its copies without running the submitter's constructors. */
#define CHI_TASK_LAYOUT_RULE                                              \
  "a task type lives in shared memory and the runtime copies it byte by " \
  "byte: no members with destructors (std::string, std::vector, smart "   \
  "pointers); pass data in an InBuf/OutBuf (chi::AllocateBuffer) instead"

/** Decorators of task fields (documentation only; they expand to nothing).
 * The CHI_ forms are always defined. The spec's short names IN, OUT, INOUT
 * and TEMP are defined too, unless the includer defines
 * CHIMAERA_NO_FIELD_MACROS first (or another header already defined them),
 * so they never clash with other libraries' macros of the same name. */
#define CHI_IN     // This is an input by the client
#define CHI_OUT    // This is output by the runtime
#define CHI_INOUT  // This is both an input and output
#define CHI_TEMP   // This is internally used by the runtime or client.
#ifndef CHIMAERA_NO_FIELD_MACROS
#ifndef IN
#define IN CHI_IN
#endif
#ifndef OUT
#define OUT CHI_OUT
#endif
#ifndef INOUT
#define INOUT CHI_INOUT
#endif
#ifndef TEMP
#define TEMP CHI_TEMP
#endif
#endif  // CHIMAERA_NO_FIELD_MACROS

/** Declares a task's fields in one line, in the order they travel:
 *   CHI_FIELDS(In(key_), InBuf(data_, size_), Out(sum_))
 * is the same as a Fields(ar) template calling ar.In(key_), ar.InBuf(...),
 * ar.Out(sum_) in turn. A buffer's size must be a field of the task; write
 * Fields() by hand when it is an expression. */
#define CHI_FIELDS(...)  \
  template <typename Ar> \
  void Fields(Ar &ar) {  \
    ar(__VA_ARGS__);     \
  }

/** This task will execute periodically (every period_ns_) until stopped. If
 * this is not set, the task is executed exactly once. */
#define TASK_PERIODIC BIT_OPT(chi::u32, 0)
/** This task has no return result and is freed by the runtime on completion.
 */
#define TASK_FIRE_AND_FORGET BIT_OPT(chi::u32, 1)
/** The task owns its InBuf buffers: they are freed with the task, by
 * whoever frees it (the submitter's DelTask, or the runtime for a
 * fire-and-forget or abandoned task). See Task::SetOwnsInputs. */
#define TASK_OWNS_INPUTS BIT_OPT(chi::u32, 2)

namespace chi {

class Task;

/** Sleeps `us` microseconds. Inside a runtime task it parks the task's
 * fiber (its worker runs other tasks meanwhile: this is how a method waits
 * for a device, e.g. modelled I/O); elsewhere the thread sleeps. Defined
 * by chimaera_client and chimaera_runtime. */
void SleepUs(u64 us);

namespace internal {
/** What Task's own (empty) Fields() returns, so that the runtime can tell,
 * at compile time, a task type whose Fields() call reaches it: such a type
 * declares no fields (see kHasOwnFields in container.h). */
struct NoFields {};
/** Blocks until `task` completes: spins, then sleeps on a futex in a client;
 * yields the fiber inside a runtime task. If the runtime dies the task is
 * completed with kUnavailable. Defined by chimaera_client and
 * chimaera_runtime. */
void WaitTask(Task *task);
/** Like WaitTask but gives up after `timeout_us`; false on timeout. */
bool WaitTaskFor(Task *task, u64 timeout_us);
/** Completes `task` with `status` (the message goes into shared memory). */
void CompleteTask(Task *task, const Status &status);
/** Gives up on a submitted task (after a wait timed out, or for a dead
 * client): no result will be read. Sets kTaskAbandoned (and asks a periodic
 * task to stop). Returns true if the task had already completed -- the caller
 * must then free it; otherwise whoever completes it frees it (the runtime
 * drops it unrun if it was still queued). Either way the caller must not
 * touch the task afterwards. Any thread, once per task. */
bool AbandonTask(Task *task);
/** Records `status` as the task's result without completing it (a method
 * reports an error this way; the worker completes the task). */
void SetTaskStatus(Task *task, const Status &status);
/** The longest error message read back from a task (or a reply from
 * another node): a longer one is cut here. A client could claim a length
 * up to the end of its segment. */
inline constexpr u32 kMaxErrorText = 64 * 1024;
/** The error message of a completed task ("" if none; at most
 * kMaxErrorText bytes of it). */
std::string TaskErrorMessage(const Task *task);
/** The TaskNode for a new task: a child of the running task's node when
 * called from inside a runtime task (its subtasks), else a fresh root
 * (CHI_IPC->NewTaskNode()). Any thread. */
TaskNode SubtaskNode();

/** "ns::Type" for T, cut out of this function's signature as GCC and Clang
 * print it ("... [with T = ns::Type; ...]" / "... [T = ns::Type]"). */
template <typename T>
constexpr std::string_view RawTypeName() {
  std::string_view sig = __PRETTY_FUNCTION__;
  size_t b = sig.find("T = ");
  if (b == std::string_view::npos) return sig;
  b += 4;
  size_t e = sig.find_first_of(";]", b);
  return sig.substr(b, e == std::string_view::npos ? e : e - b);
}
/** 32-bit FNV-1a of `s`. */
constexpr u32 Fnv1a32(std::string_view s) {
  u32 h = 2166136261u;
  for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 16777619u;
  return h;
}
}  // namespace internal

/** A tag naming task type T, the same in every process and compiler build
 * (the hash of its qualified name; never 0). CHI_IPC->NewTask<T> stamps it
 * into Task::type_tag_ and the runtime checks it against the method's type,
 * so a task of the wrong type for its method id is refused, not misread. */
template <typename T>
constexpr u32 TaskTypeTag() {
  return internal::Fnv1a32(internal::RawTypeName<T>()) | 1u;
}
/** TaskTypeTag<T>() as a constant: use this on hot paths (a call of the
 * function outside a constant expression may hash the name at run time). */
template <typename T>
inline constexpr u32 kTaskTypeTag = TaskTypeTag<T>();

/** The method name a task type gives itself: its unqualified name without a
 * "Task" suffix ("stats::AddTask" -> "Add"). */
template <typename T>
constexpr std::string_view TaskMethodName() {
  std::string_view n = internal::RawTypeName<T>();
  size_t colon = n.rfind("::");
  if (colon != std::string_view::npos) n.remove_prefix(colon + 2);
  constexpr std::string_view kSuffix = "Task";
  if (n.size() > kSuffix.size() &&
      n.substr(n.size() - kSuffix.size()) == kSuffix) {
    n.remove_suffix(kSuffix.size());
  }
  return n;
}

/** Bits of Task::state_, the word the submitter waits on. */
enum TaskState : u32 {
  kTaskComplete = 1,       ///< The result is ready (release by the runtime).
  kTaskWaiterAsleep = 2,   ///< A waiter sleeps on the futex: wake it.
  kTaskStopRequested = 4,  ///< A periodic task should run no more.
  kTaskAbandoned = 16,     ///< Its submitter gave up (see AbandonTask).
};

/** Values of Task::claim_: who took the submitted task (0: nobody yet). The
 * first compare-exchange from 0 after Send wins and the value never changes
 * until the next Send: a task is admitted by at most one worker, or claimed
 * by the reaper (its client died), never both. A task starts kTaskUnsent, so
 * that its offset pushed by anyone but Send (a hostile process pushing
 * another client's task while it is still being filled in) is dropped. */
enum TaskClaim : u32 {
  kTaskAccepted = 8,  ///< A worker admitted it.
  kTaskReaped = 32,   ///< The reaper claimed it (its client died).
  kTaskUnsent = 64,   ///< Made, never sent (Send sets 0).
};

/** Stamped into every task by its constructor; a block without it is not a
 * task and is refused at admission. */
static GLOBAL_CROSS_CONST u32 kTaskMagic = 0x4348544bu;  // "CHTK"

/** A container method to execute + parameters. */
class Task {
 public:
  /** A TaskClaim value. First, so that it never shares a cache line with
   * state_ (static_assert below): a worker admitting the task does not
   * disturb the line its submitter spins on. */
  CHI_TEMP std::atomic<u32> claim_{kTaskUnsent};
  CHI_IN PoolId pool_id_;        /**< The unique ID of a pool */
  CHI_IN TaskNode task_node_;    /**< The unique ID of this task in the graph */
  CHI_IN DomainQuery dom_query_; /**< The nodes that the task should run on */
  CHI_IN MethodId method_ = 0;   /**< The method to call in the container */
  CHI_IN ibitfield task_flags_;  /**< Properties of the task */
  CHI_IN double period_ns_ = 0;  /**< The period of the task */
  CHI_IN u32 prio_ = kLowLatency; /**< kLowLatency or kHighLatency */
  CHI_OUT u32 rc_ = 0;            /**< StatusCode of the result (0 = ok) */
  CHI_OUT hipc::Pointer err_; /**< Error message in shared memory, or null */
  CHI_TEMP std::atomic<u32> state_{0}; /**< TaskState bits */
  CHI_TEMP u32 run_count_ = 0; /**< Times the runtime ran it (periodic tasks) */
  CHI_TEMP u32 magic_ = kTaskMagic; /**< Marks a constructed task */
  /** TaskTypeTag of the type the task was made as (CHI_IPC->NewTask sets
   * it); admission refuses a task whose tag is not its method's. */
  CHI_IN u32 type_tag_ = 0;
  /** TaskExt in `main` (predecessors, group; see task_graph.h), or null.
   * Freed with the task. */
  CHI_IN hipc::Pointer ext_;

  /** Default constructor (aggregate task types, see chimaera/module.h). */
  Task() {}
  /** SHM default constructor (task types with their own constructors). */
  template <typename AllocT>
  explicit Task(const hipc::CtxAllocator<AllocT> &alloc) {}
  Task(const Task &) = delete;
  Task &operator=(const Task &) = delete;

  /** Wait for this task to complete. See internal::WaitTask. */
  void Wait() { internal::WaitTask(this); }
  /** Wait at most `timeout_us`; false if it did not complete in time. */
  bool WaitFor(u64 timeout_us) {
    return internal::WaitTaskFor(this, timeout_us);
  }
  /** Wait for a subtask to complete (from inside this task's method, the
   * fiber yields instead of blocking the worker). */
  void Wait(Task *subtask) { internal::WaitTask(subtask); }
  /** Waits for subtasks to complete. Null entries (tasks that could not be
   * allocated) are skipped and make the result OutOfMemory, so a caller
   * that reads results checks it first; Ok means every entry completed
   * (each with its own status). */
  template <typename TaskT>
  Status Wait(std::vector<FullPtr<TaskT>> &subtasks) {
    size_t missing = 0;
    for (auto &t : subtasks) {
      if (t.IsNull()) {
        ++missing;
      } else {
        internal::WaitTask(t.ptr_);
      }
    }
    if (missing == 0) return Status::Ok();
    return Status::OutOfMemory(std::to_string(missing) + " of " +
                               std::to_string(subtasks.size()) +
                               " subtasks could not be allocated");
  }

  /** True once the runtime completed the task (acquire order). */
  HSHM_INLINE bool IsComplete() const {
    return state_.load(std::memory_order_acquire) & kTaskComplete;
  }
  /** The task's result: ok, or its code and message. REQUIRES: complete. */
  Status GetStatus() const {
    if (rc_ == 0) return Status::Ok();
    return Status(static_cast<StatusCode>(rc_),
                  internal::TaskErrorMessage(this));
  }
  /** From a container method: report `status` as this task's result. */
  void SetStatus(const Status &status) {
    internal::SetTaskStatus(this, status);
  }
  /** Asks a periodic task to stop after its current run. Any thread. */
  void RequestStop() {
    state_.fetch_or(kTaskStopRequested, std::memory_order_acq_rel);
  }
  /** True if RequestStop() was called. */
  bool StopRequested() const {
    return state_.load(std::memory_order_acquire) & kTaskStopRequested;
  }
  /** Makes this task periodic with period `period_ns`. Before Send only. */
  void SetPeriodic(double period_ns) {
    task_flags_.SetBits(TASK_PERIODIC);
    period_ns_ = period_ns;
  }
  /** Makes this task fire-and-forget. Before Send only. */
  void SetFireAndForget() { task_flags_.SetBits(TASK_FIRE_AND_FORGET); }
  /** Hands the task its InBuf buffers, which must be data-segment blocks
   * this process allocated for this task alone: they are freed with the
   * task (CHI_IPC->DelTask frees them; so does the runtime when it frees a
   * fire-and-forget or abandoned task), so the submitter never frees them
   * itself and an abandoned task leaks nothing. Before Send only. The
   * runtime frees only blocks that the task's own process owns. */
  void SetOwnsInputs() { task_flags_.SetBits(TASK_OWNS_INPUTS); }
  bool IsPeriodic() const { return task_flags_.Any(TASK_PERIODIC); }
  bool IsFireAndForget() const { return task_flags_.Any(TASK_FIRE_AND_FORGET); }
  bool OwnsInputs() const { return task_flags_.Any(TASK_OWNS_INPUTS); }

  /** Field references for a CHI_FIELDS list (see task_fields.h): an input,
   * an output, both, an input buffer of `size` bytes (a size field of the
   * task, declared before it, so it is read when the list is applied) and
   * an output buffer with its size field. */
  template <typename T>
  static internal::FieldRef<internal::FieldKind::kIn, T> In(T &f) {
    return {f};
  }
  template <typename T>
  static internal::FieldRef<internal::FieldKind::kOut, T> Out(T &f) {
    return {f};
  }
  template <typename T>
  static internal::FieldRef<internal::FieldKind::kInOut, T> InOut(T &f) {
    return {f};
  }
  static internal::InBufRef InBuf(hipc::Pointer &p, u64 &size) {
    return {p, size};
  }
  static internal::OutBufRef OutBuf(hipc::Pointer &p, u64 &size) {
    return {p, size};
  }

  /** Declares the task's IN and OUT fields (see task_fields.h). A task
   * without parameters inherits this empty declaration; every task with
   * parameters must declare all of them (its Fields() returns void). */
  template <typename Ar>
  internal::NoFields Fields(Ar &ar) {
    return {};
  }

  /** Fills the IN fields shared by every task. */
  void SetBase(const TaskNode &task_node, const PoolId &pool_id,
               const DomainQuery &dom_query, MethodId method) {
    task_node_ = task_node;
    pool_id_ = pool_id;
    dom_query_ = dom_query;
    method_ = method;
  }
};

static_assert(offsetof(Task, state_) >= offsetof(Task, claim_) + 64,
              "claim_ and state_ must never share a cache line");

}  // namespace chi

#endif  // CHIMAERA_TASK_H_
