// Client API of the admin module. Header-only so that it compiles into
// clients (CHIMAERA_RUNTIME=0) and into runtime modules (=1) alike.
//
// Every AsyncX returns the submitted task (null if `main` is out of memory);
// Wait() on it, read its OUT fields, then CHI_IPC->DelTask() it. A task that
// could not be submitted comes back already completed with the error. Every
// X() waits and returns the result. Any thread may call.
#ifndef CHIMAERA_ADMIN_ADMIN_CLIENT_H_
#define CHIMAERA_ADMIN_ADMIN_CLIENT_H_

#include <sstream>
#include <string>
#include <vector>

#include "chimaera/admin/admin_tasks.h"
#include "chimaera/client_util.h"
#include "chimaera/task_graph.h"

namespace chi::admin {

/** One pool, as ListPools reports it. */
struct PoolDesc {
  PoolId id;
  std::string name;
  std::string module;
  u32 num_containers = 0;
};

/** Client of the admin pool of this node. */
class Client {
 public:
  /** Submits a no-op. */
  FullPtr<NoopTask> AsyncNoop(const DomainQuery &dom = DomainQuery()) {
    return Submit(NewAdminTask<NoopTask>(CHI_IPC->NewTaskNode(), dom));
  }
  /** Runs a no-op. */
  Status Noop(const DomainQuery &dom = DomainQuery()) {
    return WaitAndFree(AsyncNoop(dom), [](NoopTask *) {});
  }
  /** Submits an echo of `value`. */
  FullPtr<EchoTask> AsyncEcho(u64 value,
                              const DomainQuery &dom = DomainQuery()) {
    return Submit(NewAdminTask<EchoTask>(CHI_IPC->NewTaskNode(), dom, value));
  }
  /** Echoes `value` through the runtime. */
  StatusOr<u64> Echo(u64 value, const DomainQuery &dom = DomainQuery()) {
    u64 ret = 0;
    HSHM_RETURN_IF_ERROR(WaitAndFree(AsyncEcho(value, dom),
                                     [&](EchoTask *t) { ret = t->ret_; }));
    return ret;
  }
  /** Submits a fan-out of `count` subtasks, `depth` levels deep. */
  FullPtr<FanOutTask> AsyncFanOut(u32 count, u32 depth = 1,
                                  const DomainQuery &dom = DomainQuery()) {
    return Submit(
        NewAdminTask<FanOutTask>(CHI_IPC->NewTaskNode(), dom, count, depth));
  }
  /** Runs a fan-out; returns the sum of the subtasks' results. */
  StatusOr<u64> FanOut(u32 count, u32 depth = 1) {
    u64 sum = 0;
    HSHM_RETURN_IF_ERROR(WaitAndFree(AsyncFanOut(count, depth),
                                     [&](FanOutTask *t) { sum = t->sum_; }));
    return sum;
  }
  /** Asks the runtime to stop; returns once it accepted. The request goes
   * on a low-latency and on a high-latency lane, so that one worker inside
   * a long method cannot hold it up: the first to run stops the runtime,
   * and the other is abandoned. Timeout if neither ran within
   * `timeout_us` (0: the client's task timeout): every worker is busy. */
  Status StopRuntime(u64 timeout_us = 0) {
    FullPtr<StopRuntimeTask> req[2];
    for (u32 i = 0; i < 2; ++i) {
      req[i] =
          NewAdminTask<StopRuntimeTask>(CHI_IPC->NewTaskNode(), DomainQuery());
      if (req[i].IsNull()) break;
      req[i]->prio_ = i == 0 ? kLowLatency : kHighLatency;
      req[i] = Submit(req[i]);
    }
    if (req[0].IsNull()) return Status::OutOfMemory("main segment is full");
    if (req[1].IsNull()) return WaitAndFree(req[0], [](StopRuntimeTask *) {});
    // Whichever completes Ok first, until the deadline. The other may fail
    // meanwhile (its Send refused, or aborted: the runtime is stopping),
    // which says nothing of the first.
    if (timeout_us == 0) timeout_us = CHI_IPC->TaskTimeoutUs();
    const u64 deadline = hshm::NowNs() + timeout_us * 1000;
    bool complete[2] = {false, false};
    int ok = -1;
    // Each round's waits are short: a ScopedWaitInterrupt that fires
    // (Python's Ctrl-C) ends the loop too.
    while (ok < 0 && !(complete[0] && complete[1]) &&
           hshm::NowNs() < deadline && !internal::WaitInterrupted()) {
      bool slept = false;  // one 1 ms wait per round, on the first pending
      for (int i = 0; i < 2 && ok < 0; ++i) {
        if (complete[i]) continue;
        if (req[i]->WaitFor(slept ? 0 : 1000)) {
          complete[i] = true;
          if (req[i]->GetStatus().ok()) ok = i;
        }
        slept = true;
      }
    }
    Status s =
        Status::Timeout("the runtime did not take the stop request in time");
    if (ok >= 0) {
      s = Status::Ok();
    } else if (complete[0] || complete[1]) {
      s = req[complete[0] ? 0 : 1]->GetStatus();
    }
    for (int i = 0; i < 2; ++i) {
      if (complete[i]) {
        CHI_IPC->DelTask(req[i]);
      } else if (internal::AbandonTask(req[i].ptr_)) {
        // It completed as the deadline passed.
        if (!s.ok() && req[i]->GetStatus().ok()) s = Status::Ok();
        CHI_IPC->DelTask(req[i]);
      }
    }
    return s;
  }
  /** Returns the id of pool `name`, creating it if needed. */
  StatusOr<PoolId> GetOrCreatePool(const std::string &name,
                                   const std::string &module,
                                   u32 num_containers,
                                   const std::string &params = "",
                                   bool *existed = nullptr) {
    auto task = NewAdminTask<GetOrCreatePoolTask>(CHI_IPC->NewTaskNode(),
                                                  DomainQuery());
    if (task.IsNull()) return Status::OutOfMemory("main segment is full");
    FullPtr<char> buf;
    if (!task->name_.Set(name) || !task->module_.Set(module)) {
      CHI_IPC->DelTask(task);
      return Status::InvalidArgument(
          "pool and module names must be 1..63 "
          "bytes");
    }
    task->num_containers_ = num_containers;
    if (!params.empty()) {
      buf = CHI_IPC->AllocateClientBuffer(params.size());
      if (buf.IsNull()) {
        CHI_IPC->DelTask(task);
        return Status::OutOfMemory("client_data segment is full");
      }
      std::memcpy(buf.ptr_, params.data(), params.size());
      task->params_ = buf.shm_;
      task->params_size_ = params.size();
    }
    PoolId id;
    // The task owns the parameters: freed with it, also when it is
    // abandoned at the deadline (the runtime may still read them then).
    Status s = WaitAndFree(
        buf.IsNull() ? Submit(task) : SubmitOwningInputs(task, {buf.shm_}),
        [&](GetOrCreatePoolTask *t) {
          id = t->new_pool_id_;
          if (existed) *existed = t->existed_ != 0;
        });
    if (!s.ok()) return s;
    return id;
  }
  /** Destroys pool `id` on every node (waits for its running tasks). */
  Status DestroyPool(const PoolId &id) {
    return WaitAndFree(
        Submit(NewAdminTask<DestroyPoolTask>(
            CHI_IPC->NewTaskNode(), DomainQuery::GetGlobalBcast(), id)),
        [](DestroyPoolTask *) {});
  }
  /** What MigrateContainer moved. */
  struct MigrateResult {
    u32 from_node = 0;    ///< Where the container was (== to: no move).
    u64 state_bytes = 0;  ///< Size of its saved state.
  };
  /** Moves container `container` of pool `id` (its state, with the
   * module's SaveState/LoadState) to node `to_node`; every node routes its
   * tasks there afterwards. Errors: NotFound (pool, container or node),
   * Unimplemented (the module cannot migrate), Timeout (its running tasks
   * did not finish within 10 s: nothing moved), or the module's. */
  StatusOr<MigrateResult> MigrateContainer(const PoolId &id, u32 container,
                                           u32 to_node) {
    MigrateResult r;
    HSHM_RETURN_IF_ERROR(WaitAndFree(
        Submit(NewAdminTask<MigrateContainerTask>(
            CHI_IPC->NewTaskNode(), DomainQuery(), id, container, to_node)),
        [&r](MigrateContainerTask *t) {
          r.from_node = t->from_node_;
          r.state_bytes = t->state_bytes_;
        }));
    return r;
  }
  /** Pins container `container` of pool `id` to worker `worker` of the
   * node that holds it (see Container::PinToWorker): every task of the
   * container then runs on that worker, one at a time, and its lane never
   * moves. Errors: NotFound (pool or container), InvalidArgument (no such
   * worker; the admin pool), AlreadyExists (pinned to another worker). */
  Status PinContainer(const PoolId &id, u32 container, u32 worker) {
    return WaitAndFree(
        Submit(NewAdminTask<PinContainerTask>(
            CHI_IPC->NewTaskNode(), DomainQuery(), id, container, worker)),
        [](PinContainerTask *) {});
  }
  /** The id of pool `name`. */
  StatusOr<PoolId> LookupPool(const std::string &name) {
    auto task =
        NewAdminTask<LookupPoolTask>(CHI_IPC->NewTaskNode(), DomainQuery());
    if (task.IsNull()) return Status::OutOfMemory("main segment is full");
    if (!task->name_.Set(name)) {
      CHI_IPC->DelTask(task);
      return Status::InvalidArgument("pool names are 1..63 bytes");
    }
    PoolId id;
    HSHM_RETURN_IF_ERROR(WaitAndFree(
        Submit(task), [&](LookupPoolTask *t) { id = t->pool_id_out_; }));
    return id;
  }
  /** Every pool of this node. */
  StatusOr<std::vector<PoolDesc>> ListPools() {
    HSHM_ASSIGN_OR_RETURN(std::string text, Text<ListPoolsTask>());
    std::vector<PoolDesc> out;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      PoolDesc d;
      std::istringstream f(line);
      std::string id;
      char dot = 0;
      if (!std::getline(f, id, '\t') || !std::getline(f, d.name, '\t') ||
          !std::getline(f, d.module, '\t') || !(f >> d.num_containers)) {
        return Status::Internal("malformed pool list line: " + line);
      }
      std::istringstream ids(id);
      ids >> d.id.node_id_ >> dot >> d.id.unique_;
      out.push_back(d);
    }
    return out;
  }
  /** Names of the modules the runtime has loaded. */
  StatusOr<std::vector<std::string>> ListModules() {
    HSHM_ASSIGN_OR_RETURN(std::string text, Text<ListModulesTask>());
    std::vector<std::string> out;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) out.push_back(line);
    return out;
  }
  /** A text report of the runtime's state. */
  StatusOr<std::string> Stat() { return Text<StatTask>(); }
  /** Applies TraceOp `op` to this node's task tracing; returns whether
   * tracing is on afterwards (and, if `recorded` is set, how many records
   * were written since the last clear). */
  StatusOr<bool> TraceControl(u32 op, u64 *recorded = nullptr) {
    bool on = false;
    HSHM_RETURN_IF_ERROR(
        WaitAndFree(Submit(NewAdminTask<TraceControlTask>(
                        CHI_IPC->NewTaskNode(), DomainQuery(), op)),
                    [&](TraceControlTask *t) {
                      on = t->enabled_ != 0;
                      if (recorded) *recorded = t->recorded_;
                    }));
    return on;
  }
  /** This node's task trace as Chrome trace-event JSON (Perfetto opens
   * it); valid JSON also when nothing was recorded. */
  StatusOr<std::string> TraceDump() { return Text<TraceDumpTask>(); }
  /** The same report as one JSON object (see chimaera_stat --json). */
  StatusOr<std::string> StatJson() {
    return Text<StatTask>(TextTask::kFormatJson);
  }

 private:
  /** Runs text method T (with `format`) and returns its text. */
  template <typename T>
  StatusOr<std::string> Text(u32 format = TextTask::kFormatText) {
    FullPtr<T> task = NewAdminTask<T>(CHI_IPC->NewTaskNode(), DomainQuery());
    if (!task.IsNull()) task->format_ = format;
    std::string text;
    HSHM_RETURN_IF_ERROR(WaitAndFree(Submit(task), [&](T *t) {
      FullPtr<char> p(t->text_);
      if (!p.IsNull()) text.assign(p.ptr_, t->text_size_);
      (void)CHI_IPC->FreeBuffer(t->text_);
    }));
    return text;
  }
};

}  // namespace chi::admin

#endif  // CHIMAERA_ADMIN_ADMIN_CLIENT_H_
