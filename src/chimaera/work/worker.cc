// How a worker runs tasks
// -----------------------
// Loop: take new lanes from the mailbox, pop up to kShmPopBatch tasks from
// each lane, handle the inbox (requests from other nodes, replies to tasks this
// worker forwarded), resume fibers whose subtasks completed, restart due
// periodic tasks.
//
// Every task, whether it arrives through shared memory or the network, goes
// through the same stages (see RunContext): admit -> resolve -> run here or
// forward -> complete. Admission copies the task into a private object of its
// method's type once and validates the copy, so nothing a client writes
// afterwards changes what the runtime checked. Each task runs in a
// Boost.Context fiber on a pooled 64 KB stack (with a guard page); a method
// that waits on an incomplete subtask yields, and the worker resumes it once
// the subtask is complete.
//
// Sleeping: after idle_spin_us without work the worker sets its futex word,
// issues a seq_cst fence and re-checks its lanes; producers push, fence, and
// wake the worker if the word is set (IpcManager::WakeLaneWorker). Either the
// worker sees the task or the producer sees the sleeper, never neither.
#include "chimaera/worker.h"

#include <linux/membarrier.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_set>

#include "chimaera/admin/admin_tasks.h"
#include "chimaera/config_manager.h"
#include "chimaera/pool_manager.h"
#include "chimaera/remote_manager.h"
#include "chimaera/task_graph.h"
#include "chimaera/trace.h"
#include "chimaera/work_orchestrator.h"
#include "hermes_shm/util/futex.h"
#include "hermes_shm/util/log_limit.h"
#include "hermes_shm/util/tsan.h"

namespace chi {

namespace ctx = boost::context;

namespace {

constexpr size_t kStackSize = 64 * 1024;
constexpr size_t kGuardSize = 4096;
/** Most idle fiber stacks one worker keeps for reuse (fewer when
 * workers.max_fibers is small: see Worker::Worker); more are unmapped. */
constexpr size_t kMaxIdleStacks = 1024;
/** Fibers the admin pool's tasks (pool creation and destruction, stat,
 * stop, a peer's share of a broadcast; not FanOut, a workload) may hold
 * beyond workers.max_fibers, so that the runtime stays manageable while
 * clients hold every fiber. */
constexpr u32 kAdminFiberReserve = 256;
/** Task fibers in use (running or waiting) on all workers of this runtime;
 * workers.max_fibers bounds it. Any worker. */
std::atomic<u32> g_fibers_in_use{0};
/** Inbox entries and in-runtime task-lane entries one poll handles at most. */
constexpr u32 kPopBatch = 32;
/** An active lane empty for this many polls in a row turns cold. */
constexpr u32 kColdAfter = 4096;
/** Recycled RunContexts a worker keeps at most. */
constexpr size_t kMaxFreeContexts = 4096;
/** CheckDeps: the oldest waiting tasks one loop iteration checks at most;
 * the scan stops earlier after kDepHeadRun still waiting in a row (a task
 * submitted later mostly waits on an earlier one). */
constexpr size_t kDepHeadChecks = 64;
constexpr size_t kDepHeadRun = 16;
/** CheckDeps: the further waiting tasks checked round robin on every
 * kDepSweepPeriod-th loop iteration (a power of 2), so that every task is
 * looked at, whatever waits before it, while an idle worker's loop stays
 * short (it then sees a predecessor complete sooner). */
constexpr size_t kDepSweepChecks = 8;
constexpr u32 kDepSweepPeriod = 8;
/** Tasks one worker keeps waiting on predecessors at most: each holds a
 * context, its private copy and its predecessor list (up to a few KiB) in
 * the runtime's memory, while its submitter pays one block of `main`.
 * More fail with ResourceExhausted. (A dependency loop keeps a few hundred
 * waiting.) */
constexpr size_t kMaxDepWaiting = 16384;
/** Periodic tasks one worker keeps between runs at most: each holds a
 * context and its private copy in the runtime's memory, and every loop
 * iteration looks at each. A task that would be the next to wait for its
 * period ends with ResourceExhausted instead. */
constexpr size_t kMaxPeriodic = 1024;
/** Tasks queued for a pinned container's worker at most, and tasks one
 * worker holds while their containers move: each holds a context and its
 * private copy in the runtime's memory, while its client may already have
 * freed and reused its block. More fail with ResourceExhausted. */
constexpr u64 kMaxPinnedQueued = 16384;
constexpr size_t kMaxHeld = 16384;
/** AnyBlockedReady: predecessor (and abandonment) looks per call at most. */
constexpr size_t kReadyLooks = 4096;
/** Cold lanes are polled once every this many loop iterations. */
constexpr u32 kColdPeriod = 64;
/** An idle worker polls with pauses only this long (ns); then it yields the
 * core between rounds of polls until idle_spin_us, then sleeps. */
constexpr u64 kPauseSpinNs = 5000;

/** Marks a small function of this file that each task calls once on its
 * way from admission to completion: inlined into its callers, whatever
 * their number (the calls' prologues and epilogues were about 10% of a
 * worker's instructions per Noop; callgrind, count_instructions.sh). */
#define CHI_WORKER_HOT [[gnu::always_inline]] inline

// initial-exec: the SIGSEGV handler reads it, so no lazy TLS allocation.
__attribute__((tls_model("initial-exec"))) thread_local RunContext *tls_rctx =
    nullptr;
/** The task whose method runs on this worker's own stack (never_waits).
 * initial-exec: set and cleared around every such task. */
__attribute__((tls_model("initial-exec"))) thread_local RunContext *tls_inline =
    nullptr;

/** Workers napping while some of their fibers wait on subtasks. A worker
 * that completes a task wakes them (WakeNappers), so a parent whose subtask
 * finished on another worker resumes at once, not at the end of its nap. */
std::atomic<u32> g_nappers{0};

/** Appends the decimal form of `v` to buf[*n] (async-signal-safe). */
void AppendU64(char *buf, size_t *n, size_t cap, u64 v) {
  char tmp[24];
  int k = 0;
  do {
    tmp[k++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v && k < 24);
  while (k && *n < cap) buf[(*n)++] = tmp[--k];
}

/** Appends `s` to buf[*n] (async-signal-safe). */
void AppendStr(char *buf, size_t *n, size_t cap, const char *s) {
  while (*s && *n < cap) buf[(*n)++] = *s++;
}

/** SIGSEGV on a worker: if the fault is at the guard page of the running
 * task's stack (or just below it), say which task overflowed its 64 KB stack;
 * then die as the signal would have made us die. Runs on the worker's alternate
 * stack. */
void OnSegv(int sig, siginfo_t *info, void *) {
  RunContext *r = tls_rctx;
  auto *addr = static_cast<char *>(info->si_addr);
  // A frame larger than the guard page can jump past it: count faults just
  // below the stack as overflows too.
  if (r && r->stack_ && addr >= r->stack_ - kStackSize &&
      addr < r->stack_ + kGuardSize) {
    char buf[256];
    size_t n = 0;
    AppendStr(buf, &n, sizeof(buf),
              "chimaera: a task overflowed its 64 KB fiber stack: pool ");
    AppendU64(buf, &n, sizeof(buf), r->task_->pool_id_.node_id_);
    AppendStr(buf, &n, sizeof(buf), ".");
    AppendU64(buf, &n, sizeof(buf), r->task_->pool_id_.unique_);
    AppendStr(buf, &n, sizeof(buf), ", method ");
    AppendU64(buf, &n, sizeof(buf), r->task_->method_);
    AppendStr(buf, &n, sizeof(buf),
              " (keep large buffers on the heap, not the stack)\n");
    ssize_t ignored = write(2, buf, n);
    (void)ignored;
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

/** Installs OnSegv once per process. */
void InstallSegvHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = OnSegv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, nullptr);
  });
}

/** Stacks come from the worker's pool; Boost.Context must not free them. */
struct PooledStack {
  ctx::stack_context allocate() { return ctx::stack_context(); }
  void deallocate(ctx::stack_context &) noexcept {}
};

/** Runs the container method; exceptions stop at the task boundary. */
CHI_WORKER_HOT void RunMethod(RunContext *r) {
  try {
    // The entry admission resolved (the pool's module, whose containers all
    // share one class and so one handler table): no second lookup.
    const MethodEntry *m = r->method_;
    if (__builtin_expect(m != nullptr, 1)) {
      m->run(r->container_, const_cast<char *>(m->handler), r->task_, *r);
    } else {
      r->container_->Run(r->task_, *r);
    }
  } catch (const ctx::detail::forced_unwind &) {
    throw;
  } catch (const std::exception &e) {
    internal::SetTaskStatus(
        r->task_,
        Status::Internal(std::string("container method threw: ") + e.what()));
  } catch (...) {
    internal::SetTaskStatus(r->task_,
                            Status::Internal("container method threw a non-std "
                                             "exception"));
  }
}

/** The address TSan hand-off annotations use for task `t`: its block's key
 * (tsan.h), which the allocators use too, and which no atomic of the task
 * (claim_ is at its first byte) shares. */
HSHM_INLINE const void *TsanKey(const Task *t) {
  return HSHM_TSAN_BLOCK_KEY(t);
}

/** Frees a task block of `main` (typed destructor if known) that the
 * runtime now owns (fire-and-forget, or abandoned by its submitter). The
 * block's err_ is not ours to free, and its ext_ is read once: its client
 * may still write either (so no DelTask, which reads both again). */
void FreeShmTask(const FullPtr<Task> &task, const MethodEntry *e) {
  // A task this process made may own inputs (recorded privately).
  if (CHI_IPC->HoldsInputs()) CHI_IPC->FreeHeldInputs(task.shm_);
  // Its extension is freed with it only if the same process owns both (a
  // client could name any block there).
  hipc::Pointer ext = task->ext_;
  if (!ext.IsNull() && ext != task.shm_ && !CHI_IPC->IsRuntimeStructure(ext) &&
      ext.alloc_id_ == CHI_IPC->main_alloc()->GetId() &&
      CHI_IPC->main_alloc()->BlockOwner(ext) ==
          CHI_IPC->main_alloc()->BlockOwner(task.shm_)) {
    (void)CHI_IPC->main_alloc()->Free(HSHM_MCTX, ext);
  }
  if (e && e->destroy) e->destroy(task.ptr_);
  (void)CHI_IPC->main_alloc()->Free(HSHM_MCTX, task.shm_);
}

/** When the runtime frees client task `shm` (fire-and-forget or abandoned):
 * frees the InBuf buffers its private copy `t` names if the checked copy
 * says the task owns them (Task::SetOwnsInputs), each only if the process
 * that owns the task block owns it too, and never this process's own (a
 * client could name any block, and write any owner into its task's
 * header; the runtime's own tasks hold their inputs in its private record,
 * which FreeShmTask frees). Before FreeShmTask. Worker threads. */
void FreeOwnedInputs(const MethodEntry *e, Task *t, const hipc::Pointer &shm) {
  if (!t->OwnsInputs() || !e->has_fields) return;
  const int owner = CHI_IPC->BufferOwner(shm);
  if (owner <= 0 || owner == hshm::CachedPid()) return;
  FieldArchive fr(FieldArchive::Mode::kFreeIn, t);
  fr.set_free_owner(owner);
  e->fields(fr, t);
}

/** After a task was marked complete (with a seq_cst RMW): wakes the workers
 * that nap with blocked fibers, one of which may wait for it. Any thread. */
HSHM_INLINE void WakeNappersFast() {
  if (__builtin_expect(g_nappers.load(std::memory_order_seq_cst) == 0, 1)) {
    return;
  }
  for (auto &w : CHI_WORK_ORCHESTRATOR->workers()) w->Wake();
}

/** Copies and checks the extension block `p` a client named (task_graph.h):
 * its group (a live group block, or null) into *group and its predecessors
 * into *deps. An error says what is wrong; *group is set only if valid. */
Status LoadExt(const hipc::Pointer &p, GroupRef *group,
               std::vector<hipc::Pointer> *deps) {
  auto *ipc = CHI_IPC;
  u64 size = ipc->main_alloc()->LiveBlockSize(p);
  if (size < sizeof(TaskExt) || ipc->IsRuntimeStructure(p)) {
    return Status::InvalidArgument("the task's extension is not a live block");
  }
  const char *a = hipc::ToProcessAddress(p);
  TaskExt ext;
  std::memcpy(static_cast<void *>(&ext), a, sizeof(ext));
  if (ext.magic_ != kTaskExtMagic || ext.num_deps_ > kMaxTaskDeps ||
      TaskExt::Size(ext.num_deps_) > size) {
    return Status::InvalidArgument("the task's extension is malformed");
  }
  if (!ext.group_.IsNull()) {
    const char *g = hipc::ToProcessAddress(ext.group_);
    static_assert(offsetof(TaskGroupShm, gen_) == sizeof(u32));
    u32 id[2] = {0, 0};  // a copy of magic_ and gen_
    if (ipc->main_alloc()->LiveBlockSize(ext.group_) < sizeof(TaskGroupShm) ||
        ipc->IsRuntimeStructure(ext.group_) || !g ||
        (std::memcpy(id, g, sizeof(id)),
         id[0] != kTaskGroupMagic || id[1] != ext.group_gen_)) {
      return Status::InvalidArgument("the task's group is not a live group");
    }
    *group = GroupRef{ext.group_, ext.group_gen_};
  }
  deps->resize(ext.num_deps_);
  if (ext.num_deps_) {
    std::memcpy(static_cast<void *>(deps->data()), a + sizeof(TaskExt),
                ext.num_deps_ * sizeof(hipc::Pointer));
  }
  // Null marks a predecessor found complete (CheckPredecessors).
  for (const hipc::Pointer &d : *deps) {
    if (d.IsNull()) {
      return Status::InvalidArgument("a predecessor of the task is null");
    }
  }
  return Status::Ok();
}

/** Where a task's predecessors stand. */
enum class DepState { kReady, kWaiting, kFailed };

/** A copy of the task node in predecessor block `p` (a live block of main
 * of at least a Task: the caller checked). Worker threads. */
TaskNode PredecessorNode(const hipc::Pointer &p) {
  TaskNode node;
  const auto *t = reinterpret_cast<const Task *>(hipc::ToProcessAddress(p));
  std::memcpy(static_cast<void *>(&node), &t->task_node_, sizeof(node));
  return node;
}

/** Checks the predecessors of `r` (nulling, in place, those found
 * complete, so that a position still names the predecessor given); on
 * kFailed, *st says which one failed or why. Reads only atomics and
 * copies of client memory. Worker threads. */
DepState CheckPredecessors(RunContext *r, Status *st) {
  auto &deps = r->deps_;
  auto &ids = r->dep_ids_;
  bool waiting = false;
  if (ids.size() != deps.size()) {
    // The first look: each predecessor's identity as its block says now.
    ids.assign(deps.size(), TaskNode());
    for (size_t i = 0; i < deps.size(); ++i) {
      if (CHI_IPC->main_alloc()->LiveBlockSize(deps[i]) >= sizeof(Task)) {
        ids[i] = PredecessorNode(deps[i]);
      }
    }
  }
  for (size_t i = 0; i < deps.size(); ++i) {
    const hipc::Pointer &p = deps[i];
    if (p.IsNull()) continue;  // found complete before
    if (CHI_IPC->main_alloc()->LiveBlockSize(p) < sizeof(Task) ||
        CHI_IPC->IsRuntimeStructure(p)) {
      *st = Status::InvalidArgument(
          "a predecessor is not a live task (freed before this task "
          "started?)");
      return DepState::kFailed;
    }
    if (!(PredecessorNode(p) == ids[i])) {
      *st = Status::InvalidArgument(
          "predecessor " + std::to_string(i) +
          " was freed before this task started (its block holds another "
          "task now)");
      return DepState::kFailed;
    }
    auto *t = reinterpret_cast<Task *>(hipc::ToProcessAddress(p));
    if (!(t->state_.load(std::memory_order_acquire) & kTaskComplete)) {
      // Look at the rest too: one complete later in the list is done with
      // (else WaitingMoved saw it complete on every look, and its worker
      // never slept), and a failed one fails this task now.
      waiting = true;
      continue;
    }
    u32 rc = t->rc_;
    std::string msg;
    if (rc != 0) msg = internal::TaskErrorMessage(t);
    // Done reading the predecessor, which its submitter may free and reuse
    // at any time (tsan.h).
    HSHM_TSAN_RELEASE(TsanKey(t));
    if (rc != 0) {
      *st =
          Status::Aborted("predecessor " + std::to_string(i) + " failed: " +
                          Status(static_cast<StatusCode>(rc), msg).ToString());
      return DepState::kFailed;
    }
    deps[i] = hipc::Pointer::GetNull();
  }
  if (waiting) return DepState::kWaiting;
  deps.clear();
  return DepState::kReady;
}

/** Completes a shared-memory task the runtime will not run (never admitted:
 * unknown pool or method, bad size...; or stopped at shutdown) with
 * `status`. Of the client's block it writes only rc_, err_ and state_, and
 * reads only state_ (an atomic protocol word), and ext_ once when the block
 * is ours to free (FreeShmTask); `fire_and_forget` and `group` come from
 * what admission checked, or from reads made once. */
void FailUnadmitted(const FullPtr<Task> &task, const Status &status,
                    bool fire_and_forget, const GroupRef &group = GroupRef()) {
  if (fire_and_forget) {
    HSHM_LOG_LIMITED("chimaera: fire-and-forget task failed: %s\n",
                     status.ToString().c_str());
    HSHM_TSAN_RELEASE(TsanKey(task.ptr_));
    FreeShmTask(task, nullptr);
    internal::CountDownGroup(group);
    return;
  }
  // The message is made here and stored once (ours until the task
  // completes); whatever err_ the client left is never read: it could name
  // any block, and change at any time.
  hipc::Pointer err;
  if (!status.ok()) {
    err = CHI_IPC->NewErrorText(status.message());
    if (!err.IsNull()) {
      CHI_IPC->SetBufferOwner(err, CHI_IPC->BufferOwner(task.shm_));
    }
  }
  task->rc_ = static_cast<u32>(status.code());
  task->err_ = err;
  u32 prev = task->state_.fetch_or(kTaskComplete, std::memory_order_seq_cst);
  // After our last access (only bookkeeping: the block may already be the
  // submitter's again); see tsan.h.
  HSHM_TSAN_RELEASE(TsanKey(task.ptr_));
  WakeNappersFast();
  if (prev & kTaskAbandoned) {
    // Its submitter gave up on it: nobody else will free it.
    HSHM_TSAN_ACQUIRE(TsanKey(task.ptr_));
    (void)CHI_IPC->FreeBuffer(err);
    FreeShmTask(task, nullptr);
    internal::CountDownGroup(group);
    return;
  }
  if (prev & kTaskWaiterAsleep) hshm::FutexWake(&task->state_, INT_MAX);
  internal::CountDownGroup(group);
}

/** Copies the first `n` bytes of task `src` to `dst`, except its state word:
 * the submitter and other workers change that concurrently (atomically), so
 * it is only ever touched as an atomic. */
void CopyTaskBytes(void *dst, const Task *src, size_t n) {
  constexpr size_t kState = offsetof(Task, state_);
  constexpr size_t kAfter = kState + sizeof(src->state_);
  const char *from = reinterpret_cast<const char *>(src);
  char *to = static_cast<char *>(dst);
  std::memcpy(to, from, kState);
  if (n > kAfter) std::memcpy(to + kAfter, from + kAfter, n - kAfter);
}

/** Starts loading the lines of the task block at `a` (a popped offset's
 * address in this process, or null) that admission reads (its heap header
 * and the task header) without waiting; the line of claim_, which admission
 * writes, is fetched for writing. A prefetch never faults, so the block
 * need not be valid yet. Worker threads. */
HSHM_INLINE void PrefetchTask(const char *a) {
  static_assert(sizeof(Task) <= 168, "four prefetches cover the header");
  if (!a) return;
  // Block header + Task span at most four lines; these addresses, the first
  // and last byte and two between, at most 64 bytes apart, touch each. The
  // write prefetch goes first: the heap header usually shares claim_'s
  // line, and a read prefetch issued before it would fetch that line
  // shared, so that the claim's CAS then waits for a second transfer.
  hshm::PrefetchForWrite(a + offsetof(Task, claim_));
  hshm::PrefetchForRead(a - hipc::HeapAllocator::kBlockHeaderSize);
  hshm::PrefetchForRead(a + 40);
  hshm::PrefetchForRead(a + 100);
  hshm::PrefetchForRead(a + sizeof(Task) - 1);
}

/** Fetches for writing the lines of the task block at `a` (or null) that
 * completion writes (rc_, err_, state_). Only for batches: a lone task's
 * submitter is likely spinning on state_, and taking that line early would
 * only make it travel twice. Worker threads. */
HSHM_INLINE void PrefetchTaskOutputs(const char *a) {
  if (!a) return;
  hshm::PrefetchForWrite(a + offsetof(Task, rc_));
  hshm::PrefetchForWrite(a + offsetof(Task, state_));
}

/** Numeric sanity of a task header copied from a client. */
CHI_WORKER_HOT Status CheckHeader(const Task &h) {
  if (h.prio_ >= kNumPrios) {
    return Status::InvalidArgument("task priority " + std::to_string(h.prio_) +
                                   " is not kLowLatency or kHighLatency");
  }
  if (h.dom_query_.kind_ > DomainQuery::kDynamic) {
    return Status::InvalidArgument("unknown domain query kind " +
                                   std::to_string(h.dom_query_.kind_));
  }
  if (h.task_flags_.Any(TASK_PERIODIC)) {
    double p = h.period_ns_;
    // 0 .. 1 day; NaN fails both comparisons.
    if (!(p >= 0 && p <= 86400e9)) {
      return Status::InvalidArgument(
          "a periodic task's period must be 0 .. 1 day in ns");
    }
  }
  return Status::Ok();
}

/** True if the runtime's environment asks for the admission fault
 * injection (Worker::fault_scribble_). */
bool FaultScribbleAdmitted() {
  const char *v = std::getenv("CHI_FAULT_SCRIBBLE_ADMITTED");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

/** Worker::fault_scribble_: overwrites the fields of the client's task
 * header that AdmitShm checked or routes by (method, pool, domain query,
 * type tag, priority) with values no check would pass. The client's block
 * only: the admission goes on with the copy it checked. Worker threads, on
 * a task they claimed. */
[[gnu::noinline, gnu::cold]] void ScribbleCheckedHeader(Task *client_task) {
  client_task->method_ = 0xdead;
  client_task->pool_id_ = PoolId(0xdead, 0xbeef);
  client_task->dom_query_.kind_ = 0xdead;
  client_task->dom_query_.sel_ = 0xdeadbeef;
  client_task->type_tag_ = 0xdeadbeef;
  client_task->prio_ = 0xdead;
}
}  // namespace

Worker::Worker(u32 id, WorkerKind kind, WorkerShared *shared)
    : id_(id),
      kind_(kind),
      shared_(shared),
      ipc_(CHI_IPC),
      pools_(CHI_POOL_MANAGER),
      fault_scribble_(FaultScribbleAdmitted()) {
  const ServerConfig &conf = CHI_CONFIG_MANAGER->config();
  idle_spin_us_ = conf.idle_spin_us_;
  // Idle stacks of all workers together stay under a quarter of the fibers
  // allowed in use, so that mappings stay bounded (in use plus idle).
  const u64 workers = u64{conf.num_low_latency_} + conf.num_high_latency_ +
                      conf.num_reinforcement_;
  max_idle_stacks_ = static_cast<u32>(
      std::min<u64>(kMaxIdleStacks, conf.max_fibers_ / (4 * workers)));
  free_stacks_.reserve(max_idle_stacks_);  // PutStack never allocates
  shared_->kind_.store(static_cast<u32>(kind));
  CHI_TRACE->Init();
  trace_ = CHI_TRACE->ActiveRing(id_);
}

Worker::~Worker() {
  for (char *s : all_stacks_) munmap(s, kGuardSize + kStackSize);
  // Fibers abandoned at shutdown (blocked past the deadline) end here.
  g_fibers_in_use.fetch_sub(fibers_in_use_, std::memory_order_relaxed);
  for (RunContext *r : free_rctx_) delete r;
  for (auto &bufs : task_bufs_) {
    for (void *b : bufs) ::operator delete(b);
  }
}

RunContext *Worker::CurrentRunContext() { return tls_rctx; }

RunContext *Worker::RunningContext() {
  return tls_rctx ? tls_rctx : tls_inline;
}

void Worker::NoteWaitWithoutFiber() {
  const RunContext *r = tls_inline;
  if (!r) return;
  const char *method = r->method_ && r->method_->name ? r->method_->name : "?";
  const std::string pool = r->container_ ? r->container_->pool_name_ : "?";
  HSHM_LOG_LIMITED(
      "chimaera: method %s of pool '%s' declares kNeverWaits but waits "
      "(it runs on its worker's stack: a timed wait fails at once, an "
      "untimed one or a sleep holds the worker)\n",
      method, pool.c_str());
}

void Worker::WakeNappers() { WakeNappersFast(); }

void Worker::CountDownLater(const GroupRef &group) {
  if (group.IsNull()) return;
  if (count_pending_ != 0 && !(group == count_group_)) FlushGroupCount();
  count_group_ = group;
  ++count_pending_;
}

void Worker::FlushGroupCount() {
  if (count_pending_ == 0) return;
  internal::CountDownGroup(count_group_, count_pending_);
  count_pending_ = 0;
}

void Worker::WakeAll() {
  for (auto &w : CHI_WORK_ORCHESTRATOR->workers()) w->Wake();
}

bool Worker::YieldCurrentFiber() {
  RunContext *r = tls_rctx;
  if (!r) return false;
  r->waiting_on_ = nullptr;
  r->waiting_group_ = nullptr;
  r->Yield();
  return true;
}

void Worker::AddLane(LaneView *lane) {
  lane->header().worker_id_.store(id_, std::memory_order_release);
  {
    std::lock_guard<std::mutex> lock(mailbox_mu_);
    mailbox_.push_back(WorkerLane{lane, nullptr, nullptr, 0});
  }
  has_mail_.store(true, std::memory_order_release);
  Wake();
}

void Worker::AddLane(TaskLane *lane, Container *container) {
  lane->worker_id_.store(id_, std::memory_order_release);
  {
    std::lock_guard<std::mutex> lock(mailbox_mu_);
    mailbox_.push_back(WorkerLane{nullptr, lane, container, 0});
  }
  has_mail_.store(true, std::memory_order_release);
  Wake();
}

void Worker::FlushNet() {
  net_staged_ = false;
  if (CHI_REMOTE->HasStaged(id_)) CHI_REMOTE->Flush(id_);
}

void Worker::PostInbox(RunContext *rctx) {
  (void)inbox_.PushUnbounded(rctx);  // an inbox is never retired
  Wake();
}

void Worker::RefreshTrace() {
  // TakeMailbox re-reads the switch: no extra check in the loop.
  has_mail_.store(true, std::memory_order_release);
  Wake();
}

void Worker::TraceSubmit(const Task *task, const hipc::Pointer &p) {
  RunContext *r = RunningContext();
  if (!r || !r->trace_id_ || !r->worker_->trace_) return;
  TraceEvent e;
  e.kind = TraceKind::kSubmit;
  e.method = task->method_;
  e.pool = task->pool_id_;
  e.node = task->task_node_;
  e.start = TraceClock();
  e.id = r->trace_id_;
  e.key = p.off_.load();
  r->worker_->trace_->Push(e);
}

void Worker::TraceBegin(RunContext *r) {
  if (++trace_seq_ == 0) trace_seq_ = 1;  // 0 means "not traced"
  r->trace_id_ = (u64{id_ + 1} << 32) | trace_seq_;
  // In a batch, the previous run's end: every task of the batch was
  // submitted before the batch was popped, so before that run ended.
  const u64 last = trace_chain_ ? trace_last_ : 0;
  trace_last_ = 0;
  r->trace_start_ = last != 0 ? last : TraceClock();
}

void Worker::TraceEnd(RunContext *r) {
  u64 end = TraceClock();
  trace_last_ = trace_chain_ ? end : 0;
  if (trace_) {  // tracing may have been turned off meanwhile
    const Task *t = r->task_;
    TraceEvent e;
    e.kind = TraceKind::kRun;
    e.method = t->method_;
    e.pool = t->pool_id_;
    e.node = t->task_node_;
    e.rc = t->rc_;
    e.start = r->trace_start_;
    e.end = end;
    e.id = r->trace_id_;
    e.key = r->origin_ == TaskOrigin::kShm ? r->shm_task_.shm_.off_.load()
                                           : kTraceNoKey;
    trace_->Push(e);
  }
  r->trace_id_ = 0;
}

void Worker::RecordSample(RunContext *r) {
  CostSample smp;
  smp.pool = r->task_->pool_id_;
  smp.method = r->task_->method_;
  smp.bytes = r->in_bytes_;
  smp.ns = hshm::NowNs() - r->sample_start_ns_;
  r->sample_start_ns_ = 0;
  std::lock_guard<std::mutex> lock(samples_mu_);
  if (samples_.size() < kMaxSamples) samples_.push_back(smp);
}

void Worker::TakeSamples(std::vector<CostSample> *out) {
  std::lock_guard<std::mutex> lock(samples_mu_);
  out->insert(out->end(), samples_.begin(), samples_.end());
  samples_.clear();
}

bool Worker::EnableUnwedging() {
  return syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0,
                 0) == 0;
}

u32 Worker::TakeLanesFromStuck(u64 epoch, Worker *to) {
  u32 idle = 0;
  if (!steal_.compare_exchange_strong(idle, 1, std::memory_order_acq_rel)) {
    return 0;
  }
  // A full barrier on every thread of ours: if this worker's EnterLanes
  // read steal_ before our store, its phase_ store is visible below.
  if (syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0 ||
      phase_.load(std::memory_order_acquire) != kLanesFree ||
      epoch_.load(std::memory_order_acquire) != epoch) {
    u32 asked = 1;
    steal_.compare_exchange_strong(asked, 0, std::memory_order_acq_rel);
    return 0;
  }
  u32 asked = 1;
  if (!steal_.compare_exchange_strong(asked, 2, std::memory_order_acq_rel)) {
    return 0;  // it came back and refused
  }
  // Until we store 3, the worker neither pops from nor changes its lists.
  u32 moved = 0;
  auto give = [&](const WorkerLane &wl) {
    if (wl.lane) {
      to->AddLane(wl.lane);
    } else {
      to->AddLane(wl.tlane, wl.container);
    }
    ++moved;
  };
  // Retired lanes are ours to drain; pinned ones never move. What stays is
  // recorded for the worker (AnswerSteal): a lane retired meanwhile must
  // not look different to it, or both of us would keep it.
  stolen_keep_.clear();
  stolen_keep_cold_.clear();
  if (cur_lane_ < lanes_.size()) stolen_keep_.push_back(lanes_[cur_lane_]);
  for (size_t i = 0; i < lanes_.size(); ++i) {
    if (i == cur_lane_) continue;
    if (lanes_[i].Retired() || lanes_[i].Pinned()) {
      stolen_keep_.push_back(lanes_[i]);
    } else {
      give(lanes_[i]);
    }
  }
  for (const WorkerLane &wl : cold_) {
    if (wl.Retired() || wl.Pinned()) {
      stolen_keep_cold_.push_back(wl);
    } else {
      give(wl);
    }
  }
  {
    std::lock_guard<std::mutex> lock(mailbox_mu_);
    std::vector<WorkerLane> stay;
    for (const WorkerLane &wl : mailbox_) {
      if (wl.Pinned()) {
        stay.push_back(wl);
      } else {
        give(wl);
      }
    }
    mailbox_.swap(stay);
  }
  // Replies and requests from the network wait in the inbox too: `to`
  // applies them (any worker can), except parts of this worker's own
  // broadcasts, which only it merges.
  for (RunContext *r : inbox_.TakeAll()) {
    if (r->origin_ == TaskOrigin::kBcastPart && !r->net_) {
      (void)inbox_.PushUnbounded(r);
    } else {
      to->PostInbox(r);
    }
  }
  lanes_unwedged_.fetch_add(moved, std::memory_order_relaxed);
  steal_.store(3, std::memory_order_release);
  return moved;
}

bool Worker::AnswerSteal() {
  u32 v = 1;
  if (steal_.compare_exchange_strong(v, 0, std::memory_order_acq_rel)) {
    return false;  // refused: we are back before the thief took anything
  }
  if (v == 0) return false;  // the thief gave up meanwhile
  while ((v = steal_.load(std::memory_order_acquire)) == 2) {
    hshm::CpuRelax();  // it is handing our lanes over (microseconds)
  }
  // It moved every lane but lanes_[cur_lane_] (first in its list), retired
  // ones (which we drain) and pinned ones, and listed what we keep.
  lanes_.swap(stolen_keep_);
  cold_.swap(stolen_keep_cold_);
  stolen_keep_.clear();
  stolen_keep_cold_.clear();
  shared_->num_lanes_.store(static_cast<u32>(lanes_.size() + cold_.size()));
  cur_lane_ = lanes_.empty() ? SIZE_MAX : 0;
  steal_.store(0, std::memory_order_release);
  return true;
}

void Worker::RequestLaneMove(Worker *to) {
  if (to == this) return;
  move_to_.store(to, std::memory_order_release);
  has_mail_.store(true, std::memory_order_release);
  Wake();
}

bool Worker::GiveLane(Worker *to) {
  u64 total = 0;
  u32 busy_lanes = 0;
  for (const WorkerLane &wl : lanes_) {
    total += wl.pops;
    busy_lanes += wl.pops > 0;
  }
  if (busy_lanes < 2) return false;
  // The lane whose share of the recent work is closest to half: moving it
  // evens the two workers out best.
  size_t best = lanes_.size();
  u64 best_gap = ~0ull;
  for (size_t i = 0; i < lanes_.size(); ++i) {
    if (lanes_[i].pops == 0 || lanes_[i].Retired() || lanes_[i].Pinned() ||
        (lanes_[i].lane && CHI_WORK_ORCHESTRATOR->LanePin(lanes_[i].lane))) {
      continue;
    }
    u64 twice = 2 * lanes_[i].pops;
    u64 gap = twice > total ? twice - total : total - twice;
    if (gap < best_gap) {
      best_gap = gap;
      best = i;
    }
  }
  if (best == lanes_.size()) return false;
  WorkerLane wl = lanes_[best];
  lanes_[best] = lanes_.back();
  lanes_.pop_back();
  for (WorkerLane &l : lanes_) l.pops = 0;  // a fresh window for the next
  shared_->num_lanes_.store(static_cast<u32>(lanes_.size() + cold_.size()));
  // Everything popped from the lane so far was admitted in earlier
  // iterations; from here on only `to` pops it (AddLane also points the
  // lane's producers' wake-ups at `to`).
  if (wl.lane) {
    to->AddLane(wl.lane);
  } else {
    to->AddLane(wl.tlane, wl.container);
  }
  lanes_moved_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void Worker::TakeMailbox() {
  // The flag first, with an RMW: a post that set it before reads as true
  // here (its move request, trace switch, lane or pin generation is then
  // visible below); one that sets it after is seen at the next loop. A
  // plain store after the reads could overwrite a post made in between.
  has_mail_.exchange(false, std::memory_order_acq_rel);
  trace_ = CHI_TRACE->ActiveRing(id_);
  if (Worker *to = move_to_.exchange(nullptr, std::memory_order_acq_rel)) {
    // Not while stopping: the taker may have drained its mailbox already,
    // and a lane given then would be failed by nobody.
    if (!stop_.load(std::memory_order_acquire) &&
        !to->stop_.load(std::memory_order_acquire)) {
      GiveLane(to);
    }
  }
  {
    std::lock_guard<std::mutex> lock(mailbox_mu_);
    for (auto &wl : mailbox_) lanes_.push_back(wl);
    mailbox_.clear();
  }
  // After taking the mail: a lane that arrived before a pin's generation
  // changed is looked at here or at the CheckMail that follows the change.
  u64 gen = CHI_WORK_ORCHESTRATOR->lane_pin_gen();
  if (gen != lane_pin_gen_seen_) {
    lane_pin_gen_seen_ = gen;
    HandOverPinnedLanes();
  }
  shared_->num_lanes_.store(static_cast<u32>(lanes_.size() + cold_.size()));
}

void Worker::HandOverPinnedLanes(bool only_if_back) {
  // Draining: the other workers may have left their loops already.
  if (!CHI_WORK_ORCHESTRATOR->AnyLanePinned() ||
      stop_.load(std::memory_order_acquire)) {
    return;
  }
  auto &workers = CHI_WORK_ORCHESTRATOR->workers();
  bool moved = false;
  for (auto *list : {&lanes_, &cold_}) {
    for (size_t i = 0; i < list->size();) {
      WorkerLane &wl = (*list)[i];
      u32 pin = wl.lane ? CHI_WORK_ORCHESTRATOR->LanePin(wl.lane) : 0;
      // Not to a worker a thief is robbing or robbed and that has not come
      // back yet: it would sit in its mailbox until the wedge ends.
      if (pin == 0 || pin - 1 == id_ || pin - 1 >= workers.size() ||
          workers[pin - 1]->robbed()) {
        ++i;
        continue;
      }
      if (only_if_back) {
        // Unwedging brought it here: return it once its worker runs its
        // loop again (its epoch moved since the last look) or sleeps.
        Worker *w = workers[pin - 1].get();
        u64 seen = wl.pin_epoch;
        wl.pin_epoch = w->epoch() + 1;
        if (!w->asleep() && (seen == 0 || seen == wl.pin_epoch)) {
          ++i;
          continue;
        }
      }
      // Everything popped from it so far was admitted in earlier
      // iterations; from here on only the pinned worker pops it.
      workers[pin - 1]->AddLane(wl.lane);
      (*list)[i] = list->back();
      list->pop_back();
      lanes_moved_.fetch_add(1, std::memory_order_relaxed);
      moved = true;
    }
  }
  if (moved) {
    shared_->num_lanes_.store(static_cast<u32>(lanes_.size() + cold_.size()));
  }
}

void Worker::Wake() {
  // Pairs with Sleep()'s store; fence; re-check (as WakeLaneWorker does).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (shared_->sleeping_.load(std::memory_order_acquire) != 0) {
    shared_->sleeping_.store(0, std::memory_order_release);
    hshm::FutexWake(&shared_->sleeping_, 1);
  }
}

void Worker::Exit() {
  exit_.store(true, std::memory_order_release);
  Wake();
}

void Worker::Stop(u64 deadline_ns) {
  deadline_ns_.store(deadline_ns, std::memory_order_relaxed);
  stop_.store(true, std::memory_order_release);
  Wake();
}

char *Worker::GetStack(bool admin, Status *why) {
  // Tasks that wait (on I/O, subtasks, a sleep) each hold a fiber: without
  // a bound, enough of them would exhaust the process's mappings.
  const u32 limit = CHI_CONFIG_MANAGER->config().max_fibers_ +
                    (admin ? kAdminFiberReserve : 0);
  if (g_fibers_in_use.fetch_add(1, std::memory_order_relaxed) >= limit) {
    g_fibers_in_use.fetch_sub(1, std::memory_order_relaxed);
    *why = Status::ResourceExhausted(
        "the runtime has workers.max_fibers (" +
        std::to_string(CHI_CONFIG_MANAGER->config().max_fibers_) +
        ") task fibers in use, running or waiting");
    return nullptr;
  }
  if (!free_stacks_.empty()) {
    char *s = free_stacks_.back();
    free_stacks_.pop_back();
    ++fibers_in_use_;
    return s;
  }
  void *p = mmap(nullptr, kGuardSize + kStackSize, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  char *s = p == MAP_FAILED ? nullptr : static_cast<char *>(p);
  if (s) {
    mprotect(p, kGuardSize, PROT_NONE);  // overflow faults, not corruption
    try {
      all_stacks_.insert(s);
    } catch (const std::bad_alloc &) {
      munmap(p, kGuardSize + kStackSize);
      s = nullptr;
    }
  }
  if (!s) {
    g_fibers_in_use.fetch_sub(1, std::memory_order_relaxed);
    *why = Status::OutOfMemory("no memory for a task stack");
    return nullptr;
  }
  ++fibers_in_use_;
  return s;
}

void Worker::PutStack(char *stack) {
  if (!stack) return;
  --fibers_in_use_;
  g_fibers_in_use.fetch_sub(1, std::memory_order_relaxed);
  if (free_stacks_.size() < max_idle_stacks_) {
    free_stacks_.push_back(stack);
    return;
  }
  munmap(stack, kGuardSize + kStackSize);
  all_stacks_.erase(stack);
}

CHI_WORKER_HOT RunContext *Worker::NewRunContext() {
  if (!free_rctx_.empty()) {
    RunContext *r = free_rctx_.back();
    free_rctx_.pop_back();
    return r;
  }
  return new RunContext();
}

namespace {
/** The task_bufs_ class of method `e`'s tasks, or kTaskBufClasses when they
 * are not cached (too big, or aligned beyond what operator new gives). */
HSHM_INLINE size_t TaskBufClass(const MethodEntry *e) {
  if (e->task_align > __STDCPP_DEFAULT_NEW_ALIGNMENT__) return kTaskBufClasses;
  size_t c = (e->task_size + kTaskBufQuantum - 1) / kTaskBufQuantum;
  return c < kTaskBufClasses ? c : kTaskBufClasses;
}
}  // namespace

CHI_WORKER_HOT Task *Worker::NewPrivateTask(const MethodEntry *e) {
  size_t c = TaskBufClass(e);
  void *mem;
  if (c == kTaskBufClasses) {
    mem = ::operator new(e->task_size, std::align_val_t(e->task_align));
  } else if (!task_bufs_[c].empty()) {
    mem = task_bufs_[c].back();
    task_bufs_[c].pop_back();
  } else {
    mem = ::operator new(c *kTaskBufQuantum);
  }
  return e->make_at(mem);
}

CHI_WORKER_HOT void Worker::FreePrivateTask(const MethodEntry *e, Task *task) {
  size_t c = TaskBufClass(e);
  e->destroy(task);
  if (c == kTaskBufClasses) {
    ::operator delete(task, std::align_val_t(e->task_align));
  } else if (task_bufs_[c].size() >= kTaskBufsPerClass) {
    ::operator delete(task);
  } else {
    task_bufs_[c].push_back(task);
  }
}

CHI_WORKER_HOT void Worker::FreeRunContext(RunContext *r) {
  if (r->task_ && r->method_) FreePrivateTask(r->method_, r->task_);
  if (__builtin_expect(r->charged_node_ != 0, 0)) {
    // A request from another node: what it was charged ends here.
    CHI_REMOTE->Uncharge(r->charged_node_, r->charged_bytes_);
    r->charged_node_ = 0;
    r->charged_bytes_ = 0;
  }
  for (const hipc::Pointer &p : r->in_bufs_) (void)CHI_IPC->FreeBuffer(p);
  r->in_bufs_.clear();
  delete r->net_;
  r->net_ = nullptr;
  r->task_ = nullptr;
  r->method_ = nullptr;
  r->shm_task_ = FullPtr<Task>();
  r->container_ = nullptr;
  r->origin_ = TaskOrigin::kShm;
  r->from_node_ = 0;
  r->req_id_ = 0;
  r->reply_wanted_ = true;
  r->parent_ = nullptr;
  r->node_ = 0;
  r->bcast_pending_ = 0;
  r->bcast_first_ = true;
  r->waiting_on_ = nullptr;
  r->waiting_group_ = nullptr;
  r->group_ = GroupRef();
  r->deps_.clear();
  r->dep_ids_.clear();
  r->wait_deadline_ns_ = UINT64_MAX;
  r->done_ = false;
  r->parked_ = false;
  r->trace_id_ = 0;
  r->in_bytes_ = 0;
  r->sample_start_ns_ = 0;
  r->est_load_ns_ = -1;
  r->pool_hold_.reset();
  // The network thread makes a context per request and workers free them:
  // keep a bounded cache, not one context per request ever received.
  if (free_rctx_.size() >= kMaxFreeContexts) {
    delete r;
    return;
  }
  free_rctx_.push_back(r);
}

void Worker::Loop() {
  char name[16];
  snprintf(name, sizeof(name), "chi_worker_%u", id_);
  HSHM_THREAD_MODEL->SetName(name);
  // An alternate signal stack, so a stack overflow can still be reported.
  std::vector<char> altstack(64 * 1024);
  stack_t ss{};
  ss.ss_sp = altstack.data();
  ss.ss_size = altstack.size();
  sigaltstack(&ss, nullptr);
  InstallSegvHandler();
  // A client may hold a heap lock (stopped, or on purpose): a slow-path
  // allocation of this thread fails after kHeapLockWaitMs instead of
  // stopping every lane it drains for the default 10 s (twice over with the
  // defragmenting retry). Its task then fails, or loses its error text.
  hipc::HeapLockWaitLimit heap_wait(kHeapLockWaitMs);
  for (;;) {
    epoch_.store(epoch_.load(std::memory_order_relaxed) + 1,
                 std::memory_order_release);
    (void)EnterLanes();
    if (has_mail_.load(std::memory_order_acquire)) TakeMailbox();
    bool did = PollLanes();
    if (++loop_count_ % kColdPeriod == 0) RebalanceLanes();
    LeaveLanes(SIZE_MAX);  // task code only from here (no lane pops)
    if (!inbox_.Empty()) did |= PollInbox();
    if (!blocked_.empty()) did |= CheckBlocked();
    if (!dep_wait_.empty()) did |= CheckDeps();
    if (!held_.empty()) did |= CheckHeld();
    if (!periodic_.empty()) did |= CheckPeriodic(hshm::NowNs());
    // What this iteration forwarded or answered goes out as one batch, and
    // so do the group counts its completions owe.
    FlushNet();
    FlushGroupCount();
    if (stop_.load(std::memory_order_acquire)) {
      // Draining: report whether we are idle, and leave only when the
      // orchestrator saw every worker idle at once (a busy worker may still
      // send to our lanes) or the deadline passed. Tasks waiting on
      // predecessors none of which moved (all of them looked at: a drain
      // may scan long lists) do not count: with every worker idle nothing
      // is left to complete them (Send refuses new tasks), and
      // AbortRemaining fails them.
      idle_.store(!did && blocked_.empty() && held_.empty() &&
                      periodic_.empty() && !AnyLaneBusy() &&
                      (dep_wait_.empty() || !AnyWaitingMoved()),
                  std::memory_order_release);
      if (exit_.load(std::memory_order_acquire)) break;
      if (hshm::NowNs() > deadline_ns_.load()) break;
    }
    if (did) {
      // Load accounting: the idle period lasted until the last empty poll.
      if (idle_start_ != 0) {
        shared_->idle_ticks_.store(
            shared_->idle_ticks_.load(std::memory_order_relaxed) +
                (idle_last_ - idle_start_),
            std::memory_order_relaxed);
        shared_->idle_since_.store(0, std::memory_order_relaxed);
        idle_start_ = 0;
      }
      idle_since_ns_ = 0;
      idle_polls_ = 0;
      continue;
    }
    // An empty poll: a time-stamp counter read (a few ns; busy workers never
    // get here) marks how long the worker has been idle.
    idle_last_ = TraceClock();
    if (idle_start_ == 0) {
      idle_start_ = idle_last_;
      shared_->idle_since_.store(idle_start_, std::memory_order_relaxed);
    }
    // Idle: poll again at once; read the clock (tens of ns) only every 64
    // empty polls, so that new work is seen as soon as it lands.
    if ((++idle_polls_ & 63) != 0 && periodic_.empty()) {
      hshm::CpuRelax();
      continue;
    }
    u64 now = hshm::NowNs();
    if (idle_since_ns_ == 0) idle_since_ns_ = now;
    u64 idle_ns = now - idle_since_ns_;
    if (idle_ns < static_cast<u64>(idle_spin_us_) * 1000) {
      // Past the first few microseconds (a client's usual turnaround), give
      // the core away between rounds of polls: a client thread that shares
      // this core (threads outnumber cores) then runs now, not when the
      // scheduler preempts us. Costs nothing when nobody else is runnable.
      if (idle_ns > kPauseSpinNs) {
        HSHM_THREAD_MODEL->Yield();
      } else {
        hshm::CpuRelax();
      }
      continue;
    }
    // With blocked fibers, nap as a napper: whoever completes a task wakes
    // us (WakeNappers). The nap is still bounded by the wait deadlines, and
    // by 10 ms as a safety net (a predecessor a client completes, when its
    // Send fails, wakes no runtime worker).
    bool waiting = !blocked_.empty() || !dep_wait_.empty();
    u64 max_us = waiting ? 10000 : 50000;
    if (!held_.empty()) max_us = 1000;  // WakeAll ends it sooner
    if (stop_.load(std::memory_order_relaxed)) max_us = 200;  // draining
    for (RunContext *r : periodic_) {
      u64 due = r->next_run_ns_ > now ? (r->next_run_ns_ - now) / 1000 : 0;
      max_us = std::min(max_us, due);
    }
    for (RunContext *r : blocked_) {
      if (r->wait_deadline_ns_ == UINT64_MAX) continue;
      u64 due = r->wait_deadline_ns_ > now
                    ? (r->wait_deadline_ns_ - now) / 1000 + 1
                    : 0;
      max_us = std::min(max_us, due);
    }
    if (max_us > 0) {
      bool nap = waiting;
      if (nap) g_nappers.fetch_add(1, std::memory_order_seq_cst);
      Sleep(max_us);
      if (nap) g_nappers.fetch_sub(1, std::memory_order_relaxed);
    }
    idle_since_ns_ = hshm::NowNs();
    idle_last_ = TraceClock();  // the nap was idle time too
  }
  (void)EnterLanes();  // no thief may take lanes we are about to abort
  AbortRemaining();
  FlushGroupCount();
  ss.ss_flags = SS_DISABLE;
  sigaltstack(&ss, nullptr);
  exited_.store(true, std::memory_order_release);
}

bool Worker::AnyLaneBusy() const {
  if (!inbox_.Empty()) return true;
  for (const auto &wl : lanes_) {
    if (!wl.Empty()) return true;
  }
  for (const auto &wl : cold_) {
    if (!wl.Empty()) return true;
  }
  return false;
}

void Worker::RebalanceLanes() {
  HandOverPinnedLanes(/*only_if_back=*/true);
  for (size_t i = 0; i < cold_.size();) {
    if (cold_[i].Retired()) {
      DrainRetired(cold_[i]);
      cold_[i] = cold_.back();
      cold_.pop_back();
    } else if (!cold_[i].Empty()) {
      cold_[i].idle_polls = 0;
      lanes_.push_back(cold_[i]);
      cold_[i] = cold_.back();
      cold_.pop_back();
    } else {
      ++i;
    }
  }
  for (size_t i = 0; i < lanes_.size();) {
    if (lanes_[i].idle_polls > kColdAfter) {
      cold_.push_back(lanes_[i]);
      lanes_[i] = lanes_.back();
      lanes_.pop_back();
    } else {
      ++i;
    }
  }
}

namespace {
/** True if the fiber of blocked `r` can resume (its wait ended). */
bool WaitOver(const RunContext *r) {
  if (r->sleeping_) return false;  // only its deadline ends a SleepUs
  if (r->waiting_group_) {
    return GroupReached(r->waiting_group_->load(std::memory_order_acquire),
                        r->waiting_target_);
  }
  return !r->waiting_on_ || r->waiting_on_->IsComplete();
}
}  // namespace

namespace {
/** True if waiting task `r` was abandoned or one of its predecessors
 * completed or was freed: worth a look by CheckDeps (which validates).
 * Adds the predecessors and words looked at to *looks. Worker threads. */
bool WaitingMoved(const RunContext *r, size_t *looks) {
  for (size_t i = 0; i < r->deps_.size(); ++i) {
    const hipc::Pointer &p = r->deps_[i];
    if (p.IsNull()) continue;  // found complete before
    ++*looks;
    const char *a = hipc::ToProcessAddress(p);
    if (!a || CHI_IPC->main_alloc()->LiveBlockSize(p) < sizeof(Task) ||
        (reinterpret_cast<const Task *>(a)->state_.load(
             std::memory_order_acquire) &
         kTaskComplete) ||
        (i < r->dep_ids_.size() && !(PredecessorNode(p) == r->dep_ids_[i]))) {
      return true;
    }
  }
  ++*looks;
  return r->shm_task_->state_.load(std::memory_order_acquire) & kTaskAbandoned;
}
}  // namespace

bool Worker::AnyBlockedReady() {
  for (const RunContext *r : blocked_) {
    if (WaitOver(r)) return true;
  }
  // Waiting tasks: at most kReadyLooks looks per call, from where the last
  // call stopped, so that a client queueing many tasks with many
  // predecessors cannot make every nap start with a scan of them all (the
  // nap is bounded, and a completion wakes nappers).
  const size_t n = dep_wait_.size();
  size_t looks = 0;
  for (size_t k = 0; k < n && looks < kReadyLooks; ++k) {
    if (ready_cursor_ >= n) ready_cursor_ = 0;
    if (WaitingMoved(dep_wait_[ready_cursor_++], &looks)) return true;
  }
  return false;
}

bool Worker::AnyWaitingMoved() const {
  size_t looks = 0;
  for (const RunContext *r : dep_wait_) {
    if (WaitingMoved(r, &looks)) return true;
  }
  return false;
}

void Worker::Sleep(u64 max_us) {
  shared_->sleeping_.store(1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (AnyLaneBusy() || has_mail_.load() || stop_.load() || AnyBlockedReady()) {
    shared_->sleeping_.store(0, std::memory_order_relaxed);
    return;
  }
  hshm::FutexWait(&shared_->sleeping_, 1, max_us);
  shared_->sleeping_.store(0, std::memory_order_relaxed);
}

bool Worker::PollLanes() {
  bool did = false;
  bool retired = false;
  hold_open_ = true;
  // Task code runs between LeaveLanes and EnterLanes: a thief may take our
  // lanes meanwhile (all but lane k); then only lane k is left, at 0.
  for (size_t k = 0; k < lanes_.size(); ++k) {
    u32 n = 0;
    bool pruned = false;
    if (lanes_[k].lane) {
      // Pop a batch first and prefetch each task's lines, so that the cache
      // misses on blocks the clients just wrote overlap instead of
      // following one another; then admit them in order.
      hipc::Pointer batch[kShmPopBatch];
      const char *addr[kShmPopBatch];  // batch[i] in this process, or null
      LaneView *lane = lanes_[k].lane;
      hipc::OffsetPointer off;
      while (n < kShmPopBatch && lane->TryPopHeld(&off)) {
        batch[n] = ipc_->TaskPointer(off);
        addr[n] = hipc::ToProcessAddress(batch[n]);
        PrefetchTask(addr[n]);
        ++n;
      }
      if (n > 1) {
        for (u32 i = 0; i < n; ++i) PrefetchTaskOutputs(addr[i]);
      }
      trace_last_ = 0;
      trace_chain_ = true;  // see TraceBegin
      for (u32 i = 0; i < n; ++i) {
        LeaveLanes(pruned ? 0 : k);
        AdmitShm(batch[i], addr[i]);
        pruned |= !EnterLanes();
      }
      trace_chain_ = false;
      // Only now may the reaper take the lane as past these tasks (it frees
      // a dead client's unclaimed tasks once released() passes them). Also
      // when nothing was popped: a pop may have recycled a dead producer's
      // ticket.
      lane->ReleaseHeld();
    } else if (lanes_[k].Retired()) {
      retired = true;
      continue;
    } else {
      TaskLane *tlane = lanes_[k].tlane;
      while (n < kPopBatch) {
        RunContext *r = tlane->Pop();
        if (!r) break;
        ++n;
        LeaveLanes(pruned ? 0 : k);
        Start(r);  // admitted and acquired when it was queued
        // A thief kept this lane for us: go on draining it.
        pruned |= !EnterLanes();
      }
    }
    if (pruned) k = 0;  // the kept lane
    WorkerLane &wl = lanes_[k];
    wl.idle_polls = n ? 0 : wl.idle_polls + 1;
    wl.pops += n;
    did |= n > 0;
    if (pruned) break;
  }
  hold_open_ = false;
  FlushHold();
  if (retired) {
    for (size_t i = 0; i < lanes_.size();) {
      if (lanes_[i].Retired()) {
        DrainRetired(lanes_[i]);
        lanes_[i] = lanes_.back();
        lanes_.pop_back();
      } else {
        ++i;
      }
    }
    shared_->num_lanes_.store(static_cast<u32>(lanes_.size() + cold_.size()));
  }
  return did;
}

bool Worker::PollInbox() {
  bool did = false;
  for (u32 n = 0; n < kPopBatch; ++n) {
    RunContext *r = inbox_.Pop();
    if (!r) break;
    did = true;
    if (r->origin_ == TaskOrigin::kBcastPart && !r->net_) {
      MergePart(r);  // a part that finished on another worker
    } else if (r->net_ && r->net_->is_reply) {
      r->worker_ = this;
      ApplyReply(r);
    } else {
      r->worker_ = this;
      AdmitRemote(r);
    }
  }
  return did;
}

void Worker::DrainRetired(const WorkerLane &wl) {
  Status aborted = Status::Aborted("the pool was destroyed");
  // Under the lane's lock (TakeAll): no push can land after it.
  for (RunContext *r : wl.tlane->TakeAll()) {
    // Queued here by the worker that admitted it: this thread completes it,
    // and a reply to another node goes into this worker's staging (Stage
    // and Flush are each worker's own).
    r->worker_ = this;
    Complete(r, aborted);
  }
  // Last touch of the container: it may be freed once every holder is done.
  wl.container->lanes_held_.fetch_sub(1, std::memory_order_acq_rel);
}

//------------------------------------------------------------------------------
// Admit
//------------------------------------------------------------------------------

void Worker::AdmitShm(const hipc::Pointer &p, const char *addr) {
  // A client may push garbage: only a live block of main that carries the
  // task magic is a task, and each is accepted exactly once.
  u64 size = ipc_->main_alloc()->LiveBlockSize(p);
  if (size < sizeof(Task) || ipc_->IsRuntimeStructure(p)) {
    HSHM_LOG_LIMITED("chimaera: worker %u dropped an invalid task pointer\n",
                     id_);
    return;
  }
  // A live block of main: `addr` is its address (not null).
  FullPtr<Task> shm(reinterpret_cast<Task *>(const_cast<char *>(addr)), p);
  // Pairs with the release at completion.
  HSHM_TSAN_ACQUIRE(TsanKey(shm.ptr_));
  alignas(Task) char hdr_bytes[sizeof(Task)];
  CopyTaskBytes(hdr_bytes, shm.ptr_, sizeof(Task));
  const Task &hdr = *reinterpret_cast<const Task *>(hdr_bytes);
  if (hdr.magic_ != kTaskMagic) {
    HSHM_LOG_LIMITED("chimaera: worker %u dropped a block that is not a task\n",
                     id_);
    return;
  }
  // Claim the task (a completed task stays claimed: Send clears the word).
  // claim_ lies on another line than state_, which the submitter polls.
  u32 prev = 0;
  if (!shm->claim_.compare_exchange_strong(prev, kTaskAccepted,
                                           std::memory_order_acq_rel)) {
    // A task the reaper claimed from a dead client is dropped quietly.
    if (prev == kTaskUnsent) {
      HSHM_LOG_LIMITED("chimaera: worker %u dropped a task never sent\n", id_);
    } else if (!(prev & kTaskReaped)) {
      HSHM_LOG_LIMITED("chimaera: worker %u dropped a task submitted twice\n",
                       id_);
    }
    return;
  }
  // Its group and predecessors (task_graph.h): the group is counted
  // however the task ends from here on.
  GroupRef group;
  std::vector<hipc::Pointer> deps;
  Status ext_st;
  if (!hdr.ext_.IsNull()) ext_st = LoadExt(hdr.ext_, &group, &deps);
  const bool abandoned =
      shm->state_.load(std::memory_order_acquire) & kTaskAbandoned;
  if (abandoned && !hdr.task_flags_.Any(TASK_OWNS_INPUTS)) {
    // Its submitter gave up before it ran: drop it unrun; it is ours to free.
    // (One that owns its inputs is dropped below, once they are checked.)
    FreeShmTask(shm, nullptr);
    internal::CountDownGroup(group);
    return;
  }
  bool fnf = hdr.task_flags_.Any(TASK_FIRE_AND_FORGET);
  if (!ext_st.ok()) return FailUnadmitted(shm, ext_st, fnf, group);
  Status st = CheckHeader(hdr);
  if (!st.ok()) return FailUnadmitted(shm, st, fnf, group);
  PoolInfo *pool = pools_->FindFast(hdr.pool_id_, &pool_cache_);
  if (!pool) {
    return FailUnadmitted(
        shm, Status::NotFound("no pool with id " + hdr.pool_id_.ToString()),
        fnf, group);
  }
  const MethodEntry *e = pool->proto_->GetMethod(hdr.method_);
  if (!e) {
    return FailUnadmitted(
        shm,
        Status::NotFound("module '" + pool->module_ + "' (pool '" +
                         pool->name_ + "') has no method " +
                         std::to_string(hdr.method_)),
        fnf, group);
  }
  if (size < e->task_size) {
    return FailUnadmitted(
        shm,
        Status::InvalidArgument(std::string("task is smaller than ") + e->name +
                                "'s task type"),
        fnf, group);
  }
  if (hdr.type_tag_ != e->type_tag) {
    return FailUnadmitted(
        shm,
        Status::InvalidArgument(std::string("task was not made as ") + e->name +
                                "'s task type (type tag mismatch: wrong task "
                                "type for its method id?)"),
        fnf, group);
  }
  if (__builtin_expect(e->runtime_only, 0) && !RuntimeOnlyVouch::Take(p)) {
    return FailUnadmitted(
        shm,
        Status::InvalidArgument(std::string("method ") + e->name +
                                " is a step of the runtime's own: a client "
                                "cannot submit it"),
        fnf, group);
  }
  if (__builtin_expect(fault_scribble_, 0)) ScribbleCheckedHeader(shm.ptr_);
  // The private copy: from here on the runtime reads only this.
  Task *priv = NewPrivateTask(e);
  // The header from the copy checked above (never read again from the
  // client's block, which it may have changed since), the rest from the
  // block; priv->state_ stays 0.
  CopyTaskBytes(priv, &hdr, sizeof(Task));
  if (e->task_size > sizeof(Task)) {  // a task without parameters has none
    std::memcpy(reinterpret_cast<char *>(priv) + sizeof(Task),
                reinterpret_cast<const char *>(shm.ptr_) + sizeof(Task),
                e->task_size - sizeof(Task));
  }
  priv->rc_ = 0;
  priv->err_ = hipc::Pointer::GetNull();
  RunContext *r = NewRunContext();
  r->task_ = priv;
  r->method_ = e;
  r->worker_ = this;
  r->origin_ = TaskOrigin::kShm;
  r->shm_task_ = shm;
  r->group_ = group;
  // Checks input buffers and clears output buffers (see task_fields.h).
  if (e->has_fields) {
    FieldArchive check(FieldArchive::Mode::kCheckShm, priv);
    e->fields(check, priv);
    if (!check.status().ok()) return Complete(r, check.status());
    r->in_bytes_ = check.in_bytes();
  }
  if (abandoned) {
    // It owns its inputs: Complete frees them with it, unrun.
    return Complete(r, Status::Aborted("abandoned before it ran"));
  }
  if (!deps.empty()) {
    r->deps_ = std::move(deps);
    Status dep_st;
    switch (CheckPredecessors(r, &dep_st)) {
      case DepState::kWaiting:
        if (dep_wait_.size() >= kMaxDepWaiting) {
          return Complete(
              r, Status::ResourceExhausted("worker " + std::to_string(id_) +
                                           " already holds " +
                                           std::to_string(kMaxDepWaiting) +
                                           " tasks waiting on predecessors"));
        }
        // It has no container yet, so a destroy of its pool does not wait
        // for it: the hold keeps r->method_ (an entry of the prototype)
        // alive until it is freed.
        r->pool_hold_ = pool->proto_;
        dep_wait_.push_back(r);  // CheckDeps starts it later
        return;
      case DepState::kFailed:
        return Complete(r, dep_st);
      case DepState::kReady:
        break;
    }
  }
  Route(r, pool);
}

namespace {
/** Where waiting task `r` stands: its submitter abandoned it, or what
 * CheckPredecessors says. Worker threads. */
DepState LookAtWaiting(RunContext *r, Status *st) {
  if (r->shm_task_->state_.load(std::memory_order_acquire) & kTaskAbandoned) {
    *st = Status::Aborted("abandoned before its predecessors completed");
    return DepState::kFailed;  // Complete frees it (abandoned)
  }
  return CheckPredecessors(r, st);
}
}  // namespace

bool Worker::TryStartWaiting(size_t i) {
  RunContext *r = dep_wait_[i];
  Status st;
  DepState ds = LookAtWaiting(r, &st);
  if (ds == DepState::kWaiting) return false;
  // A deque erases near either end in a few moves, and keeps the order.
  dep_wait_.erase(dep_wait_.begin() + static_cast<std::ptrdiff_t>(i));
  if (ds == DepState::kFailed) {
    Complete(r, st);
  } else {
    Route(r);
  }
  return true;
}

bool Worker::CheckDeps() {
  // Oldest first: a task waits mostly on tasks submitted before it, so the
  // ready ones are near the front. The scan stops after kDepHeadRun tasks
  // in a row still wait, so a long list (thousands submitted ahead) costs
  // an iteration a few looks, not a rescan. Tasks a start appends (a
  // method that submits) are looked at from the next iteration on.
  bool did = false;
  size_t n = dep_wait_.size();
  size_t i = 0, run = 0;
  for (size_t looks = 0; i < n && looks < kDepHeadChecks && run < kDepHeadRun;
       ++looks) {
    if (TryStartWaiting(i)) {
      did = true;
      --n;
      run = 0;
    } else {
      ++i;
      ++run;
    }
  }
  // Then, every kDepSweepPeriod-th iteration, a few of the rest, round
  // robin: a task that waits behind a long run of waiting ones (on a long
  // task, or on another client's) is still seen within
  // n * kDepSweepPeriod / kDepSweepChecks iterations.
  if ((loop_count_ & (kDepSweepPeriod - 1)) != 0) return did;
  for (size_t looks = 0; i < n && looks < std::min(kDepSweepChecks, n - i);
       ++looks) {
    if (dep_cursor_ < i || dep_cursor_ >= n) dep_cursor_ = i;
    if (TryStartWaiting(dep_cursor_)) {
      did = true;
      --n;
    } else {
      ++dep_cursor_;
    }
  }
  return did;
}

void Worker::AdmitRemote(RunContext *r) {
  NetMessage &m = *r->net_;
  r->origin_ = TaskOrigin::kRemote;
  r->from_node_ = m.from;
  WireRequest req;
  const char *data = m.bytes.data() + sizeof(u32);
  u64 size = m.bytes.size() - sizeof(u32);  // the kind was checked
  if (size < sizeof(req)) {
    HSHM_LOG_LIMITED("chimaera: worker %u dropped a truncated request\n", id_);
    delete r->net_;
    r->net_ = nullptr;
    FreeRunContext(r);
    return;
  }
  std::memcpy(&req, data, sizeof(req));
  r->req_id_ = req.req_id;
  r->reply_wanted_ = (req.reply_wanted & 1) != 0;
  r->relayed_ = (req.reply_wanted & 2) != 0;
  // Errors from here on are answered (the request id is known).
  auto fail = [&](const Status &st) {
    HSHM_LOG_LIMITED("chimaera: node %u refused a request from node %u: %s\n",
                     CHI_IPC->node_id(), m.from, st.ToString().c_str());
    if (r->reply_wanted_) {
      CHI_REMOTE->Reply(r, st);
      net_staged_ = true;
    }
    FreeRunContext(r);
  };
  PoolInfo *pool = CHI_POOL_MANAGER->FindFast(req.pool_id, &pool_cache_);
  if (!pool)
    return fail(Status::NotFound("node " + std::to_string(CHI_IPC->node_id()) +
                                 " has no pool with id " +
                                 req.pool_id.ToString()));
  const MethodEntry *e = pool->proto_->GetMethod(req.method);
  if (!e) {
    return fail(Status::NotFound("module '" + pool->module_ +
                                 "' has no method " +
                                 std::to_string(req.method)));
  }
  Task *priv = NewPrivateTask(e);
  r->task_ = priv;
  r->method_ = e;
  priv->SetBase(req.task_node, req.pool_id, req.dom_query, req.method);
  // Its inputs here are this node's copies, freed with the run context,
  // whoever owned the originals.
  priv->task_flags_.bits_ = req.flags & ~TASK_OWNS_INPUTS;
  priv->prio_ = req.prio;
  priv->period_ns_ = req.period_ns;
  Status st = CheckHeader(*priv);
  if (!st.ok()) return fail(st);
  if (priv->IsPeriodic()) {
    // No node forwards one (Forward refuses them), and nothing could stop
    // one that came this way: it would run until the runtime stops.
    return fail(
        Status::InvalidArgument("periodic tasks run on their own node only"));
  }
  if (req.dom_query.kind_ != DomainQuery::kGlobalId &&
      req.dom_query.kind_ != DomainQuery::kLocalId) {
    return fail(
        Status::InvalidArgument("a forwarded task must name one "
                                "container"));
  }
  std::vector<FrameView> views = m.Views();
  FieldArchive in(FieldArchive::Mode::kLoadIn, priv);
  in.set_input(data + sizeof(req), size - sizeof(req), views.data(),
               static_cast<u32>(views.size()));
  e->fields(in, priv);
  r->in_bufs_ = std::move(in.allocated());
  if (in.status().ok() && (in.consumed() != size - sizeof(req) ||
                           in.frames_consumed() != views.size())) {
    return fail(
        Status::InvalidArgument("request record length does not match method " +
                                std::string(e->name) + "'s fields"));
  }
  if (!in.status().ok()) return fail(in.status());
  r->in_bytes_ = in.in_bytes();
  delete r->net_;
  r->net_ = nullptr;
  Route(r, pool);
}

//------------------------------------------------------------------------------
// Resolve
//------------------------------------------------------------------------------

void Worker::Route(RunContext *r, PoolInfo *pool) {
  Task *t = r->task_;
  if (!pool) pool = pools_->FindFast(t->pool_id_, &pool_cache_);
  if (!pool) {
    return Complete(
        r, Status::NotFound("no pool with id " + t->pool_id_.ToString()));
  }
  if (t->dom_query_.kind_ == DomainQuery::kDynamic) {
    // The pool's first local container (or its prototype) decides.
    Container *c = pool->local_.empty() ? pool->proto_.get()
                                        : pool->containers_[pool->local_[0]];
    RunContext probe;
    probe.task_ = t;
    probe.container_ = c;
    probe.worker_ = this;
    probe.pool_ = pool;
    c->Monitor(MonitorMode::kGlobalSchedule, t, probe);
    if (t->dom_query_.kind_ == DomainQuery::kDynamic) {
      u32 h = static_cast<u32>(t->task_node_.major_ * 0x9E3779B1u);
      t->dom_query_ = pool->local_.empty() ? DomainQuery::GetGlobalHash(h)
                                           : DomainQuery::GetLocalHash(h);
    }
  }
  if (t->dom_query_.kind_ == DomainQuery::kGlobalBcast) {
    if (r->origin_ == TaskOrigin::kRemote) {
      return Complete(r, Status::InvalidArgument("nested broadcast"));
    }
    if (t->IsPeriodic()) {
      // Its parts could never be stopped: a part's stop request is its
      // private copy's, and the broadcast would never complete.
      return Complete(
          r, Status::InvalidArgument("a periodic task cannot be broadcast"));
    }
    return StartBcast(r);
  }
  // Under the batch hold, the common case (a local container) inline.
  Container *local =
      hold_open_ ? pools_->LocalIn(pool, t->dom_query_) : nullptr;
  if (!local) {
    auto d = hold_open_ ? pools_->ResolveIn(pool, t->dom_query_)
                        : pools_->AcquireIn(pool, t->dom_query_);
    if (!d.ok()) return Complete(r, d.status());
    if (!d->local) {
      if (r->origin_ == TaskOrigin::kRemote && r->relayed_) {
        // Two hops at most: the sender and a node a container left.
        return Complete(
            r, Status::NotFound("container " + std::to_string(d->container) +
                                " is not on node " +
                                std::to_string(ipc_->node_id())));
      }
      // A remote request for a container that moved away is relayed once.
      return Forward(r, d->node, DomainQuery::GetGlobalId(d->container));
    }
    if (!hold_open_) {
      r->container_ = d->local;
      return RunLocal(r);
    }
    local = d->local;
  }
  r->container_ = local;
  CountInHold(local);
  hold_task_ = r;
  RunLocal(r);
  // If still running (a fiber waits, or a periodic task waits for its next
  // run), counted for real now, so that load decisions (GetDynamic) made
  // before the flush see it; a no-op if it completed.
  OwnCount(r);
}

void Worker::CountInHold(Container *c) {
  if (c != hold_c_) {
    FlushHold();
    // seq_cst: the hold's count is the one BeginMove must see (RunLocal).
    c->counts_.fetch_add(1, std::memory_order_seq_cst);
    hold_c_ = c;
    hold_net_ = 0;
    hold_done_ = 0;
  }
  ++hold_net_;
}

void Worker::OwnCount(RunContext *r) {
  if (hold_task_ != r) return;
  hold_task_ = nullptr;
  r->container_->counts_.fetch_add(1, std::memory_order_seq_cst);
  --hold_net_;
}

CHI_WORKER_HOT void Worker::RunLocal(RunContext *r) {
  // A task leaving this thread before FlushHold gets a real count first
  // (OwnCount): another worker may end it, and a move compares in-flight
  // with held_.
  // seq_cst: pairs with BeginMove (see there). A moving container starts
  // nothing: its task waits here until the move ends. Under the batch hold
  // the hold's count was added before this load.
  if (__builtin_expect(
          r->container_->moving_.load(std::memory_order_seq_cst) != 0, 0)) {
    OwnCount(r);
    if (held_.size() >= kMaxHeld) {
      return Complete(
          r, Status::ResourceExhausted("worker " + std::to_string(id_) +
                                       " holds " + std::to_string(kMaxHeld) +
                                       " tasks of moving containers already"));
    }
    return Hold(r);
  }
  // A pinned container runs on its worker only (Container::PinToWorker).
  if (TaskLane *pin = r->container_->PinnedLane()) {
    const u32 w = pin->worker_id_.load(std::memory_order_relaxed);
    if (w == id_) return Start(r);
    // Past the depth of other lanes (running it here instead would break
    // the one-worker rule), up to kMaxPinnedQueued.
    OwnCount(r);
    if (pin->Size() >= kMaxPinnedQueued) {
      return Complete(
          r, Status::ResourceExhausted("the pinned container's worker has " +
                                       std::to_string(kMaxPinnedQueued) +
                                       " tasks queued already"));
    }
    if (!pin->PushUnbounded(r)) {
      // Retired (its pool is being destroyed) and maybe drained already:
      // fail it as the drain would have.
      return Complete(r, Status::Aborted("the pool was destroyed"));
    }
    auto &workers = CHI_WORK_ORCHESTRATOR->workers();
    if (w < workers.size()) workers[w]->Wake();
    return;
  }
  TaskLane *target = r->container_->Route(r->task_);
  if (target) OwnCount(r);
  if (target && target->Push(r)) {
    // The lane's worker runs it; the container stays acquired until then.
    u32 w = target->worker_id_.load(std::memory_order_acquire);
    auto &workers = CHI_WORK_ORCHESTRATOR->workers();
    if (w < workers.size()) workers[w]->Wake();
    return;
  }
  if (target &&
      (target->flags_.load(std::memory_order_acquire) & kLaneRetired)) {
    // As above: a retired lane refuses it, and its drain may be over.
    return Complete(r, Status::Aborted("the pool was destroyed"));
  }
  Start(r);
}

void Worker::Hold(RunContext *r) {
  r->container_->held_.fetch_add(1, std::memory_order_seq_cst);
  held_.push_back(r);
}

bool Worker::CheckHeld() {
  std::vector<RunContext *> pending;
  pending.swap(held_);
  bool did = false;
  for (RunContext *r : pending) {
    Container *c = r->container_;
    u32 state = c->moving_.load(std::memory_order_seq_cst);
    if (state == Container::kMoving) {
      held_.push_back(r);
      continue;
    }
    did = true;
    c->held_.fetch_sub(1, std::memory_order_seq_cst);
    if (state == Container::kServing) {  // the move was called off
      RunLocal(r);
      continue;
    }
    // Moved: resolve it again (the pool's new map sends it on).
    PoolManager::Release(c);
    r->container_ = nullptr;
    if (r->origin_ == TaskOrigin::kBcastPart) {
      // A broadcast part runs on this node's first container, if any left.
      PoolInfo *pool =
          CHI_POOL_MANAGER->FindFast(r->task_->pool_id_, &pool_cache_);
      ContainerId first = pool ? pool->FirstOn(CHI_IPC->node_id()) : ~0u;
      if (first == ~0u) {
        Complete(r, Status::Ok());  // this node holds none of it now
        continue;
      }
      auto d = CHI_POOL_MANAGER->AcquireFast(
          r->task_->pool_id_, DomainQuery::GetGlobalId(first), &pool_cache_);
      if (!d.ok() || !d->local) {
        Complete(r, d.ok() ? Status::Ok() : d.status());
        continue;
      }
      r->container_ = d->local;
      RunLocal(r);
      continue;
    }
    Route(r);
  }
  return did;
}

void Worker::Forward(RunContext *r, NodeId node, const DomainQuery &q) {
  Task *t = r->task_;
  if (t->IsPeriodic()) {
    return Complete(r, Status::InvalidArgument(
                           "periodic tasks run on their own node only"));
  }
  if (!r->pool_hold_) {
    PoolInfo *pool = CHI_POOL_MANAGER->FindFast(t->pool_id_, &pool_cache_);
    if (!pool) return Complete(r, Status::NotFound("pool vanished"));
    r->pool_hold_ = pool->proto_;
  }
  // Read first: once forwarded, a task that wants a reply is the reply's,
  // and another worker may complete (and free) it at any moment.
  const bool wants_reply = CHI_REMOTE->WantsReply(r);
  Status st = CHI_REMOTE->Forward(r, node, q, id_);
  if (!st.ok()) return Complete(r, st);
  net_staged_ = true;
  if (!wants_reply) {
    // Nobody waits for a reply: the submitter's task is done here.
    Complete(r, Status::Ok());
  }
}

void Worker::StartBcast(RunContext *r) {
  std::vector<Destination> dests;
  Status st =
      CHI_POOL_MANAGER->AcquireBcast(r->task_->pool_id_, &pool_cache_, &dests);
  if (!st.ok()) return Complete(r, st);
  if (dests.empty()) {
    return Complete(r, Status::NotFound("the pool has no containers"));
  }
  const MethodEntry *e = r->method_;
  if (PoolInfo *pool =
          CHI_POOL_MANAGER->FindFast(r->task_->pool_id_, &pool_cache_)) {
    r->pool_hold_ = pool->proto_;  // parts may outlive the pool's entry
  }
  // One extra count, dropped after the loop: a part that completes at once
  // must not complete the broadcast before every part was sent.
  r->bcast_pending_ = static_cast<u32>(dests.size()) + 1;
  r->bcast_first_ = true;
  for (const Destination &d : dests) {
    RunContext *part = NewRunContext();
    part->task_ = NewPrivateTask(e);
    CopyTaskBytes(part->task_, r->task_, e->task_size);
    part->method_ = e;
    part->worker_ = this;
    part->origin_ = TaskOrigin::kBcastPart;
    part->parent_ = r;
    part->pool_hold_ = r->pool_hold_;
    part->node_ = d.node;
    if (d.local) {
      part->container_ = d.local;
      part->task_->dom_query_ = DomainQuery::GetGlobalId(d.container);
      RunLocal(part);
    } else {
      Forward(part, d.node, DomainQuery::GetGlobalId(d.container));
    }
  }
  if (--r->bcast_pending_ == 0) Complete(r, Status::Ok());
}

void Worker::MergePart(RunContext *part) {
  RunContext *r = part->parent_;
  Task *acc = r->task_;
  Task *rep = part->task_;
  const MethodEntry *e = r->method_;
  if (rep->rc_ != 0 && acc->rc_ == 0) {
    // First error wins; its message moves to the accumulator.
    acc->rc_ = rep->rc_;
    acc->err_ = rep->err_;
    rep->err_ = hipc::Pointer::GetNull();
  }
  if (!rep->err_.IsNull()) (void)CHI_IPC->FreeBuffer(rep->err_);
  rep->err_ = hipc::Pointer::GetNull();
  bool took = false;
  if (r->bcast_first_ && rep->rc_ == 0) {
    FieldArchive copy(FieldArchive::Mode::kCopyOut, rep);
    copy.set_dst(acc);
    e->fields(copy, rep);
    r->bcast_first_ = false;
    took = true;  // its OUT buffers now belong to the accumulator
  }
  PoolInfo *pool = CHI_POOL_MANAGER->FindFast(acc->pool_id_, &pool_cache_);
  if (pool) {
    Container *c = pool->local_.empty() ? pool->proto_.get()
                                        : pool->containers_[pool->local_[0]];
    c->MergeBcast(acc, rep, part->node_);
  }
  if (!took) {
    FieldArchive fr(FieldArchive::Mode::kFreeOut, rep);
    e->fields(fr, rep);
  }
  FreeRunContext(part);
  if (--r->bcast_pending_ == 0) Complete(r, Status::Ok());
}

void Worker::ApplyReply(RunContext *r) {
  NetMessage *m = r->net_;
  r->net_ = nullptr;
  Status st = m->failure;
  if (st.ok()) {
    const char *data = m->bytes.data() + sizeof(u32);
    u64 size = m->bytes.size() - sizeof(u32);
    WireReply rep;
    std::memcpy(&rep, data, sizeof(rep));  // size checked by the manager
    data += sizeof(rep);
    size -= sizeof(rep);
    // err_len checked by the manager; clients read at most kMaxErrorText
    // of a message, and a longer one would only fill `main`.
    std::string err(data, std::min<u64>(rep.err_len, internal::kMaxErrorText));
    data += rep.err_len;
    size -= rep.err_len;
    if (rep.rc != 0) {
      // An error reply carries no fields.
      st = Status(static_cast<StatusCode>(rep.rc), err);
    } else {
      std::vector<FrameView> views = m->Views();
      FieldArchive out(FieldArchive::Mode::kLoadOut, r->task_);
      out.set_input(data, size, views.data(), static_cast<u32>(views.size()));
      r->method_->fields(out, r->task_);
      if (!out.status().ok()) {
        // The buffers the fields before the bad one got are nobody's.
        FieldArchive undo(FieldArchive::Mode::kFreeOut, r->task_);
        r->method_->fields(undo, r->task_);
        st = Status(out.status().code(), "malformed reply from node " +
                                             std::to_string(m->from) + ": " +
                                             out.status().message());
      }
    }
  }
  delete m;
  Complete(r, st);
}

//------------------------------------------------------------------------------
// Run
//------------------------------------------------------------------------------

CHI_WORKER_HOT void Worker::Start(RunContext *r) {
  r->worker_ = this;
  // What this iteration forwarded or answered leaves before task code that
  // may run long (else a request or reply would wait for it).
  if (__builtin_expect(net_staged_, 0)) FlushNet();
  // Task code of another container may run long: the batch hold ends first,
  // so that it never outlasts a task of its own container.
  if (hold_c_ && r->container_ != hold_c_) FlushHold();
  FlushGroupCountBefore(r);
  // A method that never waits runs on this thread's stack, without a fiber.
  const bool inline_run = r->method_ && r->method_->never_waits;
  if (!inline_run) {
    Status why;
    // The admin pool's reserve is for managing the runtime: not for FanOut,
    // a workload whose tree of waiting subtasks a client sizes.
    const bool admin =
        r->container_ && r->container_->pool_id_ == kAdminPoolId &&
        r->task_->method_ != admin::Admin::Methods::IdOf<admin::FanOutTask>();
    r->stack_ = GetStack(admin, &why);
    if (!r->stack_) {
      if (r->task_->IsPeriodic() && !stop_.load()) {
        // A periodic task is not ended by one refusal: its next period
        // tries again.
        HSHM_LOG_LIMITED("chimaera: worker %u: periodic task delayed: %s\n",
                         id_, why.ToString().c_str());
        return ParkPeriodic(r);
      }
      return Complete(r, why);
    }
  }
  r->done_ = false;
  r->waiting_on_ = nullptr;
  r->waiting_group_ = nullptr;
  r->wait_deadline_ns_ = UINT64_MAX;
  // Cost models: time one run in kSampleEvery (a clock read, not one per
  // task). A periodic task's later runs keep their own start.
  if (__builtin_expect(++sample_seq_ % kSampleEvery == 0, 0)) {
    r->sample_start_ns_ = hshm::NowNs();
  }
  // Tracing off: this predictable branch is all it costs.
  if (__builtin_expect(trace_ != nullptr, 0)) TraceBegin(r);
  if (inline_run) {
    tls_inline = r;
    RunMethod(r);
    tls_inline = nullptr;
    r->done_ = true;
    return Finish(r);
  }
  ctx::stack_context sctx;
  sctx.sp = r->stack_ + kGuardSize + kStackSize;
  sctx.size = kStackSize;
  r->tsan_fiber_ = HSHM_TSAN_FIBER_CREATE();
  r->fiber_ = ctx::fiber(std::allocator_arg,
                         ctx::preallocated(sctx.sp, sctx.size, sctx),
                         PooledStack(), [r](ctx::fiber &&sink) {
                           r->sink_ = std::move(sink);
                           RunMethod(r);
                           r->done_ = true;
                           HSHM_TSAN_FIBER_SWITCH(r->tsan_sink_);
                           return std::move(r->sink_);
                         });
  Resume(r);
}

void Worker::Resume(RunContext *r) {
  FlushGroupCountBefore(r);
  tls_rctx = r;
  r->tsan_sink_ = HSHM_TSAN_FIBER_CURRENT();
  HSHM_TSAN_FIBER_SWITCH(r->tsan_fiber_);
  r->fiber_ = std::move(r->fiber_).resume();
  tls_rctx = nullptr;
  if (r->done_) {
    HSHM_TSAN_FIBER_DESTROY(r->tsan_fiber_);
    r->tsan_fiber_ = nullptr;
    Finish(r);
  } else {
    blocked_.push_back(r);
  }
}

bool Worker::CheckBlocked() {
  std::vector<RunContext *> pending;
  pending.swap(blocked_);
  bool did = false;
  for (RunContext *r : pending) {
    if (WaitOver(r) || (r->wait_deadline_ns_ != UINT64_MAX &&
                        hshm::NowNs() >= r->wait_deadline_ns_)) {
      Resume(r);
      did = true;
    } else {
      blocked_.push_back(r);
    }
  }
  return did;
}

namespace {
/** True once the submitter of a periodic task asked it to stop. */
bool StopWanted(const RunContext *r) {
  if (r->origin_ == TaskOrigin::kShm) return r->shm_task_->StopRequested();
  return r->task_->StopRequested();
}

/** Why periodic task `r` must end now although nobody asked (not OK), or
 * OK. Its container moving ends it: a periodic task runs on its own node
 * only, and the move waits for every task of the container in flight. */
Status PeriodicEnd(const RunContext *r) {
  if (r->container_->moving_.load(std::memory_order_seq_cst) !=
      Container::kServing) {
    return Status::Aborted(
        "its container moves to another node, and a periodic task runs on "
        "its own node only");
  }
  return Status::Ok();
}

/** How periodic task `r` ends when it stops without having failed: OK if
 * its submitter asked; Aborted if its pool is being destroyed or the
 * runtime stops (`stopping`), so that a caller (and its dependents) can
 * tell those from a stop it asked for. */
Status PeriodicStopped(const RunContext *r, bool stopping) {
  if (StopWanted(r)) return Status::Ok();
  if (r->container_->destroying_.load(std::memory_order_relaxed)) {
    return Status::Aborted("the pool was destroyed");
  }
  if (stopping) return Status::Aborted("the runtime is stopping");
  return Status::Ok();
}
}  // namespace

bool Worker::CheckPeriodic(u64 now) {
  bool did = false;
  for (size_t i = 0; i < periodic_.size();) {
    RunContext *r = periodic_[i];
    bool stop = StopWanted(r) || stop_.load() ||
                r->container_->destroying_.load(std::memory_order_relaxed);
    Status end = PeriodicEnd(r);
    if (!stop && end.ok() && r->next_run_ns_ > now) {
      ++i;
      continue;
    }
    periodic_[i] = periodic_.back();
    periodic_.pop_back();
    did = true;
    if (stop || !end.ok()) {
      Complete(r, end.ok() ? PeriodicStopped(r, stop_.load()) : end);
    } else {
      Start(r);
    }
  }
  return did;
}

CHI_WORKER_HOT void Worker::Finish(RunContext *r) {
  // Recorded before the task is completed: a parent waiting on it resumes
  // (and so ends) only after this run's end.
  if (__builtin_expect(r->trace_id_ != 0, 0)) TraceEnd(r);
  Task *t = r->task_;
  Container *c = r->container_;
  if (__builtin_expect(r->sample_start_ns_ != 0, 0)) RecordSample(r);
  PutStack(r->stack_);
  r->stack_ = nullptr;
  t->run_count_++;
  if (t->IsPeriodic() && !StopWanted(r) && !stop_.load() &&
      !c->destroying_.load(std::memory_order_relaxed) && t->rc_ == 0) {
    Status end = PeriodicEnd(r);
    if (!end.ok()) return Complete(r, end);
    return ParkPeriodic(r);  // the task stays in flight
  }
  if (t->IsPeriodic() && t->rc_ == 0) {
    return Complete(r, PeriodicStopped(r, stop_.load()));
  }
  Complete(r, Status::Ok());
}

void Worker::ParkPeriodic(RunContext *r) {
  // Checked at a task's first park only: one parked before and now running
  // (perhaps waiting, outside periodic_) keeps its place.
  if (!r->parked_ && periodic_.size() >= kMaxPeriodic) {
    return Complete(r, Status::ResourceExhausted(
                           "worker " + std::to_string(id_) + " already holds " +
                           std::to_string(kMaxPeriodic) + " periodic tasks"));
  }
  r->parked_ = true;
  r->next_run_ns_ = hshm::NowNs() + static_cast<u64>(r->task_->period_ns_);
  periodic_.push_back(r);
}

//------------------------------------------------------------------------------
// Complete
//------------------------------------------------------------------------------

void Worker::Complete(RunContext *r, const Status &status) {
  Task *t = r->task_;
  if (!status.ok()) internal::SetTaskStatus(t, status);
  Container *c = r->container_;
  if (r == hold_task_) hold_task_ = nullptr;  // ends in the hold's counts
  if (c) {
    // Single writer: a plain add, no locked instruction on the hot path.
    shared_->tasks_done_.store(
        shared_->tasks_done_.load(std::memory_order_relaxed) + 1,
        std::memory_order_relaxed);
  }
  const MethodEntry *e = r->method_;
  switch (r->origin_) {
    case TaskOrigin::kShm: {
      Task *shm = r->shm_task_.ptr_;
      // The private copy says whether it is fire-and-forget (a client could
      // flip the shared flag). The shared state word is not read before the
      // final fetch_or below: the submitter spins on its line, and every
      // extra access would move that line between the two cores once more.
      // An abandoned task learns so from that fetch_or.
      if (t->IsFireAndForget()) {
        if (t->rc_ != 0) {
          HSHM_LOG_LIMITED("chimaera: fire-and-forget task failed: %s\n",
                           t->GetStatus().ToString().c_str());
        }
        // Nobody will read its results: free what the method returned.
        FieldArchive fr(FieldArchive::Mode::kFreeOut, t);
        e->fields(fr, t);
        FreeOwnedInputs(e, t, r->shm_task_.shm_);
        if (!t->err_.IsNull()) (void)ipc_->FreeBuffer(t->err_);
        t->err_ = hipc::Pointer::GetNull();
        HSHM_TSAN_RELEASE(
            TsanKey(shm));  // the block leaves this process (tsan.h)
        FreeShmTask(r->shm_task_, e);
        CountDownLater(r->group_);
        break;
      }
      // What the method returned becomes the submitter's: tag it with the
      // submitter's pid so the reaper frees it if that process dies.
      if (e->has_fields) {
        FieldArchive copy(FieldArchive::Mode::kCopyOut, t);
        copy.set_dst(shm);
        copy.set_owner_of(r->shm_task_.shm_);
        e->fields(copy, t);
      }
      shm->rc_ = t->rc_;
      hipc::Pointer err = t->err_;
      if (!err.IsNull()) {
        ipc_->SetBufferOwner(err, ipc_->BufferOwner(r->shm_task_.shm_));
      }
      shm->err_ = err;  // the submitter frees it with the task
      t->err_ = hipc::Pointer::GetNull();
      shm->run_count_ = t->run_count_;
      // seq_cst: pairs with a napping worker's count; fence; re-check.
      u32 prev = shm->state_.fetch_or(kTaskComplete, std::memory_order_seq_cst);
      // The task leaves this process: released after our last access (only
      // bookkeeping; the block may already be the submitter's); see tsan.h.
      HSHM_TSAN_RELEASE(TsanKey(shm));
      WakeNappersFast();
      if (prev & kTaskAbandoned) {
        // Abandoned while we copied back: its outputs and the task are ours
        // to free (the private copy still names the same output buffers).
        HSHM_TSAN_ACQUIRE(TsanKey(shm));
        FieldArchive fr(FieldArchive::Mode::kFreeOut, t);
        e->fields(fr, t);
        FreeOwnedInputs(e, t, r->shm_task_.shm_);
        (void)ipc_->FreeBuffer(err);
        FreeShmTask(r->shm_task_, e);
        CountDownLater(r->group_);
        break;
      }
      if (prev & kTaskWaiterAsleep) hshm::FutexWake(&shm->state_, INT_MAX);
      // After the task is visibly complete: the group's waiter may read it.
      CountDownLater(r->group_);
      break;
    }
    case TaskOrigin::kRemote:
      if (r->reply_wanted_) {
        CHI_REMOTE->Reply(r, Status::Ok());
        net_staged_ = true;
      } else {
        FieldArchive fr(FieldArchive::Mode::kFreeOut, t);
        e->fields(fr, t);
      }
      if (!t->err_.IsNull()) (void)ipc_->FreeBuffer(t->err_);
      t->err_ = hipc::Pointer::GetNull();
      break;
    case TaskOrigin::kBcastPart:
      ReleaseDone(c);
      r->container_ = nullptr;
      if (r->parent_->worker_ != this) {
        // The part ran on another worker's container lane: the broadcast
        // belongs to its own worker, which merges.
        r->parent_->worker_->PostInbox(r);
        return;
      }
      MergePart(r);  // frees r
      return;
  }
  // The method entry (`e`, of the pool's prototype) is read last in
  // FreeRunContext: before the container leaves flight, since a destroy of
  // the pool waiting for that may free the prototype at once.
  FreeRunContext(r);
  // Last touch of the container: out of flight, and counted as completed.
  ReleaseDone(c);
}

namespace {
/** The shared-memory tasks of runtime-only methods that runtime fibers
 * vouched for (offsets in `main`); rare, so one lock. */
std::mutex g_vouch_mu;
std::unordered_set<u64> g_vouched;
}  // namespace

RuntimeOnlyVouch::RuntimeOnlyVouch(const hipc::Pointer &task) : task_(task) {
  std::lock_guard<std::mutex> lock(g_vouch_mu);
  g_vouched.insert(task_.off_.off_);
}

RuntimeOnlyVouch::~RuntimeOnlyVouch() {
  // Gone once admitted; otherwise (never admitted) it must not outlive the
  // block, which a client may get next.
  std::lock_guard<std::mutex> lock(g_vouch_mu);
  g_vouched.erase(task_.off_.off_);
}

bool RuntimeOnlyVouch::Take(const hipc::Pointer &task) {
  if (task.alloc_id_ != CHI_IPC->main_alloc()->GetId()) return false;
  std::lock_guard<std::mutex> lock(g_vouch_mu);
  return g_vouched.erase(task.off_.off_) == 1;
}

void Worker::AbortRemaining() {
  Status aborted = Status::Aborted("the runtime is stopping");
  TakeMailbox();
  for (auto &wl : cold_) lanes_.push_back(wl);
  cold_.clear();
  hipc::OffsetPointer off;
  for (auto &wl : lanes_) {
    if (wl.tlane) {
      // Retired first: a worker still running pushes into it no more (its
      // push fails the task instead of leaving it in a lane nobody drains).
      wl.tlane->flags_.fetch_or(kLaneRetired, std::memory_order_acq_rel);
      DrainRetired(wl);  // aborts what is queued, drops our hold
      continue;
    }
    // Held until each is failed (see PollLanes: the reaper watches
    // released()).
    while (wl.lane->TryPopHeld(&off)) {
      // The checks of AdmitShm: the runtime's own blocks (the process
      // queue, the worker table) are never tasks, whatever their bytes
      // say, and the header is read once, from a copy.
      hipc::Pointer p = CHI_IPC->TaskPointer(off);
      if (CHI_IPC->main_alloc()->LiveBlockSize(p) < sizeof(Task) ||
          CHI_IPC->IsRuntimeStructure(p)) {
        continue;
      }
      FullPtr<Task> t(p);
      HSHM_TSAN_ACQUIRE(TsanKey(t.ptr_));
      alignas(Task) char hdr_bytes[sizeof(Task)];
      CopyTaskBytes(hdr_bytes, t.ptr_, sizeof(Task));
      const Task &hdr = *reinterpret_cast<const Task *>(hdr_bytes);
      if (hdr.magic_ != kTaskMagic) continue;
      u32 unclaimed = 0;
      if (!t->claim_.compare_exchange_strong(unclaimed, kTaskAccepted,
                                             std::memory_order_acq_rel)) {
        continue;
      }
      u32 st = t->state_.load(std::memory_order_acquire);
      if (st & kTaskComplete) continue;
      GroupRef group;
      std::vector<hipc::Pointer> deps;
      if (!hdr.ext_.IsNull()) (void)LoadExt(hdr.ext_, &group, &deps);
      FailUnadmitted(t, aborted, hdr.IsFireAndForget() || (st & kTaskAbandoned),
                     group);
    }
    wl.lane->ReleaseHeld();
  }
  lanes_.clear();
  while (RunContext *r = inbox_.Pop()) {
    if (r->origin_ == TaskOrigin::kBcastPart && !r->net_) {
      MergePart(r);
      continue;
    }
    r->worker_ = this;
    if (r->net_ && r->net_->is_reply) {
      r->net_->failure = aborted;
      ApplyReply(r);
    } else {
      FreeRunContext(r);  // the sender learns of our death by heartbeat
    }
  }
  for (RunContext *r : periodic_) Complete(r, aborted);
  periodic_.clear();
  for (RunContext *r : dep_wait_) Complete(r, aborted);
  dep_wait_.clear();
  for (RunContext *r : held_) {
    r->container_->held_.fetch_sub(1, std::memory_order_seq_cst);
    Complete(r, aborted);
  }
  held_.clear();
  // Fibers still blocked past the deadline cannot be unwound safely: their
  // submitters are told, and the fibers (with their private tasks) are
  // abandoned with the process.
  for (RunContext *r : blocked_) {
    // The flags and group as admitted (the client's block may say
    // otherwise by now).
    if (r->origin_ == TaskOrigin::kShm && !r->task_->IsFireAndForget()) {
      FailUnadmitted(r->shm_task_, aborted, false, r->group_);
    }
    if (r->container_) PoolManager::Release(r->container_);
  }
  if (!blocked_.empty()) {
    fprintf(stderr, "chimaera: worker %u abandoned %zu blocked tasks\n", id_,
            blocked_.size());
  }
  blocked_.clear();
  if (CHI_REMOTE->HasStaged(id_)) CHI_REMOTE->Flush(id_);
}

}  // namespace chi
