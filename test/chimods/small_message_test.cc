// End-to-end tests of the small_message module against a real runtime.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <utility>

#include "chimod_test_fixture.h"
#include "small_message/small_message_client.h"

namespace {

using chi_test::ChiModTest;
using chi_test::RandomBytes;
using hshm::StatusCode;

using SmallMessageTest = ChiModTest;

TEST_F(SmallMessageTest, EchoesBuffersOfAllSizesByteExact) {
  chi::small_message::Client client;
  ASSERT_TRUE(client.Create("sm_echo", 2).ok());
  unsigned seed = 1;
  for (size_t size : {size_t{1}, size_t{64}, size_t{4096}, size_t{1} << 20}) {
    std::string data = RandomBytes(size, seed++);
    auto echoed = client.Echo(data);
    ASSERT_TRUE(echoed.ok()) << size << ": " << echoed.status();
    ASSERT_EQ(echoed->size(), size);
    EXPECT_TRUE(*echoed == data) << "echo of " << size << " bytes differs";
  }
  // Both containers answer.
  auto echoed = client.Echo("x", chi::DomainQuery::GetGlobalId(1));
  ASSERT_TRUE(echoed.ok()) << echoed.status();
  EXPECT_EQ(*echoed, "x");
  // Reply buffers are freed: 48 echoes of 1 MB exceed the 32 MB client_data
  // segment if any reply (or request) leaked.
  std::string mb = RandomBytes(size_t{1} << 20, 99);
  for (int i = 0; i < 48; ++i) {
    auto r = client.Echo(mb);
    ASSERT_TRUE(r.ok()) << i << ": " << r.status();
    ASSERT_EQ(r->size(), mb.size());
  }
  // An empty message is echoed as empty.
  auto empty = client.Echo("");
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->empty());
}

TEST_F(SmallMessageTest, NoopAndAsyncEchoesInFlight) {
  chi::small_message::Client client;
  ASSERT_TRUE(client.Create("sm_noop").ok());
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(client.Noop().ok());
  // Many echoes of one buffer in flight at once.
  std::string data = RandomBytes(512, 7);
  chi::FullPtr<char> buf = CHI_IPC->AllocateBuffer(data.size());
  ASSERT_FALSE(buf.IsNull());
  std::memcpy(buf.ptr_, data.data(), data.size());
  std::vector<chi::FullPtr<chi::small_message::EchoTask>> tasks;
  for (int i = 0; i < 64; ++i) {
    tasks.push_back(client.AsyncEcho(buf.shm_, data.size()));
    ASSERT_FALSE(tasks.back().IsNull());
  }
  for (auto &t : tasks) {
    t->Wait();
    ASSERT_TRUE(t->GetStatus().ok()) << t->GetStatus();
    chi::FullPtr<char> ret(t->ret_);
    ASSERT_FALSE(ret.IsNull());
    EXPECT_EQ(std::string(ret.ptr_, t->ret_size_), data);
    EXPECT_TRUE(CHI_IPC->FreeBuffer(t->ret_).ok());
    CHI_IPC->DelTask(t);
  }
  EXPECT_TRUE(CHI_IPC->FreeBuffer(buf.shm_).ok());
}

TEST_F(SmallMessageTest, BadBufferIsRejectedAndRuntimeKeepsServing) {
  chi::small_message::Client client;
  ASSERT_TRUE(client.Create("sm_bad").ok());
  // A pointer past the end of client_data.
  hipc::Pointer bogus(CHI_IPC->cdata_alloc()->GetId(),
                      CHI_IPC->cdata_alloc()->GetRegionSize() - 8);
  auto t = client.AsyncEcho(bogus, 4096);
  ASSERT_FALSE(t.IsNull());
  t->Wait();
  EXPECT_EQ(t->GetStatus().code(), StatusCode::kInvalidArgument)
      << t->GetStatus();
  EXPECT_TRUE(t->ret_.IsNull());
  CHI_IPC->DelTask(t);
  // A pointer into the task segment is not a data buffer.
  hipc::Pointer in_main(CHI_IPC->main_alloc()->GetId(), 4096);
  t = client.AsyncEcho(in_main, 16);
  ASSERT_FALSE(t.IsNull());
  t->Wait();
  EXPECT_EQ(t->GetStatus().code(), StatusCode::kInvalidArgument);
  CHI_IPC->DelTask(t);
  EXPECT_TRUE(client.Noop().ok());
  auto echoed = client.Echo("still alive");
  ASSERT_TRUE(echoed.ok()) << echoed.status();
  EXPECT_EQ(*echoed, "still alive");
}

TEST_F(SmallMessageTest, ComputeAndStencilRunMatchTheClientSideKernel) {
  using chi::small_message::ComputeKernel;
  using chi::small_message::StencilChecksum;
  chi::small_message::Client client;
  ASSERT_TRUE(client.Create("sm_compute", 3).ok());
  // The kernel depends on both inputs.
  EXPECT_NE(ComputeKernel(100, 1), ComputeKernel(100, 2));
  EXPECT_NE(ComputeKernel(100, 1), ComputeKernel(101, 1));
  for (chi::u32 c = 0; c < 3; ++c) {
    for (chi::u64 iters : {chi::u64{0}, chi::u64{1}, chi::u64{5000}}) {
      chi::u64 seed = 17 * c + iters;
      auto r = client.Compute(iters, seed, chi::DomainQuery::GetLocalId(c));
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_EQ(*r, ComputeKernel(iters, seed)) << c << " " << iters;
    }
  }
  // The in-runtime loop: its checksum is the sum over every step and point
  // (2500 points a step: three waves of at most 1024 subtasks).
  for (auto [width, steps] :
       {std::pair<chi::u32, chi::u32>{1, 1}, {5, 4}, {7, 10}, {2500, 2}}) {
    auto sum = client.StencilRun(width, steps, 200);
    ASSERT_TRUE(sum.ok()) << sum.status();
    EXPECT_EQ(*sum, StencilChecksum(width, steps, 200))
        << width << "x" << steps;
  }
  // Empty loops sum to zero; an oversized width is refused.
  auto zero = client.StencilRun(0, 3, 10);
  ASSERT_TRUE(zero.ok()) << zero.status();
  EXPECT_EQ(*zero, 0u);
  auto huge = client.StencilRun(1u << 30, 1, 1);
  EXPECT_EQ(huge.status().code(), StatusCode::kInvalidArgument)
      << huge.status();
  // So is a kernel longer than a few seconds, which would hold its worker
  // (Compute runs without a fiber) for as long as the client asked.
  const chi::u64 too_long = (chi::u64{1} << 32) + 1;
  EXPECT_EQ(client.Compute(too_long, 1).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(client.Compute(~chi::u64{0}, 1).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(client.StencilRun(2, 1, too_long).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(client.StencilRun(1, (1u << 20) + 1, 1).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(client.Noop().ok());
}

/** Abandons running task `t` and waits (at most `limit_s`) until the
 * runtime freed its block, i.e. until the task ended; the seconds that
 * took (limit_s or more if it did not). */
double AbandonAndTimeTheEnd(chi::FullPtr<chi::small_message::StencilRunTask> t,
                            double limit_s) {
  const hipc::Pointer p = t.shm_;
  auto *main = CHI_IPC->main_alloc();
  CHI_IPC->AbandonTask(t);  // t is the runtime's to free from here on
  auto ours = [&] {
    return main->LiveBlockSize(p) != 0 && main->BlockOwner(p) == getpid();
  };
  const auto t0 = std::chrono::steady_clock::now();
  auto seconds = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
        .count();
  };
  while (ours() && seconds() < limit_s) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return ours() ? std::max(limit_s, seconds()) : seconds();
}

// A StencilRun whose submitter gives up ends after its current step: its
// block (freed by the runtime then) does not stay live for the 2^20 steps
// it asked for (tens of seconds).
TEST_F(SmallMessageTest, AnAbandonedStencilRunStops) {
  chi::small_message::Client client;
  ASSERT_TRUE(client.Create("sm_abandon", 1).ok());
  auto t = client.AsyncStencilRun(1, 1u << 20, 20000);
  ASSERT_FALSE(t.IsNull());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_FALSE(t->IsComplete());
  EXPECT_LT(AbandonAndTimeTheEnd(t, 5), 5)
      << "the abandoned StencilRun is still running";
  EXPECT_TRUE(client.Noop().ok());
}

// Echo frees its input when `main` has no room for its task. Before, each
// such call left its input buffer allocated until the client exited.
TEST_F(SmallMessageTest, AnEchoThatCannotBeSentFreesItsInput) {
  chi::small_message::Client client;
  ASSERT_TRUE(client.Create("sm_main_full", 1).ok());
  std::vector<chi::FullPtr<chi::small_message::NoopTask>> hog;
  for (;;) {
    auto t = client.NewTask<chi::small_message::NoopTask>();
    if (t.IsNull()) break;
    hog.push_back(t);
  }
  ASSERT_FALSE(hog.empty());
  const hshm::i64 before = CHI_IPC->cdata_alloc()->GetBytesInUse();
  for (int i = 0; i < 1000; ++i) {
    auto r = client.Echo(std::string(1000, 'x'));
    ASSERT_EQ(r.status().code(), StatusCode::kOutOfMemory) << r.status();
  }
  // 1000 leaked inputs would be about 1 MB; a thread cache holds a few.
  EXPECT_LT(CHI_IPC->cdata_alloc()->GetBytesInUse() - before, 64 << 10);
  for (auto &t : hog) CHI_IPC->DelTask(t);
  auto ok = client.Echo("abc");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, "abc");
}

// A fire-and-forget StencilRun is refused: nothing could stop it (its
// submitter never gives up on it). Before, 2^20 steps ran to their end.
TEST_F(SmallMessageTest, AFireAndForgetStencilRunIsRefused) {
  chi::small_message::Client client;
  ASSERT_TRUE(client.Create("sm_fnf_stencil", 1).ok());
  auto t = client.NewTask<chi::small_message::StencilRunTask>(1u, 1u << 20,
                                                              20000ull);
  ASSERT_FALSE(t.IsNull());
  const hipc::Pointer block = t.shm_;
  t->SetFireAndForget();
  chi::Submit(t);  // the runtime frees it
  // Refused at once, it is freed at once; a run would hold it for seconds.
  bool freed = false;
  for (int i = 0; i < 200 && !freed; ++i) {
    freed = CHI_IPC->main_alloc()->LiveBlockSize(block) == 0;
    if (!freed) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(freed) << "the fire-and-forget StencilRun is running";
  EXPECT_TRUE(client.Noop().ok());
}

// Within a wide step too: the points not waited for yet are abandoned (the
// queued ones dropped unrun) and no later wave starts. Before, the step ran
// to its end: 3000 points of about 3 ms each on the one worker, 9 s.
TEST_F(SmallMessageTest, AnAbandonedWideStencilRunStopsWithinItsStep) {
  chi::small_message::Client client;
  ASSERT_TRUE(client.Create("sm_abandon_wide", 1).ok());
  auto t = client.AsyncStencilRun(3000, 1, 1000000);
  ASSERT_FALSE(t.IsNull());
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_FALSE(t->IsComplete());
  double took = AbandonAndTimeTheEnd(t, 20);
  printf("the abandoned StencilRun ended %.0f ms later\n", took * 1000);
  EXPECT_LT(took, 2.0) << "the abandoned StencilRun ran its step on";
  EXPECT_TRUE(client.Noop().ok());
}

/** A runtime whose workers hold at most 16 task fibers. */
class FiberLimitTest : public ChiModTest {
 protected:
  FiberLimitTest() : ChiModTest("workers:\n  max_fibers: 16\n") {}
};

// The admin pool's fiber reserve is not for FanOut, a workload whose tree
// of waiting subtasks the client sizes: with every fiber held, a FanOut is
// refused at once, and stat still answers. (A FanOut of 15 x 3 took 241 of
// the 256 reserved fibers, and two of them took all.)
TEST_F(FiberLimitTest, AFanOutCannotTakeTheAdminReserve) {
  chi::small_message::Client client;
  ASSERT_TRUE(client.Create("sm_fanout_reserve", 1).ok());
  std::vector<chi::FullPtr<chi::small_message::IoTask>> ios;
  for (int i = 0; i < 30; ++i) {
    ios.push_back(client.AsyncIo(150000, chi::DomainQuery::GetLocalId(0)));
    ASSERT_FALSE(ios.back().IsNull());
  }
  chi::admin::Client admin;
  auto fanout = admin.FanOut(15, 3);
  EXPECT_EQ(fanout.status().code(), StatusCode::kResourceExhausted)
      << fanout.status();
  EXPECT_TRUE(admin.Stat().ok());
  for (auto &t : ios) {
    ASSERT_TRUE(t->WaitFor(20000000));
    CHI_IPC->DelTask(t);
  }
  // With the fibers free again, the FanOut runs.
  auto again = admin.FanOut(15, 2);
  EXPECT_TRUE(again.ok()) << again.status();
}

// Tasks that wait each hold a fiber (here Ios parked until their turn on
// the container's device): past workers.max_fibers a task fails at once
// with ResourceExhausted, instead of the runtime mapping stacks until the
// process runs out of mappings (about 32,000 waiting tasks did). Once they
// end, fibers are free again. (Each Io lasts 150 ms, so that none ends
// while the 30 are admitted, even under TSan, where starting a fiber takes
// milliseconds.)
TEST_F(FiberLimitTest, TasksPastTheFiberLimitAreRefused) {
  chi::small_message::Client client;
  ASSERT_TRUE(client.Create("sm_fibers", 1).ok());
  constexpr int kTasks = 30;
  std::vector<chi::FullPtr<chi::small_message::IoTask>> ios;
  for (int i = 0; i < kTasks; ++i) {
    ios.push_back(client.AsyncIo(150000, chi::DomainQuery::GetLocalId(0)));
    ASSERT_FALSE(ios.back().IsNull());
  }
  // Every fiber is in use now. The admin pool's tasks have a reserve, so
  // the runtime can still be inspected and managed (a pool created).
  auto stat = chi::admin::Client().Stat();
  EXPECT_TRUE(stat.ok()) << stat.status();
  chi::small_message::Client other;
  EXPECT_TRUE(other.Create("sm_fibers_2", 1).ok());
  // A periodic task refused a fiber is not ended: it tries again each
  // period and runs once the Ios free theirs.
  auto periodic = client.NewTask<chi::small_message::IoTask>(
      chi::DomainQuery::GetLocalId(0), chi::u32{100});
  ASSERT_FALSE(periodic.IsNull());
  periodic->SetPeriodic(20e6);  // every 20 ms
  periodic = chi::Submit(periodic);
  int ok = 0, refused = 0;
  for (auto &t : ios) {
    ASSERT_TRUE(t->WaitFor(20000000));
    hshm::Status st = t->GetStatus();
    if (st.ok()) {
      ++ok;
    } else {
      EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st;
      ++refused;
    }
    CHI_IPC->DelTask(t);
  }
  EXPECT_GE(ok, 8);
  EXPECT_LE(ok, 16);
  EXPECT_EQ(ok + refused, kTasks);
  EXPECT_FALSE(periodic->IsComplete()) << periodic->GetStatus();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  periodic->RequestStop();
  ASSERT_TRUE(periodic->WaitFor(5000000));
  EXPECT_TRUE(periodic->GetStatus().ok()) << periodic->GetStatus();
  EXPECT_GE(periodic->run_count_, 1u);
  CHI_IPC->DelTask(periodic);
  for (int i = 0; i < 3; ++i) {
    auto again = client.AsyncIo(1000, chi::DomainQuery::GetLocalId(0));
    ASSERT_FALSE(again.IsNull());
    ASSERT_TRUE(again->WaitFor(5000000));
    EXPECT_TRUE(again->GetStatus().ok()) << again->GetStatus();
    CHI_IPC->DelTask(again);
  }
  EXPECT_TRUE(client.Noop().ok());
}

TEST_F(SmallMessageTest, UnknownModuleIsNotFoundAndRuntimeStillAnswers) {
  chi::admin::Client admin;
  auto id = admin.GetOrCreatePool("no_such_pool", "no_such_module", 1);
  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.status().code(), StatusCode::kNotFound) << id.status();
  EXPECT_NE(id.status().message().find("no_such_module"), std::string::npos)
      << id.status();
  EXPECT_TRUE(admin.Noop().ok());
  // The failed pool was not half-created: a real module works afterwards.
  chi::small_message::Client client;
  ASSERT_TRUE(client.Create("sm_after_error").ok());
  EXPECT_TRUE(client.Noop().ok());
}

TEST_F(SmallMessageTest, OverlongPoolNameOrParametersAreInvalidArgument) {
  chi::small_message::Client client;
  hshm::Status s = client.Create(std::string(100, 'p'));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  s = client.Create("");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  // Parameters over 1 MiB, which every node would keep for the pool's life.
  auto big = chi::admin::Client().GetOrCreatePool(
      "sm_big_params", "small_message", 1, std::string((1 << 20) + 1, 'p'));
  EXPECT_EQ(big.status().code(), StatusCode::kInvalidArgument) << big.status();
  EXPECT_TRUE(chi::admin::Client().Noop().ok());
}

TEST_F(SmallMessageTest, PoolCreatedTwiceHasOneId) {
  chi::small_message::Client a, b;
  ASSERT_TRUE(a.Create("sm_twice", 2).ok());
  ASSERT_TRUE(b.Create("sm_twice", 2).ok());
  EXPECT_FALSE(a.pool_id().IsNull());
  EXPECT_EQ(a.pool_id(), b.pool_id());
  chi::small_message::Client c;
  ASSERT_TRUE(c.Create("sm_other").ok());
  EXPECT_NE(a.pool_id(), c.pool_id());
}

}  // namespace
