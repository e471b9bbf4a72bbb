#include "chimaera/container.h"

#include "chimaera/ipc_manager.h"
#include "chimaera/work_orchestrator.h"

namespace chi {

void Container::Monitor(MonitorMode mode, Task *task, RunContext &rctx) {
  if (mode == MonitorMode::kGlobalSchedule) {
    // Spread dynamic tasks over the local containers by task graph.
    task->dom_query_ = DomainQuery::GetLocalHash(
        static_cast<u32>(task->task_node_.major_ * 0x9E3779B1u));
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

Container::~Container() {
  for (auto &q : queues_)
    (void)CHI_IPC->rdata_alloc()->Free(HSHM_MCTX, q.queue.shm_);
}

Lane *Container::Route(Task *task) {
  if (task->prio_ != kHighLatency) return nullptr;
  for (auto &q : queues_) {
    if (q.prio == kHighLatency) {
      return &q.queue->GetLane(
          static_cast<u32>(task->task_node_.major_ % q.queue->num_lanes()), 0);
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
  Status st;
  auto q = ProcessQueue::New(CHI_IPC->rdata_alloc(), HSHM_MCTX, num_lanes, 1,
                             depth, &st);
  if (q.IsNull()) return st;
  queues_.push_back(OwnedQueue{id, prio, q});
  // Counted before the hand-over: a worker drops a retired lane (and
  // decrements) only after it took it from its mailbox.
  lanes_held_.fetch_add(num_lanes, std::memory_order_acq_rel);
  for (u32 l = 0; l < num_lanes; ++l) {
    CHI_WORK_ORCHESTRATOR->AddLane(&q->GetLane(l, 0), prio, this);
  }
  return Status::Ok();
}

Lane *Container::GetLane(QueueId id, u32 lane) {
  for (auto &q : queues_) {
    if (q.id == id) return &q.queue->GetLane(lane % q.queue->num_lanes(), 0);
  }
  return nullptr;
}

void Container::RetireQueues() {
  destroying_.store(true, std::memory_order_release);
  for (auto &q : queues_) {
    for (u32 l = 0; l < q.queue->num_lanes(); ++l) {
      q.queue->GetLane(l, 0).header().flags_.fetch_or(
          kLaneRetired, std::memory_order_release);
    }
  }
}

std::vector<std::string> Container::MethodNames() const {
  std::vector<std::string> out;
  for (auto &m : methods_) out.push_back(m.name ? m.name : "");
  return out;
}

}  // namespace chi
