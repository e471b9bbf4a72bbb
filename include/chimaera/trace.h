// Task timelines (runtime only): per-worker ring buffers of task runs and
// subtask submissions, written out as Chrome trace-event JSON, which the
// Perfetto UI (ui.perfetto.dev) and chrome://tracing open.
//
// Recording. With tracing on, a worker stamps the start of each run of a task
// (Worker::Start) and, when the method returns (Worker::Finish), appends one
// kRun record to its own ring. Runs of a batch popped from a process lane
// take the previous run's end as their start (one clock read per task, not
// two), so their slices tile and include their admission (well under a
// microsecond). A task method that submits a subtask from its
// fiber appends a kSubmit record (its own run id, the subtask's block) to the
// ring of the worker running it (IpcManager::Send -> Worker::TraceSubmit). So
// each ring has exactly one writer, its worker; a full ring overwrites its
// oldest records. With tracing off a worker's ring pointer is null and each
// hook costs one predictable branch. Workers notice a switch at their next
// loop iteration (Worker::RefreshTrace).
//
// Reading while workers run. Every slot is a seqlock: the writer makes the
// slot's sequence word odd, stores the payload, then stores the final (even)
// sequence word for that record index with release order; a reader loads the
// sequence word (acquire), the payload, then the sequence word again after an
// acquire fence, and keeps the record only if both equal the value expected
// for that index. All words are atomics (relaxed on the payload), so there is
// no data race in the C++ sense (TSan-clean), the writer never waits and a
// reader never blocks a worker: it simply drops a record overwritten while it
// was being copied. Clear() only raises a floor index readers start from.
//
// Parent links are resolved when the trace is written. A kSubmit record names
// the subtask's task block (its offset in `main`) and the time it was
// submitted; a kRun record of a task admitted from shared memory names the
// block it came from. A run is the child of the submission of the same block
// that immediately precedes it in time, provided no other run of that block
// lies between them: a block is reused only after its task completed, so that
// submission is the one that created this task (the submission's pool,
// method and task node must match the run's too, so a submission whose task
// never ran here cannot adopt a later task of the same block). Tasks
// submitted by clients, forwarded from other nodes or replicated by a
// broadcast have no parent; a subtask that runs on another node has no run
// record on the parent's node (each node dumps its own trace, pid = node).
//
// Viewers need the slices of one thread to nest, but fibers interleave: a
// task that waits on a subtask stays open while its worker runs others. The
// dump therefore spreads each worker's runs over tracks ("worker N (low
// latency)", then "... overlap K") so that the runs on a track nest or are
// disjoint.
#ifndef CHIMAERA_TRACE_H_
#define CHIMAERA_TRACE_H_

#if !CHIMAERA_RUNTIME
#error "chimaera/trace.h is runtime-only"
#endif

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "chimaera/chimaera_types.h"
#include "hermes_shm/singleton.h"
#include "hermes_shm/util/futex.h"

namespace chi {

/** What a trace record describes. */
enum class TraceKind : u32 {
  kRun = 1,     ///< One run of a task's method on a worker.
  kSubmit = 2,  ///< A running task submitted a subtask.
};

/** "No task block": the key of records of tasks not admitted from `main`. */
static GLOBAL_CROSS_CONST u64 kTraceNoKey = ~0ull;

/** The trace clock: hshm::TickCount (the time-stamp counter where there is
 * one). TraceManager converts ticks to steady-clock ns when it writes the
 * trace. Any thread. */
HSHM_INLINE u64 TraceClock() { return hshm::TickCount(); }

/** One record, as the writer passes it and a reader gets it back. */
struct TraceEvent {
  TraceKind kind = TraceKind::kRun;
  MethodId method = 0;  ///< The (sub)task's method.
  PoolId pool;          ///< The (sub)task's pool.
  TaskNode node;        ///< The (sub)task's node in its task graph.
  u32 rc = 0;           ///< kRun: the status code the method left (< 2^24).
  u64 start = 0;        ///< TraceClock. kRun: start; kSubmit: the submission.
  u64 end = 0;          ///< TraceClock. kRun: when the method returned.
  /** kRun: this run's id; kSubmit: the submitting run's id. Unique per
   * runtime: (worker + 1) << 32 | a per-worker 32-bit sequence number, never
   * 0. A ring stores only the sequence number (its worker is implied: a
   * submission is recorded by the worker running the submitter). */
  u64 id = 0;
  /** Offset of the task block in `main` (kRun: the block it was admitted
   * from; kSubmit: the subtask's), or kTraceNoKey. */
  u64 key = kTraceNoKey;
};

/** A fixed-capacity ring of TraceEvents with one writer (see the top of the
 * file for how readers stay safe). */
class TraceRing {
 public:
  /** A ring of `capacity` records (rounded up to a power of two, >= 2). */
  explicit TraceRing(u64 capacity);
  TraceRing(const TraceRing &) = delete;
  TraceRing &operator=(const TraceRing &) = delete;

  /** Appends `e`, overwriting the oldest record if full. The owning worker's
   * thread only; never blocks. */
  void Push(const TraceEvent &e);
  /** The records written since the last Clear() that are still in the ring,
   * oldest first, their ids completed with `worker`; a record overwritten
   * during the copy is left out. Any thread. */
  std::vector<TraceEvent> Snapshot(u32 worker) const;
  /** Hides every record written so far from later snapshots. Any thread. */
  void Clear();
  /** Records written since the last Clear() (also those overwritten). Any
   * thread. */
  u64 Written() const;
  /** Slots of the ring. */
  u64 capacity() const { return mask_ + 1; }

 private:
  static constexpr int kWords = 7;  ///< Payload words of a slot.
  /** One record (one cache line): its sequence word and payload, all
   * atomics. */
  struct alignas(64) Slot {
    std::atomic<u64> seq{0};  ///< 2i+1 while record i is written, then 2i+2.
    std::atomic<u64> w[kWords] = {};
  };
  std::unique_ptr<Slot[]> slots_;
  u64 mask_ = 0;
  std::atomic<u64> head_{0};   ///< Records pushed ever (stored by the writer).
  std::atomic<u64> floor_{0};  ///< First index snapshots report.
};

/** Owns the rings of the workers and turns them into JSON. Runtime only. */
class TraceManager {
 public:
  /** Reads the `trace:` section of the configuration (once; later calls do
   * nothing) and, if trace.enabled, allocates the rings and turns tracing
   * on. Called by every Worker's constructor (the orchestrator's thread). */
  void Init();
  /** True while tracing is on. Any thread. */
  bool enabled() const { return enabled_.load(std::memory_order_acquire); }
  /** Turns recording on or off (allocating the rings the first time). Workers
   * switch at their next loop iteration once told (Worker::RefreshTrace).
   * Any thread; Init must have run. */
  Status SetEnabled(bool on);
  /** Drops what was recorded so far (from later dumps). Any thread. */
  void Clear();
  /** The ring worker `worker` records into: null while tracing is off. Any
   * thread (the worker itself, when it refreshes its flag). */
  TraceRing *ActiveRing(u32 worker);
  /** Records written since the last Clear on all rings. Any thread. */
  u64 Written();
  /** The recorded timelines as Chrome trace-event JSON (always a valid
   * document, also when nothing was recorded). Resolves method names through
   * the pool and module managers. Any thread; safe while workers record. */
  std::string DumpJson();
  /** Writes DumpJson() to `path` (via a temporary file renamed into place).
   * Any thread. */
  Status WriteFile(const std::string &path);
  /** Ok if a trace can be written at `path` (trace.output; empty: none):
   * its directory exists and this process may create files there, and it
   * is not a directory. Checked at start, so that a bad path is not found
   * only when the trace is lost at exit. */
  static Status CheckOutput(const std::string &path);
  /** At shutdown, after the workers stopped and before the pools are
   * destroyed: writes the trace to trace.output if that is set (and tracing
   * was ever on). Errors are printed. The main thread. */
  void WriteOutputAtExit();

 private:
  std::once_flag init_once_;
  std::mutex mu_;  ///< Guards rings_' allocation and DumpJson.
  /** One per worker; allocated on the first SetEnabled(true). An entry is
   * written once (before enabled_ is set) and never freed before exit. */
  std::vector<std::unique_ptr<TraceRing>> rings_;
  std::atomic<bool> enabled_{false};
  std::atomic<bool> ever_enabled_{false};
  u64 capacity_ = 8192;  ///< Records per ring.
  std::string output_;   ///< trace.output: written at shutdown, or "".
  u64 tick0_ = 0;        ///< TraceClock at Init...
  u64 ns0_ = 0;          ///< ...and NowNs at the same time (calibration).
};

}  // namespace chi

#define CHI_TRACE (::hshm::Singleton<::chi::TraceManager>::GetInstance())

#endif  // CHIMAERA_TRACE_H_
