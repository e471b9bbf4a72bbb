// The admin container: built into the runtime, one per node (pool 0.0).
#include <sstream>

#include "chimaera/admin/admin_tasks.h"
#include "chimaera/chimaera.h"
#include "chimaera/module_manager.h"
#include "chimaera/pool_manager.h"
#include "chimaera/work_orchestrator.h"
#include "hermes_shm/util/futex.h"

namespace chi {
namespace admin {

/** Runtime side of the admin module. */
class Runtime : public Container {
 public:
  Runtime() {
    RegisterMethod(Method::kNoop, "Noop", &Runtime::Noop);
    RegisterMethod(Method::kEcho, "Echo", &Runtime::Echo);
    RegisterMethod(Method::kFanOut, "FanOut", &Runtime::FanOut);
    RegisterMethod(Method::kStopRuntime, "StopRuntime", &Runtime::StopRuntime);
    RegisterMethod(Method::kGetOrCreatePool, "GetOrCreatePool",
                   &Runtime::GetOrCreatePool);
    RegisterMethod(Method::kDestroyPool, "DestroyPool", &Runtime::DestroyPool);
    RegisterMethod(Method::kLookupPool, "LookupPool", &Runtime::LookupPool);
    RegisterMethod(Method::kStat, "Stat", &Runtime::Stat);
    RegisterMethod(Method::kListPools, "ListPools", &Runtime::List);
    RegisterMethod(Method::kListModules, "ListModules", &Runtime::List);
  }

  /** Does nothing. */
  void Noop(NoopTask *task, RunContext &rctx) {}

  /** Returns the input. */
  void Echo(EchoTask *task, RunContext &rctx) { task->ret_ = task->value_; }

  /** Spawns subtasks, waits for them in this fiber, sums their results. */
  void FanOut(FanOutTask *task, RunContext &rctx) {
    if (task->count_ > 100000 || task->depth_ == 0 || task->depth_ > 8) {
      task->SetStatus(Status::InvalidArgument(
          "FanOut: count must be <= 100000 and depth in 1..8"));
      return;
    }
    u64 sum = 0;
    if (task->depth_ == 1) {
      std::vector<FullPtr<EchoTask>> subs;
      for (u32 i = 1; i <= task->count_; ++i) {
        subs.push_back(Submit(CHI_IPC->NewTaskDefault<EchoTask>(
            task->task_node_.Child(), DomainQuery(), i)));
      }
      task->Wait(subs);
      for (auto &s : subs) {
        if (s.IsNull() || s->rc_ != 0) {
          task->SetStatus(s.IsNull() ? Status::OutOfMemory("subtask")
                                     : s->GetStatus());
        } else {
          sum += s->ret_;
        }
        CHI_IPC->DelTask(s);
      }
    } else {
      std::vector<FullPtr<FanOutTask>> subs;
      for (u32 i = 0; i < task->count_; ++i) {
        subs.push_back(Submit(CHI_IPC->NewTaskDefault<FanOutTask>(
            task->task_node_.Child(), DomainQuery(), task->count_,
            task->depth_ - 1)));
      }
      task->Wait(subs);
      for (auto &s : subs) {
        if (s.IsNull() || s->rc_ != 0) {
          task->SetStatus(s.IsNull() ? Status::OutOfMemory("subtask")
                                     : s->GetStatus());
        } else {
          sum += s->sum_;
        }
        CHI_IPC->DelTask(s);
      }
    }
    task->sum_ = sum;
  }

  /** Asks the runtime's main thread to shut down. */
  void StopRuntime(StopRuntimeTask *task, RunContext &rctx) {
    CHIMAERA->RequestStop();
  }

  /** Get-or-create a pool by name. */
  void GetOrCreatePool(GetOrCreatePoolTask *task, RunContext &rctx) {
    std::string params;
    if (!task->params_.IsNull()) {
      const char *p =
          hipc::ToProcessAddressChecked(task->params_, task->params_size_);
      if (!p) {
        task->SetStatus(Status::InvalidArgument("bad pool parameters buffer"));
        return;
      }
      params.assign(p, task->params_size_);
    }
    std::string name(task->name_.str_,
                     strnlen(task->name_.str_, sizeof(task->name_.str_)));
    std::string module(task->module_.str_,
                       strnlen(task->module_.str_, sizeof(task->module_.str_)));
    if (name.size() >= sizeof(task->name_.str_) ||
        module.size() >= sizeof(task->module_.str_)) {
      task->SetStatus(Status::InvalidArgument("pool or module name too long"));
      return;
    }
    bool existed = false;
    auto id = CHI_POOL_MANAGER->GetOrCreatePool(
        name, module, task->num_containers_, params, &existed);
    if (!id.ok()) {
      task->SetStatus(id.status());
      return;
    }
    task->new_pool_id_ = *id;
    task->existed_ = existed ? 1 : 0;
  }

  /** Destroys a pool once its running tasks finish (at most 10 s). Queued
   * tasks of the pool fail with Aborted. */
  void DestroyPool(DestroyPoolTask *task, RunContext &rctx) {
    if (task->target_ == kAdminPoolId) {
      task->SetStatus(Status::InvalidArgument("the admin pool is permanent"));
      return;
    }
    auto pool = CHI_POOL_MANAGER->BeginDestroy(task->target_);
    if (!pool.ok()) {
      task->SetStatus(pool.status());
      return;
    }
    // Waits (yielding) for running tasks, including periodic ones, which
    // stop at their next period, and for workers to drop the pool's lanes.
    if (!PoolManager::FinishDestroy(**pool)) {
      task->SetStatus(Status::Timeout(
          "pool unpublished, but its tasks did not finish within 10 s; its "
          "containers were leaked"));
    }
  }

  /** Finds a pool id by name. */
  void LookupPool(LookupPoolTask *task, RunContext &rctx) {
    std::string name(task->name_.str_,
                     strnlen(task->name_.str_, sizeof(task->name_.str_)));
    auto id = CHI_POOL_MANAGER->Lookup(name);
    if (!id.ok()) {
      task->SetStatus(id.status());
      return;
    }
    task->pool_id_out_ = *id;
  }

  /** Lists pools or modules (by method) into an rdata buffer. */
  void List(TextTask *task, RunContext &rctx) {
    std::ostringstream os;
    if (task->method_ == Method::kListPools) {
      for (auto &p : CHI_POOL_MANAGER->List()) {
        os << p.id.ToString() << '\t' << p.name << '\t' << p.module << '\t'
           << p.num_containers << '\n';
      }
    } else {
      for (auto &m : CHI_MODULE_MANAGER->ListModules()) os << m << '\n';
    }
    ReplyText(os.str(), &task->text_, &task->text_size_, task);
  }

  /** Copies `text` into a runtime_data buffer the client frees. */
  static void ReplyText(const std::string &text, hipc::Pointer *out,
                        u64 *out_size, Task *task) {
    if (text.empty()) return;
    FullPtr<char> buf = CHI_IPC->AllocateBuffer(text.size());
    if (buf.IsNull()) {
      task->SetStatus(Status::OutOfMemory("runtime_data is full"));
      return;
    }
    std::memcpy(buf.ptr_, text.data(), text.size());
    *out = buf.shm_;
    *out_size = text.size();
  }

  /** Writes a report of the runtime into an rdata buffer. */
  void Stat(TextTask *task, RunContext &rctx) {
    std::ostringstream os;
    IpcManager *ipc = CHI_IPC;
    // In-use counters lag by what threads have not flushed; flush ours.
    ipc->main_alloc()->FlushThreadCache();
    ipc->cdata_alloc()->FlushThreadCache();
    ipc->rdata_alloc()->FlushThreadCache();
    os << "node " << ipc->node_id() << " at " << ipc->server_address()
       << " (pid " << ipc->shared()->runtime_pid_ << ")\n";
    os << "segments (bytes in use, approximate): main "
       << ipc->main_alloc()->GetBytesInUse() << " B in use of "
       << ipc->main_alloc()->GetRegionSize() << ", client_data "
       << ipc->cdata_alloc()->GetBytesInUse() << " of "
       << ipc->cdata_alloc()->GetRegionSize() << ", runtime_data "
       << ipc->rdata_alloc()->GetBytesInUse() << " of "
       << ipc->rdata_alloc()->GetRegionSize() << "\n";
    ProcessQueue *q = ipc->process_queue();
    os << "process queue: " << q->num_lanes() << " lanes x 2 priorities, depth "
       << q->depth() << "\n";
    for (u32 l = 0; l < q->num_lanes(); ++l) {
      for (u32 p = 0; p < kNumPrios; ++p) {
        Lane &lane = q->GetLane(l, p);
        os << "  lane " << l << (p == kLowLatency ? " low" : " high")
           << "-latency: worker " << lane.header().worker_id_.load()
           << ", queued " << lane.Size() << "\n";
      }
    }
    auto *wo = CHI_WORK_ORCHESTRATOR;
    os << "workers: " << wo->workers().size() << "\n";
    for (auto &w : wo->workers()) {
      WorkerShared &ws = ipc->workers()[w->id()];
      os << "  worker " << w->id()
         << (w->kind() == WorkerKind::kLowLatency ? " low" : " high")
         << "-latency: lanes " << ws.num_lanes_.load() << ", completed "
         << ws.tasks_done_.load() << ", rate "
         << static_cast<u64>(wo->WorkerRate(w->id())) << " tasks/s, sleeping "
         << ws.sleeping_.load() << "\n";
    }
    auto pools = CHI_POOL_MANAGER->List();
    os << "pools: " << pools.size() << "\n";
    for (auto &p : pools) {
      os << "  pool " << p.id.ToString() << " '" << p.name << "' module "
         << p.module << ": " << p.num_containers << " containers, completed "
         << p.completed << ", in flight " << p.inflight << "\n";
    }
    os << "modules:";
    for (auto &m : CHI_MODULE_MANAGER->ListModules()) os << " " << m;
    os << "\n";
    ReplyText(os.str(), &task->text_, &task->text_size_, task);
  }
};

}  // namespace admin

/** Factory of the built-in admin module. */
Container *NewAdminContainer() { return new admin::Runtime(); }

}  // namespace chi
