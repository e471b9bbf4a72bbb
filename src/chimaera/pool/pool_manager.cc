#include "chimaera/pool_manager.h"

#include <algorithm>
#include <chrono>
#include <mutex>

#include "chimaera/module_manager.h"
#include "chimaera/remote_manager.h"
#include "chimaera/work_orchestrator.h"

namespace chi {

namespace {
/** The error for a container that placement puts on this node but that is
 * not installed here (SetPlacement refuses to make one; this is the
 * routing's guard should one appear anyway). */
Status NotInstalled(const PoolInfo &pool, ContainerId c) {
  return Status::Unavailable("container " + std::to_string(c) + " of pool '" +
                             pool.name_ +
                             "' is placed on this node but not "
                             "installed here");
}
}  // namespace

ContainerId PoolInfo::FirstOn(NodeId node) const {
  if (!placement_.empty()) {
    for (ContainerId c = 0; c < num_containers_; ++c) {
      if (placement_[c] == node) return c;
    }
    return ~0u;
  }
  for (size_t i = 0; i < nodes_.size() && i < num_containers_; ++i) {
    if (nodes_[i] == node) return static_cast<ContainerId>(i);
  }
  return ~0u;
}

std::vector<ContainerId> PoolInfo::ContainersOn(NodeId node) const {
  std::vector<ContainerId> out;
  for (ContainerId c = 0; c < num_containers_; ++c) {
    if (NodeOf(c) == node) out.push_back(c);
  }
  return out;
}

Status PoolManager::CheckPoolName(const std::string &name) {
  if (name.empty() || name.size() > kMaxNameLen) {
    return Status::InvalidArgument("pool name must be 1.." +
                                   std::to_string(kMaxNameLen) + " bytes");
  }
  for (unsigned char ch : name) {
    if (ch < 0x20 || ch == 0x7f) {
      return Status::InvalidArgument(
          "pool name holds a control character (byte " + std::to_string(ch) +
          ")");
    }
  }
  return Status::Ok();
}

void PoolManager::Init(NodeId node_id) {
  node_id_ = node_id;
  const u64 secs =
      static_cast<u64>(std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count());
  next_unique_.store(1 + static_cast<u32>(secs << 10));
}

PoolId PoolManager::NewPoolIdLocked() {
  for (;;) {
    PoolId id(node_id_, next_unique_.fetch_add(1));
    if (id.unique_ != 0 && id.unique_ != ~0u &&
        by_id_.find(id.ToU64()) == by_id_.end()) {
      return id;
    }
  }
}

PoolId PoolManager::NewPoolId() {
  std::shared_lock<std::shared_mutex> lock(mu_);
  return NewPoolIdLocked();
}

StatusOr<PoolId> PoolManager::GetOrCreatePool(const PoolSpec &spec,
                                              bool *existed,
                                              const PoolId *fixed_id) {
  const std::string &name = spec.name;
  HSHM_RETURN_IF_ERROR(CheckPoolName(name));
  if (spec.num_containers == 0 || spec.num_containers > kMaxContainers) {
    return Status::InvalidArgument(
        "a pool needs 1.." + std::to_string(kMaxContainers) + " containers");
  }
  std::vector<NodeId> nodes = spec.nodes;
  if (nodes.empty()) nodes.push_back(node_id_);
  if (!spec.placement.empty()) {
    // Containers that migrated (a node rebuilding its share on restart).
    if (spec.placement.size() != spec.num_containers) {
      return Status::InvalidArgument(
          "pool placement lists " + std::to_string(spec.placement.size()) +
          " containers, not " + std::to_string(spec.num_containers));
    }
    for (NodeId n : spec.placement) {
      if (std::find(nodes.begin(), nodes.end(), n) == nodes.end()) {
        return Status::InvalidArgument("pool placement names node " +
                                       std::to_string(n) +
                                       ", which the pool does not span");
      }
    }
  }
  HSHM_ASSIGN_OR_RETURN(ContainerFactory factory,
                        CHI_MODULE_MANAGER->GetFactory(spec.module));
  auto pool = std::make_shared<PoolInfo>();
  pool->name_ = name;
  pool->module_ = spec.module;
  pool->params_ = spec.params;
  pool->num_containers_ = spec.num_containers;
  pool->nodes_ = nodes;
  pool->placement_ = spec.placement;
  u64 local_n = 0;
  for (u32 i = 0; i < spec.num_containers; ++i) {
    local_n += pool->NodeOf(i) == node_id_ ? 1 : 0;
  }
  // Reserve the name, an id and this node's budget, or wait for a
  // concurrent creator of the same name to finish. The lock is never held
  // while containers are created: Create() may itself submit tasks and wait
  // for them.
  PoolId id;
  u64 deadline = hshm::NowNs() + 30ull * 1000000000;
  for (;;) {
    {
      std::unique_lock<std::shared_mutex> lock(mu_);
      auto it = by_name_.find(name);
      if (it != by_name_.end()) {
        auto pit = by_id_.find(it->second.ToU64());
        if (pit != by_id_.end() && pit->second->module_ != spec.module) {
          return Status::InvalidArgument(
              "pool '" + name + "' exists with module '" +
              pit->second->module_ + "', not '" + spec.module + "'");
        }
        *existed = true;
        return it->second;
      }
      if (!creating_.count(name)) {
        if (local_containers_ + local_n > kMaxLocalContainers ||
            params_bytes_ + spec.params.size() > kMaxParamsBytes) {
          return Status::ResourceExhausted(
              "pool '" + name + "' would take this node past " +
              std::to_string(kMaxLocalContainers) + " containers or " +
              std::to_string(kMaxParamsBytes >> 20) +
              " MiB of pool parameters (it holds " +
              std::to_string(local_containers_) + " and " +
              std::to_string(params_bytes_) + " bytes): destroy pools first");
        }
        creating_.insert(name);
        local_containers_ += local_n;
        params_bytes_ += spec.params.size();
        pool->charged_containers_ = local_n;
        pool->charged_params_ = spec.params.size();
        id = fixed_id ? *fixed_id : NewPoolIdLocked();
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
  pool->id_ = id;
  pool->containers_.assign(spec.num_containers, nullptr);
  pool->proto_.reset(factory());
  Status s;
  if (!pool->proto_) {
    s = Status::Internal("module '" + spec.module + "' made no container");
  } else {
    // Its Monitor and MergeBcast serve nodes without containers: they see
    // the pool as the containers do (container_id_ stays 0: it is none).
    pool->proto_->pool_id_ = id;
    pool->proto_->pool_name_ = name;
    pool->proto_->module_name_ = spec.module;
    pool->proto_->num_containers_ = spec.num_containers;
  }
  for (u32 i = 0; i < spec.num_containers && s.ok(); ++i) {
    if (pool->NodeOf(i) != node_id_) continue;
    Container *c = factory();
    if (!c) {
      s = Status::Internal("module '" + spec.module + "' made no container");
      break;
    }
    c->pool_id_ = id;
    c->pool_name_ = name;
    c->module_name_ = spec.module;
    c->container_id_ = i;
    c->num_containers_ = spec.num_containers;
    pool->containers_[i] = c;
    pool->local_.push_back(i);
    s = c->GuardedCreate(spec.params);
    if (s.ok()) s = c->PinAsDeclared();
  }
  std::unique_lock<std::shared_mutex> lock(mu_);
  creating_.erase(name);
  if (!s.ok()) {
    lock.unlock();
    FinishDestroy(*pool);
    return Status(s.code(), "creating pool '" + name + "': " + s.message());
  }
  if (by_id_.count(id.ToU64())) {
    lock.unlock();
    FinishDestroy(*pool);
    return Status::AlreadyExists("a pool with id " + id.ToString() +
                                 " exists already");
  }
  by_id_[id.ToU64()] = pool;
  by_name_[name] = id;
  version_.fetch_add(1, std::memory_order_release);
  *existed = false;
  return id;
}

StatusOr<std::shared_ptr<PoolInfo>> PoolManager::BeginDestroy(
    const PoolId &id, const std::string *expect_name) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  auto it = by_id_.find(id.ToU64());
  if (it == by_id_.end()) {
    return Status::NotFound("no pool with id " + id.ToString());
  }
  std::shared_ptr<PoolInfo> pool = it->second;
  if (expect_name && pool->name_ != *expect_name) {
    return Status::NotFound("pool " + id.ToString() + " is '" + pool->name_ +
                            "', not '" + *expect_name + "'");
  }
  // A move (BeginMove, under the shared lock: one of us sees the other)
  // uses its container until it ends: not while it is freed.
  for (Container *c : pool->containers_) {
    if (c && c->moving_.load(std::memory_order_seq_cst) == Container::kMoving) {
      return Status::Unavailable("a container of pool '" + pool->name_ +
                                 "' is moving to another node");
    }
  }
  pool->destroying_.store(true);
  for (Container *c : pool->containers_) {
    if (c) c->destroying_.store(true, std::memory_order_release);
  }
  version_.fetch_add(1, std::memory_order_release);
  by_id_.erase(it);
  by_name_.erase(pool->name_);
  return pool;
}

bool PoolManager::Settle(const std::vector<Container *> &containers) {
  // No worker may hold their lanes, run a task on them, or use a cached
  // lookup that leads to them when they go.
  bool quiet = CHI_WORK_ORCHESTRATOR->WaitQuiescent(10000);
  u64 deadline = hshm::NowNs() + 10ull * 1000000000;
  auto settled = [&containers] {
    for (Container *c : containers) {
      if (c && (c->Inflight(std::memory_order_acquire) != 0 ||
                c->lanes_held_.load(std::memory_order_acquire) != 0)) {
        return false;
      }
    }
    return true;
  };
  while (!settled()) {
    if (hshm::NowNs() > deadline) return false;
    if (!Worker::YieldCurrentFiber()) HSHM_THREAD_MODEL->SleepForUs(100);
  }
  return quiet;
}

bool PoolManager::FinishDestroy(PoolInfo &pool) {
  for (Container *c : pool.containers_) {
    if (c) c->RetireQueues();
  }
  if (!Settle(pool.containers_)) {
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
    if (!c) continue;
    c->Destroy();
    delete c;
  }
  pool.containers_.clear();
  CHI_POOL_MANAGER->Uncharge(&pool);
  return true;
}

void PoolManager::Uncharge(PoolInfo *pool) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  local_containers_ -= std::min(local_containers_, pool->charged_containers_);
  params_bytes_ -= std::min(params_bytes_, pool->charged_params_);
  pool->charged_containers_ = 0;
  pool->charged_params_ = 0;
}

StatusOr<Destination> PoolManager::Acquire(const PoolId &id,
                                           const DomainQuery &q) {
  std::shared_lock<std::shared_mutex> lock(mu_);
  auto it = by_id_.find(id.ToU64());
  if (it == by_id_.end()) {
    return Status::NotFound("no pool with id " + id.ToString());
  }
  return Resolve(*it->second, q);
}

PoolInfo *PoolManager::FindSlow(u64 key, u32 slot, PoolCache *cache) {
  u64 v = version_.load(std::memory_order_acquire);
  if (cache->version != v) {
    *cache = PoolCache();
    cache->version = v;
  }
  if (cache->pools[slot] && cache->keys[slot] == key) {
    return cache->pools[slot];
  }
  std::shared_lock<std::shared_mutex> lock(mu_);
  auto it = by_id_.find(key);
  if (it == by_id_.end()) return nullptr;
  cache->keys[slot] = key;
  cache->pools[slot] = it->second.get();
  return it->second.get();
}

StatusOr<Destination> PoolManager::AcquireFast(const PoolId &id,
                                               const DomainQuery &q,
                                               PoolCache *cache) {
  PoolInfo *pool = FindFast(id, cache);
  if (!pool) return Status::NotFound("no pool with id " + id.ToString());
  return Resolve(*pool, q);
}

Status PoolManager::AcquireBcast(const PoolId &id, PoolCache *cache,
                                 std::vector<Destination> *out) {
  PoolInfo *pool = FindFast(id, cache);
  if (!pool) return Status::NotFound("no pool with id " + id.ToString());
  if (pool->destroying_.load(std::memory_order_acquire)) {
    return Status::Aborted("pool '" + pool->name_ + "' is being destroyed");
  }
  out->clear();
  for (NodeId n : pool->nodes_) {
    ContainerId c = pool->FirstOn(n);
    if (c == ~0u) continue;  // fewer containers than nodes
    Destination d{n, c, nullptr};
    if (n == node_id_) {
      d.local = pool->containers_[c];
      if (!d.local) {
        for (Destination &taken : *out) {
          if (taken.local) Release(taken.local);
        }
        out->clear();
        return NotInstalled(*pool, c);
      }
      d.local->counts_.fetch_add(1, std::memory_order_acquire);
    }
    out->push_back(d);
  }
  return Status::Ok();
}

StatusOr<Destination> PoolManager::Resolve(PoolInfo &pool, const DomainQuery &q,
                                           bool count) {
  if (pool.destroying_.load(std::memory_order_acquire)) {
    return Status::Aborted("pool '" + pool.name_ + "' is being destroyed");
  }
  u32 n = pool.num_containers_;
  u32 nl = static_cast<u32>(pool.local_.size());
  ContainerId idx;
  switch (q.kind_) {
    case DomainQuery::kLocalId:
      if (q.sel_ >= nl) {
        return Status::NotFound(
            "pool '" + pool.name_ + "' has " + std::to_string(nl) +
            " containers on this node, no local id " + std::to_string(q.sel_));
      }
      idx = pool.local_[q.sel_];
      break;
    case DomainQuery::kLocalHash:
      if (nl == 0) {
        return Status::NotFound(
            "pool '" + pool.name_ + "' has no container on node " +
            std::to_string(node_id_) + " (use a global query)");
      }
      idx = pool.local_[nl == 1 ? 0 : q.sel_ % nl];
      break;
    case DomainQuery::kGlobalId:
      if (q.sel_ >= n) {
        return Status::NotFound("pool '" + pool.name_ + "' has no container " +
                                std::to_string(q.sel_));
      }
      idx = q.sel_;
      break;
    case DomainQuery::kGlobalHash:
      idx = n == 1 ? 0 : q.sel_ % n;
      break;
    default:
      return Status::InvalidArgument("domain query kind " +
                                     std::to_string(q.kind_) +
                                     " does not name one container");
  }
  Destination d{pool.NodeOf(idx), idx, nullptr};
  if (d.node == node_id_) {
    d.local = pool.containers_[idx];
    if (!d.local) return NotInstalled(pool, idx);
    if (count) d.local->counts_.fetch_add(1, std::memory_order_acquire);
  }
  return d;
}

StatusOr<PoolId> PoolManager::Lookup(const std::string &name) {
  std::shared_lock<std::shared_mutex> lock(mu_);
  auto it = by_name_.find(name);
  if (it == by_name_.end())
    return Status::NotFound("no pool named '" + name + "'");
  return it->second;
}

StatusOr<PoolSpec> PoolManager::GetSpec(const PoolId &id) {
  std::shared_lock<std::shared_mutex> lock(mu_);
  auto it = by_id_.find(id.ToU64());
  if (it == by_id_.end()) {
    return Status::NotFound("no pool with id " + id.ToString());
  }
  const PoolInfo &p = *it->second;
  return PoolSpec{p.name_,   p.module_, p.num_containers_,
                  p.params_, p.nodes_,  p.placement_};
}

std::vector<PoolSummary> PoolManager::List() {
  std::shared_lock<std::shared_mutex> lock(mu_);
  std::vector<PoolSummary> out;
  for (auto &kv : by_id_) {
    const PoolInfo &p = *kv.second;
    PoolSummary s{p.id_,
                  p.name_,
                  p.module_,
                  p.num_containers_,
                  static_cast<u32>(p.local_.size()),
                  0,
                  0,
                  p.nodes_};
    for (Container *c : p.containers_) {
      if (!c) continue;
      s.completed += c->Completed();
      s.inflight += c->Inflight();
    }
    out.push_back(s);
  }
  return out;
}

DomainQuery PoolManager::LeastLoaded(const PoolInfo &pool, u32 spread) {
  // Live: tasks in flight on this pool's containers here.
  u32 live = 0;
  for (ContainerId c : pool.local_) {
    if (Container *ct = pool.containers_[c]) {
      live += ct->Inflight(std::memory_order_relaxed);
    }
  }
  if (!pool.placement_.empty()) {
    // Containers moved: the nodes holding any, from the placement.
    std::vector<NodeId> holders;
    for (NodeId n : pool.nodes_) {
      if (pool.FirstOn(n) != ~0u) holders.push_back(n);
    }
    NodeId n = CHI_REMOTE->PickLeastLoaded(
        holders.data(), static_cast<u32>(holders.size()), spread, live);
    if (n == 0) return DomainQuery::GetGlobalHash(spread);
    std::vector<ContainerId> on = pool.ContainersOn(n);
    return DomainQuery::GetGlobalId(on[spread % on.size()]);
  }
  const u32 num_nodes = static_cast<u32>(
      std::min<size_t>(pool.nodes_.size(), pool.num_containers_));
  NodeId n =
      CHI_REMOTE->PickLeastLoaded(pool.nodes_.data(), num_nodes, spread, live);
  if (n == 0) return DomainQuery::GetGlobalHash(spread);
  if (n == CHI_IPC->node_id() && !pool.local_.empty()) {
    // Live counts here: the local container with the fewest in flight.
    const size_t k = pool.local_.size();
    ContainerId best = pool.local_[spread % k];
    u32 best_load = ~0u;
    for (size_t j = 0; j < k; ++j) {
      ContainerId c = pool.local_[(spread + j) % k];
      Container *ct = pool.containers_[c];
      u32 load = ct ? ct->Inflight(std::memory_order_relaxed) : ~0u;
      if (load < best_load) {
        best = c;
        best_load = load;
      }
    }
    return DomainQuery::GetGlobalId(best);
  }
  // Container c lives on nodes_[c % N]: those of node index i are i + N*k.
  u32 i = 0;
  while (i < num_nodes && pool.nodes_[i] != n) ++i;
  const u32 stride = static_cast<u32>(pool.nodes_.size());
  const u32 count = (pool.num_containers_ - i + stride - 1) / stride;
  return DomainQuery::GetGlobalId(i + stride * (spread % count));
}

template <typename Edit>
Status PoolManager::Republish(const PoolId &id, Edit &&edit) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  auto it = by_id_.find(id.ToU64());
  if (it == by_id_.end()) {
    return Status::NotFound("no pool with id " + id.ToString());
  }
  const std::shared_ptr<PoolInfo> &old = it->second;
  auto p = std::make_shared<PoolInfo>();
  p->id_ = old->id_;
  p->name_ = old->name_;
  p->module_ = old->module_;
  p->params_ = old->params_;
  p->num_containers_ = old->num_containers_;
  p->nodes_ = old->nodes_;
  p->containers_ = old->containers_;
  p->local_ = old->local_;
  p->proto_ = old->proto_;
  p->placement_ = old->placement_;
  if (p->placement_.empty()) {
    p->placement_.resize(p->num_containers_);
    for (ContainerId c = 0; c < p->num_containers_; ++c) {
      p->placement_[c] = old->NodeOf(c);
    }
  }
  p->destroying_.store(old->destroying_.load());
  p->charged_containers_ = old->charged_containers_;
  p->charged_params_ = old->charged_params_;
  HSHM_RETURN_IF_ERROR(edit(*p));
  p->prev_ = old;
  it->second = p;
  version_.fetch_add(1, std::memory_order_release);
  return Status::Ok();
}

std::vector<PoolManager::LocalLoad> PoolManager::LocalContainersByLoad() {
  std::vector<LocalLoad> out;
  {
    std::shared_lock<std::shared_mutex> lock(mu_);
    for (auto &kv : by_id_) {
      const PoolInfo &p = *kv.second;
      for (ContainerId c : p.local_) {
        out.push_back(LocalLoad{p.id_, c, p.containers_[c]->Inflight()});
      }
    }
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const LocalLoad &a, const LocalLoad &b) {
                     return a.inflight > b.inflight;
                   });
  return out;
}

StatusOr<NodeId> PoolManager::PlaceOf(const PoolId &id, ContainerId c) {
  std::shared_lock<std::shared_mutex> lock(mu_);
  auto it = by_id_.find(id.ToU64());
  if (it == by_id_.end()) {
    return Status::NotFound("no pool with id " + id.ToString());
  }
  if (c >= it->second->num_containers_) {
    return Status::NotFound("pool '" + it->second->name_ +
                            "' has no container " + std::to_string(c));
  }
  return it->second->NodeOf(c);
}

StatusOr<Container *> PoolManager::BeginMove(const PoolId &id, ContainerId c) {
  std::shared_lock<std::shared_mutex> lock(mu_);
  auto it = by_id_.find(id.ToU64());
  if (it == by_id_.end()) {
    return Status::NotFound("no pool with id " + id.ToString());
  }
  PoolInfo &pool = *it->second;
  if (pool.destroying_.load()) {
    return Status::Aborted("pool '" + pool.name_ + "' is being destroyed");
  }
  if (c >= pool.num_containers_ || !pool.containers_[c]) {
    return Status::NotFound("pool '" + pool.name_ + "' has no container " +
                            std::to_string(c) + " on node " +
                            std::to_string(node_id_));
  }
  Container *ct = pool.containers_[c];
  u32 expect = Container::kServing;
  // seq_cst: a worker increments counts_ and then reads moving_; we set
  // moving_ and then read counts_: one of us sees the other.
  if (!ct->moving_.compare_exchange_strong(expect, Container::kMoving,
                                           std::memory_order_seq_cst)) {
    return Status::AlreadyExists("container " + std::to_string(c) +
                                 " of pool '" + pool.name_ +
                                 "' is already moving");
  }
  return ct;
}

bool PoolManager::WaitMoveDrained(Container *c, u64 timeout_ms) {
  u64 deadline = hshm::NowNs() + timeout_ms * 1000000;
  for (;;) {
    u32 held = c->held_.load(std::memory_order_seq_cst);
    u32 inflight = c->Inflight(std::memory_order_seq_cst);
    if (inflight <= held) return true;
    if (hshm::NowNs() > deadline) return false;
    if (!Worker::YieldCurrentFiber()) HSHM_THREAD_MODEL->SleepForUs(100);
  }
}

void PoolManager::AbortMove(Container *c) {
  c->moving_.store(Container::kServing, std::memory_order_seq_cst);
  Worker::WakeAll();
}

Status PoolManager::InstallContainer(const PoolId &id, ContainerId c,
                                     const std::string &state, u32 pin_worker) {
  std::string module, name, params;
  u32 num = 0;
  {
    std::shared_lock<std::shared_mutex> lock(mu_);
    auto it = by_id_.find(id.ToU64());
    if (it == by_id_.end()) {
      return Status::NotFound("no pool with id " + id.ToString());
    }
    const PoolInfo &pool = *it->second;
    if (c >= pool.num_containers_) {
      return Status::NotFound("pool '" + pool.name_ + "' has no container " +
                              std::to_string(c));
    }
    if (pool.containers_[c]) {
      return Status::AlreadyExists("container " + std::to_string(c) +
                                   " is on node " + std::to_string(node_id_) +
                                   " already");
    }
    module = pool.module_;
    name = pool.name_;
    params = pool.params_;
    num = pool.num_containers_;
  }
  HSHM_ASSIGN_OR_RETURN(ContainerFactory factory,
                        CHI_MODULE_MANAGER->GetFactory(module));
  Container *ct = factory();
  if (!ct) return Status::Internal("module '" + module + "' made no container");
  ct->pool_id_ = id;
  ct->pool_name_ = name;
  ct->module_name_ = module;
  ct->container_id_ = c;
  ct->num_containers_ = num;
  Status s = ct->GuardedCreate(params);
  if (s.ok()) s = ct->GuardedLoadState(state);
  if (s.ok()) s = ct->PinAsDeclared(pin_worker);
  if (s.ok()) {
    s = Republish(id, [&](PoolInfo &p) {
      if (p.containers_[c]) {
        return Status::AlreadyExists("container " + std::to_string(c) +
                                     " appeared meanwhile");
      }
      p.containers_[c] = ct;
      p.local_.insert(std::lower_bound(p.local_.begin(), p.local_.end(), c), c);
      p.placement_[c] = node_id_;
      return Status::Ok();
    });
  }
  if (!s.ok()) {
    ct->RetireQueues();
    RetireContainer(ct);
  }
  return s;
}

Status PoolManager::SetPlacement(const PoolId &id, ContainerId c, NodeId node) {
  Container *left = nullptr;
  Status s = Republish(id, [&](PoolInfo &p) {
    if (c >= p.num_containers_) {
      return Status::NotFound("pool '" + p.name_ + "' has no container " +
                              std::to_string(c));
    }
    if (node == 0 ||
        std::find(p.nodes_.begin(), p.nodes_.end(), node) == p.nodes_.end()) {
      return Status::InvalidArgument("node " + std::to_string(node) +
                                     " does not hold pool '" + p.name_ + "'");
    }
    // A container is placed here only once it is installed here
    // (InstallContainer, before the move's SetPlacement): where placement
    // names this node, routing uses containers_[c].
    if (node == node_id_ && !p.containers_[c]) {
      return Status::InvalidArgument(
          "container " + std::to_string(c) + " of pool '" + p.name_ +
          "' is not installed on node " + std::to_string(node_id_));
    }
    p.placement_[c] = node;
    if (node != node_id_ && p.containers_[c]) {
      left = p.containers_[c];
      p.containers_[c] = nullptr;
      p.local_.erase(std::find(p.local_.begin(), p.local_.end(), c));
    }
    return Status::Ok();
  });
  if (!s.ok() || !left) return s;
  // Held tasks go to the new node; then the old container goes away.
  left->moving_.store(Container::kMoved, std::memory_order_seq_cst);
  Worker::WakeAll();
  left->RetireQueues();
  RetireContainer(left);
  return Status::Ok();
}

void PoolManager::RetireContainer(Container *c) {
  if (!Settle({c})) {
    fprintf(stderr,
            "chimaera: container %u of pool '%s' did not settle in 10 s after "
            "it moved; it is leaked\n",
            c->container_id_, c->pool_name_.c_str());
    return;
  }
  c->Destroy();
  delete c;
}

u64 PoolManager::LocalInflight() {
  std::shared_lock<std::shared_mutex> lock(mu_);
  u64 n = 0;
  for (auto &kv : by_id_) {
    for (Container *c : kv.second->containers_) {
      if (c) n += c->Inflight(std::memory_order_relaxed);
    }
  }
  return n;
}

std::vector<std::pair<PoolId, PoolSpec>> PoolManager::ListSpecs(
    u64 from, u64 max_param_bytes, bool *more, u64 *next) {
  std::shared_lock<std::shared_mutex> lock(mu_);
  std::vector<std::pair<u64, const PoolInfo *>> keys;
  for (auto &kv : by_id_) {
    const u64 key = kv.second->id_.ToU64();
    if (key >= from) keys.emplace_back(key, kv.second.get());
  }
  std::sort(keys.begin(), keys.end(),
            [](const auto &a, const auto &b) { return a.first < b.first; });
  std::vector<std::pair<PoolId, PoolSpec>> out;
  u64 bytes = 0;
  *more = false;
  *next = 0;
  for (const auto &[key, p] : keys) {
    if (!out.empty() && bytes >= max_param_bytes) {
      *more = true;
      *next = key;
      break;
    }
    bytes += p->params_.size();
    out.emplace_back(p->id_, PoolSpec{p->name_, p->module_, p->num_containers_,
                                      p->params_, p->nodes_, p->placement_});
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

MethodNameTable::MethodNameTable() {
  for (const PoolSummary &p : CHI_POOL_MANAGER->List()) {
    modules_[p.id.ToU64()] = p.module;
    if (methods_.count(p.module)) continue;
    auto f = CHI_MODULE_MANAGER->GetFactory(p.module);
    std::vector<std::string> names;
    if (f.ok()) {
      std::unique_ptr<Container> c((*f)());
      if (c) names = c->MethodNames();
    }
    methods_[p.module] = std::move(names);
  }
}

std::string MethodNameTable::Name(const PoolId &pool, MethodId method) const {
  auto m = modules_.find(pool.ToU64());
  std::string mod = m != modules_.end() ? m->second : "pool_" + pool.ToString();
  std::string meth;
  if (m != modules_.end()) {
    auto t = methods_.find(m->second);
    if (t != methods_.end() && method < t->second.size()) {
      meth = t->second[method];
    }
  }
  if (meth.empty()) meth = "method_" + std::to_string(method);
  return mod + "." + meth;
}

}  // namespace chi
