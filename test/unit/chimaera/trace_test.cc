// Task tracing end to end: a runtime subprocess records task timelines, the
// admin module dumps them as Chrome trace-event JSON, and the test parses the
// JSON and checks the events, their parent links and the flow arrows.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "chimaera/chimaera.h"
#include "runtime_fixture.h"

namespace {

using chi_test::RunProgram;
using chi_test::RuntimeProcess;

//------------------------------------------------------------------------------
// A minimal JSON reader (enough to check the trace; strict on syntax).
//------------------------------------------------------------------------------

/** A parsed JSON value. */
struct Json {
  enum Type { kNull, kBool, kNumber, kString, kArray, kObject } type = kNull;
  bool b = false;
  double num = 0;
  std::string str;
  std::vector<Json> arr;
  std::map<std::string, Json> obj;

  /** Member `key` of an object; a null value if absent. */
  const Json &operator[](const std::string &key) const {
    static const Json kNone;
    auto it = obj.find(key);
    return it == obj.end() ? kNone : it->second;
  }
  bool Has(const std::string &key) const { return obj.count(key) != 0; }
};

/** Recursive-descent parser over a string; Parse() is false on any syntax
 * error (or trailing garbage). */
class JsonParser {
 public:
  explicit JsonParser(const std::string &s) : s_(s) {}
  /** Parses the whole text into *out. */
  bool Parse(Json *out) {
    if (!Value(out)) return false;
    Ws();
    return i_ == s_.size();
  }

 private:
  void Ws() {
    while (i_ < s_.size() && isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  bool Lit(const char *w) {
    size_t n = strlen(w);
    if (s_.compare(i_, n, w) != 0) return false;
    i_ += n;
    return true;
  }
  bool String(std::string *out) {
    if (i_ >= s_.size() || s_[i_] != '"') return false;
    ++i_;
    while (i_ < s_.size() && s_[i_] != '"') {
      char c = s_[i_++];
      if (static_cast<unsigned char>(c) < 0x20) return false;
      if (c != '\\') {
        out->push_back(c);
        continue;
      }
      if (i_ >= s_.size()) return false;
      char e = s_[i_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out->push_back(e);
          break;
        case 'n':
          out->push_back('\n');
          break;
        case 't':
          out->push_back('\t');
          break;
        case 'r':
          out->push_back('\r');
          break;
        case 'b':
          out->push_back('\b');
          break;
        case 'f':
          out->push_back('\f');
          break;
        case 'u': {
          if (i_ + 4 > s_.size()) return false;
          for (int k = 0; k < 4; ++k) {
            if (!isxdigit(static_cast<unsigned char>(s_[i_ + k]))) return false;
          }
          out->push_back('?');
          i_ += 4;
          break;
        }
        default:
          return false;
      }
    }
    if (i_ >= s_.size()) return false;
    ++i_;
    return true;
  }
  bool Value(Json *v) {
    Ws();
    if (i_ >= s_.size()) return false;
    char c = s_[i_];
    if (c == '{') {
      v->type = Json::kObject;
      ++i_;
      Ws();
      if (i_ < s_.size() && s_[i_] == '}') return ++i_, true;
      for (;;) {
        Ws();
        std::string key;
        if (!String(&key)) return false;
        Ws();
        if (i_ >= s_.size() || s_[i_++] != ':') return false;
        if (!Value(&v->obj[key])) return false;
        Ws();
        if (i_ >= s_.size()) return false;
        if (s_[i_] == ',') {
          ++i_;
          continue;
        }
        if (s_[i_] == '}') return ++i_, true;
        return false;
      }
    }
    if (c == '[') {
      v->type = Json::kArray;
      ++i_;
      Ws();
      if (i_ < s_.size() && s_[i_] == ']') return ++i_, true;
      for (;;) {
        v->arr.emplace_back();
        if (!Value(&v->arr.back())) return false;
        Ws();
        if (i_ >= s_.size()) return false;
        if (s_[i_] == ',') {
          ++i_;
          continue;
        }
        if (s_[i_] == ']') return ++i_, true;
        return false;
      }
    }
    if (c == '"') {
      v->type = Json::kString;
      return String(&v->str);
    }
    if (Lit("true")) {
      v->type = Json::kBool;
      v->b = true;
      return true;
    }
    if (Lit("false")) {
      v->type = Json::kBool;
      return true;
    }
    if (Lit("null")) return true;
    size_t start = i_;
    if (s_[i_] == '-') ++i_;
    while (i_ < s_.size() &&
           (isdigit(static_cast<unsigned char>(s_[i_])) || s_[i_] == '.' ||
            s_[i_] == 'e' || s_[i_] == 'E' || s_[i_] == '+' || s_[i_] == '-')) {
      ++i_;
    }
    if (i_ == start) return false;
    v->type = Json::kNumber;
    try {
      v->num = std::stod(s_.substr(start, i_ - start));
    } catch (...) {
      return false;
    }
    return true;
  }

  const std::string &s_;
  size_t i_ = 0;
};

//------------------------------------------------------------------------------
// The trace, as the checks need it.
//------------------------------------------------------------------------------

/** One "X" event of the trace. */
struct RunEvent {
  std::string name;
  double ts = 0, dur = 0;
  double pid = 0, tid = 0;
  double id = 0, parent = 0;
  std::string task_node;
  double status = 0;
};

/** The parsed trace: runs by id, flow ends by id, thread names. */
struct Trace {
  Json doc;
  std::map<double, RunEvent> runs;
  std::map<double, const Json *> flow_start, flow_end;
  std::vector<std::string> thread_names;
  /** Runs named `name`. */
  std::vector<const RunEvent *> Named(const std::string &name) const {
    std::vector<const RunEvent *> out;
    for (auto &kv : runs) {
      if (kv.second.name == name) out.push_back(&kv.second);
    }
    return out;
  }
};

/** Parses `json` into *t; a gtest failure says what is wrong. */
::testing::AssertionResult ParseTrace(const std::string &json, Trace *t) {
  if (!JsonParser(json).Parse(&t->doc)) {
    return ::testing::AssertionFailure()
           << "not valid JSON: " << json.substr(0, 400);
  }
  const Json &evs = t->doc["traceEvents"];
  if (evs.type != Json::kArray) {
    return ::testing::AssertionFailure() << "no traceEvents array";
  }
  for (const Json &e : evs.arr) {
    const std::string &ph = e["ph"].str;
    if (ph == "X") {
      RunEvent r;
      r.name = e["name"].str;
      r.ts = e["ts"].num;
      r.dur = e["dur"].num;
      r.pid = e["pid"].num;
      r.tid = e["tid"].num;
      r.id = e["args"]["id"].num;
      r.parent = e["args"]["parent"].num;
      r.task_node = e["args"]["task_node"].str;
      r.status = e["args"]["status"].num;
      if (t->runs.count(r.id)) {
        return ::testing::AssertionFailure() << "duplicate run id " << r.id;
      }
      t->runs[r.id] = r;
    } else if (ph == "s") {
      t->flow_start[e["id"].num] = &e;
    } else if (ph == "f") {
      t->flow_end[e["id"].num] = &e;
    } else if (ph == "M" && e["name"].str == "thread_name") {
      t->thread_names.push_back(e["args"]["name"].str);
    } else if (ph != "M") {
      return ::testing::AssertionFailure() << "unexpected phase " << ph;
    }
  }
  return ::testing::AssertionSuccess();
}

/** Checks `t` against how Perfetto's JSON importer (what ui.perfetto.dev
 * runs) reads a trace, so that what the UI shows is what the runtime meant:
 * - it replaces tid 0 with the pid, so no event may use tid 0;
 * - each (pid, tid) track gets one thread_name;
 * - it drops an X slice that partially overlaps another on its track, so
 *   the slices of a track must nest or be disjoint;
 * - it binds a flow start ("s") to the innermost slice open on its track at
 *   its ts, and a flow end with "bp":"e" to the innermost slice open on its
 *   track at its ts (a slice starting at that ts counts as open), matching
 *   the two by (cat, name, id): that must be the parent's run and the
 *   child's. */
::testing::AssertionResult CheckPerfettoImport(const Trace &t) {
  constexpr double kEps = 1e-4;  // ts/dur have 3 decimals (us)
  std::map<std::pair<double, double>, std::vector<const RunEvent *>> tracks;
  for (auto &kv : t.runs) {
    tracks[{kv.second.pid, kv.second.tid}].push_back(&kv.second);
  }
  std::map<std::pair<double, double>, int> names;
  for (const Json &e : t.doc["traceEvents"].arr) {
    bool process_meta = e["ph"].str == "M" && e["name"].str == "process_name";
    if (!process_meta && e["tid"].num == 0) {
      return ::testing::AssertionFailure()
             << e["ph"].str << " event " << e["name"].str << " on tid 0";
    }
    if (e["ph"].str == "M" && e["name"].str == "thread_name" &&
        ++names[{e["pid"].num, e["tid"].num}] > 1) {
      return ::testing::AssertionFailure()
             << "two thread names for tid " << e["tid"].num;
    }
  }
  for (auto &kv : tracks) {
    auto &v = kv.second;
    std::sort(v.begin(), v.end(), [](const RunEvent *a, const RunEvent *b) {
      return a->ts != b->ts ? a->ts < b->ts : a->dur > b->dur;
    });
    std::vector<double> open;  // ends of the enclosing slices
    for (const RunEvent *r : v) {
      while (!open.empty() && open.back() <= r->ts + kEps) open.pop_back();
      if (!open.empty() && r->ts + r->dur > open.back() + kEps) {
        return ::testing::AssertionFailure()
               << "run " << r->id << " (" << r->name
               << ") partially overlaps another on tid " << r->tid;
      }
      open.push_back(r->ts + r->dur);
    }
  }
  // The innermost run open at `ts` on (pid, tid), or null.
  auto innermost = [&](double pid, double tid, double ts) -> const RunEvent * {
    auto it = tracks.find({pid, tid});
    if (it == tracks.end()) return nullptr;
    const RunEvent *best = nullptr;
    for (const RunEvent *r : it->second) {
      if (r->ts <= ts + kEps && ts < r->ts + std::max(r->dur, kEps) - kEps &&
          (!best || r->ts > best->ts ||
           (r->ts == best->ts && r->dur < best->dur))) {
        best = r;
      }
    }
    return best;
  };
  for (auto &kv : t.flow_start) {
    const Json &s = *kv.second;
    auto f = t.flow_end.find(kv.first);
    if (f == t.flow_end.end()) {
      return ::testing::AssertionFailure()
             << "flow " << kv.first << " has no end";
    }
    const Json &e = *f->second;
    if (s["cat"].str != e["cat"].str || s["name"].str != e["name"].str ||
        e["bp"].str != "e") {
      return ::testing::AssertionFailure()
             << "flow " << kv.first << ": ends do not match or no bp \"e\"";
    }
    auto child = t.runs.find(kv.first);
    if (child == t.runs.end()) {
      return ::testing::AssertionFailure() << "flow to no run " << kv.first;
    }
    const RunEvent *from = innermost(s["pid"].num, s["tid"].num, s["ts"].num);
    const RunEvent *to = innermost(e["pid"].num, e["tid"].num, e["ts"].num);
    if (!from || from->id != child->second.parent) {
      return ::testing::AssertionFailure()
             << "flow " << kv.first << " starts in "
             << (from ? from->name : "no slice") << ", not in its parent";
    }
    if (!to || to->id != child->second.id) {
      return ::testing::AssertionFailure()
             << "flow " << kv.first << " ends in "
             << (to ? to->name : "no slice") << ", not in its child";
    }
  }
  return ::testing::AssertionSuccess();
}

/** "major.minor" -> {major, minor}. */
std::pair<unsigned long long, unsigned> SplitNode(const std::string &s) {
  unsigned long long major = 0;
  unsigned minor = 0;
  sscanf(s.c_str(), "%llu.%u", &major, &minor);
  return {major, minor};
}

/** Checks that every run named `child` has a parent run named `parent`
 * that encloses it in time, whose task node is its own minus one level, and
 * that a flow arrow goes from the parent's thread to the child's; *checked
 * is the number of children. */
void CheckChildren(const Trace &t, const std::string &child,
                   const std::string &parent, size_t *checked) {
  size_t &n = *checked;
  n = 0;
  for (const RunEvent *c : t.Named(child)) {
    SCOPED_TRACE(child + " " + c->task_node);
    ++n;
    EXPECT_GE(c->dur, 0);
    ASSERT_NE(c->parent, 0) << "no parent link";
    auto p = t.runs.find(c->parent);
    ASSERT_NE(p, t.runs.end()) << "parent link points at no event";
    const RunEvent &pr = p->second;
    EXPECT_EQ(pr.name, parent);
    // Inside the parent's span (ts/dur are exact to the ns; allow rounding
    // of the doubles).
    EXPECT_GE(c->ts, pr.ts - 1e-6);
    EXPECT_LE(c->ts + c->dur, pr.ts + pr.dur + 1e-3);
    auto cn = SplitNode(c->task_node), pn = SplitNode(pr.task_node);
    EXPECT_EQ(cn.first, pn.first);
    EXPECT_EQ(cn.second, pn.second + 1);
    auto s = t.flow_start.find(c->id);
    auto f = t.flow_end.find(c->id);
    ASSERT_NE(s, t.flow_start.end()) << "no flow start";
    ASSERT_NE(f, t.flow_end.end()) << "no flow end";
    EXPECT_EQ((*s->second)["tid"].num, pr.tid);
    EXPECT_EQ((*f->second)["tid"].num, c->tid);
    EXPECT_EQ((*f->second)["ts"].num, c->ts);
    EXPECT_EQ((*f->second)["bp"].str, "e");
    EXPECT_GE((*s->second)["ts"].num, pr.ts - 1e-6);
    EXPECT_LE((*s->second)["ts"].num, c->ts + 1e-6);
  }
}

/** Dumps the connected runtime's trace into *t. If CHI_TRACE_TEST_OUT names
 * a directory, the JSON is also written there (as <test name>.json), e.g. to
 * open it in a trace viewer. */
::testing::AssertionResult Dump(Trace *t) {
  chi::admin::Client admin;
  auto json = admin.TraceDump();
  if (!json.ok()) {
    return ::testing::AssertionFailure() << json.status().ToString();
  }
  if (const char *dir = getenv("CHI_TRACE_TEST_OUT")) {
    const auto *info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::ofstream(std::string(dir) + "/" + info->name() + ".json") << *json;
  }
  ::testing::AssertionResult parsed = ParseTrace(*json, t);
  if (!parsed) return parsed;
  return CheckPerfettoImport(*t);
}

std::string Bin(const std::string &name) {
  return chi_test::BinDir() + "/" + name;
}

std::string ReadFile(const std::string &path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

//------------------------------------------------------------------------------
// Tests
//------------------------------------------------------------------------------

TEST(TraceTest, SubtasksLinkToTheirParents) {
  RuntimeProcess rt("trace:\n  enabled: true\n");
  ASSERT_TRUE(rt.Start().ok()) << rt.Log();
  ASSERT_TRUE(CHIMAERA_CLIENT_INIT().ok());
  chi::admin::Client admin;
  // One root FanOut -> 4 FanOut children -> 4 Echo grandchildren each.
  auto sum = admin.FanOut(4, 2);
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_EQ(*sum, 4u * 10u);
  Trace t;
  ASSERT_TRUE(Dump(&t));
  EXPECT_EQ(t.doc["otherData"]["lost"].num, 0);
  // The root: submitted by this client, so no parent.
  std::vector<const RunEvent *> roots;
  for (const RunEvent *r : t.Named("chimaera_admin.FanOut")) {
    if (r->parent == 0) roots.push_back(r);
  }
  ASSERT_EQ(roots.size(), 1u);
  EXPECT_EQ(SplitNode(roots[0]->task_node).second, 0u);
  EXPECT_EQ(t.Named("chimaera_admin.FanOut").size(), 5u);
  EXPECT_EQ(t.Named("chimaera_admin.Echo").size(), 16u);
  size_t n = 0;
  CheckChildren(t, "chimaera_admin.Echo", "chimaera_admin.FanOut", &n);
  EXPECT_EQ(n, 16u);
  // The middle level: children of the root.
  size_t mids = 0;
  for (const RunEvent *r : t.Named("chimaera_admin.FanOut")) {
    if (r->parent == 0) continue;
    ++mids;
    EXPECT_EQ(r->parent, roots[0]->id);
    EXPECT_GE(r->ts, roots[0]->ts - 1e-6);
    EXPECT_LE(r->ts + r->dur, roots[0]->ts + roots[0]->dur + 1e-3);
  }
  EXPECT_EQ(mids, 4u);
  for (auto &kv : t.runs) {
    EXPECT_EQ(kv.second.pid, 1);  // node 1
    EXPECT_EQ(kv.second.status, 0);
  }
  bool named = false;
  for (auto &n : t.thread_names) named |= n == "worker 0 (low latency)";
  EXPECT_TRUE(named);
  CHIMAERA->ClientFinalize();
  EXPECT_TRUE(rt.Stop().ok());
}

TEST(TraceTest, OffRecordsNothingAndControlWorks) {
  RuntimeProcess rt;
  ASSERT_TRUE(rt.Start().ok()) << rt.Log();
  ASSERT_TRUE(CHIMAERA_CLIENT_INIT().ok());
  chi::admin::Client admin;
  ASSERT_TRUE(admin.FanOut(4, 1).ok());
  // Off (the default): nothing recorded; the empty dump is valid JSON.
  chi::u64 recorded = 1;
  auto on = admin.TraceControl(chi::admin::kTraceQuery, &recorded);
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_FALSE(*on);
  EXPECT_EQ(recorded, 0u);
  {
    Trace t;
    ASSERT_TRUE(Dump(&t));
    EXPECT_TRUE(t.runs.empty());
    EXPECT_TRUE(t.flow_start.empty());
  }
  // Started at run time: the tasks in between are recorded, with links.
  on = admin.TraceControl(chi::admin::kTraceStart);
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_TRUE(*on);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(admin.Echo(i).ok());
  ASSERT_TRUE(admin.FanOut(3, 1).ok());
  on = admin.TraceControl(chi::admin::kTraceStop, &recorded);
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_FALSE(*on);
  EXPECT_GE(recorded, 10u + 1u + 3u + 3u);  // runs + submissions
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(admin.Echo(i).ok());  // unrecorded
  {
    Trace t;
    ASSERT_TRUE(Dump(&t));
    EXPECT_EQ(t.Named("chimaera_admin.Echo").size(), 13u);
    size_t n = 0;
    for (const RunEvent *r : t.Named("chimaera_admin.Echo")) {
      if (r->parent == 0) continue;  // the 10 client echoes
      ++n;
      auto p = t.runs.find(r->parent);
      ASSERT_NE(p, t.runs.end());
      EXPECT_EQ(p->second.name, "chimaera_admin.FanOut");
      EXPECT_EQ(t.flow_end.count(r->id), 1u);
    }
    EXPECT_EQ(n, 3u);
  }
  // Clear: empty again, still valid.
  ASSERT_TRUE(admin.TraceControl(chi::admin::kTraceClear, &recorded).ok());
  EXPECT_EQ(recorded, 0u);
  {
    Trace t;
    ASSERT_TRUE(Dump(&t));
    EXPECT_TRUE(t.runs.empty());
  }
  // Hostile input: an unknown operation is a clear error.
  auto bad = admin.TraceControl(99);
  EXPECT_EQ(bad.status().code(), hshm::StatusCode::kInvalidArgument);
  CHIMAERA->ClientFinalize();
  EXPECT_TRUE(rt.Stop().ok());
}

TEST(TraceTest, SmallRingsKeepTheNewestAndStayValid) {
  // 16 records per worker: the fan-out overflows them.
  RuntimeProcess rt("trace:\n  enabled: true\n  events_per_worker: 16\n");
  ASSERT_TRUE(rt.Start().ok()) << rt.Log();
  ASSERT_TRUE(CHIMAERA_CLIENT_INIT().ok());
  chi::admin::Client admin;
  ASSERT_TRUE(admin.FanOut(10, 2).ok());
  Trace t;
  ASSERT_TRUE(Dump(&t));
  EXPECT_GT(t.doc["otherData"]["lost"].num, 0);
  EXPECT_LE(t.runs.size(), 16u * 2);
  EXPECT_FALSE(t.runs.empty());
  for (auto &kv : t.runs) EXPECT_GE(kv.second.dur, 0);
  // Every flow arrow that was written joins two runs of the dump.
  for (auto &kv : t.flow_start) {
    EXPECT_TRUE(t.runs.count(kv.first));
    EXPECT_TRUE(t.flow_end.count(kv.first));
  }
  CHIMAERA->ClientFinalize();
  EXPECT_TRUE(rt.Stop().ok());
}

// A FIFO (or any file that is not a regular one) where the trace's
// temporary file goes is refused, and the runtime still exits at once:
// opening it for writing blocked the exit for ever.
TEST(TraceTest, AFifoInPlaceOfTheOutputDoesNotHoldTheExit) {
  std::string out_path =
      "/tmp/chimaera_trace_fifo_" + std::to_string(getpid()) + ".json";
  std::string tmp = out_path + ".tmp";
  std::remove(tmp.c_str());
  ASSERT_EQ(mkfifo(tmp.c_str(), 0600), 0) << std::strerror(errno);
  RuntimeProcess rt("trace:\n  enabled: true\n  output: \"" + out_path +
                    "\"\n");
  ASSERT_TRUE(rt.Start().ok()) << rt.Log();
  ASSERT_TRUE(CHIMAERA_CLIENT_INIT().ok());
  EXPECT_TRUE(chi::admin::Client().Noop().ok());
  CHIMAERA->ClientFinalize();
  const hshm::u64 t0 = hshm::NowNs();
  EXPECT_TRUE(rt.Stop().ok()) << rt.Log();
  EXPECT_LT((hshm::NowNs() - t0) / 1e9, 10.0);
  EXPECT_NE(rt.Log().find("trace: Internal: cannot write " + tmp),
            std::string::npos)
      << rt.Log();
  std::remove(tmp.c_str());
  std::remove(out_path.c_str());
}

TEST(TraceTest, ToolDumpsAndRuntimeWritesOutputAtShutdown) {
  std::string out_path =
      "/tmp/chimaera_trace_test_" + std::to_string(getpid()) + ".json";
  std::remove(out_path.c_str());
  RuntimeProcess rt("trace:\n  enabled: false\n  output: \"" + out_path +
                    "\"\n");
  ASSERT_TRUE(rt.Start().ok()) << rt.Log();
  std::string out;
  int rc = RunProgram({Bin("chimaera_trace"), "--clear", "--start"},
                      rt.config_path(), &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("tracing on"), std::string::npos) << out;
  // 120 s: the workload's fan-outs take about 30 s under TSan.
  rc = RunProgram({Bin("chimaera_workload"), "--threads", "1", "--tasks", "200",
                   "--window", "16"},
                  rt.config_path(), &out, 120);
  ASSERT_EQ(rc, 0) << out;
  std::string dump = out_path + ".tool";
  rc = RunProgram({Bin("chimaera_trace"), "--dump", dump}, rt.config_path(),
                  &out);
  ASSERT_EQ(rc, 0) << out << "\nruntime log:\n" << rt.Log();
  {
    Trace t;
    ASSERT_TRUE(ParseTrace(ReadFile(dump), &t));
    EXPECT_GE(t.runs.size(), 200u);
  }
  rc = RunProgram({Bin("chimaera_trace"), "--bogus"}, rt.config_path(), &out);
  EXPECT_NE(rc, 0);
  ASSERT_TRUE(rt.Stop().ok()) << rt.Log();
  {
    Trace t;
    ASSERT_TRUE(ParseTrace(ReadFile(out_path), &t)) << rt.Log();
    EXPECT_GE(t.runs.size(), 200u);
  }
  std::remove(dump.c_str());
  std::remove(out_path.c_str());
}

}  // namespace
