// TraceRing on its own (runtime library, no runtime started): overwrite,
// clear, and snapshots taken while its writer runs (meant for TSan too).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "chimaera/trace.h"

namespace {

using chi::TraceEvent;
using chi::TraceKind;
using chi::TraceRing;
using chi::u32;
using chi::u64;

/** Record `i`: every field derived from i, so a torn copy shows. */
TraceEvent Make(u64 i) {
  TraceEvent e;
  e.kind = (i & 1) ? TraceKind::kSubmit : TraceKind::kRun;
  e.method = static_cast<u32>(i * 7);
  e.pool = chi::PoolId(static_cast<u32>(i >> 3), static_cast<u32>(i * 5));
  e.node = chi::TaskNode(i * 3, static_cast<u32>(i & 0xffff));
  e.rc = static_cast<u32>(i & 0xff);
  e.start = i * 11;
  e.end = i * 11 + 9;
  e.id = i & 0xffffffffu;
  e.key = i ^ 0x5555;
  return e;
}

/** True if `e` is exactly Make(i) for the i its start names, as read back
 * from the ring of worker `worker`. */
bool Consistent(const TraceEvent &e, u32 worker, u64 *index) {
  u64 i = e.start / 11;
  TraceEvent w = Make(i);
  *index = i;
  return e.start == w.start && e.kind == w.kind && e.method == w.method &&
         e.pool == w.pool && e.node == w.node && e.rc == w.rc &&
         e.end == w.end && e.key == w.key &&
         e.id == ((u64{worker + 1} << 32) | (i & 0xffffffffu));
}

TEST(TraceRingTest, KeepsTheNewestAndClears) {
  TraceRing ring(10);  // rounded up to 16
  EXPECT_EQ(ring.capacity(), 16u);
  for (u64 i = 0; i < 40; ++i) ring.Push(Make(i));
  EXPECT_EQ(ring.Written(), 40u);
  auto evs = ring.Snapshot(3);
  ASSERT_EQ(evs.size(), 16u);
  for (size_t k = 0; k < evs.size(); ++k) {
    u64 i = 0;
    EXPECT_TRUE(Consistent(evs[k], 3, &i));
    EXPECT_EQ(i, 24 + k);
  }
  ring.Clear();
  EXPECT_EQ(ring.Written(), 0u);
  EXPECT_TRUE(ring.Snapshot(3).empty());
  ring.Push(Make(40));
  evs = ring.Snapshot(3);
  ASSERT_EQ(evs.size(), 1u);
  u64 i = 0;
  EXPECT_TRUE(Consistent(evs[0], 3, &i));
  EXPECT_EQ(i, 40u);
}

TEST(TraceRingTest, SnapshotsWhileTheWriterRunsAreNeverTorn) {
  TraceRing ring(64);  // small: the writer laps the readers constantly
  std::atomic<bool> stop{false};
  std::atomic<u64> pushed{0};
  std::thread writer([&] {
    u64 i = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      ring.Push(Make(i++));
      pushed.store(i, std::memory_order_release);
    }
  });
  // Snapshots until some were taken while the writer ran (bounded: 20 s).
  u64 snapshots = 0, seen = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while ((snapshots < 1000 || seen < 10000) &&
         std::chrono::steady_clock::now() < deadline) {
    auto evs = ring.Snapshot(0);
    ++snapshots;
    u64 prev = 0;
    bool first = true;
    for (const TraceEvent &e : evs) {
      u64 i = 0;
      bool ok = Consistent(e, 0, &i);
      if (!ok || (!first && i <= prev)) {
        stop.store(true);
        writer.join();
        FAIL() << "torn or out-of-order record near " << i;
      }
      prev = i;
      first = false;
      ++seen;
    }
  }
  stop.store(true);
  writer.join();
  EXPECT_GT(seen, 0u);
  auto evs = ring.Snapshot(0);
  ASSERT_EQ(evs.size(), 64u);
  u64 i = 0;
  EXPECT_TRUE(Consistent(evs.back(), 0, &i));
  EXPECT_EQ(i, pushed.load() - 1);
}

}  // namespace
