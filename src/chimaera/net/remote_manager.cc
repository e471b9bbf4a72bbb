// RemoteManager: forwarding tasks to other nodes and answering theirs.
//
// Request record: [u32 kWireRequest][WireRequest][IN fields], with the task's
// input buffers as data frames. Reply record: [u32 kWireReply][WireReply]
// [error text][OUT fields], with the output buffers as data frames. Records
// travel in batches (lightbeam); each is checked here before a worker sees
// it, and the worker checks the fields against the method's declaration.
#include "chimaera/remote_manager.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>

#include "chimaera/config_manager.h"
#include "chimaera/work_orchestrator.h"
#include "hermes_shm/lightbeam/transport.h"
#include "hermes_shm/util/log_limit.h"
#include "hermes_shm/util/tsan.h"

namespace chi {

namespace {

/** What a data frame handed to ZeroMQ holds until ZeroMQ releases it: the
 * bytes it charged to its node's unsent count, and the data-segment buffer
 * to free (a reply's output, also charged to the data segments' budget) or,
 * when that is null, the copy of the bytes that follows this header in the
 * same allocation. */
struct FrameHold {
  std::atomic<u64> *unsent;
  std::atomic<u64> *shm_held;
  u64 size;
  hipc::Pointer shm;
};

/** ZeroMQ's release callback of a frame: on its I/O thread once sent, or
 * on the thread that drops an unsent message. */
void ReleaseFrame(void *, void *hint) {
  HSHM_TSAN_ACQUIRE(hint);  // libzmq's hand-off is invisible to TSan
  auto *h = static_cast<FrameHold *>(hint);
  h->unsent->fetch_sub(h->size, std::memory_order_relaxed);
  if (!h->shm.IsNull()) {
    h->shm_held->fetch_sub(h->size, std::memory_order_relaxed);
    (void)CHI_IPC->FreeBuffer(h->shm);
  }
  h->~FrameHold();
  std::free(h);
}

/** Bytes of `frames`. */
u64 FrameBytes(const std::vector<DataFrame> &frames) {
  u64 n = 0;
  for (const DataFrame &f : frames) n += f.size;
  return n;
}

/** Adds `bytes` to `*count` unless the sum would pass `cap`; false, with
 * nothing added, if it would. Any thread. */
bool Charge(std::atomic<u64> *count, u64 bytes, u64 cap) {
  if (bytes == 0) return true;
  u64 cur = count->load(std::memory_order_relaxed);
  do {
    if (cur > cap || bytes > cap - cur) return false;
  } while (!count->compare_exchange_weak(cur, cur + bytes,
                                         std::memory_order_relaxed));
  return true;
}

/** Turns the data frames of a FieldArchive into ZeroMQ messages.
 * REQUIRES: the caller charged FrameBytes(frames) to `*unsent`; each
 * message gives its share back when ZeroMQ releases it. A buffer a frame
 * owns (a reply's output) travels without a copy while the data segments'
 * budget (`*shm_held` at most `shm_budget`) has room, so that a stalled
 * node cannot pin much of them; it is freed on release. Other bytes are
 * copied: the task may complete before ZeroMQ has sent them (it fails when
 * its node stalls with the connection still up), and its submitter may
 * then reuse the buffer while ZeroMQ still holds the request, which the
 * node runs if it resumes. Throws std::bad_alloc (nothing then stays
 * charged). */
std::vector<zmq::message_t> ToZmq(std::vector<DataFrame> &frames,
                                  std::atomic<u64> *unsent,
                                  std::atomic<u64> *shm_held, u64 shm_budget) {
  std::vector<zmq::message_t> out;
  out.reserve(frames.size());
  size_t i = 0;
  try {
    for (; i < frames.size(); ++i) {
      DataFrame &f = frames[i];
      const bool zero_copy =
          !f.shm_owned.IsNull() && Charge(shm_held, f.size, shm_budget);
      void *mem = std::malloc(sizeof(FrameHold) + (zero_copy ? 0 : f.size));
      if (!mem) {
        if (zero_copy) shm_held->fetch_sub(f.size, std::memory_order_relaxed);
        throw std::bad_alloc();
      }
      auto *h = new (mem)
          FrameHold{unsent, shm_held, f.size,
                    zero_copy ? f.TakeShm() : hipc::Pointer::GetNull()};
      char *data = const_cast<char *>(f.data);
      if (!zero_copy) {
        data = reinterpret_cast<char *>(h + 1);
        std::memcpy(data, f.data, f.size);
      }
      HSHM_TSAN_RELEASE(h);
      try {
        out.emplace_back(data, f.size, ReleaseFrame, h);
      } catch (...) {
        // ZeroMQ never took it: released here (its bytes, its buffer).
        ReleaseFrame(nullptr, h);
        ++i;
        throw;
      }
    }
  } catch (...) {
    // Frames not wrapped yet give their charge back; their buffers stay
    // with them (freed with `frames`). Wrapped ones release on their own.
    u64 rest = 0;
    for (size_t j = i; j < frames.size(); ++j) rest += frames[j].size;
    unsent->fetch_sub(rest, std::memory_order_relaxed);
    throw;
  }
  return out;
}

}  // namespace

std::vector<FrameView> NetMessage::Views() const {
  std::vector<FrameView> v;
  v.reserve(frames.size());
  for (const zmq::message_t &m : frames) {
    v.push_back(FrameView{static_cast<const char *>(m.data()), m.size()});
  }
  return v;
}

RemoteManager::RemoteManager() {
  // Request ids start at random: a reply meant for a previous incarnation of
  // this node must not match a request of this one.
  std::random_device rd;
  next_req_.store((static_cast<u64>(rd()) << 32 | rd()) | 1);
}

RemoteManager::~RemoteManager() = default;

std::vector<NodeId> RemoteManager::AllNodes() const {
  std::vector<NodeId> v;
  for (u32 i = 1; i <= num_nodes_; ++i) v.push_back(i);
  return v;
}

Status RemoteManager::Init() {
  const ServerConfig &conf = CHI_CONFIG_MANAGER->config();
  if (num_nodes_ <= 1) return Status::Ok();
  if (conf.num_reinforcement_ == 0 && conf.dynamic_least_loaded_) {
    fprintf(stderr,
            "chimaera: workers.reinforcement is 0: this node sends no load "
            "reports, and GetDynamic() sees only its own requests to other "
            "nodes\n");
  }
  std::vector<std::string> endpoints;
  for (const std::string &h : conf.hosts_) {
    // A hostfile lists IPv6 addresses bare (brackets are its ranges); an
    // endpoint brackets them.
    const bool v6 = h.find(':') != std::string::npos;
    endpoints.push_back((v6 ? "[" + h + "]" : h) + ":" +
                        std::to_string(conf.RpcPort()));
  }
  hshm::lbm::TransportOptions opt;
  opt.heartbeat_ms = conf.heartbeat_ms_;
  opt.dead_after_ms = conf.dead_after_ms_;
  opt.check_peer_address = conf.check_peer_address_;
  opt.max_message_bytes = conf.max_message_bytes_;
  if (conf.curve_) {
    opt.curve_public_key = conf.curve_public_key_;
    opt.curve_secret_key = conf.curve_secret_key_;
  }
  if (!transport_) return Status::Internal("RemoteManager::Reserve first");
  hshm::lbm::Transport *t = transport_.get();
  Status s = t->Start(
      self_, endpoints, opt,
      [this](u32 from, hshm::lbm::InRecord &rec) {
        OnRecord(from, rec.bytes, rec.frames, rec.num_frames);
      },
      [this](u32 node, bool alive) { OnPeer(node, alive); },
      [this](u32 node, std::vector<u64> tags, hshm::lbm::SendFailure why) {
        for (u64 tag : tags) {
          if (tag == 0) continue;  // a reply: the requester times out on us
          auto *m = new NetMessage;
          m->is_reply = true;
          m->from = node;
          m->failure =
              why == hshm::lbm::SendFailure::kTooLarge
                  ? TooLargeFor(node)
                  : Status::Unavailable("could not send the task to node " +
                                        std::to_string(node));
          Resolve(tag, node, m);
        }
      });
  if (!s.ok()) {
    return Status(s.code(), "network (rpc_port " +
                                std::to_string(conf.RpcPort()) +
                                "): " + s.message());
  }
  started_.store(true, std::memory_order_release);
  return Status::Ok();
}

void RemoteManager::Reserve(u32 num_workers) {
  staged_.resize(num_workers);
  {
    const ServerConfig &c = CHI_CONFIG_MANAGER->config();
    shm_budget_ = std::min(c.cdata_size_, c.rdata_size_) / 8;
  }
  self_ = CHI_IPC->node_id();
  request_timeout_ns_ =
      u64{CHI_CONFIG_MANAGER->config().request_timeout_ms_} * 1000000;
  max_peer_requests_ = CHI_CONFIG_MANAGER->config().max_peer_requests_;
  max_peer_bytes_ = CHI_CONFIG_MANAGER->config().max_peer_bytes_;
  num_nodes_ = static_cast<u32>(CHI_CONFIG_MANAGER->config().hosts_.size());
  // Made (not started) before any worker runs: workers read transport_
  // without a lock, so it never changes while they run.
  if (CHI_CONFIG_MANAGER->config().hosts_.size() > 1) {
    transport_ = std::make_unique<hshm::lbm::Transport>();
  }
  loads_ = std::make_unique<LoadSlot[]>(num_nodes_ + 1);
}

void RemoteManager::PublishLoad(u32 inflight, u32 busy_permille) {
  if (!loads_ || self_ == 0 || self_ > num_nodes_) return;
  LoadSlot &me = loads_[self_];
  me.inflight.store(inflight, std::memory_order_relaxed);
  me.busy_permille.store(busy_permille, std::memory_order_relaxed);
  me.sent_since.store(0, std::memory_order_relaxed);
  me.at_ns.store(hshm::NowNs(), std::memory_order_relaxed);
  if (!transport_ || !started_.load(std::memory_order_acquire)) return;
  WireLoad w{};
  w.inflight = inflight;
  w.busy_permille = busy_permille;
  w.seq = ++load_seq_;
  u32 kind = kWireLoad;
  for (NodeId n = 1; n <= num_nodes_; ++n) {
    if (n == self_ || !transport_->PeerAlive(n)) continue;
    hshm::lbm::OutRecord rec;
    rec.bytes.append(reinterpret_cast<const char *>(&kind), sizeof(kind));
    rec.bytes.append(reinterpret_cast<const char *>(&w), sizeof(w));
    (void)transport_->Send(n, std::move(rec));  // lost: the next one comes
  }
}

RemoteManager::NodeLoad RemoteManager::LoadOf(NodeId node) const {
  NodeLoad l;
  if (!loads_ || node == 0 || node > num_nodes_) return l;
  const LoadSlot &s = loads_[node];
  l.inflight = s.inflight.load(std::memory_order_relaxed);
  l.busy_permille = s.busy_permille.load(std::memory_order_relaxed);
  l.sent_since = s.sent_since.load(std::memory_order_relaxed);
  l.outstanding = s.outstanding.load(std::memory_order_relaxed);
  u64 at = s.at_ns.load(std::memory_order_relaxed);
  if (at != 0) {
    u64 now = hshm::NowNs();
    l.age_ms = now > at ? (now - at) / 1000000 : 0;
  }
  return l;
}

NodeId RemoteManager::PickLeastLoaded(const NodeId *nodes, u32 count,
                                      u32 spread, u32 self_live) {
  if (!loads_ || count == 0) return 0;
  NodeId best = 0;
  u64 best_load = ~0ull;
  for (u32 k = 0; k < count; ++k) {
    NodeId n = nodes[(spread + k) % count];
    if (n == 0 || n > num_nodes_ || !NodeAlive(n)) continue;
    const LoadSlot &s = loads_[n];
    u64 load = static_cast<u64>(s.inflight.load(std::memory_order_relaxed));
    if (n == self_) {
      // Here the live count is exact; the last report may still count
      // tasks that finished since.
      load = std::max<u64>(load, self_live);
    } else {
      load += s.sent_since.load(std::memory_order_relaxed);
      load = std::max<u64>(load, s.outstanding.load(std::memory_order_relaxed));
      load += kRemotePenalty;  // the network hop: equal loads stay here
    }
    if (load < best_load || (load == best_load && n == self_)) {
      best = n;
      best_load = load;
    }
  }
  if (best != 0 && best != self_) {
    loads_[best].sent_since.fetch_add(1, std::memory_order_relaxed);
  }
  return best;
}

void RemoteManager::Stop() {
  if (!transport_) return;
  // The stopped transport stays allocated: workers may still call it (it
  // refuses everything now) until they exit.
  transport_->Stop();
  FailAll(Status::Unavailable("the runtime is stopping"));
}

bool RemoteManager::NodeAlive(NodeId node) const {
  if (node == self_) return true;
  return transport_ && started_.load(std::memory_order_acquire) &&
         transport_->PeerAlive(node);
}

u64 RemoteManager::NumPending() {
  std::lock_guard<std::mutex> lock(mu_);
  return pending_.size();
}

std::string RemoteManager::StatLine() {
  std::string s = "network: " + std::to_string(num_nodes_) + " nodes";
  if (!transport_) return s + " (single node)";
  s += ", forwarded " + std::to_string(forwarded_.load()) + ", replies sent " +
       std::to_string(replied_.load()) + ", requests received " +
       std::to_string(received_.load()) + ", pending " +
       std::to_string(NumPending()) + ", dropped " +
       std::to_string(dropped_.load());
  hshm::lbm::TransportStats ts = transport_->stats();
  s += "; messages sent " + std::to_string(ts.msgs_sent) + " (" +
       std::to_string(ts.records_sent) + " records), received " +
       std::to_string(ts.msgs_received) + ", malformed " +
       std::to_string(ts.dropped_malformed) + ", from a wrong address " +
       std::to_string(ts.dropped_wrong_address);
  if (CHI_CONFIG_MANAGER->config().curve_) {
    s += "; CURVE on, failed handshakes " + std::to_string(ts.auth_failures);
  } else if (CHI_CONFIG_MANAGER->config().check_peer_address_) {
    s += "; refused connections " + std::to_string(ts.auth_failures);
  }
  s += "; peers:";
  for (u32 n = 1; n <= num_nodes_; ++n) {
    if (n == self_) continue;
    s += " " + std::to_string(n) + (NodeAlive(n) ? " up" : " down");
  }
  s += "; containers moved off overloaded nodes " +
       std::to_string(CHI_WORK_ORCHESTRATOR->offloads());
  s += "; load reports received " + std::to_string(load_reports_.load()) +
       "; node loads (in flight + sent since report):";
  for (u32 n = 1; n <= num_nodes_; ++n) {
    NodeLoad l = LoadOf(n);
    s += " " + std::to_string(n) + "=" + std::to_string(l.inflight) + "+" +
         std::to_string(l.sent_since) + " (" + std::to_string(l.outstanding) +
         " ours)";
  }
  return s;
}

Status RemoteManager::Refused(NodeId to,
                              const hshm::lbm::OutRecord &rec) const {
  if (!transport_->Fits(to, rec)) return TooLargeFor(to);
  return Status::Unavailable("node " + std::to_string(to) + " is down");
}

Status RemoteManager::TooLargeFor(NodeId node) const {
  return Status::ResourceExhausted(
      "the request to node " + std::to_string(node) +
      " is more than one message carries (" + MessageLimitText(node) + ")");
}

std::string RemoteManager::MessageLimitText(NodeId node) const {
  const u64 limit = transport_->MaxMessageBytesTo(node);
  std::string s = "network.max_message_bytes " + std::to_string(limit);
  if (limit < transport_->max_message_bytes()) {
    s += " of node " + std::to_string(node) + "; this node's is " +
         std::to_string(transport_->max_message_bytes());
  }
  return s;
}

Worker *RemoteManager::PickWorker(u32 prio) {
  return CHI_WORK_ORCHESTRATOR->PickWorker(prio < kNumPrios ? prio
                                                            : kLowLatency);
}

Status RemoteManager::Forward(RunContext *r, NodeId node, const DomainQuery &q,
                              u32 worker_id) {
  if (!transport_ || node == 0 || node > num_nodes_) {
    return Status::Unavailable("node " + std::to_string(node) +
                               " is not reachable from node " +
                               std::to_string(self_));
  }
  if (!transport_->PeerAlive(node)) {
    return Status::Unavailable("node " + std::to_string(node) + " is down");
  }
  Task *t = r->task_;
  bool reply = WantsReply(r);
  u64 req = next_req_.fetch_add(1, std::memory_order_relaxed);
  WireRequest w{};
  w.req_id = req;
  w.pool_id = t->pool_id_;
  w.task_node = t->task_node_;
  w.dom_query = q;
  w.method = t->method_;
  w.flags = t->task_flags_.bits_;
  w.prio = t->prio_;
  // Bit 0: reply wanted; bit 1: relayed (a remote request sent on because
  // its container moved; the next node may not relay it again).
  w.reply_wanted =
      (reply ? 1u : 0u) | (r->origin_ == TaskOrigin::kRemote ? 2u : 0u);
  w.period_ns = t->period_ns_;
  hshm::lbm::OutRecord rec;
  rec.tag = reply ? req : 0;
  u32 kind = kWireRequest;
  rec.bytes.append(reinterpret_cast<const char *>(&kind), sizeof(kind));
  rec.bytes.append(reinterpret_cast<const char *>(&w), sizeof(w));
  std::vector<DataFrame> frames;
  FieldArchive ar(FieldArchive::Mode::kSaveIn, t);
  ar.set_output(&rec.bytes, &frames);
  r->method_->fields(ar, t);
  HSHM_RETURN_IF_ERROR(ar.status());
  std::atomic<u64> &unsent = loads_[node].unsent_bytes;
  const u64 bytes = FrameBytes(frames);
  if (!transport_->Fits(node, rec.bytes.size(), bytes, frames.size())) {
    return Status::ResourceExhausted("the request to node " +
                                     std::to_string(node) + " is " +
                                     std::to_string(rec.bytes.size() + bytes) +
                                     " bytes, more than one message carries (" +
                                     MessageLimitText(node) + ")");
  }
  if (!Charge(&unsent, bytes, max_peer_bytes_)) {
    return Status::ResourceExhausted(
        "node " + std::to_string(self_) + " holds " +
        std::to_string(unsent.load(std::memory_order_relaxed)) +
        " bytes not yet sent to node " + std::to_string(node) +
        " (network.max_peer_bytes); this request has " + std::to_string(bytes));
  }
  rec.frames = ToZmq(frames, &unsent, &shm_held_, shm_budget_);
  if (reply) {
    std::lock_guard<std::mutex> lock(mu_);
    const u64 deadline = hshm::NowNs() + request_timeout_ns_;
    pending_[req] = Pending{r, worker_id, node, deadline};
    next_expiry_ns_ = std::min(next_expiry_ns_, deadline);
    loads_[node].outstanding.fetch_add(1, std::memory_order_relaxed);
  }
  // Sent when the worker ends its loop iteration (Flush): one batch, one
  // wake-up of the network thread for all it forwarded meanwhile.
  Stage(worker_id, node, std::move(rec));
  forwarded_.fetch_add(1, std::memory_order_relaxed);
  return Status::Ok();
}

void RemoteManager::Stage(u32 worker_id, NodeId to,
                          hshm::lbm::OutRecord &&rec) {
  if (worker_id >= staged_.size()) {
    // Not a worker thread: send at once.
    u64 tag = rec.tag;
    if (!transport_->Send(to, std::move(rec)) && tag != 0) {
      auto *m = new NetMessage;
      m->is_reply = true;
      m->from = to;
      m->failure = Refused(to, rec);
      Resolve(tag, to, m);
    }
    return;
  }
  staged_[worker_id].push_back(Staged{to, std::move(rec)});
}

void RemoteManager::Flush(u32 worker_id) {
  std::vector<Staged> &st = staged_[worker_id];
  std::vector<hshm::lbm::OutRecord> batch;
  std::vector<bool> done(st.size(), false);
  for (size_t i = 0; i < st.size(); ++i) {
    if (done[i]) continue;
    NodeId to = st[i].to;
    batch.clear();
    for (size_t j = i; j < st.size(); ++j) {
      if (!done[j] && st[j].to == to) {
        batch.push_back(std::move(st[j].rec));
        done[j] = true;
      }
    }
    if (transport_ && transport_->SendMany(to, batch)) continue;
    // Refused: each record alone, so that only those refused fail: the
    // node is down, or it said it accepts less since Forward checked.
    for (hshm::lbm::OutRecord &r : batch) {
      const u64 tag = r.tag;
      if (transport_ && transport_->Send(to, std::move(r))) continue;
      if (tag == 0) continue;  // a reply to a dead requester
      auto *m = new NetMessage;
      m->is_reply = true;
      m->from = to;
      m->failure = transport_ ? Refused(to, r)
                              : Status::Unavailable("no network transport");
      Resolve(tag, to, m);
    }
  }
  st.clear();
}

void RemoteManager::Reply(RunContext *r, const Status &status) {
  if (!transport_) return;
  hshm::lbm::OutRecord rec;
  u32 kind = kWireReply;
  rec.bytes.append(reinterpret_cast<const char *>(&kind), sizeof(kind));
  WireReply w{};
  w.req_id = r->req_id_;
  std::string err;
  std::vector<DataFrame> frames;
  std::string fields;
  if (!status.ok() || !r->task_) {
    w.rc =
        static_cast<u32>(status.ok() ? StatusCode::kInternal : status.code());
    err = status.message();
  } else {
    Task *t = r->task_;
    FieldArchive ar(FieldArchive::Mode::kSaveOut, t);
    ar.set_output(&fields, &frames);
    r->method_->fields(ar, t);
    if (!ar.status().ok()) {
      w.rc = static_cast<u32>(ar.status().code());
      err = ar.status().message();
      fields.clear();
      frames.clear();
    } else {
      w.rc = t->rc_;
      err = internal::TaskErrorMessage(t);
    }
  }
  std::atomic<u64> *unsent = r->from_node_ >= 1 && r->from_node_ <= num_nodes_
                                 ? &loads_[r->from_node_].unsent_bytes
                                 : &unsent_elsewhere_;
  // The method ran; only its outputs are lost if they do not fit.
  if (w.rc == 0 &&
      !transport_->Fits(r->from_node_,
                        rec.bytes.size() + sizeof(w) + fields.size(),
                        FrameBytes(frames), frames.size())) {
    w.rc = static_cast<u32>(StatusCode::kResourceExhausted);
    err = "the task ran on node " + std::to_string(self_) +
          ", but its reply of " +
          std::to_string(fields.size() + FrameBytes(frames)) +
          " bytes is more than one message carries (" +
          MessageLimitText(r->from_node_) + ")";
  }
  if (w.rc == 0 && !Charge(unsent, FrameBytes(frames), max_peer_bytes_)) {
    w.rc = static_cast<u32>(StatusCode::kResourceExhausted);
    err = "node " + std::to_string(self_) + " holds " +
          std::to_string(unsent->load(std::memory_order_relaxed)) +
          " bytes not yet sent to node " + std::to_string(r->from_node_) +
          " (network.max_peer_bytes); the task ran, but its reply of " +
          std::to_string(FrameBytes(frames)) + " bytes was dropped";
  }
  if (w.rc == 0) err.clear();
  // As in shared memory: an error text is at most kMaxErrorText bytes, so an
  // error reply always fits in a message (no node accepts less than
  // hshm::lbm::kMinMessageBytes, 1 MiB).
  if (err.size() > internal::kMaxErrorText) {
    err.resize(internal::kMaxErrorText);
  }
  w.err_len = static_cast<u32>(err.size());
  rec.bytes.append(reinterpret_cast<const char *>(&w), sizeof(w));
  rec.bytes.append(err);
  // An error reply carries no fields: the requester keeps its own.
  if (w.rc == 0)
    rec.bytes.append(fields);
  else
    frames.clear();
  rec.frames = ToZmq(frames, unsent, &shm_held_, shm_budget_);
  Stage(r->worker_ ? r->worker_->id() : ~0u, r->from_node_, std::move(rec));
  replied_.fetch_add(1, std::memory_order_relaxed);
}

void RemoteManager::OnRecord(NodeId from, std::string_view bytes,
                             zmq::message_t *frames, u32 num_frames) {
  u32 kind = 0;
  if (bytes.size() < sizeof(kind)) {
    HSHM_LOG_LIMITED("chimaera: dropped a record of %zu bytes from node %u\n",
                     bytes.size(), from);
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  std::memcpy(&kind, bytes.data(), sizeof(kind));
  auto *m = new NetMessage;
  m->from = from;
  m->bytes.assign(bytes.data(), bytes.size());
  m->frames.reserve(num_frames);
  for (u32 i = 0; i < num_frames; ++i)
    m->frames.push_back(std::move(frames[i]));
  if (kind == kWireRequest) {
    received_.fetch_add(1, std::memory_order_relaxed);
    u32 prio = kLowLatency;
    WireRequest w{};
    const bool whole = bytes.size() >= sizeof(kind) + sizeof(WireRequest);
    if (whole) {
      std::memcpy(&w, bytes.data() + sizeof(kind), sizeof(w));
      prio = w.prio;
    }
    // What this peer has here at once is bounded: past it, the request is
    // refused at once (the worker that would admit it never sees it).
    u64 cost = bytes.size();
    for (const zmq::message_t &f : m->frames) cost += f.size();
    LoadSlot &slot = loads_[from];
    const u32 n = slot.charged.fetch_add(1, std::memory_order_relaxed);
    const u64 b = slot.charged_bytes.fetch_add(cost, std::memory_order_relaxed);
    if (n >= max_peer_requests_ || b + cost > max_peer_bytes_) {
      Uncharge(from, cost);
      HSHM_LOG_LIMITED(
          "chimaera: node %u refused a request from node %u: it has %u "
          "requests (%llu bytes) here already\n",
          self_, from, n, static_cast<unsigned long long>(b));
      dropped_.fetch_add(1, std::memory_order_relaxed);
      if (whole && (w.reply_wanted & 1)) {
        RunContext refused;
        refused.req_id_ = w.req_id;
        refused.from_node_ = from;
        Reply(&refused,
              Status::ResourceExhausted(
                  "node " + std::to_string(self_) + " holds " +
                  std::to_string(n) + " requests (" + std::to_string(b) +
                  " bytes) from node " + std::to_string(from) +
                  " already (network.max_peer_requests / max_peer_bytes)"));
      }
      delete m;
      return;
    }
    auto *r = new RunContext;
    r->net_ = m;
    r->charged_node_ = from;
    r->charged_bytes_ = cost;
    PickWorker(prio)->PostInbox(r);
    return;
  }
  if (kind == kWireReply) {
    WireReply w;
    if (bytes.size() < sizeof(kind) + sizeof(w)) {
      HSHM_LOG_LIMITED("chimaera: dropped a truncated reply from node %u\n",
                       from);
      dropped_.fetch_add(1, std::memory_order_relaxed);
      delete m;
      return;
    }
    std::memcpy(&w, bytes.data() + sizeof(kind), sizeof(w));
    if (w.err_len > bytes.size() - sizeof(kind) - sizeof(w)) {
      HSHM_LOG_LIMITED(
          "chimaera: dropped a reply from node %u with a bad "
          "error length\n",
          from);
      dropped_.fetch_add(1, std::memory_order_relaxed);
      delete m;
      return;
    }
    m->is_reply = true;
    Resolve(w.req_id, from, m);
    return;
  }
  if (kind == kWireLoad) {
    delete m;
    WireLoad w;
    if (bytes.size() != sizeof(kind) + sizeof(w) || num_frames != 0 ||
        from == 0 || from > num_nodes_ || from == self_) {
      HSHM_LOG_LIMITED("chimaera: dropped a malformed load report from %u\n",
                       from);
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    std::memcpy(&w, bytes.data() + sizeof(kind), sizeof(w));
    if (w.busy_permille > 1000) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    LoadSlot &slot = loads_[from];
    // Only the network thread writes peers' slots. A peer that restarts
    // counts from 1 again; OnPeer resets seq when it goes down or comes up.
    if (w.seq <= slot.seq.load(std::memory_order_relaxed)) return;  // stale
    slot.seq.store(w.seq, std::memory_order_relaxed);
    slot.inflight.store(w.inflight, std::memory_order_relaxed);
    slot.busy_permille.store(w.busy_permille, std::memory_order_relaxed);
    slot.sent_since.store(0, std::memory_order_relaxed);
    slot.at_ns.store(hshm::NowNs(), std::memory_order_relaxed);
    load_reports_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  HSHM_LOG_LIMITED(
      "chimaera: dropped a record of unknown kind %u from node "
      "%u\n",
      kind, from);
  dropped_.fetch_add(1, std::memory_order_relaxed);
  delete m;
}

void RemoteManager::Resolve(u64 req, NodeId from, NetMessage *msg) {
  Pending p;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = pending_.find(req);
    // A reply must come from the node the request went to.
    if (it == pending_.end() || it->second.node != from) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      delete msg;
      return;
    }
    p = it->second;
    pending_.erase(it);
    loads_[p.node].outstanding.fetch_sub(1, std::memory_order_relaxed);
  }
  p.rctx->net_ = msg;
  ReplyWorker(p)->PostInbox(p.rctx);
}

Worker *RemoteManager::ReplyWorker(const Pending &p) {
  Worker *w = CHI_WORK_ORCHESTRATOR->workers()[p.worker].get();
  // Any worker applies a reply; a stuck one (robbed of its lanes) would
  // keep it until its task returns.
  return w->robbed() ? PickWorker(p.rctx->task_->prio_) : w;
}

template <typename Pred>
void RemoteManager::FailPending(const Status &status, Pred &&which) {
  std::vector<Pending> dead;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (which(it->second)) {
        dead.push_back(it->second);
        loads_[it->second.node].outstanding.fetch_sub(
            1, std::memory_order_relaxed);
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (Pending &p : dead) {
    auto *m = new NetMessage;
    m->is_reply = true;
    m->from = p.node;
    m->failure = status;
    p.rctx->net_ = m;
    ReplyWorker(p)->PostInbox(p.rctx);
  }
}

void RemoteManager::FailNode(NodeId node, const Status &status) {
  FailPending(status,
              [node](const Pending &p) { return node == 0 || p.node == node; });
}

void RemoteManager::Uncharge(NodeId node, u64 bytes) {
  LoadSlot &slot = loads_[node];
  slot.charged.fetch_sub(1, std::memory_order_relaxed);
  slot.charged_bytes.fetch_sub(bytes, std::memory_order_relaxed);
}

void RemoteManager::ExpireRequests() {
  const u64 now = hshm::NowNs();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (now < next_expiry_ns_) return;
    next_expiry_ns_ = UINT64_MAX;
    for (auto &kv : pending_) {
      next_expiry_ns_ = std::min(next_expiry_ns_, kv.second.deadline_ns);
    }
    if (now < next_expiry_ns_) return;
  }
  FailPending(
      Status::Timeout("no reply from the node within network."
                      "request_timeout_ms (" +
                      std::to_string(request_timeout_ns_ / 1000000) + " ms)"),
      [now](const Pending &p) { return p.deadline_ns <= now; });
}

void RemoteManager::FailAll(const Status &status) { FailNode(0, status); }

void RemoteManager::OnPeer(NodeId node, bool alive) {
  fprintf(stderr, "chimaera: node %u sees node %u %s\n", self_, node,
          alive ? "up" : "down");
  if (loads_ && node >= 1 && node <= num_nodes_) {
    loads_[node].seq.store(0, std::memory_order_relaxed);
  }
  if (!alive) {
    FailNode(node, Status::Unavailable("node " + std::to_string(node) +
                                       " stopped answering"));
  }
}

}  // namespace chi
