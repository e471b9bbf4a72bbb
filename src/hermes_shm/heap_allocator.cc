// How the heap works
// ------------------
// Region layout: [HeapHeader][custom header][blocks ... bump top ... end).
// A block is a 16-byte BlockHeader followed by user data; its size is one of
// kNumClasses size classes (32, 48, 64, then four steps per power of two), so
// every block start and every user pointer is 16-byte aligned.
//
// Fresh blocks come from the bump pointer heap_top_ (one CAS carves one or a
// batch). Freed blocks go on their class's Treiber stack. A stack head packs
// (block offset / 16) in its low 34 bits and an ABA tag in its high 30 bits,
// bumped on every push and pop. Readers of a stale head may read the `next_`
// field of a block another thread owns: that field lives in the header (never
// user data) and is atomic, and the CAS then fails on the changed tag.
//
// Each block header's magic_ says whether it is in use; Free flips it with a
// CAS, so a double free or a pointer that is not a block start is reported and
// changes nothing.
#include <pthread.h>

#include <cstring>
#include <mutex>

#include "hermes_shm/memory/allocator.h"
#include "hermes_shm/memory/memory_manager.h"

namespace hipc {

namespace internal {

constexpr u64 kHeapMagic = 0x4348494845415031ull;  // "CHIHEAP1"
constexpr u32 kMagicUsed = 0xA110C8EDu;
constexpr u32 kMagicFree = 0xF4EEB10Cu;
/** Free-list heads: (block offset / 16) in the low kOffBits bits (regions up
 * to 256 GiB), an ABA tag in the high 30 bits: a stale CAS needs 2^30 list
 * operations between a thread's load and its CAS to succeed wrongly. */
constexpr u64 kOffBits = 34;
constexpr u64 kOffMask = (1ull << kOffBits) - 1;
constexpr u64 kTagMask = (1ull << (64 - kOffBits)) - 1;

/** Header of every block, in front of the user data. */
struct BlockHeader {
  std::atomic<u64> next_;   ///< Next free block offset (valid while free).
  std::atomic<u32> magic_;  ///< kMagicUsed or kMagicFree.
  u32 class_;               ///< Size class, fixed when the block is carved.
};
static_assert(sizeof(BlockHeader) == HeapAllocator::kBlockHeaderSize, "hdr");

/** One free list, alone on its cache line. */
struct alignas(HSHM_CACHELINE_SIZE) FreeList {
  std::atomic<u64> head_;
};

/** Shared state at offset 0 of the region. */
struct HeapHeader {
  std::atomic<u64> magic_;
  AllocatorId id_;
  u64 region_size_;
  u64 custom_off_;
  u64 custom_size_;
  u64 heap_begin_;
  u64 heap_end_;
  alignas(HSHM_CACHELINE_SIZE) std::atomic<u64> heap_top_;
  alignas(HSHM_CACHELINE_SIZE) std::atomic<hshm::i64> bytes_in_use_;
  FreeList lists_[HeapAllocator::kNumClasses];
};

/** Process-private cache of one thread for one ThreadLocalAllocator. */
struct ThreadCache {
  struct Bin {
    u32 n = 0;
    u64 offs[ThreadLocalAllocator::kCacheCapacity];
  };
  ThreadLocalAllocator *owner = nullptr;
  u64 generation = 0;
  hshm::i64 delta = 0;  ///< In-use bytes not yet added to the shared counter.
  Bin bins[ThreadLocalAllocator::kCachedClasses];
};

/** Friend of ThreadLocalAllocator that moves cached blocks back. */
class ThreadCacheOps {
 public:
  /** Returns every cached block and the pending delta to `cache->owner`.
   * REQUIRES: the owner is alive and the cache belongs to the caller. */
  static void Flush(ThreadCache *cache) {
    HeapAllocator &heap = cache->owner->heap_;
    for (u32 cls = 0; cls < ThreadLocalAllocator::kCachedClasses; ++cls) {
      auto &bin = cache->bins[cls];
      if (bin.n) ReleaseRange(heap, cls, bin.offs, bin.n);
      bin.n = 0;
    }
    if (cache->delta) heap.AddInUse(cache->delta);
    cache->delta = 0;
  }
  /** Links offs[0..n) and pushes them onto `heap`'s list for `cls`. */
  static void ReleaseRange(HeapAllocator &heap, u32 cls, const u64 *offs,
                           u32 n) {
    for (u32 i = 0; i + 1 < n; ++i) {
      auto *b = reinterpret_cast<BlockHeader *>(heap.region_ + offs[i]);
      b->next_.store(offs[i + 1], std::memory_order_relaxed);
    }
    heap.PushFreeChain(cls, offs[0], offs[n - 1]);
  }
};

/** The calling thread's caches, indexed by allocator id major. Trivially
 * destructible so that the hot path reads it without a TLS guard. */
thread_local ThreadCache *tls_caches[kMaxAllocators];

/** Flushes the thread's caches when the thread exits, for allocators that
 * are still registered (and so still mapped). */
struct TlsReaper {
  bool armed = false;
  ~TlsReaper() {
    MemoryManager *mm = HSHM_MEMORY_MANAGER;
    std::lock_guard<std::mutex> lock(mm->mutex());
    for (u32 i = 0; i < kMaxAllocators; ++i) {
      ThreadCache *c = tls_caches[i];
      if (!c) continue;
      void *live = g_allocator_table[i].alloc.load(std::memory_order_acquire);
      if (live == c->owner && c->owner->generation() == c->generation) {
        ThreadCacheOps::Flush(c);
      }
      delete c;
      tls_caches[i] = nullptr;
    }
  }
};
thread_local TlsReaper tls_reaper;

std::atomic<u64> g_generation{1};

/** In a forked child, the forking thread's caches are copies of blocks the
 * parent still owns: forget them (without freeing) so the two processes never
 * hand out the same block. Runs in the child right after fork(). */
void ForgetCachesAfterFork() {
  for (u32 i = 0; i < kMaxAllocators; ++i) {
    ThreadCache *c = tls_caches[i];
    if (!c) continue;
    for (auto &bin : c->bins) bin.n = 0;
    c->delta = 0;
  }
}

/** Installs the fork handler when the library loads. */
struct ForkHandlerInstaller {
  ForkHandlerInstaller() {
    pthread_atfork(nullptr, nullptr, ForgetCachesAfterFork);
  }
};
ForkHandlerInstaller g_fork_handler_installer;

}  // namespace internal

using internal::BlockHeader;
using internal::HeapHeader;

//------------------------------------------------------------------------------
// HeapAllocator
//------------------------------------------------------------------------------

u32 HeapAllocator::ClassOf(u64 s) {
  if (s <= 32) return 0;
  if (s <= 48) return 1;
  if (s <= 64) return 2;
  u32 m = 63 - static_cast<u32>(__builtin_clzll(s - 1));  // 2^m < s <= 2^m+1
  u64 step = (s - 1 - (1ull << m)) >> (m - 2);            // 0..3
  return 3 + (m - 6) * 4 + static_cast<u32>(step);
}

u64 HeapAllocator::ClassSize(u32 cls) {
  static constexpr u64 kSmall[3] = {32, 48, 64};
  if (cls < 3) return kSmall[cls];
  u32 m = (cls - 3) / 4 + 6;
  u64 step = (cls - 3) % 4;
  return (1ull << m) + ((step + 1) << (m - 2));
}

Status HeapAllocator::Create(AllocatorId id, char *region, size_t size,
                             size_t custom_header_size) {
  if (reinterpret_cast<uintptr_t>(region) % kAlignment != 0) {
    return Status::InvalidArgument("heap region is not 16-byte aligned");
  }
  if (id.major_ == 0 || id.major_ >= internal::kMaxAllocators) {
    return Status::InvalidArgument("allocator id major out of range [1, 63]");
  }
  u64 custom_off = (sizeof(HeapHeader) + 63) & ~63ull;
  u64 heap_begin = (custom_off + custom_header_size + 63) & ~63ull;
  if (size > (internal::kOffMask << 4)) {
    return Status::InvalidArgument("heap regions are limited to 256 GiB");
  }
  if (size < heap_begin + 4096) {
    return Status::InvalidArgument("heap region of " + std::to_string(size) +
                                   " bytes is too small");
  }
  auto *hdr = new (region) HeapHeader();
  hdr->id_ = id;
  hdr->region_size_ = size;
  hdr->custom_off_ = custom_off;
  hdr->custom_size_ = custom_header_size;
  hdr->heap_begin_ = heap_begin;
  hdr->heap_end_ = size & ~(kAlignment - 1);
  hdr->heap_top_.store(heap_begin, std::memory_order_relaxed);
  hdr->bytes_in_use_.store(0, std::memory_order_relaxed);
  for (auto &l : hdr->lists_) l.head_.store(0, std::memory_order_relaxed);
  std::memset(region + custom_off, 0, custom_header_size);
  hdr->magic_.store(internal::kHeapMagic, std::memory_order_release);
  hdr_ = hdr;
  region_ = region;
  size_ = size;
  id_ = id;
  return Status::Ok();
}

Status HeapAllocator::Attach(char *region, size_t size) {
  auto *hdr = reinterpret_cast<HeapHeader *>(region);
  if (size < sizeof(HeapHeader) ||
      hdr->magic_.load(std::memory_order_acquire) != internal::kHeapMagic) {
    return Status::InvalidArgument("region holds no heap");
  }
  if (hdr->region_size_ != size) {
    return Status::InvalidArgument(
        "heap size " + std::to_string(hdr->region_size_) +
        " does not match region size " + std::to_string(size));
  }
  hdr_ = hdr;
  region_ = region;
  size_ = size;
  id_ = hdr->id_;
  return Status::Ok();
}

char *HeapAllocator::custom_header() const {
  if (!hdr_ || hdr_->custom_size_ == 0) return nullptr;
  return region_ + hdr_->custom_off_;
}

hshm::i64 HeapAllocator::GetBytesInUse() const {
  return hdr_->bytes_in_use_.load(std::memory_order_acquire);
}

u64 HeapAllocator::GetBytesUnreserved() const {
  return hdr_->heap_end_ - hdr_->heap_top_.load(std::memory_order_acquire);
}

void HeapAllocator::AddInUse(hshm::i64 delta) {
  hdr_->bytes_in_use_.fetch_add(delta, std::memory_order_relaxed);
}

u64 HeapAllocator::PopFree(u32 cls) {
  auto &list = hdr_->lists_[cls].head_;
  u64 head = list.load(std::memory_order_acquire);
  for (;;) {
    u64 off = (head & internal::kOffMask) << 4;
    if (off == 0) return 0;
    auto *b = reinterpret_cast<BlockHeader *>(region_ + off);
    u64 next = b->next_.load(std::memory_order_relaxed);
    u64 tag = ((head >> internal::kOffBits) + 1) & internal::kTagMask;
    u64 nh = (tag << internal::kOffBits) | (next >> 4);
    if (list.compare_exchange_weak(head, nh, std::memory_order_acquire,
                                   std::memory_order_acquire)) {
      return off;
    }
  }
}

void HeapAllocator::PushFreeChain(u32 cls, u64 first, u64 last) {
  auto &list = hdr_->lists_[cls].head_;
  auto *tail = reinterpret_cast<BlockHeader *>(region_ + last);
  u64 head = list.load(std::memory_order_relaxed);
  for (;;) {
    tail->next_.store((head & internal::kOffMask) << 4,
                      std::memory_order_relaxed);
    u64 tag = ((head >> internal::kOffBits) + 1) & internal::kTagMask;
    u64 nh = (tag << internal::kOffBits) | (first >> 4);
    if (list.compare_exchange_weak(head, nh, std::memory_order_release,
                                   std::memory_order_relaxed)) {
      return;
    }
  }
}

u32 HeapAllocator::BumpAllocate(u32 cls, u32 n, u64 *out) {
  u64 bs = ClassSize(cls);
  u64 top = hdr_->heap_top_.load(std::memory_order_relaxed);
  u64 k;
  for (;;) {
    u64 avail = hdr_->heap_end_ > top ? hdr_->heap_end_ - top : 0;
    k = std::min<u64>(n, avail / bs);
    if (k == 0) return 0;
    if (hdr_->heap_top_.compare_exchange_weak(top, top + k * bs,
                                              std::memory_order_acq_rel,
                                              std::memory_order_relaxed)) {
      break;
    }
  }
  for (u64 i = 0; i < k; ++i) {
    u64 off = top + i * bs;
    auto *b = reinterpret_cast<BlockHeader *>(region_ + off);
    b->next_.store(0, std::memory_order_relaxed);
    b->class_ = cls;
    b->magic_.store(internal::kMagicFree, std::memory_order_relaxed);
    out[i] = off;
  }
  return static_cast<u32>(k);
}

FullPtr<char> HeapAllocator::Hand(u64 block_off) {
  auto *b = reinterpret_cast<BlockHeader *>(region_ + block_off);
  b->magic_.store(internal::kMagicUsed, std::memory_order_relaxed);
  u64 off = block_off + kBlockHeaderSize;
  return FullPtr<char>(region_ + off, Pointer(id_, off));
}

FullPtr<char> HeapAllocator::Allocate(const MemContext &, size_t size) {
  if (size > kMaxAllocSize) return FullPtr<char>();
  u32 cls = ClassOf(size + kBlockHeaderSize);
  u64 off = PopFree(cls);
  if (off == 0 && BumpAllocate(cls, 1, &off) == 0) return FullPtr<char>();
  AddInUse(static_cast<hshm::i64>(ClassSize(cls)));
  return Hand(off);
}

Status HeapAllocator::Reclaim(const Pointer &p, u64 *block_off, u32 *cls) {
  if (p.alloc_id_ != id_) {
    return Status::InvalidArgument(
        "Free: pointer belongs to another allocator");
  }
  u64 off = p.off_.off_ - kBlockHeaderSize;
  u64 top = hdr_->heap_top_.load(std::memory_order_acquire);
  if (p.off_.off_ < hdr_->heap_begin_ + kBlockHeaderSize || off >= top ||
      off % kAlignment != 0) {
    return Status::InvalidArgument("Free: pointer is not a block of this heap");
  }
  auto *b = reinterpret_cast<BlockHeader *>(region_ + off);
  u32 c = b->class_;
  if (c >= kNumClasses || off + ClassSize(c) > top) {
    return Status::InvalidArgument("Free: corrupt block header");
  }
  u32 expect = internal::kMagicUsed;
  if (!b->magic_.compare_exchange_strong(expect, internal::kMagicFree,
                                         std::memory_order_acq_rel)) {
    return Status::InvalidArgument(
        "Free: block is not in use (double free or invalid pointer)");
  }
  *block_off = off;
  *cls = c;
  return Status::Ok();
}

Status HeapAllocator::Free(const MemContext &, const Pointer &p) {
  if (p.IsNull()) return Status::Ok();
  u64 off;
  u32 cls;
  HSHM_RETURN_IF_ERROR(Reclaim(p, &off, &cls));
  AddInUse(-static_cast<hshm::i64>(ClassSize(cls)));
  PushFreeChain(cls, off, off);
  return Status::Ok();
}

u64 HeapAllocator::LiveBlockSize(const Pointer &p) const {
  if (!hdr_ || p.IsNull() || p.alloc_id_ != id_) return 0;
  u64 top = hdr_->heap_top_.load(std::memory_order_acquire);
  if (p.off_.off_ < hdr_->heap_begin_ + kBlockHeaderSize) return 0;
  u64 off = p.off_.off_ - kBlockHeaderSize;
  if (off >= top || off % kAlignment != 0) return 0;
  auto *b = reinterpret_cast<const BlockHeader *>(region_ + off);
  u32 c = b->class_;
  if (c >= kNumClasses || off + ClassSize(c) > top) return 0;
  if (b->magic_.load(std::memory_order_acquire) != internal::kMagicUsed) {
    return 0;
  }
  return ClassSize(c) - kBlockHeaderSize;
}

//------------------------------------------------------------------------------
// ThreadLocalAllocator
//------------------------------------------------------------------------------

namespace {
/** Flush the pending in-use delta once it exceeds this many bytes. */
constexpr hshm::i64 kDeltaFlush = 256 * 1024;
}  // namespace

Status ThreadLocalAllocator::Create(AllocatorId id, char *region, size_t size,
                                    size_t custom_header_size) {
  HSHM_RETURN_IF_ERROR(heap_.Create(id, region, size, custom_header_size));
  generation_ = internal::g_generation.fetch_add(1);
  return Status::Ok();
}

Status ThreadLocalAllocator::Attach(char *region, size_t size) {
  HSHM_RETURN_IF_ERROR(heap_.Attach(region, size));
  generation_ = internal::g_generation.fetch_add(1);
  return Status::Ok();
}

/** The calling thread's cache for `a`, created (or reset, if it belonged to
 * an earlier allocator in the same slot) on demand; null if out of memory. */
static internal::ThreadCache *GetCache(ThreadLocalAllocator *a) {
  u32 slot = a->GetId().major_;
  internal::ThreadCache *c = internal::tls_caches[slot];
  if (__builtin_expect(
          c != nullptr && c->owner == a && c->generation == a->generation(),
          1)) {
    return c;
  }
  if (!c) {
    c = new (std::nothrow) internal::ThreadCache();
    if (!c) return nullptr;
    internal::tls_caches[slot] = c;
    internal::tls_reaper.armed = true;  // registers the thread-exit flush
  }
  // A stale cache of a detached allocator: its blocks are not ours to touch.
  for (auto &bin : c->bins) bin.n = 0;
  c->owner = a;
  c->generation = a->generation();
  c->delta = 0;
  return c;
}

FullPtr<char> ThreadLocalAllocator::Allocate(const MemContext &ctx,
                                             size_t size) {
  if (size > HeapAllocator::kMaxAllocSize) return FullPtr<char>();
  u32 cls = HeapAllocator::ClassOf(size + HeapAllocator::kBlockHeaderSize);
  if (cls >= kCachedClasses) return heap_.Allocate(ctx, size);
  internal::ThreadCache *c = GetCache(this);
  if (!c) return heap_.Allocate(ctx, size);
  auto &bin = c->bins[cls];
  if (bin.n == 0) {
    // Refill half a cache: reuse freed blocks first, then carve fresh ones.
    constexpr u32 kBatch = kCacheCapacity / 2;
    while (bin.n < kBatch) {
      u64 off = heap_.PopFree(cls);
      if (!off) break;
      bin.offs[bin.n++] = off;
    }
    if (bin.n == 0) {
      bin.n = heap_.BumpAllocate(cls, kBatch, bin.offs);
      if (bin.n == 0) bin.n = heap_.BumpAllocate(cls, 1, bin.offs);
      if (bin.n == 0) return FullPtr<char>();
    }
  }
  u64 off = bin.offs[--bin.n];
  c->delta += static_cast<hshm::i64>(HeapAllocator::ClassSize(cls));
  if (c->delta > kDeltaFlush) {
    heap_.AddInUse(c->delta);
    c->delta = 0;
  }
  return heap_.Hand(off);
}

Status ThreadLocalAllocator::Free(const MemContext &ctx, const Pointer &p) {
  if (p.IsNull()) return Status::Ok();
  u64 off;
  u32 cls;
  HSHM_RETURN_IF_ERROR(heap_.Reclaim(p, &off, &cls));
  auto size = static_cast<hshm::i64>(HeapAllocator::ClassSize(cls));
  internal::ThreadCache *c = cls < kCachedClasses ? GetCache(this) : nullptr;
  if (!c) {
    heap_.AddInUse(-size);
    heap_.PushFreeChain(cls, off, off);
    return Status::Ok();
  }
  auto &bin = c->bins[cls];
  if (bin.n == kCacheCapacity) {
    // Give the older half back to the shared list in one CAS.
    constexpr u32 kHalf = kCacheCapacity / 2;
    internal::ThreadCacheOps::ReleaseRange(heap_, cls, bin.offs, kHalf);
    std::memmove(bin.offs, bin.offs + kHalf, sizeof(u64) * (bin.n - kHalf));
    bin.n -= kHalf;
  }
  bin.offs[bin.n++] = off;
  c->delta -= size;
  if (c->delta < -kDeltaFlush) {
    heap_.AddInUse(c->delta);
    c->delta = 0;
  }
  return Status::Ok();
}

void ThreadLocalAllocator::FlushThreadCache() {
  internal::ThreadCache *c = internal::tls_caches[GetId().major_];
  if (c && c->owner == this && c->generation == generation_) {
    internal::ThreadCacheOps::Flush(c);
  }
}

}  // namespace hipc
