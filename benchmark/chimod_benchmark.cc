// chimod_benchmark: throughput of two shipped ChiMods against a live Chimaera
// runtime (the one CHI_SERVER_CONF names):
//
// 1. small_message Echo of 64 B, 4 KiB and 1 MiB payloads with 1 and 16
//    tasks in flight. The input buffer is allocated once in client_data and
//    reused; each echo is AsyncEcho + Wait + a check of a few reply bytes +
//    FreeBuffer(reply) + DelTask. Reported as echoes/s and MB/s (payload
//    bytes per second, one direction; 1 MB = 10^6 B), next to a plain
//    in-process memcpy of the same size (an echo does one such copy in the
//    runtime) and the ratio of the two.
// 2. kvs Put then Get over --keys keys per client thread ("k<thread>_<i>",
//    64-byte values; Get checks every value), with 1 and 2 threads sharing
//    one client of a pool of --containers containers: synchronous calls, and
//    asynchronous ones with a window of --window tasks per thread. Each
//    round is a timed Put run (fresh keys), a timed Get run over the keys it
//    wrote and an untimed Delete of them; a run stops early after
//    --kvs-max-seconds.
// 3. compressor Decompress of 1 MiB (zstd and lz4; compressible text and
//    random bytes), one task at a time (AsyncDecompress + Wait + FreeBuffer
//    + DelTask, the input buffer reused), next to the same codec called in
//    this process on a private buffer, and the ratio of the two. The
//    runtime's figure includes allocating and freeing its 1 MiB output in
//    client_data each time (and the private copy of its input); the local
//    one reuses one output buffer.
//
// Throughput figures are the median of --repeat runs. A plain program (not
// Google Benchmark): the runtime must already run.
#include <lz4.h>
#include <zstd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "chimaera/chimaera.h"
#include "compressor/compressor_client.h"
#include "kvs/kvs_client.h"
#include "small_message/small_message_client.h"

namespace {

using Clock = std::chrono::steady_clock;
using hshm::u32;
using hshm::u64;

/** Bytes in a reported megabyte. */
constexpr double kMB = 1e6;
/** Bytes of every kvs value. */
constexpr u64 kValueSize = 64;
/** Room for a key and its value in one kvs request buffer. */
constexpr u64 kKvsBufSize = 128;

/** Seconds between two steady_clock readings. */
double ElapsedSec(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

/** The time point `seconds` after `start`. */
Clock::time_point After(Clock::time_point start, double seconds) {
  return start + std::chrono::duration_cast<Clock::duration>(
                     std::chrono::duration<double>(seconds));
}

/** Median, minimum and maximum of a sample of rates. */
struct Rates {
  double median = 0;
  double min = 0;
  double max = 0;
};

/** Sorts `v` and summarizes it (zeros when empty). */
Rates Summarize(std::vector<double> &v) {
  Rates r;
  if (v.empty()) return r;
  std::sort(v.begin(), v.end());
  r.median = v[v.size() / 2];
  r.min = v.front();
  r.max = v.back();
  return r;
}

/** A human-readable payload size ("64 B", "4 KiB", "1 MiB"). */
std::string SizeName(u64 size) {
  if (size >= (1u << 20) && size % (1u << 20) == 0) {
    return std::to_string(size >> 20) + " MiB";
  }
  if (size >= 1024 && size % 1024 == 0) {
    return std::to_string(size >> 10) + " KiB";
  }
  return std::to_string(size) + " B";
}

/** The byte at offset `i` of every echo input (a pattern that differs
 * between neighbouring offsets, so a shifted copy is caught). */
char PatternByte(u64 i) { return static_cast<char>((i * 131 + 7) & 0xff); }

/** Counts of one measured run; `first_error` describes the first failure. */
struct RunResult {
  u64 done = 0;    // Operations that succeeded.
  u64 issued = 0;  // Operations submitted (kvs: keys [0, issued) touched).
  u64 errors = 0;
  std::string first_error;

  /** Records a failure described by `what`. */
  void Fail(const std::string &what) {
    if (errors++ == 0) first_error = what;
  }
  /** Adds the counts of `o` (keeping the first error seen). */
  void Merge(const RunResult &o) {
    done += o.done;
    issued += o.issued;
    if (errors == 0) first_error = o.first_error;
    errors += o.errors;
  }
};

/** Prints the error count and first error of `r`, if any. */
void PrintErrors(const RunResult &r) {
  if (r.errors == 0) return;
  printf("    ERRORS: %llu failed (first: %s)\n",
         static_cast<unsigned long long>(r.errors), r.first_error.c_str());
}

// ---------------------------------------------------------------------------
// 1. small_message Echo throughput and the memcpy baseline.
// ---------------------------------------------------------------------------

/** Waits for echo `t` of `size` bytes, checks that the reply has the input's
 * size and its first, middle and last bytes, then frees the reply buffer and
 * the task and nulls `t`. */
void ReapEcho(chi::FullPtr<chi::small_message::EchoTask> &t, u64 size,
              RunResult *res) {
  t->Wait();
  chi::Status s = t->GetStatus();
  if (!s.ok()) {
    res->Fail(s.ToString());
  } else if (t->ret_size_ != size) {
    res->Fail("reply of " + std::to_string(t->ret_size_) + " bytes");
  } else {
    chi::FullPtr<char> ret(t->ret_);
    if (ret.IsNull() || ret.ptr_[0] != PatternByte(0) ||
        ret.ptr_[size / 2] != PatternByte(size / 2) ||
        ret.ptr_[size - 1] != PatternByte(size - 1)) {
      res->Fail("reply bytes differ from the input");
    } else {
      res->done++;
    }
  }
  (void)CHI_IPC->FreeBuffer(t->ret_);
  CHI_IPC->DelTask(t);
  t = chi::FullPtr<chi::small_message::EchoTask>();
}

/** Echoes the `size` bytes of `input` until `deadline`, keeping `depth` tasks
 * in flight in a ring (when full, reaps the oldest), then drains the ring.
 * Returns echoes/s over the whole run, drain included. */
double EchoOnce(chi::small_message::Client &client,
                const chi::FullPtr<char> &input, u64 size, u32 depth,
                double seconds, RunResult *res) {
  std::vector<chi::FullPtr<chi::small_message::EchoTask>> ring(depth);
  size_t head = 0;  // Oldest in-flight slot once the ring is full.
  u64 submitted = 0;
  RunResult run;
  Clock::time_point start = Clock::now();
  Clock::time_point deadline = After(start, seconds);
  while (true) {
    // Check the clock every 16 submissions to keep it off the hot path.
    if ((submitted & 15) == 0 && Clock::now() >= deadline) break;
    chi::FullPtr<chi::small_message::EchoTask> &slot = ring[head];
    if (!slot.IsNull()) ReapEcho(slot, size, &run);
    slot = client.AsyncEcho(input.shm_, size);
    if (slot.IsNull()) {
      run.Fail("main segment is full");
      break;
    }
    head = (head + 1) % depth;
    submitted++;
  }
  for (size_t i = 0; i < depth; ++i) {
    chi::FullPtr<chi::small_message::EchoTask> &slot = ring[(head + i) % depth];
    if (!slot.IsNull()) ReapEcho(slot, size, &run);
  }
  double secs = ElapsedSec(start, Clock::now());
  res->Merge(run);
  return static_cast<double>(run.done) / secs;
}

/** Copies `size` bytes between two heap buffers until about `seconds` pass.
 * Returns copies/s. */
double MemcpyOnce(u64 size, double seconds) {
  std::vector<char> src(size), dst(size);
  for (u64 i = 0; i < size; ++i) src[i] = PatternByte(i);
  // Read the clock about every 16 MB copied (at least every copy).
  u64 batch = std::max<u64>(1, (u64{1} << 24) / size);
  u64 copies = 0;
  Clock::time_point start = Clock::now();
  Clock::time_point deadline = After(start, seconds);
  do {
    for (u64 i = 0; i < batch; ++i) {
      std::memcpy(dst.data(), src.data(), size);
      // Keep the compiler from dropping or merging the copies.
      asm volatile("" : : "r"(dst.data()) : "memory");
    }
    copies += batch;
  } while (Clock::now() < deadline);
  double secs = ElapsedSec(start, Clock::now());
  if (dst[size - 1] != src[size - 1]) return 0;
  return static_cast<double>(copies) / secs;
}

/** Median echo and memcpy rates of one payload size. */
struct EchoRow {
  u64 size = 0;
  std::vector<double> echo_mbps;  // One per depth.
  double memcpy_mbps = 0;
};

/** Measures Echo at `size` for each depth in `depths` (`repeat` runs of
 * `seconds` each, after an untimed warm-up of up to 0.1 s) and the memcpy
 * baseline, and prints them. Returns false (after printing) if an echo failed.
 */
bool MeasureEchoSize(chi::small_message::Client &client, u64 size,
                     const std::vector<u32> &depths, double seconds, u32 repeat,
                     EchoRow *row) {
  row->size = size;
  chi::FullPtr<char> input = CHI_IPC->AllocateBuffer(size);
  if (input.IsNull()) {
    printf("  %-7s cannot allocate the input: client_data is full\n",
           SizeName(size).c_str());
    return false;
  }
  for (u64 i = 0; i < size; ++i) input.ptr_[i] = PatternByte(i);
  bool ok = true;
  // Untimed warm-up: the runtime's reply buffers, the tasks and the caches.
  RunResult warm;
  EchoOnce(client, input, size, depths.back(), std::min(0.1, seconds), &warm);
  for (u32 depth : depths) {
    std::vector<double> rates;
    RunResult res;
    res.Merge(warm);
    warm = RunResult();
    for (u32 r = 0; r < repeat; ++r) {
      rates.push_back(EchoOnce(client, input, size, depth, seconds, &res));
    }
    Rates e = Summarize(rates);
    double mbps = e.median * static_cast<double>(size) / kMB;
    row->echo_mbps.push_back(mbps);
    printf(
        "  %-7s x %2u in flight: median %9.0f echoes/s %9.1f MB/s  (min "
        "%9.0f, max %9.0f echoes/s)\n",
        SizeName(size).c_str(), depth, e.median, mbps, e.min, e.max);
    PrintErrors(res);
    if (res.errors) ok = false;
  }
  (void)CHI_IPC->FreeBuffer(input.shm_);

  std::vector<double> copies;
  for (u32 r = 0; r < repeat; ++r) copies.push_back(MemcpyOnce(size, seconds));
  Rates m = Summarize(copies);
  row->memcpy_mbps = m.median * static_cast<double>(size) / kMB;
  printf("  %-7s memcpy baseline: median %9.0f copies/s %9.1f MB/s\n",
         SizeName(size).c_str(), m.median, row->memcpy_mbps);
  return ok;
}

// ---------------------------------------------------------------------------
// 2. kvs Put / Get throughput.
// ---------------------------------------------------------------------------

/** The key of item `i` of client thread `thread`. */
std::string KeyOf(u32 thread, u64 i) {
  return "k" + std::to_string(thread) + "_" + std::to_string(i);
}

/** Writes the kValueSize-byte value of `key` to `out`: the key itself, then
 * letters that depend on it, so each key has its own value. */
void FillValue(const std::string &key, char *out) {
  u32 h = chi::kvs::KeyHash(key.data(), key.size());
  for (u64 j = 0; j < kValueSize; ++j) {
    out[j] = j < key.size() ? key[j] : static_cast<char>('a' + (h + j) % 26);
  }
}

/** True every 64th operation `i` once `deadline` has passed. */
bool PastDeadline(u64 i, Clock::time_point deadline) {
  return (i & 63) == 0 && Clock::now() >= deadline;
}

/** A kvs operation of the benchmark. */
enum class KvsOp { kPut, kGet, kDelete };

/** The name of `op` as printed. */
const char *OpName(KvsOp op) {
  return op == KvsOp::kPut ? "Put" : op == KvsOp::kGet ? "Get" : "Delete";
}

/** Synchronous `op` (a Get checks each value) on keys [0, keys) of `thread`
 * through `client`, stopping early at `deadline`. */
RunResult KvsSyncThread(chi::kvs::Client &client, u32 thread, u64 keys,
                        KvsOp op, Clock::time_point deadline) {
  RunResult res;
  char value[kValueSize];
  for (u64 i = 0; i < keys && !PastDeadline(i, deadline); ++i) {
    res.issued++;
    std::string key = KeyOf(thread, i);
    chi::Status s;
    if (op == KvsOp::kPut) {
      FillValue(key, value);
      s = client.Put(key, std::string(value, kValueSize));
    } else if (op == KvsOp::kDelete) {
      s = client.Delete(key);
    } else {
      chi::StatusOr<std::string> v = client.Get(key);
      FillValue(key, value);
      if (!v.ok()) {
        s = v.status();
      } else if (v->size() != kValueSize ||
                 std::memcmp(v->data(), value, kValueSize) != 0) {
        s = chi::Status::Internal("wrong value for " + key);
      }
    }
    if (s.ok()) {
      res.done++;
    } else {
      res.Fail(s.ToString());
    }
  }
  return res;
}

/** One in-flight slot of an asynchronous kvs thread: a request buffer (key,
 * then value) kept for the whole run, and the task using it (at most one of
 * put, get and del is set). */
struct KvsSlot {
  chi::FullPtr<char> buf;
  chi::FullPtr<chi::kvs::PutTask> put;
  chi::FullPtr<chi::kvs::GetTask> get;
  chi::FullPtr<chi::kvs::DeleteTask> del;
  std::string key;  // Key of the task in flight.
};

/** Waits for `task` (if not null), records its status in `*res` (after
 * `check(task)` for one that succeeded, which returns an error to record or
 * Ok), deletes it and nulls it. */
template <typename TaskT, typename CheckFn>
void ReapKvsTask(chi::FullPtr<TaskT> &task, RunResult *res, CheckFn &&check) {
  if (task.IsNull()) return;
  task->Wait();
  chi::Status s = task->GetStatus();
  if (s.ok()) s = check(task.ptr_);
  if (s.ok()) {
    res->done++;
  } else {
    res->Fail(s.ToString());
  }
  CHI_IPC->DelTask(task);
  task = chi::FullPtr<TaskT>();
}

/** Waits for the task of `slot` (if any), checks it (a Get's value must match
 * its key), frees its reply and the task. */
void ReapKvs(KvsSlot &slot, RunResult *res) {
  auto ok = [](auto *) { return chi::Status::Ok(); };
  ReapKvsTask(slot.put, res, ok);
  ReapKvsTask(slot.del, res, ok);
  ReapKvsTask(slot.get, res, [&slot](chi::kvs::GetTask *t) {
    char want[kValueSize];
    FillValue(slot.key, want);
    chi::FullPtr<char> v(t->value_);
    bool same = t->value_size_ == kValueSize && !v.IsNull() &&
                std::memcmp(v.ptr_, want, kValueSize) == 0;
    (void)CHI_IPC->FreeBuffer(t->value_);
    return same ? chi::Status::Ok()
                : chi::Status::Internal("wrong value for " + slot.key);
  });
}

/** Asynchronous `op` (a Get checks each value) on keys [0, keys) of
 * `thread`, keeping `window` tasks in flight and submitting no more after
 * `deadline`. */
RunResult KvsAsyncThread(chi::kvs::Client &client, u32 thread, u64 keys,
                         KvsOp op, u32 window, Clock::time_point deadline) {
  RunResult res;
  std::vector<KvsSlot> slots(window);
  for (KvsSlot &slot : slots) {
    slot.buf = CHI_IPC->AllocateBuffer(kKvsBufSize);
    if (slot.buf.IsNull()) {
      res.Fail("client_data is full");
      keys = 0;
    }
  }
  for (u64 i = 0; i < keys && !PastDeadline(i, deadline); ++i) {
    KvsSlot &slot = slots[i % window];
    ReapKvs(slot, &res);
    res.issued++;
    slot.key = KeyOf(thread, i);
    u64 key_size = slot.key.size();
    std::memcpy(slot.buf.ptr_, slot.key.data(), key_size);
    bool null_task;
    if (op == KvsOp::kPut) {
      FillValue(slot.key, slot.buf.ptr_ + key_size);
      slot.put = client.AsyncPut(slot.buf, key_size, kValueSize);
      null_task = slot.put.IsNull();
    } else if (op == KvsOp::kGet) {
      slot.get = client.AsyncGet(slot.buf, key_size);
      null_task = slot.get.IsNull();
    } else {
      slot.del = client.AsyncDelete(slot.buf, key_size);
      null_task = slot.del.IsNull();
    }
    if (null_task) {
      res.Fail("main segment is full");
      break;
    }
  }
  for (KvsSlot &slot : slots) {
    ReapKvs(slot, &res);
    (void)CHI_IPC->FreeBuffer(slot.buf.shm_);
  }
  return res;
}

/** Runs `op` on `keys.size()` threads, thread t over its keys [0, keys[t]),
 * synchronously (`window` 0) or with `window` tasks in flight, for at most
 * about `max_seconds`. Sets `(*issued)[t]` to the keys thread t reached and
 * merges the counts into `*res`. Returns ops/s of all threads together. */
double KvsPhase(chi::kvs::Client &client, const std::vector<u64> &keys,
                KvsOp op, u32 window, double max_seconds,
                std::vector<u64> *issued, RunResult *res) {
  u32 threads = static_cast<u32>(keys.size());
  std::vector<RunResult> results(threads);
  std::vector<std::thread> pool;
  Clock::time_point start = Clock::now();
  Clock::time_point deadline = After(start, max_seconds);
  for (u32 t = 0; t < threads; ++t) {
    u64 n = keys[t];
    pool.emplace_back([&client, &results, t, n, op, window, deadline] {
      results[t] = window == 0
                       ? KvsSyncThread(client, t, n, op, deadline)
                       : KvsAsyncThread(client, t, n, op, window, deadline);
    });
  }
  for (std::thread &th : pool) th.join();
  double secs = ElapsedSec(start, Clock::now());
  u64 done = 0;
  issued->assign(threads, 0);
  for (u32 t = 0; t < threads; ++t) {
    done += results[t].done;
    (*issued)[t] = results[t].issued;
    res->Merge(results[t]);
  }
  return static_cast<double>(done) / secs;
}

/** Prints the median, minimum and maximum ops/s of `op` in `rates`, the cap
 * note when a run stopped before `keys` keys (`fewest` reached), and any
 * errors in `res`. */
void PrintKvsLine(KvsOp op, u32 threads, u32 window, std::vector<double> &rates,
                  u64 keys, u64 fewest, const RunResult &res) {
  Rates k = Summarize(rates);
  std::string mode =
      window == 0 ? "sync" : "async window " + std::to_string(window);
  printf("  %-3s %u thread%s %-16s: median %9.0f ops/s  (min %9.0f, max %9.0f)",
         OpName(op), threads, threads == 1 ? " " : "s", mode.c_str(), k.median,
         k.min, k.max);
  if (fewest < keys) {
    printf("  [time cap: >= %llu keys/thread]",
           static_cast<unsigned long long>(fewest));
  }
  printf("\n");
  PrintErrors(res);
}

/** Measures and prints Put then Get ops/s with `threads` threads: `repeat`
 * rounds of a timed Put run over `keys` keys per thread (fresh keys: the
 * previous round deleted them), a timed Get run over the keys written, and
 * an untimed Delete of them. A run stops after `max_seconds`. Returns false
 * if an operation failed. */
bool MeasureKvs(chi::kvs::Client &client, u32 threads, u64 keys, u32 window,
                u32 repeat, double max_seconds) {
  std::vector<u64> all(threads, keys);
  std::vector<u64> written;
  std::vector<u64> issued;
  RunResult put_res, get_res, del_res;
  // Untimed warm-up round (wakes the workers, warms the containers' lanes).
  KvsPhase(client, std::vector<u64>(threads, std::min<u64>(keys, 1024)),
           KvsOp::kPut, window, std::min(0.1, max_seconds), &written, &put_res);
  KvsPhase(client, written, KvsOp::kDelete, window, 3600.0, &issued, &del_res);
  std::vector<double> put_rates, get_rates;
  u64 put_fewest = keys, get_fewest = keys;
  for (u32 r = 0; r < repeat; ++r) {
    put_rates.push_back(KvsPhase(client, all, KvsOp::kPut, window, max_seconds,
                                 &written, &put_res));
    get_rates.push_back(KvsPhase(client, written, KvsOp::kGet, window,
                                 max_seconds, &issued, &get_res));
    for (u32 t = 0; t < threads; ++t) {
      put_fewest = std::min(put_fewest, written[t]);
      get_fewest = std::min(get_fewest, issued[t]);
    }
    KvsPhase(client, written, KvsOp::kDelete, window, 3600.0, &issued,
             &del_res);
  }
  PrintKvsLine(KvsOp::kPut, threads, window, put_rates, keys, put_fewest,
               put_res);
  PrintKvsLine(KvsOp::kGet, threads, window, get_rates, keys, get_fewest,
               get_res);
  if (del_res.errors) {
    printf("  (untimed Delete between rounds)\n");
    PrintErrors(del_res);
  }
  return put_res.errors + get_res.errors + del_res.errors == 0;
}

// ---------------------------------------------------------------------------
// 3. compressor Decompress, beside the same codec in this process.
// ---------------------------------------------------------------------------

using chi::compressor::Algorithm;

/** Decompressions/s through the runtime of the `in_size` bytes at `in`,
 * which `algo` made from `orig` bytes, one at a time for about `seconds`.
 * Failures are counted in `*res`. */
double RuntimeDecompressOnce(chi::compressor::Client &client, Algorithm algo,
                             const chi::FullPtr<char> &in, u64 in_size,
                             u64 orig, double seconds, RunResult *res) {
  Clock::time_point start = Clock::now();
  Clock::time_point deadline = After(start, seconds);
  u64 done = 0;
  do {
    auto t = client.AsyncDecompress(algo, in.shm_, in_size, orig);
    if (t.IsNull()) {
      res->Fail("AsyncDecompress: main is full");
      break;
    }
    t->Wait();
    hshm::Status st = t->GetStatus();
    if (st.ok() && t->out_size_ == orig) {
      ++done;
    } else {
      res->Fail(st.ok() ? "wrong output size" : st.ToString());
    }
    if (!t->out_.IsNull()) (void)CHI_IPC->FreeBuffer(t->out_);
    CHI_IPC->DelTask(t);
  } while (Clock::now() < deadline);
  res->done += done;
  return static_cast<double>(done) / ElapsedSec(start, Clock::now());
}

/** Decompressions/s of `packed` (made by `algo` from `orig` bytes) by the
 * codec called here, into a private buffer, for about `seconds`; 0 if one
 * fails. */
double LocalDecompressOnce(Algorithm algo, const std::string &packed, u64 orig,
                           double seconds) {
  std::vector<char> out(orig);
  ZSTD_DCtx *dctx = ZSTD_createDCtx();
  Clock::time_point start = Clock::now();
  Clock::time_point deadline = After(start, seconds);
  u64 done = 0;
  bool ok = dctx != nullptr;
  while (ok && Clock::now() < deadline) {
    if (algo == Algorithm::kZstd) {
      size_t n = ZSTD_decompressDCtx(dctx, out.data(), orig, packed.data(),
                                     packed.size());
      ok = !ZSTD_isError(n) && n == orig;
    } else {
      int n = LZ4_decompress_safe(packed.data(), out.data(),
                                  static_cast<int>(packed.size()),
                                  static_cast<int>(orig));
      ok = n >= 0 && static_cast<u64>(n) == orig;
    }
    asm volatile("" : : "r"(out.data()) : "memory");
    ++done;
  }
  ZSTD_freeDCtx(dctx);
  if (!ok) return 0;
  return static_cast<double>(done) / ElapsedSec(start, Clock::now());
}

/** Measures Decompress of `data` (named `what`) with `algo` through the
 * runtime and in this process (`repeat` runs of `seconds` each) and prints
 * both and their ratio. Returns false (after printing) on a failure. */
bool MeasureDecompress(chi::compressor::Client &client, Algorithm algo,
                       const char *what, const std::string &data,
                       double seconds, u32 repeat) {
  const char *name = algo == Algorithm::kZstd ? "zstd" : "lz4";
  auto packed = client.Compress(algo, data);
  if (!packed.ok()) {
    printf("  %-4s %-12s Compress failed: %s\n", name, what,
           packed.status().ToString().c_str());
    return false;
  }
  chi::FullPtr<char> in = CHI_IPC->AllocateBuffer(packed->size());
  if (in.IsNull()) {
    printf("  %-4s %-12s cannot allocate the input: client_data is full\n",
           name, what);
    return false;
  }
  std::memcpy(in.ptr_, packed->data(), packed->size());
  // Untimed warm-ups of both sides (a warm-up failure is still reported).
  RunResult res;
  RuntimeDecompressOnce(client, algo, in, packed->size(), data.size(),
                        std::min(0.1, seconds), &res);
  LocalDecompressOnce(algo, *packed, data.size(), std::min(0.1, seconds));
  res.done = 0;
  std::vector<double> remote, local;
  for (u32 r = 0; r < repeat; ++r) {
    remote.push_back(RuntimeDecompressOnce(client, algo, in, packed->size(),
                                           data.size(), seconds, &res));
    local.push_back(LocalDecompressOnce(algo, *packed, data.size(), seconds));
  }
  (void)CHI_IPC->FreeBuffer(in.shm_);
  Rates rt = Summarize(remote), lo = Summarize(local);
  const double mb = static_cast<double>(data.size()) / kMB;
  printf(
      "  %-4s %-12s (%7.1f%% of 1 MiB): runtime %7.0f/s %8.1f MB/s, in "
      "process %7.0f/s %8.1f MB/s, ratio %.3fx\n",
      name, what, 100.0 * packed->size() / data.size(), rt.median,
      rt.median * mb, lo.median, lo.median * mb,
      lo.median > 0 ? rt.median / lo.median : 0.0);
  PrintErrors(res);
  return res.errors == 0 && lo.median > 0;
}

}  // namespace

/** Parses options, runs the Echo, kvs and Decompress measurements and prints
 * the report. */
int main(int argc, char **argv) {
  CLI::App app{
      "Measure small_message Echo, kvs Put/Get and compressor Decompress "
      "throughput against the runtime named by CHI_SERVER_CONF, with memcpy "
      "and in-process codec baselines."};
  double seconds = 0.4;
  u32 repeat = 3;
  u64 keys = 50000;
  double kvs_seconds = 1.0;
  u32 containers = 4;
  u32 depth = 16;
  u32 window = 64;
  bool no_async = false;
  app.add_option("-s,--seconds", seconds,
                 "Duration of each Echo, memcpy and Decompress run")
      ->check(CLI::Range(0.01, 60.0));
  app.add_option("-r,--repeat", repeat,
                 "Runs of each configuration (median reported)")
      ->check(CLI::Range(1, 100));
  app.add_option("-k,--keys", keys, "kvs keys per client thread")
      ->check(CLI::Range(static_cast<u64>(1), static_cast<u64>(1) << 30));
  app.add_option("--kvs-max-seconds", kvs_seconds,
                 "Time cap of each kvs run (a run stops early past it)")
      ->check(CLI::Range(0.01, 600.0));
  app.add_option("--containers", containers, "Containers of the kvs pool")
      ->check(CLI::Range(1, 1024));
  app.add_option("--depth", depth, "Echo tasks in flight (besides 1)")
      ->check(CLI::Range(2, 4096));
  app.add_option("--window", window, "kvs tasks in flight (async variant)")
      ->check(CLI::Range(1, 4096));
  app.add_flag("--no-async", no_async, "Skip the asynchronous kvs variant");
  CLI11_PARSE(app, argc, argv);

  if (!chi_bench::ConnectAndPrintHeader("chimod_benchmark")) return 1;
  printf("\n");
  int rc = 0;

  chi::small_message::Client echo;
  hshm::Status s = echo.Create("chimod_benchmark_echo", 1);
  if (!s.ok()) {
    fprintf(stderr, "chimod_benchmark: small_message pool: %s\n",
            s.ToString().c_str());
    CHIMAERA->ClientFinalize();
    return 1;
  }
  printf(
      "1. small_message Echo (AsyncEcho+Wait+check+FreeBuffer+DelTask; "
      "%u runs of %.2f s each) and memcpy\n",
      repeat, seconds);
  std::vector<u32> depths = {1, depth};
  std::vector<EchoRow> rows;
  for (u64 size : {u64{64}, u64{4096}, u64{1} << 20}) {
    EchoRow row;
    if (!MeasureEchoSize(echo, size, depths, seconds, repeat, &row)) rc = 1;
    rows.push_back(row);
  }

  chi::kvs::Client kvs;
  s = kvs.Create("chimod_benchmark_kvs", containers);
  if (!s.ok()) {
    fprintf(stderr, "chimod_benchmark: kvs pool: %s\n", s.ToString().c_str());
    CHIMAERA->ClientFinalize();
    return 1;
  }
  printf(
      "\n2. kvs Put then Get, %llu keys per thread, %u-byte values, %u "
      "containers (%u runs per phase, each capped at %.2f s)\n",
      static_cast<unsigned long long>(keys), static_cast<unsigned>(kValueSize),
      kvs.num_containers(), repeat, kvs_seconds);
  std::vector<u32> windows = {0};
  if (!no_async) windows.push_back(window);
  for (u32 w : windows) {
    for (u32 threads : {1u, 2u}) {
      if (!MeasureKvs(kvs, threads, keys, w, repeat, kvs_seconds)) rc = 1;
    }
  }

  chi::compressor::Client comp;
  s = comp.Create("chimod_benchmark_compressor", 1);
  if (!s.ok()) {
    fprintf(stderr, "chimod_benchmark: compressor pool: %s\n",
            s.ToString().c_str());
    CHIMAERA->ClientFinalize();
    return 1;
  }
  printf(
      "\n3. compressor Decompress of 1 MiB, one at a time "
      "(AsyncDecompress+Wait+FreeBuffer+DelTask; %u runs of %.2f s each), "
      "and the same codec in this process\n",
      repeat, seconds);
  std::string text;
  for (u64 i = 0; text.size() < (u64{1} << 20); ++i) {
    text += "line " + std::to_string(i) + " of the benchmark's input, " +
            std::to_string(i * 2654435761u % 1000) + "\n";
  }
  text.resize(u64{1} << 20);
  std::string noise(u64{1} << 20, '\0');
  std::mt19937_64 rng(42);
  for (char &c : noise) c = static_cast<char>(rng());
  for (Algorithm algo : {Algorithm::kZstd, Algorithm::kLz4}) {
    if (!MeasureDecompress(comp, algo, "text", text, seconds, repeat)) rc = 1;
    if (!MeasureDecompress(comp, algo, "random", noise, seconds, repeat)) {
      rc = 1;
    }
  }

  printf("\nRatios (echo MB/s / memcpy MB/s, medians):\n");
  for (const EchoRow &row : rows) {
    if (row.echo_mbps.size() != depths.size()) continue;
    printf("  %-7s", SizeName(row.size).c_str());
    for (size_t i = 0; i < depths.size(); ++i) {
      double ratio =
          row.memcpy_mbps > 0 ? row.echo_mbps[i] / row.memcpy_mbps : 0.0;
      printf("  %2u in flight %8.4fx", depths[i], ratio);
    }
    printf("\n");
  }
  CHIMAERA->ClientFinalize();
  return rc;
}
