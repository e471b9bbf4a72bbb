// The runtime configuration: defaults from config/chimaera_default.yaml
// (embedded at build time), overridden by the YAML file named by the
// CHI_SERVER_CONF environment variable.
#ifndef CHIMAERA_CONFIG_MANAGER_H_
#define CHIMAERA_CONFIG_MANAGER_H_

#include <string>
#include <vector>

#include "chimaera/chimaera_types.h"
#include "hermes_shm/config/base_config.h"
#include "hermes_shm/singleton.h"

namespace chi {

/** Every setting of a runtime (and what a client needs to find it). */
class ServerConfig : public hshm::BaseConfig {
 public:
  // workers:
  u32 num_low_latency_ = 1;       ///< Low-latency workers (>= 1).
  u32 num_high_latency_ = 1;      ///< High-latency workers (>= 1).
  u32 num_reinforcement_ = 1;     ///< Reinforcement threads (>= 0).
  std::vector<int> worker_cpus_;  ///< CPU per worker, or empty.
  u32 idle_spin_us_ = 100;        ///< Idle polling before a worker sleeps.
  /** Task fibers (64 KB stacks) in use at once on all workers, running or
   * waiting; a task that needs one more fails with ResourceExhausted (admin
   * pool tasks have a reserve of 256 more). */
  u32 max_fibers_ = 16384;
  /** How long a stopping runtime lets running tasks finish (ms); a worker
   * still inside a method 2 s after that is reported and left behind. */
  u32 stop_drain_ms_ = 10000;
  // queue:
  u64 queue_depth_ = 1024;  ///< Slots per process-queue lane.
  // shm:
  u64 main_size_ = 64ull << 20;    ///< Task segment.
  u64 cdata_size_ = 256ull << 20;  ///< Client data segment.
  u64 rdata_size_ = 64ull << 20;   ///< Runtime data segment.
  // network:
  std::string hostfile_;            ///< Hostfile path ("" = single node).
  std::vector<std::string> hosts_;  ///< Parsed hostfile (or {"127.0.0.1"}).
  u32 port_ = 9513;                 ///< Handshake server port.
  u32 client_timeout_ms_ = 2000;    ///< Client handshake timeout.
  u32 rpc_port_ = 0;                ///< Node-to-node port (0: port_ + 1).
  u32 heartbeat_ms_ = 250;          ///< Heartbeat period between runtimes.
  u32 dead_after_ms_ = 2000;        ///< A silent node is dead after this.
  /** A task forwarded to another node fails with Timeout if no reply came
   * within this (ms); the node may be alive but never answer. */
  u32 request_timeout_ms_ = 600000;
  /** Requests from one peer this node holds at once (queued or running),
   * and their bytes; more are refused with ResourceExhausted. */
  u32 max_peer_requests_ = 65536;
  u64 max_peer_bytes_ = 1ull << 30;
  /** The largest message between runtimes (one task's request or reply
   * with its data buffers); larger ones fail with ResourceExhausted.
   * Every node must use the same value; at least 8 MiB. */
  u64 max_message_bytes_ = 1ull << 30;
  /** Peers must talk from their hostfile addresses (lightbeam's
   * TransportOptions::check_peer_address). */
  bool check_peer_address_ = true;
  bool curve_ = false;          ///< CURVE between runtimes.
  std::string curve_key_file_;  ///< Cluster key file (${VAR} expanded).
  /** The cluster key pair (Z85) from curve_key_file_; filled by
   * ConfigurationManager::LoadCurveKeys (runtimes only), else empty. */
  std::string curve_public_key_;
  std::string curve_secret_key_;
  // client
  u32 task_timeout_ms_ = 60000;   ///< Deadline of synchronous client calls.
  u32 runtime_stale_ms_ = 10000;  ///< A silent runtime is dead after this.
  u32 reap_period_ms_ = 50;       ///< How often the reaper looks for the dead.
  /** How long the reaper waits for the lanes to pass a dead client's queued
   * tasks before it frees the client's memory anyway (its running tasks are
   * always waited for). */
  u32 reap_wait_ms_ = 60000;
  /** This runtime's hostfile entry (1-based; 0: the first address that
   * binds). From chimaera_start_runtime --node or CHI_NODE_ID. */
  u32 node_id_ = 0;
  // modules:
  std::vector<std::string> module_paths_;  ///< Extra module directories.
  // trace:
  bool trace_enabled_ = false;  ///< Record task timelines from start-up.
  u64 trace_events_ = 8192;     ///< Records per worker's trace ring.
  std::string trace_output_;    ///< Trace JSON written at shutdown, or "".
  // balance:
  /** How often this runtime sends its load to the other nodes (ms). */
  u32 load_report_ms_ = 20;
  /** Default Monitor(kGlobalSchedule): least-loaded node (true) or a hash
   * over this node's containers (false). */
  bool dynamic_least_loaded_ = true;
  /** Move lanes between workers of a node to even out busy time. */
  bool balance_lanes_ = true;
  /** Automatic migration: when a node's load stays at least twice the
   * others' mean (and 4 tasks above it) for this long, the coordinator
   * asks it to move its busiest movable container to the least loaded
   * node (ms; 0: off). */
  u32 migrate_after_ms_ = 0;

  /** The node-to-node port. */
  u32 RpcPort() const { return rpc_port_ ? rpc_port_ : port_ + 1; }
  /** Total workers (low + high latency). */
  u32 NumWorkers() const { return num_low_latency_ + num_high_latency_; }

 protected:
  /** Parses the embedded default YAML. */
  Status LoadDefault() override;
  /** Reads every known key; unknown keys, wrong types, bad sizes and
   * out-of-range values are InvalidArgument errors naming the key. */
  Status ParseYAML(const YAML::Node &node) override;
};

/** Owns the process's ServerConfig. Load once at start-up (single thread);
 * afterwards any thread may read config(). */
class ConfigurationManager {
 public:
  /** Loads defaults, then the file named by CHI_SERVER_CONF if set, then
   * the hostfile (CHI_HOSTFILE, if set, replaces network.hostfile;
   * CHI_NODE_ID picks this runtime's entry). Errors name the file and the
   * key. */
  Status Load();
  /** Loads defaults overridden by `yaml` (tests and tools). */
  Status LoadText(const std::string &yaml);
  /** Runtimes only (clients never need the secret): if network.curve is on,
   * reads the cluster key pair from network.curve_key_file into the config.
   * A missing, unreadable, malformed or world-accessible file, or a libzmq
   * without CURVE, is an error naming the file. Ok (nothing read) if off. */
  Status LoadCurveKeys();
  /** The loaded configuration. */
  const ServerConfig &config() const { return config_; }
  ServerConfig &mutable_config() { return config_; }

 private:
  /** Parses the hostfile named in the config into hosts_. */
  Status LoadHosts();
  ServerConfig config_;
};

}  // namespace chi

#define CHI_CONFIG_MANAGER \
  (::hshm::Singleton<::chi::ConfigurationManager>::GetInstance())

#endif  // CHIMAERA_CONFIG_MANAGER_H_
