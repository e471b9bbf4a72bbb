// Client API of the small_message module. Header-only, so it compiles into
// clients (CHIMAERA_RUNTIME=0) and into other runtime modules (=1) alike.
//
// Create() first; then every AsyncX returns the submitted task (null if the
// `main` segment is full): Wait() on it, read its OUT fields, free what it
// returned, and CHI_IPC->DelTask() it. Every X() does all of that and returns
// the result. A Client may be shared by threads once created.
#ifndef CHIMODS_SMALL_MESSAGE_SMALL_MESSAGE_CLIENT_H_
#define CHIMODS_SMALL_MESSAGE_SMALL_MESSAGE_CLIENT_H_

#include <cstring>
#include <string>

#include "chimaera/admin/admin_client.h"
#include "chimaera/client_util.h"
#include "chimaera/pool_client.h"
#include "small_message/small_message_tasks.h"

namespace chi::small_message {

/** Client of one small_message pool. */
class Client : public PoolClient {
 public:
  using PoolClient::PoolClient;

  /** Gets or creates the pool `pool_name` with `num_containers` containers.
   * Errors are GetOrCreatePool's (InvalidArgument for a bad name, NotFound
   * when the runtime cannot load the module). */
  Status Create(const std::string &pool_name, u32 num_containers = 1) {
    return CreatePool(pool_name, kModuleName, num_containers);
  }

  /** Submits a no-op to container `dom`. */
  FullPtr<NoopTask> AsyncNoop(const DomainQuery &dom = DomainQuery()) {
    return Submit(CHI_IPC->NewTaskDefault<NoopTask>(CHI_IPC->NewTaskNode(),
                                                    pool_id_, dom));
  }
  /** Runs a no-op on container `dom`. */
  Status Noop(const DomainQuery &dom = DomainQuery()) {
    return WaitAndFree(AsyncNoop(dom), [](NoopTask *) {});
  }

  /** Submits an echo of `size` bytes of the caller's buffer `data` (which
   * must stay allocated until the task completes). After Wait, the caller
   * frees task->ret_ with CHI_IPC->FreeBuffer, then deletes the task. */
  FullPtr<EchoTask> AsyncEcho(const hipc::Pointer &data, u64 size,
                              const DomainQuery &dom = DomainQuery()) {
    return Submit(CHI_IPC->NewTaskDefault<EchoTask>(CHI_IPC->NewTaskNode(),
                                                    pool_id_, dom, data, size));
  }
  /** Sends `data` through the runtime and returns the echoed bytes. Frees
   * both buffers. */
  StatusOr<std::string> Echo(const std::string &data,
                             const DomainQuery &dom = DomainQuery()) {
    FullPtr<char> buf;
    if (!data.empty()) {
      buf = CHI_IPC->AllocateBuffer(data.size());
      if (buf.IsNull()) return Status::OutOfMemory("data segment is full");
      std::memcpy(buf.ptr_, data.data(), data.size());
    }
    std::string out;
    Status s =
        WaitAndFree(AsyncEcho(buf.shm_, data.size(), dom), [&](EchoTask *t) {
          FullPtr<char> ret(t->ret_);
          if (!ret.IsNull()) {
            out.assign(ret.ptr_, t->ret_size_);
          }
          (void)CHI_IPC->FreeBuffer(t->ret_);
        });
    (void)CHI_IPC->FreeBuffer(buf.shm_);
    if (!s.ok()) return s;
    return out;
  }

  /** Allocates, but does not send, a Compute of `iters` kernel iterations
   * from `seed` on container `dom` (null if `main` is full): for callers
   * that set dependencies or a group (chimaera/task_graph.h) before
   * chi::Submit. */
  FullPtr<ComputeTask> NewCompute(u64 iters, u64 seed,
                                  const DomainQuery &dom = DomainQuery()) {
    return CHI_IPC->NewTaskDefault<ComputeTask>(CHI_IPC->NewTaskNode(),
                                                pool_id_, dom, iters, seed);
  }
  /** Submits a Compute of `iters` kernel iterations from `seed` on container
   * `dom`. After Wait, the result is task->result_. */
  FullPtr<ComputeTask> AsyncCompute(u64 iters, u64 seed,
                                    const DomainQuery &dom = DomainQuery()) {
    return Submit(NewCompute(iters, seed, dom));
  }
  /** Runs ComputeKernel(iters, seed) on container `dom` and returns it. */
  StatusOr<u64> Compute(u64 iters, u64 seed,
                        const DomainQuery &dom = DomainQuery()) {
    u64 result = 0;
    Status s = WaitAndFree(AsyncCompute(iters, seed, dom),
                           [&](ComputeTask *t) { result = t->result_; });
    if (!s.ok()) return s;
    return result;
  }

  /** Submits the in-runtime loop of `steps` steps of `width` Computes of
   * `iters` iterations, driven by container `dom`. After Wait, the sum of
   * the results is task->checksum_. */
  FullPtr<StencilRunTask> AsyncStencilRun(
      u32 width, u32 steps, u64 iters, const DomainQuery &dom = DomainQuery()) {
    return Submit(CHI_IPC->NewTaskDefault<StencilRunTask>(
        CHI_IPC->NewTaskNode(), pool_id_, dom, width, steps, iters));
  }
  /** Runs the in-runtime loop (see AsyncStencilRun); returns its checksum. */
  StatusOr<u64> StencilRun(u32 width, u32 steps, u64 iters,
                           const DomainQuery &dom = DomainQuery()) {
    u64 checksum = 0;
    Status s = WaitAndFree(AsyncStencilRun(width, steps, iters, dom),
                           [&](StencilRunTask *t) { checksum = t->checksum_; });
    if (!s.ok()) return s;
    return checksum;
  }
};

}  // namespace chi::small_message

#endif  // CHIMODS_SMALL_MESSAGE_SMALL_MESSAGE_CLIENT_H_
