// The worker's inline shortcuts against the general paths they skip
// (runtime library alone, no runtime process): PoolManager::LocalIn against
// ResolveIn, and the method table's has_fields against the task types.
#include <gtest/gtest.h>

#include "chimaera/container.h"
#include "chimaera/pool_manager.h"

namespace {

using chi::Container;
using chi::DomainQuery;
using chi::PoolInfo;
using chi::PoolManager;

/** ResolveIn's local container for `q`, or null (an error or another
 * node). */
Container *ResolvedLocal(PoolManager &pm, PoolInfo *pool,
                         const DomainQuery &q) {
  auto d = pm.ResolveIn(pool, q);
  return d.ok() ? d->local : nullptr;
}

/** Every query shape over a few selectors: LocalIn answers exactly the
 * local-kind queries that ResolveIn resolves to a local container, with the
 * same container, and leaves every other query to ResolveIn. */
void ExpectAgrees(PoolManager &pm, PoolInfo *pool) {
  for (chi::u32 sel = 0; sel < 6; ++sel) {
    const DomainQuery queries[] = {
        DomainQuery::GetLocalId(sel), DomainQuery::GetLocalHash(sel),
        DomainQuery::GetGlobalId(sel), DomainQuery::GetGlobalHash(sel)};
    for (const DomainQuery &q : queries) {
      Container *fast = pm.LocalIn(pool, q);
      Container *slow = ResolvedLocal(pm, pool, q);
      const bool local_kind = q.kind_ == DomainQuery::kLocalId ||
                              q.kind_ == DomainQuery::kLocalHash;
      EXPECT_EQ(fast, local_kind ? slow : nullptr)
          << "kind " << q.kind_ << " sel " << sel;
    }
  }
}

TEST(PoolResolveTest, LocalInAgreesWithResolveIn) {
  struct Bare : Container {};
  Bare c0, c2;
  PoolManager pm;
  pm.Init(1);
  PoolInfo pool;
  pool.num_containers_ = 4;
  pool.nodes_ = {1, 2};  // containers 0, 2 here (node 1); 1, 3 on node 2
  pool.containers_ = {&c0, nullptr, &c2, nullptr};
  pool.local_ = {0, 2};
  ExpectAgrees(pm, &pool);
  EXPECT_EQ(pm.LocalIn(&pool, DomainQuery::GetLocalId(1)), &c2);
  EXPECT_EQ(pm.LocalIn(&pool, DomainQuery::GetLocalHash(3)), &c2);
  EXPECT_EQ(pm.LocalIn(&pool, DomainQuery::GetLocalId(2)), nullptr);

  // One local container: every hash lands on it.
  pool.local_ = {0};
  ExpectAgrees(pm, &pool);
  EXPECT_EQ(pm.LocalIn(&pool, DomainQuery::GetLocalHash(5)), &c0);

  // A migration placed container 0 on node 2: no longer local.
  pool.local_ = {0, 2};
  pool.placement_ = {2, 2, 1, 2};
  ExpectAgrees(pm, &pool);
  EXPECT_EQ(pm.LocalIn(&pool, DomainQuery::GetLocalId(0)), nullptr);
  EXPECT_EQ(pm.LocalIn(&pool, DomainQuery::GetLocalId(1)), &c2);

  // No container here, and a pool being destroyed: ResolveIn decides.
  pool.placement_.clear();
  pool.local_.clear();
  ExpectAgrees(pm, &pool);
  pool.local_ = {0, 2};
  pool.destroying_.store(true);
  ExpectAgrees(pm, &pool);
  EXPECT_EQ(pm.LocalIn(&pool, DomainQuery::GetLocalId(0)), nullptr);
}

/** Task types with and without fields, registered as methods. */
struct FieldlessTask : chi::Task {};
struct FieldTask : chi::Task {
  IN chi::u64 a_ = 0;
  CHI_FIELDS(In(a_))
};
class TwoMethods : public Container {
 public:
  TwoMethods() {
    RegisterMethod(chi::BaseMethod::kCustom, "Fieldless", &TwoMethods::Run0);
    RegisterMethod(chi::BaseMethod::kCustom + 1, "Field", &TwoMethods::Run1);
  }
  void Run0(FieldlessTask *, chi::RunContext &) {}
  void Run1(FieldTask *, chi::RunContext &) {}
};

// The worker skips the field passes exactly for the entries whose task type
// declares no Fields() of its own.
TEST(MethodTableTest, HasFieldsFollowsTheTaskType) {
  TwoMethods c;
  const chi::MethodEntry *fieldless = c.GetMethod(chi::BaseMethod::kCustom);
  const chi::MethodEntry *field = c.GetMethod(chi::BaseMethod::kCustom + 1);
  ASSERT_NE(fieldless, nullptr);
  ASSERT_NE(field, nullptr);
  EXPECT_FALSE(fieldless->has_fields);
  EXPECT_TRUE(field->has_fields);
}

}  // namespace
