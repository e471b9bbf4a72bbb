// The pools and containers on this node (runtime only).
//
// Maps pool ids to their containers and names to ids in O(1). Lookups take a
// shared lock (workers mostly use a lock-free per-worker cache); publishing
// and unpublishing take it exclusively, but containers are created outside
// it, so a module's Create() may submit tasks and wait for them. A container is
// deleted only after it was unpublished and its in-flight count reached zero,
// so a worker that resolved a task to it can finish safely.
#ifndef CHIMAERA_POOL_MANAGER_H_
#define CHIMAERA_POOL_MANAGER_H_

#include <atomic>
#include <memory>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "chimaera/container.h"
#include "hermes_shm/singleton.h"

namespace chi {

/** Longest pool or module name (bytes). */
static GLOBAL_CROSS_CONST size_t kMaxNameLen = 63;

/** One pool as this node sees it. */
struct PoolInfo {
  PoolId id_;
  std::string name_;
  std::string module_;
  std::vector<Container *> containers_;  ///< Index = container id.
  std::atomic<bool> destroying_{false};
};

/** Summary of a pool, for listings. */
struct PoolSummary {
  PoolId id;
  std::string name;
  std::string module;
  u32 num_containers;
  u64 completed;
  u32 inflight;
};

/** A worker's private cache of pool lookups (see PoolManager::AcquireFast).
 */
struct PoolCache {
  static constexpr u32 kSlots = 8;
  u64 version = 0;
  u64 keys[kSlots] = {};
  PoolInfo *pools[kSlots] = {};
};

/** Pools of this node. Any thread may call any member. */
class PoolManager {
 public:
  /** Sets this node's id (pool ids it creates carry it). */
  void Init(NodeId node_id) { node_id_ = node_id; }
  /** Returns the pool called `name`, creating it with `num_containers`
   * containers of `module` (passing `params` to each Create) if it does not
   * exist. `*existed` tells which. `fixed_id` (if not null) forces the id. */
  StatusOr<PoolId> GetOrCreatePool(const std::string &name,
                                   const std::string &module,
                                   u32 num_containers,
                                   const std::string &params, bool *existed,
                                   const PoolId *fixed_id = nullptr);
  /** Unpublishes pool `id` so no new task reaches it. Returns the pool for
   * FinishDestroy, or NotFound. */
  StatusOr<std::shared_ptr<PoolInfo>> BeginDestroy(const PoolId &id);
  /** True once no task runs on any container of `pool`. */
  static bool Drained(const PoolInfo &pool);
  /** Retires the lanes of an unpublished pool, waits (at most 10 s, yielding
   * inside a fiber) until no worker holds them and no task runs on the pool,
   * then calls Destroy() on and deletes its containers. On timeout the
   * containers are leaked instead, and false is returned. */
  static bool FinishDestroy(PoolInfo &pool);
  /** Resolves `query` on pool `id` to a local container and counts the task
   * in flight on it (the caller must call Release()). Errors: NotFound
   * (unknown pool or container), Aborted (pool being destroyed). */
  StatusOr<Container *> Acquire(const PoolId &id, const DomainQuery &query);
  /** Acquire without the lock when `cache` (owned by the calling worker)
   * already knows the pool and no pool was created or destroyed since.
   * Safe because pool destruction waits for every worker to pass two loop
   * iterations and then for in-flight tasks, before freeing anything. */
  StatusOr<Container *> AcquireFast(const PoolId &id, const DomainQuery &query,
                                    PoolCache *cache);
  /** Ends a task started by Acquire. */
  static void Release(Container *c) {
    c->inflight_.fetch_sub(1, std::memory_order_release);
  }
  /** The id of pool `name`, or NotFound. */
  StatusOr<PoolId> Lookup(const std::string &name);
  /** Every pool. */
  std::vector<PoolSummary> List();
  /** Destroys every pool (shutdown). */
  void DestroyAll();

 private:
  /** Picks the container of `pool` that `q` names and counts a task in
   * flight on it. */
  static StatusOr<Container *> Resolve(PoolInfo &pool, const DomainQuery &q);

  std::shared_mutex mu_;
  std::atomic<u64> version_{1};  ///< Bumped on every publish/unpublish.
  std::unordered_map<u64, std::shared_ptr<PoolInfo>> by_id_;
  std::unordered_map<std::string, PoolId> by_name_;
  std::unordered_set<std::string> creating_;  ///< Names being created.
  NodeId node_id_ = 0;
  u32 next_unique_ = 1;
};

}  // namespace chi

#define CHI_POOL_MANAGER (::hshm::Singleton<::chi::PoolManager>::GetInstance())

#endif  // CHIMAERA_POOL_MANAGER_H_
