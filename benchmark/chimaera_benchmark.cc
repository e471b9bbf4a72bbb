// chimaera_benchmark: task round-trip latency and throughput of a live
// Chimaera runtime (the one CHI_SERVER_CONF names), next to two baselines
// measured in the same process:
//
// 1. Latency of a synchronous Noop (AsyncNoop + Wait + DelTask, so
//    allocation and freeing count), timed per task with steady_clock, with
//    its tail (counts of slow samples, the longest run of consecutive slow
//    samples) and the medians of 10 consecutive windows, so that a slowdown
//    lasting part of the run shows. Then 10 paired blocks, each of sync
//    Noops and then as many cache-line ping-pongs, whose per-block ratios
//    stay valid when the VM changes speed mid-run. Then the first Noop after
//    20 ms of client silence (the wake-up of an idle runtime).
// 2. Throughput of asynchronous Noops from 1 and 2 client threads, each
//    keeping a ring of 1, 16, 256 or 1024 tasks in flight (median of
//    --repeat runs of --seconds each).
// 3. Baselines: a ZeroMQ ipc:// REQ/REP round trip, and a cross-core
//    cache-line ping-pong between two threads pinned to CPUs 0 and 1 (the
//    physical floor of any shared-memory round trip). For the tail: the same
//    ping-pong with the reply delayed so that a round trip lasts as long as
//    the Noop's median ("padded"), whose p99.9 / p50 is what this machine
//    allows a round trip of that length on two busy CPUs; and the host's
//    stalls, counted by one spinning thread per CPU (gaps over 5 us between
//    two clock reads: interrupts, or the hypervisor taking the vCPU away).
// 4. (--phases trace, not in "all") What task tracing costs at full
//    throughput, in one runtime: --trace-pairs pairs of --seconds windows of
//    1 thread x 256 Noops in flight, one window with tracing off and one on
//    (admin TraceControl; the order alternates), reported as the median
//    [min..max] of the per-pair ratios on/off. The two windows of a pair run
//    back to back, so this VM's slow drifts between fast and slow states
//    cancel, unlike runtimes started one after the other.
//
// --module picks the Noop of phases 1 and 2: the admin pool's (the default)
// or that of a small_message pool this program creates (named by its pid)
// and destroys, as a user's client would. With --pin-container W that pool
// has 2 containers, container 0 is pinned to worker W (admin PinContainer)
// and every Noop is addressed to it by id. --pin-client pins the measuring
// threads of phases 1 and 2 to one CPU (unpinned by default, like a user's
// client). --phases runs a subset; --csv appends one line per run for a
// driver (scripts/run_hotpath_benchmark.sh).
//
// A plain program (not Google Benchmark): the runtime must already run.
#include <dirent.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>
#include <zmq.hpp>

#include "bench_util.h"
#include "chimaera/chimaera.h"
#include "hermes_shm/util/futex.h"
#include "small_message/small_message_client.h"

namespace {

using Clock = std::chrono::steady_clock;
using hshm::u32;
using hshm::u64;

using chi_bench::ElapsedNs;
using chi_bench::Quantile;

/** Consecutive windows the latency samples are split into. */
constexpr u32 kWindows = 10;
/** A latency sample above this many medians is "slow" (for runs of them). */
constexpr double kSlowFactor = 5.0;

/** Order statistics of a sample of durations (ns). */
struct Summary {
  double median = 0;
  double p99 = 0;
  double p999 = 0;
  double p9999 = 0;
  double min = 0;
  double max = 0;
  double mean = 0;
};

/** Sorts `samples` and summarizes them. */
Summary Summarize(std::vector<u64> &samples) {
  Summary s;
  if (samples.empty()) return s;
  std::sort(samples.begin(), samples.end());
  s.median = Quantile(samples, 0.5);
  s.p99 = Quantile(samples, 0.99);
  s.p999 = Quantile(samples, 0.999);
  s.p9999 = Quantile(samples, 0.9999);
  s.min = static_cast<double>(samples.front());
  s.max = static_cast<double>(samples.back());
  double total = 0;
  for (u64 v : samples) total += static_cast<double>(v);
  s.mean = total / static_cast<double>(samples.size());
  return s;
}

/** Prints one latency line. */
void PrintLatency(const char *what, size_t n, const Summary &s) {
  printf(
      "  %-34s n=%-8zu min %8.0f  median %8.0f  mean %8.0f  p99 %8.0f  "
      "p99.9 %8.0f  p99.99 %8.0f  max %9.0f ns\n",
      what, n, s.min, s.median, s.mean, s.p99, s.p999, s.p9999, s.max);
}

/** How the slow samples of a latency run are spread. */
struct TailStats {
  u64 over2 = 0;             ///< Samples above 2x the median.
  u64 over5 = 0;             ///< ... 5x.
  u64 over10 = 0;            ///< ... 10x.
  u64 over50 = 0;            ///< ... 50x.
  u64 longest_slow_run = 0;  ///< Most consecutive samples above kSlowFactor x.
};

/** Counts the samples of `in_order` (in measurement order) above multiples
 * of `median`, and the longest run of consecutive slow ones. */
TailStats AnalyzeTail(const std::vector<u64> &in_order, double median) {
  TailStats t;
  u64 run = 0;
  for (u64 v : in_order) {
    double x = static_cast<double>(v);
    if (x > 2 * median) t.over2++;
    if (x > 5 * median) t.over5++;
    if (x > 10 * median) t.over10++;
    if (x > 50 * median) t.over50++;
    if (x > kSlowFactor * median) {
      t.longest_slow_run = std::max(t.longest_slow_run, ++run);
    } else {
      run = 0;
    }
  }
  return t;
}

/** Medians of `windows` consecutive equal slices of `in_order` (the last
 * takes the remainder); fewer when there are fewer samples. */
std::vector<double> WindowMedians(const std::vector<u64> &in_order,
                                  u32 windows) {
  std::vector<double> out;
  size_t n = in_order.size();
  if (n == 0) return out;
  size_t w = std::min<size_t>(windows, n);
  size_t len = n / w;
  for (size_t i = 0; i < w; ++i) {
    auto begin = in_order.begin() + static_cast<std::ptrdiff_t>(i * len);
    auto end =
        i + 1 == w ? in_order.end() : begin + static_cast<std::ptrdiff_t>(len);
    std::vector<u64> slice(begin, end);
    std::sort(slice.begin(), slice.end());
    out.push_back(Quantile(slice, 0.5));
  }
  return out;
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
// CPU pinning.
// ---------------------------------------------------------------------------

/** Pins the calling thread to `cpu`; false if that is not possible. */
bool PinToCpu(int cpu) {
  if (cpu < 0 || cpu >= CPU_SETSIZE) return false;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0;
}

/** Pins the calling thread to one CPU while it lives and then restores the
 * thread's previous affinity. A negative CPU leaves the thread alone. */
class ScopedPin {
 public:
  /** Pins to `cpu` (nothing if negative); see pinned(). */
  explicit ScopedPin(int cpu) {
    if (cpu < 0) return;
    have_saved_ =
        pthread_getaffinity_np(pthread_self(), sizeof(saved_), &saved_) == 0;
    pinned_ = PinToCpu(cpu);
  }
  /** Restores the saved affinity. */
  ~ScopedPin() {
    if (pinned_ && have_saved_) {
      pthread_setaffinity_np(pthread_self(), sizeof(saved_), &saved_);
    }
  }
  ScopedPin(const ScopedPin &) = delete;
  ScopedPin &operator=(const ScopedPin &) = delete;

  /** Whether the thread is now pinned. */
  bool pinned() const { return pinned_; }

 private:
  cpu_set_t saved_;
  bool have_saved_ = false;
  bool pinned_ = false;
};

/** The pid of the runtime this client is attached to (0 if unknown). */
int RuntimePid() {
  const chi::IpcShared *shared = CHI_IPC->shared();
  return shared ? shared->runtime_pid_ : 0;
}

/** The CPU thread `tid` of process `pid` last ran on (field 39 of its
 * /proc stat), or -1 if unknown. */
int LastCpuOf(int pid, const std::string &tid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + tid + "/stat");
  std::string line;
  if (!std::getline(in, line)) return -1;
  // The name (field 2) may hold spaces: count the fields after its ')'.
  size_t close = line.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream fields(line.substr(close + 1));
  std::string f;
  for (int i = 3; i <= 39; ++i) {
    if (!(fields >> f)) return -1;
  }
  return std::atoi(f.c_str());
}

/** "name@cpu" for each thread of process `pid` whose name starts with
 * "chi_" (the runtime's workers and helpers), with the CPU it last ran on;
 * sets `*worker0_cpu` to that of chi_worker_0 (the low-latency worker), -1
 * if unknown. Empty if /proc cannot tell (e.g. another user's runtime). */
std::string RuntimeThreadCpus(int pid, int *worker0_cpu) {
  *worker0_cpu = -1;
  std::string out;
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR *d = pid > 0 ? opendir(dir.c_str()) : nullptr;
  if (!d) return out;
  while (dirent *e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream comm(dir + "/" + e->d_name + "/comm");
    std::string name;
    if (!std::getline(comm, name) || name.rfind("chi_", 0) != 0) continue;
    int cpu = LastCpuOf(pid, e->d_name);
    if (name == "chi_worker_0") *worker0_cpu = cpu;
    out += (out.empty() ? "" : " ") + name + "@" + std::to_string(cpu);
  }
  closedir(d);
  return out;
}

// ---------------------------------------------------------------------------
// 1. Synchronous Noop latency. `Api` is chi::admin::Client or
// chi::small_message::Client: both have AsyncNoop().
// ---------------------------------------------------------------------------

/** Where the Noops go: the default query, or container 0 by id
 * (--pin-container). */
chi::DomainQuery g_noop_dom;

/** Runs one Noop to completion; false if it failed. */
template <typename Api>
bool OneNoop(Api &api) {
  auto t = api.AsyncNoop(g_noop_dom);
  if (t.IsNull()) return false;
  t->Wait();
  bool ok = t->GetStatus().ok();
  CHI_IPC->DelTask(t);
  return ok;
}

/** Times `tasks` synchronous Noops after `warmup` untimed ones. Returns the
 * per-task round trips (ns) in order, or an empty vector on a failed task. */
template <typename Api>
std::vector<u64> MeasureNoopLatency(Api &api, u64 tasks, u64 warmup) {
  for (u64 i = 0; i < warmup; ++i) {
    if (!OneNoop(api)) return {};
  }
  std::vector<u64> samples(tasks);
  for (u64 i = 0; i < tasks; ++i) {
    Clock::time_point a = Clock::now();
    bool ok = OneNoop(api);
    Clock::time_point b = Clock::now();
    if (!ok) return {};
    samples[i] = ElapsedNs(a, b);
  }
  return samples;
}

/** Times `samples` Noops, each after `idle_ms` of client silence, so the
 * worker has gone to sleep on its futex: the wake-up cost of an idle runtime.
 * Returns an empty vector on a failed task. */
template <typename Api>
std::vector<u64> MeasureWakeLatency(Api &api, u32 samples, u32 idle_ms) {
  std::vector<u64> out;
  for (u32 i = 0; i < samples; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(idle_ms));
    Clock::time_point a = Clock::now();
    bool ok = OneNoop(api);
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
template <typename TaskPtr>
void Reap(TaskPtr &t, ThreadResult *res) {
  t->Wait();
  if (t->GetStatus().ok()) {
    res->completed++;
  } else {
    res->errors++;
  }
  CHI_IPC->DelTask(t);
  t = TaskPtr();
}

/** Submits Noops until `deadline`, keeping `depth` in flight in a ring (when
 * full, waits for the oldest and frees it), then drains the ring. */
template <typename Api>
ThreadResult ThroughputThread(Api &api, u32 depth, Clock::time_point deadline) {
  using TaskPtr = decltype(api.AsyncNoop(g_noop_dom));
  ThreadResult res;
  std::vector<TaskPtr> ring(depth);
  size_t head = 0;  // Oldest in-flight slot once the ring is full.
  u64 submitted = 0;
  while (true) {
    // Check the clock every 64 submissions to keep it off the hot path.
    if ((submitted & 63) == 0 && Clock::now() >= deadline) break;
    TaskPtr &slot = ring[head];
    if (!slot.IsNull()) Reap(slot, &res);
    slot = api.AsyncNoop(g_noop_dom);
    if (slot.IsNull()) {
      res.errors++;
      break;
    }
    head = (head + 1) % depth;
    submitted++;
  }
  for (size_t i = 0; i < depth; ++i) {
    TaskPtr &slot = ring[(head + i) % depth];
    if (!slot.IsNull()) Reap(slot, &res);
  }
  return res;
}

/** Idle time of each runtime worker so far, in hshm::TickCount ticks (the
 * ended idle periods the worker added up, plus the one in progress), read
 * from the worker table in shared memory, and the clock when read. */
struct IdleSnapshot {
  std::vector<u64> idle;
  u64 clock = 0;
};
/** Reads the snapshot. REQUIRES: attached to a runtime. */
IdleSnapshot TakeIdleSnapshot() {
  IdleSnapshot snap;
  snap.clock = hshm::TickCount();
  const chi::WorkerShared *ws = CHI_IPC->workers();
  for (u32 w = 0; ws && w < CHI_IPC->num_workers(); ++w) {
    u64 idle = ws[w].idle_ticks_.load(std::memory_order_relaxed);
    u64 since = ws[w].idle_since_.load(std::memory_order_relaxed);
    if (since != 0 && since < snap.clock) idle += snap.clock - since;
    snap.idle.push_back(idle);
  }
  return snap;
}

/** The busy fraction (0..1) of the busiest worker between two snapshots. */
double BusiestWorker(const IdleSnapshot &a, const IdleSnapshot &b) {
  double busiest = 0;
  double span = static_cast<double>(b.clock - a.clock);
  for (size_t w = 0; span > 0 && w < a.idle.size() && w < b.idle.size(); ++w) {
    double idle = static_cast<double>(b.idle[w] - a.idle[w]) / span;
    busiest = std::max(busiest, 1.0 - std::min(1.0, idle));
  }
  return busiest;
}

/** One throughput run: `threads` x ThroughputThread(depth) for `seconds`,
 * each thread pinned to `pin_cpu` when it is not negative. Returns tasks/s;
 * adds failed tasks to `*errors` and, if `busy` is not null, stores the
 * busiest worker's busy fraction there. */
template <typename Api>
double ThroughputOnce(Api &api, u32 threads, u32 depth, double seconds,
                      int pin_cpu, u64 *errors, double *busy = nullptr) {
  std::vector<ThreadResult> results(threads);
  std::vector<std::thread> pool;
  IdleSnapshot before = TakeIdleSnapshot();
  Clock::time_point start = Clock::now();
  Clock::time_point deadline =
      start + std::chrono::duration_cast<Clock::duration>(
                  std::chrono::duration<double>(seconds));
  for (u32 i = 0; i < threads; ++i) {
    pool.emplace_back([&api, &results, i, depth, deadline, pin_cpu] {
      if (pin_cpu >= 0) PinToCpu(pin_cpu);
      results[i] = ThroughputThread(api, depth, deadline);
    });
  }
  for (auto &t : pool) t.join();
  double secs = static_cast<double>(ElapsedNs(start, Clock::now())) / 1e9;
  if (busy) *busy = BusiestWorker(before, TakeIdleSnapshot());
  u64 done = 0;
  for (auto &r : results) {
    done += r.completed;
    *errors += r.errors;
  }
  return static_cast<double>(done) / secs;
}

/** Runs ThroughputOnce `repeat` times, prints the median, min and max
 * tasks/s (the median resists noise from other load on the machine) and
 * the busiest worker's median busy share (near 100%: the runtime limits the
 * rate; well below: the clients do), and stores the median in `*median`.
 * Returns false if any task failed. */
template <typename Api>
bool MeasureThroughput(Api &api, u32 threads, u32 depth, double seconds,
                       u32 repeat, int pin_cpu, double *median) {
  std::vector<double> rates, busy;
  u64 errors = 0;
  for (u32 r = 0; r < repeat; ++r) {
    double b = 0;
    rates.push_back(
        ThroughputOnce(api, threads, depth, seconds, pin_cpu, &errors, &b));
    busy.push_back(b);
  }
  std::sort(rates.begin(), rates.end());
  std::sort(busy.begin(), busy.end());
  *median = rates[rates.size() / 2];
  printf(
      "  %u thread%s x %4u in flight: median %11.0f tasks/s  (min %11.0f, "
      "max %11.0f)  busiest worker %3.0f%% busy%s\n",
      threads, threads == 1 ? " " : "s", depth, *median, rates.front(),
      rates.back(), 100 * busy[busy.size() / 2], errors ? "  ERRORS" : "");
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

/** Busy-waits `ns` nanoseconds (nothing if 0). */
void SpinFor(u64 ns) {
  if (ns == 0) return;
  Clock::time_point until = Clock::now() + std::chrono::nanoseconds(ns);
  while (Clock::now() < until) hshm::CpuRelax();
}

/** Times `trips` round trips of a value bounced through one cache line by
 * two threads (pinned to CPUs 0 and 1 when allowed); the peer waits `pad_ns`
 * before each reply. Sets `*pinned`. */
std::vector<u64> MeasurePingPong(u64 trips, u64 warmup, u64 pad_ns,
                                 bool *pinned) {
  struct alignas(128) Line {
    std::atomic<u64> word{0};
  };
  Line line;
  u64 total = trips + warmup;
  std::atomic<int> pin_ok{0};
  std::thread peer([&line, &pin_ok, total, pad_ns] {
    if (PinToCpu(1)) pin_ok.fetch_add(1);
    for (u64 i = 0; i < total; ++i) {
      SpinUntil(line.word, 2 * i + 1);
      SpinFor(pad_ns);
      line.word.store(2 * i + 2, std::memory_order_release);
    }
  });
  std::vector<u64> samples;
  samples.reserve(trips);
  {
    ScopedPin pin(0);  // Restores this thread's affinity afterwards.
    if (pin.pinned()) pin_ok.fetch_add(1);
    for (u64 i = 0; i < total; ++i) {
      Clock::time_point a = Clock::now();
      line.word.store(2 * i + 1, std::memory_order_release);
      SpinUntil(line.word, 2 * i + 2);
      Clock::time_point b = Clock::now();
      if (i >= warmup) samples.push_back(ElapsedNs(a, b));
    }
    peer.join();
  }
  *pinned = pin_ok.load() == 2;
  return samples;
}

/** What the host takes from a CPU: stalls seen by a thread spinning on it. */
struct HostStalls {
  int cpu = -1;          ///< The CPU (-1: could not pin).
  double per_s = 0;      ///< Gaps over kStallNs between clock reads, per s.
  double median_us = 0;  ///< Their median length.
  double lost_pct = 0;   ///< Their total length, as % of the time.
};

/** A gap between two clock reads of a spinning thread longer than this is a
 * stall (the reads themselves take tens of ns). */
constexpr u64 kStallNs = 5000;

/** Spins one thread pinned to each of CPUs 0 and 1 for `seconds` at once,
 * each counting the gaps between consecutive clock reads longer than
 * kStallNs. Both CPUs are busy, as in the latency phase. */
std::vector<HostStalls> MeasureHostStalls(double seconds) {
  std::vector<HostStalls> out(2);
  std::vector<std::thread> threads;
  for (int cpu = 0; cpu < 2; ++cpu) {
    threads.emplace_back([&out, cpu, seconds] {
      HostStalls &h = out[cpu];
      h.cpu = PinToCpu(cpu) ? cpu : -1;
      std::vector<u64> gaps;
      Clock::time_point start = Clock::now(), prev = start;
      Clock::time_point end =
          start + std::chrono::nanoseconds(static_cast<u64>(seconds * 1e9));
      double lost = 0;
      for (;;) {
        Clock::time_point now = Clock::now();
        u64 gap = ElapsedNs(prev, now);
        if (gap > kStallNs) {
          gaps.push_back(gap);
          lost += static_cast<double>(gap);
        }
        prev = now;
        if (now >= end) break;
      }
      double total = static_cast<double>(ElapsedNs(start, prev));
      h.per_s = total > 0 ? gaps.size() / (total / 1e9) : 0;
      h.lost_pct = total > 0 ? 100 * lost / total : 0;
      if (!gaps.empty()) {
        std::sort(gaps.begin(), gaps.end());
        h.median_us = Quantile(gaps, 0.5) / 1000;
      }
    });
  }
  for (auto &t : threads) t.join();
  return out;
}

// ---------------------------------------------------------------------------
// Options and the CSV line.
// ---------------------------------------------------------------------------

/** Which parts of the benchmark run (--phases). */
struct Phases {
  bool latency = false;
  bool wake = false;
  bool throughput = false;
  bool baselines = false;
  bool trace = false;
};

/** Parses a comma list of latency, wake, throughput, baselines, trace (or
 * "all": every one but trace).
 * Returns false and names the bad entry in `*bad` on an unknown one. */
bool ParsePhases(const std::string &list, Phases *out, std::string *bad) {
  *out = Phases();
  std::stringstream in(list);
  std::string item;
  bool any = false;
  while (std::getline(in, item, ',')) {
    if (item.empty()) continue;
    any = true;
    if (item == "all") {
      *out = Phases{true, true, true, true, out->trace};
    } else if (item == "latency") {
      out->latency = true;
    } else if (item == "wake") {
      out->wake = true;
    } else if (item == "throughput") {
      out->throughput = true;
    } else if (item == "baselines") {
      out->baselines = true;
    } else if (item == "trace") {
      out->trace = true;
    } else {
      *bad = item;
      return false;
    }
  }
  if (!any) *bad = "(empty list)";
  return any;
}

/** Columns of the --csv line, in order. */
const char *const kCsvColumns[] = {"label",
                                   "module",
                                   "client_cpu",
                                   "sync_p50_ns",
                                   "sync_p99_ns",
                                   "sync_p999_ns",
                                   "sync_p9999_ns",
                                   "sync_max_ns",
                                   "pingpong_p50_ns",
                                   "p50_over_pp",
                                   "p99_over_pp",
                                   "p999_over_p50",
                                   "tput_1x16",
                                   "tput_1x256",
                                   "tput_2x256",
                                   "wake_p50_ns",
                                   "win_p50_min_ns",
                                   "win_p50_max_ns",
                                   "slow_run_max",
                                   "pp_pinned",
                                   "failed",
                                   "client_ran_on",
                                   "worker0_ran_on",
                                   "pad_p999_p50",
                                   "host_stalls_s",
                                   "paired_pp_p50_ns",
                                   "p50_over_pp_paired",
                                   "p99_over_pp_paired"};
constexpr size_t kNumCsvColumns = sizeof(kCsvColumns) / sizeof(kCsvColumns[0]);

/** One --csv line being filled in; fields of phases that did not run stay
 * empty. */
class CsvRow {
 public:
  /** Sets column `name` (one of kCsvColumns) to `value`. */
  void Set(const char *name, const std::string &value) {
    for (size_t i = 0; i < kNumCsvColumns; ++i) {
      if (std::strcmp(kCsvColumns[i], name) == 0) {
        fields_[i] = value;
        return;
      }
    }
  }
  /** Sets column `name` to `value` printed with `digits` decimals. */
  void Set(const char *name, double value, int digits) {
    char buf[64];
    snprintf(buf, sizeof(buf), "%.*f", digits, value);
    Set(name, std::string(buf));
  }
  /** Appends the line to `path`, after a header line if the file is new or
   * empty. Returns false (error printed) if it cannot be written. */
  bool Append(const std::string &path) const {
    FILE *f = fopen(path.c_str(), "a");
    if (!f) {
      fprintf(stderr, "chimaera_benchmark: cannot append to %s: %s\n",
              path.c_str(), strerror(errno));
      return false;
    }
    fseek(f, 0, SEEK_END);
    if (ftell(f) == 0) {
      for (size_t i = 0; i < kNumCsvColumns; ++i) {
        fprintf(f, "%s%s", i ? "," : "", kCsvColumns[i]);
      }
      fprintf(f, "\n");
    }
    for (size_t i = 0; i < kNumCsvColumns; ++i) {
      fprintf(f, "%s%s", i ? "," : "", fields_[i].c_str());
    }
    fprintf(f, "\n");
    return fclose(f) == 0;
  }

 private:
  std::string fields_[kNumCsvColumns];
};

/** `s` with the characters that would break a CSV field replaced by '_'. */
std::string CsvSafe(std::string s) {
  for (char &c : s) {
    if (c == ',' || c == '\n' || c == '\r' || c == '"') c = '_';
  }
  return s;
}

/** --dump-dir: where raw latency samples and the throughput sweep go ("":
 * nowhere). Files: latency_<name>.txt (one round trip in ns a line, in
 * measurement order) and throughput.csv (threads,depth,tasks_per_s). */
std::string g_dump_dir;

/** --client-threads / --depths: the throughput phase's configurations
 * (client threads x tasks in flight per thread). */
std::vector<u32> g_tput_threads = {1, 2};
std::vector<u32> g_tput_depths = {1, 16, 256, 1024};

/** Writes `samples` to <dump dir>/latency_<name>.txt (if --dump-dir). */
void DumpSamples(const char *name, const std::vector<u64> &samples) {
  if (g_dump_dir.empty()) return;
  std::string path = g_dump_dir + "/latency_" + name + ".txt";
  FILE *f = fopen(path.c_str(), "w");
  if (!f) {
    fprintf(stderr, "chimaera_benchmark: cannot write %s\n", path.c_str());
    return;
  }
  for (u64 v : samples) {
    fprintf(f, "%llu\n", static_cast<unsigned long long>(v));
  }
  fclose(f);
}

/** Appends one sweep point to <dump dir>/throughput.csv (if --dump-dir). */
void DumpThroughput(u32 threads, u32 depth, double tasks_per_s) {
  if (g_dump_dir.empty()) return;
  std::string path = g_dump_dir + "/throughput.csv";
  bool fresh = access(path.c_str(), F_OK) != 0;
  FILE *f = fopen(path.c_str(), "a");
  if (!f) return;
  if (fresh) fprintf(f, "threads,depth,tasks_per_s\n");
  fprintf(f, "%u,%u,%.1f\n", threads, depth, tasks_per_s);
  fclose(f);
}

/** Everything main() measured that the ratio lines and the CSV need. */
struct Results {
  bool have_noop = false;
  Summary noop;
  bool have_pp = false;
  Summary pp;
  bool pp_pinned = false;
  bool have_zmq = false;
  Summary zmq;
  bool have_padded = false;
  Summary padded;           ///< Ping-pong padded to the Noop's median.
  double stalls_per_s = 0;  ///< Host stalls per s, summed over CPUs 0, 1.
  bool have_stalls = false;
};

/** Prints the summary, tail, window medians and thread placement of the
 * latency samples `noop` (in measurement order) of `module`'s Noop, and
 * fills `*res` and the latency fields of `*row`. */
void ReportNoopLatency(const std::vector<u64> &noop, const char *module,
                       Results *res, CsvRow *row) {
  std::vector<u64> sorted = noop;
  res->noop = Summarize(sorted);
  res->have_noop = true;
  const Summary &s = res->noop;
  std::string what = std::string("Chimaera ") + module + " Noop";
  PrintLatency(what.c_str(), noop.size(), s);
  TailStats t = AnalyzeTail(noop, s.median);
  printf(
      "    tail: >2x median %llu  >5x %llu  >10x %llu  >50x %llu  "
      "longest run of >%.0fx: %llu samples\n",
      static_cast<unsigned long long>(t.over2),
      static_cast<unsigned long long>(t.over5),
      static_cast<unsigned long long>(t.over10),
      static_cast<unsigned long long>(t.over50), kSlowFactor,
      static_cast<unsigned long long>(t.longest_slow_run));
  std::vector<double> win = WindowMedians(noop, kWindows);
  double wmin = *std::min_element(win.begin(), win.end());
  double wmax = *std::max_element(win.begin(), win.end());
  printf("    medians of %zu consecutive windows:", win.size());
  for (double m : win) printf(" %.0f", m);
  printf(" ns  (min %.0f, max %.0f, max/min %.2fx)\n", wmin, wmax,
         wmin > 0 ? wmax / wmin : 0.0);
  int worker0_cpu = -1;
  std::string threads = RuntimeThreadCpus(RuntimePid(), &worker0_cpu);
  int client_cpu = sched_getcpu();
  printf("    last ran on: client CPU %d, runtime %s%s\n", client_cpu,
         threads.empty() ? "(unknown)" : threads.c_str(),
         client_cpu >= 0 && client_cpu == worker0_cpu
             ? "  (client shares the low-latency worker's CPU)"
             : "");
  row->Set("client_ran_on", std::to_string(client_cpu));
  row->Set("worker0_ran_on", std::to_string(worker0_cpu));
  row->Set("sync_p50_ns", s.median, 0);
  row->Set("sync_p99_ns", s.p99, 0);
  row->Set("sync_p999_ns", s.p999, 0);
  row->Set("sync_p9999_ns", s.p9999, 0);
  row->Set("sync_max_ns", s.max, 0);
  row->Set("win_p50_min_ns", wmin, 0);
  row->Set("win_p50_max_ns", wmax, 0);
  row->Set("slow_run_max", static_cast<double>(t.longest_slow_run), 0);
  if (s.median > 0) row->Set("p999_over_p50", s.p999 / s.median, 3);
}

/** Blocks of the paired latency measurement (see MeasurePaired). */
constexpr u32 kPairedBlocks = 10;

/** One block of MeasurePaired: the block's sync Noop p50 and p99 and its
 * ping-pong p50 (ns). */
struct PairedBlock {
  double noop_p50 = 0;
  double noop_p99 = 0;
  double pp_p50 = 0;
};

/** The Noop's ratios to the ping-pong measured beside it: kPairedBlocks
 * blocks, each `per_block` timed sync Noops of `api` (after a tenth as many
 * untimed) and then, once the worker had 2 ms to fall asleep, `per_block`
 * ping-pong round trips between CPUs 0 and 1. A block takes tens of ms, so
 * a change of the VM's speed mid-run (it flips between a fast and a slow
 * state) moves both halves of most blocks alike, where the run's overall
 * ratio (phase 1 against phase 3, seconds apart) can compare one state with
 * the other. Needs 2 CPUs. Fills `*blocks` (left empty if the ping-pong
 * could not be pinned); false if a Noop failed. The calling thread keeps
 * its own pinning for the Noops. */
template <typename Api>
bool MeasurePaired(Api &api, u64 per_block, std::vector<PairedBlock> *blocks) {
  blocks->clear();
  for (u32 b = 0; b < kPairedBlocks; ++b) {
    std::vector<u64> noop =
        MeasureNoopLatency(api, per_block, std::max<u64>(per_block / 10, 100));
    if (noop.empty()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    bool pinned = false;
    std::vector<u64> pp =
        MeasurePingPong(per_block, per_block / 10, 0, &pinned);
    if (!pinned) {
      blocks->clear();
      return true;
    }
    PairedBlock pb;
    Summary ns = Summarize(noop);
    pb.noop_p50 = ns.median;
    pb.noop_p99 = ns.p99;
    pb.pp_p50 = Summarize(pp).median;
    blocks->push_back(pb);
  }
  return true;
}

/** Prints the per-block ratios of MeasurePaired's `blocks` (median
 * [min..max]) and fills the paired columns of `*row` with their medians. */
void ReportPaired(const std::vector<PairedBlock> &blocks, u64 per_block,
                  CsvRow *row) {
  std::vector<double> r50, r99, pp;
  for (const PairedBlock &b : blocks) {
    if (b.pp_p50 <= 0) continue;
    r50.push_back(b.noop_p50 / b.pp_p50);
    r99.push_back(b.noop_p99 / b.pp_p50);
    pp.push_back(b.pp_p50);
  }
  if (r50.empty()) return;
  auto med = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  };
  auto range = [](const std::vector<double> &v) {
    return std::make_pair(*std::min_element(v.begin(), v.end()),
                          *std::max_element(v.begin(), v.end()));
  };
  printf(
      "  paired blocks (%zu x %llu Noops, then as many ping-pongs, CPU 0 <-> "
      "1):\n",
      r50.size(), static_cast<unsigned long long>(per_block));
  printf("    block ping-pong p50: median %.0f ns [%.0f..%.0f]\n", med(pp),
         range(pp).first, range(pp).second);
  printf(
      "    Noop p50 / ping-pong p50: median %.2fx [%.2f..%.2f]  (aim <= 2)\n",
      med(r50), range(r50).first, range(r50).second);
  printf(
      "    Noop p99 / ping-pong p50: median %.2fx [%.2f..%.2f]  (aim <= 4)\n",
      med(r99), range(r99).first, range(r99).second);
  row->Set("paired_pp_p50_ns", med(pp), 0);
  row->Set("p50_over_pp_paired", med(r50), 3);
  row->Set("p99_over_pp_paired", med(r99), 3);
}

/** Phase 4 (see the top of the file): `pairs` pairs of `seconds`-long
 * windows of 1 thread x 256 Noops of `api` in flight, with tracing off and
 * on. Prints the medians and the per-pair ratio on/off; leaves tracing off
 * and cleared. Returns false if a task or a TraceControl call failed. */
template <typename Api>
bool MeasureTraceOverhead(Api &api, u32 pairs, double seconds, int pin_cpu) {
  printf(
      "4. Task tracing at full throughput (1 thread x 256 in flight, %u "
      "pairs of %.2f s windows, off/on back to back)\n",
      pairs, seconds);
  chi::admin::Client admin;
  std::vector<double> off, on, ratio;
  u64 errors = 0;
  for (u32 p = 0; p < pairs; ++p) {
    double rate[2] = {0, 0};  // [0] off, [1] on
    for (u32 k = 0; k < 2; ++k) {
      const bool trace_on = (k == 0) == (p % 2 == 1);
      auto st = admin.TraceControl(trace_on ? chi::admin::kTraceStart
                                            : chi::admin::kTraceStop);
      if (!st.ok()) {
        fprintf(stderr, "chimaera_benchmark: TraceControl: %s\n",
                st.status().ToString().c_str());
        return false;
      }
      rate[trace_on] = ThroughputOnce(api, 1, 256, seconds, pin_cpu, &errors);
    }
    off.push_back(rate[0]);
    on.push_back(rate[1]);
    ratio.push_back(rate[1] / rate[0]);
  }
  (void)admin.TraceControl(chi::admin::kTraceStop);
  (void)admin.TraceControl(chi::admin::kTraceClear);
  std::sort(off.begin(), off.end());
  std::sort(on.begin(), on.end());
  std::sort(ratio.begin(), ratio.end());
  printf("  tracing off: median %11.0f tasks/s  (min %11.0f, max %11.0f)\n",
         off[off.size() / 2], off.front(), off.back());
  printf("  tracing on:  median %11.0f tasks/s  (min %11.0f, max %11.0f)\n",
         on[on.size() / 2], on.front(), on.back());
  printf("  on/off per pair: median %.3f  [%.3f..%.3f]%s\n",
         ratio[ratio.size() / 2], ratio.front(), ratio.back(),
         errors ? "  ERRORS" : "");
  // A distribution-free 95% confidence interval of the median ratio: the
  // order statistics whose ranks a Binomial(n, 1/2) count reaches with
  // 2.5% in each tail (normal approximation; needs about 10 pairs).
  const size_t n = ratio.size();
  if (n >= 10) {
    double half = 0.98 * std::sqrt(static_cast<double>(n));  // 1.96 sd
    size_t lo = static_cast<size_t>(std::max(0.0, std::floor(n / 2.0 - half)));
    size_t hi = std::min(n - 1, static_cast<size_t>(std::ceil(n / 2.0 + half)));
    printf(
        "  median on/off, 95%% confidence: [%.3f..%.3f] (tracing costs "
        "%.1f%% to %.1f%% of throughput)\n",
        ratio[lo], ratio[hi], (1 - ratio[hi]) * 100, (1 - ratio[lo]) * 100);
  }
  return errors == 0;
}

/** Runs the latency, wake, trace and throughput phases that `phases` selects
 * against `api`, with the measuring threads pinned to `pin_cpu` (if not
 * negative); prints their report and fills `*res` and `*row`. Returns false
 * if a task failed. */
template <typename Api>
bool RunRuntimePhases(Api &api, const char *module, const Phases &phases,
                      u64 tasks, double seconds, u32 repeat, int pin_cpu,
                      u32 trace_pairs, Results *res, CsvRow *row) {
  bool ok = true;
  if (phases.latency || phases.wake) {
    ScopedPin pin(pin_cpu);
    u64 warmup = std::max<u64>(tasks / 10, 1000);
    printf("1. Synchronous %s Noop round trip (AsyncNoop+Wait+DelTask)",
           module);
    if (phases.latency) {
      printf(", %llu warm-up", static_cast<unsigned long long>(warmup));
    }
    printf("\n");
    if (phases.latency) {
      std::vector<u64> noop = MeasureNoopLatency(api, tasks, warmup);
      if (noop.empty()) {
        fprintf(stderr, "chimaera_benchmark: a Noop task failed\n");
        return false;
      }
      DumpSamples("noop", noop);
      ReportNoopLatency(noop, module, res, row);
      if (std::thread::hardware_concurrency() >= 2) {
        u64 per_block = std::max<u64>(tasks / kPairedBlocks, 1000);
        std::vector<PairedBlock> blocks;
        if (!MeasurePaired(api, per_block, &blocks)) {
          fprintf(stderr, "chimaera_benchmark: a Noop task failed\n");
          return false;
        }
        if (blocks.empty()) {
          printf(
              "  paired blocks: skipped (CPUs 0 and 1 could not be "
              "pinned)\n");
        } else {
          ReportPaired(blocks, per_block, row);
        }
      }
    }
    if (phases.wake) {
      std::vector<u64> wake = MeasureWakeLatency(api, 50, 20);
      if (wake.empty()) {
        fprintf(stderr, "chimaera_benchmark: a Noop task failed\n");
        return false;
      }
      Summary wake_s = Summarize(wake);
      PrintLatency("Noop after 20 ms idle (wake)", wake.size(), wake_s);
      row->Set("wake_p50_ns", wake_s.median, 0);
    }
  }
  if (phases.trace) {
    if (phases.latency || phases.wake) printf("\n");
    if (!MeasureTraceOverhead(api, trace_pairs, seconds, pin_cpu)) ok = false;
  }
  if (phases.throughput) {
    if (phases.latency || phases.wake || phases.trace) printf("\n");
    printf(
        "2. Asynchronous %s Noop throughput (%u runs of %.2f s per "
        "configuration)\n",
        module, repeat, seconds);
    for (u32 threads : g_tput_threads) {
      for (u32 depth : g_tput_depths) {
        double median = 0;
        if (!MeasureThroughput(api, threads, depth, seconds, repeat, pin_cpu,
                               &median)) {
          ok = false;
        }
        DumpThroughput(threads, depth, median);
        if (threads == 1 && depth == 16) row->Set("tput_1x16", median, 0);
        if (threads == 1 && depth == 256) row->Set("tput_1x256", median, 0);
        if (threads == 2 && depth == 256) row->Set("tput_2x256", median, 0);
      }
    }
  }
  return ok;
}

/** Runs the ZeroMQ and ping-pong baselines; prints them and fills `*res`. */
void RunBaselines(u64 tasks, u64 zmq_trips, Results *res) {
  printf("3. Baselines\n");
  std::vector<u64> zmq_samples =
      MeasureZmq(zmq_trips, std::max<u64>(zmq_trips / 10, 100));
  DumpSamples("zmq", zmq_samples);
  res->zmq = Summarize(zmq_samples);
  res->have_zmq = true;
  PrintLatency("ZeroMQ ipc:// REQ/REP", zmq_samples.size(), res->zmq);
  const u64 warmup = std::max<u64>(tasks / 10, 1000);
  std::vector<u64> pp = MeasurePingPong(tasks, warmup, 0, &res->pp_pinned);
  DumpSamples("pingpong", pp);
  res->pp = Summarize(pp);
  res->have_pp = true;
  PrintLatency(res->pp_pinned ? "cache-line ping-pong (CPU 0 <-> 1)"
                              : "cache-line ping-pong (unpinned)",
               pp.size(), res->pp);
  if (res->have_noop && res->noop.median > res->pp.median) {
    // The same exchange, as long as a Noop round trip: its tail is what the
    // machine leaves a round trip of that length.
    u64 pad = static_cast<u64>(res->noop.median - res->pp.median);
    bool pinned = false;
    std::vector<u64> padded = MeasurePingPong(tasks, warmup, pad, &pinned);
    DumpSamples("pingpong_padded", padded);
    res->padded = Summarize(padded);
    res->have_padded = true;
    char what[64];
    snprintf(what, sizeof(what), "ping-pong padded by %llu ns",
             static_cast<unsigned long long>(pad));
    PrintLatency(what, padded.size(), res->padded);
  }
  std::vector<HostStalls> stalls = MeasureHostStalls(1.0);
  res->have_stalls = true;
  for (const HostStalls &h : stalls) {
    res->stalls_per_s += h.per_s;
    printf(
        "  host stalls > %llu us, CPU %d%s: %6.0f /s, median %5.1f us, "
        "%4.2f%% of the time\n",
        static_cast<unsigned long long>(kStallNs / 1000), h.cpu,
        h.cpu < 0 ? " (unpinned)" : "", h.per_s, h.median_us, h.lost_pct);
  }
}

/** Prints the ratio lines of what ran, then each aim of the hot path (a
 * ratio to the ping-pong of this run, or of the tail to the median) with
 * whether this run met it, and fills the ratio fields of `*row`. */
void PrintRatios(const Results &res, CsvRow *row) {
  if (!res.have_noop) return;
  const Summary &n = res.noop;
  bool have_pp = res.have_pp && res.pp.median > 0;
  bool have_zmq = res.have_zmq && res.zmq.median > 0 && n.median > 0;
  if (have_pp || have_zmq) printf("\nRatios (median):\n");
  if (have_pp) {
    printf("  Noop / ping-pong: %8.1fx\n", n.median / res.pp.median);
  }
  if (have_zmq) {
    printf("  Noop / ZeroMQ:    %8.3fx  (ZeroMQ is %.1fx slower)\n",
           n.median / res.zmq.median, res.zmq.median / n.median);
  }
  printf("\nAims:\n");
  if (have_pp) {
    double r50 = n.median / res.pp.median;
    double r99 = n.p99 / res.pp.median;
    printf("  Noop p50 / ping-pong p50:   %7.2fx  (aim <= 2)  %s\n", r50,
           r50 <= 2 ? "met" : "MISSED");
    printf("  Noop p99 / ping-pong p50:   %7.2fx  (aim <= 4)  %s\n", r99,
           r99 <= 4 ? "met" : "MISSED");
    row->Set("pingpong_p50_ns", res.pp.median, 0);
    row->Set("p50_over_pp", r50, 3);
    row->Set("p99_over_pp", r99, 3);
  }
  if (n.median > 0) {
    double r = n.p999 / n.median;
    printf("  Noop p99.9 / Noop p50:      %7.2fx  (aim <= 5)  %s\n", r,
           r <= 5 ? "met" : "MISSED");
  }
  if (res.have_padded && res.padded.median > 0) {
    double r = res.padded.p999 / res.padded.median;
    printf(
        "    the padded ping-pong's:   %7.2fx  (what this machine allows a "
        "round trip as long as the Noop)\n",
        r);
    row->Set("pad_p999_p50", r, 3);
  }
  if (res.have_stalls && n.median > 0) {
    // A stall on either CPU during a round trip delays it.
    double hit = res.stalls_per_s * n.median / 1e9 * 100;
    printf(
        "    host stalls hit about %.3f%% of Noop round trips (%.0f stalls/s "
        "over CPUs 0 and 1); p99.9 needs < 0.1%%\n",
        hit, res.stalls_per_s);
    row->Set("host_stalls_s", res.stalls_per_s, 0);
  }
}

}  // namespace

/** Parses options, runs the selected measurements, prints the report and
 * appends the --csv line. */
int main(int argc, char **argv) {
  CLI::App app{
      "Measure Chimaera task latency and throughput against the runtime "
      "named by CHI_SERVER_CONF, with ZeroMQ and cache-line baselines."};
  u64 tasks = 100000;
  double seconds = 0.5;
  u32 repeat = 3;
  u32 trace_pairs = 10;
  u64 zmq_trips = 20000;
  std::string phase_list = "all";
  std::string module = "admin";
  int pin_client = -1;
  int pin_container = -1;
  std::string csv_path;
  std::string label;
  app.add_option("-n,--tasks", tasks,
                 "Timed synchronous Noops (and ping-pong round trips)")
      ->check(CLI::Range(static_cast<u64>(1), static_cast<u64>(1) << 32));
  app.add_option("-s,--seconds", seconds,
                 "Duration of each throughput configuration")
      ->check(CLI::Range(0.01, 60.0));
  app.add_option("-r,--repeat", repeat,
                 "Runs of each throughput configuration (median reported)")
      ->check(CLI::Range(1, 100));
  app.add_option("--trace-pairs", trace_pairs,
                 "Pairs of tracing off/on windows of the trace phase")
      ->check(CLI::Range(1u, 1000u));
  app.add_option("--zmq-trips", zmq_trips, "Timed ZeroMQ round trips")
      ->check(CLI::Range(static_cast<u64>(1), static_cast<u64>(1) << 32));
  app.add_option("--phases", phase_list,
                 "Comma list of latency, wake, throughput, baselines (or all: "
                 "these four) and trace (task tracing on/off pairs)")
      ->capture_default_str();
  app.add_option("--module", module,
                 "Whose Noop the latency, wake and throughput phases use: the "
                 "admin pool's or a fresh small_message pool's")
      ->check(CLI::IsMember({"admin", "small_message"}))
      ->capture_default_str();
  app.add_option("--pin-container", pin_container,
                 "With --module small_message: pin container 0 of the pool to "
                 "this worker and address every Noop to it by id")
      ->check(CLI::Range(0, 1023));
  app.add_option("--pin-client", pin_client,
                 "Pin the measuring thread(s) of the latency, wake and "
                 "throughput phases to this CPU (-1: unpinned)")
      ->check(CLI::Range(-1, CPU_SETSIZE - 1))
      ->capture_default_str();
  app.add_option("--csv", csv_path,
                 "Append one line of results to this file (header if new)");
  app.add_option("--label", label, "First field of the --csv line");
  app.add_option("--dump-dir", g_dump_dir,
                 "Write raw samples to this existing directory: "
                 "latency_{noop,pingpong,zmq}.txt (ns, one a line) and "
                 "throughput.csv (threads,depth,tasks_per_s)");
  app.add_option("--client-threads", g_tput_threads,
                 "Client thread counts the throughput phase runs")
      ->check(CLI::Range(1u, 64u))
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--depths", g_tput_depths,
                 "Tasks in flight per client thread the throughput phase runs")
      ->check(CLI::Range(1u, 1u << 20))
      ->delimiter(',')
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  Phases phases;
  std::string bad;
  if (!ParsePhases(phase_list, &phases, &bad)) {
    fprintf(stderr, "chimaera_benchmark: --phases: unknown phase '%s'\n",
            bad.c_str());
    return 2;
  }

  if (pin_container >= 0 && module != "small_message") {
    fprintf(stderr,
            "chimaera_benchmark: --pin-container needs --module "
            "small_message\n");
    return 2;
  }
  if (!chi_bench::ConnectAndPrintHeader("chimaera_benchmark")) return 1;
  printf("steady_clock::now() pair overhead: median %.0f ns\n",
         ClockOverheadNs());
  if (pin_client >= 0) {
    ScopedPin probe(pin_client);
    if (!probe.pinned()) {
      printf("client: cannot pin to CPU %d; measuring unpinned\n", pin_client);
      pin_client = -1;
    }
  }
  if (pin_client >= 0) {
    printf("client: measuring threads pinned to CPU %d\n\n", pin_client);
  } else {
    printf("client: measuring threads unpinned\n\n");
  }

  CsvRow row;
  row.Set("label", CsvSafe(label));
  row.Set("module", module);
  row.Set("client_cpu", std::to_string(pin_client));
  Results res;
  int rc = 0;
  if (phases.latency || phases.wake || phases.throughput || phases.trace) {
    bool ok = true;
    if (module == "admin") {
      chi::admin::Client admin;
      ok = RunRuntimePhases(admin, "admin", phases, tasks, seconds, repeat,
                            pin_client, trace_pairs, &res, &row);
    } else {
      // Like a user: a pool of the module, created by name (unique to this
      // process), then its client's AsyncNoop.
      std::string pool_name = "chimaera_benchmark_" + std::to_string(getpid());
      chi::small_message::Client sm;
      hshm::Status s = sm.Create(pool_name, pin_container >= 0 ? 2 : 1);
      if (s.ok() && pin_container >= 0) {
        s = chi::admin::Client().PinContainer(
            sm.pool_id(), 0, static_cast<chi::u32>(pin_container));
        g_noop_dom = chi::DomainQuery::GetLocalId(0);
        printf(
            "small_message container 0 pinned to worker %d; Noops go to it "
            "by id\n\n",
            pin_container);
      }
      if (!s.ok()) {
        fprintf(stderr, "chimaera_benchmark: small_message pool: %s\n",
                s.ToString().c_str());
        CHIMAERA->ClientFinalize();
        return 1;
      }
      ok = RunRuntimePhases(sm, "small_message", phases, tasks, seconds, repeat,
                            pin_client, trace_pairs, &res, &row);
      s = chi::admin::Client().DestroyPool(sm.pool_id());
      if (!s.ok()) {
        fprintf(stderr, "chimaera_benchmark: destroying pool %s: %s\n",
                pool_name.c_str(), s.ToString().c_str());
      }
    }
    if (!ok) rc = 1;
  }
  if (phases.baselines) {
    if (phases.latency || phases.wake || phases.throughput) printf("\n");
    RunBaselines(tasks, zmq_trips, &res);
    row.Set("pp_pinned", res.pp_pinned ? "1" : "0");
  }
  PrintRatios(res, &row);
  row.Set("failed", rc ? "1" : "0");
  if (!csv_path.empty() && !row.Append(csv_path)) rc = rc ? rc : 1;
  CHIMAERA->ClientFinalize();
  return rc;
}
