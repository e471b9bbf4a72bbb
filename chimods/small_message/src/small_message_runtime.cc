// Runtime side of the small_message module.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <vector>

#include "chimaera/pool_manager.h"
#include "chimaera/worker.h"
#include "small_message/small_message_client.h"

namespace chi::small_message {

/** Container of the small_message module: stateless but for Io's modelled
 * device (one atomic), so its methods need no locking. */
class Runtime : public Module<Runtime, SmallMessage> {
 public:
  /** Does nothing. Workers call it. */
  void Run(NoopTask *task, RunContext &rctx) {}

  /** Copies the caller's buffer into a fresh client_data buffer. Errors:
   * InvalidArgument (buffer outside the data segments), OutOfMemory
   * (client_data full). Workers call it. */
  void Run(EchoTask *task, RunContext &rctx) {
    task->ret_ = hipc::Pointer::GetNull();
    task->ret_size_ = 0;
    u64 size = task->size_;
    if (size == 0) return;
    const char *src = CHI_IPC->DataBuffer(task->data_, size);
    if (!src) {
      task->SetStatus(Status::InvalidArgument("Echo: data buffer is not " +
                                              std::to_string(size) +
                                              " bytes inside a data segment"));
      return;
    }
    FullPtr<char> ret = CHI_IPC->AllocateClientBuffer(size);
    if (ret.IsNull()) {
      task->SetStatus(Status::OutOfMemory("Echo: client_data has no room for " +
                                          std::to_string(size) + " bytes"));
      return;
    }
    std::memcpy(ret.ptr_, src, size);
    task->ret_ = ret.shm_;
    task->ret_size_ = size;
  }

  /** Busy for us_ without yielding; reports its worker and any overlap
   * with another Probe of this container. Workers call it. */
  void Run(ProbeTask *task, RunContext &rctx) {
    if (task->us_ > 1000000) {
      return task->SetStatus(Status::InvalidArgument("Probe: at most 1 s"));
    }
    const u32 before = probing_.fetch_add(1, std::memory_order_acq_rel);
    const u64 until = hshm::NowNs() + u64{task->us_} * 1000;
    while (hshm::NowNs() < until) hshm::CpuRelax();
    const u32 after = probing_.fetch_sub(1, std::memory_order_acq_rel);
    task->overlapped_ = before != 0 || after != 1;
    task->worker_ = rctx.worker_->id();
  }

  /** Most kernel iterations one Compute runs: a few seconds on a current
   * core (1-2 ns each). It runs without a fiber, holding its worker until
   * it ends (its other lanes move to other workers meanwhile). */
  static constexpr u64 kMaxComputeIters = u64{1} << 32;

  /** Runs the kernel; InvalidArgument past kMaxComputeIters. Workers call
   * it. */
  void Run(ComputeTask *task, RunContext &rctx) {
    if (task->iters_ > kMaxComputeIters) {
      return task->SetStatus(Status::InvalidArgument(
          "Compute: at most " + std::to_string(kMaxComputeIters) +
          " iterations (a few seconds)"));
    }
    task->result_ = ComputeKernel(task->iters_, task->seed_);
  }

  /** Most points per step StencilRun accepts (it holds one subtask each). */
  static constexpr u32 kMaxStencilWidth = 65536;
  /** Most steps StencilRun accepts. */
  static constexpr u32 kMaxStencilSteps = 1u << 20;
  /** Most subtasks StencilRun keeps in flight (a process-queue lane's
   * default depth). */
  static constexpr u32 kStencilWave = 1024;

  /** Containers of this pool on this node (at least 1). Its worker, while
   * it runs a task of the pool. */
  u32 LocalContainers() const {
    PoolCache cache;
    const PoolInfo *pool = CHI_POOL_MANAGER->FindFast(pool_id_, &cache);
    return pool && !pool->local_.empty() ? static_cast<u32>(pool->local_.size())
                                         : 1;
  }

  /** The bulk-synchronous loop: per step, submits width_ Compute subtasks
   * (point i on local container i % this node's containers), at most
   * kStencilWave in flight, waits for all of them (the fiber yields
   * meanwhile), adds their results to checksum_ and frees them. Stops at the
   * first failed subtask and takes its status, or once its submitter gave
   * up on it (Aborted); the subtasks not waited for then are abandoned. Errors:
   * InvalidArgument (width_ or steps_ too large; a run sent from another
   * node, broadcast or fire-and-forget), OutOfMemory (no room for a
   * subtask in `main`), Aborted, or a subtask's. Workers call it. */
  void Run(StencilRunTask *task, RunContext &rctx) {
    task->checksum_ = 0;
    // It stops only when its submitter gives up, which the runtime sees for
    // a client of this node that waits: a run from another node, one part
    // of a broadcast or a fire-and-forget run could never be stopped.
    if (rctx.origin_ != TaskOrigin::kShm || task->IsFireAndForget()) {
      task->SetStatus(Status::InvalidArgument(
          "StencilRun runs only for a submitter on the node of its "
          "container that waits for it (a remote, broadcast or "
          "fire-and-forget run could not be stopped)"));
      return;
    }
    const u32 width = task->width_;
    if (task->iters_ > kMaxComputeIters) {
      task->SetStatus(Status::InvalidArgument("StencilRun: at most " +
                                              std::to_string(kMaxComputeIters) +
                                              " iterations per point"));
      return;
    }
    if (width > kMaxStencilWidth) {
      task->SetStatus(Status::InvalidArgument(
          "StencilRun: width " + std::to_string(width) + " exceeds " +
          std::to_string(kMaxStencilWidth)));
      return;
    }
    if (task->steps_ > kMaxStencilSteps) {
      task->SetStatus(Status::InvalidArgument(
          "StencilRun: " + std::to_string(task->steps_) + " steps exceed " +
          std::to_string(kMaxStencilSteps)));
      return;
    }
    const u32 local = LocalContainers();
    // A client of this very pool: its subtasks are children of `task`, and
    // waiting on them yields this fiber.
    ModuleClient<SmallMessage> self(pool_id_);
    std::vector<Future<ComputeTask>> subs(std::min(width, kStencilWave));
    u64 checksum = 0;
    for (u32 step = 0; step < task->steps_; ++step) {
      Status err = Status::Ok();
      bool gave_up = false;
      // In waves of at most kStencilWave subtasks in flight, so that a wide
      // step does not fill `main` and the lanes that other clients share.
      // A failed point or a submitter that gave up ends the run at once:
      // the points not waited for yet are abandoned (those not started are
      // dropped unrun), and no later wave starts.
      for (u32 first = 0; first < width && err.ok() && !gave_up;
           first += kStencilWave) {
        const u32 n = std::min(kStencilWave, width - first);
        for (u32 k = 0; k < n; ++k) {
          const u32 i = first + k;
          // Point i on local container i % local: by id, so that the points
          // spread over the containers' lanes (and so workers).
          subs[k] = self.Async<ComputeTask>(DomainQuery::GetLocalId(i % local),
                                            task->iters_,
                                            StencilSeed(step, width, i));
        }
        for (u32 k = 0; k < n; ++k) {
          if (err.ok() && !gave_up) {
            gave_up = rctx.SubmitterGaveUp();
            if (!gave_up) {
              Status s = subs[k].Wait();  // OutOfMemory if never allocated
              if (s.ok()) {
                checksum += subs[k]->result_;
              } else {
                err = s;
              }
            }
          }
          subs[k].Reset();  // abandons it if still running
        }
      }
      if (!err.ok()) {
        task->SetStatus(err);
        return;
      }
      if (gave_up || rctx.SubmitterGaveUp()) {
        task->SetStatus(Status::Aborted("StencilRun: the submitter gave up"));
        return;
      }
    }
    task->checksum_ = checksum;
  }

  /** Longest I/O an IoTask may ask for (us). */
  static constexpr u32 kMaxIoUs = 10000000;
  /** Longest backlog of the device (ns): an Io that would start later than
   * this from now is refused, so a flood of long Ios cannot make every
   * later one wait without bound. */
  static constexpr u64 kMaxIoBacklogNs = 60ull * 1000000000;

  /** Reserves the next us_ of this container's device (one I/O at a time,
   * in arrival order) and parks the fiber until that I/O ends. Errors:
   * InvalidArgument (us_ above kMaxIoUs), ResourceExhausted (the device is
   * booked past kMaxIoBacklogNs). Workers call it, concurrently. */
  void Run(IoTask *task, RunContext &rctx) {
    const u32 us = task->us_;
    if (us > kMaxIoUs) {
      task->SetStatus(Status::InvalidArgument("Io: " + std::to_string(us) +
                                              " us is above the 10 s limit"));
      return;
    }
    const u64 now = hshm::NowNs();
    u64 free_at = device_free_ns_.load(std::memory_order_relaxed);
    u64 start;
    do {
      start = std::max(now, free_at);
      if (start - now > kMaxIoBacklogNs) {
        task->SetStatus(Status::ResourceExhausted(
            "Io: the device is booked for more than 60 s ahead"));
        return;
      }
    } while (!device_free_ns_.compare_exchange_weak(
        free_at, start + us * 1000ull, std::memory_order_relaxed));
    const u64 end = start + us * 1000ull;
    SleepUs((end - now + 999) / 1000);
    task->node_ = CHI_IPC->node_id();
    task->container_ = container_id_;
    task->queued_ns_ = start - now;
  }

  /** Migration: nothing to carry (Io's device starts idle on its new
   * node). */
  Status SaveState(std::string *out) override { return Status::Ok(); }
  /** Migration: nothing to restore. */
  Status LoadState(const std::string &in) override { return Status::Ok(); }

 private:
  /** When this container's modelled device finishes its last reserved I/O
   * (NowNs clock). */
  std::atomic<u64> device_free_ns_{0};
  /** Probes of this container running now. */
  std::atomic<u32> probing_{0};
};

}  // namespace chi::small_message

CHI_MODULE(chi::small_message::Runtime);
