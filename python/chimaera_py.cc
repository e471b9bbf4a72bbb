// The `chimaera` Python module: a pybind11 binding of the Chimaera client
// API (connection, admin pool, and the small_message, compressor and kvs
// ChiMods), synchronous and asynchronous.
//
//   import chimaera
//   chimaera.connect()                    # reads CHI_SERVER_CONF
//   sm = chimaera.SmallMessage.create("sm")
//   assert sm.echo(b"hi") == b"hi"
//   fut = sm.async_compute(1000, 7)
//   value = fut.result(timeout_s=5)
//   sm.destroy()
//   chimaera.disconnect()
//
// Errors: every failed Status becomes chimaera.Error (attributes code,
// code_name, message); wrong argument types raise TypeError, bad values
// ValueError.
//
// Threading and locking. The GIL is released around everything that touches
// the runtime. Any use of the shared-memory segments holds Conn().mu shared;
// connect() and disconnect() hold it exclusively, so the segments are never
// detached under a call. A Future's own mutex (taken after Conn().mu) guards
// its state; no thread holds it while it waits for a task. No thread waits
// for the GIL while it holds a Future's mutex or Conn().mu exclusively. The
// main thread does take the GIL for a moment while it holds Conn().mu
// shared (a wait's Ctrl-C check): threads that hold the GIL only ever ask
// for Conn().mu shared (~Future), which a reader already inside never
// blocks (glibc's rwlocks prefer readers), and a signal handler run there
// cannot connect() or disconnect() (ConnGuard::CheckNotInsideACall).
#include <pybind11/eval.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "chimaera/admin/admin_client.h"
#include "chimaera/chimaera.h"
#include "chimaera/client_util.h"
#include "chimaera/task_graph.h"
#include "compressor/compressor_client.h"
#include "hermes_shm/status.h"
#include "kvs/kvs_client.h"
#include "small_message/small_message_client.h"

namespace py = pybind11;

namespace chi_py {

using chi::FullPtr;
using chi::PoolId;
using chi::u32;
using chi::u64;
using hshm::Status;
using hshm::StatusCode;
using hshm::StatusOr;

//------------------------------------------------------------------------------
// Errors
//------------------------------------------------------------------------------

/** A failed Status thrown through C++ code; translated to chimaera.Error at
 * the Python boundary. Any thread. */
class ChiError : public std::exception {
 public:
  /** Wraps `status` (REQUIRES: !status.ok()). */
  explicit ChiError(Status status)
      : status_(std::move(status)), what_(status_.ToString()) {}
  /** "<CodeName>: <message>". */
  const char *what() const noexcept override { return what_.c_str(); }
  /** The wrapped status. */
  const Status &status() const { return status_; }

 private:
  Status status_;
  std::string what_;
};

/** Throws ChiError if `s` is not ok. Any thread. */
void Check(const Status &s) {
  if (!s.ok()) throw ChiError(s);
}

/** Returns the value of `s` or throws its error as ChiError. Any thread. */
template <typename T>
T Check(StatusOr<T> &&s) {
  if (!s.ok()) throw ChiError(s.status());
  return std::move(s).value();
}

/** The chimaera.Error class (set once at import; GIL held to use it). */
py::object &ErrorType() {
  static py::object *type = new py::object();  // never destroyed: no GIL then
  return *type;
}

/** The chimaera.StatusCode IntEnum (set once at import; GIL held). */
py::object &StatusCodeType() {
  static py::object *type = new py::object();  // never destroyed: no GIL then
  return *type;
}

/** `bytes` as a Python str, UTF-8 with undecodable bytes as \\xNN escapes:
 * names and messages from the runtime may carry any bytes (pool names are
 * taken as bytes). REQUIRES: GIL held. */
py::str Text(const std::string &bytes) {
  PyObject *o = PyUnicode_DecodeUTF8(
      bytes.data(), static_cast<Py_ssize_t>(bytes.size()), "backslashreplace");
  if (!o) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(o);
}

/** Sets chimaera.Error(code, code_name, message) as the pending Python
 * exception; code is a chimaera.StatusCode member when the value is known.
 * REQUIRES: GIL held. */
void RaiseError(const Status &s) {
  int code = static_cast<int>(s.code());
  py::object code_obj = py::int_(code);
  if (code >= 0 && code <= static_cast<int>(StatusCode::kUnimplemented)) {
    code_obj = StatusCodeType()(code);
  }
  py::object err =
      ErrorType()(code_obj, hshm::StatusCodeName(s.code()), Text(s.message()));
  PyErr_SetObject(ErrorType().ptr(), err.ptr());
}

//------------------------------------------------------------------------------
// Connection
//------------------------------------------------------------------------------

class Future;

/** Process-wide connection state. Leaked on purpose: Futures may be
 * destroyed during interpreter teardown, after static destructors. */
struct Connection {
  std::shared_mutex mu;    ///< Shared: a use of shm. Exclusive: (dis)connect.
  bool connected = false;  ///< Guarded by mu.
  std::string conf;        ///< CHI_SERVER_CONF when connected. Guarded by mu.
  std::mutex futures_mu;   ///< Guards futures (taken after a Future's mutex).
  std::unordered_set<Future *> futures;  ///< Unresolved Futures.
};

/** The process's Connection; a forked child replaces it (AfterForkInChild):
 * the parent's may be locked by threads the child does not have. */
std::atomic<Connection *> g_conn{new Connection()};

/** Bumped in a forked child: Futures made before belong to the parent. */
std::atomic<u64> g_fork_gen{0};

/** Set when the interpreter exits: every thread's wait gives up, so that
 * the exit's disconnect does not wait for a daemon thread's long call. */
std::atomic<bool> g_exiting{false};

/** disconnect() calls waiting for the connection's lock: while one waits,
 * every thread's wait gives up as at exit (their calls raise), so that the
 * disconnect does not wait for another thread's long call. */
std::atomic<int> g_disconnecting{0};

/** True while waits must give up: the interpreter exits or a disconnect()
 * waits for the calls in flight. Any thread. */
bool WaitsGiveUp() {
  return g_exiting.load(std::memory_order_relaxed) ||
         g_disconnecting.load(std::memory_order_relaxed) > 0;
}

/** The ident of the interpreter's main thread, the one thread that runs
 * Python signal handlers (set at import). */
unsigned long g_main_thread = 0;

/** Serializes connect() calls; a forked child replaces it too. */
std::mutex *g_connect_mu = new std::mutex();

/** The process's Connection. Any thread. */
Connection &Conn() { return *g_conn.load(std::memory_order_acquire); }

/** os.register_at_fork(after_in_child=...): the child starts with a fresh
 * Connection in the parent's state (the old one is leaked, its mutexes
 * perhaps held by the parent's other threads), and its Futures made before
 * the fork become inert (their tasks are the parent's to wait for and
 * free). The core client registers the child at its first shared-memory
 * block or Send. Runs in
 * the child, one thread, GIL held. */
void AfterForkInChild() {
  Connection *old = g_conn.load(std::memory_order_acquire);
  auto *fresh = new Connection();
  fresh->connected = old->connected;
  fresh->conf = old->conf;
  g_conn.store(fresh, std::memory_order_release);
  g_connect_mu = new std::mutex();  // the old one may be held as well
  // A parent thread's disconnect() waiting meanwhile is not the child's.
  g_disconnecting.store(0, std::memory_order_relaxed);
  g_fork_gen.fetch_add(1, std::memory_order_acq_rel);
  // The forking thread is the child's main thread (it runs its signal
  // handlers), whichever thread it was in the parent.
  g_main_thread = PyThread_get_thread_ident();
}

/** Holds Conn().mu shared for a call that uses shared memory; throws
 * Unavailable when not connected. */
class ConnGuard {
 public:
  /** Locks; throws ChiError(Unavailable) when not connected. GIL released
   * (or at least not needed by any holder of the lock). */
  ConnGuard() : lock_(Conn().mu) {
    if (!Conn().connected) {
      throw ChiError(Status::Unavailable(
          "not connected to a Chimaera runtime: call chimaera.connect()"));
    }
    ++depth_;
  }
  ~ConnGuard() { --depth_; }
  ConnGuard(const ConnGuard &) = delete;
  ConnGuard &operator=(const ConnGuard &) = delete;

  /** Throws if the calling thread is inside a call (holds Conn().mu
   * shared): a Python signal handler run by a wait's Ctrl-C check. Asking
   * for Conn().mu exclusively there would wait for itself. */
  static void CheckNotInsideACall(const char *what) {
    if (depth_ > 0) {
      throw ChiError(Status::InvalidArgument(
          std::string(what) +
          " cannot run inside another call (from a signal handler that "
          "interrupted it)"));
    }
  }

 private:
  std::shared_lock<std::shared_mutex> lock_;
  static thread_local int depth_;  ///< ConnGuards alive in this thread.
};
thread_local int ConnGuard::depth_ = 0;

/** Converts an optional timeout in seconds into microseconds: the client's
 * task timeout (client.task_timeout_ms) when absent. Throws ValueError for a
 * negative or NaN value. REQUIRES: connected (for the default). */
u64 TimeoutUs(const std::optional<double> &timeout_s) {
  if (!timeout_s) return CHI_IPC->TaskTimeoutUs();
  double t = *timeout_s;
  if (std::isnan(t) || t < 0) {
    throw py::value_error("timeout_s must be a non-negative number");
  }
  constexpr double kMaxUs = 1e18;  // ~31700 years: "forever"
  double us = std::min(t * 1e6, kMaxUs);
  return static_cast<u64>(us);
}

/** Checks an optional timeout before the GIL is released (so the ValueError
 * is raised with the GIL held). GIL held. */
void ValidateTimeout(const std::optional<double> &timeout_s) {
  if (timeout_s && (std::isnan(*timeout_s) || *timeout_s < 0)) {
    throw py::value_error("timeout_s must be a non-negative number");
  }
}

/** chi::WaitInterruptFn of a wait in the main thread: runs the
 * interpreter's signal handlers (taking the GIL for a moment); true once
 * one raised (e.g. KeyboardInterrupt), whose exception then stays pending
 * in this thread for ThrowIfSignalled. Called by the core's blocking waits
 * between sleeps, GIL released. */
bool PythonSignalled(void *) {
  if (WaitsGiveUp()) return true;
  PyGILState_STATE g = PyGILState_Ensure();
  const bool raised = PyErr_Occurred() != nullptr || PyErr_CheckSignals() != 0;
  PyGILState_Release(g);
  return raised;
}

/** chi::WaitInterruptFn of a wait in any other thread: true once the
 * interpreter exits or while a disconnect() waits (signals are the main
 * thread's). GIL released. */
bool Exiting(void *) { return WaitsGiveUp(); }

/** Releases the GIL for its scope, as py::gil_scoped_release, which every
 * release in this module goes through. In a thread other than the main
 * one, if the interpreter is exiting when the scope ends, it parks the
 * thread for good instead of taking the GIL back: such a daemon thread may
 * otherwise reach the GIL after finalization began, where Python ends it
 * with pthread_exit, whose unwinding through gil_scoped_release's noexcept
 * destructor aborts the process. REQUIRES: GIL held. */
class __attribute__((visibility("hidden"))) ReleaseGil {
 public:
  ReleaseGil() : main_thread_(PyThread_get_thread_ident() == g_main_thread) {}
  ~ReleaseGil() {
    if (main_thread_ || !g_exiting.load(std::memory_order_relaxed)) return;
    for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
  }
  ReleaseGil(const ReleaseGil &) = delete;
  ReleaseGil &operator=(const ReleaseGil &) = delete;

 private:
  py::gil_scoped_release release_;  // constructed first, destroyed last
  bool main_thread_;
};

/** The WaitInterruptFn for the calling thread: PythonSignalled in the main
 * thread, Exiting in others. GIL held. */
chi::WaitInterruptFn InterruptFor() {
  return PyThread_get_thread_ident() == g_main_thread ? &PythonSignalled
                                                      : &Exiting;
}

/** Throws the exception a signal handler raised during a wait, if any.
 * GIL held. */
void ThrowIfSignalled() {
  if (PyErr_Occurred()) throw py::error_already_set();
}

/** Runs `fn()` with the GIL released, Conn().mu held shared and the thread's
 * synchronous-call deadline set to `timeout_s` (the configured one when
 * absent), and returns its result. In the main thread, a signal handler
 * that raises (Ctrl-C) ends the wait within about 20 ms: the task is
 * abandoned and its exception propagates instead of the result. Other
 * exceptions propagate (the GIL is reacquired first). REQUIRES: GIL held on
 * entry. */
template <typename Fn>
auto Blocking(const std::optional<double> &timeout_s, Fn &&fn)
    -> decltype(fn()) {
  ValidateTimeout(timeout_s);
  const chi::WaitInterruptFn interrupt = InterruptFor();
  auto run = [&]() -> decltype(fn()) {
    ReleaseGil release;
    ConnGuard guard;
    u64 ms = 0;  // 0: the configured deadline
    if (timeout_s) ms = std::max<u64>(1, TimeoutUs(timeout_s) / 1000);
    chi::ScopedTaskTimeout deadline(ms);
    chi::ScopedWaitInterrupt on_signal(interrupt, nullptr);
    return fn();
  };
  try {
    if constexpr (std::is_void_v<decltype(fn())>) {
      run();
      ThrowIfSignalled();
    } else {
      auto result = run();
      ThrowIfSignalled();
      return result;
    }
  } catch (const ChiError &) {
    ThrowIfSignalled();  // the interrupted wait's Timeout: say why instead
    throw;
  }
}

//------------------------------------------------------------------------------
// Futures
//------------------------------------------------------------------------------

/** The result of a task in C++ form (built without the GIL). */
struct Value {
  enum class Kind { kNone, kInt, kBool, kBytes };
  Kind kind = Kind::kNone;
  u64 num = 0;
  std::string bytes;
};

/** Converts `v` into a Python object. REQUIRES: GIL held. */
py::object ToPython(const Value &v) {
  switch (v.kind) {
    case Value::Kind::kInt:
      return py::int_(v.num);
    case Value::Kind::kBool:
      return py::bool_(v.num != 0);
    case Value::Kind::kBytes:
      return py::bytes(v.bytes);
    case Value::Kind::kNone:
      break;
  }
  return py::none();
}

/** Type-erased submitted task. Used only under its Future's mutex and
 * Conn().mu (shared). */
class Pending {
 public:
  virtual ~Pending() = default;
  /** The task (non-null). */
  virtual chi::Task *task() = 0;
  /** Copies the OUT fields into `out` and frees the buffers the task
   * returned. REQUIRES: complete with an ok status; called once. */
  virtual void Read(Value *out) = 0;
  /** Frees the task, and the OutBuf buffers of a failed one (a method may
   * fill one and then fail; Read frees a successful one's). REQUIRES:
   * complete, called once. */
  virtual void Delete() = 0;
};

/** Pending for a task of type TaskT whose outputs `read` consumes. */
template <typename TaskT, typename ReadFn>
class PendingTask : public Pending {
 public:
  /** Takes ownership of the submitted `task`. */
  PendingTask(FullPtr<TaskT> task, ReadFn read)
      : task_(task), read_(std::move(read)) {}
  chi::Task *task() override { return task_.ptr_; }
  void Read(Value *out) override { read_(task_.ptr_, out); }
  void Delete() override {
    if (task_->rc_ != 0) {
      chi::FieldArchive free_out(chi::FieldArchive::Mode::kFreeOut, task_.ptr_);
      task_->Fields(free_out);
    }
    CHI_IPC->DelTask(task_);
  }

 private:
  FullPtr<TaskT> task_;
  ReadFn read_;
};

/** An asynchronous call: owns a submitted task (which owns its input
 * buffers: chi::SubmitOwningInputs) until it completes (then it is freed
 * and the result kept) or the Future is dropped or the client disconnects
 * (then an unfinished task is abandoned to the runtime, which frees it and
 * its inputs). Methods may be called from any Python thread; see the file
 * comment for the lock order. */
class Future {
 public:
  /** Takes ownership of `pending` and registers the Future. REQUIRES:
   * Conn().mu held shared, connected. */
  Future(std::unique_ptr<Pending> pending, std::string what)
      : pending_(std::move(pending)),
        what_(std::move(what)),
        gen_(g_fork_gen.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> l(Conn().futures_mu);
    Conn().futures.insert(this);
  }
  Future(const Future &) = delete;
  Future &operator=(const Future &) = delete;

  /** Frees a completed task, or abandons an unfinished one. Called by
   * Python's GC with the GIL held (no thread waits on it then); may block
   * briefly while a disconnect is in progress. */
  ~Future() {
    if (Inherited()) return;  // the parent's task (or result): touch nothing
    if (resolved_.load(std::memory_order_acquire) && !retired_) return;
    std::shared_lock<std::shared_mutex> cl(Conn().mu);
    std::lock_guard<std::mutex> l(mu_);
    if (Conn().connected) {
      if (pending_) GiveUp(Status::Aborted("the Future was dropped"));
      FreeRetiredLocked();
    }
    Unregister();
  }

  /** True once the task completed. Non-blocking: false while another thread
   * is inside wait()/result() on this Future and has not yet collected the
   * result. GIL held. */
  bool Done() {
    if (resolved_.load(std::memory_order_acquire)) return true;
    if (Inherited()) return true;  // what it will ever be: result() raises
    std::shared_lock<std::shared_mutex> cl(Conn().mu, std::try_to_lock);
    if (!cl.owns_lock() || !Conn().connected) return false;
    std::unique_lock<std::mutex> l(mu_, std::try_to_lock);
    if (!l.owns_lock()) return false;
    return !pending_ || pending_->task()->IsComplete();
  }

  /** Waits until the task completes or `timeout_s` passes (default: the
   * client's task timeout); returns whether it completed. Never abandons the
   * task. Releases the GIL. REQUIRES: GIL held. */
  bool Wait(const std::optional<double> &timeout_s) {
    ValidateTimeout(timeout_s);
    if (resolved_.load(std::memory_order_acquire)) return true;
    CheckNotInherited();
    const chi::WaitInterruptFn interrupt = InterruptFor();
    bool done;
    {
      ReleaseGil release;
      done = WaitAndResolve(timeout_s, interrupt);
    }
    ThrowIfSignalled();  // Ctrl-C: the task stays pending
    return done;
  }

  /** The task's result (None, int, bool or bytes, by method). Waits
   * like Wait(); raises chimaera.Error(Timeout) if the task is still running
   * then (the Future stays usable), or the task's error. Repeatable: the
   * result is kept. REQUIRES: GIL held. */
  py::object Result(const std::optional<double> &timeout_s) {
    if (!Wait(timeout_s)) {
      throw ChiError(Status::Timeout(what_ + " did not complete in time"));
    }
    // Resolved: status_ and value_ no longer change.
    Check(status_);
    return ToPython(value_);
  }

  /** "<Future echo pending>" or "... done". GIL held. */
  std::string Repr() {
    return "<chimaera.Future " + what_ + (Done() ? " done>" : " pending>");
  }

  /** Abandons the task of an unresolved Future because the client is
   * disconnecting (its result is kept if it already completed). REQUIRES:
   * Conn().mu held exclusively, connected. */
  void OnDisconnect() {
    std::lock_guard<std::mutex> l(mu_);
    if (pending_) {
      GiveUp(
          Status::Aborted("the client disconnected before the task completed"));
    }
    Unregister();
  }

 private:
  /** True in a forked child for a Future made before the fork. Any thread. */
  bool Inherited() const {
    return gen_ != g_fork_gen.load(std::memory_order_acquire);
  }

  /** Throws Aborted for a Future made before the fork, in the child (its
   * lock may be held by a thread the child does not have). */
  void CheckNotInherited() const {
    if (Inherited()) {
      throw ChiError(Status::Aborted(
          what_ +
          " was started before os.fork(): its task is the parent "
          "process's"));
    }
  }

  /** Waits (GIL released, `interrupt` set for the wait) for completion
   * and, once complete, resolves. Returns whether the Future is resolved.
   * Several threads may wait at once, each to its own deadline: mu_ is not
   * held while waiting, and the task block is freed only once no thread
   * waits on it. Throws ChiError(Unavailable) if not connected. */
  bool WaitAndResolve(const std::optional<double> &timeout_s,
                      chi::WaitInterruptFn interrupt) {
    ConnGuard guard;  // held throughout: no disconnect frees the task
    chi::Task *task;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!pending_) return true;
      task = pending_->task();
      ++waiters_;
    }
    bool done;
    {
      chi::ScopedWaitInterrupt on_signal(interrupt, nullptr);
      done = task->WaitFor(TimeoutUs(timeout_s));
    }
    std::lock_guard<std::mutex> l(mu_);
    --waiters_;
    if (pending_ && done) {
      ResolveLocked();
      Unregister();
    }
    FreeRetiredLocked();
    return resolved_.load(std::memory_order_relaxed);
  }

  /** Records the result of the completed task and frees what it returned
   * and owns, and the task itself unless a thread still waits on it (then
   * the last to leave frees it). REQUIRES: mu_ and Conn().mu held,
   * complete. */
  void ResolveLocked() {
    status_ = pending_->task()->GetStatus();
    if (status_.ok()) pending_->Read(&value_);
    retired_ = std::move(pending_);
    FreeRetiredLocked();
    resolved_.store(true, std::memory_order_release);
  }

  /** Frees a resolved task no thread waits on any more. REQUIRES: mu_ and
   * Conn().mu held, connected. */
  void FreeRetiredLocked() {
    if (retired_ && waiters_ == 0) {
      retired_->Delete();
      retired_.reset();
    }
  }

  /** Resolves a completed task, else abandons it and records `why`.
   * REQUIRES: mu_ and Conn().mu held, connected, pending_. */
  void GiveUp(const Status &why) {
    if (pending_->task()->IsComplete() ||
        chi::internal::AbandonTask(pending_->task())) {
      // Complete (before or while we abandoned it): ours to free.
      ResolveLocked();
      return;
    }
    // The runtime frees the task, its outputs and the inputs it owns.
    pending_.reset();  // only the wrapper: the runtime owns the task now
    status_ = why;
    resolved_.store(true, std::memory_order_release);
  }

  /** Removes this Future from the registry. Any lock state. */
  void Unregister() {
    std::lock_guard<std::mutex> l(Conn().futures_mu);
    Conn().futures.erase(this);
  }

  std::mutex mu_;  ///< Guards pending_, retired_, waiters_, status_, value_.
  std::unique_ptr<Pending> pending_;  ///< Null once resolved.
  /** Resolved, read, but still waited on by a thread: freed by the last. */
  std::unique_ptr<Pending> retired_;
  u32 waiters_ = 0;   ///< Threads inside WaitAndResolve's wait.
  std::string what_;  ///< The call, for messages.
  Status status_;
  Value value_;
  std::atomic<bool> resolved_{false};  ///< status_/value_ are final.
  const u64 gen_;                      ///< g_fork_gen when made.
};

/** Wraps the submitted `task` in a Future that reads it with `read`; throws
 * OutOfMemory if `task` is null (the `main` segment is full; the inputs it
 * would have owned are freed already). REQUIRES: Conn().mu held shared,
 * connected. */
template <typename TaskT, typename ReadFn>
std::unique_ptr<Future> MakeFuture(FullPtr<TaskT> task, ReadFn read,
                                   const std::string &what) {
  if (task.IsNull()) {
    throw ChiError(Status::OutOfMemory("main segment is full"));
  }
  auto pending = std::make_unique<PendingTask<TaskT, ReadFn>>(task, read);
  return std::make_unique<Future>(std::move(pending), what);
}

/** A Future for a task with no result. */
template <typename TaskT>
std::unique_ptr<Future> MakeNoneFuture(FullPtr<TaskT> task,
                                       const std::string &what) {
  return MakeFuture(
      task, [](TaskT *, Value *) {}, what);
}

/** Copies `a` then `b` into a new client_data buffer (null when both are
 * empty); throws OutOfMemory. REQUIRES: Conn().mu held, connected. */
FullPtr<char> CopyIn(const std::string &a, const std::string &b = "") {
  size_t n = a.size() + b.size();
  if (n == 0) return FullPtr<char>();
  FullPtr<char> buf = CHI_IPC->AllocateBuffer(n);
  if (buf.IsNull()) throw ChiError(Status::OutOfMemory("data segment is full"));
  std::memcpy(buf.ptr_, a.data(), a.size());
  std::memcpy(buf.ptr_ + a.size(), b.data(), b.size());
  return buf;
}

/** Moves the `size` bytes the runtime returned at `p` into `out` (as
 * bytes) and frees `p`. REQUIRES: Conn().mu held, connected. */
void TakeBytes(const hipc::Pointer &p, u64 size, Value *out) {
  out->kind = Value::Kind::kBytes;
  FullPtr<char> buf(p);
  if (!buf.IsNull()) out->bytes.assign(buf.ptr_, size);
  (void)CHI_IPC->FreeBuffer(p);
}

//------------------------------------------------------------------------------
// Clients
//------------------------------------------------------------------------------

/** Destroys pool `id`. REQUIRES: Conn().mu held shared, connected. */
void DestroyPool(const PoolId &id) {
  if (id.IsNull()) throw py::value_error("the client has no pool");
  Check(chi::admin::Client().DestroyPool(id));
}

/** Parses a compression algorithm name ("zstd" or "lz4"); ValueError
 * otherwise. Any thread. */
chi::compressor::Algorithm ParseAlgo(const std::string &name) {
  if (name == "zstd") return chi::compressor::Algorithm::kZstd;
  if (name == "lz4") return chi::compressor::Algorithm::kLz4;
  throw py::value_error("unknown compression algorithm '" + name +
                        "' (expected 'zstd' or 'lz4')");
}

/** Python wrapper of chi::small_message::Client. */
struct SmallMessage {
  chi::small_message::Client client;
};

/** Python wrapper of chi::compressor::Client. */
struct Compressor {
  chi::compressor::Client client;
};

/** Python wrapper of chi::kvs::Client. */
struct Kvs {
  chi::kvs::Client client;
};

/** Python wrapper of chi::admin::Client (stateless). */
struct Admin {
  chi::admin::Client client;
};

/** __reduce__ of a pool client made from its PoolId (SmallMessage,
 * Compressor, Kvs): unpickles as type(self)(self.pool_id). Holds the GIL. */
py::tuple ReduceToPoolId(const py::object &self) {
  return py::make_tuple(self.get_type(), py::make_tuple(self.attr("pool_id")));
}

/** Connects this process to the runtime named by CHI_SERVER_CONF (or
 * `server_conf`, which is then set in os.environ, and so in the C
 * environment, as CHI_SERVER_CONF; put back as it was if the connection
 * fails). Idempotent; InvalidArgument for another `server_conf` while
 * connected. REQUIRES: GIL held. */
void Connect(const std::optional<std::string> &server_conf) {
  ConnGuard::CheckNotInsideACall("connect()");
  // One connect at a time, so that the configuration check and the
  // environment it sets hold together. Never waited for with the GIL held.
  std::unique_lock<std::mutex> serial(*g_connect_mu, std::defer_lock);
  {
    ReleaseGil release;
    serial.lock();
  }
  {
    ReleaseGil release;
    std::shared_lock<std::shared_mutex> l(Conn().mu);
    if (Conn().connected) {
      if (server_conf && *server_conf != Conn().conf) {
        throw ChiError(Status::InvalidArgument(
            "already connected to the runtime of CHI_SERVER_CONF='" +
            Conn().conf + "': disconnect() first"));
      }
      return;
    }
  }
  py::object environ = py::module_::import("os").attr("environ");
  py::object prev = py::none();
  if (server_conf) {
    prev = environ.attr("get")("CHI_SERVER_CONF");
    environ["CHI_SERVER_CONF"] = *server_conf;  // os.putenv too
  }
  try {
    ReleaseGil release;
    std::unique_lock<std::shared_mutex> l(Conn().mu);
    if (Conn().connected) {  // not after the check above (connect_mu)
      if (server_conf && *server_conf != Conn().conf) {
        throw ChiError(Status::InvalidArgument(
            "already connected to the runtime of CHI_SERVER_CONF='" +
            Conn().conf + "': disconnect() first"));
      }
      return;
    }
    Check(CHIMAERA_CLIENT_INIT());
    const char *conf = std::getenv("CHI_SERVER_CONF");
    Conn().conf = conf ? conf : "";
    Conn().connected = true;
  } catch (...) {
    if (server_conf) {
      if (prev.is_none()) {
        environ.attr("pop")("CHI_SERVER_CONF", py::none());
      } else {
        environ["CHI_SERVER_CONF"] = prev;
      }
    }
    throw;
  }
}

/** Abandons every unfinished Future's task and detaches from the runtime.
 * Idempotent. Calls in flight on other threads give up their waits (within
 * about 20 ms) and raise; the disconnect waits for them to return.
 * REQUIRES: GIL held. */
void Disconnect() {
  ConnGuard::CheckNotInsideACall("disconnect()");
  ReleaseGil release;
  std::unique_lock<std::shared_mutex> l(Conn().mu, std::defer_lock);
  {
    struct Announce {  // counted while this thread waits for the lock
      Announce() { g_disconnecting.fetch_add(1, std::memory_order_relaxed); }
      ~Announce() { g_disconnecting.fetch_sub(1, std::memory_order_relaxed); }
    } announce;
    l.lock();
  }
  if (!Conn().connected) return;
  std::vector<Future *> live;
  {
    std::lock_guard<std::mutex> fl(Conn().futures_mu);
    live.assign(Conn().futures.begin(), Conn().futures.end());
  }
  // No Future can be destroyed meanwhile: ~Future needs Conn().mu.
  for (Future *f : live) f->OnDisconnect();
  CHIMAERA->ClientFinalize();
  Conn().connected = false;
}

/** True while connected. GIL held. */
bool IsConnected() {
  ReleaseGil release;
  std::shared_lock<std::shared_mutex> l(Conn().mu);
  return Conn().connected;
}

/** A pool description as a dict. REQUIRES: GIL held. */
py::dict PoolDict(const chi::admin::PoolDesc &d) {
  py::dict out;
  out["id"] = d.id;
  out["name"] = Text(d.name);
  out["module"] = Text(d.module);
  out["containers"] = d.num_containers;
  return out;
}

/** Python source of chimaera.Error. */
constexpr const char kErrorSource[] = R"PY(
class Error(Exception):
    """A Chimaera call failed.

    Attributes:
        code: the status code, a chimaera.StatusCode (an IntEnum, so it
            also compares equal to the plain int).
        code_name: the code's name, e.g. "NotFound".
        message: the human-readable message.
    """

    def __init__(self, code, code_name, message):
        super().__init__(code, code_name, message)
        self.code = code
        self.code_name = code_name
        self.message = message

    def __str__(self):
        return "%s: %s" % (self.code_name, self.message)
)PY";

/** The optional timeout_s argument of every blocking method (seconds). */
using OptT = std::optional<double>;

}  // namespace chi_py

PYBIND11_MODULE(chimaera, m) {
  using namespace chi_py;  // NOLINT: module body only
  namespace sm = chi::small_message;
  m.doc() =
      "Python client of the Chimaera task runtime: connect(), Admin, "
      "SmallMessage, Compressor, Kvs and Future. Errors raise "
      "chimaera.Error.";

  g_main_thread = py::module_::import("threading")
                      .attr("main_thread")()
                      .attr("ident")
                      .cast<unsigned long>();

  // --- Errors -------------------------------------------------------------
  {
    py::dict ns;
    ns["__builtins__"] = py::module_::import("builtins");
    ns["__name__"] = "chimaera";
    py::exec(kErrorSource, ns);
    ErrorType() = ns["Error"];
    m.attr("Error") = ErrorType();
  }
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ChiError &e) {
      RaiseError(e.status());
    }
  });
  // StatusCode: an enum.IntEnum named by hshm::StatusCodeName ("OK",
  // "NotFound", ...), so Error.code compares equal to plain ints too.
  {
    py::list members;
    for (int c = 0; c <= static_cast<int>(StatusCode::kUnimplemented); ++c) {
      members.append(
          py::make_tuple(hshm::StatusCodeName(static_cast<StatusCode>(c)), c));
    }
    py::object int_enum = py::module_::import("enum").attr("IntEnum");
    StatusCodeType() =
        int_enum("StatusCode", members, py::arg("module") = "chimaera");
    m.attr("StatusCode") = StatusCodeType();
  }

  // --- Connection ---------------------------------------------------------
  m.def("connect", &Connect, py::arg("server_conf") = py::none(),
        "Attaches to the local runtime named by CHI_SERVER_CONF (or by "
        "server_conf, which is exported as CHI_SERVER_CONF). Idempotent. "
        "Raises chimaera.Error(Unavailable) if no runtime answers.");
  m.def("disconnect", &Disconnect,
        "Abandons the tasks of unfinished Futures and detaches from the "
        "runtime. Idempotent; also runs at interpreter exit.");
  m.def("is_connected", &IsConnected, "True while connected.");
  // At exit, waits give up first: a daemon thread's long call would
  // otherwise hold the connection (and the exit) until its task ended.
  py::module_::import("atexit").attr("register")(py::cpp_function([]() {
    g_exiting.store(true, std::memory_order_relaxed);
    Disconnect();
  }));
  py::module_::import("os").attr("register_at_fork")(
      py::arg("after_in_child") = py::cpp_function(&AfterForkInChild));

  // --- PoolId -------------------------------------------------------------
  py::class_<PoolId>(m, "PoolId", "Identifies a pool (node_id, unique).")
      .def(py::init<u32, u32>(), py::arg("node_id"), py::arg("unique"))
      .def_readonly("node_id", &PoolId::node_id_)
      .def_readonly("unique", &PoolId::unique_)
      .def("is_null", &PoolId::IsNull)
      // Another type compares unequal (NotImplemented lets Python decide),
      // so a PoolId may share a list or a dict with other keys.
      .def("__eq__",
           [](const PoolId &a, const py::object &b) -> py::object {
             if (!py::isinstance<PoolId>(b))
               return py::reinterpret_borrow<py::object>(Py_NotImplemented);
             return py::bool_(a == b.cast<const PoolId &>());
           })
      .def("__ne__",
           [](const PoolId &a, const py::object &b) -> py::object {
             if (!py::isinstance<PoolId>(b))
               return py::reinterpret_borrow<py::object>(Py_NotImplemented);
             return py::bool_(a != b.cast<const PoolId &>());
           })
      .def("__hash__", [](const PoolId &a) { return a.ToU64(); })
      .def("__repr__",
           [](const PoolId &a) {
             return "PoolId(" + std::to_string(a.node_id_) + ", " +
                    std::to_string(a.unique_) + ")";
           })
      .def("__str__",
           [](const PoolId &a) {
             return std::to_string(a.node_id_) + "." +
                    std::to_string(a.unique_);
           })
      // Pickles (and copies) as PoolId(node_id, unique), with any protocol
      // (py::pickle's __setstate__ aborts under protocols 0 and 1).
      .def("__reduce__", [](const py::object &self) {
        const PoolId &a = self.cast<const PoolId &>();
        return py::make_tuple(self.get_type(),
                              py::make_tuple(a.node_id_, a.unique_));
      });

  // --- Future -------------------------------------------------------------
  py::class_<Future>(m, "Future",
                     "The pending result of an async_* call. Dropping an "
                     "unfinished Future abandons its task.")
      .def("done", &Future::Done, "True once the task completed (no wait).")
      .def("wait", &Future::Wait, py::arg("timeout_s") = py::none(),
           "Waits up to timeout_s seconds (default: the client task "
           "timeout); returns done().")
      .def("result", &Future::Result, py::arg("timeout_s") = py::none(),
           "Waits like wait() and returns the result; raises chimaera.Error "
           "with the task's status, or Timeout if it is still running.")
      .def("__repr__", &Future::Repr)
      .def("__reduce__", [](const Future &) -> py::object {
        throw py::type_error(
            "cannot pickle a chimaera.Future: its task belongs to this "
            "process (pickle its result instead)");
      });

  // --- Admin --------------------------------------------------------------
  py::class_<Admin>(m, "Admin", "Client of the runtime's admin pool.")
      .def(py::init<>())
      // Pickles as Admin() (it holds no state).
      .def("__reduce__",
           [](const py::object &self) {
             return py::make_tuple(self.get_type(), py::tuple());
           })
      .def(
          "noop",
          [](Admin &a, OptT t) {
            Blocking(t, [&] { Check(a.client.Noop()); });
          },
          py::arg("timeout_s") = py::none(), "Runs a no-op task.")
      .def(
          "echo",
          [](Admin &a, u64 v, OptT t) {
            return Blocking(t, [&] { return Check(a.client.Echo(v)); });
          },
          py::arg("value"), py::arg("timeout_s") = py::none(),
          "Echoes an unsigned 64-bit integer through the runtime.")
      .def(
          "fan_out",
          [](Admin &a, u32 count, u32 depth, OptT t) {
            return Blocking(
                t, [&] { return Check(a.client.FanOut(count, depth)); });
          },
          py::arg("count"), py::arg("depth") = 1,
          py::arg("timeout_s") = py::none(),
          "Runs count subtasks depth levels deep; returns their sum.")
      .def(
          "stat",
          [](Admin &a, OptT t) {
            return Text(Blocking(t, [&] { return Check(a.client.Stat()); }));
          },
          py::arg("timeout_s") = py::none(),
          "A text report of the runtime's state.")
      .def(
          "list_pools",
          [](Admin &a, OptT t) {
            auto pools =
                Blocking(t, [&] { return Check(a.client.ListPools()); });
            py::list out;
            for (const auto &d : pools) out.append(PoolDict(d));
            return out;
          },
          py::arg("timeout_s") = py::none(),
          "Every pool of this node as dicts {id, name, module, containers}.")
      .def(
          "list_modules",
          [](Admin &a, OptT t) {
            auto names =
                Blocking(t, [&] { return Check(a.client.ListModules()); });
            py::list out;
            for (const auto &n : names) out.append(Text(n));
            return out;
          },
          py::arg("timeout_s") = py::none(),
          "Names of the modules the runtime has loaded.")
      .def(
          "lookup_pool",
          [](Admin &a, const std::string &name, OptT t) {
            return Blocking(t,
                            [&] { return Check(a.client.LookupPool(name)); });
          },
          py::arg("name"), py::arg("timeout_s") = py::none(),
          "The PoolId of pool `name`; chimaera.Error(NotFound) if none.")
      .def(
          "get_or_create_pool",
          [](Admin &a, const std::string &name, const std::string &module,
             u32 containers, const std::string &params, OptT t) {
            return Blocking(t, [&] {
              bool existed = false;
              PoolId id = Check(a.client.GetOrCreatePool(
                  name, module, containers, params, &existed));
              return std::make_pair(id, existed);
            });
          },
          py::arg("name"), py::arg("module"), py::arg("containers") = 1,
          py::arg("params") = py::bytes(""), py::arg("timeout_s") = py::none(),
          "Gets or creates pool `name` of `module`; returns (PoolId, "
          "existed). NotFound if the runtime cannot load the module.")
      .def(
          "destroy_pool",
          [](Admin &, const PoolId &id, OptT t) {
            Blocking(t, [&] { DestroyPool(id); });
          },
          py::arg("pool_id"), py::arg("timeout_s") = py::none(),
          "Destroys pool `pool_id` on every node.")
      .def(
          "pin_container",
          [](Admin &a, const PoolId &id, u32 container, u32 worker, OptT t) {
            Blocking(t, [&] {
              Check(a.client.PinContainer(id, container, worker));
            });
          },
          py::arg("pool_id"), py::arg("container"), py::arg("worker"),
          py::arg("timeout_s") = py::none(),
          "Pins a container to a worker of its node: its tasks then all run "
          "there, one at a time. InvalidArgument for a bad worker, "
          "AlreadyExists if pinned to another.")
      .def(
          "stop_runtime",
          [](Admin &a, OptT t) {
            Blocking(t, [&] { Check(a.client.StopRuntime()); });
          },
          py::arg("timeout_s") = py::none(),
          "Asks the runtime to stop; returns once it accepted.")
      .def(
          "async_noop",
          [](Admin &a) {
            return Blocking(std::nullopt, [&] {
              return MakeNoneFuture(a.client.AsyncNoop(), "admin.noop");
            });
          },
          "Submits a no-op; the Future's result is None.")
      .def(
          "async_echo",
          [](Admin &a, u64 v) {
            return Blocking(std::nullopt, [&] {
              return MakeFuture(
                  a.client.AsyncEcho(v),
                  [](chi::admin::EchoTask *t, Value *out) {
                    out->kind = Value::Kind::kInt;
                    out->num = t->ret_;
                  },
                  "admin.echo");
            });
          },
          py::arg("value"), "Submits an echo; the result is the int.")
      .def(
          "async_fan_out",
          [](Admin &a, u32 count, u32 depth) {
            return Blocking(std::nullopt, [&] {
              return MakeFuture(
                  a.client.AsyncFanOut(count, depth),
                  [](chi::admin::FanOutTask *t, Value *out) {
                    out->kind = Value::Kind::kInt;
                    out->num = t->sum_;
                  },
                  "admin.fan_out");
            });
          },
          py::arg("count"), py::arg("depth") = 1,
          "Submits a fan-out; the result is the sum.");

  // --- SmallMessage -------------------------------------------------------
  py::class_<SmallMessage>(m, "SmallMessage",
                           "Client of one small_message pool.")
      .def(py::init(
               [](const PoolId &id) { return SmallMessage{sm::Client(id)}; }),
           py::arg("pool_id"), "A client of the existing pool `pool_id`.")
      // Pickles as a client of the same pool (multiprocessing may hand it to
      // another process).
      .def("__reduce__",
           [](const py::object &self) { return ReduceToPoolId(self); })
      .def_static(
          "create",
          [](const std::string &name, u32 containers, OptT t) {
            return Blocking(t, [&] {
              SmallMessage s;
              Check(s.client.Create(name, containers));
              return s;
            });
          },
          py::arg("pool_name"), py::arg("containers") = 1,
          py::arg("timeout_s") = py::none(),
          "Gets or creates the small_message pool `pool_name`.")
      .def_property_readonly(
          "pool_id", [](const SmallMessage &s) { return s.client.pool_id(); })
      .def(
          "destroy",
          [](SmallMessage &s, OptT t) {
            Blocking(t, [&] { DestroyPool(s.client.pool_id()); });
          },
          py::arg("timeout_s") = py::none(), "Destroys the pool.")
      .def(
          "noop",
          [](SmallMessage &s, OptT t) {
            Blocking(t, [&] { Check(s.client.Noop()); });
          },
          py::arg("timeout_s") = py::none(), "Runs a no-op.")
      .def(
          "echo",
          [](SmallMessage &s, const std::string &data, OptT t) {
            return py::bytes(
                Blocking(t, [&] { return Check(s.client.Echo(data)); }));
          },
          py::arg("data"), py::arg("timeout_s") = py::none(),
          "Sends bytes through the runtime and returns the echo (bytes).")
      .def(
          "compute",
          [](SmallMessage &s, u64 iters, u64 seed, OptT t) {
            return Blocking(
                t, [&] { return Check(s.client.Compute(iters, seed)); });
          },
          py::arg("iters"), py::arg("seed") = 0,
          py::arg("timeout_s") = py::none(),
          "Runs ComputeKernel(iters, seed) in the runtime; returns it.")
      .def(
          "stencil_run",
          [](SmallMessage &s, u32 width, u32 steps, u64 iters, OptT t) {
            return Blocking(t, [&] {
              return Check(s.client.StencilRun(width, steps, iters));
            });
          },
          py::arg("width"), py::arg("steps"), py::arg("iters"),
          py::arg("timeout_s") = py::none(),
          "Runs the in-runtime stencil loop; returns its checksum.")
      .def(
          "async_noop",
          [](SmallMessage &s) {
            return Blocking(std::nullopt, [&] {
              return MakeNoneFuture(s.client.AsyncNoop(), "small_message.noop");
            });
          },
          "Submits a no-op; the result is None.")
      .def(
          "async_echo",
          [](SmallMessage &s, const std::string &data) {
            return Blocking(std::nullopt, [&] {
              FullPtr<char> buf = CopyIn(data);
              return MakeFuture(
                  chi::SubmitOwningInputs(
                      s.client.NewTask<sm::EchoTask>(chi::DomainQuery(),
                                                     buf.shm_, data.size()),
                      {buf.shm_}),
                  [](sm::EchoTask *t, Value *out) {
                    TakeBytes(t->ret_, t->ret_size_, out);
                  },
                  "small_message.echo");
            });
          },
          py::arg("data"), "Submits an echo; the result is the bytes.")
      .def(
          "async_compute",
          [](SmallMessage &s, u64 iters, u64 seed) {
            return Blocking(std::nullopt, [&] {
              return MakeFuture(
                  s.client.AsyncCompute(iters, seed),
                  [](sm::ComputeTask *t, Value *out) {
                    out->kind = Value::Kind::kInt;
                    out->num = t->result_;
                  },
                  "small_message.compute");
            });
          },
          py::arg("iters"), py::arg("seed") = 0,
          "Submits a Compute; the result is the int.");

  // --- Compressor ---------------------------------------------------------
  namespace cmp = chi::compressor;
  py::class_<Compressor>(m, "Compressor",
                         "Client of one compressor pool (algorithms 'zstd' "
                         "and 'lz4').")
      .def(py::init(
               [](const PoolId &id) { return Compressor{cmp::Client(id)}; }),
           py::arg("pool_id"), "A client of the existing pool `pool_id`.")
      // Pickles as a client of the same pool (multiprocessing may hand it to
      // another process).
      .def("__reduce__",
           [](const py::object &self) { return ReduceToPoolId(self); })
      .def_static(
          "create",
          [](const std::string &name, u32 containers, OptT t) {
            return Blocking(t, [&] {
              Compressor c;
              Check(c.client.Create(name, containers));
              return c;
            });
          },
          py::arg("pool_name"), py::arg("containers") = 1,
          py::arg("timeout_s") = py::none(),
          "Gets or creates the compressor pool `pool_name`.")
      .def_property_readonly(
          "pool_id", [](const Compressor &c) { return c.client.pool_id(); })
      .def(
          "destroy",
          [](Compressor &c, OptT t) {
            Blocking(t, [&] { DestroyPool(c.client.pool_id()); });
          },
          py::arg("timeout_s") = py::none(), "Destroys the pool.")
      .def(
          "compress",
          [](Compressor &c, const std::string &data, const std::string &algo,
             int level, OptT t) {
            cmp::Algorithm a = ParseAlgo(algo);
            return py::bytes(Blocking(
                t, [&] { return Check(c.client.Compress(a, data, level)); }));
          },
          py::arg("data"), py::arg("algo") = "zstd", py::arg("level") = 0,
          py::arg("timeout_s") = py::none(),
          "Compresses bytes; returns the compressed bytes.")
      .def(
          "decompress",
          [](Compressor &c, const std::string &data, u64 orig_size,
             const std::string &algo, OptT t) {
            cmp::Algorithm a = ParseAlgo(algo);
            return py::bytes(Blocking(t, [&] {
              return Check(c.client.Decompress(a, data, orig_size));
            }));
          },
          py::arg("data"), py::arg("orig_size"), py::arg("algo") = "zstd",
          py::arg("timeout_s") = py::none(),
          "Decompresses bytes made by `algo` from orig_size bytes.")
      .def(
          "async_compress",
          [](Compressor &c, const std::string &data, const std::string &algo,
             int level) {
            cmp::Algorithm a = ParseAlgo(algo);
            return Blocking(std::nullopt, [&] {
              FullPtr<char> buf = CopyIn(data);
              return MakeFuture(
                  c.client.AsyncCompressOwning(a, buf, data.size(), level),
                  [](cmp::CompressTask *t, Value *out) {
                    TakeBytes(t->out_, t->out_size_, out);
                  },
                  "compressor.compress");
            });
          },
          py::arg("data"), py::arg("algo") = "zstd", py::arg("level") = 0,
          "Submits a compression; the result is the compressed bytes.")
      .def(
          "async_decompress",
          [](Compressor &c, const std::string &data, u64 orig_size,
             const std::string &algo) {
            cmp::Algorithm a = ParseAlgo(algo);
            return Blocking(std::nullopt, [&] {
              FullPtr<char> buf = CopyIn(data);
              return MakeFuture(
                  c.client.AsyncDecompressOwning(a, buf, data.size(),
                                                 orig_size),
                  [](cmp::DecompressTask *t, Value *out) {
                    TakeBytes(t->out_, t->out_size_, out);
                  },
                  "compressor.decompress");
            });
          },
          py::arg("data"), py::arg("orig_size"), py::arg("algo") = "zstd",
          "Submits a decompression; the result is the original bytes.");

  // --- Kvs ----------------------------------------------------------------
  namespace kvs = chi::kvs;
  py::class_<Kvs>(m, "Kvs", "Client of one kvs (key-value store) pool.")
      .def(py::init([](const PoolId &id) {
             return Blocking(std::nullopt, [&] {
               Kvs k;
               Check(k.client.Attach(id));
               return k;
             });
           }),
           py::arg("pool_id"),
           "A client of the existing kvs pool `pool_id` (as attach()).")
      .def_static(
          "create",
          [](const std::string &name, u32 containers, OptT t) {
            return Blocking(t, [&] {
              Kvs k;
              Check(k.client.Create(name, containers));
              return k;
            });
          },
          py::arg("pool_name"), py::arg("containers") = 1,
          py::arg("timeout_s") = py::none(),
          "Gets or creates the kvs pool `pool_name` (an existing pool keeps "
          "its container count).")
      .def_static(
          "attach",
          [](const PoolId &id, OptT t) {
            return Blocking(t, [&] {
              Kvs k;
              Check(k.client.Attach(id));
              return k;
            });
          },
          py::arg("pool_id"), py::arg("timeout_s") = py::none(),
          "A client of the existing kvs pool `pool_id`.")
      // Pickles as a client of the same pool; unpickling attaches to it (a
      // call: chimaera.Error(Unavailable) in a process not connected).
      .def("__reduce__",
           [](const py::object &self) { return ReduceToPoolId(self); })
      .def_property_readonly("pool_id",
                             [](const Kvs &k) { return k.client.pool_id(); })
      .def_property_readonly(
          "num_containers",
          [](const Kvs &k) { return k.client.num_containers(); })
      .def(
          "destroy",
          [](Kvs &k, OptT t) {
            Blocking(t, [&] { DestroyPool(k.client.pool_id()); });
          },
          py::arg("timeout_s") = py::none(), "Destroys the pool.")
      .def(
          "put",
          [](Kvs &k, const std::string &key, const std::string &value, OptT t) {
            return Blocking(t, [&] {
              bool replaced = false;
              Check(k.client.Put(key, value, &replaced));
              return replaced;
            });
          },
          py::arg("key"), py::arg("value"), py::arg("timeout_s") = py::none(),
          "Stores value under key; returns whether the key existed.")
      .def(
          "get",
          [](Kvs &k, const std::string &key, OptT t) {
            return py::bytes(
                Blocking(t, [&] { return Check(k.client.Get(key)); }));
          },
          py::arg("key"), py::arg("timeout_s") = py::none(),
          "The value of key (bytes); chimaera.Error(NotFound) if none.")
      .def(
          "delete",
          [](Kvs &k, const std::string &key, OptT t) {
            Blocking(t, [&] { Check(k.client.Delete(key)); });
          },
          py::arg("key"), py::arg("timeout_s") = py::none(),
          "Removes key; chimaera.Error(NotFound) if it has no value.")
      .def(
          "scan",
          [](Kvs &k, const std::string &start, std::optional<u32> max_count,
             bool prefix, OptT t) {
            auto keys = Blocking(t, [&] {
              return Check(k.client.Scan(
                  start, max_count.value_or(kvs::Client::kScanAll),
                  prefix ? kvs::ScanMode::kPrefix : kvs::ScanMode::kFromKey));
            });
            py::list out;
            for (const auto &key : keys) out.append(py::bytes(key));
            return out;
          },
          py::arg("start") = py::bytes(""), py::arg("max_count") = py::none(),
          py::arg("prefix") = false, py::arg("timeout_s") = py::none(),
          "Sorted keys >= start (or starting with start if prefix), at most "
          "max_count of them.")
      .def(
          "async_put",
          [](Kvs &k, const std::string &key, const std::string &value) {
            return Blocking(std::nullopt, [&] {
              FullPtr<char> buf = CopyIn(key, value);
              return MakeFuture(
                  k.client.AsyncPutOwning(buf, key.size(), value.size()),
                  [](kvs::PutTask *t, Value *out) {
                    out->kind = Value::Kind::kBool;
                    out->num = t->replaced_;
                  },
                  "kvs.put");
            });
          },
          py::arg("key"), py::arg("value"),
          "Submits a put; the result is whether the key existed.")
      .def(
          "async_get",
          [](Kvs &k, const std::string &key) {
            return Blocking(std::nullopt, [&] {
              FullPtr<char> buf = CopyIn(key);
              return MakeFuture(
                  k.client.AsyncGetOwning(buf, key.size()),
                  [](kvs::GetTask *t, Value *out) {
                    TakeBytes(t->value_, t->value_size_, out);
                  },
                  "kvs.get");
            });
          },
          py::arg("key"), "Submits a get; the result is the value (bytes).")
      .def(
          "async_delete",
          [](Kvs &k, const std::string &key) {
            return Blocking(std::nullopt, [&] {
              FullPtr<char> buf = CopyIn(key);
              return MakeNoneFuture(k.client.AsyncDeleteOwning(buf, key.size()),
                                    "kvs.delete");
            });
          },
          py::arg("key"), "Submits a delete; the result is None.");
}
