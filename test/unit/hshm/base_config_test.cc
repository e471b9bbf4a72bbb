#include "hermes_shm/config/base_config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using hshm::Status;
using hshm::StatusCode;
using hshm::u32;
using hshm::u64;

/** The embedded defaults of TestConfig. */
const char *const kDefaultYaml = R"(
# Defaults of the test configuration.
name: chimaera
port: 8080
verbose: false
queue_size: 64k
ratio: 0.5
hosts: [localhost]
lanes: [1, 2]
server:
  threads: 4
)";

/** A small configuration with a nested section, as a real subclass would
 * write one. */
class TestConfig : public hshm::BaseConfig {
 public:
  std::string name_;
  u32 port_ = 0;
  bool verbose_ = true;
  u64 queue_size_ = 0;
  double ratio_ = 0;
  std::vector<std::string> hosts_;
  std::vector<int> lanes_;
  int threads_ = 0;
  int default_loads_ = 0;
  std::string default_yaml_ = kDefaultYaml;

 protected:
  /** Loads default_yaml_ (which a test may break on purpose). */
  Status LoadDefault() override {
    ++default_loads_;
    return ParseYamlText(default_yaml_);
  }

  /** Reads every known key; rejects unknown ones. */
  Status ParseYAML(const YAML::Node &node) override {
    HSHM_RETURN_IF_ERROR(CheckKeys(node,
                                   {"name", "port", "verbose", "queue_size",
                                    "ratio", "hosts", "lanes", "server"},
                                   "test config"));
    HSHM_RETURN_IF_ERROR(ReadScalar(node, "name", &name_));
    HSHM_RETURN_IF_ERROR(ReadScalar(node, "port", &port_));
    HSHM_RETURN_IF_ERROR(ReadScalar(node, "verbose", &verbose_));
    HSHM_RETURN_IF_ERROR(ReadSize(node, "queue_size", &queue_size_));
    HSHM_RETURN_IF_ERROR(ReadScalar(node, "ratio", &ratio_));
    HSHM_RETURN_IF_ERROR(ReadVector(node, "hosts", &hosts_));
    HSHM_RETURN_IF_ERROR(ReadVector(node, "lanes", &lanes_));
    const YAML::Node server = node["server"];
    HSHM_RETURN_IF_ERROR(CheckKeys(server, {"threads"}, "server"));
    HSHM_RETURN_IF_ERROR(ReadScalar(server, "threads", &threads_));
    return Status::Ok();
  }
};

/** A configuration whose ParseYAML uses yaml-cpp directly and so may throw. */
class ThrowingConfig : public hshm::BaseConfig {
 public:
  int value_ = 0;

 protected:
  Status LoadDefault() override { return Status::Ok(); }
  Status ParseYAML(const YAML::Node &node) override {
    if (node["boom"]) throw std::runtime_error("custom failure");
    value_ = node["value"].as<int>();
    return Status::Ok();
  }
};

/** A configuration whose ParseYAML fails with its own status. */
class FailingConfig : public hshm::BaseConfig {
 protected:
  Status LoadDefault() override { return Status::Ok(); }
  Status ParseYAML(const YAML::Node &) override {
    return Status::Unimplemented("not today");
  }
};

/** Exposes the protected static helpers for direct tests. */
class Helpers : public hshm::BaseConfig {
 public:
  using hshm::BaseConfig::CheckKeys;
  using hshm::BaseConfig::ReadScalar;
  using hshm::BaseConfig::ReadSize;
  using hshm::BaseConfig::ReadVector;

 protected:
  Status LoadDefault() override { return Status::Ok(); }
  Status ParseYAML(const YAML::Node &) override { return Status::Ok(); }
};

/** Returns a path under /tmp that no other test or process uses. */
std::string UniqueTmpPath(const std::string &tag) {
  static std::atomic<int> counter{0};
  return "/tmp/chi_base_config_test_" + std::to_string(getpid()) + "_" +
         std::to_string(counter++) + "_" + tag;
}

/** A file holding given text; removed when the object goes away. */
class TempFile {
 public:
  /** Writes `text` to a fresh unique path. */
  TempFile(const std::string &tag, const std::string &text)
      : path_(UniqueTmpPath(tag)) {
    std::ofstream out(path_, std::ios::binary);
    out << text;
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string &path() const { return path_; }

 private:
  std::string path_;
};

/** Expects `st` to be InvalidArgument with a message containing `needle`. */
void ExpectInvalid(const Status &st, const std::string &needle) {
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find(needle), std::string::npos) << st;
}

/** Expects `cfg` to hold exactly the values of kDefaultYaml. */
void ExpectDefaults(const TestConfig &cfg) {
  EXPECT_EQ(cfg.name_, "chimaera");
  EXPECT_EQ(cfg.port_, 8080u);
  EXPECT_FALSE(cfg.verbose_);
  EXPECT_EQ(cfg.queue_size_, 64u * 1024);
  EXPECT_DOUBLE_EQ(cfg.ratio_, 0.5);
  EXPECT_EQ(cfg.hosts_, std::vector<std::string>({"localhost"}));
  EXPECT_EQ(cfg.lanes_, std::vector<int>({1, 2}));
  EXPECT_EQ(cfg.threads_, 4);
}

TEST(BaseConfigTest, EmptyTextGivesDefaults) {
  TestConfig cfg;
  ASSERT_TRUE(cfg.LoadText("").ok());
  EXPECT_EQ(cfg.default_loads_, 1);
  ExpectDefaults(cfg);
}

TEST(BaseConfigTest, CommentsAndNullDocumentGiveDefaults) {
  for (const char *text : {"# nothing here\n", "~", "null\n", "---\n"}) {
    TestConfig cfg;
    Status st = cfg.LoadText(text);
    ASSERT_TRUE(st.ok()) << text << ": " << st;
    ExpectDefaults(cfg);
  }
}

TEST(BaseConfigTest, OverridesOnTopOfDefaults) {
  TestConfig cfg;
  Status st = cfg.LoadText(
      "port: 9000\n"
      "verbose: true\n"
      "queue_size: 4g\n"
      "hosts: [a, b, c]\n"
      "server:\n"
      "  threads: 16\n");
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(cfg.name_, "chimaera");
  EXPECT_EQ(cfg.port_, 9000u);
  EXPECT_TRUE(cfg.verbose_);
  EXPECT_EQ(cfg.queue_size_, 4ULL << 30);
  EXPECT_DOUBLE_EQ(cfg.ratio_, 0.5);
  EXPECT_EQ(cfg.hosts_, std::vector<std::string>({"a", "b", "c"}));
  EXPECT_EQ(cfg.lanes_, std::vector<int>({1, 2}));
  EXPECT_EQ(cfg.threads_, 16);
}

TEST(BaseConfigTest, ReloadResetsToDefaults) {
  TestConfig cfg;
  ASSERT_TRUE(cfg.LoadText("port: 1\nname: x").ok());
  EXPECT_EQ(cfg.port_, 1u);
  ASSERT_TRUE(cfg.LoadText("verbose: true").ok());
  EXPECT_EQ(cfg.default_loads_, 2);
  EXPECT_EQ(cfg.port_, 8080u);
  EXPECT_EQ(cfg.name_, "chimaera");
  EXPECT_TRUE(cfg.verbose_);
}

TEST(BaseConfigTest, WithoutDefaultsKeepsCurrentValues) {
  TestConfig cfg;
  cfg.name_ = "mine";
  cfg.port_ = 7;
  Status st = cfg.LoadText("port: 9", /*with_default=*/false);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(cfg.default_loads_, 0);
  EXPECT_EQ(cfg.name_, "mine");
  EXPECT_EQ(cfg.port_, 9u);
  EXPECT_TRUE(cfg.hosts_.empty());
}

TEST(BaseConfigTest, SizeValues) {
  struct Case {
    const char *yaml;
    u64 expected;
  };
  for (const Case &c :
       {Case{"queue_size: 1024", 1024}, Case{"queue_size: 64KB", 64 * 1024},
        Case{"queue_size: \"2GiB\"", 2ULL << 30},
        Case{"queue_size: 1.5m", 3ULL << 19}}) {
    TestConfig cfg;
    Status st = cfg.LoadText(c.yaml);
    ASSERT_TRUE(st.ok()) << c.yaml << ": " << st;
    EXPECT_EQ(cfg.queue_size_, c.expected) << c.yaml;
  }
}

TEST(BaseConfigTest, BadSizeNamesKey) {
  for (const char *yaml :
       {"queue_size: lots", "queue_size: -1", "queue_size: 99999999999t",
        "queue_size: [1]", "queue_size: {a: 1}", "queue_size:"}) {
    TestConfig cfg;
    Status st = cfg.LoadText(yaml);
    ExpectInvalid(st, "key 'queue_size'");
  }
}

TEST(BaseConfigTest, UnknownKeysRejected) {
  TestConfig cfg;
  ExpectInvalid(cfg.LoadText("prot: 9000"),
                "unknown key 'prot' in test config");
  ExpectInvalid(cfg.LoadText("server:\n  thread: 2\n"),
                "unknown key 'thread' in server");
  ExpectInvalid(cfg.LoadText("? [a, b]\n: 1\n"), "unknown key");
}

// A key given twice is an error, not the first one silently (yaml-cpp
// keeps both and a lookup finds the first); so is a second YAML document,
// which was ignored unread.
TEST(BaseConfigTest, RepeatedKeysAndDocumentsRejected) {
  TestConfig cfg;
  ExpectInvalid(cfg.LoadText("port: 9000\nport: 9001\n"),
                "key 'port' given twice in test config");
  ExpectInvalid(cfg.LoadText("server:\n  threads: 2\n  threads: 3\n"),
                "key 'threads' given twice in server");
  ExpectInvalid(cfg.LoadText("port: 9000\n---\nport: [1]\n"),
                "2 YAML documents");
  // One document, with or without its markers, is fine.
  ASSERT_TRUE(cfg.LoadText("---\nport: 9002\n...\n").ok());
  EXPECT_EQ(cfg.port_, 9002u);
  // A stream on which YAML::LoadAll never returns (yaml-cpp 0.7 reports
  // documents without consuming input): the check looks at three at most,
  // so this returns (the CI's config fuzzer hung on such an input). yaml-cpp
  // reads it as no document: the defaults.
  Status st = cfg.LoadText(",");
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(cfg.port_, 8080u);
}

TEST(BaseConfigTest, WrongTypesRejected) {
  struct Case {
    const char *yaml;
    const char *needle;
  };
  const std::vector<Case> cases = {
      {"port: abc", "key 'port': expected non-negative integer, got 'abc'"},
      {"port: -1", "key 'port': expected non-negative integer, got '-1'"},
      {"port: 99999999999", "key 'port'"},
      {"port: 1.5", "got '1.5'"},
      {"port: [1]",
       "key 'port': expected non-negative integer, got a sequence"},
      {"port:", "got null"},
      {"verbose: maybe", "key 'verbose': expected boolean, got 'maybe'"},
      {"ratio: half", "key 'ratio': expected number, got 'half'"},
      {"name: {a: 1}", "key 'name': expected string, got a map"},
      {"hosts: node1", "key 'hosts': expected a sequence of string"},
      {"hosts: [a, [b]]", "key 'hosts' item 1: expected string"},
      {"lanes: [1, x]", "key 'lanes' item 1: expected integer, got 'x'"},
      {"server: 5", "expected a map in server"},
      {"server:\n  threads: many", "key 'threads': expected integer"},
  };
  for (const Case &c : cases) {
    TestConfig cfg;
    Status st = cfg.LoadText(c.yaml);
    ExpectInvalid(st, c.needle);
  }
}

TEST(BaseConfigTest, NonMapRootRejected) {
  TestConfig cfg;
  ExpectInvalid(cfg.LoadText("just a string"), "expected a map in test config");
  ExpectInvalid(cfg.LoadText("- a\n- b\n"), "expected a map in test config");
}

TEST(BaseConfigTest, SyntaxErrorsCarryLocation) {
  for (const char *yaml :
       {"port: [1, 2", "a: b: c", "name: \"unterminated", "{a: 1"}) {
    TestConfig cfg;
    Status st = cfg.LoadText(yaml);
    ExpectInvalid(st, "YAML syntax error");
    EXPECT_NE(st.message().find("line"), std::string::npos) << st;
  }
}

TEST(BaseConfigTest, ExceptionsFromParseYamlBecomeStatus) {
  ThrowingConfig cfg;
  ASSERT_TRUE(cfg.LoadText("value: 3").ok());
  EXPECT_EQ(cfg.value_, 3);
  Status st = cfg.LoadText("value: three");
  ExpectInvalid(st, "bad conversion");
  EXPECT_NE(st.message().find("line"), std::string::npos) << st;
  ExpectInvalid(cfg.LoadText("other: 1"), "invalid configuration");
  ExpectInvalid(cfg.LoadText("boom: 1"), "custom failure");
}

TEST(BaseConfigTest, ParseYamlStatusIsPropagated) {
  FailingConfig cfg;
  Status st = cfg.LoadText("a: 1");
  EXPECT_EQ(st.code(), StatusCode::kUnimplemented);
  EXPECT_EQ(st.message(), "not today");
}

TEST(BaseConfigTest, BadDefaultsReported) {
  TestConfig cfg;
  cfg.default_yaml_ = "port: [";
  ExpectInvalid(cfg.LoadText("port: 1"), "YAML syntax error");
  cfg.default_yaml_ = "bogus: 1";
  ExpectInvalid(cfg.LoadText(""), "unknown key 'bogus'");
  // Without defaults the broken default document is never read.
  EXPECT_TRUE(cfg.LoadText("port: 1", false).ok());
}

TEST(BaseConfigTest, LoadFile) {
  TempFile file("cfg.yaml", "name: from_file\nlanes: [5]\n");
  TestConfig cfg;
  Status st = cfg.LoadFile(file.path());
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(cfg.name_, "from_file");
  EXPECT_EQ(cfg.lanes_, std::vector<int>({5}));
  EXPECT_EQ(cfg.port_, 8080u);
  EXPECT_EQ(cfg.default_loads_, 1);
}

TEST(BaseConfigTest, LoadFileWithoutDefaults) {
  TempFile file("cfg_nodef.yaml", "port: 5\n");
  TestConfig cfg;
  ASSERT_TRUE(cfg.LoadFile(file.path(), false).ok());
  EXPECT_EQ(cfg.default_loads_, 0);
  EXPECT_EQ(cfg.port_, 5u);
  EXPECT_TRUE(cfg.name_.empty());
}

TEST(BaseConfigTest, LoadFileExpandsPath) {
  TempFile file("cfg_env.yaml", "port: 1234\n");
  const std::string &path = file.path();
  size_t slash = path.rfind('/');
  setenv("CHI_BCT_DIR", path.substr(0, slash).c_str(), 1);
  TestConfig cfg;
  Status st = cfg.LoadFile("$CHI_BCT_DIR" + path.substr(slash));
  unsetenv("CHI_BCT_DIR");
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(cfg.port_, 1234u);
}

TEST(BaseConfigTest, LoadFileMissing) {
  std::string missing = UniqueTmpPath("missing.yaml");
  TestConfig cfg;
  Status st = cfg.LoadFile(missing);
  EXPECT_EQ(st.code(), StatusCode::kNotFound) << st;
  EXPECT_NE(st.message().find(missing), std::string::npos) << st;
  EXPECT_EQ(cfg.default_loads_, 0);
}

TEST(BaseConfigTest, LoadFileDirectory) {
  TestConfig cfg;
  Status st = cfg.LoadFile("/tmp");
  EXPECT_EQ(st.code(), StatusCode::kIoError) << st;
  EXPECT_NE(st.message().find("/tmp"), std::string::npos) << st;
}

TEST(BaseConfigTest, LoadFileErrorsNamePath) {
  TempFile bad_syntax("bad_syntax.yaml", "port: [1,\n");
  TestConfig cfg;
  Status st = cfg.LoadFile(bad_syntax.path());
  ExpectInvalid(st, bad_syntax.path());
  EXPECT_NE(st.message().find("YAML syntax error"), std::string::npos) << st;

  TempFile bad_key("bad_key.yaml", "color: blue\n");
  st = cfg.LoadFile(bad_key.path());
  ExpectInvalid(st, bad_key.path());
  EXPECT_NE(st.message().find("unknown key 'color'"), std::string::npos) << st;
}

TEST(BaseConfigTest, ReadScalarHelper) {
  YAML::Node root = YAML::Load("a: 5\nb: text\nn: ~\n");
  int value = -1;
  ASSERT_TRUE(Helpers::ReadScalar(root, "a", &value).ok());
  EXPECT_EQ(value, 5);
  // Absent keys, null and undefined parents leave the value alone.
  value = -1;
  EXPECT_TRUE(Helpers::ReadScalar(root, "missing", &value).ok());
  EXPECT_EQ(value, -1);
  EXPECT_TRUE(Helpers::ReadScalar(YAML::Node(), "a", &value).ok());
  const YAML::Node &const_root = root;
  EXPECT_TRUE(Helpers::ReadScalar(const_root["nothing"], "a", &value).ok());
  EXPECT_TRUE(Helpers::ReadScalar(const_root["n"], "a", &value).ok());
  EXPECT_EQ(value, -1);
  // Wrong type leaves the value alone too.
  Status st = Helpers::ReadScalar(root, "b", &value);
  ExpectInvalid(st, "key 'b': expected integer, got 'text'");
  EXPECT_EQ(value, -1);
  // A scalar parent cannot be indexed.
  ExpectInvalid(Helpers::ReadScalar(const_root["b"], "x", &value), "key 'x'");
  std::string text;
  ASSERT_TRUE(Helpers::ReadScalar(root, "a", &text).ok());
  EXPECT_EQ(text, "5");
  // A dotted key looks up its last part and names the whole in errors.
  value = -1;
  ASSERT_TRUE(Helpers::ReadScalar(root, "section.a", &value).ok());
  EXPECT_EQ(value, 5);
  ExpectInvalid(Helpers::ReadScalar(root, "section.b", &value),
                "key 'section.b': expected integer, got 'text'");
  std::vector<int> list;
  ExpectInvalid(Helpers::ReadVector(root, "section.b", &list),
                "key 'section.b': expected a sequence");
  u64 size = 0;
  ExpectInvalid(Helpers::ReadSize(root, "section.b", &size), "key 'section.b'");
}

TEST(BaseConfigTest, ReadScalarIntegerRanges) {
  YAML::Node root =
      YAML::Load("big: 300\nneg: -5\nhuge: 99999999999999999999\n");
  int i = 0;
  ASSERT_TRUE(Helpers::ReadScalar(root, "neg", &i).ok());
  EXPECT_EQ(i, -5);
  u64 u = 0;
  ExpectInvalid(Helpers::ReadScalar(root, "neg", &u), "got '-5'");
  ExpectInvalid(Helpers::ReadScalar(root, "huge", &u), "key 'huge'");
  hshm::i16 s16 = 0;
  ASSERT_TRUE(Helpers::ReadScalar(root, "big", &s16).ok());
  EXPECT_EQ(s16, 300);
  hshm::u16 u16 = 0;
  ExpectInvalid(Helpers::ReadScalar(root, "huge", &u16), "key 'huge'");
}

TEST(BaseConfigTest, ReadSizeHelper) {
  YAML::Node root = YAML::Load("s: 2k\ni: 77\nbad: 2q\n");
  u64 size = 1;
  ASSERT_TRUE(Helpers::ReadSize(root, "s", &size).ok());
  EXPECT_EQ(size, 2048u);
  ASSERT_TRUE(Helpers::ReadSize(root, "i", &size).ok());
  EXPECT_EQ(size, 77u);
  ASSERT_TRUE(Helpers::ReadSize(root, "absent", &size).ok());
  EXPECT_EQ(size, 77u);
  Status st = Helpers::ReadSize(root, "bad", &size);
  ExpectInvalid(st, "key 'bad'");
  EXPECT_NE(st.message().find("'2q'"), std::string::npos) << st;
  EXPECT_EQ(size, 77u);
}

TEST(BaseConfigTest, ReadVectorHelper) {
  YAML::Node root = YAML::Load("v: [3, 4]\nempty: []\nmixed: [1, a]\n");
  std::vector<u32> out = {9};
  ASSERT_TRUE(Helpers::ReadVector(root, "v", &out).ok());
  EXPECT_EQ(out, std::vector<u32>({3, 4}));
  ASSERT_TRUE(Helpers::ReadVector(root, "absent", &out).ok());
  EXPECT_EQ(out, std::vector<u32>({3, 4}));
  // A failed read leaves the previous contents.
  ExpectInvalid(Helpers::ReadVector(root, "mixed", &out), "key 'mixed' item 1");
  EXPECT_EQ(out, std::vector<u32>({3, 4}));
  ASSERT_TRUE(Helpers::ReadVector(root, "empty", &out).ok());
  EXPECT_TRUE(out.empty());
  std::vector<std::string> strings;
  ASSERT_TRUE(Helpers::ReadVector(root, "mixed", &strings).ok());
  EXPECT_EQ(strings, std::vector<std::string>({"1", "a"}));
}

TEST(BaseConfigTest, CheckKeysHelper) {
  YAML::Node root = YAML::Load("a: 1\nb: 2\n");
  EXPECT_TRUE(Helpers::CheckKeys(root, {"a", "b", "c"}, "root").ok());
  ExpectInvalid(Helpers::CheckKeys(root, {"a"}, "root"),
                "unknown key 'b' in root");
  ExpectInvalid(Helpers::CheckKeys(root, {}, "root"),
                "unknown key 'a' in root");
  EXPECT_TRUE(Helpers::CheckKeys(YAML::Node(), {}, "null").ok());
  EXPECT_TRUE(Helpers::CheckKeys(YAML::Load("~"), {}, "null").ok());
  const YAML::Node &const_root = root;
  EXPECT_TRUE(Helpers::CheckKeys(const_root["zzz"], {}, "undefined").ok());
  ExpectInvalid(Helpers::CheckKeys(YAML::Load("scalar"), {"a"}, "where"),
                "where");
  ExpectInvalid(Helpers::CheckKeys(YAML::Load("[1, 2]"), {"a"}, "seq"),
                "expected a map in seq");
}

}  // namespace
