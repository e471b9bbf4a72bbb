#include "chimaera/config_manager.h"

#include <cstdlib>
#include <unordered_map>

#include "chimaera/config/default_config.h"
#include "hermes_shm/config/config_parse.h"
#include "hermes_shm/lightbeam/curve.h"

namespace chi {

Status ServerConfig::LoadDefault() {
  return ParseYamlText(kDefaultServerConfigYaml);
}

namespace {

/** InvalidArgument unless lo <= v <= hi. */
Status CheckRange(const std::string &key, u64 v, u64 lo, u64 hi) {
  if (v < lo || v > hi) {
    return Status::InvalidArgument("key '" + key + "': " + std::to_string(v) +
                                   " is outside [" + std::to_string(lo) + ", " +
                                   std::to_string(hi) + "]");
  }
  return Status::Ok();
}

}  // namespace

Status ServerConfig::ParseYAML(const YAML::Node &root) {
  HSHM_RETURN_IF_ERROR(CheckKeys(root,
                                 {"workers", "queue", "shm", "network",
                                  "modules", "client", "trace", "balance"},
                                 "config"));
  if (const YAML::Node w = root["workers"]) {
    HSHM_RETURN_IF_ERROR(
        CheckKeys(w,
                  {"low_latency", "high_latency", "reinforcement", "cpus",
                   "idle_spin_us", "max_fibers", "stop_drain_ms"},
                  "workers"));
    HSHM_RETURN_IF_ERROR(
        ReadScalar(w, "workers.low_latency", &num_low_latency_));
    HSHM_RETURN_IF_ERROR(
        ReadScalar(w, "workers.high_latency", &num_high_latency_));
    HSHM_RETURN_IF_ERROR(
        ReadScalar(w, "workers.reinforcement", &num_reinforcement_));
    HSHM_RETURN_IF_ERROR(ReadVector(w, "workers.cpus", &worker_cpus_));
    HSHM_RETURN_IF_ERROR(ReadScalar(w, "workers.idle_spin_us", &idle_spin_us_));
    HSHM_RETURN_IF_ERROR(ReadScalar(w, "workers.max_fibers", &max_fibers_));
    HSHM_RETURN_IF_ERROR(
        ReadScalar(w, "workers.stop_drain_ms", &stop_drain_ms_));
    HSHM_RETURN_IF_ERROR(
        CheckRange("workers.low_latency", num_low_latency_, 1, 256));
    HSHM_RETURN_IF_ERROR(
        CheckRange("workers.high_latency", num_high_latency_, 1, 256));
    HSHM_RETURN_IF_ERROR(
        CheckRange("workers.reinforcement", num_reinforcement_, 0, 16));
    HSHM_RETURN_IF_ERROR(
        CheckRange("workers.idle_spin_us", idle_spin_us_, 0, 10000000));
    // Each fiber stack is two mappings (stack and guard page), and idle
    // stacks kept for reuse add up to a quarter more; Linux allows 65530
    // mappings per process by default (vm.max_map_count).
    HSHM_RETURN_IF_ERROR(
        CheckRange("workers.max_fibers", max_fibers_, 16, 20000));
    HSHM_RETURN_IF_ERROR(
        CheckRange("workers.stop_drain_ms", stop_drain_ms_, 0, 3600000));
    for (int cpu : worker_cpus_) {
      if (cpu < 0) return Status::InvalidArgument("key 'workers.cpus': < 0");
    }
    const u64 workers = static_cast<u64>(num_low_latency_) + num_high_latency_ +
                        num_reinforcement_;
    if (worker_cpus_.size() > workers) {
      return Status::InvalidArgument(
          "key 'workers.cpus': " + std::to_string(worker_cpus_.size()) +
          " CPUs for " + std::to_string(workers) +
          " worker threads (low_latency + high_latency + reinforcement)");
    }
  }
  if (const YAML::Node q = root["queue"]) {
    HSHM_RETURN_IF_ERROR(CheckKeys(q, {"depth"}, "queue"));
    HSHM_RETURN_IF_ERROR(ReadScalar(q, "queue.depth", &queue_depth_));
    HSHM_RETURN_IF_ERROR(CheckRange("queue.depth", queue_depth_, 2, 1 << 20));
  }
  if (const YAML::Node s = root["shm"]) {
    HSHM_RETURN_IF_ERROR(
        CheckKeys(s, {"main", "client_data", "runtime_data"}, "shm"));
    HSHM_RETURN_IF_ERROR(ReadSize(s, "shm.main", &main_size_));
    HSHM_RETURN_IF_ERROR(ReadSize(s, "shm.client_data", &cdata_size_));
    HSHM_RETURN_IF_ERROR(ReadSize(s, "shm.runtime_data", &rdata_size_));
    constexpr u64 kMin = 1 << 20, kMax = 1ull << 38;  // heap limit: 256 GiB
    HSHM_RETURN_IF_ERROR(CheckRange("shm.main", main_size_, kMin, kMax));
    HSHM_RETURN_IF_ERROR(
        CheckRange("shm.client_data", cdata_size_, kMin, kMax));
    HSHM_RETURN_IF_ERROR(
        CheckRange("shm.runtime_data", rdata_size_, kMin, kMax));
  }
  if (const YAML::Node n = root["network"]) {
    HSHM_RETURN_IF_ERROR(
        CheckKeys(n,
                  {"hostfile", "port", "client_timeout_ms", "rpc_port",
                   "heartbeat_ms", "dead_after_ms", "request_timeout_ms",
                   "max_peer_requests", "max_peer_bytes", "max_message_bytes",
                   "check_peer_address", "curve", "curve_key_file"},
                  "network"));
    HSHM_RETURN_IF_ERROR(ReadScalar(n, "network.rpc_port", &rpc_port_));
    HSHM_RETURN_IF_ERROR(ReadScalar(n, "network.heartbeat_ms", &heartbeat_ms_));
    HSHM_RETURN_IF_ERROR(
        ReadScalar(n, "network.dead_after_ms", &dead_after_ms_));
    HSHM_RETURN_IF_ERROR(CheckRange("network.rpc_port", rpc_port_, 0, 65535));
    HSHM_RETURN_IF_ERROR(
        CheckRange("network.heartbeat_ms", heartbeat_ms_, 10, 60000));
    HSHM_RETURN_IF_ERROR(
        CheckRange("network.dead_after_ms", dead_after_ms_, 50, 600000));
    if (dead_after_ms_ < 2 * static_cast<u64>(heartbeat_ms_)) {
      return Status::InvalidArgument(
          "key 'network.dead_after_ms': " + std::to_string(dead_after_ms_) +
          " is under twice network.heartbeat_ms (" +
          std::to_string(heartbeat_ms_) +
          "): a live node would be taken for dead between two heartbeats");
    }
    HSHM_RETURN_IF_ERROR(
        ReadScalar(n, "network.request_timeout_ms", &request_timeout_ms_));
    HSHM_RETURN_IF_ERROR(CheckRange("network.request_timeout_ms",
                                    request_timeout_ms_, 100, 86400000));
    HSHM_RETURN_IF_ERROR(
        ReadScalar(n, "network.max_peer_requests", &max_peer_requests_));
    HSHM_RETURN_IF_ERROR(CheckRange("network.max_peer_requests",
                                    max_peer_requests_, 1, 1u << 24));
    HSHM_RETURN_IF_ERROR(
        ReadSize(n, "network.max_peer_bytes", &max_peer_bytes_));
    HSHM_RETURN_IF_ERROR(CheckRange("network.max_peer_bytes", max_peer_bytes_,
                                    1ull << 20, 1ull << 40));
    HSHM_RETURN_IF_ERROR(
        ReadSize(n, "network.max_message_bytes", &max_message_bytes_));
    // At least 8 MiB: the runtime's own largest message, a page of pool
    // specs for a rejoining node, takes a few MiB.
    HSHM_RETURN_IF_ERROR(CheckRange("network.max_message_bytes",
                                    max_message_bytes_, 8ull << 20,
                                    1ull << 40));
    HSHM_RETURN_IF_ERROR(ReadScalar(n, "network.hostfile", &hostfile_));
    HSHM_RETURN_IF_ERROR(ReadScalar(n, "network.port", &port_));
    HSHM_RETURN_IF_ERROR(
        ReadScalar(n, "network.client_timeout_ms", &client_timeout_ms_));
    HSHM_RETURN_IF_ERROR(CheckRange("network.port", port_, 1, 65534));
    if (rpc_port_ == port_) {
      // Both servers would bind one port: the second fails as if another
      // process held it.
      return Status::InvalidArgument(
          "key 'network.rpc_port': " + std::to_string(rpc_port_) +
          " is network.port as well; the node-to-node port must differ "
          "(0: network.port + 1)");
    }
    HSHM_RETURN_IF_ERROR(CheckRange("network.client_timeout_ms",
                                    client_timeout_ms_, 1, 3600000));
    HSHM_RETURN_IF_ERROR(
        ReadScalar(n, "network.check_peer_address", &check_peer_address_));
    HSHM_RETURN_IF_ERROR(ReadScalar(n, "network.curve", &curve_));
    if (n["curve_key_file"]) {
      HSHM_RETURN_IF_ERROR(
          ReadScalar(n, "network.curve_key_file", &curve_key_file_));
      curve_key_file_ = hshm::ConfigParse::ExpandPath(curve_key_file_);
    }
    if (curve_ && curve_key_file_.empty()) {
      return Status::InvalidArgument(
          "key 'network.curve_key_file': empty, but network.curve is true "
          "(write a cluster key file with chimaera_keygen and name it here)");
    }
  }
  if (const YAML::Node c = root["client"]) {
    HSHM_RETURN_IF_ERROR(CheckKeys(c,
                                   {"task_timeout_ms", "runtime_stale_ms",
                                    "reap_period_ms", "reap_wait_ms"},
                                   "client"));
    HSHM_RETURN_IF_ERROR(
        ReadScalar(c, "client.task_timeout_ms", &task_timeout_ms_));
    HSHM_RETURN_IF_ERROR(
        ReadScalar(c, "client.runtime_stale_ms", &runtime_stale_ms_));
    HSHM_RETURN_IF_ERROR(
        ReadScalar(c, "client.reap_period_ms", &reap_period_ms_));
    HSHM_RETURN_IF_ERROR(ReadScalar(c, "client.reap_wait_ms", &reap_wait_ms_));
    HSHM_RETURN_IF_ERROR(
        CheckRange("client.task_timeout_ms", task_timeout_ms_, 1, 86400000));
    HSHM_RETURN_IF_ERROR(CheckRange("client.runtime_stale_ms",
                                    runtime_stale_ms_, 100, 86400000));
    HSHM_RETURN_IF_ERROR(
        CheckRange("client.reap_period_ms", reap_period_ms_, 1, 60000));
    HSHM_RETURN_IF_ERROR(
        CheckRange("client.reap_wait_ms", reap_wait_ms_, 100, 86400000));
  }
  if (const YAML::Node m = root["modules"]) {
    HSHM_RETURN_IF_ERROR(CheckKeys(m, {"paths"}, "modules"));
    HSHM_RETURN_IF_ERROR(ReadVector(m, "modules.paths", &module_paths_));
    for (auto &p : module_paths_) p = hshm::ConfigParse::ExpandPath(p);
  }
  if (const YAML::Node t = root["trace"]) {
    HSHM_RETURN_IF_ERROR(
        CheckKeys(t, {"enabled", "events_per_worker", "output"}, "trace"));
    HSHM_RETURN_IF_ERROR(ReadScalar(t, "trace.enabled", &trace_enabled_));
    HSHM_RETURN_IF_ERROR(
        ReadScalar(t, "trace.events_per_worker", &trace_events_));
    HSHM_RETURN_IF_ERROR(
        CheckRange("trace.events_per_worker", trace_events_, 16, 1ull << 24));
    if (t["output"]) {
      HSHM_RETURN_IF_ERROR(ReadScalar(t, "trace.output", &trace_output_));
      if (!trace_output_.empty()) {
        trace_output_ = hshm::ConfigParse::ExpandPath(trace_output_);
      }
    }
  }
  if (const YAML::Node b = root["balance"]) {
    HSHM_RETURN_IF_ERROR(
        CheckKeys(b, {"load_report_ms", "dynamic", "lanes", "migrate_after_ms"},
                  "balance"));
    HSHM_RETURN_IF_ERROR(
        ReadScalar(b, "balance.load_report_ms", &load_report_ms_));
    HSHM_RETURN_IF_ERROR(
        CheckRange("balance.load_report_ms", load_report_ms_, 1, 60000));
    if (b["dynamic"]) {
      std::string d;
      HSHM_RETURN_IF_ERROR(ReadScalar(b, "balance.dynamic", &d));
      if (d != "least_loaded" && d != "local") {
        return Status::InvalidArgument("key 'balance.dynamic': '" + d +
                                       "' is not least_loaded or local");
      }
      dynamic_least_loaded_ = d == "least_loaded";
    }
    HSHM_RETURN_IF_ERROR(ReadScalar(b, "balance.lanes", &balance_lanes_));
    HSHM_RETURN_IF_ERROR(
        ReadScalar(b, "balance.migrate_after_ms", &migrate_after_ms_));
    HSHM_RETURN_IF_ERROR(
        CheckRange("balance.migrate_after_ms", migrate_after_ms_, 0, 3600000));
  }
  return Status::Ok();
}

Status ConfigurationManager::Load() {
  const char *path = std::getenv("CHI_SERVER_CONF");
  if (path && *path) {
    // LoadFile's errors name the file once.
    HSHM_RETURN_IF_ERROR(config_.LoadFile(path));
  } else if (Status s = config_.LoadText(""); !s.ok()) {
    return Status(s.code(), "configuration (defaults): " + s.message());
  }
  return LoadHosts();
}

Status ConfigurationManager::LoadText(const std::string &yaml) {
  HSHM_RETURN_IF_ERROR(config_.LoadText(yaml));
  return LoadHosts();
}

Status ConfigurationManager::LoadCurveKeys() {
  config_.curve_public_key_.clear();
  config_.curve_secret_key_.clear();
  if (!config_.curve_) return Status::Ok();
  if (!hshm::lbm::CurveAvailable()) {
    return Status::Unimplemented(
        "network.curve is true, but this libzmq was built without CURVE");
  }
  auto keys = hshm::lbm::ReadCurveKeyFile(config_.curve_key_file_);
  if (!keys.ok()) {
    return Status(keys.status().code(),
                  "network.curve_key_file: " + keys.status().message());
  }
  config_.curve_public_key_ = std::move(keys->public_key);
  config_.curve_secret_key_ = std::move(keys->secret_key);
  return Status::Ok();
}

Status ConfigurationManager::LoadHosts() {
  config_.hosts_.clear();
  if (const char *hf = std::getenv("CHI_HOSTFILE"); hf && *hf) {
    config_.hostfile_ = hf;
  }
  if (const char *id = std::getenv("CHI_NODE_ID"); id && *id) {
    char *end = nullptr;
    unsigned long v = std::strtoul(id, &end, 10);
    if (*end != '\0' || v > 65536) {
      return Status::InvalidArgument(std::string("CHI_NODE_ID '") + id +
                                     "' is not a node number");
    }
    config_.node_id_ = static_cast<u32>(v);
  }
  if (config_.hostfile_.empty()) {
    config_.hosts_.push_back("127.0.0.1");
  } else {
    auto hosts = hshm::ConfigParse::ParseHostfile(config_.hostfile_);
    if (!hosts.ok()) {
      return Status(hosts.status().code(),
                    "hostfile: " + hosts.status().message());
    }
    if (hosts->empty()) {
      return Status::InvalidArgument("hostfile " + config_.hostfile_ +
                                     " lists no hosts");
    }
    if (hosts->size() > kMaxContainers) {
      return Status::InvalidArgument(
          "hostfile " + config_.hostfile_ + " lists " +
          std::to_string(hosts->size()) + " hosts; a cluster has at most " +
          std::to_string(kMaxContainers) +
          " nodes (the admin pool has a container on each)");
    }
    // Every entry is a node on the same port: one listed twice could never
    // start (its port is taken), and the error would blame another runtime.
    std::unordered_map<std::string, size_t> seen;
    for (size_t i = 0; i < hosts->size(); ++i) {
      auto [it, fresh] = seen.emplace((*hosts)[i], i);
      if (!fresh) {
        return Status::InvalidArgument(
            "hostfile " + config_.hostfile_ + " lists " + (*hosts)[i] +
            " twice (entries " + std::to_string(it->second + 1) + " and " +
            std::to_string(i + 1) + "); each node once");
      }
    }
    config_.hosts_ = std::move(*hosts);
  }
  if (config_.node_id_ > config_.hosts_.size()) {
    return Status::InvalidArgument(
        "node " + std::to_string(config_.node_id_) + " is not in " +
        (config_.hostfile_.empty() ? std::string("the hostfile")
                                   : "hostfile " + config_.hostfile_) +
        " (" + std::to_string(config_.hosts_.size()) + " hosts" +
        (config_.hostfile_.empty() ? ": none is configured, so 127.0.0.1"
                                   : "") +
        ")");
  }
  return Status::Ok();
}

}  // namespace chi
