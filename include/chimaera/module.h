// Writing a ChiMod: one declaration per method.
//
// A method is its task type: an aggregate (public fields, no constructors)
// deriving from chi::Task whose IN fields come first, in the order a caller
// passes them, and whose Fields() lists what crosses processes and nodes:
//
//   struct AddTask : chi::Task {
//     IN chi::u64 key_ = 0, value_ = 0;
//     OUT chi::u64 sum_ = 0;
//     template <typename Ar>
//     void Fields(Ar &ar) { ar.In(key_); ar.In(value_); ar.Out(sum_); }
//   };
//
// A module lists its task types once; the position in the list is the
// method id (BaseMethod::kCustom + index), the type name the method name
// ("Add"), so ids, names and types cannot drift apart:
//
//   struct Stats {
//     static constexpr char kName[] = "stats";  // = add_chimod_*(stats)
//     using Methods = chi::Methods<AddTask, GetTask>;
//   };
//
// The runtime side overloads Run() per task type (with the RunContext, or
// without when the method does not need it) and exports itself:
//
//   class StatsRuntime : public chi::Module<StatsRuntime, Stats> {
//    public:
//     void Run(AddTask *task, chi::RunContext &rctx) { ... }
//     void Run(GetTask *task) { ... }
//   };
//   CHI_MODULE(StatsRuntime);
//
// A method that gathers from every container of its pool calls
// Gather<TaskT>(merge, args...) (its fiber yields while the parts run).
//
// The client side needs nothing more:
//
//   chi::ModuleClient<Stats> stats;
//   stats.Create("my_stats", 4);
//   chi::Future<AddTask> f = stats.Async<AddTask>(key, value);  // send
//   if (f.Wait().ok()) use(f->sum_);  // Wait: until this thread's deadline
//   auto g = stats.Call<GetTask>(dom, key);  // send + Wait; check g.status()
//
// A task of the wrong type for its method id is refused by the runtime
// (Task::type_tag_), and a type missing from Methods<> does not compile.
//
// A module whose Def also declares `static constexpr bool kPinned = true`
// is sharded per core: each container is pinned, once created, to the
// worker that drains its process-queue lane (Container::PinToOwnLane), so
// its tasks run one at a time, interleaving only where one waits, and its
// state needs no lock.
#ifndef CHIMAERA_MODULE_H_
#define CHIMAERA_MODULE_H_

#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "chimaera/client_util.h"
#include "chimaera/container.h"
#include "chimaera/module_manager.h"
#include "chimaera/pool_client.h"
#include "hermes_shm/util/futex.h"

/** Exports the container class `CLASS` (a chi::Module<CLASS, Def>) as the
 * module Def::kName. Use once, in a source file of the runtime library. */
#define CHI_MODULE(CLASS) CHI_TASK_CC(CLASS, CLASS::ModuleDef::kName)

namespace chi {

/** The handle of a submitted task: wait on it, read its results, and let it
 * go. Owns the task (and the OutBuf buffers the method returned): dropping a
 * completed Future frees both; dropping one still running abandons the task
 * (the runtime frees it when it ends), so a timed-out wait never leaks or
 * frees memory the runtime still writes. Move-only; one thread at a time. */
template <typename TaskT>
class Future {
 public:
  /** An empty handle (status(): OutOfMemory). */
  Future() = default;
  /** Takes ownership of a submitted task (null: allocation failed). */
  explicit Future(FullPtr<TaskT> task) : task_(task) {}
  Future(const Future &) = delete;
  Future &operator=(const Future &) = delete;
  /** Moves the task out of `o` (which becomes empty). */
  Future(Future &&o) noexcept : task_(o.task_) { o.task_ = FullPtr<TaskT>(); }
  /** Lets go of this task (see Reset), then takes `o`'s. */
  Future &operator=(Future &&o) noexcept {
    if (this != &o) {
      Reset();
      task_ = o.task_;
      o.task_ = FullPtr<TaskT>();
    }
    return *this;
  }
  /** Lets go of the task (see Reset). */
  ~Future() { Reset(); }

  /** Waits until the task completes or the calling thread's deadline
   * passes (ScopedTaskTimeout; client.task_timeout_ms by default) and
   * returns status(). Timeout means it still runs: Wait again, or drop the
   * Future (which abandons it). Inside a runtime task the fiber yields. */
  Status Wait() {
    if (!task_.IsNull()) (void)task_->WaitFor(CHI_IPC->TaskTimeoutUs());
    return status();
  }
  /** Waits at most `timeout_us`; true once the task completed. */
  bool WaitFor(u64 timeout_us) {
    return !task_.IsNull() && task_->WaitFor(timeout_us);
  }
  /** True once the task completed (its results are readable). */
  bool done() const { return !task_.IsNull() && task_->IsComplete(); }
  /** The task's result once done(); Timeout while it runs; OutOfMemory if
   * it was never allocated (`main` was full). */
  Status status() const {
    if (task_.IsNull()) {
      return Status::OutOfMemory(
          "the task could not be allocated: the main "
          "segment is full");
    }
    if (!task_->IsComplete()) {
      return Status::Timeout("the task has not completed yet");
    }
    return task_->GetStatus();
  }
  /** The task, to read OUT fields. REQUIRES: done() and status().ok(). */
  TaskT *operator->() const { return task_.ptr_; }
  /** The task, as a reference. REQUIRES: non-empty. */
  TaskT &operator*() const { return *task_.ptr_; }
  /** The task (null if empty). */
  const FullPtr<TaskT> &task() const { return task_; }
  /** True unless empty. */
  explicit operator bool() const { return !task_.IsNull(); }

  /** Hands the task to the caller, who must then DelTask it once complete
   * (after freeing its OutBuf buffers) or CHI_IPC->AbandonTask it. */
  FullPtr<TaskT> Release() {
    FullPtr<TaskT> t = task_;
    task_ = FullPtr<TaskT>();
    return t;
  }
  /** Lets go of the task now: a completed one is freed with its OutBuf
   * buffers; a running one is abandoned. The Future becomes empty. */
  void Reset() {
    if (task_.IsNull()) return;
    // AbandonTask reports a completion that raced with it: then the task
    // (and its replies) are still ours to free.
    if (task_->IsComplete() || internal::AbandonTask(task_.ptr_)) {
      FieldArchive free_out(FieldArchive::Mode::kFreeOut, task_.ptr_);
      task_->Fields(free_out);
      CHI_IPC->DelTask(task_);
    }
    task_ = FullPtr<TaskT>();
  }

 private:
  FullPtr<TaskT> task_;
};

/** Waits for every future until the calling thread's deadline (one
 * deadline for all of them, ScopedTaskTimeout) and returns the first error
 * among them, or Ok: after Ok, every result is readable. A part still
 * running at the deadline gives Timeout. */
template <typename TaskT>
Status WaitAll(std::vector<Future<TaskT>> &futures) {
  const u64 timeout_us = CHI_IPC->TaskTimeoutUs();
  const u64 start_ns = hshm::NowNs();
  Status first;
  for (Future<TaskT> &f : futures) {
    const u64 spent_us = (hshm::NowNs() - start_ns) / 1000;
    (void)f.WaitFor(spent_us < timeout_us ? timeout_us - spent_us : 0);
    Status s = f.status();
    if (!s.ok() && first.ok()) first = s;
  }
  return first;
}

/** The client of one pool of module `Def` (a struct with kName and
 * Methods, see the top of this file). Copyable; once the pool is set a
 * client may be shared by threads. Works in client processes and inside
 * runtime methods (subtasks: the task node is the running task's child and
 * waits yield the fiber). */
template <typename Def>
class ModuleClient : public PoolClient {
 public:
  using PoolClient::PoolClient;
  /** The module's definition. */
  using ModuleDef = Def;

  /** Gets or creates pool `pool_name` of this module with `num_containers`
   * containers (each given `params`) and binds this client to it. Errors
   * are GetOrCreatePool's (InvalidArgument for a bad name, NotFound when
   * the runtime cannot load the module). */
  Status Create(const std::string &pool_name, u32 num_containers = 1,
                const std::string &params = "") {
    return CreatePool(pool_name, Def::kName, num_containers, params);
  }

  /** Makes, but does not send, a task of method TaskT: `args` initialise
   * its first fields in order; an optional leading DomainQuery says where
   * it runs (default DomainQuery()). Null if `main` is full. For callers
   * that set dependencies or a group (chimaera/task_graph.h) first; send
   * with chi::Submit. */
  template <typename TaskT, typename... Args>
  FullPtr<TaskT> NewTask(Args &&...args) const {
    return Make<TaskT>(std::forward<Args>(args)...);
  }
  /** Makes and sends a task of method TaskT (arguments as for NewTask). A
   * failed send completes the task with the error. */
  template <typename TaskT, typename... Args>
  Future<TaskT> Async(Args &&...args) const {
    return Future<TaskT>(Submit(Make<TaskT>(std::forward<Args>(args)...)));
  }
  /** Sends one task of method TaskT to each of containers 0..n-1
   * (DomainQuery::GetGlobalId(c)), with the same `args`: the fan-out of a
   * method that gathers from a whole pool (pass its num_containers_). */
  template <typename TaskT, typename... Args>
  std::vector<Future<TaskT>> AsyncEach(u32 n, const Args &...args) const {
    std::vector<Future<TaskT>> out;
    out.reserve(n);
    for (u32 c = 0; c < n; ++c) {
      out.push_back(Async<TaskT>(DomainQuery::GetGlobalId(c), args...));
    }
    return out;
  }
  /** The fan-out and merge of a method that gathers from a whole pool:
   * AsyncEach<TaskT>(n, args...), then waits for every part and calls
   * merge(part) (a TaskT &) on each that succeeded. Returns the first
   * error among the parts, or Ok. Inside a method the fiber yields while
   * the parts run. */
  template <typename TaskT, typename MergeFn, typename... Args>
  Status Gather(u32 n, MergeFn &&merge, const Args &...args) const {
    std::vector<Future<TaskT>> parts = AsyncEach<TaskT>(n, args...);
    Status first = WaitAll(parts);
    for (Future<TaskT> &part : parts) {
      if (part.status().ok()) merge(*part);
    }
    return first;
  }
  /** Async, then Wait() until the calling thread's deadline: the returned
   * Future is done unless its status() is Timeout or OutOfMemory. */
  template <typename TaskT, typename... Args>
  Future<TaskT> Call(Args &&...args) const {
    Future<TaskT> f = Async<TaskT>(std::forward<Args>(args)...);
    (void)f.Wait();
    return f;
  }

 private:
  /** Splits off a leading DomainQuery, if any. */
  template <typename TaskT, typename A0, typename... Rest>
  FullPtr<TaskT> Make(A0 &&a0, Rest &&...rest) const {
    if constexpr (std::is_same_v<std::decay_t<A0>, DomainQuery>) {
      return Build<TaskT>(a0, std::forward<Rest>(rest)...);
    } else {
      return Build<TaskT>(DomainQuery(), std::forward<A0>(a0),
                          std::forward<Rest>(rest)...);
    }
  }
  /** No arguments: the default query. */
  template <typename TaskT>
  FullPtr<TaskT> Make() const {
    return Build<TaskT>(DomainQuery());
  }
  /** Allocates TaskT{{}, args...} and fills its header (a subtask of the
   * running task, if any). */
  template <typename TaskT, typename... Args>
  FullPtr<TaskT> Build(const DomainQuery &dom, Args &&...args) const {
    return NewMethodTask<Def, TaskT>(internal::SubtaskNode(), pool_id_, dom,
                                     std::forward<Args>(args)...);
  }
};

namespace internal {
/** True if D has Run(T *, RunContext &) (else Module calls Run(T *)). */
template <typename D, typename T, typename = void>
struct RunTakesContext : std::false_type {};
template <typename D, typename T>
struct RunTakesContext<D, T,
                       std::void_t<decltype(std::declval<D &>().Run(
                           std::declval<T *>(), std::declval<RunContext &>()))>>
    : std::true_type {};
/** True if module definition Def declares kPinned = true. */
template <typename Def, typename = void>
struct PinnedModule : std::false_type {};
template <typename Def>
struct PinnedModule<Def, std::void_t<decltype(Def::kPinned)>>
    : std::bool_constant<Def::kPinned> {};
}  // namespace internal

/** Base of a module's container: registers Derived::Run(T *, RunContext &),
 * or Derived::Run(T *) when the method needs no context, as the handler of
 * each task type T in Def::Methods (Run overloads must be public). Export
 * the class with CHI_MODULE(Derived). */
template <typename Derived, typename Def>
class Module : public Container {
 public:
  /** The module's definition (CHI_MODULE reads its kName). */
  using ModuleDef = Def;

 protected:
  /** Fills the method table from Def::Methods; a Def declaring kPinned has
   * each container pinned to a worker once created. */
  Module() {
    RegisterAll(static_cast<typename Def::Methods *>(nullptr));
    pin_at_create_ = internal::PinnedModule<Def>::value;
  }
  /** From a method: sends TaskT(args...) to every container of this pool,
   * waits (the fiber yields) and calls merge(part) on each part that
   * succeeded; returns the first error among the parts, or Ok (see
   * ModuleClient::Gather). */
  template <typename TaskT, typename MergeFn, typename... Args>
  Status Gather(MergeFn &&merge, const Args &...args) const {
    return ModuleClient<Def>(pool_id_).template Gather<TaskT>(
        num_containers_, std::forward<MergeFn>(merge), args...);
  }

 private:
  /** Registers every listed task type. */
  template <typename... Ts>
  void RegisterAll(Methods<Ts...> *) {
    (RegisterOne<Ts>(), ...);
  }
  /** Registers task type T at its method id, named after the type. */
  template <typename T>
  void RegisterOne() {
    static const std::string name(TaskMethodName<T>());
    MethodEntry &e =
        NewEntry<T>(Def::Methods::template IdOf<T>(), name.c_str());
    e.run = [](Container *self, void *, Task *task, RunContext &rctx) {
      auto *derived = static_cast<Derived *>(self);
      if constexpr (internal::RunTakesContext<Derived, T>::value) {
        derived->Run(static_cast<T *>(task), rctx);
      } else {
        derived->Run(static_cast<T *>(task));
      }
    };
  }
};

}  // namespace chi

#endif  // CHIMAERA_MODULE_H_
