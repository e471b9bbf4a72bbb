// Tasks that cross nodes (runtime only).
//
// A worker that resolves a task to a container of another node calls
// Forward: the task's header and IN fields (its Fields() declaration) become
// one record, its input buffers separate frames, and the lightbeam transport
// (hermes_shm/lightbeam) batches records per peer over ZeroMQ. The worker
// keeps nothing: the task waits in this manager's pending table until the
// reply (or the peer's death) comes back, and is then posted to the inbox of
// the worker that forwarded it, which completes it.
//
// On the receiving node, a request is posted to a worker's inbox; that worker
// admits it (Worker::AdmitRemote), runs it, and Reply() sends the result.
//
// Every record is validated before use: sizes, kinds, ids (a reply must come
// from the node the request went to), method ids and field lengths. A node
// that stops answering is declared dead after network.dead_after_ms, and every
// task pending on it completes with Unavailable.
//
// Threading: Init/Stop on the runtime's main thread; Forward/Reply from
// workers; the transport's callbacks run on its network thread and only
// hand work to workers.
#ifndef CHIMAERA_REMOTE_MANAGER_H_
#define CHIMAERA_REMOTE_MANAGER_H_

#if !CHIMAERA_RUNTIME
#error "chimaera/remote_manager.h is runtime-only"
#endif

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>
#include <zmq.hpp>

#include "chimaera/net/wire.h"
#include "chimaera/worker.h"
#include "hermes_shm/lightbeam/transport.h"
#include "hermes_shm/singleton.h"

namespace chi {

/** A received record handed to a worker: a request to admit, or the reply
 * to a forwarded task (or its failure). */
struct NetMessage {
  bool is_reply = false;
  Status failure;     ///< Ok, or why the forwarded task failed (no reply).
  NodeId from = 0;    ///< Sending node.
  std::string bytes;  ///< The record.
  std::vector<zmq::message_t> frames;  ///< Its data frames.
  /** Views of `frames`, for FieldArchive::set_input. */
  std::vector<FrameView> Views() const;
};

/** Cluster traffic of this runtime. */
class RemoteManager {
 public:
  RemoteManager();
  ~RemoteManager();
  /** Starts the transport when the hostfile names more than one node (binds
   * this node's hostfile address at network.rpc_port). REQUIRES: the IPC
   * manager and the work orchestrator are initialized. */
  Status Init();
  /** Sets up what workers read without locks (node ids, the transport
   * object, room for the records of `num_workers` workers). REQUIRES: the
   * IPC manager is initialized; the workers have not started. */
  void Reserve(u32 num_workers);
  /** Stops the transport; pending tasks complete with Unavailable. */
  void Stop();
  /** True if this runtime talks to other nodes. */
  bool enabled() const { return transport_ != nullptr; }
  /** Worker thread: sends `rctx` to `node` to run on container `q` there.
   * On success the manager holds `rctx` until its reply arrives; on error
   * (peer dead, bad input buffer, ResourceExhausted: more than
   * network.max_peer_bytes not yet sent there, or a request larger than
   * the node accepts) the caller still owns it. */
  Status Forward(RunContext *rctx, NodeId node, const DomainQuery &q,
                 u32 worker_id);
  /** Whether forwarding `rctx` expects a reply: its task is not
   * fire-and-forget, or it is a broadcast part, or a relayed request whose
   * sender wants one. */
  static bool WantsReply(const RunContext *rctx) {
    return !rctx->task_->IsFireAndForget() ||
           rctx->origin_ == TaskOrigin::kBcastPart ||
           (rctx->origin_ == TaskOrigin::kRemote && rctx->reply_wanted_);
  }
  /** Worker thread: sends the result of the remote request `rctx` back to
   * its node: `status` if not ok (nothing else is sent), else the task's
   * status and OUT fields (OUT buffers are freed here). */
  void Reply(RunContext *rctx, const Status &status);
  /** Worker `worker_id`'s thread: hands the records it staged during this
   * loop iteration (Forward, Reply) to the transport, one batch per node.
   * Records the transport refuses complete their tasks with Unavailable (a
   * dead node) or ResourceExhausted (larger than the node now accepts). */
  void Flush(u32 worker_id);
  /** True if worker `worker_id` staged records (its thread only). */
  bool HasStaged(u32 worker_id) const {
    return worker_id < staged_.size() && !staged_[worker_id].empty();
  }
  /** Whether `node` answers heartbeats (this node: always). */
  bool NodeAlive(NodeId node) const;
  /** Tasks waiting for replies. Any thread. */
  u64 NumPending();
  /** Releases what OnRecord charged `node` for a request of `bytes` (its
   * RunContext ends). Worker threads. */
  void Uncharge(NodeId node, u64 bytes);
  /** Fails, with Timeout, every forwarded task whose reply has not come
   * within network.request_timeout_ms (its node may answer heartbeats yet
   * never reply). Cheap when none is due. The work orchestrator's thread
   * calls it periodically; any thread may. */
  void ExpireRequests();
  /** One line of counters (for stat). Any thread. */
  std::string StatLine();
  /** The number of nodes in the hostfile. */
  u32 num_nodes() const { return num_nodes_; }
  /** All node ids (1..num_nodes). */
  std::vector<NodeId> AllNodes() const;

  /** One node's load as this node knows it. */
  struct NodeLoad {
    u32 inflight = 0;       ///< Tasks in flight there at its last report.
    u32 busy_permille = 0;  ///< Mean busy fraction of its workers then.
    u32 sent_since = 0;     ///< Tasks this node sent there since then.
    u32 outstanding = 0;    ///< Requests of this node it has not answered.
    u64 age_ms = ~0ull;     ///< Age of the report (~0: none yet).
  };
  /** The reinforcement thread: records this node's load and sends it to
   * every live peer (a no-op on a single node). */
  void PublishLoad(u32 inflight, u32 busy_permille);
  /** What this node knows of `node`'s load. Any thread. */
  NodeLoad LoadOf(NodeId node) const;
  /** Load a remote node must be below this node's by, for a dynamic task
   * to cross the network (in tasks in flight): equal nodes keep their own
   * work. */
  static constexpr u32 kRemotePenalty = 2;
  /** The least loaded of `nodes` (each 1..num_nodes). A remote node's load
   * is the tasks in flight at its last report plus those sent there since,
   * but at least this node's own unanswered requests there (a report may
   * predate their arrival), plus kRemotePenalty. This node's load is its
   * last report or `self_live` (the caller's live count), whichever is
   * larger. Dead nodes are skipped; ties go to this node, else to the node
   * after `spread` (mod the count), so equal nodes share the work. Counts
   * one task sent to a chosen remote node. 0 if `nodes` is empty or all
   * are dead. Any thread (workers). */
  NodeId PickLeastLoaded(const NodeId *nodes, u32 count, u32 spread,
                         u32 self_live);

 private:
  /** A forwarded task awaiting its reply. */
  struct Pending {
    RunContext *rctx;
    u32 worker;
    NodeId node;
    u64 deadline_ns;  ///< ExpireRequests fails it after this (NowNs).
  };
  /** Network thread: a record arrived from `from`. */
  void OnRecord(NodeId from, std::string_view bytes, zmq::message_t *frames,
                u32 num_frames);
  /** Network thread: `node` died (alive = false) or came back. */
  void OnPeer(NodeId node, bool alive);
  /** Posts the pending task `req` (if still pending) with `msg`. */
  void Resolve(u64 req, NodeId from, NetMessage *msg);
  /** The worker to post `p`'s reply to: the one that forwarded it, unless
   * it is stuck in a task (robbed), then another of its kind. */
  Worker *ReplyWorker(const Pending &p);
  /** Fails every task pending on `node` (0: on any node) with `status`. */
  void FailNode(NodeId node, const Status &status);
  /** FailNode for every node. */
  void FailAll(const Status &status);
  /** Fails, with `status`, every pending task `which(pending)` selects:
   * removed under mu_, then posted to its worker. */
  template <typename Pred>
  void FailPending(const Status &status, Pred &&which);
  /** Picks the worker whose inbox takes a new request of priority `prio`. */
  Worker *PickWorker(u32 prio);
  /** For error texts: "network.max_message_bytes N", the limit for
   * messages to `node`, and whose it is when that node's is the less. Any
   * thread, once started. */
  std::string MessageLimitText(NodeId node) const;
  /** The ResourceExhausted status of a request too large for `node` found
   * only after Forward (it said it accepts less since). Any thread. */
  Status TooLargeFor(NodeId node) const;
  /** Why the transport refused `rec` for `to`: TooLargeFor if it does not
   * fit, else Unavailable (the node is down). REQUIRES: the transport. */
  Status Refused(NodeId to, const hshm::lbm::OutRecord &rec) const;
  /** A record waiting in a worker's stage. */
  struct Staged {
    NodeId to;
    hshm::lbm::OutRecord rec;
  };
  /** Stages `rec` for `to` on worker `worker_id` (its thread only). */
  void Stage(u32 worker_id, NodeId to, hshm::lbm::OutRecord &&rec);

  std::unique_ptr<hshm::lbm::Transport> transport_;
  std::mutex mu_;
  std::unordered_map<u64, Pending> pending_;  // guarded by mu_
  /** No pending deadline is before this (guarded by mu_). */
  u64 next_expiry_ns_ = UINT64_MAX;
  /** network.request_timeout_ms in ns (set by Reserve). */
  u64 request_timeout_ns_ = 600000ull * 1000000;
  /** network.max_peer_requests and max_peer_bytes (set by Reserve). */
  u32 max_peer_requests_ = 65536;
  u64 max_peer_bytes_ = 1ull << 30;
  std::atomic<u64> next_req_{1};
  std::atomic<u32> rr_{0};
  std::atomic<u64> forwarded_{0}, replied_{0}, received_{0}, dropped_{0};
  /** Per worker (index = worker id), touched by that worker only: records
   * staged in its current loop iteration. */
  std::vector<std::vector<Staged>> staged_;
  u32 num_nodes_ = 1;
  NodeId self_ = 0;
  /** Per node (index = node id), written by the network thread (peers) or
   * the reinforcement thread (self), read by workers. */
  struct LoadSlot {
    std::atomic<u32> inflight{0};
    std::atomic<u32> busy_permille{0};
    std::atomic<u32> sent_since{0};
    /** Requests this node forwarded there that await their replies. */
    std::atomic<u32> outstanding{0};
    std::atomic<u64> at_ns{0};  ///< When the report arrived (0: never).
    std::atomic<u64> seq{0};
    /** Requests from this node queued or running here, and their bytes
     * (record + frames): at most network.max_peer_requests and
     * max_peer_bytes (OnRecord charges, Uncharge releases). */
    std::atomic<u32> charged{0};
    std::atomic<u64> charged_bytes{0};
    /** Data-frame bytes for this node that ZeroMQ still holds (copied
     * request inputs, reply outputs): at most network.max_peer_bytes, so a
     * stalled node cannot make this one hold without bound (ToZmq charges,
     * ZeroMQ's release callback uncharges). */
    std::atomic<u64> unsent_bytes{0};
  };
  std::unique_ptr<LoadSlot[]> loads_;  ///< num_nodes_ + 1 slots (Reserve).
  /** Unsent bytes of replies to no valid node (never expected). */
  std::atomic<u64> unsent_elsewhere_{0};
  /** Bytes of data-segment buffers (reply outputs) that ZeroMQ holds, at
   * most shm_budget_ (an eighth of the smaller data segment, set by
   * Reserve): past it, outputs are copied out and freed at once, so a
   * stalled node cannot pin the segments every client allocates from. */
  std::atomic<u64> shm_held_{0};
  u64 shm_budget_ = 0;
  /** Set once Init started the transport (the reinforcement thread and
   * workers run before that, and must not read the transport earlier). */
  std::atomic<bool> started_{false};
  u64 load_seq_ = 0;                  ///< Reinforcement thread only.
  std::atomic<u64> load_reports_{0};  ///< Reports received.
};

}  // namespace chi

#define CHI_REMOTE (::hshm::Singleton<::chi::RemoteManager>::GetInstance())

#endif  // CHIMAERA_REMOTE_MANAGER_H_
