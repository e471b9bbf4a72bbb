// The process reaper: the runtime's fourth kind of thread. It stamps the
// heartbeat clients check, notices client processes that died, and frees
// what they left in shared memory.
//
// Clients name their pid in the handshake (RegisterClient). Every
// client.reap_period_ms the reaper checks each registered pid (with its start
// time, so a reused pid is not mistaken for the client). For a dead client P:
//   1. Claim: every task block of `main` owned by P is marked abandoned
//      (state_), then claimed with one compare-exchange on its claim_ word,
//      which a worker admitting it races for. A task that had completed is
//      P's garbage; one a worker accepted is freed by that worker when it
//      completes (or drops it); one that was still queued (or never sent) is
//      claimed by the reaper (kTaskReaped), so a worker that pops it later
//      drops it quietly.
//   2. Wait: until every process-queue lane has been drained past the tail it
//      had at step 1, as the worker's own released() position says (so no
//      lane, and no batch a worker popped but has not admitted yet, still
//      names a claimed block) and every task of P a worker was running has
//      been freed (so no method still reads P's input buffers).
//      (The tails are read from shared memory: one scribbled far ahead is
//      capped at what a push can reach; one scribbled back can make the wait
//      end early, so a scribbler can get a dead client's queued task freed
//      while still named by a lane. A worker then drops or mis-admits that
//      offset, as it would any offset a hostile process pushes.)
//   3. Free: every block P owned in the three segments -- tasks, buffers,
//      outputs the runtime handed to P's tasks (re-tagged to P at
//      completion), and the blocks P's thread caches held.
//   If the lanes have not passed those tails after client.reap_wait_ms (a
//   tail scribbled ahead on a lane no push moves on, or a stuck worker),
//   step 3 runs anyway once P's running tasks are done. A queued task freed
//   this way and popped later is dropped (or its block's new task admitted
//   once), as for any offset a hostile process pushes. Running tasks are
//   always waited for (a method may still use P's buffers): a task P made
//   look accepted by a worker keeps P's memory, and its pid refused, for
//   good (logged once after client.reap_wait_ms).
//
// Threading: RegisterClient from any thread (the handshake server); the rest
// from the runtime's main thread (Start/Stop) and the reaper thread.
#ifndef CHIMAERA_PROCESS_REAPER_H_
#define CHIMAERA_PROCESS_REAPER_H_

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "chimaera/chimaera_types.h"
#include "hermes_shm/memory/pointer.h"
#include "hermes_shm/singleton.h"

namespace chi {

/** Counters of the reaper (for chimaera_stat and tests). */
struct ReaperStats {
  u64 clients = 0;          ///< Client processes registered now.
  u64 reaped = 0;           ///< Dead clients fully reaped.
  u64 pending = 0;          ///< Dead clients waiting for step 3.
  u64 tasks_claimed = 0;    ///< Queued or unsent tasks the reaper claimed.
  u64 tasks_abandoned = 0;  ///< Running tasks left for workers to free.
  u64 bytes_freed = 0;      ///< Bytes returned to the segments.
  /** Walks for a dead client that failed (a corrupt block header, or a
   * heap lock another process held too long): of `main` to claim its tasks,
   * or of any segment to free its blocks. Each is retried later, backing
   * off. */
  u64 failed_walks = 0;
  /** Dead clients freed after client.reap_wait_ms though the lanes had
   * not passed their tasks (their running tasks were done), or left with
   * (some of) their memory after kMaxCorruptWalks walks found a corrupt
   * header. */
  u64 gave_up = 0;
};

/** See the file comment. */
class ProcessReaper {
 public:
  ProcessReaper() = default;
  ~ProcessReaper();
  ProcessReaper(const ProcessReaper &) = delete;
  ProcessReaper &operator=(const ProcessReaper &) = delete;

  /** Starts the reaper thread (runtime only, after the segments exist):
   * a pass every `period_ms`; a dead client's step 2 waits at most
   * `wait_ms`. */
  void Start(u32 period_ms, u32 wait_ms);
  /** Stops and joins the reaper thread. Idempotent. */
  void Stop();
  /** Records client `pid` (from a handshake). False if a dead process with
   * the same pid is still being reaped: the client should retry later. Any
   * thread. */
  bool RegisterClient(int pid);
  /** Runs one pass now (the reaper thread does this every period). Reaper
   * thread or, when it is not running, any single thread. */
  void RunOnce();
  /** A snapshot of the counters. Any thread. */
  ReaperStats stats() const;

 private:
  /** A registered client process. */
  struct Client {
    int pid = 0;
    u64 start_time = 0;  ///< 0 if /proc could not tell.
    /** Dead, and its last walk failed: walks failed so far, and when the
     * next may start (NowNs). */
    u32 failed_walks = 0;
    u64 retry_ns = 0;
  };
  /** A dead client between step 1 and step 3. */
  struct Pending {
    Client client;  ///< Its registration (pid, start time).
    int pid = 0;
    u64 claimed_ns = 0;           ///< When step 1 ended (NowNs).
    bool told = false;            ///< Logged that it waits on running tasks.
    std::vector<u64> lane_tails;  ///< Per lane view, at step 1.
    std::vector<hipc::Pointer> running;  ///< Its tasks workers were running.
  };

  /** The thread body. */
  void Loop();
  /** Step 1 for dead client `pid`, into *out. Not OK if the walk of `main`
   * failed (some tasks may be unmarked): nothing may be freed yet. */
  Status Claim(int pid, Pending *out);
  /** True once every lane has moved past the tail it had at `p`'s step 1. */
  bool LanesPassed(const Pending &p) const;
  /** True once every task of `p` a worker was running has been freed. */
  bool RunningDone(const Pending &p) const;
  /** Step 3: frees every block `pid` owned; returns the bytes freed. Sets
   * *walk to the first failed walk's status (some blocks may be left: step
   * 3 must run again), else OK. */
  u64 FreeAll(int pid, Status *walk);
  /** After a walk for dead client `c` failed with `why`: puts it back for a
   * later pass (after 50 ms, then twice as long each time up to 5 s; its
   * entry keeps the pid refused to new clients meanwhile); or, when waiting
   * cannot help (a corrupt header still there after kMaxCorruptWalks
   * tries, or a refusal), logs that its memory stays and releases the pid.
   * A heap lock held too long is always waited out. Holds mu_. */
  void RetryLater(const Client &c, const Status &why);
  /** Tries of a dead client's walks that find a corrupt header before the
   * reaper leaves (the rest of) its memory allocated. */
  static constexpr u32 kMaxCorruptWalks = 8;

  mutable std::mutex mu_;  ///< Guards clients_, pending_, reaping_, stats_.
  std::vector<Client> clients_;
  std::vector<Pending> pending_;
  /** Dead pids from the pass that finds them dead until step 3 ends: a new
   * client with one of them is refused until then. */
  std::vector<int> reaping_;
  ReaperStats stats_;
  std::mutex pass_mu_;  ///< One pass at a time.

  std::thread thread_;
  std::mutex wake_mu_;
  std::condition_variable wake_cv_;
  bool stop_ = false;
  /** Set by Stop before it joins: a pass in progress walks no further heap
   * and leaves its remaining clients for a later pass. */
  std::atomic<bool> stopping_{false};
  u32 period_ms_ = 50;
  u32 wait_ms_ = 60000;
};

}  // namespace chi

#define CHI_REAPER (::hshm::Singleton<::chi::ProcessReaper>::GetInstance())

#endif  // CHIMAERA_PROCESS_REAPER_H_
