// Trace rings and their Chrome trace-event JSON (see chimaera/trace.h).
#include "chimaera/trace.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <map>
#include <queue>
#include <unordered_map>

#include "chimaera/config_manager.h"
#include "chimaera/container.h"
#include "chimaera/ipc_manager.h"
#include "chimaera/module_manager.h"
#include "chimaera/pool_manager.h"

namespace chi {

//------------------------------------------------------------------------------
// TraceRing
//------------------------------------------------------------------------------

TraceRing::TraceRing(u64 capacity) {
  u64 cap = 2;
  while (cap < capacity) cap <<= 1;
  slots_.reset(new Slot[cap]);
  mask_ = cap - 1;
}

void TraceRing::Push(const TraceEvent &e) {
  const u64 i = head_.load(std::memory_order_relaxed);
  Slot &s = slots_[i & mask_];
  // Ask for a later slot's line for writing now, so that its miss overlaps
  // the tasks in between instead of stalling that push.
  __builtin_prefetch(&slots_[(i + 4) & mask_], 1, 3);
  constexpr auto kRelaxed = std::memory_order_relaxed;
  s.seq.store(2 * i + 1, kRelaxed);
  // The odd sequence word becomes visible before any payload word.
  std::atomic_thread_fence(std::memory_order_release);
  s.w[0].store(static_cast<u64>(e.kind) | (u64{e.rc & 0xffffffu} << 8) |
                   (u64{e.method} << 32),
               kRelaxed);
  s.w[1].store(e.pool.ToU64(), kRelaxed);
  s.w[2].store(e.node.major_, kRelaxed);
  s.w[3].store(u64{e.node.minor_} | (e.id << 32), kRelaxed);
  s.w[4].store(e.start, kRelaxed);
  s.w[5].store(e.end, kRelaxed);
  s.w[6].store(e.key, kRelaxed);
  s.seq.store(2 * i + 2, std::memory_order_release);
  head_.store(i + 1, std::memory_order_release);
}

std::vector<TraceEvent> TraceRing::Snapshot(u32 worker) const {
  std::vector<TraceEvent> out;
  const u64 head = head_.load(std::memory_order_acquire);
  const u64 cap = mask_ + 1;
  u64 lo = std::max(floor_.load(std::memory_order_acquire),
                    head > cap ? head - cap : 0);
  out.reserve(head > lo ? head - lo : 0);
  for (u64 i = lo; i < head; ++i) {
    const Slot &s = slots_[i & mask_];
    const u64 want = 2 * i + 2;
    if (s.seq.load(std::memory_order_acquire) != want) continue;
    u64 w[kWords];
    for (int k = 0; k < kWords; ++k) {
      w[k] = s.w[k].load(std::memory_order_relaxed);
    }
    // The payload loads complete before the second sequence load.
    std::atomic_thread_fence(std::memory_order_acquire);
    if (s.seq.load(std::memory_order_relaxed) != want) continue;  // torn
    TraceEvent e;
    e.kind = static_cast<TraceKind>(w[0] & 0xff);
    e.rc = static_cast<u32>((w[0] >> 8) & 0xffffff);
    e.method = static_cast<MethodId>(w[0] >> 32);
    e.pool = PoolId(static_cast<u32>(w[1] >> 32), static_cast<u32>(w[1]));
    e.node = TaskNode(w[2], static_cast<u32>(w[3]));
    e.id = (u64{worker + 1} << 32) | (w[3] >> 32);
    e.start = w[4];
    e.end = w[5];
    e.key = w[6];
    out.push_back(e);
  }
  return out;
}

void TraceRing::Clear() {
  floor_.store(head_.load(std::memory_order_acquire),
               std::memory_order_release);
}

u64 TraceRing::Written() const {
  u64 head = head_.load(std::memory_order_acquire);
  u64 floor = floor_.load(std::memory_order_acquire);
  return head > floor ? head - floor : 0;
}

//------------------------------------------------------------------------------
// TraceManager
//------------------------------------------------------------------------------

void TraceManager::Init() {
  std::call_once(init_once_, [this] {
    const ServerConfig &conf = CHI_CONFIG_MANAGER->config();
    capacity_ = conf.trace_events_;
    output_ = conf.trace_output_;
    ns0_ = hshm::NowNs();
    tick0_ = TraceClock();
    {
      std::lock_guard<std::mutex> lock(mu_);
      rings_.resize(conf.NumWorkers());
    }
    if (conf.trace_enabled_) (void)SetEnabled(true);
  });
}

Status TraceManager::SetEnabled(bool on) {
  if (on) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto &r : rings_) {
      if (!r) r = std::make_unique<TraceRing>(capacity_);
    }
    ever_enabled_.store(true, std::memory_order_relaxed);
  }
  // Release: a worker that sees `on` sees the rings.
  enabled_.store(on, std::memory_order_release);
  return Status::Ok();
}

void TraceManager::Clear() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto &r : rings_) {
    if (r) r->Clear();
  }
}

TraceRing *TraceManager::ActiveRing(u32 worker) {
  if (!enabled_.load(std::memory_order_acquire)) return nullptr;
  // Entries are written only before enabled_ is first set (see rings_).
  return worker < rings_.size() ? rings_[worker].get() : nullptr;
}

u64 TraceManager::Written() {
  std::lock_guard<std::mutex> lock(mu_);
  u64 n = 0;
  for (auto &r : rings_) {
    if (r) n += r->Written();
  }
  return n;
}

namespace {

/** Appends `s` to `out` as a JSON string literal (quoted, escaped). */
void AppendJsonString(std::string *out, const std::string &s) {
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\t':
        *out += "\\t";
        break;
      default:
        if (c < 0x20 || c >= 0x7f) {
          // Control bytes, and bytes outside ASCII (names need not be UTF-8).
          char buf[8];
          snprintf(buf, sizeof(buf), "\\u%04x", c);
          *out += buf;
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

/** Appends `ns` as microseconds with three decimals (exact). */
void AppendMicros(std::string *out, u64 ns) {
  char buf[40];
  snprintf(buf, sizeof(buf), "%" PRIu64 ".%03" PRIu64, ns / 1000, ns % 1000);
  *out += buf;
}

/** A run being laid out: its record and what the dump derives for it. */
struct RunItem {
  TraceEvent e;
  u32 worker = 0;
  u32 track = 0;      ///< Lane of the worker's timeline (nesting).
  u64 start_ns = 0;   ///< Relative to the trace's first event.
  u64 end_ns = 0;     ///< Likewise.
  u64 parent = 0;     ///< Parent run id, or 0.
  u64 submit_ns = 0;  ///< When the parent submitted it (relative).
  u32 submit_worker = 0;
};

/** Assigns each run of one worker (sorted by start) a track such that the
 * runs on a track nest or are disjoint, as trace viewers require of the
 * slices of one thread (fibers interleave, so raw runs may overlap). */
u32 AssignTracks(std::vector<RunItem *> *runs) {
  // Stable: the ring holds runs by end time, so the input is nearly sorted
  // by start except for long-lived parents; introsort recursed 24 deep on
  // that shape (60 KB of ASan stack), a merge sort does not.
  std::stable_sort(runs->begin(), runs->end(),
                   [](const RunItem *a, const RunItem *b) {
                     if (a->start_ns != b->start_ns)
                       return a->start_ns < b->start_ns;
                     return a->end_ns > b->end_ns;  // the enclosing one first
                   });
  std::vector<std::vector<u64>> open;  // per track: ends of enclosing runs
  for (RunItem *r : *runs) {
    u32 t = 0;
    for (; t < open.size(); ++t) {
      auto &stack = open[t];
      while (!stack.empty() && stack.back() <= r->start_ns) stack.pop_back();
      if (stack.empty() || r->end_ns <= stack.back()) break;
    }
    if (t == open.size()) open.emplace_back();
    open[t].push_back(r->end_ns);
    r->track = t;
  }
  return static_cast<u32>(open.size());
}

/** Gives every run at least 1 ns, and starts each run no earlier than the
 * end of every run of its worker that ended (by the trace clock) before it
 * started. A run shorter than a nanosecond would otherwise end where it
 * starts, and a viewer would nest it in the next run starting at that
 * nanosecond (or bind that run's flow to it). Moves starts and ends by a
 * few ns at most; keeps the order in which each worker's runs ran. */
void SpreadRuns(std::vector<RunItem> *runs) {
  std::vector<RunItem *> order;
  order.reserve(runs->size());
  for (RunItem &r : *runs) order.push_back(&r);
  // Of two runs of a worker starting on the same tick the shorter ran first
  // (a subtask starts after its parent).
  std::stable_sort(order.begin(), order.end(),
                   [](const RunItem *a, const RunItem *b) {
                     if (a->worker != b->worker) return a->worker < b->worker;
                     if (a->e.start != b->e.start)
                       return a->e.start < b->e.start;
                     return a->e.end < b->e.end;
                   });
  using Ended = std::pair<u64, u64>;  // (end tick, end ns)
  std::priority_queue<Ended, std::vector<Ended>, std::greater<Ended>> ended;
  u64 floor_ns = 0;
  u32 worker = UINT32_MAX;
  for (RunItem *r : order) {
    if (r->worker != worker) {
      ended = {};
      floor_ns = 0;
      worker = r->worker;
    }
    while (!ended.empty() && ended.top().first <= r->e.start) {
      floor_ns = std::max(floor_ns, ended.top().second);
      ended.pop();
    }
    r->start_ns = std::max(r->start_ns, floor_ns);
    r->end_ns = std::max(r->end_ns, r->start_ns + 1);
    ended.push({r->e.end, r->end_ns});
  }
}

/** The thread id of track `track` of worker `worker`: never 0, which the
 * Perfetto importer replaces with the pid (merging worker 0's track with
 * another). */
u64 Tid(u32 worker, u32 track) { return u64{track} * 1000 + worker + 1; }

}  // namespace

std::string TraceManager::DumpJson() {
  std::lock_guard<std::mutex> lock(mu_);
  const ServerConfig &conf = CHI_CONFIG_MANAGER->config();
  const u64 node = CHI_IPC->node_id();
  // Calibrate the trace clock against the steady clock over as long a span
  // as there is (at least 2 ms).
  u64 ns1 = hshm::NowNs();
  if (ns1 < ns0_ + 2000000) {
    usleep(static_cast<useconds_t>((ns0_ + 2000000 - ns1) / 1000 + 1));
  }
  ns1 = hshm::NowNs();
  u64 tick1 = TraceClock();
  double ns_per_tick = tick1 > tick0_ ? static_cast<double>(ns1 - ns0_) /
                                            static_cast<double>(tick1 - tick0_)
                                      : 1.0;
  auto to_ns = [&](u64 tick) -> u64 {
    double d = static_cast<double>(static_cast<i64>(tick - tick0_));
    return static_cast<u64>(static_cast<i64>(ns0_) +
                            static_cast<i64>(d * ns_per_tick));
  };
  // Copy every ring.
  std::vector<RunItem> runs;
  struct Submit {
    TraceEvent e;
    u32 worker;
  };
  std::vector<Submit> submits;
  u64 lost = 0;
  for (u32 w = 0; w < rings_.size(); ++w) {
    if (!rings_[w]) continue;
    u64 written = rings_[w]->Written();
    std::vector<TraceEvent> evs = rings_[w]->Snapshot(w);
    if (written > evs.size()) lost += written - evs.size();
    for (const TraceEvent &e : evs) {
      if (e.kind == TraceKind::kRun) {
        RunItem r;
        r.e = e;
        r.worker = w;
        runs.push_back(r);
      } else if (e.kind == TraceKind::kSubmit) {
        submits.push_back(Submit{e, w});
      }
    }
  }
  u64 base = UINT64_MAX;
  for (auto &r : runs) base = std::min(base, to_ns(r.e.start));
  for (auto &s : submits) base = std::min(base, to_ns(s.e.start));
  for (auto &r : runs) {
    r.start_ns = to_ns(r.e.start) - base;
    u64 end = to_ns(r.e.end) - base;
    r.end_ns = std::max(end, r.start_ns);
  }
  SpreadRuns(&runs);
  // Parent links: per task block, events in time order; a run right after
  // a submission of the same block (same pool, method and task node) is that
  // submission's subtask.
  struct KeyItem {
    u64 t;
    bool submit;
    size_t index;
  };
  std::unordered_map<u64, std::vector<KeyItem>> by_key;
  for (size_t i = 0; i < submits.size(); ++i) {
    if (submits[i].e.key == kTraceNoKey) continue;
    by_key[submits[i].e.key].push_back(
        KeyItem{to_ns(submits[i].e.start) - base, true, i});
  }
  for (size_t i = 0; i < runs.size(); ++i) {
    if (runs[i].e.key == kTraceNoKey) continue;
    auto it = by_key.find(runs[i].e.key);
    if (it != by_key.end()) {
      it->second.push_back(KeyItem{runs[i].start_ns, false, i});
    }
  }
  for (auto &kv : by_key) {
    auto &items = kv.second;
    std::sort(items.begin(), items.end(),
              [](const KeyItem &a, const KeyItem &b) {
                if (a.t != b.t) return a.t < b.t;
                return a.submit && !b.submit;  // a submission precedes its run
              });
    const KeyItem *prev = nullptr;
    for (const KeyItem &k : items) {
      if (!k.submit && prev && prev->submit) {
        RunItem &r = runs[k.index];
        const Submit &s = submits[prev->index];
        // A submission whose task ran elsewhere (forwarded to another node,
        // or failed before running) leaves no run here; a later task in the
        // same block is not its subtask: the headers must agree too.
        if (!(r.e.node == s.e.node) || r.e.pool != s.e.pool ||
            r.e.method != s.e.method) {
          prev = &k;
          continue;
        }
        r.parent = s.e.id;
        r.submit_ns = prev->t;
        r.submit_worker = s.worker;
      }
      prev = &k;
    }
  }
  // Tracks per worker.
  std::vector<std::vector<RunItem *>> per_worker(rings_.size());
  for (auto &r : runs) per_worker[r.worker].push_back(&r);
  std::vector<u32> tracks(rings_.size(), 0);
  for (u32 w = 0; w < per_worker.size(); ++w) {
    tracks[w] = AssignTracks(&per_worker[w]);
  }
  std::unordered_map<u64, const RunItem *> by_id;
  for (auto &r : runs) by_id[r.e.id] = &r;

  MethodNameTable names;
  std::string out;
  out.reserve(256 + runs.size() * 330);
  char buf[256];
  out += "{\"otherData\":{\"node\":";
  out += std::to_string(node);
  out += ",\"clock\":\"steady\",\"base_ns\":" +
         std::to_string(base == UINT64_MAX ? 0 : base);
  out += ",\"runs\":" + std::to_string(runs.size());
  out += ",\"lost\":" + std::to_string(lost);
  out += "},\"traceEvents\":[";
  bool first = true;
  auto sep = [&] {
    if (!first) out += ",\n";
    first = false;
  };
  sep();
  out += "{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":" +
         std::to_string(node) + ",\"tid\":" + std::to_string(Tid(0, 0)) +
         ",\"args\":{\"name\":";
  AppendJsonString(&out, "chimaera node " + std::to_string(node));
  out += "}}";
  for (u32 w = 0; w < rings_.size(); ++w) {
    std::string kind =
        w < conf.num_low_latency_ ? "low latency" : "high latency";
    for (u32 t = 0; t < std::max<u32>(tracks[w], 1); ++t) {
      std::string name = "worker " + std::to_string(w) + " (" + kind + ")";
      if (t > 0) name += " overlap " + std::to_string(t);
      sep();
      snprintf(buf, sizeof(buf),
               "{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%" PRIu64
               ",\"tid\":%" PRIu64 ",\"args\":{\"name\":",
               node, Tid(w, t));
      out += buf;
      AppendJsonString(&out, name);
      out += "}}";
      sep();
      snprintf(buf, sizeof(buf),
               "{\"ph\":\"M\",\"name\":\"thread_sort_index\",\"pid\":%" PRIu64
               ",\"tid\":%" PRIu64 ",\"args\":{\"sort_index\":%" PRIu64 "}}",
               node, Tid(w, t), u64{w} * 1000 + t);
      out += buf;
    }
  }
  for (const RunItem &r : runs) {
    sep();
    out += "{\"ph\":\"X\",\"cat\":\"task\",\"name\":";
    AppendJsonString(&out, names.Name(r.e.pool, r.e.method));
    snprintf(buf, sizeof(buf),
             ",\"pid\":%" PRIu64 ",\"tid\":%" PRIu64 ",\"ts\":", node,
             Tid(r.worker, r.track));
    out += buf;
    AppendMicros(&out, r.start_ns);
    out += ",\"dur\":";
    AppendMicros(&out, r.end_ns - r.start_ns);
    snprintf(buf, sizeof(buf),
             ",\"args\":{\"id\":%" PRIu64 ",\"parent\":%" PRIu64
             ",\"pool\":\"%u.%u\",\"method\":%u,\"task_node\":\"%" PRIu64
             ".%u\",\"worker\":%u,\"status\":%u}}",
             r.e.id, r.parent, r.e.pool.node_id_, r.e.pool.unique_, r.e.method,
             r.e.node.major_, r.e.node.minor_, r.worker, r.e.rc);
    out += buf;
  }
  // Flow arrows: from the parent (at the submission) to the child's start.
  for (const RunItem &r : runs) {
    if (!r.parent) continue;
    auto p = by_id.find(r.parent);
    if (p == by_id.end()) continue;  // still running, or overwritten
    sep();
    snprintf(
        buf, sizeof(buf),
        "{\"ph\":\"s\",\"cat\":\"subtask\",\"name\":\"subtask\",\"id\":%" PRIu64
        ",\"pid\":%" PRIu64 ",\"tid\":%" PRIu64 ",\"ts\":",
        r.e.id, node, Tid(p->second->worker, p->second->track));
    out += buf;
    AppendMicros(&out, std::max(r.submit_ns, p->second->start_ns));
    out += "}";
    sep();
    snprintf(buf, sizeof(buf),
             "{\"ph\":\"f\",\"bp\":\"e\",\"cat\":\"subtask\",\"name\":"
             "\"subtask\",\"id\":%" PRIu64 ",\"pid\":%" PRIu64
             ",\"tid\":%" PRIu64 ",\"ts\":",
             r.e.id, node, Tid(r.worker, r.track));
    out += buf;
    AppendMicros(&out, r.start_ns);
    out += "}";
  }
  out += "]}\n";
  return out;
}

Status TraceManager::WriteFile(const std::string &path) {
  std::string json = DumpJson();
  std::string tmp = path + ".tmp";
  // Never blocks (a FIFO there would, for ever, at exit) and never follows
  // a link: only a regular file is written.
  int fd = open(
      tmp.c_str(),
      O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0644);
  if (fd < 0) {
    return Status::Internal("cannot write " + tmp + ": " +
                            std::strerror(errno));
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return Status::Internal("cannot write " + tmp + ": not a regular file");
  }
  FILE *f = fdopen(fd, "w");
  if (!f) {
    close(fd);
    return Status::Internal("cannot write " + tmp);
  }
  bool ok = fwrite(json.data(), 1, json.size(), f) == json.size();
  ok = (fclose(f) == 0) && ok;
  if (!ok || rename(tmp.c_str(), path.c_str()) != 0) {
    remove(tmp.c_str());
    return Status::Internal("cannot write " + path);
  }
  return Status::Ok();
}

Status TraceManager::CheckOutput(const std::string &path) {
  if (path.empty()) return Status::Ok();
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? std::string(".")
                          : slash == 0               ? std::string("/")
                                                     : path.substr(0, slash);
  struct stat st;
  if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    return Status::InvalidArgument("key 'trace.output': " + path +
                                   " is a directory");
  }
  if (access(dir.c_str(), W_OK | X_OK) != 0) {
    return Status::InvalidArgument(
        "key 'trace.output': cannot write a file "
        "in " +
        dir + " (" + std::strerror(errno) + ")");
  }
  return Status::Ok();
}

void TraceManager::WriteOutputAtExit() {
  if (output_.empty() || !ever_enabled_.load(std::memory_order_relaxed)) {
    return;
  }
  Status s = WriteFile(output_);
  if (!s.ok()) {
    fprintf(stderr, "chimaera: trace: %s\n", s.ToString().c_str());
  } else {
    fprintf(stderr, "chimaera: trace written to %s\n", output_.c_str());
  }
}

}  // namespace chi
