#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>

#include "chimaera/config/default_config.h"
#include "chimaera/config_manager.h"
#include "runtime_fixture.h"

namespace {

using chi::ConfigurationManager;

TEST(ConfigTest, EmbeddedDefaultsMatchTheYaml) {
  ConfigurationManager cm;
  ASSERT_TRUE(cm.LoadText("").ok());
  const chi::ServerConfig &c = cm.config();
  EXPECT_EQ(c.num_low_latency_, 1u);
  EXPECT_EQ(c.num_high_latency_, 1u);
  EXPECT_EQ(c.queue_depth_, 1024u);
  EXPECT_EQ(c.main_size_, 64ull << 20);
  EXPECT_EQ(c.cdata_size_, 256ull << 20);
  EXPECT_EQ(c.port_, 9513u);
  ASSERT_EQ(c.hosts_.size(), 1u);
  EXPECT_EQ(c.hosts_[0], "127.0.0.1");
  EXPECT_TRUE(c.check_peer_address_);
  EXPECT_EQ(c.max_message_bytes_, 1ull << 30);
  // The constant is the YAML file's text.
  EXPECT_NE(std::string(chi::kDefaultServerConfigYaml).find("low_latency"),
            std::string::npos);
}

TEST(ConfigTest, OverridesOnlyWhatIsGiven) {
  ConfigurationManager cm;
  ASSERT_TRUE(cm.LoadText("workers:\n  low_latency: 3\n  cpus: [0, 1]\n"
                          "shm:\n  main: 1g\nqueue:\n  depth: 64\n"
                          "network:\n  check_peer_address: false\n"
                          "  max_message_bytes: 64m\n")
                  .ok());
  EXPECT_FALSE(cm.config().check_peer_address_);
  EXPECT_EQ(cm.config().max_message_bytes_, 64ull << 20);
  EXPECT_EQ(cm.config().num_low_latency_, 3u);
  EXPECT_EQ(cm.config().num_high_latency_, 1u);
  EXPECT_EQ(cm.config().main_size_, 1ull << 30);
  EXPECT_EQ(cm.config().queue_depth_, 64u);
  EXPECT_EQ(cm.config().worker_cpus_.size(), 2u);
}

/** Loads `yaml` and expects an InvalidArgument error mentioning `key`. */
void ExpectError(const std::string &yaml, const std::string &key) {
  ConfigurationManager cm;
  hshm::Status s = cm.LoadText(yaml);
  ASSERT_FALSE(s.ok()) << yaml;
  EXPECT_EQ(s.code(), hshm::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find(key), std::string::npos) << s;
}

TEST(ConfigTest, BadInputNamesTheKey) {
  ExpectError("bogus: 1\n", "bogus");
  ExpectError("workers:\n  low_latency: abc\n",
              "key 'workers.low_latency': expected non-negative integer");
  ExpectError("workers:\n  low_latency: 0\n", "low_latency");
  ExpectError("workers:\n  typo: 1\n", "typo");
  ExpectError("workers:\n  max_fibers: 8\n", "max_fibers");
  // More CPUs than worker threads (3 by default: 1 + 1 + 1).
  ExpectError("workers:\n  cpus: [0, 1, 0, 1]\n",
              "key 'workers.cpus': 4 CPUs for 3 worker threads");
  ExpectError("workers:\n  max_fibers: 20001\n", "max_fibers");
  ExpectError("shm:\n  main: 12zb\n", "key 'shm.main'");
  ExpectError("shm:\n  client_data: -5m\n", "key 'shm.client_data'");
  ExpectError("network:\n  port: 70000\n", "port");
  ExpectError("network:\n  check_peer_address: maybe\n",
              "key 'network.check_peer_address'");
  ExpectError("network:\n  max_message_bytes: 4m\n", "max_message_bytes");
  ExpectError("network:\n  port: 9600\n  rpc_port: 9600\n",
              "network.rpc_port': 9600 is network.port as well");
  ExpectError("network:\n  port: 9600\n  port: 9601\n", "given twice");
  // A node would be taken for dead between two heartbeats.
  ExpectError("network:\n  heartbeat_ms: 3000\n  dead_after_ms: 500\n",
              "key 'network.dead_after_ms': 500 is under twice "
              "network.heartbeat_ms (3000)");
  ExpectError("queue:\n  depth: [1, 2]\n", "key 'queue.depth'");
  ExpectError("workers: [\n", "YAML");
}

TEST(ConfigTest, BalanceSection) {
  ConfigurationManager defaults;
  ASSERT_TRUE(defaults.LoadText("").ok());
  EXPECT_EQ(defaults.config().load_report_ms_, 20u);
  EXPECT_TRUE(defaults.config().dynamic_least_loaded_);
  EXPECT_TRUE(defaults.config().balance_lanes_);
  EXPECT_EQ(defaults.config().migrate_after_ms_, 0u);
  ConfigurationManager cm;
  ASSERT_TRUE(cm.LoadText("balance:\n  load_report_ms: 5\n  dynamic: local\n"
                          "  lanes: false\n  migrate_after_ms: 2000\n")
                  .ok());
  EXPECT_EQ(cm.config().load_report_ms_, 5u);
  EXPECT_FALSE(cm.config().dynamic_least_loaded_);
  EXPECT_FALSE(cm.config().balance_lanes_);
  EXPECT_EQ(cm.config().migrate_after_ms_, 2000u);
  ExpectError("balance:\n  dynamic: random\n", "balance.dynamic");
  ExpectError("balance:\n  load_report_ms: 0\n", "load_report_ms");
  ExpectError("balance:\n  migrate_after_ms: -1\n", "migrate_after_ms");
  ExpectError("balance:\n  lanes: maybe\n", "key 'balance.lanes'");
  ExpectError("balance:\n  typo: 1\n", "typo");
}

TEST(ConfigTest, HostfileIsParsed) {
  std::string hf = chi_test::WriteTempFile(
      "hosts", "# nodes\n127.0.0.[2-3]\n\n127.0.0.1 # me\n");
  ConfigurationManager cm;
  ASSERT_TRUE(cm.LoadText("network:\n  hostfile: " + hf + "\n").ok());
  EXPECT_EQ(cm.config().hosts_,
            (std::vector<std::string>{"127.0.0.2", "127.0.0.3", "127.0.0.1"}));
  unlink(hf.c_str());
  ConfigurationManager missing;
  hshm::Status s = missing.LoadText("network:\n  hostfile: " + hf + "\n");
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find(hf), std::string::npos) << s;
  std::string bad = chi_test::WriteTempFile("badhosts", "node[3-1]\n");
  ConfigurationManager malformed;
  s = malformed.LoadText("network:\n  hostfile: " + bad + "\n");
  EXPECT_EQ(s.code(), hshm::StatusCode::kInvalidArgument) << s;
  unlink(bad.c_str());
  // A host ssh would read as an option.
  std::string dash =
      chi_test::WriteTempFile("dashhosts", "127.0.0.1\n-oProxyCommand=x\n");
  ConfigurationManager option;
  s = option.LoadText("network:\n  hostfile: " + dash + "\n");
  EXPECT_EQ(s.code(), hshm::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("cannot begin with '-'"), std::string::npos) << s;
  unlink(dash.c_str());
  // More nodes than the admin pool has containers: the hostfile is named.
  std::string many =
      chi_test::WriteTempFile("manyhosts", "10.0.[0-15].[0-255]\n127.0.0.1\n");
  ConfigurationManager too_many;
  s = too_many.LoadText("network:\n  hostfile: " + many + "\n");
  EXPECT_EQ(s.code(), hshm::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find(many), std::string::npos) << s;
  EXPECT_NE(s.message().find("4097 hosts"), std::string::npos) << s;
  unlink(many.c_str());
  // A host listed twice (here once through a range): that node could never
  // start, as every node uses the same port.
  std::string twice =
      chi_test::WriteTempFile("twicehosts", "127.0.0.[2-3]\n127.0.0.2\n");
  ConfigurationManager dup;
  s = dup.LoadText("network:\n  hostfile: " + twice + "\n");
  EXPECT_EQ(s.code(), hshm::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("lists 127.0.0.2 twice (entries 1 and 3)"),
            std::string::npos)
      << s;
  unlink(twice.c_str());
}

// CHI_NODE_ID must name a hostfile entry; without a hostfile the only one
// is 127.0.0.1 (node 1).
TEST(ConfigTest, NodeIdMustNameAnEntry) {
  std::string hf = chi_test::WriteTempFile("hosts", "127.0.0.[2-3]\n");
  setenv("CHI_NODE_ID", "2", 1);
  ConfigurationManager two;
  EXPECT_TRUE(two.LoadText("network:\n  hostfile: " + hf + "\n").ok());
  EXPECT_EQ(two.config().node_id_, 2u);
  setenv("CHI_NODE_ID", "3", 1);
  ConfigurationManager three;
  hshm::Status s = three.LoadText("network:\n  hostfile: " + hf + "\n");
  EXPECT_EQ(s.code(), hshm::StatusCode::kInvalidArgument) << s;
  ConfigurationManager none;
  s = none.LoadText("network:\n  port: 1234\n");
  EXPECT_EQ(s.code(), hshm::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("none is configured"), std::string::npos) << s;
  setenv("CHI_NODE_ID", "1", 1);
  ConfigurationManager one;
  EXPECT_TRUE(one.LoadText("network:\n  port: 1234\n").ok());
  unsetenv("CHI_NODE_ID");
  unlink(hf.c_str());
}

TEST(ConfigTest, ServerConfEnvironment) {
  std::string path =
      chi_test::WriteTempFile("c.yaml", "network:\n  port: 1234\n");
  setenv("CHI_SERVER_CONF", path.c_str(), 1);
  ConfigurationManager cm;
  ASSERT_TRUE(cm.Load().ok());
  EXPECT_EQ(cm.config().port_, 1234u);
  unlink(path.c_str());
  ConfigurationManager gone;
  hshm::Status s = gone.Load();
  EXPECT_EQ(s.code(), hshm::StatusCode::kNotFound) << s;
  EXPECT_NE(s.message().find(path), std::string::npos) << s;
  unsetenv("CHI_SERVER_CONF");
}

}  // namespace
