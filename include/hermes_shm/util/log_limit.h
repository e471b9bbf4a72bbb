// Rate-limited error lines: input from clients and peers is hostile, and a
// flood of bad input must not become a flood of log lines.
//
//   HSHM_LOG_LIMITED("bad record from node %u\n", node);
//
// Each call site prints at most kLinesPerSecond lines a second and drops the
// rest. Any thread may call.
#ifndef HERMES_SHM_UTIL_LOG_LIMIT_H_
#define HERMES_SHM_UTIL_LOG_LIMIT_H_

#include <atomic>
#include <cstdio>

#include "hermes_shm/types.h"
#include "hermes_shm/util/futex.h"

namespace hshm {

/** Counts the lines of one call site in the current one-second window. */
class LogLimiter {
 public:
  static constexpr u32 kLinesPerSecond = 10;
  /** True if the caller may print now. */
  bool Allow() {
    u64 now = NowNs() / 1000000000ull;
    u64 w = window_.load(std::memory_order_relaxed);
    if (w != now && window_.compare_exchange_strong(w, now)) {
      count_.store(0, std::memory_order_relaxed);
    }
    return count_.fetch_add(1, std::memory_order_relaxed) < kLinesPerSecond;
  }

 private:
  std::atomic<u64> window_{0};
  std::atomic<u32> count_{0};
};

}  // namespace hshm

/** fprintf(stderr, ...) at most LogLimiter::kLinesPerSecond times a second
 * per call site. */
#define HSHM_LOG_LIMITED(...)                                    \
  do {                                                           \
    static ::hshm::LogLimiter hshm_log_limiter_;                 \
    if (hshm_log_limiter_.Allow()) fprintf(stderr, __VA_ARGS__); \
  } while (0)

#endif  // HERMES_SHM_UTIL_LOG_LIMIT_H_
