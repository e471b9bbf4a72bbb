// chimaera_start_runtime: runs a Chimaera runtime in the foreground until
// chimaera_stop_runtime (a StopRuntime task, or its queued SIGTERM), SIGINT
// or SIGTERM. A SIGINT or SIGTERM while it stops ends it at once, except
// chimaera_stop_runtime's (kStopToolSignalValue).
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "chimaera/chimaera.h"
#include "chimaera/stop_signal.h"

namespace {
/** Ends the process at once with `code`, running nothing more (no atexit
 * handlers, no destructors, no sanitizer exit checks: threads a stuck
 * stop left running are meant to be left). */
[[noreturn]] void ExitNow(int code) {
  fflush(stdout);
  fflush(stderr);
  syscall(SYS_exit_group, code);
  __builtin_unreachable();
}
}  // namespace

int main(int argc, char **argv) {
  CLI::App app{
      "Start a Chimaera runtime in the foreground. The configuration is the "
      "embedded default, overridden by the YAML file named by "
      "CHI_SERVER_CONF."};
  unsigned node = 0;
  app.add_option("-n,--node", node,
                 "Bind hostfile entry N (1-based) instead of the first entry "
                 "that binds (same as CHI_NODE_ID=N)")
      ->check(CLI::Range(1u, 65536u));
  CLI11_PARSE(app, argc, argv);
  if (node != 0) setenv("CHI_NODE_ID", std::to_string(node).c_str(), 1);

  // Signals go to a dedicated thread (all threads inherit this mask), which
  // may then take locks that a signal handler could not.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  // Descriptors: as many as this process may have (Debian's soft limit is
  // 1024 of a hard 524288), so that peers' connections and ZeroMQ's own
  // sockets do not run out under load.
  rlimit files;
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 &&
      files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &files);
  }

  // A signal while the runtime starts (resolving a hostfile's names may
  // take long) ends it at once; one while it runs asks for a clean stop; one
  // while it stops (after a signal or chimaera_stop_runtime; e.g. a task
  // that does not finish) ends it at once: the segments stay behind, and the
  // next start on this node removes them. chimaera_stop_runtime's own
  // signal (queued with kStopToolSignalValue) only starts a stop. Signals in
  // the first half second of a stop repeat the request that started it: GNU
  // timeout, for one, signals the runtime and then its whole process group.
  enum Phase : int { kStarting, kRunning, kStopping, kStopped };
  std::atomic<int> phase{kStarting};
  std::thread sig_thread([set, &phase] {
    std::chrono::steady_clock::time_point stop_began;
    for (;;) {
      siginfo_t info;
      if (sigwaitinfo(&set, &info) < 0) continue;
      const int sig = info.si_signo;
      if (phase.load() == kStarting) {
        fprintf(stderr,
                "chimaera_start_runtime: signal %d while starting: exiting "
                "now\n",
                sig);
        ExitNow(1);
      }
      int p = kRunning;
      if (phase.compare_exchange_strong(p, kStopping)) {
        stop_began = std::chrono::steady_clock::now();
        CHIMAERA->RequestStop();
        continue;
      }
      if (p == kStopped) return;  // main releases this thread
      if (info.si_code == SI_QUEUE &&
          info.si_value.sival_int == chi::kStopToolSignalValue) {
        continue;  // chimaera_stop_runtime's: a stop already runs
      }
      if (stop_began != std::chrono::steady_clock::time_point() &&
          std::chrono::steady_clock::now() - stop_began <
              std::chrono::milliseconds(500)) {
        continue;  // the same request, sent twice
      }
      fprintf(stderr,
              "chimaera_start_runtime: signal %d while stopping: exiting "
              "now, without cleaning up\n",
              sig);
      ExitNow(2);
    }
  });
  hshm::Status s = CHIMAERA_RUNTIME_INIT();
  if (!s.ok()) {
    fprintf(stderr, "chimaera_start_runtime: %s\n", s.ToString().c_str());
    sig_thread.detach();  // blocked in sigwaitinfo; exit() does not wait
    return 1;
  }
  phase.store(kRunning);
  printf("Chimaera runtime: node %u listening on %s (pid %d); ready\n",
         CHI_IPC->node_id(), CHI_IPC->server_address().c_str(), getpid());
  fflush(stdout);
  CHIMAERA->ServerWait();
  phase.store(kStopping);
  s = CHIMAERA->ServerStop();
  if (!s.ok()) {
    // A worker still runs a method: freeing anything could crash it, and
    // exit() would run destructors under it.
    fprintf(stderr, "chimaera_start_runtime: %s; exiting without cleaning up\n",
            s.ToString().c_str());
    ExitNow(3);
  }
  // Release the signal thread.
  phase.store(kStopped);
  pthread_kill(sig_thread.native_handle(), SIGTERM);
  sig_thread.join();
  printf("Chimaera runtime: stopped\n");
  return 0;
}
