// Cross-class reuse (merge/split) of the shared heap, and its crash safety:
// fragmentation rounds, concurrent threads and processes, and processes
// killed while holding the heap lock.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "hermes_shm/memory/allocator.h"
#include "test_util.h"

namespace {

using hipc::BlockInfo;
using hipc::BlockState;
using hipc::FullPtr;
using hipc::HeapAllocator;
using hipc::ThreadLocalAllocator;
using hshm::u64;
using hshm_test::BlockBytes;
using hshm_test::Flush;

/** The byte at index `i` of a block whose content is keyed by `key`. */
char Pattern(u64 key, size_t i) {
  return static_cast<char>((key * 131 + i * 7 + (i >> 8)) & 0xff);
}
/** Fills `size` bytes at `p` with the pattern of `key`. */
void Fill(char *p, size_t size, u64 key) {
  for (size_t i = 0; i < size; ++i) p[i] = Pattern(key, i);
}
/** True if `size` bytes at `p` still hold the pattern of `key`. */
bool Check(const char *p, size_t size, u64 key) {
  for (size_t i = 0; i < size; ++i) {
    if (p[i] != Pattern(key, i)) return false;
  }
  return true;
}

/** One live block of a worker. */
struct Live {
  FullPtr<char> p;
  size_t size;
  u64 key;
};

/** Random mixed-size alloc/free traffic that checks every block's content
 * before freeing it. Returns the number of corrupt or rejected blocks;
 * failed allocations are counted in *oom (the heap is deliberately small).
 */
template <typename A>
int MixedTraffic(A &a, u64 seed, int ops, size_t max_live, int *oom) {
  std::mt19937_64 rng(seed);
  std::vector<Live> live;
  int errors = 0;
  for (int i = 0; i < ops; ++i) {
    if (live.size() < max_live && (rng() % 2 == 0 || live.empty())) {
      size_t size;
      switch (rng() % 4) {
        case 0:
          size = 1 + rng() % 64;
          break;
        case 1:
          size = 64 + rng() % 1024;
          break;
        case 2:
          size = 1024 + rng() % 8192;
          break;
        default:
          size = 8192 + rng() % (96 * 1024);
      }
      FullPtr<char> p = a.Allocate(HSHM_MCTX, size);
      if (p.IsNull()) {
        ++*oom;
        continue;
      }
      u64 key = seed * 1000003 + i;
      Fill(p.ptr_, size, key);
      live.push_back({p, size, key});
    } else {
      size_t k = rng() % live.size();
      Live l = live[k];
      if (!Check(l.p.ptr_, l.size, l.key)) ++errors;
      if (!a.Free(HSHM_MCTX, l.p.shm_).ok()) ++errors;
      live[k] = live.back();
      live.pop_back();
    }
  }
  for (auto &l : live) {
    if (!Check(l.p.ptr_, l.size, l.key)) ++errors;
    if (!a.Free(HSHM_MCTX, l.p.shm_).ok()) ++errors;
  }
  Flush(a);
  return errors;
}

template <typename A>
class HeapDefragTest : public ::testing::Test {};
using AllocTypes = ::testing::Types<HeapAllocator, ThreadLocalAllocator>;
TYPED_TEST_SUITE(HeapDefragTest, AllocTypes);

// A 4 MiB heap filled with one class, emptied, then filled with another:
// memory freed in one class must serve every other class.
TYPED_TEST(HeapDefragTest, AlternatingClassesReuseMemory) {
  hshm_test::ShmHeap<TypeParam> heap(4 << 20, 6);
  ASSERT_TRUE(heap.status().ok()) << heap.status();
  auto &a = heap.alloc();
  const u64 capacity = a.GetBytesUnreserved();
  const size_t sizes[] = {24,   100000, 40,   7000, 200,   60000, 16,
                          3000, 1000,   9000, 500,  30000, 64,    250000};
  int round = 0;
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t size : sizes) {
      // Live bytes up to 85% of the heap; thread caches may hold up to 64
      // more blocks of the class.
      const u64 bs = BlockBytes(size);
      const u64 count = capacity * 85 / 100 / bs;
      std::vector<FullPtr<char>> ptrs;
      for (u64 i = 0; i < count; ++i) {
        FullPtr<char> p = a.Allocate(HSHM_MCTX, size);
        ASSERT_FALSE(p.IsNull())
            << "round " << round << ": block " << i << " of " << count << " of "
            << size << " bytes";
        std::memset(p.ptr_, static_cast<int>(i), std::min<size_t>(size, 64));
        ptrs.push_back(p);
      }
      EXPECT_EQ(a.LiveBytes(), count * bs);
      for (size_t i = 0; i < ptrs.size(); ++i) {
        ASSERT_EQ(ptrs[i].ptr_[0], static_cast<char>(i));
        ASSERT_TRUE(a.Free(HSHM_MCTX, ptrs[i].shm_).ok());
      }
      Flush(a);
      EXPECT_EQ(a.GetBytesInUse(), 0);
      ++round;
    }
  }
  EXPECT_TRUE(a.ForEachBlock([](const BlockInfo &) {}).ok());
  EXPECT_EQ(a.LiveBytes(), 0u);
  // Everything merged back: one block of ~90% of the heap fits.
  FullPtr<char> big = a.Allocate(HSHM_MCTX, capacity * 3 / 4);
  ASSERT_FALSE(big.IsNull());
  EXPECT_TRUE(a.Free(HSHM_MCTX, big.shm_).ok());
}

// Merging after a checkerboard of frees: the freed halves serve a class
// twice their size once their neighbours are freed too.
TYPED_TEST(HeapDefragTest, FreedNeighboursMergeIntoLargerClass) {
  hshm_test::ShmHeap<TypeParam> heap(1 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto &a = heap.alloc();
  std::vector<FullPtr<char>> small;
  for (;;) {
    FullPtr<char> p = a.Allocate(HSHM_MCTX, 1000);
    if (p.IsNull()) break;
    small.push_back(p);
  }
  ASSERT_GT(small.size(), 500u);
  // Free every other block: no 2000-byte hole exists yet.
  for (size_t i = 0; i < small.size(); i += 2) {
    ASSERT_TRUE(a.Free(HSHM_MCTX, small[i].shm_).ok());
  }
  Flush(a);
  // Free the rest: now everything merges.
  for (size_t i = 1; i < small.size(); i += 2) {
    ASSERT_TRUE(a.Free(HSHM_MCTX, small[i].shm_).ok());
  }
  Flush(a);
  std::vector<FullPtr<char>> large;
  for (size_t i = 0; i < small.size() / 2 - 8; ++i) {
    FullPtr<char> p = a.Allocate(HSHM_MCTX, 2000);
    ASSERT_FALSE(p.IsNull()) << i;
    large.push_back(p);
  }
  for (auto &p : large) ASSERT_TRUE(a.Free(HSHM_MCTX, p.shm_).ok());
  Flush(a);
  EXPECT_EQ(a.LiveBytes(), 0u);
}

// Threads allocate and free mixed sizes on a small heap, so the slow path
// (carve, merge, split) runs all the time beside the fast paths.
TYPED_TEST(HeapDefragTest, ThreadsMixedSizesKeepContent) {
  hshm_test::ShmHeap<TypeParam> heap(8 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto &a = heap.alloc();
  const u64 capacity = a.GetBytesUnreserved();
  constexpr int kThreads = 4;
  std::atomic<int> errors{0};
  std::atomic<int> oom{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      int my_oom = 0;
      errors += MixedTraffic(a, 100 + t, 40000, 24, &my_oom);
      oom += my_oom;
    });
  }
  for (auto &t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(a.GetBytesInUse(), 0);
  EXPECT_EQ(a.LiveBytes(), 0u);
  u64 bytes = 0;
  u64 prev = 0;
  bool ordered = true;
  bool all_free = true;
  ASSERT_TRUE(a.ForEachBlock([&](const BlockInfo &b) {
                 bytes += b.usable_size + HeapAllocator::kBlockHeaderSize;
                 if (b.ptr.off_.off_ <= prev) ordered = false;
                 prev = b.ptr.off_.off_;
                 if (b.state != BlockState::kFree) all_free = false;
               }).ok());
  EXPECT_TRUE(ordered);
  EXPECT_TRUE(all_free);
  EXPECT_EQ(bytes, capacity - a.GetBytesUnreserved());
  // All of it merges again.
  FullPtr<char> big = a.Allocate(HSHM_MCTX, capacity * 3 / 4);
  ASSERT_FALSE(big.IsNull());
  EXPECT_TRUE(a.Free(HSHM_MCTX, big.shm_).ok());
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

// Forked processes do the same on one heap.
TEST(HeapDefragProcessTest, ProcessesMixedSizesKeepContent) {
  hshm_test::ShmHeap<ThreadLocalAllocator> heap(8 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto &a = heap.alloc();
  const u64 capacity = a.GetBytesUnreserved();
  constexpr int kChildren = 3;
  Children children;
  for (int c = 0; c < kChildren; ++c) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int oom = 0;
      int errors = MixedTraffic(a, 200 + c, 30000, 24, &oom);
      _exit(errors == 0 ? 0 : 1);
    }
    children.pids.push_back(pid);
  }
  int oom = 0;
  EXPECT_EQ(MixedTraffic(a, 300, 30000, 24, &oom), 0);
  for (pid_t p : children.pids) {
    int st = 0;
    ASSERT_EQ(waitpid(p, &st, 0), p);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << st;
  }
  children.pids.clear();
  EXPECT_EQ(a.GetBytesInUse(), 0);
  EXPECT_EQ(a.LiveBytes(), 0u);
  EXPECT_TRUE(a.ForEachBlock([](const BlockInfo &) {}).ok());
  FullPtr<char> big = a.Allocate(HSHM_MCTX, capacity * 3 / 4);
  ASSERT_FALSE(big.IsNull());
  EXPECT_TRUE(a.Free(HSHM_MCTX, big.shm_).ok());
}

// A process that dies holding the heap lock does not wedge the others.
TEST(HeapCrashTest, DeathHoldingMutexIsRecovered) {
  hshm_test::ShmHeap<ThreadLocalAllocator> heap(4 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto &a = heap.alloc();
  FullPtr<char> mine = a.Allocate(HSHM_MCTX, 500);
  ASSERT_FALSE(mine.IsNull());
  a.FlushThreadCache();
  const u64 live0 = a.LiveBytes();
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  Children children;
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Allocate a little (cached and live), then take the lock and stall.
    for (int i = 0; i < 10; ++i) a.Allocate(HSHM_MCTX, 100 + i * 300);
    bool locked = hipc::internal::HeapTestHooks::LockMutex(a.heap());
    (void)!write(fds[1], locked ? "L" : "E", 1);
    pause();
    _exit(0);
  }
  children.pids.push_back(pid);
  char c = 0;
  ASSERT_EQ(read(fds[0], &c, 1), 1);
  ASSERT_EQ(c, 'L');
  // The lock word names the child's (only) thread: (tid << 32) | pid.
  EXPECT_EQ(hipc::internal::HeapTestHooks::LockWord(a.heap()),
            (static_cast<u64>(pid) << 32) | static_cast<u64>(pid));
  kill(pid, SIGKILL);
  ASSERT_EQ(waitpid(pid, nullptr, 0), pid);
  children.pids.clear();
  // Needs the lock (a new class must be carved): takes it over from the
  // dead child, repairs, and succeeds.
  FullPtr<char> p = a.Allocate(HSHM_MCTX, 20000);
  ASSERT_FALSE(p.IsNull());
  EXPECT_EQ(hipc::internal::HeapTestHooks::LockWord(a.heap()), 0u);
  EXPECT_TRUE(a.Free(HSHM_MCTX, p.shm_).ok());
  EXPECT_GT(a.ReclaimDeadProcess(pid, [](const BlockInfo &) { return true; }),
            0u);
  EXPECT_EQ(a.LiveBytes(), live0);
  EXPECT_EQ(a.LiveBytes(pid), 0u);
  EXPECT_TRUE(a.ForEachBlock([](const BlockInfo &) {}).ok());
  EXPECT_TRUE(a.Free(HSHM_MCTX, mine.shm_).ok());
  close(fds[0]);
  close(fds[1]);
}

// A holder that dies mid-rewrite (intent recorded, headers half written)
// leaves the range to the next holder, which reformats it as free blocks.
TEST(HeapCrashTest, DeathMidRewriteReformatsIntentRange) {
  hshm_test::ShmHeap<HeapAllocator> heap(4 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto &a = heap.alloc();
  constexpr size_t kSize = 64 * 1024;
  // Three adjacent blocks; the first two go back to their list, the third
  // stays live so that the range is not at the bump pointer.
  FullPtr<char> b0 = a.Allocate(HSHM_MCTX, kSize);
  FullPtr<char> b1 = a.Allocate(HSHM_MCTX, kSize);
  FullPtr<char> b2 = a.Allocate(HSHM_MCTX, kSize);
  ASSERT_FALSE(b0.IsNull() || b1.IsNull() || b2.IsNull());
  const u64 bs = BlockBytes(kSize);
  ASSERT_EQ(b1.shm_.off_.off_, b0.shm_.off_.off_ + bs);
  ASSERT_EQ(b2.shm_.off_.off_, b1.shm_.off_.off_ + bs);
  ASSERT_TRUE(a.Free(HSHM_MCTX, b0.shm_).ok());
  ASSERT_TRUE(a.Free(HSHM_MCTX, b1.shm_).ok());
  const u64 live0 = a.LiveBytes();
  const u64 unreserved0 = a.GetBytesUnreserved();
  Children children;
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Take both blocks, then die "while merging them".
    FullPtr<char> x = a.Allocate(HSHM_MCTX, kSize);
    FullPtr<char> y = a.Allocate(HSHM_MCTX, kSize);
    if (x.IsNull() || y.IsNull()) _exit(2);
    u64 lo = std::min(x.shm_.off_.off_, y.shm_.off_.off_) - 16;
    if (!hipc::internal::HeapTestHooks::LockMutex(a)) _exit(3);
    hipc::internal::HeapTestHooks::SetIntent(a, lo, lo + 2 * bs);
    std::memset(x.ptr_ - 16, 0xEE, 64);  // half-written headers
    std::memset(y.ptr_ - 16, 0x11, 64);
    _exit(0);
  }
  children.pids.push_back(pid);
  int st = 0;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  children.pids.clear();
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << st;
  // The walk takes the lock and so repairs the range first.
  EXPECT_TRUE(a.ForEachBlock([](const BlockInfo &) {}).ok());
  EXPECT_EQ(hipc::internal::HeapTestHooks::LockWord(a), 0u);
  EXPECT_EQ(a.LiveBytes(), live0);
  EXPECT_EQ(a.LiveBytes(pid), 0u);
  // The repaired range serves new blocks without growing the heap.
  FullPtr<char> big = a.Allocate(HSHM_MCTX, 2 * bs - 16);
  ASSERT_FALSE(big.IsNull());
  EXPECT_EQ(big.shm_.off_.off_, b0.shm_.off_.off_);
  EXPECT_EQ(a.GetBytesUnreserved(), unreserved0);
  EXPECT_TRUE(a.Free(HSHM_MCTX, big.shm_).ok());
  EXPECT_TRUE(a.Free(HSHM_MCTX, b2.shm_).ok());
}

// Children killed at random points of heavy slow-path traffic: after
// reclaiming each, the heap walks cleanly and holds exactly the parent's
// blocks.
TEST(HeapCrashTest, KilledDuringSlowPathsLeavesHeapConsistent) {
  hshm_test::ShmHeap<ThreadLocalAllocator> heap(2 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto &a = heap.alloc();
  std::vector<FullPtr<char>> mine;
  for (int i = 0; i < 20; ++i) {
    FullPtr<char> p = a.Allocate(HSHM_MCTX, 100 + i * 997);
    ASSERT_FALSE(p.IsNull());
    Fill(p.ptr_, 100 + i * 997, i);
    mine.push_back(p);
  }
  a.FlushThreadCache();
  const u64 live0 = a.LiveBytes();
  std::mt19937 rng(7);
  Children children;
  for (int round = 0; round < 6; ++round) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int oom = 0;
      for (u64 s = 0;; ++s) MixedTraffic(a, 1000 + s, 2000, 16, &oom);
    }
    children.pids.push_back(pid);
    usleep(5000 + rng() % 30000);
    kill(pid, SIGKILL);
    ASSERT_EQ(waitpid(pid, nullptr, 0), pid);
    children.pids.clear();
    a.ReclaimDeadProcess(pid, [](const BlockInfo &) { return true; });
    ASSERT_TRUE(a.ForEachBlock([&](const BlockInfo &b) {
                   EXPECT_NE(b.owner_pid, pid);
                 }).ok())
        << round;
    ASSERT_EQ(a.LiveBytes(), live0) << round;
    // The parent still allocates through every path.
    int oom = 0;
    EXPECT_EQ(MixedTraffic(a, 5000 + round, 2000, 16, &oom), 0);
  }
  for (int i = 0; i < 20; ++i) {
    EXPECT_TRUE(Check(mine[i].ptr_, 100 + i * 997, i)) << i;
    EXPECT_TRUE(a.Free(HSHM_MCTX, mine[i].shm_).ok());
  }
  a.FlushThreadCache();
  EXPECT_EQ(a.LiveBytes(), 0u);
}

}  // namespace
