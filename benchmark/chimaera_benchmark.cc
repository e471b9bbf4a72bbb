// chimaera_benchmark: task round-trip latency and throughput of a live
// Chimaera runtime (the one CHI_SERVER_CONF names), next to two baselines
// measured in the same process:
//
// 1. Latency of a synchronous admin Noop (AsyncNoop + Wait + DelTask, so
//    allocation and freeing count), timed per task with steady_clock.
// 2. Throughput of asynchronous Noops from 1 and 2 client threads, each
//    keeping a ring of 1, 16, 256 or 1024 tasks in flight (median of
//    --repeat runs of --seconds each).
// 3. Baselines: a ZeroMQ ipc:// REQ/REP round trip, and a cross-core
//    cache-line ping-pong between two threads (the physical floor of any
//    shared-memory round trip).
//
// A plain program (not Google Benchmark): the runtime must already run.
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "bench_util.h"
#include "chimaera/chimaera.h"
#include "hermes_shm/util/futex.h"

namespace {

using Clock = std::chrono::steady_clock;
using hshm::u32;
using hshm::u64;

using chi_bench::ElapsedNs;

/** Order statistics of a sample of durations (ns). */
struct Summary {
  double median = 0;
  double p99 = 0;
  double p999 = 0;
  double min = 0;
  double mean = 0;
};

using chi_bench::Quantile;

/** Sorts `samples` and summarizes them. */
Summary Summarize(std::vector<u64> &samples) {
  Summary s;
  if (samples.empty()) return s;
  std::sort(samples.begin(), samples.end());
  s.median = Quantile(samples, 0.5);
  s.p99 = Quantile(samples, 0.99);
  s.p999 = Quantile(samples, 0.999);
  s.min = static_cast<double>(samples.front());
  double total = 0;
  for (u64 v : samples) total += static_cast<double>(v);
  s.mean = total / static_cast<double>(samples.size());
  return s;
}

/** Prints one latency line. */
void PrintLatency(const char *what, size_t n, const Summary &s) {
  printf(
      "  %-34s n=%-8zu min %8.0f  median %8.0f  mean %8.0f  p99 %8.0f  "
      "p99.9 %8.0f ns\n",
      what, n, s.min, s.median, s.mean, s.p99, s.p999);
}

/** Median cost of one steady_clock::now() call (ns), for reference. */
double ClockOverheadNs() {
  std::vector<u64> samples(10000);
  for (auto &v : samples) {
    Clock::time_point a = Clock::now();
    Clock::time_point b = Clock::now();
    v = ElapsedNs(a, b);
  }
  return Summarize(samples).median;
}

// ---------------------------------------------------------------------------
// 1. Synchronous Noop latency.
// ---------------------------------------------------------------------------

/** Runs one Noop to completion; false if it failed. */
bool OneNoop(chi::admin::Client &admin) {
  auto t = admin.AsyncNoop();
  if (t.IsNull()) return false;
  t->Wait();
  bool ok = t->GetStatus().ok();
  CHI_IPC->DelTask(t);
  return ok;
}

/** Times `tasks` synchronous Noops after `warmup` untimed ones. Returns the
 * per-task round trips (ns), or an empty vector on a failed task. */
std::vector<u64> MeasureNoopLatency(u64 tasks, u64 warmup) {
  chi::admin::Client admin;
  for (u64 i = 0; i < warmup; ++i) {
    if (!OneNoop(admin)) return {};
  }
  std::vector<u64> samples(tasks);
  for (u64 i = 0; i < tasks; ++i) {
    Clock::time_point a = Clock::now();
    bool ok = OneNoop(admin);
    Clock::time_point b = Clock::now();
    if (!ok) return {};
    samples[i] = ElapsedNs(a, b);
  }
  return samples;
}

/** Times `samples` Noops, each after `idle_ms` of client silence, so the
 * worker has gone to sleep on its futex: the wake-up cost of an idle runtime.
 * Returns an empty vector on a failed task. */
std::vector<u64> MeasureWakeLatency(u32 samples, u32 idle_ms) {
  chi::admin::Client admin;
  std::vector<u64> out;
  for (u32 i = 0; i < samples; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(idle_ms));
    Clock::time_point a = Clock::now();
    bool ok = OneNoop(admin);
    Clock::time_point b = Clock::now();
    if (!ok) return {};
    out.push_back(ElapsedNs(a, b));
  }
  return out;
}

// ---------------------------------------------------------------------------
// 2. Asynchronous Noop throughput.
// ---------------------------------------------------------------------------

/** Result of one client thread's throughput run. */
struct ThreadResult {
  u64 completed = 0;
  u64 errors = 0;
};

/** Waits for `t`, records its outcome and frees it. */
void Reap(chi::FullPtr<chi::admin::NoopTask> &t, ThreadResult *res) {
  t->Wait();
  if (t->GetStatus().ok()) {
    res->completed++;
  } else {
    res->errors++;
  }
  CHI_IPC->DelTask(t);
  t = chi::FullPtr<chi::admin::NoopTask>();
}

/** Submits Noops until `deadline`, keeping `depth` in flight in a ring (when
 * full, waits for the oldest and frees it), then drains the ring. */
ThreadResult ThroughputThread(u32 depth, Clock::time_point deadline) {
  chi::admin::Client admin;
  ThreadResult res;
  std::vector<chi::FullPtr<chi::admin::NoopTask>> ring(depth);
  size_t head = 0;  // Oldest in-flight slot once the ring is full.
  u64 submitted = 0;
  while (true) {
    // Check the clock every 64 submissions to keep it off the hot path.
    if ((submitted & 63) == 0 && Clock::now() >= deadline) break;
    chi::FullPtr<chi::admin::NoopTask> &slot = ring[head];
    if (!slot.IsNull()) Reap(slot, &res);
    slot = admin.AsyncNoop();
    if (slot.IsNull()) {
      res.errors++;
      break;
    }
    head = (head + 1) % depth;
    submitted++;
  }
  for (size_t i = 0; i < depth; ++i) {
    chi::FullPtr<chi::admin::NoopTask> &slot = ring[(head + i) % depth];
    if (!slot.IsNull()) Reap(slot, &res);
  }
  return res;
}

/** One throughput run: `threads` x ThroughputThread(depth) for `seconds`.
 * Returns tasks/s; adds failed tasks to `*errors`. */
double ThroughputOnce(u32 threads, u32 depth, double seconds, u64 *errors) {
  std::vector<ThreadResult> results(threads);
  std::vector<std::thread> pool;
  Clock::time_point start = Clock::now();
  Clock::time_point deadline =
      start + std::chrono::duration_cast<Clock::duration>(
                  std::chrono::duration<double>(seconds));
  for (u32 i = 0; i < threads; ++i) {
    pool.emplace_back([&results, i, depth, deadline] {
      results[i] = ThroughputThread(depth, deadline);
    });
  }
  for (auto &t : pool) t.join();
  double secs = static_cast<double>(ElapsedNs(start, Clock::now())) / 1e9;
  u64 done = 0;
  for (auto &r : results) {
    done += r.completed;
    *errors += r.errors;
  }
  return static_cast<double>(done) / secs;
}

/** Runs ThroughputOnce `repeat` times and prints the median, min and max
 * tasks/s (the median resists noise from other load on the machine).
 * Returns false if any task failed. */
bool MeasureThroughput(u32 threads, u32 depth, double seconds, u32 repeat) {
  std::vector<double> rates;
  u64 errors = 0;
  for (u32 r = 0; r < repeat; ++r) {
    rates.push_back(ThroughputOnce(threads, depth, seconds, &errors));
  }
  std::sort(rates.begin(), rates.end());
  printf(
      "  %u thread%s x %4u in flight: median %11.0f tasks/s  (min %11.0f, "
      "max %11.0f)%s\n",
      threads, threads == 1 ? " " : "s", depth, rates[rates.size() / 2],
      rates.front(), rates.back(), errors ? "  ERRORS" : "");
  if (errors) {
    printf("    %llu tasks failed\n", static_cast<unsigned long long>(errors));
  }
  return errors == 0;
}

// ---------------------------------------------------------------------------
// 3a. ZeroMQ ipc:// REQ/REP baseline.
// ---------------------------------------------------------------------------

/** Times `trips` REQ/REP round trips of an 8-byte message over ipc:// to a
 * REP thread of this process (after `warmup` untimed ones). The socket file
 * lives under /tmp, named by pid, and is removed afterwards. */
std::vector<u64> MeasureZmq(u64 trips, u64 warmup) {
  std::string path = "/tmp/chimaera_bench_" + std::to_string(getpid()) + ".ipc";
  std::string endpoint = "ipc://" + path;
  zmq::context_t ctx(1);
  zmq::socket_t rep(ctx, zmq::socket_type::rep);
  rep.set(zmq::sockopt::linger, 0);
  rep.bind(endpoint);
  u64 total = trips + warmup;
  std::thread server([&rep, total] {
    zmq::message_t msg;
    for (u64 i = 0; i < total; ++i) {
      if (!rep.recv(msg, zmq::recv_flags::none)) return;
      rep.send(msg, zmq::send_flags::none);
    }
  });
  std::vector<u64> samples;
  samples.reserve(trips);
  {
    zmq::socket_t req(ctx, zmq::socket_type::req);
    req.set(zmq::sockopt::linger, 0);
    req.connect(endpoint);
    zmq::message_t reply;
    for (u64 i = 0; i < total; ++i) {
      Clock::time_point a = Clock::now();
      req.send(zmq::buffer(&i, sizeof(i)), zmq::send_flags::none);
      (void)req.recv(reply, zmq::recv_flags::none);
      Clock::time_point b = Clock::now();
      if (i >= warmup) samples.push_back(ElapsedNs(a, b));
    }
  }
  server.join();
  rep.close();
  unlink(path.c_str());
  return samples;
}

// ---------------------------------------------------------------------------
// 3b. Cross-core cache-line ping-pong baseline.
// ---------------------------------------------------------------------------

/** Pins the calling thread to `cpu`; false if that is not possible. */
bool PinToCpu(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0;
}

/** Spins until `word` holds `want`; yields now and then so that an unpinned
 * run on an oversubscribed machine still makes progress. */
void SpinUntil(const std::atomic<u64> &word, u64 want) {
  u32 spins = 0;
  while (word.load(std::memory_order_acquire) != want) {
    hshm::CpuRelax();
    if (++spins == 1u << 16) {
      spins = 0;
      std::this_thread::yield();
    }
  }
}

/** Times `trips` round trips of a value bounced through one cache line by
 * two threads (pinned to CPUs 0 and 1 when allowed). Sets `*pinned`. */
std::vector<u64> MeasurePingPong(u64 trips, u64 warmup, bool *pinned) {
  struct alignas(128) Line {
    std::atomic<u64> word{0};
  };
  Line line;
  u64 total = trips + warmup;
  std::atomic<int> pin_ok{0};
  std::thread peer([&line, &pin_ok, total] {
    if (PinToCpu(1)) pin_ok.fetch_add(1);
    for (u64 i = 0; i < total; ++i) {
      SpinUntil(line.word, 2 * i + 1);
      line.word.store(2 * i + 2, std::memory_order_release);
    }
  });
  // Remember this thread's affinity so that it can be restored.
  cpu_set_t saved;
  bool have_saved =
      pthread_getaffinity_np(pthread_self(), sizeof(saved), &saved) == 0;
  if (PinToCpu(0)) pin_ok.fetch_add(1);
  std::vector<u64> samples;
  samples.reserve(trips);
  for (u64 i = 0; i < total; ++i) {
    Clock::time_point a = Clock::now();
    line.word.store(2 * i + 1, std::memory_order_release);
    SpinUntil(line.word, 2 * i + 2);
    Clock::time_point b = Clock::now();
    if (i >= warmup) samples.push_back(ElapsedNs(a, b));
  }
  peer.join();
  if (have_saved) {
    pthread_setaffinity_np(pthread_self(), sizeof(saved), &saved);
  }
  *pinned = pin_ok.load() == 2;
  return samples;
}

}  // namespace

/** Parses options, runs the three measurements and prints the report. */
int main(int argc, char **argv) {
  CLI::App app{
      "Measure Chimaera task latency and throughput against the runtime "
      "named by CHI_SERVER_CONF, with ZeroMQ and cache-line baselines."};
  u64 tasks = 100000;
  double seconds = 0.5;
  u32 repeat = 3;
  u64 zmq_trips = 20000;
  app.add_option("-n,--tasks", tasks,
                 "Timed synchronous Noops (and ping-pong round trips)")
      ->check(CLI::Range(static_cast<u64>(1), static_cast<u64>(1) << 32));
  app.add_option("-s,--seconds", seconds,
                 "Duration of each throughput configuration")
      ->check(CLI::Range(0.01, 60.0));
  app.add_option("-r,--repeat", repeat,
                 "Runs of each throughput configuration (median reported)")
      ->check(CLI::Range(1, 100));
  app.add_option("--zmq-trips", zmq_trips, "Timed ZeroMQ round trips")
      ->check(CLI::Range(static_cast<u64>(1), static_cast<u64>(1) << 32));
  CLI11_PARSE(app, argc, argv);

  if (!chi_bench::ConnectAndPrintHeader("chimaera_benchmark")) return 1;
  printf("steady_clock::now() pair overhead: median %.0f ns\n\n",
         ClockOverheadNs());
  int rc = 0;

  u64 warmup = std::max<u64>(tasks / 10, 1000);
  printf(
      "1. Synchronous admin Noop round trip (AsyncNoop+Wait+DelTask), "
      "%llu warm-up\n",
      static_cast<unsigned long long>(warmup));
  std::vector<u64> noop = MeasureNoopLatency(tasks, warmup);
  if (noop.empty()) {
    fprintf(stderr, "chimaera_benchmark: a Noop task failed\n");
    CHIMAERA->ClientFinalize();
    return 1;
  }
  Summary noop_s = Summarize(noop);
  PrintLatency("Chimaera Noop", noop.size(), noop_s);
  std::vector<u64> wake = MeasureWakeLatency(50, 20);
  if (!wake.empty()) {
    Summary wake_s = Summarize(wake);
    PrintLatency("Noop after 20 ms idle (wake)", wake.size(), wake_s);
  }

  printf(
      "\n2. Asynchronous Noop throughput (%u runs of %.2f s per "
      "configuration)\n",
      repeat, seconds);
  for (u32 threads : {1u, 2u}) {
    for (u32 depth : {1u, 16u, 256u, 1024u}) {
      if (!MeasureThroughput(threads, depth, seconds, repeat)) rc = 1;
    }
  }

  printf("\n3. Baselines\n");
  std::vector<u64> zmq_samples =
      MeasureZmq(zmq_trips, std::max<u64>(zmq_trips / 10, 100));
  Summary zmq_s = Summarize(zmq_samples);
  PrintLatency("ZeroMQ ipc:// REQ/REP", zmq_samples.size(), zmq_s);
  bool pinned = false;
  std::vector<u64> pp =
      MeasurePingPong(tasks, std::max<u64>(tasks / 10, 1000), &pinned);
  Summary pp_s = Summarize(pp);
  PrintLatency(pinned ? "cache-line ping-pong (CPU 0 <-> 1)"
                      : "cache-line ping-pong (unpinned)",
               pp.size(), pp_s);

  printf("\nRatios (median):\n");
  printf("  Noop / ping-pong: %8.1fx\n",
         pp_s.median > 0 ? noop_s.median / pp_s.median : 0.0);
  printf("  Noop / ZeroMQ:    %8.3fx  (ZeroMQ is %.1fx slower)\n",
         zmq_s.median > 0 ? noop_s.median / zmq_s.median : 0.0,
         noop_s.median > 0 ? zmq_s.median / noop_s.median : 0.0);
  CHIMAERA->ClientFinalize();
  return rc;
}
