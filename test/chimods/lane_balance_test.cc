// Lane balancing inside a node: two busy lanes that start on one worker end
// up on two, and every task still completes exactly once with its result.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <string>

#include "chimod_test_fixture.h"
#include "small_message/small_message_client.h"

namespace {

using chi::small_message::ComputeKernel;
using chi::small_message::ComputeTask;
using chi_tools::JsonValue;

/** Two low-latency workers over four process-queue lanes (one lane per
 * worker of the larger kind): worker 0 drains lanes 0 and 2, worker 1
 * lanes 1 and 3. */
class LaneBalanceTest : public chi_test::ChiModTest {
 protected:
  LaneBalanceTest()
      : ChiModTest("workers:\n  low_latency: 2\n  high_latency: 4\n") {}
};

TEST_F(LaneBalanceTest, BusyLanesSpreadOverTheWorkersAndNoTaskIsLost) {
  chi::small_message::Client sm;
  ASSERT_TRUE(sm.Create("balance", 4).ok());
  // Containers 0 and 2 name lanes 0 and 2: both on worker 0 at start.
  const chi::u64 kIters = 40000;  // tens of microseconds of work per task
  std::deque<chi::Future<ComputeTask>> window;
  chi::u64 sent = 0, done = 0, seed = 0;
  chi::u64 moved = 0;
  double max_busy = 0, min_busy = 0;
  double before_max = 0, before_min = 0;  // the last look before a move
  chi::u64 before_done = 0;
  auto start_time = std::chrono::steady_clock::now();
  auto before_time = start_time;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  auto settle_until = std::chrono::steady_clock::time_point::max();
  auto next_stat = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() < deadline) {
    while (window.size() < 16) {
      chi::u32 container = (sent % 2) * 2;
      window.push_back(sm.Async<ComputeTask>(
          chi::DomainQuery::GetLocalId(container), kIters, seed + sent));
      ++sent;
    }
    chi::Future<ComputeTask> f = std::move(window.front());
    window.pop_front();
    ASSERT_TRUE(f.Wait().ok()) << f.status();
    ASSERT_EQ(f->result_, ComputeKernel(kIters, seed + done)) << done;
    ++done;
    auto now = std::chrono::steady_clock::now();
    if (now < next_stat) continue;
    next_stat = now + std::chrono::milliseconds(200);
    JsonValue stat = chi_test::StatJson();
    moved = 0;
    max_busy = 0;
    min_busy = 1;
    for (const JsonValue &w : stat["workers"].array) {
      if (w["kind"].str != "low_latency") continue;
      moved += static_cast<chi::u64>(w["lanes_moved"].Num());
      max_busy = std::max(max_busy, w["busy"].Num());
      min_busy = std::min(min_busy, w["busy"].Num());
    }
    if (moved == 0) {
      before_max = max_busy;
      before_min = min_busy;
      before_done = done;
      before_time = now;
    }
    if (moved > 0 &&
        settle_until == std::chrono::steady_clock::time_point::max()) {
      settle_until = now + std::chrono::milliseconds(1500);
    }
    if (now >= settle_until) break;
  }
  ASSERT_GT(moved, 0u) << "no lane moved; busy " << max_busy << " / "
                       << min_busy;
  auto end_time = std::chrono::steady_clock::now();
  auto secs = [](auto d) { return std::chrono::duration<double>(d).count(); };
  printf("tasks/s: %.0f before the move, %.0f after\n",
         before_done / std::max(1e-9, secs(before_time - start_time)),
         (done - before_done) / std::max(1e-9, secs(end_time - before_time)));
  printf(
      "busy of the two workers: %.2f / %.2f before the move, %.2f / %.2f "
      "after (max/mean %.2f -> %.2f)\n",
      before_max, before_min, max_busy, min_busy,
      before_max + before_min > 0 ? 2 * before_max / (before_max + before_min)
                                  : 0.0,
      max_busy + min_busy > 0 ? 2 * max_busy / (max_busy + min_busy) : 0.0);
  // Both workers now carry one of the busy lanes. Relative to each other:
  // how busy they are depends on the client's rate, which a loaded machine
  // lowers (TSan beside another test: 0.59 / 0.00 before, 0.25 / 0.18
  // after).
  EXPECT_GT(min_busy, 0.1) << "max " << max_busy;
  EXPECT_GT(min_busy, 0.5 * max_busy) << "max " << max_busy;
  // Drain, then count: every task ran exactly once.
  while (!window.empty()) {
    ASSERT_TRUE(window.front().Wait().ok());
    ASSERT_EQ(window.front()->result_, ComputeKernel(kIters, seed + done));
    window.pop_front();
    ++done;
  }
  EXPECT_EQ(done, sent);
  JsonValue stat = chi_test::StatJson();
  for (const JsonValue &p : stat["pools"].array) {
    if (p["name"].str == "balance") {
      EXPECT_EQ(static_cast<chi::u64>(p["tasks_completed"].Num()), sent);
    }
  }
}

}  // namespace
