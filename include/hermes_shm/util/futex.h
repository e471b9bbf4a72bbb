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

/** A CPU pause hint for spin loops. */
HSHM_INLINE void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

}  // namespace hshm

#endif  // HERMES_SHM_UTIL_FUTEX_H_
