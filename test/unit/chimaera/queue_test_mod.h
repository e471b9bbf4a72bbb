// A test ChiMod whose containers make their own queues: one low-latency and
// one high-latency. Tasks report which worker ran them.
#ifndef CHIMAERA_TEST_UNIT_CHIMAERA_QUEUE_TEST_MOD_H_
#define CHIMAERA_TEST_UNIT_CHIMAERA_QUEUE_TEST_MOD_H_

#include "chimaera/container.h"

namespace queue_test_mod {

static GLOBAL_CROSS_CONST chi::MethodId kWhere = chi::BaseMethod::kCustom;
/** Recurses until it overflows its fiber stack (a WhereTask). */
static GLOBAL_CROSS_CONST chi::MethodId kOverflow =
    chi::BaseMethod::kCustom + 1;
/** A WhereTask that runs a Where subtask on container spin_us_ (a global
 * id, possibly on another node) and reports where both ran. */
static GLOBAL_CROSS_CONST chi::MethodId kRelay = chi::BaseMethod::kCustom + 2;
/** A WhereTask that runs a high-latency Where subtask spinning spin_us_ on
 * container 0, waits for it, and reports in delay_ns_ how long after the
 * subtask finished its own fiber resumed. */
static GLOBAL_CROSS_CONST chi::MethodId kRelayHigh =
    chi::BaseMethod::kCustom + 3;
/** Puts a buffer of size_ bytes in buf_, then fails (a BufferTask). */
static GLOBAL_CROSS_CONST chi::MethodId kFailWithBuffer =
    chi::BaseMethod::kCustom + 4;

/** Sums the bytes of its input buffer, after yielding for spin_us_ (an
 * InputTask). */
static GLOBAL_CROSS_CONST chi::MethodId kSumInput =
    chi::BaseMethod::kCustom + 5;

/** A RelayOwnedTask: sums a runtime_data buffer of size_ ones through a
 * SumInput subtask (spinning spin_us_) that owns it, waiting at most
 * wait_ms_ for it (0: the default deadline) and abandoning it after. */
static GLOBAL_CROSS_CONST chi::MethodId kRelayOwned =
    chi::BaseMethod::kCustom + 6;

/** A DeadlineTask: sets the fiber's deadline to wait_ms_ (0: sets none),
 * sleeps nap_us_ (the fiber yields), then reports the deadline a wait would
 * use now (CHI_IPC->TaskTimeoutUs()). */
static GLOBAL_CROSS_CONST chi::MethodId kDeadline =
    chi::BaseMethod::kCustom + 7;

/** An InlineWaitTask (kNeverWaits, so it runs without a fiber) that breaks
 * its promise: it sends a Where subtask (spinning 200 ms) to container 0
 * and waits for it at
 * the thread's deadline, reporting how long the wait took and whether the
 * subtask was done. */
static GLOBAL_CROSS_CONST chi::MethodId kInlineWait =
    chi::BaseMethod::kCustom + 8;

/** Returns the worker, container and node that ran it, after spinning
 * `spin_us`. A broadcast merges the nodes into nodes_mask_ (bit = node id);
 * a GetDynamic() task goes to container (task graph id % containers). */
struct WhereTask : public chi::Task {
  IN chi::u32 spin_us_ = 0;
  OUT chi::u32 worker_ = ~0u;
  OUT chi::u32 container_ = ~0u;
  OUT chi::u32 node_ = 0;
  OUT chi::u32 relay_node_ = 0;  ///< kRelay: the node that relayed.
  OUT chi::u64 nodes_mask_ = 0;
  OUT chi::u64 end_ns_ = 0;    ///< kWhere: NowNs() when it finished.
  OUT chi::u64 delay_ns_ = 0;  ///< kRelayHigh: subtask end to resume.
  explicit WhereTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc)
      : chi::Task(alloc) {}
  WhereTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc,
            const chi::TaskNode &node, const chi::PoolId &pool,
            const chi::DomainQuery &dom, chi::u32 prio, chi::u32 spin_us)
      : chi::Task(alloc), spin_us_(spin_us) {
    SetBase(node, pool, dom, kWhere);
    prio_ = prio;
  }
  template <typename Ar>
  void Fields(Ar &ar) {
    ar.In(spin_us_);
    ar.Out(worker_);
    ar.Out(container_);
    ar.Out(node_);
    ar.Out(relay_node_);
    ar.Out(nodes_mask_);
    ar.Out(end_ns_);
    ar.Out(delay_ns_);
  }
};

/** kFailWithBuffer: an output buffer that a failed task still names. */
struct BufferTask : public chi::Task {
  static constexpr bool kNeverWaits = true;  ///< Runs without a fiber.
  IN chi::u64 size_ = 0;
  OUT hipc::Pointer buf_;
  OUT chi::u64 buf_size_ = 0;
  explicit BufferTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc)
      : chi::Task(alloc) {}
  BufferTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc,
             const chi::TaskNode &node, const chi::PoolId &pool,
             const chi::DomainQuery &dom, chi::u64 size)
      : chi::Task(alloc), size_(size) {
    SetBase(node, pool, dom, kFailWithBuffer);
  }
  template <typename Ar>
  void Fields(Ar &ar) {
    ar.In(size_);
    ar.OutBuf(buf_, buf_size_);
  }
};

/** kSumInput: a task with an input buffer (which it may own). */
struct InputTask : public chi::Task {
  IN chi::u32 spin_us_ = 0;
  IN chi::u64 size_ = 0;
  IN hipc::Pointer data_;
  OUT chi::u64 sum_ = 0;
  explicit InputTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc)
      : chi::Task(alloc) {}
  InputTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc,
            const chi::TaskNode &node, const chi::PoolId &pool,
            const chi::DomainQuery &dom, chi::u32 spin_us,
            const hipc::Pointer &data, chi::u64 size)
      : chi::Task(alloc), spin_us_(spin_us), size_(size), data_(data) {
    SetBase(node, pool, dom, kSumInput);
  }
  template <typename Ar>
  void Fields(Ar &ar) {
    ar.In(spin_us_);
    ar.In(size_);
    ar.InBuf(data_, size_);
    ar.Out(sum_);
  }
};

/** kRelayOwned. */
struct RelayOwnedTask : public chi::Task {
  IN chi::u32 spin_us_ = 0;
  IN chi::u32 wait_ms_ = 0;
  IN chi::u64 size_ = 0;
  OUT chi::u64 sum_ = 0;
  explicit RelayOwnedTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc)
      : chi::Task(alloc) {}
  RelayOwnedTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc,
                 const chi::TaskNode &node, const chi::PoolId &pool,
                 const chi::DomainQuery &dom, chi::u32 spin_us,
                 chi::u32 wait_ms, chi::u64 size)
      : chi::Task(alloc), spin_us_(spin_us), wait_ms_(wait_ms), size_(size) {
    SetBase(node, pool, dom, kRelayOwned);
  }
  template <typename Ar>
  void Fields(Ar &ar) {
    ar.In(spin_us_);
    ar.In(wait_ms_);
    ar.In(size_);
    ar.Out(sum_);
  }
};

/** kDeadline. */
struct DeadlineTask : public chi::Task {
  IN chi::u32 wait_ms_ = 0;
  IN chi::u32 nap_us_ = 0;
  OUT chi::u64 timeout_us_ = 0;
  explicit DeadlineTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc)
      : chi::Task(alloc) {}
  DeadlineTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc,
               const chi::TaskNode &node, const chi::PoolId &pool,
               const chi::DomainQuery &dom, chi::u32 wait_ms, chi::u32 nap_us)
      : chi::Task(alloc), wait_ms_(wait_ms), nap_us_(nap_us) {
    SetBase(node, pool, dom, kDeadline);
  }
  template <typename Ar>
  void Fields(Ar &ar) {
    ar.In(wait_ms_);
    ar.In(nap_us_);
    ar.Out(timeout_us_);
  }
};

/** kInlineWait. */
struct InlineWaitTask : public chi::Task {
  static constexpr bool kNeverWaits = true;  ///< Runs without a fiber.
  OUT chi::u64 waited_us_ = 0;
  OUT chi::u32 done_ = 0;
  explicit InlineWaitTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc)
      : chi::Task(alloc) {}
  InlineWaitTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc,
                 const chi::TaskNode &node, const chi::PoolId &pool,
                 const chi::DomainQuery &dom)
      : chi::Task(alloc) {
    SetBase(node, pool, dom, kInlineWait);
  }
  template <typename Ar>
  void Fields(Ar &ar) {
    ar.Out(waited_us_);
    ar.Out(done_);
  }
};

}  // namespace queue_test_mod

#endif  // CHIMAERA_TEST_UNIT_CHIMAERA_QUEUE_TEST_MOD_H_
