#include "chimaera/work_orchestrator.h"

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iterator>

#include "chimaera/admin/admin_tasks.h"
#include "chimaera/client_util.h"
#include "chimaera/config_manager.h"
#include "chimaera/pool_manager.h"
#include "chimaera/remote_manager.h"
#include "chimaera/trace.h"
#include "hermes_shm/util/futex.h"
#include "hermes_shm/util/log_limit.h"

namespace chi {

namespace {
/** Ok if this process may run on every CPU of `cpus` (workers.cpus); else
 * which one it may not, and the CPUs it may. Ok too if the kernel does not
 * say (the pinning then reports its own error). */
Status CheckWorkerCpus(const std::vector<int> &cpus) {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (cpus.empty() || sched_getaffinity(0, sizeof(allowed), &allowed) != 0) {
    return Status::Ok();
  }
  for (int cpu : cpus) {
    if (cpu >= 0 && cpu < CPU_SETSIZE && CPU_ISSET(cpu, &allowed)) continue;
    std::string list;
    for (int c = 0; c < CPU_SETSIZE; ++c) {
      if (!CPU_ISSET(c, &allowed)) continue;
      if (!list.empty()) list += ",";
      list += std::to_string(c);
      if (list.size() > 200) {
        list += ",...";
        break;
      }
    }
    return Status::InvalidArgument(
        "key 'workers.cpus': this process may not run on CPU " +
        std::to_string(cpu) + " (it may run on " + list + ")");
  }
  return Status::Ok();
}
}  // namespace

Status WorkOrchestrator::Init() {
  const ServerConfig &conf = CHI_CONFIG_MANAGER->config();
  HSHM_RETURN_IF_ERROR(CheckWorkerCpus(conf.worker_cpus_));
  num_ll_ = conf.num_low_latency_;
  num_hl_ = conf.num_high_latency_;
  WorkerShared *shared = CHI_IPC->workers();
  for (u32 i = 0; i < num_ll_ + num_hl_; ++i) {
    WorkerKind kind =
        i < num_ll_ ? WorkerKind::kLowLatency : WorkerKind::kHighLatency;
    workers_.push_back(std::make_unique<Worker>(i, kind, &shared[i]));
    rates_.push_back(std::make_unique<std::atomic<double>>(0.0));
    busy_.push_back(std::make_unique<std::atomic<double>>(0.0));
  }
  // Process-queue lanes: lane i of each priority goes to worker i (mod the
  // number of workers of that kind).
  auto *ipc = CHI_IPC;
  num_lane_pins_ = static_cast<size_t>(ipc->num_lanes()) * kNumPrios;
  lane_pin_ = std::make_unique<std::atomic<u32>[]>(num_lane_pins_);
  for (size_t i = 0; i < num_lane_pins_; ++i) lane_pin_[i].store(0);
  lane_pin_count_.assign(num_lane_pins_, 0);
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
  unwedge_ = Worker::EnableUnwedging();
  if (!unwedge_ && conf.num_reinforcement_ > 0) {
    fprintf(stderr,
            "chimaera: membarrier is unavailable: lanes of a worker stuck in "
            "a task will not move\n");
  }
  if (conf.num_reinforcement_ == 0) {
    fprintf(stderr,
            "chimaera: workers.reinforcement is 0: no lane balancing, "
            "stuck-worker recovery, load reports to other nodes, automatic "
            "migration, cost models or busy/rate figures\n");
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
  const bool hl = prio == kHighLatency;
  const u32 base = hl ? num_ll_ : 0;
  const u32 n = hl ? num_hl_ : num_ll_;
  const u32 start = (hl ? rr_hl_ : rr_ll_).fetch_add(1);
  // Round-robin, passing over workers being robbed (stuck in a task that
  // does not yield): what lands in their mailbox or inbox would wait there
  // until that task returns.
  for (u32 k = 0; k < n; ++k) {
    Worker *w = workers_[base + (start + k) % n].get();
    if (!w->robbed()) return w;
  }
  return workers_[base + start % n].get();  // all stuck: wait like any
}

void WorkOrchestrator::AddLane(LaneView *lane, TaskPrio prio) {
  PickWorker(prio)->AddLane(lane);
}

size_t WorkOrchestrator::PinIndex(u32 lane, TaskPrio prio) const {
  if (lane >= CHI_IPC->num_lanes() || prio >= kNumPrios) return SIZE_MAX;
  size_t i = CHI_IPC->LaneViewIndex(&CHI_IPC->GetLaneView(lane, prio));
  return i < num_lane_pins_ ? i : SIZE_MAX;
}

bool WorkOrchestrator::PinProcessLane(u32 lane, TaskPrio prio, u32 worker) {
  size_t i = PinIndex(lane, prio);
  if (i == SIZE_MAX || worker >= workers_.size()) return false;
  {
    std::lock_guard<std::mutex> lock(lane_pin_mu_);
    u32 now = lane_pin_[i].load(std::memory_order_relaxed);
    if (now != 0 && now != worker + 1) return false;
    ++lane_pin_count_[i];
    if (now != 0) return true;  // already there, or on its way
    lane_pin_[i].store(worker + 1, std::memory_order_release);
    pinned_lanes_.fetch_add(1, std::memory_order_acq_rel);
    lane_pin_gen_.fetch_add(1, std::memory_order_acq_rel);
  }
  // Whoever holds the lane (or receives it next) hands it over.
  for (auto &w : workers_) w->CheckMail();
  return true;
}

void WorkOrchestrator::UnpinProcessLane(u32 lane, TaskPrio prio, u32 worker) {
  size_t i = PinIndex(lane, prio);
  if (i == SIZE_MAX) return;
  std::lock_guard<std::mutex> lock(lane_pin_mu_);
  if (lane_pin_[i].load(std::memory_order_relaxed) != worker + 1 ||
      lane_pin_count_[i] == 0) {
    return;
  }
  if (--lane_pin_count_[i] == 0) {
    lane_pin_[i].store(0, std::memory_order_release);
    pinned_lanes_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

u32 WorkOrchestrator::LanePin(const LaneView *lane) const {
  size_t i = CHI_IPC->LaneViewIndex(lane);
  return i < num_lane_pins_ ? lane_pin_[i].load(std::memory_order_acquire) : 0;
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

Status WorkOrchestrator::Stop(u64 drain_ms) {
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
  // A worker inside a method that never returns never sees Exit: wait for
  // each one a bounded time, and leave a stuck one unjoined.
  const u64 exit_deadline =
      std::max(deadline, hshm::NowNs()) + kExitGraceMs * 1000000;
  std::string stuck;
  // threads_ holds the workers' threads first, then the reinforcement
  // ones; fewer if Init failed part way (a worker never started).
  const size_t started = std::min(workers_.size(), threads_.size());
  for (size_t i = 0; i < started; ++i) {
    while (!workers_[i]->exited() && hshm::NowNs() < exit_deadline) {
      HSHM_THREAD_MODEL->SleepForUs(1000);
    }
    if (!workers_[i]->exited()) {
      stuck += (stuck.empty() ? "" : ", ") + std::to_string(i);
    } else {
      (void)HSHM_THREAD_MODEL->Join(threads_[i]);
    }
  }
  // The reinforcement threads wait on stop_cv_: they always end.
  for (size_t i = workers_.size(); i < threads_.size(); ++i) {
    (void)HSHM_THREAD_MODEL->Join(threads_[i]);
  }
  if (!stuck.empty()) {
    return Status::Timeout("worker " + stuck + " is still inside a method " +
                           std::to_string(drain_ms + kExitGraceMs) +
                           " ms after the stop began (a method that never "
                           "returns): it cannot be stopped");
  }
  threads_.clear();
  return Status::Ok();
}

double WorkOrchestrator::WorkerRate(u32 worker) const {
  return worker < rates_.size() ? rates_[worker]->load() : 0.0;
}

double WorkOrchestrator::WorkerBusy(u32 worker) const {
  return worker < busy_.size() ? busy_[worker]->load() : 0.0;
}

namespace {
/** The key of a cost model. */
std::pair<u64, MethodId> ModelKey(const PoolId &pool, MethodId method) {
  return {(u64{pool.node_id_} << 32) | pool.unique_, method};
}
}  // namespace

void CostModel::Add(double bytes, double ns) {
  n_ += 1;
  sx_ += bytes;
  sy_ += ns;
  sxx_ += bytes * bytes;
  sxy_ += bytes * ns;
}

void CostModel::Decay(double keep) {
  n_ *= keep;
  sx_ *= keep;
  sy_ *= keep;
  sxx_ *= keep;
  sxy_ *= keep;
}

double CostModel::ns_per_byte() const {
  if (n_ <= 0) return 0;
  double mx = sx_ / n_;
  double var = sxx_ / n_ - mx * mx;
  // Sizes that barely vary (e.g. keys of similar length) cannot tell a
  // per-byte cost from noise: the fit would swing wildly either way. Below
  // a spread of 64 bytes and 10% of the mean, or for a falling line, the
  // model is the mean cost (bytes do not make work cheaper).
  constexpr double kMinSpread = 64;
  double spread2 = std::max(kMinSpread * kMinSpread, 0.01 * mx * mx);
  if (var < spread2) return 0;
  double slope = (sxy_ / n_ - mx * (sy_ / n_)) / var;
  return slope > 0 ? slope : 0;
}

double CostModel::base_ns() const {
  if (n_ <= 0) return 0;
  return sy_ / n_ - ns_per_byte() * (sx_ / n_);
}

double CostModel::Estimate(double bytes) const {
  if (n_ <= 0) return -1;
  double est = base_ns() + ns_per_byte() * bytes;
  return est > 0 ? est : 0;
}

double WorkOrchestrator::EstimateNs(const PoolId &pool, MethodId method,
                                    u64 bytes) const {
  std::lock_guard<std::mutex> lock(models_mu_);
  auto it = models_.find(ModelKey(pool, method));
  if (it == models_.end()) return -1;
  return it->second.Estimate(static_cast<double>(bytes));
}

std::vector<CostModelView> WorkOrchestrator::CostModels() const {
  std::vector<CostModelView> out;
  std::lock_guard<std::mutex> lock(models_mu_);
  for (auto &kv : models_) {
    CostModelView v;
    v.pool = PoolId(static_cast<u32>(kv.first.first >> 32),
                    static_cast<u32>(kv.first.first));
    v.method = kv.first.second;
    v.weight = kv.second.weight();
    v.base_ns = kv.second.base_ns();
    v.ns_per_byte = kv.second.ns_per_byte();
    out.push_back(v);
  }
  return out;
}

void WorkOrchestrator::UpdateCostModels(const std::vector<CostSample> &samples,
                                        bool age) {
  // Per 100 ms period: a sample's weight halves in about 1.4 s, so the
  // models follow a change of workload within seconds.
  constexpr double kKeep = 0.95;
  constexpr double kForget = 0.01;  // models this light are dropped
  std::lock_guard<std::mutex> lock(models_mu_);
  for (auto it = models_.begin(); age && it != models_.end();) {
    it->second.Decay(kKeep);
    it = it->second.weight() < kForget ? models_.erase(it) : std::next(it);
  }
  for (const CostSample &smp : samples) {
    models_[ModelKey(smp.pool, smp.method)].Add(static_cast<double>(smp.bytes),
                                                static_cast<double>(smp.ns));
  }
}

void WorkOrchestrator::BalanceLanes() {
  // Per kind: the busiest worker hands a lane to the idlest when their busy
  // fractions differ by more than kBalanceGap. One move per kind per round,
  // and rounds are far enough apart for the smoothed busy fractions to show
  // the effect of the last move.
  constexpr double kBalanceGap = 0.3;
  constexpr double kBusyEnough = 0.5;
  for (u32 k = 0; k < 2; ++k) {
    u32 first = k == 0 ? 0 : num_ll_;
    u32 end = k == 0 ? num_ll_ : num_ll_ + num_hl_;
    if (end - first < 2) continue;
    u32 hi = first, lo = first;
    for (u32 w = first; w < end; ++w) {
      if (busy_[w]->load() > busy_[hi]->load()) hi = w;
      if (busy_[w]->load() < busy_[lo]->load()) lo = w;
    }
    double gap = busy_[hi]->load() - busy_[lo]->load();
    if (busy_[hi]->load() >= kBusyEnough && gap > kBalanceGap) {
      workers_[hi]->RequestLaneMove(workers_[lo].get());
    }
  }
}

void WorkOrchestrator::PublishLoad() {
  u64 inflight = CHI_POOL_MANAGER->LocalInflight();
  double busy = 0;
  for (auto &b : busy_) busy += b->load();
  if (!busy_.empty()) busy /= static_cast<double>(busy_.size());
  CHI_REMOTE->PublishLoad(
      static_cast<u32>(std::min<u64>(inflight, UINT32_MAX)),
      static_cast<u32>(std::lround(std::min(1.0, std::max(0.0, busy)) * 1000)));
}

void WorkOrchestrator::CheckOverload() {
  const ServerConfig &conf = CHI_CONFIG_MANAGER->config();
  auto *remote = CHI_REMOTE;
  if (conf.migrate_after_ms_ == 0 || !remote->enabled() ||
      CHI_IPC->node_id() != admin::kCoordinatorNode) {
    return;
  }
  const u64 now = hshm::NowNs();
  if (!offload_.IsNull()) {
    if (!offload_->IsComplete()) return;  // one move at a time
    Status st = offload_->GetStatus();
    auto *t = reinterpret_cast<admin::OffloadTask *>(offload_.ptr_);
    if (st.ok()) {
      offloads_.fetch_add(1, std::memory_order_relaxed);
      fprintf(stderr,
              "chimaera: moved container %u of pool %s off overloaded node "
              "%u\n",
              t->moved_container_, t->moved_pool_.ToString().c_str(),
              t->from_node_);
    } else {
      HSHM_LOG_LIMITED("chimaera: automatic migration: %s\n",
                       st.ToString().c_str());
    }
    CHI_IPC->DelTask(offload_.Cast<admin::OffloadTask>());
    offload_ = FullPtr<Task>();
    // Let the loads settle (and a failed node cool off) before another.
    offload_quiet_until_ = now + conf.migrate_after_ms_ * 1000000ull;
    for (u64 &since : overload_since_) since = 0;
  }
  const u32 n = remote->num_nodes();
  overload_since_.resize(n + 1, 0);
  std::vector<u64> load(n + 1, 0);
  u64 total = 0;
  u32 alive = 0;
  for (NodeId i = 1; i <= n; ++i) {
    if (!remote->NodeAlive(i)) continue;
    load[i] = remote->LoadOf(i).inflight;
    total += load[i];
    ++alive;
  }
  if (alive < 2) return;
  NodeId worst = 0, best = 0;
  for (NodeId i = 1; i <= n; ++i) {
    if (!remote->NodeAlive(i)) {
      overload_since_[i] = 0;
      continue;
    }
    double others = static_cast<double>(total - load[i]) / (alive - 1);
    bool over = load[i] >= 2 * others && load[i] >= others + 4;
    if (!over) {
      overload_since_[i] = 0;
    } else if (overload_since_[i] == 0) {
      overload_since_[i] = now;
    } else if (now - overload_since_[i] >=
                   conf.migrate_after_ms_ * 1000000ull &&
               (worst == 0 || load[i] > load[worst])) {
      worst = i;
    }
    if (best == 0 || load[i] < load[best]) best = i;
  }
  if (worst == 0 || best == worst || now < offload_quiet_until_) return;
  auto t = admin::NewAdminTask<admin::OffloadTask>(
      CHI_IPC->NewTaskNode(), DomainQuery::GetGlobalId(worst - 1));
  if (t.IsNull()) return;
  t->to_node_ = best;
  t->to_load_ = load[best];
  Submit(t);
  offload_ = t.template Cast<Task>();
}

void WorkOrchestrator::CheckStuck() {
  constexpr u64 kStuckMs = 60;  // longer than the longest idle nap (50 ms)
  if (!unwedge_) return;
  const u64 now = hshm::NowNs();
  stuck_epoch_.resize(workers_.size(), ~0ull);
  stuck_done_.resize(workers_.size(), ~0ull);
  stuck_since_.resize(workers_.size(), now);
  WorkerShared *shared = CHI_IPC->workers();
  for (u32 w = 0; w < workers_.size(); ++w) {
    // Stuck: in one loop iteration, and no task completed, for kStuckMs (a
    // worker busy with many tasks in one iteration is not stuck).
    u64 e = workers_[w]->epoch();
    u64 done = shared[w].tasks_done_.load(std::memory_order_relaxed);
    if (e != stuck_epoch_[w] || done != stuck_done_[w]) {
      stuck_epoch_[w] = e;
      stuck_done_[w] = done;
      stuck_since_[w] = now;
      continue;
    }
    if (now - stuck_since_[w] < kStuckMs * 1000000 || workers_[w]->asleep()) {
      continue;
    }
    // The least busy other worker of the same kind that is not stuck.
    const bool ll = w < num_ll_;
    const u32 first = ll ? 0 : num_ll_;
    const u32 end = ll ? num_ll_ : num_ll_ + num_hl_;
    Worker *to = nullptr;
    double to_busy = 2;
    for (u32 o = first; o < end; ++o) {
      if (o == w || now - stuck_since_[o] >= kStuckMs * 1000000) continue;
      if (busy_[o]->load() < to_busy) {
        to = workers_[o].get();
        to_busy = busy_[o]->load();
      }
    }
    if (!to) continue;
    u32 moved = workers_[w]->TakeLanesFromStuck(e, to);
    if (moved) {
      HSHM_LOG_LIMITED(
          "chimaera: worker %u is stuck in a task for %llu ms; %u of its "
          "lanes moved to worker %u\n",
          w, static_cast<unsigned long long>((now - stuck_since_[w]) / 1000000),
          moved, to->id());
    }
  }
}

void WorkOrchestrator::ReinforcementLoop(u32 index) {
  HSHM_THREAD_MODEL->SetName("chi_reinforce");
  // Each reinforcement thread owns a stripe of the workers and keeps an
  // exponentially weighted tasks/s estimate of each, for Monitor and stat.
  constexpr u64 kPeriodUs = 100000;
  constexpr double kAlpha = 0.3;
  u32 stride = CHI_CONFIG_MANAGER->config().num_reinforcement_;
  std::vector<u64> last(workers_.size(), 0);
  std::vector<u64> last_idle(workers_.size(), 0);
  std::vector<CostSample> samples;
  u64 last_ns = hshm::NowNs();
  u64 last_ticks = TraceClock();
  u64 periods = 0;
  WorkerShared *shared = CHI_IPC->workers();
  for (u32 w = 0; w < workers_.size(); ++w) {
    last_idle[w] = shared[w].idle_ticks_.load(std::memory_order_relaxed);
  }
  // Thread 0 of a multi-node runtime also reports the node's load every
  // balance.load_report_ms (GetDynamic() scheduling on the other nodes).
  const ServerConfig &conf = CHI_CONFIG_MANAGER->config();
  const bool reports = index == 0 && CHI_REMOTE->enabled();
  const u64 report_us =
      std::min<u64>(kPeriodUs, conf.load_report_ms_ * 1000ull);
  // Stuck workers are looked for every 20 ms (thread 0), loads reported
  // every load_report_ms; rates and busy fractions every kPeriodUs.
  constexpr u64 kStuckCheckUs = 20000;
  const u64 wait_us =
      index == 0 ? std::min(kStuckCheckUs, reports ? report_us : kPeriodUs)
                 : kPeriodUs;
  u64 last_report_ns = 0;
  while (!stop_.load()) {
    {
      // One wake-up per period (an idle runtime must stay quiet), and at
      // once when Stop() notifies.
      std::unique_lock<std::mutex> lock(stop_mu_);
      stop_cv_.wait_for(lock, std::chrono::microseconds(wait_us),
                        [this] { return stop_.load(); });
    }
    if (stop_.load()) break;
    if (index == 0) CheckStuck();
    if (reports &&
        hshm::NowNs() - last_report_ns + 2000000 >= report_us * 1000) {
      last_report_ns = hshm::NowNs();
      PublishLoad();
      CheckOverload();
    }
    u64 now = hshm::NowNs();
    // Rates and busy fractions per full period only.
    if (now - last_ns < kPeriodUs * 1000 - wait_us * 500) continue;
    double secs = static_cast<double>(now - last_ns) / 1e9;
    last_ns = now;
    u64 ticks = TraceClock();
    double period_ticks = static_cast<double>(ticks - last_ticks);
    last_ticks = ticks;
    for (u32 w = index; w < workers_.size(); w += stride) {
      u64 done = shared[w].tasks_done_.load(std::memory_order_relaxed);
      double rate = static_cast<double>(done - last[w]) / secs;
      last[w] = done;
      double old = rates_[w]->load();
      rates_[w]->store(old == 0 ? rate : kAlpha * rate + (1 - kAlpha) * old);
      // Busy fraction: 1 - idle time / elapsed, counting the idle period
      // in progress. The worker may close that period between the two
      // loads; the clamp absorbs the one-period error.
      u64 idle = shared[w].idle_ticks_.load(std::memory_order_relaxed);
      u64 since = shared[w].idle_since_.load(std::memory_order_relaxed);
      if (since != 0 && ticks > since) idle += ticks - since;
      double idle_frac =
          static_cast<double>(static_cast<i64>(idle - last_idle[w])) /
          std::max(period_ticks, 1.0);
      last_idle[w] = idle;
      double busy = std::min(1.0, std::max(0.0, 1.0 - idle_frac));
      double old_busy = busy_[w]->load();
      busy_[w]->store(kAlpha * busy + (1 - kAlpha) * old_busy);
      workers_[w]->TakeSamples(&samples);
    }
    UpdateCostModels(samples, index == 0);
    samples.clear();
    if (index == 0 && ++periods % kBalancePeriods == 0 && conf.balance_lanes_) {
      BalanceLanes();
    }
  }
}

}  // namespace chi
