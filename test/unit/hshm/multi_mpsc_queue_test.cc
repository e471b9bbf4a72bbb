#include "hermes_shm/data_structures/multi_mpsc_queue.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

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

// A producer that claimed a ticket and died before marking its slot (as if
// killed) does not block the lane: the consumer recycles the ticket after the
// stall timeout, and the lane keeps its full capacity.
TEST(MultiMpscQueueTest, StalledClaimIsRecycledWithoutAHole) {
  hshm_test::ShmHeap<hipc::HeapAllocator> heap(1 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto q = Queue::New(&heap.alloc(), HSHM_MCTX, 1, 1, 4);
  ASSERT_FALSE(q.IsNull());
  auto &lane = q->GetLane(0, 0);
  ASSERT_TRUE(lane.TryPush(Item(0, 0)));
  // Simulate a producer that claimed ticket 1 and died: advance the tail the
  // way TryPush does, without marking or publishing. (tail_ is the second
  // cache line.)
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
  EXPECT_EQ(lane.holes(), 0u);
  EXPECT_EQ(lane.recycled(), 1u);
  // The lane keeps working, through many wrap-arounds, at full capacity.
  for (hshm::u64 i = 0; i < 100; ++i) {
    ASSERT_TRUE(lane.TryPush(Item(0, 100 + i)));
    ASSERT_TRUE(lane.TryPop(&out));
    ASSERT_EQ(out.off_.off_, 100 + i);
  }
  int pushed = 0;
  while (lane.TryPush(Item(0, 0))) pushed++;
  EXPECT_EQ(pushed, 4);
}

/** Marks the slot of the next ticket busy for `pid`, as a producer of that
 * process would between claiming and publishing. */
void FakeBusyClaim(Queue *q, int pid) {
  auto &lane = q->GetLane(0, 0);
  auto view = q->GetView(0, 0);
  auto *tail = reinterpret_cast<std::atomic<hshm::u64> *>(
      reinterpret_cast<char *>(&lane) + 64);
  hshm::u64 pos = tail->fetch_add(1);
  view.slot(pos)->seq_.store(Queue::Lane::kBusy | static_cast<hshm::u64>(pid));
}

/** Drains `view` until it yields `want` items or 5 s pass. */
int DrainFor(Queue::View *view, int want) {
  hipc::Pointer out;
  int got = 0;
  uint64_t t0 = hshm::NowNs();
  while (got < want && hshm::NowNs() - t0 < 5000000000ull) {
    if (view->TryPop(&out)) {
      ++got;
    } else {
      std::this_thread::yield();
    }
  }
  return got;
}

// A writer that died mid-write (its slot busy with its pid): the consumer
// sees the pid is gone and recycles the slot; no hole, full capacity.
TEST(MultiMpscQueueTest, DeadWriterSlotIsRecycled) {
  hshm_test::ShmHeap<hipc::HeapAllocator> heap(1 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto q = Queue::New(&heap.alloc(), HSHM_MCTX, 1, 1, 4);
  ASSERT_FALSE(q.IsNull());
  pid_t child = fork();
  if (child == 0) _exit(0);
  ASSERT_GT(child, 0);
  waitpid(child, nullptr, 0);  // now a dead pid
  FakeBusyClaim(q.ptr_, child);
  auto view = q->GetView(0, 0);
  ASSERT_TRUE(view.TryPush(Item(0, 7)));
  ASSERT_EQ(DrainFor(&view, 1), 1);
  EXPECT_EQ(view.holes(), 0u);
  EXPECT_EQ(view.recycled(), 1u);
  int pushed = 0;
  while (view.TryPush(Item(0, 0))) pushed++;
  EXPECT_EQ(pushed, 4);
}

// A live writer stalled mid-write: its slot becomes a hole the lane works
// around; once that writer gives up (or dies) the hole is recycled and the
// lane regains its capacity.
TEST(MultiMpscQueueTest, HoleOfStalledLiveWriterIsRecycledWhenItDies) {
  hshm_test::ShmHeap<hipc::HeapAllocator> heap(1 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto q = Queue::New(&heap.alloc(), HSHM_MCTX, 1, 1, 4);
  ASSERT_FALSE(q.IsNull());
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  pid_t child = fork();
  if (child == 0) {  // a live "writer" that waits until told to exit
    char c;
    close(pipefd[1]);
    (void)!read(pipefd[0], &c, 1);
    _exit(0);
  }
  ASSERT_GT(child, 0);
  close(pipefd[0]);
  FakeBusyClaim(q.ptr_, child);
  auto view = q->GetView(0, 0);
  ASSERT_TRUE(view.TryPush(Item(0, 7)));
  ASSERT_EQ(DrainFor(&view, 1), 1);  // stepped over the stalled slot
  EXPECT_EQ(view.holes(), 1u);
  // Round trips keep working around the hole.
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(view.TryPush(Item(0, i)));
    ASSERT_EQ(DrainFor(&view, 1), 1);
  }
  close(pipefd[1]);
  waitpid(child, nullptr, 0);
  // The next pass over the hole recycles it.
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(view.TryPush(Item(0, i)));
    ASSERT_EQ(DrainFor(&view, 1), 1);
  }
  EXPECT_EQ(view.holes(), 0u);
  int pushed = 0;
  while (view.TryPush(Item(0, 0))) pushed++;
  EXPECT_EQ(pushed, 4);
}

// A view computes its lane from the caller's shape: scribbling over the
// shape stored in the segment does not move where the runtime reads.
TEST(MultiMpscQueueTest, ViewIgnoresCorruptSharedShape) {
  hshm_test::ShmHeap<hipc::HeapAllocator> heap(1 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto q = Queue::New(&heap.alloc(), HSHM_MCTX, 2, 2, 8);
  ASSERT_FALSE(q.IsNull());
  auto view = Queue::MakeView(q.ptr_, 2, 2, 8, 1, 1);
  auto &lane = q->GetLane(1, 1);
  // mask_ and slots_off_ are the last two words of the lane's fourth line.
  auto *shape =
      reinterpret_cast<hshm::u64 *>(reinterpret_cast<char *>(&lane) + 3 * 64);
  shape[0] = ~0ull;
  shape[1] = 1ull << 40;
  for (hshm::u64 i = 0; i < 8; ++i) ASSERT_TRUE(view.TryPush(Item(0, i)));
  EXPECT_FALSE(view.TryPush(Item(0, 99)));
  hipc::Pointer out;
  for (hshm::u64 i = 0; i < 8; ++i) {
    ASSERT_TRUE(view.TryPop(&out));
    EXPECT_EQ(out.off_.off_, i);
  }
  EXPECT_FALSE(view.TryPop(&out));
}

}  // namespace
