// The one-declaration module API (chimaera/module.h) against a real runtime,
// through the small_message module: method ids and names come from the
// Methods<> list, Async/Call/AsyncEach return Futures that own their tasks,
// field lists written with CHI_FIELDS travel like hand-written ones, and a
// task of the wrong type for its method id is refused.
#include <cstring>
#include <string>
#include <vector>

#include "chimod_test_fixture.h"
#include "small_message/small_message_client.h"

namespace {

using chi::small_message::ComputeKernel;
using chi::small_message::ComputeTask;
using chi::small_message::EchoTask;
using chi::small_message::NoopTask;
using chi::small_message::SmallMessage;
using chi::small_message::StencilRunTask;
using chi_test::ChiModTest;
using hshm::StatusCode;

using ModuleApiTest = ChiModTest;

/** The same fields declared both ways. */
struct OneLineTask : chi::Task {
  IN chi::u64 a_ = 0;
  IN chi::u32 b_ = 0;
  INOUT uint16_t c_ = 0;
  OUT chi::u64 d_ = 0;
  CHI_FIELDS(In(a_), In(b_), InOut(c_), Out(d_))
};
struct TemplateTask : chi::Task {
  IN chi::u64 a_ = 0;
  IN chi::u32 b_ = 0;
  INOUT uint16_t c_ = 0;
  OUT chi::u64 d_ = 0;
  template <typename Ar>
  void Fields(Ar &ar) {
    ar.In(a_);
    ar.In(b_);
    ar.InOut(c_);
    ar.Out(d_);
  }
};

/** Declares its fields with a plain (non-template) member. */
struct PlainFieldsTask : chi::Task {
  IN chi::u64 a_ = 0;
  void Fields(chi::FieldArchive &ar) { ar.In(a_); }
};
/** Inherits a declaration from a base other than Task. */
struct DerivedFieldsTask : OneLineTask {};
/** Brings Task's template into scope and overloads it: calls with a
 * FieldArchive reach the plain member. */
struct OverloadedFieldsTask : chi::Task {
  IN chi::u64 a_ = 0;
  using chi::Task::Fields;
  void Fields(chi::FieldArchive &ar) { ar.In(a_); }
};

/** The bytes a task's declaration writes in `mode`. */
template <typename TaskT>
std::string Save(TaskT &t, chi::FieldArchive::Mode mode) {
  std::string out;
  std::vector<chi::DataFrame> frames;
  chi::FieldArchive ar(mode, &t);
  ar.set_output(&out, &frames);
  t.Fields(ar);
  EXPECT_TRUE(ar.status().ok()) << ar.status();
  return out;
}

TEST(ModuleDeclarationTest, OnlyATypeWithoutFieldsSkipsTheFieldPasses) {
  using chi::internal::kHasOwnFields;
  static_assert(!kHasOwnFields<NoopTask>);
  static_assert(!kHasOwnFields<chi::Task>);
  static_assert(kHasOwnFields<EchoTask>);
  static_assert(kHasOwnFields<OneLineTask>);
  static_assert(kHasOwnFields<TemplateTask>);
  static_assert(kHasOwnFields<PlainFieldsTask>);
  static_assert(kHasOwnFields<DerivedFieldsTask>);
  static_assert(kHasOwnFields<OverloadedFieldsTask>);
}

TEST(ModuleDeclarationTest, IdsNamesAndTagsComeFromTheTypeList) {
  using M = SmallMessage::Methods;
  static_assert(M::kCount == 6);
  static_assert(M::IdOf<NoopTask>() == chi::BaseMethod::kCustom + 0);
  static_assert(M::IdOf<EchoTask>() == chi::BaseMethod::kCustom + 1);
  static_assert(M::IdOf<StencilRunTask>() == chi::BaseMethod::kCustom + 3);
  static_assert(M::IdOf<chi::small_message::IoTask>() ==
                chi::BaseMethod::kCustom + 4);
  static_assert(chi::TaskMethodName<ComputeTask>() == "Compute");
  static_assert(chi::TaskMethodName<OneLineTask>() == "OneLine");
  static_assert(std::is_aggregate_v<EchoTask>);
  // Methods that never wait run without a fiber; the rest in one.
  static_assert(chi::internal::NeverWaits<NoopTask>::value);
  static_assert(chi::internal::NeverWaits<ComputeTask>::value);
  static_assert(!chi::internal::NeverWaits<chi::small_message::IoTask>::value);
  static_assert(!chi::internal::NeverWaits<StencilRunTask>::value);
  static_assert(!chi::internal::NeverWaits<chi::admin::JoinClusterTask>::value);
  EXPECT_NE(chi::TaskTypeTag<EchoTask>(), chi::TaskTypeTag<ComputeTask>());
  EXPECT_NE(chi::TaskTypeTag<NoopTask>(), 0u);
  EXPECT_EQ(chi::TaskTypeTag<EchoTask>(), chi::TaskTypeTag<EchoTask>());
}

TEST(ModuleDeclarationTest, AdminMethodsKeepTheirIdsAndSharedBodiesGetOwnTags) {
  namespace admin = chi::admin;
  using M = admin::Admin::Methods;
  static_assert(M::kCount == 21);
  static_assert(M::IdOf<admin::NoopTask>() == chi::BaseMethod::kCustom + 0);
  static_assert(M::IdOf<admin::StatTask>() == chi::BaseMethod::kCustom + 7);
  static_assert(M::IdOf<admin::OffloadTask>() == chi::BaseMethod::kCustom + 18);
  static_assert(M::IdOf<admin::UndoCreatePoolTask>() ==
                chi::BaseMethod::kCustom + 20);
  static_assert(chi::TaskMethodName<admin::ListPoolsTask>() == "ListPools");
  static_assert(chi::TaskMethodName<admin::JoinClusterTask>() == "JoinCluster");
  static_assert(std::is_aggregate_v<admin::StatTask>);
  // Methods that share a body are still told apart at admission.
  EXPECT_NE(chi::TaskTypeTag<admin::StatTask>(),
            chi::TaskTypeTag<admin::TraceDumpTask>());
  EXPECT_NE(chi::TaskTypeTag<admin::MigrateInTask>(),
            chi::TaskTypeTag<admin::MigrateContainerTask>());
  EXPECT_NE(chi::TaskTypeTag<admin::UndoCreatePoolTask>(),
            chi::TaskTypeTag<admin::CreatePoolHereTask>());
}

TEST(ModuleDeclarationTest, OneLineFieldListsMatchTheTemplateForm) {
  OneLineTask one;
  TemplateTask tmpl;
  one.a_ = tmpl.a_ = 0x0102030405060708ull;
  one.b_ = tmpl.b_ = 0x0a0b0c0d;
  one.c_ = tmpl.c_ = 0x1234;
  one.d_ = tmpl.d_ = 0x1111222233334444ull;
  using Mode = chi::FieldArchive::Mode;
  EXPECT_EQ(Save(one, Mode::kSaveIn), Save(tmpl, Mode::kSaveIn));
  EXPECT_EQ(Save(one, Mode::kSaveOut), Save(tmpl, Mode::kSaveOut));
  EXPECT_EQ(Save(one, Mode::kSaveIn).size(), 8u + 4u + 2u);
  // And it loads back in the same order.
  std::string in = Save(one, Mode::kSaveIn);
  OneLineTask back;
  chi::FieldArchive ar(Mode::kLoadIn, &back);
  ar.set_input(in.data(), in.size(), nullptr, 0);
  back.Fields(ar);
  ASSERT_TRUE(ar.status().ok()) << ar.status();
  EXPECT_EQ(back.a_, one.a_);
  EXPECT_EQ(back.b_, one.b_);
  EXPECT_EQ(back.c_, one.c_);
  EXPECT_EQ(back.d_, 0u);  // an OUT field does not travel with the request
}

TEST(ModuleDeclarationTest, EmptyFutureAndNullSubtasksReportOutOfMemory) {
  chi::Future<NoopTask> empty;
  EXPECT_FALSE(empty);
  EXPECT_FALSE(empty.done());
  EXPECT_EQ(empty.status().code(), StatusCode::kOutOfMemory);
  EXPECT_EQ(empty.Wait().code(), StatusCode::kOutOfMemory);
  EXPECT_FALSE(empty.WaitFor(10));
  chi::Task parent;
  std::vector<chi::FullPtr<NoopTask>> subs(3);  // all null
  EXPECT_EQ(parent.Wait(subs).code(), StatusCode::kOutOfMemory);
}

TEST_F(ModuleApiTest, AsyncAndCallReturnFuturesWithResults) {
  chi::small_message::Client sm;
  ASSERT_TRUE(sm.Create("api_async", 2).ok());
  chi::Future<ComputeTask> f = sm.Async<ComputeTask>(5000ull, 7ull);
  ASSERT_TRUE(f);
  ASSERT_TRUE(f.Wait().ok()) << f.status();
  EXPECT_TRUE(f.done());
  EXPECT_EQ(f->result_, ComputeKernel(5000, 7));
  // The leading DomainQuery picks the container.
  auto g = sm.Call<ComputeTask>(chi::DomainQuery::GetGlobalId(1), 10ull, 3ull);
  ASSERT_TRUE(g.status().ok()) << g.status();
  EXPECT_EQ(g->result_, ComputeKernel(10, 3));
  auto n = sm.Call<NoopTask>();
  EXPECT_TRUE(n.status().ok()) << n.status();
  // A moved-from Future is empty; the target owns the task.
  chi::Future<ComputeTask> moved = std::move(f);
  EXPECT_FALSE(f);
  EXPECT_EQ(moved->result_, ComputeKernel(5000, 7));
}

TEST_F(ModuleApiTest, FuturesFreeTheirReplyBuffers) {
  // 48 echoes of 1 MB through Futures exceed the 32 MB client_data segment
  // unless each dropped Future frees its OutBuf reply.
  chi::small_message::Client sm;
  ASSERT_TRUE(sm.Create("api_echo", 1).ok());
  const chi::u64 size = chi::u64{1} << 20;
  chi::FullPtr<char> in = CHI_IPC->AllocateBuffer(size);
  ASSERT_FALSE(in.IsNull());
  std::memset(in.ptr_, 'x', size);
  for (int i = 0; i < 48; ++i) {
    auto f = sm.Call<EchoTask>(in.shm_, size);
    ASSERT_TRUE(f.status().ok()) << i << ": " << f.status();
    ASSERT_EQ(f->ret_size_, size);
  }
  EXPECT_TRUE(CHI_IPC->FreeBuffer(in.shm_).ok());
}

TEST_F(ModuleApiTest, FanOutToEveryContainerAndWaitAll) {
  chi::small_message::Client sm;
  ASSERT_TRUE(sm.Create("api_each", 3).ok());
  auto parts = sm.AsyncEach<ComputeTask>(3, 100ull, 9ull);
  ASSERT_EQ(parts.size(), 3u);
  ASSERT_TRUE(chi::WaitAll(parts).ok());
  for (auto &p : parts) EXPECT_EQ(p->result_, ComputeKernel(100, 9));
}

TEST_F(ModuleApiTest,
       GatherMergesThePartsThatSucceededAndReportsTheFirstError) {
  chi::small_message::Client sm;
  ASSERT_TRUE(sm.Create("api_gather", 3).ok());
  chi::u64 sum = 0;
  int merged = 0;
  auto merge = [&](ComputeTask &part) {
    sum += part.result_;
    ++merged;
  };
  ASSERT_TRUE(sm.Gather<ComputeTask>(3, merge, 100ull, 9ull).ok());
  EXPECT_EQ(merged, 3);
  EXPECT_EQ(sum, 3 * ComputeKernel(100, 9));
  // A fourth part names a container the pool does not have: its error comes
  // back, and the three others are still merged.
  sum = 0;
  merged = 0;
  chi::Status s = sm.Gather<ComputeTask>(4, merge, 100ull, 9ull);
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s;
  EXPECT_EQ(merged, 3);
  EXPECT_EQ(sum, 3 * ComputeKernel(100, 9));
}

// A Gather's parts share one deadline: 4 parts of 1 s each with a 100 ms
// deadline give Timeout after about 100 ms (before, each part waited its
// own 100 ms: 400 ms; at the default deadline, 4 minutes for 4 parts).
TEST_F(ModuleApiTest, GatherWaitsOneDeadlineForAllItsParts) {
  chi::small_message::Client sm;
  ASSERT_TRUE(sm.Create("api_deadline", 4).ok());
  int merged = 0;
  const chi::u64 start = hshm::NowNs();
  chi::Status s;
  {
    chi::ScopedTaskTimeout deadline(100);
    s = sm.Gather<chi::small_message::IoTask>(
        4, [&](chi::small_message::IoTask &) { ++merged; }, 1000u * 1000u);
  }
  const double ms = (hshm::NowNs() - start) / 1e6;
  EXPECT_EQ(s.code(), StatusCode::kTimeout) << s;
  EXPECT_EQ(merged, 0);
  EXPECT_GE(ms, 90.0);
  EXPECT_LT(ms, 300.0);
}

TEST_F(ModuleApiTest, CopyInCopiesWholeElementsOfADataBufferOnly) {
  chi::FullPtr<char> buf = CHI_IPC->AllocateBuffer(20);
  ASSERT_FALSE(buf.IsNull());
  const chi::u64 vals[2] = {7, 1ull << 40};
  std::memcpy(buf.ptr_, vals, sizeof(vals));
  std::memset(buf.ptr_ + 16, 0xff, 4);  // a partial third element
  std::vector<chi::u64> got = CHI_IPC->CopyIn<chi::u64>(buf.shm_, 20);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0], vals[0]);
  EXPECT_EQ(got[1], vals[1]);
  // The copy is private: rewriting the buffer changes nothing.
  std::memset(buf.ptr_, 0, 16);
  EXPECT_EQ(got[1], vals[1]);
  // Bytes outside the data segments give nothing.
  EXPECT_TRUE(CHI_IPC->CopyIn<chi::u64>(buf.shm_, chi::u64{1} << 40).empty());
  EXPECT_TRUE(
      CHI_IPC->CopyIn<chi::u64>(CHI_IPC->shared()->process_queue_, 64).empty());
  EXPECT_TRUE(CHI_IPC->FreeBuffer(buf.shm_).ok());
}

TEST_F(ModuleApiTest, ATaskOfTheWrongTypeForItsMethodIsRefused) {
  chi::small_message::Client sm;
  ASSERT_TRUE(sm.Create("api_tag", 1).ok());
  // An EchoTask (larger than a ComputeTask) sent as method Compute: the
  // size check alone would accept it.
  static_assert(sizeof(EchoTask) >= sizeof(ComputeTask));
  chi::FullPtr<EchoTask> t = sm.NewTask<EchoTask>(hipc::Pointer(), 0ull);
  ASSERT_FALSE(t.IsNull());
  t->method_ = SmallMessage::Methods::IdOf<ComputeTask>();
  chi::Future<EchoTask> f(chi::Submit(t));
  chi::Status s = f.Wait();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("type"), std::string::npos) << s;
  // The right type still runs.
  EXPECT_TRUE(sm.Call<ComputeTask>(1ull, 1ull).status().ok());
}

TEST_F(ModuleApiTest, ADroppedRunningFutureAbandonsItsTask) {
  chi::small_message::Client sm;
  ASSERT_TRUE(sm.Create("api_drop", 1).ok());
  {
    // Long enough to be running when the Future goes away.
    auto f = sm.Async<StencilRunTask>(2u, 400u, 20000ull);
    EXPECT_FALSE(f.WaitFor(0));
    EXPECT_EQ(f.status().code(), StatusCode::kTimeout);
  }  // abandoned here: the runtime frees it when it ends
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(sm.Call<NoopTask>().status().ok()) << i;
  }
  // A deadline shorter than the task: Call returns Timeout, and the Future
  // still holds it until dropped.
  {
    chi::ScopedTaskTimeout deadline(1);
    auto f = sm.Call<StencilRunTask>(2u, 400u, 20000ull);
    EXPECT_EQ(f.status().code(), StatusCode::kTimeout) << f.status();
    EXPECT_TRUE(f);
  }
  EXPECT_TRUE(sm.Call<NoopTask>().status().ok());
}

TEST_F(ModuleApiTest, DestroyUnbindsTheClient) {
  chi::small_message::Client sm;
  ASSERT_TRUE(sm.Create("api_destroy", 1).ok());
  chi::PoolId id = sm.pool_id();
  ASSERT_TRUE(sm.Destroy().ok());
  EXPECT_TRUE(sm.pool_id() == chi::PoolId());
  chi::small_message::Client stale(id);
  EXPECT_EQ(stale.Noop().code(), StatusCode::kNotFound);
}

}  // namespace
