// Base of ChiMod client classes: the pool a client talks to and how to get
// or create it. Header-only (compiles into clients and runtime modules).
#ifndef CHIMAERA_POOL_CLIENT_H_
#define CHIMAERA_POOL_CLIENT_H_

#include <string>

#include "chimaera/admin/admin_client.h"

namespace chi {

/** Holds the pool id of a module client. Copyable; once the pool is set a
 * client may be shared by threads. */
class PoolClient {
 public:
  /** A client with no pool yet. */
  PoolClient() = default;
  /** A client of the existing pool `pool_id`. */
  explicit PoolClient(const PoolId &pool_id) : pool_id_(pool_id) {}
  /** The pool this client talks to (null before it was set). */
  const PoolId &pool_id() const { return pool_id_; }
  /** Destroys the pool this client is bound to (each container's Destroy
   * runs after its last task) and unbinds the client. Other clients of the
   * pool then get NotFound. Errors are DestroyPool's. */
  Status Destroy() {
    Status s = admin::Client().DestroyPool(pool_id_);
    if (s.ok()) pool_id_ = PoolId();
    return s;
  }

 protected:
  /** Gets or creates pool `pool_name` of `module` with `num_containers`
   * containers (each given `params`) and remembers its id. Errors are
   * GetOrCreatePool's (InvalidArgument for a bad name, NotFound when the
   * runtime cannot load the module). */
  Status CreatePool(const std::string &pool_name, const std::string &module,
                    u32 num_containers, const std::string &params = "") {
    StatusOr<PoolId> id = admin::Client().GetOrCreatePool(
        pool_name, module, num_containers, params);
    if (!id.ok()) return id.status();
    pool_id_ = *id;
    return Status::Ok();
  }

  PoolId pool_id_;
};

}  // namespace chi

#endif  // CHIMAERA_POOL_CLIENT_H_
