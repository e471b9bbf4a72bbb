// Helpers shared by the benchmark programs.
#ifndef CHIMAERA_BENCHMARK_BENCH_UTIL_H_
#define CHIMAERA_BENCHMARK_BENCH_UTIL_H_

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "chimaera/chimaera.h"

namespace chi_bench {

/** The 1-minute load average ("?" if unknown): timings on a busy machine
 * (load above the CPU count) measure the scheduler, not the runtime. */
inline std::string LoadAverage() {
  FILE *f = fopen("/proc/loadavg", "r");
  if (!f) return "?";
  char buf[64] = {};
  std::string out = fgets(buf, sizeof(buf), f) ? buf : "?";
  fclose(f);
  return out.substr(0, out.find(' '));
}

/** Attaches to the runtime named by CHI_SERVER_CONF and prints the header
 * line every benchmark starts with. False (error printed) if no runtime. */
inline bool ConnectAndPrintHeader(const char *program) {
  hshm::Status s = CHIMAERA_CLIENT_INIT();
  if (!s.ok()) {
    fprintf(stderr, "%s: %s\n", program, s.ToString().c_str());
    return false;
  }
  printf("%s: runtime node %u at %s, %u CPUs online, load average %s\n",
         program, CHI_IPC->node_id(), CHI_IPC->server_address().c_str(),
         std::thread::hardware_concurrency(), LoadAverage().c_str());
  return true;
}

/** Nanoseconds between two steady_clock readings. */
inline hshm::u64 ElapsedNs(std::chrono::steady_clock::time_point a,
                           std::chrono::steady_clock::time_point b) {
  return static_cast<hshm::u64>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count());
}

/** Seconds between two steady_clock readings. */
inline double ElapsedSec(std::chrono::steady_clock::time_point a,
                         std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

/** Iterations of `kernel(iters, seed)` (returning a u64) per microsecond on
 * this machine: the fastest of seven timed runs of about 5 ms each, after
 * 50 ms of warm-up (the least disturbed runs; a median over a busy host's
 * runs would overstate efficiencies). */
template <typename Kernel>
double CalibrateItersPerUs(Kernel &&kernel) {
  using Clock = std::chrono::steady_clock;
  volatile hshm::u64 sink = 0;
  hshm::u64 n = 10000;
  // Warm up (the core's clock) and grow n until one run takes >= 5 ms.
  Clock::time_point warm = Clock::now();
  while (true) {
    Clock::time_point a = Clock::now();
    sink = sink + kernel(n, 2);
    double took = ElapsedSec(a, Clock::now());
    if (took < 5e-3 && n < (hshm::u64{1} << 34)) {
      n *= 2;
    } else if (ElapsedSec(warm, Clock::now()) > 50e-3) {
      break;
    }
  }
  double best = 0;
  for (int k = 0; k < 7; ++k) {
    Clock::time_point a = Clock::now();
    sink = sink + kernel(n, 3 + k);
    double us = ElapsedSec(a, Clock::now()) * 1e6;
    best = std::max(best, static_cast<double>(n) / std::max(us, 1e-3));
  }
  return best;
}

/** The sample's value at quantile `q` (nearest rank). REQUIRES: sorted. */
inline double Quantile(const std::vector<hshm::u64> &sorted, double q) {
  if (sorted.empty()) return 0;
  size_t idx = static_cast<size_t>(q * static_cast<double>(sorted.size()));
  if (idx >= sorted.size()) idx = sorted.size() - 1;
  return static_cast<double>(sorted[idx]);
}

}  // namespace chi_bench

#endif  // CHIMAERA_BENCHMARK_BENCH_UTIL_H_
