// chimaera_stop_runtime: asks the local runtime to stop and waits until its
// process has exited. Exit status 0 when it stopped cleanly, 2 when it
// exited but left its segments, 1 on any other failure. If no worker takes the
// request (each is inside a long method), it sends the runtime SIGTERM instead,
// which the runtime's main thread handles: the stop then lasts at most
// workers.stop_drain_ms plus 2 s.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "chimaera/chimaera.h"
#include "chimaera/stop_signal.h"
#include "hermes_shm/memory/posix_shm.h"
#include "hermes_shm/util/futex.h"

int main(int argc, char **argv) {
  CLI::App app{
      "Stop the Chimaera runtime named by CHI_SERVER_CONF (or the "
      "default configuration)."};
  int timeout_s = 30;
  app.add_option("-t,--timeout", timeout_s,
                 "Seconds to wait for the runtime to exit")
      ->check(CLI::Range(1, 86400));
  int signal_after_s = 5;
  app.add_option("--signal-after", signal_after_s,
                 "Seconds to wait for a worker to take the stop request "
                 "before sending the runtime SIGTERM (0: never signal)")
      ->check(CLI::Range(0, 86400));
  CLI11_PARSE(app, argc, argv);
  const hshm::u64 deadline =
      hshm::NowNs() + static_cast<hshm::u64>(timeout_s) * 1000000000ull;

  hshm::Status s = CHIMAERA_CLIENT_INIT();
  if (!s.ok()) {
    fprintf(stderr, "chimaera_stop_runtime: %s\n", s.ToString().c_str());
    return 1;
  }
  // From the handshake, not from `main` (which any client can rewrite).
  const int pid = CHI_IPC->runtime_pid();
  chi::admin::Client admin;
  // A signal only if it can come before the deadline.
  const bool may_signal = signal_after_s > 0 && signal_after_s < timeout_s;
  const int ask_s = may_signal ? signal_after_s : timeout_s;
  s = admin.StopRuntime(static_cast<hshm::u64>(ask_s) * 1000000);
  if (s.code() == hshm::StatusCode::kTimeout && may_signal && pid > 0 &&
      CHI_IPC->RuntimeProcessAlive()) {
    // Every worker is inside a method: the signal needs none of them. Its
    // value tells the runtime to ignore it if a stop already runs (a stop
    // request a worker took just now).
    fprintf(stderr,
            "chimaera_stop_runtime: no worker took the stop request in %d s; "
            "sending SIGTERM to runtime pid %d\n",
            ask_s, pid);
    sigval value;
    value.sival_int = chi::kStopToolSignalValue;
    if (sigqueue(pid, SIGTERM, value) != 0) {
      fprintf(stderr, "chimaera_stop_runtime: sigqueue(%d, SIGTERM): %s\n", pid,
              strerror(errno));
      return 1;
    }
  } else if (!s.ok()) {
    fprintf(stderr, "chimaera_stop_runtime: %s\n", s.ToString().c_str());
    return 1;
  }
  while (CHI_IPC->RuntimeProcessAlive()) {  // that pid, since its start
    if (hshm::NowNs() > deadline) {
      fprintf(
          stderr,
          "chimaera_stop_runtime: runtime pid %d still running after %d s\n",
          pid, timeout_s);
      return 1;
    }
    HSHM_THREAD_MODEL->SleepForUs(10000);
  }
  // A clean stop removes the segments; one that gave up on a worker still
  // inside a method (or a second signal) leaves them.
  const std::string main_segment =
      hipc::PosixShmMmap::MakeName(CHI_IPC->instance_key(), "main");
  CHIMAERA->ClientFinalize();
  if (hipc::PosixShmMmap::Exists(main_segment)) {
    printf(
        "Chimaera runtime (pid %d) stopped, but not cleanly: it left its "
        "shared-memory segments (its log says why; the next start on this "
        "node removes them)\n",
        pid);
    return 2;
  }
  printf("Chimaera runtime (pid %d) stopped\n", pid);
  return 0;
}
