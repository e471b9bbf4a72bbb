// End-to-end tests of the kvs module against a real runtime.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>

#include "chimod_test_fixture.h"
#include "kvs/kvs_client.h"

namespace {

using chi::kvs::ScanMode;
using chi_test::ChiModTest;
using chi_test::RandomBytes;
using hshm::StatusCode;

using KvsTest = ChiModTest;

/** Key number `i` ("key00042"), so sorted order is numeric order. */
std::string Key(int i) {
  char buf[16];
  snprintf(buf, sizeof(buf), "key%05d", i);
  return buf;
}

TEST_F(KvsTest, PutGetOverwriteDeleteAndMissingKeys) {
  chi::kvs::Client kv;
  ASSERT_TRUE(kv.Create("kvs_basic", 2).ok());
  EXPECT_EQ(kv.num_containers(), 2u);
  bool replaced = true;
  ASSERT_TRUE(kv.Put("alpha", "one", &replaced).ok());
  EXPECT_FALSE(replaced);
  auto v = kv.Get("alpha");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, "one");
  // Overwrite with a longer value.
  ASSERT_TRUE(kv.Put("alpha", "a much longer second value", &replaced).ok());
  EXPECT_TRUE(replaced);
  v = kv.Get("alpha");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, "a much longer second value");
  // Binary keys and values with NUL bytes.
  std::string bkey("b\0k\xff", 4), bval("\0\1\2\0", 4);
  ASSERT_TRUE(kv.Put(bkey, bval).ok());
  v = kv.Get(bkey);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, bval);
  EXPECT_EQ(kv.Get(std::string("b", 1)).status().code(), StatusCode::kNotFound);
  // Delete, then the key is gone.
  ASSERT_TRUE(kv.Delete("alpha").ok());
  EXPECT_EQ(kv.Get("alpha").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(kv.Delete("alpha").code(), StatusCode::kNotFound);
  EXPECT_EQ(kv.Get("never-written").status().code(), StatusCode::kNotFound);
  // Bad keys.
  EXPECT_EQ(kv.Put("", "v").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(kv.Get("").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(kv.Put(std::string(chi::kvs::kMaxKeySize + 1, 'k'), "v").code(),
            StatusCode::kInvalidArgument);
  // The runtime still serves.
  ASSERT_TRUE(kv.Put("alpha", "back").ok());
  EXPECT_EQ(*kv.Get("alpha"), "back");
}

// A task abandoned after it completed is freed with the output buffers it
// got (a Get's value in client_data): nobody else would free them.
TEST_F(KvsTest, AnAbandonedCompletedGetFreesItsValue) {
  chi::kvs::Client kv;
  ASSERT_TRUE(kv.Create("kvs_abandon", 1).ok());
  ASSERT_TRUE(kv.Put("k", std::string(4096, 'v')).ok());
  auto key = CHI_IPC->AllocateClientBuffer(1);
  ASSERT_FALSE(key.IsNull());
  key.ptr_[0] = 'k';
  auto *cdata = CHI_IPC->cdata_alloc();
  cdata->FlushThreadCache();
  const chi::u64 before = cdata->LiveBytes(getpid());
  auto t = kv.AsyncGet(key, 1);
  ASSERT_FALSE(t.IsNull());
  while (!t->IsComplete()) std::this_thread::yield();
  ASSERT_TRUE(t->GetStatus().ok());
  ASSERT_FALSE(t->value_.IsNull());
  CHI_IPC->AbandonTask(t);  // completed first: freed here, with value_
  cdata->FlushThreadCache();
  EXPECT_EQ(cdata->LiveBytes(getpid()), before);
  (void)CHI_IPC->FreeBuffer(key.shm_);
}

TEST_F(KvsTest, EmptyAndLargeValues) {
  chi::kvs::Client kv;
  ASSERT_TRUE(kv.Create("kvs_sizes", 3).ok());
  ASSERT_TRUE(kv.Put("empty", "").ok());
  auto v = kv.Get("empty");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_TRUE(v->empty());
  std::string big = RandomBytes(100 * 1024, 5);
  ASSERT_TRUE(kv.Put("big", big).ok());
  v = kv.Get("big");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->size(), big.size());
  EXPECT_TRUE(*v == big);
  // Overwrite big with empty and back, then delete both.
  ASSERT_TRUE(kv.Put("big", "").ok());
  EXPECT_TRUE(kv.Get("big")->empty());
  ASSERT_TRUE(kv.Put("big", big).ok());
  EXPECT_TRUE(*kv.Get("big") == big);
  EXPECT_TRUE(kv.Delete("big").ok());
  EXPECT_TRUE(kv.Delete("empty").ok());
  // Freed values are reused: many overwrites of 100 KB do not exhaust the
  // 16 MB runtime_data segment.
  for (int i = 0; i < 400; ++i) ASSERT_TRUE(kv.Put("again", big).ok()) << i;
}

// Keys live in the runtime's own heap: the keys of all of a node's kvs
// containers may take at most as many bytes as the runtime_data segment
// (16 MB here), so 64 KB keys of empty values run out after about 255.
// Existing keys can still be overwritten, and a deleted key makes room for
// another. Another pool shares the budget (before, each container had its
// own, so a client could multiply it by creating containers).
TEST_F(KvsTest, KeysOfANodeHaveABudget) {
  chi::kvs::Client kv;
  ASSERT_TRUE(kv.Create("kvs_key_budget", 1).ok());
  auto big_key = [](int i) {
    std::string k(chi::kvs::kMaxKeySize, 'k');
    std::memcpy(&k[0], &i, sizeof(i));
    return k;
  };
  int stored = 0;
  hshm::Status st;
  while (stored < 1000 && (st = kv.Put(big_key(stored), "")).ok()) ++stored;
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st;
  EXPECT_GE(stored, 200);
  EXPECT_LE(stored, 256);
  EXPECT_TRUE(kv.Put(big_key(0), "overwritten").ok());
  EXPECT_EQ(*kv.Get(big_key(0)), "overwritten");
  ASSERT_TRUE(kv.Delete(big_key(1)).ok());
  EXPECT_TRUE(kv.Put(big_key(stored), "").ok());
  EXPECT_EQ(kv.Put(big_key(stored + 1), "").code(),
            StatusCode::kResourceExhausted);
  chi::kvs::Client other;
  ASSERT_TRUE(other.Create("kvs_key_budget_2", 4).ok());
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(other.Put(big_key(i), "").code(), StatusCode::kResourceExhausted)
        << i;
  }
  EXPECT_TRUE(other.Put("small", "").ok());  // 101 bytes fit
  ASSERT_TRUE(kv.Delete(big_key(2)).ok());
  EXPECT_TRUE(other.Put(big_key(0), "").ok());
  // Destroying a pool gives its keys' share back.
  ASSERT_TRUE(kv.Destroy().ok());
  for (int i = 1; i < 100; ++i) {
    ASSERT_TRUE(other.Put(big_key(i), "").ok()) << i;
  }
}

TEST_F(KvsTest, ThousandKeysOverFourContainersAndSortedScan) {
  chi::kvs::Client kv;
  ASSERT_TRUE(kv.Create("kvs_spread", 4).ok());
  constexpr int kKeys = 1000;
  // Submit in windows of 100 tasks in flight.
  std::vector<chi::FullPtr<char>> bufs;
  std::vector<chi::FullPtr<chi::kvs::PutTask>> puts;
  for (int i = 0; i < kKeys; ++i) {
    std::string k = Key(i), val = "value-" + std::to_string(i * 7);
    chi::FullPtr<char> buf = CHI_IPC->AllocateBuffer(k.size() + val.size());
    ASSERT_FALSE(buf.IsNull());
    std::memcpy(buf.ptr_, k.data(), k.size());
    std::memcpy(buf.ptr_ + k.size(), val.data(), val.size());
    bufs.push_back(buf);
    puts.push_back(kv.AsyncPut(buf, k.size(), val.size()));
    ASSERT_FALSE(puts.back().IsNull());
    if (puts.size() == 100 || i == kKeys - 1) {
      for (size_t j = 0; j < puts.size(); ++j) {
        puts[j]->Wait();
        ASSERT_TRUE(puts[j]->GetStatus().ok()) << puts[j]->GetStatus();
        CHI_IPC->DelTask(puts[j]);
        EXPECT_TRUE(CHI_IPC->FreeBuffer(bufs[j].shm_).ok());
      }
      puts.clear();
      bufs.clear();
    }
  }
  // Every key is retrievable.
  for (int i = 0; i < kKeys; ++i) {
    auto v = kv.Get(Key(i));
    ASSERT_TRUE(v.ok()) << Key(i) << ": " << v.status();
    EXPECT_EQ(*v, "value-" + std::to_string(i * 7));
  }
  // The keys really are spread: every container holds some.
  for (chi::u32 c = 0; c < 4; ++c) {
    auto t = kv.AsyncScanContainer(c, chi::FullPtr<char>(), 0,
                                   ScanMode::kFromKey, kKeys);
    ASSERT_FALSE(t.IsNull());
    t->Wait();
    ASSERT_TRUE(t->GetStatus().ok());
    EXPECT_GT(t->count_, kKeys / 8) << "container " << c;
    EXPECT_LT(t->count_, kKeys / 2) << "container " << c;
    EXPECT_EQ(t->num_containers_, 4u);
    (void)CHI_IPC->FreeBuffer(t->keys_);
    CHI_IPC->DelTask(t);
  }
  // A full scan returns all keys, sorted.
  auto all = kv.Scan("");
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), static_cast<size_t>(kKeys));
  for (int i = 0; i < kKeys; ++i) EXPECT_EQ((*all)[i], Key(i));
  // A bounded scan from a start key.
  auto part = kv.Scan(Key(500), 10);
  ASSERT_TRUE(part.ok());
  ASSERT_EQ(part->size(), 10u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ((*part)[i], Key(500 + i));
  // A prefix scan: key00990..key00999.
  auto pre = kv.Scan("key0099", chi::kvs::Client::kScanAll, ScanMode::kPrefix);
  ASSERT_TRUE(pre.ok());
  ASSERT_EQ(pre->size(), 10u);
  EXPECT_EQ(pre->front(), Key(990));
  EXPECT_EQ(pre->back(), Key(999));
  EXPECT_TRUE(std::is_sorted(pre->begin(), pre->end()));
  auto none = kv.Scan("zzz");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  // Deleted keys leave the scan.
  for (int i = 0; i < kKeys; i += 2) ASSERT_TRUE(kv.Delete(Key(i)).ok());
  all = kv.Scan("");
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), static_cast<size_t>(kKeys / 2));
  for (int i = 0; i < kKeys / 2; ++i) EXPECT_EQ((*all)[i], Key(2 * i + 1));
}

TEST_F(KvsTest, PoolCreatedTwiceSharesDataAndId) {
  chi::kvs::Client a, b;
  ASSERT_TRUE(a.Create("kvs_shared", 4).ok());
  ASSERT_TRUE(a.Put("k", "v").ok());
  // A second Create with another count gets the existing pool and learns
  // its real container count.
  ASSERT_TRUE(b.Create("kvs_shared", 2).ok());
  EXPECT_EQ(a.pool_id(), b.pool_id());
  EXPECT_EQ(b.num_containers(), 4u);
  auto v = b.Get("k");
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, "v");
  auto keys = b.Scan("");
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(*keys, std::vector<std::string>{"k"});
}

TEST_F(KvsTest, UnknownModuleAndOverlongNameAreClearErrors) {
  chi::admin::Client admin;
  auto id = admin.GetOrCreatePool("kvs_typo", "kvs_does_not_exist", 4);
  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.status().code(), StatusCode::kNotFound) << id.status();
  EXPECT_TRUE(admin.Noop().ok());
  chi::kvs::Client kv;
  EXPECT_EQ(kv.Create(std::string(100, 'n')).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(kv.Scan("").status().code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(kv.Create("kvs_ok").ok());
  ASSERT_TRUE(kv.Put("x", "y").ok());
  EXPECT_EQ(*kv.Get("x"), "y");
}

// Values leave runtime_data a reserve (a sixteenth, at least 1 MiB) for the
// runtime's own replies: once a pool's values filled the rest, Puts are
// refused with ResourceExhausted and chimaera_stat, pool lists and other
// pools' outputs still work. Before, values could take all of it, and every
// reply the runtime makes there failed with OutOfMemory.
TEST_F(KvsTest, ValuesLeaveTheRuntimeRoomForItsReplies) {
  chi::kvs::Client kv;
  ASSERT_TRUE(kv.Create("kvs_fill", 1).ok());
  const std::string value = RandomBytes(64 * 1024, 9);
  hshm::Status st;
  int stored = 0;
  while (stored < 1000 && (st = kv.Put(Key(stored), value)).ok()) ++stored;
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st;
  EXPECT_GE(stored, 150);  // 16 MB less the reserve, in 64 KiB values
  // Smaller values fill what is left above the reserve, then stop too.
  const std::string small(512, 's');
  int small_stored = 0;
  while (small_stored < 100000 &&
         (st = kv.Put("s" + std::to_string(small_stored), small)).ok()) {
    ++small_stored;
  }
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st;
  chi::admin::Client admin;
  for (int i = 0; i < 20; ++i) {
    auto stat = admin.Stat();
    ASSERT_TRUE(stat.ok()) << stat.status();
    EXPECT_NE(stat->find("kvs_fill"), std::string::npos);
    auto pools = admin.ListPools();
    ASSERT_TRUE(pools.ok()) << pools.status();
  }
  EXPECT_EQ(*kv.Get(Key(0)), value);
}

TEST_F(KvsTest, DestroyedPoolFreesItsValues) {
  chi::admin::Client admin;
  std::string mb = RandomBytes(size_t{1} << 20, 3);
  // Each cycle stores 4 MB in the 16 MB runtime_data segment and destroys
  // the pool; leaked values would exhaust the segment within 5 cycles.
  chi::PoolId last;
  for (int cycle = 0; cycle < 12; ++cycle) {
    chi::kvs::Client kv;
    ASSERT_TRUE(kv.Create("kvs_cycle", 2).ok()) << cycle;
    EXPECT_NE(kv.pool_id(), last) << "a destroyed pool's id came back";
    last = kv.pool_id();
    for (int i = 0; i < 4; ++i) {
      ASSERT_TRUE(kv.Put(Key(i), mb).ok()) << cycle << "/" << i;
    }
    EXPECT_TRUE(*kv.Get(Key(3)) == mb);
    ASSERT_TRUE(admin.DestroyPool(kv.pool_id()).ok()) << cycle;
    EXPECT_EQ(kv.Get(Key(3)).status().code(), StatusCode::kNotFound);
  }
}

// Several client threads against two low-latency workers, so the methods of
// one container run concurrently.
TEST(KvsConcurrencyTest, ThreadsPutGetDeleteConcurrently) {
  chi_test::RuntimeProcess rt("workers:\n  low_latency: 2\n");
  ASSERT_TRUE(rt.Start().ok()) << rt.Log();
  ASSERT_TRUE(CHIMAERA_CLIENT_INIT().ok());
  chi::kvs::Client kv;
  hshm::Status cs = kv.Create("kvs_threads", 2);
  ASSERT_TRUE(cs.ok()) << cs;
  constexpr int kThreads = 4, kOps = 500;
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kOps; ++i) {
        // A private key (checked exactly) and a shared one (overwritten by
        // every thread).
        std::string k = "t" + std::to_string(t) + "-" + std::to_string(i);
        std::string v = RandomBytes(16 + i % 300, t * kOps + i);
        if (!kv.Put(k, v).ok()) errors++;
        // One byte repeated, by writer and size: a value mixed from two
        // writes shows.
        std::string sv(16 + i % 300, static_cast<char>('a' + (t + i) % 26));
        if (!kv.Put("shared", sv).ok()) errors++;
        auto got = kv.Get(k);
        if (!got.ok() || *got != v) errors++;
        // Whole values only (a Get looks again when the value changed size
        // while it allocated): every size written is 16..315, one byte.
        auto shared = kv.Get("shared");
        if (!shared.ok() || shared->size() < 16 || shared->size() > 315 ||
            shared->find_first_not_of((*shared)[0]) != std::string::npos) {
          errors++;
        }
        if (i % 2 == 0 && !kv.Delete(k).ok()) errors++;
      }
    });
  }
  for (auto &th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  auto keys = kv.Scan("");
  ASSERT_TRUE(keys.ok()) << keys.status();
  // kOps / 2 private keys per thread survive, plus "shared".
  EXPECT_EQ(keys->size(), static_cast<size_t>(kThreads * kOps / 2 + 1));
  CHIMAERA->ClientFinalize();
  hshm::Status s = rt.Stop();
  EXPECT_TRUE(s.ok()) << s << "\n" << rt.Log();
}

}  // namespace
