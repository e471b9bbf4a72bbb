// Runtime side of the small_message module.
#include <cstring>

#include "chimaera/module_manager.h"
#include "small_message/small_message_tasks.h"

namespace chi::small_message {

/** Container of the small_message module: stateless, so its methods need no
 * locking. */
class Runtime : public Container {
 public:
  /** Registers the methods. Called by the module factory. */
  Runtime() {
    RegisterMethod(Method::kNoop, "Noop", &Runtime::Noop);
    RegisterMethod(Method::kEcho, "Echo", &Runtime::Echo);
  }

  /** Does nothing. Workers call it. */
  void Noop(NoopTask *task, RunContext &rctx) {}

  /** Copies the caller's buffer into a fresh client_data buffer. Errors:
   * InvalidArgument (buffer outside the data segments), OutOfMemory
   * (client_data full). Workers call it. */
  void Echo(EchoTask *task, RunContext &rctx) {
    task->ret_ = hipc::Pointer::GetNull();
    task->ret_size_ = 0;
    u64 size = task->size_;
    if (size == 0) return;
    const char *src = CHI_IPC->DataBuffer(task->data_, size);
    if (!src) {
      task->SetStatus(Status::InvalidArgument("Echo: data buffer is not " +
                                              std::to_string(size) +
                                              " bytes inside a data segment"));
      return;
    }
    FullPtr<char> ret = CHI_IPC->AllocateClientBuffer(size);
    if (ret.IsNull()) {
      task->SetStatus(Status::OutOfMemory("Echo: client_data has no room for " +
                                          std::to_string(size) + " bytes"));
      return;
    }
    std::memcpy(ret.ptr_, src, size);
    task->ret_ = ret.shm_;
    task->ret_size_ = size;
  }
};

}  // namespace chi::small_message

CHI_TASK_CC(chi::small_message::Runtime, "small_message");
