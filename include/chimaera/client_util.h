// Helpers for ChiMod client classes: submit a task, wait for it, free it.
#ifndef CHIMAERA_CLIENT_UTIL_H_
#define CHIMAERA_CLIENT_UTIL_H_

#include "chimaera/ipc_manager.h"

namespace chi {

/** Sends `task`; if sending fails the task comes back completed with the
 * error, so callers only ever Wait(). A null task stays null. */
template <typename TaskT>
FullPtr<TaskT> Submit(FullPtr<TaskT> task) {
  if (task.IsNull()) return task;
  Status s = CHI_IPC->Send(task);
  if (!s.ok()) internal::CompleteTask(task.ptr_, s);
  return task;
}

/** Waits for `task`, calls `read(task)` if it succeeded, frees it and
 * returns its status. A null task means `main` was out of memory. */
template <typename TaskT, typename ReadFn>
Status WaitAndFree(FullPtr<TaskT> task, ReadFn &&read) {
  if (task.IsNull()) return Status::OutOfMemory("main segment is full");
  task->Wait();
  Status s = task->GetStatus();
  if (s.ok()) read(task.ptr_);
  CHI_IPC->DelTask(task);
  return s;
}

}  // namespace chi

#endif  // CHIMAERA_CLIENT_UTIL_H_
