// Starts a real chimaera_start_runtime subprocess for a test, with its own
// port and shared-memory names, and always cleans it up (even on failure).
#ifndef CHIMAERA_TEST_UTIL_RUNTIME_FIXTURE_H_
#define CHIMAERA_TEST_UTIL_RUNTIME_FIXTURE_H_

#include <string>
#include <vector>

#include "hermes_shm/status.h"

namespace chi_test {

/** A free TCP port on 127.0.0.1 (bound once and released). */
int FreePort();

/** Writes `yaml` to a fresh file under /tmp and returns its path. */
std::string WriteTempFile(const std::string &tag, const std::string &yaml);

/** A runtime in a child process. */
class RuntimeProcess {
 public:
  /** Picks a port, writes a config (small segments plus `extra_yaml`, which
   * must not repeat the `network` or `shm` keys unless `full_yaml` is set)
   * and exports CHI_SERVER_CONF so clients in this process find it. */
  explicit RuntimeProcess(const std::string &extra_yaml = "",
                          bool full_yaml = false);
  /** A runtime on `port` with exactly the configuration `yaml`. */
  RuntimeProcess(int port, const std::string &yaml);
  /** Stops the runtime (SIGTERM, then SIGKILL after 10 s) and removes its
   * segments and config file. */
  ~RuntimeProcess();

  /** Starts the runtime and waits (at most 10 s) until it answers. */
  hshm::Status Start();
  /** Runs chimaera_stop_runtime and waits for the runtime to exit with 0. */
  hshm::Status Stop();
  /** Kills the runtime with `sig` and reaps it. */
  void Kill(int sig);
  /** True while the child runs. */
  bool Running();
  int port() const { return port_; }
  int pid() const { return pid_; }
  const std::string &config_path() const { return conf_; }
  /** Runtimes bound to a hostfile address: the address this one is
   * expected to bind (default 127.0.0.1), for readiness and segment names.
   */
  void set_host(const std::string &host) { host_ = host; }
  /** Names of the three segments this runtime creates. */
  std::string SegmentName(const std::string &segment) const;
  /** Output the runtime printed (stdout + stderr). */
  std::string Log() const;

 private:
  int port_ = 0;
  int pid_ = -1;
  std::string host_ = "127.0.0.1";
  std::string conf_;
  std::string log_;
};

/** Runs `argv` with CHI_SERVER_CONF=`conf`, captures output; returns the exit
 * code (or -1). `timeout_s` bounds it (killed after). */
int RunProgram(const std::vector<std::string> &argv, const std::string &conf,
               std::string *output, int timeout_s = 30);

/** Directory holding the runtime programs (set by CMake). */
std::string BinDir();

}  // namespace chi_test

#endif  // CHIMAERA_TEST_UTIL_RUNTIME_FIXTURE_H_
