#include "hermes_shm/lightbeam/transport.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>

#include "hermes_shm/lightbeam/curve.h"
#include "hermes_shm/util/log_limit.h"
#include "hermes_shm/util/tsan.h"

namespace hshm::lbm {

namespace {

/** Most messages read from the ROUTER per wakeup, so sends are not starved. */
constexpr int kMaxRecvPerWake = 4096;
/** Per record in the body: [u32 len][u32 nframes]. */
constexpr u64 kRecordIndexBytes = 8;
/** Most malformed-message log lines per second. */
constexpr u32 kMaxLogLinesPerSec = 10;
/** Where libzmq looks for the ZAP handler of a context (RFC 27). */
constexpr char kZapEndpoint[] = "inproc://zeromq.zap.01";
/** Where the ROUTER's monitor publishes its events. */
constexpr char kMonitorEndpoint[] = "inproc://lightbeam.router.monitor";
/** Refused connections are logged at most this often (a peer with the wrong
 * key retries every 100 ms). */
constexpr auto kAuthLogPeriod = std::chrono::seconds(5);
/** ROUTER events of a refused handshake. */
constexpr int kHandshakeFailedEvents = ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                                       ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                       ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
/** ROUTER events the connection-check thread watches: refused handshakes,
 * and connections closed at accept (an address that is no node's, or no
 * descriptor left). */
constexpr int kMonitorEvents = kHandshakeFailedEvents | ZMQ_EVENT_ACCEPT_FAILED;

/** Splits "host:port" (host may be "[v6]"). Returns an error message, or
 * nullptr if `ep` is well formed. Wildcard hosts are refused. */
const char *ParseEndpoint(const std::string &ep, std::string *host) {
  size_t colon = ep.rfind(':');
  if (colon == std::string::npos) return "expected host:port";
  *host = ep.substr(0, colon);
  std::string port = ep.substr(colon + 1);
  if (host->empty()) return "empty host";
  if (port.empty() || port.size() > 5) return "bad port";
  for (char c : port) {
    if (c < '0' || c > '9') return "bad port";
  }
  int p = std::stoi(port);
  if (p < 1 || p > 65535) return "port out of range";
  if ((*host)[0] == '[' && host->back() != ']') return "bad [ipv6] host";
  if ((*host)[0] != '[' && host->find(':') != std::string::npos) {
    return "ipv6 hosts must be bracketed";
  }
  for (char c : *host) {
    if (c <= ' ' || c == '*' || c == '/') return "bad host";
  }
  if (*host == "0.0.0.0" || *host == "[::]") return "wildcard host";
  return nullptr;
}

/** A random non-zero incarnation number. */
u64 RandomIncarnation() {
  std::random_device rd;
  u64 v = (static_cast<u64>(rd()) << 32) ^ rd() ^
          static_cast<u64>(
              std::chrono::steady_clock::now().time_since_epoch().count());
  return v ? v : 1;
}

/** The address to bind for `host` (as ParseEndpoint accepted it): ZeroMQ
 * binds only to addresses and interface names, so a host name is resolved
 * here to its first IPv4 address; an unresolvable one is returned as it is
 * (maybe an interface name). */
std::string BindHost(const std::string &host) {
  in_addr a4;
  if (host[0] == '[' || inet_pton(AF_INET, host.c_str(), &a4) == 1) {
    return host;
  }
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo *res = nullptr;
  std::string addr = host;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &res) == 0 && res) {
    char ip[INET_ADDRSTRLEN];
    const auto *sin = reinterpret_cast<const sockaddr_in *>(res->ai_addr);
    if (inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip))) addr = ip;
  }
  if (res) freeaddrinfo(res);
  return addr;
}

/** 16 bytes naming an IP address (IPv4 as ::ffff:a.b.c.d), from its numeric
 * text ("1.2.3.4", "::1", "[::1]", "fe80::1%eth0"); empty if `text` is not
 * one. */
std::string AddressKey(std::string_view text) {
  if (!text.empty() && text.front() == '[' && text.back() == ']') {
    text = text.substr(1, text.size() - 2);
  }
  text = text.substr(0, text.find('%'));  // a scope id
  if (text.empty() || text.size() >= INET6_ADDRSTRLEN) return std::string();
  char buf[INET6_ADDRSTRLEN];
  memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  unsigned char key[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (inet_pton(AF_INET, buf, key + 12) != 1 &&
      inet_pton(AF_INET6, buf, key) != 1) {
    return std::string();
  }
  return std::string(reinterpret_cast<char *>(key), sizeof(key));
}

/** The address an AddressKey stands for, as text ("a.b.c.d" for an IPv4
 * one); empty for a malformed key. */
std::string KeyText(const std::string &key) {
  static const unsigned char kV4Prefix[12] = {0, 0, 0, 0, 0,    0,
                                              0, 0, 0, 0, 0xff, 0xff};
  if (key.size() != 16) return std::string();
  char ip[INET6_ADDRSTRLEN];
  const bool v4 = memcmp(key.data(), kV4Prefix, sizeof(kV4Prefix)) == 0;
  if (!inet_ntop(v4 ? AF_INET : AF_INET6, key.data() + (v4 ? 12 : 0), ip,
                 sizeof(ip))) {
    return std::string();
  }
  return ip;
}

/** The addresses `host` (as ParseEndpoint accepted it) resolves to, as
 * AddressKey gives them; empty if it does not resolve. */
std::vector<std::string> ResolveHost(const std::string &host) {
  std::vector<std::string> keys;
  std::string name = host;
  if (name[0] == '[') name = name.substr(1, name.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo *res = nullptr;
  if (getaddrinfo(name.c_str(), nullptr, &hints, &res) != 0) return keys;
  for (addrinfo *a = res; a; a = a->ai_next) {
    const void *src = nullptr;
    if (a->ai_family == AF_INET) {
      src = &reinterpret_cast<const sockaddr_in *>(a->ai_addr)->sin_addr;
    } else if (a->ai_family == AF_INET6) {
      src = &reinterpret_cast<const sockaddr_in6 *>(a->ai_addr)->sin6_addr;
    } else {
      continue;
    }
    char ip[INET6_ADDRSTRLEN];
    if (!inet_ntop(a->ai_family, src, ip, sizeof(ip))) continue;
    std::string key = AddressKey(ip);
    if (!key.empty() &&
        std::find(keys.begin(), keys.end(), key) == keys.end()) {
      keys.push_back(std::move(key));
    }
  }
  freeaddrinfo(res);
  return keys;
}

/** Sets the options every lightbeam socket shares. */
void CommonOptions(zmq::socket_t &s, const std::string &host, int hwm) {
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::sndhwm, hwm);
  s.set(zmq::sockopt::rcvhwm, hwm);
  if (host[0] == '[') s.set(zmq::sockopt::ipv6, 1);
}

}  // namespace

Transport::~Transport() { Stop(); }

Status Transport::Start(u32 self, const std::vector<std::string> &endpoints,
                        const TransportOptions &opt, RecordHandler on_record,
                        PeerHandler on_peer, SendFailHandler on_send_fail) {
  std::lock_guard<std::mutex> life(life_mu_);
  if (started_) return Status::InvalidArgument("lightbeam: already started");
  if (endpoints.empty() || endpoints.size() >= kMaxMessageFrames) {
    return Status::InvalidArgument("lightbeam: bad number of endpoints");
  }
  if (self < 1 || self > endpoints.size()) {
    return Status::InvalidArgument("lightbeam: self node " +
                                   std::to_string(self) + " not in 1.." +
                                   std::to_string(endpoints.size()));
  }
  std::vector<std::string> hosts(endpoints.size());
  for (size_t i = 0; i < endpoints.size(); ++i) {
    if (const char *why = ParseEndpoint(endpoints[i], &hosts[i])) {
      return Status::InvalidArgument("lightbeam: endpoint '" + endpoints[i] +
                                     "' of node " + std::to_string(i + 1) +
                                     ": " + why);
    }
  }
  if (opt.heartbeat_ms == 0 || opt.dead_after_ms == 0 ||
      opt.max_batch_records == 0 || opt.sndhwm < 0 ||
      opt.max_message_bytes < kMinMessageBytes) {
    return Status::InvalidArgument("lightbeam: bad TransportOptions");
  }
  const bool curve =
      !opt.curve_public_key.empty() || !opt.curve_secret_key.empty();
  if (curve) {
    if (!CurveAvailable()) {
      return Status::Unimplemented(
          "lightbeam: CURVE keys given, but libzmq was built without CURVE");
    }
    Status k = CheckCurveKeyPair({opt.curve_public_key, opt.curve_secret_key});
    if (!k.ok()) {
      return Status::InvalidArgument("lightbeam: CURVE keys: " + k.message());
    }
  }
  std::vector<std::vector<std::string>> addrs(endpoints.size());
  if (opt.check_peer_address) {
    for (size_t i = 0; i < endpoints.size(); ++i) {
      addrs[i] = ResolveHost(hosts[i]);
      if (addrs[i].empty()) {
        return Status::InvalidArgument(
            "lightbeam: the host of node " + std::to_string(i + 1) + " ('" +
            hosts[i] +
            "') does not resolve, so messages claiming that node cannot be "
            "checked against its address");
      }
    }
  }
  self_ = self;
  num_nodes_ = static_cast<u32>(endpoints.size());
  opt_ = opt;
  on_record_ = std::move(on_record);
  on_peer_ = std::move(on_peer);
  on_send_fail_ = std::move(on_send_fail);
  incarnation_ = RandomIncarnation();

  const std::string bind_host = BindHost(hosts[self - 1]);
  const std::string bind_addr =
      "tcp://" + bind_host + endpoints[self - 1].substr(hosts[self - 1].size());
  try {
    ctx_ = std::make_unique<zmq::context_t>(1);
    router_ = std::make_unique<zmq::socket_t>(*ctx_, zmq::socket_type::router);
    CommonOptions(*router_, hosts[self - 1], opt.sndhwm);
    // A restarted peer reconnects with the same routing id: let it take over.
    router_->set(zmq::sockopt::router_handover, 1);
    router_->set(
        zmq::sockopt::handshake_ivl,
        static_cast<int>(std::min<u32>(opt.handshake_timeout_ms,
                                       std::numeric_limits<int>::max())));
    router_->set(zmq::sockopt::maxmsgsize,
                 static_cast<int64_t>(std::min<u64>(
                     opt.max_message_bytes, std::numeric_limits<i64>::max())));
    if (curve || opt.check_peer_address) SetUpAuth(curve);
    if (opt.check_peer_address) {
      // Only the other nodes' addresses may connect at all: libzmq closes
      // any other connection as it accepts it. Without this, anyone who
      // could reach the port held one of our descriptors per connection
      // until the handshake timeout (30 s), and once they ran out the
      // ROUTER's accept loop spun at a whole core.
      // An IPv4 socket sees only IPv4 peers; an IPv6 one sees IPv4 peers as
      // mapped addresses. (Peers of the other family are refused anyway:
      // they cannot talk from their own address.)
      const bool v6 = hosts[self - 1][0] == '[';
      std::vector<std::string> allowed;
      for (u32 n = 1; n <= endpoints.size(); ++n) {
        if (n == self) continue;
        for (const std::string &key : addrs[n - 1]) {
          std::string ip = KeyText(key);
          const bool key_v4 = ip.find(':') == std::string::npos;
          if (ip.empty() || (!v6 && !key_v4)) continue;
          allowed.push_back(v6 && key_v4 ? "::ffff:" + ip : ip);
        }
      }
      // libzmq filters nothing when the list is empty: then name an
      // address no connection comes from, so that none is accepted.
      if (allowed.empty()) allowed.push_back(v6 ? "::" : "0.0.0.0");
      for (const std::string &ip : allowed) {
        if (zmq_setsockopt(router_->handle(), ZMQ_TCP_ACCEPT_FILTER, ip.data(),
                           ip.size()) != 0) {
          fprintf(stderr,
                  "lightbeam: node %u cannot add %s to its accept filter "
                  "(%s); connections from there are closed\n",
                  self, ip.c_str(), zmq_strerror(zmq_errno()));
        }
      }
    }
    try {
      router_->bind(bind_addr);
    } catch (const zmq::error_t &e) {
      std::string msg = "lightbeam: bind " + endpoints[self - 1] + " (" +
                        bind_addr + "): " + e.what();
      AbortStart();
      if (e.num() == EADDRINUSE) return Status::AlreadyExists(msg);
      return Status::Unavailable(msg);
    }
    peers_.clear();
    for (u32 n = 1; n <= num_nodes_; ++n) {
      peers_.push_back(std::make_unique<Peer>());
      peers_.back()->last_heard = Clock::now();
      peers_.back()->addrs = std::move(addrs[n - 1]);
      if (n == self) continue;
      // "source;destination": the peer checks where we talk from. (Across
      // address families there is no such source; the peer then refuses.)
      const bool same_family =
          (bind_host[0] == '[') == (hosts[n - 1][0] == '[');
      peers_.back()->host = hosts[n - 1];
      peers_.back()->connect_to =
          "tcp://" +
          (opt.check_peer_address && same_family ? bind_host + ":0;"
                                                 : std::string()) +
          endpoints[n - 1];
      peers_.back()->dealer = MakeDealer(*peers_.back(), false);
      peers_.back()->control = MakeDealer(*peers_.back(), true);
    }
  } catch (const zmq::error_t &e) {
    AbortStart();
    return Status::InvalidArgument(std::string("lightbeam: socket setup: ") +
                                   e.what());
  }
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (zap_) auth_wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0 || (zap_ && auth_wake_fd_ < 0)) {
    int err = errno;
    AbortStart();
    return Status::FromErrno("lightbeam: eventfd", err);
  }
  pending_.clear();
  pending_.resize(num_nodes_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    running_ = true;
    wake_pending_ = false;
    dirty_.clear();
  }
  stop_.store(false);
  auth_stop_.store(false);
  if (zap_) {
    StatusOr<Thread> a = HSHM_THREAD_MODEL->Spawn([this] { AuthLoop(); });
    if (a.ok()) auth_thread_ = std::move(a).value();
  }
  StatusOr<Thread> t = HSHM_THREAD_MODEL->Spawn([this] { Loop(); });
  if (!t.ok() || (zap_ && !auth_thread_.joinable())) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      running_ = false;
      stop_.store(true);
      u64 one = 1;
      (void)!write(wake_fd_, &one, sizeof(one));
    }
    StopAuthThread();
    // The network thread closes the sockets as it ends.
    if (t.ok()) (void)HSHM_THREAD_MODEL->Join(t.value());
    Status why = t.ok() ? Status::Internal(
                              "lightbeam: cannot start the "
                              "connection-check thread")
                        : t.status();
    AbortStart();
    return why;
  }
  thread_ = std::move(t).value();
  started_ = true;
  return Status::Ok();
}

void Transport::StopAuthThread() {
  if (!auth_thread_.joinable()) return;
  auth_stop_.store(true, std::memory_order_release);
  u64 one = 1;
  (void)!write(auth_wake_fd_, &one, sizeof(one));
  (void)HSHM_THREAD_MODEL->Join(auth_thread_);
}

void Transport::Stop() {
  std::lock_guard<std::mutex> life(life_mu_);
  if (!thread_.joinable()) return;
  // First: the network thread closes zap_ and monitor_ as it ends.
  StopAuthThread();
  {
    std::lock_guard<std::mutex> lock(mu_);
    running_ = false;
    stop_.store(true);
    u64 one = 1;
    (void)!write(wake_fd_, &one, sizeof(one));
  }
  (void)HSHM_THREAD_MODEL->Join(thread_);
  close(wake_fd_);
  wake_fd_ = -1;
  if (auth_wake_fd_ >= 0) close(auth_wake_fd_);
  auth_wake_fd_ = -1;
}

u64 Transport::MaxMessageBytesTo(u32 to) const {
  u64 limit = opt_.max_message_bytes;
  if (to == 0 || to > num_nodes_ || to == self_) return limit;
  const u64 theirs = peer(to).max_message_bytes.load(std::memory_order_relaxed);
  return theirs != 0 && theirs < limit ? theirs : limit;
}

namespace {
/** True if a record of `bytes` bytes and `num_frames` data frames of
 * `frame_bytes` bytes in all fits in one message of at most `limit` bytes.
 */
bool RecordFitsIn(u64 limit, u64 bytes, u64 frame_bytes, u64 num_frames) {
  if (bytes > std::numeric_limits<u32>::max() ||
      num_frames > kMaxMessageFrames - 3) {
    return false;
  }
  const u64 head = sizeof(WireHeader) + kRecordIndexBytes + bytes;
  return head <= limit && frame_bytes <= limit - head;
}
}  // namespace

bool Transport::Fits(u32 to, u64 bytes, u64 frame_bytes, u64 num_frames) const {
  return RecordFitsIn(MaxMessageBytesTo(to), bytes, frame_bytes, num_frames);
}

bool Transport::FitsIn(u64 limit, const OutRecord &rec) {
  u64 frame_bytes = 0;
  for (const zmq::message_t &f : rec.frames) frame_bytes += f.size();
  return RecordFitsIn(limit, rec.bytes.size(), frame_bytes, rec.frames.size());
}

bool Transport::Fits(u32 to, const OutRecord &rec) const {
  return FitsIn(MaxMessageBytesTo(to), rec);
}

bool Transport::SendMany(u32 to, std::vector<OutRecord> &recs) {
  if (to == 0 || to > num_nodes_ || to == self_) return false;
  Peer &p = peer(to);
  if (!p.alive.load(std::memory_order_acquire)) return false;
  for (const OutRecord &r : recs) {
    if (!Fits(to, r)) return false;
  }
  if (recs.empty()) return true;
  std::lock_guard<std::mutex> lock(mu_);
  if (!running_) return false;
  if (p.outbox.empty()) dirty_.push_back(to);
  for (OutRecord &r : recs) p.outbox.push_back(std::move(r));
  recs.clear();
  if (!wake_pending_) {
    wake_pending_ = true;
    u64 one = 1;
    (void)!write(wake_fd_, &one, sizeof(one));
  }
  return true;
}

bool Transport::Send(u32 to, OutRecord &&rec) {
  if (to == 0 || to > num_nodes_ || to == self_) return false;
  Peer &p = peer(to);
  if (!p.alive.load(std::memory_order_acquire)) return false;
  if (!Fits(to, rec)) return false;
  std::lock_guard<std::mutex> lock(mu_);
  if (!running_) return false;
  if (p.outbox.empty()) dirty_.push_back(to);
  p.outbox.push_back(std::move(rec));
  if (!wake_pending_) {
    // Written under mu_ so that Stop cannot close the fd under our feet.
    wake_pending_ = true;
    u64 one = 1;
    (void)!write(wake_fd_, &one, sizeof(one));
  }
  return true;
}

bool Transport::PeerAlive(u32 node) const {
  if (node == self_ && self_ != 0) return true;
  if (node == 0 || node > num_nodes_) return false;
  return peer(node).alive.load(std::memory_order_acquire);
}

u64 Transport::PeerIncarnation(u32 node) const {
  if (node == self_ && self_ != 0) return incarnation_;
  if (node == 0 || node > num_nodes_) return 0;
  return peer(node).incarnation.load(std::memory_order_acquire);
}

TransportStats Transport::stats() const {
  TransportStats s;
  s.msgs_sent = msgs_sent_.load(std::memory_order_relaxed);
  s.records_sent = records_sent_.load(std::memory_order_relaxed);
  s.msgs_received = msgs_received_.load(std::memory_order_relaxed);
  s.records_received = records_received_.load(std::memory_order_relaxed);
  s.dropped_malformed = dropped_malformed_.load(std::memory_order_relaxed);
  s.dropped_wrong_address =
      dropped_wrong_address_.load(std::memory_order_relaxed);
  s.send_failures = send_failures_.load(std::memory_order_relaxed);
  s.auth_failures = auth_failures_.load(std::memory_order_relaxed);
  s.dealer_resets = dealer_resets_.load(std::memory_order_relaxed);
  return s;
}

// ---------------------------------------------------------------------------
// Network thread
// ---------------------------------------------------------------------------

void Transport::Loop() {
  HSHM_THREAD_MODEL->SetName("lightbeam");
  // zap_ and monitor_ have a thread of their own: each ZeroMQ socket in a
  // poll set costs syscalls on every round of this loop.
  zmq_pollitem_t items[2] = {{router_->handle(), 0, ZMQ_POLLIN, 0},
                             {nullptr, wake_fd_, ZMQ_POLLIN, 0}};
  const auto tick = std::chrono::milliseconds(opt_.heartbeat_ms);
  next_tick_ = Clock::now();
  while (!stop_.load(std::memory_order_acquire)) {
    try {
      Clock::time_point now = Clock::now();
      if (now >= next_tick_) {
        Tick(now);
        next_tick_ = now + tick;
      }
      auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(
                      next_tick_ - now) +
                  std::chrono::milliseconds(1);
      for (u32 n = 1; n <= num_nodes_; ++n) {
        // Retry held-back records soon.
        if (n != self_ && !peer(n).backlog.empty()) {
          wait = std::chrono::milliseconds(1);
          break;
        }
      }
      for (zmq_pollitem_t &it : items) it.revents = 0;
      zmq::poll(items, 2, wait);
      if (items[1].revents & ZMQ_POLLIN) {
        u64 v;
        (void)!read(wake_fd_, &v, sizeof(v));
      }
      if (items[0].revents & ZMQ_POLLIN) ReceiveAll();
      DrainOutbox();
    } catch (const zmq::error_t &e) {
      if (e.num() != EINTR) {
        fprintf(stderr, "lightbeam: node %u network thread: %s\n", self_,
                e.what());
      }
    } catch (const std::exception &e) {
      fprintf(stderr, "lightbeam: node %u network thread: %s\n", self_,
              e.what());
    } catch (...) {
      fprintf(stderr, "lightbeam: node %u network thread: unknown exception\n",
              self_);
    }
  }
  // Send refuses new records now (running_ is false): fail what is queued.
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (u32 node : dirty_) pending_[node - 1].swap(peer(node).outbox);
    dirty_.clear();
  }
  for (u32 n = 1; n <= num_nodes_; ++n) {
    FailRecords(n, pending_[n - 1], 0, pending_[n - 1].size());
    // Their frames go now, while their owner's memory is still there.
    pending_[n - 1].clear();
    if (n != self_) {
      std::vector<OutRecord> &b = peer(n).backlog;
      FailRecords(n, b, 0, b.size());
      b.clear();
    }
  }
  in_frames_.clear();
  CloseSockets();
}

void Transport::DrainOutbox() {
  std::vector<u32> dirty;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (wake_pending_) {
      wake_pending_ = false;
      dirty.swap(dirty_);
      for (u32 node : dirty) pending_[node - 1].swap(peer(node).outbox);
    }
  }
  for (u32 node = 1; node <= num_nodes_; ++node) {
    if (node == self_) continue;
    std::vector<OutRecord> &recs = pending_[node - 1];
    Peer &p = peer(node);
    if (recs.empty() && p.backlog.empty()) continue;
    if (!p.backlog.empty()) {
      // Held-back records go first, in order.
      for (OutRecord &r : recs) p.backlog.push_back(std::move(r));
      recs.swap(p.backlog);
      p.backlog.clear();
    }
    if (p.alive.load(std::memory_order_relaxed)) {
      FlushPeer(node, recs);
    } else {
      FailRecords(node, recs, 0, recs.size());
    }
    recs.clear();
  }
}

void Transport::FlushPeer(u32 node, std::vector<OutRecord> &recs) {
  // Until the peer says what it accepts (its first message, a heartbeat at
  // the latest), only records that fit in the least any node accepts go:
  // a larger message it does not accept is dropped there, and its
  // connection with it.
  const bool heard =
      peer(node).max_message_bytes.load(std::memory_order_relaxed) != 0;
  const u64 limit = MaxMessageBytesTo(node);
  const u64 batch_limit = heard ? limit : std::min(limit, kMinMessageBytes);
  Peer &p = peer(node);
  size_t begin = 0;
  bool sent = false;  // some batch went out: the peer takes what we send
  while (begin < recs.size()) {
    if (sent && Clock::now() >= next_tick_) {
      // Heartbeats are due: the rest waits for the next round of the loop
      // (a long outbox would keep them, and our silence would make the
      // peers take us for dead). Not a stall: the peer is taking records.
      p.backlog_since = Clock::time_point();
      for (size_t i = begin; i < recs.size(); ++i) {
        p.backlog.push_back(std::move(recs[i]));
      }
      return;
    }
    if (!heard && !FitsIn(batch_limit, recs[begin])) {
      return HoldBack(node, recs, begin);  // in order: the rest waits too
    }
    if (!FitsIn(limit, recs[begin])) {
      // Queued before the peer said it accepts less.
      FailRecords(node, recs, begin, begin + 1, SendFailure::kTooLarge);
      ++begin;
      continue;
    }
    u64 body = 0, bytes = sizeof(WireHeader);
    u64 nframes = 0;
    size_t end = begin;
    for (; end < recs.size(); ++end) {
      const OutRecord &r = recs[end];
      u64 rb = kRecordIndexBytes + r.bytes.size();
      u64 fb = 0;
      for (const zmq::message_t &f : r.frames) fb += f.size();
      bool full = end - begin >= opt_.max_batch_records ||
                  bytes + rb + fb > opt_.max_batch_bytes ||
                  bytes + rb + fb > batch_limit ||
                  nframes + r.frames.size() > kMaxMessageFrames - 3;
      if (end > begin && full) break;  // a lone huge record still goes
      body += rb;
      bytes += rb + fb;
      nframes += r.frames.size();
    }
    if (!SendBatch(node, recs, begin, end, body, static_cast<u32>(nframes))) {
      // Not connected, or at the high-water mark. A peer that took a batch
      // just now is slow, not stalled: its stall clock starts again.
      if (sent) p.backlog_since = Clock::time_point();
      return HoldBack(node, recs, begin);
    }
    sent = true;
    begin = end;
  }
  p.backlog_since = Clock::time_point();  // nothing is held back
}

void Transport::HoldBack(u32 node, std::vector<OutRecord> &recs, size_t begin) {
  // Not longer than a dead peer would take to be noticed.
  Peer &p = peer(node);
  Clock::time_point now = Clock::now();
  if (p.backlog_since == Clock::time_point()) p.backlog_since = now;
  if (now - p.backlog_since > std::chrono::milliseconds(opt_.dead_after_ms)) {
    FailRecords(node, recs, begin, recs.size());
    p.backlog_since = Clock::time_point();
    return;
  }
  for (size_t i = begin; i < recs.size(); ++i) {
    p.backlog.push_back(std::move(recs[i]));
  }
}

bool Transport::SendBatch(u32 node, std::vector<OutRecord> &recs, size_t begin,
                          size_t end, u64 body_size, u32 num_frames) {
  WireHeader h = MakeHeader(MsgKind::kRecords, node);
  h.num_records = static_cast<u32>(end - begin);
  h.num_frames = num_frames;
  h.body_size = body_size;
  zmq::message_t body;
  try {
    body.rebuild(body_size);
  } catch (const zmq::error_t &e) {
    // Nothing was sent: these records fail, and the flush goes on (an
    // exception out of FlushPeer would leave them to be sent again).
    fprintf(stderr, "lightbeam: node %u: no message to node %u: %s\n", self_,
            node, e.what());
    FailRecords(node, recs, begin, end);
    return true;
  }
  char *w = static_cast<char *>(body.data());
  for (size_t i = begin; i < end; ++i) {
    u32 len = static_cast<u32>(recs[i].bytes.size());
    u32 nf = static_cast<u32>(recs[i].frames.size());
    memcpy(w, &len, 4);
    memcpy(w + 4, &nf, 4);
    if (len) memcpy(w + kRecordIndexBytes, recs[i].bytes.data(), len);
    w += kRecordIndexBytes + len;
  }
  zmq::socket_t &s = *peer(node).dealer;
  const auto more = zmq::send_flags::sndmore | zmq::send_flags::dontwait;
  const auto last = zmq::send_flags::dontwait;
  // EAGAIN on the first frame: not connected, or at the high-water mark.
  // Another error sends nothing either: the records fail.
  try {
    if (!s.send(zmq::buffer(&h, sizeof(h)), more)) return false;
  } catch (const zmq::error_t &e) {
    fprintf(stderr, "lightbeam: node %u: cannot send to node %u: %s\n", self_,
            node, e.what());
    FailRecords(node, recs, begin, end);
    return true;
  }
  // Once the first frame is accepted ZeroMQ takes the rest of the message.
  // Should a later frame still fail, the receiver sees a malformed message
  // and drops it, so the records are reported failed.
  try {
    if (!s.send(body, num_frames ? more : last)) throw zmq::error_t();
    u32 left = num_frames;
    for (size_t i = begin; i < end; ++i) {
      for (zmq::message_t &f : recs[i].frames) {
        if (!s.send(f, --left ? more : last)) throw zmq::error_t();
      }
    }
  } catch (const zmq::error_t &e) {
    fprintf(stderr, "lightbeam: node %u: partial send to node %u: %s\n", self_,
            node, e.what());
    FailRecords(node, recs, begin, end);
    return true;
  }
  msgs_sent_.fetch_add(1, std::memory_order_relaxed);
  records_sent_.fetch_add(end - begin, std::memory_order_relaxed);
  return true;
}

bool Transport::SendControl(u32 node, MsgKind kind, bool on_control) {
  const WireHeader h = MakeHeader(kind, node);
  zmq::socket_t &s = on_control ? *peer(node).control : *peer(node).dealer;
  if (!s.send(zmq::buffer(&h, sizeof(h)),
              zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
    return false;
  }
  s.send(zmq::message_t(), zmq::send_flags::dontwait);
  msgs_sent_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

WireHeader Transport::MakeHeader(MsgKind kind, u32 dst) const {
  WireHeader h{};
  h.magic = kWireMagic;
  h.version = kWireVersion;
  h.kind = static_cast<u16>(kind);
  h.src_node = self_;
  h.dst_node = dst;
  h.src_incarnation = incarnation_;
  h.max_message_bytes = opt_.max_message_bytes;
  if (dst >= 1 && dst <= num_nodes_ && dst != self_) {
    h.dst_deaths = peer(dst).deaths;
    h.dst_incarnation = peer(dst).incarnation.load(std::memory_order_relaxed);
  }
  return h;
}

void Transport::FailRecords(u32 node, std::vector<OutRecord> &recs,
                            size_t begin, size_t end, SendFailure why) {
  if (begin >= end) return;
  std::vector<u64> tags;
  tags.reserve(end - begin);
  for (size_t i = begin; i < end; ++i) tags.push_back(recs[i].tag);
  send_failures_.fetch_add(end - begin, std::memory_order_relaxed);
  if (on_send_fail_) on_send_fail_(node, std::move(tags), why);
}

std::unique_ptr<zmq::socket_t> Transport::MakeDealer(const Peer &p,
                                                     bool control) {
  auto d = std::make_unique<zmq::socket_t>(*ctx_, zmq::socket_type::dealer);
  CommonOptions(*d, p.host, opt_.sndhwm);
  d->set(zmq::sockopt::routing_id,
         (control ? "c" : "") + std::to_string(self_));
  d->set(zmq::sockopt::immediate, 1);
  if (!opt_.curve_public_key.empty() || !opt_.curve_secret_key.empty()) {
    // A client of the peer's server key, proving it holds the pair.
    d->set(zmq::sockopt::curve_serverkey, opt_.curve_public_key);
    d->set(zmq::sockopt::curve_publickey, opt_.curve_public_key);
    d->set(zmq::sockopt::curve_secretkey, opt_.curve_secret_key);
  }
  d->connect(p.connect_to);
  return d;
}

void Transport::ResetDealer(u32 node) {
  Peer &p = peer(node);
  try {
    auto d = MakeDealer(p, false);
    // Counted first: closing the old socket releases its frames, and whoever
    // sees them released may read the count at once.
    dealer_resets_.fetch_add(1, std::memory_order_relaxed);
    p.dealer = std::move(d);  // closes the old one (linger 0): drops its queue
  } catch (const std::exception &e) {
    fprintf(stderr,
            "lightbeam: node %u keeps its connection to dead node %u (a new "
            "one failed: %s)\n",
            self_, node, e.what());
  }
}

void Transport::FailQueued(u32 node, bool tagged_only) {
  // Moves the records to fail out of `from` into `to`, keeping the others
  // there in order.
  auto take = [tagged_only](std::vector<OutRecord> &from,
                            std::vector<OutRecord> *to) {
    if (!tagged_only) {
      for (OutRecord &r : from) to->push_back(std::move(r));
      from.clear();
      return;
    }
    std::vector<OutRecord> keep;
    for (OutRecord &r : from) {
      (r.tag != 0 ? *to : keep).push_back(std::move(r));
    }
    from.swap(keep);
  };
  std::vector<OutRecord> recs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    take(peer(node).outbox, &recs);  // node stays in dirty_: harmless
  }
  Peer &p = peer(node);
  take(p.backlog, &recs);
  if (p.backlog.empty()) p.backlog_since = Clock::time_point();
  FailRecords(node, recs, 0, recs.size());
}

void Transport::ReceiveAll() {
  for (int n = 0; n < kMaxRecvPerWake; ++n) {
    // Heartbeats are due: the rest waits for the next round of the loop (a
    // slow record handler would otherwise keep our pings back until the
    // peers take us for dead).
    if (n > 0 && Clock::now() >= next_tick_) return;
    zmq::message_t first;
    if (!router_->recv(first, zmq::recv_flags::dontwait)) return;
    bool more = first.more();
    in_frames_.clear();
    in_frames_.push_back(std::move(first));
    // Frames after the routing id; a too-large message is still read to its
    // end (ZeroMQ delivers it whole) but not kept.
    u64 total = 0;
    bool too_large = false;
    while (more) {
      zmq::message_t m;
      (void)router_->recv(m, zmq::recv_flags::none);
      more = m.more();
      total += m.size();
      too_large = too_large || total > opt_.max_message_bytes ||
                  in_frames_.size() >= kMaxMessageFrames;
      if (!too_large) in_frames_.push_back(std::move(m));
    }
    const char *why = too_large ? "message too large" : Validate();
    if (why) {
      dropped_malformed_.fetch_add(1, std::memory_order_relaxed);
      LogMalformed(why);
    } else if (opt_.check_peer_address && !FromClaimedAddress()) {
      dropped_wrong_address_.fetch_add(1, std::memory_order_relaxed);
      LogMalformed("not sent from an address of the node it claims");
    } else {
      msgs_received_.fetch_add(1, std::memory_order_relaxed);
      Dispatch();
    }
    in_frames_.clear();
  }
}

const char *DecodeMessage(u64 num_frames, std::string_view routing_id,
                          std::string_view header, std::string_view body,
                          u32 self, u32 num_nodes, WireHeader *out_header,
                          std::vector<WireRecordRef> *out_records) {
  if (num_frames < 3) return "fewer than 3 frames";
  if (header.size() != sizeof(WireHeader)) return "bad header size";
  memcpy(out_header, header.data(), sizeof(WireHeader));
  const WireHeader &h = *out_header;
  if (h.magic != kWireMagic) return "bad magic";
  if (h.version != kWireVersion) return "unsupported version";
  if (h.max_message_bytes < kMinMessageBytes) {
    return "max_message_bytes below the least allowed";
  }
  if (h.kind < static_cast<u16>(MsgKind::kRecords) ||
      h.kind > static_cast<u16>(MsgKind::kPong)) {
    return "unknown kind";
  }
  if (h.src_node == 0 || h.src_node > num_nodes || h.src_node == self) {
    return "bad src_node";
  }
  if (h.dst_node != self) return "wrong dst_node";
  // Records come on the node's connection "<src>"; pings and pongs also on
  // its control connection "c<src>".
  char id[16];
  int id_len = snprintf(id, sizeof(id), "%u", h.src_node);
  if (h.kind != static_cast<u16>(MsgKind::kRecords) && !routing_id.empty() &&
      routing_id[0] == 'c') {
    routing_id.remove_prefix(1);
  }
  if (routing_id.size() != static_cast<size_t>(id_len) ||
      memcmp(routing_id.data(), id, id_len) != 0) {
    // ZeroMQ gives a connection whose id a newer one took over (our ROUTER
    // hands ids over: the node reconnected, e.g. after it reset its
    // connection to us) a generated id, a zero byte first; node ids are
    // decimal. What still arrives on it is stale.
    if (!routing_id.empty() && routing_id[0] == '\0') {
      return "came on a connection its node has replaced (it reconnected)";
    }
    return "routing id does not match src_node";
  }
  if (body.size() != h.body_size) return "body size mismatch";
  if (h.num_frames != num_frames - 3) return "frame count mismatch";
  if (h.kind != static_cast<u16>(MsgKind::kRecords)) {
    if (h.body_size || h.num_records || h.num_frames) {
      return "control message with payload";
    }
    return nullptr;
  }
  if (h.num_records == 0) return "no records";
  out_records->clear();
  const char *b = body.data();
  const u64 size = body.size();
  u64 off = 0, frames = 0;
  while (off < size) {
    if (size - off < kRecordIndexBytes) return "truncated record index";
    u32 len, nf;
    memcpy(&len, b + off, 4);
    memcpy(&nf, b + off + 4, 4);
    off += kRecordIndexBytes;
    if (len > size - off) return "record overflows body";
    if (out_records->size() == h.num_records) return "too many records";
    frames += nf;  // u64: cannot overflow (count <= 2^32, nf < 2^32)
    if (frames > h.num_frames) return "record frames exceed num_frames";
    out_records->push_back({off, len, nf});
    off += len;
  }
  if (out_records->size() != h.num_records) return "record count mismatch";
  if (frames != h.num_frames) return "record frames mismatch num_frames";
  return nullptr;
}

const char *Transport::Validate() {
  const size_t n = in_frames_.size();
  auto view = [this, n](size_t i) {
    return i < n ? std::string_view(
                       static_cast<const char *>(in_frames_[i].data()),
                       in_frames_[i].size())
                 : std::string_view();
  };
  // The frames' bytes come from libzmq's I/O thread (decrypted in place
  // with CURVE), handed over through its lock-free pipes, which TSan does
  // not see; the decoder only reads them.
  HSHM_TSAN_IGNORE_READS_BEGIN();
  const char *why = DecodeMessage(n, view(0), view(1), view(2), self_,
                                  num_nodes_, &in_header_, &in_records_);
  // A valid routing id is "<src>" or, on the control connection, "c<src>".
  in_on_control_ = !why && view(0)[0] == 'c';
  HSHM_TSAN_IGNORE_READS_END();
  return why;
}

void Transport::Dispatch() {
  const WireHeader &h = in_header_;
  const u32 src = h.src_node;
  // A late message of a peer's previous life (read after its successor's):
  // the owner already failed what it had there, so it is ignored.
  const u64 retired = peer(src).retired_incarnation;
  if (retired != 0 && h.src_incarnation == retired) return;
  // Before Heard: a restarted peer may accept less than its predecessor.
  peer(src).max_message_bytes.store(h.max_message_bytes,
                                    std::memory_order_relaxed);
  const bool on_control = in_on_control_;
  Heard(src, h, !on_control);
  switch (static_cast<MsgKind>(h.kind)) {
    case MsgKind::kPing:
      SendControl(src, MsgKind::kPong, on_control);
      break;
    case MsgKind::kPong:
      break;
    case MsgKind::kRecords: {
      const char *b = static_cast<const char *>(in_frames_[2].data());
      size_t fi = 3;
      records_received_.fetch_add(in_records_.size(),
                                  std::memory_order_relaxed);
      for (const RecordRef &r : in_records_) {
        InRecord rec{std::string_view(b + r.offset, r.len),
                     in_frames_.data() + fi, r.nframes};
        fi += r.nframes;
        if (on_record_) on_record_(src, rec);
      }
      break;
    }
  }
}

void Transport::Heard(u32 node, const WireHeader &h, bool ordered) {
  const u64 incarnation = h.src_incarnation;
  Peer &p = peer(node);
  p.last_heard = Clock::now();
  const u64 old = p.incarnation.load(std::memory_order_relaxed);
  const bool was_alive = p.alive.load(std::memory_order_relaxed);
  const bool restarted = old != 0 && old != incarnation;
  if (restarted) p.retired_incarnation = old;
  // `forgot`: it took us for dead since its last such message (its own
  // stall, or a network thread of ours that did not run), so it dropped
  // what it had for us, the replies we wait for among them, which nothing
  // else would tell us: as for a restart, what we wait for from it fails
  // now. Its count of our deaths counts only if it is about this run of us
  // (sent after it heard of us) and came on the records' connection, since
  // one on the control connection may overtake a reply it sent before. A
  // new peer, or one we took for dead ourselves (we failed what we waited
  // for from it then), only sets the baseline; it never goes down.
  if (restarted) p.its_deaths_of_us = ~0ull;
  const u64 seen = p.its_deaths_of_us;
  bool forgot = false;
  if (h.dst_incarnation == incarnation_) {
    if (seen == ~0ull) {
      p.its_deaths_of_us = h.dst_deaths;
    } else if (!was_alive || ordered) {
      forgot = was_alive && h.dst_deaths > seen;
      p.its_deaths_of_us = std::max(seen, h.dst_deaths);
    }
  }
  if (forgot) {
    fprintf(stderr,
            "lightbeam: node %u: node %u took us for dead; what we wait for "
            "from it fails\n",
            self_, node);
  }
  if ((restarted || forgot) && was_alive) {
    // The caller fails what it had in flight with it. Queued records go
    // too: all of them for a restart (addressed to its old incarnation);
    // for `forgot` the ones whose failure the caller hears of (requests, so
    // that one it takes as failed does not run there after all), not the
    // replies to what it asked since.
    p.alive.store(false, std::memory_order_release);
    FailQueued(node, /*tagged_only=*/!restarted);
    if (on_peer_) on_peer_(node, false);
  }
  p.incarnation.store(incarnation, std::memory_order_release);
  if (restarted || forgot || !was_alive) {
    p.dead_since = Clock::time_point();  // back: no reset
    p.alive.store(true, std::memory_order_release);
    if (on_peer_) on_peer_(node, true);
  }
}

void Transport::SetUpAuth(bool curve) {
  zap_ = std::make_unique<zmq::socket_t>(*ctx_, zmq::socket_type::rep);
  zap_->set(zmq::sockopt::linger, 0);
  zap_->bind(kZapEndpoint);
  // Connections closed as accepted are ours to report only where the
  // address filter is on.
  const int events =
      opt_.check_peer_address ? kMonitorEvents : kHandshakeFailedEvents;
  if (zmq_socket_monitor(router_->handle(), kMonitorEndpoint, events) != 0) {
    throw zmq::error_t();
  }
  monitor_ = std::make_unique<zmq::socket_t>(*ctx_, zmq::socket_type::pair);
  monitor_->set(zmq::sockopt::linger, 0);
  monitor_->connect(kMonitorEndpoint);
  // A domain makes libzmq ask the ZAP handler under the NULL mechanism too.
  router_->set(zmq::sockopt::zap_domain, "lightbeam");
  if (!curve) return;
  router_->set(zmq::sockopt::curve_server, 1);
  router_->set(zmq::sockopt::curve_publickey, opt_.curve_public_key);
  router_->set(zmq::sockopt::curve_secretkey, opt_.curve_secret_key);
  curve_client_key_.assign(32, '\0');
  zmq_z85_decode(reinterpret_cast<uint8_t *>(&curve_client_key_[0]),
                 opt_.curve_public_key.c_str());
}

bool Transport::IsNodeAddress(const std::string &key) const {
  if (key.empty()) return false;
  for (u32 n = 1; n <= num_nodes_; ++n) {
    const std::vector<std::string> &a = peer(n).addrs;
    if (std::find(a.begin(), a.end(), key) != a.end()) return true;
  }
  return false;
}

bool Transport::FromClaimedAddress() const {
  // ZeroMQ keeps the connection's properties on its data frames, not on the
  // routing id frame the ROUTER makes.
  const char *from = zmq_msg_gets(in_frames_[1].handle(), "Peer-Address");
  if (!from) return false;
  const std::vector<std::string> &a = peer(in_header_.src_node).addrs;
  return std::find(a.begin(), a.end(), AddressKey(from)) != a.end();
}

void Transport::AuthLoop() {
  HSHM_THREAD_MODEL->SetName("lightbeam-auth");
  zmq_pollitem_t items[3] = {{zap_->handle(), 0, ZMQ_POLLIN, 0},
                             {monitor_->handle(), 0, ZMQ_POLLIN, 0},
                             {nullptr, auth_wake_fd_, ZMQ_POLLIN, 0}};
  while (!auth_stop_.load(std::memory_order_acquire)) {
    try {
      for (zmq_pollitem_t &it : items) it.revents = 0;
      zmq::poll(items, 3, std::chrono::milliseconds(-1));
      if (items[0].revents & ZMQ_POLLIN) HandleZap();
      if (items[1].revents & ZMQ_POLLIN) HandleMonitor();
    } catch (const zmq::error_t &e) {
      if (e.num() != EINTR) {
        fprintf(stderr, "lightbeam: node %u connection checks: %s\n", self_,
                e.what());
      }
    } catch (const std::exception &e) {
      fprintf(stderr, "lightbeam: node %u connection checks: %s\n", self_,
              e.what());
    } catch (...) {
      fprintf(stderr, "lightbeam: node %u connection checks: unknown error\n",
              self_);
    }
  }
}

void Transport::HandleZap() {
  for (int n = 0; n < kMaxRecvPerWake; ++n) {
    // RFC 27: version, request id, domain, address, routing id, mechanism,
    // then the credentials (CURVE: the client's 32-byte public key).
    std::vector<zmq::message_t> req;
    zmq::message_t m;
    if (!zap_->recv(m, zmq::recv_flags::dontwait)) return;
    bool more = m.more();
    req.push_back(std::move(m));
    while (more) {
      zmq::message_t f;
      (void)zap_->recv(f, zmq::recv_flags::none);
      more = f.more();
      if (req.size() < 8) req.push_back(std::move(f));
    }
    auto frame = [&req](size_t i) {
      return i < req.size() ? req[i].to_string() : std::string();
    };
    const bool curve = !curve_client_key_.empty();
    const char *why = nullptr;
    if (req.size() < 6 || frame(0) != "1.0") {
      why = "a malformed ZAP request";
    } else if (opt_.check_peer_address &&
               !IsNodeAddress(AddressKey(frame(3)))) {
      why = "its address is no node's";
    } else if (curve && (req.size() < 7 || frame(5) != "CURVE" ||
                         frame(6) != curve_client_key_)) {
      why = "its CURVE key is not the cluster key";
    }
    const bool admit = why == nullptr;
    if (!admit) LogAuthFailure(why, frame(3).substr(0, 64));
    const std::string id = frame(1);
    zap_->send(zmq::str_buffer("1.0"), zmq::send_flags::sndmore);
    zap_->send(zmq::buffer(id), zmq::send_flags::sndmore);
    zap_->send(admit ? zmq::str_buffer("200") : zmq::str_buffer("400"),
               zmq::send_flags::sndmore);
    zap_->send(admit ? zmq::str_buffer("OK") : zmq::str_buffer("refused"),
               zmq::send_flags::sndmore);
    zap_->send(zmq::str_buffer(""), zmq::send_flags::sndmore);  // user id
    zap_->send(zmq::str_buffer(""), zmq::send_flags::none);     // metadata
  }
}

void Transport::HandleMonitor() {
  for (int n = 0; n < kMaxRecvPerWake; ++n) {
    // Two frames: [u16 event][u32 value], then an address.
    zmq::message_t ev;
    if (!monitor_->recv(ev, zmq::recv_flags::dontwait)) return;
    bool more = ev.more();
    while (more) {
      zmq::message_t rest;
      (void)monitor_->recv(rest, zmq::recv_flags::none);
      more = rest.more();
    }
    if (ev.size() < 6) continue;
    u16 event;
    u32 value;
    memcpy(&event, ev.data(), 2);
    memcpy(&value, static_cast<const char *>(ev.data()) + 2, 4);
    if (!(event & kMonitorEvents)) continue;
    if (event == ZMQ_EVENT_ACCEPT_FAILED &&
        (value == EMFILE || value == ENFILE || value == ENOBUFS ||
         value == ENOMEM)) {
      // Not a refusal: this process is out of descriptors or memory. (A
      // guess: libzmq reports its I/O thread's last errno, also for a
      // connection its filter closed, so a refusal right after such an
      // error reads as one more of them.)
      HSHM_LOG_LIMITED("lightbeam: node %u cannot accept a connection: %s\n",
                       self_, strerror(static_cast<int>(value)));
      continue;
    }
    auth_failures_.fetch_add(1, std::memory_order_relaxed);
    if (event == ZMQ_EVENT_ACCEPT_FAILED) {
      LogAuthFailure("closed as accepted: its address is no node's", "");
      continue;
    }
    // A refusal by ZAP was logged with the peer's address already.
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) continue;
    const bool curve = !curve_client_key_.empty();
    if (value == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC) {
      LogAuthFailure("CURVE handshake failed (a peer with another key?)", "");
    } else if (value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) {
      LogAuthFailure(curve ? "the peer does not use CURVE"
                           : "the peer uses CURVE, this node does not",
                     "");
    } else {
      LogAuthFailure("handshake failed", "");
    }
  }
}

void Transport::LogAuthFailure(const char *why, const std::string &from) {
  const Clock::time_point now = Clock::now();
  if (auth_log_at_ != Clock::time_point() &&
      now - auth_log_at_ < kAuthLogPeriod) {
    ++auth_unlogged_;
    return;
  }
  std::string more;
  if (auth_unlogged_) {
    more = " (" + std::to_string(auth_unlogged_) + " more refused before)";
  }
  fprintf(stderr, "lightbeam: node %u refused a connection%s%s: %s%s\n", self_,
          from.empty() ? "" : " from ", from.c_str(), why, more.c_str());
  auth_log_at_ = now;
  auth_unlogged_ = 0;
}

void Transport::Tick(Clock::time_point now) {
  if (log_suppressed_) RollLogWindow();
  const auto dead_after = std::chrono::milliseconds(opt_.dead_after_ms);
  // Ticks come every heartbeat_ms. A longer gap means this thread did not
  // run (the process was stopped, the VM paused, the machine overloaded):
  // the peers' messages of that time wait unread, so their silence then
  // does not count towards their death.
  const auto heartbeat = std::chrono::milliseconds(opt_.heartbeat_ms);
  Clock::duration paused{0};
  if (last_tick_ != Clock::time_point() && now - last_tick_ > 2 * heartbeat) {
    paused = now - last_tick_ - heartbeat;
  }
  last_tick_ = now;
  for (u32 n = 1; n <= num_nodes_; ++n) {
    if (n == self_) continue;
    Peer &p = peer(n);
    p.last_heard += paused;
    // Dead peers too, so they can return. On both connections: the control
    // one's is not held back by a large message on the other, whose ping
    // keeps its order with the records (Heard).
    SendControl(n, MsgKind::kPing, true);
    SendControl(n, MsgKind::kPing, false);
    if (p.alive.load(std::memory_order_relaxed) &&
        now - p.last_heard > dead_after) {
      p.alive.store(false, std::memory_order_release);
      p.dead_since = now;
      ++p.deaths;  // our next messages tell it (WireHeader::dst_deaths)
      FailQueued(n);
      if (on_peer_) on_peer_(n, false);
    }
    // What ZeroMQ still holds for a peer dead this long (a stalled node
    // that keeps its connection up reads nothing) is dropped with its
    // connection, so that its memory comes back and requests already failed
    // here do not run there once it resumes. Not at once: a node taken for
    // dead only because its heartbeats queue behind its data (or that just
    // resumed itself) is heard again sooner, and the replies it waits for
    // still reach it.
    if (!p.alive.load(std::memory_order_relaxed) &&
        p.dead_since != Clock::time_point() &&
        now - p.dead_since > kDealerResetDeaths * dead_after) {
      p.dead_since = Clock::time_point();
      ResetDealer(n);
    }
  }
}

void Transport::RollLogWindow() {
  const u64 now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                         Clock::now().time_since_epoch())
                         .count();
  if (now_ms - log_window_ms_ >= 1000) {
    if (log_suppressed_) {
      fprintf(stderr,
              "lightbeam: node %u suppressed %llu malformed-message lines\n",
              self_, static_cast<unsigned long long>(log_suppressed_));
    }
    log_window_ms_ = now_ms;
    log_lines_ = 0;
    log_suppressed_ = 0;
  }
}

void Transport::LogMalformed(const char *reason) {
  RollLogWindow();
  if (log_lines_ >= kMaxLogLinesPerSec) {
    ++log_suppressed_;
    return;
  }
  ++log_lines_;
  char id[40];
  size_t n = 0;
  if (!in_frames_.empty()) {
    const auto *s = static_cast<const unsigned char *>(in_frames_[0].data());
    for (size_t i = 0; i < in_frames_[0].size() && n < 32; ++i) {
      id[n++] = (s[i] >= 0x20 && s[i] < 0x7f) ? static_cast<char>(s[i]) : '?';
    }
  }
  id[n] = '\0';
  fprintf(stderr,
          "lightbeam: node %u dropped a malformed message from %s: %s\n", self_,
          n ? id : "?", reason);
}

void Transport::AbortStart() {
  CloseSockets();
  if (wake_fd_ >= 0) close(wake_fd_);
  wake_fd_ = -1;
  if (auth_wake_fd_ >= 0) close(auth_wake_fd_);
  auth_wake_fd_ = -1;
  peers_.clear();
  pending_.clear();
  self_ = 0;
  num_nodes_ = 0;
}

void Transport::CloseSockets() {
  for (auto &p : peers_) {
    if (p) {
      p->dealer.reset();
      p->control.reset();
    }
  }
  if (monitor_ && router_) {
    (void)zmq_socket_monitor(router_->handle(), nullptr, 0);
  }
  router_.reset();
  monitor_.reset();
  zap_.reset();
  curve_client_key_.clear();
  ctx_.reset();  // zmq_ctx_term: returns at once since every linger is 0
}

}  // namespace hshm::lbm
