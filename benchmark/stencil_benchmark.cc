// stencil_benchmark: a bulk-synchronous stencil-like loop against a live
// Chimaera runtime (the one CHI_SERVER_CONF names), driven five ways, and the
// smallest task size each way keeps the cores busy at (METG).
//
// Each timestep runs one Compute task per point (`width` points); a step
// needs the previous one done. Point i runs on container i % cores of a
// small_message pool with `cores` containers. A task of size T us runs
// ComputeKernel for T us worth of iterations (calibrated on this machine).
// Variants:
//   client   the client submits a step (AsyncCompute per point), waits for
//            each task, checks and frees it, then the next step;
//   group    the same, but one chi::TaskGroup per step and one group Wait;
//   deps     no barrier: task (s, i) depends on (s-1, i-1..i+1) (clamped)
//            through chi::SetDependencies; steps go out in windows of
//            --window steps, one TaskGroup each, at most --depth windows in
//            flight; a step is freed once the step after it was waited for;
//   runtime  one StencilRun task: the loop runs inside the runtime (the
//            method submits and waits for the Computes from its fiber);
//   openmp   the same loop with OpenMP tasks in this process (`cores`
//            threads, one task per point, taskwait per step).
// efficiency = width * steps * task_us / (wall_us * cores). A run's step
// count comes from a 10-step pilot (whose checksum is checked against the
// client-side kernel), aiming at 2/3 of --max-seconds, within 10-1000 steps
// (resized if it came out under half that); a run that passes --max-seconds
// stops after the step (or window) in progress, except `runtime`, which
// always runs its steps. With --repeat N the best of N timed runs counts (on
// a shared machine, the least disturbed one). METG(50%) is the smallest task
// size whose efficiency is at least 50%.
// With -v every timed run also prints the CPU time per task of the client
// thread (CLOCK_THREAD_CPUTIME_ID) and of the runtime's threads (their
// schedstat), idle polling included: where the cores went.
//
// A plain program (not Google Benchmark): the runtime must already run (see
// scripts/run_stencil_benchmark.sh, which gives it `cores` low-latency
// workers).
#include <dirent.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "chimaera/chimaera.h"
#include "small_message/small_message_client.h"

#ifndef CHI_HAVE_TASK_GRAPH
#define CHI_HAVE_TASK_GRAPH 1
#endif
#if CHI_HAVE_TASK_GRAPH
#include "chimaera/task_graph.h"
#endif

namespace {

using Clock = std::chrono::steady_clock;
using chi::small_message::ComputeKernel;
using chi::small_message::ComputeTask;
using chi::small_message::StencilSeed;
using chi_bench::CalibrateItersPerUs;
using chi_bench::ElapsedSec;
using hshm::u32;
using hshm::u64;

/** Fewest and most steps of a timed run (and the pilot's length). */
constexpr u32 kMinSteps = 10;
constexpr u32 kMaxSteps = 1000;
/** The efficiency a task size must reach to count for METG. */
constexpr double kMetgEfficiency = 0.5;
/** Every variant, in table order. */
const char *const kVariants[] = {"client", "group", "deps", "runtime",
                                 "openmp"};

/** Splits a comma-separated list (empty items dropped). */
std::vector<std::string> SplitList(const std::string &list) {
  std::vector<std::string> out;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

/** What one loop needs: its shape, the kernel length and the time cap. */
struct RunSpec {
  u32 width = 0;
  u32 steps = 0;
  u64 iters = 0;
  u32 cores = 1;
  u32 window = 8;            ///< Steps per window (deps).
  u32 depth = 8;             ///< Windows in flight at most (deps).
  double max_seconds = 1e9;  ///< Stop after the step that passes this.
};

/** The outcome of one loop. */
struct RunResult {
  bool ok = true;
  std::string error;       ///< The first failure, if any.
  u32 steps_done = 0;      ///< Steps that completed.
  double seconds = 0;      ///< Wall time of those steps.
  u64 checksum = 0;        ///< Sum of every result (mod 2^64).
  double client_cpu = 0;   ///< CPU seconds of the client thread (timed runs).
  double runtime_cpu = 0;  ///< CPU seconds of the runtime process (timed runs).

  /** Records the first failure. */
  void Fail(const std::string &why) {
    if (ok) error = why;
    ok = false;
  }
};

/** The container of point `i` (of a pool with `cores` containers). */
chi::DomainQuery PointDom(u32 i, u32 cores) {
  return chi::DomainQuery::GetLocalId(i % cores);
}

/** Waits for `t`, adds its result to `r` (or records its failure) and frees
 * it. A null task is a failed allocation. */
void CollectTask(chi::FullPtr<ComputeTask> &t, RunResult *r) {
  if (t.IsNull()) {
    r->Fail("main segment is full");
    return;
  }
  t->Wait();
  if (t->rc_ == 0) {
    r->checksum += t->result_;
  } else {
    r->Fail("Compute failed: " + t->GetStatus().ToString());
  }
  CHI_IPC->DelTask(t);
  t = chi::FullPtr<ComputeTask>();
}

/** Variant client: per step, AsyncCompute every point, then wait for, check
 * and free each task. */
RunResult RunClientLoop(chi::small_message::Client &client,
                        const RunSpec &spec) {
  RunResult r;
  std::vector<chi::FullPtr<ComputeTask>> tasks(spec.width);
  Clock::time_point start = Clock::now();
  for (u32 s = 0; s < spec.steps && r.ok; ++s) {
    for (u32 i = 0; i < spec.width; ++i) {
      tasks[i] = client.AsyncCompute(spec.iters, StencilSeed(s, spec.width, i),
                                     PointDom(i, spec.cores));
    }
    for (auto &t : tasks) CollectTask(t, &r);
    if (r.ok) r.steps_done = s + 1;
    if (ElapsedSec(start, Clock::now()) > spec.max_seconds) break;
  }
  r.seconds = ElapsedSec(start, Clock::now());
  return r;
}

/** Variant runtime: one synchronous StencilRun, driven by container 0. */
RunResult RunInRuntime(chi::small_message::Client &client,
                       const RunSpec &spec) {
  RunResult r;
  Clock::time_point start = Clock::now();
  hshm::StatusOr<u64> sum = client.StencilRun(
      spec.width, spec.steps, spec.iters, chi::DomainQuery::GetLocalId(0));
  r.seconds = ElapsedSec(start, Clock::now());
  if (sum.ok()) {
    r.checksum = *sum;
    r.steps_done = spec.steps;
  } else {
    r.Fail("StencilRun failed: " + sum.status().ToString());
  }
  return r;
}

/** Variant openmp: the loop with `cores` OpenMP threads, one task per point
 * and a taskwait per step. */
RunResult RunOpenMp(const RunSpec &spec) {
  RunResult r;
  std::vector<u64> results(spec.width);
  const u64 iters = spec.iters;
  const u32 width = spec.width;
  Clock::time_point start = Clock::now();
#pragma omp parallel num_threads(spec.cores)
#pragma omp single
  {
    for (u32 s = 0; s < spec.steps; ++s) {
      for (u32 i = 0; i < width; ++i) {
#pragma omp task firstprivate(s, i) shared(results)
        results[i] = ComputeKernel(iters, StencilSeed(s, width, i));
      }
#pragma omp taskwait
      for (u64 v : results) r.checksum += v;
      r.steps_done = s + 1;
      if (ElapsedSec(start, Clock::now()) > spec.max_seconds) break;
    }
  }
  r.seconds = ElapsedSec(start, Clock::now());
  return r;
}

#if CHI_HAVE_TASK_GRAPH
/** Waits for `group` up to the client task timeout; records a failure (and
 * returns false) if it did not finish. */
bool WaitGroup(chi::TaskGroup &group, RunResult *r) {
  if (group.WaitFor(CHI_IPC->TaskTimeoutUs())) return true;
  r->Fail("TaskGroup wait timed out or the runtime died (" +
          std::to_string(group.pending()) + " pending)");
  return false;
}

/** Checks each completed task of `tasks`, adds its result to `r` and frees
 * it; if `abandon`, gives every task up instead (its group wait failed). */
void CollectCompleted(std::vector<chi::FullPtr<ComputeTask>> &tasks,
                      bool abandon, RunResult *r) {
  for (auto &t : tasks) {
    if (t.IsNull()) continue;
    if (abandon) {
      CHI_IPC->AbandonTask(t);
    } else {
      if (!t->IsComplete()) {
        r->Fail("a task of a waited group is not complete");
      } else if (t->rc_ == 0) {
        r->checksum += t->result_;
      } else {
        r->Fail("Compute failed: " + t->GetStatus().ToString());
      }
      CHI_IPC->DelTask(t);
    }
    t = chi::FullPtr<ComputeTask>();
  }
}

/** Allocates the Compute of point `i` of step `s`, adds it to `group` and
 * sets its predecessors `preds` (if any), then sends it. Null (failure
 * recorded, nothing sent) if a step failed. */
chi::FullPtr<ComputeTask> SubmitPoint(chi::small_message::Client &client,
                                      const RunSpec &spec, u32 s, u32 i,
                                      chi::TaskGroup &group,
                                      const std::vector<chi::Task *> &preds,
                                      RunResult *r) {
  chi::FullPtr<ComputeTask> t = client.NewCompute(
      spec.iters, StencilSeed(s, spec.width, i), PointDom(i, spec.cores));
  if (t.IsNull()) {
    r->Fail("main segment is full");
    return t;
  }
  hshm::Status st =
      preds.empty() ? hshm::Status::Ok() : chi::SetDependencies(t.ptr_, preds);
  if (st.ok()) st = group.Add(t.ptr_);
  if (!st.ok()) {
    r->Fail("setting up a task: " + st.ToString());
    CHI_IPC->DelTask(t);
    return chi::FullPtr<ComputeTask>();
  }
  chi::Submit(t);
  return t;
}

/** Variant group: per step, every point in one TaskGroup, one group Wait,
 * then check and free each task. */
RunResult RunClientGroup(chi::small_message::Client &client,
                         const RunSpec &spec) {
  RunResult r;
  chi::TaskGroup group;
  if (!group.status().ok()) {
    r.Fail("TaskGroup: " + group.status().ToString());
    return r;
  }
  std::vector<chi::FullPtr<ComputeTask>> tasks(spec.width);
  const std::vector<chi::Task *> no_preds;
  Clock::time_point start = Clock::now();
  for (u32 s = 0; s < spec.steps && r.ok; ++s) {
    for (u32 i = 0; i < spec.width && r.ok; ++i) {
      tasks[i] = SubmitPoint(client, spec, s, i, group, no_preds, &r);
    }
    bool waited = WaitGroup(group, &r);
    // After a failed wait every task is given up, so the group may go.
    CollectCompleted(tasks, !waited, &r);
    if (!waited) return r;
    if (r.ok) r.steps_done = s + 1;
    if (ElapsedSec(start, Clock::now()) > spec.max_seconds) break;
  }
  r.seconds = ElapsedSec(start, Clock::now());
  return r;
}

/** Variant deps: task (s, i) depends on (s-1, i-1..i+1); windows of
 * spec.window steps, one TaskGroup each, at most spec.depth in flight (the
 * client sends ahead while the runtime works, and sleeps in between; its
 * wake-up and sending then overlap the work in flight). Step s is
 * freed once step s+1 was waited for (its dependents have then started). */
RunResult RunClientDeps(chi::small_message::Client &client,
                        const RunSpec &spec) {
  RunResult r;
  const u32 w = std::max<u32>(1, spec.window);
  const u32 depth = std::max<u32>(2, spec.depth);
  std::vector<chi::TaskGroup> groups(depth);
  for (auto &g : groups) {
    if (!g.status().ok()) {
      r.Fail("TaskGroup: " + g.status().ToString());
      return r;
    }
  }
  std::vector<std::vector<chi::FullPtr<ComputeTask>>> tasks(
      spec.steps, std::vector<chi::FullPtr<ComputeTask>>(spec.width));
  std::vector<chi::Task *> preds;
  u32 submitted = 0;  // Steps [0, submitted) were sent.
  u32 waited = 0;     // Steps [0, waited) completed and were checked.
  u32 freed = 0;      // Steps [0, freed) were freed.
  bool stop = false;  // No more windows (time cap or failure).
  Clock::time_point start = Clock::now();
  while (true) {
    if (!stop && r.ok && submitted < spec.steps) {
      // Send the next window, in the group of the window `depth` back
      // (already waited for).
      chi::TaskGroup &group = groups[(submitted / w) % depth];
      u32 end = std::min(spec.steps, submitted + w);
      for (u32 s = submitted; s < end && r.ok; ++s) {
        for (u32 i = 0; i < spec.width && r.ok; ++i) {
          preds.clear();
          if (s > 0) {
            u32 lo = i > 0 ? i - 1 : 0;
            u32 hi = std::min(spec.width - 1, i + 1);
            for (u32 j = lo; j <= hi; ++j)
              preds.push_back(tasks[s - 1][j].ptr_);
          }
          tasks[s][i] = SubmitPoint(client, spec, s, i, group, preds, &r);
        }
      }
      submitted = end;
    }
    if (!r.ok || submitted >= spec.steps ||
        ElapsedSec(start, Clock::now()) > spec.max_seconds) {
      stop = true;
    }
    if (waited == submitted) break;
    // Wait for the oldest window once `depth` are in flight, or to drain.
    if (stop || submitted - waited > (depth - 1) * w) {
      u32 end = std::min(submitted, waited + w);
      bool ok = WaitGroup(groups[(waited / w) % depth], &r);
      if (!ok) {
        // Members still pending: give every unfreed task up (so the groups
        // may be destroyed; see ~TaskGroup).
        for (u32 s = freed; s < submitted; ++s) {
          CollectCompleted(tasks[s], true, &r);
        }
        return r;
      }
      for (u32 s = waited; s < end; ++s) {
        for (auto &t : tasks[s]) {
          if (t.IsNull()) continue;
          if (!t->IsComplete()) {
            r.Fail("a task of a waited group is not complete");
          } else if (t->rc_ == 0) {
            r.checksum += t->result_;
          } else {
            r.Fail("Compute failed: " + t->GetStatus().ToString());
          }
        }
      }
      waited = end;
      if (r.ok) r.steps_done = waited;
      // Steps before waited-1 have all their dependents complete.
      for (; freed + 1 < waited; ++freed) {
        for (auto &t : tasks[freed]) {
          CHI_IPC->DelTask(t);
          t = chi::FullPtr<ComputeTask>();
        }
      }
    }
  }
  for (; freed < submitted; ++freed) {
    for (auto &t : tasks[freed]) {
      CHI_IPC->DelTask(t);
      t = chi::FullPtr<ComputeTask>();
    }
  }
  r.seconds = ElapsedSec(start, Clock::now());
  return r;
}
#endif  // CHI_HAVE_TASK_GRAPH

/** True if `variant` can run in this build. */
bool VariantBuilt(const std::string &variant) {
  if (variant == "group" || variant == "deps") return CHI_HAVE_TASK_GRAPH;
  return true;
}

/** CPU seconds this thread has used. */
double ThreadCpuSec() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/** CPU seconds the threads of process `pid` have used (the scheduler's
 * nanosecond count of every live thread), or 0. */
double ProcessCpuSec(int pid) {
  if (pid <= 0) return 0;
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR *d = opendir(dir.c_str());
  if (!d) return 0;
  double sum = 0;
  while (dirent *e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    FILE *f = fopen((dir + "/" + e->d_name + "/schedstat").c_str(), "r");
    if (!f) continue;
    unsigned long long ns = 0;
    if (fscanf(f, "%llu", &ns) == 1) sum += ns * 1e-9;
    fclose(f);
  }
  closedir(d);
  return sum;
}

/** Runs one loop of `variant`. REQUIRES: VariantBuilt(variant). */
RunResult RunVariant(const std::string &variant,
                     chi::small_message::Client &client, const RunSpec &spec) {
  if (variant == "client") return RunClientLoop(client, spec);
  if (variant == "runtime") return RunInRuntime(client, spec);
  if (variant == "openmp") return RunOpenMp(spec);
#if CHI_HAVE_TASK_GRAPH
  if (variant == "group") return RunClientGroup(client, spec);
  if (variant == "deps") return RunClientDeps(client, spec);
#endif
  RunResult r;
  r.Fail("variant " + variant + " is not built");
  return r;
}

/** The sum of the kernel over `steps` steps of `width` points (what every
 * variant's checksum must be), computed with `cores` OpenMP threads. */
u64 ExpectedChecksum(u32 width, u32 steps, u64 iters, u32 cores) {
  u64 sum = 0;
  const long long n = static_cast<long long>(width) * steps;
#pragma omp parallel for num_threads(cores) reduction(+ : sum) schedule(static)
  for (long long k = 0; k < n; ++k) {
    u32 s = static_cast<u32>(k / width), i = static_cast<u32>(k % width);
    sum += ComputeKernel(iters, StencilSeed(s, width, i));
  }
  return sum;
}

/** Kernel iterations for a task of `task_us` microseconds (at least 1). */
u64 ItersFor(double task_us, double iters_per_us) {
  return std::max<u64>(1,
                       static_cast<u64>(std::llround(task_us * iters_per_us)));
}

/** Efficiency of a run: busy core time over available core time. */
double Efficiency(const RunSpec &spec, const RunResult &r, double task_us) {
  if (!r.ok || r.seconds <= 0) return 0;
  return static_cast<double>(spec.width) * r.steps_done * task_us /
         (r.seconds * 1e6 * spec.cores);
}

/** A task size for printing ("5", "0.5"). */
std::string SizeName(double us) {
  char buf[32];
  snprintf(buf, sizeof(buf), "%g", us);
  return buf;
}

/** One cell of the results: efficiency, or why there is none. */
struct Cell {
  bool ran = false;
  bool ok = false;
  double efficiency = 0;
};

/** Measures one cell: a checked pilot of kMinSteps steps (its checksum must
 * be `expected`), then `repeat` timed runs sized from it (aiming at 2/3 of
 * `max_seconds`; the first is resized, at most twice, when it came out under
 * half the aim, e.g. after a pilot slowed by warm-up). Keeps the best
 * efficiency (the least disturbed run). False, with `error`, if a task
 * failed or the checksum was wrong. */
bool MeasureCell(const std::string &variant, chi::small_message::Client &client,
                 RunSpec spec, double task_us, u64 expected, double max_seconds,
                 u32 repeat, bool verbose, Cell *cell, std::string *error) {
  spec.steps = kMinSteps;
  spec.max_seconds = 1e9;
  RunResult pilot = RunVariant(variant, client, spec);
  if (pilot.ok &&
      (pilot.steps_done != kMinSteps || pilot.checksum != expected)) {
    pilot.Fail("pilot checksum " + std::to_string(pilot.checksum) + " after " +
               std::to_string(pilot.steps_done) + " steps, expected " +
               std::to_string(expected));
  }
  if (!pilot.ok) {
    *error = pilot.error;
    return false;
  }
  const double aim = max_seconds * 2 / 3;
  double per_step = pilot.seconds / kMinSteps;
  spec.max_seconds = max_seconds;
  for (u32 rep = 0; rep < repeat; ++rep) {
    RunResult r;
    for (int attempt = 0; attempt < (rep == 0 ? 3 : 1); ++attempt) {
      if (rep == 0) {
        double want = aim / std::max(per_step, 1e-9);
        spec.steps = static_cast<u32>(
            std::clamp<double>(std::round(want), kMinSteps, kMaxSteps));
      }
      r.client_cpu = ThreadCpuSec();
      r.runtime_cpu = ProcessCpuSec(CHI_IPC->shared()->runtime_pid_);
      RunResult run = RunVariant(variant, client, spec);
      run.client_cpu = ThreadCpuSec() - r.client_cpu;
      run.runtime_cpu =
          ProcessCpuSec(CHI_IPC->shared()->runtime_pid_) - r.runtime_cpu;
      r = run;
      if (!r.ok || r.seconds >= aim / 2 || spec.steps == kMaxSteps) break;
      per_step = r.seconds / std::max(1u, r.steps_done);
    }
    if (!r.ok) {
      *error = r.error;
      return false;
    }
    double eff = Efficiency(spec, r, task_us);
    if (verbose) {
      double tasks =
          static_cast<double>(spec.width) * std::max(1u, r.steps_done);
      printf(
          "  width %u, %s us, %-7s: %4u steps in %.3f s, %.1f us per step, "
          "efficiency %.1f%%; CPU per task: client %.2f us, runtime %.2f "
          "us\n",
          spec.width, SizeName(task_us).c_str(), variant.c_str(), r.steps_done,
          r.seconds, r.seconds * 1e6 / std::max(1u, r.steps_done), eff * 100,
          r.client_cpu * 1e6 / tasks, r.runtime_cpu * 1e6 / tasks);
    }
    cell->efficiency = std::max(cell->efficiency, eff);
  }
  cell->ok = true;
  return true;
}

/** The smallest size of `sizes` whose cell reached kMetgEfficiency; < 0 if
 * none. */
double Metg(const std::vector<double> &sizes, const std::vector<Cell> &cells) {
  for (size_t k = 0; k < sizes.size(); ++k) {
    if (cells[k].ok && cells[k].efficiency >= kMetgEfficiency) return sizes[k];
  }
  return -1;
}

/** A METG for printing ("none" when negative). */
std::string MetgName(double metg) { return metg < 0 ? "none" : SizeName(metg); }

/** "a/b" of two METGs ("n/a" unless both exist). */
std::string RatioName(double a, double b) {
  if (a < 0 || b <= 0) return "n/a";
  char buf[32];
  snprintf(buf, sizeof(buf), "%.2f", a / b);
  return buf;
}

/** Parses --widths: each item is a point count, or "<k>x" for k * cores. */
bool ParseWidths(const std::string &list, u32 cores, std::vector<u32> *out) {
  for (const std::string &item : SplitList(list)) {
    try {
      size_t pos = 0;
      unsigned long v = std::stoul(item, &pos);
      if (pos < item.size()) {
        if (item.substr(pos) != "x") return false;
        v *= cores;
      }
      if (v == 0 || v > 65536) return false;
      out->push_back(static_cast<u32>(v));
    } catch (const std::exception &) {
      return false;
    }
  }
  return !out->empty();
}

#if CHI_HAVE_TASK_GRAPH
/** Parses --wait: default, block, spin:<us> or yield:<us>. */
bool ParseWaitPolicy(const std::string &arg, chi::WaitPolicy *out) {
  if (arg == "default") {
    *out = chi::WaitPolicy::Default();
    return true;
  }
  if (arg == "block") {
    *out = chi::WaitPolicy::Block();
    return true;
  }
  size_t colon = arg.find(':');
  if (colon == std::string::npos) return false;
  std::string kind = arg.substr(0, colon);
  char *end = nullptr;
  double us = std::strtod(arg.c_str() + colon + 1, &end);
  if (end == arg.c_str() + colon + 1 || *end != '\0' || !(us >= 0)) {
    return false;
  }
  u64 ns = static_cast<u64>(us * 1000);
  if (kind == "spin") {
    *out = chi::WaitPolicy::Spin(ns);
  } else if (kind == "yield") {
    *out = chi::WaitPolicy::Yield(ns);
  } else {
    return false;
  }
  return true;
}
#endif

/** Parses --sizes (microseconds, positive). */
bool ParseSizes(const std::string &list, std::vector<double> *out) {
  for (const std::string &item : SplitList(list)) {
    try {
      size_t pos = 0;
      double v = std::stod(item, &pos);
      if (pos < item.size() || !(v > 0)) return false;
      out->push_back(v);
    } catch (const std::exception &) {
      return false;
    }
  }
  std::sort(out->begin(), out->end());
  return !out->empty();
}

}  // namespace

/** Parses the options, runs every (width, size, variant) and prints the
 * tables and METGs. Exit status 1 if any task failed. */
int main(int argc, char **argv) {
  CLI::App app{
      "Bulk-synchronous stencil loop: client loop, task groups, task "
      "dependencies, in-runtime loop and OpenMP; efficiency and METG(50%)"};
  u32 cores = std::max(1u, std::thread::hardware_concurrency());
  std::string widths_arg = "1x,4x";
  std::string sizes_arg = "1,2,5,10,20,50,100,200,500,1000";
  std::string variants_arg = "client,group,deps,runtime,openmp";
  double max_seconds = 0.3;
  u32 window = 8;
  u32 depth = 8;
  u32 repeat = 1;
  bool quick = false;
  bool verbose = false;
  std::string wait_arg = "default";
  app.add_option("--cores", cores,
                 "Cores to keep busy: containers, OpenMP threads, the "
                 "efficiency's denominator (default: CPUs online)")
      ->check(CLI::Range(1u, 4096u));
  app.add_option("--widths", widths_arg,
                 "Points per step, comma list; <k>x means k * cores");
  app.add_option("--sizes", sizes_arg, "Task sizes in microseconds");
  app.add_option("--variants", variants_arg,
                 "Comma list of client,group,deps,runtime,openmp");
  app.add_option("--max-seconds", max_seconds,
                 "Cap of one run (steps aim at 2/3 of it)")
      ->check(CLI::PositiveNumber);
  app.add_option("--window", window, "Steps per window of the deps variant")
      ->check(CLI::Range(1u, 1000u));
  app.add_option("--depth", depth, "Windows in flight at most (deps variant)")
      ->check(CLI::Range(2u, 64u));
  app.add_option("--repeat", repeat,
                 "Timed runs per cell; the best efficiency is kept")
      ->check(CLI::Range(1u, 100u));
#if CHI_HAVE_TASK_GRAPH
  app.add_option("--wait", wait_arg,
                 "Client wait policy: default, block, spin:<us> or "
                 "yield:<us> (chi::WaitPolicy)");
#endif
  app.add_flag("--quick", quick,
               "Smoke run: sizes 5,50,500 and --max-seconds 0.1");
  app.add_flag("-v,--verbose", verbose, "Print every run");
  CLI11_PARSE(app, argc, argv);
#if CHI_HAVE_TASK_GRAPH
  chi::WaitPolicy policy;
  if (!ParseWaitPolicy(wait_arg, &policy)) {
    fprintf(stderr, "stencil_benchmark: bad --wait %s\n", wait_arg.c_str());
    return 2;
  }
  chi::ScopedWaitPolicy scoped_policy(policy);
#endif
  if (quick) {
    sizes_arg = "5,50,500";
    max_seconds = std::min(max_seconds, 0.1);
  }
  std::vector<u32> widths;
  std::vector<double> sizes;
  if (!ParseWidths(widths_arg, cores, &widths)) {
    fprintf(stderr, "stencil_benchmark: bad --widths %s\n", widths_arg.c_str());
    return 2;
  }
  if (!ParseSizes(sizes_arg, &sizes)) {
    fprintf(stderr, "stencil_benchmark: bad --sizes %s\n", sizes_arg.c_str());
    return 2;
  }
  std::vector<std::string> variants;
  for (const std::string &v : SplitList(variants_arg)) {
    if (std::find(std::begin(kVariants), std::end(kVariants), v) ==
        std::end(kVariants)) {
      fprintf(stderr, "stencil_benchmark: unknown variant %s\n", v.c_str());
      return 2;
    }
    if (!VariantBuilt(v)) {
      printf(
          "stencil_benchmark: %s needs chimaera/task_graph.h "
          "(built with CHI_HAVE_TASK_GRAPH=0): skipped\n",
          v.c_str());
      continue;
    }
    variants.push_back(v);
  }
  if (variants.empty()) {
    fprintf(stderr, "stencil_benchmark: no variant to run\n");
    return 2;
  }

  if (!chi_bench::ConnectAndPrintHeader("stencil_benchmark")) return 1;
  int rc = 0;
  std::string pool_name = "stencil_benchmark_" + std::to_string(getpid());
  chi::small_message::Client client;
  hshm::Status s = client.Create(pool_name, cores);
  if (!s.ok()) {
    fprintf(stderr, "stencil_benchmark: small_message pool: %s\n",
            s.ToString().c_str());
    CHIMAERA->ClientFinalize();
    return 1;
  }

  double iters_per_us = CalibrateItersPerUs(ComputeKernel);
  // The same kernel in the runtime, as one 20 ms task.
  const double probe_us = 20000;
  u64 probe_iters = ItersFor(probe_us, iters_per_us);
  Clock::time_point a = Clock::now();
  hshm::StatusOr<u64> probe = client.Compute(probe_iters, 1);
  double probe_took = ElapsedSec(a, Clock::now()) * 1e6;
  if (!probe.ok() || *probe != ComputeKernel(probe_iters, 1)) {
    fprintf(stderr, "stencil_benchmark: runtime Compute: %s\n",
            probe.ok() ? "wrong result" : probe.status().ToString().c_str());
    rc = 1;
  }
  printf("runtime: %u workers; pool %s with %u containers\n",
         CHI_IPC->shared()->num_workers_, pool_name.c_str(), cores);
  printf(
      "kernel: %.1f iterations/us in this process (fastest of 7); a "
      "%.0f us Compute took %.0f us through the runtime\n",
      iters_per_us, probe_us, probe_took);
  printf(
      "cores %u; runs of %u-%u steps aiming at %.2f s (cap %.2f s); "
      "deps window %u steps, %u in flight; client wait %s; best of %u "
      "run(s) per cell\n",
      cores, kMinSteps, kMaxSteps, max_seconds * 2 / 3, max_seconds, window,
      depth, wait_arg.c_str(), repeat);
  printf("efficiency = width * steps * task_us / (wall_us * cores)\n");

  // metgs[width index][variant] for the summary.
  std::vector<std::map<std::string, double>> metgs(widths.size());
  for (size_t wi = 0; wi < widths.size(); ++wi) {
    u32 width = widths[wi];
    std::map<std::string, std::vector<Cell>> cells;
    for (const std::string &v : variants) cells[v].resize(sizes.size());
    for (size_t si = 0; si < sizes.size(); ++si) {
      double task_us = sizes[si];
      RunSpec spec;
      spec.width = width;
      spec.iters = ItersFor(task_us, iters_per_us);
      spec.cores = cores;
      spec.window = window;
      spec.depth = depth;
      u64 expected = ExpectedChecksum(width, kMinSteps, spec.iters, cores);
      for (const std::string &v : variants) {
        Cell &cell = cells[v][si];
        cell.ran = true;
        std::string error;
        if (!MeasureCell(v, client, spec, task_us, expected, max_seconds,
                         repeat, verbose, &cell, &error)) {
          fprintf(stderr, "stencil_benchmark: width %u, %s us, %s: %s\n", width,
                  SizeName(task_us).c_str(), v.c_str(), error.c_str());
          rc = 1;
        }
      }
    }

    // The table of this width.
    printf("\nwidth %u (%.3g x %u cores): efficiency %% by task size\n", width,
           static_cast<double>(width) / cores, cores);
    printf("%10s", "task_us");
    for (const std::string &v : variants) printf(" %8s", v.c_str());
    printf("\n");
    for (size_t si = 0; si < sizes.size(); ++si) {
      printf("%10s", SizeName(sizes[si]).c_str());
      for (const std::string &v : variants) {
        const Cell &c = cells[v][si];
        if (c.ok) {
          printf(" %8.1f", c.efficiency * 100);
        } else {
          printf(" %8s", c.ran ? "FAIL" : "-");
        }
      }
      printf("\n");
    }
    printf("%10s", "METG(50%)");
    for (const std::string &v : variants) {
      metgs[wi][v] = Metg(sizes, cells[v]);
      printf(" %8s", MetgName(metgs[wi][v]).c_str());
    }
    printf("\n");
  }

  // Summary: the METGs and the ratios.
  auto get = [](const std::map<std::string, double> &m, const char *k) {
    auto it = m.find(k);
    return it == m.end() ? -1.0 : it->second;
  };
  printf("\nMETG(50%%) in us (smallest task size with efficiency >= 50%%)\n");
  printf("%8s", "width");
  for (const std::string &v : variants) printf(" %8s", v.c_str());
  printf(" %13s %12s\n", "deps/runtime", "deps/openmp");
  for (size_t wi = 0; wi < widths.size(); ++wi) {
    printf("%8u", widths[wi]);
    for (const std::string &v : variants) {
      printf(" %8s", MetgName(metgs[wi][v]).c_str());
    }
    double deps = get(metgs[wi], "deps");
    printf(" %13s %12s\n", RatioName(deps, get(metgs[wi], "runtime")).c_str(),
           RatioName(deps, get(metgs[wi], "openmp")).c_str());
  }
  printf(
      "aims: deps/runtime <= 2 (client with dependencies within 2x of the "
      "in-runtime loop), deps/openmp < 1 (below OpenMP)\n");

  s = chi::admin::Client().DestroyPool(client.pool_id());
  if (!s.ok()) {
    fprintf(stderr, "stencil_benchmark: destroying pool %s: %s\n",
            pool_name.c_str(), s.ToString().c_str());
    rc = 1;
  }
  CHIMAERA->ClientFinalize();
  return rc;
}
