// Tests of ZeroMQ CURVE in the lightbeam transport and of the cluster key
// file (hshm::lbm, lightbeam/curve.h). Transports in one process act as
// nodes on 127.0.11-14.x loopback addresses, each test on its own.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "hermes_shm/lightbeam/curve.h"
#include "hermes_shm/lightbeam/transport.h"
#include "net_test_util.h"

namespace {

using hshm::StatusCode;
using hshm::u16;
using hshm::u32;
using hshm::u64;
using hshm::lbm::CurveKeyPair;
using hshm::lbm::InRecord;
using hshm::lbm::MsgKind;
using hshm::lbm::OutRecord;
using hshm::lbm::Transport;
using hshm::lbm::TransportOptions;
using hshm::lbm::WireHeader;
using Clock = std::chrono::steady_clock;

/** A string no encrypted stream will contain by chance. */
constexpr char kCanary[] = "lightbeam-cleartext-canary-7f3a9c51e2";

using hshm_test::FreeEndpoint;
using hshm_test::WaitFor;

/** A fresh key pair (the test fails if libzmq cannot make one). */
CurveKeyPair Keys() {
  auto kp = hshm::lbm::NewCurveKeyPair();
  EXPECT_TRUE(kp.ok()) << kp.status();
  return kp.ok() ? *kp : CurveKeyPair{};
}

/** Fast heartbeats; CURVE with `keys` unless they are empty. */
TransportOptions Options(const CurveKeyPair &keys) {
  TransportOptions o;
  o.heartbeat_ms = 50;
  // Long enough that a node starved by TSan and a parallel test is not
  // taken for dead (its queued records would fail, and the test with them).
  o.dead_after_ms = 2000;
  o.curve_public_key = keys.public_key;
  o.curve_secret_key = keys.secret_key;
  return o;
}

/** Record `seq`: its seq, the canary, and a data frame (1 MiB every 50th). */
OutRecord MakeRecord(u64 seq) {
  OutRecord r;
  r.tag = seq;
  r.bytes.assign(reinterpret_cast<const char *>(&seq), sizeof(seq));
  r.bytes += kCanary;
  std::string frame = seq % 50 == 49 ? std::string(1 << 20, 'f') : "";
  frame += kCanary;
  r.frames.emplace_back(frame.data(), frame.size());
  return r;
}

/** A Transport counting the in-order, intact records from each node. */
struct Node {
  explicit Node(u32 nodes) : next(nodes + 1, 0), got(nodes + 1) {
    for (auto &g : got) g.store(0);
  }
  Transport t;
  std::vector<u64> next;              // network thread only
  std::vector<std::atomic<u64>> got;  // in-order intact records per source
  std::atomic<u64> bad{0};
  std::atomic<u64> failed{0};

  hshm::Status Start(u32 self, const std::vector<std::string> &eps,
                     const TransportOptions &o) {
    return t.Start(
        self, eps, o,
        [this](u32 from, InRecord &rec) {
          u64 seq = ~0ull;
          if (rec.bytes.size() == sizeof(seq) + strlen(kCanary) &&
              rec.num_frames == 1) {
            memcpy(&seq, rec.bytes.data(), sizeof(seq));
          }
          if (seq == next[from]) {
            ++next[from];
            got[from].fetch_add(1);
          } else {
            bad.fetch_add(1);
          }
        },
        nullptr,
        [this](u32, std::vector<u64> tags, hshm::lbm::SendFailure) {
          failed.fetch_add(tags.size());
        });
  }
};

/** Sends records [from, to) from `a` to node `dst`; all must be accepted. */
void SendRange(Node &a, u32 dst, u64 from, u64 to) {
  for (u64 s = from; s < to; ++s) ASSERT_TRUE(a.t.Send(dst, MakeRecord(s)));
}

// ---------------------------------------------------------------------------
// Keys and key files.
// ---------------------------------------------------------------------------

/** A fresh empty directory under /tmp; removed by the caller's Cleanup. */
std::string TempDir() {
  char tmpl[] = "/tmp/lbm_curve_XXXXXX";
  const char *d = mkdtemp(tmpl);
  EXPECT_NE(d, nullptr);
  return d ? d : "/tmp";
}

/** Writes `text` to `path` with `mode`. */
void WriteFile(const std::string &path, const std::string &text, int mode) {
  std::ofstream(path) << text;
  chmod(path.c_str(), mode);
}

TEST(LightbeamCurveTest, KeyPairsAreChecked) {
  ASSERT_TRUE(hshm::lbm::CurveAvailable()) << "libzmq lacks CURVE";
  CurveKeyPair a = Keys(), b = Keys();
  EXPECT_EQ(a.public_key.size(), hshm::lbm::kCurveKeyZ85Len);
  EXPECT_NE(a.secret_key, b.secret_key);
  EXPECT_TRUE(hshm::lbm::CheckCurveKeyPair(a).ok());
  auto bad = [](const CurveKeyPair &k, const std::string &what) {
    hshm::Status s = hshm::lbm::CheckCurveKeyPair(k);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find(what), std::string::npos) << s;
    // No error ever quotes a secret key.
    if (!k.secret_key.empty()) {
      EXPECT_EQ(s.message().find(k.secret_key), std::string::npos) << s;
    }
  };
  bad({a.public_key, b.secret_key}, "not the public key");
  bad({a.public_key.substr(1), a.secret_key}, "public_key");
  bad({a.public_key, a.secret_key + "x"}, "secret_key");
  bad({a.public_key, std::string(40, ' ')}, "Z85");
  bad({"", ""}, "public_key");
}

TEST(LightbeamCurveTest, KeyFileRoundTripAndErrors) {
  const std::string dir = TempDir();
  const std::string path = dir + "/cluster.key";
  CurveKeyPair k = Keys();
  ASSERT_TRUE(hshm::lbm::WriteCurveKeyFile(path, k, false).ok());
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  auto read = hshm::lbm::ReadCurveKeyFile(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->public_key, k.public_key);
  EXPECT_EQ(read->secret_key, k.secret_key);
  // No silent replacement; --force replaces (still 0600).
  CurveKeyPair k2 = Keys();
  EXPECT_EQ(hshm::lbm::WriteCurveKeyFile(path, k2, false).code(),
            StatusCode::kAlreadyExists);
  ASSERT_TRUE(hshm::lbm::WriteCurveKeyFile(path, k2, true).ok());
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(hshm::lbm::ReadCurveKeyFile(path)->secret_key, k2.secret_key);

  // Every error names the file and never quotes the secret.
  auto expect = [&](const std::string &p, StatusCode code,
                    const std::string &what) {
    auto r = hshm::lbm::ReadCurveKeyFile(p);
    ASSERT_FALSE(r.ok()) << p;
    EXPECT_EQ(r.status().code(), code) << r.status();
    EXPECT_NE(r.status().message().find(p), std::string::npos) << r.status();
    EXPECT_NE(r.status().message().find(what), std::string::npos) << r.status();
    EXPECT_EQ(r.status().message().find(k.secret_key), std::string::npos);
  };
  expect(dir + "/missing.key", StatusCode::kNotFound, "no such file");
  expect(dir, StatusCode::kInvalidArgument, "not a regular file");
  // A FIFO is refused at once (opening it for reading would wait for a
  // writer: the runtime hung at start, deaf to SIGTERM).
  const std::string fifo = dir + "/fifo.key";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  expect(fifo, StatusCode::kInvalidArgument, "not a regular file");
  const std::string pub = "public_key: " + k.public_key + "\n";
  const std::string sec = "secret_key: " + k.secret_key + "\n";
  const std::string f = dir + "/f.key";
  WriteFile(f, pub + sec, 0644);
  expect(f, StatusCode::kInvalidArgument, "chmod 600");
  WriteFile(f, "\x01\x02garbage\xff\n", 0600);
  expect(f, StatusCode::kInvalidArgument, "line 1");
  WriteFile(f, "", 0600);
  expect(f, StatusCode::kInvalidArgument, "no public_key");
  WriteFile(f, pub, 0600);
  expect(f, StatusCode::kInvalidArgument, "no secret_key");
  WriteFile(f, pub + sec + sec, 0600);
  expect(f, StatusCode::kInvalidArgument, "twice");
  WriteFile(f, pub + "secret: " + k.secret_key + "\n", 0600);
  expect(f, StatusCode::kInvalidArgument, "unknown key 'secret'");
  WriteFile(f, pub + "secret_key: " + k.secret_key.substr(0, 39) + "\n", 0600);
  expect(f, StatusCode::kInvalidArgument, "40");
  WriteFile(f, "public_key: " + k2.public_key + "\n" + sec, 0600);
  expect(f, StatusCode::kInvalidArgument, "not the public key");
  WriteFile(f, std::string(100 << 10, 'x'), 0600);
  expect(f, StatusCode::kInvalidArgument, "too large");
  // Comments, blank lines, quotes and CRLF are fine.
  WriteFile(f, "# c\r\n\r\n  public_key: \"" + k.public_key + "\"\r\n" + sec,
            0600);
  EXPECT_TRUE(hshm::lbm::ReadCurveKeyFile(f).ok());
  std::string cmd = "rm -rf " + dir;
  EXPECT_EQ(system(cmd.c_str()), 0);
}

TEST(LightbeamCurveTest, StartRefusesBadKeys) {
  std::vector<std::string> eps = {FreeEndpoint("127.0.11.1"),
                                  FreeEndpoint("127.0.11.2")};
  CurveKeyPair a = Keys(), b = Keys();
  for (const CurveKeyPair &k :
       {CurveKeyPair{a.public_key, ""}, CurveKeyPair{"", a.secret_key},
        CurveKeyPair{a.public_key, b.secret_key},
        CurveKeyPair{"short", "keys"}}) {
    Transport t;
    hshm::Status s = t.Start(1, eps, Options(k), nullptr, nullptr, nullptr);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("CURVE"), std::string::npos) << s;
  }
  // The address stays free: a good Start works afterwards.
  Transport t;
  EXPECT_TRUE(t.Start(1, eps, Options(a), nullptr, nullptr, nullptr).ok());
}

// ---------------------------------------------------------------------------
// Nodes with the cluster key talk; others cannot deliver anything.
// ---------------------------------------------------------------------------

TEST(LightbeamCurveTest, ClusterKeyPairExchangesRecords) {
  std::vector<std::string> eps = {FreeEndpoint("127.0.12.1"),
                                  FreeEndpoint("127.0.12.2")};
  CurveKeyPair k = Keys();
  Node a(2), b(2);
  ASSERT_TRUE(a.Start(1, eps, Options(k)).ok());
  ASSERT_TRUE(b.Start(2, eps, Options(k)).ok());
  ASSERT_TRUE(WaitFor([&] {
    return a.t.PeerIncarnation(2) != 0 && b.t.PeerIncarnation(1) != 0;
  }));
  constexpr u64 kN = 2000;  // 40 of them carry 1 MiB
  std::thread ta([&] { SendRange(a, 2, 0, kN); });
  SendRange(b, 1, 0, kN);
  ta.join();
  EXPECT_TRUE(WaitFor([&] {
    return a.got[2].load() + a.bad.load() >= kN &&
           b.got[1].load() + b.bad.load() >= kN;
  }));
  for (Node *n : {&a, &b}) {
    EXPECT_EQ(n->bad.load(), 0u);
    EXPECT_EQ(n->failed.load(), 0u);
    EXPECT_EQ(n->t.stats().records_received, kN);
    EXPECT_EQ(n->t.stats().auth_failures, 0u);
  }
}

/** Sends a well-formed ping and a record "from node 3" to node 1 through
 * `s`, a raw DEALER whose routing id is "3". */
void SendForged(zmq::socket_t &s) {
  WireHeader h{};
  h.magic = hshm::lbm::kWireMagic;
  h.version = hshm::lbm::kWireVersion;
  h.kind = static_cast<u16>(MsgKind::kPing);
  h.src_node = 3;
  h.dst_node = 1;
  h.src_incarnation = 99;
  h.max_message_bytes = hshm::lbm::kMinMessageBytes;
  s.send(zmq::buffer(&h, sizeof(h)),
         zmq::send_flags::sndmore | zmq::send_flags::dontwait);
  s.send(zmq::message_t(), zmq::send_flags::dontwait);
  std::string body(8, '\0');
  u32 len = 0, nf = 0;
  memcpy(&body[0], &len, 4);
  memcpy(&body[4], &nf, 4);
  h.kind = static_cast<u16>(MsgKind::kRecords);
  h.num_records = 1;
  h.body_size = body.size();
  s.send(zmq::buffer(&h, sizeof(h)),
         zmq::send_flags::sndmore | zmq::send_flags::dontwait);
  s.send(zmq::buffer(body), zmq::send_flags::dontwait);
}

TEST(LightbeamCurveTest, OutsidersCannotDeliver) {
  // Nodes 1 and 2 hold the cluster key; node 3's slot is taken in turn by a
  // transport with another key, one without CURVE, and raw sockets.
  std::vector<std::string> eps = {FreeEndpoint("127.0.13.1"),
                                  FreeEndpoint("127.0.13.2"),
                                  FreeEndpoint("127.0.13.3")};
  const CurveKeyPair k = Keys();
  Node a(3), b(3);
  ASSERT_TRUE(a.Start(1, eps, Options(k)).ok());
  ASSERT_TRUE(b.Start(2, eps, Options(k)).ok());
  ASSERT_TRUE(WaitFor([&] {
    return a.t.PeerIncarnation(2) != 0 && b.t.PeerIncarnation(1) != 0;
  }));
  u64 sent = 0;  // records 1 -> 2 and 2 -> 1 so far (each way)
  /** The legit pair keeps exchanging records. */
  auto legit_round = [&](u64 n) {
    SendRange(a, 2, sent, sent + n);
    SendRange(b, 1, sent, sent + n);
    sent += n;
    EXPECT_TRUE(WaitFor(
        [&] { return a.got[2].load() >= sent && b.got[1].load() >= sent; }));
  };
  /** Nothing from node 3 was believed by node 1 or 2. */
  auto nothing_from_3 = [&] {
    for (Node *n : {&a, &b}) {
      EXPECT_EQ(n->got[3].load(), 0u);
      EXPECT_EQ(n->bad.load(), 0u);
      EXPECT_EQ(n->t.PeerIncarnation(3), 0u);
      EXPECT_EQ(n->t.stats().dropped_malformed, 0u);
    }
  };
  legit_round(100);

  for (bool other_key : {true, false}) {
    SCOPED_TRACE(other_key ? "another key pair" : "no CURVE");
    const u64 failures_before = a.t.stats().auth_failures;
    Node intruder(3);
    ASSERT_TRUE(
        intruder.Start(3, eps, Options(other_key ? Keys() : CurveKeyPair{}))
            .ok());
    size_t accepted = 0;
    for (u64 s = 0; s < 50; ++s) {
      accepted += intruder.t.Send(1, MakeRecord(s));
      accepted += intruder.t.Send(2, MakeRecord(s));
    }
    legit_round(300);
    // Within the liveness timeout everything it sent has failed, both sides
    // see each other as dead and it never heard from the cluster.
    EXPECT_TRUE(
        WaitFor([&] { return intruder.failed.load() == accepted; }, 10000));
    EXPECT_TRUE(WaitFor(
        [&] {
          return !a.t.PeerAlive(3) && !b.t.PeerAlive(3) &&
                 !intruder.t.PeerAlive(1) && !intruder.t.PeerAlive(2);
        },
        10000));
    EXPECT_EQ(intruder.t.PeerIncarnation(1), 0u);
    EXPECT_EQ(intruder.t.stats().records_received, 0u);
    nothing_from_3();
    // Node 1's server saw (and counted) the failed handshakes.
    EXPECT_TRUE(WaitFor(
        [&] { return a.t.stats().auth_failures > failures_before; }, 5000));
  }

  // Raw DEALERs posing as node 3: one that knows the server key but holds
  // another client key pair (refused by the ZAP check), and a plain one.
  zmq::context_t ctx(1);
  for (bool curve_client : {true, false}) {
    SCOPED_TRACE(curve_client ? "raw CURVE client" : "raw plain client");
    const u64 failures_before = a.t.stats().auth_failures;
    zmq::socket_t s(ctx, zmq::socket_type::dealer);
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::routing_id, "3");
    if (curve_client) {
      CurveKeyPair mine = Keys();
      s.set(zmq::sockopt::curve_serverkey, k.public_key);
      s.set(zmq::sockopt::curve_publickey, mine.public_key);
      s.set(zmq::sockopt::curve_secretkey, mine.secret_key);
    }
    s.connect("tcp://" + eps[0]);
    for (int i = 0; i < 20; ++i) SendForged(s);
    EXPECT_TRUE(WaitFor(
        [&] { return a.t.stats().auth_failures > failures_before; }, 5000));
    legit_round(100);
    nothing_from_3();
  }
  EXPECT_EQ(a.failed.load() + b.failed.load(), 0u);
  EXPECT_EQ(a.bad.load() + b.bad.load(), 0u);
}

// ---------------------------------------------------------------------------
// Nothing crosses the wire in clear: a TCP relay between node 1 and node 2
// records what node 1 sends.
// ---------------------------------------------------------------------------

/** Relays TCP connections from a listening port to `target_port` on
 * `ip`, keeping a copy of the bytes flowing towards the target. */
class Relay {
 public:
  Relay(const char *ip, int target_port) {
    lfd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    inet_pton(AF_INET, ip, &a.sin_addr);
    EXPECT_EQ(bind(lfd_, reinterpret_cast<sockaddr *>(&a), sizeof(a)), 0);
    EXPECT_EQ(listen(lfd_, 8), 0);
    socklen_t len = sizeof(a);
    getsockname(lfd_, reinterpret_cast<sockaddr *>(&a), &len);
    endpoint_ = std::string(ip) + ":" + std::to_string(ntohs(a.sin_port));
    target_ = a;
    target_.sin_port = htons(static_cast<u16>(target_port));
    thread_ = std::thread([this] { Run(); });
  }
  /** Stops relaying and closes every connection. */
  ~Relay() {
    stop_.store(true);
    thread_.join();
    for (int fd : fds_) {
      if (fd >= 0) close(fd);
    }
    close(lfd_);
  }
  /** "ip:port" to connect to instead of the target. */
  const std::string &endpoint() const { return endpoint_; }
  /** The bytes sent towards the target so far. */
  std::string Captured() {
    std::lock_guard<std::mutex> l(mu_);
    return captured_;
  }

 private:
  /** Accepts, connects and copies until stopped. fds_ holds pairs
   * (client, target). */
  void Run() {
    char buf[1 << 16];
    while (!stop_.load()) {
      std::vector<pollfd> p = {{lfd_, POLLIN, 0}};
      for (int fd : fds_) p.push_back({fd, POLLIN, 0});
      if (poll(p.data(), p.size(), 20) <= 0) continue;
      if (p[0].revents & POLLIN) {
        int c = accept(lfd_, nullptr, nullptr);
        int t = socket(AF_INET, SOCK_STREAM, 0);
        if (c >= 0 && connect(t, reinterpret_cast<sockaddr *>(&target_),
                              sizeof(target_)) == 0) {
          fds_.push_back(c);
          fds_.push_back(t);
        } else {
          if (c >= 0) close(c);
          close(t);
        }
      }
      for (size_t i = 1; i < p.size(); ++i) {
        if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        const size_t k = i - 1;  // index in fds_
        const int peer = fds_[k ^ 1];
        ssize_t n = read(p[i].fd, buf, sizeof(buf));
        if (n <= 0) {
          if (peer >= 0) shutdown(peer, SHUT_WR);
          close(fds_[k]);
          fds_[k] = -1;  // poll skips it from now on
          continue;
        }
        if (k % 2 == 0) {
          std::lock_guard<std::mutex> l(mu_);
          captured_.append(buf, n);
        }
        for (ssize_t off = 0; peer >= 0 && off < n;) {
          ssize_t w = write(peer, buf + off, n - off);
          if (w <= 0) break;
          off += w;
        }
      }
    }
  }

  int lfd_ = -1;
  sockaddr_in target_{};
  std::string endpoint_;
  std::vector<int> fds_;  // relay thread only
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::string captured_;  // guarded by mu_
  std::thread thread_;
};

/** Sends 60 records from node 1 to node 2 over a relay and returns what
 * node 1 put on the wire; `keys` empty: CURVE off. */
std::string WireBytes(const char *ip1, const char *ip2,
                      const CurveKeyPair &keys) {
  const std::string ep1 = FreeEndpoint(ip1), ep2 = FreeEndpoint(ip2);
  Relay relay(ip2, std::stoi(ep2.substr(ep2.find(':') + 1)));
  // Node 1 reaches node 2 through the relay; node 2 binds the real port.
  // The relay talks to node 2 from its own address, as NAT would.
  TransportOptions o = Options(keys);
  o.check_peer_address = false;
  Node a(2), b(2);
  EXPECT_TRUE(a.Start(1, {ep1, relay.endpoint()}, o).ok());
  EXPECT_TRUE(b.Start(2, {ep1, ep2}, o).ok());
  EXPECT_TRUE(WaitFor([&] { return b.t.PeerIncarnation(1) != 0; }));
  EXPECT_TRUE(WaitFor([&] { return a.t.PeerIncarnation(2) != 0; }));
  SendRange(a, 2, 0, 60);
  EXPECT_TRUE(WaitFor([&] { return b.got[1].load() == 60; }));
  a.t.Stop();
  b.t.Stop();
  return relay.Captured();
}

TEST(LightbeamCurveTest, NothingTravelsInClear) {
  // The check can see clear text: without CURVE the canary is on the wire.
  std::string plain = WireBytes("127.0.14.1", "127.0.14.2", CurveKeyPair{});
  EXPECT_NE(plain.find(kCanary), std::string::npos);
  EXPECT_NE(plain.find("NULL"), std::string::npos);  // ZMTP mechanism
  std::string enc = WireBytes("127.0.14.3", "127.0.14.4", Keys());
  EXPECT_GT(enc.size(), 60u * strlen(kCanary));
  EXPECT_EQ(enc.find(kCanary), std::string::npos);
  EXPECT_EQ(enc.find("lightbeam-cleartext"), std::string::npos);
  EXPECT_NE(enc.find("CURVE"), std::string::npos);
  EXPECT_EQ(enc.find(std::string(64, 'f')), std::string::npos);  // 1 MiB
}

}  // namespace
