// Shared-memory allocators usable by many threads in many processes at once.
//
// HeapAllocator formats a region (usually a PosixShmMmap's data area) as a
// lock-free heap of size classes: a bump pointer for fresh memory plus one
// Treiber free list per class. Every block carries a 16-byte header (its
// class, an in-use magic and the free-list link), so Free needs no size and
// detects double frees. Free-list heads pack a 30-bit ABA tag beside the
// block offset, and all shared state changes by single CAS/fetch_add steps, so
// a process killed at any instant can leak the block it held but never leaves
// a lock held or a list broken for the others.
//
// ThreadLocalAllocator adds per-thread caches (process-private) over the same
// heap: most Allocate/Free calls touch no shared cache line. Cached blocks go
// back to the heap when a cache overflows, on FlushThreadCache(), and when the
// thread exits.
//
// Limits: blocks are never split or merged, so memory freed in one size class
// is reused only by that class; requests above kMaxAllocSize fail.
//
// Thread safety: after Create/Attach, every member may be called concurrently
// from any thread of any process that attached the region.
#ifndef HERMES_SHM_MEMORY_ALLOCATOR_H_
#define HERMES_SHM_MEMORY_ALLOCATOR_H_

#include <new>
#include <utility>

#include "hermes_shm/memory/pointer.h"
#include "hermes_shm/status.h"
#include "hermes_shm/thread_model.h"

namespace hipc {

using hshm::Status;

/** Per-call context: the calling thread's id (kept for API parity with
 * HSHM; the allocators find their thread caches without it). */
struct MemContext {
  hshm::ThreadId tid_ = 0;
  MemContext() = default;
  explicit MemContext(hshm::ThreadId tid) : tid_(tid) {}
};

/** The default memory context. */
#define HSHM_MCTX (::hipc::MemContext())

namespace internal {
struct HeapHeader;
class ThreadCacheOps;
}  // namespace internal

/** Typed helpers shared by the allocators (CRTP over Derived::Allocate/Free).
 */
template <typename Derived>
class AllocatorOps {
 public:
  /** Allocates and constructs a T; null FullPtr when out of memory. */
  template <typename T, typename... Args>
  FullPtr<T> NewObj(const MemContext &ctx, Args &&...args) {
    FullPtr<char> p = self()->Allocate(ctx, sizeof(T));
    if (p.IsNull()) return FullPtr<T>();
    new (p.ptr_) T(std::forward<Args>(args)...);
    return p.template Cast<T>();
  }
  /** Destroys and frees an object made by NewObj. Null is a no-op. */
  template <typename T>
  Status DelObj(const MemContext &ctx, FullPtr<T> obj) {
    if (obj.IsNull()) return Status::Ok();
    obj.ptr_->~T();
    return self()->Free(ctx, obj.shm_);
  }
  /** Allocates `count` uninitialised Ts; null when out of memory. */
  template <typename T>
  FullPtr<T> AllocatePtr(const MemContext &ctx, size_t count = 1) {
    return self()->Allocate(ctx, sizeof(T) * count).template Cast<T>();
  }

 private:
  Derived *self() { return static_cast<Derived *>(this); }
};

/** Lock-free size-class heap in a shared region. See the file comment. */
class HeapAllocator : public AllocatorOps<HeapAllocator> {
 public:
  /** Bytes in front of every block's user data. */
  static constexpr size_t kBlockHeaderSize = 16;
  /** Alignment of every allocation. */
  static constexpr size_t kAlignment = 16;
  /** Number of size classes. */
  static constexpr u32 kNumClasses = 128;
  /** Largest allocation (user bytes). */
  static constexpr u64 kMaxAllocSize = (1ull << 36) - kBlockHeaderSize;

  HeapAllocator() = default;
  HeapAllocator(const HeapAllocator &) = delete;
  HeapAllocator &operator=(const HeapAllocator &) = delete;

  /** Formats [region, region + size) as a new heap with id `id` and a
   * zeroed custom header of `custom_header_size` bytes. The region must be
   * 16-byte aligned. Does not register the allocator (see MemoryManager). */
  Status Create(AllocatorId id, char *region, size_t size,
                size_t custom_header_size = 0);
  /** Attaches to a heap another process (or this one) created in `region`.
   */
  Status Attach(char *region, size_t size);

  /** Allocates `size` bytes (16-byte aligned). Returns null when the heap is
   * exhausted or size > kMaxAllocSize. */
  FullPtr<char> Allocate(const MemContext &ctx, size_t size);
  /** Frees a block from Allocate. Null is a no-op. Returns InvalidArgument
   * for a pointer that is not a live block of this heap (double free,
   * foreign or corrupt pointer); the heap is left unchanged then. */
  Status Free(const MemContext &ctx, const Pointer &p);

  /** The custom header reserved at Create (null if none was). */
  template <typename T>
  T *GetCustomHeader() const {
    return reinterpret_cast<T *>(custom_header());
  }
  /** This allocator's id. */
  AllocatorId GetId() const { return id_; }
  /** Start of the region (offset 0). */
  char *GetRegion() const { return region_; }
  /** Size of the region. */
  size_t GetRegionSize() const { return size_; }
  /** Bytes handed out and not yet freed (block sizes, headers included).
   * With ThreadLocalAllocator this lags by what threads have not flushed. */
  hshm::i64 GetBytesInUse() const;
  /** Bytes never yet carved from the region by the bump pointer. */
  u64 GetBytesUnreserved() const;
  /** The Pointer for a process address inside this region. */
  Pointer ToPointer(const void *addr) const {
    return Pointer(id_,
                   static_cast<u64>(static_cast<const char *>(addr) - region_));
  }
  /** True if `p` names a live block of this heap with room for `size` bytes.
   */
  bool IsLiveBlock(const Pointer &p, size_t size) const {
    u64 n = LiveBlockSize(p);
    return n != 0 && n >= size;
  }
  /** Usable bytes of the live block `p` names, or 0 if `p` is not a live
   * block of this heap (validates untrusted pointers in O(1)). */
  u64 LiveBlockSize(const Pointer &p) const;

  /** Size class of a block of `block_size` bytes (header included). */
  static u32 ClassOf(u64 block_size);
  /** Block size (header included) of class `cls`. */
  static u64 ClassSize(u32 cls);

 protected:
  friend class ThreadLocalAllocator;
  friend class internal::ThreadCacheOps;
  char *custom_header() const;
  /** Pops a free block of class `cls`; 0 when the list is empty. */
  u64 PopFree(u32 cls);
  /** Pushes the chain first..last (linked through next_) onto list `cls`. */
  void PushFreeChain(u32 cls, u64 first, u64 last);
  /** Carves up to `n` blocks of class `cls` from the bump region into
   * `out`; returns how many it carved (0 when the region is exhausted). */
  u32 BumpAllocate(u32 cls, u32 n, u64 *out);
  /** Marks block `block_off` in use and returns its FullPtr. */
  FullPtr<char> Hand(u64 block_off);
  /** Validates `p` and flips its block to free; returns its block offset
   * and class, or an error. */
  Status Reclaim(const Pointer &p, u64 *block_off, u32 *cls);
  /** Adds `delta` bytes to the shared in-use counter. */
  void AddInUse(hshm::i64 delta);

  internal::HeapHeader *hdr_ = nullptr;
  char *region_ = nullptr;
  size_t size_ = 0;
  AllocatorId id_;
};

/** HeapAllocator plus per-thread caches of small blocks. */
class ThreadLocalAllocator : public AllocatorOps<ThreadLocalAllocator> {
 public:
  ThreadLocalAllocator() = default;

  /** See HeapAllocator::Create. */
  Status Create(AllocatorId id, char *region, size_t size,
                size_t custom_header_size = 0);
  /** See HeapAllocator::Attach. */
  Status Attach(char *region, size_t size);
  /** Allocates `size` bytes; null when out of memory. */
  FullPtr<char> Allocate(const MemContext &ctx, size_t size);
  /** Frees a block; errors as HeapAllocator::Free. */
  Status Free(const MemContext &ctx, const Pointer &p);
  /** Returns the calling thread's cached blocks and pending counts to the
   * shared heap. */
  void FlushThreadCache();

  template <typename T>
  T *GetCustomHeader() const {
    return heap_.GetCustomHeader<T>();
  }
  AllocatorId GetId() const { return heap_.GetId(); }
  char *GetRegion() const { return heap_.GetRegion(); }
  size_t GetRegionSize() const { return heap_.GetRegionSize(); }
  hshm::i64 GetBytesInUse() const { return heap_.GetBytesInUse(); }
  u64 GetBytesUnreserved() const { return heap_.GetBytesUnreserved(); }
  Pointer ToPointer(const void *addr) const { return heap_.ToPointer(addr); }
  bool IsLiveBlock(const Pointer &p, size_t size) const {
    return heap_.IsLiveBlock(p, size);
  }
  u64 LiveBlockSize(const Pointer &p) const { return heap_.LiveBlockSize(p); }
  /** The underlying shared heap. */
  HeapAllocator &heap() { return heap_; }
  /** Unique per Create/Attach; thread caches of older ones are dropped. */
  u64 generation() const { return generation_; }

  /** Classes cached per thread: blocks up to 8 KiB + header, so requests of
   * up to 8 KiB (4 KiB pages included) stay thread-local. */
  static constexpr u32 kCachedClasses = 32;
  /** Blocks a thread caches per class before giving half back. */
  static constexpr u32 kCacheCapacity = 64;

 private:
  friend class internal::ThreadCacheOps;
  HeapAllocator heap_;
  u64 generation_ = 0;  ///< Unique per Create/Attach, to spot stale caches.
};

/** An allocator plus a MemContext, passed to shared-memory constructors. */
template <typename AllocT>
struct CtxAllocator {
  MemContext ctx_;
  AllocT *alloc_ = nullptr;

  CtxAllocator() = default;
  CtxAllocator(AllocT *alloc) : alloc_(alloc) {}  // NOLINT
  CtxAllocator(const MemContext &ctx, AllocT *alloc)
      : ctx_(ctx), alloc_(alloc) {}
  AllocT *operator->() const { return alloc_; }
  AllocT *get() const { return alloc_; }
  /** NewObj with this context. */
  template <typename T, typename... Args>
  FullPtr<T> NewObj(Args &&...args) const {
    return alloc_->template NewObj<T>(ctx_, std::forward<Args>(args)...);
  }
  /** DelObj with this context. */
  template <typename T>
  Status DelObj(FullPtr<T> obj) const {
    return alloc_->DelObj(ctx_, obj);
  }
};

}  // namespace hipc

#endif  // HERMES_SHM_MEMORY_ALLOCATOR_H_
