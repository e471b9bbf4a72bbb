// Client API of the compressor module. Header-only, so it compiles into
// clients (CHIMAERA_RUNTIME=0) and into other runtime modules (=1) alike.
//
// Create() first; then every AsyncX returns the submitted task (null if the
// `main` segment is full): Wait() on it, read its OUT fields, free out_ with
// CHI_IPC->FreeBuffer and CHI_IPC->DelTask() the task. Every X() does all of
// that and returns the result. By default tasks are spread over the pool's
// containers (DomainQuery::GetDynamic). A Client may be shared by threads
// once created.
#ifndef CHIMODS_COMPRESSOR_COMPRESSOR_CLIENT_H_
#define CHIMODS_COMPRESSOR_COMPRESSOR_CLIENT_H_

#include <cstring>
#include <string>

#include "chimaera/admin/admin_client.h"
#include "chimaera/client_util.h"
#include "chimaera/pool_client.h"
#include "compressor/compressor_tasks.h"

namespace chi::compressor {

/** Client of one compressor pool. */
class Client : public PoolClient {
 public:
  using PoolClient::PoolClient;

  /** Gets or creates the pool `pool_name` with `num_containers` containers.
   * Errors are GetOrCreatePool's. */
  Status Create(const std::string &pool_name, u32 num_containers = 1) {
    return CreatePool(pool_name, kModuleName, num_containers);
  }

  /** Submits compression of `size` bytes of the caller's buffer `data`
   * (kept allocated until the task completes). */
  FullPtr<CompressTask> AsyncCompress(
      Algorithm algo, const hipc::Pointer &data, u64 size, i32 level = 0,
      const DomainQuery &dom = DomainQuery::GetDynamic()) {
    return Submit(CHI_IPC->NewTaskDefault<CompressTask>(
        CHI_IPC->NewTaskNode(), pool_id_, dom, algo, level, data, size));
  }
  /** Compresses `data` with `algo` at `level`; returns the compressed
   * bytes. */
  StatusOr<std::string> Compress(
      Algorithm algo, const std::string &data, i32 level = 0,
      const DomainQuery &dom = DomainQuery::GetDynamic()) {
    FullPtr<char> in;
    HSHM_RETURN_IF_ERROR(CopyIn(data, &in));
    std::string out;
    Status s = WaitAndFree(
        AsyncCompress(algo, in.shm_, data.size(), level, dom),
        [&](CompressTask *t) { CopyOutAndFree(t->out_, t->out_size_, &out); });
    (void)CHI_IPC->FreeBuffer(in.shm_);
    if (!s.ok()) return s;
    return out;
  }

  /** Submits decompression of `size` bytes of the caller's buffer `data`,
   * which `algo` made from `orig_size` bytes. */
  FullPtr<DecompressTask> AsyncDecompress(
      Algorithm algo, const hipc::Pointer &data, u64 size, u64 orig_size,
      const DomainQuery &dom = DomainQuery::GetDynamic()) {
    return Submit(CHI_IPC->NewTaskDefault<DecompressTask>(
        CHI_IPC->NewTaskNode(), pool_id_, dom, algo, data, size, orig_size));
  }
  /** Decompresses `compressed` (made by `algo` from `orig_size` bytes);
   * returns the original bytes. */
  StatusOr<std::string> Decompress(
      Algorithm algo, const std::string &compressed, u64 orig_size,
      const DomainQuery &dom = DomainQuery::GetDynamic()) {
    FullPtr<char> in;
    HSHM_RETURN_IF_ERROR(CopyIn(compressed, &in));
    std::string out;
    Status s = WaitAndFree(
        AsyncDecompress(algo, in.shm_, compressed.size(), orig_size, dom),
        [&](DecompressTask *t) {
          CopyOutAndFree(t->out_, t->out_size_, &out);
        });
    (void)CHI_IPC->FreeBuffer(in.shm_);
    if (!s.ok()) return s;
    return out;
  }

 private:
  /** Copies `data` into a new data-segment buffer `*buf` (null when empty).
   */
  static Status CopyIn(const std::string &data, FullPtr<char> *buf) {
    if (data.empty()) return Status::Ok();
    *buf = CHI_IPC->AllocateBuffer(data.size());
    if (buf->IsNull()) return Status::OutOfMemory("data segment is full");
    std::memcpy(buf->ptr_, data.data(), data.size());
    return Status::Ok();
  }
  /** Copies `size` bytes of the runtime's output `p` into `*out`, then frees
   * `p`. */
  static void CopyOutAndFree(const hipc::Pointer &p, u64 size,
                             std::string *out) {
    FullPtr<char> buf(p);
    if (!buf.IsNull()) out->assign(buf.ptr_, size);
    (void)CHI_IPC->FreeBuffer(p);
  }
};

}  // namespace chi::compressor

#endif  // CHIMODS_COMPRESSOR_COMPRESSOR_CLIENT_H_
