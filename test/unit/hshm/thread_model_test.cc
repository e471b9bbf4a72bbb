#include "hermes_shm/thread_model.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <thread>
#include <vector>

#include "hermes_shm/util/futex.h"
#include "hermes_shm/util/rw_lock.h"

namespace {

TEST(ThreadModelTest, SpawnJoin) {
  std::atomic<int> ran{0};
  std::vector<hshm::Thread> threads;
  for (int i = 0; i < 4; ++i) {
    auto t = HSHM_THREAD_MODEL->Spawn([&] { ran.fetch_add(1); });
    ASSERT_TRUE(t.ok()) << t.status();
    threads.push_back(std::move(*t));
  }
  for (auto &t : threads) EXPECT_TRUE(HSHM_THREAD_MODEL->Join(t).ok());
  EXPECT_EQ(ran.load(), 4);
  // Joining twice is an error, not a crash.
  EXPECT_FALSE(HSHM_THREAD_MODEL->Join(threads[0]).ok());
}

TEST(ThreadModelTest, TidsAreDenseAndRecycled) {
  hshm::ThreadId mine = HSHM_THREAD_MODEL->GetTid();
  EXPECT_EQ(mine, HSHM_THREAD_MODEL->GetTid());
  std::set<hshm::ThreadId> seen;
  for (int round = 0; round < 200; ++round) {
    hshm::ThreadId id = 0;
    auto t =
        HSHM_THREAD_MODEL->Spawn([&] { id = HSHM_THREAD_MODEL->GetTid(); });
    ASSERT_TRUE(t.ok());
    ASSERT_TRUE(HSHM_THREAD_MODEL->Join(*t).ok());
    EXPECT_NE(id, mine);
    EXPECT_LT(id, hshm::ThreadModel::kMaxThreadIds);
    seen.insert(id);
  }
  // Sequential threads reuse ids instead of growing without bound.
  EXPECT_LE(seen.size(), 2u);
}

TEST(ThreadModelTest, SleepAndFutex) {
  uint64_t t0 = hshm::NowNs();
  HSHM_THREAD_MODEL->SleepForUs(2000);
  EXPECT_GE(hshm::NowNs() - t0, 2000000u);
  std::atomic<hshm::u32> word{0};
  // Wrong expected value: returns at once.
  t0 = hshm::NowNs();
  hshm::FutexWait(&word, 1, 1000000);
  EXPECT_LT(hshm::NowNs() - t0, 500000000u);
  // Woken by another thread.
  auto t = HSHM_THREAD_MODEL->Spawn([&] {
    HSHM_THREAD_MODEL->SleepForUs(1000);
    word.store(1);
    hshm::FutexWake(&word, 1);
  });
  ASSERT_TRUE(t.ok());
  while (word.load() == 0) hshm::FutexWait(&word, 0, 100000);
  EXPECT_TRUE(HSHM_THREAD_MODEL->Join(*t).ok());
}

// A pid plus its start time names one process: a reused pid (simulated by
// another start time) is not taken for the process that died.
TEST(ThreadModelTest, ProcessIdentityAndCachedPid) {
  EXPECT_EQ(hshm::CachedPid(), getpid());
  hshm::u64 start = hshm::ProcessStartTime(getpid());
  EXPECT_GT(start, 0u);
  EXPECT_EQ(hshm::ProcessStartTime(getpid()), start);
  EXPECT_TRUE(hshm::ProcessAliveSince(getpid(), start));
  EXPECT_TRUE(hshm::ProcessAliveSince(getpid(), 0));
  EXPECT_FALSE(hshm::ProcessAliveSince(getpid(), start + 1));
  pid_t child = fork();
  if (child == 0) _exit(hshm::CachedPid() == getpid() ? 0 : 1);
  ASSERT_GT(child, 0);
  int st = 0;
  ASSERT_EQ(waitpid(child, &st, 0), child);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "fork kept old pid";
  EXPECT_FALSE(hshm::ProcessAlive(child));
  EXPECT_EQ(hshm::ProcessStartTime(child), 0u);
}

}  // namespace

namespace {

/** How long (ms) a writer waits for `Lock` while two reader threads keep
 * overlapping shared holds of 2 ms each (for at most 3 s). */
template <typename Lock>
double WriterWaitMs() {
  Lock lock;
  std::atomic<bool> stop{false};
  auto reader = [&](int delay_us) {
    HSHM_THREAD_MODEL->SleepForUs(delay_us);
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (!stop.load() && std::chrono::steady_clock::now() < end) {
      lock.lock_shared();
      HSHM_THREAD_MODEL->SleepForUs(2000);
      lock.unlock_shared();
    }
  };
  std::thread a(reader, 0), b(reader, 1000);
  HSHM_THREAD_MODEL->SleepForUs(20000);  // the readers overlap by now
  auto t0 = std::chrono::steady_clock::now();
  lock.lock();
  double ms = std::chrono::duration<double, std::milli>(
                  std::chrono::steady_clock::now() - t0)
                  .count();
  stop.store(true);
  lock.unlock();
  a.join();
  b.join();
  return ms;
}

}  // namespace

// Readers that keep overlapping never shut a writer out: it gets the lock
// once the readers inside leave (std::shared_mutex on glibc lets it wait
// until the readers stop, here 3 s).
TEST(ThreadModelTest, WriterFirstRwLockLetsAWriterPastOverlappingReaders) {
  double ms = WriterWaitMs<hshm::WriterFirstRwLock>();
  EXPECT_LT(ms, 500) << "the writer waited " << ms << " ms";
  hshm::WriterFirstRwLock lock;
  {
    std::shared_lock<hshm::WriterFirstRwLock> r1(lock);
    std::thread other(
        [&] { std::shared_lock<hshm::WriterFirstRwLock> r2(lock); });
    other.join();  // readers share
  }
  std::unique_lock<hshm::WriterFirstRwLock> w(lock);
  EXPECT_TRUE(w.owns_lock());
}
