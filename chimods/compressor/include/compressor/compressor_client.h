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

#include "compressor/compressor_tasks.h"

namespace chi::compressor {

/** Client of one compressor pool: ModuleClient's generic calls plus named
 * forms that also route large inputs to the high-latency workers. */
class Client : public ModuleClient<Compressor> {
 public:
  using ModuleClient::ModuleClient;

  /** Submits compression of `size` bytes of the caller's buffer `data`
   * (kept allocated until the task completes). */
  FullPtr<CompressTask> AsyncCompress(
      Algorithm algo, const hipc::Pointer &data, u64 size, i32 level = 0,
      const DomainQuery &dom = DomainQuery::GetDynamic()) {
    return SubmitSized(NewTask<CompressTask>(dom, algo, level, data, size),
                       size);
  }
  /** AsyncCompress of the `size` bytes of `in`, a data buffer the task
   * owns from here on: freed with it, also if it is abandoned (see
   * chi::SubmitOwningInputs; freed here if the task cannot be made). */
  FullPtr<CompressTask> AsyncCompressOwning(
      Algorithm algo, const FullPtr<char> &in, u64 size, i32 level = 0,
      const DomainQuery &dom = DomainQuery::GetDynamic()) {
    return SubmitSized(NewTask<CompressTask>(dom, algo, level, in.shm_, size),
                       size, in);
  }
  /** Compresses `data` with `algo` at `level`; returns the compressed
   * bytes. */
  StatusOr<std::string> Compress(
      Algorithm algo, const std::string &data, i32 level = 0,
      const DomainQuery &dom = DomainQuery::GetDynamic()) {
    FullPtr<char> in;
    HSHM_RETURN_IF_ERROR(CopyIn(data, &in));
    return Finish(Future<CompressTask>(
        AsyncCompressOwning(algo, in, data.size(), level, dom)));
  }

  /** Submits decompression of `size` bytes of the caller's buffer `data`,
   * which `algo` made from `orig_size` bytes. */
  FullPtr<DecompressTask> AsyncDecompress(
      Algorithm algo, const hipc::Pointer &data, u64 size, u64 orig_size,
      const DomainQuery &dom = DomainQuery::GetDynamic()) {
    return SubmitSized(
        NewTask<DecompressTask>(dom, algo, data, size, orig_size), orig_size);
  }
  /** AsyncDecompress of the `size` bytes of `in`, a data buffer the task
   * owns from here on (as AsyncCompressOwning). */
  FullPtr<DecompressTask> AsyncDecompressOwning(
      Algorithm algo, const FullPtr<char> &in, u64 size, u64 orig_size,
      const DomainQuery &dom = DomainQuery::GetDynamic()) {
    return SubmitSized(
        NewTask<DecompressTask>(dom, algo, in.shm_, size, orig_size), orig_size,
        in);
  }
  /** Decompresses `compressed` (made by `algo` from `orig_size` bytes);
   * returns the original bytes. */
  StatusOr<std::string> Decompress(
      Algorithm algo, const std::string &compressed, u64 orig_size,
      const DomainQuery &dom = DomainQuery::GetDynamic()) {
    FullPtr<char> in;
    HSHM_RETURN_IF_ERROR(CopyIn(compressed, &in));
    return Finish(Future<DecompressTask>(
        AsyncDecompressOwning(algo, in, compressed.size(), orig_size, dom)));
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
  /** Sets the priority by `bytes` (see kHighLatencyBytes) and sends; the
   * task owns `owned` (its input buffer, if not null: see
   * chi::SubmitOwningInputs). */
  template <typename TaskT>
  static FullPtr<TaskT> SubmitSized(FullPtr<TaskT> t, u64 bytes,
                                    const FullPtr<char> &owned = {}) {
    if (!t.IsNull()) {
      t->prio_ = bytes >= kHighLatencyBytes ? kHighLatency : kLowLatency;
    }
    if (owned.IsNull()) return t.IsNull() ? t : Submit(t);
    return SubmitOwningInputs(t, {owned.shm_});
  }
  /** Waits for `f` (this thread's deadline) and returns a copy of its
   * output. Dropping `f` frees the task and what it owns, or abandons it to
   * the runtime if it still runs. */
  template <typename TaskT>
  static StatusOr<std::string> Finish(Future<TaskT> f) {
    Status s = f.Wait();
    std::string out;
    if (s.ok() && f->out_size_ != 0) {
      const char *p = CHI_IPC->DataBuffer(f->out_, f->out_size_);
      if (p) out.assign(p, f->out_size_);
    }
    if (!s.ok()) return s;
    return out;
  }
};

}  // namespace chi::compressor

#endif  // CHIMODS_COMPRESSOR_COMPRESSOR_CLIENT_H_
