// Waiting for and completing tasks. Compiled into both libraries: in the
// runtime, a wait from inside a task fiber yields the fiber instead of
// blocking the worker.
#include "chimaera/task.h"

#include <climits>

#include "chimaera/ipc_manager.h"
#include "hermes_shm/util/futex.h"
#if CHIMAERA_RUNTIME
#include "chimaera/worker.h"
#endif

namespace chi {

std::string PoolId::ToString() const {
  return std::to_string(node_id_) + "." + std::to_string(unique_);
}

namespace internal {

namespace {

/** How long a waiter polls before it sleeps on the futex. */
constexpr u64 kSpinNs = 20000;
/** Longest single futex sleep; liveness is re-checked after each. */
constexpr u64 kSleepSliceUs = 20000;

/** Waits like a client: spin, then sleep on the task's futex word. Completes
 * the task with Unavailable if the runtime process disappears. */
bool BlockingWait(Task *task, u64 timeout_us) {
  // Poll for kSpinNs (a pause costs 10-150 cycles depending on the CPU, so
  // the budget is time, checked every 64 polls, not a count).
  u64 start = hshm::NowNs();
  for (u32 i = 1;; ++i) {
    if (task->IsComplete()) return true;
    hshm::CpuRelax();
    if ((i & 63) == 0 && hshm::NowNs() - start > kSpinNs) break;
  }
  start = hshm::NowNs();
  for (;;) {
    u32 prev =
        task->state_.fetch_or(kTaskWaiterAsleep, std::memory_order_acq_rel);
    if (prev & kTaskComplete) return true;
    u64 waited_us = (hshm::NowNs() - start) / 1000;
    if (timeout_us != UINT64_MAX && waited_us >= timeout_us) return false;
    u64 slice = kSleepSliceUs;
    if (timeout_us != UINT64_MAX)
      slice = std::min(slice, timeout_us - waited_us);
    hshm::FutexWait(&task->state_, prev | kTaskWaiterAsleep, slice);
    if (task->IsComplete()) return true;
    if (!CHI_IPC->RuntimeProcessAlive()) {
      // The runtime process is gone: nobody will complete this task.
      CompleteTask(task, Status::Unavailable(
                             "the Chimaera runtime exited before the task "
                             "completed"));
      return true;
    }
  }
}

}  // namespace

void WaitTask(Task *task) { (void)WaitTaskFor(task, UINT64_MAX); }

bool WaitTaskFor(Task *task, u64 timeout_us) {
  if (task->IsComplete()) return true;
#if CHIMAERA_RUNTIME
  RunContext *rctx = Worker::CurrentRunContext();
  if (rctx) {
    u64 start = hshm::NowNs();
    while (!task->IsComplete()) {
      if (timeout_us != UINT64_MAX &&
          (hshm::NowNs() - start) / 1000 >= timeout_us) {
        rctx->waiting_on_ = nullptr;
        return false;
      }
      rctx->waiting_on_ = timeout_us == UINT64_MAX ? task : nullptr;
      rctx->Yield();
    }
    rctx->waiting_on_ = nullptr;
    return true;
  }
#endif
  return BlockingWait(task, timeout_us);
}

void SetTaskStatus(Task *task, const Status &status) {
  task->rc_ = static_cast<u32>(status.code());
  if (!status.ok()) CHI_IPC->SetTaskError(task, status.message());
}

void CompleteTask(Task *task, const Status &status) {
  SetTaskStatus(task, status);
  u32 prev = task->state_.fetch_or(kTaskComplete, std::memory_order_acq_rel);
  if (prev & kTaskWaiterAsleep) hshm::FutexWake(&task->state_, INT_MAX);
}

}  // namespace internal

}  // namespace chi
