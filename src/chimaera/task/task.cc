// Waiting for and completing tasks. Compiled into both libraries: in the
// runtime, a wait from inside a task fiber yields the fiber instead of
// blocking the worker.
#include "chimaera/task.h"

#include <chrono>
#include <climits>
#include <thread>

#include "chimaera/ipc_manager.h"
#include "chimaera/task_graph.h"
#include "hermes_shm/thread_model.h"
#include "hermes_shm/util/futex.h"
#if CHIMAERA_RUNTIME
#include "chimaera/worker.h"
#endif

namespace chi {

std::string PoolId::ToString() const {
  return std::to_string(node_id_) + "." + std::to_string(unique_);
}

void SleepUs(u64 us) {
#if CHIMAERA_RUNTIME
  RunContext *rctx = Worker::CurrentRunContext();
  if (rctx) {
    u64 deadline = hshm::NowNs() + us * 1000;
    rctx->sleeping_ = true;
    rctx->wait_deadline_ns_ = deadline;
    while (hshm::NowNs() < deadline) rctx->Yield();
    rctx->sleeping_ = false;
    rctx->wait_deadline_ns_ = UINT64_MAX;
    return;
  }
  // A kNeverWaits method that sleeps holds its worker for that long.
  if (Worker::RunningContext()) Worker::NoteWaitWithoutFiber();
#endif
  std::this_thread::sleep_for(std::chrono::microseconds(us));
}

namespace internal {

namespace {

/** Longest single futex sleep; liveness is re-checked after each. */
constexpr u64 kSleepSliceUs = 20000;
/** How long a client that completes a task for a dead or stopped runtime
 * waits for a heap lock (to store the error text) before keeping the text
 * in process memory. */
constexpr u64 kDeadRuntimeHeapWaitMs = 20;

/** Waits like a client: spin, then sleep on the task's futex word. Completes
 * the task with Unavailable if the runtime is declared dead (its process is
 * gone or its pid reused, or its heartbeat is silent past
 * client.runtime_stale_ms). */
bool BlockingWait(Task *task, u64 timeout_us) {
  // The thread's WaitPolicy (task_graph.h): by default 5 us of pauses (a
  // usual round trip is shorter), then yields up to 50 us, so a runtime
  // worker that shares this core (threads outnumber cores) runs at once,
  // and a futex wake-up (tens of microseconds on some VMs) is paid only by
  // long tasks.
  if (SpinPhase([task] { return task->IsComplete(); })) return true;
  u64 start = hshm::NowNs();
  for (;;) {
    u32 prev =
        task->state_.fetch_or(kTaskWaiterAsleep, std::memory_order_acq_rel);
    if (prev & kTaskComplete) return true;
    u64 waited_us = (hshm::NowNs() - start) / 1000;
    if (timeout_us != UINT64_MAX && waited_us >= timeout_us) return false;
    // Only a wait that may time out may be interrupted: its caller handles
    // an incomplete task (Task::Wait's callers read and free it after).
    if (timeout_us != UINT64_MAX && internal::WaitInterrupted()) return false;
    u64 slice = kSleepSliceUs;
    if (timeout_us != UINT64_MAX)
      slice = std::min(slice, timeout_us - waited_us);
    hshm::FutexWait(&task->state_, prev | kTaskWaiterAsleep, slice);
    if (task->IsComplete()) return true;
    Status alive = CHI_IPC->CheckRuntimeAlive();
    if (!alive.ok()) {
      // Nobody will complete this task. A stopped runtime may hold a heap
      // lock for good: wait for it briefly (the error text then stays in
      // this process).
      hipc::HeapLockWaitLimit bound(kDeadRuntimeHeapWaitMs);
      CompleteTask(task, alive);
      return true;
    }
  }
}

/** For a client thread whose task just completed, before it reads and
 * frees it: starts fetching, for writing, the task block's lines, which the
 * worker wrote last and this thread writes next (the free writes the block
 * header; the thread's next task of the same size is built in the same
 * block, its cache being last in, first out), so that their transfers
 * overlap instead of each stalling the free or the build in turn. Only
 * hints. (Prefetching the slot of the next Send as well cost a TLS lookup
 * and made the fast-state sync round trip slower.) */
HSHM_INLINE void PrefetchForNextTask(Task *task) {
#if !CHIMAERA_RUNTIME
  static_assert(sizeof(Task) <= 176, "four prefetches cover the header");
  const char *b = reinterpret_cast<const char *>(task);
  hshm::PrefetchForWrite(b - hipc::HeapAllocator::kBlockHeaderSize);
  hshm::PrefetchForWrite(b + 48);
  hshm::PrefetchForWrite(b + 112);
  hshm::PrefetchForWrite(b + sizeof(Task) - 1);
#else
  (void)task;
#endif
}

}  // namespace

TaskNode SubtaskNode() {
#if CHIMAERA_RUNTIME
  RunContext *rctx = Worker::RunningContext();
  if (rctx && rctx->task_) return rctx->task_->task_node_.Child();
#endif
  return CHI_IPC->NewTaskNode();
}

void WaitTask(Task *task) { (void)WaitTaskFor(task, UINT64_MAX); }

bool WaitTaskFor(Task *task, u64 timeout_us) {
  if (task->IsComplete()) {
    PrefetchForNextTask(task);
    return true;
  }
#if CHIMAERA_RUNTIME
  RunContext *rctx = Worker::CurrentRunContext();
  if (rctx) {
    // The worker resumes the fiber once the task completes or the deadline
    // passes (it checks both while the fiber is parked; no busy resuming).
    u64 deadline = UINT64_MAX;
    if (timeout_us < (1ull << 40)) deadline = hshm::NowNs() + timeout_us * 1000;
    while (!task->IsComplete()) {
      if (deadline != UINT64_MAX && hshm::NowNs() >= deadline) break;
      rctx->waiting_on_ = task;
      rctx->wait_deadline_ns_ = deadline;
      rctx->Yield();
    }
    rctx->waiting_on_ = nullptr;
    rctx->wait_deadline_ns_ = UINT64_MAX;
    return task->IsComplete();
  }
  if (Worker::RunningContext()) {
    // A method that declared kNeverWaits runs on its worker's own stack: a
    // wait here would hold every lane of the worker (the awaited task may
    // be behind it). A timed wait fails at once; an untimed one, whose
    // caller reads the task after it, still blocks.
    Worker::NoteWaitWithoutFiber();
    if (timeout_us != UINT64_MAX) return false;
  }
#endif
  if (!BlockingWait(task, timeout_us)) return false;
  PrefetchForNextTask(task);
  return true;
}

bool AbandonTask(Task *task) {
  u32 prev = task->state_.fetch_or(kTaskAbandoned | kTaskStopRequested,
                                   std::memory_order_acq_rel);
  return prev & kTaskComplete;
}

void SetTaskStatus(Task *task, const Status &status) {
  task->rc_ = static_cast<u32>(status.code());
  if (!status.ok()) CHI_IPC->SetTaskError(task, status.message());
}

void CompleteTask(Task *task, const Status &status) {
  // Read before the task is marked complete (its waiter may free it then).
  GroupRef group = TaskGroupOf(task);
  SetTaskStatus(task, status);
  u32 prev = task->state_.fetch_or(kTaskComplete, std::memory_order_seq_cst);
#if CHIMAERA_RUNTIME
  Worker::WakeNappers();  // a fiber may wait on it
#endif
  if (prev & kTaskWaiterAsleep) hshm::FutexWake(&task->state_, INT_MAX);
  CountDownGroup(group);
}

}  // namespace internal

}  // namespace chi
