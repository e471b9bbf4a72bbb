// Tasks of the admin module, the built-in ChiMod present on every node (pool
// kAdminPoolId): liveness checks, pool and module management, and stopping
// the runtime.
#ifndef CHIMAERA_ADMIN_ADMIN_TASKS_H_
#define CHIMAERA_ADMIN_ADMIN_TASKS_H_

#include <cstring>
#include <string>

#include "chimaera/container.h"
#include "chimaera/ipc_manager.h"

namespace chi::admin {

/** Methods of the admin container. */
namespace Method {
static GLOBAL_CROSS_CONST MethodId kNoop = BaseMethod::kCustom + 0;
static GLOBAL_CROSS_CONST MethodId kEcho = BaseMethod::kCustom + 1;
static GLOBAL_CROSS_CONST MethodId kFanOut = BaseMethod::kCustom + 2;
static GLOBAL_CROSS_CONST MethodId kStopRuntime = BaseMethod::kCustom + 3;
static GLOBAL_CROSS_CONST MethodId kGetOrCreatePool = BaseMethod::kCustom + 4;
static GLOBAL_CROSS_CONST MethodId kDestroyPool = BaseMethod::kCustom + 5;
static GLOBAL_CROSS_CONST MethodId kLookupPool = BaseMethod::kCustom + 6;
static GLOBAL_CROSS_CONST MethodId kStat = BaseMethod::kCustom + 7;
static GLOBAL_CROSS_CONST MethodId kListPools = BaseMethod::kCustom + 8;
static GLOBAL_CROSS_CONST MethodId kListModules = BaseMethod::kCustom + 9;
static GLOBAL_CROSS_CONST MethodId kCreatePoolHere = BaseMethod::kCustom + 10;
static GLOBAL_CROSS_CONST MethodId kPoolSpecs = BaseMethod::kCustom + 11;
static GLOBAL_CROSS_CONST MethodId kJoinCluster = BaseMethod::kCustom + 12;
static GLOBAL_CROSS_CONST MethodId kTraceControl = BaseMethod::kCustom + 13;
static GLOBAL_CROSS_CONST MethodId kTraceDump = BaseMethod::kCustom + 14;
static GLOBAL_CROSS_CONST MethodId kMigrateContainer = BaseMethod::kCustom + 15;
static GLOBAL_CROSS_CONST MethodId kMigrateIn = BaseMethod::kCustom + 16;
static GLOBAL_CROSS_CONST MethodId kSetPlacement = BaseMethod::kCustom + 17;
static GLOBAL_CROSS_CONST MethodId kOffload = BaseMethod::kCustom + 18;
}  // namespace Method

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
  explicit NoopTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc)
      : Task(alloc) {}
  NoopTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc, const TaskNode &node,
           const DomainQuery &dom)
      : Task(alloc) {
    SetBase(node, kAdminPoolId, dom, Method::kNoop);
  }
};

/** Returns its input: ret_ = value_. */
struct EchoTask : public Task {
  IN u64 value_ = 0;
  OUT u64 ret_ = 0;
  explicit EchoTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc)
      : Task(alloc) {}
  EchoTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc, const TaskNode &node,
           const DomainQuery &dom, u64 value)
      : Task(alloc), value_(value) {
    SetBase(node, kAdminPoolId, dom, Method::kEcho);
  }
  template <typename Ar>
  void Fields(Ar &ar) {
    ar.In(value_);
    ar.Out(ret_);
  }
};

/** Spawns `count_` Echo subtasks (values 1..count_), waits for all of them
 * (yielding its fiber) and returns the sum of their results. With depth_ > 1
 * each subtask is itself a FanOut of depth_ - 1. */
struct FanOutTask : public Task {
  IN u32 count_ = 0;
  IN u32 depth_ = 1;
  OUT u64 sum_ = 0;
  explicit FanOutTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc)
      : Task(alloc) {}
  FanOutTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc, const TaskNode &node,
             const DomainQuery &dom, u32 count, u32 depth)
      : Task(alloc), count_(count), depth_(depth) {
    SetBase(node, kAdminPoolId, dom, Method::kFanOut);
  }
  template <typename Ar>
  void Fields(Ar &ar) {
    ar.In(count_);
    ar.In(depth_);
    ar.Out(sum_);
  }
};

/** Stops the runtime: it finishes in-flight tasks, frees its segments and
 * exits. Completes before the runtime goes away. */
struct StopRuntimeTask : public Task {
  explicit StopRuntimeTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc)
      : Task(alloc) {}
  StopRuntimeTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc,
                  const TaskNode &node, const DomainQuery &dom)
      : Task(alloc) {
    SetBase(node, kAdminPoolId, dom, Method::kStopRuntime);
  }
};

/** Returns the pool called name_, creating it (num_containers_ containers of
 * module_ spread over every node, each given params_) if it does not exist.
 * Any node's admin takes it; the coordinator node creates pools for the
 * cluster (kCreatePoolHere on every node). With method kCreatePoolHere
 * (internal) a node builds its share of pool fixed_id_. */
struct GetOrCreatePoolTask : public Task {
  IN TaskName name_;
  IN TaskName module_;
  IN u32 num_containers_ = 1;
  IN hipc::Pointer params_;  ///< Module parameters (client_data), or null.
  IN u64 params_size_ = 0;
  IN PoolId fixed_id_;  ///< kCreatePoolHere: the id to use.
  OUT PoolId new_pool_id_;
  OUT u32 existed_ = 0;
  explicit GetOrCreatePoolTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc)
      : Task(alloc) {}
  GetOrCreatePoolTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc,
                      const TaskNode &node, const DomainQuery &dom,
                      MethodId method = Method::kGetOrCreatePool)
      : Task(alloc) {
    SetBase(node, kAdminPoolId, dom, method);
  }
  template <typename Ar>
  void Fields(Ar &ar) {
    ar.In(name_);
    ar.In(module_);
    ar.In(num_containers_);
    ar.In(params_size_);
    ar.InBuf(params_, params_size_);
    ar.In(fixed_id_);
    ar.Out(new_pool_id_);
    ar.Out(existed_);
  }
};

/** Destroys pool pool_to_destroy_, after the tasks running on it finish. */
struct DestroyPoolTask : public Task {
  IN PoolId target_;
  explicit DestroyPoolTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc)
      : Task(alloc) {}
  DestroyPoolTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc,
                  const TaskNode &node, const DomainQuery &dom,
                  const PoolId &target)
      : Task(alloc), target_(target) {
    SetBase(node, kAdminPoolId, dom, Method::kDestroyPool);
  }
  template <typename Ar>
  void Fields(Ar &ar) {
    ar.In(target_);
  }
};

/** Moves container container_ of pool target_ to node to_node_ (admin
 * MigrateContainer; any node takes it and hands it to the container's
 * node). That node stops starting the container's tasks (they wait),
 * lets the running ones finish, saves its state (Container::SaveState),
 * installs it on to_node_ (kMigrateIn, internal, with the state in
 * state_), then tells every node (kSetPlacement, internal, a broadcast);
 * the waiting tasks then go to the new node, none lost or run twice.
 * from_node_ and state_bytes_ report what moved. With kOffload (internal,
 * the automatic policy) the receiving node picks its busiest container
 * that can move (container_ and target_ unused). */
struct MigrateContainerTask : public Task {
  IN PoolId target_;
  IN u32 container_ = 0;
  IN u32 to_node_ = 0;
  IN hipc::Pointer state_;  ///< kMigrateIn: the saved state.
  IN u64 state_size_ = 0;
  OUT u32 from_node_ = 0;
  OUT u64 state_bytes_ = 0;
  OUT PoolId moved_pool_;        ///< kOffload: the pool of what moved.
  OUT u32 moved_container_ = 0;  ///< kOffload: the container that moved.
  explicit MigrateContainerTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc)
      : Task(alloc) {}
  MigrateContainerTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc,
                       const TaskNode &node, const DomainQuery &dom,
                       const PoolId &target, u32 container, u32 to_node,
                       MethodId method = Method::kMigrateContainer)
      : Task(alloc), target_(target), container_(container), to_node_(to_node) {
    SetBase(node, kAdminPoolId, dom, method);
  }
  template <typename Ar>
  void Fields(Ar &ar) {
    ar.In(target_);
    ar.In(container_);
    ar.In(to_node_);
    ar.In(state_size_);
    ar.InBuf(state_, state_size_);
    ar.Out(from_node_);
    ar.Out(state_bytes_);
    ar.Out(moved_pool_);
    ar.Out(moved_container_);
  }
};

/** Looks up the id of the pool called name_. */
struct LookupPoolTask : public Task {
  IN TaskName name_;
  OUT PoolId pool_id_out_;
  explicit LookupPoolTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc)
      : Task(alloc) {}
  LookupPoolTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc,
                 const TaskNode &node, const DomainQuery &dom)
      : Task(alloc) {
    SetBase(node, kAdminPoolId, dom, Method::kLookupPool);
  }
  template <typename Ar>
  void Fields(Ar &ar) {
    ar.In(name_);
    ar.Out(pool_id_out_);
  }
};

/** A method answering with text, written into a client_data buffer the
 * caller frees with FreeBuffer: kStat (a report of node, workers, lanes,
 * pools, modules and counters), kListPools (one "node.unique<TAB>name<TAB>
 * module<TAB>containers" line per pool), kListModules (one name a line),
 * kPoolSpecs (internal: every pool's full spec, for a node that rejoins) or
 * kTraceDump (this node's task trace as Chrome trace-event JSON; see
 * chimaera/trace.h).
 */
struct TextTask : public Task {
  /** kStat only: kFormatText (the report for people) or kFormatJson (one
   * JSON object with the same data, for programs; see chimaera_stat). */
  IN u32 format_ = 0;
  OUT hipc::Pointer text_;
  OUT u64 text_size_ = 0;
  static constexpr u32 kFormatText = 0;
  static constexpr u32 kFormatJson = 1;
  explicit TextTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc)
      : Task(alloc) {}
  TextTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc, const TaskNode &node,
           const DomainQuery &dom, MethodId method, u32 format = kFormatText)
      : Task(alloc), format_(format) {
    SetBase(node, kAdminPoolId, dom, method);
  }
  template <typename Ar>
  void Fields(Ar &ar) {
    ar.In(format_);
    ar.OutBuf(text_, text_size_);
  }
};

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
  IN u32 op_ = kTraceQuery;
  OUT u32 enabled_ = 0;   ///< 1 if tracing is on.
  OUT u64 recorded_ = 0;  ///< Records written since the last clear.
  explicit TraceControlTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc)
      : Task(alloc) {}
  TraceControlTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc,
                   const TaskNode &node, const DomainQuery &dom, u32 op)
      : Task(alloc), op_(op) {
    SetBase(node, kAdminPoolId, dom, Method::kTraceControl);
  }
  template <typename Ar>
  void Fields(Ar &ar) {
    ar.In(op_);
    ar.Out(enabled_);
    ar.Out(recorded_);
  }
};

}  // namespace chi::admin

#endif  // CHIMAERA_ADMIN_ADMIN_TASKS_H_
