// chimaera_stat end to end: --json, --watch/--count and --wait against a
// private runtime with two low-latency workers, and no negative counters.
#include <gtest/gtest.h>
#include <iconv.h>

#include <chrono>
#include <functional>
#include <regex>
#include <set>
#include <thread>

#include "../../../src/tools/json_lite.h"
#include "chimaera/chimaera.h"
#include "runtime_fixture.h"

namespace {

using chi_test::RunProgram;
using chi_test::RuntimeProcess;
using chi_tools::JsonParser;
using chi_tools::JsonValue;

/** Two low-latency workers (the configuration of the negative-bytes report). */
constexpr const char *kTwoLowLatency =
    "workers:\n  low_latency: 2\n  high_latency: 1\n";

/** Path of a program built next to chimaera_start_runtime. */
std::string Bin(const std::string &name) {
  return chi_test::BinDir() + "/" + name;
}

/** Parses the JSON object in `out` (from its first '{' to its last '}',
 * skipping anything a program printed around it). */
::testing::AssertionResult ParseJson(const std::string &out, JsonValue *v) {
  size_t b = out.find('{'), e = out.rfind('}');
  if (b == std::string::npos || e == std::string::npos || e < b) {
    return ::testing::AssertionFailure() << "no JSON object in: " << out;
  }
  std::string error;
  if (!JsonParser::Parse(out.substr(b, e - b + 1), v, &error)) {
    return ::testing::AssertionFailure() << error << " in: " << out;
  }
  return ::testing::AssertionSuccess();
}

/** Calls fn(path, number) for every number in `v`. */
void ForEachNumber(const JsonValue &v, const std::string &path,
                   const std::function<void(const std::string &, double)> &fn) {
  switch (v.kind) {
    case JsonValue::Kind::kNumber:
      fn(path, v.number);
      break;
    case JsonValue::Kind::kArray:
      for (size_t i = 0; i < v.array.size(); ++i) {
        ForEachNumber(v.array[i], path + "[" + std::to_string(i) + "]", fn);
      }
      break;
    case JsonValue::Kind::kObject:
      for (auto &[k, m] : v.object) ForEachNumber(m, path + "." + k, fn);
      break;
    default:
      break;
  }
}

/** Checks one --json report: its shape and that no count is negative. */
void CheckReport(const JsonValue &stat) {
  EXPECT_EQ(stat["node"]["id"].Num(), 1);
  EXPECT_GT(stat["node"]["pid"].Num(), 0);
  for (const char *seg : {"main", "client_data", "runtime_data"}) {
    const JsonValue &s = stat["segments"][seg];
    EXPECT_GE(s["in_use"].Num(-1), 0) << seg;
    EXPECT_LE(s["in_use"].Num(), s["size"].Num()) << seg;
    EXPECT_GT(s["size"].Num(), 0) << seg;
  }
  int low = 0;
  for (auto &w : stat["workers"].array) {
    EXPECT_TRUE(w.Has("lanes") && w.Has("tasks_completed") && w.Has("rate"));
    const std::string &kind = w["kind"].str;
    EXPECT_TRUE(kind == "low_latency" || kind == "high_latency") << kind;
    low += kind == "low_latency";
  }
  EXPECT_EQ(low, 2);
  bool admin = false;
  for (auto &p : stat["pools"].array) {
    EXPECT_GE(p["containers"].Num(), 1);
    EXPECT_TRUE(p.Has("tasks_completed") && p.Has("tasks_in_flight"));
    admin |= p["module"].str == "chimaera_admin";
  }
  EXPECT_TRUE(admin);
  ForEachNumber(stat, "", [](const std::string &path, double n) {
    EXPECT_GE(n, 0) << path;
  });
}

TEST(StatToolTest, JsonReportHasNoNegativeCountsUnderLoad) {
  RuntimeProcess rt(kTwoLowLatency);
  ASSERT_TRUE(rt.Start().ok()) << rt.Log();
  // Load from another process while the reports are taken: tasks and
  // runtime_data buffers move between the two low-latency workers' caches.
  std::thread load([&] {
    std::string out;
    EXPECT_EQ(RunProgram({Bin("chimaera_workload"), "--threads", "4", "--tasks",
                          "20000", "--window", "16"},
                         rt.config_path(), &out, 120),
              0)
        << out;
  });
  for (int i = 0; i < 10; ++i) {
    std::string out;
    ASSERT_EQ(
        RunProgram({Bin("chimaera_stat"), "--json"}, rt.config_path(), &out), 0)
        << out;
    JsonValue stat;
    ASSERT_TRUE(ParseJson(out, &stat));
    CheckReport(stat);
    // The text report carries the same data, with no negative number.
    ASSERT_EQ(RunProgram({Bin("chimaera_stat")}, rt.config_path(), &out), 0);
    EXPECT_FALSE(std::regex_search(out, std::regex("[ (]-[0-9]"))) << out;
    EXPECT_NE(out.find("runtime_data"), std::string::npos) << out;
  }
  load.join();
  EXPECT_TRUE(rt.Stop().ok()) << rt.Log();
}

/** True if `s` is well-formed UTF-8 (glibc's iconv decides). */
bool IsUtf8(const std::string &s) {
  iconv_t cd = iconv_open("UTF-8", "UTF-8");
  if (cd == reinterpret_cast<iconv_t>(-1)) return false;
  std::string in = s, out(s.size() * 4 + 16, '\0');
  char *ip = in.data(), *op = out.data();
  size_t il = in.size(), ol = out.size();
  size_t r = iconv(cd, &ip, &il, &op, &ol);
  iconv_close(cd);
  return r != static_cast<size_t>(-1) && il == 0;
}

// Pool names are bytes: --json writes them as valid UTF-8 all the same,
// keeping well-formed UTF-8 and writing any other byte as the text \xNN
// (as the Python module does). Before, a name with byte 0xff made the
// report invalid JSON for any strict parser.
TEST(StatToolTest, JsonReportIsUtf8WhateverThePoolNames) {
  RuntimeProcess rt;
  ASSERT_TRUE(rt.Start().ok()) << rt.Log();
  setenv("CHI_SERVER_CONF", rt.config_path().c_str(), 1);
  ASSERT_TRUE(CHIMAERA_CLIENT_INIT().ok());
  chi::admin::Client admin;
  const std::string bad = "bad\xff\xfe-\xe0\x80-\xed\xa0\x80-\xc3";
  const std::string good = "gr\xc3\xbc\xc3\x9f-\xf0\x9f\x90\x8d";
  ASSERT_TRUE(admin.GetOrCreatePool(bad, "small_message", 1).ok());
  ASSERT_TRUE(admin.GetOrCreatePool(good, "small_message", 1).ok());
  CHIMAERA->ClientFinalize();
  std::string out;
  ASSERT_EQ(
      RunProgram({Bin("chimaera_stat"), "--json"}, rt.config_path(), &out), 0)
      << out;
  EXPECT_TRUE(IsUtf8(out));
  JsonValue stat;
  ASSERT_TRUE(ParseJson(out, &stat));
  std::set<std::string> names;
  for (auto &p : stat["pools"].array) names.insert(p["name"].str);
  EXPECT_EQ(names.count("bad\\xff\\xfe-\\xe0\\x80-\\xed\\xa0\\x80-\\xc3"), 1u)
      << out;
  EXPECT_EQ(names.count(good), 1u) << out;
  EXPECT_TRUE(rt.Stop().ok()) << rt.Log();
}

TEST(StatToolTest, WatchRefreshesCountTimesWithRates) {
  RuntimeProcess rt(kTwoLowLatency);
  ASSERT_TRUE(rt.Start().ok()) << rt.Log();
  std::string out;
  ASSERT_EQ(RunProgram({Bin("chimaera_stat"), "--watch", "0.1", "--count", "3"},
                       rt.config_path(), &out),
            0)
      << out;
  size_t refreshes = 0;
  for (size_t at = 0;
       (at = out.find("chimaera_stat: refresh ", at)) != std::string::npos;
       ++at) {
    ++refreshes;
  }
  EXPECT_EQ(refreshes, 3u) << out;
  EXPECT_NE(out.find("rates over the last"), std::string::npos) << out;
  EXPECT_NE(out.find("tasks/s"), std::string::npos) << out;
  // Not a terminal: no screen-clearing escape codes.
  EXPECT_EQ(out.find('\033'), std::string::npos);

  // --json --watch: one JSON object a line, each with its rates.
  ASSERT_EQ(RunProgram({Bin("chimaera_stat"), "--json", "--watch", "0.1",
                        "--count", "2"},
                       rt.config_path(), &out),
            0)
      << out;
  std::vector<std::string> lines;
  for (size_t b = 0, e; (e = out.find('\n', b)) != std::string::npos;
       b = e + 1) {
    if (out[b] == '{') lines.push_back(out.substr(b, e - b));
  }
  ASSERT_EQ(lines.size(), 2u) << out;
  for (size_t i = 0; i < lines.size(); ++i) {
    JsonValue v;
    ASSERT_TRUE(ParseJson(lines[i], &v));
    EXPECT_EQ(v["refresh"].Num(), static_cast<double>(i + 1));
    EXPECT_TRUE(v["rates"].Has("worker 0")) << lines[i];
    CheckReport(v["stat"]);
  }
  // Bad intervals are usage errors.
  EXPECT_EQ(RunProgram({Bin("chimaera_stat"), "--watch", "0"}, rt.config_path(),
                       &out),
            2)
      << out;
  EXPECT_TRUE(rt.Stop().ok()) << rt.Log();
}

TEST(StatToolTest, WaitTimesOutClearlyThenSucceedsOnceARuntimeAnswers) {
  RuntimeProcess rt(kTwoLowLatency);  // not started yet
  std::string out;
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(
      RunProgram({Bin("chimaera_stat"), "--wait", "1"}, rt.config_path(), &out),
      1);
  double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  EXPECT_GE(secs, 0.9);
  EXPECT_LT(secs, 10);
  EXPECT_NE(out.find("no runtime answered within 1 s"), std::string::npos)
      << out;
  // --count means nothing without --watch: refused, not ignored.
  EXPECT_NE(RunProgram({Bin("chimaera_stat"), "--count", "3"}, rt.config_path(),
                       &out),
            0);
  EXPECT_NE(out.find("--count requires --watch"), std::string::npos) << out;

  // A runtime that comes up while chimaera_stat waits is found.
  int rc = -1;
  std::string waited;
  std::thread waiter([&] {
    rc = RunProgram({Bin("chimaera_stat"), "--wait", "30", "--json"},
                    rt.config_path(), &waited, 60);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  hshm::Status s = rt.Start();
  waiter.join();
  ASSERT_TRUE(s.ok()) << rt.Log();
  EXPECT_EQ(rc, 0) << waited;
  JsonValue stat;
  ASSERT_TRUE(ParseJson(waited, &stat));
  CheckReport(stat);
  EXPECT_TRUE(rt.Stop().ok()) << rt.Log();
}

}  // namespace
