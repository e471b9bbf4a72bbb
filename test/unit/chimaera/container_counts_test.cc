// Container::counts_: a task's in-flight and completed counts in one word
// (runtime library alone, no runtime process).
#include <gtest/gtest.h>

#include "chimaera/container.h"
#include "chimaera/pool_manager.h"

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

}  // namespace
