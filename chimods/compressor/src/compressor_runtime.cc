// Runtime side of the compressor module.
//
// Methods run on 64 KB fiber stacks, so every codec state lives on the heap:
// zstd contexts come from ZSTD_createCCtx/DCtx and lz4 compression uses
// LZ4_compress_fast_extState with a heap state (LZ4_compress_default would put
// ~16 KB on the stack). States are pooled for the whole runtime (not per
// container, so that many containers cannot multiply what is kept) and
// reused; a pool keeps at most kMaxPooled states, and no zstd context that
// grew past kMaxPooledBytes.
#include <lz4.h>
#include <zstd.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <vector>

#include "compressor/compressor_tasks.h"

namespace chi::compressor {

namespace {

/** Most idle states one pool keeps (more than the workers that may use it
 * at once on a typical node). */
constexpr size_t kMaxPooled = 16;
/** A zstd context larger than this is freed, not kept: a level-19
 * compression of an 8 MiB input leaves one of about 90 MB. */
constexpr size_t kMaxPooledBytes = 8u << 20;

/** A free list of heap objects made by `New` and destroyed by `Del`, so
 * concurrent methods reuse codec states. It keeps at most kMaxPooled idle
 * objects, and only those for which `Keep` is true. Any thread may call. */
template <typename T, T *(*New)(), void (*Del)(T *), bool (*Keep)(const T *)>
class StatePool {
 public:
  /** Returns a pooled object to the pool on destruction. */
  struct Returner {
    StatePool *pool;
    /** Gives `obj` back to `pool`. */
    void operator()(T *obj) const { pool->Put(obj); }
  };
  using Lease = std::unique_ptr<T, Returner>;

  StatePool() = default;
  StatePool(const StatePool &) = delete;
  StatePool &operator=(const StatePool &) = delete;
  /** Destroys the pooled objects. REQUIRES: no lease is outstanding. */
  ~StatePool() {
    for (T *obj : free_) Del(obj);
  }

  /** A pooled or new object (null lease if `New` fails). */
  Lease Get() {
    T *obj = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        obj = free_.back();
        free_.pop_back();
      }
    }
    if (!obj) obj = New();
    return Lease(obj, Returner{this});
  }

 private:
  /** Keeps `obj` for reuse, or destroys it (pool full, or not worth
   * keeping). */
  void Put(T *obj) {
    if (Keep(obj)) {
      std::lock_guard<std::mutex> lock(mu_);
      if (free_.size() < kMaxPooled) {
        free_.push_back(obj);
        return;
      }
    }
    Del(obj);
  }

  std::mutex mu_;
  std::vector<T *> free_;
};

/** Factories and destructors of the codec states, for StatePool. */
ZSTD_CCtx *NewCCtx() { return ZSTD_createCCtx(); }
void DelCCtx(ZSTD_CCtx *c) { ZSTD_freeCCtx(c); }
ZSTD_DCtx *NewDCtx() { return ZSTD_createDCtx(); }
void DelDCtx(ZSTD_DCtx *d) { ZSTD_freeDCtx(d); }
/** LZ4 states must be 8-byte aligned; malloc is. */
char *NewLz4State() {
  return static_cast<char *>(std::malloc(LZ4_sizeofState()));
}
void DelLz4State(char *s) { std::free(s); }
/** Keep policies: a zstd context only while it is small; lz4 states are
 * all the same size. */
bool KeepCCtx(const ZSTD_CCtx *c) {
  return ZSTD_sizeof_CCtx(c) <= kMaxPooledBytes;
}
bool KeepDCtx(const ZSTD_DCtx *d) {
  return ZSTD_sizeof_DCtx(d) <= kMaxPooledBytes;
}
bool KeepAlways(const char *) { return true; }

/** The runtime's pools, shared by every compressor container. Made on
 * first use and never destroyed (a worker may still hold a lease while the
 * process exits). */
using CCtxPool = StatePool<ZSTD_CCtx, NewCCtx, DelCCtx, KeepCCtx>;
using DCtxPool = StatePool<ZSTD_DCtx, NewDCtx, DelDCtx, KeepDCtx>;
using Lz4Pool = StatePool<char, NewLz4State, DelLz4State, KeepAlways>;
CCtxPool &CCtxs() {
  static CCtxPool *pool = new CCtxPool;
  return *pool;
}
DCtxPool &DCtxs() {
  static DCtxPool *pool = new DCtxPool;
  return *pool;
}
Lz4Pool &Lz4States() {
  static Lz4Pool *pool = new Lz4Pool;
  return *pool;
}

/** Output of a method: a client_data buffer freed unless released. */
class OutBuffer {
 public:
  /** Allocates `size` bytes in client_data (nothing for size 0). */
  explicit OutBuffer(u64 size) : size_(size) {
    if (size > 0) buf_ = CHI_IPC->AllocateClientBuffer(size);
  }
  /** Frees the buffer unless it was released into a task. */
  ~OutBuffer() {
    if (!buf_.IsNull()) (void)CHI_IPC->FreeBuffer(buf_.shm_);
  }
  OutBuffer(const OutBuffer &) = delete;
  OutBuffer &operator=(const OutBuffer &) = delete;

  /** False if the allocation failed. */
  bool ok() const { return size_ == 0 || !buf_.IsNull(); }
  /** Where to write (a valid dummy address when the size is 0). */
  char *data() { return buf_.IsNull() ? &dummy_ : buf_.ptr_; }
  /** Hands the buffer to `*out`/`*out_size` (`used` bytes of it). */
  void Release(hipc::Pointer *out, u64 used, u64 *out_size) {
    *out = buf_.IsNull() ? hipc::Pointer::GetNull() : buf_.shm_;
    *out_size = used;
    buf_ = FullPtr<char>();
  }

 private:
  FullPtr<char> buf_;
  u64 size_;
  char dummy_ = 0;
};

/** A private copy of a buffer clients can write. Inputs of up to
 * kMaxKeptBytes go in a buffer each thread keeps (a fresh 1 MiB allocation
 * is an mmap, and its page faults cost more than the copy), unless a copy
 * on this thread still uses it (a method that yielded while holding one);
 * others in one of their own. */
class PrivateCopy {
 public:
  /** Most bytes of the buffer a thread keeps. */
  static constexpr u64 kMaxKeptBytes = 8u << 20;

  /** Copies the `size` bytes at `src` (check ok()). */
  PrivateCopy(const char *src, u64 size) {
    thread_local Kept kept;
    char *dst = nullptr;
    if (size <= kMaxKeptBytes && !kept.in_use) {
      if (kept.size < size || !kept.buf) {
        u64 n = 64 << 10;
        while (n < size) n <<= 1;
        kept.buf.reset(new (std::nothrow) char[n]);
        kept.size = kept.buf ? n : 0;
      }
      dst = kept.buf.get();
      if (dst) {
        kept.in_use = true;
        in_use_ = &kept.in_use;
      }
    } else {
      own_.reset(new (std::nothrow) char[size ? size : 1]);
      dst = own_.get();
    }
    if (!dst) return;
    std::memcpy(dst, src, size);
    data_ = dst;
  }
  /** Hands the kept buffer back (to the thread that made the copy). */
  ~PrivateCopy() {
    if (in_use_) *in_use_ = false;
  }
  PrivateCopy(const PrivateCopy &) = delete;
  PrivateCopy &operator=(const PrivateCopy &) = delete;

  /** False if there was no memory for the copy. */
  bool ok() const { return data_ != nullptr; }
  /** The copy. */
  const char *data() const { return data_; }

 private:
  /** The buffer a thread keeps. */
  struct Kept {
    std::unique_ptr<char[]> buf;
    u64 size = 0;
    bool in_use = false;
  };
  std::unique_ptr<char[]> own_;  ///< A copy in a buffer of its own.
  bool *in_use_ = nullptr;       ///< The kept buffer's flag, if it is ours.
  const char *data_ = nullptr;
};

/** The OutOfMemory status for an output of `size` bytes. */
Status NoRoom(u64 size) {
  return Status::OutOfMemory("client_data has no room for a " +
                             std::to_string(size) + "-byte output");
}

}  // namespace

/** Container of the compressor module. Holds only pooled codec states, so
 * its methods may run concurrently on several workers. */
class Runtime : public Module<Runtime, Compressor> {
 public:
  /** Compresses the task's input into a new client_data buffer. Errors: see
   * compressor_tasks.h. Workers call it. */
  void Run(CompressTask *task, RunContext &rctx) {
    task->out_ = hipc::Pointer::GetNull();
    task->out_size_ = 0;
    const char *src = CHI_IPC->DataBuffer(task->data_, task->size_);
    if (!src) {
      task->SetStatus(Status::InvalidArgument("Compress: input is not " +
                                              std::to_string(task->size_) +
                                              " bytes inside a data segment"));
      return;
    }
    Status s;
    switch (task->algo_) {
      case Algorithm::kZstd:
        s = CompressZstd(task, src);
        break;
      case Algorithm::kLz4:
        s = CompressLz4(task, src);
        break;
      default:
        s = UnknownAlgorithm(static_cast<u32>(task->algo_));
    }
    if (!s.ok()) task->SetStatus(s);
  }

  /** Decompresses the task's input into a new client_data buffer of exactly
   * orig_size_ bytes. Errors: see compressor_tasks.h. Workers call it. */
  void Run(DecompressTask *task, RunContext &rctx) {
    task->out_ = hipc::Pointer::GetNull();
    task->out_size_ = 0;
    const char *src = CHI_IPC->DataBuffer(task->data_, task->size_);
    if (!src) {
      task->SetStatus(Status::InvalidArgument("Decompress: input is not " +
                                              std::to_string(task->size_) +
                                              " bytes inside a data segment"));
      return;
    }
    // One request may claim at most a quarter of client_data (a claimed
    // size is only checked against the data once it is decompressed), so
    // a lying request cannot starve the other clients.
    u64 cap = CHI_IPC->cdata_alloc()->GetRegionSize() / 4;
    if (task->orig_size_ > cap) {
      task->SetStatus(Status::InvalidArgument(
          "Decompress: original size " + std::to_string(task->orig_size_) +
          " is over the per-request limit of " + std::to_string(cap) +
          " bytes (a quarter of client_data)"));
      return;
    }
    // So is the input, which is copied into this process's heap below: no
    // codec makes more than this of `cap` bytes (both bounds are under
    // cap + cap / 255 + 64 KiB).
    const u64 in_cap = cap + cap / 128 + (u64{1} << 16);
    if (task->size_ > in_cap) {
      task->SetStatus(Status::InvalidArgument(
          "Decompress: input of " + std::to_string(task->size_) +
          " bytes is over the per-request limit of " + std::to_string(in_cap) +
          " bytes (what a quarter of client_data compresses to at worst)"));
      return;
    }
    // Every client can write the data segments, so the input may change
    // while a decoder reads it, and a decoder checks what it reads once,
    // not bytes that change under it. It reads a private copy.
    PrivateCopy copy(src, task->size_);
    if (!copy.ok()) {
      task->SetStatus(Status::OutOfMemory(
          "Decompress: no memory for a private copy of the " +
          std::to_string(task->size_) + "-byte input"));
      return;
    }
    src = copy.data();
    Status s;
    switch (task->algo_) {
      case Algorithm::kZstd:
        s = DecompressZstd(task, src);
        break;
      case Algorithm::kLz4:
        s = DecompressLz4(task, src);
        break;
      default:
        s = UnknownAlgorithm(static_cast<u32>(task->algo_));
    }
    if (!s.ok()) task->SetStatus(s);
  }

 private:
  /** The InvalidArgument status for algorithm value `algo`. */
  static Status UnknownAlgorithm(u32 algo) {
    return Status::InvalidArgument("unknown compression algorithm " +
                                   std::to_string(algo) +
                                   " (0 = zstd, 1 = lz4)");
  }

  /** Inputs larger than this (zstd's largest-input parameter table)... */
  static constexpr u64 kZstdLargeInput = 256 * 1024;
  /** ...take zstd levels up to this one (not the "ultra" 20-22). */
  static constexpr int kMaxZstdLevelLarge = 19;

  /** zstd compression of the task's input at `src`. */
  Status CompressZstd(CompressTask *task, const char *src) {
    int level = task->level_ == 0 ? ZSTD_CLEVEL_DEFAULT : task->level_;
    if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel()) {
      return Status::InvalidArgument(
          "zstd level " + std::to_string(task->level_) + " is outside " +
          std::to_string(ZSTD_minCLevel()) + ".." +
          std::to_string(ZSTD_maxCLevel()));
    }
    if (level > kMaxZstdLevelLarge && task->size_ > kZstdLargeInput) {
      // zstd's tables for these levels and inputs take hundreds of MB per
      // context.
      return Status::InvalidArgument(
          "zstd levels above " + std::to_string(kMaxZstdLevelLarge) +
          " take inputs of at most " + std::to_string(kZstdLargeInput) +
          " bytes");
    }
    size_t bound = ZSTD_compressBound(task->size_);
    if (ZSTD_isError(bound)) {
      return Status::InvalidArgument("zstd: input too large");
    }
    OutBuffer out(bound);
    if (!out.ok()) return NoRoom(bound);
    auto cctx = CCtxs().Get();
    if (!cctx) return Status::OutOfMemory("zstd: no memory for a context");
    size_t n = ZSTD_compressCCtx(cctx.get(), out.data(), bound, src,
                                 task->size_, level);
    if (ZSTD_isError(n)) {
      return Status::Internal(std::string("zstd: ") + ZSTD_getErrorName(n));
    }
    out.Release(&task->out_, n, &task->out_size_);
    return Status::Ok();
  }

  /** lz4 compression of the task's input at `src`. */
  Status CompressLz4(CompressTask *task, const char *src) {
    if (task->level_ < 0) {
      return Status::InvalidArgument("lz4 level (acceleration) must be >= 0");
    }
    if (task->size_ > static_cast<u64>(LZ4_MAX_INPUT_SIZE)) {
      return Status::InvalidArgument("lz4: input larger than " +
                                     std::to_string(LZ4_MAX_INPUT_SIZE));
    }
    int size = static_cast<int>(task->size_);
    int bound = LZ4_compressBound(size);
    OutBuffer out(bound);
    if (!out.ok()) return NoRoom(bound);
    auto state = Lz4States().Get();
    if (!state) return Status::OutOfMemory("lz4: no memory for a state");
    int accel = task->level_ == 0 ? 1 : task->level_;
    int n = LZ4_compress_fast_extState(state.get(), src, out.data(), size,
                                       bound, accel);
    if (n <= 0) return Status::Internal("lz4: compression failed");
    out.Release(&task->out_, static_cast<u64>(n), &task->out_size_);
    return Status::Ok();
  }

  /** zstd decompression of the task's input at `src`. */
  Status DecompressZstd(DecompressTask *task, const char *src) {
    unsigned long long content = ZSTD_getFrameContentSize(src, task->size_);
    if (content == ZSTD_CONTENTSIZE_ERROR) {
      return Status::InvalidArgument("zstd: input is not a zstd frame");
    }
    if (content != ZSTD_CONTENTSIZE_UNKNOWN && content != task->orig_size_) {
      return Status::InvalidArgument("zstd: frame holds " +
                                     std::to_string(content) +
                                     " bytes, not the given original size " +
                                     std::to_string(task->orig_size_));
    }
    OutBuffer out(task->orig_size_);
    if (!out.ok()) return NoRoom(task->orig_size_);
    auto dctx = DCtxs().Get();
    if (!dctx) return Status::OutOfMemory("zstd: no memory for a context");
    size_t n = ZSTD_decompressDCtx(dctx.get(), out.data(), task->orig_size_,
                                   src, task->size_);
    if (ZSTD_isError(n)) {
      return Status::InvalidArgument(std::string("zstd: corrupt input: ") +
                                     ZSTD_getErrorName(n));
    }
    if (n != task->orig_size_) {
      return Status::InvalidArgument("zstd: decompressed " + std::to_string(n) +
                                     " bytes, expected " +
                                     std::to_string(task->orig_size_));
    }
    out.Release(&task->out_, n, &task->out_size_);
    return Status::Ok();
  }

  /** lz4 decompression of the task's input at `src`. */
  Status DecompressLz4(DecompressTask *task, const char *src) {
    if (task->size_ > static_cast<u64>(INT_MAX) ||
        task->orig_size_ > static_cast<u64>(LZ4_MAX_INPUT_SIZE)) {
      return Status::InvalidArgument("lz4: sizes must be below 2 GB");
    }
    int orig = static_cast<int>(task->orig_size_);
    OutBuffer out(task->orig_size_);
    if (!out.ok()) return NoRoom(task->orig_size_);
    // LZ4_decompress_safe never writes past `orig` bytes, so corrupt input
    // or an output larger than announced is an error, not an overflow.
    int n = LZ4_decompress_safe(src, out.data(), static_cast<int>(task->size_),
                                orig);
    if (n < 0) {
      return Status::InvalidArgument(
          "lz4: corrupt input or original size too small");
    }
    if (n != orig) {
      return Status::InvalidArgument("lz4: decompressed " + std::to_string(n) +
                                     " bytes, expected " +
                                     std::to_string(orig));
    }
    out.Release(&task->out_, static_cast<u64>(n), &task->out_size_);
    return Status::Ok();
  }
};

}  // namespace chi::compressor

CHI_MODULE(chi::compressor::Runtime);
