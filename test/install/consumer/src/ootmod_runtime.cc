// Runtime side of the example out-of-tree ChiMod "ootmod".
#include <algorithm>

#include "chimaera/module_manager.h"
#include "ootmod/ootmod_tasks.h"

namespace ootmod {

/** The ootmod container: one method, Reverse. */
class Runtime : public chi::Container {
 public:
  /** Registers the method table. */
  Runtime() { RegisterMethod(Method::kReverse, "Reverse", &Runtime::Reverse); }

  /** Writes the reverse of the task's input into its output. */
  void Reverse(ReverseTask *task, chi::RunContext &rctx) {
    if (task->len_ > ReverseTask::kMaxLen) {
      task->SetStatus(chi::Status::InvalidArgument("len_ exceeds kMaxLen"));
      return;
    }
    std::reverse_copy(task->in_, task->in_ + task->len_, task->out_);
    task->container_id_ = container_id_;
  }
};

}  // namespace ootmod

CHI_TASK_CC(ootmod::Runtime, "ootmod");
