// Block owners, the heap walk, dead-process reclamation, the heap lock, and
// the heap's trust boundary (corrupt headers, lists, bump pointer, shape and
// lock word).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstring>
#include <map>
#include <random>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "hermes_shm/memory/allocator.h"
#include "test_util.h"

namespace {

using hipc::BlockInfo;
using hipc::BlockState;
using hipc::FullPtr;
using hipc::HeapAllocator;
using hipc::Pointer;
using hipc::ThreadLocalAllocator;
using hipc::internal::HeapTestHooks;
using hshm::u64;
using hshm_test::BlockBytes;
using hshm_test::Flush;

/** The HeapAllocator under either allocator type. */
HeapAllocator &Heap(HeapAllocator &a) { return a; }
HeapAllocator &Heap(ThreadLocalAllocator &a) { return a.heap(); }

/** Counts of blocks (and bytes) by state for one owner (-2: any owner). */
struct Census {
  std::map<BlockState, u64> blocks;
  std::map<BlockState, u64> bytes;
};
template <typename A>
Census Count(A &a, int owner) {
  Census c;
  hshm::Status st = a.ForEachBlock([&](const BlockInfo &b) {
    if (owner != -2 && b.owner_pid != owner) return;
    c.blocks[b.state]++;
    c.bytes[b.state] += b.usable_size + HeapAllocator::kBlockHeaderSize;
  });
  EXPECT_TRUE(st.ok()) << st;
  return c;
}

/** Kills and reaps children on scope exit, so a failed test leaves none. */
struct Children {
  std::vector<pid_t> pids;
  ~Children() {
    for (pid_t p : pids) {
      kill(p, SIGKILL);
      waitpid(p, nullptr, 0);
    }
  }
};

template <typename A>
class HeapOwnerTest : public ::testing::Test {};
using AllocTypes = ::testing::Types<HeapAllocator, ThreadLocalAllocator>;
TYPED_TEST_SUITE(HeapOwnerTest, AllocTypes);

TYPED_TEST(HeapOwnerTest, BlockOwnerRoundTrip) {
  hshm_test::ShmHeap<TypeParam> heap(4 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto &a = heap.alloc();
  for (size_t size : {10, 3000, 100000}) {
    FullPtr<char> p = a.Allocate(HSHM_MCTX, size);
    ASSERT_FALSE(p.IsNull());
    EXPECT_EQ(a.BlockOwner(p.shm_), getpid());
    EXPECT_EQ(a.LiveBytes(getpid()), BlockBytes(size));
    a.SetBlockOwner(p.shm_, 424242);
    EXPECT_EQ(a.BlockOwner(p.shm_), 424242);
    EXPECT_EQ(a.LiveBytes(424242), BlockBytes(size));
    EXPECT_EQ(a.LiveBytes(getpid()), 0u);
    EXPECT_EQ(a.LiveBytes(), BlockBytes(size));
    EXPECT_EQ(a.LiveBlockSize(p.shm_), BlockBytes(size) - 16);
    // Anyone may free it; then it has no owner and re-tagging is a no-op.
    EXPECT_TRUE(a.Free(HSHM_MCTX, p.shm_).ok());
    EXPECT_EQ(a.BlockOwner(p.shm_), -1);
    a.SetBlockOwner(p.shm_, 77);
    EXPECT_EQ(a.BlockOwner(p.shm_), -1);
    EXPECT_EQ(a.LiveBytes(), 0u);
    EXPECT_EQ(a.LiveBytes(77), 0u);
  }
  EXPECT_EQ(a.BlockOwner(Pointer(a.GetId(), 12345)), -1);
  EXPECT_EQ(a.BlockOwner(Pointer::GetNull()), -1);
  EXPECT_EQ(a.BlockOwner(Pointer(hipc::AllocatorId(9, 0), 4096)), -1);
}

TYPED_TEST(HeapOwnerTest, LiveBlockSizeOnlyForLiveBlockStarts) {
  hshm_test::ShmHeap<TypeParam> heap(1 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto &a = heap.alloc();
  FullPtr<char> p = a.Allocate(HSHM_MCTX, 5000);
  ASSERT_FALSE(p.IsNull());
  const u64 off = p.shm_.off_.off_;
  EXPECT_EQ(a.LiveBlockSize(p.shm_), BlockBytes(5000) - 16);
  for (u64 bad : {off + 16, off + 32, off - 16, off + 1, u64{0}, u64{16},
                  u64{a.GetRegionSize()}, u64{a.GetRegionSize() - 16},
                  ~u64{0} - 15, u64{1} << 62}) {
    EXPECT_EQ(a.LiveBlockSize(Pointer(a.GetId(), bad)), 0u) << bad;
    EXPECT_EQ(a.BlockOwner(Pointer(a.GetId(), bad)), -1) << bad;
    EXPECT_FALSE(a.Free(HSHM_MCTX, Pointer(a.GetId(), bad)).ok()) << bad;
  }
  EXPECT_TRUE(a.Free(HSHM_MCTX, p.shm_).ok());
  EXPECT_EQ(a.LiveBlockSize(p.shm_), 0u);  // free or cached
}

// LiveBlockSize (inline, on the runtime's hot path) and BlockOwner (through
// FindLive) apply the same checks: at every 16-byte offset of a heap with
// live, freed and (for the thread cache) cached blocks of several classes,
// and past its end, one finds a live block exactly where the other does,
// of the block's size; and so they do with a bump pointer a process
// scribbled (the inline path then defers to FindLive).
TYPED_TEST(HeapOwnerTest, LiveBlockSizeAgreesWithFindLive) {
  hshm_test::ShmHeap<TypeParam> heap(1 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto &a = heap.alloc();
  std::vector<std::pair<FullPtr<char>, size_t>> live;  // block, bytes asked
  for (int i = 0; i < 60; ++i) {
    size_t size = size_t{1} << (i % 12);  // 1 byte .. 2 KiB
    FullPtr<char> p = a.Allocate(HSHM_MCTX, size);
    ASSERT_FALSE(p.IsNull());
    if (i % 3 == 0) {
      ASSERT_TRUE(a.Free(HSHM_MCTX, p.shm_).ok());
    } else {
      live.emplace_back(p, size);
    }
  }
  const u64 good = a.GetRegionSize() - a.GetBytesUnreserved();
  const u64 end = good + 4096;  // past the bump pointer too
  auto check = [&](const char *what) {
    size_t found = 0;
    for (u64 off = 0; off < end; off += 16) {
      const Pointer p(a.GetId(), off);
      const u64 n = a.LiveBlockSize(p);
      ASSERT_EQ(n != 0, a.BlockOwner(p) != -1) << what << " offset " << off;
      found += n != 0;
    }
    EXPECT_EQ(found, live.size()) << what;
    for (auto &[p, size] : live) {
      EXPECT_EQ(a.LiveBlockSize(p.shm_), BlockBytes(size) - 16) << what;
    }
  };
  check("good bump pointer");
  HeapTestHooks::SetTop(Heap(a), good + 1);
  check("scribbled bump pointer");
  HeapTestHooks::SetTop(Heap(a), good);
  for (auto &[p, size] : live) EXPECT_TRUE(a.Free(HSHM_MCTX, p.shm_).ok());
}

// The walk reports cached blocks as the caching process's.
TEST(HeapOwnerTlaTest, CachedBlocksAreAttributed) {
  hshm_test::ShmHeap<ThreadLocalAllocator> heap(4 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto &a = heap.alloc();
  FullPtr<char> p = a.Allocate(HSHM_MCTX, 100);
  ASSERT_FALSE(p.IsNull());
  Census c = Count(a, getpid());
  EXPECT_EQ(c.blocks[BlockState::kUsed], 1u);
  EXPECT_GT(c.blocks[BlockState::kCached], 0u);  // the rest of the batch
  // GetBytesInUse counts cached blocks; LiveBytes only used ones.
  EXPECT_EQ(a.GetBytesInUse(),
            static_cast<hshm::i64>(c.bytes[BlockState::kUsed] +
                                   c.bytes[BlockState::kCached]));
  EXPECT_EQ(a.LiveBytes(), BlockBytes(100));
  EXPECT_TRUE(a.Free(HSHM_MCTX, p.shm_).ok());
  a.FlushThreadCache();
  c = Count(a, -2);
  EXPECT_EQ(c.blocks[BlockState::kUsed], 0u);
  EXPECT_EQ(c.blocks[BlockState::kCached], 0u);
  EXPECT_EQ(a.GetBytesInUse(), 0);
}

// FreeOwnedBy frees a block only for the process that owns it, on either
// allocator type; a refused free leaves the block live and its owner's, and
// a pointer into a block's middle frees nothing whoever asks.
template <typename A>
class FreeOwnedByTest : public ::testing::Test {};
using BothAllocators = ::testing::Types<HeapAllocator, ThreadLocalAllocator>;
TYPED_TEST_SUITE(FreeOwnedByTest, BothAllocators);
TYPED_TEST(FreeOwnedByTest, FreesOnlyTheOwnersBlock) {
  hshm_test::ShmHeap<TypeParam> heap(4 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto &a = heap.alloc();
  FullPtr<char> p = a.Allocate(HSHM_MCTX, 300);
  ASSERT_FALSE(p.IsNull());
  // A thread-local allocator caches the rest of its batch.
  const u64 cached = Count(a, -2).blocks[BlockState::kCached];
  Pointer inside = p.shm_;
  inside.off_.off_ += 16;  // not a block start, inside a live block
  EXPECT_FALSE(a.FreeOwnedBy(HSHM_MCTX, inside, getpid()).ok());
  EXPECT_FALSE(a.FreeOwnedBy(HSHM_MCTX, inside, -1).ok());
  EXPECT_EQ(a.BlockOwner(p.shm_), getpid());
  a.SetBlockOwner(p.shm_, 1);
  EXPECT_FALSE(a.FreeOwnedBy(HSHM_MCTX, p.shm_, getpid()).ok());
  EXPECT_EQ(a.BlockOwner(p.shm_), 1);
  EXPECT_TRUE(a.FreeOwnedBy(HSHM_MCTX, p.shm_, 1).ok());
  EXPECT_EQ(a.BlockOwner(p.shm_), -1);
  EXPECT_FALSE(a.FreeOwnedBy(HSHM_MCTX, p.shm_, 1).ok());  // double free
  // Back in the shared heap, not in this thread's cache.
  EXPECT_EQ(Count(a, -2).blocks[BlockState::kUsed], 0u);
  EXPECT_EQ(Count(a, -2).blocks[BlockState::kCached], cached);
}

/** What a child reports to the parent before it is killed. */
struct ChildReport {
  u64 handed_off;  ///< A block the child re-tagged to the parent.
  u64 used_bytes;  ///< Its used blocks (LiveBytes(child) as it saw it).
};

/** Child body: allocates a mix (cached, live, freed), hands one block to
 * the parent, reports, and waits to be killed. */
[[noreturn]] void MixedChild(ThreadLocalAllocator *a, int fd) {
  std::mt19937 rng(getpid());
  std::vector<FullPtr<char>> live;
  for (int i = 0; i < 300; ++i) {
    size_t size = (i % 10 == 0) ? 10000 + rng() % 50000 : 1 + rng() % 4000;
    FullPtr<char> p = a->Allocate(HSHM_MCTX, size);
    if (p.IsNull()) _exit(2);
    std::memset(p.ptr_, 0x5a, size);
    live.push_back(p);
  }
  // Free a third: small ones land in this thread's cache.
  for (size_t i = 0; i < live.size(); i += 3) {
    if (!a->Free(HSHM_MCTX, live[i].shm_).ok()) _exit(3);
  }
  FullPtr<char> gift = a->Allocate(HSHM_MCTX, 777);
  if (gift.IsNull()) _exit(4);
  a->SetBlockOwner(gift.shm_, getppid());
  ChildReport r{gift.shm_.off_.off_, a->LiveBytes(getpid())};
  (void)!write(fd, &r, sizeof(r));
  for (;;) pause();
}

// A killed process's cached and used blocks all come back; blocks it gave
// away and other processes' blocks stay.
TEST(HeapOwnerTlaTest, ReclaimDeadProcessRestoresHeap) {
  hshm_test::ShmHeap<ThreadLocalAllocator> heap(16 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto &a = heap.alloc();
  std::vector<FullPtr<char>> mine;
  for (int i = 0; i < 50; ++i) {
    mine.push_back(a.Allocate(HSHM_MCTX, 64 + i * 211));
    ASSERT_FALSE(mine.back().IsNull());
  }
  a.FlushThreadCache();
  const u64 live0 = a.LiveBytes();
  const hshm::i64 in_use0 = a.GetBytesInUse();
  ASSERT_EQ(static_cast<hshm::i64>(live0), in_use0);
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  Children children;
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) MixedChild(&a, fds[1]);
  children.pids.push_back(pid);
  ChildReport r{};
  ASSERT_EQ(read(fds[0], &r, sizeof(r)), static_cast<ssize_t>(sizeof(r)));
  Census c = Count(a, pid);
  EXPECT_GT(c.blocks[BlockState::kUsed], 150u);
  EXPECT_GT(c.blocks[BlockState::kCached], 0u);
  EXPECT_EQ(c.bytes[BlockState::kUsed], r.used_bytes);
  EXPECT_EQ(a.LiveBytes(pid), r.used_bytes);
  Pointer gift(a.GetId(), r.handed_off);
  EXPECT_EQ(a.BlockOwner(gift), getpid());
  kill(pid, SIGKILL);
  ASSERT_EQ(waitpid(pid, nullptr, 0), pid);
  children.pids.clear();

  // First keep the used blocks: only the cached ones go.
  u64 freed =
      a.ReclaimDeadProcess(pid, [](const BlockInfo &) { return false; });
  EXPECT_EQ(freed, c.bytes[BlockState::kCached]);
  EXPECT_EQ(a.LiveBytes(pid), r.used_bytes);
  // Now the used ones, checking what the predicate is shown.
  u64 shown = 0;
  freed = a.ReclaimDeadProcess(pid, [&](const BlockInfo &b) {
    EXPECT_EQ(b.state, BlockState::kUsed);
    EXPECT_EQ(b.owner_pid, pid);
    shown += b.usable_size + HeapAllocator::kBlockHeaderSize;
    return true;
  });
  EXPECT_EQ(freed, r.used_bytes);
  EXPECT_EQ(shown, r.used_bytes);
  c = Count(a, pid);
  EXPECT_EQ(c.blocks[BlockState::kUsed] + c.blocks[BlockState::kCached], 0u);
  // Exactly the parent's blocks and the gift remain.
  const u64 gift_bytes = BlockBytes(777);
  EXPECT_EQ(a.LiveBytes(), live0 + gift_bytes);
  EXPECT_EQ(a.GetBytesInUse(), in_use0 + static_cast<hshm::i64>(gift_bytes));
  EXPECT_EQ(a.LiveBytes(getpid()), live0 + gift_bytes);
  EXPECT_TRUE(a.Free(HSHM_MCTX, gift).ok());
  a.FlushThreadCache();
  EXPECT_EQ(a.LiveBytes(), live0);
  EXPECT_EQ(a.GetBytesInUse(), in_use0);
  // A second reclaim finds nothing.
  EXPECT_EQ(a.ReclaimDeadProcess(pid, [](const BlockInfo &) { return true; }),
            0u);
  for (auto &p : mine) EXPECT_TRUE(a.Free(HSHM_MCTX, p.shm_).ok());
  a.FlushThreadCache();
  EXPECT_EQ(a.LiveBytes(), 0u);
  EXPECT_EQ(a.GetBytesInUse(), 0);
  close(fds[0]);
  close(fds[1]);
}

TEST(HeapOwnerTlaTest, ReclaimRefusesTheLivingCaller) {
  hshm_test::ShmHeap<ThreadLocalAllocator> heap(1 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto &a = heap.alloc();
  FullPtr<char> p = a.Allocate(HSHM_MCTX, 100);
  ASSERT_FALSE(p.IsNull());
  EXPECT_EQ(
      a.ReclaimDeadProcess(getpid(), [](const BlockInfo &) { return true; }),
      0u);
  EXPECT_EQ(a.ReclaimDeadProcess(0, nullptr), 0u);
  EXPECT_EQ(a.ReclaimDeadProcess(-5, nullptr), 0u);
  EXPECT_EQ(a.BlockOwner(p.shm_), getpid());
  EXPECT_TRUE(a.Free(HSHM_MCTX, p.shm_).ok());
}

TYPED_TEST(HeapOwnerTest, WalkStopsAtCorruptHeader) {
  hshm_test::ShmHeap<TypeParam> heap(1 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto &a = heap.alloc();
  FullPtr<char> p[3];
  for (auto &x : p) {
    x = a.Allocate(HSHM_MCTX, 200000);  // not cached: adjacent blocks
    ASSERT_FALSE(x.IsNull());
  }
  EXPECT_TRUE(a.ForEachBlock([](const BlockInfo &) {}).ok());
  char saved[16];
  char *hdr = p[1].ptr_ - 16;
  std::memcpy(saved, hdr, 16);
  std::mt19937_64 rng(3);
  for (int trial = 0; trial < 2000; ++trial) {
    // Garbage of every kind: all ones, zeros, random.
    for (int i = 0; i < 16; ++i) {
      hdr[i] = trial == 0   ? static_cast<char>(0xff)
               : trial == 1 ? 0
                            : static_cast<char>(rng());
    }
    int visited = 0;
    hshm::Status st = a.ForEachBlock([&](const BlockInfo &) { ++visited; });
    ASSERT_FALSE(st.ok()) << trial;
    EXPECT_EQ(visited, 1) << trial;  // stopped at the bad header
    EXPECT_EQ(a.LiveBlockSize(p[1].shm_), 0u);
    EXPECT_EQ(a.BlockOwner(p[1].shm_), -1);
    EXPECT_FALSE(a.Free(HSHM_MCTX, p[1].shm_).ok());
    EXPECT_EQ(a.LiveBytes(), BlockBytes(200000));  // before the bad one
    EXPECT_EQ(a.ReclaimDeadProcess(999999, nullptr), 0u);
    // Allocation still works (and never hands out the corrupt block).
    FullPtr<char> q = a.Allocate(HSHM_MCTX, 300);
    if (!q.IsNull()) {
      EXPECT_TRUE(q.ptr_ + 300 <= p[1].ptr_ - 16 || q.ptr_ >= p[1].ptr_);
      EXPECT_TRUE(a.Free(HSHM_MCTX, q.shm_).ok());
    }
  }
  std::memcpy(hdr, saved, 16);
  EXPECT_TRUE(a.ForEachBlock([](const BlockInfo &) {}).ok());
  for (auto &x : p) EXPECT_TRUE(a.Free(HSHM_MCTX, x.shm_).ok());
  Flush(a);
  EXPECT_EQ(a.LiveBytes(), 0u);
}

// Calls that need the heap lock fail, rather than deadlock, from inside a
// walk; lock-free ones work there.
TEST(HeapOwnerWalkTest, WalkCallbackCannotDeadlock) {
  hshm_test::ShmHeap<HeapAllocator> heap(1 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto &a = heap.alloc();
  FullPtr<char> p = a.Allocate(HSHM_MCTX, 100);
  ASSERT_FALSE(p.IsNull());
  int visited = 0;
  EXPECT_TRUE(a.ForEachBlock([&](const BlockInfo &b) {
                 if (b.state != BlockState::kUsed) return;
                 ++visited;
                 // A new class must be carved: needs the lock.
                 EXPECT_TRUE(a.Allocate(HSHM_MCTX, 300000).IsNull());
                 EXPECT_FALSE(a.ForEachBlock([](const BlockInfo &) {}).ok());
                 EXPECT_EQ(a.LiveBytes(), 0u);
                 EXPECT_EQ(a.BlockOwner(b.ptr), getpid());
                 EXPECT_TRUE(a.Free(HSHM_MCTX, b.ptr).ok());
               }).ok());
  EXPECT_EQ(visited, 1);
  EXPECT_EQ(a.LiveBytes(), 0u);
  FullPtr<char> q = a.Allocate(HSHM_MCTX, 300000);
  EXPECT_FALSE(q.IsNull());
  EXPECT_TRUE(a.Free(HSHM_MCTX, q.shm_).ok());
}

// A hostile list head (out of range, misaligned, naming a used block or a
// header in the middle of a block) is dropped, never followed.
TYPED_TEST(HeapOwnerTest, CorruptListHeadIsDropped) {
  hshm_test::ShmHeap<TypeParam> heap(2 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto &a = heap.alloc();
  constexpr size_t kSize = 20000;  // not a cached class
  const hshm::u32 cls = HeapAllocator::ClassOf(kSize + 16);
  FullPtr<char> used = a.Allocate(HSHM_MCTX, kSize);
  ASSERT_FALSE(used.IsNull());
  const u64 used_blk = used.shm_.off_.off_ - 16;
  const u64 tag = u64{5} << 34;
  for (u64 raw : {tag | 1, tag | (u64{1} << 33), tag | (used_blk >> 4),
                  tag | ((used_blk + 4096) >> 4),
                  tag | ((a.GetRegionSize() - 16) >> 4), ~u64{0}}) {
    HeapTestHooks::SetListHead(Heap(a), cls, raw);
    std::vector<FullPtr<char>> got;
    for (int i = 0; i < 3; ++i) {
      FullPtr<char> q = a.Allocate(HSHM_MCTX, kSize);
      ASSERT_FALSE(q.IsNull()) << raw;
      EXPECT_NE(q.shm_, used.shm_);
      got.push_back(q);
    }
    for (auto &q : got) EXPECT_TRUE(a.Free(HSHM_MCTX, q.shm_).ok());
  }
  EXPECT_EQ(a.BlockOwner(used.shm_), getpid());
  EXPECT_TRUE(a.Free(HSHM_MCTX, used.shm_).ok());
  EXPECT_TRUE(a.ForEachBlock([](const BlockInfo &) {}).ok());
}

// A well-formed free block that a client wrote above the bump pointer and
// listed is never handed out: the carve that later reaches that memory
// would give it a second owner.
TYPED_TEST(HeapOwnerTest, ListedBlockAboveTheBumpPointerIsDropped) {
  hshm_test::ShmHeap<TypeParam> heap(2 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto &a = heap.alloc();
  constexpr size_t kSize = 20000;  // not a cached class
  const hshm::u32 cls = HeapAllocator::ClassOf(kSize + 16);
  FullPtr<char> first = a.Allocate(HSHM_MCTX, kSize);
  ASSERT_FALSE(first.IsNull());
  const u64 top = a.GetRegionSize() - a.GetBytesUnreserved();
  const u64 forged = top + 4096;  // inside the heap, not yet carved
  HeapTestHooks::ForgeFreeBlock(Heap(a), cls, forged);
  std::vector<FullPtr<char>> got;
  for (int i = 0; i < 8; ++i) {
    FullPtr<char> q = a.Allocate(HSHM_MCTX, kSize);
    ASSERT_FALSE(q.IsNull());
    EXPECT_NE(q.shm_.off_.off_, forged + 16) << i;
    got.push_back(q);
  }
  // The carves went over the forged block's memory: each block is whole
  // and the walk sees a consistent heap.
  for (size_t i = 0; i < got.size(); ++i) {
    std::memset(got[i].ptr_, static_cast<int>(i + 1), kSize);
  }
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].ptr_[kSize - 1], static_cast<char>(i + 1)) << i;
  }
  EXPECT_TRUE(a.ForEachBlock([](const BlockInfo &) {}).ok());
  for (auto &q : got) EXPECT_TRUE(a.Free(HSHM_MCTX, q.shm_).ok());
  EXPECT_TRUE(a.Free(HSHM_MCTX, first.shm_).ok());
}

// A hostile bump pointer never lets a pointer or a carve leave the region.
TYPED_TEST(HeapOwnerTest, CorruptBumpPointerIsContained) {
  hshm_test::ShmHeap<TypeParam> heap(1 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto &a = heap.alloc();
  FullPtr<char> p = a.Allocate(HSHM_MCTX, 50000);
  ASSERT_FALSE(p.IsNull());
  const u64 good = a.GetRegionSize() - a.GetBytesUnreserved();
  for (u64 top :
       {u64{0}, u64{1} << 40, u64{a.GetRegionSize()} + 4096, good + 1}) {
    HeapTestHooks::SetTop(Heap(a), top);
    EXPECT_EQ(a.GetBytesUnreserved(), 0u);
    EXPECT_EQ(a.LiveBlockSize(Pointer(a.GetId(), a.GetRegionSize() + 16)), 0u);
    // The block stays live: a corrupt top is taken as the region's end.
    EXPECT_EQ(a.LiveBlockSize(p.shm_), BlockBytes(50000) - 16) << top;
    FullPtr<char> q = a.Allocate(HSHM_MCTX, 500000);  // would need carving
    EXPECT_TRUE(q.IsNull());
    EXPECT_FALSE(a.ForEachBlock([](const BlockInfo &) {}).ok());
  }
  HeapTestHooks::SetTop(Heap(a), good);
  EXPECT_TRUE(a.ForEachBlock([](const BlockInfo &) {}).ok());
  EXPECT_EQ(a.LiveBlockSize(p.shm_), BlockBytes(50000) - 16);
  EXPECT_TRUE(a.Free(HSHM_MCTX, p.shm_).ok());
}

// The shape is copied at Create/Attach: rewriting it in shared memory
// affects neither existing allocators nor a later Attach's safety.
TEST(HeapTrustTest, ShapeIsPrivateAndValidatedAtAttach) {
  hshm_test::ShmHeap<HeapAllocator> heap(1 << 20, 6, 64);
  ASSERT_TRUE(heap.status().ok());
  auto &a = heap.alloc();
  HeapAllocator other;
  ASSERT_TRUE(other.Attach(heap.shm().data(), heap.shm().data_size()).ok());
  char *custom = a.GetCustomHeader<char>();
  ASSERT_NE(custom, nullptr);
  for (u64 v : {u64{0}, u64{16}, u64{1} << 50, ~u64{0}}) {
    HeapTestHooks::CorruptShape(a, v);
    EXPECT_EQ(other.GetCustomHeader<char>(), custom);
    FullPtr<char> p = other.Allocate(HSHM_MCTX, 1000);
    ASSERT_FALSE(p.IsNull());
    EXPECT_GE(p.ptr_, custom + 64);
    EXPECT_LT(p.ptr_, a.GetRegion() + a.GetRegionSize());
    EXPECT_TRUE(a.Free(HSHM_MCTX, p.shm_).ok());
    EXPECT_TRUE(a.ForEachBlock([](const BlockInfo &) {}).ok());
    HeapAllocator late;
    EXPECT_FALSE(late.Attach(heap.shm().data(), heap.shm().data_size()).ok())
        << v;
  }
}

/** The heap-lock word naming thread `tid` of process `pid`. */
u64 LockWordOf(u64 pid, u64 tid) { return (tid << 32) | pid; }
/** The calling thread's kernel thread id. */
u64 SelfTid() { return static_cast<u64>(syscall(SYS_gettid)); }
/** Milliseconds since `t0`. */
double MsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now() - t0)
      .count();
}
/** Restores the default heap-lock timeout on scope exit. */
struct LockTimeoutGuard {
  explicit LockTimeoutGuard(u64 ms) { HeapTestHooks::SetLockTimeoutMs(ms); }
  ~LockTimeoutGuard() { HeapTestHooks::SetLockTimeoutMs(0); }
};

// A lock word that names no live thread -- garbage, a dead process, a live
// process without that thread -- is taken over (with the dead-holder
// repair, here of a garbage intent record too) by the next slow path, well
// within the lock timeout; so is one scribbled while the caller held it.
TEST(HeapTrustTest, LockWordNamingNoLiveThreadIsTakenOver) {
  hshm_test::ShmHeap<HeapAllocator> heap(8 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto &a = heap.alloc();
  FullPtr<char> keep = a.Allocate(HSHM_MCTX, 1000);
  ASSERT_FALSE(keep.IsNull());
  const u64 live0 = a.LiveBytes();
  pid_t dead = fork();
  ASSERT_GE(dead, 0);
  if (dead == 0) _exit(0);
  ASSERT_EQ(waitpid(dead, nullptr, 0), dead);
  const u64 me = static_cast<u64>(getpid());
  const std::vector<u64> words = {
      ~u64{0},                                             // pid, tid 2^32 - 1
      LockWordOf(0, 5),                                    // no pid
      LockWordOf(me, 0),                                   // no tid
      LockWordOf(INT_MAX, INT_MAX),                        // no such process
      LockWordOf(u64{INT_MAX} + 7, me),                    // pid out of range
      LockWordOf(static_cast<u64>(dead), dead),            // a reaped process
      LockWordOf(me, INT_MAX),                             // us, no such thread
      LockWordOf(static_cast<u64>(getppid()), SelfTid()),  // not its thread
  };
  size_t size = 20000;
  for (size_t i = 0; i < words.size(); ++i, size += size / 3) {
    HeapTestHooks::SetLockWord(a, words[i]);
    if (i % 2 == 0) HeapTestHooks::SetIntent(a, 3, 1);  // garbage too
    auto t0 = std::chrono::steady_clock::now();
    FullPtr<char> p = a.Allocate(HSHM_MCTX, size);  // a new class: slow path
    EXPECT_LT(MsSince(t0), 2000.0) << i;
    ASSERT_FALSE(p.IsNull()) << i;
    EXPECT_EQ(HeapTestHooks::LockWord(a), 0u) << i;
    EXPECT_TRUE(a.ForEachBlock([](const BlockInfo &) {}).ok()) << i;
    EXPECT_TRUE(a.Free(HSHM_MCTX, p.shm_).ok()) << i;
  }
  // Scribbled while this thread holds it: the walk still completes, its
  // unlock leaves the foreign word alone, and the next locker takes over.
  EXPECT_TRUE(a.ForEachBlock([&](const BlockInfo &) {
                 HeapTestHooks::SetLockWord(a, LockWordOf(dead, dead));
               }).ok());
  EXPECT_EQ(HeapTestHooks::LockWord(a), LockWordOf(dead, dead));
  EXPECT_TRUE(a.ForEachBlock([](const BlockInfo &) {}).ok());
  EXPECT_EQ(HeapTestHooks::LockWord(a), 0u);
  EXPECT_EQ(a.LiveBytes(), live0);
  EXPECT_TRUE(a.Free(HSHM_MCTX, keep.shm_).ok());
  EXPECT_EQ(a.LiveBytes(), 0u);
}

// A lock word naming a live thread that never lets go -- another process,
// another thread of this one -- makes slow paths fail cleanly after the
// timeout; the calling thread's own word fails them at once (as a re-lock
// would). The heap works again once the holder is gone.
TEST(HeapTrustTest, LockHeldByLiveThreadTimesOutCleanly) {
  hshm_test::ShmHeap<ThreadLocalAllocator> heap(8 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto &a = heap.alloc();
  LockTimeoutGuard timeout(300);
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  Children children;
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    bool locked = HeapTestHooks::LockMutex(a.heap());
    (void)!write(fds[1], locked ? "L" : "E", 1);
    pause();
    _exit(0);
  }
  children.pids.push_back(pid);
  char c = 0;
  ASSERT_EQ(read(fds[0], &c, 1), 1);
  ASSERT_EQ(c, 'L');
  const u64 child_word = LockWordOf(pid, pid);
  EXPECT_EQ(HeapTestHooks::LockWord(a.heap()), child_word);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(a.Allocate(HSHM_MCTX, 100000).IsNull());
  double ms = MsSince(t0);
  EXPECT_GE(ms, 290.0);
  EXPECT_LT(ms, 3000.0);
  t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(a.ForEachBlock([](const BlockInfo &) {}).ok());
  EXPECT_GE(MsSince(t0), 290.0);
  EXPECT_EQ(HeapTestHooks::LockWord(a.heap()), child_word);

  // A live sibling thread of this process.
  std::atomic<u64> sibling_tid{0};
  std::atomic<bool> done{false};
  std::thread sibling([&] {
    sibling_tid = SelfTid();
    while (!done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  while (sibling_tid == 0) std::this_thread::yield();
  HeapTestHooks::SetLockWord(a.heap(), LockWordOf(getpid(), sibling_tid));
  t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(a.Allocate(HSHM_MCTX, 100000).IsNull());
  EXPECT_GE(MsSince(t0), 290.0);
  done = true;
  sibling.join();
  // The calling thread's own word: an error at once, not a deadlock.
  HeapTestHooks::SetLockWord(a.heap(), LockWordOf(getpid(), SelfTid()));
  t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(a.Allocate(HSHM_MCTX, 100000).IsNull());
  EXPECT_LT(MsSince(t0), 200.0);

  // Back to the child's word; once it dies the next slow path takes over.
  HeapTestHooks::SetLockWord(a.heap(), child_word);
  kill(pid, SIGKILL);
  ASSERT_EQ(waitpid(pid, nullptr, 0), pid);
  children.pids.clear();
  FullPtr<char> p = a.Allocate(HSHM_MCTX, 100000);
  ASSERT_FALSE(p.IsNull());
  EXPECT_EQ(HeapTestHooks::LockWord(a.heap()), 0u);
  EXPECT_TRUE(a.Free(HSHM_MCTX, p.shm_).ok());
  a.FlushThreadCache();
  EXPECT_EQ(a.LiveBytes(), 0u);
  close(fds[0]);
  close(fds[1]);
}

// Threads of one process contend for the lock: a waiter sleeps while
// another thread holds it (here inside a walk) and proceeds as soon as it is
// released, long before the timeout.
TEST(HeapLockTest, WaiterProceedsWhenHolderReleases) {
  hshm_test::ShmHeap<HeapAllocator> heap(8 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto &a = heap.alloc();
  FullPtr<char> p = a.Allocate(HSHM_MCTX, 100);
  ASSERT_FALSE(p.IsNull());
  std::atomic<bool> holding{false};
  std::thread holder([&] {
    EXPECT_TRUE(a.ForEachBlock([&](const BlockInfo &) {
                   if (holding.exchange(true)) return;  // once
                   std::this_thread::sleep_for(std::chrono::milliseconds(150));
                 }).ok());
  });
  while (!holding) std::this_thread::yield();
  auto t0 = std::chrono::steady_clock::now();
  FullPtr<char> q = a.Allocate(HSHM_MCTX, 100000);  // needs the lock
  double ms = MsSince(t0);
  holder.join();
  ASSERT_FALSE(q.IsNull());
  EXPECT_GE(ms, 50.0);
  EXPECT_LT(ms, 2000.0);
  EXPECT_EQ(HeapTestHooks::LockWord(a), 0u);
  // Many threads hammering slow paths (fresh classes each time) all get
  // through, and the lock ends free.
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        size_t size = 2000 + ((t * 200 + i) * 977) % 60000;
        FullPtr<char> r = a.Allocate(HSHM_MCTX, size);
        if (r.IsNull() || !a.Free(HSHM_MCTX, r.shm_).ok()) ++failures;
        if (i % 16 == 0 && !a.ForEachBlock([](const BlockInfo &) {}).ok()) {
          ++failures;
        }
      }
    });
  }
  for (auto &t : threads) t.join();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(HeapTestHooks::LockWord(a), 0u);
  EXPECT_TRUE(a.Free(HSHM_MCTX, q.shm_).ok());
  EXPECT_TRUE(a.Free(HSHM_MCTX, p.shm_).ok());
  EXPECT_EQ(a.LiveBytes(), 0u);
}

}  // namespace
