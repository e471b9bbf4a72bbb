// Tasks of "ootmod", an example ChiMod built out of the Chimaera source tree
// against the installed package (find_package(chimaera CONFIG)).
#ifndef OOTMOD_OOTMOD_TASKS_H_
#define OOTMOD_OOTMOD_TASKS_H_

#include <cstring>
#include <string>

#include "chimaera/container.h"
#include "chimaera/ipc_manager.h"

namespace ootmod {

/** Methods of the ootmod container. */
namespace Method {
static GLOBAL_CROSS_CONST chi::MethodId kReverse = chi::BaseMethod::kCustom + 0;
}  // namespace Method

/** Reverses a short string: out_ = reverse(in_[0, len_)). */
struct ReverseTask : public chi::Task {
  static constexpr chi::u32 kMaxLen = 48;
  IN char in_[kMaxLen] = {};
  IN chi::u32 len_ = 0;
  OUT char out_[kMaxLen] = {};
  OUT chi::u32 container_id_ = 0;  ///< The container that ran the task.

  /** SHM default constructor. */
  explicit ReverseTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc)
      : Task(alloc) {}
  /** Emplace constructor: reverse `text` (at most kMaxLen bytes) on `pool`. */
  ReverseTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc,
              const chi::TaskNode &node, const chi::PoolId &pool,
              const chi::DomainQuery &dom, const std::string &text)
      : Task(alloc) {
    SetBase(node, pool, dom, Method::kReverse);
    len_ = static_cast<chi::u32>(text.size() < kMaxLen ? text.size() : kMaxLen);
    std::memcpy(in_, text.data(), len_);
  }
  template <typename Ar>
  void Fields(Ar &ar) {
    ar.In(in_);
    ar.In(len_);
    ar.Out(out_);
    ar.Out(container_id_);
  }
};

}  // namespace ootmod

#endif  // OOTMOD_OOTMOD_TASKS_H_
