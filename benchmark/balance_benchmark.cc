// balance_benchmark: load balancing of DomainQuery::GetDynamic() tasks over
// the nodes of a live Chimaera cluster, measured from a client attached to
// node 1 (CHI_SERVER_CONF, CHI_SERVER_ADDR). The runtimes' balance.dynamic
// setting (least_loaded or local) decides where dynamic tasks go; run the
// program once per setting (scripts/run_balance_benchmark.sh does, on a
// fresh cluster each time) and compare.
//
// One small_message pool of --nodes containers (container c lives on node
// c % nodes + 1, one per node; checked at start with one pinned Io each).
// Io models a serial device per container (one I/O at a time, FIFO; the
// task's fiber sleeps), Compute burns CPU (ComputeKernel, calibrated here).
//
// 0. Baseline: synchronous small_message Noop round trip (submit + Wait +
//    DelTask) to the container on node 1 (local), on node 2 (remote) and
//    with GetDynamic(); the p50s state the other figures as ratios. The
//    share of dynamic Noops slower than halfway between the local and the
//    remote p50 tells how many of them went to another node.
// 1. Skew: --io-tasks Io of --io-us each, all submitted here with
//    GetDynamic(), at most --window in flight (a completed slot is refilled
//    at once). Tasks per node, max/mean per node and makespan (first
//    submit to last completion), next to the ideal (even spread) and the
//    all-local makespans.
// 2. Skew plus background: first --bg-tasks Io of --bg-us pinned on the
//    container of node 2 (GetGlobalId), a pause of --settle-ms for the load
//    reports, then the same skewed batch. Tasks per node and makespan count
//    the batch only; the background tasks are then waited for. The ideal
//    makespan spreads the batch so that every device finishes together,
//    node 2's starting with what is left of the background.
// 3. Mixed short/long: --shorts synchronous Compute tasks of --short-us
//    (GetDynamic), one at a time, alone, then while --long-inflight Io tasks
//    of --long-us (GetDynamic) are kept in flight (refilled between shorts);
//    p50/p99 of the shorts and p99 mixed / p99 alone. Every Compute result
//    is checked against the kernel run here.
//
// The last line, "RESULT key=value ...", is what the script aggregates.
// Any failed task makes the exit status 1; a task that does not complete
// within --task-timeout-s stops the run. A plain program (not Google
// Benchmark): the cluster must already run.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "chimaera/chimaera.h"
#include "small_message/small_message_client.h"

namespace {

using Clock = std::chrono::steady_clock;
using chi::DomainQuery;
using chi::FullPtr;
using chi::small_message::ComputeKernel;
using chi::small_message::ComputeTask;
using chi::small_message::IoTask;
using chi_bench::CalibrateItersPerUs;
using chi_bench::ElapsedNs;
using chi_bench::ElapsedSec;
using chi_bench::Quantile;
using hshm::u32;
using hshm::u64;

/** How long one task may take before the run is declared broken (us). */
u64 g_task_timeout_us = 30ull * 1000 * 1000;

/** Distinct Compute seeds (their results are precomputed for checking). */
constexpr u32 kSeeds = 16;

/** Failures of the run; `fatal` once a task hung (the run stops). */
struct Errors {
  u64 count = 0;
  std::string first;
  bool fatal = false;

  /** Records a failure described by `what` (the first five are printed). */
  void Fail(const std::string &what) {
    if (count++ == 0) first = what;
    if (count <= 5) {
      fprintf(stderr, "balance_benchmark: ERROR: %s\n", what.c_str());
    }
  }
};

/** p50/p99 of a sample of durations (ns). */
struct Latency {
  size_t n = 0;
  double p50 = 0;
  double p99 = 0;
  double max = 0;
};

/** Sorts `samples` and takes its quantiles (zeros when empty). */
Latency Summarize(std::vector<u64> &samples) {
  Latency l;
  l.n = samples.size();
  if (samples.empty()) return l;
  std::sort(samples.begin(), samples.end());
  l.p50 = Quantile(samples, 0.5);
  l.p99 = Quantile(samples, 0.99);
  l.max = static_cast<double>(samples.back());
  return l;
}

/** `a / b`, or 0 when `b` is 0. */
double Ratio(double a, double b) { return b > 0 ? a / b : 0.0; }

/** Waits for `t` (at most g_task_timeout_us). False, after recording a fatal
 * error, if it did not complete: the task is then left alone. */
template <typename TaskT>
bool Await(const FullPtr<TaskT> &t, const char *what, Errors *err) {
  if (t->WaitFor(g_task_timeout_us)) return true;
  err->Fail(std::string(what) + " did not complete within " +
            std::to_string(g_task_timeout_us / 1000) + " ms");
  err->fatal = true;
  return false;
}

/** Checks the status of completed `t`, then frees it. False on failure. */
template <typename TaskT>
bool Reap(FullPtr<TaskT> &t, const char *what, Errors *err) {
  chi::Status s = t->GetStatus();
  CHI_IPC->DelTask(t);
  t = FullPtr<TaskT>();
  if (!s.ok()) {
    err->Fail(std::string(what) + " failed: " + s.ToString());
    return false;
  }
  return true;
}

/** Times `n` synchronous Noops on `dom` after `warmup` untimed ones (ns). */
std::vector<u64> MeasureNoop(chi::small_message::Client &sm,
                             const DomainQuery &dom, u32 n, u32 warmup,
                             Errors *err) {
  std::vector<u64> samples;
  samples.reserve(n);
  for (u32 i = 0; i < warmup + n && !err->fatal; ++i) {
    Clock::time_point a = Clock::now();
    auto t = sm.AsyncNoop(dom);
    if (t.IsNull()) {
      err->Fail("main segment is full");
      break;
    }
    if (!Await(t, "a Noop", err)) break;
    bool ok = Reap(t, "a Noop", err);
    Clock::time_point b = Clock::now();
    if (ok && i >= warmup) samples.push_back(ElapsedNs(a, b));
  }
  return samples;
}

/** Where a batch of Io tasks ran and how long it took. */
struct Batch {
  std::map<u32, u32> per_node;  ///< Completed tasks per node.
  double makespan_s = 0;        ///< First submit to last completion.
  u32 failed = 0;

  /** Tasks on `node` (0 if none). */
  u32 On(u32 node) const {
    auto it = per_node.find(node);
    return it == per_node.end() ? 0 : it->second;
  }
  /** Max over mean of the tasks per node, over `nodes` nodes. */
  double MaxOverMean(u32 nodes) const {
    u32 total = 0, most = 0;
    for (auto &kv : per_node) {
      total += kv.second;
      most = std::max(most, kv.second);
    }
    return total ? most * static_cast<double>(nodes) / total : 0;
  }
};

/** Records completed Io `t` in `b` (its node, or a failure) and frees it. */
void ReapIo(FullPtr<IoTask> &t, Batch *b, Errors *err) {
  u32 node = t->node_;
  if (Reap(t, "an Io", err)) {
    b->per_node[node]++;
  } else {
    b->failed++;
  }
}

/** Runs `n` Io tasks of `us` on `dom` with at most `window` in flight: slots
 * are polled and a completed one is refilled at once. */
Batch RunIoWindow(chi::small_message::Client &sm, u32 n, u32 us, u32 window,
                  const DomainQuery &dom, Errors *err) {
  Batch b;
  std::vector<FullPtr<IoTask>> slots(std::max<u32>(1, window));
  std::vector<Clock::time_point> since(slots.size());
  u32 submitted = 0, outstanding = 0;
  Clock::time_point start = Clock::now();
  while ((submitted < n || outstanding > 0) && !err->fatal) {
    bool progress = false;
    for (size_t i = 0; i < slots.size() && !err->fatal; ++i) {
      FullPtr<IoTask> &t = slots[i];
      if (!t.IsNull()) {
        if (!t->IsComplete()) {
          if (ElapsedNs(since[i], Clock::now()) > g_task_timeout_us * 1000) {
            err->Fail("an Io did not complete within " +
                      std::to_string(g_task_timeout_us / 1000) + " ms");
            err->fatal = true;
          }
          continue;
        }
        ReapIo(t, &b, err);
        outstanding--;
        progress = true;
      }
      if (submitted < n) {
        t = sm.AsyncIo(us, dom);
        if (t.IsNull()) {
          err->Fail("main segment is full");
          err->fatal = true;
          break;
        }
        since[i] = Clock::now();
        submitted++;
        outstanding++;
        progress = true;
      }
    }
    if (!progress) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  b.makespan_s = ElapsedSec(start, Clock::now());
  return b;
}

/** Prints one batch: tasks per node, max/mean and makespan (ms). */
void PrintBatch(const char *what, const Batch &b, u32 nodes) {
  printf("  %-26s per node:", what);
  for (u32 n = 1; n <= nodes; ++n) printf(" %u=%-4u", n, b.On(n));
  printf(" max/mean %.2f  makespan %7.1f ms  failed %u\n", b.MaxOverMean(nodes),
         b.makespan_s * 1e3, b.failed);
}

/** What the short-task phase measures. */
struct ShortSpec {
  u32 shorts = 0;         ///< Timed short tasks.
  u32 warmup = 0;         ///< Untimed ones first.
  u64 iters = 0;          ///< Kernel iterations of a short task.
  u32 long_us = 0;        ///< Device time of a long task.
  u32 long_inflight = 0;  ///< Long tasks kept in flight (0: alone).
};

/** Latencies of the short tasks, and where the long ones ran. */
struct ShortResult {
  std::vector<u64> samples;  ///< Per short task (ns).
  Batch longs;               ///< The long tasks that completed.
};

/** Runs the short tasks one at a time (AsyncCompute(GetDynamic) + Wait +
 * check + DelTask, timed without the check), refilling the ring of
 * long_inflight long Io tasks before each one; then waits for the longs. */
ShortResult RunShorts(chi::small_message::Client &sm, const ShortSpec &spec,
                      const std::vector<u64> &expect, Errors *err) {
  ShortResult r;
  r.samples.reserve(spec.shorts);
  std::vector<FullPtr<IoTask>> longs(spec.long_inflight);
  Clock::time_point start = Clock::now();
  for (u32 i = 0; i < spec.warmup + spec.shorts && !err->fatal; ++i) {
    for (FullPtr<IoTask> &t : longs) {
      if (!t.IsNull() && t->IsComplete()) ReapIo(t, &r.longs, err);
      if (t.IsNull()) {
        t = sm.AsyncIo(spec.long_us, DomainQuery::GetDynamic());
        if (t.IsNull()) {
          err->Fail("main segment is full");
          err->fatal = true;
          break;
        }
      }
    }
    if (err->fatal) break;
    const u64 seed = i % kSeeds;
    Clock::time_point a = Clock::now();
    auto t = sm.AsyncCompute(spec.iters, seed, DomainQuery::GetDynamic());
    if (t.IsNull()) {
      err->Fail("main segment is full");
      break;
    }
    if (!Await(t, "a Compute", err)) break;
    Clock::time_point b = Clock::now();
    u64 result = t->result_;
    bool ok = Reap(t, "a Compute", err);
    if (ok && result != expect[seed]) {
      err->Fail("a Compute returned a wrong result");
      ok = false;
    }
    if (ok && i >= spec.warmup) r.samples.push_back(ElapsedNs(a, b));
  }
  for (FullPtr<IoTask> &t : longs) {
    if (t.IsNull() || err->fatal) continue;
    if (Await(t, "a long Io", err)) ReapIo(t, &r.longs, err);
  }
  r.longs.makespan_s = ElapsedSec(start, Clock::now());
  return r;
}

/** The shortest makespan (ms) of `main_ms` of movable device time spread
 * over `nodes` devices when one of them is still busy for `bg_ms`. */
double IdealWithBackground(double main_ms, double bg_ms, u32 nodes) {
  const double even = (main_ms + bg_ms) / nodes;
  if (bg_ms <= even) return even;
  return std::max(bg_ms, main_ms / (nodes - 1));
}

/** Prints one latency line (microseconds). */
void PrintLatency(const char *what, const Latency &l, const char *note = "") {
  printf("  %-34s n=%-5zu p50 %8.1f  p99 %8.1f  max %8.1f us%s\n", what, l.n,
         l.p50 / 1e3, l.p99 / 1e3, l.max / 1e3, note);
}

}  // namespace

/** Runs the three phases against the cluster node 1 of which this process
 * attaches to; prints the results and a RESULT line. */
int main(int argc, char **argv) {
  CLI::App app{
      "GetDynamic() load balancing on a live multi-node Chimaera cluster "
      "(attach to node 1)"};
  u32 nodes = 3;
  std::string pool_name = "balance_bench";
  u32 noops = 1000;
  u32 io_tasks = 300;
  u32 io_us = 2000;
  u32 window = 64;
  u32 bg_tasks = 60;
  u32 bg_us = 5000;
  u32 settle_ms = 60;
  u32 shorts = 3000;
  double short_us = 50;
  u32 long_us = 10000;
  u32 long_inflight = 8;
  double timeout_s = 30;
  std::string label = "?";
  app.add_option("--nodes", nodes, "Nodes of the cluster (>= 2)");
  app.add_option("--pool", pool_name, "Name of the small_message pool");
  app.add_option("--noops", noops, "Timed Noops per baseline");
  app.add_option("--io-tasks", io_tasks, "Io tasks of the skewed batch");
  app.add_option("--io-us", io_us, "Device time of each (us)");
  app.add_option("--window", window, "Io tasks in flight at most");
  app.add_option("--bg-tasks", bg_tasks,
                 "Pinned background Io tasks on node 2 (phase 2)");
  app.add_option("--bg-us", bg_us, "Device time of each (us)");
  app.add_option("--settle-ms", settle_ms,
                 "Pause after submitting the background load (ms)");
  app.add_option("--shorts", shorts, "Timed short Compute tasks per run");
  app.add_option("--short-us", short_us, "CPU time of a short task (us)");
  app.add_option("--long-us", long_us, "Device time of a long Io task (us)");
  app.add_option("--long-inflight", long_inflight,
                 "Long tasks kept in flight in the mixed run");
  app.add_option("--task-timeout-s", timeout_s,
                 "Seconds a task may take before the run is broken");
  app.add_option("--label", label, "Printed on the RESULT line (e.g. mode)");
  CLI11_PARSE(app, argc, argv);
  if (nodes < 2 || window == 0 || io_tasks == 0 || shorts == 0) {
    fprintf(stderr,
            "balance_benchmark: need --nodes >= 2 and nonzero --window, "
            "--io-tasks and --shorts\n");
    return 2;
  }
  g_task_timeout_us = static_cast<u64>(timeout_s * 1e6);

  if (!chi_bench::ConnectAndPrintHeader("balance_benchmark")) return 1;
  Errors err;
  const u32 my_node = CHI_IPC->node_id();
  if (my_node != 1) {
    fprintf(stderr,
            "balance_benchmark: attached to node %u; attach to node 1 "
            "(CHI_SERVER_ADDR)\n",
            my_node);
    CHIMAERA->ClientFinalize();
    return 2;
  }
  chi::small_message::Client sm;
  hshm::Status s = sm.Create(pool_name, nodes);
  if (!s.ok()) {
    fprintf(stderr, "balance_benchmark: pool %s: %s\n", pool_name.c_str(),
            s.ToString().c_str());
    CHIMAERA->ClientFinalize();
    return 1;
  }

  // Placement: container c should live on node c % nodes + 1. Find the
  // containers on nodes 1 and 2 from where a pinned Io actually ran.
  std::map<u32, u32> container_of;  // node -> container
  for (u32 c = 0; c < nodes && !err.fatal; ++c) {
    auto t = sm.AsyncIo(1, DomainQuery::GetGlobalId(c));
    if (t.IsNull()) {
      err.Fail("main segment is full");
      break;
    }
    if (!Await(t, "a placement Io", &err)) break;
    u32 node = t->node_;
    if (Reap(t, "a placement Io", &err)) {
      container_of.emplace(node, c);
      if (node != c % nodes + 1) {
        printf("  note: container %u is on node %u (expected %u)\n", c, node,
               c % nodes + 1);
      }
    }
  }
  if (err.fatal || !container_of.count(1) || !container_of.count(2)) {
    fprintf(stderr, "balance_benchmark: no container on node 1 or 2\n");
    if (err.fatal) std::_Exit(1);
    CHIMAERA->ClientFinalize();
    return 1;
  }
  const DomainQuery on1 = DomainQuery::GetGlobalId(container_of[1]);
  const DomainQuery on2 = DomainQuery::GetGlobalId(container_of[2]);
  // Let the heartbeats and load reports of the fresh pool settle.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));

  double iters_per_us = CalibrateItersPerUs(ComputeKernel);
  const u64 short_iters =
      std::max<u64>(1, static_cast<u64>(short_us * iters_per_us + 0.5));
  std::vector<u64> expect(kSeeds);
  for (u32 k = 0; k < kSeeds; ++k) expect[k] = ComputeKernel(short_iters, k);
  printf(
      "pool %s: %u containers on %u nodes; kernel %.1f iterations/us here "
      "(short task %.0f us = %llu iterations); label %s\n",
      pool_name.c_str(), nodes, nodes, iters_per_us, short_us,
      static_cast<unsigned long long>(short_iters), label.c_str());
  Clock::time_point run_start = Clock::now();

  // 0. Baseline round trips.
  printf("\n0. Synchronous Noop round trip (baseline)\n");
  std::vector<u64> v = MeasureNoop(sm, on1, noops, 100, &err);
  Latency noop_local = Summarize(v);
  v = MeasureNoop(sm, on2, noops, 100, &err);
  Latency noop_remote = Summarize(v);
  v = MeasureNoop(sm, DomainQuery::GetDynamic(), noops, 100, &err);
  Latency noop_dyn = Summarize(v);
  PrintLatency("Noop on node 1 (local)", noop_local);
  PrintLatency("Noop on node 2 (remote)", noop_remote);
  // Dynamic Noops slower than halfway between the local and remote p50:
  // most likely sent to another node.
  const double cut = (noop_local.p50 + noop_remote.p50) / 2;
  const double dyn_far =
      v.empty() ? 0.0
                : static_cast<double>(std::count_if(
                      v.begin(), v.end(), [cut](u64 x) { return x > cut; })) /
                      v.size();
  char far_note[80];
  snprintf(far_note, sizeof(far_note), "  (%.0f%% slower than %.1f us)",
           dyn_far * 100, cut / 1e3);
  PrintLatency("Noop GetDynamic()", noop_dyn, far_note);

  // 1. Skewed submission.
  Batch skew, bg;
  const double skew_ideal_ms = io_tasks * (io_us / 1e3) / nodes;
  double bg_ideal_ms = 0;
  if (!err.fatal) {
    printf(
        "\n1. Skew: %u Io x %u us, all submitted at node 1 with GetDynamic(), "
        "window %u (ideal makespan %.1f ms, all on one node %.1f ms)\n",
        io_tasks, io_us, window, io_tasks * (io_us / 1e3) / nodes,
        io_tasks * (io_us / 1e3));
    skew = RunIoWindow(sm, io_tasks, io_us, window, DomainQuery::GetDynamic(),
                       &err);
    PrintBatch("dynamic batch", skew, nodes);
  }

  // 2. Skew with a pinned background load on node 2.
  if (!err.fatal) {
    const double main_ms = io_tasks * (io_us / 1e3);
    const double bg_ms = bg_tasks * (bg_us / 1e3);
    // What is left of the background when the batch starts.
    bg_ideal_ms =
        IdealWithBackground(main_ms, std::max(0.0, bg_ms - settle_ms), nodes);
    printf(
        "\n2. Skew + background: %u Io x %u us pinned on node 2 first (%.1f "
        "ms of its device), %u ms pause, then the same batch (ideal "
        "makespan %.1f ms)\n",
        bg_tasks, bg_us, bg_ms, settle_ms, bg_ideal_ms);
    std::vector<FullPtr<IoTask>> background;
    Clock::time_point bg_start = Clock::now();
    for (u32 i = 0; i < bg_tasks; ++i) {
      background.push_back(sm.AsyncIo(bg_us, on2));
      if (background.back().IsNull()) {
        background.pop_back();
        err.Fail("main segment is full");
        break;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(settle_ms));
    bg = RunIoWindow(sm, io_tasks, io_us, window, DomainQuery::GetDynamic(),
                     &err);
    Batch bgb;
    for (FullPtr<IoTask> &t : background) {
      if (err.fatal) break;
      if (Await(t, "a background Io", &err)) ReapIo(t, &bgb, &err);
    }
    bgb.makespan_s = ElapsedSec(bg_start, Clock::now());
    PrintBatch("dynamic batch", bg, nodes);
    PrintBatch("background (pinned)", bgb, nodes);
    for (auto &kv : bgb.per_node) {
      if (kv.first != 2) {
        err.Fail(std::to_string(kv.second) +
                 " pinned background Io ran on node " +
                 std::to_string(kv.first) + ", not node 2");
      }
    }
  }

  // 3. Mixed short/long.
  Latency alone, mixed;
  Batch longs;
  if (!err.fatal) {
    printf(
        "\n3. Short tasks: synchronous Compute of %.0f us (GetDynamic), alone "
        "and with %u Io x %u us (GetDynamic) kept in flight\n",
        short_us, long_inflight, long_us);
    ShortSpec spec{shorts, 100, short_iters, long_us, 0};
    ShortResult a = RunShorts(sm, spec, expect, &err);
    alone = Summarize(a.samples);
    spec.long_inflight = long_inflight;
    ShortResult m = RunShorts(sm, spec, expect, &err);
    mixed = Summarize(m.samples);
    longs = m.longs;
    PrintLatency("short alone", alone);
    char note[96];
    snprintf(note, sizeof(note), "  (p99 %.2fx alone)",
             Ratio(mixed.p99, alone.p99));
    PrintLatency("short with long tasks", mixed, note);
    PrintBatch("long Io tasks", longs, nodes);
  }

  printf("\nload average %s, %.1f s\n", chi_bench::LoadAverage().c_str(),
         ElapsedSec(run_start, Clock::now()));
  printf(
      "RESULT label=%s noop_local_p50_us=%.2f noop_remote_p50_us=%.2f "
      "noop_dyn_p50_us=%.2f noop_dyn_far=%.3f skew_makespan_ms=%.1f "
      "skew_ideal_ms=%.1f skew_maxmean=%.3f skew_n1=%u skew_n2=%u "
      "skew_n3=%u skew_failed=%u bg_makespan_ms=%.1f bg_ideal_ms=%.1f "
      "bg_maxmean=%.3f bg_n1=%u bg_n2=%u bg_n3=%u bg_failed=%u "
      "short_alone_p50_us=%.2f short_alone_p99_us=%.2f "
      "short_mixed_p50_us=%.2f short_mixed_p99_us=%.2f p99_mixed_alone=%.3f "
      "long_n1=%u long_n2=%u long_n3=%u errors=%llu\n",
      label.c_str(), noop_local.p50 / 1e3, noop_remote.p50 / 1e3,
      noop_dyn.p50 / 1e3, dyn_far, skew.makespan_s * 1e3, skew_ideal_ms,
      skew.MaxOverMean(nodes), skew.On(1), skew.On(2), skew.On(3), skew.failed,
      bg.makespan_s * 1e3, bg_ideal_ms, bg.MaxOverMean(nodes), bg.On(1),
      bg.On(2), bg.On(3), bg.failed, alone.p50 / 1e3, alone.p99 / 1e3,
      mixed.p50 / 1e3, mixed.p99 / 1e3, Ratio(mixed.p99, alone.p99),
      longs.On(1), longs.On(2), longs.On(3),
      static_cast<unsigned long long>(err.count));
  if (err.count) {
    printf("ERRORS: %llu (first: %s)\n",
           static_cast<unsigned long long>(err.count), err.first.c_str());
  }
  if (err.fatal) {
    // A task is still in flight: leave without detaching under it.
    fflush(stdout);
    std::_Exit(1);
  }
  CHIMAERA->ClientFinalize();
  return err.count ? 1 : 0;
}
