// Starts a real chimaera_start_runtime subprocess for a test, with its own
// port and shared-memory names, and always cleans it up (even on failure).
#ifndef CHIMAERA_TEST_UTIL_RUNTIME_FIXTURE_H_
#define CHIMAERA_TEST_UTIL_RUNTIME_FIXTURE_H_

#include <memory>
#include <string>
#include <vector>

#include "hermes_shm/status.h"

namespace chi_test {

/** A free TCP port on 127.0.0.1 (bound once and released). */
int FreePort();

/** A blocking TCP connection to 127.0.0.1:`port` whose sends and receives
 * time out after `timeout_s`; -1 if it failed. */
int ConnectLoopback(int port, int timeout_s = 2);

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
  /** True while the child runs. Reaps it once it has exited, keeping how
   * if it failed (exit_note). */
  bool Running();
  /** How the child ended if it died on its own with a failure ("killed by
   * signal 9", "exited with status 66"); empty otherwise. Log() ends with
   * it. */
  const std::string &exit_note() const { return exit_note_; }
  int port() const { return port_; }
  int pid() const { return pid_; }
  const std::string &config_path() const { return conf_; }
  /** Runtimes bound to a hostfile address: the address this one is
   * expected to bind (default 127.0.0.1), for readiness and segment names.
   */
  void set_host(const std::string &host) { host_ = host; }
  /** Binds hostfile entry `node` (CHI_NODE_ID in the child); 0: the first
   * entry that binds. */
  void set_node_id(int node) { node_id_ = node; }
  /** Names of the three segments this runtime creates. */
  std::string SegmentName(const std::string &segment) const;
  /** Output the runtime printed (stdout + stderr). */
  std::string Log() const;

 private:
  int port_ = 0;
  int pid_ = -1;
  int node_id_ = 0;
  std::string host_ = "127.0.0.1";
  std::string conf_;
  std::string log_;
  std::string exit_note_;
};

/** `status` (from waitpid) in words: "killed by signal 9", "exited with
 * status 1". */
std::string DescribeExit(int status);

/** Waits (at most 5 s) until every thread of process `pid` is stopped
 * (state T or t in /proc/PID/task/TID/stat; an exiting thread, Z or X,
 * counts as stopped); false if one still runs. */
bool WaitAllThreadsStopped(int pid);

/** How long a LocalCluster node stays silent before its peers declare it
 * dead (ms): 1500, or CHI_TEST_DEAD_AFTER_MS (sanitizer builds run slower and
 * set more, so that a busy node is not taken for a dead one). */
int DeadAfterMs();

/** `n` runtimes on 127.0.0.2 .. 127.0.0.(n+1) of one machine, as the nodes of
 * one hostfile (node i on 127.0.0.(i+1)), with their own ports and segments.
 * The test process is a client of one node at a time (Connect). */
class LocalCluster {
 public:
  /** Writes the hostfile and a config (small segments, fast heartbeats,
   * plus `extra_yaml`, which must not repeat the `network` or `shm` keys,
   * and `network_yaml`, more `network:` keys, each line indented by two).
   * `ipv6`: the hostfile lists the nodes as IPv4-mapped IPv6 addresses
   * (::ffff:127.0.0.(i+1)), so that the runtimes speak IPv6. */
  explicit LocalCluster(int n, const std::string &extra_yaml = "",
                        const std::string &network_yaml = "",
                        bool ipv6 = false);
  /** Detaches the client; the runtimes are stopped by ~RuntimeProcess. */
  ~LocalCluster();
  /** Before Start: node `i` (1-based) gets `network_yaml` (more `network:`
   * keys, as the constructor's, which it must not repeat) as well,
   * replacing what an earlier call gave it. Aborts if there is no node `i`
   * or it is running. */
  void SetNodeNetworkYaml(int i, const std::string &network_yaml);
  /** Starts every node (at once) and waits until each answers. */
  hshm::Status Start();
  /** Starts node `i` (1-based) again after it stopped or was killed. */
  hshm::Status Restart(int i);
  /** Makes this process a client of node `i` (detaching from the last). */
  hshm::Status Connect(int i);
  /** Detaches this process from its node. */
  void Disconnect();
  /** Node `i` (1-based). */
  RuntimeProcess &node(int i) { return *nodes_[i - 1]; }
  /** The host of node `i`. */
  std::string host(int i) const {
    return (ipv6_ ? "::ffff:127.0.0." : "127.0.0.") + std::to_string(i + 1);
  }
  /** Stops every running node cleanly; Ok if each exited with 0. */
  hshm::Status StopAll();
  /** Every node's log, for failure messages. */
  std::string Logs();
  int size() const { return static_cast<int>(nodes_.size()); }

 private:
  /** Node `i`'s runtime, on port_, with the config the constructor's
   * arguments and `node_network_yaml` give. */
  std::unique_ptr<RuntimeProcess> MakeNode(
      int i, const std::string &node_network_yaml) const;

  bool ipv6_ = false;  ///< Hosts as IPv4-mapped IPv6 addresses.
  std::string hostfile_;
  int port_ = 0;
  std::string extra_yaml_;
  std::string network_yaml_;
  std::vector<std::unique_ptr<RuntimeProcess>> nodes_;
  bool connected_ = false;
};

/** Runs `argv` with CHI_SERVER_CONF=`conf`, captures output; returns the exit
 * code (or -1). `timeout_s` bounds it (killed after). */
int RunProgram(const std::vector<std::string> &argv, const std::string &conf,
               std::string *output, int timeout_s = 30);

/** Directory holding the runtime programs (set by CMake). */
std::string BinDir();

}  // namespace chi_test

#endif  // CHIMAERA_TEST_UTIL_RUNTIME_FIXTURE_H_
