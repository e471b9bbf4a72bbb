// Waiting for and completing tasks. Compiled into both libraries: in the
// runtime, a wait from inside a task fiber yields the fiber instead of
// blocking the worker.
#include "chimaera/task.h"

#include <climits>

#include "chimaera/ipc_manager.h"
#include "hermes_shm/thread_model.h"
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

/** How long a waiter polls with pauses: a usual round trip is shorter. */
constexpr u64 kPauseSpinNs = 5000;
/** How long a waiter polls in all before it sleeps on the futex; past
 * kPauseSpinNs it yields the core between rounds of polls, so a runtime
 * worker that shares this core (threads outnumber cores) runs at once. A
 * futex sleep costs a wake-up (tens of microseconds on some VMs). */
constexpr u64 kSpinNs = 50000;
/** Longest single futex sleep; liveness is re-checked after each. */
constexpr u64 kSleepSliceUs = 20000;

/** Waits like a client: spin, then sleep on the task's futex word. Completes
 * the task with Unavailable if the runtime is declared dead (its process is
 * gone or its pid reused, or its heartbeat is silent past
 * client.runtime_stale_ms). */
bool BlockingWait(Task *task, u64 timeout_us) {
  // Poll for kSpinNs (a pause costs 10-150 cycles depending on the CPU, so
  // the budget is time, checked every 64 pauses or after each yield).
  u64 start = hshm::NowNs();
  bool yield = false;
  for (u32 i = 1;; ++i) {
    if (task->IsComplete()) return true;
    if (yield) {
      HSHM_THREAD_MODEL->Yield();
    } else {
      hshm::CpuRelax();
    }
    if (yield || (i & 63) == 0) {
      u64 spun = hshm::NowNs() - start;
      if (spun > kSpinNs) break;
      yield = spun > kPauseSpinNs;
    }
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
    Status alive = CHI_IPC->CheckRuntimeAlive();
    if (!alive.ok()) {
      // Nobody will complete this task.
      CompleteTask(task, alive);
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
#endif
  return BlockingWait(task, timeout_us);
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
  SetTaskStatus(task, status);
  u32 prev = task->state_.fetch_or(kTaskComplete, std::memory_order_seq_cst);
#if CHIMAERA_RUNTIME
  Worker::WakeNappers();  // a fiber may wait on it
#endif
  if (prev & kTaskWaiterAsleep) hshm::FutexWake(&task->state_, INT_MAX);
}

}  // namespace internal

}  // namespace chi
