// Task dependencies, task groups and wait policies (see task_graph.h).
// Compiled into both libraries: inside a runtime task fiber, a group wait
// yields the fiber instead of blocking the worker.
#include "chimaera/task_graph.h"

#include <pthread.h>
#include <unistd.h>

#include <climits>
#include <cstring>
#include <mutex>

#include "hermes_shm/memory/memory_manager.h"
#include "hermes_shm/thread_model.h"
#include "hermes_shm/util/futex.h"
#if CHIMAERA_RUNTIME
#include "chimaera/worker.h"
#endif

namespace chi {

namespace {

/** The calling thread's wait policy. */
thread_local WaitPolicy tls_wait_policy;

/** Longest single futex sleep of a group wait; liveness is re-checked after
 * each. */
constexpr u64 kSleepSliceUs = 20000;

/** `task`'s extension block if it has a valid one of this process (the
 * submitter's own memory), else null. */
TaskExt *OwnExt(Task *task) {
  const hipc::Pointer p = task->ext_;  // checked and used: one read
  if (p.IsNull()) return nullptr;
  u64 size = CHI_IPC->main_alloc()->LiveBlockSize(p);
  if (size < sizeof(TaskExt)) return nullptr;
  auto *ext = reinterpret_cast<TaskExt *>(hipc::ToProcessAddress(p));
  if (!ext || ext->magic_ != kTaskExtMagic ||
      TaskExt::Size(ext->num_deps_) > size) {
    return nullptr;
  }
  return ext;
}

/** Extensions naming at most this many predecessors (and group-only ones)
 * all get blocks of one size, which a thread keeps for reuse (ExtCache). */
constexpr u32 kCachedDeps = 4;
/** Blocks a thread keeps at most. */
constexpr u32 kExtCacheCapacity = 256;

/** Bumped in the child after fork(): a thread's kept blocks are then the
 * parent's (ExtCache). */
std::atomic<u64> g_fork_epoch{0};

/** Installs the fork handler when the library loads. */
struct ExtForkHandler {
  ExtForkHandler() {
    pthread_atfork(nullptr, nullptr, [] {
      g_fork_epoch.fetch_add(1, std::memory_order_relaxed);
    });
  }
};
ExtForkHandler g_ext_fork_handler;

/** Extension blocks a thread freed with their tasks, kept (still live,
 * owned by this process) for the next extension it makes. Freeing a block
 * takes a locked RMW on its header, a line the runtime read when it admitted
 * the task (so it sits in another core's cache), and allocating one writes
 * that header again: both were large parts of what a task with dependencies
 * cost its submitter. Kept blocks are valid only for the allocator object,
 * attach generation and process they were kept in; after any change they
 * are forgotten, never touched. Per thread; no locking. */
class ExtCache {
 public:
  /** Usable bytes of every cached block (what Allocate gives for an
   * extension of kCachedDeps predecessors). */
  static u64 BlockBytes() {
    using Heap = hipc::HeapAllocator;
    static const u64 bytes =
        Heap::ClassSize(Heap::ClassOf(TaskExt::Size(kCachedDeps) +
                                      Heap::kBlockHeaderSize)) -
        Heap::kBlockHeaderSize;
    return bytes;
  }

  /** A kept block (or a new one) of BlockBytes(); null if `main` is full. */
  FullPtr<char> Take() {
    auto *alloc = CHI_IPC->main_alloc();
    if (Valid(alloc) && n_ > 0) {
      // The next kept block was last read by a runtime worker: fetch it
      // for the next call's writes (see ThreadLocalAllocator::Allocate).
      if (n_ > 1) {
        hshm::PrefetchForWrite(hipc::ToProcessAddress(blocks_[n_ - 2]));
      }
      return FullPtr<char>(blocks_[--n_]);
    }
    return alloc->Allocate(HSHM_MCTX, TaskExt::Size(kCachedDeps));
  }

  /** Keeps `ext` if it is a block of this process of BlockBytes() and
   * there is room; else frees it. */
  void Give(const hipc::Pointer &ext) {
    auto *alloc = CHI_IPC->main_alloc();
    if (!Valid(alloc)) Bind(alloc);
    if (n_ < kExtCacheCapacity && alloc->LiveBlockSize(ext) == BlockBytes() &&
        alloc->BlockOwner(ext) == pid_) {
      blocks_[n_++] = ext;
      return;
    }
    (void)alloc->Free(HSHM_MCTX, ext);
  }

  /** Thread exit: frees the kept blocks, straight to the shared heap (the
   * allocator's own thread cache may be gone already), if their allocator
   * is still the one attached (so still mapped). */
  ~ExtCache() {
    if (n_ == 0 || !alloc_) return;
    hipc::MemoryManager *mm = HSHM_MEMORY_MANAGER;
    std::lock_guard<std::mutex> lock(mm->mutex());
    void *live = hipc::internal::g_allocator_table[major_].alloc.load(
        std::memory_order_acquire);
    if (live != alloc_ || alloc_->generation() != generation_ ||
        fork_epoch_ != g_fork_epoch.load(std::memory_order_relaxed)) {
      return;
    }
    for (u32 i = 0; i < n_; ++i) {
      (void)alloc_->heap().Free(HSHM_MCTX, blocks_[i]);
    }
  }

 private:
  /** True if the kept blocks belong to `alloc` as attached now, in this
   * process. */
  bool Valid(const CHI_MAIN_ALLOC_T *alloc) const {
    return alloc == alloc_ && alloc->generation() == generation_ &&
           fork_epoch_ == g_fork_epoch.load(std::memory_order_relaxed);
  }
  /** Forgets the kept blocks (not ours to touch any more) and binds to
   * `alloc`. */
  void Bind(CHI_MAIN_ALLOC_T *alloc) {
    n_ = 0;
    alloc_ = alloc;
    major_ = alloc->GetId().major_;
    generation_ = alloc->generation();
    fork_epoch_ = g_fork_epoch.load(std::memory_order_relaxed);
    pid_ = static_cast<int>(getpid());
  }

  CHI_MAIN_ALLOC_T *alloc_ = nullptr;
  u32 major_ = 0;
  u64 generation_ = 0;
  u64 fork_epoch_ = 0;
  int pid_ = 0;
  u32 n_ = 0;
  hipc::Pointer blocks_[kExtCacheCapacity];
};

thread_local ExtCache tls_ext_cache;

/** Gives `task` an extension with room for `num_deps` predecessors that
 * keeps its group; frees the old one. Null (task unchanged) when `main` is
 * full. */
TaskExt *ResizeExt(Task *task, u32 num_deps) {
  TaskExt *old = OwnExt(task);
  FullPtr<char> mem =
      num_deps <= kCachedDeps
          ? tls_ext_cache.Take()
          : CHI_IPC->main_alloc()->Allocate(HSHM_MCTX, TaskExt::Size(num_deps));
  if (mem.IsNull()) return nullptr;
  auto *ext = new (mem.ptr_) TaskExt();
  ext->num_deps_ = num_deps;
  for (u32 i = 0; i < num_deps; ++i) {
    new (&ext->deps()[i]) hipc::Pointer(hipc::Pointer::GetNull());
  }
  if (old) {
    ext->group_ = old->group_;
    ext->group_gen_ = old->group_gen_;
  }
  internal::FreeTaskExt(task);
  task->ext_ = mem.shm_;
  return ext;
}

}  // namespace

namespace {
/** The calling thread's WaitInterruptFn and its argument (null: none). */
thread_local WaitInterruptFn tls_interrupt_fn = nullptr;
thread_local void *tls_interrupt_arg = nullptr;
}  // namespace

ScopedWaitInterrupt::ScopedWaitInterrupt(WaitInterruptFn fn, void *arg)
    : prev_fn_(tls_interrupt_fn), prev_arg_(tls_interrupt_arg) {
  tls_interrupt_fn = fn;
  tls_interrupt_arg = arg;
}

ScopedWaitInterrupt::~ScopedWaitInterrupt() {
  tls_interrupt_fn = prev_fn_;
  tls_interrupt_arg = prev_arg_;
}

namespace internal {
bool WaitInterrupted() {
  return tls_interrupt_fn && tls_interrupt_fn(tls_interrupt_arg);
}
}  // namespace internal

WaitPolicy GetThreadWaitPolicy() { return tls_wait_policy; }

WaitPolicy SetThreadWaitPolicy(const WaitPolicy &policy) {
  WaitPolicy prev = tls_wait_policy;
  tls_wait_policy = policy;
  return prev;
}

Status SetDependencies(Task *task, const std::vector<Task *> &preds) {
  if (preds.size() > kMaxTaskDeps) {
    return Status::InvalidArgument(
        "a task may name at most " + std::to_string(kMaxTaskDeps) +
        " predecessors, not " + std::to_string(preds.size()));
  }
  // Checked first (the task is left unchanged on an error), then converted
  // again into the extension: no temporary (a heap allocation per call).
  auto *alloc = CHI_IPC->main_alloc();
  for (Task *p : preds) {
    if (!p) return Status::InvalidArgument("a predecessor is null");
    if (p == task)
      return Status::InvalidArgument("a task cannot follow itself");
    if (alloc->ToPointer(p).IsNull()) {
      return Status::InvalidArgument("a predecessor is not a task of main");
    }
  }
  TaskExt *ext = ResizeExt(task, static_cast<u32>(preds.size()));
  if (!ext) return Status::OutOfMemory("main segment is full");
  for (size_t i = 0; i < preds.size(); ++i) {
    ext->deps()[i] = alloc->ToPointer(preds[i]);
  }
  return Status::Ok();
}

namespace {
/** A new group incarnation (TaskGroupShm::gen_): never 0, distinct within
 * this process until 2^32 groups, and across processes by the seed. Any
 * thread. */
u32 NextGroupGen() {
  static std::atomic<u32> next{
      static_cast<u32>(hshm::NowNs() ^ (static_cast<u64>(getpid()) << 20))};
  u32 gen;
  do {
    gen = next.fetch_add(1, std::memory_order_relaxed);
  } while (gen == 0);
  return gen;
}
}  // namespace

TaskGroup::TaskGroup() {
  shm_ = CHI_IPC->main_alloc()->NewObj<TaskGroupShm>(HSHM_MCTX);
  status_ = shm_.IsNull() ? Status::OutOfMemory("main segment is full")
                          : Status::Ok();
  if (!shm_.IsNull()) shm_->gen_ = NextGroupGen();
}

TaskGroup::~TaskGroup() {
  // After ClientFinalize its block is no longer mapped (and was the
  // process's own, reaped with it).
  if (shm_.IsNull() || !CHI_IPC->initialized()) return;
  shm_->magic_ = 0;  // a late member's count-down finds no group
  // A worker that checked the group's magic and generation just before may
  // still add its count: were the block freed, the next group made in it
  // (the thread cache hands it out at once) could take that count and
  // return early. Kept, the block takes it harmlessly; in a client the
  // reaper frees it when the process exits, in the runtime it stays until
  // the runtime restarts. Only after a wait that gave up, or with a member
  // added and never sent.
  if (pending() != 0) return;
  (void)CHI_IPC->main_alloc()->DelObj(HSHM_MCTX, shm_);
}

Status TaskGroup::Add(Task *task) {
  if (shm_.IsNull()) return status_;
  TaskExt *ext = OwnExt(task);
  // A member not sent since it joined is counted once (a second count would
  // never come down) and stays in its group. One that completed since (it
  // is being sent again) was counted down already: it joins afresh.
  if (ext && !ext->group_.IsNull() && !task->IsComplete()) {
    if (ext->group_ == shm_.shm_ && ext->group_gen_ == shm_->gen_) {
      return Status::Ok();
    }
    return Status::InvalidArgument(
        "the task is in another group already (a task counts in one group)");
  }
  if (!ext) {
    ext = ResizeExt(task, 0);
    if (!ext) return Status::OutOfMemory("main segment is full");
  }
  ext->group_ = shm_.shm_;
  ext->group_gen_ = shm_->gen_;
  ++added_;  // private: nothing shared is written per member
  return Status::Ok();
}

u32 TaskGroup::pending() const {
  if (shm_.IsNull()) return 0;
  i32 left =
      static_cast<i32>(added_ - shm_->done_.load(std::memory_order_acquire));
  return left > 0 ? static_cast<u32>(left) : 0;
}

bool TaskGroup::WaitFor(u64 timeout_us) {
  if (shm_.IsNull()) return true;
  std::atomic<u32> &done = shm_->done_;
  const u32 target = added_;
  auto reached = [&] {
    return GroupReached(done.load(std::memory_order_acquire), target);
  };
  if (reached()) return true;
  // Completions that reach target_ wake the waiter (or a napping worker).
  shm_->target_.store(target, std::memory_order_seq_cst);
  u64 start = hshm::NowNs();
  u64 deadline =
      timeout_us < (1ull << 40) ? start + timeout_us * 1000 : UINT64_MAX;
#if CHIMAERA_RUNTIME
  if (RunContext *rctx = Worker::CurrentRunContext()) {
    // Inside a task: park the fiber; the worker resumes it once the count
    // reaches the target or the deadline passes.
    while (!reached()) {
      if (hshm::NowNs() >= deadline) break;
      rctx->waiting_group_ = &done;
      rctx->waiting_target_ = target;
      rctx->wait_deadline_ns_ = deadline;
      rctx->Yield();
    }
    rctx->waiting_group_ = nullptr;
    rctx->wait_deadline_ns_ = UINT64_MAX;
    return reached();
  }
#endif
  if (internal::SpinPhase(reached)) return true;
  for (;;) {
    // Dekker with the completion's fetch_add; load of waiter_asleep_.
    shm_->waiter_asleep_.store(1, std::memory_order_seq_cst);
    u32 d = done.load(std::memory_order_seq_cst);
    if (GroupReached(d, target)) break;
    u64 now = hshm::NowNs();
    // A wait with a deadline may be interrupted (Wait()'s callers expect
    // every member complete after it).
    if (now >= deadline ||
        (deadline != UINT64_MAX && internal::WaitInterrupted())) {
      shm_->waiter_asleep_.store(0, std::memory_order_relaxed);
      return false;
    }
    u64 slice = kSleepSliceUs;
    if (deadline != UINT64_MAX)
      slice = std::min(slice, (deadline - now) / 1000 + 1);
    hshm::FutexWait(&done, d, slice);
    if (!reached() && !CHI_IPC->CheckRuntimeAlive().ok()) {
      shm_->waiter_asleep_.store(0, std::memory_order_relaxed);
      return false;  // nobody will count the rest
    }
  }
  shm_->waiter_asleep_.store(0, std::memory_order_relaxed);
  return true;
}

namespace internal {

void CountDownGroup(const GroupRef &group, u32 n) {
  if (group.IsNull() || n == 0) return;
  // The group is client memory: check it is still a live group block, and
  // still the group the members joined (not a new one in the same block).
  if (CHI_IPC->main_alloc()->LiveBlockSize(group.ptr) < sizeof(TaskGroupShm)) {
    return;
  }
  auto *g = reinterpret_cast<TaskGroupShm *>(hipc::ToProcessAddress(group.ptr));
  if (!g || g->magic_ != kTaskGroupMagic || g->gen_ != group.gen) return;
  u32 before = g->done_.fetch_add(n, std::memory_order_seq_cst);
  // Only the call that reaches the published target wakes anyone.
  if (!GroupCrossed(before, n, g->target_.load(std::memory_order_seq_cst))) {
    return;
  }
  if (g->waiter_asleep_.load(std::memory_order_seq_cst)) {
    hshm::FutexWake(&g->done_, INT_MAX);
  }
#if CHIMAERA_RUNTIME
  Worker::WakeNappers();  // a fiber may wait on the group
#endif
}

GroupRef TaskGroupOf(Task *task) {
  TaskExt *ext = OwnExt(task);
  return ext ? GroupRef{ext->group_, ext->group_gen_} : GroupRef();
}

void FreeTaskExt(Task *task) {
  const hipc::Pointer ext = task->ext_;
  if (ext.IsNull()) return;
  task->ext_ = hipc::Pointer::GetNull();
  FreeTaskExtBlock(ext);
}

void FreeTaskExtBlock(const hipc::Pointer &ext) {
  if (ext.alloc_id_ == CHI_IPC->main_alloc()->GetId()) {
    tls_ext_cache.Give(ext);
  }
}

}  // namespace internal

}  // namespace chi
