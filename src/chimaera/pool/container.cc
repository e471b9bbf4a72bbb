#include "chimaera/container.h"

#include "chimaera/config_manager.h"
#include "chimaera/ipc_manager.h"
#include "chimaera/pool_manager.h"
#include "chimaera/work_orchestrator.h"
#include "chimaera/worker.h"

namespace chi {

namespace {
/** Runs module hook `what` (fn), turning an exception into Internal. */
template <typename Fn>
Status Guarded(const char *what, Fn &&fn) {
  try {
    return fn();
  } catch (const boost::context::detail::forced_unwind &) {
    throw;
  } catch (const std::exception &e) {
    return Status::Internal(std::string(what) + " threw: " + e.what());
  } catch (...) {
    return Status::Internal(std::string(what) + " threw a non-std exception");
  }
}

/** The priority of the process-queue lanes worker `worker` drains. */
TaskPrio ProcessLanePrio(u32 worker) {
  auto &workers = CHI_WORK_ORCHESTRATOR->workers();
  return worker < workers.size() &&
                 workers[worker]->kind() == WorkerKind::kHighLatency
             ? kHighLatency
             : kLowLatency;
}
}  // namespace

Status Container::GuardedCreate(const std::string &params) {
  return Guarded("Create", [&] { return Create(params); });
}

Status Container::GuardedSaveState(std::string *out) {
  return Guarded("SaveState", [&] { return SaveState(out); });
}

Status Container::GuardedLoadState(const std::string &in) {
  return Guarded("LoadState", [&] { return LoadState(in); });
}

void Container::Monitor(MonitorMode mode, Task *task, RunContext &rctx) {
  if (mode == MonitorMode::kGlobalSchedule) {
    const u32 spread = static_cast<u32>(task->task_node_.major_ * 0x9E3779B1u);
    if (rctx.pool_ && rctx.pool_->nodes_.size() > 1 &&
        CHI_CONFIG_MANAGER->config().dynamic_least_loaded_) {
      // A pool on several nodes: its least loaded node (balance.dynamic).
      task->dom_query_ = PoolManager::LeastLoaded(*rctx.pool_, spread);
      return;
    }
    // Spread dynamic tasks over the local containers by task graph; on a
    // node with none (more nodes than containers, or they moved away), over
    // all of the pool's containers.
    const bool none_here = rctx.pool_ && rctx.pool_->local_.empty();
    task->dom_query_ = none_here ? DomainQuery::GetGlobalHash(spread)
                                 : DomainQuery::GetLocalHash(spread);
  } else if (mode == MonitorMode::kEstLoad) {
    // The learned model of this method (chimaera_stat shows them).
    rctx.est_load_ns_ = CHI_WORK_ORCHESTRATOR->EstimateNs(
        pool_id_, task->method_, rctx.in_bytes_);
  }
}

void Container::Run(Task *task, RunContext &rctx) {
  const MethodEntry *e = GetMethod(task->method_);
  if (!e) {
    internal::SetTaskStatus(
        task,
        Status::NotFound("module '" + module_name_ + "' (pool '" + pool_name_ +
                         "') has no method " + std::to_string(task->method_)));
    return;
  }
  e->run(this, const_cast<char *>(e->handler), task, rctx);
}

Status Container::SaveState(std::string *out) {
  return Status::Unimplemented("module '" + module_name_ +
                               "' does not support migration (SaveState)");
}

Status Container::LoadState(const std::string &in) {
  return Status::Unimplemented("module '" + module_name_ +
                               "' does not support migration (LoadState)");
}

Container::~Container() = default;

bool TaskLane::Push(RunContext *rctx) {
  std::lock_guard<std::mutex> lock(mu_);
  if (q_.size() >= depth_) return false;
  if (flags_.load(std::memory_order_acquire) & kLaneRetired) return false;
  q_.push_back(rctx);
  size_.store(q_.size(), std::memory_order_release);
  return true;
}

bool TaskLane::PushUnbounded(RunContext *rctx) {
  std::lock_guard<std::mutex> lock(mu_);
  if (flags_.load(std::memory_order_acquire) & kLaneRetired) return false;
  q_.push_back(rctx);
  size_.store(q_.size(), std::memory_order_release);
  return true;
}

std::deque<RunContext *> TaskLane::TakeAll() {
  std::lock_guard<std::mutex> lock(mu_);
  std::deque<RunContext *> all;
  all.swap(q_);
  size_.store(0, std::memory_order_release);
  return all;
}

RunContext *TaskLane::Pop() {
  if (Empty()) return nullptr;
  std::lock_guard<std::mutex> lock(mu_);
  if (q_.empty()) return nullptr;
  RunContext *r = q_.front();
  q_.pop_front();
  size_.store(q_.size(), std::memory_order_release);
  return r;
}

TaskLane *Container::Route(Task *task) {
  if (task->prio_ != kHighLatency) return nullptr;
  for (auto &q : queues_) {
    if (q.prio == kHighLatency) {
      return q.lanes[task->task_node_.major_ % q.lanes.size()].get();
    }
  }
  return nullptr;
}

Status Container::CreateQueue(QueueId id, u32 num_lanes, TaskPrio prio,
                              u64 depth) {
  for (auto &q : queues_) {
    if (q.id == id) {
      return Status::AlreadyExists("queue " + std::to_string(id) +
                                   " already exists");
    }
  }
  if (num_lanes == 0 || num_lanes > 1024 || depth == 0) {
    return Status::InvalidArgument("a queue needs 1..1024 lanes of depth > 0");
  }
  OwnedQueue q{id, prio, {}};
  for (u32 l = 0; l < num_lanes; ++l) {
    q.lanes.push_back(std::make_unique<TaskLane>(depth));
  }
  // Counted before the hand-over: a worker drops a retired lane (and
  // decrements) only after it took it from its mailbox.
  lanes_held_.fetch_add(num_lanes, std::memory_order_acq_rel);
  for (auto &lane : q.lanes) {
    CHI_WORK_ORCHESTRATOR->AddLane(lane.get(), prio, this);
  }
  queues_.push_back(std::move(q));
  return Status::Ok();
}

TaskLane *Container::GetLane(QueueId id, u32 lane) {
  for (auto &q : queues_) {
    if (q.id == id) return q.lanes[lane % q.lanes.size()].get();
  }
  return nullptr;
}

void Container::RetireQueues() {
  destroying_.store(true, std::memory_order_release);
  for (auto &q : queues_) {
    for (auto &lane : q.lanes) {
      lane->flags_.fetch_or(kLaneRetired, std::memory_order_release);
    }
  }
  std::lock_guard<std::mutex> lock(pin_mu_);
  if (pin_owned_) {
    pin_owned_->flags_.fetch_or(kLaneRetired, std::memory_order_release);
    if (pinned_process_lane_) {
      u32 w = pin_owned_->worker_id_.load(std::memory_order_acquire);
      CHI_WORK_ORCHESTRATOR->UnpinProcessLane(
          container_id_ % CHI_IPC->num_lanes(), ProcessLanePrio(w), w);
      pinned_process_lane_ = false;
    }
  }
}

Status Container::PinToWorker(u32 worker) {
  auto &workers = CHI_WORK_ORCHESTRATOR->workers();
  if (worker >= workers.size()) {
    return Status::InvalidArgument("no worker " + std::to_string(worker) +
                                   " (this runtime has " +
                                   std::to_string(workers.size()) + ")");
  }
  std::lock_guard<std::mutex> lock(pin_mu_);
  if (pin_owned_) {
    u32 w = pin_owned_->worker_id_.load(std::memory_order_acquire);
    if (w == worker) return Status::Ok();
    return Status::AlreadyExists(
        "container " + std::to_string(container_id_) + " of pool '" +
        pool_name_ + "' is already pinned to worker " + std::to_string(w));
  }
  if (destroying_.load(std::memory_order_acquire)) {
    return Status::Unavailable("the pool is being destroyed");
  }
  pin_owned_ = std::make_unique<TaskLane>();
  pin_owned_->flags_.store(kLanePinned, std::memory_order_relaxed);
  // Counted before the hand-over, as for CreateQueue's lanes.
  lanes_held_.fetch_add(1, std::memory_order_acq_rel);
  workers[worker]->AddLane(pin_owned_.get(), this);
  pin_lane_.store(pin_owned_.get(), std::memory_order_release);
  // Clients send the tasks they address to this container by id to process
  // lane container_id_ % lanes: move it to the worker too (unless another
  // container sharing it pinned it elsewhere first), so they arrive in one
  // hop instead of being admitted elsewhere and passed on.
  if (u32 lanes = CHI_IPC->num_lanes()) {
    pinned_process_lane_ = CHI_WORK_ORCHESTRATOR->PinProcessLane(
        container_id_ % lanes, ProcessLanePrio(worker), worker);
  }
  return Status::Ok();
}

Status Container::PinToOwnLane() {
  u32 lanes = CHI_IPC->num_lanes();
  if (lanes == 0) return Status::Unavailable("the process queue has no lanes");
  LaneView &lane = CHI_IPC->GetLaneView(container_id_ % lanes, kLowLatency);
  // A pinned lane's worker, not whoever holds it while that one is stuck.
  if (u32 pin = CHI_WORK_ORCHESTRATOR->LanePin(&lane))
    return PinToWorker(pin - 1);
  return PinToWorker(lane.header().worker_id_.load(std::memory_order_acquire));
}

Status Container::PinAsDeclared(u32 was_pinned_to) {
  if (pin_at_create_) return PinToOwnLane();
  if (was_pinned_to == ~0u) return Status::Ok();
  return was_pinned_to < CHI_WORK_ORCHESTRATOR->workers().size()
             ? PinToWorker(was_pinned_to)
             : PinToOwnLane();
}

std::vector<std::string> Container::MethodNames() const {
  std::vector<std::string> out;
  for (auto &m : methods_) out.push_back(m.name ? m.name : "");
  return out;
}

}  // namespace chi
