#include "hermes_shm/data_structures/multi_mpsc_queue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "test_util.h"

namespace {

using Queue = hipc::multi_mpsc_queue<hipc::Pointer>;

hipc::Pointer Item(hshm::u32 producer, hshm::u64 seq) {
  return hipc::Pointer(hipc::AllocatorId(producer + 1, 0), seq);
}

TEST(MultiMpscQueueTest, ShapeAndFifo) {
  hshm_test::ShmHeap<hipc::HeapAllocator> heap(1 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  hshm::Status st;
  auto q = Queue::New(&heap.alloc(), HSHM_MCTX, 3, 2, 5, &st);
  ASSERT_FALSE(q.IsNull()) << st;
  EXPECT_EQ(q->num_lanes(), 3u);
  EXPECT_EQ(q->num_prios(), 2u);
  EXPECT_EQ(q->depth(), 8u);  // rounded up to a power of two
  auto &lane = q->GetLane(2, 1);
  EXPECT_TRUE(lane.Empty());
  for (hshm::u64 i = 0; i < 8; ++i) ASSERT_TRUE(lane.TryPush(Item(0, i)));
  // Full: fails at once instead of spinning.
  EXPECT_FALSE(lane.TryPush(Item(0, 99)));
  EXPECT_EQ(lane.Size(), 8u);
  EXPECT_TRUE(q->GetLane(0, 0).Empty());
  hipc::Pointer out;
  for (hshm::u64 i = 0; i < 8; ++i) {
    ASSERT_TRUE(lane.TryPop(&out));
    EXPECT_EQ(out.off_.off_, i);
  }
  EXPECT_FALSE(lane.TryPop(&out));
  // Wraps around many times.
  for (hshm::u64 i = 0; i < 1000; ++i) {
    ASSERT_TRUE(lane.TryPush(Item(0, i)));
    ASSERT_TRUE(lane.TryPop(&out));
    ASSERT_EQ(out.off_.off_, i);
  }
  lane.header().worker_id_.store(3);
  EXPECT_EQ(q->GetLane(2, 1).header().worker_id_.load(), 3u);
  // Bad shapes are errors.
  EXPECT_TRUE(Queue::New(&heap.alloc(), HSHM_MCTX, 0, 1, 8, &st).IsNull());
  EXPECT_EQ(st.code(), hshm::StatusCode::kInvalidArgument);
  EXPECT_TRUE(
      Queue::New(&heap.alloc(), HSHM_MCTX, 64, 2, 1 << 16, &st).IsNull());
  EXPECT_EQ(st.code(), hshm::StatusCode::kOutOfMemory);
}

// Several producers x 1e6 items into one lane; one consumer checks each item
// arrives exactly once and in per-producer order.
TEST(MultiMpscQueueTest, StressExactlyOnceInOrder) {
  constexpr int kProducers = 3;
  constexpr hshm::u64 kItems = 1000000;
  hshm_test::ShmHeap<hipc::HeapAllocator> heap(1 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto q = Queue::New(&heap.alloc(), HSHM_MCTX, 1, 1, 256);
  ASSERT_FALSE(q.IsNull());
  auto &lane = q->GetLane(0, 0);
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (hshm::u64 i = 0; i < kItems; ++i) {
        while (!lane.TryPush(Item(p, i))) std::this_thread::yield();
      }
    });
  }
  std::vector<hshm::u64> next(kProducers, 0);
  hshm::u64 total = 0, errors = 0;
  hipc::Pointer out;
  while (total < kProducers * kItems) {
    if (!lane.TryPop(&out)) {
      std::this_thread::yield();
      continue;
    }
    hshm::u32 p = out.alloc_id_.major_ - 1;
    if (p >= kProducers || out.off_.off_ != next[p]) {
      errors++;
    } else {
      next[p]++;
    }
    total++;
  }
  for (auto &t : producers) t.join();
  EXPECT_EQ(errors, 0u);
  for (int p = 0; p < kProducers; ++p) EXPECT_EQ(next[p], kItems);
  EXPECT_FALSE(lane.TryPop(&out));
  EXPECT_EQ(lane.holes(), 0u);
}

// A producer that claimed a slot and never published it (as if killed) does
// not block the lane forever: the consumer abandons the slot and moves on.
TEST(MultiMpscQueueTest, StalledProducerLeavesAHole) {
  hshm_test::ShmHeap<hipc::HeapAllocator> heap(1 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto q = Queue::New(&heap.alloc(), HSHM_MCTX, 1, 1, 4);
  ASSERT_FALSE(q.IsNull());
  auto &lane = q->GetLane(0, 0);
  ASSERT_TRUE(lane.TryPush(Item(0, 0)));
  // Simulate a producer that claimed ticket 1 and died: advance the tail the
  // way TryPush does, without publishing. (tail_ is the second cache line.)
  auto *tail = reinterpret_cast<std::atomic<hshm::u64> *>(
      reinterpret_cast<char *>(&lane) + 64);
  ASSERT_EQ(tail->load(), 1u);
  tail->store(2);
  ASSERT_TRUE(lane.TryPush(Item(0, 2)));
  hipc::Pointer out;
  ASSERT_TRUE(lane.TryPop(&out));
  EXPECT_EQ(out.off_.off_, 0u);
  uint64_t t0 = hshm::NowNs();
  while (!lane.TryPop(&out)) {
    ASSERT_LT(hshm::NowNs() - t0, 5000000000ull) << "lane wedged";
    std::this_thread::yield();
  }
  EXPECT_EQ(out.off_.off_, 2u);
  EXPECT_EQ(lane.holes(), 1u);
  // The lane keeps working around the hole, through many wrap-arounds.
  for (hshm::u64 i = 0; i < 100; ++i) {
    ASSERT_TRUE(lane.TryPush(Item(0, 100 + i)));
    ASSERT_TRUE(lane.TryPop(&out));
    ASSERT_EQ(out.off_.off_, 100 + i);
  }
  // Capacity is one slot less.
  int pushed = 0;
  while (lane.TryPush(Item(0, 0))) pushed++;
  EXPECT_EQ(pushed, 3);
}

}  // namespace
