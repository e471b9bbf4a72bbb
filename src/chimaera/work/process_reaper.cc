// ProcessReaper: see include/chimaera/process_reaper.h.
#include "chimaera/process_reaper.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "chimaera/ipc_manager.h"
#include "chimaera/task.h"
#include "chimaera/worker.h"
#include "hermes_shm/thread_model.h"
#include "hermes_shm/util/log_limit.h"
#include "hermes_shm/util/tsan.h"

namespace chi {

namespace {

/** The task in block `b` of `main`, or null if the block is not a task.
 * Under TSan, first acquires what this process's workers released on the
 * block (the dead client's own hand-offs are invisible to it). */
Task *AsTask(const hipc::BlockInfo &b) {
  if (b.usable_size < sizeof(Task)) return nullptr;
  auto *t = reinterpret_cast<Task *>(
      hipc::ToProcessAddressChecked(b.ptr, sizeof(Task)));
  if (!t) return nullptr;
  HSHM_TSAN_ACQUIRE(HSHM_TSAN_BLOCK_KEY(t));
  u32 magic;
  std::memcpy(&magic, &t->magic_, sizeof(magic));
  return magic == kTaskMagic ? t : nullptr;
}

}  // namespace

ProcessReaper::~ProcessReaper() { Stop(); }

void ProcessReaper::Start(u32 period_ms, u32 wait_ms) {
  if (thread_.joinable()) return;
  period_ms_ = period_ms ? period_ms : 50;
  wait_ms_ = wait_ms ? wait_ms : 60000;
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    stop_ = false;
  }
  stopping_.store(false, std::memory_order_relaxed);
  thread_ = std::thread([this] { Loop(); });
}

void ProcessReaper::Stop() {
  if (!thread_.joinable()) return;
  stopping_.store(true, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    stop_ = true;
  }
  wake_cv_.notify_all();
  thread_.join();
}

bool ProcessReaper::RegisterClient(int pid) {
  u64 start = hshm::ProcessStartTime(pid);
  std::lock_guard<std::mutex> lock(mu_);
  for (int r : reaping_) {
    if (r == pid) return false;
  }
  for (Client &c : clients_) {
    if (c.pid != pid) continue;
    // Same pid, other start time: the old process died unnoticed and its
    // pid was reused. Its memory must be reaped before the new one
    // allocates under the same pid; the next pass sees it dead.
    return c.start_time == start || start == 0 || c.start_time == 0;
  }
  clients_.push_back(Client{pid, start});
  stats_.clients = clients_.size();
  return true;
}

ReaperStats ProcessReaper::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void ProcessReaper::Loop() {
  HSHM_THREAD_MODEL->SetName("chi_reaper");
  // A client holding a heap lock fails a walk after 1 s (retried later), so
  // that Stop never waits long for the pass in progress.
  hipc::HeapLockWaitLimit lock_wait(kHeapLockWaitMs);
  std::unique_lock<std::mutex> lock(wake_mu_);
  while (!stop_) {
    lock.unlock();
    CHI_IPC->StampHeartbeat();
    RunOnce();
    lock.lock();
    wake_cv_.wait_for(lock, std::chrono::milliseconds(period_ms_),
                      [this] { return stop_; });
  }
}

void ProcessReaper::RunOnce() {
  std::lock_guard<std::mutex> pass(pass_mu_);
  if (!CHI_IPC->initialized()) return;
  std::vector<Client> dead;
  const u64 now = hshm::NowNs();
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < clients_.size();) {
      if (clients_[i].retry_ns > now) {
        ++i;  // its last walk failed: not yet
      } else if (!hshm::ProcessAliveSince(clients_[i].pid,
                                          clients_[i].start_time)) {
        dead.push_back(clients_[i]);
        reaping_.push_back(clients_[i].pid);
        clients_[i] = clients_.back();
        clients_.pop_back();
      } else {
        ++i;
      }
    }
    stats_.clients = clients_.size();
  }
  for (const Client &c : dead) {
    const int pid = c.pid;
    if (stopping_.load(std::memory_order_relaxed)) {
      std::lock_guard<std::mutex> lock(mu_);  // left for a later pass
      reaping_.erase(std::remove(reaping_.begin(), reaping_.end(), pid),
                     reaping_.end());
      clients_.push_back(c);
      stats_.clients = clients_.size();
      continue;
    }
    Pending p;
    const Status claimed = Claim(pid, &p);
    std::lock_guard<std::mutex> lock(mu_);
    if (!claimed.ok()) {
      // Some of its tasks may be unmarked: free nothing, try again later
      // (a corrupt header may stay; each walk locks the heap).
      RetryLater(c, claimed);
      continue;
    }
    p.client = c;
    pending_.push_back(std::move(p));
    stats_.pending = pending_.size();
  }
  // Ready once both halves of step 2 hold, or, after wait_ms_, once its
  // running tasks are done even if the lanes never passed its tails (one
  // scribbled ahead on an idle lane would keep it waiting for ever). Its
  // running tasks are always waited for: a method may still read the
  // client's buffers.
  std::vector<Pending> ready;
  const u64 wait_ns = u64{wait_ms_} * 1000000;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < pending_.size();) {
      Pending &p = pending_[i];
      const bool waited = hshm::NowNs() - p.claimed_ns >= wait_ns;
      const bool done = RunningDone(p);
      const bool passed = done && LanesPassed(p);
      if (!passed && !(done && waited)) {
        if (waited && !done && !p.told) {
          p.told = true;
          HSHM_LOG_LIMITED(
              "chimaera: reaper: dead client %d: still waiting after %u ms "
              "(client.reap_wait_ms) for %zu task(s) a worker runs, or that "
              "it made look so; its memory stays until they end\n",
              p.pid, wait_ms_, p.running.size());
        }
        ++i;
        continue;
      }
      if (!passed) {
        HSHM_LOG_LIMITED(
            "chimaera: reaper: dead client %d: the lanes did not pass its "
            "tasks within %u ms (client.reap_wait_ms); freeing its memory\n",
            p.pid, wait_ms_);
        stats_.gave_up++;
      }
      ready.push_back(std::move(p));
      pending_[i] = std::move(pending_.back());
      pending_.pop_back();
    }
  }
  for (Pending &p : ready) {
    if (stopping_.load(std::memory_order_relaxed)) {
      std::lock_guard<std::mutex> lock(mu_);  // left for a later pass
      pending_.push_back(std::move(p));
      stats_.pending = pending_.size();
      continue;
    }
    Status walk;
    u64 bytes = FreeAll(p.pid, &walk);
    std::lock_guard<std::mutex> lock(mu_);
    stats_.bytes_freed += bytes;
    stats_.pending = pending_.size();
    if (!walk.ok()) {
      // Blocks past a failed walk are still its: all three steps again
      // later (claiming and freeing are idempotent).
      RetryLater(p.client, walk);
      continue;
    }
    reaping_.erase(std::remove(reaping_.begin(), reaping_.end(), p.pid),
                   reaping_.end());
    stats_.reaped++;
  }
}

void ProcessReaper::RetryLater(const Client &c, const Status &why) {
  reaping_.erase(std::remove(reaping_.begin(), reaping_.end(), c.pid),
                 reaping_.end());
  stats_.failed_walks++;
  const bool lock_busy = why.code() == hshm::StatusCode::kUnavailable;
  const bool corrupt = why.code() == hshm::StatusCode::kInternal;
  if (!lock_busy && !(corrupt && c.failed_walks + 1 < kMaxCorruptWalks)) {
    HSHM_LOG_LIMITED(
        "chimaera: reaper: dead client %d: %s after %u tries; what it still "
        "holds stays allocated\n",
        c.pid, why.ToString().c_str(), c.failed_walks + 1);
    stats_.gave_up++;
    return;
  }
  Client again = c;
  const u64 backoff_ms =
      std::min<u64>(u64{50} << std::min<u32>(again.failed_walks, 7), 5000);
  again.failed_walks++;
  again.retry_ns = hshm::NowNs() + backoff_ms * 1000000;
  clients_.push_back(again);
  stats_.clients = clients_.size();
}

Status ProcessReaper::Claim(int pid, Pending *out) {
  auto *ipc = CHI_IPC;
  Pending &p = *out;
  p.pid = pid;
  // Lane tails first: any task of pid queued now lies before them. A tail
  // scribbled far ahead (the worker puts it back later) must not leave us
  // waiting for ever: no push puts it past the consumer's head plus a ring,
  // and the head is at most a batch and a recycle past released() (read
  // after the tail, and it only grows).
  for (u32 prio = 0; prio < kNumPrios; ++prio) {
    for (u32 l = 0; l < ipc->num_lanes(); ++l) {
      const LaneView &v = ipc->GetLaneView(l, prio);
      u64 tail = v.lane()->tail();
      u64 limit = v.released() + v.depth() + kShmPopBatch + 1;
      p.lane_tails.push_back(std::min(tail, limit));
    }
  }
  u64 claimed = 0, abandoned = 0;
  p.claimed_ns = hshm::NowNs();
  Status s = ipc->main_alloc()->ForEachBlock([&](const hipc::BlockInfo &b) {
    if (b.owner_pid != pid || b.state != hipc::BlockState::kUsed) return;
    // The runtime's own blocks are never tasks, whatever their bytes say
    // (workers write them meanwhile).
    if (ipc->IsRuntimeStructure(b.ptr)) return;
    Task *t = AsTask(b);
    if (!t) return;
    // Mark it abandoned first, so a worker that admits it from now on drops
    // it and one that already runs it frees it when it completes. Then one
    // atomic step on claim_ decides who frees it (see the file comment): the
    // reaper claims it only if no worker accepted it first.
    u32 prev = t->state_.fetch_or(kTaskAbandoned | kTaskStopRequested,
                                  std::memory_order_acq_rel);
    if (prev & kTaskComplete) return;  // garbage: freed in step 3
    u32 claim = 0;
    if (!t->claim_.compare_exchange_strong(claim, kTaskReaped,
                                           std::memory_order_acq_rel) &&
        claim == kTaskAccepted) {  // a worker has it and will free it
      p.running.push_back(b.ptr);
      ++abandoned;
      return;
    }
    // Already ours (an earlier pass whose walk failed claimed it).
    if (claim == kTaskReaped) return;
    // Queued or never sent: ours, freed in step 3. A value the client
    // scribbled there cannot be claimed by a worker (it claims from 0 only):
    // make it ours too.
    if (claim != 0) {
      t->claim_.store(kTaskReaped, std::memory_order_release);
    }
    ++claimed;
  });
  if (!s.ok()) {
    HSHM_LOG_LIMITED(
        "chimaera: reaper: walking main for pid %d: %s (retried later)\n", pid,
        s.ToString().c_str());
  }
  if (!s.ok()) return s;  // counted when a walk succeeds
  std::lock_guard<std::mutex> lock(mu_);
  stats_.tasks_claimed += claimed;
  stats_.tasks_abandoned += abandoned;
  return Status::Ok();
}

bool ProcessReaper::LanesPassed(const Pending &p) const {
  auto *ipc = CHI_IPC;
  size_t i = 0;
  for (u32 prio = 0; prio < kNumPrios; ++prio) {
    for (u32 l = 0; l < ipc->num_lanes(); ++l, ++i) {
      if (i < p.lane_tails.size() &&
          ipc->GetLaneView(l, prio).released() < p.lane_tails[i]) {
        return false;
      }
    }
  }
  return true;
}

bool ProcessReaper::RunningDone(const Pending &p) const {
  for (const hipc::Pointer &t : p.running) {
    // Freed by its worker (or reused by someone else) once it is done.
    if (CHI_IPC->main_alloc()->BlockOwner(t) == p.pid) return false;
  }
  return true;
}

u64 ProcessReaper::FreeAll(int pid, Status *first_failure) {
  auto *ipc = CHI_IPC;
  Status walk;
  *first_failure = Status::Ok();
  auto note = [&] {
    if (first_failure->ok() && !walk.ok()) *first_failure = walk;
  };
  // The runtime's own blocks stay whatever owner a client wrote into them.
  u64 bytes = ipc->main_alloc()->ReclaimDeadProcess(
      pid,
      [ipc](const hipc::BlockInfo &b) {
        if (ipc->IsRuntimeStructure(b.ptr)) return false;
        Task *t = AsTask(b);
        if (!t) return true;
        // A task a worker still runs is the worker's to free.
        u32 st = t->state_.load(std::memory_order_acquire);
        u32 claim = t->claim_.load(std::memory_order_acquire);
        return (st & kTaskComplete) != 0 || claim == kTaskReaped;
      },
      &walk);
  note();
  auto all = [](const hipc::BlockInfo &) { return true; };
  bytes += ipc->cdata_alloc()->ReclaimDeadProcess(pid, all, &walk);
  note();
  bytes += ipc->rdata_alloc()->ReclaimDeadProcess(pid, all, &walk);
  note();
  return bytes;
}

}  // namespace chi
