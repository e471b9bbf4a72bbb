// Tasks of the compressor module: Compress and Decompress a data buffer with
// zstd or lz4, chosen per call.
//
// Buffers: the caller allocates the input in a data segment
// (CHI_IPC->AllocateBuffer) and keeps ownership of it. The runtime allocates
// the output in `client_data`; whoever waits on the task owns the output and
// frees it with CHI_IPC->FreeBuffer. A compressed buffer is allocated with
// the algorithm's worst-case bound; out_size_ tells how much of it is used.
//
// Errors (task status): InvalidArgument for an unknown algorithm or level, an
// input outside the data segments, corrupt input, or a wrong or too large
// original size; OutOfMemory when client_data has no room for the output.
#ifndef CHIMODS_COMPRESSOR_COMPRESSOR_TASKS_H_
#define CHIMODS_COMPRESSOR_COMPRESSOR_TASKS_H_

#include "chimaera/module.h"

namespace chi::compressor {

/** Compression algorithms. A task from a client may carry any value: the
 * runtime refuses unknown ones. */
enum class Algorithm : u32 {
  kZstd = 0,  ///< Zstandard; level 0 = default (3), else ZSTD_minCLevel..max.
  kLz4 = 1,   ///< LZ4 block format; level = acceleration (0 or 1 = default).
};

/** Inputs at least this large go to the high-latency workers (the Client's
 * calls set prio_; callers of Async<...> directly set it themselves). */
static GLOBAL_CROSS_CONST u64 kHighLatencyBytes = 64 * 1024;

/** Compresses data_[0, size_) into out_[0, out_size_). */
struct CompressTask : public Task {
  CHI_IN Algorithm algo_ = Algorithm::kZstd;  ///< The codec.
  CHI_IN i32 level_ = 0;       ///< Algorithm-specific level (0 = default).
  CHI_IN hipc::Pointer data_;  ///< Input bytes (a data-segment buffer).
  CHI_IN u64 size_ = 0;        ///< Bytes of input.
  CHI_OUT hipc::Pointer out_;  ///< Output in client_data; the waiter frees it.
  CHI_OUT u64 out_size_ = 0;   ///< Compressed bytes in out_.

  template <typename Ar>
  void Fields(Ar &ar) {
    ar.In(algo_);
    ar.In(level_);
    ar.In(size_);
    ar.InBuf(data_, size_);
    ar.OutBuf(out_, out_size_);
  }
};

/** Decompresses data_[0, size_) into out_[0, out_size_); the output must be
 * exactly orig_size_ bytes. */
struct DecompressTask : public Task {
  CHI_IN Algorithm algo_ = Algorithm::kZstd;  ///< The codec that compressed it.
  CHI_IN hipc::Pointer data_;  ///< Compressed bytes (a data-segment buffer).
  CHI_IN u64 size_ = 0;        ///< Bytes of compressed input.
  CHI_IN u64 orig_size_ = 0;   ///< Size of the original data.
  CHI_OUT hipc::Pointer out_;  ///< Output in client_data; the waiter frees it.
  CHI_OUT u64 out_size_ = 0;   ///< Bytes in out_ (== orig_size_ on success).

  template <typename Ar>
  void Fields(Ar &ar) {
    ar.In(algo_);
    ar.In(size_);
    ar.In(orig_size_);
    ar.InBuf(data_, size_);
    ar.OutBuf(out_, out_size_);
  }
};

/** The module: its name and methods (ids kCustom + 0, 1). */
struct Compressor {
  static constexpr char kName[] = "compressor";
  using Methods = chi::Methods<CompressTask, DecompressTask>;
};

}  // namespace chi::compressor

#endif  // CHIMODS_COMPRESSOR_COMPRESSOR_TASKS_H_
