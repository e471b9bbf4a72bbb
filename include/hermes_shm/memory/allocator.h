// Shared-memory allocators usable by many threads in many processes at once.
//
// HeapAllocator formats a region (usually a PosixShmMmap's data area) as a
// size-class heap: a bump pointer for fresh memory plus one lock-free Treiber
// free list per class. Every block carries a 16-byte header (its class, its
// state -- used, free or cached -- its owner's pid and the free-list link),
// so Free needs no size, detects double frees, and a reaper can find and free
// what a dead process held.
//
// Fast paths (popping a class list, pushing a freed block) are single CAS
// steps. A process killed there leaks at most the blocks it held. Everything
// that rewrites block boundaries -- carving fresh blocks off the bump
// pointer, splitting a free block of a larger class, merging address-adjacent
// free blocks and re-splitting them into other classes, giving a trailing run
// back to the bump pointer -- runs under one process-shared heap lock (a
// word naming the holder's pid and thread, no pointers; see
// heap_allocator.cc) with an intent record, so a process killed there leaves
// the heap walkable and the next lock holder repairs it. Memory freed in one
// class is thus reused by the others: an allocation that finds its list
// empty and the bump region exhausted splits a larger free block or, failing
// that, merges every free block and splits what it needs.
//
// ThreadLocalAllocator adds per-thread caches (process-private) over the same
// heap: most Allocate/Free calls touch no shared cache line and never the
// heap lock. Cached blocks are marked as cached by the caching process, go
// back to the heap when a cache overflows, on FlushThreadCache(), when the
// thread exits, or -- for a dead process -- through ReclaimDeadProcess().
//
// Trust: the heap's shape is copied into the process at Create/Attach
// (validated at Attach) and never re-read; every offset read back from the
// region (list heads and links, the bump pointer, block headers) is checked
// before use. Corruption makes lists look empty, walks fail with an error
// and pointers look invalid; it never crashes or hangs the caller.
//
// Limits: requests above kMaxAllocSize fail; blocks held in other threads'
// caches are not merged until those threads flush.
//
// Thread safety: after Create/Attach, every member may be called concurrently
// from any thread of any process that attached the region, unless its
// comment says otherwise.
#ifndef HERMES_SHM_MEMORY_ALLOCATOR_H_
#define HERMES_SHM_MEMORY_ALLOCATOR_H_

#include <functional>
#include <new>
#include <type_traits>
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
class HeapOps;
class ThreadCacheOps;
class HeapTestHooks;
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

/** State of a carved block, as a heap walk reports it. */
enum class BlockState : u32 {
  kUsed,    ///< Handed out by Allocate and not yet freed.
  kFree,    ///< On a shared free list (or being moved to or from one).
  kCached,  ///< Held in a ThreadLocalAllocator thread cache of owner_pid.
};

/** One carved block, as ForEachBlock reports it. A snapshot: the state and
 * owner of a block other threads use may change right after. */
struct BlockInfo {
  Pointer ptr;       ///< The user pointer (as Allocate returned it).
  u64 usable_size;   ///< User bytes (block size minus the header).
  BlockState state;  ///< See BlockState.
  int owner_pid;     ///< Allocating/caching process; -1 for free blocks.
};

/** Size-class heap in a shared region. See the file comment. */
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
   * 16-byte aligned and no other process may use it yet. Does not register
   * the allocator (see MemoryManager). Not concurrent with other members. */
  Status Create(AllocatorId id, char *region, size_t size,
                size_t custom_header_size = 0);
  /** Attaches to a heap another process (or this one) created in `region`,
   * validating and copying its shape. Not concurrent with other members. */
  Status Attach(char *region, size_t size);

  /** Allocates `size` bytes (16-byte aligned), owned by the calling process.
   * Returns null when the heap is exhausted or size > kMaxAllocSize. Lock
   * free unless the class list is empty; then it takes the heap lock. */
  FullPtr<char> Allocate(const MemContext &ctx, size_t size);
  /** Frees a block from Allocate. Null is a no-op. Returns InvalidArgument
   * for a pointer that is not a live block of this heap (double free,
   * foreign or corrupt pointer); the heap is left unchanged then. Lock free.
   */
  Status Free(const MemContext &ctx, const Pointer &p);
  /** Free, but only if process `owner` owns the block (any owner if
   * `owner` is negative), checked in the same atomic step as the free
   * (InvalidArgument otherwise, the heap left unchanged): for freeing
   * blocks another process named. Lock free. */
  Status FreeOwnedBy(const MemContext &ctx, const Pointer &p, int owner);

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
  /** Bytes of blocks handed out or held in thread caches (headers
   * included); once every thread has flushed its cache, exactly the bytes
   * handed out and not yet freed. */
  hshm::i64 GetBytesInUse() const;
  /** Bytes not yet carved from the region by the bump pointer. */
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
  /** Usable bytes of the live (in-use) block `p` names, or 0 if `p` is not
   * the start of one (validates untrusted pointers in O(1); the block lies
   * inside the region whatever the shared memory holds). Inline (below):
   * the runtime checks every task pointer a client pushes with it. */
  inline u64 LiveBlockSize(const Pointer &p) const;

  /** Owner pid of the live block `p`, or -1 if `p` is not a live block. */
  int BlockOwner(const Pointer &p) const;
  /** Makes `pid` the owner of the live block `p` (e.g. a buffer handed to
   * the client that will free it). No-op if `p` is not a live block. */
  void SetBlockOwner(const Pointer &p, int pid);

  /** Calls fn(const BlockInfo &) for every carved block in address order,
   * under the heap lock (block boundaries cannot change meanwhile; other
   * threads still allocate and free). fn may call Free, LiveBlockSize,
   * BlockOwner and SetBlockOwner, but nothing that takes the heap lock
   * (Allocate, ForEachBlock, LiveBytes, ReclaimDeadProcess; such a call fails
   * or returns null instead of deadlocking). Stops and returns an error on
   * the first invalid block header, or if the heap lock cannot be taken. */
  template <typename F>
  Status ForEachBlock(F &&fn) const {
    using Fn = typename std::remove_reference<F>::type;
    return Walk([](void *arg,
                   const BlockInfo &info) { (*static_cast<Fn *>(arg))(info); },
                const_cast<void *>(static_cast<const void *>(&fn)));
  }
  /** Frees every block owned by the dead process `pid` that is cached, and
   * every used one for which may_free_used(info) returns true (it runs under
   * the heap lock, with the restrictions of ForEachBlock's fn). Returns the
   * bytes freed (block sizes, headers included). Safe while other processes
   * allocate and free; refuses (returns 0) for the calling process's own pid.
   * REQUIRES: `pid` is dead and its pid not yet reused. If `walk` is given
   * it gets the walk's status: not OK when the heap lock could not be taken
   * or a corrupt header stopped the walk (blocks past it were not looked
   * at; calling again later frees what is left). */
  u64 ReclaimDeadProcess(
      int pid, const std::function<bool(const BlockInfo &)> &may_free_used,
      Status *walk = nullptr);
  /** Exact bytes (block sizes, headers included) of used blocks, only those
   * owned by `pid` unless it is -1, found by walking the heap under the
   * heap lock (restrictions as ForEachBlock). On a corrupt heap, counts the
   * blocks before the bad header; 0 if the heap lock cannot be taken. */
  u64 LiveBytes(int pid = -1) const;

  /** Size class of a block of `s` bytes (header included): 32, 48, 64,
   * then four classes per power of two. Inline: on every allocation. */
  static constexpr u32 ClassOf(u64 s) {
    if (s <= 32) return 0;
    if (s <= 48) return 1;
    if (s <= 64) return 2;
    u32 m = 63 - static_cast<u32>(__builtin_clzll(s - 1));  // 2^m < s <= 2^m+1
    u64 step = (s - 1 - (1ull << m)) >> (m - 2);            // 0..3
    return 3 + (m - 6) * 4 + static_cast<u32>(step);
  }
  /** Block size (header included) of class `cls`. */
  static constexpr u64 ClassSize(u32 cls) {
    if (cls < 3) return 32 + 16 * static_cast<u64>(cls);
    u32 m = (cls - 3) / 4 + 6;
    u64 step = (cls - 3) % 4;
    return (1ull << m) + ((step + 1) << (m - 2));
  }

 protected:
  friend class ThreadLocalAllocator;
  friend class internal::HeapOps;
  friend class internal::ThreadCacheOps;
  friend class internal::HeapTestHooks;
  /** Walk callback: arg, block. */
  using WalkFn = void (*)(void *, const BlockInfo &);

  char *custom_header() const;
  /** The bump pointer, checked against the private shape (heap_end_ if the
   * shared value is corrupt). Defined inline in heap_allocator.cc, the only
   * file that may call it. */
  u64 LoadTop() const;
  /** Pops a free block of class `cls` and sets its header state to `claim`
   * (a packed state word); 0 when the list is empty or corrupt. Lock free. */
  u64 PopFree(u32 cls, u64 claim);
  /** Pushes the chain first..last (linked through next_, states already
   * free) onto list `cls`. Lock free. */
  void PushFreeChain(u32 cls, u64 first, u64 last);
  /** Under the heap lock, gets up to `keep` blocks of class `cls` into `out`
   * with header state `claim`, from the class list, the bump pointer, a
   * split free block of a larger class or (if `defrag`) by merging free
   * blocks; up to `spare` more of the class go onto its free list. Returns how
   * many it kept (0: out of memory, or the lock could not be taken). Does not
   * count them in use. */
  u32 SlowAllocate(u32 cls, u32 keep, u32 spare, u64 claim, bool defrag,
                   u64 *out);
  /** Validates `p` as a live block (owned by `expect_owner`, unless that
   * is negative) and moves its header from used to state `new_magic` owned
   * by `new_owner`; returns its block offset and class, or an error (the
   * heap unchanged). Lock free. Inline: defined in heap_allocator.cc, its
   * only caller, for the frees. */
  inline Status Reclaim(const Pointer &p, u32 new_magic, u32 new_owner,
                        u64 *block_off, u32 *cls, int expect_owner = -1);
  /** Block offset of live block `p`, with its header state; 0 if `p` is
   * not a live block. */
  u64 FindLive(const Pointer &p, u64 *state) const;
  /** LiveBlockSize through FindLive: for a corrupt shared bump pointer. */
  u64 LiveBlockSizeSlow(const Pointer &p) const;
  /** Block header layout of heap_allocator.cc (static_asserts there keep
   * them in step), for the inline LiveBlockSize: where the state word lies,
   * and how it encodes magic (bits 40..63) and class (bits 32..39). */
  static constexpr size_t kStateOffset = 8;
  static constexpr u32 kUsedMagic = 0xA1C8EDu;
  /** Adds `delta` bytes to the shared in-use counter. */
  void AddInUse(hshm::i64 delta);
  /** ForEachBlock without the template. */
  Status Walk(WalkFn fn, void *arg) const;

  internal::HeapHeader *hdr_ = nullptr;
  /** &hdr_->heap_top_ (the shared bump pointer), for inline readers. */
  const std::atomic<u64> *top_ = nullptr;
  char *region_ = nullptr;
  size_t size_ = 0;
  AllocatorId id_;
  // Process-private copy of the heap's shape (see the file comment).
  u64 custom_off_ = 0;
  u64 custom_size_ = 0;
  u64 heap_begin_ = 0;
  u64 heap_end_ = 0;
};

namespace internal {
/** HeapAllocator::ClassSize of every class, for lookups on hot paths. */
struct ClassSizeTable {
  u64 size[HeapAllocator::kNumClasses];
};
constexpr ClassSizeTable MakeClassSizeTable() {
  ClassSizeTable t{};
  for (u32 c = 0; c < HeapAllocator::kNumClasses; ++c) {
    t.size[c] = HeapAllocator::ClassSize(c);
  }
  return t;
}
inline constexpr ClassSizeTable kClassSizes = MakeClassSizeTable();
}  // namespace internal

// The checks of FindLive, with the bump pointer read in place; a corrupt
// bump pointer (only a hostile process makes one) goes the slow way, which
// reports it.
inline u64 HeapAllocator::LiveBlockSize(const Pointer &p) const {
  const u64 uoff = p.off_.off_;  // a null pointer's is not aligned
  if (!top_ || p.alloc_id_ != id_ || uoff < heap_begin_ + kBlockHeaderSize ||
      uoff % kAlignment != 0) {
    return 0;
  }
  const u64 top = top_->load(std::memory_order_acquire);
  if (__builtin_expect(
          top < heap_begin_ || top > heap_end_ || top % kAlignment != 0, 0)) {
    return LiveBlockSizeSlow(p);
  }
  const u64 off = uoff - kBlockHeaderSize;
  if (off >= top || top - off < ClassSize(0)) return 0;
  const u64 s =
      reinterpret_cast<const std::atomic<u64> *>(region_ + off + kStateOffset)
          ->load(std::memory_order_acquire);
  const u32 cls = static_cast<u32>(s >> 32) & 0xff;
  if (static_cast<u32>(s >> 40) != kUsedMagic || cls >= kNumClasses) return 0;
  const u64 bs = internal::kClassSizes.size[cls];
  return bs <= top - off ? bs - kBlockHeaderSize : 0;
}

/** HeapAllocator plus per-thread caches of small blocks. */
class ThreadLocalAllocator : public AllocatorOps<ThreadLocalAllocator> {
 public:
  ThreadLocalAllocator() = default;

  /** See HeapAllocator::Create. */
  Status Create(AllocatorId id, char *region, size_t size,
                size_t custom_header_size = 0);
  /** See HeapAllocator::Attach. */
  Status Attach(char *region, size_t size);
  /** Allocates `size` bytes; null when out of memory. Usually touches only
   * the calling thread's cache; takes the heap lock only when the shared
   * class list is empty too (to carve, split or merge). */
  FullPtr<char> Allocate(const MemContext &ctx, size_t size);
  /** Frees a block (into the calling thread's cache when it is small);
   * errors as HeapAllocator::Free. Lock free. */
  Status Free(const MemContext &ctx, const Pointer &p);
  /** See HeapAllocator::FreeOwnedBy. The block goes back to the shared
   * heap, never to this thread's cache. Lock free. */
  Status FreeOwnedBy(const MemContext &ctx, const Pointer &p, int owner);
  /** Returns the calling thread's cached blocks to the shared heap. */
  void FlushThreadCache();
  /** Returns every thread's cached blocks of this allocator to the shared
   * heap (a thread keeps its cache, emptied). REQUIRES: no thread
   * allocates or frees with this allocator meanwhile, e.g. when the
   * process detaches it. */
  void FlushAllThreadCaches();

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
  /** See HeapAllocator::BlockOwner. */
  int BlockOwner(const Pointer &p) const { return heap_.BlockOwner(p); }
  /** See HeapAllocator::SetBlockOwner. */
  void SetBlockOwner(const Pointer &p, int pid) { heap_.SetBlockOwner(p, pid); }
  /** See HeapAllocator::ForEachBlock. */
  template <typename F>
  Status ForEachBlock(F &&fn) const {
    return heap_.ForEachBlock(std::forward<F>(fn));
  }
  /** See HeapAllocator::ReclaimDeadProcess. */
  u64 ReclaimDeadProcess(
      int pid, const std::function<bool(const BlockInfo &)> &may_free_used,
      Status *walk = nullptr) {
    return heap_.ReclaimDeadProcess(pid, may_free_used, walk);
  }
  /** See HeapAllocator::LiveBytes. */
  u64 LiveBytes(int pid = -1) const { return heap_.LiveBytes(pid); }
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

/** Bounds, for the calling thread and while it lives, how long a heap
 * slow path waits for a heap lock held by another thread or process (the
 * default is 10 s). A client that completes a task itself because the
 * runtime stopped uses it: a stopped runtime may hold the lock forever.
 * A wait that runs out fails quietly (the allocation returns null). Scopes
 * nest; the innermost wins. */
class HeapLockWaitLimit {
 public:
  /** Limits this thread's heap-lock waits to `ms` milliseconds. */
  explicit HeapLockWaitLimit(u64 ms);
  /** Restores the previous limit. */
  ~HeapLockWaitLimit();
  HeapLockWaitLimit(const HeapLockWaitLimit &) = delete;
  HeapLockWaitLimit &operator=(const HeapLockWaitLimit &) = delete;

 private:
  u64 prev_ns_;
};

/** Sets `fn` (null: none) to be called by the first thread of a process
 * that claims a heap block as its owner under a pid not seen before: once
 * in the process that sets it, and once more in each forked child, before
 * that thread's first block carries the child's pid (a client registers
 * the pid with whoever frees a dead process's blocks). It runs on the
 * allocating thread before any heap lock is taken, and may allocate (it is
 * not re-entered). Other threads of the process do not wait for it: one
 * the child starts meanwhile may claim blocks before it returns. Any
 * thread; takes effect for later allocations. */
void SetNewOwnerHook(void (*fn)());

namespace internal {

/** Test-only access to heap internals (simulating crashes and corruption).
 * Never call these in production code. */
class HeapTestHooks {
 public:
  /** Takes the heap lock and keeps it (a test child then dies holding it).
   * Returns false if the lock could not be taken. */
  static bool LockMutex(HeapAllocator &h);
  /** Overwrites the shared heap-lock word with `raw`, as a hostile process
   * could. The word is (holder thread id << 32) | holder pid; 0 is free. */
  static void SetLockWord(HeapAllocator &h, u64 raw);
  /** The shared heap-lock word (see SetLockWord). */
  static u64 LockWord(const HeapAllocator &h);
  /** Sets how long a heap-lock wait lasts before failing, for every heap in
   * this process, in ms; 0 restores the default (10 s). Call it while no
   * thread waits for a heap lock. */
  static void SetLockTimeoutMs(u64 ms);
  /** Records a boundary-rewrite intent over block offsets [begin, end), as
   * the slow path does before rewriting. REQUIRES: LockMutex held. */
  static void SetIntent(HeapAllocator &h, u64 begin, u64 end);
  /** Overwrites the raw head word of free list `cls`. */
  static void SetListHead(HeapAllocator &h, u32 cls, u64 raw);
  /** Overwrites the shared bump pointer. */
  static void SetTop(HeapAllocator &h, u64 top);
  /** Writes a free block header of class `cls` at block offset `off` and
   * makes it the head of that class's list, as a hostile process could. */
  static void ForgeFreeBlock(HeapAllocator &h, u32 cls, u64 off);
  /** Overwrites the shape fields (region size, heap bounds) in the shared
   * header with `value`, as a hostile process could. */
  static void CorruptShape(HeapAllocator &h, u64 value);
};

}  // namespace internal

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
