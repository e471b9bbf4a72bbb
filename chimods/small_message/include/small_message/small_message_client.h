// Client API of the small_message module. Header-only, so it compiles into
// clients (CHIMAERA_RUNTIME=0) and into other runtime modules (=1) alike.
//
// Create() first; then Async<T>(args...) returns a chi::Future (see
// chimaera/module.h), and every AsyncX returns the submitted task itself
// (null if the `main` segment is full): Wait() on it, read its OUT fields,
// free what it returned, and CHI_IPC->DelTask() it. Every X() does all of
// that and returns the result. A Client may be shared by threads once
// created.
#ifndef CHIMODS_SMALL_MESSAGE_SMALL_MESSAGE_CLIENT_H_
#define CHIMODS_SMALL_MESSAGE_SMALL_MESSAGE_CLIENT_H_

#include <cstring>
#include <string>

#include "chimaera/client_util.h"
#include "small_message/small_message_tasks.h"

namespace chi::small_message {

/** Client of one small_message pool: the generic calls of ModuleClient
 * (Create, Async<T>, Call<T>, NewTask<T>, Destroy) plus named forms. */
class Client : public ModuleClient<SmallMessage> {
 public:
  using ModuleClient::ModuleClient;

  /** Submits a no-op to container `dom`. */
  FullPtr<NoopTask> AsyncNoop(const DomainQuery &dom = DomainQuery()) {
    return Async<NoopTask>(dom).Release();
  }
  /** Runs a no-op on container `dom`. */
  Status Noop(const DomainQuery &dom = DomainQuery()) {
    return Call<NoopTask>(dom).status();
  }

  /** Submits an echo of `size` bytes of the caller's buffer `data` (which
   * must stay allocated until the task completes). After Wait, the caller
   * frees task->ret_ with CHI_IPC->FreeBuffer, then deletes the task. */
  FullPtr<EchoTask> AsyncEcho(const hipc::Pointer &data, u64 size,
                              const DomainQuery &dom = DomainQuery()) {
    return Async<EchoTask>(dom, data, size).Release();
  }
  /** Sends `data` through the runtime and returns the echoed bytes. */
  StatusOr<std::string> Echo(const std::string &data,
                             const DomainQuery &dom = DomainQuery()) {
    FullPtr<char> buf;
    if (!data.empty()) {
      buf = CHI_IPC->AllocateBuffer(data.size());
      if (buf.IsNull()) return Status::OutOfMemory("data segment is full");
      std::memcpy(buf.ptr_, data.data(), data.size());
    }
    // The task owns the input: freed with it, also when it is abandoned
    // (the runtime may still read it) or could not be allocated.
    std::string out;
    Status s = WaitAndFree(
        SubmitOwningInputs(NewTask<EchoTask>(dom, buf.shm_, u64{data.size()}),
                           {buf.shm_}),
        [&](EchoTask *t) {
          const char *ret = CHI_IPC->DataBuffer(t->ret_, t->ret_size_);
          if (ret) out.assign(ret, t->ret_size_);
          (void)CHI_IPC->FreeBuffer(t->ret_);
        });
    if (!s.ok()) return s;
    return out;
  }

  /** Allocates, but does not send, a Compute of `iters` kernel iterations
   * from `seed` on container `dom` (null if `main` is full): for callers
   * that set dependencies or a group (chimaera/task_graph.h) before
   * chi::Submit. */
  FullPtr<ComputeTask> NewCompute(u64 iters, u64 seed,
                                  const DomainQuery &dom = DomainQuery()) {
    return NewTask<ComputeTask>(dom, iters, seed);
  }
  /** Submits a Compute of `iters` kernel iterations from `seed` on container
   * `dom`. After Wait, the result is task->result_. */
  FullPtr<ComputeTask> AsyncCompute(u64 iters, u64 seed,
                                    const DomainQuery &dom = DomainQuery()) {
    return Async<ComputeTask>(dom, iters, seed).Release();
  }
  /** Submits an Io of `us` microseconds of device time to container `dom`
   * (GetDynamic(): where the runtime's balancing policy sends it). */
  FullPtr<IoTask> AsyncIo(u32 us, const DomainQuery &dom = DomainQuery()) {
    return Async<IoTask>(dom, us).Release();
  }
  /** Runs ComputeKernel(iters, seed) on container `dom` and returns it. */
  StatusOr<u64> Compute(u64 iters, u64 seed,
                        const DomainQuery &dom = DomainQuery()) {
    Future<ComputeTask> f = Call<ComputeTask>(dom, iters, seed);
    if (!f.status().ok()) return f.status();
    return f->result_;
  }

  /** Submits the in-runtime loop of `steps` steps of `width` Computes of
   * `iters` iterations, driven by container `dom`. After Wait, the sum of
   * the results is task->checksum_. */
  FullPtr<StencilRunTask> AsyncStencilRun(
      u32 width, u32 steps, u64 iters, const DomainQuery &dom = DomainQuery()) {
    return Async<StencilRunTask>(dom, width, steps, iters).Release();
  }
  /** Runs the in-runtime loop (see AsyncStencilRun); returns its checksum. */
  StatusOr<u64> StencilRun(u32 width, u32 steps, u64 iters,
                           const DomainQuery &dom = DomainQuery()) {
    Future<StencilRunTask> f = Call<StencilRunTask>(dom, width, steps, iters);
    if (!f.status().ok()) return f.status();
    return f->checksum_;
  }
};

}  // namespace chi::small_message

#endif  // CHIMODS_SMALL_MESSAGE_SMALL_MESSAGE_CLIENT_H_
