// hshm::lbm ("lightbeam"): a small node-to-node message transport over
// ZeroMQ. Every node binds one ROUTER (all traffic arrives there) and connects
// one DEALER to each other node (used only for sending). One dedicated network
// thread per Transport owns the ROUTER and DEALERs; it batches queued records
// per peer, validates every incoming message, heartbeats the peers and tracks
// liveness. A second thread checks incoming connections (ZeroMQ's ZAP), when
// there is something to check: the peer's address (check_peer_address, on by
// default; a connection from an address that is no node's is also closed as
// it is accepted, so that it holds no descriptor) or its key. Optionally
// (TransportOptions::curve_*) every socket uses ZeroMQ CURVE with one cluster
// key pair: only holders of the pair connect, all is encrypted.
//
// Threads: Send, PeerAlive, PeerIncarnation and stats may be called from any
// thread, including from inside the callbacks, but not concurrently with
// Start (before Start, or after a failed one, they refuse and report
// nothing; after Stop, Send refuses). Start and Stop are called by
// the owner, never from a callback. The callbacks (RecordHandler,
// PeerHandler, SendFailHandler) run on the network thread: they must be quick,
// must not throw, and must not call Stop().
#ifndef HERMES_SHM_LIGHTBEAM_TRANSPORT_H_
#define HERMES_SHM_LIGHTBEAM_TRANSPORT_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>

#include "hermes_shm/status.h"
#include "hermes_shm/thread_model.h"
#include "hermes_shm/types.h"

namespace hshm::lbm {

inline constexpr u32 kWireMagic = 0x4C424D31;  // "LBM1"
inline constexpr u16 kWireVersion = 4;
/** The least TransportOptions::max_message_bytes (and the least a peer may
 * say it accepts): room for any control message and for a record with an
 * error text (kMaxErrorText, 64 KiB, in Chimaera). Records that fit in it
 * are sent to a peer before it has said what it accepts. */
inline constexpr u64 kMinMessageBytes = 1 << 20;

/** Why records accepted by Send were not sent (Transport::SendFailHandler).
 */
enum class SendFailure : u8 {
  /** The peer died or restarted, the transport stopped, the records were
   * held back dead_after_ms (no connection, or the peer never said what it
   * accepts), or ZeroMQ failed to take the message. */
  kUnsent,
  kTooLarge,  ///< Larger than the peer said it accepts (it said so late).
};
/** Most frames (routing id, header, body and data frames) in one message. */
inline constexpr u32 kMaxMessageFrames = 1u << 20;

/** What a message carries. */
enum class MsgKind : u16 { kRecords = 1, kPing = 2, kPong = 3 };

/** Frame 0 of every message. Plain bytes, host byte order (x86-64 clusters).
 */
struct WireHeader {
  u32 magic;
  u16 version;
  u16 kind;  ///< A MsgKind.
  u32 src_node;
  u32 dst_node;
  u64 src_incarnation;  ///< Random per Transport::Start; changes on restart.
  u32 num_records;
  u32 num_frames;  ///< Data frames after the body frame.
  u64 body_size;   ///< Bytes of frame 1 (the record index + record bytes).
  /** The sender's max_message_bytes: the largest message it accepts. Every
   * message says it, so a peer never sends it more (a node whose
   * configuration differs, or changed with a restart). */
  u64 max_message_bytes;
  /** Times the sender took the receiver for dead (while the sender's
   * incarnation lives). When it grows, the sender dropped what it had for
   * the receiver meanwhile (replies included): the receiver treats the
   * sender as restarted (see Transport::Heard). */
  u64 dst_deaths;
  /** The receiver's incarnation as the sender knows it (0 before it heard
   * from the receiver): dst_deaths counts only for that incarnation. */
  u64 dst_incarnation;
};
static_assert(sizeof(WireHeader) == 64, "WireHeader must have no padding");

/** One record to send: opaque bytes (the caller's encoding) plus data frames
 * that travel beside it as separate ZeroMQ frames without copying. On the
 * wire the body frame holds, per record, [u32 len][u32 nframes][len bytes]. */
struct OutRecord {
  u64 tag = 0;        ///< Caller's id, reported back if it cannot be sent.
  std::string bytes;  ///< Record payload (moved in).
  std::vector<zmq::message_t> frames;  ///< Data buffers (zero-copy allowed).
};

/** A received record, valid only during the RecordHandler call. The handler
 * may move the frames out (e.g. `zmq::message_t m = std::move(frames[0])`). */
struct InRecord {
  std::string_view bytes;
  zmq::message_t *frames;
  u32 num_frames;
};

/** Tuning knobs of a Transport. */
struct TransportOptions {
  u32 heartbeat_ms = 250;    ///< Ping every peer this often.
  u32 dead_after_ms = 2000;  ///< A peer silent this long is dead.
  /** One outgoing message holds at most this many records, and at most this
   * many bytes (body plus data frames) unless a single record is larger. */
  u32 max_batch_records = 256;
  u64 max_batch_bytes = 256 << 10;
  /** Incoming messages larger than this (sum of frames) are dropped; a
   * single frame larger than this makes ZeroMQ drop the connection. Send
   * refuses records that could not fit in a message of this size, or of
   * the size the peer says it accepts, whichever is less. At least
   * kMinMessageBytes. */
  u64 max_message_bytes = 1ull << 30;
  int sndhwm = 100000;  ///< Per-peer send (and receive) high-water mark.
  /** ZeroMQ CURVE (lightbeam/curve.h): empty (the default) sends in clear.
   * Set, both Z85 keys of the cluster key pair: the ROUTER is a CURVE server
   * that admits only clients holding this pair, every DEALER is a CURVE
   * client of it, and everything on the wire is encrypted. Peers must use
   * the same pair; one without it never connects, so it is seen as dead. */
  std::string curve_public_key;
  std::string curve_secret_key;
  /** Peers must talk from their own addresses (the default). Every DEALER
   * sends from this node's address (the one its ROUTER binds); the ROUTER
   * admits connections only from the addresses of the nodes (a ZAP check,
   * before the handshake ends) and drops a message that claims node N but
   * came from an address that is not N's. Every host must then resolve at
   * Start. Off: anything that reaches the port may claim any node id (for a
   * network that rewrites source addresses, e.g. NAT). */
  bool check_peer_address = true;
  /** An incoming connection that has not finished ZeroMQ's handshake
   * (greeting, CURVE, the address check) by then is closed, so that idle
   * connections hold no descriptor for long (libzmq's default: 30 s). */
  u32 handshake_timeout_ms = 10000;
};

/** Where one record of a validated kRecords message lies: `len` bytes at
 * `offset` in the body frame, followed by `nframes` data frames. */
struct WireRecordRef {
  u64 offset;
  u32 len;
  u32 nframes;
};

/** Checks one received message completely, without touching any socket or
 * state: `num_frames` is its frame count (routing id, header, body, then data
 * frames) and `routing_id`, `header` and `body` are the bytes of its first
 * three frames (read only when num_frames >= 3). `self` is the receiving
 * node and `num_nodes` the cluster size. Returns nullptr if the message is
 * valid for `self`, filling *out_header and (kRecords only) *out_records, in
 * body order; otherwise a static string naming the first problem. */
const char *DecodeMessage(u64 num_frames, std::string_view routing_id,
                          std::string_view header, std::string_view body,
                          u32 self, u32 num_nodes, WireHeader *out_header,
                          std::vector<WireRecordRef> *out_records);

/** Counters since Start; each is monotonic. */
struct TransportStats {
  u64 msgs_sent = 0;  ///< Messages handed to ZeroMQ (records, ping, pong).
  u64 records_sent = 0;
  u64 msgs_received = 0;  ///< Valid messages received (records, ping, pong).
  u64 records_received = 0;
  u64 dropped_malformed = 0;  ///< Incoming messages that failed validation.
  /** Valid messages dropped because they did not come from the address of
   * the node they claim (check_peer_address). */
  u64 dropped_wrong_address = 0;
  u64 send_failures = 0;  ///< Records reported through on_send_fail.
  /** Incoming connections refused: during the handshake (wrong or no CURVE
   * cluster key, or an address that is no node's) or, with
   * check_peer_address, as accepted (an address that is no node's, or no
   * descriptor left). */
  u64 auth_failures = 0;
  /** Connections to dead peers closed (and made anew), dropping what
   * ZeroMQ still held for them. */
  u64 dealer_resets = 0;
};

/** A node's endpoint of the lightbeam transport. Not copyable or movable. A
 * Transport is started at most once; Stop (or the destructor) ends it. */
class Transport {
 public:
  /** A peer dead this many dead_after_ms loses its DEALER, and with it what
   * ZeroMQ still held for it (see ResetDealer). */
  static constexpr int kDealerResetDeaths = 4;
  /** Called for each received record, in the order the peer sent them. */
  using RecordHandler = std::function<void(u32 from_node, InRecord &rec)>;
  /** alive=false: the peer is dead (or restarted, or it took us for dead
   * and so dropped what it had for us: false then true). */
  using PeerHandler = std::function<void(u32 node, bool alive)>;
  /** Records (by tag) that were accepted by Send but will not be sent, and
   * why. */
  using SendFailHandler =
      std::function<void(u32 node, std::vector<u64> tags, SendFailure why)>;

  Transport() = default;
  /** Calls Stop(). */
  ~Transport();
  Transport(const Transport &) = delete;
  Transport &operator=(const Transport &) = delete;

  /** Owner thread: endpoints[i] is "host:port" of node i+1 (host: an IPv4
   * address, a bracketed IPv6 address, or a name, which is resolved to its
   * first IPv4 address for the bind); self is 1-based. Binds a ROUTER to
   * endpoints[self-1] only (wildcard hosts are refused), connects one DEALER
   * per other node (routing id = decimal self node id, ZMQ_IMMEDIATE=1,
   * linger 0, sndhwm; CURVE first if the options name keys; with
   * check_peer_address, sending from the address the ROUTER binds) and starts
   * the network thread. Null handlers are allowed. Errors: InvalidArgument
   * (bad self, endpoint string, options or CURVE keys; with
   * check_peer_address, a host that does not resolve; already started),
   * Unimplemented (CURVE keys but a libzmq without CURVE), AlreadyExists
   * (address in use) / Unavailable (other bind failure; the message names the
   * address), or the thread-spawn error. On error nothing is left running and
   * Start may be called again. */
  Status Start(u32 self, const std::vector<std::string> &endpoints,
               const TransportOptions &opt, RecordHandler on_record,
               PeerHandler on_peer, SendFailHandler on_send_fail);

  /** Any thread: queues `rec` for node `to`; never blocks on the network.
   * Returns false (rec untouched, not queued) if `to` is self or out of
   * range, the transport is not running, the peer is currently dead, or the
   * record cannot fit in one message (bytes > 4 GiB, too many frames, or
   * larger than MaxMessageBytesTo(to)). After true, the record is either
   * sent or its tag is reported exactly once through on_send_fail (also at
   * Stop). A record that would not fit in a message of kMinMessageBytes
   * waits, and every record queued after it with it, until the peer has
   * said what it accepts (its first message), and fails with
   * SendFailure::kTooLarge if that is less.
   * Records for a peer whose connection is not up yet (e.g. right after
   * Start) are held back and retried, and fail once held dead_after_ms.
   * Records already handed to ZeroMQ when a peer dies are not reported:
   * on_peer(node, false) says so instead. */
  bool Send(u32 to, OutRecord &&rec);

  /** Any thread: Send for every record of `recs` at once (one lock, one
   * wake-up of the network thread). All or nothing: false (recs untouched)
   * where Send would refuse any of them; on true `recs` is emptied. */
  bool SendMany(u32 to, std::vector<OutRecord> &recs);

  /** Any thread, once started: true if a record of `bytes` bytes and
   * `num_frames` data frames of `frame_bytes` bytes in all fits in one
   * message to node `to` (MaxMessageBytesTo; what Send checks, besides the
   * peer's state). */
  bool Fits(u32 to, u64 bytes, u64 frame_bytes, u64 num_frames) const;
  /** Fits for `rec`'s bytes and frames. */
  bool Fits(u32 to, const OutRecord &rec) const;
  /** Any thread, once started: the largest message for node `to`: ours
   * (TransportOptions::max_message_bytes) or, if less, what its last
   * message said it accepts. Ours for self, out of range, or a peer not
   * heard from yet. */
  u64 MaxMessageBytesTo(u32 to) const;
  /** The largest message we accept (TransportOptions::max_message_bytes). */
  u64 max_message_bytes() const { return opt_.max_message_bytes; }

  /** Any thread: true if `node` is alive (self is always alive; out of range
   * is not). Peers start alive (optimistic) until dead_after_ms passes
   * without hearing from them. */
  bool PeerAlive(u32 node) const;

  /** Any thread: the last incarnation heard from `node`; 0 if not heard yet
   * (or out of range). Our own for self. */
  u64 PeerIncarnation(u32 node) const;

  /** Any thread: a snapshot of the counters. */
  TransportStats stats() const;

  /** Owner thread (never a callback): stops the network thread, reports the
   * records still queued through on_send_fail, closes the sockets. Idempotent.
   */
  void Stop();

 private:
  using Clock = std::chrono::steady_clock;

  /** One remote node. */
  struct Peer {
    std::atomic<bool> alive{true};
    std::atomic<u64> incarnation{0};
    /** What its last message said it accepts (WireHeader::
     * max_message_bytes); 0 until heard from. Written by the network
     * thread, read by any. */
    std::atomic<u64> max_message_bytes{0};
    std::vector<OutRecord> outbox;  // guarded by mu_
    // Network thread only:
    std::unique_ptr<zmq::socket_t> dealer;
    /** Heartbeats only (routing id "c<self>"): a ping does not wait behind
     * a large message on `dealer`, which ZeroMQ delivers only whole. Pings
     * go on both; only those on `dealer` keep their order with the records
     * (see Heard). */
    std::unique_ptr<zmq::socket_t> control;
    /** When it was declared dead, until its DEALER is reset (after
     * kDealerResetDeaths dead_after_ms) or it is heard again; else 0. */
    Clock::time_point dead_since;
    std::string host;        ///< Its host, as in its endpoint.
    std::string connect_to;  ///< What its DEALER connects to.
    /** Records not sent yet (connection not up, ZeroMQ at the high-water
     * mark, or a heartbeat was due), oldest first; retried every
     * millisecond, failed when the peer dies or takes nothing for
     * dead_after_ms (backlog_since: since when, or 0). */
    std::vector<OutRecord> backlog;
    Clock::time_point backlog_since;
    Clock::time_point last_heard;
    u64 retired_incarnation = 0;  // the one before `incarnation`
    /** Times we took it for dead (WireHeader::dst_deaths of what we send
     * it). */
    u64 deaths = 0;
    /** The dst_deaths its messages carried last; ~0 until its first message
     * (of this incarnation of it). */
    u64 its_deaths_of_us = ~0ull;
    /** check_peer_address: the addresses its host resolved to at Start, as
     * AddressKey gives them. Constant while running. */
    std::vector<std::string> addrs;
  };
  /** Where a parsed record lies in the body frame. */
  using RecordRef = WireRecordRef;

  // All of these run on the network thread only (AbortStart and
  // CloseSockets also on the owner thread in Start, before it exists).

  /** The thread's body: poll, heartbeat, receive, send; until stop_. */
  void Loop();
  /** Takes the outboxes of the dirty peers and sends (or fails) them. */
  void DrainOutbox();
  /** Packs `recs` (all for `node`) into as few messages as the caps allow;
   * once a Tick is due (next_tick_) what is left waits in the backlog. */
  void FlushPeer(u32 node, std::vector<OutRecord> &recs);
  /** Sends recs[begin, end) as one message. False (records untouched) if
   * ZeroMQ would not take it now (EAGAIN); a failure after that reports
   * them through on_send_fail and returns true. */
  bool SendBatch(u32 node, std::vector<OutRecord> &recs, size_t begin,
                 size_t end, u64 body_size, u32 num_frames);
  /** Sends a ping or pong to `node`, on its control connection if
   * `on_control`, else on the records' one; false if ZeroMQ refused it. */
  bool SendControl(u32 node, MsgKind kind, bool on_control);
  /** A header from us to `dst` with zero counts. */
  WireHeader MakeHeader(MsgKind kind, u32 dst) const;
  /** Reports the tags of recs[begin, end) through on_send_fail. */
  void FailRecords(u32 node, std::vector<OutRecord> &recs, size_t begin,
                   size_t end, SendFailure why = SendFailure::kUnsent);
  /** Fails everything in `node`'s outbox and backlog (it died or
   * restarted), or with `tagged_only` only the records with a tag (the
   * others stay queued, in order). */
  void FailQueued(u32 node, bool tagged_only = false);
  /** A DEALER connecting to `p` with every lightbeam option; its routing id
   * is our node id, with a 'c' before it for the control connection.
   * Throws zmq::error_t. */
  std::unique_ptr<zmq::socket_t> MakeDealer(const Peer &p, bool control);
  /** Replaces `node`'s DEALER by a new one: closing the old one (linger 0)
   * drops the messages ZeroMQ still held for the node, releasing their
   * frames (bytes already in the kernel's socket buffer may still reach
   * it). Keeps the old one if a new one cannot be made. Tick calls it for a
   * peer still dead kDealerResetDeaths dead_after_ms after it died. */
  void ResetDealer(u32 node);
  /** Reads, validates and dispatches the messages waiting on the ROUTER;
   * returns early once a Tick is due (next_tick_). */
  void ReceiveAll();
  /** Checks in_frames_ completely (DecodeMessage); fills in_header_,
   * in_records_ and in_on_control_. Returns nullptr if valid, else the
   * reason. */
  const char *Validate();
  /** Acts on the validated message in in_frames_. */
  void Dispatch();
  /** Refreshes `node`'s liveness from a message with header `h`; reports
   * its return, its restart, or (`ordered`: the message came on the
   * records' connection, after any reply it sent before) that it took this
   * run of us for dead since such a message (as a restart: what it had for
   * us is gone). */
  void Heard(u32 node, const WireHeader &h, bool ordered);
  /** The connection-check thread's body (with zap_ only): answers ZAP
   * requests and reads the monitor until auth_stop_. */
  void AuthLoop();
  /** Owner thread: stops and joins the connection-check thread, if any.
   * Before the network thread ends (it closes zap_ and monitor_). */
  void StopAuthThread();
  /** Answers the ZAP requests waiting on zap_: admits a connection whose
   * address is some node's (check_peer_address) and, with CURVE, whose key
   * is the cluster key. */
  void HandleZap();
  /** Reads the ROUTER's monitor events; counts and logs (rate limited)
   * failed handshakes. */
  void HandleMonitor();
  /** CURVE or check_peer_address: binds the ZAP handler and the ROUTER
   * monitor and sets the ROUTER's server options. Before the ROUTER binds.
   */
  void SetUpAuth(bool curve);
  /** check_peer_address: true if the message in in_frames_ (valid, from
   * in_header_.src_node) came from an address of that node. */
  bool FromClaimedAddress() const;
  /** check_peer_address: true if `key` (AddressKey) is an address of some
   * node. */
  bool IsNodeAddress(const std::string &key) const;
  /** Logs a refused incoming connection (`from`: its address, or empty),
   * at most once per kAuthLogPeriod, with the count of those not logged. */
  void LogAuthFailure(const char *why, const std::string &from);
  /** Heartbeat: pings every peer and declares silent ones dead. */
  void Tick(Clock::time_point now);
  /** Starts a new one-second log window, reporting suppressed lines. */
  void RollLogWindow();
  /** Prints (rate-limited) why the message in in_frames_ was dropped. */
  void LogMalformed(const char *reason);
  /** Undoes a partial Start. */
  void AbortStart();
  /** Closes all sockets and the context. */
  void CloseSockets();
  /** True if `rec` fits in one message of at most `limit` bytes. */
  static bool FitsIn(u64 limit, const OutRecord &rec);
  /** Holds recs[begin, recs.size()) back in `node`'s backlog (the connection is
   * not up, ZeroMQ is at its high-water mark, or the peer has not said what it
   * accepts yet), failing them instead once the peer took nothing for
   * dead_after_ms (FlushPeer restarts that clock when a batch goes out). */
  void HoldBack(u32 node, std::vector<OutRecord> &recs, size_t begin);
  /** Node `node`'s state. REQUIRES: 1 <= node <= num_nodes_. */
  Peer &peer(u32 node) const { return *peers_[node - 1]; }

  // Set by Start, constant while running.
  u32 self_ = 0;
  u32 num_nodes_ = 0;
  u64 incarnation_ = 0;
  TransportOptions opt_;
  RecordHandler on_record_;
  PeerHandler on_peer_;
  SendFailHandler on_send_fail_;
  std::vector<std::unique_ptr<Peer>> peers_;  // index node-1; self's unused
  int wake_fd_ = -1;                          // eventfd
  int auth_wake_fd_ = -1;  // eventfd: wakes the connection-check thread
  Thread auth_thread_;     // runs AuthLoop, with zap_ only
  std::atomic<bool> auth_stop_{false};  // ends AuthLoop
  std::mutex life_mu_;                  // serializes Start/Stop
  bool started_ = false;                // guarded by life_mu_
  Thread thread_;

  mutable std::mutex mu_;  // guards outboxes, running_, wake_pending_, dirty_
  bool running_ = false;   // Send accepts records
  bool wake_pending_ = false;  // wake_fd_ written since the last drain
  std::vector<u32> dirty_;     // nodes whose outbox became non-empty
  std::atomic<bool> stop_{false};

  // Network thread only.
  std::unique_ptr<zmq::context_t> ctx_;
  std::unique_ptr<zmq::socket_t> router_;
  // The connection-check thread's while it runs (made in Start, closed by
  // the network thread as it ends; curve_client_key_ is constant).
  std::unique_ptr<zmq::socket_t> zap_;      // ZAP handler (REP), if any
  std::unique_ptr<zmq::socket_t> monitor_;  // ROUTER events, with zap_
  std::string curve_client_key_;            // CURVE: 32 raw bytes admitted
  Clock::time_point auth_log_at_{};         // last LogAuthFailure line
  u64 auth_unlogged_ = 0;                   // refusals since that line
  // Network thread only.
  std::vector<zmq::message_t> in_frames_;
  std::vector<RecordRef> in_records_;
  std::vector<std::vector<OutRecord>> pending_;  // index node-1
  WireHeader in_header_{};
  bool in_on_control_ = false;  ///< in_frames_ came on a control connection
  u64 log_window_ms_ = 0;
  Clock::time_point last_tick_;  ///< The last Tick (0 before the first).
  /** When the next Tick is due: ReceiveAll and FlushPeer stop early then,
   * so that a backlog never keeps the heartbeats back. */
  Clock::time_point next_tick_;
  u32 log_lines_ = 0;
  u64 log_suppressed_ = 0;

  std::atomic<u64> msgs_sent_{0}, records_sent_{0}, msgs_received_{0},
      records_received_{0}, dropped_malformed_{0}, dropped_wrong_address_{0},
      send_failures_{0}, auth_failures_{0}, dealer_resets_{0};
};

}  // namespace hshm::lbm

#endif  // HERMES_SHM_LIGHTBEAM_TRANSPORT_H_
