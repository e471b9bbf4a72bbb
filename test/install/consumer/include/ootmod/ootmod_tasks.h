// Tasks of "ootmod", an example ChiMod built out of the Chimaera source tree
// against the installed package (find_package(chimaera CONFIG)).
#ifndef OOTMOD_OOTMOD_TASKS_H_
#define OOTMOD_OOTMOD_TASKS_H_

#include <cstring>
#include <string>

#include "chimaera/module.h"

namespace ootmod {

/** Reverses a short string: out_ = reverse(in_[0, len_)). */
struct ReverseTask : public chi::Task {
  static constexpr chi::u32 kMaxLen = 48;
  IN char in_[kMaxLen] = {};
  IN chi::u32 len_ = 0;
  OUT char out_[kMaxLen] = {};
  OUT chi::u32 container_id_ = 0;  ///< The container that ran the task.

  /** Fills in_/len_ from `text` (at most kMaxLen bytes are kept). */
  void SetText(const std::string &text) {
    len_ = static_cast<chi::u32>(text.size() < kMaxLen ? text.size() : kMaxLen);
    std::memcpy(in_, text.data(), len_);
  }
  CHI_FIELDS(In(in_), In(len_), Out(out_), Out(container_id_))
};

/** The module: its name and its one method. */
struct Ootmod {
  static constexpr char kName[] = "ootmod";
  using Methods = chi::Methods<ReverseTask>;
};

}  // namespace ootmod

#endif  // OOTMOD_OOTMOD_TASKS_H_
