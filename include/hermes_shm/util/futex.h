// Futex wait/wake on 32-bit words, usable across processes when the word lives
// in shared memory (no FUTEX_PRIVATE_FLAG).
#ifndef HERMES_SHM_UTIL_FUTEX_H_
#define HERMES_SHM_UTIL_FUTEX_H_

#include <atomic>

#include "hermes_shm/types.h"

namespace hshm {

/** Sleeps while `*word == expected`, at most `timeout_us` microseconds.
 * Returns immediately if the value differs. Spurious wake-ups happen: callers
 * re-check their condition in a loop. Any thread of any process may call. */
void FutexWait(std::atomic<u32> *word, u32 expected, u64 timeout_us);

/** Wakes up to `count` threads sleeping in FutexWait on `word`. */
void FutexWake(std::atomic<u32> *word, int count);

/** Monotonic clock in nanoseconds. */
u64 NowNs();

/** A cheap tick counter: the CPU's invariant time-stamp counter where there
 * is one (a few ns to read, against ~20 for clock_gettime), else NowNs().
 * Ticks are not ns; compare two readings of it only with each other. Any
 * thread. */
HSHM_INLINE u64 TickCount() {
#if defined(__x86_64__) || defined(__i386__)
  return __builtin_ia32_rdtsc();
#elif defined(__aarch64__)
  u64 v;
  asm volatile("mrs %0, cntvct_el0" : "=r"(v));
  return v;
#else
  return NowNs();
#endif
}

/** A CPU pause hint for spin loops. */
HSHM_INLINE void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

/** Starts loading the cache line at `p` in a state that allows writing it
 * (x86 PREFETCHW, a no-op on CPUs without it), so that a later atomic RMW
 * there does not wait for another core to give the line up. Never faults,
 * whatever `p` is. Any thread. */
HSHM_INLINE void PrefetchForWrite(const void *p) {
#if defined(__x86_64__) || defined(__i386__)
  asm volatile("prefetchw %0" : : "m"(*static_cast<const char *>(p)));
#else
  __builtin_prefetch(p, 1);
#endif
}

/** Starts loading the cache line at `p` for reading. Never faults. */
HSHM_INLINE void PrefetchForRead(const void *p) { __builtin_prefetch(p, 0); }

}  // namespace hshm

#endif  // HERMES_SHM_UTIL_FUTEX_H_
