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

/** What a pool is made of: enough for every node to build its share. */
struct PoolSpec {
  std::string name;
  std::string module;
  u32 num_containers = 1;  ///< In the whole pool (1..4096).
  std::string params;      ///< Passed to every container's Create().
  /** Nodes the pool spans, ascending; container c lives on
   * nodes[c % nodes.size()]. Empty: this node only. */
  std::vector<NodeId> nodes;
  /** Node of each container once a migration moved one (size
   * num_containers, each in `nodes`); empty: the rule above. */
  std::vector<NodeId> placement;
};

/** One pool as this node sees it. */
struct PoolInfo {
  PoolId id_;
  std::string name_;
  std::string module_;
  std::string params_;
  u32 num_containers_ = 0;               ///< In the whole pool.
  std::vector<NodeId> nodes_;            ///< Nodes the pool spans.
  std::vector<Container *> containers_;  ///< Index = container id; null
                                         ///< where it lives on another node.
  std::vector<ContainerId> local_;       ///< This node's container ids.
  /** A container of the module that is constructed but never created: its
   * method table serves every node (also those holding no container), and
   * it answers Monitor and MergeBcast where no local container exists. It
   * has the pool's identity (pool_id_, names, num_containers_), but its
   * container_id_ (0) names no container.
   * Shared: a task waiting on another node holds it (RunContext::
   * pool_hold_), so its method entry outlives a concurrent destroy. */
  std::shared_ptr<Container> proto_;
  std::atomic<bool> destroying_{false};
  /** Node of each container once a migration moved one (index = container
   * id); empty: container c lives on nodes_[c % nodes_.size()]. */
  std::vector<NodeId> placement_;
  /** The PoolInfo this one replaced: a migration publishes a changed copy,
   * and workers may still read the old one through their caches, so it
   * lives as long as the pool. */
  std::shared_ptr<PoolInfo> prev_;
  /** What creating the pool took of this node's budget (PoolManager::
   * kMaxLocalContainers, kMaxParamsBytes): given back when it is destroyed.
   * A migration's copy keeps it. */
  u64 charged_containers_ = 0;
  u64 charged_params_ = 0;

  /** The node holding container `c` (REQUIRES: c < num_containers_). */
  NodeId NodeOf(ContainerId c) const {
    if (!placement_.empty()) return placement_[c];
    // One node is the common case: no division on the hot path.
    return nodes_.size() == 1 ? nodes_[0] : nodes_[c % nodes_.size()];
  }
  /** The containers of `node`, ascending. */
  std::vector<ContainerId> ContainersOn(NodeId node) const;
  /** The first container of `node`, or ~0u if it holds none. */
  ContainerId FirstOn(NodeId node) const;
};

/** Summary of a pool, for listings. */
struct PoolSummary {
  PoolId id;
  std::string name;
  std::string module;
  u32 num_containers;  ///< In the whole pool.
  u32 num_local;       ///< On this node.
  u64 completed;
  u32 inflight;
  std::vector<NodeId> nodes;
};

/** Where a resolved task runs: a container of this node (acquired: the
 * caller must PoolManager::Release it) or of another node. */
struct Destination {
  NodeId node = 0;
  ContainerId container = 0;
  Container *local = nullptr;  ///< Set iff the container is on this node.
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
  /** Containers of all pools this node may hold at once (each takes a few
   * KiB of the runtime's memory, whoever asked for it). A creation past it
   * fails with ResourceExhausted. */
  static constexpr u64 kMaxLocalContainers = 16384;
  /** Bytes of creation parameters this node keeps for all its pools. */
  static constexpr u64 kMaxParamsBytes = 64ull << 20;

  /** Sets this node's id (pool ids it creates carry it). The counter of ids
   * starts from the wall clock (seconds << 10), so a restarted coordinator
   * (even after a reboot) does not reuse the ids of pools that other nodes
   * still hold; NewPoolId also skips the ids of pools this node knows. */
  void Init(NodeId node_id);
  /** Returns the pool called spec.name, creating this node's containers of
   * it (passing spec.params to each Create) if it does not exist. `*existed`
   * tells which; an existing pool of another module is InvalidArgument.
   * `fixed_id` (if not null) forces the id. Create() runs outside the lock,
   * so a module's Create() may submit tasks and wait for them. */
  StatusOr<PoolId> GetOrCreatePool(const PoolSpec &spec, bool *existed,
                                   const PoolId *fixed_id = nullptr);
  /** Ok if `name` can name a pool: 1..kMaxNameLen bytes, no control
   * characters (pool specs travel as tab-separated lines). */
  static Status CheckPoolName(const std::string &name);
  /** A fresh pool id of this node (unique in the cluster): none of the
   * pools this node knows has it. */
  PoolId NewPoolId();
  /** Unpublishes pool `id` so no new task reaches it. Returns the pool for
   * FinishDestroy, or NotFound; also NotFound, touching nothing, if
   * `expect_name` is given and the pool has another name (undoing a
   * creation must not destroy a pool that had the id already), and
   * Unavailable, touching nothing, while one of its containers here is
   * moving (BeginMove until the move ends): try again. */
  StatusOr<std::shared_ptr<PoolInfo>> BeginDestroy(
      const PoolId &id, const std::string *expect_name = nullptr);
  /** Retires the lanes of an unpublished pool, waits (at most 10 s, yielding
   * inside a fiber) until no worker holds them and no task runs on the pool,
   * then calls Destroy() on and deletes its containers. On timeout the
   * containers are leaked instead (and their budget stays taken), and
   * false is returned. */
  static bool FinishDestroy(PoolInfo &pool);
  /** Resolves `query` on pool `id` to one container (local containers are
   * counted in flight: Release() them). Errors: NotFound (unknown pool or
   * container, no container on this node for a local query), Aborted (pool
   * being destroyed), InvalidArgument (a broadcast or dynamic query). */
  StatusOr<Destination> Acquire(const PoolId &id, const DomainQuery &query);
  /** Acquire without the lock when `cache` (owned by the calling worker)
   * already knows the pool and no pool was created or destroyed since.
   * Safe because pool destruction waits for every worker to pass two loop
   * iterations and then for in-flight tasks, before freeing anything. */
  StatusOr<Destination> AcquireFast(const PoolId &id, const DomainQuery &query,
                                    PoolCache *cache);
  /** For a broadcast: the first container of every node of pool `id` (this
   * node's acquired, as in Acquire). */
  Status AcquireBcast(const PoolId &id, PoolCache *cache,
                      std::vector<Destination> *out);
  /** AcquireFast on a pool the caller got from FindFast, while that pointer
   * is still valid (see there): saves the second lookup. */
  StatusOr<Destination> AcquireIn(PoolInfo *pool, const DomainQuery &query) {
    return Resolve(*pool, query, /*count=*/true);
  }
  /** AcquireIn that leaves a local destination uncounted: the caller must
   * count it, as Worker's batch hold does (Worker::CountInHold). */
  StatusOr<Destination> ResolveIn(PoolInfo *pool, const DomainQuery &query) {
    return Resolve(*pool, query, /*count=*/false);
  }
  /** ResolveIn's common case, inline: the local container that a kLocalId
   * or kLocalHash query names, uncounted as in ResolveIn; null whenever
   * ResolveIn must decide (another kind, an error, a container elsewhere,
   * a pool being destroyed). Same contract as ResolveIn otherwise. */
  Container *LocalIn(const PoolInfo *pool, const DomainQuery &q) const {
    if (pool->destroying_.load(std::memory_order_acquire)) return nullptr;
    const u32 nl = static_cast<u32>(pool->local_.size());
    ContainerId idx;
    if (q.kind_ == DomainQuery::kLocalHash && nl != 0) {
      idx = pool->local_[nl == 1 ? 0 : q.sel_ % nl];
    } else if (q.kind_ == DomainQuery::kLocalId && q.sel_ < nl) {
      idx = pool->local_[q.sel_];
    } else {
      return nullptr;
    }
    return pool->NodeOf(idx) == node_id_ ? pool->containers_[idx] : nullptr;
  }
  /** The pool `id` (cached, as in AcquireFast), or null. The pointer stays
   * valid while the caller holds an acquired container of it or runs on a
   * worker that has not finished its loop iteration. */
  PoolInfo *FindFast(const PoolId &id, PoolCache *cache) {
    // Inline: once per admitted task; a hit in the caller's cache needs no
    // lock.
    u64 key = id.ToU64();
    u32 slot = CacheSlot(key);
    if (__builtin_expect(
            cache->version == version_.load(std::memory_order_acquire) &&
                cache->pools[slot] && cache->keys[slot] == key,
            1)) {
      return cache->pools[slot];
    }
    return FindSlow(key, slot, cache);
  }
  /** Ends a task started by Acquire. */
  static void Release(Container *c) {
    c->counts_.fetch_sub(1, std::memory_order_release);
  }
  /** Release, and counts the task as completed by `c`: one locked add that
   * takes 1 from the in-flight half (at least 1 here, so nothing borrows)
   * and adds 1 to the completed half. */
  static void ReleaseCompleted(Container *c) {
    u64 prev =
        c->counts_.fetch_add((u64{1} << 32) - 1, std::memory_order_release);
    if (__builtin_expect((prev >> 32) == 0xffffffffu, 0)) {
      c->completed_wraps_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  /** Ends a batch hold on `c` (Worker::FlushHold): one locked add drops
   * the hold's own count, adds `net` (tasks acquired minus tasks released
   * under the hold, uncounted so far) to the in-flight half and `done` to
   * the completed half. The in-flight half may not go below zero: the
   * hold's count and every task it covers are in it or in `net`. */
  static void ReleaseHold(Container *c, i64 net, u32 done) {
    u64 delta = (static_cast<u64>(done) << 32) + static_cast<u64>(net - 1);
    u64 prev = c->counts_.fetch_add(delta, std::memory_order_release);
    if (__builtin_expect((prev >> 32) + done > 0xffffffffu, 0)) {
      c->completed_wraps_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  /** The id of pool `name`, or NotFound. */
  StatusOr<PoolId> Lookup(const std::string &name);
  /** The spec of pool `id` (with its id), or NotFound. */
  StatusOr<PoolSpec> GetSpec(const PoolId &id);
  /** Every pool. */
  std::vector<PoolSummary> List();
  /** The default GetDynamic() policy across nodes: a query naming one
   * container of `pool` on its least loaded node (RemoteManager::
   * PickLeastLoaded, with `spread` breaking ties); on this node, the local
   * container with the fewest tasks in flight. A global hash if no node of
   * the pool is alive. Any worker; modules may call it from Monitor. */
  static DomainQuery LeastLoaded(const PoolInfo &pool, u32 spread);
  /** A container of this node and its tasks in flight. */
  struct LocalLoad {
    PoolId pool;
    ContainerId container;
    u32 inflight;
  };
  /** Every container of this node, busiest first. Any thread. */
  std::vector<LocalLoad> LocalContainersByLoad();
  /** The node that holds container `c` of pool `id`, as this node knows.
   * NotFound if there is no such pool or container. */
  StatusOr<NodeId> PlaceOf(const PoolId &id, ContainerId c);
  /** Migration, on the container's node: container `c` of pool `id` stops
   * starting tasks (workers hold new ones) and is returned. Errors:
   * NotFound (no such pool or container here), Aborted (being destroyed),
   * AlreadyExists (already moving). */
  StatusOr<Container *> BeginMove(const PoolId &id, ContainerId c);
  /** Waits (yielding inside a fiber) until the only tasks on `c` are held
   * ones; false after `timeout_ms`. */
  static bool WaitMoveDrained(Container *c, u64 timeout_ms);
  /** Ends a move that failed: `c` serves again, held tasks run on it. */
  static void AbortMove(Container *c);
  /** Migration, on the node a container moves to: makes container `c` of
   * pool `id` here (Create(params), then LoadState(state)) and publishes
   * it, with this node as its place. It is pinned again if it was pinned
   * where it was: a kPinned module's to its lane's worker here, another to
   * worker `pin_worker` (its lane's worker if this node has no such
   * worker); ~0u: not pinned. Errors: NotFound, AlreadyExists (c is here
   * already), or the module's. */
  Status InstallContainer(const PoolId &id, ContainerId c,
                          const std::string &state, u32 pin_worker = ~0u);
  /** Migration, on every node: container `c` of pool `id` now lives on
   * `node`. If it was here (the node it left), it is unpublished, its held
   * tasks are routed again, and, once nothing uses it, it is destroyed
   * (waits up to 10 s, yielding; leaked after). NotFound if no such pool. */
  Status SetPlacement(const PoolId &id, ContainerId c, NodeId node);
  /** Tasks in flight on this node's containers, all pools together (the
   * load this node reports to the others). Any thread; takes the lock. */
  u64 LocalInflight();
  /** A page of pool specs, in id order (PoolId::ToU64) from id `from`:
   * pools are added until their parameters reach `max_param_bytes` (one at
   * least, if any is left). `*more` says whether pools remain, `*next` is
   * the first one's id. Copies only the page's specs. Any thread. */
  std::vector<std::pair<PoolId, PoolSpec>> ListSpecs(u64 from,
                                                     u64 max_param_bytes,
                                                     bool *more, u64 *next);
  /** Destroys every pool (shutdown). */
  void DestroyAll();

 private:
  /** Publishes a copy of pool `id` changed by `edit` (under the lock; the
   * old PoolInfo stays alive as the new one's prev_). NotFound if none. */
  template <typename Edit>
  Status Republish(const PoolId &id, Edit &&edit);
  /** Waits (at most 10 s, yielding inside a fiber) until every worker
   * passed two loop iterations and no task runs on, and no worker holds a
   * lane of, any of `containers` (unpublished; nulls skipped). False on
   * timeout. */
  static bool Settle(const std::vector<Container *> &containers);
  /** Waits until `c` (unpublished) is unused, then destroys it. */
  static void RetireContainer(Container *c);
  /** Picks the container of `pool` that `q` names; acquires a local one
   * (counts it in flight) if `count`. */
  StatusOr<Destination> Resolve(PoolInfo &pool, const DomainQuery &q,
                                bool count = true);
  /** The slot of pool key `key` in a PoolCache. */
  static u32 CacheSlot(u64 key) {
    static_assert(PoolCache::kSlots == 8, "3 bits of the hash");
    return static_cast<u32>((key * 0x9E3779B97F4A7C15ull) >> 61);
  }
  /** FindFast's miss path: resets a stale `cache`, then looks `key` up
   * under the lock and caches it in `slot`. */
  PoolInfo *FindSlow(u64 key, u32 slot, PoolCache *cache);

  std::shared_mutex mu_;
  std::atomic<u64> version_{1};  ///< Bumped on every publish/unpublish.
  std::unordered_map<u64, std::shared_ptr<PoolInfo>> by_id_;
  std::unordered_map<std::string, PoolId> by_name_;
  std::unordered_set<std::string> creating_;  ///< Names being created.
  /** The budget taken by pools created or being created (PoolInfo::
   * charged_*). Guarded by mu_. */
  u64 local_containers_ = 0;
  u64 params_bytes_ = 0;
  NodeId node_id_ = 0;
  std::atomic<u32> next_unique_{1};
  /** NewPoolId with mu_ held. */
  PoolId NewPoolIdLocked();
  /** Gives back what `pool` took of the budget (once). Takes mu_. */
  void Uncharge(PoolInfo *pool);
};

/** Names of the methods of the pools this node knows, as
 * "<module>.<Method>", for traces and chimaera_stat. A snapshot: build one,
 * use it, drop it (it builds a throw-away container per module for its
 * method table). Any thread; not for hot paths. */
class MethodNameTable {
 public:
  /** Learns every pool's module and every module's method names. */
  MethodNameTable();
  /** "<module>.<Method>", with numbers where the pool or method is unknown
   * (e.g. the pool was destroyed). */
  std::string Name(const PoolId &pool, MethodId method) const;

 private:
  std::unordered_map<u64, std::string> modules_;  ///< pool -> module
  std::unordered_map<std::string, std::vector<std::string>> methods_;
};

}  // namespace chi

#define CHI_POOL_MANAGER (::hshm::Singleton<::chi::PoolManager>::GetInstance())

#endif  // CHIMAERA_POOL_MANAGER_H_
