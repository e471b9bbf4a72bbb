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
#include <memory>
#include <mutex>
#include <vector>

#include "chimaera/worker.h"
#include "hermes_shm/singleton.h"
#include "hermes_shm/thread_model.h"

namespace chi {

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
  /** A worker of the kind that runs tasks of priority `prio`, round-robin.
   * Any thread (after Init). */
  Worker *PickWorker(u32 prio);
  /** Returns once every running worker has started a new loop iteration
   * twice (so none still uses a lane retired before the call). From a task
   * fiber it yields while waiting. Bounded by `timeout_ms`; false on timeout.
   */
  bool WaitQuiescent(u64 timeout_ms);
  /** Stops every thread: workers finish queued tasks until `drain_ms`
   * passes, then abort the rest. Joins all threads. */
  void Stop(u64 drain_ms);
  /** All workers (low-latency first). */
  const std::vector<std::unique_ptr<Worker>> &workers() const {
    return workers_;
  }
  /** Throughput model: tasks per second per worker, refreshed by the
   * reinforcement threads. */
  double WorkerRate(u32 worker) const;

 private:
  /** Reinforcement thread body: refreshes the per-worker rate model. */
  void ReinforcementLoop(u32 index);

  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<hshm::Thread> threads_;
  std::vector<std::unique_ptr<std::atomic<double>>> rates_;
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
