// Runtime side of the example out-of-tree ChiMod "ootmod".
#include <algorithm>

#include "ootmod/ootmod_tasks.h"

namespace ootmod {

/** The ootmod container: one method, Reverse. */
class Runtime : public chi::Module<Runtime, Ootmod> {
 public:
  /** Writes the reverse of the task's input into its output. */
  void Run(ReverseTask *task, chi::RunContext &rctx) {
    if (task->len_ > ReverseTask::kMaxLen) {
      task->SetStatus(chi::Status::InvalidArgument("len_ exceeds kMaxLen"));
      return;
    }
    std::reverse_copy(task->in_, task->in_ + task->len_, task->out_);
    task->container_id_ = container_id_;
  }
};

}  // namespace ootmod

CHI_MODULE(ootmod::Runtime);
