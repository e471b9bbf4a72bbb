// How the heap works
// ------------------
// Region layout: [HeapHeader][custom header][blocks ... bump top ... end).
// A block is a 16-byte BlockHeader followed by user data; its size is one of
// kNumClasses size classes (32, 48, 64, then four steps per power of two), so
// every block start and every user pointer is 16-byte aligned. Blocks tile
// [heap_begin, heap_top) without gaps, so the heap can be walked block by
// block from its start.
//
// A header is two words: next_ (the free-list link) and state_, which packs
// a 24-bit magic (used, free, cached in a thread cache, or held by the slow
// path), the block's class and its owner's pid (the allocating process while
// used, the caching one while cached, 0 while free). The owner sits beside
// the magic rather than in next_ (unused while the block is out of the
// lists) so that a reaper frees a dead process's block with one CAS that
// fails if the block changed hands meanwhile. next_ of a used block keeps a
// stale link: a popper holding a stale list head may read it (and the state
// word a claim just rewrote), but its CAS on the head then fails on the
// changed tag, so what it read is never used. Every state change is one
// store or CAS of state_, so a double free or a pointer that is not a block
// start is reported and changes nothing.
//
// Fast paths, all lock free. Freed blocks go on their class's Treiber stack.
// A stack head packs (block offset / 16) in its low 34 bits and an ABA tag in
// its high 30 bits, bumped on every push and pop. A pop claims the block with
// a CAS of its state (free -> used/cached), so even a corrupt list that
// names a block twice never hands it out twice. Readers of a stale head may
// read the header words of a block another thread now owns (or, after a
// merge, words inside another block): the words are in the region and read
// atomically, anything read is validated before use, and the CAS on the head
// then fails on the changed tag.
//
// Slow path, under the heap lock (below), when a class list is empty:
// carve fresh blocks off the bump pointer (a batch per lock); else split the
// smallest free block of a larger class; else defragment: pop every free
// block (normal lock-free pops, so the slow path owns what it popped), sort
// by offset, merge address-adjacent runs, give a run ending at the bump
// pointer back to it, serve the request from the best-fitting run and
// re-split every merged run into the largest class blocks that tile it. A
// split cuts up to kSplitBytes of the requested class at once (the extras go
// on its list), so a phase of small allocations after a merge does not come
// back every few blocks. Whoever rewrites block boundaries first records the
// range in the HeapHeader's intent record and clears it when the range is
// again tiled with valid headers. A holder that dies leaves its word in the
// lock; the waiter that takes the lock over from it (1) reformats the intent
// range as free blocks (or lowers the bump pointer over it), (2) walks the
// heap and frees every block still marked held, and only then does its own
// work (if it dies too, the next one repairs again). So the heap is always
// walkable, and every block is either on a list, in a process's hands
// (used/cached, attributed to it), or -- when a process died inside a
// lock-free step -- leaked.
//
// The heap lock is one 64-bit word in the HeapHeader naming its holder: the
// pid in the low 32 bits, the kernel thread id in the high 32 bits, 0 when
// free. Lock CASes 0 -> the caller's word; on contention it spins briefly,
// then sleeps on a separate 32-bit futex sequence word in slices of at most
// kLockSliceUs. A waiter that sees the same owner word for a whole slice
// checks it: if that thread is gone (its process dead or a zombie, or no
// such thread in it) -- or the word names no possible thread at all -- the
// waiter takes the lock over with a CAS from the value it checked and
// repairs as above. Unlock CASes the caller's word -> 0 (so it never frees a
// lock taken over from it), bumps the sequence word and wakes one sleeper if
// the waiter count says there is one. The lock is error checking: a thread
// that finds its own word there (a ForEachBlock callback) fails at once
// instead of deadlocking. After kLockTimeoutSec Lock fails, and with it the
// operation.
//
// Why no pointers: the robust pthread mutex this replaced kept glibc's
// robust-list links (process addresses) inside the shared object, so a
// process that rewrote them while the runtime held it made the runtime's
// unlock write through them. The lock word, the sequence word and the
// waiter count are plain integers that are only loaded, compared, CASed,
// or passed to futex() (which takes the word's own address in the region).
// Whatever another process writes there can at worst make Lock time out (a
// live owner), fail at once (the caller's own word), or let two holders in
// (the word cleared, or forged as a gone owner and taken over, while the
// real holder works). The last can corrupt the heap's lists and headers,
// which every reader validates before use against the process-private
// shape, so it never makes a process write outside the region. A wrong
// waiter count or sequence word costs a needless wake, one slice of sleep,
// or a waiter that polls instead of sleeping until its timeout.
//
// Accounting: bytes_in_use_ counts blocks handed out or held in thread
// caches, so a reaper that frees a dead process's blocks restores it exactly.
// A block is counted before it leaves the free lists (claimed as used or
// cached) and uncounted only after it is back on them, so a process killed
// between the two steps leaves the counter too high, never too low: the
// reaper's decrement for a block the dead process had claimed but not yet
// counted would otherwise drive it below zero.
#include <errno.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <mutex>
#include <unordered_set>
#include <vector>

#include "hermes_shm/memory/allocator.h"
#include "hermes_shm/memory/memory_manager.h"
#include "hermes_shm/util/futex.h"
#include "hermes_shm/util/log_limit.h"
#include "hermes_shm/util/tsan.h"

namespace hipc {

namespace internal {

constexpr u64 kHeapMagic = 0x4348494845415033ull;  // "CHIHEAP3"

/** Block states (24-bit magics in the header's state word). */
constexpr u32 kMagicUsed = 0xA1C8EDu;    ///< Handed out; owner = allocator.
constexpr u32 kMagicFree = 0xF4EE10u;    ///< On a free list; owner 0.
constexpr u32 kMagicCached = 0xCAC4E5u;  ///< In a thread cache of owner.
constexpr u32 kMagicHeld = 0x4E1DB1u;    ///< Owned by the lock holder.

/** Free-list heads: (block offset / 16) in the low kOffBits bits (regions up
 * to 256 GiB), an ABA tag in the high 30 bits: a stale CAS needs 2^30 list
 * operations between a thread's load and its CAS to succeed wrongly. */
constexpr u64 kOffBits = 34;
constexpr u64 kOffMask = (1ull << kOffBits) - 1;
constexpr u64 kTagMask = (1ull << (64 - kOffBits)) - 1;

/** The smallest block. */
constexpr u64 kMinBlock = 32;
/** How long a slow path waits for the heap lock before failing. */
constexpr u64 kLockTimeoutSec = 10;
/** Longest futex sleep of a heap-lock waiter; also how long an owner word
 * must stay unchanged before a waiter checks that its owner is alive. */
constexpr u64 kLockSliceUs = 2000;
/** Reads of a busy heap lock word before a waiter starts sleeping. */
constexpr int kLockSpins = 128;
/** The lock timeout in ns (process-private; tests shorten it). */
std::atomic<u64> g_lock_timeout_ns{kLockTimeoutSec * 1000000000ull};
/** This thread's bound on heap-lock waits in ns (0: none; HeapLockWaitLimit).
 */
thread_local u64 tls_lock_wait_ns = 0;
/** Most free blocks one defragmentation collects (bounds its memory). */
constexpr size_t kMaxDefragBlocks = 1u << 20;
/** Spare blocks a HeapAllocator slow path puts on the list: up to this many
 * bytes' worth, so that fresh small blocks are not carved one lock each. */
constexpr u64 kSpareBytes = 16 * 1024;
constexpr u32 kMaxSpare = 15;
/** A run split for a class yields up to this many bytes of its blocks (the
 * extras go on the class list), so that a phase of small allocations after
 * a merge does not defragment every few blocks. */
constexpr u64 kSplitBytes = 64 * 1024;
constexpr u64 kMaxSplitBlocks = 4096;

/** Packs a header state word: magic (24 bits) | class (8) | owner (32). */
inline u64 MakeState(u32 magic, u32 cls, u32 owner) {
  return (static_cast<u64>(magic) << 40) |
         (static_cast<u64>(cls & 0xff) << 32) | owner;
}
inline u32 StateMagic(u64 s) { return static_cast<u32>(s >> 40); }
inline u32 StateClass(u64 s) { return static_cast<u32>(s >> 32) & 0xff; }
inline u32 StateOwner(u64 s) { return static_cast<u32>(s); }

/** Header of every block, in front of the user data. */
struct BlockHeader {
  std::atomic<u64> next_;   ///< Next free block offset (valid while listed).
  std::atomic<u64> state_;  ///< MakeState(magic, class, owner pid).
};
static_assert(sizeof(BlockHeader) == HeapAllocator::kBlockHeaderSize, "hdr");

/** One free list, alone on its cache line. */
struct alignas(HSHM_CACHELINE_SIZE) FreeList {
  std::atomic<u64> head_;
};

/** Shared state at offset 0 of the region. Hostile input once written: the
 * shape fields are read only by Attach, which validates them. */
struct HeapHeader {
  std::atomic<u64> magic_;
  AllocatorId id_;
  u64 region_size_;
  u64 custom_off_;
  u64 custom_size_;
  u64 heap_begin_;
  u64 heap_end_;
  /** The heap lock (see the file comment): (holder tid << 32) | holder
   * pid, 0 when free. Guards boundary rewrites. */
  alignas(HSHM_CACHELINE_SIZE) std::atomic<u64> lock_;
  /** Bumped by every unlock; waiters sleep on it (futex). */
  std::atomic<u32> lock_seq_;
  /** Waiters sleeping (or about to) on lock_seq_; a hint for unlock. */
  std::atomic<u32> lock_waiters_;
  /** Block range whose boundaries the lock holder is rewriting; [0, 0)
   * when none. Written only by the holder. */
  std::atomic<u64> intent_begin_;
  std::atomic<u64> intent_end_;
  alignas(HSHM_CACHELINE_SIZE) std::atomic<u64> heap_top_;
  alignas(HSHM_CACHELINE_SIZE) std::atomic<hshm::i64> bytes_in_use_;
  FreeList lists_[HeapAllocator::kNumClasses];
};

/** The calling process's pid, cached (getpid() is a system call); refreshed
 * in a forked child by the fork handler below. */
std::atomic<u32> g_self_pid{0};

/** See g_self_pid. Any thread. */
inline u32 SelfPid() {
  u32 pid = g_self_pid.load(std::memory_order_relaxed);
  if (__builtin_expect(pid != 0, 1)) return pid;
  pid = static_cast<u32>(getpid());
  g_self_pid.store(pid, std::memory_order_relaxed);
  return pid;
}

/** SetNewOwnerHook's function, and the pid it last ran for. */
std::atomic<void (*)()> g_owner_hook{nullptr};
std::atomic<u32> g_owner_hook_pid{0};

/** Calls the new-owner hook if `pid` (SelfPid()) claims blocks for the first
 * time. Called where a block is claimed from the heap itself, not from a
 * thread cache: a forked child's caches start empty, so its first block of
 * every class comes through there. Any thread. */
inline void NoteOwner(u32 pid) {
  if (__builtin_expect(g_owner_hook_pid.load(std::memory_order_relaxed) == pid,
                       1)) {
    return;
  }
  g_owner_hook_pid.store(pid, std::memory_order_relaxed);  // before: no loop
  if (auto fn = g_owner_hook.load(std::memory_order_acquire)) fn();
}

/** The calling thread's heap-lock word: (kernel thread id << 32) | pid.
 * The thread id is cached per thread and re-read when the pid changes (in a
 * forked child). Any thread. */
inline u64 SelfLockWord() {
  thread_local u32 tls_pid = 0;
  thread_local u32 tls_tid = 0;
  const u32 pid = SelfPid();
  if (__builtin_expect(tls_pid != pid, 0)) {
    tls_tid = static_cast<u32>(syscall(SYS_gettid));
    tls_pid = pid;
  }
  return (static_cast<u64>(tls_tid) << 32) | pid;
}

/** True if the non-zero heap-lock word `w` (read from shared memory, so
 * anything) names no live thread: a pid or thread id outside (0, INT_MAX],
 * a dead or zombie process, or no such thread in that process. Any thread;
 * reads /proc and makes system calls (tens of microseconds). */
bool LockOwnerGone(u64 w) {
  const u32 pid = static_cast<u32>(w);
  const u32 tid = static_cast<u32>(w >> 32);
  if (pid == 0 || tid == 0 || pid > INT_MAX || tid > INT_MAX) return true;
  if (!hshm::ProcessAlive(static_cast<int>(pid))) return true;
  if (syscall(SYS_tgkill, static_cast<int>(pid), static_cast<int>(tid), 0) ==
      0) {
    return false;
  }
  return errno != EPERM;  // EPERM: it exists but is not ours to signal
}

/** Process-private cache of one thread for one ThreadLocalAllocator. Its
 * blocks are marked cached, owned by this process. */
struct ThreadCache {
  struct Bin {
    u32 n = 0;
    u64 offs[ThreadLocalAllocator::kCacheCapacity];
  };
  ThreadLocalAllocator *owner = nullptr;
  u64 generation = 0;
  Bin bins[ThreadLocalAllocator::kCachedClasses];
};

/** Slow-path helpers of HeapAllocator (a friend). Every function that
 * rewrites boundaries REQUIRES the heap lock. */
class HeapOps {
 public:
  /** Takes the heap lock, repairing the heap first if a holder died (see
   * the file comment). False (logged) if it cannot be taken: timeout, or
   * the lock word already names the calling thread (a ForEachBlock
   * callback). Any thread; pair a true return with Unlock in that thread. */
  static bool Lock(const HeapAllocator &h) {
    const u64 me = SelfLockWord();
    u64 w = 0;
    if (__builtin_expect(
            h.hdr_->lock_.compare_exchange_strong(
                w, me, std::memory_order_seq_cst, std::memory_order_relaxed),
            1)) {
      return true;
    }
    return LockContended(h, me, w);
  }
  /** Lock once the first CAS failed, seeing owner word `w`: spins, then
   * sleeps in slices, taking the lock over from a gone owner. */
  static bool LockContended(const HeapAllocator &h, const u64 me, u64 w) {
    HeapHeader *hdr = h.hdr_;
    const u64 start = hshm::NowNs();
    const u64 global = g_lock_timeout_ns.load(std::memory_order_relaxed);
    const bool bounded = tls_lock_wait_ns != 0 && tls_lock_wait_ns < global;
    const u64 timeout = bounded ? tls_lock_wait_ns : global;
    u64 watched = 0;  // the owner word being timed, and since when
    u64 watched_since = start;
    for (int spins = 0;; ++spins) {
      if (w == 0) {
        if (hdr->lock_.compare_exchange_weak(w, me, std::memory_order_seq_cst,
                                             std::memory_order_relaxed)) {
          return true;
        }
        continue;  // w now holds the winner (or still 0: spurious)
      }
      if (w == me) {
        HSHM_LOG_LIMITED(
            "hshm: heap %u: heap lock already held by the calling thread\n",
            h.id_.major_);
        return false;
      }
      if (spins < kLockSpins) {
        hshm::CpuRelax();
        w = hdr->lock_.load(std::memory_order_relaxed);
        continue;
      }
      u64 now = hshm::NowNs();
      if (w != watched) {
        watched = w;
        watched_since = now;
      } else if (now - watched_since >= kLockSliceUs * 1000) {
        // The same owner for a whole slice: is it still there?
        if (LockOwnerGone(w)) {
          const u64 gone = w;
          if (hdr->lock_.compare_exchange_strong(w, me,
                                                 std::memory_order_seq_cst,
                                                 std::memory_order_relaxed)) {
            HSHM_LOG_LIMITED(
                "hshm: heap %u: heap lock holder %u (thread %u) is gone; "
                "repairing the heap\n",
                h.id_.major_, static_cast<u32>(gone),
                static_cast<u32>(gone >> 32));
            Recover(h);
            return true;
          }
          continue;  // it changed meanwhile; w holds the new value
        }
        watched_since = now;
      }
      if (now - start >= timeout) {
        if (bounded) return false;  // the caller chose a short wait
        HSHM_LOG_LIMITED(
            "hshm: heap %u: cannot take the heap lock: held by pid %u "
            "(thread %u) for over %llu ms\n",
            h.id_.major_, static_cast<u32>(w), static_cast<u32>(w >> 32),
            static_cast<unsigned long long>(timeout / 1000000));
        return false;
      }
      Sleep(hdr, w,
            std::min<u64>(kLockSliceUs, (timeout - (now - start)) / 1000 + 1));
      w = hdr->lock_.load(std::memory_order_relaxed);
    }
  }
  /** Sleeps up to `us` microseconds unless the lock word is no longer
   * `busy` (or an Unlock bumps the sequence word). Any thread. */
  static void Sleep(HeapHeader *hdr, u64 busy, u64 us) {
    // seq_cst pairs with Unlock: either we see its release of the word, or
    // it sees our waiter count (and bumps the sequence word we wait on).
    hdr->lock_waiters_.fetch_add(1, std::memory_order_seq_cst);
    const u32 seq = hdr->lock_seq_.load(std::memory_order_seq_cst);
    if (hdr->lock_.load(std::memory_order_seq_cst) == busy) {
      hshm::FutexWait(&hdr->lock_seq_, seq, us);
    }
    hdr->lock_waiters_.fetch_sub(1, std::memory_order_relaxed);
  }
  /** Releases the lock and wakes a waiter. If the word no longer names the
   * calling thread (another process overwrote it, or took it over), leaves
   * it as it is (logged). REQUIRES: Lock returned true in this thread. */
  static void Unlock(const HeapAllocator &h) {
    HeapHeader *hdr = h.hdr_;
    u64 w = SelfLockWord();
    if (!hdr->lock_.compare_exchange_strong(w, 0, std::memory_order_seq_cst,
                                            std::memory_order_relaxed)) {
      HSHM_LOG_LIMITED(
          "hshm: heap %u: heap lock was overwritten while held (now pid %u "
          "thread %u); left as is\n",
          h.id_.major_, static_cast<u32>(w), static_cast<u32>(w >> 32));
      return;
    }
    if (hdr->lock_waiters_.load(std::memory_order_seq_cst) != 0) {
      hdr->lock_seq_.fetch_add(1, std::memory_order_seq_cst);
      hshm::FutexWake(&hdr->lock_seq_, 1);
    }
  }

  /** The header at block offset `off`. REQUIRES: off + 16 <= region size. */
  static BlockHeader *Header(const HeapAllocator &h, u64 off) {
    return reinterpret_cast<BlockHeader *>(h.region_ + off);
  }
  /** True if `top` is a possible bump pointer of `h`. */
  static bool TopValid(const HeapAllocator &h, u64 top) {
    return top >= h.heap_begin_ && top <= h.heap_end_ && top % 16 == 0;
  }
  /** True if `off` may start a block of `size` bytes in `h`. */
  static bool SpanValid(const HeapAllocator &h, u64 off, u64 size) {
    return off % 16 == 0 && off >= h.heap_begin_ && off < h.heap_end_ &&
           size <= h.heap_end_ - off;
  }
  /** Largest class whose block tiles a prefix of `rem` bytes leaving 0 or
   * at least kMinBlock bytes. REQUIRES: rem >= kMinBlock, rem % 16 == 0. */
  static u32 TileClass(u64 rem) {
    u32 c =
        std::min(HeapAllocator::ClassOf(rem), HeapAllocator::kNumClasses - 1);
    if (HeapAllocator::ClassSize(c) > rem) --c;
    if (rem - HeapAllocator::ClassSize(c) == 16) --c;
    return c;
  }

  /** Per-class chains of blocks (already marked free) waiting to be pushed;
   * flushed often so that a holder that dies leaks few. */
  struct Chains {
    u64 first[HeapAllocator::kNumClasses] = {};
    u64 last[HeapAllocator::kNumClasses] = {};
    u32 pending = 0;
  };
  /** Marks held block `off` of class `cls` free and queues it in `ch`. */
  static void QueueFree(const HeapAllocator &h, Chains *ch, u64 off, u32 cls) {
    BlockHeader *b = Header(h, off);
    b->next_.store(ch->first[cls], std::memory_order_relaxed);
    b->state_.store(MakeState(kMagicFree, cls, 0), std::memory_order_relaxed);
    if (!ch->first[cls]) ch->last[cls] = off;
    ch->first[cls] = off;
    if (++ch->pending >= 256) PushChains(h, ch);
  }
  /** Pushes every queued chain. */
  static void PushChains(const HeapAllocator &h, Chains *ch) {
    for (u32 c = 0; c < HeapAllocator::kNumClasses; ++c) {
      if (!ch->first[c]) continue;
      const_cast<HeapAllocator &>(h).PushFreeChain(c, ch->first[c],
                                                   ch->last[c]);
      ch->first[c] = ch->last[c] = 0;
    }
    ch->pending = 0;
  }

  /** Writes held blocks tiling [begin, end) and queues them free.
   * REQUIRES: lock held; [begin, end) is the caller's (intent recorded). */
  static void TileFree(const HeapAllocator &h, Chains *ch, u64 begin, u64 end) {
    const u32 pid = SelfPid();
    for (u64 off = begin; off < end;) {
      u32 c = TileClass(end - off);
      BlockHeader *b = Header(h, off);
      b->next_.store(0, std::memory_order_relaxed);
      b->state_.store(MakeState(kMagicHeld, c, pid), std::memory_order_relaxed);
      off += HeapAllocator::ClassSize(c);
    }
    ClearIntent(h);
    // The same tiling again, now listing the tiles.
    for (u64 off = begin; off < end;) {
      u32 c = TileClass(end - off);
      QueueFree(h, ch, off, c);
      off += HeapAllocator::ClassSize(c);
    }
  }
  /** Records that the holder rewrites boundaries in [begin, end). */
  static void SetIntent(const HeapAllocator &h, u64 begin, u64 end) {
    h.hdr_->intent_begin_.store(begin, std::memory_order_relaxed);
    h.hdr_->intent_end_.store(end, std::memory_order_release);
  }
  /** Ends the current intent: its range is again validly tiled. */
  static void ClearIntent(const HeapAllocator &h) {
    h.hdr_->intent_end_.store(0, std::memory_order_release);
    h.hdr_->intent_begin_.store(0, std::memory_order_relaxed);
  }

  /** Repairs what a gone lock holder left: the intent range, then every
   * held block. REQUIRES: lock held (just taken over from a gone holder). */
  static void Recover(const HeapAllocator &h) {
    HeapHeader *hdr = h.hdr_;
    u64 top = hdr->heap_top_.load(std::memory_order_acquire);
    if (!TopValid(h, top)) {
      HSHM_LOG_LIMITED("hshm: heap %u: corrupt bump pointer; not repaired\n",
                       h.id_.major_);
      ClearIntent(h);
      return;
    }
    u64 b = hdr->intent_begin_.load(std::memory_order_relaxed);
    u64 e = hdr->intent_end_.load(std::memory_order_relaxed);
    Chains ch;
    if (b != 0 || e != 0) {
      bool ok = b < e && b % 16 == 0 && e % 16 == 0 && b >= h.heap_begin_ &&
                e <= h.heap_end_ && e - b >= kMinBlock;
      if (!ok || (b < top && e > top)) {
        HSHM_LOG_LIMITED("hshm: heap %u: corrupt intent record [%llu, %llu)\n",
                         h.id_.major_, static_cast<unsigned long long>(b),
                         static_cast<unsigned long long>(e));
        ClearIntent(h);
      } else if (b >= top) {
        ClearIntent(h);  // a carve that never moved the bump pointer
      } else if (e == top) {
        hdr->heap_top_.store(b, std::memory_order_release);
        top = b;
        ClearIntent(h);
      } else {
        TileFree(h, &ch, b, e);  // clears the intent
      }
    }
    // Blocks the dead holder had popped (or split off) and not yet listed.
    for (u64 off = h.heap_begin_; off < top;) {
      BlockHeader *blk = Header(h, off);
      u64 s = blk->state_.load(std::memory_order_acquire);
      u32 c = StateClass(s);
      if (c >= HeapAllocator::kNumClasses ||
          HeapAllocator::ClassSize(c) > top - off) {
        HSHM_LOG_LIMITED(
            "hshm: heap %u: corrupt block at %llu; repair stopped there\n",
            h.id_.major_, static_cast<unsigned long long>(off));
        break;
      }
      if (StateMagic(s) == kMagicHeld) QueueFree(h, &ch, off, c);
      off += HeapAllocator::ClassSize(c);
    }
    PushChains(h, &ch);
  }

  /** Carves up to keep + spare blocks of class `cls` off the bump pointer:
   * the first `keep` into `out` with state `claim`, the rest onto the list.
   * Returns how many it kept. REQUIRES: lock held. */
  static u32 Carve(const HeapAllocator &h, u32 cls, u32 keep, u32 spare,
                   u64 claim, u64 *out) {
    HeapHeader *hdr = h.hdr_;
    u64 top = hdr->heap_top_.load(std::memory_order_acquire);
    if (!TopValid(h, top)) {
      HSHM_LOG_LIMITED("hshm: heap %u: corrupt bump pointer; not carving\n",
                       h.id_.major_);
      return 0;
    }
    u64 bs = HeapAllocator::ClassSize(cls);
    u64 k = std::min<u64>(keep + spare, (h.heap_end_ - top) / bs);
    if (k == 0) return 0;
    u32 kept = static_cast<u32>(std::min<u64>(k, keep));
    u64 end = top + k * bs;
    SetIntent(h, top, end);
    u32 pid = SelfPid();
    for (u64 i = 0; i < k; ++i) {
      u64 off = top + i * bs;
      BlockHeader *b = Header(h, off);
      b->next_.store(0, std::memory_order_relaxed);
      b->state_.store(i < kept ? claim : MakeState(kMagicHeld, cls, pid),
                      std::memory_order_relaxed);
      if (i < kept) out[i] = off;
    }
    hdr->heap_top_.store(end, std::memory_order_release);
    ClearIntent(h);
    if (k > kept) {
      Chains ch;
      for (u64 i = kept; i < k; ++i) QueueFree(h, &ch, top + i * bs, cls);
      PushChains(h, &ch);
    }
    return kept;
  }

  /** A free block the defragmenter popped. */
  struct Piece {
    u64 off;
    u32 cls;
  };
  /** A maximal run of address-adjacent popped blocks, pieces[first, last).
   */
  struct Run {
    u64 begin, end;
    size_t first, last;
  };

  /** Merges every free block and serves up to keep + spare blocks of `cls`
   * (see Carve). Returns how many it kept. REQUIRES: lock held. */
  static u32 Defrag(const HeapAllocator &h, u32 cls, u32 keep, u32 spare,
                    u64 claim, u64 *out) {
    HeapAllocator &mh = const_cast<HeapAllocator &>(h);
    u32 pid = SelfPid();
    std::vector<Piece> pieces;
    std::vector<Run> runs;
    Chains ch;
    try {
      for (u32 c = 0; c < HeapAllocator::kNumClasses; ++c) {
        while (pieces.size() < kMaxDefragBlocks) {
          u64 off = mh.PopFree(c, MakeState(kMagicHeld, c, pid));
          if (!off) break;
          pieces.push_back({off, c});
        }
      }
      std::sort(pieces.begin(), pieces.end(),
                [](const Piece &a, const Piece &b) { return a.off < b.off; });
      runs.reserve(pieces.size());
    } catch (const std::bad_alloc &) {
      HSHM_LOG_LIMITED("hshm: heap %u: no memory to defragment\n",
                       h.id_.major_);
      for (auto &p : pieces) QueueFree(h, &ch, p.off, p.cls);
      PushChains(h, &ch);
      return 0;
    }
    u64 top = h.hdr_->heap_top_.load(std::memory_order_acquire);
    bool top_ok = TopValid(h, top);
    u64 bound = top_ok ? top : h.heap_end_;
    // Runs of adjacent blocks (compacting `pieces` in place). Overlapping
    // or out-of-range blocks can only come from corruption: drop them
    // (leaked, their header zeroed) rather than tile over them.
    u64 prev_end = 0;
    size_t n = 0;
    for (size_t i = 0; i < pieces.size(); ++i) {
      const Piece p = pieces[i];
      u64 size = HeapAllocator::ClassSize(p.cls);
      if (p.off < prev_end || p.off >= bound || size > bound - p.off) {
        HSHM_LOG_LIMITED(
            "hshm: heap %u: free block at %llu overlaps; dropped\n",
            h.id_.major_, static_cast<unsigned long long>(p.off));
        Header(h, p.off)->state_.store(0, std::memory_order_relaxed);
        continue;
      }
      if (!runs.empty() && runs.back().end == p.off) {
        runs.back().end += size;
        runs.back().last++;
      } else {
        runs.push_back({p.off, p.off + size, n, n + 1});
      }
      pieces[n++] = p;
      prev_end = p.off + size;
    }
    pieces.resize(n);
    // A run that ends at the bump pointer goes back to it.
    if (top_ok && !runs.empty() && runs.back().end == top) {
      h.hdr_->heap_top_.store(runs.back().begin, std::memory_order_release);
      runs.pop_back();
    }
    u32 got = Carve(h, cls, keep, spare, claim, out);
    // Otherwise serve from the smallest run that fits, with extra blocks.
    u64 bs = HeapAllocator::ClassSize(cls);
    spare = SplitSpare(cls, keep, spare);
    size_t best = runs.size();
    if (got == 0) {
      for (size_t i = 0; i < runs.size(); ++i) {
        u64 len = runs[i].end - runs[i].begin;
        if (Fit(len, bs, keep + spare) == 0) continue;
        if (best == runs.size() || len < runs[best].end - runs[best].begin) {
          best = i;
        }
      }
    }
    for (size_t i = 0; i < runs.size(); ++i) {
      const Run &r = runs[i];
      if (i == best) {
        got = Split(h, &ch, r, pieces.data(), cls, keep, spare, claim, out);
      } else if (r.last - r.first == 1) {
        QueueFree(h, &ch, r.begin, pieces[r.first].cls);
      } else {
        SetIntent(h, r.begin, r.end);
        Scrub(h, r, pieces.data());
        TileFree(h, &ch, r.begin, r.end);
      }
    }
    PushChains(h, &ch);
    return got;
  }
  /** Spare blocks to cut when splitting for class `cls` (see kSplitBytes).
   */
  static u32 SplitSpare(u32 cls, u32 keep, u32 spare) {
    u64 n = std::min<u64>(kMaxSplitBlocks,
                          kSplitBytes / HeapAllocator::ClassSize(cls));
    return static_cast<u32>(std::max<u64>(spare, n > keep ? n - keep : 0));
  }
  /** Splits the smallest free block of a larger class (no merging) to serve
   * up to keep + spare blocks of `cls` (see Carve). Returns how many it
   * kept; 0 if no larger class has a free block. REQUIRES: lock held. */
  static u32 SplitLarger(const HeapAllocator &h, u32 cls, u32 keep, u32 spare,
                         u64 claim, u64 *out) {
    HeapAllocator &mh = const_cast<HeapAllocator &>(h);
    const u64 bs = HeapAllocator::ClassSize(cls);
    const u64 top = h.LoadTop();
    for (u32 c = cls + 1; c < HeapAllocator::kNumClasses; ++c) {
      const u64 size = HeapAllocator::ClassSize(c);
      if (Fit(size, bs, 1) == 0) continue;  // would leave 16 bytes
      u64 off = mh.PopFree(c, MakeState(kMagicHeld, c, SelfPid()));
      if (!off) continue;
      if (off >= top || size > top - off) {  // corrupt: leak it
        HSHM_LOG_LIMITED("hshm: heap %u: free block at %llu past the top\n",
                         h.id_.major_, static_cast<unsigned long long>(off));
        Header(h, off)->state_.store(0, std::memory_order_relaxed);
        continue;
      }
      Piece piece{off, c};
      Run r{off, off + size, 0, 1};
      Chains ch;
      u32 got = Split(h, &ch, r, &piece, cls, keep,
                      SplitSpare(cls, keep, spare), claim, out);
      PushChains(h, &ch);
      return got;
    }
    return 0;
  }
  /** Blocks of `bs` bytes a run of `len` bytes can give (at most `want`),
   * leaving a remainder that can be tiled. */
  static u64 Fit(u64 len, u64 bs, u64 want) {
    u64 k = std::min<u64>(want, len / bs);
    while (k > 0 && len - k * bs == 16) --k;
    return k;
  }
  /** Zeroes the old headers of run `r`, so stale pointers to them fail. */
  static void Scrub(const HeapAllocator &h, const Run &r, const Piece *pieces) {
    for (size_t j = r.first; j < r.last; ++j) {
      Header(h, pieces[j].off)->state_.store(0, std::memory_order_relaxed);
    }
  }
  /** Cuts blocks of `cls` from the front of run `r` (kept ones into `out`,
   * spares queued free) and tiles the rest. Returns how many it kept. */
  static u32 Split(const HeapAllocator &h, Chains *ch, const Run &r,
                   const Piece *pieces, u32 cls, u32 keep, u32 spare, u64 claim,
                   u64 *out) {
    u64 bs = HeapAllocator::ClassSize(cls);
    u64 k = Fit(r.end - r.begin, bs, keep + spare);
    u32 kept = static_cast<u32>(std::min<u64>(k, keep));
    u32 pid = SelfPid();
    SetIntent(h, r.begin, r.end);
    Scrub(h, r, pieces);
    for (u64 i = 0; i < k; ++i) {
      u64 off = r.begin + i * bs;
      BlockHeader *b = Header(h, off);
      b->next_.store(0, std::memory_order_relaxed);
      b->state_.store(i < kept ? claim : MakeState(kMagicHeld, cls, pid),
                      std::memory_order_relaxed);
      if (i < kept) out[i] = off;
    }
    if (r.begin + k * bs < r.end) {
      TileFree(h, ch, r.begin + k * bs, r.end);  // clears the intent
    } else {
      ClearIntent(h);
    }
    for (u64 i = kept; i < k; ++i) QueueFree(h, ch, r.begin + i * bs, cls);
    return kept;
  }
};

/** Friend of ThreadLocalAllocator that moves cached blocks back. */
class ThreadCacheOps {
 public:
  /** Returns every cached block to `cache->owner`'s shared lists.
   * REQUIRES: the owner is alive and the cache belongs to the caller. */
  static void Flush(ThreadCache *cache) {
    HeapAllocator &heap = cache->owner->heap_;
    for (u32 cls = 0; cls < ThreadLocalAllocator::kCachedClasses; ++cls) {
      auto &bin = cache->bins[cls];
      if (bin.n) ReleaseRange(heap, cls, bin.offs, bin.n);
      bin.n = 0;
    }
  }
  /** Marks offs[0..n) free, links them and pushes them onto `heap`'s list
   * for `cls` (one CAS). */
  static void ReleaseRange(HeapAllocator &heap, u32 cls, const u64 *offs,
                           u32 n) {
    const u64 free_state = MakeState(kMagicFree, cls, 0);
    for (u32 i = 0; i < n; ++i) {
      auto *b = reinterpret_cast<BlockHeader *>(heap.region_ + offs[i]);
      b->next_.store(i + 1 < n ? offs[i + 1] : 0, std::memory_order_relaxed);
      b->state_.store(free_state, std::memory_order_relaxed);
    }
    heap.PushFreeChain(cls, offs[0], offs[n - 1]);
    heap.AddInUse(-static_cast<hshm::i64>(n * HeapAllocator::ClassSize(cls)));
  }
};

/** The calling thread's caches, indexed by allocator id major. Trivially
 * destructible so that the hot path reads it without a TLS guard. */
thread_local ThreadCache *tls_caches[kMaxAllocators];
/** The cache GetCache returned last (one of tls_caches, or null): the hot
 * path's one TLS read. Not initial-exec: the client library must load with
 * dlopen (Python), and glibc's spare static TLS may already be gone. */
thread_local ThreadCache *tls_hot_cache = nullptr;

/** Every live thread's caches, so that a process detaching an allocator
 * can flush all of them (FlushAllThreadCaches). Guarded by *g_caches_mu,
 * which is taken after the memory manager's mutex and never while
 * allocating from a heap. Both leaked: threads exit after static
 * destruction; a forked child replaces the mutex (ForgetCachesAfterFork). */
std::mutex *g_caches_mu = new std::mutex();
std::unordered_set<ThreadCache *> *g_all_caches =
    new std::unordered_set<ThreadCache *>();

/** Flushes the thread's caches when the thread exits, for allocators that
 * are still registered (and so still mapped). */
struct TlsReaper {
  bool armed = false;
  ~TlsReaper() {
    MemoryManager *mm = HSHM_MEMORY_MANAGER;
    std::lock_guard<std::mutex> lock(mm->mutex());
    std::lock_guard<std::mutex> caches_lock(*g_caches_mu);
    for (u32 i = 0; i < kMaxAllocators; ++i) {
      ThreadCache *c = tls_caches[i];
      if (!c) continue;
      void *live = g_allocator_table[i].alloc.load(std::memory_order_acquire);
      if (live == c->owner && c->owner->generation() == c->generation) {
        ThreadCacheOps::Flush(c);
      }
      g_all_caches->erase(c);
      delete c;
      tls_caches[i] = nullptr;
    }
    tls_hot_cache = nullptr;
  }
};
thread_local TlsReaper tls_reaper;

std::atomic<u64> g_generation{1};

/** In a forked child, the forking thread's caches are copies of blocks the
 * parent still owns (and that stay marked as the parent's): forget them
 * (without freeing) so the two processes never hand out the same block.
 * Runs in the child right after fork(). */
void ForgetCachesAfterFork() {
  g_self_pid.store(static_cast<u32>(getpid()), std::memory_order_relaxed);
  for (u32 i = 0; i < kMaxAllocators; ++i) {
    ThreadCache *c = tls_caches[i];
    if (!c) continue;
    for (auto &bin : c->bins) bin.n = 0;
  }
  // The other threads' caches too (their threads are the parent's); the
  // registry's mutex may have been held by one of them: a fresh one.
  g_caches_mu = new std::mutex();
  for (ThreadCache *c : *g_all_caches) {
    for (auto &bin : c->bins) bin.n = 0;
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
using internal::HeapOps;
using internal::MakeState;
using internal::NoteOwner;
using internal::SelfPid;
using internal::StateClass;
using internal::StateMagic;
using internal::StateOwner;

//------------------------------------------------------------------------------
// HeapAllocator
//------------------------------------------------------------------------------

namespace {
/** Where the custom header starts (the HeapHeader rounded to 64 bytes). */
constexpr u64 kCustomOff = (sizeof(HeapHeader) + 63) & ~63ull;
/** Where blocks start for a custom header of `custom` bytes. */
u64 HeapBeginFor(u64 custom) { return (kCustomOff + custom + 63) & ~63ull; }
}  // namespace

void SetNewOwnerHook(void (*fn)()) {
  internal::g_owner_hook.store(fn, std::memory_order_release);
}

Status HeapAllocator::Create(AllocatorId id, char *region, size_t size,
                             size_t custom_header_size) {
  if (reinterpret_cast<uintptr_t>(region) % kAlignment != 0) {
    return Status::InvalidArgument("heap region is not 16-byte aligned");
  }
  if (id.major_ == 0 || id.major_ >= internal::kMaxAllocators) {
    return Status::InvalidArgument("allocator id major out of range [1, 63]");
  }
  if (size > (internal::kOffMask << 4)) {
    return Status::InvalidArgument("heap regions are limited to 256 GiB");
  }
  if (custom_header_size > size) {
    return Status::InvalidArgument("custom header larger than the region");
  }
  u64 heap_begin = HeapBeginFor(custom_header_size);
  if (size < heap_begin + 4096) {
    return Status::InvalidArgument("heap region of " + std::to_string(size) +
                                   " bytes is too small");
  }
  auto *hdr = new (region) HeapHeader();
  hdr->lock_.store(0, std::memory_order_relaxed);
  hdr->lock_seq_.store(0, std::memory_order_relaxed);
  hdr->lock_waiters_.store(0, std::memory_order_relaxed);
  hdr->id_ = id;
  hdr->region_size_ = size;
  hdr->custom_off_ = kCustomOff;
  hdr->custom_size_ = custom_header_size;
  hdr->heap_begin_ = heap_begin;
  hdr->heap_end_ = size & ~(kAlignment - 1);
  hdr->intent_begin_.store(0, std::memory_order_relaxed);
  hdr->intent_end_.store(0, std::memory_order_relaxed);
  hdr->heap_top_.store(heap_begin, std::memory_order_relaxed);
  hdr->bytes_in_use_.store(0, std::memory_order_relaxed);
  for (auto &l : hdr->lists_) l.head_.store(0, std::memory_order_relaxed);
  std::memset(region + kCustomOff, 0, custom_header_size);
  hdr->magic_.store(internal::kHeapMagic, std::memory_order_release);
  hdr_ = hdr;
  top_ = &hdr->heap_top_;
  region_ = region;
  size_ = size;
  id_ = id;
  custom_off_ = kCustomOff;
  custom_size_ = custom_header_size;
  heap_begin_ = heap_begin;
  heap_end_ = size & ~(kAlignment - 1);
  return Status::Ok();
}

Status HeapAllocator::Attach(char *region, size_t size) {
  if (reinterpret_cast<uintptr_t>(region) % kAlignment != 0) {
    return Status::InvalidArgument("heap region is not 16-byte aligned");
  }
  auto *hdr = reinterpret_cast<HeapHeader *>(region);
  if (size < kCustomOff + 4096 ||
      hdr->magic_.load(std::memory_order_acquire) != internal::kHeapMagic) {
    return Status::InvalidArgument("region holds no heap");
  }
  // Copy the shape once, then check the copy: another process may change
  // the shared fields at any time.
  AllocatorId id = hdr->id_;
  u64 region_size = hdr->region_size_;
  u64 custom_off = hdr->custom_off_;
  u64 custom_size = hdr->custom_size_;
  u64 heap_begin = hdr->heap_begin_;
  u64 heap_end = hdr->heap_end_;
  if (region_size != size) {
    return Status::InvalidArgument("heap size " + std::to_string(region_size) +
                                   " does not match region size " +
                                   std::to_string(size));
  }
  if (id.major_ == 0 || id.major_ >= internal::kMaxAllocators ||
      size > (internal::kOffMask << 4) || custom_off != kCustomOff ||
      custom_size > size || heap_begin != HeapBeginFor(custom_size) ||
      heap_end != (size & ~(kAlignment - 1)) || heap_begin + 4096 > size) {
    return Status::InvalidArgument("heap header is corrupt");
  }
  hdr_ = hdr;
  top_ = &hdr->heap_top_;
  region_ = region;
  size_ = size;
  id_ = id;
  custom_off_ = custom_off;
  custom_size_ = custom_size;
  heap_begin_ = heap_begin;
  heap_end_ = heap_end;
  return Status::Ok();
}

char *HeapAllocator::custom_header() const {
  if (!hdr_ || custom_size_ == 0) return nullptr;
  return region_ + custom_off_;
}

hshm::i64 HeapAllocator::GetBytesInUse() const {
  return hdr_->bytes_in_use_.load(std::memory_order_acquire);
}

void HeapAllocator::AddInUse(hshm::i64 delta) {
  hdr_->bytes_in_use_.fetch_add(delta, std::memory_order_relaxed);
}

namespace {
/** LoadTop's cold path: reports a corrupt bump pointer; returns heap_end. */
__attribute__((noinline, cold)) u64 CorruptTop(u32 heap, u64 top,
                                               u64 heap_end) {
  HSHM_LOG_LIMITED("hshm: heap %u: corrupt bump pointer %llu\n", heap,
                   static_cast<unsigned long long>(top));
  return heap_end;
}
}  // namespace

// Inline: Free's validation reads it on every call.
inline u64 HeapAllocator::LoadTop() const {
  u64 top = hdr_->heap_top_.load(std::memory_order_acquire);
  if (__builtin_expect(HeapOps::TopValid(*this, top), 1)) return top;
  return CorruptTop(id_.major_, top, heap_end_);
}

u64 HeapAllocator::GetBytesUnreserved() const { return heap_end_ - LoadTop(); }

u64 HeapAllocator::PopFree(u32 cls, u64 claim) {
  auto &list = hdr_->lists_[cls].head_;
  const u64 bs = ClassSize(cls);
  const u64 free_state = MakeState(internal::kMagicFree, cls, 0);
  u64 head = list.load(std::memory_order_acquire);
  for (;;) {
    u64 off = (head & internal::kOffMask) << 4;
    if (off == 0) return 0;
    BlockHeader *b = nullptr;
    u64 next = 0;
    // A listed block lies below the bump pointer: one above it (a client
    // wrote it into the list) would also be carved later, and two owners
    // would share it. The pointer is loaded before the head is re-read
    // below: a block still listed then was below it (it moves down only
    // over blocks taken off the lists first).
    const u64 top = hdr_->heap_top_.load(std::memory_order_acquire);
    bool ok =
        HeapOps::SpanValid(*this, off, bs) && off < top && bs <= top - off;
    if (ok) {
      b = HeapOps::Header(*this, off);
      // Acquire, so that the head re-load below cannot move before them.
      next = b->next_.load(std::memory_order_acquire);
      ok = b->state_.load(std::memory_order_acquire) == free_state &&
           (next == 0 || HeapOps::SpanValid(*this, next, internal::kMinBlock));
    }
    u64 tag = ((head >> internal::kOffBits) + 1) & internal::kTagMask;
    if (__builtin_expect(ok, 1)) {
      u64 nh = (tag << internal::kOffBits) | (next >> 4);
      if (!list.compare_exchange_weak(head, nh, std::memory_order_acquire,
                                      std::memory_order_acquire)) {
        continue;
      }
      // The block is ours; claiming it fails only if the list was corrupt
      // (it named a block someone else already took).
      u64 expect = free_state;
      if (b->state_.compare_exchange_strong(expect, claim,
                                            std::memory_order_acq_rel)) {
        return off;
      }
    } else {
      // What we read may be stale (the block changed hands since we loaded
      // the head): if the head is unchanged, the list itself is corrupt.
      u64 again = list.load(std::memory_order_acquire);
      if (again != head) {
        head = again;
        continue;
      }
    }
    // Corrupt: drop the whole list (its blocks leak) rather than follow it.
    HSHM_LOG_LIMITED("hshm: heap %u: corrupt free list %u; dropped it\n",
                     id_.major_, cls);
    head = list.load(std::memory_order_acquire);
    u64 t2 = ((head >> internal::kOffBits) + 1) & internal::kTagMask;
    list.compare_exchange_strong(head, t2 << internal::kOffBits,
                                 std::memory_order_acq_rel);
    return 0;
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

u32 HeapAllocator::SlowAllocate(u32 cls, u32 keep, u32 spare, u64 claim,
                                bool defrag, u64 *out) {
  if (!HeapOps::Lock(*this)) return 0;
  u32 got = 0;
  // Another thread may have refilled the list while we waited.
  while (got < keep) {
    u64 off = PopFree(cls, claim);
    if (!off) break;
    out[got++] = off;
  }
  if (got == 0) got = HeapOps::Carve(*this, cls, keep, spare, claim, out);
  if (got == 0) got = HeapOps::SplitLarger(*this, cls, keep, spare, claim, out);
  if (got == 0 && defrag) {
    got = HeapOps::Defrag(*this, cls, keep, spare, claim, out);
  }
  HeapOps::Unlock(*this);
  return got;
}

FullPtr<char> HeapAllocator::Allocate(const MemContext &, size_t size) {
  if (size > kMaxAllocSize) return FullPtr<char>();
  u32 cls = ClassOf(size + kBlockHeaderSize);
  u64 claim = MakeState(internal::kMagicUsed, cls, SelfPid());
  // Counted before the block is claimed (see "Accounting" above).
  AddInUse(static_cast<hshm::i64>(ClassSize(cls)));
  NoteOwner(SelfPid());
  u64 off = PopFree(cls, claim);
  if (__builtin_expect(off == 0, 0)) {
    u32 spare = static_cast<u32>(std::min<u64>(
        internal::kMaxSpare, internal::kSpareBytes / ClassSize(cls)));
    if (SlowAllocate(cls, 1, spare, claim, true, &off) == 0) {
      AddInUse(-static_cast<hshm::i64>(ClassSize(cls)));
      return FullPtr<char>();
    }
  }
  u64 uoff = off + kBlockHeaderSize;
  HSHM_TSAN_ACQUIRE(HSHM_TSAN_BLOCK_KEY(region_ + uoff));
  return FullPtr<char>(region_ + uoff, Pointer(id_, uoff));
}

u64 HeapAllocator::FindLive(const Pointer &p, u64 *state) const {
  if (!hdr_ || p.IsNull() || p.alloc_id_ != id_) return 0;
  u64 uoff = p.off_.off_;
  if (uoff < heap_begin_ + kBlockHeaderSize || uoff % kAlignment != 0) {
    return 0;
  }
  u64 off = uoff - kBlockHeaderSize;
  u64 top = LoadTop();
  if (off >= top || top - off < internal::kMinBlock) return 0;
  u64 s = HeapOps::Header(*this, off)->state_.load(std::memory_order_acquire);
  u32 c = StateClass(s);
  if (StateMagic(s) != internal::kMagicUsed || c >= kNumClasses ||
      ClassSize(c) > top - off) {
    return 0;
  }
  *state = s;
  return off;
}

[[gnu::always_inline]] inline Status HeapAllocator::Reclaim(
    const Pointer &p, u32 new_magic, u32 new_owner, u64 *block_off, u32 *cls,
    int expect_owner) {
  if (p.alloc_id_ != id_) {
    return Status::InvalidArgument(
        "Free: pointer belongs to another allocator");
  }
  u64 uoff = p.off_.off_;
  u64 top = LoadTop();
  if (uoff < heap_begin_ + kBlockHeaderSize || uoff % kAlignment != 0 ||
      uoff - kBlockHeaderSize >= top) {
    return Status::InvalidArgument("Free: pointer is not a block of this heap");
  }
  u64 off = uoff - kBlockHeaderSize;
  BlockHeader *b = HeapOps::Header(*this, off);
  // The header line is often another core's (a runtime worker admitted the
  // task in it): fetch it once, ready for the CAS, rather than read it and
  // then ask for it again to write.
  hshm::PrefetchForWrite(b);
  u64 s = b->state_.load(std::memory_order_acquire);
  for (;;) {
    if (StateMagic(s) != internal::kMagicUsed) {
      return Status::InvalidArgument(
          "Free: block is not in use (double free or invalid pointer)");
    }
    u32 c = StateClass(s);
    if (c >= kNumClasses || ClassSize(c) > top - off) {
      return Status::InvalidArgument("Free: corrupt block header");
    }
    if (expect_owner >= 0 && StateOwner(s) != static_cast<u32>(expect_owner)) {
      return Status::InvalidArgument("Free: block is owned by another process");
    }
    // The owner may change under us (SetBlockOwner): retry on that.
    if (b->state_.compare_exchange_weak(s, MakeState(new_magic, c, new_owner),
                                        std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
      *block_off = off;
      *cls = c;
      return Status::Ok();
    }
  }
}

Status HeapAllocator::Free(const MemContext &ctx, const Pointer &p) {
  return FreeOwnedBy(ctx, p, -1);
}

Status HeapAllocator::FreeOwnedBy(const MemContext &, const Pointer &p,
                                  int owner) {
  if (p.IsNull()) return Status::Ok();
  u64 off = 0;  // set when Reclaim succeeds
  u32 cls = 0;
  HSHM_RETURN_IF_ERROR(Reclaim(p, internal::kMagicFree, 0, &off, &cls, owner));
  HSHM_TSAN_RELEASE(HSHM_TSAN_BLOCK_KEY(region_ + p.off_.off_));
  AddInUse(-static_cast<hshm::i64>(ClassSize(cls)));
  PushFreeChain(cls, off, off);
  return Status::Ok();
}

u64 HeapAllocator::LiveBlockSizeSlow(const Pointer &p) const {
  // The inline LiveBlockSize reads the state word by these.
  static_assert(offsetof(internal::BlockHeader, state_) == kStateOffset,
                "state word offset");
  static_assert(internal::kMagicUsed == kUsedMagic, "used magic");
  static_assert(internal::kMinBlock == ClassSize(0), "smallest block");
  u64 s;
  if (!FindLive(p, &s)) return 0;
  return ClassSize(StateClass(s)) - kBlockHeaderSize;
}

int HeapAllocator::BlockOwner(const Pointer &p) const {
  u64 s;
  if (!FindLive(p, &s)) return -1;
  return static_cast<int>(StateOwner(s));
}

void HeapAllocator::SetBlockOwner(const Pointer &p, int pid) {
  if (pid <= 0) return;
  u64 s;
  u64 off = FindLive(p, &s);
  if (!off) return;
  BlockHeader *b = HeapOps::Header(*this, off);
  while (StateMagic(s) == internal::kMagicUsed) {
    u64 ns =
        MakeState(internal::kMagicUsed, StateClass(s), static_cast<u32>(pid));
    if (b->state_.compare_exchange_weak(s, ns, std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
      return;
    }
  }
}

Status HeapAllocator::Walk(WalkFn fn, void *arg) const {
  if (!hdr_) return Status::InvalidArgument("heap is not attached");
  if (!HeapOps::Lock(*this)) {
    return Status::Unavailable("heap walk: cannot take the heap lock");
  }
  struct Unlocker {
    const HeapAllocator *h;
    ~Unlocker() { HeapOps::Unlock(*h); }
  } unlocker{this};
  u64 top = hdr_->heap_top_.load(std::memory_order_acquire);
  if (!HeapOps::TopValid(*this, top)) {
    return Status::Internal("heap walk: corrupt bump pointer " +
                            std::to_string(top));
  }
  for (u64 off = heap_begin_; off < top;) {
    // Other processes carve and merge blocks: a header here may sit where
    // this process last wrote a task's body, an edge TSan cannot see.
    HSHM_TSAN_IGNORE_READS_BEGIN();
    u64 s = HeapOps::Header(*this, off)->state_.load(std::memory_order_acquire);
    HSHM_TSAN_IGNORE_READS_END();
    u32 c = StateClass(s);
    u64 size = c < kNumClasses ? ClassSize(c) : 0;
    BlockInfo info;
    info.ptr = Pointer(id_, off + kBlockHeaderSize);
    info.usable_size = size - kBlockHeaderSize;
    info.owner_pid = static_cast<int>(StateOwner(s));
    switch (StateMagic(s)) {
      case internal::kMagicUsed:
        info.state = BlockState::kUsed;
        break;
      case internal::kMagicCached:
        info.state = BlockState::kCached;
        break;
      case internal::kMagicFree:
        info.state = BlockState::kFree;
        info.owner_pid = -1;
        break;
      default:
        c = kNumClasses;  // reported below
    }
    if (c >= kNumClasses || size == 0 || size > top - off) {
      return Status::Internal("heap walk: corrupt block header at offset " +
                              std::to_string(off));
    }
    fn(arg, info);
    off += size;
  }
  return Status::Ok();
}

u64 HeapAllocator::ReclaimDeadProcess(
    int pid, const std::function<bool(const BlockInfo &)> &may_free_used,
    Status *walk) {
  if (walk) *walk = Status::Ok();
  if (pid <= 0 || static_cast<u32>(pid) == SelfPid()) {
    HSHM_LOG_LIMITED("hshm: heap %u: refusing to reclaim pid %d\n", id_.major_,
                     pid);
    if (walk) *walk = Status::InvalidArgument("refusing to reclaim this pid");
    return 0;
  }
  u64 freed = 0;
  const u32 owner = static_cast<u32>(pid);
  Status st = ForEachBlock([&](const BlockInfo &info) {
    if (info.owner_pid != pid || info.state == BlockState::kFree) return;
    if (info.state == BlockState::kUsed) {
      bool free_it = false;
      try {
        free_it = may_free_used && may_free_used(info);
      } catch (...) {
        free_it = false;  // a throwing predicate keeps the block
      }
      if (!free_it) return;
    }
    u64 off = info.ptr.off_.off_ - kBlockHeaderSize;
    u64 size = info.usable_size + kBlockHeaderSize;
    u32 cls = ClassOf(size);
    u32 magic = info.state == BlockState::kUsed ? internal::kMagicUsed
                                                : internal::kMagicCached;
    // Fails if the block changed hands since the walk read it.
    u64 expect = MakeState(magic, cls, owner);
    BlockHeader *b = HeapOps::Header(*this, off);
    // As in Walk: the dead client may have carved this header out of a
    // block this process wrote (TSan sees neither the client nor its lock).
    HSHM_TSAN_IGNORE_READS_BEGIN();
    HSHM_TSAN_IGNORE_WRITES_BEGIN();
    bool mine = b->state_.compare_exchange_strong(
        expect, MakeState(internal::kMagicFree, cls, 0),
        std::memory_order_acq_rel);
    if (mine) b->next_.store(0, std::memory_order_relaxed);
    HSHM_TSAN_IGNORE_WRITES_END();
    HSHM_TSAN_IGNORE_READS_END();
    if (!mine) return;
    PushFreeChain(cls, off, off);
    freed += size;
  });
  if (!st.ok()) {
    HSHM_LOG_LIMITED("hshm: heap %u: reclaiming pid %d: %s\n", id_.major_, pid,
                     st.ToString().c_str());
  }
  if (walk) *walk = st;
  AddInUse(-static_cast<hshm::i64>(freed));
  return freed;
}

u64 HeapAllocator::LiveBytes(int pid) const {
  u64 bytes = 0;
  (void)ForEachBlock([&](const BlockInfo &info) {
    if (info.state != BlockState::kUsed) return;
    if (pid != -1 && info.owner_pid != pid) return;
    bytes += info.usable_size + kBlockHeaderSize;
  });
  return bytes;
}

//------------------------------------------------------------------------------
// ThreadLocalAllocator
//------------------------------------------------------------------------------

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
static __attribute__((noinline)) internal::ThreadCache *GetCacheSlow(
    ThreadLocalAllocator *a);

/** True if `c` is this attachment of `a`'s cache. */
static inline bool IsCacheOf(const internal::ThreadCache *c,
                             const ThreadLocalAllocator *a) {
  return c != nullptr && c->owner == a && c->generation == a->generation();
}

/** GetCacheSlow's hot path, inline: the cache used last is still `a`'s. */
static inline internal::ThreadCache *GetCache(ThreadLocalAllocator *a) {
  internal::ThreadCache *c = internal::tls_hot_cache;
  if (__builtin_expect(IsCacheOf(c, a), 1)) return c;
  return GetCacheSlow(a);
}

static internal::ThreadCache *GetCacheSlow(ThreadLocalAllocator *a) {
  u32 slot = a->GetId().major_;
  internal::ThreadCache *c = internal::tls_caches[slot];
  if (__builtin_expect(IsCacheOf(c, a), 1)) {
    internal::tls_hot_cache = c;
    return c;
  }
  if (!c) {
    c = new (std::nothrow) internal::ThreadCache();
    if (!c) return nullptr;
    {
      std::lock_guard<std::mutex> l(*internal::g_caches_mu);
      internal::g_all_caches->insert(c);
    }
    internal::tls_caches[slot] = c;
    internal::tls_reaper.armed = true;  // registers the thread-exit flush
  }
  // A stale cache of a detached allocator: its blocks are not ours to touch.
  for (auto &bin : c->bins) bin.n = 0;
  c->owner = a;
  c->generation = a->generation();
  internal::tls_hot_cache = c;
  return c;
}

FullPtr<char> ThreadLocalAllocator::Allocate(const MemContext &ctx,
                                             size_t size) {
  if (size > HeapAllocator::kMaxAllocSize) return FullPtr<char>();
  u32 cls = HeapAllocator::ClassOf(size + HeapAllocator::kBlockHeaderSize);
  internal::ThreadCache *c = GetCache(this);
  if (!c) return heap_.Allocate(ctx, size);
  const u32 pid = SelfPid();
  if (cls >= kCachedClasses) {
    // Not cached; like HeapAllocator::Allocate, but our cached blocks go
    // back before merging so that they can merge too.
    NoteOwner(pid);
    const u64 claim = MakeState(internal::kMagicUsed, cls, pid);
    const hshm::i64 bytes =
        static_cast<hshm::i64>(HeapAllocator::ClassSize(cls));
    heap_.AddInUse(bytes);  // before the claim (see "Accounting" above)
    u64 off = heap_.PopFree(cls, claim);
    if (off == 0 && heap_.SlowAllocate(cls, 1, 0, claim, false, &off) == 0) {
      internal::ThreadCacheOps::Flush(c);
      if (heap_.SlowAllocate(cls, 1, 0, claim, true, &off) == 0) {
        heap_.AddInUse(-bytes);
        return FullPtr<char>();
      }
    }
    u64 uoff = off + HeapAllocator::kBlockHeaderSize;
    HSHM_TSAN_ACQUIRE(HSHM_TSAN_BLOCK_KEY(heap_.region_ + uoff));
    return FullPtr<char>(heap_.region_ + uoff, Pointer(heap_.id_, uoff));
  }
  auto &bin = c->bins[cls];
  if (__builtin_expect(bin.n == 0, 0)) {
    // Refill half a cache: reuse freed blocks first, then carve fresh ones
    // or split a larger free block, then (after giving our own cache back,
    // so that it can merge too) merge free memory.
    constexpr u32 kBatch = kCacheCapacity / 2;
    NoteOwner(pid);
    const u64 claim = MakeState(internal::kMagicCached, cls, pid);
    const hshm::i64 block =
        static_cast<hshm::i64>(HeapAllocator::ClassSize(cls));
    // The whole batch is counted before any block is claimed, and what was
    // not found is taken back after (see "Accounting" above).
    heap_.AddInUse(static_cast<hshm::i64>(kBatch) * block);
    while (bin.n < kBatch) {
      u64 off = heap_.PopFree(cls, claim);
      if (!off) break;
      bin.offs[bin.n++] = off;
    }
    if (bin.n == 0) {
      bin.n = heap_.SlowAllocate(cls, kBatch, 0, claim, false, bin.offs);
    }
    if (bin.n == 0) {
      internal::ThreadCacheOps::Flush(c);
      bin.n = heap_.SlowAllocate(cls, kBatch, 0, claim, true, bin.offs);
    }
    if (bin.n < kBatch) {
      heap_.AddInUse(-static_cast<hshm::i64>(kBatch - bin.n) * block);
    }
    if (bin.n == 0) return FullPtr<char>();
  }
  u64 off = bin.offs[--bin.n];
  if (bin.n > 0) {
    // The next block this thread hands out was most likely freed after
    // another process's thread (a runtime worker) wrote it: start taking
    // its first lines now, so that its owner's writes to it (a task's
    // construction) find them here rather than wait for each in turn.
    const char *next = heap_.region_ + bin.offs[bin.n - 1];
    const u64 span = std::min<u64>(HeapAllocator::ClassSize(cls), 256);
    for (u64 o = 0; o < span; o += 64) hshm::PrefetchForWrite(next + o);
  }
  auto *b = internal::HeapOps::Header(heap_, off);
  b->state_.store(MakeState(internal::kMagicUsed, cls, pid),
                  std::memory_order_release);
  u64 uoff = off + HeapAllocator::kBlockHeaderSize;
  HSHM_TSAN_ACQUIRE(HSHM_TSAN_BLOCK_KEY(heap_.region_ + uoff));
  return FullPtr<char>(heap_.region_ + uoff, Pointer(heap_.id_, uoff));
}

Status ThreadLocalAllocator::FreeOwnedBy(const MemContext &ctx,
                                         const Pointer &p, int owner) {
  // Not cached: a block another process named would otherwise sit in this
  // thread's cache, where only this thread's allocations of its class reuse
  // it and the heap cannot merge it.
  return heap_.FreeOwnedBy(ctx, p, owner);
}

Status ThreadLocalAllocator::Free(const MemContext &, const Pointer &p) {
  if (p.IsNull()) return Status::Ok();
  u64 off = 0;  // set when Reclaim succeeds
  u32 cls = 0;
  HSHM_RETURN_IF_ERROR(
      heap_.Reclaim(p, internal::kMagicCached, SelfPid(), &off, &cls));
  HSHM_TSAN_RELEASE(HSHM_TSAN_BLOCK_KEY(heap_.region_ + p.off_.off_));
  internal::ThreadCache *c = cls < kCachedClasses ? GetCache(this) : nullptr;
  if (__builtin_expect(c == nullptr, 0)) {
    // Not cached after all: list it.
    auto *b = internal::HeapOps::Header(heap_, off);
    b->state_.store(MakeState(internal::kMagicFree, cls, 0),
                    std::memory_order_relaxed);
    heap_.PushFreeChain(cls, off, off);
    heap_.AddInUse(-static_cast<hshm::i64>(HeapAllocator::ClassSize(cls)));
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
  return Status::Ok();
}

void ThreadLocalAllocator::FlushThreadCache() {
  internal::ThreadCache *c = internal::tls_caches[GetId().major_];
  if (IsCacheOf(c, this)) {
    internal::ThreadCacheOps::Flush(c);
  }
}

void ThreadLocalAllocator::FlushAllThreadCaches() {
  std::lock_guard<std::mutex> l(*internal::g_caches_mu);
  for (internal::ThreadCache *c : *internal::g_all_caches) {
    if (IsCacheOf(c, this)) internal::ThreadCacheOps::Flush(c);
  }
}

//------------------------------------------------------------------------------
// Test hooks
//------------------------------------------------------------------------------

HeapLockWaitLimit::HeapLockWaitLimit(u64 ms)
    : prev_ns_(internal::tls_lock_wait_ns) {
  internal::tls_lock_wait_ns = ms ? ms * 1000000ull : 1;
}

HeapLockWaitLimit::~HeapLockWaitLimit() {
  internal::tls_lock_wait_ns = prev_ns_;
}

namespace internal {

bool HeapTestHooks::LockMutex(HeapAllocator &h) { return HeapOps::Lock(h); }

void HeapTestHooks::SetLockWord(HeapAllocator &h, u64 raw) {
  h.hdr_->lock_.store(raw);
}

u64 HeapTestHooks::LockWord(const HeapAllocator &h) {
  return h.hdr_->lock_.load();
}

void HeapTestHooks::SetLockTimeoutMs(u64 ms) {
  g_lock_timeout_ns.store(ms ? ms * 1000000ull
                             : kLockTimeoutSec * 1000000000ull);
}

void HeapTestHooks::SetIntent(HeapAllocator &h, u64 begin, u64 end) {
  HeapOps::SetIntent(h, begin, end);
}

void HeapTestHooks::SetListHead(HeapAllocator &h, u32 cls, u64 raw) {
  h.hdr_->lists_[cls % HeapAllocator::kNumClasses].head_.store(raw);
}

void HeapTestHooks::SetTop(HeapAllocator &h, u64 top) {
  h.hdr_->heap_top_.store(top);
}

void HeapTestHooks::ForgeFreeBlock(HeapAllocator &h, u32 cls, u64 off) {
  cls %= HeapAllocator::kNumClasses;
  auto *b = reinterpret_cast<BlockHeader *>(h.region_ + off);
  b->next_.store(0);
  b->state_.store(MakeState(kMagicFree, cls, 0));
  h.hdr_->lists_[cls].head_.store((u64{7} << kOffBits) | (off >> 4));
}

void HeapTestHooks::CorruptShape(HeapAllocator &h, u64 value) {
  h.hdr_->region_size_ = value;
  h.hdr_->heap_begin_ = value;
  h.hdr_->heap_end_ = value;
}

}  // namespace internal

}  // namespace hipc
