// chimaera_workload: a real client workload against a live runtime. Several
// threads submit Echo tasks synchronously and asynchronously (a window of
// tasks in flight), check every result, and report rates: to this node's
// admin container, and in a cluster also to the next node's, and as
// broadcasts to every node.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <thread>
#include <vector>

#include "chimaera/chimaera.h"
#include "hermes_shm/util/futex.h"

namespace {

/** What went wrong in a phase, by cause. */
struct Errors {
  std::atomic<hshm::u64> unsent{0};  ///< no task: `main` was full
  std::atomic<hshm::u64> failed{0};  ///< the task's status was an error
  std::atomic<hshm::u64> wrong{0};   ///< OK, but not the value sent
  /** All of them. */
  hshm::u64 Total() const { return unsent + failed + wrong; }
};

/** One thread's share: `count` echoes, `window` in flight (1 = synchronous).
 * Counts what went wrong into `err`. */
void RunThread(hshm::u32 tid, hshm::u64 count, hshm::u32 window,
               const chi::DomainQuery &dom, Errors *err) {
  chi::admin::Client admin;
  struct Slot {
    chi::FullPtr<chi::admin::EchoTask> task;  // null: nothing in flight
    hshm::u64 expect = 0;
  };
  std::vector<Slot> slots(window);
  auto reap = [&](Slot &sl) {
    if (sl.task.IsNull()) return;
    sl.task->Wait();
    if (!sl.task->GetStatus().ok()) {
      err->failed++;
    } else if (sl.task->ret_ != sl.expect) {
      err->wrong++;
    }
    CHI_IPC->DelTask(sl.task);
    sl.task = chi::FullPtr<chi::admin::EchoTask>();
  };
  for (hshm::u64 i = 0; i < count; ++i) {
    hshm::u64 value = (static_cast<hshm::u64>(tid) << 40) | i;
    Slot &sl = slots[i % window];
    reap(sl);
    sl.task = admin.AsyncEcho(value, dom);
    if (sl.task.IsNull()) {
      err->unsent++;
      continue;
    }
    sl.expect = value;
  }
  for (Slot &sl : slots) reap(sl);
}

}  // namespace

int main(int argc, char **argv) {
  CLI::App app{"Run Echo tasks against the local Chimaera runtime."};
  hshm::u32 threads = 4;
  hshm::u64 tasks = 100000;
  hshm::u32 window = 256;
  app.add_option("-t,--threads", threads, "Client threads")
      ->check(CLI::Range(1, 64));
  app.add_option("-n,--tasks", tasks, "Tasks per phase (split over threads)");
  app.add_option("-w,--window", window, "Async tasks in flight per thread")
      ->check(CLI::Range(1, 65536));
  CLI11_PARSE(app, argc, argv);

  hshm::Status s = CHIMAERA_CLIENT_INIT();
  if (!s.ok()) {
    fprintf(stderr, "chimaera_workload: %s\n", s.ToString().c_str());
    return 1;
  }
  hshm::u32 self = CHI_IPC->node_id();
  hshm::u32 nodes = CHI_CONFIG_MANAGER->config().hosts_.size();
  printf("connected to node %u of %u at %s\n", self, nodes,
         CHI_IPC->server_address().c_str());
  int rc = 0;
  struct Phase {
    const char *name;
    chi::DomainQuery dom;
    hshm::u64 tasks;
  };
  std::vector<Phase> phases = {{"local", chi::DomainQuery(), tasks}};
  if (nodes > 1) {
    // The admin container of the next node (container i is on node i+1).
    phases.push_back(
        {"remote", chi::DomainQuery::GetGlobalId(self % nodes), tasks / 4});
    phases.push_back(
        {"broadcast", chi::DomainQuery::GetGlobalBcast(), tasks / 40});
  }
  for (const Phase &ph : phases) {
    for (hshm::u32 w : {1u, window}) {
      Errors errors;
      std::vector<std::thread> pool;
      hshm::u64 per = std::max<hshm::u64>(1, ph.tasks / threads);
      hshm::u64 t0 = hshm::NowNs();
      for (hshm::u32 t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] { RunThread(t, per, w, ph.dom, &errors); });
      }
      for (auto &t : pool) t.join();
      double secs = static_cast<double>(hshm::NowNs() - t0) / 1e9;
      hshm::u64 done = per * threads;
      printf(
          "%-9s %-12s %u threads x %llu echo tasks: %.3f s, %.0f tasks/s, "
          "%llu errors\n",
          ph.name, w == 1 ? "synchronous" : "asynchronous", threads,
          static_cast<unsigned long long>(per), secs, done / secs,
          static_cast<unsigned long long>(errors.Total()));
      if (errors.Total()) {
        printf(
            "  errors: %llu not sent (the main segment was full), %llu "
            "failed, %llu wrong results\n",
            static_cast<unsigned long long>(errors.unsent.load()),
            static_cast<unsigned long long>(errors.failed.load()),
            static_cast<unsigned long long>(errors.wrong.load()));
        rc = 1;
      }
    }
  }
  chi::admin::Client admin;
  auto sum = admin.FanOut(100, 2);
  printf("fan-out of 100 x 100 subtasks: sum %llu (%s)\n",
         static_cast<unsigned long long>(sum.ok() ? *sum : 0),
         sum.ok() && *sum == 100ull * 5050 ? "correct" : "WRONG");
  if (!sum.ok() || *sum != 100ull * 5050) rc = 1;
  CHIMAERA->ClientFinalize();
  return rc;
}
