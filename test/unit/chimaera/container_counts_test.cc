// Container::counts_: a task's in-flight and completed counts in one word;
// TaskLane's retirement (runtime library alone, no runtime process).
#include <gtest/gtest.h>

#include <atomic>
#include <deque>
#include <thread>
#include <vector>

#include "chimaera/container.h"
#include "chimaera/ipc_manager.h"
#include "chimaera/pool_manager.h"
#include "chimaera/worker.h"

namespace {

// A completion takes one from the in-flight half of Container::counts_ and
// adds one to the completed half, whose wraps are counted apart.
TEST(ContainerCountsTest, CompletedHalfWrapsIntoTheWrapCount) {
  struct Bare : chi::Container {};
  Bare c;
  c.counts_.store((chi::u64{0xffffffffu} << 32) | 2);
  EXPECT_EQ(c.Inflight(), 2u);
  EXPECT_EQ(c.Completed(), 0xffffffffu);
  chi::PoolManager::ReleaseCompleted(&c);
  EXPECT_EQ(c.Inflight(), 1u);
  EXPECT_EQ(c.Completed(), chi::u64{1} << 32);
  chi::PoolManager::ReleaseCompleted(&c);
  EXPECT_EQ(c.Inflight(), 0u);
  EXPECT_EQ(c.Completed(), (chi::u64{1} << 32) + 1);
  c.counts_.fetch_add(1);  // acquired again
  chi::PoolManager::Release(&c);
  EXPECT_EQ(c.Inflight(), 0u);
  EXPECT_EQ(c.Completed(), (chi::u64{1} << 32) + 1);
}

// A batch hold (Worker::FlushHold) ends with one add: the hold's own count
// leaves, the tasks acquired under it minus those released (net, possibly
// negative when it ended tasks acquired before it) join the in-flight half,
// and its completions join the completed half, wraps counted.
TEST(ContainerCountsTest, ReleaseHoldAppliesNetAndDoneInOneAdd) {
  struct Bare : chi::Container {};
  Bare c;
  // Three tasks in flight from elsewhere, plus the hold's count.
  c.counts_.store((chi::u64{7} << 32) | 4);
  // Under the hold: 5 acquired, 5 completed (net 0).
  chi::PoolManager::ReleaseHold(&c, 0, 5);
  EXPECT_EQ(c.Inflight(), 3u);
  EXPECT_EQ(c.Completed(), 12u);
  // Held again; 2 acquired and left running, 1 of the earlier three ended.
  c.counts_.fetch_add(1);
  chi::PoolManager::ReleaseHold(&c, 2 - 1, 1);
  EXPECT_EQ(c.Inflight(), 4u);
  EXPECT_EQ(c.Completed(), 13u);
  // Held again; it ends all four (net -4): in flight drops to zero.
  c.counts_.fetch_add(1);
  chi::PoolManager::ReleaseHold(&c, -4, 4);
  EXPECT_EQ(c.Inflight(), 0u);
  EXPECT_EQ(c.Completed(), 17u);
  // Nothing done under a hold: only its own count leaves.
  c.counts_.fetch_add(1);
  chi::PoolManager::ReleaseHold(&c, 0, 0);
  EXPECT_EQ(c.Inflight(), 0u);
  EXPECT_EQ(c.Completed(), 17u);
  // The completed half wraps into the wrap count.
  c.counts_.store((chi::u64{0xfffffffeu} << 32) | 1);
  chi::PoolManager::ReleaseHold(&c, 0, 3);
  EXPECT_EQ(c.Inflight(), 0u);
  EXPECT_EQ(c.Completed(), (chi::u64{1} << 32) + 1);
}

// A retired lane refuses pushes, bounded or not, and TakeAll empties it.
TEST(TaskLaneTest, ARetiredLaneRefusesPushes) {
  chi::TaskLane lane(2);
  std::vector<chi::RunContext> r(3);
  EXPECT_TRUE(lane.Push(&r[0]));
  EXPECT_TRUE(lane.Push(&r[1]));
  EXPECT_FALSE(lane.Push(&r[2]));  // full
  EXPECT_TRUE(lane.PushUnbounded(&r[2]));
  lane.flags_.fetch_or(chi::kLaneRetired);
  EXPECT_FALSE(lane.PushUnbounded(&r[0]));
  std::deque<chi::RunContext *> all = lane.TakeAll();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0], &r[0]);
  EXPECT_EQ(all[2], &r[2]);
  EXPECT_TRUE(lane.Empty());
  EXPECT_FALSE(lane.Push(&r[0]));
  EXPECT_EQ(lane.Pop(), nullptr);
}

// Pushers racing a lane's retirement and drain (Worker::DrainRetired: sees
// the flag, then TakeAll): every push that succeeds is drained, none is left
// behind in the lane (before, a push that came after the drain was lost
// with its task).
TEST(TaskLaneTest, NoPushLandsAfterTheDrainOfARetiredLane) {
  for (int round = 0; round < 200; ++round) {
    chi::TaskLane lane(1u << 20);
    chi::RunContext r;
    std::atomic<bool> go{false};
    std::atomic<int> pushed{0};
    std::vector<std::thread> pushers;
    for (int t = 0; t < 2; ++t) {
      pushers.emplace_back([&] {
        while (!go.load()) {
        }
        for (int i = 0; i < 2000; ++i) {
          bool ok = (i & 1) ? lane.Push(&r) : lane.PushUnbounded(&r);
          if (!ok) break;
          pushed.fetch_add(1);
        }
      });
    }
    go.store(true);
    std::this_thread::yield();
    lane.flags_.fetch_or(chi::kLaneRetired, std::memory_order_release);
    size_t drained = 0;
    if (lane.flags_.load(std::memory_order_acquire) & chi::kLaneRetired) {
      drained = lane.TakeAll().size();
    }
    for (std::thread &t : pushers) t.join();
    EXPECT_EQ(drained, static_cast<size_t>(pushed.load())) << "round " << round;
    EXPECT_TRUE(lane.Empty());
  }
}

}  // namespace
