#include "hermes_shm/thread_model.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

namespace hshm {

namespace {

/** Entry trampoline: owns the heap-allocated std::function. */
void *ThreadEntry(void *arg) {
  std::unique_ptr<std::function<void()>> fn(
      static_cast<std::function<void()> *>(arg));
  (*fn)();
  return nullptr;
}

/** Process-wide pool of dense thread ids. */
class TidPool {
 public:
  /** Takes the lowest free id, or kInvalidTid when all are taken. */
  ThreadId Acquire() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!free_.empty()) {
      ThreadId id = free_.back();
      free_.pop_back();
      return id;
    }
    if (next_ >= ThreadModel::kMaxThreadIds) return ThreadModel::kInvalidTid;
    return next_++;
  }
  /** Returns `id` to the pool. */
  void Release(ThreadId id) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(id);
  }

 private:
  std::mutex mu_;
  std::vector<ThreadId> free_;
  ThreadId next_ = 0;
};

TidPool *GetTidPool() {
  static TidPool *pool = new TidPool();
  return pool;
}

/** Holds the calling thread's id; gives it back when the thread exits. */
struct TidHolder {
  ThreadId id = ThreadModel::kInvalidTid;
  bool taken = false;
  ~TidHolder() {
    if (taken && id != ThreadModel::kInvalidTid) GetTidPool()->Release(id);
  }
};

thread_local TidHolder tls_tid;

}  // namespace

StatusOr<Thread> ThreadModel::Spawn(std::function<void()> fn) {
  auto *arg = new std::function<void()>(std::move(fn));
  Thread t;
  int rc = pthread_create(&t.handle_, nullptr, ThreadEntry, arg);
  if (rc != 0) {
    delete arg;
    return Status::FromErrno("pthread_create", rc);
  }
  t.joinable_ = true;
  return t;
}

Status ThreadModel::Join(Thread &thread) {
  if (!thread.joinable_) {
    return Status::InvalidArgument("Join: thread is not joinable");
  }
  int rc = pthread_join(thread.handle_, nullptr);
  if (rc != 0) return Status::FromErrno("pthread_join", rc);
  thread.joinable_ = false;
  return Status::Ok();
}

void ThreadModel::Yield() { sched_yield(); }

void ThreadModel::SleepForUs(u64 us) {
  struct timespec ts;
  ts.tv_sec = static_cast<time_t>(us / 1000000);
  ts.tv_nsec = static_cast<long>((us % 1000000) * 1000);
  while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
  }
}

ThreadId ThreadModel::GetTid() {
  if (!tls_tid.taken) {
    tls_tid.id = GetTidPool()->Acquire();
    tls_tid.taken = true;
  }
  return tls_tid.id;
}

Status ThreadModel::SetCpuAffinity(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  int rc = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
  if (rc != 0) return Status::FromErrno("pthread_setaffinity_np", rc);
  return Status::Ok();
}

void ThreadModel::SetName(const char *name) {
  char buf[16];
  size_t i = 0;
  for (; name[i] && i < sizeof(buf) - 1; ++i) buf[i] = name[i];
  buf[i] = '\0';
  pthread_setname_np(pthread_self(), buf);
}

namespace {
std::atomic<int> g_cached_pid{0};
/** fork() child hook: forget the parent's pid. */
void ResetCachedPid() { g_cached_pid.store(0, std::memory_order_relaxed); }
}  // namespace

int CachedPid() {
  int pid = g_cached_pid.load(std::memory_order_relaxed);
  if (__builtin_expect(pid != 0, 1)) return pid;
  static const int registered =
      pthread_atfork(nullptr, nullptr, ResetCachedPid);
  (void)registered;
  pid = getpid();
  g_cached_pid.store(pid, std::memory_order_relaxed);
  return pid;
}

namespace {

/** What /proc/PID/stat says of a process: its state letter and start time
 * (clock ticks since boot). False if it cannot be read (no such process, or
 * no /proc). */
bool ReadProcStat(int pid, char *state, u64 *start_time) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return false;
  char buf[1024];
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  // "pid (comm) S f4 f5 ...": fields from 3 (the state) on follow the last
  // ')', since comm may itself hold spaces and parentheses.
  const char *p = strrchr(buf, ')');
  if (!p || p[1] != ' ') return false;
  *state = p[2];
  int field = 2;
  for (++p; *p && field < 22; ++p) {
    if (*p == ' ') ++field;
  }
  *start_time = field == 22 ? strtoull(p, nullptr, 10) : 0;
  return true;
}

}  // namespace

u64 ProcessStartTime(int pid) {
  char state;
  u64 start = 0;
  if (pid <= 0 || !ReadProcStat(pid, &state, &start)) return 0;
  return start;
}

bool ProcessAliveSince(int pid, u64 start_time) {
  if (pid <= 0) return false;
  if (kill(pid, 0) != 0 && errno != EPERM) return false;
  char state;
  u64 start = 0;
  if (!ReadProcStat(pid, &state, &start)) return true;  // trust kill()
  if (state == 'Z' || state == 'X') return false;
  return start_time == 0 || start == 0 || start == start_time;
}

bool ProcessAlive(int pid) { return ProcessAliveSince(pid, 0); }

}  // namespace hshm
