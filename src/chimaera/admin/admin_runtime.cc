// The admin container: built into the runtime, one per node (pool 0.0).
#include <algorithm>
#include <cstdio>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <type_traits>
#include <unordered_set>

#include "chimaera/admin/admin_tasks.h"
#include "chimaera/chimaera.h"
#include "chimaera/module.h"
#include "chimaera/module_manager.h"
#include "chimaera/pool_manager.h"
#include "chimaera/process_reaper.h"
#include "chimaera/remote_manager.h"
#include "chimaera/trace.h"
#include "chimaera/work_orchestrator.h"
#include "chimaera/worker.h"
#include "hermes_shm/thread_model.h"
#include "hermes_shm/util/futex.h"

namespace chi {
namespace admin {

/** Runtime side of the admin module. */
class Runtime : public Module<Runtime, Admin> {
 public:
  /** Does nothing. */
  void Run(NoopTask *task, RunContext &rctx) {}

  /** Returns the input. */
  void Run(EchoTask *task, RunContext &rctx) { task->ret_ = task->value_; }

  /** One wave of a FanOut: submits make(i) for i in [first, last], waits
   * for all in this fiber, frees them and returns the sum of value(sub); the
   * first failure (or a subtask that could not be allocated) becomes the
   * parent's status. From the parent's fiber only. */
  template <typename MakeFn, typename ValueFn>
  static u64 RunWave(FanOutTask *parent, u32 first, u32 last, MakeFn &&make,
                     ValueFn &&value) {
    using SubT = std::remove_pointer_t<decltype(make(first).ptr_)>;
    std::vector<FullPtr<SubT>> subs;
    for (u32 i = first; i <= last; ++i) subs.push_back(Submit(make(i)));
    parent->Wait(subs);
    u64 sum = 0;
    for (auto &s : subs) {
      if (s.IsNull() || s->rc_ != 0) {
        parent->SetStatus(s.IsNull() ? Status::OutOfMemory("subtask")
                                     : s->GetStatus());
      } else {
        sum += value(s.ptr_);
      }
      CHI_IPC->DelTask(s);
    }
    return sum;
  }

  /** Spawns subtasks, waits for them in this fiber, sums their results. */
  void Run(FanOutTask *task, RunContext &rctx) {
    // Bounded per request: count^depth tasks in all at most kMaxFanOut,
    // and at most kMaxInFlight at a time. Subtasks go out in waves of
    // kWave, so one request holds w + w^2 + ... + w^depth task blocks of
    // `main` (and lane slots) at a time, w = min(count, kWave), of which
    // all but the last level are waiting FanOuts, each holding a fiber:
    // 272 for 16^2, well inside one lane.
    constexpr u64 kMaxFanOut = 100000;
    constexpr u64 kMaxInFlight = 4096;
    constexpr u32 kWave = 16;
    const u32 depth = task->depth_;
    const u64 count = std::max<u32>(task->count_, 1);
    const u64 wave = std::min<u64>(count, kWave);
    u64 total = 1, level = 1, in_flight = 0;
    bool ok = depth >= 1 && depth <= 8;
    for (u32 d = 0; ok && d < depth; ++d) {
      total *= count;
      level *= wave;
      in_flight += level;
      ok = total <= kMaxFanOut && in_flight <= kMaxInFlight;
    }
    if (!ok) {
      task->SetStatus(Status::InvalidArgument(
          "FanOut: depth must be 1..8, count^depth <= " +
          std::to_string(kMaxFanOut) + " and min(count, " +
          std::to_string(kWave) + ")^1 + ... + min(count, " +
          std::to_string(kWave) +
          ")^depth (the tasks in flight) <= " + std::to_string(kMaxInFlight)));
      return;
    }
    u64 sum = 0;
    for (u32 first = 1; first <= task->count_ && task->rc_ == 0;
         first += kWave) {
      u32 last = std::min<u64>(task->count_, u64{first} + kWave - 1);
      if (task->depth_ == 1) {
        sum += RunWave(
            task, first, last,
            [&](u32 i) {
              return NewAdminTask<EchoTask>(task->task_node_.Child(),
                                            DomainQuery(), u64{i});
            },
            [](EchoTask *s) { return s->ret_; });
      } else {
        sum += RunWave(
            task, first, last,
            [&](u32) {
              return NewAdminTask<FanOutTask>(task->task_node_.Child(),
                                              DomainQuery(), task->count_,
                                              task->depth_ - 1);
            },
            [](FanOutTask *s) { return s->sum_; });
      }
    }
    task->sum_ = sum;
  }

  /** Asks the runtime's main thread to shut down. */
  void Run(StopRuntimeTask *task, RunContext &rctx) { CHIMAERA->RequestStop(); }

  /** Largest parameter string a pool may have: each node keeps it for the
   * pool's life, and sends it to nodes that join. */
  static constexpr u64 kMaxPoolParams = 1 << 20;

  /** Reads the name, module and parameters of a pool request; false (and
   * the task's status set) if they are malformed. */
  static bool ReadPoolRequest(GetOrCreatePoolTask *task, PoolSpec *spec) {
    if (task->params_size_ > kMaxPoolParams) {
      task->SetStatus(Status::InvalidArgument(
          "pool parameters are " + std::to_string(task->params_size_) +
          " bytes; at most " + std::to_string(kMaxPoolParams)));
      return false;
    }
    if (!task->params_.IsNull() && task->params_size_) {
      // Admission checked that the buffer lies inside a data segment.
      const char *p = CHI_IPC->DataBuffer(task->params_, task->params_size_);
      if (!p) {
        task->SetStatus(Status::InvalidArgument("bad pool parameters buffer"));
        return false;
      }
      spec->params.assign(p, task->params_size_);
    }
    spec->name.assign(task->name_.str_,
                      strnlen(task->name_.str_, sizeof(task->name_.str_)));
    spec->module.assign(
        task->module_.str_,
        strnlen(task->module_.str_, sizeof(task->module_.str_)));
    if (spec->name.size() >= sizeof(task->name_.str_) ||
        spec->module.size() >= sizeof(task->module_.str_)) {
      task->SetStatus(Status::InvalidArgument("pool or module name too long"));
      return false;
    }
    if (Status st = PoolManager::CheckPoolName(spec->name); !st.ok()) {
      task->SetStatus(st);
      return false;
    }
    spec->num_containers = task->num_containers_;
    spec->nodes = CHI_REMOTE->AllNodes();
    return true;
  }

  /** Submits subtask `sub` of `parent` from this fiber and waits for it,
   * vouching for it if its method is runtime-only (RuntimeOnlyVouch); the
   * vouch ends before the caller's DelTask, as the block may be another
   * task's next. */
  template <typename SubT>
  static void SubmitAndWait(Task *parent, FullPtr<SubT> &sub) {
    std::optional<RuntimeOnlyVouch> vouch;
    if constexpr (internal::RuntimeOnly<SubT>::value) vouch.emplace(sub.shm_);
    Submit(sub);
    parent->Wait(sub.ptr_);
  }

  /** Sends a copy of pool request `task` as a SubT (GetOrCreatePoolTask or
   * CreatePoolHereTask) to `dom` from this fiber, waits for it and returns
   * its status (results copied back). */
  template <typename SubT>
  static Status PoolSubtask(GetOrCreatePoolTask *task, const DomainQuery &dom,
                            const PoolId &fixed_id) {
    auto sub = NewAdminTask<SubT>(task->task_node_.Child(), dom);
    if (sub.IsNull()) return Status::OutOfMemory("main segment is full");
    sub->name_ = task->name_;
    sub->module_ = task->module_;
    sub->num_containers_ = task->num_containers_;
    sub->params_ = task->params_;  // alive while this task waits
    sub->params_size_ = task->params_size_;
    sub->fixed_id_ = fixed_id;
    SubmitAndWait(task, sub);
    Status st = sub->GetStatus();
    task->new_pool_id_ = sub->new_pool_id_;
    task->existed_ = sub->existed_;
    CHI_IPC->DelTask(sub);
    return st;
  }

  /** Get-or-create a pool by name, for the whole cluster: an existing pool
   * is returned; otherwise the coordinator numbers it and every node builds
   * its share, or (a node is down, a Create() failed) no node keeps it. */
  void Run(GetOrCreatePoolTask *task, RunContext &rctx) {
    PoolSpec spec;
    if (!ReadPoolRequest(task, &spec)) return;
    auto found = CHI_POOL_MANAGER->Lookup(spec.name);
    if (found.ok()) {
      auto have = CHI_POOL_MANAGER->GetSpec(*found);
      if (have.ok() && have->module != spec.module) {
        task->SetStatus(Status::InvalidArgument(
            "pool '" + spec.name + "' exists with module '" + have->module +
            "', not '" + spec.module + "'"));
        return;
      }
      task->new_pool_id_ = *found;
      task->existed_ = 1;
      return;
    }
    NodeId self = CHI_IPC->node_id();
    if (spec.nodes.size() <= 1) {
      return CreateHere(task, spec, nullptr);
    }
    Status st;
    if (self != kCoordinatorNode) {
      st = PoolSubtask<GetOrCreatePoolTask>(
          task, DomainQuery::GetGlobalId(kCoordinatorNode - 1), PoolId());
      if (!st.ok()) {
        task->SetStatus(
            Status(st.code(), "pool creation needs node " +
                                  std::to_string(kCoordinatorNode) +
                                  " (the coordinator): " + st.message()));
      }
      return;
    }
    // The coordinator: one creation per name at a time.
    auto reserve = [this, &spec] {
      std::lock_guard<std::mutex> lock(creating_mu_);
      return creating_.insert(spec.name).second;
    };
    auto release = [this, &spec] {
      std::lock_guard<std::mutex> lock(creating_mu_);
      creating_.erase(spec.name);
    };
    // Another request creates this name: wait (parked, not spinning) for
    // it to end. Its broadcast and undo are bounded by the request timeout
    // each; past both, give up rather than wait on a Create() that hangs.
    const u64 reserve_deadline =
        hshm::NowNs() +
        (2ull * CHI_CONFIG_MANAGER->config().request_timeout_ms_ + 10000) *
            1000000;
    while (!reserve()) {
      if (hshm::NowNs() > reserve_deadline) {
        task->SetStatus(Status::Timeout("pool '" + spec.name +
                                        "' is still being created by an "
                                        "earlier request"));
        return;
      }
      SleepUs(200);
    }
    found = CHI_POOL_MANAGER->Lookup(spec.name);
    if (found.ok()) {
      release();
      task->new_pool_id_ = *found;
      task->existed_ = 1;
      return;
    }
    PoolId id = CHI_POOL_MANAGER->NewPoolId();
    st = PoolSubtask<CreatePoolHereTask>(task, DomainQuery::GetGlobalBcast(),
                                         id);
    if (!st.ok()) {
      // No node keeps a pool that some node could not build (by name: a
      // node that failed with AlreadyExists keeps the pool it had).
      (void)PoolSubtask<UndoCreatePoolTask>(task, DomainQuery::GetGlobalBcast(),
                                            id);
      task->SetStatus(Status(
          st.code(),
          "creating pool '" + spec.name + "' on every node: " + st.message()));
    } else {
      task->new_pool_id_ = id;
      task->existed_ = 0;
    }
    release();
  }

  /** Builds this node's share of pool `fixed_id` (from the coordinator). */
  void Run(CreatePoolHereTask *task, RunContext &rctx) {
    PoolSpec spec;
    if (!ReadPoolRequest(task, &spec)) return;
    CreateHere(task, spec, &task->fixed_id_);
  }

  /** Creates this node's containers of `spec` (id `fixed` if not null). */
  static void CreateHere(GetOrCreatePoolTask *task, const PoolSpec &spec,
                         const PoolId *fixed) {
    bool existed = false;
    auto id = CHI_POOL_MANAGER->GetOrCreatePool(spec, &existed, fixed);
    if (!id.ok()) {
      task->SetStatus(id.status());
      return;
    }
    if (fixed && existed && *id != *fixed) {
      task->SetStatus(Status::AlreadyExists(
          "node " + std::to_string(CHI_IPC->node_id()) + " has pool '" +
          spec.name + "' as " + id->ToString() + ", not " + fixed->ToString()));
      return;
    }
    task->new_pool_id_ = *id;
    task->existed_ = existed ? 1 : 0;
  }

  /** A (re)started node builds its share of every pool the coordinator
   * knows. Runs once at start-up, fire-and-forget. */
  void Run(JoinClusterTask *task, RunContext &rctx) {
    NodeId self = CHI_IPC->node_id();
    u32 n = CHI_REMOTE->num_nodes();
    if (n <= 1) return;
    // Ask the coordinator first, then the others (the coordinator itself
    // asks the others: it may be the one that restarted).
    std::vector<NodeId> order;
    if (self != kCoordinatorNode) order.push_back(kCoordinatorNode);
    for (NodeId i = 1; i <= n; ++i) {
      if (i != self && i != kCoordinatorNode) order.push_back(i);
    }
    // Each page's pools are built as it arrives: a pool destroyed
    // meanwhile is rebuilt here only if its page came before the destroy.
    u32 made = 0;
    auto build = [self, &made](const std::string &text) {
      std::istringstream in(text);
      std::string line;
      while (std::getline(in, line)) {
        PoolId id;
        PoolSpec spec;
        if (!ParseSpecLine(line, &id, &spec)) {
          fprintf(stderr, "chimaera: bad pool spec from another node\n");
          continue;
        }
        if (id == kAdminPoolId) continue;
        bool existed = false;
        auto r = CHI_POOL_MANAGER->GetOrCreatePool(spec, &existed, &id);
        if (!r.ok()) {
          fprintf(stderr, "chimaera: node %u could not rebuild pool '%s': %s\n",
                  self, spec.name.c_str(), r.status().ToString().c_str());
        } else if (!existed) {
          ++made;
        }
      }
    };
    Status st = Status::Unavailable("no other node");
    for (NodeId from : order) {
      st = FetchPoolSpecs(task, from, build);
      if (st.ok()) break;
    }
    if (!st.ok()) {
      fprintf(stderr,
              "chimaera: node %u found no other node to learn the cluster's "
              "pools from: %s (%u pools built)\n",
              self, st.ToString().c_str(), made);
      return;
    }
    fprintf(stderr, "chimaera: node %u joined the cluster (%u pools)\n", self,
            made);
  }

  /** Passes every pool spec node `from` knows to `on_page` (SpecLine text),
   * a page (PoolSpecsTask) at a time, waiting in `parent`'s fiber. */
  template <typename OnPage>
  Status FetchPoolSpecs(Task *parent, NodeId from, OnPage &&on_page) {
    u64 key = 0;
    // A page that says more holds one pool at least, and keys only grow:
    // the pages end.
    for (;;) {
      auto sub = NewAdminTask<PoolSpecsTask>(
          parent->task_node_.Child(), DomainQuery::GetGlobalId(from - 1));
      if (sub.IsNull()) return Status::OutOfMemory("main segment is full");
      sub->from_ = key;
      Submit(sub);
      parent->Wait(sub.ptr_);
      // The subtask lies in `main`, which clients can write: one read of
      // each field, and the text only where it lies inside a data segment.
      const hipc::Pointer text_ptr = sub->text_;
      const u64 text_size = sub->text_size_;
      const u64 next = sub->next_;
      const u32 more = sub->more_;
      Status st = sub->GetStatus();
      const char *src = CHI_IPC->DataBuffer(text_ptr, text_size);
      std::string text;
      if (st.ok() && !text_ptr.IsNull()) {
        if (src) {
          text.assign(src, text_size);
        } else {
          st = Status::Internal("the pool list lies outside its segment");
        }
      }
      // Freed only where a reply is put: a data block this process owns
      // (the reply of another node lands in client_data, a local handler's
      // in runtime_data; a client could have named any block here). The
      // owner is checked in the freeing step itself.
      (void)CHI_IPC->FreeBufferOwnedBy(text_ptr, getpid());
      CHI_IPC->DelTask(sub);
      if (!st.ok()) return st;
      on_page(text);
      if (!more) return st;
      if (next <= key) {
        return Status::Internal("node " + std::to_string(from) +
                                " sent pool spec pages out of order");
      }
      key = next;
    }
  }

  /** One line of kPoolSpecs: id, name, module, containers, hex params,
   * comma-separated nodes and the comma-separated node of each container
   * ("-" unless a container migrated), tab-separated. */
  static std::string SpecLine(const PoolId &id, const PoolSpec &s) {
    static const char kHex[] = "0123456789abcdef";
    std::string hex;
    for (unsigned char c : s.params) {
      hex += kHex[c >> 4];
      hex += kHex[c & 15];
    }
    std::string nodes;
    for (NodeId n : s.nodes) {
      nodes += (nodes.empty() ? "" : ",") + std::to_string(n);
    }
    std::string place;
    for (NodeId n : s.placement) {
      place += (place.empty() ? "" : ",") + std::to_string(n);
    }
    return id.ToString() + '\t' + s.name + '\t' + s.module + '\t' +
           std::to_string(s.num_containers) + '\t' + (hex.empty() ? "-" : hex) +
           '\t' + nodes + '\t' + (place.empty() ? "-" : place) + '\n';
  }

  /** Parses a SpecLine; false if malformed (it comes from another node:
   * no field is trusted). */
  static bool ParseSpecLine(const std::string &line, PoolId *id, PoolSpec *s) {
    try {
      return ParseSpecFields(line, id, s);
    } catch (const std::exception &) {  // stoi/stoul on a bad number
      return false;
    }
  }

  /** ParseSpecLine's body (may throw on a malformed number). */
  static bool ParseSpecFields(const std::string &line, PoolId *id,
                              PoolSpec *s) {
    std::istringstream f(line);
    std::string ids, hex, nodes;
    if (!std::getline(f, ids, '\t') || !std::getline(f, s->name, '\t') ||
        !std::getline(f, s->module, '\t') || !(f >> s->num_containers) ||
        !(f >> hex) || !(f >> nodes)) {
      return false;
    }
    if (std::sscanf(ids.c_str(), "%u.%u", &id->node_id_, &id->unique_) != 2) {
      return false;
    }
    if (hex != "-") {
      if (hex.size() % 2) return false;
      for (size_t i = 0; i < hex.size(); i += 2) {
        s->params +=
            static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
      }
    }
    std::istringstream ns(nodes);
    std::string n;
    while (std::getline(ns, n, ',')) {
      s->nodes.push_back(static_cast<NodeId>(std::stoul(n)));
    }
    std::string place;
    if (f >> place && place != "-") {  // absent in older lines
      std::istringstream ps(place);
      while (std::getline(ps, n, ',')) {
        s->placement.push_back(static_cast<NodeId>(std::stoul(n)));
      }
    }
    return !s->nodes.empty();
  }

  /** Destroys a pool once its running tasks finish (at most 10 s). Queued
   * tasks of the pool fail with Aborted. */
  void Run(DestroyPoolTask *task, RunContext &rctx) {
    task->SetStatus(DestroyPool(task->target_, nullptr));
  }

  /** Undoes this node's share of a failed creation (see the task). */
  void Run(UndoCreatePoolTask *task, RunContext &rctx) {
    std::string name(task->name_.str_,
                     strnlen(task->name_.str_, sizeof(task->name_.str_)));
    task->SetStatus(DestroyPool(task->fixed_id_, &name));
  }

  /** How long a move waits for its container's running tasks. */
  static constexpr u64 kMoveDrainNs = 10ull * 1000000000;

  /** Destroys pool `id` on this node (if it is called *expect_name, when
   * given), waiting for moves of its containers to end and for its tasks. */
  static Status DestroyPool(const PoolId &id, const std::string *expect_name) {
    if (id == kAdminPoolId) {
      return Status::InvalidArgument("the admin pool is permanent");
    }
    // A container of the pool moving away is waited for: a move ends within
    // its drain timeout and the request timeouts of its two subtasks.
    const u64 deadline =
        hshm::NowNs() + kMoveDrainNs +
        2 * u64{CHI_CONFIG_MANAGER->config().request_timeout_ms_} * 1000000;
    auto pool = CHI_POOL_MANAGER->BeginDestroy(id, expect_name);
    while (!pool.ok() && pool.status().code() == StatusCode::kUnavailable &&
           hshm::NowNs() < deadline) {
      SleepUs(1000);
      pool = CHI_POOL_MANAGER->BeginDestroy(id, expect_name);
    }
    if (!pool.ok()) return pool.status();
    // Waits (yielding) for running tasks, including periodic ones, which
    // stop at their next period, and for workers to drop the pool's lanes.
    if (!PoolManager::FinishDestroy(**pool)) {
      return Status::Timeout(
          "pool unpublished, but its tasks did not finish within 10 s; its "
          "containers were leaked");
    }
    return Status::Ok();
  }

  /** Sends a MigrateContainer-family subtask SubT for `task`'s pool and
   * container to `dom` (with `state` for MigrateInTask), waits for it, and
   * returns its status; copies a MigrateContainerTask's results back. */
  template <typename SubT>
  static Status MigrateSubtask(MigrateContainerTask *task,
                               const DomainQuery &dom,
                               const std::string *state) {
    auto sub = NewAdminTask<SubT>(task->task_node_.Child(), dom);
    if (sub.IsNull()) return Status::OutOfMemory("main segment is full");
    sub->target_ = task->target_;
    sub->container_ = task->container_;
    sub->to_node_ = task->to_node_;
    sub->pin_worker_ = task->pin_worker_;
    FullPtr<char> buf;
    if (state && !state->empty()) {
      buf = CHI_IPC->AllocateBuffer(state->size());
      if (buf.IsNull()) {
        CHI_IPC->DelTask(sub);
        return Status::OutOfMemory("no room for " +
                                   std::to_string(state->size()) +
                                   " bytes of container state");
      }
      std::memcpy(buf.ptr_, state->data(), state->size());
      sub->state_ = buf.shm_;
      sub->state_size_ = state->size();
    }
    SubmitAndWait(task, sub);
    Status st = sub->GetStatus();
    if constexpr (std::is_same_v<SubT, MigrateContainerTask>) {
      task->from_node_ = sub->from_node_;
      task->state_bytes_ = sub->state_bytes_;
    }
    CHI_IPC->DelTask(sub);
    if (!buf.IsNull()) (void)CHI_IPC->FreeBuffer(buf.shm_);
    return st;
  }

  /** Moves a container to another node (see MigrateContainerTask). Runs on
   * the container's node; any other node hands the task there. */
  void Run(MigrateContainerTask *task, RunContext &rctx) {
    const PoolId id = task->target_;
    const u32 c = task->container_;
    const NodeId to = task->to_node_;
    if (id == kAdminPoolId) {
      return task->SetStatus(
          Status::InvalidArgument("the admin pool's containers stay put"));
    }
    auto spec = CHI_POOL_MANAGER->GetSpec(id);
    if (!spec.ok()) return task->SetStatus(spec.status());
    if (std::find(spec->nodes.begin(), spec->nodes.end(), to) ==
        spec->nodes.end()) {
      return task->SetStatus(Status::NotFound("node " + std::to_string(to) +
                                              " holds no share of pool '" +
                                              spec->name + "'"));
    }
    auto from = CHI_POOL_MANAGER->PlaceOf(id, c);
    if (!from.ok()) return task->SetStatus(from.status());
    task->from_node_ = *from;
    if (*from == to) return;  // already there
    if (*from != CHI_IPC->node_id()) {
      // Handed on once: a node that got it from another node and does not
      // hold the container either answers, so that nodes that disagree on
      // where it is cannot pass the request back and forth for ever.
      if (rctx.origin_ == TaskOrigin::kRemote) {
        return task->SetStatus(Status::NotFound(
            "container " + std::to_string(c) + " of pool '" + spec->name +
            "' is not on node " + std::to_string(CHI_IPC->node_id()) +
            " (it says node " + std::to_string(*from) + ")"));
      }
      Status st = MigrateSubtask<MigrateContainerTask>(
          task, DomainQuery::GetGlobalId(*from - 1), nullptr);
      if (!st.ok()) task->SetStatus(st);
      return;
    }
    Status st = MoveFromHere(task, id, c, to, spec->name);
    if (!st.ok()) task->SetStatus(st);
  }

  /** The move itself, on the node holding container `c` of pool `id`
   * (named `name`): stop starting its tasks, let the running ones end,
   * save it, install it on `to`, then tell every node. A failure before
   * the install calls the move off. Sets task->state_bytes_. */
  static Status MoveFromHere(MigrateContainerTask *task, const PoolId &id,
                             u32 c, NodeId to, const std::string &name) {
    const NodeId self = CHI_IPC->node_id();
    auto ct = CHI_POOL_MANAGER->BeginMove(id, c);
    if (!ct.ok()) return ct.status();
    if (!PoolManager::WaitMoveDrained(*ct, kMoveDrainNs / 1000000)) {
      PoolManager::AbortMove(*ct);
      return Status::Timeout("container " + std::to_string(c) + " of pool '" +
                             name +
                             "' still ran tasks after 10 s; it stays "
                             "on node " +
                             std::to_string(self));
    }
    std::string state;
    Status st = (*ct)->GuardedSaveState(&state);
    // The subtasks name this container (the task may be an Offload).
    const u32 c0 = task->container_, to0 = task->to_node_;
    const u32 pin0 = task->pin_worker_;
    const PoolId id0 = task->target_;
    task->container_ = c;
    task->to_node_ = to;
    task->target_ = id;
    // A pinned container stays pinned where it goes (its state may rely on
    // running one task at a time).
    TaskLane *pinned = (*ct)->PinnedLane();
    task->pin_worker_ =
        pinned ? pinned->worker_id_.load(std::memory_order_acquire) : ~0u;
    bool installed = false;
    if (st.ok()) {
      st = MigrateSubtask<MigrateInTask>(task, DomainQuery::GetGlobalId(to - 1),
                                         &state);
      installed = st.ok();
    }
    if (installed) {
      task->state_bytes_ = state.size();
      st = MigrateSubtask<SetPlacementTask>(task, DomainQuery::GetGlobalBcast(),
                                            nullptr);
      if (!st.ok()) {
        // At least this node follows (its part may not have run, e.g. no
        // room for the broadcast): the container must not stay kMoving,
        // holding its tasks and every destroy of the pool. Idempotent.
        (void)CHI_POOL_MANAGER->SetPlacement(id, c, to);
        st = Status(st.code(),
                    "container moved to node " + std::to_string(to) +
                        ", but not every node was told: " + st.message());
      }
    }
    task->container_ = c0;
    task->to_node_ = to0;
    task->target_ = id0;
    task->pin_worker_ = pin0;
    if (installed) return st;
    PoolManager::AbortMove(*ct);
    return Status(st.code(), "moving container " + std::to_string(c) +
                                 " of pool '" + name + "' to node " +
                                 std::to_string(to) + ": " + st.message());
  }

  /** The automatic policy's request to an overloaded node: move its
   * busiest container that can move (a pool on several nodes whose module
   * saves state) and whose move evens the load out to node to_node_: busy,
   * and with at most 3/4 of this node's load now less to_load_ in flight.
   * Reports it in moved_pool_ / moved_container_; NotFound if none could
   * move. */
  void Run(OffloadTask *task, RunContext &rctx) {
    const NodeId to = task->to_node_;
    // This node's load now, in the containers that may move (the
    // coordinator's view may be old: a draining node's containers looked
    // small beside it; and the admin pool's own tasks, this one included,
    // made a nearly drained hot container look like part of a bigger load).
    const auto cands = CHI_POOL_MANAGER->LocalContainersByLoad();
    u64 here = 0;
    for (const auto &cand : cands) {
      if (cand.pool != kAdminPoolId) here += cand.inflight;
    }
    const u64 gap = here > task->to_load_ ? here - task->to_load_ : 0;
    Status last = Status::NotFound(
        "node " + std::to_string(CHI_IPC->node_id()) +
        " has no container that can move and whose move would even out the "
        "load (" +
        std::to_string(here) + " tasks in flight, node " + std::to_string(to) +
        " " + std::to_string(task->to_load_) + ")");
    for (const auto &cand : cands) {
      if (cand.pool == kAdminPoolId) continue;
      // Moving one that carries most of the gap would make `to` the busier
      // node, and the next round would move it back (a container bounced
      // between two nodes for as long as it stayed busy).
      if (cand.inflight == 0 || 4 * u64{cand.inflight} > 3 * gap) {
        continue;
      }
      auto spec = CHI_POOL_MANAGER->GetSpec(cand.pool);
      if (!spec.ok() || spec->nodes.size() < 2 ||
          std::find(spec->nodes.begin(), spec->nodes.end(), to) ==
              spec->nodes.end()) {
        continue;
      }
      Status st = MoveFromHere(task, cand.pool, cand.container, to, spec->name);
      if (st.ok()) {
        task->moved_pool_ = cand.pool;
        task->moved_container_ = cand.container;
        task->from_node_ = CHI_IPC->node_id();
        return;
      }
      last = st;
      if (st.code() != StatusCode::kUnimplemented) break;
    }
    task->SetStatus(last);
  }

  /** Installs a migrating container here from the state in state_. */
  void Run(MigrateInTask *task, RunContext &rctx) {
    if (task->target_ == kAdminPoolId) {
      return task->SetStatus(
          Status::InvalidArgument("the admin pool's containers stay put"));
    }
    // Only from the node the container leaves (MoveFromHere): anyone else
    // would start a second live copy of it here.
    auto from = CHI_POOL_MANAGER->PlaceOf(task->target_, task->container_);
    if (!from.ok()) return task->SetStatus(from.status());
    if (rctx.origin_ != TaskOrigin::kRemote || rctx.from_node_ != *from) {
      return task->SetStatus(Status::InvalidArgument(
          "MigrateIn: container " + std::to_string(task->container_) +
          " is on node " + std::to_string(*from) +
          "; only that node may move it here"));
    }
    std::string state;
    if (task->state_size_ != 0) {
      const char *p = CHI_IPC->DataBuffer(task->state_, task->state_size_);
      if (!p) {
        return task->SetStatus(Status::InvalidArgument(
            "container state is not inside a data segment"));
      }
      state.assign(p, task->state_size_);
    }
    Status st = CHI_POOL_MANAGER->InstallContainer(
        task->target_, task->container_, state, task->pin_worker_);
    if (!st.ok()) task->SetStatus(st);
  }

  /** Records where a migrated container lives now (every node). */
  void Run(SetPlacementTask *task, RunContext &rctx) {
    if (task->target_ == kAdminPoolId) {
      return task->SetStatus(
          Status::InvalidArgument("the admin pool's containers stay put"));
    }
    Status st = CHI_POOL_MANAGER->SetPlacement(task->target_, task->container_,
                                               task->to_node_);
    if (!st.ok()) task->SetStatus(st);
  }

  /** Pins a container to a worker of its node; another node hands the
   * request to that node (once). */
  void Run(PinContainerTask *task, RunContext &rctx) {
    if (task->target_ == kAdminPoolId) {
      return task->SetStatus(
          Status::InvalidArgument("the admin pool's containers stay unpinned"));
    }
    auto d = CHI_POOL_MANAGER->Acquire(
        task->target_, DomainQuery::GetGlobalId(task->container_));
    if (!d.ok()) return task->SetStatus(d.status());
    if (d->local) {
      Status st = d->local->PinToWorker(task->worker_);
      PoolManager::Release(d->local);
      if (!st.ok()) task->SetStatus(st);
      return;
    }
    if (rctx.origin_ == TaskOrigin::kRemote) {
      return task->SetStatus(Status::NotFound(
          "container " + std::to_string(task->container_) + " is not on node " +
          std::to_string(CHI_IPC->node_id())));
    }
    auto sub = NewAdminTask<PinContainerTask>(
        task->task_node_.Child(), DomainQuery::GetGlobalId(d->node - 1),
        task->target_, task->container_, task->worker_);
    if (sub.IsNull()) {
      return task->SetStatus(Status::OutOfMemory("main segment is full"));
    }
    Submit(sub);
    task->Wait(sub.ptr_);
    if (sub->rc_ != 0) task->SetStatus(sub->GetStatus());
    CHI_IPC->DelTask(sub);
  }

  /** Finds a pool id by name. */
  void Run(LookupPoolTask *task, RunContext &rctx) {
    std::string name(task->name_.str_,
                     strnlen(task->name_.str_, sizeof(task->name_.str_)));
    auto id = CHI_POOL_MANAGER->Lookup(name);
    if (!id.ok()) {
      task->SetStatus(id.status());
      return;
    }
    task->pool_id_out_ = *id;
  }

  /** One page of every pool's full spec (SpecLine each, in id order, from
   * id from_), into an rdata buffer: pages keep each reply (and the buffers
   * on both nodes) small however many pools the cluster holds. */
  void Run(PoolSpecsTask *task, RunContext &rctx) {
    bool more = false;
    u64 next = 0;
    std::string text;
    for (auto &[id, spec] : CHI_POOL_MANAGER->ListSpecs(
             task->from_, PoolSpecsTask::kPageParamBytes, &more, &next)) {
      text += SpecLine(id, spec);
    }
    task->more_ = more ? 1 : 0;
    task->next_ = next;
    ReplyText(text, task);
  }

  /** Lists this node's pools into an rdata buffer. */
  void Run(ListPoolsTask *task, RunContext &rctx) {
    std::ostringstream os;
    for (auto &p : CHI_POOL_MANAGER->List()) {
      os << p.id.ToString() << '\t' << p.name << '\t' << p.module << '\t'
         << p.num_containers << '\n';
    }
    ReplyText(os.str(), task);
  }

  /** Lists the loaded modules into an rdata buffer. */
  void Run(ListModulesTask *task, RunContext &rctx) {
    std::ostringstream os;
    for (auto &m : CHI_MODULE_MANAGER->ListModules()) os << m << '\n';
    ReplyText(os.str(), task);
  }

  /** Starts, stops, clears or queries task tracing on this node; start and
   * stop wait (yielding) until every worker follows. */
  void Run(TraceControlTask *task, RunContext &rctx) {
    u32 op = task->op_;
    if (op > kTraceClear) {
      task->SetStatus(Status::InvalidArgument(
          "TraceControl: unknown operation " + std::to_string(op) +
          " (0 query, 1 start, 2 stop, 3 clear)"));
      return;
    }
    if (op == kTraceStart || op == kTraceStop) {
      Status st = CHI_TRACE->SetEnabled(op == kTraceStart);
      if (!st.ok()) {
        task->SetStatus(st);
        return;
      }
      for (auto &w : CHI_WORK_ORCHESTRATOR->workers()) w->RefreshTrace();
      // Each worker re-reads the switch at its next loop iteration.
      if (!CHI_WORK_ORCHESTRATOR->WaitQuiescent(5000)) {
        task->SetStatus(Status::Timeout(
            "TraceControl: not every worker followed within 5 s"));
      }
    } else if (op == kTraceClear) {
      CHI_TRACE->Clear();
    }
    task->enabled_ = CHI_TRACE->enabled() ? 1 : 0;
    task->recorded_ = CHI_TRACE->Written();
  }

  /** Writes this node's trace (Chrome trace-event JSON) into an rdata
   * buffer. */
  void Run(TraceDumpTask *task, RunContext &rctx) {
    // Sorting and formatting a large trace is too deep for a 64 KB fiber
    // stack (ASan frames overflowed it): build it on a thread of its own.
    std::string json;
    RunOnThread([&json] { json = CHI_TRACE->DumpJson(); });
    ReplyText(json, task);
  }

  /** Runs `fn` on a thread of its own (a full-size stack) while the calling
   * fiber yields until it returns: for rare work too deep for a task's
   * stack. Any task fiber (or a plain thread, which sleeps instead). */
  template <typename Fn>
  static void RunOnThread(Fn &&fn) {
    std::atomic<bool> done{false};
    std::thread t([&fn, &done] {
      fn();
      done.store(true, std::memory_order_release);
    });
    while (!done.load(std::memory_order_acquire)) {
      if (!Worker::YieldCurrentFiber()) HSHM_THREAD_MODEL->SleepForUs(100);
    }
    t.join();
  }

  std::mutex creating_mu_;
  /** Coordinator: names being created (one fiber each). */
  std::unordered_set<std::string> creating_;  // guarded by creating_mu_

  /** Copies `text` into a runtime_data buffer the client frees, named by
   * task->text_ (OutOfMemory: the task's status). */
  static void ReplyText(const std::string &text, TextTask *task) {
    if (text.empty()) return;
    FullPtr<char> buf = CHI_IPC->AllocateBuffer(text.size());
    if (buf.IsNull()) {
      task->SetStatus(Status::OutOfMemory("runtime_data is full"));
      return;
    }
    std::memcpy(buf.ptr_, text.data(), text.size());
    task->text_ = buf.shm_;
    task->text_size_ = text.size();
  }

  /** Length of the well-formed UTF-8 sequence starting `s[i]` (a byte of
   * 0x80 or more), or 0 if there is none (a stray byte, an overlong form, a
   * surrogate or past U+10FFFF). */
  static size_t Utf8SeqLen(const std::string &s, size_t i) {
    const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned char c = b(i);
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf;  // bounds of the second byte
    if (c >= 0xc2 && c <= 0xdf) {
      n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 3;
      if (c == 0xe0) lo = 0xa0;
      if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 4;
      if (c == 0xf0) lo = 0x90;
      if (c == 0xf4) hi = 0x8f;
    } else {
      return 0;
    }
    if (i + n > s.size() || b(i + 1) < lo || b(i + 1) > hi) return 0;
    for (size_t k = 2; k < n; ++k) {
      if (b(i + k) < 0x80 || b(i + k) > 0xbf) return 0;
    }
    return n;
  }

  /** `s` as a JSON string literal (quoted, escaped), valid UTF-8 whatever
   * `s` holds: a byte that is not part of well-formed UTF-8 becomes the
   * text \xNN, as the Python module writes it. */
  static std::string JsonStr(const std::string &s) {
    std::string out = "\"";
    for (size_t i = 0; i < s.size();) {
      const unsigned char c = static_cast<unsigned char>(s[i]);
      if (c == '"' || c == '\\') {
        out += '\\';
        out += static_cast<char>(c);
      } else if (c < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof(buf), "\\u%04x", c);
        out += buf;
      } else if (c < 0x80) {
        out += static_cast<char>(c);
      } else if (size_t n = Utf8SeqLen(s, i)) {
        out.append(s, i, n);
        i += n;
        continue;
      } else {
        char buf[8];
        std::snprintf(buf, sizeof(buf), "\\\\x%02x", c);
        out += buf;
      }
      ++i;
    }
    return out + "\"";
  }

  /** Bytes in use of a segment's allocator (blocks handed out or cached by
   * some thread), after flushing the calling thread's cache. */
  template <typename AllocT>
  static hshm::i64 SegmentInUse(AllocT *alloc) {
    alloc->FlushThreadCache();
    return alloc->GetBytesInUse();
  }

  /** Writes a report of the runtime into an rdata buffer: text for people,
   * or (format_ kFormatJson) one JSON object with the same data. */
  void Run(StatTask *task, RunContext &rctx) {
    IpcManager *ipc = CHI_IPC;
    const bool json = task->format_ == TextTask::kFormatJson;
    struct Seg {
      const char *name;
      hshm::i64 in_use;
      u64 size;
    } segs[] = {
        {"main", SegmentInUse(ipc->main_alloc()),
         ipc->main_alloc()->GetRegionSize()},
        {"client_data", SegmentInUse(ipc->cdata_alloc()),
         ipc->cdata_alloc()->GetRegionSize()},
        {"runtime_data", SegmentInUse(ipc->rdata_alloc()),
         ipc->rdata_alloc()->GetRegionSize()},
    };
    std::ostringstream os;
    const u64 depth = ipc->GetLaneView(0, kLowLatency).depth();
    if (json) {
      os << "{\"node\":{\"id\":" << ipc->node_id()
         << ",\"address\":" << JsonStr(ipc->server_address())
         << ",\"pid\":" << getpid() << "},\"segments\":{";
      for (size_t i = 0; i < 3; ++i) {
        os << (i ? "," : "") << JsonStr(segs[i].name)
           << ":{\"in_use\":" << segs[i].in_use << ",\"size\":" << segs[i].size
           << "}";
      }
      os << "},\"process_queue\":{\"lanes\":" << ipc->num_lanes()
         << ",\"priorities\":" << kNumPrios << ",\"depth\":" << depth
         << ",\"lane_list\":[";
    } else {
      os << "node " << ipc->node_id() << " at " << ipc->server_address()
         << " (pid " << getpid() << ")\n";
      os << "segments (bytes in use, approximate): main " << segs[0].in_use
         << " B in use of " << segs[0].size << ", client_data "
         << segs[1].in_use << " of " << segs[1].size << ", runtime_data "
         << segs[2].in_use << " of " << segs[2].size << "\n";
      os << "process queue: " << ipc->num_lanes()
         << " lanes x 2 priorities, depth " << depth << "\n";
    }
    for (u32 l = 0; l < ipc->num_lanes(); ++l) {
      for (u32 p = 0; p < kNumPrios; ++p) {
        LaneView &lane = ipc->GetLaneView(l, p);
        const char *prio = p == kLowLatency ? "low" : "high";
        if (json) {
          os << (l || p ? "," : "") << "{\"lane\":" << l << ",\"priority\":\""
             << prio
             << "_latency\",\"worker\":" << lane.header().worker_id_.load()
             << ",\"queued\":" << lane.Size()
             << ",\"recycled\":" << lane.recycled() << "}";
        } else {
          os << "  lane " << l << " " << prio << "-latency: worker "
             << lane.header().worker_id_.load() << ", queued " << lane.Size()
             << ", recycled " << lane.recycled() << "\n";
        }
      }
    }
    ReaperStats rs = CHI_REAPER->stats();
    if (json) {
      os << "]},\"reaper\":{\"clients\":" << rs.clients
         << ",\"pending\":" << rs.pending << ",\"reaped\":" << rs.reaped
         << ",\"tasks_claimed\":" << rs.tasks_claimed
         << ",\"tasks_abandoned\":" << rs.tasks_abandoned
         << ",\"bytes_freed\":" << rs.bytes_freed
         << ",\"failed_walks\":" << rs.failed_walks
         << ",\"gave_up\":" << rs.gave_up << "},\"workers\":[";
    } else {
      os << "reaper: clients " << rs.clients << ", pending " << rs.pending
         << ", reaped " << rs.reaped << ", tasks claimed " << rs.tasks_claimed
         << ", tasks abandoned " << rs.tasks_abandoned << ", bytes freed "
         << rs.bytes_freed << ", failed walks " << rs.failed_walks
         << ", gave up " << rs.gave_up << "\n";
    }
    auto *wo = CHI_WORK_ORCHESTRATOR;
    if (!json) os << "workers: " << wo->workers().size() << "\n";
    // Tasks waiting in the process-queue lanes each worker drains.
    std::vector<u64> queued(wo->workers().size(), 0);
    for (u32 l = 0; l < ipc->num_lanes(); ++l) {
      for (u32 p = 0; p < kNumPrios; ++p) {
        LaneView &lane = ipc->GetLaneView(l, p);
        u32 w = lane.header().worker_id_.load();
        if (w < queued.size()) queued[w] += lane.Size();
      }
    }
    bool first = true;
    double busy_sum = 0, rate_sum = 0;
    u64 queued_sum = 0;
    for (auto &w : wo->workers()) {
      WorkerShared &ws = ipc->workers()[w->id()];
      const char *kind = w->kind() == WorkerKind::kLowLatency ? "low" : "high";
      u64 rate = static_cast<u64>(wo->WorkerRate(w->id()));
      double busy = wo->WorkerBusy(w->id());
      busy_sum += busy;
      rate_sum += static_cast<double>(rate);
      queued_sum += queued[w->id()];
      if (json) {
        os << (first ? "" : ",") << "{\"id\":" << w->id() << ",\"kind\":\""
           << kind << "_latency\",\"lanes\":" << ws.num_lanes_.load()
           << ",\"tasks_completed\":" << ws.tasks_done_.load()
           << ",\"rate\":" << rate << ",\"busy\":" << busy
           << ",\"queued\":" << queued[w->id()]
           << ",\"lanes_moved\":" << w->lanes_moved()
           << ",\"lanes_unwedged\":" << w->lanes_unwedged()
           << ",\"stuck\":" << (w->robbed() ? "true" : "false")
           << ",\"sleeping\":" << ws.sleeping_.load() << "}";
      } else {
        os << "  worker " << w->id() << " " << kind << "-latency: lanes "
           << ws.num_lanes_.load() << ", completed " << ws.tasks_done_.load()
           << ", rate " << rate << " tasks/s, busy "
           << static_cast<int>(busy * 100 + 0.5) << "%, queued "
           << queued[w->id()] << ", sleeping " << ws.sleeping_.load();
        if (w->lanes_unwedged() != 0) {
          os << ", lanes taken while stuck " << w->lanes_unwedged();
        }
        if (w->robbed()) os << ", stuck in a task";
        os << "\n";
      }
      first = false;
    }
    const double nworkers =
        wo->workers().empty() ? 1.0 : static_cast<double>(wo->workers().size());
    if (json) {
      os << "],\"load\":{\"busy_avg\":" << busy_sum / nworkers
         << ",\"queued\":" << queued_sum
         << ",\"rate\":" << static_cast<u64>(rate_sum) << "},\"cost_models\":[";
    } else {
      os << "load: busy " << static_cast<int>(busy_sum / nworkers * 100 + 0.5)
         << "% (mean of workers), queued " << queued_sum << ", rate "
         << static_cast<u64>(rate_sum) << " tasks/s\n";
    }
    // The learned per-method costs (Monitor(kEstLoad)).
    std::vector<CostModelView> models = wo->CostModels();
    if (!models.empty()) {
      MethodNameTable names;
      if (!json) os << "cost models (service time = base + per byte):\n";
      for (size_t i = 0; i < models.size(); ++i) {
        const CostModelView &m = models[i];
        std::string name = names.Name(m.pool, m.method);
        if (json) {
          os << (i ? "," : "") << "{\"pool\":" << JsonStr(m.pool.ToString())
             << ",\"method\":" << JsonStr(name) << ",\"samples\":" << m.weight
             << ",\"base_ns\":" << m.base_ns
             << ",\"ns_per_byte\":" << m.ns_per_byte << "}";
        } else {
          os << "  " << name << " (pool " << m.pool.ToString()
             << "): " << static_cast<i64>(m.base_ns) << " ns + "
             << m.ns_per_byte << " ns/B over " << m.weight << " samples\n";
        }
      }
    }
    if (json) os << "]";
    auto pools = CHI_POOL_MANAGER->List();
    if (json) {
      os << ",\"pools\":[";
    } else {
      os << "pools: " << pools.size() << "\n";
    }
    first = true;
    for (auto &p : pools) {
      if (json) {
        os << (first ? "" : ",") << "{\"id\":" << JsonStr(p.id.ToString())
           << ",\"name\":" << JsonStr(p.name)
           << ",\"module\":" << JsonStr(p.module)
           << ",\"containers\":" << p.num_containers
           << ",\"local_containers\":" << p.num_local
           << ",\"nodes\":" << p.nodes.size()
           << ",\"tasks_completed\":" << p.completed
           << ",\"tasks_in_flight\":" << p.inflight << "}";
      } else {
        os << "  pool " << p.id.ToString() << " '" << p.name << "' module "
           << p.module << ": " << p.num_containers << " containers ("
           << p.num_local << " here) over " << p.nodes.size()
           << " nodes, completed " << p.completed << ", in flight "
           << p.inflight << "\n";
      }
      first = false;
    }
    auto modules = CHI_MODULE_MANAGER->ListModules();
    auto paths = CHI_MODULE_MANAGER->paths();
    if (json) {
      os << "],\"network\":" << JsonStr(CHI_REMOTE->StatLine())
         << ",\"modules\":[";
      for (size_t i = 0; i < modules.size(); ++i) {
        os << (i ? "," : "") << JsonStr(modules[i]);
      }
      os << "],\"module_paths\":[";
      for (size_t i = 0; i < paths.size(); ++i) {
        os << (i ? "," : "") << JsonStr(paths[i]);
      }
      os << "]}\n";
    } else {
      os << CHI_REMOTE->StatLine() << "\n";
      os << "modules:";
      for (auto &m : modules) os << " " << m;
      os << "\nmodule paths:";
      for (auto &m : paths) os << " " << m;
      os << "\n";
    }
    ReplyText(os.str(), task);
  }
};

}  // namespace admin

/** Factory of the built-in admin module. */
Container *NewAdminContainer() { return new admin::Runtime(); }

}  // namespace chi
