// kvs over several runtimes (127.0.0.x nodes of one cluster): keys written
// through one node are read back through another, a node killed during a
// workload fails only its own tasks, then rejoins, and a stalled node never
// runs a request on bytes written after it failed.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "chimaera/chimaera.h"
#include "kvs/kvs_client.h"
#include "runtime_fixture.h"

namespace {

using chi::kvs::KeyHash;

constexpr char kWorkers[] =
    "workers:\n  low_latency: 1\n  high_latency: 1\n  reinforcement: 0\n";

std::string Key(hshm::u64 i) { return "k" + std::to_string(i); }
std::string Value(hshm::u64 i) { return "value of " + std::to_string(i); }

/** Outcome of a batch of kvs operations. */
struct Outcome {
  hshm::u64 ok = 0;
  hshm::u64 wrong = 0;      ///< Succeeded with a wrong value.
  hshm::u64 timed_out = 0;  ///< Did not complete within 10 s.
  std::map<hshm::StatusCode, hshm::u64> failed;  ///< By status code.
};

/** Puts (or gets and checks) keys [begin, end) with `window` tasks in
 * flight. `on_key(i)` runs before key i is submitted. */
template <typename Hook>
Outcome RunOps(chi::kvs::Client &kvs, bool put, hshm::u64 begin, hshm::u64 end,
               hshm::u32 window, Hook on_key) {
  struct Slot {
    chi::FullPtr<chi::kvs::PutTask> p;
    chi::FullPtr<chi::kvs::GetTask> g;
    chi::FullPtr<char> buf;
    hshm::u64 i = 0;
  };
  Outcome out;
  std::vector<Slot> slots(window);
  auto reap = [&](Slot &s) {
    chi::Task *t = s.p.IsNull() ? static_cast<chi::Task *>(s.g.ptr_)
                                : static_cast<chi::Task *>(s.p.ptr_);
    if (!t) return;
    if (!t->WaitFor(10000000)) {
      // Leave the task (the runtime still owns it): counted, not freed.
      out.timed_out++;
      s = Slot();
      return;
    }
    hshm::Status st = t->GetStatus();
    if (!st.ok()) {
      out.failed[st.code()]++;
    } else if (!put) {
      chi::FullPtr<char> v(s.g->value_);
      std::string want = Value(s.i);
      if (v.IsNull() || s.g->value_size_ != want.size() ||
          std::string(v.ptr_, s.g->value_size_) != want) {
        out.wrong++;
      } else {
        out.ok++;
      }
    } else {
      out.ok++;
    }
    if (!put) (void)CHI_IPC->FreeBuffer(s.g->value_);
    if (put) CHI_IPC->DelTask(s.p);
    if (!put) CHI_IPC->DelTask(s.g);
    (void)CHI_IPC->FreeBuffer(s.buf.shm_);
    s = Slot();
  };
  for (hshm::u64 i = begin; i < end; ++i) {
    Slot &s = slots[i % window];
    reap(s);
    on_key(i);
    std::string k = Key(i), v = put ? Value(i) : "";
    s.buf = CHI_IPC->AllocateBuffer(k.size() + v.size());
    EXPECT_FALSE(s.buf.IsNull());
    if (s.buf.IsNull()) break;
    memcpy(s.buf.ptr_, k.data(), k.size());
    memcpy(s.buf.ptr_ + k.size(), v.data(), v.size());
    s.i = i;
    if (put) {
      s.p = kvs.AsyncPut(s.buf, k.size(), v.size());
    } else {
      s.g = kvs.AsyncGet(s.buf, k.size());
    }
  }
  for (Slot &s : slots) reap(s);
  return out;
}

Outcome RunOps(chi::kvs::Client &kvs, bool put, hshm::u64 begin, hshm::u64 end,
               hshm::u32 window = 256) {
  return RunOps(kvs, put, begin, end, window, [](hshm::u64) {});
}

/** The node holding key `i` in a pool of `containers` over `nodes`. */
hshm::u32 NodeOfKey(hshm::u64 i, hshm::u32 containers, hshm::u32 nodes) {
  std::string k = Key(i);
  return KeyHash(k.data(), k.size()) % containers % nodes + 1;
}

/** A key of node `node` (of a 2-node cluster) in a data buffer, followed by
 * `value_size` bytes of 'a', as AsyncPut takes them (null if no room). */
chi::FullPtr<char> PairOnNode(hshm::u32 node, hshm::u32 containers,
                              hshm::u64 value_size, std::string *key) {
  hshm::u64 i = 0;
  while (NodeOfKey(i, containers, 2) != node) ++i;
  *key = Key(i);
  chi::FullPtr<char> buf = CHI_IPC->AllocateBuffer(key->size() + value_size);
  if (buf.IsNull()) return buf;
  memcpy(buf.ptr_, key->data(), key->size());
  memset(buf.ptr_ + key->size(), 'a', value_size);
  return buf;
}

/** Sends 16 Puts of 1000-byte values through `kvs` (a pool of
 * `containers` over 2 nodes), and one of a `big_size` value after the
 * eighth, all to keys of node 2, from one thread back to back; waits for
 * each. Expects the big one alone to fail, with ResourceExhausted, and
 * returns its message ("" if none failed so). */
std::string PutOneTooLargeAmongSmallOnes(chi::kvs::Client &kvs,
                                         hshm::u32 containers,
                                         hshm::u64 big_size) {
  constexpr int kSmall = 16;
  std::string key;
  chi::FullPtr<char> big = PairOnNode(2, containers, big_size, &key);
  chi::FullPtr<char> small = PairOnNode(2, containers, 1000, &key);
  std::string message;
  if (big.IsNull() || small.IsNull()) {
    ADD_FAILURE() << "client_data has no room for the values";
  } else {
    std::vector<chi::FullPtr<chi::kvs::PutTask>> puts;
    for (int n = 0; n < kSmall; ++n) {
      if (n == kSmall / 2) {
        puts.push_back(kvs.AsyncPut(big, key.size(), big_size));
      }
      puts.push_back(kvs.AsyncPut(small, key.size(), 1000));
    }
    int ok = 0, exhausted = 0;
    for (auto &p : puts) {
      if (p.IsNull()) {
        ADD_FAILURE() << "main is full";
        continue;
      }
      if (!p->WaitFor(30000000)) {
        ADD_FAILURE() << "a Put did not complete within 30 s";
        return message;  // the rest, and the buffers, left to the runtime
      }
      hshm::Status st = p->GetStatus();
      if (st.ok()) {
        ++ok;
      } else if (st.code() == hshm::StatusCode::kResourceExhausted) {
        ++exhausted;
        message = st.message();
      } else {
        ADD_FAILURE() << st;
      }
      CHI_IPC->DelTask(p);
    }
    EXPECT_EQ(ok, kSmall);
    EXPECT_EQ(exhausted, 1);
    if (ok + exhausted != kSmall + 1) return message;  // some still run
  }
  if (!small.IsNull()) (void)CHI_IPC->FreeBuffer(small.shm_);
  if (!big.IsNull()) (void)CHI_IPC->FreeBuffer(big.shm_);
  return message;
}

/** Stops node `n` (SIGSTOP: alive, its connections up, reading nothing)
 * and waits until every thread of it is stopped. Its pid, or -1. */
int StopNode(chi_test::LocalCluster &cluster, int n) {
  const int pid = cluster.node(n).pid();
  if (pid <= 0 || kill(pid, SIGSTOP) != 0) return -1;
  return chi_test::WaitAllThreadsStopped(pid) ? pid : -1;
}

// 100k keys spread over 4 nodes: written through node 1, every value read
// back through node 3, and a sample through nodes 2 and 4.
TEST(KvsMultiNodeTest, HundredThousandKeysOverFourNodes) {
  constexpr hshm::u64 kKeys = 100000;
  chi_test::LocalCluster cluster(4, kWorkers);
  ASSERT_TRUE(cluster.Start().ok()) << cluster.Logs();
  ASSERT_TRUE(cluster.Connect(1).ok());
  chi::kvs::Client kvs;
  ASSERT_TRUE(kvs.Create("spread", 8).ok()) << cluster.Logs();
  Outcome w = RunOps(kvs, true, 0, kKeys);
  EXPECT_EQ(w.ok, kKeys) << cluster.Logs();
  EXPECT_EQ(w.timed_out, 0u);
  ASSERT_TRUE(cluster.Connect(3).ok());
  chi::kvs::Client reader;
  ASSERT_TRUE(reader.Create("spread").ok());
  EXPECT_EQ(reader.num_containers(), 8u);
  Outcome r = RunOps(reader, false, 0, kKeys);
  EXPECT_EQ(r.ok, kKeys);
  EXPECT_EQ(r.wrong, 0u);
  EXPECT_EQ(r.timed_out, 0u);
  EXPECT_TRUE(r.failed.empty());
  for (int n : {2, 4}) {
    ASSERT_TRUE(cluster.Connect(n).ok());
    chi::kvs::Client other;
    ASSERT_TRUE(other.Create("spread").ok());
    Outcome o = RunOps(other, false, 0, 2000);
    EXPECT_EQ(o.ok, 2000u) << "through node " << n;
    // A scan of the whole pool (one task per container) from this node.
    auto keys = other.Scan("k1", chi::kvs::Client::kScanAll,
                           chi::kvs::ScanMode::kPrefix);
    ASSERT_TRUE(keys.ok()) << keys.status();
    EXPECT_EQ(keys->size(), 11111u);  // k1, k10..k19, ..., k10000..k19999
  }
  EXPECT_EQ(cluster.StopAll().ToString(), "OK") << cluster.Logs();
}

// kill -9 of one node during a workload: its tasks fail with Unavailable
// within the liveness timeout, every other task succeeds, nothing hangs;
// the node restarts under its hostfile id and serves again.
TEST(KvsMultiNodeTest, KilledNodeFailsOnlyItsTasksThenRejoins) {
  constexpr hshm::u64 kKeys = 20000;
  constexpr hshm::u32 kContainers = 6;
  chi_test::LocalCluster cluster(3, kWorkers);
  ASSERT_TRUE(cluster.Start().ok()) << cluster.Logs();
  ASSERT_TRUE(cluster.Connect(1).ok());
  chi::kvs::Client kvs;
  ASSERT_TRUE(kvs.Create("victim", kContainers).ok());
  ASSERT_EQ(RunOps(kvs, true, 0, kKeys).ok, kKeys);
  // Read everything again, killing node 3 a quarter of the way through.
  hshm::u64 t0 = hshm::NowNs();
  Outcome r = RunOps(kvs, false, 0, kKeys, 64, [&](hshm::u64 i) {
    if (i == kKeys / 4) cluster.node(3).Kill(SIGKILL);
  });
  double secs = (hshm::NowNs() - t0) / 1e9;
  hshm::u64 on3 = 0;
  for (hshm::u64 i = 0; i < kKeys; ++i)
    on3 += NodeOfKey(i, kContainers, 3) == 3;
  EXPECT_EQ(r.timed_out, 0u);
  EXPECT_EQ(r.wrong, 0u);
  // Keys of nodes 1 and 2 all read back; node 3's failed after the kill.
  EXPECT_GE(r.ok, kKeys - on3);
  hshm::u64 failed = 0;
  for (auto &[code, n] : r.failed) {
    EXPECT_EQ(code, hshm::StatusCode::kUnavailable) << n << " tasks";
    failed += n;
  }
  EXPECT_EQ(r.ok + failed, kKeys);
  EXPECT_GT(failed, on3 / 2);
  EXPECT_LT(secs, 20.0);
  // The survivors still serve reads of their keys.
  Outcome again = RunOps(kvs, false, 0, 3000);
  hshm::u64 want = 0;
  for (hshm::u64 i = 0; i < 3000; ++i)
    want += NodeOfKey(i, kContainers, 3) != 3;
  EXPECT_EQ(again.ok, want);
  // Node 3 comes back (empty: its data died with it) and takes writes.
  ASSERT_TRUE(cluster.Restart(3).ok()) << cluster.Logs();
  bool served = false;
  for (int i = 0; i < 100 && !served; ++i) {
    Outcome w = RunOps(kvs, true, 0, 300, 16);
    served = w.ok == 300;
    if (!served) usleep(50000);
  }
  EXPECT_TRUE(served) << cluster.Logs();
  Outcome back = RunOps(kvs, false, 0, 300, 16);
  EXPECT_EQ(back.ok, 300u);
  EXPECT_EQ(cluster.StopAll().ToString(), "OK") << cluster.Logs();
}

// A request forwarded to a stalled node (stopped, its connection still up)
// fails when its reply is late (network.request_timeout_ms, a third of the
// dead-node limit here), and the client may then reuse its buffer. The
// request still reaches the node once it resumes (ZeroMQ held most of it:
// the value is larger than the loopback socket buffers), as long as that is
// before the connection is dropped (4 dead-node limits after it is declared
// dead): the node must then see the bytes the client sent, never the ones
// it wrote after the failure.
TEST(KvsMultiNodeTest, AStalledNodeNeverSeesBytesWrittenAfterTheFailure) {
  constexpr hshm::u32 kContainers = 2;
  constexpr hshm::u64 kValue = 12 << 20;
  // A third of the dead-node limit: 500 ms, more under sanitizers.
  chi_test::LocalCluster cluster(
      2, kWorkers,
      "  request_timeout_ms: " + std::to_string(chi_test::DeadAfterMs() / 3) +
          "\n");
  ASSERT_TRUE(cluster.Start().ok()) << cluster.Logs();
  ASSERT_TRUE(cluster.Connect(1).ok());
  chi::kvs::Client kvs;
  ASSERT_TRUE(kvs.Create("stall", kContainers).ok());
  std::string key;
  chi::FullPtr<char> buf = PairOnNode(2, kContainers, kValue, &key);
  ASSERT_FALSE(buf.IsNull());
  const int pid = StopNode(cluster, 2);
  ASSERT_GT(pid, 0);
  auto put = kvs.AsyncPut(buf, key.size(), kValue);
  ASSERT_FALSE(put.IsNull());
  const bool done = put->WaitFor(30000000);
  EXPECT_TRUE(done);
  if (done) {
    // Timeout; Unavailable if a loaded machine let the death come first.
    const hshm::StatusCode code = put->GetStatus().code();
    EXPECT_TRUE(code == hshm::StatusCode::kTimeout ||
                code == hshm::StatusCode::kUnavailable)
        << put->GetStatus();
    memset(buf.ptr_ + key.size(), 'b', kValue);  // the client reuses it
  }
  ASSERT_EQ(kill(pid, SIGCONT), 0);
  // Once node 2 serves again, the key holds the value sent, or nothing
  // (the request was dropped): never a byte written after the failure.
  hshm::StatusOr<std::string> got = hshm::Status::Unavailable("not yet");
  for (int n = 0; n < 200 && !got.ok() &&
                  (got.status().code() == hshm::StatusCode::kUnavailable ||
                   got.status().code() == hshm::StatusCode::kTimeout);
       ++n) {
    usleep(50000);
    got = kvs.Get(key);
  }
  if (got.ok()) {
    EXPECT_EQ(got->size(), kValue);
    EXPECT_EQ(std::count(got->begin(), got->end(), 'b'), 0);
    EXPECT_EQ(std::count(got->begin(), got->end(), 'a'),
              static_cast<std::ptrdiff_t>(got->size()));
  } else {
    EXPECT_EQ(got.status().code(), hshm::StatusCode::kNotFound) << got.status();
  }
  if (done) {
    CHI_IPC->DelTask(put);
    (void)CHI_IPC->FreeBuffer(buf.shm_);
  }
  EXPECT_EQ(cluster.StopAll().ToString(), "OK") << cluster.Logs();
}

// What a node holds for a stalled node is bounded. The bytes of requests
// that ZeroMQ has not sent are charged to the node they go to
// (network.max_peer_bytes, here 8 MiB): past that a request fails at once
// with ResourceExhausted instead of piling up in memory until the node is
// declared dead. Once the node resumes, the bytes drain and it takes Puts
// again.
TEST(KvsMultiNodeTest, AStalledNodeHoldsAtMostMaxPeerBytesHere) {
  constexpr hshm::u32 kContainers = 2;
  constexpr hshm::u64 kValue = 4 << 20;
  constexpr int kPuts = 12;  // 48 MiB, more than the socket buffers hold
  chi_test::LocalCluster cluster(2, kWorkers, "  max_peer_bytes: 8m\n");
  ASSERT_TRUE(cluster.Start().ok()) << cluster.Logs();
  ASSERT_TRUE(cluster.Connect(1).ok());
  chi::kvs::Client kvs;
  ASSERT_TRUE(kvs.Create("bound", kContainers).ok());
  std::string key;
  chi::FullPtr<char> buf = PairOnNode(2, kContainers, kValue, &key);
  ASSERT_FALSE(buf.IsNull());
  const int pid = StopNode(cluster, 2);
  ASSERT_GT(pid, 0);
  std::vector<chi::FullPtr<chi::kvs::PutTask>> puts;
  for (int n = 0; n < kPuts; ++n) {
    puts.push_back(kvs.AsyncPut(buf, key.size(), kValue));
    ASSERT_FALSE(puts.back().IsNull());
  }
  int exhausted = 0, unavailable = 0, other = 0;
  std::string message;
  for (auto &p : puts) {
    if (!p->WaitFor(30000000)) {
      ADD_FAILURE() << "a Put did not complete";
      continue;
    }
    hshm::Status st = p->GetStatus();
    if (st.code() == hshm::StatusCode::kResourceExhausted) {
      ++exhausted;
      message = st.message();
    } else if (st.code() == hshm::StatusCode::kUnavailable) {
      ++unavailable;
    } else {
      ++other;
      ADD_FAILURE() << st;
    }
    CHI_IPC->DelTask(p);
  }
  ASSERT_EQ(kill(pid, SIGCONT), 0);
  EXPECT_GE(exhausted, 1) << unavailable << " Unavailable";
  EXPECT_EQ(exhausted + unavailable, kPuts);
  EXPECT_NE(message.find("network.max_peer_bytes"), std::string::npos)
      << message;
  // The node resumes, the held bytes drain, and it takes Puts again.
  const std::string other_key = key + "-after";
  hshm::Status put = hshm::Status::Unavailable("not yet");
  for (int n = 0; n < 200 && !put.ok(); ++n) {
    usleep(50000);
    put = kvs.Put(other_key, "back");
  }
  EXPECT_TRUE(put.ok()) << put;
  auto got = kvs.Get(other_key);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "back");
  (void)CHI_IPC->FreeBuffer(buf.shm_);
  EXPECT_EQ(cluster.StopAll().ToString(), "OK") << cluster.Logs();
}

}  // namespace

namespace {

// One message carries one task's request or reply with its data
// (network.max_message_bytes, here 8 MiB, the least allowed). A larger
// request fails at once with ResourceExhausted, and alone: the small Puts
// sent right beside it succeed. Before, the worker's batch to node 2 that
// held it was refused whole, and every task in it failed with "node 2 is
// down". A reply too large (a Get of a 12 MiB value stored through node
// 2's own client) comes back at once as ResourceExhausted; before, the
// requester waited for its deadline.
TEST(KvsMultiNodeTest, ATaskTooLargeForOneMessageFailsAloneAndAtOnce) {
  constexpr hshm::u32 kContainers = 2;
  constexpr hshm::u64 kBig = 12 << 20;
  chi_test::LocalCluster cluster(2, kWorkers, "  max_message_bytes: 8m\n");
  ASSERT_TRUE(cluster.Start().ok()) << cluster.Logs();
  ASSERT_TRUE(cluster.Connect(1).ok());
  chi::kvs::Client kvs;
  ASSERT_TRUE(kvs.Create("message_bound", kContainers).ok());
  const hshm::u64 start = hshm::NowNs();
  const std::string message =
      PutOneTooLargeAmongSmallOnes(kvs, kContainers, kBig);
  EXPECT_NE(message.find("network.max_message_bytes"), std::string::npos)
      << message;
  // The same 12 MiB value, stored through node 2's own client (no network).
  ASSERT_TRUE(cluster.Connect(2).ok());
  chi::kvs::Client local;
  ASSERT_TRUE(local.Create("message_bound").ok());
  std::string key;
  chi::FullPtr<char> big = PairOnNode(2, kContainers, kBig, &key);
  ASSERT_FALSE(big.IsNull());
  auto put = local.AsyncPut(big, key.size(), kBig);
  ASSERT_FALSE(put.IsNull());
  ASSERT_TRUE(put->WaitFor(30000000));
  EXPECT_TRUE(put->GetStatus().ok()) << put->GetStatus();
  CHI_IPC->DelTask(put);
  (void)CHI_IPC->FreeBuffer(big.shm_);
  ASSERT_TRUE(cluster.Connect(1).ok());
  chi::kvs::Client remote;
  ASSERT_TRUE(remote.Create("message_bound").ok());
  auto got = remote.Get(key);
  EXPECT_EQ(got.status().code(), hshm::StatusCode::kResourceExhausted)
      << got.status();
  EXPECT_NE(got.status().message().find("reply"), std::string::npos)
      << got.status();
  // Well before any deadline: the client waits 60 s, a request 600 s.
  EXPECT_LT(hshm::NowNs() - start, 20ull * 1000 * 1000 * 1000);
  EXPECT_EQ(cluster.StopAll().ToString(), "OK") << cluster.Logs();
}

// Nodes may differ in network.max_message_bytes (a rolling change of the
// config): each says what it accepts in every message, and no node sends
// another more. Here node 2 accepts 8 MiB and node 1 1 GiB. A 12 MiB Put
// from node 1 to node 2 fails at once with ResourceExhausted naming node
// 2's limit, and the small Puts beside it succeed; a Get through node 2 of
// a 12 MiB value held on node 1 fails at once the same way (node 1 answers
// an error instead of the reply). Before, node 1 sent both, node 2 dropped
// them (and its connection from node 1 with them), and each task waited
// out its deadline.
TEST(KvsMultiNodeTest, NoNodeIsSentMoreThanItsMaxMessageBytes) {
  constexpr hshm::u32 kContainers = 2;
  constexpr hshm::u64 kBig = 12 << 20;
  chi_test::LocalCluster cluster(2, kWorkers);
  cluster.SetNodeNetworkYaml(2, "  max_message_bytes: 8m\n");
  ASSERT_TRUE(cluster.Start().ok()) << cluster.Logs();
  ASSERT_TRUE(cluster.Connect(1).ok());
  chi::kvs::Client kvs;
  ASSERT_TRUE(kvs.Create("peer_bound", kContainers).ok());
  const hshm::u64 start = hshm::NowNs();
  const std::string message =
      PutOneTooLargeAmongSmallOnes(kvs, kContainers, kBig);
  EXPECT_NE(message.find("network.max_message_bytes 8388608 of node 2"),
            std::string::npos)
      << message;
  // A 12 MiB value on node 1, stored through node 1's own client.
  std::string key1;
  chi::FullPtr<char> big = PairOnNode(1, kContainers, kBig, &key1);
  ASSERT_FALSE(big.IsNull());
  auto put = kvs.AsyncPut(big, key1.size(), kBig);
  ASSERT_FALSE(put.IsNull());
  ASSERT_TRUE(put->WaitFor(30000000));
  EXPECT_TRUE(put->GetStatus().ok()) << put->GetStatus();
  CHI_IPC->DelTask(put);
  (void)CHI_IPC->FreeBuffer(big.shm_);
  ASSERT_TRUE(cluster.Connect(2).ok());
  chi::kvs::Client remote;
  ASSERT_TRUE(remote.Create("peer_bound").ok());
  auto got = remote.Get(key1);
  EXPECT_EQ(got.status().code(), hshm::StatusCode::kResourceExhausted)
      << got.status();
  EXPECT_NE(got.status().message().find(
                "more than one message carries "
                "(network.max_message_bytes 8388608 of node 2"),
            std::string::npos)
      << got.status();
  // Both ways still work: a small value replaces it through node 2, and
  // comes back.
  EXPECT_TRUE(remote.Put(key1, "small").ok());
  auto small_got = remote.Get(key1);
  ASSERT_TRUE(small_got.ok()) << small_got.status();
  EXPECT_EQ(*small_got, "small");
  // Well before any deadline: the client waits 60 s, a request 600 s.
  EXPECT_LT(hshm::NowNs() - start, 20ull * 1000 * 1000 * 1000);
  EXPECT_EQ(cluster.StopAll().ToString(), "OK") << cluster.Logs();
}

}  // namespace
