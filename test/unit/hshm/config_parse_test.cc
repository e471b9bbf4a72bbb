#include "hermes_shm/config/config_parse.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace {

using hshm::ConfigParse;
using hshm::StatusCode;
using hshm::u64;
using Hosts = std::vector<std::string>;

constexpr u64 kKiB = 1024ULL;
constexpr u64 kMiB = kKiB * 1024;
constexpr u64 kGiB = kMiB * 1024;
constexpr u64 kTiB = kGiB * 1024;

/** Returns a path under /tmp that no other test or process uses. */
std::string UniqueTmpPath(const std::string &tag) {
  static std::atomic<int> counter{0};
  return "/tmp/chi_config_parse_test_" + std::to_string(getpid()) + "_" +
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

/** Expects ParseSize(text) to succeed with `expected`. */
void ExpectSize(const std::string &text, u64 expected) {
  auto r = ConfigParse::ParseSize(text);
  ASSERT_TRUE(r.ok()) << "'" << text << "': " << r.status();
  EXPECT_EQ(*r, expected) << "'" << text << "'";
}

/** Expects ParseSize(text) to fail with InvalidArgument quoting the input. */
void ExpectBadSize(const std::string &text) {
  auto r = ConfigParse::ParseSize(text);
  ASSERT_FALSE(r.ok()) << "'" << text << "' parsed as " << *r;
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("'" + text + "'"), std::string::npos)
      << r.status();
}

/** Expects ExpandHostPattern(pattern) to yield `expected`. */
void ExpectHosts(const std::string &pattern, const Hosts &expected) {
  auto r = ConfigParse::ExpandHostPattern(pattern);
  ASSERT_TRUE(r.ok()) << "'" << pattern << "': " << r.status();
  EXPECT_EQ(*r, expected) << "'" << pattern << "'";
}

/** Expects ExpandHostPattern(pattern) to fail with InvalidArgument whose
 * message contains `needle`. */
void ExpectBadPattern(const std::string &pattern, const std::string &needle) {
  auto r = ConfigParse::ExpandHostPattern(pattern);
  ASSERT_FALSE(r.ok()) << "'" << pattern << "' expanded";
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status();
}

TEST(ConfigParseTest, SizePlainBytes) {
  ExpectSize("0", 0);
  ExpectSize("100", 100);
  ExpectSize("100b", 100);
  ExpectSize("100B", 100);
  ExpectSize("18446744073709551615", 18446744073709551615ULL);
}

TEST(ConfigParseTest, SizeSuffixes) {
  ExpectSize("64k", 64 * kKiB);
  ExpectSize("512m", 512 * kMiB);
  ExpectSize("4g", 4 * kGiB);
  ExpectSize("2t", 2 * kTiB);
  ExpectSize("8KB", 8 * kKiB);
  ExpectSize("8kb", 8 * kKiB);
  ExpectSize("8Kb", 8 * kKiB);
  ExpectSize("2GiB", 2 * kGiB);
  ExpectSize("2gib", 2 * kGiB);
  ExpectSize("3MiB", 3 * kMiB);
  ExpectSize("1TB", kTiB);
  ExpectSize("4G", 4 * kGiB);
  ExpectSize("16777215t", 16777215ULL * kTiB);
}

TEST(ConfigParseTest, SizeFractions) {
  ExpectSize("1.5g", kGiB + kGiB / 2);
  ExpectSize("0.5k", 512);
  ExpectSize("1.25m", kMiB + kMiB / 4);
  ExpectSize(".5k", 512);
  ExpectSize("2.k", 2 * kKiB);
  ExpectSize("1.5", 1);     // Rounded down to whole bytes.
  ExpectSize("0.1k", 102);  // 102.4 rounded down.
  ExpectSize("1.000000000000000000000000000001k", kKiB);
  // Just below 2^64: the exact fraction keeps it from overflowing.
  auto r = ConfigParse::ParseSize("16777215.99999999999999999999t");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(*r, 16777215ULL * kTiB);
}

TEST(ConfigParseTest, SizeWhitespace) {
  ExpectSize("  4g", 4 * kGiB);
  ExpectSize("4g  ", 4 * kGiB);
  ExpectSize("\t 512m \n", 512 * kMiB);
  ExpectSize("4 GB", 4 * kGiB);
}

TEST(ConfigParseTest, SizeErrors) {
  ExpectBadSize("");
  ExpectBadSize("   ");
  ExpectBadSize("-1");
  ExpectBadSize("-4g");
  ExpectBadSize(" -4g");
  ExpectBadSize("+4g");
  ExpectBadSize("abc");
  ExpectBadSize("g");
  ExpectBadSize(".");
  ExpectBadSize("4x");
  ExpectBadSize("4gg");
  ExpectBadSize("4gibb");
  ExpectBadSize("4bb");
  ExpectBadSize("4 g b");
  ExpectBadSize("1e3");
  ExpectBadSize("0x10");
  ExpectBadSize("4.5.6g");
  ExpectBadSize("4g extra");
  ExpectBadSize("4,096");
}

TEST(ConfigParseTest, SizeOverflow) {
  ExpectBadSize("99999999999t");
  ExpectBadSize("18446744073709551616");
  ExpectBadSize("99999999999999999999999999");
  ExpectBadSize("16777216t");
  ExpectBadSize("17179869184g");
  ExpectBadSize("18446744073709551615.5k");
  auto r = ConfigParse::ParseSize("99999999999t");
  EXPECT_NE(r.status().message().find("too large"), std::string::npos)
      << r.status();
}

TEST(ConfigParseTest, SizeNegativeMessage) {
  auto r = ConfigParse::ParseSize("-1");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("negative"), std::string::npos)
      << r.status();
}

TEST(ConfigParseTest, ParseNumber) {
  auto r = ConfigParse::ParseNumber("42");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 42u);
  r = ConfigParse::ParseNumber(" 7 \n");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 7u);
  r = ConfigParse::ParseNumber("18446744073709551615");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 18446744073709551615ULL);
  for (const char *bad :
       {"", "  ", "-3", "+3", "4k", "1.0", "abc", "18446744073709551616"}) {
    auto b = ConfigParse::ParseNumber(bad);
    ASSERT_FALSE(b.ok()) << "'" << bad << "'";
    EXPECT_EQ(b.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(b.status().message().find(std::string("'") + bad + "'"),
              std::string::npos)
        << b.status();
  }
}

/** Sets environment variables for one test and unsets them afterwards. */
class ConfigParseEnvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("CHI_CPT_A", "/opt/a", 1);
    setenv("CHI_CPT_B", "bee", 1);
    setenv("CHI_CPT_EMPTY", "", 1);
    unsetenv("CHI_CPT_UNSET");
  }
  void TearDown() override {
    unsetenv("CHI_CPT_A");
    unsetenv("CHI_CPT_B");
    unsetenv("CHI_CPT_EMPTY");
  }
};

TEST_F(ConfigParseEnvTest, ExpandsBracedAndBareVariables) {
  EXPECT_EQ(ConfigParse::ExpandPath("${CHI_CPT_A}/x"), "/opt/a/x");
  EXPECT_EQ(ConfigParse::ExpandPath("$CHI_CPT_A/x"), "/opt/a/x");
  EXPECT_EQ(ConfigParse::ExpandPath("${CHI_CPT_A}${CHI_CPT_B}"), "/opt/abee");
  EXPECT_EQ(ConfigParse::ExpandPath("$CHI_CPT_A$CHI_CPT_B"), "/opt/abee");
  EXPECT_EQ(ConfigParse::ExpandPath("pre-${CHI_CPT_B}-post"), "pre-bee-post");
  EXPECT_EQ(ConfigParse::ExpandPath("${CHI_CPT_B}_x"), "bee_x");
  EXPECT_EQ(ConfigParse::ExpandPath("$CHI_CPT_B.conf"), "bee.conf");
}

TEST_F(ConfigParseEnvTest, BareNameIsGreedy) {
  // "$CHI_CPT_B_x" names the (unset) variable CHI_CPT_B_x.
  EXPECT_EQ(ConfigParse::ExpandPath("$CHI_CPT_B_x/y"), "/y");
}

TEST_F(ConfigParseEnvTest, UnsetAndEmptyExpandToNothing) {
  EXPECT_EQ(ConfigParse::ExpandPath("${CHI_CPT_UNSET}/x"), "/x");
  EXPECT_EQ(ConfigParse::ExpandPath("a$CHI_CPT_UNSET-b"), "a-b");
  EXPECT_EQ(ConfigParse::ExpandPath("a${CHI_CPT_EMPTY}b"), "ab");
}

TEST_F(ConfigParseEnvTest, LeavesOtherTextUntouched) {
  EXPECT_EQ(ConfigParse::ExpandPath(""), "");
  EXPECT_EQ(ConfigParse::ExpandPath("/etc/chimaera.yaml"),
            "/etc/chimaera.yaml");
  EXPECT_EQ(ConfigParse::ExpandPath("~/x"), "~/x");
  EXPECT_EQ(ConfigParse::ExpandPath("cost $5"), "cost $5");
  EXPECT_EQ(ConfigParse::ExpandPath("trailing $"), "trailing $");
  EXPECT_EQ(ConfigParse::ExpandPath("$"), "$");
  EXPECT_EQ(ConfigParse::ExpandPath("$/x"), "$/x");
  EXPECT_EQ(ConfigParse::ExpandPath("${CHI_CPT_A"), "${CHI_CPT_A");
  EXPECT_EQ(ConfigParse::ExpandPath("${}"), "${}");
  EXPECT_EQ(ConfigParse::ExpandPath("${bad name}"), "${bad name}");
  EXPECT_EQ(ConfigParse::ExpandPath("${1X}"), "${1X}");
  EXPECT_EQ(ConfigParse::ExpandPath("$${CHI_CPT_B}"), "$bee");
}

TEST(ConfigParseTest, ReadFile) {
  TempFile file("read", std::string("line1\nline2\0x", 13));
  auto r = ConfigParse::ReadFile(file.path());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, std::string("line1\nline2\0x", 13));

  TempFile empty("empty", "");
  r = ConfigParse::ReadFile(empty.path());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "");
}

TEST(ConfigParseTest, ReadFileErrors) {
  std::string missing = UniqueTmpPath("missing");
  auto r = ConfigParse::ReadFile(missing);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find(missing), std::string::npos);

  r = ConfigParse::ReadFile("/tmp");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kIoError);
  EXPECT_NE(r.status().message().find("/tmp"), std::string::npos);
}

// A hostfile or configuration naming a device or a FIFO is refused at once
// (reading /dev/zero would never end; opening a FIFO would block).
TEST(ConfigParseTest, ReadFileRefusesDevicesFifosAndHugeFiles) {
  auto r = ConfigParse::ReadFile("/dev/zero");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  std::string fifo = UniqueTmpPath("fifo");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  r = ConfigParse::ReadFile(fifo);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  unlink(fifo.c_str());
  std::string big = UniqueTmpPath("big");
  {
    std::ofstream out(big);
    std::string line(1 << 20, '#');
    for (int i = 0; i < 17; ++i) out << line;
  }
  r = ConfigParse::ReadFile(big);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  unlink(big.c_str());
  auto h = ConfigParse::ParseHostfile("/dev/zero");
  EXPECT_FALSE(h.ok());
}

TEST(ConfigParseTest, HostPatternLiteral) {
  ExpectHosts("node1", {"node1"});
  ExpectHosts("  node1.cluster.org \t", {"node1.cluster.org"});
  ExpectHosts("10.0.0.1", {"10.0.0.1"});
}

TEST(ConfigParseTest, HostPatternRanges) {
  ExpectHosts("node[01-04,7]",
              {"node01", "node02", "node03", "node04", "node7"});
  ExpectHosts("node[1-3]", {"node1", "node2", "node3"});
  ExpectHosts("n[01-10]", {"n01", "n02", "n03", "n04", "n05", "n06", "n07",
                           "n08", "n09", "n10"});
  ExpectHosts("n[8-10]", {"n8", "n9", "n10"});
  ExpectHosts("n[001-3]", {"n001", "n002", "n003"});
  ExpectHosts("n[0-2]", {"n0", "n1", "n2"});
  ExpectHosts("n[1-010]",
              {"n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9", "n10"});
  ExpectHosts("n[07]", {"n07"});
  ExpectHosts("n[5,3,5]", {"n5", "n3", "n5"});
  ExpectHosts("n[98-101]", {"n98", "n99", "n100", "n101"});
  ExpectHosts("n[08-11]", {"n08", "n09", "n10", "n11"});
  ExpectHosts("n[3-3]", {"n3"});
  ExpectHosts("n[ 1 - 2 , 4 ]", {"n1", "n2", "n4"});
}

TEST(ConfigParseTest, HostPatternProductAndSuffix) {
  ExpectHosts("r[1-2]n[1-2]", {"r1n1", "r1n2", "r2n1", "r2n2"});
  ExpectHosts("node[1-2]-ib", {"node1-ib", "node2-ib"});
  ExpectHosts("[1-2]", {"1", "2"});
  ExpectHosts("a[1-2]b[3-4]c[5]", {"a1b3c5", "a1b4c5", "a2b3c5", "a2b4c5"});
  ExpectHosts("[1-2]x[01-02]", {"1x01", "1x02", "2x01", "2x02"});
  ExpectHosts("n[1,3][7]", {"n17", "n37"});
}

TEST(ConfigParseTest, HostPatternErrors) {
  ExpectBadPattern("", "empty");
  ExpectBadPattern("   ", "empty");
  ExpectBadPattern("node[1-2", "unbalanced '['");
  ExpectBadPattern("node1-2]", "unbalanced ']'");
  ExpectBadPattern("node[[1-2]]", "unbalanced '['");
  ExpectBadPattern("node[1-2]]", "unbalanced ']'");
  ExpectBadPattern("node[]", "empty range");
  ExpectBadPattern("node[1,]", "empty range");
  ExpectBadPattern("node[,1]", "empty range");
  ExpectBadPattern("node[5-3]", "reversed range '5-3'");
  ExpectBadPattern("node[a-c]", "non-numeric range 'a-c'");
  ExpectBadPattern("node[x]", "non-numeric range 'x'");
  ExpectBadPattern("node[1-]", "non-numeric");
  ExpectBadPattern("node[-2]", "non-numeric");
  ExpectBadPattern("node[1-2-3]", "non-numeric");
  ExpectBadPattern("node[1.5]", "non-numeric");
  ExpectBadPattern("node[99999999999999999999999]", "too large");
  ExpectBadPattern("node1 node2", "whitespace");
  // The message quotes the pattern.
  ExpectBadPattern("node[5-3]", "'node[5-3]'");
}

TEST(ConfigParseTest, HostPatternLimit) {
  auto r = ConfigParse::ExpandHostPattern("n[0-999999]");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), ConfigParse::kMaxHosts);
  EXPECT_EQ(r->front(), "n0");
  EXPECT_EQ(r->back(), "n999999");

  ExpectBadPattern("n[0-1000000]", "more than 1000000");
  ExpectBadPattern("n[0-18446744073709551615]", "more than 1000000");
  ExpectBadPattern("n[0-999999,5]", "more than 1000000");
  ExpectBadPattern("r[0-999]n[0-999]x[0-1]", "more than 1000000");
  // Names longer than 255 bytes are refused before anything is expanded
  // (these would be about 100 GB).
  ExpectBadPattern(std::string(100000, 'a') + "[0-999999]", "longer than 255");
  ExpectBadPattern("n[" + std::string(100000, '0') + "-999999]",
                   "longer than 255");
  ExpectBadPattern(std::string(250, 'a') + "[0-9]" + std::string(5, 'b'),
                   "longer than 255");
  auto longest = ConfigParse::ExpandHostPattern(std::string(250, 'a') +
                                                "[0-9]" + std::string(4, 'b'));
  ASSERT_TRUE(longest.ok()) << longest.status();
  EXPECT_EQ(longest->front().size(), 255u);
}

TEST(ConfigParseTest, HostfileText) {
  const std::string text =
      "# cluster hosts\n"
      "\n"
      "  head   # the head node\n"
      "node[01-03]\r\n"
      "\t\n"
      "r[1-2]n[1-2]-ib\n"
      "#node99\n"
      "last";
  auto r = ConfigParse::ParseHostfileText(text);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, Hosts({"head", "node01", "node02", "node03", "r1n1-ib",
                       "r1n2-ib", "r2n1-ib", "r2n2-ib", "last"}));
}

TEST(ConfigParseTest, HostfileTextEmpty) {
  for (const char *text : {"", "\n\n", "# only a comment\n  # another\n"}) {
    auto r = ConfigParse::ParseHostfileText(text);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(r->empty());
  }
}

TEST(ConfigParseTest, HostfileTextKeepsDuplicatesAndOrder) {
  auto r = ConfigParse::ParseHostfileText("b\na\nb\n");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, Hosts({"b", "a", "b"}));
}

TEST(ConfigParseTest, HostfileTextErrorsNameLine) {
  struct Case {
    std::string text;
    std::string line;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {"a\nb\nnode[1-2\n", "line 3 ('node[1-2')", "unbalanced"},
      {"node]\n", "line 1 ('node]')", "unbalanced"},
      {"a\n\n# c\nn[]\n", "line 4 ('n[]')", "empty range"},
      {"a\nn[5-3]  # reversed\n", "line 2 ('n[5-3]')", "reversed"},
      {"n[a-b]", "line 1 ('n[a-b]')", "non-numeric"},
      {"x y", "line 1 ('x y')", "whitespace"},
  };
  for (const auto &c : cases) {
    auto r = ConfigParse::ParseHostfileText(c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.line), std::string::npos)
        << r.status();
    EXPECT_NE(r.status().message().find(c.needle), std::string::npos)
        << r.status();
  }
}

TEST(ConfigParseTest, HostfileTextTotalLimit) {
  auto r = ConfigParse::ParseHostfileText("a[0-599999]\nb[0-399999]\n");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->size(), ConfigParse::kMaxHosts);

  r = ConfigParse::ParseHostfileText("a[0-599999]\nb[0-399999]\nc\n");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("line 3"), std::string::npos)
      << r.status();
  EXPECT_NE(r.status().message().find("1000000"), std::string::npos)
      << r.status();
}

TEST(ConfigParseTest, HostfileFromFile) {
  TempFile file("hosts", "# hosts\nnode[1-2]\nhead\n");
  auto r = ConfigParse::ParseHostfile(file.path());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, Hosts({"node1", "node2", "head"}));
}

TEST(ConfigParseTest, HostfilePathIsExpanded) {
  TempFile file("hosts_env", "h[1-2]\n");
  const std::string &path = file.path();
  size_t slash = path.rfind('/');
  setenv("CHI_CPT_HOSTDIR", path.substr(0, slash).c_str(), 1);
  auto r =
      ConfigParse::ParseHostfile("${CHI_CPT_HOSTDIR}" + path.substr(slash));
  unsetenv("CHI_CPT_HOSTDIR");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, Hosts({"h1", "h2"}));
}

TEST(ConfigParseTest, HostfileMissing) {
  std::string missing = UniqueTmpPath("no_hostfile");
  auto r = ConfigParse::ParseHostfile(missing);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find(missing), std::string::npos)
      << r.status();
}

TEST(ConfigParseTest, HostfileParseErrorNamesPathAndLine) {
  TempFile file("bad_hosts", "ok\nnode[3-1]\n");
  auto r = ConfigParse::ParseHostfile(file.path());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find(file.path()), std::string::npos)
      << r.status();
  EXPECT_NE(r.status().message().find("line 2"), std::string::npos)
      << r.status();
}

}  // namespace
