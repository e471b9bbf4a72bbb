// The reinforcement threads' per-method cost model (CostModel): a least
// squares line through decaying samples.
#include <gtest/gtest.h>

#include "chimaera/work_orchestrator.h"

namespace {

TEST(CostModelTest, FitsALineThroughItsSamples) {
  chi::CostModel m;
  EXPECT_EQ(m.Estimate(10), -1);  // nothing learned yet
  for (int x = 0; x <= 1000; x += 100) m.Add(x, 500 + 2.5 * x);
  EXPECT_NEAR(m.base_ns(), 500, 1e-6);
  EXPECT_NEAR(m.ns_per_byte(), 2.5, 1e-9);
  EXPECT_NEAR(m.Estimate(4000), 10500, 1e-6);
  EXPECT_NEAR(m.weight(), 11, 1e-9);
  // Ageing weighs every sample alike: the line stays, the weight shrinks.
  m.Decay(0.5);
  EXPECT_NEAR(m.ns_per_byte(), 2.5, 1e-9);
  EXPECT_NEAR(m.weight(), 5.5, 1e-9);
}

TEST(CostModelTest, OneSizeGivesTheMeanAndNoSlope) {
  chi::CostModel m;
  m.Add(64, 100);
  m.Add(64, 300);
  EXPECT_EQ(m.ns_per_byte(), 0);
  EXPECT_NEAR(m.base_ns(), 200, 1e-9);
  EXPECT_NEAR(m.Estimate(1 << 20), 200, 1e-9);
}

TEST(CostModelTest, NewSamplesOutweighAgedOnes) {
  chi::CostModel m;
  for (int i = 0; i < 100; ++i) m.Add(0, 1000);
  for (int i = 0; i < 100; ++i) m.Decay(0.95);  // 10 s at 100 ms periods
  for (int i = 0; i < 100; ++i) m.Add(0, 100);
  EXPECT_LT(m.Estimate(0), 110);  // the old cost is all but forgotten
  EXPECT_GE(m.Estimate(0), 100);
}

TEST(CostModelTest, AFallingLineIsTheMeanCost) {
  chi::CostModel m;
  m.Add(0, 300);
  m.Add(1000, 100);  // bigger inputs do not make work cheaper
  EXPECT_EQ(m.ns_per_byte(), 0);
  EXPECT_NEAR(m.Estimate(5000), 200, 1e-9);
}

TEST(CostModelTest, SizesThatBarelyVaryGiveNoSlope) {
  chi::CostModel m;  // keys of 10..20 bytes, noisy costs
  for (int i = 0; i < 100; ++i) m.Add(10 + i % 11, i % 2 ? 1000 : 3000);
  EXPECT_EQ(m.ns_per_byte(), 0);
  EXPECT_NEAR(m.Estimate(15), 2000, 30);
}

}  // namespace
