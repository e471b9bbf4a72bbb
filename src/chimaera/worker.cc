// How a worker runs tasks
// -----------------------
// Loop: take new lanes from the mailbox, pop up to kPopBatch tasks from each
// lane, resume fibers whose subtasks completed, restart due periodic tasks.
// Each task runs in a Boost.Context fiber on a pooled 64 KB stack (with a
// guard page). When the method returns, the fiber ends and the worker
// completes the task (or, for fire-and-forget, frees it). When the method
// waits on an incomplete subtask, the fiber yields; the worker keeps it in
// blocked_ and resumes it once the subtask is complete.
//
// Sleeping: after idle_spin_us without work the worker sets its futex word,
// issues a seq_cst fence and re-checks its lanes; producers push, fence, and
// wake the worker if the word is set (IpcManager::WakeLaneWorker). Either the
// worker sees the task or the producer sees the sleeper, never neither.
#include "chimaera/worker.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "chimaera/config_manager.h"
#include "chimaera/pool_manager.h"
#include "hermes_shm/util/futex.h"
#include "hermes_shm/util/tsan.h"

namespace chi {

namespace ctx = boost::context;

namespace {

constexpr size_t kStackSize = 64 * 1024;
constexpr size_t kGuardSize = 4096;
constexpr u32 kPopBatch = 32;
/** An active lane empty for this many polls in a row turns cold. */
constexpr u32 kColdAfter = 4096;
/** Cold lanes are polled once every this many loop iterations. */
constexpr u32 kColdPeriod = 64;

// initial-exec: the SIGSEGV handler reads it, so no lazy TLS allocation.
__attribute__((tls_model("initial-exec"))) thread_local RunContext *tls_rctx =
    nullptr;

/** Appends the decimal form of `v` to buf[*n] (async-signal-safe). */
void AppendU64(char *buf, size_t *n, size_t cap, u64 v) {
  char tmp[24];
  int k = 0;
  do {
    tmp[k++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v && k < 24);
  while (k && *n < cap) buf[(*n)++] = tmp[--k];
}

/** Appends `s` to buf[*n] (async-signal-safe). */
void AppendStr(char *buf, size_t *n, size_t cap, const char *s) {
  while (*s && *n < cap) buf[(*n)++] = *s++;
}

/** SIGSEGV on a worker: if the fault is at the guard page of the running
 * task's stack (or just below it), say which task overflowed its 64 KB stack;
 * then die as the signal would have made us die. Runs on the worker's alternate
 * stack. */
void OnSegv(int sig, siginfo_t *info, void *) {
  RunContext *r = tls_rctx;
  auto *addr = static_cast<char *>(info->si_addr);
  // A frame larger than the guard page can jump past it: count faults just
  // below the stack as overflows too.
  if (r && r->stack_ && addr >= r->stack_ - kStackSize &&
      addr < r->stack_ + kGuardSize) {
    char buf[256];
    size_t n = 0;
    AppendStr(buf, &n, sizeof(buf),
              "chimaera: a task overflowed its 64 KB fiber stack: pool ");
    AppendU64(buf, &n, sizeof(buf), r->task_->pool_id_.node_id_);
    AppendStr(buf, &n, sizeof(buf), ".");
    AppendU64(buf, &n, sizeof(buf), r->task_->pool_id_.unique_);
    AppendStr(buf, &n, sizeof(buf), ", method ");
    AppendU64(buf, &n, sizeof(buf), r->task_->method_);
    AppendStr(buf, &n, sizeof(buf),
              " (keep large buffers on the heap, not the stack)\n");
    ssize_t ignored = write(2, buf, n);
    (void)ignored;
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

/** Installs OnSegv once per process. */
void InstallSegvHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = OnSegv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, nullptr);
  });
}

/** Stacks come from the worker's pool; Boost.Context must not free them. */
struct PooledStack {
  ctx::stack_context allocate() { return ctx::stack_context(); }
  void deallocate(ctx::stack_context &) noexcept {}
};

/** Runs the container method; exceptions stop at the task boundary. */
void RunMethod(RunContext *r) {
  try {
    r->container_->Run(r->task_.ptr_, *r);
  } catch (const ctx::detail::forced_unwind &) {
    throw;
  } catch (const std::exception &e) {
    internal::SetTaskStatus(
        r->task_.ptr_,
        Status::Internal(std::string("container method threw: ") + e.what()));
  } catch (...) {
    internal::SetTaskStatus(r->task_.ptr_,
                            Status::Internal("container method threw a non-std "
                                             "exception"));
  }
}

/** Frees a fire-and-forget task (typed destructor if known). */
void FreeTask(Task *task, const MethodEntry *e) {
  if (e && e->destroy) e->destroy(task);
  CHI_IPC->DelTask(FullPtr<Task>(task, CHI_IPC->main_alloc()->ToPointer(task)));
}

/** Completes `task` with `status`, or frees it if nobody waits for it. */
void CompleteOrFree(Task *task, const Status &status, const MethodEntry *e) {
  HSHM_TSAN_RELEASE(task);  // the task leaves this process (see tsan.h)
  if (task->IsFireAndForget()) {
    if (!status.ok()) {
      fprintf(stderr, "chimaera: fire-and-forget task failed: %s\n",
              status.ToString().c_str());
    }
    FreeTask(task, e);
    return;
  }
  internal::CompleteTask(task, status);
}

}  // namespace

Worker::Worker(u32 id, WorkerKind kind, WorkerShared *shared)
    : id_(id), kind_(kind), shared_(shared) {
  idle_spin_us_ = CHI_CONFIG_MANAGER->config().idle_spin_us_;
  shared_->kind_.store(static_cast<u32>(kind));
}

Worker::~Worker() {
  for (char *s : all_stacks_) munmap(s, kGuardSize + kStackSize);
  for (RunContext *r : free_rctx_) delete r;
}

RunContext *Worker::CurrentRunContext() { return tls_rctx; }

bool Worker::YieldCurrentFiber() {
  RunContext *r = tls_rctx;
  if (!r) return false;
  r->waiting_on_ = nullptr;
  r->Yield();
  return true;
}

void Worker::AddLane(Lane *lane, Container *container) {
  lane->header().worker_id_.store(id_, std::memory_order_release);
  {
    std::lock_guard<std::mutex> lock(mailbox_mu_);
    mailbox_.push_back(WorkerLane{lane, container, 0});
  }
  has_mail_.store(true, std::memory_order_release);
  Wake();
}

void Worker::TakeMailbox() {
  std::lock_guard<std::mutex> lock(mailbox_mu_);
  for (auto &wl : mailbox_) lanes_.push_back(wl);
  mailbox_.clear();
  has_mail_.store(false, std::memory_order_relaxed);
  shared_->num_lanes_.store(static_cast<u32>(lanes_.size() + cold_.size()));
}

void Worker::Wake() {
  // Pairs with Sleep()'s store; fence; re-check (as WakeLaneWorker does).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (shared_->sleeping_.load(std::memory_order_acquire) != 0) {
    shared_->sleeping_.store(0, std::memory_order_release);
    hshm::FutexWake(&shared_->sleeping_, 1);
  }
}

void Worker::Exit() {
  exit_.store(true, std::memory_order_release);
  Wake();
}

void Worker::Stop(u64 deadline_ns) {
  deadline_ns_.store(deadline_ns, std::memory_order_relaxed);
  stop_.store(true, std::memory_order_release);
  Wake();
}

char *Worker::GetStack() {
  if (!free_stacks_.empty()) {
    char *s = free_stacks_.back();
    free_stacks_.pop_back();
    return s;
  }
  void *p = mmap(nullptr, kGuardSize + kStackSize, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  mprotect(p, kGuardSize, PROT_NONE);  // overflow faults instead of corrupting
  all_stacks_.push_back(static_cast<char *>(p));
  return static_cast<char *>(p);
}

void Worker::PutStack(char *stack) {
  if (stack) free_stacks_.push_back(stack);
}

RunContext *Worker::NewRunContext() {
  if (!free_rctx_.empty()) {
    RunContext *r = free_rctx_.back();
    free_rctx_.pop_back();
    return r;
  }
  return new RunContext();
}

void Worker::FreeRunContext(RunContext *r) {
  r->task_ = FullPtr<Task>();
  r->container_ = nullptr;
  r->waiting_on_ = nullptr;
  r->done_ = false;
  free_rctx_.push_back(r);
}

void Worker::Loop() {
  char name[16];
  snprintf(name, sizeof(name), "chi_worker_%u", id_);
  HSHM_THREAD_MODEL->SetName(name);
  // An alternate signal stack, so a stack overflow can still be reported.
  std::vector<char> altstack(64 * 1024);
  stack_t ss{};
  ss.ss_sp = altstack.data();
  ss.ss_size = altstack.size();
  sigaltstack(&ss, nullptr);
  InstallSegvHandler();
  for (;;) {
    epoch_.store(epoch_.load(std::memory_order_relaxed) + 1,
                 std::memory_order_release);
    if (has_mail_.load(std::memory_order_acquire)) TakeMailbox();
    bool did = PollLanes();
    if (++loop_count_ % kColdPeriod == 0) RebalanceLanes();
    if (!blocked_.empty()) did |= CheckBlocked();
    if (!periodic_.empty()) did |= CheckPeriodic(hshm::NowNs());
    if (stop_.load(std::memory_order_acquire)) {
      // Draining: report whether we are idle, and leave only when the
      // orchestrator saw every worker idle at once (a busy worker may still
      // send to our lanes) or the deadline passed.
      idle_.store(
          !did && blocked_.empty() && periodic_.empty() && !AnyLaneBusy(),
          std::memory_order_release);
      if (exit_.load(std::memory_order_acquire)) break;
      if (hshm::NowNs() > deadline_ns_.load()) break;
    }
    if (did) {
      idle_since_ns_ = 0;
      idle_polls_ = 0;
      continue;
    }
    // Idle: poll again at once; read the clock (tens of ns) only every 64
    // empty polls, so that new work is seen as soon as it lands.
    if ((++idle_polls_ & 63) != 0 && periodic_.empty()) {
      hshm::CpuRelax();
      continue;
    }
    u64 now = hshm::NowNs();
    if (idle_since_ns_ == 0) idle_since_ns_ = now;
    if (now - idle_since_ns_ < static_cast<u64>(idle_spin_us_) * 1000) {
      hshm::CpuRelax();
      continue;
    }
    // Subtasks on other workers complete without waking us: nap briefly.
    u64 max_us = blocked_.empty() ? 50000 : 100;
    if (stop_.load(std::memory_order_relaxed)) max_us = 200;  // draining
    for (RunContext *r : periodic_) {
      u64 due = r->next_run_ns_ > now ? (r->next_run_ns_ - now) / 1000 : 0;
      max_us = std::min(max_us, due);
    }
    if (max_us > 0) Sleep(max_us);
    idle_since_ns_ = hshm::NowNs();
  }
  AbortRemaining();
  ss.ss_flags = SS_DISABLE;
  sigaltstack(&ss, nullptr);
  exited_.store(true, std::memory_order_release);
}

bool Worker::AnyLaneBusy() const {
  for (const auto &wl : lanes_) {
    if (!wl.lane->Empty()) return true;
  }
  for (const auto &wl : cold_) {
    if (!wl.lane->Empty()) return true;
  }
  return false;
}

void Worker::RebalanceLanes() {
  for (size_t i = 0; i < cold_.size();) {
    if (cold_[i].container &&
        (cold_[i].lane->header().flags_.load() & kLaneRetired)) {
      DrainRetired(cold_[i]);
      cold_[i] = cold_.back();
      cold_.pop_back();
    } else if (!cold_[i].lane->Empty()) {
      cold_[i].idle_polls = 0;
      lanes_.push_back(cold_[i]);
      cold_[i] = cold_.back();
      cold_.pop_back();
    } else {
      ++i;
    }
  }
  for (size_t i = 0; i < lanes_.size();) {
    if (lanes_[i].idle_polls > kColdAfter) {
      cold_.push_back(lanes_[i]);
      lanes_[i] = lanes_.back();
      lanes_.pop_back();
    } else {
      ++i;
    }
  }
}

void Worker::Sleep(u64 max_us) {
  shared_->sleeping_.store(1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (AnyLaneBusy() || has_mail_.load() || stop_.load()) {
    shared_->sleeping_.store(0, std::memory_order_relaxed);
    return;
  }
  hshm::FutexWait(&shared_->sleeping_, 1, max_us);
  shared_->sleeping_.store(0, std::memory_order_relaxed);
}

bool Worker::PollLanes() {
  bool did = false;
  bool retired = false;
  hipc::Pointer p;
  for (auto &wl : lanes_) {
    if (wl.container &&
        (wl.lane->header().flags_.load(std::memory_order_acquire) &
         kLaneRetired)) {
      retired = true;
      continue;
    }
    u32 n = 0;
    while (n < kPopBatch && wl.lane->TryPop(&p)) {
      ++n;
      // Validate: a client may push garbage; it must not crash the runtime.
      u64 size = CHI_IPC->main_alloc()->LiveBlockSize(p);
      if (size < sizeof(Task)) {
        fprintf(stderr, "chimaera: worker %u dropped an invalid task pointer\n",
                id_);
        continue;
      }
      FullPtr<Task> task(p);
      HSHM_TSAN_ACQUIRE(task.ptr_);  // pairs with the release at completion
      Dispatch(task, wl.container, size);
    }
    wl.idle_polls = n ? 0 : wl.idle_polls + 1;
    did |= n > 0;
  }
  if (retired) {
    for (size_t i = 0; i < lanes_.size();) {
      if (lanes_[i].container &&
          (lanes_[i].lane->header().flags_.load() & kLaneRetired)) {
        DrainRetired(lanes_[i]);
        lanes_[i] = lanes_.back();
        lanes_.pop_back();
      } else {
        ++i;
      }
    }
    shared_->num_lanes_.store(static_cast<u32>(lanes_.size() + cold_.size()));
  }
  return did;
}

void Worker::DrainRetired(const WorkerLane &wl) {
  hipc::Pointer p;
  Status aborted = Status::Aborted("the pool was destroyed");
  while (wl.lane->TryPop(&p)) {
    if (!CHI_IPC->main_alloc()->IsLiveBlock(p, sizeof(Task))) continue;
    Task *t = FullPtr<Task>(p).ptr_;
    HSHM_TSAN_ACQUIRE(t);
    CompleteOrFree(t, aborted, wl.container->GetMethod(t->method_));
  }
  // Last touch of the container: it may be freed once every holder is done.
  wl.container->lanes_held_.fetch_sub(1, std::memory_order_acq_rel);
}

void Worker::Dispatch(FullPtr<Task> task, Container *known, u64 block_size) {
  Task *t = task.ptr_;
  Container *c = known;
  if (c) {
    c->inflight_.fetch_add(1, std::memory_order_acquire);
  } else {
    if (t->dom_query_.kind_ == DomainQuery::kDynamic) {
      // Ask the pool's first container where this task should go.
      auto first = CHI_POOL_MANAGER->AcquireFast(
          t->pool_id_, DomainQuery::GetLocalId(0), &pool_cache_);
      if (!first.ok()) return CompleteOrFree(t, first.status(), nullptr);
      RunContext probe;
      probe.task_ = task;
      probe.container_ = *first;
      probe.worker_ = this;
      (*first)->Monitor(MonitorMode::kGlobalSchedule, t, probe);
      PoolManager::Release(*first);
      if (t->dom_query_.kind_ == DomainQuery::kDynamic) {
        t->dom_query_ = DomainQuery::GetLocalHash(0);
      }
    }
    auto r =
        CHI_POOL_MANAGER->AcquireFast(t->pool_id_, t->dom_query_, &pool_cache_);
    if (!r.ok()) return CompleteOrFree(t, r.status(), nullptr);
    c = *r;
  }
  const MethodEntry *e = c->GetMethod(t->method_);
  Status bad;
  if (!e) {
    bad = Status::NotFound("module '" + c->module_name_ + "' (pool '" +
                           c->pool_name_ + "') has no method " +
                           std::to_string(t->method_));
  } else if (block_size < e->task_size) {
    bad = Status::InvalidArgument(std::string("task is smaller than ") +
                                  e->name + "'s task type");
  }
  if (!bad.ok()) {
    PoolManager::Release(c);
    return CompleteOrFree(t, bad, nullptr);
  }
  if (!known) {
    // The container may want this task on one of its own lanes.
    Lane *target = c->Route(t);
    if (target && target->TryPush(task.shm_)) {
      CHI_IPC->WakeLaneWorker(*target);
      PoolManager::Release(c);  // the lane's worker counts it from now on
      return;
    }
  }
  RunContext *rctx = NewRunContext();
  rctx->task_ = task;
  rctx->container_ = c;
  rctx->worker_ = this;
  Start(rctx);
}

void Worker::Start(RunContext *r) {
  r->stack_ = GetStack();
  if (!r->stack_) {
    CompleteOrFree(r->task_.ptr_,
                   Status::OutOfMemory("no memory for a task stack"),
                   r->container_->GetMethod(r->task_->method_));
    PoolManager::Release(r->container_);
    FreeRunContext(r);
    return;
  }
  r->done_ = false;
  r->waiting_on_ = nullptr;
  ctx::stack_context sctx;
  sctx.sp = r->stack_ + kGuardSize + kStackSize;
  sctx.size = kStackSize;
  r->fiber_ = ctx::fiber(std::allocator_arg,
                         ctx::preallocated(sctx.sp, sctx.size, sctx),
                         PooledStack(), [r](ctx::fiber &&sink) {
                           r->sink_ = std::move(sink);
                           RunMethod(r);
                           r->done_ = true;
                           return std::move(r->sink_);
                         });
  Resume(r);
}

void Worker::Resume(RunContext *r) {
  tls_rctx = r;
  r->fiber_ = std::move(r->fiber_).resume();
  tls_rctx = nullptr;
  if (r->done_) {
    Finish(r);
  } else {
    blocked_.push_back(r);
  }
}

bool Worker::CheckBlocked() {
  std::vector<RunContext *> pending;
  pending.swap(blocked_);
  bool did = false;
  for (RunContext *r : pending) {
    if (r->waiting_on_ == nullptr || r->waiting_on_->IsComplete()) {
      Resume(r);
      did = true;
    } else {
      blocked_.push_back(r);
    }
  }
  return did;
}

bool Worker::CheckPeriodic(u64 now) {
  bool did = false;
  for (size_t i = 0; i < periodic_.size();) {
    RunContext *r = periodic_[i];
    bool stop = r->task_->StopRequested() || stop_.load() ||
                r->container_->destroying_.load(std::memory_order_relaxed);
    if (!stop && r->next_run_ns_ > now) {
      ++i;
      continue;
    }
    periodic_[i] = periodic_.back();
    periodic_.pop_back();
    did = true;
    if (stop) {
      Container *c = r->container_;
      c->completed_.fetch_add(1, std::memory_order_relaxed);
      CompleteOrFree(r->task_.ptr_, Status::Ok(),
                     c->GetMethod(r->task_->method_));
      PoolManager::Release(c);  // last touch of the container
      FreeRunContext(r);
    } else {
      Start(r);
    }
  }
  return did;
}

void Worker::Finish(RunContext *r) {
  Task *t = r->task_.ptr_;
  Container *c = r->container_;
  PutStack(r->stack_);
  r->stack_ = nullptr;
  t->run_count_++;
  if (t->IsPeriodic() && !t->StopRequested() && !stop_.load() &&
      !c->destroying_.load(std::memory_order_relaxed) && t->rc_ == 0) {
    // Run again one period from now; the task stays in flight.
    r->next_run_ns_ = hshm::NowNs() + static_cast<u64>(t->period_ns_);
    periodic_.push_back(r);
    return;
  }
  c->completed_.fetch_add(1, std::memory_order_relaxed);
  // Single writer: a plain add, no locked instruction on the hot path.
  shared_->tasks_done_.store(
      shared_->tasks_done_.load(std::memory_order_relaxed) + 1,
      std::memory_order_relaxed);
  HSHM_TSAN_RELEASE(t);  // the task leaves this process (see tsan.h)
  if (t->IsFireAndForget()) {
    FreeTask(t, c->GetMethod(t->method_));
  } else {
    u32 prev = t->state_.fetch_or(kTaskComplete, std::memory_order_acq_rel);
    if (prev & kTaskWaiterAsleep) hshm::FutexWake(&t->state_, INT_MAX);
  }
  PoolManager::Release(c);  // last touch of the container
  FreeRunContext(r);
}

void Worker::AbortRemaining() {
  Status aborted = Status::Aborted("the runtime is stopping");
  TakeMailbox();
  for (auto &wl : cold_) lanes_.push_back(wl);
  cold_.clear();
  hipc::Pointer p;
  for (auto &wl : lanes_) {
    if (wl.container) {
      DrainRetired(wl);  // aborts what is queued, drops our hold
      continue;
    }
    while (wl.lane->TryPop(&p)) {
      if (!CHI_IPC->main_alloc()->IsLiveBlock(p, sizeof(Task))) continue;
      Task *t = FullPtr<Task>(p).ptr_;
      HSHM_TSAN_ACQUIRE(t);
      CompleteOrFree(t, aborted, nullptr);
    }
  }
  lanes_.clear();
  for (RunContext *r : periodic_) {
    CompleteOrFree(r->task_.ptr_, aborted,
                   r->container_->GetMethod(r->task_->method_));
    PoolManager::Release(r->container_);
    FreeRunContext(r);
  }
  periodic_.clear();
  // Fibers still blocked past the deadline cannot be unwound safely: their
  // tasks fail, their containers are released, and the fibers are abandoned
  // with the process.
  for (RunContext *r : blocked_) {
    CompleteOrFree(r->task_.ptr_, aborted, nullptr);
    PoolManager::Release(r->container_);
  }
  if (!blocked_.empty()) {
    fprintf(stderr, "chimaera: worker %u abandoned %zu blocked tasks\n", id_,
            blocked_.size());
  }
  blocked_.clear();
}

}  // namespace chi
