// Task dependencies, task groups and wait policies (see task_graph.h).
// Compiled into both libraries: inside a runtime task fiber, a group wait
// yields the fiber instead of blocking the worker.
#include "chimaera/task_graph.h"

#include <climits>
#include <cstring>

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
  if (task->ext_.IsNull()) return nullptr;
  u64 size = CHI_IPC->main_alloc()->LiveBlockSize(task->ext_);
  if (size < sizeof(TaskExt)) return nullptr;
  auto *ext = reinterpret_cast<TaskExt *>(hipc::ToProcessAddress(task->ext_));
  if (!ext || ext->magic_ != kTaskExtMagic ||
      TaskExt::Size(ext->num_deps_) > size) {
    return nullptr;
  }
  return ext;
}

/** Gives `task` an extension with room for `num_deps` predecessors that
 * keeps its group; frees the old one. Null (task unchanged) when `main` is
 * full. */
TaskExt *ResizeExt(Task *task, u32 num_deps) {
  TaskExt *old = OwnExt(task);
  FullPtr<char> mem =
      CHI_IPC->main_alloc()->Allocate(HSHM_MCTX, TaskExt::Size(num_deps));
  if (mem.IsNull()) return nullptr;
  auto *ext = new (mem.ptr_) TaskExt();
  ext->num_deps_ = num_deps;
  for (u32 i = 0; i < num_deps; ++i) {
    new (&ext->deps()[i]) hipc::Pointer(hipc::Pointer::GetNull());
  }
  if (old) ext->group_ = old->group_;
  internal::FreeTaskExt(task);
  task->ext_ = mem.shm_;
  return ext;
}

}  // namespace

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
  std::vector<hipc::Pointer> ptrs;
  ptrs.reserve(preds.size());
  for (Task *p : preds) {
    if (!p) return Status::InvalidArgument("a predecessor is null");
    if (p == task)
      return Status::InvalidArgument("a task cannot follow itself");
    hipc::Pointer ptr = CHI_IPC->main_alloc()->ToPointer(p);
    if (ptr.IsNull()) {
      return Status::InvalidArgument("a predecessor is not a task of main");
    }
    ptrs.push_back(ptr);
  }
  TaskExt *ext = ResizeExt(task, static_cast<u32>(ptrs.size()));
  if (!ext) return Status::OutOfMemory("main segment is full");
  for (size_t i = 0; i < ptrs.size(); ++i) ext->deps()[i] = ptrs[i];
  return Status::Ok();
}

TaskGroup::TaskGroup() {
  shm_ = CHI_IPC->main_alloc()->NewObj<TaskGroupShm>(HSHM_MCTX);
  status_ = shm_.IsNull() ? Status::OutOfMemory("main segment is full")
                          : Status::Ok();
}

TaskGroup::~TaskGroup() {
  if (!shm_.IsNull()) {
    shm_->magic_ = 0;  // a late member's count-down finds no group
    (void)CHI_IPC->main_alloc()->DelObj(HSHM_MCTX, shm_);
  }
}

Status TaskGroup::Add(Task *task) {
  if (shm_.IsNull()) return status_;
  TaskExt *ext = OwnExt(task);
  if (!ext) {
    ext = ResizeExt(task, 0);
    if (!ext) return Status::OutOfMemory("main segment is full");
  }
  ext->group_ = shm_.shm_;
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
    if (now >= deadline) {
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

void CountDownGroup(const hipc::Pointer &group) {
  if (group.IsNull()) return;
  // The group is client memory: check it is still a live group block.
  if (CHI_IPC->main_alloc()->LiveBlockSize(group) < sizeof(TaskGroupShm)) {
    return;
  }
  auto *g = reinterpret_cast<TaskGroupShm *>(hipc::ToProcessAddress(group));
  if (!g || g->magic_ != kTaskGroupMagic) return;
  u32 d = g->done_.fetch_add(1, std::memory_order_seq_cst) + 1;
  // Only the completion that reaches the published target wakes anyone.
  if (d != g->target_.load(std::memory_order_seq_cst)) return;
  if (g->waiter_asleep_.load(std::memory_order_seq_cst)) {
    hshm::FutexWake(&g->done_, INT_MAX);
  }
#if CHIMAERA_RUNTIME
  Worker::WakeNappers();  // a fiber may wait on the group
#endif
}

hipc::Pointer TaskGroupOf(Task *task) {
  TaskExt *ext = OwnExt(task);
  return ext ? ext->group_ : hipc::Pointer::GetNull();
}

void FreeTaskExt(Task *task) {
  if (task->ext_.IsNull()) return;
  hipc::Pointer ext = task->ext_;
  task->ext_ = hipc::Pointer::GetNull();
  if (ext.alloc_id_ == CHI_IPC->main_alloc()->GetId()) {
    (void)CHI_IPC->main_alloc()->Free(HSHM_MCTX, ext);
  }
}

}  // namespace internal

}  // namespace chi
