// Microbenchmarks of the Hermes SHM layer against common baselines.
//
// 1. Queue transfer: one producer thread streams sequence numbers through a
//    queue to the benchmark thread (the consumer), which checks that every
//    item arrives once and in order. Compared: our mpsc_lane (u64 values,
//    allocated with multi_mpsc_queue::New), the same lane placed on a
//    64-byte boundary, boost::lockfree::spsc_queue and boost::lockfree::queue
//    (of uint64_t), all with 1024 slots. One benchmark iteration moves
//    kItemsPerIter items.
// 2. Allocator: allocate a batch of kAllocBatch blocks, touch each, free them
//    all; hipc::ThreadLocalAllocator and hipc::HeapAllocator (each over its
//    own POSIX shared-memory segment) against malloc/free, 1 and 2 threads.
//
// Rates (items_per_second) use wall-clock time, so with 2 threads they are
// the aggregate throughput of both threads.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <boost/lockfree/queue.hpp>
#include <boost/lockfree/spsc_queue.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "hermes_shm/data_structures/multi_mpsc_queue.h"
#include "hermes_shm/memory/allocator.h"
#include "hermes_shm/memory/memory_manager.h"
#include "hermes_shm/memory/posix_shm.h"
#include "hermes_shm/util/futex.h"

namespace {

using hshm::u32;
using hshm::u64;

/** Slots in every benchmarked queue. */
constexpr u64 kQueueDepth = 1024;
/** Items one queue benchmark iteration transfers. */
constexpr u64 kItemsPerIter = 1ull << 16;
/** Blocks allocated (then freed) per allocator benchmark iteration. */
constexpr int kAllocBatch = 32;
/** Data bytes of each shared-memory segment. */
constexpr size_t kSegmentSize = 64ull << 20;
/** Allocator id majors of the benchmark heaps. */
constexpr u32 kHeapMajor = 1;
constexpr u32 kTlaMajor = 2;
/** Minimum measuring time of every benchmark, in seconds. */
constexpr double kMinTime = 0.2;

/** Spin-wait policy for full/empty queues: pause a while, then yield the
 * core (the producer and consumer may share one). */
class Backoff {
 public:
  /** Waits a little; escalates to yielding after kSpinLimit calls. */
  void Pause() {
    if (spins_ < kSpinLimit) {
      ++spins_;
      hshm::CpuRelax();
    } else {
      std::this_thread::yield();
    }
  }
  /** Forgets earlier waits (call after progress). */
  void Reset() { spins_ = 0; }

 private:
  static constexpr int kSpinLimit = 256;
  int spins_ = 0;
};

//------------------------------------------------------------------------------
// Shared-memory heaps, created once and destroyed at the end of main
//------------------------------------------------------------------------------

/** One POSIX shm segment formatted as a registered allocator. */
template <typename AllocT>
class ShmArena {
 public:
  /** Creates segment `tag` (unique per process) and allocator id {major,0}. */
  hshm::Status Init(u32 major, const std::string &tag) {
    id_ = hipc::AllocatorId(major, 0);
    std::string name =
        hipc::PosixShmMmap::MakeName("bench" + std::to_string(getpid()), tag);
    HSHM_RETURN_IF_ERROR(shm_.Create(name, kSegmentSize));
    HSHM_RETURN_IF_ERROR(alloc_.Create(id_, shm_.data(), shm_.data_size()));
    HSHM_RETURN_IF_ERROR(HSHM_MEMORY_MANAGER->Register(
        id_, shm_.data(), shm_.data_size(), &alloc_));
    registered_ = true;
    return hshm::Status::Ok();
  }
  /** Unregisters the allocator and unlinks the segment. */
  void Destroy() {
    if (registered_) HSHM_MEMORY_MANAGER->Unregister(id_);
    registered_ = false;
    if (shm_.mapped()) (void)shm_.Destroy();
  }
  /** The allocator. */
  AllocT *alloc() { return &alloc_; }

 private:
  hipc::AllocatorId id_;
  hipc::PosixShmMmap shm_;
  AllocT alloc_;
  bool registered_ = false;
};

/** Every shared-memory heap the benchmarks use. */
struct Arenas {
  ShmArena<hipc::HeapAllocator> heap;        ///< Also holds the mpsc queues.
  ShmArena<hipc::ThreadLocalAllocator> tla;  ///< Thread-cached heap.
  hshm::Status status;                       ///< Why setup failed, if it did.
};

std::once_flag g_arenas_once;
Arenas *g_arenas = nullptr;

/** The arenas, created by the first caller (thread-safe). */
Arenas *GetArenas() {
  std::call_once(g_arenas_once, [] {
    auto *a = new Arenas();
    a->status = a->heap.Init(kHeapMajor, "bench_heap");
    if (a->status.ok()) a->status = a->tla.Init(kTlaMajor, "bench_tla");
    g_arenas = a;
  });
  return g_arenas;
}

/** Destroys the arenas if any benchmark created them. Call once, after all
 * benchmarks ran. */
void DestroyArenas() {
  if (!g_arenas) return;
  g_arenas->heap.Destroy();
  g_arenas->tla.Destroy();
  delete g_arenas;
  g_arenas = nullptr;
}

//------------------------------------------------------------------------------
// Queue adapters: TryPush(seq) / TryPop(&seq) over each queue
//------------------------------------------------------------------------------

/** Our mpsc_lane, made by multi_mpsc_queue::New in the shared heap. */
class MpscLaneQueue {
 public:
  using Queue = hipc::multi_mpsc_queue<u64>;

  /** Allocates a 1-lane, 1-priority queue of kQueueDepth slots. */
  MpscLaneQueue() {
    Arenas *a = GetArenas();
    if (!a->status.ok()) return;
    alloc_ = a->heap.alloc();
    q_ = Queue::New(alloc_, HSHM_MCTX, 1, 1, kQueueDepth);
    if (!q_.IsNull()) lane_ = &q_->GetLane(0, 0);
  }
  /** Frees the queue. */
  ~MpscLaneQueue() {
    if (!q_.IsNull()) (void)alloc_->Free(HSHM_MCTX, q_.shm_);
  }
  /** True if the queue was made. */
  bool ok() const { return lane_ != nullptr; }
  /** Pushes `seq`; false when full. */
  bool TryPush(u64 seq) { return lane_->TryPush(seq); }
  /** Pops into `*seq`; false when empty. */
  bool TryPop(u64 *seq) { return lane_->TryPop(seq); }

 private:
  hipc::HeapAllocator *alloc_ = nullptr;
  hipc::FullPtr<Queue> q_;
  Queue::Lane *lane_ = nullptr;
};

/** The same lane initialised in place at a 64-byte aligned address (the
 * heap only guarantees 16), to show what cache-line placement costs. */
class MpscLaneAlignedQueue {
 public:
  using Queue = hipc::multi_mpsc_queue<u64>;

  /** Allocates and 64-aligns a 1-lane, 1-priority queue. */
  MpscLaneAlignedQueue() {
    size_t bytes = Queue::ComputeSize(1, 1, kQueueDepth);
    mem_ = static_cast<char *>(std::aligned_alloc(HSHM_CACHELINE_SIZE, bytes));
    if (!mem_) return;
    auto *q = reinterpret_cast<Queue *>(mem_);
    q->Init(1, 1, kQueueDepth);
    lane_ = &q->GetLane(0, 0);
  }
  /** Frees the queue. */
  ~MpscLaneAlignedQueue() { std::free(mem_); }
  /** True if the queue was made. */
  bool ok() const { return lane_ != nullptr; }
  /** Pushes `seq`; false when full. */
  bool TryPush(u64 seq) { return lane_->TryPush(seq); }
  /** Pops into `*seq`; false when empty. */
  bool TryPop(u64 *seq) { return lane_->TryPop(seq); }

 private:
  char *mem_ = nullptr;
  Queue::Lane *lane_ = nullptr;
};

/** boost::lockfree::spsc_queue of uint64_t with 1024 slots. */
class BoostSpscQueue {
 public:
  using Queue =
      boost::lockfree::spsc_queue<uint64_t,
                                  boost::lockfree::capacity<kQueueDepth>>;

  /** Builds the queue (on the heap: its ring is inline). */
  BoostSpscQueue() : q_(std::make_unique<Queue>()) {}
  /** Always true. */
  bool ok() const { return true; }
  /** Pushes `seq`; false when full. */
  bool TryPush(u64 seq) { return q_->push(seq); }
  /** Pops into `*seq`; false when empty. */
  bool TryPop(u64 *seq) {
    uint64_t v;
    if (!q_->pop(v)) return false;
    *seq = v;
    return true;
  }

 private:
  std::unique_ptr<Queue> q_;
};

/** boost::lockfree::queue (MPMC) of uint64_t with a fixed 1024 nodes. */
class BoostMpmcQueue {
 public:
  using Queue =
      boost::lockfree::queue<uint64_t, boost::lockfree::capacity<kQueueDepth>>;

  /** Builds the queue. */
  BoostMpmcQueue() : q_(std::make_unique<Queue>()) {}
  /** Always true. */
  bool ok() const { return true; }
  /** Pushes `seq`; false when out of nodes. */
  bool TryPush(u64 seq) { return q_->bounded_push(seq); }
  /** Pops into `*seq`; false when empty. */
  bool TryPop(u64 *seq) {
    uint64_t v;
    if (!q_->pop(v)) return false;
    *seq = v;
    return true;
  }

 private:
  std::unique_ptr<Queue> q_;
};

/** Streams state.max_iterations * kItemsPerIter sequence numbers from a
 * producer thread to this (consumer) thread through a QueueT, checking order.
 */
template <typename QueueT>
void BM_QueueTransfer(benchmark::State &state) {
  QueueT q;
  if (!q.ok()) {
    state.SkipWithError("queue setup failed");
    return;
  }
  const u64 total = static_cast<u64>(state.max_iterations) * kItemsPerIter;
  std::atomic<bool> stop{false};
  std::thread producer([&] {
    Backoff backoff;
    for (u64 seq = 0; seq < total; ++seq) {
      while (!q.TryPush(seq)) {
        if (stop.load(std::memory_order_relaxed)) return;
        backoff.Pause();
      }
      backoff.Reset();
    }
  });

  u64 expect = 0;
  bool in_order = true;
  for (auto _ : state) {
    const u64 end = expect + kItemsPerIter;
    Backoff backoff;
    while (expect < end) {
      u64 v = 0;
      if (!q.TryPop(&v)) {
        backoff.Pause();
        continue;
      }
      backoff.Reset();
      if (v != expect) {
        in_order = false;
        break;
      }
      ++expect;
    }
    if (!in_order) {
      state.SkipWithError("queue lost, duplicated or reordered an item");
      break;
    }
  }
  stop.store(true, std::memory_order_relaxed);
  producer.join();
  if (in_order) {
    u64 leftover;
    if (q.TryPop(&leftover)) state.SkipWithError("queue holds extra items");
  }
  state.SetItemsProcessed(static_cast<int64_t>(expect));
}

//------------------------------------------------------------------------------
// Allocator adapters: Allocate(size) -> Handle, Ptr(handle), Free(handle)
//------------------------------------------------------------------------------

/** glibc malloc/free. */
class MallocAlloc {
 public:
  using Handle = char *;
  /** Always true. */
  bool ok() const { return true; }
  /** malloc(size). */
  Handle Allocate(size_t size) { return static_cast<char *>(malloc(size)); }
  /** The block's address. */
  static char *Ptr(Handle h) { return h; }
  /** free(h); always succeeds. */
  bool Free(Handle h) {
    free(h);
    return true;
  }
};

/** The arena allocator of type AllocT (specialised below). */
template <typename AllocT>
AllocT *ArenaAllocator(Arenas *a);

/** The HeapAllocator arena. */
template <>
hipc::HeapAllocator *ArenaAllocator<hipc::HeapAllocator>(Arenas *a) {
  return a->heap.alloc();
}

/** The ThreadLocalAllocator arena. */
template <>
hipc::ThreadLocalAllocator *ArenaAllocator<hipc::ThreadLocalAllocator>(
    Arenas *a) {
  return a->tla.alloc();
}

/** A hipc allocator from the shared arenas (HeapAllocator or TLA). */
template <typename AllocT>
class ShmAlloc {
 public:
  using Handle = hipc::FullPtr<char>;
  /** Finds the arena's allocator, creating the arenas on first use. */
  ShmAlloc() {
    Arenas *a = GetArenas();
    if (!a->status.ok()) return;
    alloc_ = ArenaAllocator<AllocT>(a);
  }
  /** True if the arena exists. */
  bool ok() const { return alloc_ != nullptr; }
  /** Allocates `size` bytes; null when out of memory. */
  Handle Allocate(size_t size) { return alloc_->Allocate(HSHM_MCTX, size); }
  /** The block's process address. */
  static char *Ptr(const Handle &h) { return h.ptr_; }
  /** Frees `h`; false if the allocator rejects it. */
  bool Free(const Handle &h) { return alloc_->Free(HSHM_MCTX, h.shm_).ok(); }

 private:
  AllocT *alloc_ = nullptr;
};

/** Per iteration: allocates kAllocBatch blocks of state.range(0) bytes,
 * writes the first byte of each, then frees them all. */
template <typename AllocAdapter>
void BM_AllocFree(benchmark::State &state) {
  AllocAdapter alloc;
  if (!alloc.ok()) {
    state.SkipWithError("allocator setup failed");
    return;
  }
  const auto size = static_cast<size_t>(state.range(0));
  std::array<typename AllocAdapter::Handle, kAllocBatch> blocks{};
  bool failed = false;
  for (auto _ : state) {
    for (int i = 0; i < kAllocBatch; ++i) {
      blocks[i] = alloc.Allocate(size);
      char *p = AllocAdapter::Ptr(blocks[i]);
      if (p == nullptr) {
        failed = true;
        break;
      }
      p[0] = static_cast<char>(i);
    }
    benchmark::DoNotOptimize(blocks.data());
    benchmark::ClobberMemory();
    if (failed) {
      state.SkipWithError("allocation failed");
      break;
    }
    for (int i = 0; i < kAllocBatch; ++i) failed |= !alloc.Free(blocks[i]);
    if (failed) {
      state.SkipWithError("free failed");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * kAllocBatch);
}

using HeapAlloc = ShmAlloc<hipc::HeapAllocator>;
using TlaAlloc = ShmAlloc<hipc::ThreadLocalAllocator>;

BENCHMARK_TEMPLATE(BM_QueueTransfer, MpscLaneQueue)
    ->MinTime(kMinTime)
    ->UseRealTime();
BENCHMARK_TEMPLATE(BM_QueueTransfer, MpscLaneAlignedQueue)
    ->MinTime(kMinTime)
    ->UseRealTime();
BENCHMARK_TEMPLATE(BM_QueueTransfer, BoostSpscQueue)
    ->MinTime(kMinTime)
    ->UseRealTime();
BENCHMARK_TEMPLATE(BM_QueueTransfer, BoostMpmcQueue)
    ->MinTime(kMinTime)
    ->UseRealTime();

/** Registers BM_AllocFree<A> for 64 B, 256 B and 4 KiB with 1 and 2 threads.
 */
#define HSHM_ALLOC_BENCHMARK(A)       \
  BENCHMARK_TEMPLATE(BM_AllocFree, A) \
      ->Arg(64)                       \
      ->Arg(256)                      \
      ->Arg(4096)                     \
      ->Threads(1)                    \
      ->Threads(2)                    \
      ->MinTime(kMinTime)             \
      ->UseRealTime()

HSHM_ALLOC_BENCHMARK(TlaAlloc);
HSHM_ALLOC_BENCHMARK(HeapAlloc);
HSHM_ALLOC_BENCHMARK(MallocAlloc);

}  // namespace

/** Runs the benchmarks, then removes the shared-memory segments. */
int main(int argc, char **argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  Arenas *a = g_arenas;
  if (a && !a->status.ok()) {
    std::fprintf(stderr, "shared-memory setup failed: %s\n",
                 a->status.ToString().c_str());
  }
  DestroyArenas();
  return 0;
}
