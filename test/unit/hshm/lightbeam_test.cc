// Tests of the lightbeam transport (hshm::lbm::Transport). Several Transports
// in one process act as separate nodes on 127.0.x.y loopback addresses; each
// test uses its own addresses so that tests may run in parallel.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "hermes_shm/lightbeam/transport.h"
#include "net_test_util.h"

namespace {

using hshm::u16;
using hshm::u32;
using hshm::u64;
using hshm::lbm::InRecord;
using hshm::lbm::MsgKind;
using hshm::lbm::OutRecord;
using hshm::lbm::Transport;
using hshm::lbm::TransportOptions;
using hshm::lbm::WireHeader;
using Clock = std::chrono::steady_clock;

using hshm_test::FreeEndpoint;
using hshm_test::WaitFor;

TransportOptions FastOptions() {
  TransportOptions o;
  o.heartbeat_ms = 50;
  o.dead_after_ms = 2000;
  return o;
}

// ---------------------------------------------------------------------------
// Deterministic records: seq (8 bytes) + filler; 0-2 small frames, and now
// and then a 1 MiB frame (copied, or zero-copy from a static buffer).
// ---------------------------------------------------------------------------

constexpr size_t kBig = 1 << 20;

const std::vector<char> &StaticBig() {
  static const std::vector<char> *big = [] {
    auto *v = new std::vector<char>(kBig);
    for (size_t i = 0; i < kBig; ++i) (*v)[i] = static_cast<char>(i * 31);
    return v;
  }();
  return *big;
}

/** Byte i of small/copied frame k of record seq. */
char FrameByte(u64 seq, size_t k, size_t i) {
  return static_cast<char>(seq + k * 7 + i);
}

/** The frame sizes record seq carries; kBig + 1 marks the zero-copy one. */
std::vector<size_t> FrameSizes(u64 seq) {
  if (seq % 1000 == 999) return {kBig};
  if (seq % 1000 == 499) return {kBig + 1};
  std::vector<size_t> s;
  for (size_t k = 0; k < seq % 3; ++k) s.push_back((seq * 7 + k) % 300);
  return s;
}

OutRecord MakeRecord(u64 seq) {
  OutRecord r;
  r.tag = seq;
  r.bytes.assign(reinterpret_cast<const char *>(&seq), sizeof(seq));
  r.bytes.append(seq % 50, static_cast<char>('a' + seq % 26));
  std::vector<size_t> sizes = FrameSizes(seq);
  for (size_t k = 0; k < sizes.size(); ++k) {
    if (sizes[k] == kBig + 1) {
      const std::vector<char> &big = StaticBig();
      r.frames.emplace_back(const_cast<char *>(big.data()), big.size(), nullptr,
                            nullptr);
      continue;
    }
    zmq::message_t m(sizes[k]);
    char *p = static_cast<char *>(m.data());
    for (size_t i = 0; i < sizes[k]; ++i) p[i] = FrameByte(seq, k, i);
    r.frames.push_back(std::move(m));
  }
  return r;
}

/** Checks `rec` against MakeRecord; returns its seq or ~0 if it differs. */
u64 CheckRecord(const InRecord &rec) {
  if (rec.bytes.size() < sizeof(u64)) return ~0ull;
  u64 seq;
  memcpy(&seq, rec.bytes.data(), sizeof(seq));
  if (rec.bytes.size() != sizeof(seq) + seq % 50) return ~0ull;
  for (size_t i = sizeof(seq); i < rec.bytes.size(); ++i) {
    if (rec.bytes[i] != static_cast<char>('a' + seq % 26)) return ~0ull;
  }
  std::vector<size_t> sizes = FrameSizes(seq);
  if (rec.num_frames != sizes.size()) return ~0ull;
  for (size_t k = 0; k < sizes.size(); ++k) {
    const char *p = static_cast<const char *>(rec.frames[k].data());
    if (sizes[k] == kBig + 1) {
      if (rec.frames[k].size() != kBig ||
          memcmp(p, StaticBig().data(), kBig) != 0) {
        return ~0ull;
      }
      continue;
    }
    if (rec.frames[k].size() != sizes[k]) return ~0ull;
    for (size_t i = 0; i < sizes[k]; ++i) {
      if (p[i] != FrameByte(seq, k, i)) return ~0ull;
    }
  }
  return seq;
}

/** A Transport plus what its callbacks observed. */
struct Node {
  explicit Node(u32 nodes) : next(nodes + 1), got(nodes + 1) {
    for (auto &g : got) g.store(0);
  }
  /** Stops the transport first: its thread's callbacks write the members
   * below, which are destroyed before `t` would be. */
  ~Node() { t.Stop(); }
  Transport t;
  std::vector<u64> next;  // network thread only: next seq expected per source
  std::vector<std::atomic<u64>> got;  // in-order valid records per source
  std::atomic<u64> bad{0};            // out-of-order or corrupt records
  std::mutex mu;
  std::vector<std::pair<u32, bool>> peer_events;  // guarded by mu
  std::vector<u64> failed_tags;                   // guarded by mu
  std::vector<u64> too_large_tags;  // guarded by mu: failed as kTooLarge

  hshm::Status Start(u32 self, const std::vector<std::string> &eps,
                     const TransportOptions &o) {
    return t.Start(
        self, eps, o,
        [this](u32 from, InRecord &rec) {
          u64 seq = CheckRecord(rec);
          if (seq != next[from]) {
            bad.fetch_add(1);
          } else {
            ++next[from];
            got[from].fetch_add(1);
          }
        },
        [this](u32 node, bool alive) {
          std::lock_guard<std::mutex> l(mu);
          peer_events.emplace_back(node, alive);
        },
        [this](u32 node, std::vector<u64> tags, hshm::lbm::SendFailure why) {
          std::lock_guard<std::mutex> l(mu);
          failed_tags.insert(failed_tags.end(), tags.begin(), tags.end());
          if (why == hshm::lbm::SendFailure::kTooLarge) {
            too_large_tags.insert(too_large_tags.end(), tags.begin(),
                                  tags.end());
          }
        });
  }
  std::vector<u64> TooLarge() {
    std::lock_guard<std::mutex> l(mu);
    return too_large_tags;
  }
  std::vector<std::pair<u32, bool>> Events() {
    std::lock_guard<std::mutex> l(mu);
    return peer_events;
  }
  size_t NumFailed() {
    std::lock_guard<std::mutex> l(mu);
    return failed_tags.size();
  }
};

/** Starts nodes 1..eps.size() and waits until every pair has heard each other
 * (so every DEALER is connected). */
std::vector<std::unique_ptr<Node>> StartMesh(
    const std::vector<std::string> &eps, const TransportOptions &o) {
  std::vector<std::unique_ptr<Node>> nodes;
  for (u32 i = 1; i <= eps.size(); ++i) {
    nodes.push_back(std::make_unique<Node>(eps.size()));
    hshm::Status st = nodes.back()->Start(i, eps, o);
    EXPECT_TRUE(st.ok()) << st;
  }
  bool ready = WaitFor([&] {
    for (u32 i = 1; i <= nodes.size(); ++i) {
      for (u32 j = 1; j <= nodes.size(); ++j) {
        if (i != j && nodes[i - 1]->t.PeerIncarnation(j) == 0) return false;
      }
    }
    return true;
  });
  EXPECT_TRUE(ready) << "mesh did not connect";
  return nodes;
}

TEST(LightbeamTest, TwoNodesInOrderBatched) {
  std::vector<std::string> eps = {FreeEndpoint("127.0.1.1"),
                                  FreeEndpoint("127.0.1.2")};
  auto nodes = StartMesh(eps, FastOptions());
  constexpr u64 kN = 10000;
  auto sender = [&](u32 from, u32 to) {
    for (u64 s = 0; s < kN; ++s) {
      ASSERT_TRUE(nodes[from - 1]->t.Send(to, MakeRecord(s)));
    }
  };
  std::thread a(sender, 1, 2), b(sender, 2, 1);
  a.join();
  b.join();
  EXPECT_TRUE(WaitFor([&] {
    return nodes[0]->got[2].load() + nodes[0]->bad.load() >= kN &&
           nodes[1]->got[1].load() + nodes[1]->bad.load() >= kN;
  }));
  for (u32 i = 0; i < 2; ++i) {
    Node &n = *nodes[i];
    EXPECT_EQ(n.got[2 - i].load(), kN);
    EXPECT_EQ(n.bad.load(), 0u);
    EXPECT_EQ(n.NumFailed(), 0u);
    hshm::lbm::TransportStats s = n.t.stats();
    EXPECT_EQ(s.records_sent, kN);
    EXPECT_EQ(s.records_received, kN);
    EXPECT_LT(s.msgs_sent, s.records_sent) << "no batching";
    EXPECT_EQ(s.dropped_malformed, 0u);
    EXPECT_EQ(s.send_failures, 0u);
    EXPECT_TRUE(n.Events().empty());
  }
  // Self and out-of-range destinations are refused.
  EXPECT_FALSE(nodes[0]->t.Send(1, MakeRecord(0)));
  EXPECT_FALSE(nodes[0]->t.Send(0, MakeRecord(0)));
  EXPECT_FALSE(nodes[0]->t.Send(3, MakeRecord(0)));
  EXPECT_TRUE(nodes[0]->t.PeerAlive(1));
  EXPECT_FALSE(nodes[0]->t.PeerAlive(3));
}

TEST(LightbeamTest, ThreeNodesAllToAll) {
  std::vector<std::string> eps = {FreeEndpoint("127.0.2.1"),
                                  FreeEndpoint("127.0.2.2"),
                                  FreeEndpoint("127.0.2.3")};
  auto nodes = StartMesh(eps, FastOptions());
  constexpr u64 kN = 3000;
  std::vector<std::thread> senders;
  for (u32 from = 1; from <= 3; ++from) {
    senders.emplace_back([&, from] {
      for (u64 s = 0; s < kN; ++s) {
        for (u32 to = 1; to <= 3; ++to) {
          if (to == from) continue;
          EXPECT_TRUE(nodes[from - 1]->t.Send(to, MakeRecord(s)));
        }
      }
    });
  }
  for (auto &t : senders) t.join();
  auto all_in = [&] {
    for (u32 i = 1; i <= 3; ++i) {
      for (u32 j = 1; j <= 3; ++j) {
        if (i != j && nodes[i - 1]->got[j].load() < kN) return false;
      }
    }
    return true;
  };
  EXPECT_TRUE(WaitFor(all_in));
  for (u32 i = 1; i <= 3; ++i) {
    EXPECT_EQ(nodes[i - 1]->bad.load(), 0u);
    EXPECT_EQ(nodes[i - 1]->NumFailed(), 0u);
    EXPECT_EQ(nodes[i - 1]->t.stats().records_received, 2 * kN);
  }
}

// ---------------------------------------------------------------------------
// Malformed input from a raw DEALER posing as node 2.
// ---------------------------------------------------------------------------

std::string Bytes(const void *p, size_t n) {
  return std::string(static_cast<const char *>(p), n);
}

WireHeader Header(MsgKind kind, u32 src, u32 dst, u32 nrec, u32 nframes,
                  u64 body_size) {
  WireHeader h{};
  h.magic = hshm::lbm::kWireMagic;
  h.version = hshm::lbm::kWireVersion;
  h.kind = static_cast<u16>(kind);
  h.src_node = src;
  h.dst_node = dst;
  h.src_incarnation = 12345;
  h.num_records = nrec;
  h.num_frames = nframes;
  h.body_size = body_size;
  h.max_message_bytes = 1 << 20;
  return h;
}

std::string Hdr(const WireHeader &h) { return Bytes(&h, sizeof(h)); }

/** Body holding one record of `len` bytes and `nframes` frames. */
std::string Body(u32 len, u32 nframes, size_t actual_len) {
  std::string b = Bytes(&len, 4) + Bytes(&nframes, 4);
  return b + std::string(actual_len, 'x');
}

void SendRaw(zmq::socket_t &s, const std::vector<std::string> &frames) {
  for (size_t i = 0; i < frames.size(); ++i) {
    s.send(zmq::buffer(frames[i]), i + 1 < frames.size()
                                       ? zmq::send_flags::sndmore
                                       : zmq::send_flags::none);
  }
}

/** A ZeroMQ address connecting to endpoint `to` from the host of endpoint
 * (or bare address) `from`. */
std::string From(const std::string &from, const std::string &to) {
  return "tcp://" + from.substr(0, from.rfind(':')) + ":0;" + to;
}

/** A DEALER of `ctx` with routing id `id` (a node's), connected to `to`
 * from `from` (as From takes them). */
zmq::socket_t RawPeer(zmq::context_t &ctx, const char *id,
                      const std::string &from, const std::string &to) {
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::routing_id, id);
  s.connect(From(from, to));
  return s;
}

TEST(LightbeamTest, MalformedMessagesDropped) {
  // Node 2 never starts: a raw socket uses its routing id instead.
  std::vector<std::string> eps = {FreeEndpoint("127.0.3.1"),
                                  FreeEndpoint("127.0.3.2"),
                                  FreeEndpoint("127.0.3.3")};
  TransportOptions o = FastOptions();
  o.max_message_bytes = 1 << 20;
  Node n1(3), n3(3);
  ASSERT_TRUE(n1.Start(1, eps, o).ok());
  ASSERT_TRUE(n3.Start(3, eps, o).ok());
  ASSERT_TRUE(WaitFor([&] {
    return n1.t.PeerIncarnation(3) != 0 && n3.t.PeerIncarnation(1) != 0;
  }));

  zmq::context_t ctx(1);
  zmq::socket_t raw(ctx, zmq::socket_type::dealer);
  raw.set(zmq::sockopt::linger, 0);
  raw.set(zmq::sockopt::routing_id, "2");
  raw.connect(From(eps[1], eps[0]));

  using K = MsgKind;
  std::vector<std::vector<std::string>> bad;
  const std::string rec = Body(5, 0, 5);
  WireHeader good = Header(K::kRecords, 2, 1, 1, 0, rec.size());
  std::string truncated = Hdr(good).substr(0, 20);
  bad.push_back({truncated, rec});
  WireHeader h = good;
  h.magic = 0xdeadbeef;
  bad.push_back({Hdr(h), rec});
  h = good;
  h.version = 7;
  bad.push_back({Hdr(h), rec});
  h = good;
  h.kind = 9;
  bad.push_back({Hdr(h), rec});
  h = good;
  h.max_message_bytes = hshm::lbm::kMinMessageBytes - 1;
  bad.push_back({Hdr(h), rec});
  h = good;
  h.body_size = rec.size() + 1;
  bad.push_back({Hdr(h), rec});
  const std::string overflow = Body(0xFFFFFFF0u, 0, 4);
  bad.push_back(
      {Hdr(Header(K::kRecords, 2, 1, 1, 0, overflow.size())), overflow});
  const std::string two_frames = Body(5, 2, 5);
  bad.push_back({Hdr(Header(K::kRecords, 2, 1, 1, 2, two_frames.size())),
                 two_frames, "only one data frame"});
  bad.push_back({Hdr(Header(K::kRecords, 2, 1, 1, 1, rec.size())), rec,
                 "frame the index does not name"});
  bad.push_back({Hdr(Header(K::kRecords, 2, 1, 2, 0, rec.size())), rec});
  bad.push_back({Hdr(Header(K::kRecords, 2, 3, 1, 0, rec.size())), rec});
  bad.push_back({Hdr(Header(K::kRecords, 7, 1, 1, 0, rec.size())), rec});
  bad.push_back({Hdr(Header(K::kRecords, 3, 1, 1, 0, rec.size())), rec});
  bad.push_back({Hdr(Header(K::kRecords, 1, 1, 1, 0, rec.size())), rec});
  bad.push_back({Hdr(Header(K::kRecords, 0, 1, 1, 0, rec.size())), rec});
  bad.push_back({Hdr(Header(K::kRecords, 2, 1, 0, 0, 0)), ""});
  bad.push_back({Hdr(Header(K::kPing, 2, 1, 0, 0, rec.size())), rec});
  bad.push_back({Hdr(good)});  // no body frame
  bad.push_back({""});
  // Larger than max_message_bytes in total (each frame alone is not).
  const std::string big(600 << 10, 'b');
  const std::string big_rec = Body(0, 2, 0);
  bad.push_back({Hdr(Header(K::kRecords, 2, 1, 1, 2, big_rec.size())), big_rec,
                 big, big});
  std::mt19937 rng(42);
  for (int i = 0; i < 300; ++i) {
    std::vector<std::string> frames(1 + rng() % 5);
    for (auto &f : frames) {
      f.resize(rng() % 100);
      for (auto &c : f) c = static_cast<char>(rng());
    }
    bad.push_back(frames);
  }
  for (const auto &m : bad) SendRaw(raw, m);
  EXPECT_TRUE(WaitFor([&] {
    return n1.t.stats().dropped_malformed >= bad.size();
  })) << n1.t.stats().dropped_malformed
      << " of " << bad.size();
  EXPECT_EQ(n1.t.stats().dropped_malformed, bad.size());
  EXPECT_EQ(n1.got[2].load(), 0u);
  EXPECT_EQ(n1.bad.load(), 0u);
  EXPECT_EQ(n1.t.PeerIncarnation(2), 0u);  // nothing was believed

  // A real peer is unaffected.
  // (MakeRecord(499) has a 1 MiB frame: too large for this node.)
  EXPECT_FALSE(n3.t.Send(1, MakeRecord(499)));
  for (u64 s = 0; s < 400; ++s) ASSERT_TRUE(n3.t.Send(1, MakeRecord(s)));
  EXPECT_TRUE(WaitFor([&] { return n1.got[3].load() == 400; }));
  EXPECT_EQ(n1.bad.load(), 0u);
  EXPECT_EQ(n1.t.stats().dropped_malformed, bad.size());
}

// Every message says how large a message its sender accepts, and a node
// never sends a peer more: a record too large for the peer is refused at
// Send, as one too large for this node is. Before, it was sent, and the
// peer dropped it (and ZeroMQ the connection with it).
TEST(LightbeamTest, APeerIsNeverSentMoreThanItAccepts) {
  std::vector<std::string> eps = {FreeEndpoint("127.0.15.1"),
                                  FreeEndpoint("127.0.15.2")};
  TransportOptions large = FastOptions();
  large.max_message_bytes = 4 << 20;
  TransportOptions small = FastOptions();
  small.max_message_bytes = 1 << 20;
  Node n1(2), n2(2);
  ASSERT_TRUE(n1.Start(1, eps, large).ok());
  ASSERT_TRUE(n2.Start(2, eps, small).ok());
  ASSERT_TRUE(WaitFor([&] {
    return n1.t.PeerIncarnation(2) != 0 && n2.t.PeerIncarnation(1) != 0;
  }));
  EXPECT_EQ(n1.t.MaxMessageBytesTo(2), 1u << 20);
  EXPECT_EQ(n1.t.MaxMessageBytesTo(1), 4u << 20);  // self: its own
  EXPECT_EQ(n2.t.MaxMessageBytesTo(1), 1u << 20);  // its own is the less
  EXPECT_FALSE(n1.t.Fits(2, 8, kBig, 1));
  EXPECT_TRUE(n1.t.Fits(2, 8, kBig - 1024, 1));
  // Record 999 carries a 1 MiB frame: too large for node 2 either way.
  EXPECT_FALSE(n1.t.Send(2, MakeRecord(999)));
  EXPECT_FALSE(n2.t.Send(1, MakeRecord(999)));
  for (u64 s = 0; s < 400; ++s) ASSERT_TRUE(n1.t.Send(2, MakeRecord(s)));
  EXPECT_TRUE(WaitFor([&] { return n2.got[1].load() == 400; }))
      << n2.got[1].load();
  EXPECT_EQ(n2.bad.load(), 0u);
  EXPECT_EQ(n2.t.stats().dropped_malformed, 0u);
}

// A record too large for a message of kMinMessageBytes waits until the
// peer has said what it accepts, and the records queued behind it wait with
// it. Node 2 is raw sockets here: a ROUTER at its endpoint, which node 1's
// connection reaches, and a DEALER that speaks for it only when the test
// says so. For 300 ms node 1 sends node 2 pings only; once node 2 says it
// accepts 1 MiB, the 2 MiB record fails as kTooLarge and the 10 small ones
// arrive, in order. Before, node 1 sent the large record as soon as its
// connection was up, and node 2 (a real one) dropped it and the connection.
TEST(LightbeamTest, ARecordWaitsUntilThePeerSaysWhatItAccepts) {
  std::vector<std::string> eps = {FreeEndpoint("127.0.15.3"),
                                  FreeEndpoint("127.0.15.4")};
  zmq::context_t zctx(1);
  zmq::socket_t router(zctx, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.bind("tcp://" + eps[1]);
  TransportOptions o = FastOptions();
  o.max_message_bytes = 4 << 20;
  Node n1(2);
  ASSERT_TRUE(n1.Start(1, eps, o).ok());
  OutRecord big;
  big.tag = 77777;
  big.bytes = "big";
  big.frames.emplace_back(2 << 20);
  ASSERT_TRUE(n1.t.Send(2, std::move(big)));
  for (u64 s = 0; s < 10; ++s) ASSERT_TRUE(n1.t.Send(2, MakeRecord(s)));
  // Reads what node 1 sends node 2 for `ms`, checking each message as node
  // 2 would; returns the seqs of the records in them, in order.
  auto receive = [&](int ms) {
    std::vector<u64> seqs;
    const Clock::time_point until =
        Clock::now() + std::chrono::milliseconds(ms);
    while (Clock::now() < until) {
      zmq::pollitem_t item{router.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, std::chrono::milliseconds(10));
      if (!(item.revents & ZMQ_POLLIN)) continue;
      std::vector<zmq::message_t> frames;
      do {
        frames.emplace_back();
        (void)router.recv(frames.back(), zmq::recv_flags::none);
      } while (frames.back().more());
      auto view = [&frames](size_t k) {
        return k < frames.size()
                   ? std::string_view(
                         static_cast<const char *>(frames[k].data()),
                         frames[k].size())
                   : std::string_view();
      };
      WireHeader h{};
      std::vector<hshm::lbm::WireRecordRef> recs;
      const char *why = hshm::lbm::DecodeMessage(
          frames.size(), view(0), view(1), view(2), 2, 2, &h, &recs);
      EXPECT_EQ(why, nullptr) << why;
      if (why || h.kind != static_cast<u16>(MsgKind::kRecords)) continue;
      for (const auto &r : recs) {
        u64 seq = ~0ull;
        if (r.len >= sizeof(seq)) memcpy(&seq, view(2).data() + r.offset, 8);
        seqs.push_back(seq);
      }
    }
    return seqs;
  };
  EXPECT_TRUE(receive(300).empty());
  // Node 2 speaks: a ping from its address, saying it accepts 1 MiB.
  zmq::socket_t dealer = RawPeer(zctx, "2", eps[1], eps[0]);
  WireHeader ping = Header(MsgKind::kPing, 2, 1, 0, 0, 0);
  ping.max_message_bytes = 1 << 20;
  SendRaw(dealer, {Hdr(ping), ""});
  std::vector<u64> want(10);
  for (u64 s = 0; s < 10; ++s) want[s] = s;
  EXPECT_EQ(receive(500), want);
  EXPECT_EQ(n1.TooLarge(), std::vector<u64>{77777});
  EXPECT_EQ(n1.NumFailed(), 1u);
}

// A message counts only from the address of the node it claims, and
// connections from addresses that are no node's are refused outright (so
// they cannot take over a node's routing id either).
TEST(LightbeamTest, PeersTalkFromTheirOwnAddresses) {
  std::vector<std::string> eps = {FreeEndpoint("127.0.8.1"),
                                  FreeEndpoint("127.0.8.2"),
                                  FreeEndpoint("127.0.8.3")};
  Node n1(3), n2(3);
  ASSERT_TRUE(n1.Start(1, eps, FastOptions()).ok());
  ASSERT_TRUE(n2.Start(2, eps, FastOptions()).ok());
  ASSERT_TRUE(WaitFor([&] { return n1.t.PeerIncarnation(2) != 0; }));
  const std::string rec = Body(5, 0, 5);
  const std::vector<std::string> as3 = {
      Hdr(Header(MsgKind::kRecords, 3, 1, 1, 0, rec.size())), rec};
  const std::vector<std::string> as2 = {
      Hdr(Header(MsgKind::kRecords, 2, 1, 1, 0, rec.size())), rec};
  zmq::context_t ctx(1);
  // Node 3 is down; node 2's address poses as it: a well-formed message,
  // dropped for its address alone.
  zmq::socket_t from_node2 = RawPeer(ctx, "3", eps[1], eps[0]);
  SendRaw(from_node2, as3);
  EXPECT_TRUE(WaitFor([&] { return n1.t.stats().dropped_wrong_address == 1; }));
  // An address that is no node's cannot connect, not even as node 2.
  zmq::socket_t stranger = RawPeer(ctx, "2", "127.0.8.9", eps[0]);
  SendRaw(stranger, as2);
  EXPECT_TRUE(WaitFor([&] { return n1.t.stats().auth_failures >= 1; }));
  // The real node 2 is unaffected, before and after the stranger's tries.
  for (u64 s = 0; s < 200; ++s) ASSERT_TRUE(n2.t.Send(1, MakeRecord(s)));
  EXPECT_TRUE(WaitFor([&] { return n1.got[2].load() == 200; }));
  EXPECT_EQ(n1.got[3].load(), 0u);
  EXPECT_EQ(n1.bad.load(), 0u);  // the raw records never arrived
  EXPECT_EQ(n1.t.PeerIncarnation(3), 0u);
  EXPECT_EQ(n1.t.stats().dropped_wrong_address, 1u);
  EXPECT_EQ(n1.t.stats().dropped_malformed, 0u);

  // check_peer_address off (e.g. behind NAT): any address may claim a node.
  std::vector<std::string> open = {FreeEndpoint("127.0.8.4"),
                                   FreeEndpoint("127.0.8.5")};
  TransportOptions o = FastOptions();
  o.check_peer_address = false;
  Node n4(2);
  ASSERT_TRUE(n4.Start(1, open, o).ok());
  zmq::socket_t anyone = RawPeer(ctx, "2", "127.0.8.9", open[0]);
  SendRaw(anyone, {Hdr(Header(MsgKind::kPing, 2, 1, 0, 0, 0)), ""});
  EXPECT_TRUE(WaitFor([&] { return n4.t.PeerIncarnation(2) == 12345; }));
  EXPECT_EQ(n4.t.stats().auth_failures, 0u);
}

/** Descriptors this process has open. */
size_t OpenFds() {
  size_t n = 0;
  for (int fd = 0; fd < 65536; ++fd) n += fcntl(fd, F_GETFD) != -1;
  return n;
}

/** A plain TCP connection from `src` (any port) to endpoint "host:port";
 * -1 if it failed. */
int ConnectFrom(const std::string &src, const std::string &ep) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  inet_pton(AF_INET, src.c_str(), &a.sin_addr);
  sockaddr_in b{};
  b.sin_family = AF_INET;
  const size_t colon = ep.rfind(':');
  inet_pton(AF_INET, ep.substr(0, colon).c_str(), &b.sin_addr);
  b.sin_port = htons(static_cast<u16>(std::stoi(ep.substr(colon + 1))));
  if (bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a)) != 0 ||
      connect(fd, reinterpret_cast<sockaddr *>(&b), sizeof(b)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// A flood of connections from an address that is no node's (which never
// send a byte) holds none of the node's descriptors: each is closed as it
// is accepted and counted as refused. Before, each held one for the 30 s
// handshake timeout, and once the node ran out its accept loop spun at a
// whole core. The nodes still talk afterwards.
TEST(LightbeamTest, ConnectionsFromNoNodesAddressAreClosedAtOnce) {
  std::vector<std::string> eps = {FreeEndpoint("127.0.8.10"),
                                  FreeEndpoint("127.0.8.11")};
  auto nodes = StartMesh(eps, FastOptions());
  const size_t before = OpenFds();
  std::vector<int> flood;
  for (int i = 0; i < 300; ++i) {
    int fd = ConnectFrom("127.0.8.12", eps[0]);
    if (fd >= 0) flood.push_back(fd);
  }
  EXPECT_GE(flood.size(), 250u);
  EXPECT_TRUE(WaitFor([&] {
    return nodes[0]->t.stats().auth_failures >= flood.size();
  })) << nodes[0]->t.stats().auth_failures;
  // Ours are the flood's own ends; the node accepted and closed the rest.
  const size_t during = OpenFds();
  EXPECT_LE(during, before + flood.size() + 8) << before;
  printf(
      "300 connections from no node's address: %zu descriptors more in "
      "this process (the flood's own %zu), %llu refused\n",
      during - before, flood.size(),
      static_cast<unsigned long long>(nodes[0]->t.stats().auth_failures));
  for (int fd : flood) close(fd);
  for (u64 s = 0; s < 100; ++s) ASSERT_TRUE(nodes[1]->t.Send(1, MakeRecord(s)));
  EXPECT_TRUE(WaitFor([&] { return nodes[0]->got[2].load() == 100; }));
}

// A connection from a node's own address that never sends is closed after
// handshake_timeout_ms (it passes the accept filter, so this bounds what a
// process on that node's host can hold).
TEST(LightbeamTest, ASilentConnectionIsClosedAfterTheHandshakeTimeout) {
  std::vector<std::string> eps = {FreeEndpoint("127.0.8.13"),
                                  FreeEndpoint("127.0.8.14")};
  TransportOptions o = FastOptions();
  o.handshake_timeout_ms = 300;
  auto nodes = StartMesh(eps, o);
  int fd = ConnectFrom("127.0.8.14", eps[0]);  // node 2's address
  ASSERT_GE(fd, 0);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char c;
  const auto t0 = Clock::now();
  // ZeroMQ sends its greeting, then closes: read to the end.
  ssize_t n;
  while ((n = recv(fd, &c, 1, 0)) > 0) {
  }
  EXPECT_EQ(n, 0);
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(3));
  close(fd);
  // The real node 2 is unaffected.
  for (u64 s = 0; s < 100; ++s) ASSERT_TRUE(nodes[1]->t.Send(1, MakeRecord(s)));
  EXPECT_TRUE(WaitFor([&] { return nodes[0]->got[2].load() == 100; }));
}

/** The ":port" of endpoint `ep`. */
std::string PortOf(const std::string &ep) { return ep.substr(ep.rfind(':')); }

/** Nodes 1 and 2 of `nodes` send each other 100 records; all arrive. */
void ExpectTheTwoTalk(const std::vector<std::unique_ptr<Node>> &nodes) {
  for (u64 s = 0; s < 100; ++s) {
    ASSERT_TRUE(nodes[0]->t.Send(2, MakeRecord(s)));
    ASSERT_TRUE(nodes[1]->t.Send(1, MakeRecord(s)));
  }
  EXPECT_TRUE(WaitFor([&] {
    return nodes[0]->got[2].load() == 100 && nodes[1]->got[1].load() == 100;
  }));
}

// IPv6 nodes: the address filter takes IPv6 addresses (and IPv4 ones as
// mapped addresses), and the nodes talk.
TEST(LightbeamTest, Ipv6NodesPassTheAddressFilter) {
  int probe = socket(AF_INET6, SOCK_STREAM, 0);
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  inet_pton(AF_INET6, "::1", &a.sin6_addr);
  const bool v6 = probe >= 0 &&
                  bind(probe, reinterpret_cast<sockaddr *>(&a), sizeof(a)) == 0;
  if (probe >= 0) close(probe);
  if (!v6) GTEST_SKIP() << "this host has no IPv6 loopback address";
  std::vector<std::string> eps = {"[::1]" + PortOf(FreeEndpoint("127.0.0.1")),
                                  "[::1]" + PortOf(FreeEndpoint("127.0.0.1"))};
  auto nodes = StartMesh(eps, FastOptions());
  ExpectTheTwoTalk(nodes);
  EXPECT_EQ(nodes[0]->t.stats().auth_failures, 0u);
  // An IPv4 node whose peer has an IPv6 address still starts (that peer's
  // address cannot be an IPv4 socket's filter; it was an error before).
  std::vector<std::string> mixed = {
      FreeEndpoint("127.0.8.20"), "[::1]" + PortOf(FreeEndpoint("127.0.0.1"))};
  Node v4(2);
  hshm::Status st = v4.Start(1, mixed, FastOptions());
  EXPECT_TRUE(st.ok()) << st;
}

// Nodes named by a host name (resolved at Start, to 127.0.0.1 and maybe
// ::1): each sends from the address it binds, which its peer accepts.
TEST(LightbeamTest, NodesNamedByHostNamePassTheAddressCheck) {
  std::vector<std::string> eps = {
      "localhost" + PortOf(FreeEndpoint("127.0.0.1")),
      "localhost" + PortOf(FreeEndpoint("127.0.0.1"))};
  auto nodes = StartMesh(eps, FastOptions());
  ExpectTheTwoTalk(nodes);
  for (auto &n : nodes) {
    EXPECT_EQ(n->t.stats().dropped_wrong_address, 0u);
    EXPECT_EQ(n->t.stats().auth_failures, 0u);
  }
}

// With check_peer_address, every host must resolve at Start.
TEST(LightbeamTest, UnresolvableHostIsAClearError) {
  std::vector<std::string> eps = {FreeEndpoint("127.0.8.6"),
                                  "no-such-host.invalid:9999"};
  Transport t;
  hshm::Status s = t.Start(1, eps, FastOptions(), nullptr, nullptr, nullptr);
  EXPECT_EQ(s.code(), hshm::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("node 2"), std::string::npos) << s;
  EXPECT_NE(s.message().find("does not resolve"), std::string::npos) << s;
  // A failed Start leaves nothing behind: no peers to ask about.
  EXPECT_FALSE(t.PeerAlive(2));
  EXPECT_EQ(t.PeerIncarnation(2), 0u);
  EXPECT_FALSE(t.Send(2, OutRecord{}));
}

TEST(LightbeamTest, DecodeMessageWithoutSockets) {
  using hshm::lbm::DecodeMessage;
  using hshm::lbm::WireRecordRef;
  using K = MsgKind;
  WireHeader h{};
  std::vector<WireRecordRef> recs;
  // Node 1 of 3 receives from node 2: two records, the second with 2 frames.
  const std::string body = Body(3, 0, 3) + Body(4, 2, 4);
  const std::string hdr = Hdr(Header(K::kRecords, 2, 1, 2, 2, body.size()));
  ASSERT_EQ(DecodeMessage(5, "2", hdr, body, 1, 3, &h, &recs), nullptr);
  EXPECT_EQ(h.src_node, 2u);
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[0].offset, 8u);
  EXPECT_EQ(recs[0].len, 3u);
  EXPECT_EQ(recs[0].nframes, 0u);
  EXPECT_EQ(recs[1].offset, 19u);
  EXPECT_EQ(recs[1].len, 4u);
  EXPECT_EQ(recs[1].nframes, 2u);
  const std::string ping = Hdr(Header(K::kPing, 3, 1, 0, 0, 0));
  EXPECT_EQ(DecodeMessage(3, "3", ping, "", 1, 3, &h, &recs), nullptr);
  // Pings and pongs may also come on the node's control connection.
  EXPECT_EQ(DecodeMessage(3, "c3", ping, "", 1, 3, &h, &recs), nullptr);

  // Each problem is named; the views are not read below 3 frames.
  auto why = [&](u64 n, std::string_view id, std::string_view header,
                 std::string_view b, u32 self = 1) {
    const char *r = DecodeMessage(n, id, header, b, self, 3, &h, &recs);
    return std::string(r ? r : "ok");
  };
  EXPECT_EQ(why(2, "2", hdr, {}), "fewer than 3 frames");
  EXPECT_EQ(why(5, "2", hdr.substr(1), body), "bad header size");
  EXPECT_EQ(why(5, "2", hdr, body, 2), "bad src_node");
  EXPECT_EQ(why(5, "2", hdr, body, 3), "wrong dst_node");
  EXPECT_EQ(why(5, "3", hdr, body), "routing id does not match src_node");
  // Records never come on a control connection, nor from another node's.
  EXPECT_EQ(why(5, "c2", hdr, body), "routing id does not match src_node");
  EXPECT_EQ(why(3, "c2", ping, ""), "routing id does not match src_node");
  EXPECT_EQ(why(3, "cc3", ping, ""), "routing id does not match src_node");
  EXPECT_EQ(why(5, std::string_view("\0\0\0\0\1", 5), hdr, body),
            "came on a connection its node has replaced (it reconnected)");
  EXPECT_EQ(why(4, "2", hdr, body), "frame count mismatch");
  EXPECT_EQ(why(5, "2", hdr, body.substr(0, 10)), "body size mismatch");
  const std::string cut = body.substr(0, body.size() - 1);
  EXPECT_EQ(why(5, "2", Hdr(Header(K::kRecords, 2, 1, 2, 2, cut.size())), cut),
            "record overflows body");
  EXPECT_EQ(why(3, "3", Hdr(Header(K::kPong, 3, 1, 0, 1, 0)), ""),
            "frame count mismatch");
}

// ---------------------------------------------------------------------------
// Liveness.
// ---------------------------------------------------------------------------

TEST(LightbeamTest, DeadPeerDetectedAndReturns) {
  std::vector<std::string> eps = {FreeEndpoint("127.0.4.1"),
                                  FreeEndpoint("127.0.4.2")};
  TransportOptions o;
  o.heartbeat_ms = 50;
  o.dead_after_ms = 300;
  auto nodes = StartMesh(eps, o);
  Node &a = *nodes[0];
  const u64 old_inc = a.t.PeerIncarnation(2);
  // Events from here on (a slow start could already have flapped).
  const size_t base = a.Events().size();
  auto stopped_at = Clock::now();
  nodes[1]->t.Stop();
  ASSERT_TRUE(WaitFor([&] { return !a.t.PeerAlive(2); }, 3000));
  EXPECT_LT(Clock::now() - stopped_at, std::chrono::milliseconds(1000));
  EXPECT_FALSE(a.t.Send(2, MakeRecord(0)));
  ASSERT_TRUE(WaitFor([&] { return a.Events().size() >= base + 1; }, 3000));
  ASSERT_EQ(a.Events().size(), base + 1);
  EXPECT_EQ(a.Events()[base], std::make_pair(2u, false));

  // A new process on the same endpoint and id comes back alive.
  Node b2(2);
  ASSERT_TRUE(b2.Start(2, eps, o).ok());
  ASSERT_TRUE(WaitFor([&] { return a.t.PeerAlive(2); }, 3000));
  // The event is recorded just after the peer is marked alive.
  ASSERT_TRUE(WaitFor([&] { return a.Events().size() >= base + 2; }, 3000));
  auto ev = a.Events();
  ASSERT_EQ(ev.size(), base + 2);
  EXPECT_EQ(ev[base + 1], std::make_pair(2u, true));
  EXPECT_EQ(a.t.PeerIncarnation(2), b2.t.PeerIncarnation(2));
  EXPECT_NE(a.t.PeerIncarnation(2), old_inc);
  ASSERT_TRUE(WaitFor([&] { return b2.t.PeerIncarnation(1) != 0; }));
  for (u64 s = 0; s < 100; ++s) ASSERT_TRUE(a.t.Send(2, MakeRecord(s)));
  EXPECT_TRUE(WaitFor([&] { return b2.got[1].load() == 100; }));
}

// A peer that keeps its connection up but reads nothing (a stalled
// process; here a bare ROUTER that takes one message and no more) is
// declared dead, and what ZeroMQ still held for it goes with its
// connection: every frame sent there is released, so its memory comes back
// and the peer cannot run those records once it resumes.
TEST(LightbeamTest, WhatADeadPeerNeverReadIsReleased) {
  std::vector<std::string> eps = {FreeEndpoint("127.0.4.3"),
                                  FreeEndpoint("127.0.4.4")};
  zmq::context_t zctx(1);
  zmq::socket_t stalled(zctx, zmq::socket_type::router);
  stalled.set(zmq::sockopt::linger, 0);
  stalled.set(zmq::sockopt::rcvhwm, 1);
  stalled.bind("tcp://" + eps[1]);
  // Before the transport: its frames' release callbacks write it.
  std::atomic<int> released{0};
  TransportOptions o;
  o.heartbeat_ms = 50;
  o.dead_after_ms = 1000;
  Node a(2);
  ASSERT_TRUE(a.Start(1, eps, o).ok());
  // 47 MiB: more than the socket buffers. Each record fits in the least a
  // node accepts, so it goes although this peer never says what it
  // accepts.
  constexpr int kRecords = 60;
  static const std::vector<char> big(800 << 10, 'x');
  for (int i = 0; i < kRecords; ++i) {
    OutRecord r;
    r.bytes = "record";
    r.frames.emplace_back(
        const_cast<char *>(big.data()), big.size(),
        [](void *, void *hint) {
          static_cast<std::atomic<int> *>(hint)->fetch_add(1);
        },
        &released);
    ASSERT_TRUE(a.t.Send(2, std::move(r)));
  }
  // ZeroMQ took them all (none waits in the transport's own backlog).
  ASSERT_TRUE(
      WaitFor([&] { return a.t.stats().records_sent == kRecords; }, 900));
  ASSERT_TRUE(WaitFor([&] { return !a.t.PeerAlive(2); }, 5000));
  EXPECT_LT(released.load(), kRecords);  // still held by ZeroMQ
  EXPECT_TRUE(WaitFor([&] { return released.load() == kRecords; },
                      Transport::kDealerResetDeaths * 1000 + 3000))
      << released.load() << " of " << kRecords << " released";
  // ZeroMQ may release the frames from its I/O thread after the count.
  EXPECT_TRUE(WaitFor([&] { return a.t.stats().dealer_resets >= 1; }, 1000))
      << a.t.stats().dealer_resets;
}

/** Transports of nodes 1..n on `eps` whose peer events are recorded as
 * "i saw j up|down"; for tests in which no node may take another for dead. */
struct WatchedMesh {
  /** Stops the transports first: their callbacks write `events`. */
  ~WatchedMesh() {
    for (auto &x : t) x->Stop();
  }
  /** Starts every node with the record handler `on_record(i)` gives node i
   * and `on_fail`, then waits until each has heard from every other. */
  ::testing::AssertionResult Start(
      const std::vector<std::string> &eps, const TransportOptions &o,
      const std::function<Transport::RecordHandler(u32)> &on_record,
      const Transport::SendFailHandler &on_fail) {
    const u32 n = static_cast<u32>(eps.size());
    for (u32 i = 1; i <= n; ++i) {
      t.push_back(std::make_unique<Transport>());
      auto on_peer = [this, i](u32 node, bool alive) {
        std::lock_guard<std::mutex> l(mu);
        events.push_back(std::to_string(i) + " saw " + std::to_string(node) +
                         (alive ? " up" : " down"));
      };
      hshm::Status st =
          t.back()->Start(i, eps, o, on_record(i), on_peer, on_fail);
      if (!st.ok()) return ::testing::AssertionFailure() << st;
    }
    bool ready = WaitFor([&] {
      for (u32 i = 1; i <= n; ++i) {
        for (u32 j = 1; j <= n; ++j) {
          if (i != j && t[i - 1]->PeerIncarnation(j) == 0) return false;
        }
      }
      return true;
    });
    if (!ready) return ::testing::AssertionFailure() << "mesh did not connect";
    return ::testing::AssertionSuccess();
  }
  /** Stops every node, then fails the test once per event recorded. */
  void StopExpectingNoEvents() {
    for (auto &x : t) x->Stop();
    std::lock_guard<std::mutex> l(mu);
    for (const std::string &e : events) ADD_FAILURE() << e;
  }

  std::vector<std::unique_ptr<Transport>> t;
  std::mutex mu;
  std::vector<std::string> events;  // guarded by mu
};

// A node whose record handler is slow, and one that queues far more than its
// peer takes, keep sending heartbeats: nobody is taken for dead, and a peer
// that takes records slowly is not failed as stalled. Node 1 sends 1 KiB
// records to node 2, whose handler spends 50 us on each (2 s in all, past
// the high-water mark and the socket buffers); node 3 only watches. Before,
// node 2 handled up to 4096 messages between heartbeats (node 1 then took it
// for dead), and node 1 failed its held-back records dead_after_ms after the
// high-water mark was first reached, though node 2 kept reading.
TEST(LightbeamTest, BusyNodesKeepTheirHeartbeats) {
  std::vector<std::string> eps = {FreeEndpoint("127.0.16.1"),
                                  FreeEndpoint("127.0.16.2"),
                                  FreeEndpoint("127.0.16.3")};
  TransportOptions o;
  o.heartbeat_ms = 20;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // Slower threads, with another test beside: only checks that nobody is
  // taken for dead and nothing fails.
  o.dead_after_ms = 2000;
#else
  o.dead_after_ms = 400;
#endif
  o.max_batch_records = 8;
  o.sndhwm = 4;
  constexpr u64 kRecords = 40000;
  constexpr auto kCost = std::chrono::microseconds(50);
  std::atomic<u64> failed{0}, handled{0};
  WatchedMesh mesh;
  ASSERT_TRUE(mesh.Start(
      eps, o,
      [&handled, kCost](u32 i) -> Transport::RecordHandler {
        if (i != 2) return nullptr;
        return [&handled, kCost](u32, InRecord &) {
          auto until = Clock::now() + kCost;
          while (Clock::now() < until) {
          }
          handled.fetch_add(1);
        };
      },
      [&failed](u32, std::vector<u64> tags, hshm::lbm::SendFailure) {
        failed.fetch_add(tags.size());
      }));
  std::vector<OutRecord> recs(kRecords);
  for (u64 k = 0; k < kRecords; ++k) {
    recs[k].tag = k;
    recs[k].bytes.assign(1024, 'r');
  }
  ASSERT_TRUE(mesh.t[0]->SendMany(2, recs));
  EXPECT_TRUE(WaitFor([&] { return handled.load() == kRecords; }, 30000))
      << handled.load() << " of " << kRecords << " handled";
  EXPECT_EQ(failed.load(), 0u);
  mesh.StopExpectingNoEvents();
}

// Heartbeats do not wait behind a large message: ZeroMQ delivers a message
// only whole, so while one of 192 MiB crosses (about 0.8 s here, twice
// dead_after_ms), pings on the same connection would arrive after it, and
// the receiver took the sender for dead. They also go on a control
// connection.
TEST(LightbeamTest, ALargeMessageDoesNotHoldTheHeartbeatsBack) {
  std::vector<std::string> eps = {FreeEndpoint("127.0.16.4"),
                                  FreeEndpoint("127.0.16.5")};
  TransportOptions o;
  o.heartbeat_ms = 20;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  o.dead_after_ms = 1500;  // slower threads, and a smaller message (below)
#else
  o.dead_after_ms = 400;
#endif
  std::atomic<u64> got_bytes{0};
  WatchedMesh mesh;
  ASSERT_TRUE(mesh.Start(
      eps, o,
      [&got_bytes](u32) -> Transport::RecordHandler {
        return [&got_bytes](u32, InRecord &rec) {
          u64 n = rec.bytes.size();
          for (u32 k = 0; k < rec.num_frames; ++k) n += rec.frames[k].size();
          got_bytes.fetch_add(n);
        };
      },
      nullptr));
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // Shadow memory would multiply 192 MiB; a smaller message still checks
  // that nobody is taken for dead (if not that the pings overtook it).
  constexpr size_t kBytes = size_t{48} << 20;
#else
  constexpr size_t kBytes = size_t{192} << 20;
#endif
  OutRecord r;
  r.bytes = "large";
  zmq::message_t big(kBytes);
  memset(big.data(), 'b', kBytes);
  r.frames.push_back(std::move(big));
  const auto sent_at = Clock::now();
  ASSERT_TRUE(mesh.t[0]->Send(2, std::move(r)));
  EXPECT_TRUE(WaitFor([&] { return got_bytes.load() == kBytes + 5; }, 20000));
  // Only meaningful if the message took longer than dead_after_ms.
  printf("%zu MiB crossed in %lld ms\n", kBytes >> 20,
         static_cast<long long>(
             std::chrono::duration_cast<std::chrono::milliseconds>(
                 Clock::now() - sent_at)
                 .count()));
  mesh.StopExpectingNoEvents();
}

TEST(LightbeamTest, RestartReportedByIncarnation) {
  std::vector<std::string> eps = {FreeEndpoint("127.0.5.1"),
                                  FreeEndpoint("127.0.5.2")};
  TransportOptions o;
  o.heartbeat_ms = 50;
  o.dead_after_ms = 10000;  // the restart is seen long before a timeout
  auto nodes = StartMesh(eps, o);
  Node &a = *nodes[0];
  const u64 old_inc = a.t.PeerIncarnation(2);
  nodes[1].reset();  // Stop by the destructor
  Node b2(2);
  ASSERT_TRUE(b2.Start(2, eps, o).ok());
  const u64 new_inc = b2.t.PeerIncarnation(2);
  EXPECT_NE(new_inc, old_inc);
  ASSERT_TRUE(WaitFor([&] { return a.t.PeerIncarnation(2) == new_inc; }));
  auto ev = a.Events();
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0], std::make_pair(2u, false));
  EXPECT_EQ(ev[1], std::make_pair(2u, true));
  EXPECT_TRUE(a.t.PeerAlive(2));
}

// ---------------------------------------------------------------------------
// Start errors and send failures.
// ---------------------------------------------------------------------------

TEST(LightbeamTest, StartErrors) {
  std::vector<std::string> eps = {FreeEndpoint("127.0.6.1"),
                                  FreeEndpoint("127.0.6.2")};
  TransportOptions o = FastOptions();
  Transport a;
  ASSERT_TRUE(a.Start(1, eps, o, nullptr, nullptr, nullptr).ok());
  EXPECT_EQ(a.Start(1, eps, o, nullptr, nullptr, nullptr).code(),
            hshm::StatusCode::kInvalidArgument);  // twice

  Transport b;
  hshm::Status st = b.Start(1, eps, o, nullptr, nullptr, nullptr);
  EXPECT_EQ(st.code(), hshm::StatusCode::kAlreadyExists) << st;
  EXPECT_NE(st.message().find(eps[0]), std::string::npos) << st;
  EXPECT_FALSE(b.Send(2, MakeRecord(0)));  // a failed Start leaves it inert
  EXPECT_FALSE(b.PeerAlive(2));

  auto invalid = [&](u32 self, std::vector<std::string> e) {
    Transport t;
    hshm::Status s = t.Start(self, e, o, nullptr, nullptr, nullptr);
    EXPECT_EQ(s.code(), hshm::StatusCode::kInvalidArgument)
        << s << " for self " << self << " endpoint " << (e.empty() ? "" : e[0]);
  };
  invalid(1, {});
  invalid(0, eps);
  invalid(3, eps);
  for (const char *bad_ep :
       {"127.0.6.3", "127.0.6.3:", ":5000", "127.0.6.3:0", "127.0.6.3:65536",
        "127.0.6.3:12ab", "0.0.0.0:5000", "*:5000", "::1:5000", "a b:5000"}) {
    invalid(1, {bad_ep, eps[1]});
    invalid(2, {bad_ep, eps[1]});  // a bad peer endpoint too
  }
  // A failed Start leaves the Transport usable.
  Transport c;
  EXPECT_FALSE(c.Start(1, eps, o, nullptr, nullptr, nullptr).ok());
  std::vector<std::string> eps2 = {FreeEndpoint("127.0.6.4"), eps[1]};
  EXPECT_TRUE(c.Start(1, eps2, o, nullptr, nullptr, nullptr).ok());
  c.Stop();
  c.Stop();  // idempotent
  // A host name is resolved for the bind.
  std::string port = FreeEndpoint("127.0.0.1");
  port = port.substr(port.find(':'));
  Transport d;
  EXPECT_TRUE(
      d.Start(1, {"localhost" + port, eps[1]}, o, nullptr, nullptr, nullptr)
          .ok());
  EXPECT_FALSE(c.Send(2, MakeRecord(0)));
}

TEST(LightbeamTest, SendToAbsentPeerFails) {
  // Node 2 never listens.
  std::vector<std::string> eps = {FreeEndpoint("127.0.7.1"),
                                  FreeEndpoint("127.0.7.2")};
  TransportOptions o;
  o.heartbeat_ms = 50;
  o.dead_after_ms = 300;
  Node a(2);
  ASSERT_TRUE(a.Start(1, eps, o).ok());
  size_t accepted = 0;
  for (u64 s = 0; s < 200; ++s) accepted += a.t.Send(2, MakeRecord(s));
  EXPECT_EQ(accepted, 200u);  // optimistic: alive until dead_after_ms
  EXPECT_TRUE(WaitFor([&] { return a.NumFailed() == accepted; }));
  ASSERT_TRUE(WaitFor([&] { return !a.t.PeerAlive(2); }, 3000));
  EXPECT_FALSE(a.t.Send(2, MakeRecord(0)));
  // The peer is marked dead before on_peer runs: wait for the event too.
  ASSERT_TRUE(WaitFor([&] { return !a.Events().empty(); }, 3000));
  EXPECT_EQ(a.Events(), (std::vector<std::pair<u32, bool>>{{2, false}}));
  EXPECT_EQ(a.t.stats().send_failures, accepted);
  EXPECT_EQ(a.t.stats().records_sent, 0u);
  {
    std::lock_guard<std::mutex> l(a.mu);
    std::vector<u64> tags = a.failed_tags;
    std::sort(tags.begin(), tags.end());
    for (size_t i = 0; i < tags.size(); ++i) EXPECT_EQ(tags[i], i);
  }

  // Records still queued at Stop are reported too: none is lost.
  Node c(2);
  std::vector<std::string> eps2 = {FreeEndpoint("127.0.7.3"), eps[1]};
  ASSERT_TRUE(c.Start(1, eps2, o).ok());
  accepted = 0;
  for (u64 s = 0; s < 5000; ++s) accepted += c.t.Send(2, MakeRecord(s % 400));
  c.t.Stop();
  EXPECT_EQ(c.NumFailed(), accepted);
  EXPECT_EQ(c.t.stats().send_failures, accepted);
}

}  // namespace
