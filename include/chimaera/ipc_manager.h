// The IPC manager: shared-memory segments, task allocation and submission.
//
// The runtime (ServerInit) binds its handshake server (chimaera/handshake.h),
// creates the three segments -- `main` (tasks), `client_data` (client
// buffers) and `runtime_data` (runtime buffers) -- and the process queue in
// `main`. A client (ClientInit) asks the runtime's server for the segment
// names over TCP, attaches them, and then talks to the runtime through
// shared memory only.
//
// Threading: Init/Finalize run once, on one thread, before/after everything
// else. NewTask, DelTask, AllocateBuffer, FreeBuffer and Send may be called
// from any thread (and, in the runtime, from inside task fibers).
#ifndef CHIMAERA_IPC_MANAGER_H_
#define CHIMAERA_IPC_MANAGER_H_

#include <atomic>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "chimaera/chimaera_types.h"
#include "chimaera/task.h"
#include "hermes_shm/data_structures/multi_mpsc_queue.h"
#include "hermes_shm/memory/posix_shm.h"
#include "hermes_shm/singleton.h"

/** Allocator of the `main` segment (tasks). */
#ifndef CHI_MAIN_ALLOC_T
#define CHI_MAIN_ALLOC_T hipc::ThreadLocalAllocator
#endif
/** Allocator type that task constructors receive (the main allocator). */
#ifndef CHI_ALLOC_T
#define CHI_ALLOC_T CHI_MAIN_ALLOC_T
#endif
/** Allocator of the `client_data` segment. */
#ifndef CHI_CDATA_ALLOC_T
#define CHI_CDATA_ALLOC_T hipc::ThreadLocalAllocator
#endif
/** Allocator of the `runtime_data` segment. */
#ifndef CHI_RDATA_ALLOC_T
#define CHI_RDATA_ALLOC_T hipc::ThreadLocalAllocator
#endif

namespace chi {

/** LaneHeader::flags_ bit: the lane's container is being destroyed. */
static GLOBAL_CROSS_CONST u32 kLaneRetired = 1;
/** TaskLane::flags_ bit: the lane of a pinned container; it never moves to
 * another worker (Container::PinToWorker). */
static GLOBAL_CROSS_CONST u32 kLanePinned = 2;

/** The process queue: lanes x {kLowLatency, kHighLatency} of tasks, each
 * named by its offset in `main`. Every task lives in `main`, so the allocator
 * id a full hipc::Pointer would carry is implied (IpcManager::TaskPointer
 * adds it back); an 8-byte value lets a slot be 16 bytes, published in one
 * atomic step (hermes_shm/data_structures/multi_mpsc_queue.h). */
using ProcessQueue = hipc::multi_mpsc_queue<hipc::OffsetPointer>;
using Lane = ProcessQueue::Lane;
/** A process-queue lane seen through this process's own copy of the queue's
 * shape (the runtime's comes from its configuration, never from the
 * segment), holding the consumer's position privately. */
using LaneView = ProcessQueue::View;

/** Per-worker state shared with clients (wake-ups, counters). */
/// Two cache lines, padded (not alignas: shm blocks are 16-byte aligned).
/// The first holds what producers read on every push (the sleep flag) and
/// changes rarely; the second holds counters the worker bumps per task, so
/// those writes never evict the flag from the producers' caches.
struct WorkerShared {
  std::atomic<u32> sleeping_{0};   ///< Futex word: 1 while the worker sleeps.
  std::atomic<u32> kind_{0};       ///< WorkerKind of the worker.
  std::atomic<u32> num_lanes_{0};  ///< Lanes it drains.
  char pad0_[HSHM_CACHELINE_SIZE - 12];
  std::atomic<u64> tasks_done_{0};  ///< Tasks this worker completed.
  std::atomic<u64> wakeups_{0};     ///< Times a producer woke it.
  /** TraceClock ticks spent idle (polling nothing or asleep) in idle
   * periods that ended; the worker adds each period when work arrives. */
  std::atomic<u64> idle_ticks_{0};
  /** TraceClock when the current idle period began, or 0 while busy. */
  std::atomic<u64> idle_since_{0};
  char pad1_[HSHM_CACHELINE_SIZE - 32];
};
static_assert(sizeof(WorkerShared) == 2 * HSHM_CACHELINE_SIZE, "two lines");

/** Root of the `main` segment: its allocator's custom header. */
struct IpcShared {
  u64 magic_ = 0;
  NodeId node_id_ = 0;
  i32 runtime_pid_ = 0;
  std::atomic<u32> ready_{0};     ///< 1 once the runtime serves tasks.
  std::atomic<u32> shutdown_{0};  ///< 1 once the runtime is stopping.
  hipc::Pointer process_queue_;   ///< ProcessQueue.
  hipc::Pointer workers_;         ///< WorkerShared[num_workers_].
  u32 num_workers_ = 0;
  std::atomic<u64> next_task_major_{1};  ///< TaskNode major generator.
  u64 runtime_start_time_ = 0;  ///< Runtime's start time (pid reuse check).
  std::atomic<u64> heartbeat_ns_{0};  ///< Monotonic ns of the last stamp.
};

class HandshakeServer;  // chimaera/handshake.h (runtime only)

/** Segments and queues of one runtime, as seen by this process. */
class IpcManager {
 public:
  IpcManager();
  ~IpcManager();

  /** Client: finds the runtime through its loopback server and attaches its
   * segments. Unavailable (fast, clear message) if no runtime answers. */
  Status ClientInit();
  /** Runtime: binds the server, creates segments, allocators and the process
   * queue. Fails if another runtime holds the port or the segments; removes
   * segments a crashed runtime left behind. */
  Status ServerInit();
  /** Runtime: starts answering client handshakes (after workers run). */
  Status StartServer();
  /** Marks the runtime as stopping (new Sends fail with Unavailable). */
  void BeginShutdown();
  /** Stops the server, detaches (client) or destroys (runtime) segments. */
  void Finalize();

  /** Allocates a task in `main` and constructs it: an aggregate task type
   * (chimaera/module.h) as TaskT{{}, args...} (its first fields in order),
   * any other as TaskT(CtxAllocator, args...). Stamps its TaskTypeTag.
   * Null if `main` is exhausted. */
  template <typename TaskT, typename... Args>
  FullPtr<TaskT> NewTask(const hipc::MemContext &ctx, Args &&...args) {
    static_assert(std::is_trivially_destructible_v<TaskT>,
                  CHI_TASK_LAYOUT_RULE);
    FullPtr<TaskT> t;
    if constexpr (std::is_aggregate_v<TaskT>) {
      t = main_alloc_->template AllocatePtr<TaskT>(ctx);
      if (t.IsNull()) return t;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
      // Fields past `args` take their default member initializers or are
      // value-initialized: intended, so -Wextra need not say so.
      new (t.ptr_) TaskT{{}, std::forward<Args>(args)...};
#pragma GCC diagnostic pop
    } else {
      hipc::CtxAllocator<CHI_MAIN_ALLOC_T> alloc(ctx, main_alloc_);
      t = main_alloc_->template NewObj<TaskT>(ctx, alloc,
                                              std::forward<Args>(args)...);
      if (t.IsNull()) return t;
    }
    t->type_tag_ = kTaskTypeTag<TaskT>;
    return t;
  }
  /** NewTask with the default memory context. */
  template <typename TaskT, typename... Args>
  FullPtr<TaskT> NewTaskDefault(Args &&...args) {
    return NewTask<TaskT>(HSHM_MCTX, std::forward<Args>(args)...);
  }
  /** Destroys and frees a task (and its error message, and the InBuf
   * buffers it owns: in a client, by Task::SetOwnsInputs, TaskT then being
   * the task's own type, whose Fields() names them; in the runtime, by its
   * private HoldInputs record). Null is a no-op. */
  template <typename TaskT>
  void DelTask(const hipc::MemContext &ctx, FullPtr<TaskT> task) {
    if (task.IsNull()) return;
    // The heap header line, which the free's CAS writes, is usually the
    // line the runtime claimed the task in: fetch it while the extras go.
    hshm::PrefetchForWrite(reinterpret_cast<const char *>(task.ptr_) -
                           hipc::HeapAllocator::kBlockHeaderSize);
#if CHIMAERA_RUNTIME
    // The runtime's record, never the flag or pointers of a block clients
    // can write.
    if (held_inputs_count_.load(std::memory_order_relaxed) != 0) {
      FreeHeldInputs(task.shm_);
    }
#else
    if (task->OwnsInputs()) {
      FieldArchive free_in(FieldArchive::Mode::kFreeIn, task.ptr_);
      task->Fields(free_in);
    }
#endif
    // Inline: most tasks own nothing besides themselves.
    if (!task->err_.IsNull() || !task->ext_.IsNull() ||
        local_err_count_.load(std::memory_order_relaxed) != 0) {
      FreeTaskExtras(task.ptr_);
    }
    (void)main_alloc_->DelObj(ctx, task);
  }
  template <typename TaskT>
  void DelTask(FullPtr<TaskT> task) {
    DelTask(HSHM_MCTX, task);
  }
  /** Gives up on a submitted task (see internal::AbandonTask) and frees it
   * if it already completed, with the output buffers it got (nobody else
   * will read them). The caller must not touch it afterwards. */
  template <typename TaskT>
  void AbandonTask(FullPtr<TaskT> task) {
    if (task.IsNull()) return;
    if (internal::AbandonTask(task.ptr_)) {
      FieldArchive free_out(FieldArchive::Mode::kFreeOut, task.ptr_);
      task->Fields(free_out);
      DelTask(task);
    }
  }
  /** Deadline of this thread's synchronous calls (us). Any thread. */
  u64 TaskTimeoutUs() const;
  /** Sets this thread's synchronous-call deadline (0: the configured one);
   * returns the previous setting. */
  static u64 SetThreadTaskTimeoutMs(u64 timeout_ms);

  /** Allocates a data buffer: in `client_data` from a client, in
   * `runtime_data` from the runtime. Null when the segment is full. */
  FullPtr<char> AllocateBuffer(size_t size);
  /** Allocates a buffer in `client_data` (either side). */
  FullPtr<char> AllocateClientBuffer(size_t size);
  /** The process address of `size` bytes at `p` if they lie inside one of
   * the data segments (client_data or runtime_data); null otherwise. A zero
   * size yields a valid empty span whatever `p` is. For validating buffers a
   * client names in a task (never a task in `main`). Any thread. */
  const char *DataBuffer(const hipc::Pointer &p, u64 size) const;
  /** A private copy of the whole Ts in the `size` bytes at `p` (trailing
   * bytes of a partial T are left out): copy, then use, so a client that
   * rewrites its buffer meanwhile changes nothing. Empty if the bytes are
   * not inside a data segment (admission already refuses such an InBuf).
   * T must be trivially copyable. Any thread. */
  template <typename T>
  std::vector<T> CopyIn(const hipc::Pointer &p, u64 size) const {
    static_assert(std::is_trivially_copyable_v<T>, "CopyIn copies bytes");
    const char *src = DataBuffer(p, size);
    std::vector<T> out(src ? size / sizeof(T) : 0);
    if (!out.empty()) std::memcpy(out.data(), src, out.size() * sizeof(T));
    return out;
  }
  /** Frees a buffer from either data segment. Null is a no-op. */
  Status FreeBuffer(const hipc::Pointer &p);
  /** Runtime: records that the task in block `task` (of `main`, made by
   * this process) owns `inputs` (this process's data buffers): they are
   * freed with the task, by DelTask or FreeHeldInputs. The record lives in
   * this process's memory, since clients can write every task block; what
   * a client writes there is never taken for ownership. Any thread. */
  void HoldInputs(const hipc::Pointer &task,
                  std::initializer_list<hipc::Pointer> inputs);
  /** Runtime: frees and forgets the inputs HoldInputs recorded for the task
   * in block `task`, if any. Whoever frees that block calls it first. Any
   * thread. */
  void FreeHeldInputs(const hipc::Pointer &task);
  /** True if some task holds inputs (HoldInputs). Any thread. */
  bool HoldsInputs() const {
    return held_inputs_count_.load(std::memory_order_relaxed) != 0;
  }
  /** Frees the data-segment block `p` only if process `pid` owns it (one
   * atomic step; InvalidArgument otherwise, or for a pointer that is not a
   * live data-segment block). For blocks a client named. Any thread. */
  Status FreeBufferOwnedBy(const hipc::Pointer &p, int pid);
  /** Records process `pid` as the owner of live block `p` of any of the
   * three segments (no-op otherwise): the reaper frees it if pid dies. */
  void SetBufferOwner(const hipc::Pointer &p, int pid);
  /** Owner pid of live block `p` of any segment, or -1. */
  int BufferOwner(const hipc::Pointer &p) const;

  /** The process-queue lane the calling thread's tasks go to unless they
   * name their container (GetLocalId, GetGlobalId; those go to lane
   * container % num_lanes()): fixed per thread and attachment. REQUIRES:
   * attached. */
  u32 ThreadLane();
  /** Submits `task` to the runtime through the process queue. Errors:
   * Unavailable when the runtime is stopping or gone, ResourceExhausted when
   * its lane stays full past the client timeout. */
  Status Send(Task *task);
  /** Send for a FullPtr. */
  template <typename TaskT>
  Status Send(const FullPtr<TaskT> &task) {
    return Send(static_cast<Task *>(task.ptr_));
  }
  /** A fresh root TaskNode. */
  TaskNode NewTaskNode();

  /** True while the runtime process exists and is not stopping. */
  bool RuntimeAlive() const;
  /** True while the runtime process exists (stopping or not). */
  bool RuntimeProcessAlive() const;
  /** The runtime's pid: this process's in the runtime; in a client, the one
   * its handshake named (not the copy in `main`, which clients can write). */
  int runtime_pid() const;
  /** Ok while the runtime can still complete tasks; Unavailable (saying
   * why) once its process is gone, its pid names another process, or its
   * heartbeat has been silent past client.runtime_stale_ms. A client's
   * waits call it about every 20 ms. */
  Status CheckRuntimeAlive() const;
  /** Runtime: stamps the heartbeat clients check (the reaper and the main
   * thread's housekeeping call it). Any thread. */
  void StampHeartbeat();
  /** True once Client/ServerInit succeeded. */
  bool initialized() const { return initialized_; }
  /** This node's id once attached (0 before). A private copy: clients can
   * write the shared one. */
  NodeId node_id() const { return shared_ ? node_id_ : 0; }
  IpcShared *shared() const { return shared_; }
  ProcessQueue *process_queue() const { return queue_; }
  /** Lanes of the process queue (trusted shape; see LaneView). */
  u32 num_lanes() const { return num_lanes_; }
  /** Lane `lane` of priority `prio`. REQUIRES: lane < num_lanes(),
   * prio < kNumPrios. */
  LaneView &GetLaneView(u32 lane, u32 prio) {
    return lane_views_[static_cast<size_t>(prio) * num_lanes_ + lane];
  }
  /** The index of `lane` (one of GetLaneView's) in prio-major order:
   * prio * num_lanes() + lane; SIZE_MAX for another object. Any thread. */
  size_t LaneViewIndex(const LaneView *lane) const {
    auto a = reinterpret_cast<uintptr_t>(lane);
    auto base = reinterpret_cast<uintptr_t>(lane_views_.data());
    if (a < base || a >= base + lane_views_.size() * sizeof(LaneView)) {
      return SIZE_MAX;
    }
    return (a - base) / sizeof(LaneView);
  }
  /** True if `p` is one of the runtime's own blocks of `main` (the process
   * queue, the worker table): never a task, whatever bytes a client wrote
   * into it. Compares with private copies. Any thread. */
  bool IsRuntimeStructure(const hipc::Pointer &p) const {
    return p == queue_ptr_ || p == workers_ptr_;
  }
  /** The Pointer of the task a process-queue lane names by its offset in
   * `main` (not validated: see Worker::AdmitShm). REQUIRES: attached. */
  hipc::Pointer TaskPointer(hipc::OffsetPointer off) const {
    return hipc::Pointer(main_alloc_->GetId(), off.off_);
  }
  /** Workers in the worker table (the runtime's own count). */
  u32 num_workers() const { return num_workers_; }
  WorkerShared *workers() const { return workers_; }
  CHI_MAIN_ALLOC_T *main_alloc() const { return main_alloc_; }
  CHI_CDATA_ALLOC_T *cdata_alloc() const { return cdata_alloc_; }
  CHI_RDATA_ALLOC_T *rdata_alloc() const { return rdata_alloc_; }
  /** The address the handshake server is bound to ("127.0.0.1:9513"). */
  const std::string &server_address() const { return server_addr_; }
  /** Instance key used in this runtime's segment names. */
  const std::string &instance_key() const { return instance_key_; }
  /** Wakes the worker that drains `lane` if it sleeps. Any thread; no
   * wake-up is lost when called after a successful push to `lane` (whose
   * seq_cst publish orders it against the worker's sleep). */
  void WakeLaneWorker(LaneView &lane);
  /** Writes `msg` into shared memory as task's error message. If shared
   * memory cannot take it (full, or its heap lock held by a stopped
   * runtime), a client keeps it in process memory until DelTask. */
  void SetTaskError(Task *task, const std::string &msg);
  /** A new error text holding `msg` in `main` (the form err_ points to),
   * or null if shared memory cannot take it. The caller stores it once in
   * a task and owns it until then. Any thread. */
  hipc::Pointer NewErrorText(const std::string &msg);
  /** The error text a client kept in process memory for `task` (see
   * SetTaskError), or empty. Any thread. */
  std::string LocalTaskError(const Task *task) const;

 private:
  /** Frees memory a completed task owns besides itself: its error text
   * and extension, each read once. */
  void FreeTaskExtras(Task *task);
  /** True if `p`, read from task block `task`, may be freed as the task's
   * error text or extension. Always in a client (its own block); in the
   * runtime, whose tasks clients can rewrite, only a live block of `main`
   * that is neither the task nor a runtime structure: never a data-segment
   * buffer, the process queue or the worker table. Any thread. */
  bool MayFreeExtra(const hipc::Pointer &p, const Task *task) const;
  /** Creates (runtime) the three segments and their allocators. */
  Status CreateSegments();
  /** Unregisters the allocators and destroys (runtime) or detaches
   * (client) the segments, leaving this object unattached. `created`: the
   * allocators were made whole (their thread caches are flushed first);
   * false after a failed CreateSegments. Finalize's thread. */
  void ReleaseSegments(bool created);
  /** Attaches (client) the three segments named in the handshake. */
  Status AttachSegments(const std::string &main, const std::string &cdata,
                        const std::string &rdata);
  /** True once the runtime is stopping: the runtime's own flag in the
   * runtime, the shared one in a client (a client build reads only that:
   * Send stays as short as it was). REQUIRES: shared_. */
  bool Stopping() const {
#if CHIMAERA_RUNTIME
    if (is_runtime_) return stopping_.load(std::memory_order_acquire);
#endif
    return shared_->shutdown_.load(std::memory_order_acquire) != 0;
  }
  /** Makes the three (not yet attached) allocator objects. */
  void MakeAllocators();
  /** Registers the three allocators in the memory manager. */
  Status RegisterAllocators();
  /** The runtime's server loop (its own thread): answers handshakes until
   * server_stop_ is set. */
  void ServerLoop();
  /** Runtime, on the server thread: the reply to one handshake request
   * line ("HELLO abi pid"); registers the pid with the reaper. */
  std::string AnswerHandshake(const std::string &request);
  /** Builds lane_views_ for a queue of `num_lanes` x kNumPrios lanes of
   * `depth` slots. */
  void MakeLaneViews(u32 num_lanes, u64 depth);

  std::unique_ptr<HandshakeServer> handshake_;  ///< Runtime: the server.
  std::thread server_thread_;
  std::atomic<bool> server_stop_{false};

  hipc::PosixShmMmap main_shm_, cdata_shm_, rdata_shm_;
  std::unique_ptr<CHI_MAIN_ALLOC_T> main_owned_;
  std::unique_ptr<CHI_CDATA_ALLOC_T> cdata_owned_;
  std::unique_ptr<CHI_RDATA_ALLOC_T> rdata_owned_;
  CHI_MAIN_ALLOC_T *main_alloc_ = nullptr;
  CHI_CDATA_ALLOC_T *cdata_alloc_ = nullptr;
  CHI_RDATA_ALLOC_T *rdata_alloc_ = nullptr;
  IpcShared *shared_ = nullptr;
  ProcessQueue *queue_ = nullptr;
  std::vector<LaneView> lane_views_;  ///< prio-major, see GetLaneView.
  hipc::Pointer queue_ptr_;    ///< Private copy: the process queue block.
  hipc::Pointer workers_ptr_;  ///< Private copy: the worker table block.
  u32 num_lanes_ = 0;
  u32 num_workers_ = 0;
  WorkerShared *workers_ = nullptr;
  std::string server_addr_;
  std::string server_host_;  ///< Client: the host of server_addr_.
  u32 server_port_ = 0;      ///< Client: the port of server_addr_.
  std::string instance_key_;
  NodeId node_id_ = 0;
  bool initialized_ = false;
  bool is_runtime_ = false;
  /** Runtime: BeginShutdown was called. The runtime reads this, never the
   * shared flag (which clients can write); clients read the shared one. */
  std::atomic<bool> stopping_{false};
  u64 attach_gen_ = 0;  ///< Unique per successful Init in this process.
  u32 send_timeout_ms_ = 2000;
  u32 task_timeout_ms_ = 60000;
  u32 runtime_stale_ms_ = 10000;
  /** Error texts that shared memory could not take, by task (client). */
  mutable std::mutex local_err_mu_;
  std::unordered_map<const Task *, std::string> local_errs_;
  std::atomic<u32> local_err_count_{0};  ///< local_errs_.size(), lock-free.
  /** Runtime: input buffers handed to tasks this process made, by task
   * block offset (see HoldInputs), in private memory; striped by offset,
   * since every worker's frees look here while any is held. */
  struct HeldInputs {
    std::mutex mu;
    std::unordered_map<u64, std::vector<hipc::Pointer>> by_task;
  };
  static constexpr u32 kHeldStripes = 16;
  HeldInputs held_inputs_[kHeldStripes];
  /** Entries over all stripes. */
  std::atomic<u32> held_inputs_count_{0};
  /** The stripe of the task block at offset `off`. */
  HeldInputs &HeldStripe(u64 off) {
    return held_inputs_[(off / 64) % kHeldStripes];
  }
  int runtime_pid_ = 0;         ///< Copied at attach (client).
  u64 runtime_start_time_ = 0;  ///< Copied at attach (client).
  /** Client: the pid the runtime's reaper knows this process by (a forked
   * child inherits the attachment and registers its own pid; see
   * RegisterForkedChild). */
  std::atomic<int> registered_pid_{0};

  /** Sends the handshake (HELLO, ABI version, this pid) to the runtime at
   * `host`:`port` and returns its reply in `*reply`; Unavailable if it
   * cannot be reached or does not answer within the client timeout (then
   * *absent, if given, says whether nothing listened there). */
  Status Handshake(const std::string &host, u32 port, std::string *reply,
                   bool *absent = nullptr) const;
  /** Handshakes with the runtime this client attaches to: the host
   * CHI_SERVER_ADDR names; else the hostfile entry of CHI_NODE_ID; else
   * the first hostfile entry that is an address of this machine and has a
   * runtime listening (shared memory reaches only this machine's runtime).
   * Sets *host to the entry used and *reply to the runtime's reply. */
  Status FindRuntime(std::string *host, std::string *reply) const;
  /** Client: in a forked child, registers the child's pid (by the one
   * thread that switches registered_pid_ to it); else nothing. Called from
   * the child's first Send and, as the heap's new-owner hook, before its
   * first block is allocated (hipc::SetNewOwnerHook). Any thread. */
  static void RegisterIfForked();
  /** Client, in a forked child, from RegisterIfForked: registers its pid
   * with the runtime, so that the reaper frees what the child leaves when it
   * dies (its blocks carry its own pid). A pid still being reaped (reused) is
   * retried for up to 2 s. Failure is logged, not returned: the tasks
   * still run. */
  void RegisterForkedChild();
  /** pthread_atfork child handler: a fork starts a new attachment for the
   * child (fresh lanes per thread, task ids, registration). */
  static void AfterForkInChild();
};

}  // namespace chi

#define CHI_IPC (::hshm::Singleton<::chi::IpcManager>::GetInstance())

#endif  // CHIMAERA_IPC_MANAGER_H_
