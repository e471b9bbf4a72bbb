// A process-local reader-writer lock that prefers writers.
//
// std::shared_mutex on glibc prefers readers: while readers keep overlapping,
// a writer never gets in. WriterFirstRwLock queues new readers behind a
// waiting writer instead (glibc's
// PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP), so a stream of readers delays
// a writer by at most the readers already inside. Not recursive: a thread must
// not take it shared twice.
#ifndef HERMES_SHM_UTIL_RW_LOCK_H_
#define HERMES_SHM_UTIL_RW_LOCK_H_

#include <pthread.h>

namespace hshm {

/** A writer-preferring reader-writer lock for threads of one process;
 * satisfies SharedMutex (std::unique_lock, std::shared_lock). Any thread. */
class WriterFirstRwLock {
 public:
  /** An unlocked lock. */
  WriterFirstRwLock() {
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr,
                                  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&lock_, &attr);
    pthread_rwlockattr_destroy(&attr);
  }
  /** REQUIRES: unlocked. */
  ~WriterFirstRwLock() { pthread_rwlock_destroy(&lock_); }
  WriterFirstRwLock(const WriterFirstRwLock &) = delete;
  WriterFirstRwLock &operator=(const WriterFirstRwLock &) = delete;

  /** Takes the lock exclusively (waits for readers inside to leave; new
   * readers wait behind this writer). */
  void lock() { pthread_rwlock_wrlock(&lock_); }
  /** Releases an exclusive hold. */
  void unlock() { pthread_rwlock_unlock(&lock_); }
  /** Takes the lock shared (waits while a writer holds or waits for it). */
  void lock_shared() { pthread_rwlock_rdlock(&lock_); }
  /** Releases a shared hold. */
  void unlock_shared() { pthread_rwlock_unlock(&lock_); }

 private:
  pthread_rwlock_t lock_;
};

}  // namespace hshm

#endif  // HERMES_SHM_UTIL_RW_LOCK_H_
