// Helpers for ChiMod client classes: submit a task, wait for it, free it.
#ifndef CHIMAERA_CLIENT_UTIL_H_
#define CHIMAERA_CLIENT_UTIL_H_

#include <initializer_list>

#include "chimaera/ipc_manager.h"
#include "chimaera/task_graph.h"
#include "hermes_shm/util/log_limit.h"

namespace chi {

/** Sets the deadline of synchronous calls made by this thread while it
 * lives (nesting restores the outer one). 0 means the configured default.
 * Inside a runtime method it is the method's fiber's own (RunContext::Yield
 * keeps it while the fiber is suspended). */
class ScopedTaskTimeout {
 public:
  explicit ScopedTaskTimeout(u64 timeout_ms)
      : prev_(IpcManager::SetThreadTaskTimeoutMs(timeout_ms)) {}
  ~ScopedTaskTimeout() { IpcManager::SetThreadTaskTimeoutMs(prev_); }
  ScopedTaskTimeout(const ScopedTaskTimeout &) = delete;
  ScopedTaskTimeout &operator=(const ScopedTaskTimeout &) = delete;

 private:
  u64 prev_;
};

/** Sends `task`; if sending fails the task comes back completed with the
 * error, so callers only ever Wait(). A null task stays null. A
 * fire-and-forget task that could not be sent (nobody waits for it) is
 * freed here, with the inputs it owns, and null returned; its group (if
 * any) counts it done, as it would once the runtime completed it. */
template <typename TaskT>
FullPtr<TaskT> Submit(FullPtr<TaskT> task) {
  if (task.IsNull()) return task;
  Status s = CHI_IPC->Send(task);
  if (!s.ok()) {
    if (task->IsFireAndForget()) {
      HSHM_LOG_LIMITED("chimaera: fire-and-forget task not sent: %s\n",
                       s.ToString().c_str());
      GroupRef group = internal::TaskGroupOf(task.ptr_);
      CHI_IPC->DelTask(task);
      internal::CountDownGroup(group);
      return FullPtr<TaskT>();
    }
    internal::CompleteTask(task.ptr_, s);
  }
  return task;
}

/** Submit for a task whose InBuf buffers are `inputs` (data-segment blocks
 * this process allocated for it alone): the task owns them from here on
 * (Task::SetOwnsInputs), so they are freed with it, by DelTask (as
 * WaitAndFree does) or, once it is abandoned or if it is fire-and-forget,
 * by the runtime. A null task (`main` was full) frees them here. */
template <typename TaskT>
FullPtr<TaskT> SubmitOwningInputs(FullPtr<TaskT> task,
                                  std::initializer_list<hipc::Pointer> inputs) {
  if (task.IsNull()) {
    for (const hipc::Pointer &p : inputs) (void)CHI_IPC->FreeBuffer(p);
    return task;
  }
#if CHIMAERA_RUNTIME
  // Recorded in the runtime's own memory (see IpcManager::HoldInputs).
  CHI_IPC->HoldInputs(task.shm_, inputs);
#else
  task->SetOwnsInputs();
#endif
  return Submit(task);
}

/** Waits for `task` until the calling thread's deadline (see
 * ScopedTaskTimeout; client.task_timeout_ms by default), calls `read(task)`
 * if it succeeded (`read` then owns the OutBuf buffers), frees it and
 * returns its status. A failed task's OutBuf buffers (a method may fill one
 * and then fail) are freed with it. Past the deadline the
 * task is abandoned (never read or freed here again), `*abandoned` (if not
 * null) set, and Timeout returned: the runtime may still run it later, so
 * the caller must keep its input buffers allocated (they are freed when the
 * process exits), unless the task owns them (SubmitOwningInputs): then the
 * runtime frees them with the task. A null task means `main` was out of
 * memory. */
template <typename TaskT, typename ReadFn>
Status WaitAndFree(FullPtr<TaskT> task, ReadFn &&read,
                   bool *abandoned = nullptr) {
  if (task.IsNull()) return Status::OutOfMemory("main segment is full");
  u64 timeout_us = CHI_IPC->TaskTimeoutUs();
  if (!task->WaitFor(timeout_us)) {
    if (abandoned) *abandoned = true;
    CHI_IPC->AbandonTask(task);
    return Status::Timeout("the task did not complete within " +
                           std::to_string(timeout_us / 1000) +
                           " ms; it was abandoned");
  }
  Status s = task->GetStatus();
  if (s.ok()) {
    read(task.ptr_);
  } else {
    FieldArchive free_out(FieldArchive::Mode::kFreeOut, task.ptr_);
    task->Fields(free_out);
  }
  CHI_IPC->DelTask(task);
  return s;
}

}  // namespace chi

#endif  // CHIMAERA_CLIENT_UTIL_H_
