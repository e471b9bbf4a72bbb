// Pinning a container to a worker (admin PinContainer ->
// Container::PinToWorker): every task of the container runs on that worker,
// one at a time, whichever worker admitted it, and the container's lane
// stays there when the runtime moves lanes away from a stuck worker.
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "chimod_test_fixture.h"
#include "pinned_mod.h"
#include "small_message/small_message_client.h"

namespace {

using chi::DomainQuery;
using chi::small_message::ComputeTask;
using chi::small_message::ProbeTask;
using hshm::StatusCode;

using PinTest = chi_test::TwoWorkerTest;

TEST_F(PinTest, APinnedContainerRunsEveryTaskOnItsWorkerOneAtATime) {
  chi::small_message::Client sm;
  ASSERT_TRUE(sm.Create("pinned", 2).ok());
  ASSERT_EQ(CHI_IPC->num_lanes(), 4u);
  chi::admin::Client admin;
  // Container 0's own lane is worker 0's: pin it to worker 1 instead.
  ASSERT_TRUE(admin.PinContainer(sm.pool_id(), 0, 1).ok());
  // Two threads, each 16 Probes of 100 us in flight: by id (lane 0, which
  // followed the pin to worker 1) and by hash (the thread's lane, either
  // worker admits them; worker 0 hands its ones over).
  std::atomic<int> ran{0}, elsewhere{0}, overlapped{0}, failed{0};
  auto load = [&](bool by_id) {
    std::vector<chi::Future<ProbeTask>> ring(16);
    for (int i = 0; i < 400; ++i) {
      auto &slot = ring[i % ring.size()];
      if (slot) {
        if (!slot.Wait().ok()) {
          ++failed;
        } else {
          ++ran;
          elsewhere += slot->worker_ != 1;
          overlapped += slot->overlapped_ != 0;
        }
      }
      DomainQuery dom =
          by_id ? DomainQuery::GetLocalId(0) : DomainQuery::GetLocalHash(2 * i);
      slot = sm.Async<ProbeTask>(dom, 100u);
    }
    for (auto &slot : ring) {
      if (slot && slot.Wait().ok()) {
        ++ran;
        elsewhere += slot->worker_ != 1;
        overlapped += slot->overlapped_ != 0;
      } else if (slot) {
        ++failed;
      }
    }
  };
  std::thread a(load, true), b(load, false);
  a.join();
  b.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(ran.load(), 800);
  EXPECT_EQ(elsewhere.load(), 0) << "tasks of the pinned container ran on "
                                    "another worker";
  EXPECT_EQ(overlapped.load(), 0) << "tasks of the pinned container ran at "
                                     "the same time";
  // Container 1 is not pinned: its tasks still run where admitted.
  auto other = sm.Call<ProbeTask>(DomainQuery::GetLocalId(1), 0u);
  ASSERT_TRUE(other.status().ok()) << other.status();
  EXPECT_EQ(other->worker_, 1u);  // lane 1 is worker 1's
}

/** The worker that drains process-queue lane `lane` (low latency), as the
 * runtime last published it, once it equals `want` or after 2 s. */
chi::u32 LaneWorker(chi::u32 lane, chi::u32 want) {
  auto &header = CHI_IPC->GetLaneView(lane, chi::kLowLatency).header();
  chi::u32 w = 0;
  for (int i = 0; i < 2000; ++i) {
    w = header.worker_id_.load(std::memory_order_acquire);
    if (w == want) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return w;
}

// Pinning a container moves the process-queue lane its tasks by id use (lane
// c % 4) to the pinned worker, so they arrive there in one hop; a container
// sharing that lane pinned elsewhere later keeps its pin but not the lane;
// destroying the pool frees the lane to move again.
TEST_F(PinTest, PinningAContainerMovesItsLaneToItsWorker) {
  chi::admin::Client admin;
  {
    chi::small_message::Client sm;
    ASSERT_TRUE(sm.Create("pin_lane", 5).ok());
    ASSERT_EQ(CHI_IPC->num_lanes(), 4u);
    ASSERT_EQ(LaneWorker(0, 0), 0u);  // lane l starts on worker l % 2
    ASSERT_TRUE(admin.PinContainer(sm.pool_id(), 0, 1).ok());
    EXPECT_EQ(LaneWorker(0, 1), 1u) << "lane 0 did not move to worker 1";
    // Container 4 shares lane 0: pinned to worker 0, it runs there, but the
    // lane stays with the first pin.
    ASSERT_TRUE(admin.PinContainer(sm.pool_id(), 4, 0).ok());
    for (chi::u32 c : {0u, 4u}) {
      auto probe = sm.Call<ProbeTask>(DomainQuery::GetLocalId(c), 0u);
      ASSERT_TRUE(probe.status().ok()) << probe.status();
      EXPECT_EQ(probe->worker_, c == 0 ? 1u : 0u) << "container " << c;
    }
    EXPECT_EQ(LaneWorker(0, 1), 1u);
    // Lane balancing leaves a pinned lane alone: keep worker 1 busy with
    // lane 0's tasks for a while; the lane stays.
    std::vector<chi::Future<ProbeTask>> ring;
    for (int i = 0; i < 200; ++i) {
      ring.push_back(sm.Async<ProbeTask>(DomainQuery::GetLocalId(0), 20u));
    }
    for (auto &f : ring) EXPECT_TRUE(f.Wait().ok());
    EXPECT_EQ(LaneWorker(0, 1), 1u);
    ASSERT_TRUE(sm.Destroy().ok());
  }
  // Unpinned with the pool: a new pin moves the lane back.
  chi::small_message::Client again;
  ASSERT_TRUE(again.Create("pin_lane_again", 4).ok());
  ASSERT_TRUE(admin.PinContainer(again.pool_id(), 0, 0).ok());
  EXPECT_EQ(LaneWorker(0, 0), 0u) << "lane 0 did not come back to worker 0";
  EXPECT_TRUE(again.Destroy().ok());
}

TEST_F(PinTest, PinningErrorsAreClear) {
  chi::small_message::Client sm;
  ASSERT_TRUE(sm.Create("pin_errors", 2).ok());
  chi::admin::Client admin;
  EXPECT_EQ(admin.PinContainer(sm.pool_id(), 0, 99).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(admin.PinContainer(chi::PoolId(7, 7), 0, 0).code(),
            StatusCode::kNotFound);
  EXPECT_EQ(admin.PinContainer(sm.pool_id(), 5, 0).code(),
            StatusCode::kNotFound);
  EXPECT_EQ(admin.PinContainer(chi::kAdminPoolId, 0, 0).code(),
            StatusCode::kInvalidArgument);
  ASSERT_TRUE(admin.PinContainer(sm.pool_id(), 1, 0).ok());
  EXPECT_TRUE(admin.PinContainer(sm.pool_id(), 1, 0).ok());  // again: Ok
  chi::Status s = admin.PinContainer(sm.pool_id(), 1, 1);
  EXPECT_EQ(s.code(), StatusCode::kAlreadyExists) << s;
  // The pinned pool is still destroyed cleanly, its lane with it.
  auto probe = sm.Call<ProbeTask>(DomainQuery::GetLocalId(1), 0u);
  ASSERT_TRUE(probe.status().ok()) << probe.status();
  EXPECT_EQ(probe->worker_, 0u);
  EXPECT_TRUE(sm.Destroy().ok());
}

TEST_F(PinTest, APinnedLaneStaysWhenLanesLeaveAStuckWorker) {
  chi::small_message::Client sm;
  ASSERT_TRUE(sm.Create("pin_stuck", 4).ok());
  chi::admin::Client admin;
  ASSERT_TRUE(admin.PinContainer(sm.pool_id(), 0, 1).ok());
  // Container 1 (lane 1, worker 1): a Compute of about half a second that
  // never yields, so the runtime hands worker 1's other lanes to worker 0.
  auto wedge = sm.Async<ComputeTask>(DomainQuery::GetLocalId(1),
                                     chi::u64{400000000}, chi::u64{3});
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  // Container 3 (lane 3) moves with worker 1's lanes and is served now;
  // pinned container 0 waits for its worker.
  EXPECT_TRUE(sm.Noop(DomainQuery::GetLocalId(3)).ok());
  // Lane 0, pinned to worker 1 with container 0, left with the others (the
  // wedge runs about 0.5 s, the runtime acts after 60 ms): the tasks queued
  // in it are admitted meanwhile and wait for their worker.
  EXPECT_EQ(LaneWorker(0, 0), 0u);
  auto probe = sm.Call<ProbeTask>(DomainQuery::GetLocalId(0), 0u);
  ASSERT_TRUE(probe.status().ok()) << probe.status();
  EXPECT_EQ(probe->worker_, 1u);
  EXPECT_TRUE(wedge.done()) << "the pinned container ran beside the wedge";
  ASSERT_TRUE(wedge.Wait().ok());
  // Worker 1 runs again: its pinned lane comes back.
  EXPECT_EQ(LaneWorker(0, 1), 1u) << "lane 0 did not return to worker 1";
}

// A pinned container's worker queues at most 16,384 of its tasks: each
// costs the runtime a context and a private copy, while a client may free
// and reuse the task's block as soon as it is admitted (a review's client
// queued 592,000 that way in 6 s, +160 MB). The excess ends with
// ResourceExhausted; the rest run once the worker is free.
TEST_F(PinTest, APinnedContainersQueueIsBounded) {
  chi::small_message::Client sm;
  ASSERT_TRUE(sm.Create("pin_flood", 2).ok());
  chi::admin::Client admin;
  ASSERT_TRUE(admin.PinContainer(sm.pool_id(), 0, 1).ok());
  // Worker 1 runs three Probes of 1 s that never yield, one after the
  // other; meanwhile the high-latency workers admit the Noops and queue them
  // for worker 1 (after the two Probes that wait).
  std::vector<chi::Future<ProbeTask>> busy;
  for (int i = 0; i < 3; ++i) {
    busy.push_back(sm.Async<ProbeTask>(DomainQuery::GetLocalId(0), 1000000u));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  constexpr int kNoops = 18000;
  std::vector<chi::FullPtr<chi::small_message::NoopTask>> noops;
  noops.reserve(kNoops);
  for (int i = 0; i < kNoops; ++i) {
    auto t =
        sm.NewTask<chi::small_message::NoopTask>(DomainQuery::GetLocalId(0));
    ASSERT_FALSE(t.IsNull());
    t->prio_ = chi::kHighLatency;
    noops.push_back(chi::Submit(t));
  }
  const bool busy_done_early = busy.back().done();
  int ok = 0, refused = 0, other = 0;
  for (auto &t : noops) {
    ASSERT_TRUE(t->WaitFor(30000000));
    chi::Status st = t->GetStatus();
    if (st.ok()) {
      ++ok;
    } else if (st.code() == StatusCode::kResourceExhausted) {
      ++refused;
    } else {
      ++other;
    }
    CHI_IPC->DelTask(t);
  }
  EXPECT_FALSE(busy_done_early) << "the Probes ended before the Noops queued";
  for (auto &b : busy) EXPECT_TRUE(b.Wait().ok());
  EXPECT_EQ(other, 0);
  EXPECT_GE(refused, kNoops - 16384);
  EXPECT_GE(ok, 16384 - 2);  // (the two waiting Probes are queued too)
  EXPECT_TRUE(sm.Noop(DomainQuery::GetLocalId(0)).ok());
}

// A module that declares kPinned: each container is pinned, once created, to
// the worker draining its lane (container c uses lane c % 4, lane l is worker
// l % 2's), so by id or by hash each container's Probes run on that one
// worker, never two at a time, and the pin cannot be moved.
TEST_F(PinTest, AModuleDeclaredPinnedShardsItsContainersOverTheWorkers) {
  pinned_mod::Client pm;
  ASSERT_TRUE(pm.Create("sharded", 4).ok());
  std::atomic<int> ran{0}, misplaced{0}, overlapped{0}, failed{0};
  auto load = [&](bool by_id) {
    std::vector<std::pair<chi::u32, chi::Future<pinned_mod::ProbeTask>>> ring(
        16);
    auto check =
        [&](std::pair<chi::u32, chi::Future<pinned_mod::ProbeTask>> &slot) {
          if (!slot.second) return;
          if (!slot.second.Wait().ok()) {
            ++failed;
            return;
          }
          ++ran;
          misplaced += slot.second->worker_ != slot.first % 2;
          overlapped += slot.second->overlapped_ != 0;
        };
    for (chi::u32 i = 0; i < 200; ++i) {
      auto &slot = ring[i % ring.size()];
      check(slot);
      chi::u32 c = (i * 7 + (by_id ? 0 : 1)) % 4;
      DomainQuery dom =
          by_id ? DomainQuery::GetLocalId(c) : DomainQuery::GetLocalHash(c);
      slot = {c, pm.Async<pinned_mod::ProbeTask>(dom, 50u)};
    }
    for (auto &slot : ring) check(slot);
  };
  std::thread a(load, true), b(load, false);
  a.join();
  b.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(ran.load(), 400);
  EXPECT_EQ(misplaced.load(), 0) << "a Probe ran off its container's worker";
  EXPECT_EQ(overlapped.load(), 0) << "two Probes of a container overlapped";
  // Already pinned at creation: another worker is refused.
  chi::admin::Client admin;
  EXPECT_EQ(admin.PinContainer(pm.pool_id(), 0, 1).code(),
            StatusCode::kAlreadyExists);
  EXPECT_TRUE(admin.PinContainer(pm.pool_id(), 1, 1).ok());
  EXPECT_TRUE(pm.Destroy().ok());
}

}  // namespace
