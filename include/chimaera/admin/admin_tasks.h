// Tasks of the admin module, the built-in ChiMod present on every node (pool
// kAdminPoolId): liveness checks, pool and module management, and stopping
// the runtime. Declared like any ChiMod (chimaera/module.h): one aggregate
// task type per method, listed once in Admin::Methods; methods that share a
// body derive from it with no fields of their own (set their fields after
// NewAdminTask).
#ifndef CHIMAERA_ADMIN_ADMIN_TASKS_H_
#define CHIMAERA_ADMIN_ADMIN_TASKS_H_

#include <cstring>
#include <string>
#include <utility>

#include "chimaera/container.h"
#include "chimaera/ipc_manager.h"

namespace chi::admin {

/** The node that names and numbers pools for the whole cluster. */
static GLOBAL_CROSS_CONST NodeId kCoordinatorNode = 1;

/** A fixed-size, NUL-terminated name inside a task (no std::string in shm).
 */
struct TaskName {
  char str_[64] = {};
  /** Copies `s`; false if it does not fit (63 bytes at most). */
  bool Set(const std::string &s) {
    if (s.size() >= sizeof(str_)) return false;
    std::memcpy(str_, s.data(), s.size());
    str_[s.size()] = '\0';
    return true;
  }
  std::string Get() const { return std::string(str_, strnlen(str_, 63)); }
};

/** Does nothing; measures the bare task round trip. */
struct NoopTask : public Task {
  static constexpr bool kNeverWaits = true;  ///< Runs without a fiber.
};

/** Returns its input: ret_ = value_. */
struct EchoTask : public Task {
  static constexpr bool kNeverWaits = true;  ///< Runs without a fiber.
  CHI_IN u64 value_ = 0;
  CHI_OUT u64 ret_ = 0;
  CHI_FIELDS(In(value_), Out(ret_))
};

/** Spawns `count_` Echo subtasks (values 1..count_), waits for all of them
 * (yielding its fiber) and returns the sum of their results. With depth_ > 1
 * each subtask is itself a FanOut of depth_ - 1. */
struct FanOutTask : public Task {
  CHI_IN u32 count_ = 0;
  CHI_IN u32 depth_ = 1;
  CHI_OUT u64 sum_ = 0;
  CHI_FIELDS(In(count_), In(depth_), Out(sum_))
};

/** Stops the runtime: it finishes in-flight tasks, frees its segments and
 * exits. Completes before the runtime goes away. */
struct StopRuntimeTask : public Task {};

/** Returns the pool called name_, creating it (num_containers_ containers of
 * module_ spread over every node, each given params_) if it does not exist.
 * Any node's admin takes it; the coordinator node creates pools for the
 * cluster (CreatePoolHereTask on every node). */
struct GetOrCreatePoolTask : public Task {
  CHI_IN TaskName name_;
  CHI_IN TaskName module_;
  CHI_IN u32 num_containers_ = 1;
  CHI_IN hipc::Pointer params_;  ///< Module parameters (client_data), or null.
  CHI_IN u64 params_size_ = 0;
  CHI_IN PoolId fixed_id_;  ///< CreatePoolHereTask: the id to use.
  CHI_OUT PoolId new_pool_id_;
  CHI_OUT u32 existed_ = 0;
  CHI_FIELDS(In(name_), In(module_), In(num_containers_), In(params_size_),
             InBuf(params_, params_size_), In(fixed_id_), Out(new_pool_id_),
             Out(existed_))
};

/** Internal: a node builds its share of pool fixed_id_. */
struct CreatePoolHereTask : public GetOrCreatePoolTask {
  static constexpr bool kRuntimeOnly = true;  ///< Clients are refused.
};
/** Internal (a broadcast): undoes a failed CreatePoolHere: destroys pool
 * fixed_id_ where it is called name_ (never another pool that had the id
 * already). */
struct UndoCreatePoolTask : public GetOrCreatePoolTask {
  static constexpr bool kRuntimeOnly = true;  ///< Clients are refused.
};

/** Destroys pool target_, after the tasks running on it finish. */
struct DestroyPoolTask : public Task {
  CHI_IN PoolId target_;
  CHI_FIELDS(In(target_))
};

/** Moves container container_ of pool target_ to node to_node_ (admin
 * MigrateContainer; any node takes it and hands it to the container's
 * node). That node stops starting the container's tasks (they wait),
 * lets the running ones finish, saves its state (Container::SaveState),
 * installs it on to_node_ (MigrateInTask, with the state in state_),
 * then tells every node (SetPlacementTask, a broadcast); the waiting tasks
 * then go to the new node, none lost or run twice. from_node_ and
 * state_bytes_ report what moved. */
struct MigrateContainerTask : public Task {
  CHI_IN PoolId target_;
  CHI_IN u32 container_ = 0;
  CHI_IN u32 to_node_ = 0;
  CHI_IN hipc::Pointer state_;  ///< MigrateInTask: the saved state.
  CHI_IN u64 state_size_ = 0;
  /** MigrateInTask: the worker the container was pinned to where it was
   * (Container::PinToWorker), or ~0u if it was not pinned. */
  CHI_IN u32 pin_worker_ = ~0u;
  CHI_OUT u32 from_node_ = 0;
  CHI_OUT u64 state_bytes_ = 0;
  CHI_OUT PoolId moved_pool_;        ///< OffloadTask: the pool of what moved.
  CHI_OUT u32 moved_container_ = 0;  ///< OffloadTask: the container that moved.
  CHI_FIELDS(In(target_), In(container_), In(to_node_), In(state_size_),
             InBuf(state_, state_size_), In(pin_worker_), Out(from_node_),
             Out(state_bytes_), Out(moved_pool_), Out(moved_container_))
};
/** Internal: installs a migrating container here from state_. */
struct MigrateInTask : public MigrateContainerTask {
  static constexpr bool kRuntimeOnly = true;  ///< Clients are refused.
};
/** Internal (a broadcast): container_ of target_ now lives on to_node_. */
struct SetPlacementTask : public MigrateContainerTask {
  static constexpr bool kRuntimeOnly = true;  ///< Clients are refused.
};
/** Internal (the automatic policy, to an overloaded node): move this
 * node's busiest container that can move to to_node_ (target_ and
 * container_ unused; moved_pool_ and moved_container_ say what moved). */
struct OffloadTask : public MigrateContainerTask {
  /** Tasks in flight on to_node_ as the coordinator last saw them: only a
   * container with at most 3/4 of the difference between its node's load
   * now and this in flight moves (a bigger one would leave to_node_ the
   * busier, and move back next time). */
  CHI_IN u64 to_load_ = 0;
  /** The base's fields, then to_load_. */
  template <typename Ar>
  void Fields(Ar &ar) {
    MigrateContainerTask::Fields(ar);
    ar.In(to_load_);
  }
};

/** Pins container container_ of pool target_ to worker worker_ of the node
 * holding it (Container::PinToWorker): any node takes it and hands it to
 * that node. */
struct PinContainerTask : public Task {
  CHI_IN PoolId target_;
  CHI_IN u32 container_ = 0;
  CHI_IN u32 worker_ = 0;
  CHI_FIELDS(In(target_), In(container_), In(worker_))
};

/** Looks up the id of the pool called name_. */
struct LookupPoolTask : public Task {
  CHI_IN TaskName name_;
  CHI_OUT PoolId pool_id_out_;
  CHI_FIELDS(In(name_), Out(pool_id_out_))
};

/** The body of the methods that answer with text, written into a
 * runtime_data buffer the caller frees with FreeBuffer (the types below). */
struct TextTask : public Task {
  /** StatTask only: kFormatText (the report for people) or kFormatJson (one
   * JSON object with the same data, for programs; see chimaera_stat). */
  CHI_IN u32 format_ = 0;
  CHI_OUT hipc::Pointer text_;
  CHI_OUT u64 text_size_ = 0;
  static constexpr u32 kFormatText = 0;
  static constexpr u32 kFormatJson = 1;
  CHI_FIELDS(In(format_), OutBuf(text_, text_size_))
};
/** A report of node, workers, lanes, pools, modules and counters. */
struct StatTask : public TextTask {};
/** One "node.unique<TAB>name<TAB>module<TAB>containers" line per pool. */
struct ListPoolsTask : public TextTask {};
/** The loaded modules, one name a line. */
struct ListModulesTask : public TextTask {};
/** Internal: one page of every pool's full spec (SpecLine each), for a node
 * that rejoins: the pools whose id (PoolId::ToU64) is at least from_, in id
 * order, until their parameters reach kPageParamBytes (one pool at least,
 * if any is left). more_ says whether pools remain; the next page starts
 * at next_. */
struct PoolSpecsTask : public TextTask {
  CHI_IN u64 from_ = 0;
  CHI_OUT u64 next_ = 0;
  CHI_OUT u32 more_ = 0;
  /** Parameter bytes a page stops growing at (its text holds them twice,
   * as hex; one pool's may reach 1 MiB). */
  static constexpr u64 kPageParamBytes = 512 << 10;
  CHI_FIELDS(In(format_), OutBuf(text_, text_size_), In(from_), Out(next_),
             Out(more_))
};
/** This node's task trace as Chrome trace-event JSON (chimaera/trace.h). */
struct TraceDumpTask : public TextTask {};
/** Internal, fire-and-forget at start-up: a (re)started node builds its
 * share of every pool the others know. */
struct JoinClusterTask : public Task {};

/** Operations of TraceControlTask. */
enum TraceOp : u32 {
  kTraceQuery = 0,  ///< Only report the state.
  kTraceStart = 1,  ///< Start recording task timelines.
  kTraceStop = 2,   ///< Stop recording (what was recorded stays).
  kTraceClear = 3,  ///< Forget what was recorded so far.
};

/** Applies TraceOp op_ to this node's task tracing (chimaera/trace.h) and
 * reports the state after it: start and stop complete once every worker
 * follows the switch. */
struct TraceControlTask : public Task {
  CHI_IN u32 op_ = kTraceQuery;
  CHI_OUT u32 enabled_ = 0;   ///< 1 if tracing is on.
  CHI_OUT u64 recorded_ = 0;  ///< Records written since the last clear.
  CHI_FIELDS(In(op_), Out(enabled_), Out(recorded_))
};

/** The admin module: its methods, numbered in this order. */
struct Admin {
  static constexpr char kName[] = "chimaera_admin";
  using Methods = chi::Methods<
      NoopTask, EchoTask, FanOutTask, StopRuntimeTask, GetOrCreatePoolTask,
      DestroyPoolTask, LookupPoolTask, StatTask, ListPoolsTask, ListModulesTask,
      CreatePoolHereTask, PoolSpecsTask, JoinClusterTask, TraceControlTask,
      TraceDumpTask, MigrateContainerTask, MigrateInTask, SetPlacementTask,
      OffloadTask, PinContainerTask, UndoCreatePoolTask>;
};

/** Allocates admin task T for the admin pool, as task node `node`, routed
 * by `dom`: `args` initialise its first fields in order (none for the
 * types that only derive a body; set their fields afterwards). Null if
 * `main` is full. Any thread; send with chi::Submit. */
template <typename T, typename... Args>
FullPtr<T> NewAdminTask(const TaskNode &node, const DomainQuery &dom,
                        Args &&...args) {
  return NewMethodTask<Admin, T>(node, kAdminPoolId, dom,
                                 std::forward<Args>(args)...);
}

}  // namespace chi::admin

#endif  // CHIMAERA_ADMIN_ADMIN_TASKS_H_
