#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "hermes_shm/memory/allocator.h"
#include "test_util.h"

namespace {

using hipc::FullPtr;
using hipc::HeapAllocator;
using hipc::ThreadLocalAllocator;
using hshm::StatusCode;

TEST(SizeClassTest, ClassesCoverEverySizeAndAlign) {
  for (hshm::u64 s = 1; s < (1u << 22); s += (s < 4096 ? 1 : 997)) {
    hshm::u32 c = HeapAllocator::ClassOf(s);
    ASSERT_LT(c, HeapAllocator::kNumClasses);
    ASSERT_GE(HeapAllocator::ClassSize(c), s) << s;
    if (c > 0) {
      ASSERT_LT(HeapAllocator::ClassSize(c - 1), s) << s;
    }
    ASSERT_EQ(HeapAllocator::ClassSize(c) % 16, 0u);
    // At most 25% waste past 64 bytes.
    if (s > 64) {
      ASSERT_LE(HeapAllocator::ClassSize(c), s + s / 4 + 16);
    }
  }
  EXPECT_LT(HeapAllocator::ClassOf(HeapAllocator::kMaxAllocSize + 16),
            HeapAllocator::kNumClasses);
}

template <typename A>
class AllocatorTest : public ::testing::Test {};
using AllocTypes = ::testing::Types<HeapAllocator, ThreadLocalAllocator>;
TYPED_TEST_SUITE(AllocatorTest, AllocTypes);

TYPED_TEST(AllocatorTest, AllocateFreeReuse) {
  hshm_test::ShmHeap<TypeParam> heap(8 << 20, 6, 128);
  ASSERT_TRUE(heap.status().ok()) << heap.status();
  auto &a = heap.alloc();
  ASSERT_NE(a.template GetCustomHeader<char>(), nullptr);
  std::vector<FullPtr<char>> ptrs;
  for (size_t size : {1, 16, 17, 100, 250, 4096, 5000, 65536, 1 << 20}) {
    FullPtr<char> p = a.Allocate(HSHM_MCTX, size);
    ASSERT_FALSE(p.IsNull()) << size;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p.ptr_) % 16, 0u);
    std::memset(p.ptr_, 0xab, size);
    EXPECT_TRUE(a.IsLiveBlock(p.shm_, size));
    ptrs.push_back(p);
  }
  EXPECT_GT(a.GetBytesInUse() + 0, 0);
  for (auto &p : ptrs) EXPECT_TRUE(a.Free(HSHM_MCTX, p.shm_).ok());
  // Double free and foreign pointers are errors that change nothing.
  EXPECT_EQ(a.Free(HSHM_MCTX, ptrs[0].shm_).code(),
            StatusCode::kInvalidArgument);
  hipc::Pointer bogus(a.GetId(), 12345);
  EXPECT_EQ(a.Free(HSHM_MCTX, bogus).code(), StatusCode::kInvalidArgument);
  hipc::Pointer other(hipc::AllocatorId(7, 0), ptrs[1].shm_.off_.off_);
  EXPECT_EQ(a.Free(HSHM_MCTX, other).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(a.Free(HSHM_MCTX, hipc::Pointer::GetNull()).ok());
  if constexpr (std::is_same<TypeParam, ThreadLocalAllocator>::value) {
    a.FlushThreadCache();
  }
  EXPECT_EQ(a.GetBytesInUse(), 0);
  // Freed memory is reused: a same-size allocation does not grow the heap.
  hshm::u64 unreserved = a.GetBytesUnreserved();
  FullPtr<char> again = a.Allocate(HSHM_MCTX, 1 << 20);
  ASSERT_FALSE(again.IsNull());
  EXPECT_EQ(a.GetBytesUnreserved(), unreserved);
  EXPECT_TRUE(a.Free(HSHM_MCTX, again.shm_).ok());
}

TYPED_TEST(AllocatorTest, OutOfMemoryIsNullNotGarbage) {
  hshm_test::ShmHeap<TypeParam> heap(1 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto &a = heap.alloc();
  EXPECT_TRUE(a.Allocate(HSHM_MCTX, 2 << 20).IsNull());
  EXPECT_TRUE(a.Allocate(HSHM_MCTX, HeapAllocator::kMaxAllocSize + 1).IsNull());
  std::vector<FullPtr<char>> ptrs;
  for (;;) {
    FullPtr<char> p = a.Allocate(HSHM_MCTX, 1000);
    if (p.IsNull()) break;
    ptrs.push_back(p);
    ASSERT_LT(ptrs.size(), 2000u);
  }
  EXPECT_GT(ptrs.size(), 800u);
  for (auto &p : ptrs) ASSERT_TRUE(a.Free(HSHM_MCTX, p.shm_).ok());
  EXPECT_FALSE(a.Allocate(HSHM_MCTX, 1000).IsNull());
}

struct Obj {
  explicit Obj(int v) : value(v) { ++live; }
  ~Obj() { --live; }
  int value;
  static int live;
};
int Obj::live = 0;

TYPED_TEST(AllocatorTest, NewDelObjAndCtxAllocator) {
  hshm_test::ShmHeap<TypeParam> heap(1 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  hipc::CtxAllocator<TypeParam> ctx(&heap.alloc());
  FullPtr<Obj> o = ctx.template NewObj<Obj>(5);
  ASSERT_FALSE(o.IsNull());
  EXPECT_EQ(o->value, 5);
  EXPECT_EQ(Obj::live, 1);
  EXPECT_TRUE(ctx.DelObj(o).ok());
  EXPECT_EQ(Obj::live, 0);
}

TYPED_TEST(AllocatorTest, ManyThreadsNoOverlap) {
  hshm_test::ShmHeap<TypeParam> heap(64 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto &a = heap.alloc();
  constexpr int kThreads = 4;
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      std::vector<std::pair<FullPtr<char>, size_t>> live;
      for (int i = 0; i < 50000; ++i) {
        if (live.size() < 64 && (rng() % 3 != 0 || live.empty())) {
          size_t size = 1 + rng() % 3000;
          FullPtr<char> p = a.Allocate(HSHM_MCTX, size);
          if (p.IsNull()) {
            errors++;
            continue;
          }
          std::memset(p.ptr_, t + 1, size);
          live.emplace_back(p, size);
        } else {
          size_t k = rng() % live.size();
          auto [p, size] = live[k];
          for (size_t j = 0; j < size; ++j) {
            if (p.ptr_[j] != static_cast<char>(t + 1)) {
              errors++;
              break;
            }
          }
          if (!a.Free(HSHM_MCTX, p.shm_).ok()) errors++;
          live[k] = live.back();
          live.pop_back();
        }
      }
      for (auto &[p, size] : live) {
        if (!a.Free(HSHM_MCTX, p.shm_).ok()) errors++;
      }
      if constexpr (std::is_same<TypeParam, ThreadLocalAllocator>::value) {
        a.FlushThreadCache();
      }
    });
  }
  for (auto &t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(a.GetBytesInUse(), 0);
}

TEST(ThreadLocalAllocatorTest, ThreadExitReturnsCache) {
  hshm_test::ShmHeap<ThreadLocalAllocator> heap(8 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto &a = heap.alloc();
  hipc::Pointer p;
  std::thread t([&] {
    // Allocate a batch into this thread's cache, keep one, exit.
    p = a.Allocate(HSHM_MCTX, 100).shm_;
  });
  t.join();
  ASSERT_FALSE(p.IsNull());
  EXPECT_GT(a.GetBytesInUse(), 0);
  EXPECT_TRUE(a.Free(HSHM_MCTX, p).ok());
  a.FlushThreadCache();
  EXPECT_EQ(a.GetBytesInUse(), 0);
  // The exited thread's cached blocks were returned to the shared lists:
  // allocating them again does not move the bump pointer.
  hshm::u64 unreserved = a.GetBytesUnreserved();
  std::thread t2([&] {
    for (int i = 0; i < 30; ++i) a.Allocate(HSHM_MCTX, 100);
  });
  t2.join();
  EXPECT_EQ(a.GetBytesUnreserved(), unreserved);
}

// FlushAllThreadCaches returns the cached blocks of threads that are still
// alive (a client detaching while its other threads idle). Before, only the
// calling thread's went back, and each detach lost the others'.
TEST(ThreadLocalAllocatorTest, FlushAllReturnsLiveThreadsCaches) {
  hshm_test::ShmHeap<ThreadLocalAllocator> heap(8 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto &a = heap.alloc();
  constexpr int kThreads = 3;
  std::atomic<int> filled{0};
  std::atomic<bool> leave{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      // Blocks allocated and freed stay in this thread's cache.
      std::vector<hipc::Pointer> ps;
      for (int i = 0; i < 20; ++i)
        ps.push_back(a.Allocate(HSHM_MCTX, 100).shm_);
      for (auto &p : ps) EXPECT_TRUE(a.Free(HSHM_MCTX, p).ok());
      filled.fetch_add(1);
      while (!leave.load()) std::this_thread::yield();
    });
  }
  while (filled.load() < kThreads) std::this_thread::yield();
  EXPECT_GT(a.GetBytesInUse(), 0);  // cached blocks count as in use
  a.FlushThreadCache();             // this thread's: none
  EXPECT_GT(a.GetBytesInUse(), 0);
  a.FlushAllThreadCaches();
  EXPECT_EQ(a.GetBytesInUse(), 0);
  leave.store(true);
  for (auto &t : threads) t.join();  // their exit flushes nothing twice
  EXPECT_EQ(a.GetBytesInUse(), 0);
  hshm::u64 unreserved = a.GetBytesUnreserved();
  FullPtr<char> again = a.Allocate(HSHM_MCTX, 100);
  ASSERT_FALSE(again.IsNull());
  EXPECT_EQ(a.GetBytesUnreserved(), unreserved);  // reused, not carved
  EXPECT_TRUE(a.Free(HSHM_MCTX, again.shm_).ok());
}

TEST(HeapAllocatorTest, AttachValidates) {
  hshm_test::ShmHeap<HeapAllocator> heap(1 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  HeapAllocator other;
  EXPECT_TRUE(other.Attach(heap.shm().data(), heap.shm().data_size()).ok());
  EXPECT_EQ(other.GetId(), heap.alloc().GetId());
  EXPECT_FALSE(other.Attach(heap.shm().data(), 4096).ok());
  alignas(16) static char junk[8192] = {};
  HeapAllocator j;
  EXPECT_FALSE(j.Attach(junk, sizeof(junk)).ok());
  EXPECT_FALSE(j.Create(hipc::AllocatorId(3, 0), junk, 100).ok());
  EXPECT_FALSE(j.Create(hipc::AllocatorId(3, 0), junk + 1, 8000).ok());
}

}  // namespace
