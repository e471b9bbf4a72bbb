// A 16-byte compare-and-swap on two adjacent 64-bit words, lock free and valid
// across processes (it never falls back to a lock in a library, which would
// not be shared with other processes).
//
// x86-64 uses `lock cmpxchg16b` directly, so the result does not depend on
// compiler flags (-mcx16) and every translation unit of every process agrees.
// aarch64 uses the compiler's 16-byte atomic (LSE casp or an ldxp/stxp loop).
// Other targets do not build.
#ifndef HERMES_SHM_UTIL_CAS128_H_
#define HERMES_SHM_UTIL_CAS128_H_

#include "hermes_shm/types.h"

namespace hshm {

/** Two adjacent 64-bit words at a 16-byte aligned address: `lo` at the lower
 * address. */
struct alignas(16) Words128 {
  u64 lo;
  u64 hi;
};

/** Atomically: if the 16 bytes at `addr` equal `*expected`, stores `desired`
 * there and returns true; otherwise copies what is there into `*expected`
 * and returns false. Sequentially consistent (a full barrier on x86-64).
 * REQUIRES: `addr` is 16-byte aligned. Any thread of any process mapping the
 * memory. Concurrent 8-byte atomic loads and RMWs of either word are atomic
 * with respect to it (the hardware guarantees this; the C++ memory model
 * does not speak of mixed sizes). ThreadSanitizer does not see the write on
 * x86-64: callers annotate the hand-off (hermes_shm/util/tsan.h). */
inline bool CompareExchange128(void *addr, Words128 *expected,
                               const Words128 &desired) {
#if defined(__x86_64__)
  bool ok;
  __asm__ __volatile__("lock cmpxchg16b %1"
                       : "=@ccz"(ok), "+m"(*static_cast<Words128 *>(addr)),
                         "+a"(expected->lo), "+d"(expected->hi)
                       : "b"(desired.lo), "c"(desired.hi)
                       : "memory");
  return ok;
#elif defined(__aarch64__)
#if !defined(__GCC_HAVE_SYNC_COMPARE_AND_SWAP_16)
  // Without it the 16-byte CAS may be a libatomic call that takes a
  // process-local lock: not atomic against other processes.
#error "hshm::CompareExchange128 needs a lock-free 16-byte CAS on aarch64"
#endif
  auto *p = static_cast<unsigned __int128 *>(addr);
  unsigned __int128 exp =
      (static_cast<unsigned __int128>(expected->hi) << 64) | expected->lo;
  unsigned __int128 des =
      (static_cast<unsigned __int128>(desired.hi) << 64) | desired.lo;
  bool ok = __atomic_compare_exchange_n(p, &exp, des, false, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST);
  expected->lo = static_cast<u64>(exp);
  expected->hi = static_cast<u64>(exp >> 64);
  return ok;
#else
#error "hshm::CompareExchange128 needs x86-64 or aarch64"
#endif
}

}  // namespace hshm

#endif  // HERMES_SHM_UTIL_CAS128_H_
