// HSHM_THREAD_MODEL: spawning, joining and pacing threads (POSIX threads).
//
// Every member may be called from any thread. Spawn/Join report failures as a
// Status instead of aborting.
#ifndef HERMES_SHM_THREAD_MODEL_H_
#define HERMES_SHM_THREAD_MODEL_H_

#include <pthread.h>

#include <functional>

#include "hermes_shm/singleton.h"
#include "hermes_shm/status.h"
#include "hermes_shm/types.h"

namespace hshm {

/** A small dense id for the calling thread: at most kMaxThreadIds threads
 * hold one at a time; ids of exited threads are reused. */
using ThreadId = u32;

/** Handle of a thread started by ThreadModel::Spawn. Movable, not copyable. */
class Thread {
 public:
  Thread() = default;
  Thread(Thread &&o) noexcept : handle_(o.handle_), joinable_(o.joinable_) {
    o.joinable_ = false;
  }
  Thread &operator=(Thread &&o) noexcept {
    handle_ = o.handle_;
    joinable_ = o.joinable_;
    o.joinable_ = false;
    return *this;
  }
  Thread(const Thread &) = delete;
  Thread &operator=(const Thread &) = delete;
  /** True until Join succeeds. */
  bool joinable() const { return joinable_; }

 private:
  friend class ThreadModel;
  pthread_t handle_{};
  bool joinable_ = false;
};

/** The thread model: a stateless facade over pthreads plus the dense thread
 * id table. */
class ThreadModel {
 public:
  /** Most thread ids handed out at once; GetTid() returns kInvalidTid past it.
   */
  static constexpr ThreadId kMaxThreadIds = 4096;
  static constexpr ThreadId kInvalidTid = ~0u;

  /** Starts a thread running `fn`. Returns the error if pthread_create fails
   * (e.g. out of threads); `fn` is then not run. */
  StatusOr<Thread> Spawn(std::function<void()> fn);
  /** Waits for `thread` to finish. Error if it was not joinable. */
  Status Join(Thread &thread);
  /** Gives the CPU to another runnable thread. */
  void Yield();
  /** Sleeps the calling thread for `us` microseconds. */
  void SleepForUs(u64 us);
  /** Returns the calling thread's dense id, allocating one on first call.
   * Ids are < kMaxThreadIds, or kInvalidTid if that many threads hold one. */
  ThreadId GetTid();
  /** Pins the calling thread to CPU `cpu`. */
  Status SetCpuAffinity(int cpu);
  /** Names the calling thread (shown by ps/gdb); truncated to 15 chars. */
  void SetName(const char *name);
};

/** True if process `pid` exists and has not exited (a zombie -- exited but
 * not yet reaped by its parent -- counts as exited). Any thread. */
bool ProcessAlive(int pid);

/** The calling process's pid, cached (refreshed in a forked child; getpid()
 * is a system call). Any thread. */
int CachedPid();

/** Start time of process `pid` in clock ticks since boot (field 22 of
 * /proc/pid/stat), or 0 if it does not exist or /proc is unavailable. With
 * the pid it names one process, even after the pid is reused. Any thread. */
u64 ProcessStartTime(int pid);

/** True if `pid` is alive and, when `start_time` is non-zero, is still the
 * process that had that start time (not a reuse of its pid). Any thread. */
bool ProcessAliveSince(int pid, u64 start_time);

}  // namespace hshm

/** The process's thread model. */
#define HSHM_THREAD_MODEL \
  (::hshm::Singleton<::hshm::ThreadModel>::GetInstance())

#endif  // HERMES_SHM_THREAD_MODEL_H_
