#include "hermes_shm/data_structures/multi_mpsc_queue.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "mpsc_lane_test_peer.h"
#include "test_util.h"

namespace {

using Queue = hipc::multi_mpsc_queue<hshm::u64>;
using Peer = hipc::MpscLaneTestPeer;

/** Item `seq` of `producer`: the producer in the top 16 bits. */
hshm::u64 Item(hshm::u32 producer, hshm::u64 seq) {
  return (static_cast<hshm::u64>(producer) << 48) | seq;
}
/** The producer and sequence number of an item. */
hshm::u32 ProducerOf(hshm::u64 item) {
  return static_cast<hshm::u32>(item >> 48);
}
hshm::u64 SeqOf(hshm::u64 item) { return item & ((1ull << 48) - 1); }

/** Pushes and pops `n` items one at a time, moving an empty lane's head and
 * tail `n` tickets on; false if a push or pop fails. */
bool Advance(Queue::View *view, int n) {
  hshm::u64 out = 0;
  for (int i = 0; i < n; ++i) {
    if (!view->TryPush(Item(0, i)) || !view->TryPop(&out)) return false;
  }
  return true;
}

/** One lane (one priority) of `depth` slots in a fresh shared-memory heap,
 * with a view of it. */
struct OneLane {
  explicit OneLane(hshm::u64 depth) : heap(1 << 20, 6) {
    if (heap.status().ok())
      q = Queue::New(&heap.alloc(), HSHM_MCTX, 1, 1, depth);
    if (!q.IsNull()) view = q->GetView(0, 0);
  }
  /** True if the heap and the queue were made. */
  bool ok() const { return heap.status().ok() && !q.IsNull(); }
  hshm_test::ShmHeap<hipc::HeapAllocator> heap;
  hipc::FullPtr<Queue> q;
  Queue::View view;
};

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
  hshm::u64 out = 0;
  for (hshm::u64 i = 0; i < 8; ++i) {
    ASSERT_TRUE(lane.TryPop(&out));
    EXPECT_EQ(out, i);
  }
  EXPECT_FALSE(lane.TryPop(&out));
  // Wraps around many times.
  for (hshm::u64 i = 0; i < 1000; ++i) {
    ASSERT_TRUE(lane.TryPush(Item(0, i)));
    ASSERT_TRUE(lane.TryPop(&out));
    ASSERT_EQ(out, i);
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
  std::atomic<bool> stop{false};  // a lost item ends the test, not hangs it
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (hshm::u64 i = 0; i < kItems && !stop.load(); ++i) {
        while (!lane.TryPush(Item(p, i)) && !stop.load()) {
          std::this_thread::yield();
        }
      }
    });
  }
  std::vector<hshm::u64> next(kProducers, 0);
  hshm::u64 total = 0, errors = 0;
  hshm::u64 out = 0;
  const uint64_t t0 = hshm::NowNs();
  while (total < kProducers * kItems) {
    if (hshm::NowNs() - t0 > 60000000000ull) {
      stop.store(true);
      ADD_FAILURE() << "items stopped arriving after " << total;
      break;
    }
    if (!lane.TryPop(&out)) {
      std::this_thread::yield();
      continue;
    }
    hshm::u32 p = ProducerOf(out);
    if (p >= kProducers || SeqOf(out) != next[p]) {
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
  EXPECT_EQ(lane.recycled(), 0u);
}

// A producer that claimed a ticket and died before publishing (as if killed
// between its two CASes) does not block the lane: the consumer recycles the
// ticket after the stall timeout, and the lane keeps its full capacity.
TEST(MultiMpscQueueTest, StalledClaimIsRecycled) {
  hshm_test::ShmHeap<hipc::HeapAllocator> heap(1 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto q = Queue::New(&heap.alloc(), HSHM_MCTX, 1, 1, 4);
  ASSERT_FALSE(q.IsNull());
  auto &lane = q->GetLane(0, 0);
  ASSERT_TRUE(lane.TryPush(Item(0, 0)));
  // Simulate a producer that claimed ticket 1 and died: advance the tail the
  // way TryPush does, without publishing.
  auto *tail = &Peer::Tail(&lane);
  ASSERT_EQ(tail->load(), 1u);
  tail->store(2);
  ASSERT_TRUE(lane.TryPush(Item(0, 2)));
  hshm::u64 out = 0;
  ASSERT_TRUE(lane.TryPop(&out));
  EXPECT_EQ(out, 0u);
  uint64_t t0 = hshm::NowNs();
  while (!lane.TryPop(&out)) {
    ASSERT_LT(hshm::NowNs() - t0, 5000000000ull) << "lane wedged";
    std::this_thread::yield();
  }
  EXPECT_EQ(out, 2u);
  EXPECT_GE(hshm::NowNs() - t0, Queue::Lane::kStallTimeoutNs / 2)
      << "recycled before the stall timeout";
  EXPECT_EQ(lane.recycled(), 1u);
  // The lane keeps working, through many wrap-arounds, at full capacity.
  for (hshm::u64 i = 0; i < 100; ++i) {
    ASSERT_TRUE(lane.TryPush(Item(0, 100 + i)));
    ASSERT_TRUE(lane.TryPop(&out));
    ASSERT_EQ(out, 100 + i);
  }
  int pushed = 0;
  while (lane.TryPush(Item(0, 0))) pushed++;
  EXPECT_EQ(pushed, 4);
}

/** Drains `view` until it yields `want` items or 5 s pass; appends them to
 * `*got`. Returns how many it got. */
int DrainFor(Queue::View *view, int want, std::vector<hshm::u64> *got) {
  hshm::u64 out = 0;
  int n = 0;
  uint64_t t0 = hshm::NowNs();
  while (n < want && hshm::NowNs() - t0 < 5000000000ull) {
    if (view->TryPop(&out)) {
      ++n;
      got->push_back(out);
    } else {
      std::this_thread::yield();
    }
  }
  return n;
}

// A ticket recycled while the consumer pops with TryPopHeld (a dead
// producer's) is released by ReleaseHeld even though no pop returned a
// value: whoever waits for released() to pass it is not left waiting.
TEST(MultiMpscQueueTest, RecycledTicketIsReleasedByReleaseHeld) {
  OneLane ql(4);
  ASSERT_TRUE(ql.ok());
  auto &view = ql.view;
  Peer::Tail(view.lane()).fetch_add(1);  // ticket 0 claimed, never published
  hshm::u64 out = 0;
  const uint64_t t0 = hshm::NowNs();
  while (view.recycled() == 0 && hshm::NowNs() - t0 < 5000000000ull) {
    ASSERT_FALSE(view.TryPopHeld(&out));
    view.ReleaseHeld();
  }
  ASSERT_EQ(view.recycled(), 1u);
  EXPECT_EQ(view.released(), 1u);
  EXPECT_EQ(view.QueuedPastReleased(), 0u);
}

// A producer that stalls between claiming its ticket and publishing (a
// stopped process) loses the ticket once the consumer recycles it: its late
// publish fails, whatever the slot holds by then (free for the next round,
// or another producer's item), and nothing it would have clobbered is lost.
TEST(MultiMpscQueueTest, LatePublishOfARecycledTicketFails) {
  hshm_test::ShmHeap<hipc::HeapAllocator> heap(1 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto q = Queue::New(&heap.alloc(), HSHM_MCTX, 1, 1, 4);
  ASSERT_FALSE(q.IsNull());
  auto &lane = q->GetLane(0, 0);
  auto view = q->GetView(0, 0);
  auto *tail = &Peer::Tail(&lane);
  // The stalled producer holds ticket 0.
  hshm::u64 pos = tail->fetch_add(1);
  ASSERT_EQ(pos, 0u);
  ASSERT_TRUE(view.TryPush(Item(1, 1)));
  std::vector<hshm::u64> got;
  ASSERT_EQ(DrainFor(&view, 1, &got), 1);
  EXPECT_EQ(got[0], Item(1, 1));
  EXPECT_EQ(view.recycled(), 1u);
  // Ticket 0's slot is free for ticket 4 now; fill the lane so that a
  // producer's item sits in it.
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(view.TryPush(Item(2, i)));
  // The late publish, exactly as Push issues it: expects seq == its ticket.
  Queue::Lane::Slot *s = view.slot(pos);
  hshm::Words128 expect{pos, s->value_.load()};
  EXPECT_FALSE(hshm::CompareExchange128(s, &expect,
                                        hshm::Words128{pos + 1, Item(9, 9)}));
  got.clear();
  ASSERT_EQ(DrainFor(&view, 4, &got), 4);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(got[i], Item(2, i));
  EXPECT_FALSE(view.TryPop(&got[0]));
}

/** A lane header whose Push stalls once, between claiming its ticket and
 * publishing it, until the consumer reports that it recycled the ticket
 * (as a producer stopped there past kStallTimeoutNs would). */
struct StallOnceHeader : hipc::LaneHeader {
  static std::atomic<bool> stall_next;  ///< Stall the next claim.
  static std::atomic<bool> recycled;    ///< Set by the consumer.
  static std::atomic<int> claims;       ///< Tickets claimed so far.
  /** The hook Push calls (see internal::HasTicketHook). */
  static void OnTicketClaimed(hshm::u64) {
    claims.fetch_add(1);
    if (!stall_next.exchange(false)) return;
    const uint64_t t0 = hshm::NowNs();
    while (!recycled.load() && hshm::NowNs() - t0 < 5000000000ull) {
      std::this_thread::yield();
    }
  }
};
std::atomic<bool> StallOnceHeader::stall_next{false};
std::atomic<bool> StallOnceHeader::recycled{false};
std::atomic<int> StallOnceHeader::claims{0};

// A producer that stalls between claiming its ticket and publishing loses
// the ticket to the consumer's recycle; its Push then claims a fresh ticket
// and publishes there. End to end: the item arrives once, after the
// recycle, and the lane goes on in order at full capacity.
TEST(MultiMpscQueueTest, PushAfterItsTicketWasRecycledClaimsAnother) {
  using StallQueue = hipc::multi_mpsc_queue<hshm::u64, StallOnceHeader>;
  static_assert(hipc::internal::HasTicketHook<StallOnceHeader>::value);
  static_assert(!hipc::internal::HasTicketHook<hipc::LaneHeader>::value);
  hshm_test::ShmHeap<hipc::HeapAllocator> heap(1 << 20, 6);
  ASSERT_TRUE(heap.status().ok());
  auto q = StallQueue::New(&heap.alloc(), HSHM_MCTX, 1, 1, 4);
  ASSERT_FALSE(q.IsNull());
  auto view = q->GetView(0, 0);
  StallOnceHeader::stall_next = true;
  StallOnceHeader::recycled = false;
  StallOnceHeader::claims = 0;
  std::atomic<bool> pushed{false}, push_ok{false};
  std::thread producer([&] {
    push_ok = view.TryPush(Item(1, 7));
    pushed = true;
  });
  // The consumer polls: nothing is published while the producer stalls,
  // until the stall timeout passes and it recycles ticket 0.
  std::vector<hshm::u64> got;
  hshm::u64 out = 0;
  const uint64_t t0 = hshm::NowNs();
  while (got.empty() && hshm::NowNs() - t0 < 5000000000ull) {
    if (view.TryPop(&out)) {
      got.push_back(out);
      continue;
    }
    if (view.recycled() > 0) StallOnceHeader::recycled = true;
    std::this_thread::yield();
  }
  producer.join();
  ASSERT_TRUE(pushed.load());
  EXPECT_TRUE(push_ok.load());
  ASSERT_EQ(got.size(), 1u) << "the item never arrived";
  EXPECT_EQ(got[0], Item(1, 7));
  // Ticket 0, then ticket 1. The stall clock keeps running after a
  // recycle, so if the producer is descheduled between claiming ticket 1
  // and publishing it (a loaded machine), ticket 1 goes too and it pushes
  // once more: each recycle costs exactly one more claim.
  EXPECT_GE(view.recycled(), 1u);
  EXPECT_EQ(StallOnceHeader::claims.load(),
            static_cast<int>(view.recycled()) + 1);
  EXPECT_GE(hshm::NowNs() - t0, StallQueue::Lane::kStallTimeoutNs / 2);
  // Nothing else came (no copy at ticket 0), and the lane goes on in order
  // at full capacity.
  EXPECT_FALSE(view.TryPop(&out));
  for (hshm::u64 i = 0; i < 4; ++i) ASSERT_TRUE(view.TryPush(Item(2, i)));
  EXPECT_FALSE(view.TryPush(Item(2, 4)));
  for (hshm::u64 i = 0; i < 4; ++i) {
    ASSERT_TRUE(view.TryPop(&out));
    EXPECT_EQ(out, Item(2, i));
  }
  EXPECT_FALSE(view.TryPop(&out));
}

// A slot scribbled with garbage (a hostile process) stalls the head like an
// unpublished claim and is recycled the same way: the lane heals.
TEST(MultiMpscQueueTest, ScribbledSlotIsRecycled) {
  OneLane ql(4);
  ASSERT_TRUE(ql.ok());
  auto &view = ql.view;
  ASSERT_TRUE(view.TryPush(Item(0, 0)));
  ASSERT_TRUE(view.TryPush(Item(0, 1)));
  view.slot(0)->seq_.store(0xdeadbeefdeadbeefull);
  std::vector<hshm::u64> got;
  ASSERT_EQ(DrainFor(&view, 1, &got), 1);
  EXPECT_EQ(got[0], Item(0, 1));
  EXPECT_EQ(view.recycled(), 1u);
  // Full capacity again.
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(view.TryPush(Item(0, 10 + i)));
  EXPECT_FALSE(view.TryPush(Item(0, 99)));
  got.clear();
  ASSERT_EQ(DrainFor(&view, 4, &got), 4);
  // A slot ahead of an unmoved tail: the push skips that ticket, and the
  // consumer recycles it when it gets there.
  view.slot(view.lane()->tail())->seq_.store(1ull << 62);
  ASSERT_TRUE(view.TryPush(Item(0, 5)));
  got.clear();
  ASSERT_EQ(DrainFor(&view, 1, &got), 1);
  EXPECT_EQ(got[0], Item(0, 5));
  EXPECT_EQ(view.recycled(), 2u);
}

// A drained lane whose tail slot is scribbled to look published: the
// consumer takes the stale value and moves its head past the tail. Pushes
// skip the ticket the consumer used up, and the lane keeps working.
TEST(MultiMpscQueueTest, PublishedLookingScribbleDoesNotWedge) {
  OneLane ql(4);
  ASSERT_TRUE(ql.ok());
  auto &view = ql.view;
  hshm::u64 out = 0;
  ASSERT_TRUE(Advance(&view, 6));
  hshm::u64 t = view.lane()->tail();
  view.slot(t)->seq_.store(t + 1);
  ASSERT_TRUE(view.TryPop(&out));  // the stale value (a runtime drops it)
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 4; ++i) {
      ASSERT_TRUE(view.TryPush(Item(1, round * 4 + i))) << round << " " << i;
    }
    std::vector<hshm::u64> got;
    ASSERT_EQ(DrainFor(&view, 4, &got), 4);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(got[i], Item(1, round * 4 + i));
  }
}

// A tail scribbled behind the consumer's head, or more than a ring ahead of
// it, is put back at the head by the consumer; pushes then work at full
// capacity and deliver in order.
TEST(MultiMpscQueueTest, ScribbledTailIsPutBack) {
  for (hshm::i64 shift : {hshm::i64{-7}, hshm::i64{5}, hshm::i64{1} << 60}) {
    OneLane ql(4);
    ASSERT_TRUE(ql.ok());
    auto &view = ql.view;
    hshm::u64 out = 0;
    ASSERT_TRUE(Advance(&view, 10));
    const hshm::u64 head = view.lane()->tail();
    Peer::Tail(view.lane()).store(head + shift);
    // The consumer looks at the tail once per kStallCheckEvery empty polls.
    for (hshm::u64 i = 0; i < 2 * Queue::Lane::kStallCheckEvery; ++i) {
      EXPECT_FALSE(view.TryPop(&out));
    }
    EXPECT_EQ(view.lane()->tail(), head) << shift;
    for (int i = 0; i < 4; ++i) {
      ASSERT_TRUE(view.TryPush(Item(1, i))) << shift;
    }
    EXPECT_FALSE(view.TryPush(Item(1, 99)));
    std::vector<hshm::u64> got;
    ASSERT_EQ(DrainFor(&view, 4, &got), 4) << shift;
    for (int i = 0; i < 4; ++i) EXPECT_EQ(got[i], Item(1, i));
    EXPECT_EQ(view.recycled(), 0u);
  }
}

// A push returns, full or not, while every slot looks scribbled ahead of
// any ticket (so each ticket the push meets is skipped, and the next, ...)
// and another thread keeps putting the tail back. Pushes run on their own
// thread: should one loop for ever, the test fails at the deadline, then
// mends the slots so that the push ends and its thread joins.
TEST(MultiMpscQueueTest, PushIsBoundedAgainstAScribbler) {
  OneLane ql(64);
  ASSERT_TRUE(ql.ok());
  auto &view = ql.view;
  for (hshm::u64 i = 0; i < 64; ++i) view.slot(i)->seq_.store(1ull << 62);
  std::atomic<bool> stop{false};
  std::thread scribbler([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      Peer::Tail(view.lane()).store(1000);
      std::this_thread::yield();
    }
  });
  std::atomic<bool> done{false};
  std::thread pusher([&] {
    for (int i = 0; i < 20; ++i) EXPECT_FALSE(view.TryPush(Item(0, i)));
    done.store(true);
  });
  const uint64_t t0 = hshm::NowNs();
  while (!done.load() && hshm::NowNs() - t0 < 20000000000ull) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const bool bounded = done.load();
  const uint64_t took_ms = (hshm::NowNs() - t0) / 1000000;
  stop.store(true);
  scribbler.join();
  while (!done.load()) {  // only if a push is stuck: let it claim a ticket
    hshm::u64 t = view.lane()->tail();
    for (hshm::u64 i = 0; i < 64; ++i) view.slot(t + i)->seq_.store(t + i);
  }
  pusher.join();
  EXPECT_TRUE(bounded) << "pushes still looping after " << took_ms << " ms";
}

// TryPopHeld keeps what it pops from released() (which the runtime's reaper
// watches) until ReleaseHeld; TryPop releases at once.
// QueuedPastReleased counts from released(), which a process scribbling the
// shared head cannot move.
TEST(MultiMpscQueueTest, HeldPopsAndQueuedPastReleased) {
  OneLane ql(8);
  ASSERT_TRUE(ql.ok());
  auto &view = ql.view;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(view.TryPush(Item(0, i)));
  EXPECT_EQ(view.QueuedPastReleased(), 3u);
  Peer::Head(view.lane()).store(100);  // Size() now says empty
  EXPECT_EQ(view.Size(), 0u);
  EXPECT_EQ(view.QueuedPastReleased(), 3u);
  Peer::Head(view.lane()).store(0);
  hshm::u64 out = 0;
  ASSERT_TRUE(view.TryPopHeld(&out));
  EXPECT_EQ(out, Item(0, 0));
  ASSERT_TRUE(view.TryPopHeld(&out));
  EXPECT_EQ(out, Item(0, 1));
  EXPECT_EQ(view.released(), 0u);
  EXPECT_EQ(view.lane()->head(), 2u);        // popped: no longer queued
  EXPECT_EQ(view.QueuedPastReleased(), 3u);  // held ones count
  view.ReleaseHeld();
  EXPECT_EQ(view.released(), 2u);
  EXPECT_EQ(view.QueuedPastReleased(), 1u);
  ASSERT_TRUE(view.TryPop(&out));
  EXPECT_EQ(out, Item(0, 2));
  EXPECT_EQ(view.released(), 3u);
  EXPECT_EQ(view.QueuedPastReleased(), 0u);
}

// Pushes from another process arrive whole (value and seq in one step),
// exactly once and in order. (Killed producers: cross_process_test.cc.)
TEST(MultiMpscQueueTest, ForkedProducersPublishAtomically) {
  OneLane ql(64);
  ASSERT_TRUE(ql.ok());
  auto &q = ql.q;
  auto &view = ql.view;
  constexpr hshm::u64 kItems = 200000;
  pid_t child = fork();
  if (child == 0) {
    for (hshm::u64 i = 0; i < kItems; ++i) {
      while (!q->GetLane(0, 0).TryPush(Item(1, i))) sched_yield();
    }
    _exit(0);
  }
  ASSERT_GT(child, 0);
  // However the test ends, the child does not outlive it.
  struct KillOnExit {
    pid_t pid;
    ~KillOnExit() {
      if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
      }
    }
  } guard{child};
  hshm::u64 next = 0, out;
  uint64_t t0 = hshm::NowNs();
  while (next < kItems && hshm::NowNs() - t0 < 10000000000ull) {
    if (!view.TryPop(&out)) {
      // Let the child run: on a loaded machine both may share one core.
      sched_yield();
      continue;
    }
    ASSERT_EQ(out, Item(1, next)) << "lost, duplicated or torn";
    ++next;
  }
  ASSERT_EQ(next, kItems) << "the child's items stopped arriving";
  int st = 0;
  waitpid(child, &st, 0);
  guard.pid = -1;
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  EXPECT_FALSE(view.TryPop(&out));
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
  Peer::Mask(&lane) = ~0ull;
  Peer::SlotsOff(&lane) = hshm::i64{1} << 40;
  for (hshm::u64 i = 0; i < 8; ++i) ASSERT_TRUE(view.TryPush(Item(0, i)));
  EXPECT_FALSE(view.TryPush(Item(0, 99)));
  hshm::u64 out = 0;
  for (hshm::u64 i = 0; i < 8; ++i) {
    ASSERT_TRUE(view.TryPop(&out));
    EXPECT_EQ(out, i);
  }
  EXPECT_FALSE(view.TryPop(&out));
}

}  // namespace
