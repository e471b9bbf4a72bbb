// The work orchestrator (runtime only): spawns the workers and the
// reinforcement threads, and maps lanes to workers -- low-latency lanes (the
// process queue's among them) to the low-latency workers and high-latency
// lanes to a disjoint set of high-latency workers.
//
// Threading: Init and Stop run on the runtime's main thread; AddLanes may be
// called from any thread (e.g. a container creating a queue in a fiber).
#ifndef CHIMAERA_WORK_ORCHESTRATOR_H_
#define CHIMAERA_WORK_ORCHESTRATOR_H_

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "chimaera/worker.h"
#include "hermes_shm/singleton.h"
#include "hermes_shm/thread_model.h"

namespace chi {

/** A learned cost model of one method: service time ~ base + per_byte x
 * (bytes of input buffers), fitted by least squares over samples whose
 * weight decays over time. Not thread-safe (WorkOrchestrator guards it). */
class CostModel {
 public:
  /** Adds one sample of `ns` for `bytes` of input, with weight 1. */
  void Add(double bytes, double ns);
  /** Multiplies every sample's weight by `keep` (0..1). */
  void Decay(double keep);
  /** Sum of the sample weights (0: nothing learned). */
  double weight() const { return n_; }
  /** The fitted constant term (ns). */
  double base_ns() const;
  /** The fitted cost per input byte (ns): 0 while the sizes spread less
   * than 64 bytes and 10% of their mean, or if the fit falls. */
  double ns_per_byte() const;
  /** base_ns() + ns_per_byte() * bytes, at least 0; -1 if nothing learned. */
  double Estimate(double bytes) const;

 private:
  double n_ = 0, sx_ = 0, sy_ = 0, sxx_ = 0, sxy_ = 0;
};

/** A cost model as chimaera_stat shows it. */
struct CostModelView {
  PoolId pool;
  MethodId method = 0;
  double weight = 0;       ///< Decayed sample count.
  double base_ns = 0;      ///< Constant term.
  double ns_per_byte = 0;  ///< Cost per input byte.
};

/** Owns the runtime's threads. */
class WorkOrchestrator {
 public:
  /** Creates the workers, maps the process queue's lanes and starts every
   * thread (pinned to the configured CPUs, if any). */
  Status Init();
  /** Gives process-queue `lane` (of priority `prio`) to a worker of the
   * matching kind, round-robin. */
  void AddLane(LaneView *lane, TaskPrio prio);
  /** Gives `container`'s lane `lane` (of priority `prio`) to a worker of the
   * matching kind, round-robin. Any thread. */
  void AddLane(TaskLane *lane, TaskPrio prio, Container *container);
  /** A worker of the kind that runs tasks of priority `prio`, round-robin,
   * passing over workers found stuck (Worker::robbed) unless all are. Any
   * thread (after Init). */
  Worker *PickWorker(u32 prio);
  /** Moves process-queue lane `lane` of priority `prio` to worker `worker`
   * and keeps it there (lane balancing leaves it alone; unwedging a stuck
   * worker moves it, and it comes back once the worker runs again), so that
   * the tasks a client addresses by id to a container pinned to `worker`
   * reach it in one hop. The worker holding the lane hands it over at its
   * next loop iteration. Counted: each pin needs an UnpinProcessLane. The
   * first pin of a lane wins: false (and nothing changes) if it is pinned to
   * another worker. Any thread (after Init). */
  bool PinProcessLane(u32 lane, TaskPrio prio, u32 worker);
  /** Drops one PinProcessLane(lane, prio, worker); the last one lets the
   * lane move again. Any thread. */
  void UnpinProcessLane(u32 lane, TaskPrio prio, u32 worker);
  /** The worker process-queue lane `lane` is pinned to, plus one; 0 if it
   * is not pinned. Any thread. */
  u32 LanePin(const LaneView *lane) const;
  /** Changes whenever a lane is pinned: workers then look for lanes they
   * hold that are pinned to another worker. Any thread. */
  u64 lane_pin_gen() const {
    return lane_pin_gen_.load(std::memory_order_acquire);
  }
  /** True while some process-queue lane is pinned. Any thread. */
  bool AnyLanePinned() const {
    return pinned_lanes_.load(std::memory_order_acquire) != 0;
  }
  /** Returns once every running worker has started a new loop iteration
   * twice (so none still uses a lane retired before the call). From a task
   * fiber it yields while waiting. Bounded by `timeout_ms`; false on timeout.
   */
  bool WaitQuiescent(u64 timeout_ms);
  /** Stops every thread: workers finish queued tasks until `drain_ms`
   * passes, then abort the rest. Joins every thread that ends within
   * kExitGraceMs after that. A worker still inside a method then (one that
   * never returns) is left running, unjoined: the result is Timeout naming
   * it, and the caller must not free what workers use (pools, segments,
   * the workers themselves). Main thread, once. */
  Status Stop(u64 drain_ms);
  /** How long past the drain Stop waits for each worker to leave its loop. */
  static constexpr u64 kExitGraceMs = 2000;
  /** All workers (low-latency first). */
  const std::vector<std::unique_ptr<Worker>> &workers() const {
    return workers_;
  }
  /** Throughput model: tasks per second per worker, refreshed by the
   * reinforcement threads. */
  double WorkerRate(u32 worker) const;
  /** Load model: the fraction of time (0..1) worker `worker` spent busy
   * (not polling empty lanes or asleep), smoothed over about a second by
   * the reinforcement threads. Any thread. */
  double WorkerBusy(u32 worker) const;
  /** The learned service time (ns) of a task of `method` of `pool` with
   * `bytes` of input buffers, or -1 if no sample of it was seen yet. Any
   * thread. */
  double EstimateNs(const PoolId &pool, MethodId method, u64 bytes) const;
  /** Containers the automatic migration policy moved (coordinator). Any
   * thread. */
  u64 offloads() const { return offloads_.load(std::memory_order_relaxed); }
  /** Every cost model learned so far. Any thread. */
  std::vector<CostModelView> CostModels() const;

 private:
  /** Lane balancing: within each kind of worker, asks the busiest worker
   * to hand a lane to the least busy one when they differ enough
   * (Worker::RequestLaneMove). Reinforcement thread 0, every
   * kBalancePeriods periods. */
  void BalanceLanes();
  /** Sends this node's load (tasks in flight on its containers, mean busy
   * fraction) to the other nodes (RemoteManager::PublishLoad).
   * Reinforcement thread 0, every balance.load_report_ms. */
  void PublishLoad();
  /** The coordinator's automatic migration policy (see
   * balance.migrate_after_ms), after each PublishLoad: tracks how long
   * each node stayed overloaded and sends the Offload request. Reinforcement
   * thread 0 only. */
  void CheckOverload();
  /** Unwedging: a worker that stayed in one loop iteration (a task that
   * does not yield) for kStuckMs while awake hands its other lanes to the
   * least busy worker of its kind (Worker::TakeLanesFromStuck).
   * Reinforcement thread 0, every wake-up. */
  void CheckStuck();
  /** The index of process-queue lane (`lane`, `prio`) in lane_pin_ (its
   * LaneViewIndex), or SIZE_MAX if there is no such lane. */
  size_t PinIndex(u32 lane, TaskPrio prio) const;
  /** Reinforcement periods (100 ms) between two balancing rounds. */
  static constexpr u64 kBalancePeriods = 10;
  /** Folds the workers' timed runs into the cost models; ages them first if
   * `age` (one reinforcement thread does, once per period). */
  void UpdateCostModels(const std::vector<CostSample> &samples, bool age);
  /** Reinforcement thread body: refreshes the per-worker rate model. */
  void ReinforcementLoop(u32 index);

  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<hshm::Thread> threads_;
  // Pinned process-queue lanes, by LaneViewIndex: the worker + 1 (0: not
  // pinned), read without a lock; the counts of pins under lane_pin_mu_.
  std::unique_ptr<std::atomic<u32>[]> lane_pin_;
  std::vector<u32> lane_pin_count_;
  size_t num_lane_pins_ = 0;  ///< Entries of both.
  std::mutex lane_pin_mu_;
  std::atomic<u64> lane_pin_gen_{0};
  std::atomic<u32> pinned_lanes_{0};  ///< Entries of lane_pin_ not 0.
  std::vector<std::unique_ptr<std::atomic<double>>> rates_;
  std::vector<std::unique_ptr<std::atomic<double>>> busy_;
  // Automatic migration (reinforcement thread 0 of the coordinator only).
  std::vector<u64> overload_since_;  ///< Per node: NowNs since overloaded.
  // Unwedging (reinforcement thread 0).
  bool unwedge_ = false;          ///< Worker::EnableUnwedging() succeeded.
  std::vector<u64> stuck_epoch_;  ///< Per worker: the epoch last seen.
  std::vector<u64> stuck_since_;  ///< Per worker: NowNs it was first seen.
  std::vector<u64> stuck_done_;   ///< Per worker: tasks_done_ then.
  FullPtr<Task> offload_;         ///< The Offload request in flight.
  u64 offload_quiet_until_ = 0;   ///< No new request before this NowNs.
  std::atomic<u64> offloads_{0};  ///< Containers moved by the policy.
  /** Cost models by (pool, method); pool as node_id_ << 32 | unique_. */
  std::map<std::pair<u64, MethodId>, CostModel> models_;
  mutable std::mutex models_mu_;  ///< Guards models_.
  u32 num_ll_ = 0;
  u32 num_hl_ = 0;
  std::atomic<u32> rr_ll_{0};
  std::atomic<u32> rr_hl_{0};
  std::atomic<bool> stop_{false};
  std::mutex stop_mu_;               ///< Guards nothing but stop_cv_ waits.
  std::condition_variable stop_cv_;  ///< Wakes reinforcement threads at Stop.
};

}  // namespace chi

#define CHI_WORK_ORCHESTRATOR \
  (::hshm::Singleton<::chi::WorkOrchestrator>::GetInstance())

#endif  // CHIMAERA_WORK_ORCHESTRATOR_H_
