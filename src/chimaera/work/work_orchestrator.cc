#include "chimaera/work_orchestrator.h"

#include <chrono>

#include "chimaera/config_manager.h"
#include "hermes_shm/util/futex.h"

namespace chi {

Status WorkOrchestrator::Init() {
  const ServerConfig &conf = CHI_CONFIG_MANAGER->config();
  num_ll_ = conf.num_low_latency_;
  num_hl_ = conf.num_high_latency_;
  WorkerShared *shared = CHI_IPC->workers();
  for (u32 i = 0; i < num_ll_ + num_hl_; ++i) {
    WorkerKind kind =
        i < num_ll_ ? WorkerKind::kLowLatency : WorkerKind::kHighLatency;
    workers_.push_back(std::make_unique<Worker>(i, kind, &shared[i]));
    rates_.push_back(std::make_unique<std::atomic<double>>(0.0));
  }
  // Process-queue lanes: lane i of each priority goes to worker i (mod the
  // number of workers of that kind).
  auto *ipc = CHI_IPC;
  for (u32 l = 0; l < ipc->num_lanes(); ++l) {
    workers_[l % num_ll_]->AddLane(&ipc->GetLaneView(l, kLowLatency));
    workers_[num_ll_ + l % num_hl_]->AddLane(
        &ipc->GetLaneView(l, kHighLatency));
  }
  size_t cpu_idx = 0;
  auto next_cpu = [&]() -> int {
    if (cpu_idx < conf.worker_cpus_.size()) return conf.worker_cpus_[cpu_idx++];
    cpu_idx++;
    return -1;
  };
  for (auto &w : workers_) {
    Worker *wp = w.get();
    int cpu = next_cpu();
    auto t = HSHM_THREAD_MODEL->Spawn([wp, cpu] {
      if (cpu >= 0) {
        Status s = HSHM_THREAD_MODEL->SetCpuAffinity(cpu);
        if (!s.ok())
          fprintf(stderr, "chimaera: pinning: %s\n", s.ToString().c_str());
      }
      wp->Loop();
    });
    if (!t.ok())
      return Status(t.status().code(),
                    "spawning a worker: " + t.status().message());
    threads_.push_back(std::move(*t));
  }
  for (u32 i = 0; i < conf.num_reinforcement_; ++i) {
    int cpu = next_cpu();
    auto t = HSHM_THREAD_MODEL->Spawn([this, i, cpu] {
      if (cpu >= 0) (void)HSHM_THREAD_MODEL->SetCpuAffinity(cpu);
      ReinforcementLoop(i);
    });
    if (!t.ok()) return t.status();
    threads_.push_back(std::move(*t));
  }
  return Status::Ok();
}

Worker *WorkOrchestrator::PickWorker(u32 prio) {
  if (prio == kHighLatency) {
    return workers_[num_ll_ + rr_hl_.fetch_add(1) % num_hl_].get();
  }
  return workers_[rr_ll_.fetch_add(1) % num_ll_].get();
}

void WorkOrchestrator::AddLane(LaneView *lane, TaskPrio prio) {
  PickWorker(prio)->AddLane(lane);
}

void WorkOrchestrator::AddLane(TaskLane *lane, TaskPrio prio,
                               Container *container) {
  PickWorker(prio)->AddLane(lane, container);
}

bool WorkOrchestrator::WaitQuiescent(u64 timeout_ms) {
  std::vector<u64> start;
  for (auto &w : workers_) start.push_back(w->epoch());
  u64 deadline = hshm::NowNs() + timeout_ms * 1000000;
  for (size_t i = 0; i < workers_.size(); ++i) {
    Worker *w = workers_[i].get();
    // From a fiber, our own worker advances each time we yield.
    while (!w->exited() && w->epoch() < start[i] + 2) {
      if (hshm::NowNs() > deadline) return false;
      w->Wake();
      if (!Worker::YieldCurrentFiber()) HSHM_THREAD_MODEL->SleepForUs(100);
    }
  }
  return true;
}

void WorkOrchestrator::Stop(u64 drain_ms) {
  u64 deadline = hshm::NowNs() + drain_ms * 1000000;
  {
    std::lock_guard<std::mutex> lock(stop_mu_);
    stop_.store(true);
  }
  stop_cv_.notify_all();
  for (auto &w : workers_) w->Stop(deadline);
  // Two-phase stop: workers keep draining until all of them are idle at once,
  // seen twice 1 ms apart (a worker that was busy at the first look may have
  // sent a task to another's lane), or until the deadline.
  auto all_idle = [this] {
    for (auto &w : workers_) {
      if (!w->idle()) return false;
    }
    return true;
  };
  while (hshm::NowNs() < deadline) {
    if (all_idle()) {
      HSHM_THREAD_MODEL->SleepForUs(1000);
      if (all_idle()) break;
    }
    HSHM_THREAD_MODEL->SleepForUs(200);
  }
  for (auto &w : workers_) w->Exit();
  for (auto &t : threads_) (void)HSHM_THREAD_MODEL->Join(t);
  threads_.clear();
}

double WorkOrchestrator::WorkerRate(u32 worker) const {
  return worker < rates_.size() ? rates_[worker]->load() : 0.0;
}

void WorkOrchestrator::ReinforcementLoop(u32 index) {
  HSHM_THREAD_MODEL->SetName("chi_reinforce");
  // Each reinforcement thread owns a stripe of the workers and keeps an
  // exponentially weighted tasks/s estimate of each, for Monitor and stat.
  constexpr u64 kPeriodUs = 100000;
  constexpr double kAlpha = 0.3;
  u32 stride = CHI_CONFIG_MANAGER->config().num_reinforcement_;
  std::vector<u64> last(workers_.size(), 0);
  u64 last_ns = hshm::NowNs();
  WorkerShared *shared = CHI_IPC->workers();
  while (!stop_.load()) {
    {
      // One wake-up per period (an idle runtime must stay quiet), and at
      // once when Stop() notifies.
      std::unique_lock<std::mutex> lock(stop_mu_);
      stop_cv_.wait_for(lock, std::chrono::microseconds(kPeriodUs),
                        [this] { return stop_.load(); });
    }
    if (stop_.load()) break;
    u64 now = hshm::NowNs();
    double secs = static_cast<double>(now - last_ns) / 1e9;
    last_ns = now;
    for (u32 w = index; w < workers_.size(); w += stride) {
      u64 done = shared[w].tasks_done_.load(std::memory_order_relaxed);
      double rate = static_cast<double>(done - last[w]) / secs;
      last[w] = done;
      double old = rates_[w]->load();
      rates_[w]->store(old == 0 ? rate : kAlpha * rate + (1 - kAlpha) * old);
    }
  }
}

}  // namespace chi
