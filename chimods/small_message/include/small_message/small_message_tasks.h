// Tasks of the small_message module: the smallest useful ChiMod. Noop measures
// the bare round trip to a module pool; Echo copies a data buffer through the
// runtime and back (the round trip of a small or large message).
//
// Buffers: the caller allocates the input in a data segment
// (CHI_IPC->AllocateBuffer) and keeps ownership of it. The runtime allocates
// the reply in `client_data` (CHI_IPC->AllocateClientBuffer); whoever waits on
// the task owns the reply and frees it with CHI_IPC->FreeBuffer.
#ifndef CHIMODS_SMALL_MESSAGE_SMALL_MESSAGE_TASKS_H_
#define CHIMODS_SMALL_MESSAGE_SMALL_MESSAGE_TASKS_H_

#include "chimaera/container.h"
#include "chimaera/ipc_manager.h"

namespace chi::small_message {

/** Name the runtime loads the module by (lib<name>_runtime.so). */
inline constexpr char kModuleName[] = "small_message";

/** Methods of the small_message container. */
namespace Method {
static GLOBAL_CROSS_CONST MethodId kNoop = BaseMethod::kCustom + 0;
static GLOBAL_CROSS_CONST MethodId kEcho = BaseMethod::kCustom + 1;
}  // namespace Method

/** Does nothing; measures the task round trip to a module container. */
struct NoopTask : public Task {
  /** SHM default constructor. */
  explicit NoopTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc)
      : Task(alloc) {}
  /** Emplace constructor: a no-op on container `dom` of pool `pool_id`. */
  NoopTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc, const TaskNode &node,
           const PoolId &pool_id, const DomainQuery &dom)
      : Task(alloc) {
    SetBase(node, pool_id, dom, Method::kNoop);
  }
};

/** Returns a copy of data_[0, size_) in ret_[0, ret_size_). A zero size_
 * needs no data_ and returns a null ret_. */
struct EchoTask : public Task {
  IN hipc::Pointer data_;  ///< Input bytes (a data-segment buffer).
  IN u64 size_ = 0;        ///< Bytes of data_ to echo.
  OUT hipc::Pointer ret_;  ///< Reply in client_data; the waiter frees it.
  OUT u64 ret_size_ = 0;   ///< Bytes in ret_ (== size_ on success).

  /** SHM default constructor. */
  explicit EchoTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc)
      : Task(alloc) {}
  /** Emplace constructor: echo `size` bytes at `data`. */
  EchoTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc, const TaskNode &node,
           const PoolId &pool_id, const DomainQuery &dom,
           const hipc::Pointer &data, u64 size)
      : Task(alloc), data_(data), size_(size) {
    SetBase(node, pool_id, dom, Method::kEcho);
  }
  template <typename Ar>
  void Fields(Ar &ar) {
    ar.In(size_);
    ar.InBuf(data_, size_);
    ar.OutBuf(ret_, ret_size_);
  }
};

}  // namespace chi::small_message

#endif  // CHIMODS_SMALL_MESSAGE_SMALL_MESSAGE_TASKS_H_
