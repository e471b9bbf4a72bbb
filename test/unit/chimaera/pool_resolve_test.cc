// PoolManager::LocalIn, the worker's inline resolution of a local query,
// against ResolveIn, which it must agree with whenever it answers (runtime
// library alone, no runtime process).
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

}  // namespace
