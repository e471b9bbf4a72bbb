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

}  // namespace
