#include "chimaera/pool_manager.h"

#include <mutex>

#include "chimaera/module_manager.h"
#include "chimaera/work_orchestrator.h"

namespace chi {

StatusOr<PoolId> PoolManager::GetOrCreatePool(
    const std::string &name, const std::string &module, u32 num_containers,
    const std::string &params, bool *existed, const PoolId *fixed_id) {
  if (name.empty() || name.size() > kMaxNameLen) {
    return Status::InvalidArgument("pool name must be 1.." +
                                   std::to_string(kMaxNameLen) + " bytes");
  }
  if (num_containers == 0 || num_containers > 4096) {
    return Status::InvalidArgument("a pool needs 1..4096 containers");
  }
  HSHM_ASSIGN_OR_RETURN(ContainerFactory factory,
                        CHI_MODULE_MANAGER->GetFactory(module));
  // Reserve the name and an id, or wait for a concurrent creator of the same
  // name to finish. The lock is never held while containers are created:
  // Create() may itself submit tasks and wait for them.
  PoolId id;
  u64 deadline = hshm::NowNs() + 30ull * 1000000000;
  for (;;) {
    {
      std::unique_lock<std::shared_mutex> lock(mu_);
      auto it = by_name_.find(name);
      if (it != by_name_.end()) {
        *existed = true;
        return it->second;
      }
      if (creating_.insert(name).second) {
        id = fixed_id ? *fixed_id : PoolId(node_id_, next_unique_++);
        break;
      }
    }
    if (hshm::NowNs() > deadline) {
      return Status::Timeout("pool '" + name +
                             "' has been in creation by another request for "
                             "30 s");
    }
    if (!Worker::YieldCurrentFiber()) HSHM_THREAD_MODEL->SleepForUs(100);
  }
  auto pool = std::make_shared<PoolInfo>();
  pool->id_ = id;
  pool->name_ = name;
  pool->module_ = module;
  Status s;
  for (u32 i = 0; i < num_containers && s.ok(); ++i) {
    Container *c = factory();
    if (!c) {
      s = Status::Internal("module '" + module + "' made no container");
      break;
    }
    c->pool_id_ = id;
    c->pool_name_ = name;
    c->module_name_ = module;
    c->container_id_ = i;
    c->num_containers_ = num_containers;
    pool->containers_.push_back(c);
    s = c->Create(params);
  }
  std::unique_lock<std::shared_mutex> lock(mu_);
  creating_.erase(name);
  if (!s.ok()) {
    lock.unlock();
    FinishDestroy(*pool);
    return Status(s.code(), "creating pool '" + name + "': " + s.message());
  }
  by_id_[id.ToU64()] = pool;
  by_name_[name] = id;
  version_.fetch_add(1, std::memory_order_release);
  *existed = false;
  return id;
}

StatusOr<std::shared_ptr<PoolInfo>> PoolManager::BeginDestroy(
    const PoolId &id) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  auto it = by_id_.find(id.ToU64());
  if (it == by_id_.end()) {
    return Status::NotFound("no pool with id " + id.ToString());
  }
  std::shared_ptr<PoolInfo> pool = it->second;
  pool->destroying_.store(true);
  for (Container *c : pool->containers_) {
    c->destroying_.store(true, std::memory_order_release);
  }
  version_.fetch_add(1, std::memory_order_release);
  by_id_.erase(it);
  by_name_.erase(pool->name_);
  return pool;
}

bool PoolManager::Drained(const PoolInfo &pool) {
  for (Container *c : pool.containers_) {
    if (c->inflight_.load(std::memory_order_acquire) != 0) return false;
  }
  return true;
}

bool PoolManager::FinishDestroy(PoolInfo &pool) {
  // No worker may still hold the containers' lanes, run a task popped from
  // them, or use a cached lookup of the pool when the containers go away.
  for (Container *c : pool.containers_) c->RetireQueues();
  bool quiet = CHI_WORK_ORCHESTRATOR->WaitQuiescent(10000);
  u64 deadline = hshm::NowNs() + 10ull * 1000000000;
  auto settled = [&pool] {
    if (!Drained(pool)) return false;
    for (Container *c : pool.containers_) {
      if (c->lanes_held_.load(std::memory_order_acquire) != 0) return false;
    }
    return true;
  };
  while (!settled()) {
    if (hshm::NowNs() > deadline) {
      quiet = false;
      break;
    }
    if (!Worker::YieldCurrentFiber()) HSHM_THREAD_MODEL->SleepForUs(100);
  }
  if (!quiet) {
    // Something still uses the containers: leak them rather than free
    // memory a worker may touch.
    fprintf(stderr,
            "chimaera: pool '%s' did not settle in 10 s; its containers are "
            "leaked\n",
            pool.name_.c_str());
    pool.containers_.clear();
    return false;
  }
  for (Container *c : pool.containers_) {
    c->Destroy();
    delete c;
  }
  pool.containers_.clear();
  return true;
}

StatusOr<Container *> PoolManager::Acquire(const PoolId &id,
                                           const DomainQuery &q) {
  std::shared_lock<std::shared_mutex> lock(mu_);
  auto it = by_id_.find(id.ToU64());
  if (it == by_id_.end()) {
    return Status::NotFound("no pool with id " + id.ToString());
  }
  return Resolve(*it->second, q);
}

StatusOr<Container *> PoolManager::AcquireFast(const PoolId &id,
                                               const DomainQuery &q,
                                               PoolCache *cache) {
  u64 v = version_.load(std::memory_order_acquire);
  if (cache->version != v) {
    *cache = PoolCache();
    cache->version = v;
  }
  u64 key = id.ToU64();
  u32 slot = static_cast<u32>((key * 0x9E3779B97F4A7C15ull) >> 61);
  if (cache->pools[slot] && cache->keys[slot] == key) {
    return Resolve(*cache->pools[slot], q);
  }
  std::shared_lock<std::shared_mutex> lock(mu_);
  auto it = by_id_.find(key);
  if (it == by_id_.end()) {
    return Status::NotFound("no pool with id " + id.ToString());
  }
  cache->keys[slot] = key;
  cache->pools[slot] = it->second.get();
  return Resolve(*it->second, q);
}

StatusOr<Container *> PoolManager::Resolve(PoolInfo &pool,
                                           const DomainQuery &q) {
  if (pool.destroying_.load(std::memory_order_acquire)) {
    return Status::Aborted("pool '" + pool.name_ + "' is being destroyed");
  }
  u32 n = static_cast<u32>(pool.containers_.size());
  u32 idx;
  switch (q.kind_) {
    case DomainQuery::kLocalId:
    case DomainQuery::kGlobalId:
      if (q.sel_ >= n) {
        return Status::NotFound("pool '" + pool.name_ + "' has no container " +
                                std::to_string(q.sel_));
      }
      idx = q.sel_;
      break;
    case DomainQuery::kLocalHash:
    case DomainQuery::kGlobalHash:
      idx = q.sel_ % n;
      break;
    case DomainQuery::kGlobalBcast:
      // One node: every node of the domain is this one; its first container
      // represents it.
      idx = 0;
      break;
    default:
      return Status::InvalidArgument("unresolved domain query kind " +
                                     std::to_string(q.kind_));
  }
  Container *c = pool.containers_[idx];
  c->inflight_.fetch_add(1, std::memory_order_acquire);
  return c;
}

StatusOr<PoolId> PoolManager::Lookup(const std::string &name) {
  std::shared_lock<std::shared_mutex> lock(mu_);
  auto it = by_name_.find(name);
  if (it == by_name_.end())
    return Status::NotFound("no pool named '" + name + "'");
  return it->second;
}

std::vector<PoolSummary> PoolManager::List() {
  std::shared_lock<std::shared_mutex> lock(mu_);
  std::vector<PoolSummary> out;
  for (auto &kv : by_id_) {
    const PoolInfo &p = *kv.second;
    PoolSummary s{p.id_,     p.name_,
                  p.module_, static_cast<u32>(p.containers_.size()),
                  0,         0};
    for (Container *c : p.containers_) {
      s.completed += c->completed_.load();
      s.inflight += c->inflight_.load();
    }
    out.push_back(s);
  }
  return out;
}

void PoolManager::DestroyAll() {
  std::vector<std::shared_ptr<PoolInfo>> pools;
  {
    std::unique_lock<std::shared_mutex> lock(mu_);
    for (auto &kv : by_id_) pools.push_back(kv.second);
    by_id_.clear();
    by_name_.clear();
    version_.fetch_add(1, std::memory_order_release);
  }
  for (auto &p : pools) FinishDestroy(*p);
}

}  // namespace chi
