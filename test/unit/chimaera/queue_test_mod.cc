// Runtime side of the queue test module.
#include "queue_test_mod.h"

#include <cstring>
#include <optional>
#include <stdexcept>

#include "chimaera/admin/admin_client.h"
#include "chimaera/client_util.h"
#include "chimaera/module_manager.h"
#include "chimaera/worker.h"
#include "hermes_shm/util/futex.h"

namespace queue_test_mod {

/** Container with a 2-lane low-latency queue (id 0) and a 1-lane
 * high-latency queue (id 1). */
class Runtime : public chi::Container {
 public:
  Runtime() {
    RegisterMethod(kWhere, "Where", &Runtime::Where);
    RegisterMethod(kOverflow, "Overflow", &Runtime::Overflow);
    RegisterMethod(kRelay, "Relay", &Runtime::Relay);
    RegisterMethod(kRelayHigh, "RelayHigh", &Runtime::RelayHigh);
    RegisterMethod(kFailWithBuffer, "FailWithBuffer", &Runtime::FailWithBuffer);
    RegisterMethod(kSumInput, "SumInput", &Runtime::SumInput);
    RegisterMethod(kRelayOwned, "RelayOwned", &Runtime::RelayOwned);
    RegisterMethod(kDeadline, "Deadline", &Runtime::Deadline);
    RegisterMethod(kInlineWait, "InlineWait", &Runtime::InlineWait);
  }

  /** Dynamic tasks go to container (task graph id % containers), which may
   * be on any node. */
  void Monitor(chi::MonitorMode mode, chi::Task *task,
               chi::RunContext &rctx) override {
    if (mode == chi::MonitorMode::kGlobalSchedule) {
      task->dom_query_ = chi::DomainQuery::GetGlobalId(
          static_cast<chi::u32>(task->task_node_.major_ % num_containers_));
    }
  }

  /** Broadcast replies: collect every node in nodes_mask_. */
  void MergeBcast(chi::Task *acc, chi::Task *reply, chi::NodeId from) override {
    static_cast<WhereTask *>(acc)->nodes_mask_ |=
        static_cast<WhereTask *>(reply)->nodes_mask_;
  }

  /** Runs a Where subtask on container spin_us_ and waits for it (the
   * fiber yields while it runs, here or on another node). */
  void Relay(WhereTask *task, chi::RunContext &rctx) {
    auto sub = CHI_IPC->NewTaskDefault<WhereTask>(
        task->task_node_.Child(), pool_id_,
        chi::DomainQuery::GetGlobalId(task->spin_us_), chi::kLowLatency, 0);
    if (sub.IsNull()) {
      task->SetStatus(chi::Status::OutOfMemory("subtask"));
      return;
    }
    chi::Submit(sub);
    task->Wait(sub.ptr_);
    if (sub->rc_ != 0) {
      task->SetStatus(sub->GetStatus());
    } else {
      task->worker_ = sub->worker_;
      task->container_ = sub->container_;
      task->node_ = sub->node_;
    }
    task->relay_node_ = CHI_IPC->node_id();
    CHI_IPC->DelTask(sub);
  }

  /** Runs a high-latency Where subtask (another worker) and measures how
   * soon this fiber resumes after it finished. */
  void RelayHigh(WhereTask *task, chi::RunContext &rctx) {
    auto sub = CHI_IPC->NewTaskDefault<WhereTask>(
        task->task_node_.Child(), pool_id_, chi::DomainQuery::GetGlobalId(0),
        chi::kHighLatency, task->spin_us_);
    if (sub.IsNull()) {
      task->SetStatus(chi::Status::OutOfMemory("subtask"));
      return;
    }
    chi::Submit(sub);
    task->Wait(sub.ptr_);
    chi::u64 now = hshm::NowNs();
    if (sub->rc_ != 0) {
      task->SetStatus(sub->GetStatus());
    } else {
      task->worker_ = sub->worker_;
      task->delay_ns_ = now > sub->end_ns_ ? now - sub->end_ns_ : 0;
    }
    CHI_IPC->DelTask(sub);
  }

  /** Makes the two queues (none with params "inline": then every task runs
   * on the worker that admitted it); fails on node 2 with params
   * "fail_on_node_2"; throws with params "throw". */
  chi::Status Create(const std::string &params) override {
    if (params == "inline") return chi::Status::Ok();
    if (params == "throw") throw std::runtime_error("queue_test_mod throws");
    if (params == "fail_on_node_2" && CHI_IPC->node_id() == 2) {
      return chi::Status::Internal("queue_test_mod refuses node 2");
    }
    HSHM_RETURN_IF_ERROR(CreateQueue(0, 2, chi::kLowLatency, 64));
    HSHM_RETURN_IF_ERROR(CreateQueue(1, 1, chi::kHighLatency, 64));
    if (params == "nested") {
      // Creation may submit tasks and wait for them, even pool creations.
      chi::admin::Client admin;
      auto v = admin.Echo(7);
      if (!v.ok() || *v != 7) return chi::Status::Internal("nested echo");
      auto helper =
          admin.GetOrCreatePool(pool_name_ + "_helper", "queue_test_mod", 1);
      if (!helper.ok()) return helper.status();
    }
    return chi::Status::Ok();
  }

  /** Low-latency tasks go to queue 0 by task id, high-latency to queue 1. */
  chi::TaskLane *Route(chi::Task *task) override {
    chi::u64 h = task->task_node_.major_ * 0x9E3779B97F4A7C15ull;
    return GetLane(task->prio_ == chi::kHighLatency ? 1 : 0,
                   static_cast<chi::u32>(h >> 32));
  }

  /** Reports the worker and container that ran the task. */
  void Where(WhereTask *task, chi::RunContext &rctx) {
    chi::u64 end = hshm::NowNs() + task->spin_us_ * 1000ull;
    while (hshm::NowNs() < end) chi::Worker::YieldCurrentFiber();
    task->worker_ = rctx.worker_->id();
    task->container_ = container_id_;
    task->node_ = CHI_IPC->node_id();
    task->nodes_mask_ = 1ull << (task->node_ & 63);
    task->end_ns_ = hshm::NowNs();
  }

  /** Returns a client_data buffer of size_ bytes in buf_, and fails. */
  void FailWithBuffer(BufferTask *task, chi::RunContext &rctx) {
    chi::FullPtr<char> b = CHI_IPC->AllocateClientBuffer(task->size_);
    if (b.IsNull()) {
      task->SetStatus(chi::Status::OutOfMemory("no buffer"));
      return;
    }
    task->buf_ = b.shm_;
    task->buf_size_ = task->size_;
    task->SetStatus(chi::Status::Internal("failed after filling buf_"));
  }

  /** Yields for spin_us_, then sums the bytes of the input buffer. */
  void SumInput(InputTask *task, chi::RunContext &rctx) {
    chi::u64 end = hshm::NowNs() + task->spin_us_ * 1000ull;
    while (hshm::NowNs() < end) chi::Worker::YieldCurrentFiber();
    const char *d = CHI_IPC->DataBuffer(task->data_, task->size_);
    if (!d) {
      task->SetStatus(chi::Status::InvalidArgument("no input"));
      return;
    }
    chi::u64 sum = 0;
    for (chi::u64 i = 0; i < task->size_; ++i) {
      sum += static_cast<unsigned char>(d[i]);
    }
    task->sum_ = sum;
  }

  /** Sums size_ ones in a runtime_data buffer through a SumInput subtask
   * that owns the buffer (SubmitOwningInputs), waiting wait_ms_ at most. */
  void RelayOwned(RelayOwnedTask *task, chi::RunContext &rctx) {
    chi::FullPtr<char> b = CHI_IPC->AllocateBuffer(task->size_);
    if (b.IsNull()) {
      task->SetStatus(chi::Status::OutOfMemory("no buffer"));
      return;
    }
    std::memset(b.ptr_, 1, task->size_);
    chi::ScopedTaskTimeout deadline(task->wait_ms_);
    chi::u64 sum = 0;
    chi::Status s = chi::WaitAndFree(
        chi::SubmitOwningInputs(CHI_IPC->NewTaskDefault<InputTask>(
                                    task->task_node_.Child(), pool_id_,
                                    chi::DomainQuery::GetLocalHash(0),
                                    task->spin_us_, b.shm_, task->size_),
                                {b.shm_}),
        [&](InputTask *t) { sum = t->sum_; });
    task->sum_ = sum;
    if (!s.ok()) task->SetStatus(s);
  }

  /** See kDeadline. */
  void Deadline(DeadlineTask *task, chi::RunContext &rctx) {
    std::optional<chi::ScopedTaskTimeout> deadline;
    if (task->wait_ms_ != 0) deadline.emplace(task->wait_ms_);
    chi::SleepUs(task->nap_us_);
    task->timeout_us_ = CHI_IPC->TaskTimeoutUs();
  }

  /** See kInlineWait. */
  void InlineWait(InlineWaitTask *task, chi::RunContext &rctx) {
    // It spins 200 ms: not done when the wait gives up, wherever it runs.
    auto sub = CHI_IPC->NewTaskDefault<WhereTask>(
        task->task_node_.Child(), pool_id_, chi::DomainQuery::GetGlobalId(0),
        chi::kLowLatency, 200 * 1000);
    if (sub.IsNull()) return task->SetStatus(chi::Status::OutOfMemory("sub"));
    chi::Submit(sub);
    const chi::u64 start = hshm::NowNs();
    const bool done = sub->WaitFor(CHI_IPC->TaskTimeoutUs());
    task->waited_us_ = (hshm::NowNs() - start) / 1000;
    task->done_ = done;
    if (done || chi::internal::AbandonTask(sub.ptr_)) CHI_IPC->DelTask(sub);
  }

  /** Uses 4 KB of stack per level, `depth` levels deep. */
  static chi::u64 Recurse(chi::u32 depth) {
    volatile char frame[4096];
    frame[0] = static_cast<char>(depth);
    if (depth == 0) return frame[0];
    return Recurse(depth - 1) + frame[0];
  }

  /** Overflows the 64 KB fiber stack. */
  void Overflow(WhereTask *task, chi::RunContext &rctx) {
    task->worker_ = static_cast<chi::u32>(Recurse(64 + task->spin_us_));
  }
};

}  // namespace queue_test_mod

CHI_TASK_CC(queue_test_mod::Runtime, "queue_test_mod");
