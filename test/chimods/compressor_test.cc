// End-to-end tests of the compressor module against a real runtime.
#include <atomic>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <thread>

#include "chimod_test_fixture.h"
#include "compressor/compressor_client.h"

namespace {

using chi::compressor::Algorithm;
using chi_test::ChiModTest;
using chi_test::CompressibleBytes;
using chi_test::RandomBytes;
using hshm::StatusCode;

using CompressorTest = ChiModTest;

/** Compresses and decompresses `data` with `algo`; checks the round trip.
 * Returns the compressed size (0 on failure). */
size_t RoundTrip(chi::compressor::Client &client, Algorithm algo,
                 const std::string &data, int level = 0) {
  auto packed = client.Compress(algo, data, level);
  EXPECT_TRUE(packed.ok()) << packed.status();
  if (!packed.ok()) return 0;
  auto unpacked = client.Decompress(algo, *packed, data.size());
  EXPECT_TRUE(unpacked.ok()) << unpacked.status();
  if (!unpacked.ok()) return 0;
  EXPECT_EQ(unpacked->size(), data.size());
  EXPECT_TRUE(*unpacked == data) << "round trip changed the data";
  return packed->size();
}

TEST_F(CompressorTest, ZstdAndLz4RoundTripCompressibleAndRandomData) {
  chi::compressor::Client client;
  ASSERT_TRUE(client.Create("comp_rt", 2).ok());
  for (Algorithm algo : {Algorithm::kZstd, Algorithm::kLz4}) {
    SCOPED_TRACE(algo == Algorithm::kZstd ? "zstd" : "lz4");
    // Compressible data shrinks a lot; random data round-trips unchanged.
    std::string text = CompressibleBytes(1 << 20);
    size_t packed = RoundTrip(client, algo, text);
    EXPECT_GT(packed, 0u);
    EXPECT_LT(packed, text.size() / 10);
    std::string noise = RandomBytes(1 << 20, 11);
    packed = RoundTrip(client, algo, noise);
    EXPECT_GT(packed, noise.size() / 2);
    // Small and empty inputs.
    RoundTrip(client, algo, "a");
    RoundTrip(client, algo, RandomBytes(1000, 12));
    RoundTrip(client, algo, "");
  }
  // Output buffers are freed: 40 round trips of 1 MB (each allocating a
  // ~1 MB bound and a 1 MB output) exceed the 32 MB client_data if they
  // leaked.
  std::string noise = RandomBytes(1 << 20, 13);
  for (int i = 0; i < 40; ++i) {
    ASSERT_GT(
        RoundTrip(client, i % 2 ? Algorithm::kLz4 : Algorithm::kZstd, noise),
        0u)
        << i;
  }
  // Non-default levels.
  RoundTrip(client, Algorithm::kZstd, CompressibleBytes(100000), 19);
  RoundTrip(client, Algorithm::kZstd, CompressibleBytes(100000), -5);
  RoundTrip(client, Algorithm::kLz4, CompressibleBytes(100000), 8);
  // The "ultra" levels take small inputs only (their tables for large ones
  // take hundreds of MB per context).
  RoundTrip(client, Algorithm::kZstd, CompressibleBytes(100000), 22);
  auto ultra = client.Compress(Algorithm::kZstd, CompressibleBytes(300000), 20);
  EXPECT_EQ(ultra.status().code(), StatusCode::kInvalidArgument)
      << ultra.status();
  RoundTrip(client, Algorithm::kZstd, CompressibleBytes(300000), 19);
}

TEST_F(CompressorTest, CorruptInputFailsAndRuntimeKeepsServing) {
  chi::compressor::Client client;
  ASSERT_TRUE(client.Create("comp_bad").ok());
  std::string data = CompressibleBytes(50000);
  for (Algorithm algo : {Algorithm::kZstd, Algorithm::kLz4}) {
    SCOPED_TRACE(algo == Algorithm::kZstd ? "zstd" : "lz4");
    auto packed = client.Compress(algo, data);
    ASSERT_TRUE(packed.ok()) << packed.status();
    // Garbage that is not compressed data at all.
    auto r = client.Decompress(algo, RandomBytes(4096, 21), data.size());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status();
    // Truncated input.
    r = client.Decompress(algo, packed->substr(0, packed->size() / 2),
                          data.size());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status();
    // Flipped bytes in the middle of a valid stream.
    std::string flipped = *packed;
    for (size_t i = flipped.size() / 3; i < flipped.size() / 3 + 16; ++i) {
      flipped[i] = static_cast<char>(~flipped[i]);
    }
    r = client.Decompress(algo, flipped, data.size());
    if (r.ok()) {
      // lz4 has no checksum: a flip may decode, but never to the original.
      EXPECT_NE(*r, data);
    } else {
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status();
    }
    // The output is larger than the announced original size.
    r = client.Decompress(algo, *packed, data.size() / 2);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status();
    // An original size that cannot fit in client_data.
    r = client.Decompress(algo, *packed, 1ull << 40);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status();
    // Garbage larger than the copy buffer a worker keeps (8 MiB): copied
    // into a buffer of its own, and refused.
    r = client.Decompress(algo, RandomBytes((8 << 20) + (64 << 10), 23),
                          data.size());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status();
    // An input larger than any codec makes of the per-request limit (a
    // quarter of client_data, 8 MiB here) is refused before it is copied.
    r = client.Decompress(algo, RandomBytes(9 << 20, 24), data.size());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status();
    EXPECT_NE(r.status().message().find("input of 9437184 bytes"),
              std::string::npos)
        << r.status();
    // The runtime still serves good requests.
    RoundTrip(client, algo, data);
  }
  // Unknown algorithm and level.
  auto r = client.Compress(static_cast<Algorithm>(7), data);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status();
  r = client.Decompress(static_cast<Algorithm>(7), data, data.size());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status();
  r = client.Compress(Algorithm::kZstd, data, 1000);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status();
  EXPECT_TRUE(chi::admin::Client().Noop().ok());
  RoundTrip(client, Algorithm::kZstd, data);
}

// Every client can write the data segments, so a client may rewrite a
// Decompress input while the runtime decodes it. The decoders read a
// private copy: each task ends either ok or with InvalidArgument, and the
// runtime serves on. (This stress also passed without the copy: the
// decoders' checks held for these inputs. It guards the copy under ASan.)
TEST_F(CompressorTest, AnInputRewrittenWhileItIsDecodedHurtsNothing) {
  chi::compressor::Client client;
  ASSERT_TRUE(client.Create("comp_scribble").ok());
  const std::string data = CompressibleBytes(256 << 10);
  for (Algorithm algo : {Algorithm::kZstd, Algorithm::kLz4}) {
    SCOPED_TRACE(algo == Algorithm::kZstd ? "zstd" : "lz4");
    auto packed = client.Compress(algo, data);
    ASSERT_TRUE(packed.ok()) << packed.status();
    chi::FullPtr<char> in = CHI_IPC->AllocateBuffer(packed->size());
    ASSERT_FALSE(in.IsNull());
    std::memcpy(in.ptr_, packed->data(), packed->size());
    std::atomic<bool> stop{false};
    std::thread scribbler;
    // Stopped and joined however this scope ends (an ASSERT returns).
    struct Join {
      std::atomic<bool> &stop;
      std::thread &t;
      ~Join() {
        stop.store(true);
        if (t.joinable()) t.join();
      }
    } join{stop, scribbler};
    scribbler = std::thread([&] {
      std::mt19937 rng(7);
      volatile char *p = in.ptr_;
      const size_t n = packed->size();
      while (!stop.load(std::memory_order_relaxed)) {
        size_t i = rng() % n;
        p[i] = static_cast<char>(rng());
        if (rng() % 4 == 0) p[i] = (*packed)[i];  // often valid again
      }
    });
    int ok = 0, refused = 0;
    for (int i = 0; i < 200; ++i) {
      auto t =
          client.AsyncDecompress(algo, in.shm_, packed->size(), data.size());
      ASSERT_FALSE(t.IsNull());
      ASSERT_TRUE(t->WaitFor(30000000)) << i;
      hshm::Status st = t->GetStatus();
      if (st.ok()) {
        ++ok;
        EXPECT_EQ(t->out_size_, data.size());
        (void)CHI_IPC->FreeBuffer(t->out_);
      } else {
        ++refused;
        EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st;
      }
      CHI_IPC->DelTask(t);
    }
    stop.store(true);
    scribbler.join();
    EXPECT_EQ(ok + refused, 200);
    (void)CHI_IPC->FreeBuffer(in.shm_);
    RoundTrip(client, algo, data);
  }
  EXPECT_TRUE(chi::admin::Client().Noop().ok());
}

/** The runtime's anonymous resident memory (RssAnon, bytes), or 0. */
size_t RuntimeRssAnon(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("RssAnon:", 0) == 0) {
      return std::stoull(line.substr(8)) * 1024;  // "RssAnon:  N kB"
    }
  }
  return 0;
}

// Codec states are kept for the whole runtime, not per container, and a
// large zstd context is freed after use: compressing at level 9 (a 12 MB
// context for a 4 MiB input) on 8 containers in turn leaves the runtime's
// memory about where one compression left it. Before, each container kept
// its own context, so a client could pin memory by the container.
TEST_F(CompressorTest, CodecStatesAreNotKeptPerContainer) {
#if defined(__SANITIZE_ADDRESS__)
  // ASan's quarantine keeps freed memory resident, so RssAnon cannot tell
  // a freed context from a kept one.
  GTEST_SKIP() << "resident memory is not meaningful under ASan";
#endif
  chi::compressor::Client client;
  constexpr chi::u32 kContainers = 8;
  ASSERT_TRUE(client.Create("cmp_states", kContainers).ok());
  std::mt19937 gen(3);
  std::string data(4 << 20, ' ');
  for (char &c : data) c = static_cast<char>('a' + gen() % 8);
  auto compress = [&](chi::u32 c) {
    auto r = client.Compress(Algorithm::kZstd, data, 9,
                             chi::DomainQuery::GetLocalId(c));
    ASSERT_TRUE(r.ok()) << r.status();
  };
  compress(0);
  const size_t after_one = RuntimeRssAnon(rt_.pid());
  ASSERT_GT(after_one, 0u);
  for (chi::u32 c = 1; c < kContainers; ++c) compress(c);
  const size_t after_all = RuntimeRssAnon(rt_.pid());
  // Kept per container, 7 more contexts would take about 84 MB.
  EXPECT_LT(after_all, after_one + (36u << 20))
      << "RssAnon " << (after_one >> 20) << " MB after one compression, "
      << (after_all >> 20) << " MB after " << kContainers;
}

TEST_F(CompressorTest, ManyConcurrentTasksOnSeveralContainers) {
  chi::compressor::Client client;
  ASSERT_TRUE(client.Create("comp_many", 4).ok());
  std::vector<std::string> inputs;
  std::vector<chi::FullPtr<char>> bufs;
  std::vector<chi::FullPtr<chi::compressor::CompressTask>> tasks;
  for (int i = 0; i < 32; ++i) {
    inputs.push_back(CompressibleBytes(1000 + 997 * i) +
                     RandomBytes(100, 100 + i));
    bufs.push_back(CHI_IPC->AllocateBuffer(inputs.back().size()));
    ASSERT_FALSE(bufs.back().IsNull());
    std::memcpy(bufs.back().ptr_, inputs.back().data(), inputs.back().size());
    Algorithm algo = i % 2 ? Algorithm::kLz4 : Algorithm::kZstd;
    tasks.push_back(
        client.AsyncCompress(algo, bufs.back().shm_, inputs.back().size()));
    ASSERT_FALSE(tasks.back().IsNull());
  }
  for (int i = 0; i < 32; ++i) {
    auto &t = tasks[i];
    t->Wait();
    ASSERT_TRUE(t->GetStatus().ok()) << t->GetStatus();
    chi::FullPtr<char> out(t->out_);
    ASSERT_FALSE(out.IsNull());
    std::string packed(out.ptr_, t->out_size_);
    Algorithm algo = i % 2 ? Algorithm::kLz4 : Algorithm::kZstd;
    auto unpacked = client.Decompress(algo, packed, inputs[i].size());
    ASSERT_TRUE(unpacked.ok()) << unpacked.status();
    EXPECT_TRUE(*unpacked == inputs[i]);
    EXPECT_TRUE(CHI_IPC->FreeBuffer(t->out_).ok());
    CHI_IPC->DelTask(t);
    EXPECT_TRUE(CHI_IPC->FreeBuffer(bufs[i].shm_).ok());
  }
}

}  // namespace
