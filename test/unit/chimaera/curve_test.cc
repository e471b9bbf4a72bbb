// ZeroMQ CURVE between runtimes: the network.curve keys, the key file the
// runtime reads at start, chimaera_keygen, and clusters on 127.0.0.x whose
// nodes share (or do not share) the cluster key pair.
#include "hermes_shm/lightbeam/curve.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "chimaera/chimaera.h"
#include "chimaera/config_manager.h"
#include "runtime_fixture.h"

namespace {

using chi::ConfigurationManager;
using chi::DomainQuery;
using hshm::StatusCode;

constexpr char kWorkers[] =
    "workers:\n  low_latency: 1\n  high_latency: 1\n  reinforcement: 0\n";

/** A path for a key file (the file itself is not made). */
std::string KeyPath(const std::string &tag) {
  std::string p = chi_test::WriteTempFile(tag, "");
  unlink(p.c_str());
  return p;
}

/** Runs chimaera_keygen with `args`; returns its exit code, output in *out. */
int Keygen(const std::vector<std::string> &args, std::string *out) {
  std::vector<std::string> argv = {chi_test::BinDir() + "/chimaera_keygen"};
  argv.insert(argv.end(), args.begin(), args.end());
  return chi_test::RunProgram(argv, "", out, 10);
}

/** Writes a fresh key file at `path` with chimaera_keygen. */
void MakeKeyFile(const std::string &path) {
  std::string out;
  ASSERT_EQ(Keygen({"-o", path}, &out), 0) << out;
}

/** The network: lines that turn CURVE on with `key_file`. */
std::string CurveYaml(const std::string &key_file) {
  return "  curve: true\n  curve_key_file: " + key_file + "\n";
}

/** Reads the file at `path`. */
std::string ReadFile(const std::string &path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(CurveConfigTest, KeysAreParsedAndValidated) {
  ConfigurationManager def;
  ASSERT_TRUE(def.LoadText("").ok());
  EXPECT_FALSE(def.config().curve_);
  EXPECT_TRUE(def.config().curve_key_file_.empty());
  EXPECT_TRUE(def.LoadCurveKeys().ok());  // off: nothing to read
  EXPECT_TRUE(def.config().curve_secret_key_.empty());

  // curve on needs a key file; bad values name the key.
  for (const char *yaml : {"network:\n  curve: true\n",
                           "network:\n  curve: true\n"
                           "  curve_key_file: \"\"\n"}) {
    ConfigurationManager cm;
    hshm::Status s = cm.LoadText(yaml);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("curve_key_file"), std::string::npos) << s;
  }
  ConfigurationManager bad_bool;
  hshm::Status s = bad_bool.LoadText("network:\n  curve: maybe\n");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("curve"), std::string::npos) << s;
  ConfigurationManager typo;
  s = typo.LoadText("network:\n  curve_keyfile: /x\n");
  EXPECT_NE(s.message().find("curve_keyfile"), std::string::npos) << s;

  // ${VAR} is expanded like the other paths.
  const std::string key = KeyPath("cluster.key");
  const std::string dir = key.substr(0, key.rfind('/'));
  const std::string name = key.substr(key.rfind('/') + 1);
  setenv("CHI_CURVE_TEST_DIR", dir.c_str(), 1);
  ConfigurationManager cm;
  ASSERT_TRUE(cm.LoadText("network:\n  curve: true\n  curve_key_file: "
                          "${CHI_CURVE_TEST_DIR}/" +
                          name + "\n")
                  .ok());
  unsetenv("CHI_CURVE_TEST_DIR");
  EXPECT_TRUE(cm.config().curve_);
  EXPECT_EQ(cm.config().curve_key_file_, key);

  // The key file: missing, garbage, too open, then good. Errors name it.
  s = cm.LoadCurveKeys();
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s;
  EXPECT_NE(s.message().find(key), std::string::npos) << s;
  EXPECT_NE(s.message().find("curve_key_file"), std::string::npos) << s;
  { std::ofstream(key) << "public_key: not a key\nsecret_key: nor this\n"; }
  chmod(key.c_str(), 0600);
  s = cm.LoadCurveKeys();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find(key), std::string::npos) << s;
  unlink(key.c_str());
  MakeKeyFile(key);
  chmod(key.c_str(), 0604);
  s = cm.LoadCurveKeys();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("chmod 600"), std::string::npos) << s;
  chmod(key.c_str(), 0600);
  ASSERT_TRUE(cm.LoadCurveKeys().ok());
  auto direct = hshm::lbm::ReadCurveKeyFile(key);
  ASSERT_TRUE(direct.ok());
  EXPECT_EQ(cm.config().curve_public_key_, direct->public_key);
  EXPECT_EQ(cm.config().curve_secret_key_, direct->secret_key);
  unlink(key.c_str());
}

TEST(CurveToolTest, KeygenWritesPrivateFiles) {
  const std::string key = KeyPath("tool.key");
  std::string out;
  ASSERT_EQ(Keygen({"-o", key}, &out), 0) << out;
  struct stat st;
  ASSERT_EQ(stat(key.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  auto keys = hshm::lbm::ReadCurveKeyFile(key);
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_NE(out.find(keys->public_key), std::string::npos) << out;
  EXPECT_EQ(out.find(keys->secret_key), std::string::npos) << out;
  // No silent replacement; --force replaces; --check validates.
  EXPECT_EQ(Keygen({"-o", key}, &out), 1);
  EXPECT_NE(out.find("exists"), std::string::npos) << out;
  EXPECT_EQ(ReadFile(key), hshm::lbm::FormatCurveKeyFile(*keys));
  ASSERT_EQ(Keygen({"-o", key, "--force"}, &out), 0) << out;
  auto replaced = hshm::lbm::ReadCurveKeyFile(key);
  ASSERT_TRUE(replaced.ok());
  EXPECT_NE(replaced->secret_key, keys->secret_key);
  ASSERT_EQ(Keygen({"--check", key}, &out), 0) << out;
  EXPECT_NE(out.find(replaced->public_key), std::string::npos) << out;
  { std::ofstream(key) << "garbage\n"; }
  EXPECT_EQ(Keygen({"--check", key}, &out), 1);
  EXPECT_NE(out.find(key), std::string::npos) << out;
  EXPECT_NE(Keygen({}, &out), 0);
  unlink(key.c_str());
}

/** A one-node runtime config with CURVE on and `key_file`. */
std::string OneNodeYaml(int port, const std::string &key_file) {
  return "network:\n  port: " + std::to_string(port) + "\n" +
         CurveYaml(key_file) +
         "shm:\n  main: 16m\n  client_data: 16m\n  runtime_data: 16m\n" +
         kWorkers;
}

TEST(CurveRuntimeTest, BadKeyFileStopsTheRuntime) {
  const std::string key = KeyPath("rt.key");
  {
    int port = chi_test::FreePort();
    chi_test::RuntimeProcess rt(port, OneNodeYaml(port, key));
    hshm::Status s = rt.Start();
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find(key), std::string::npos) << s;
    EXPECT_NE(s.message().find("no such file"), std::string::npos) << s;
    EXPECT_FALSE(rt.Running());
  }
  { std::ofstream(key) << "public_key: 0123\n"; }
  chmod(key.c_str(), 0600);
  {
    int port = chi_test::FreePort();
    chi_test::RuntimeProcess rt(port, OneNodeYaml(port, key));
    hshm::Status s = rt.Start();
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find(key), std::string::npos) << s;
    EXPECT_NE(s.message().find("no secret_key"), std::string::npos) << s;
  }
  unlink(key.c_str());
}

// The acceptance path: a 2-node cluster sharing one key runs remote tasks
// both ways and says that CURVE is on.
TEST(CurveRuntimeTest, TwoNodesWithTheClusterKeyRunRemoteTasks) {
  const std::string key = KeyPath("cluster.key");
  MakeKeyFile(key);
  chi_test::LocalCluster cluster(2, kWorkers, CurveYaml(key));
  ASSERT_TRUE(cluster.Start().ok()) << cluster.Logs();
  for (int from : {1, 2}) {
    ASSERT_TRUE(cluster.Connect(from).ok());
    chi::admin::Client admin;
    // Admin container c lives on node c + 1: the other node's one.
    const chi::u32 other = from == 1 ? 1 : 0;
    for (chi::u64 v : {7ull, 123456789ull}) {
      auto r = admin.Echo(v, DomainQuery::GetGlobalId(other));
      ASSERT_TRUE(r.ok()) << r.status() << cluster.Logs();
      EXPECT_EQ(*r, v);
    }
    auto stat = admin.Stat();
    ASSERT_TRUE(stat.ok()) << stat.status();
    EXPECT_NE(stat->find("CURVE on, failed handshakes 0"), std::string::npos)
        << *stat;
  }
  EXPECT_EQ(cluster.StopAll().ToString(), "OK") << cluster.Logs();
  unlink(key.c_str());
}

// A node holding another key never joins: tasks for it fail with
// Unavailable within the liveness timeout, and its peer logs the refusals.
TEST(CurveRuntimeTest, NodeWithAnotherKeyIsDead) {
  const std::string key = KeyPath("cluster.key");
  const std::string other = KeyPath("other.key");
  MakeKeyFile(key);
  MakeKeyFile(other);
  chi_test::LocalCluster cluster(2, kWorkers, CurveYaml(key));
  // Node 2 reads the other key file.
  const std::string conf2 = cluster.node(2).config_path();
  std::string yaml = ReadFile(conf2);
  size_t at = yaml.find(key);
  ASSERT_NE(at, std::string::npos);
  yaml.replace(at, key.size(), other);
  { std::ofstream(conf2) << yaml; }
  ASSERT_TRUE(cluster.Start().ok()) << cluster.Logs();
  ASSERT_TRUE(cluster.Connect(1).ok());
  chi::u64 start = hshm::NowNs();
  auto r = chi::admin::Client().Echo(5, DomainQuery::GetGlobalId(1));
  double waited_ms = (hshm::NowNs() - start) / 1e6;
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status();
  EXPECT_LT(waited_ms, chi_test::DeadAfterMs() + 3000);
  // Node 1 still serves itself.
  auto local = chi::admin::Client().Echo(6, DomainQuery::GetGlobalId(0));
  ASSERT_TRUE(local.ok()) << local.status();
  std::string log;
  for (int i = 0; i < 100; ++i) {
    log = cluster.node(1).Log();
    if (log.find("refused a connection") != std::string::npos) break;
    usleep(50000);
  }
  EXPECT_NE(log.find("refused a connection"), std::string::npos) << log;
  EXPECT_EQ(cluster.StopAll().ToString(), "OK") << cluster.Logs();
  unlink(key.c_str());
  unlink(other.c_str());
}

}  // namespace
