// Tasks of the small_message module: the smallest useful ChiMod. Noop measures
// the bare round trip to a module pool; Echo copies a data buffer through the
// runtime and back (the round trip of a small or large message). Compute runs
// a fixed arithmetic kernel of a chosen length (a task of known size), and
// StencilRun drives a bulk-synchronous loop of Compute tasks from inside the
// runtime (see benchmark/stencil_benchmark.cc). Io models a device that
// serves one I/O at a time (see benchmark/balance_benchmark.cc).
//
// Buffers: the caller allocates the input in a data segment
// (CHI_IPC->AllocateBuffer) and keeps ownership of it. The runtime allocates
// the reply in `client_data` (CHI_IPC->AllocateClientBuffer); whoever waits on
// the task owns the reply and frees it with CHI_IPC->FreeBuffer.
#ifndef CHIMODS_SMALL_MESSAGE_SMALL_MESSAGE_TASKS_H_
#define CHIMODS_SMALL_MESSAGE_SMALL_MESSAGE_TASKS_H_

#include "chimaera/module.h"

namespace chi::small_message {

/** The kernel Compute runs: `iters` steps of a xorshift + multiply-add chain
 * started from `seed`. Each step depends on the previous one, so the compiler
 * can neither remove nor vectorize it; the result is deterministic, so a
 * client can check it. Shared by the runtime, clients and benchmarks. */
inline u64 ComputeKernel(u64 iters, u64 seed) {
  u64 x = seed ^ 0x9E3779B97F4A7C15ull;
  for (u64 i = 0; i < iters; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x = x * 0x2545F4914F6CDD1Dull + i;
  }
  return x;
}

/** The seed StencilRun gives point `point` of step `step` (of `width`). */
inline u64 StencilSeed(u32 step, u32 width, u32 point) {
  return static_cast<u64>(step) * width + point;
}

/** The checksum StencilRun returns for (width, steps, iters): the sum (mod
 * 2^64) of ComputeKernel(iters, StencilSeed(s, width, i)) over every step s
 * and point i. For checking it on the client side. */
inline u64 StencilChecksum(u32 width, u32 steps, u64 iters) {
  u64 sum = 0;
  for (u32 s = 0; s < steps; ++s) {
    for (u32 i = 0; i < width; ++i) {
      sum += ComputeKernel(iters, StencilSeed(s, width, i));
    }
  }
  return sum;
}

/** Does nothing; measures the task round trip to a module container. */
struct NoopTask : public Task {
  static constexpr bool kNeverWaits = true;  ///< Runs without a fiber.
};

/** Returns a copy of data_[0, size_) in ret_[0, ret_size_). A zero size_
 * needs no data_ and returns a null ret_. */
struct EchoTask : public Task {
  static constexpr bool kNeverWaits = true;  ///< Runs without a fiber.
  CHI_IN hipc::Pointer data_;  ///< Input bytes (a data-segment buffer).
  CHI_IN u64 size_ = 0;        ///< Bytes of data_ to echo.
  CHI_OUT hipc::Pointer ret_;  ///< Reply in client_data; the waiter frees it.
  CHI_OUT u64 ret_size_ = 0;   ///< Bytes in ret_ (== size_ on success).

  template <typename Ar>
  void Fields(Ar &ar) {
    ar.In(size_);
    ar.InBuf(data_, size_);
    ar.OutBuf(ret_, ret_size_);
  }
};

/** Runs ComputeKernel(iters_, seed_) and returns it in result_. */
struct ComputeTask : public Task {
  static constexpr bool kNeverWaits = true;  ///< Runs without a fiber.
  CHI_IN u64 iters_ = 0;    ///< Kernel iterations (the task's size).
  CHI_IN u64 seed_ = 0;     ///< Kernel seed.
  CHI_OUT u64 result_ = 0;  ///< ComputeKernel(iters_, seed_).

  template <typename Ar>
  void Fields(Ar &ar) {
    ar.In(iters_);
    ar.In(seed_);
    ar.Out(result_);
  }
};

/** The in-runtime bulk-synchronous loop: for each of steps_ steps, runs
 * width_ ComputeTasks of iters_ iterations (point i on local container
 * i % containers of this pool, seed StencilSeed(step, width_, i)), waits for
 * all of them, then starts the next step. checksum_ is the sum of every
 * result (StencilChecksum on success). The first failed subtask's status
 * becomes the task's, and the loop stops. */
struct StencilRunTask : public Task {
  CHI_IN u32 width_ = 0;      ///< Points (tasks) per step.
  CHI_IN u32 steps_ = 0;      ///< Steps, each after the previous completed.
  CHI_IN u64 iters_ = 0;      ///< Kernel iterations per point.
  CHI_OUT u64 checksum_ = 0;  ///< Sum of all results (mod 2^64).

  template <typename Ar>
  void Fields(Ar &ar) {
    ar.In(width_);
    ar.In(steps_);
    ar.In(iters_);
    ar.Out(checksum_);
  }
};

/** Models an I/O of `us_` microseconds on a device each container owns:
 * the device serves one I/O at a time, in arrival order, and the task's
 * fiber waits (chi::SleepUs) until its I/O is done, so the worker runs
 * other tasks meanwhile. Long tasks that cost no CPU, for load-balancing
 * tests and benchmarks. At most 10 s (else InvalidArgument). */
struct IoTask : public Task {
  CHI_IN u32 us_ = 0;          ///< Device time of this I/O.
  CHI_OUT u32 node_ = 0;       ///< Node that ran it.
  CHI_OUT u32 container_ = 0;  ///< Container (device) that ran it.
  CHI_OUT u64 queued_ns_ = 0;  ///< Time it waited for the device.
  CHI_FIELDS(In(us_), Out(node_), Out(container_), Out(queued_ns_))
};
/** Keeps its worker busy for `us_` microseconds without yielding and says
 * where it ran and whether another Probe of its container was running
 * meanwhile: for tests of where a container's tasks run
 * (Container::PinToWorker). At most 1 s (else InvalidArgument). */
struct ProbeTask : public Task {
  static constexpr bool kNeverWaits = true;  ///< Runs without a fiber.
  CHI_IN u32 us_ = 0;
  CHI_OUT u32 worker_ = 0;  ///< Worker that ran it.
  CHI_OUT u32 overlapped_ =
      0;  ///< 1 if another Probe of the container overlapped.
  CHI_FIELDS(In(us_), Out(worker_), Out(overlapped_))
};
/** The module: its name and methods (ids kCustom + 0..5, in this order). */
struct SmallMessage {
  static constexpr char kName[] = "small_message";
  using Methods = chi::Methods<NoopTask, EchoTask, ComputeTask, StencilRunTask,
                               IoTask, ProbeTask>;
};

}  // namespace chi::small_message

#endif  // CHIMODS_SMALL_MESSAGE_SMALL_MESSAGE_TASKS_H_
