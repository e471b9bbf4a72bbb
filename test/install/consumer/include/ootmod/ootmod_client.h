// Header-only client of the example out-of-tree ChiMod "ootmod".
#ifndef OOTMOD_OOTMOD_CLIENT_H_
#define OOTMOD_OOTMOD_CLIENT_H_

#include <string>

#include "chimaera/admin/admin_client.h"
#include "chimaera/client_util.h"
#include "ootmod/ootmod_tasks.h"

namespace ootmod {

/** Reverse result: the reversed text and the container that produced it. */
struct ReverseResult {
  std::string text;
  chi::u32 container_id = 0;
};

/** Client of one ootmod pool. */
class Client {
 public:
  /** Gets or creates pool `name` of module "ootmod" with `containers`
   * containers, and binds this client to it. */
  chi::Status Create(const std::string &name, chi::u32 containers) {
    auto id = chi::admin::Client().GetOrCreatePool(name, "ootmod", containers);
    if (!id.ok()) return id.status();
    pool_id_ = *id;
    return chi::Status::Ok();
  }
  /** Submits a reversal of `text` (at most ReverseTask::kMaxLen bytes). */
  chi::FullPtr<ReverseTask> AsyncReverse(
      const std::string &text,
      const chi::DomainQuery &dom = chi::DomainQuery()) {
    return chi::Submit(CHI_IPC->NewTaskDefault<ReverseTask>(
        CHI_IPC->NewTaskNode(), pool_id_, dom, text));
  }
  /** Reverses `text` through the runtime. Errors: InvalidArgument if it is
   * too long, or the task's error. */
  chi::StatusOr<ReverseResult> Reverse(
      const std::string &text,
      const chi::DomainQuery &dom = chi::DomainQuery()) {
    if (text.size() > ReverseTask::kMaxLen) {
      return chi::Status::InvalidArgument("text longer than 48 bytes");
    }
    ReverseResult res;
    HSHM_RETURN_IF_ERROR(
        chi::WaitAndFree(AsyncReverse(text, dom), [&](ReverseTask *t) {
          res.text.assign(t->out_, t->len_);
          res.container_id = t->container_id_;
        }));
    return res;
  }
  /** The pool this client talks to. */
  const chi::PoolId &pool_id() const { return pool_id_; }

 private:
  chi::PoolId pool_id_;
};

}  // namespace ootmod

#endif  // OOTMOD_OOTMOD_CLIENT_H_
