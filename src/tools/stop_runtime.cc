// chimaera_stop_runtime: asks the local runtime to stop and waits until its
// process has exited.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>

#include "chimaera/chimaera.h"
#include "hermes_shm/util/futex.h"

int main(int argc, char **argv) {
  CLI::App app{
      "Stop the Chimaera runtime named by CHI_SERVER_CONF (or the "
      "default configuration)."};
  int timeout_s = 30;
  app.add_option("-t,--timeout", timeout_s,
                 "Seconds to wait for the runtime to exit");
  CLI11_PARSE(app, argc, argv);

  hshm::Status s = CHIMAERA_CLIENT_INIT();
  if (!s.ok()) {
    fprintf(stderr, "chimaera_stop_runtime: %s\n", s.ToString().c_str());
    return 1;
  }
  // From the handshake, not from `main` (which any client can rewrite).
  const int pid = CHI_IPC->runtime_pid();
  chi::admin::Client admin;
  s = admin.StopRuntime();
  if (!s.ok()) {
    fprintf(stderr, "chimaera_stop_runtime: %s\n", s.ToString().c_str());
    return 1;
  }
  hshm::u64 deadline =
      hshm::NowNs() + static_cast<hshm::u64>(timeout_s) * 1000000000ull;
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
  CHIMAERA->ClientFinalize();
  printf("Chimaera runtime (pid %d) stopped\n", pid);
  return 0;
}
