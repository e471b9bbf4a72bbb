// Header-only client of the example out-of-tree ChiMod "ootmod".
#ifndef OOTMOD_OOTMOD_CLIENT_H_
#define OOTMOD_OOTMOD_CLIENT_H_

#include <string>

#include "ootmod/ootmod_tasks.h"

namespace ootmod {

/** Reverse result: the reversed text and the container that produced it. */
struct ReverseResult {
  std::string text;
  chi::u32 container_id = 0;
};

/** Client of one ootmod pool (Create, Async<ReverseTask>, ... come from
 * chi::ModuleClient). */
class Client : public chi::ModuleClient<Ootmod> {
 public:
  /** Reverses `text` through the runtime. Errors: InvalidArgument if it is
   * too long, or the task's error. */
  chi::StatusOr<ReverseResult> Reverse(
      const std::string &text,
      const chi::DomainQuery &dom = chi::DomainQuery()) {
    if (text.size() > ReverseTask::kMaxLen) {
      return chi::Status::InvalidArgument("text longer than 48 bytes");
    }
    // The input is a fixed array, so fill it before sending.
    chi::FullPtr<ReverseTask> t = NewTask<ReverseTask>(dom);
    if (!t.IsNull()) t->SetText(text);
    chi::Future<ReverseTask> f(chi::Submit(t));
    HSHM_RETURN_IF_ERROR(f.Wait());
    return ReverseResult{std::string(f->out_, f->len_), f->container_id_};
  }
};

}  // namespace ootmod

#endif  // OOTMOD_OOTMOD_CLIENT_H_
