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
}  // namespace Method

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
 * module_, each given params_) if it does not exist. */
struct GetOrCreatePoolTask : public Task {
  IN TaskName name_;
  IN TaskName module_;
  IN u32 num_containers_ = 1;
  IN hipc::Pointer params_;  ///< Module parameters (client_data), or null.
  IN u64 params_size_ = 0;
  OUT PoolId new_pool_id_;
  OUT u32 existed_ = 0;
  explicit GetOrCreatePoolTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc)
      : Task(alloc) {}
  GetOrCreatePoolTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc,
                      const TaskNode &node, const DomainQuery &dom)
      : Task(alloc) {
    SetBase(node, kAdminPoolId, dom, Method::kGetOrCreatePool);
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
};

/** A method answering with text, written into a runtime_data buffer the
 * caller frees with FreeBuffer: kStat (a report of node, workers, lanes,
 * pools, modules and counters), kListPools (one "node.unique<TAB>name<TAB>
 * module<TAB>containers" line per pool) or kListModules (one name a line).
 */
struct TextTask : public Task {
  OUT hipc::Pointer text_;
  OUT u64 text_size_ = 0;
  explicit TextTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc)
      : Task(alloc) {}
  TextTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc, const TaskNode &node,
           const DomainQuery &dom, MethodId method)
      : Task(alloc) {
    SetBase(node, kAdminPoolId, dom, method);
  }
};

}  // namespace chi::admin

#endif  // CHIMAERA_ADMIN_ADMIN_TASKS_H_
