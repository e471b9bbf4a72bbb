#include "hermes_shm/util/futex.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

namespace hshm {

static_assert(sizeof(std::atomic<u32>) == sizeof(u32),
              "futex words must be plain 32-bit integers");

void FutexWait(std::atomic<u32> *word, u32 expected, u64 timeout_us) {
  struct timespec ts;
  ts.tv_sec = static_cast<time_t>(timeout_us / 1000000);
  ts.tv_nsec = static_cast<long>((timeout_us % 1000000) * 1000);
  syscall(SYS_futex, reinterpret_cast<u32 *>(word), FUTEX_WAIT, expected, &ts,
          nullptr, 0);
}

void FutexWake(std::atomic<u32> *word, int count) {
  syscall(SYS_futex, reinterpret_cast<u32 *>(word), FUTEX_WAKE, count, nullptr,
          nullptr, 0);
}

u64 NowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<u64>(ts.tv_sec) * 1000000000ull +
         static_cast<u64>(ts.tv_nsec);
}

}  // namespace hshm
