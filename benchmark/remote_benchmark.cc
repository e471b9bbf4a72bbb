// remote_benchmark: node-to-node cost of a Chimaera cluster, measured from a
// client attached to one node (CHI_SERVER_CONF, CHI_SERVER_ADDR), each figure
// next to a raw ZeroMQ baseline measured in this same program over TCP on
// --zmq-host (the baseline server is a thread of this process bound to a free
// port there; the client side runs on the main thread):
//
// 1. Remote no-op round trip: synchronous admin AsyncNoop(GetGlobalId(
//    --target)) + Wait + DelTask (container i of the admin pool lives on node
//    i + 1: from node 1 the default target 1 is node 2). Also the local no-op
//    for reference. Baseline: ZeroMQ REQ/REP round trip of a 64-byte message.
// 2. Remote asynchronous throughput with W no-ops in flight (a ring: wait for
//    the oldest, resubmit), for --seconds or --max-tasks each. Baseline: a
//    ZeroMQ DEALER -> ROUTER pipeline of 64-byte messages with W outstanding
//    (the server thread echoes each one).
// 3. Broadcast latency: synchronous small_message AsyncNoop(GetGlobalBcast())
//    to pools of 2, 3 and 4 containers (container c lives on node c % nodes +
//    1, so a k-container pool spans nodes 1..k), plus an admin broadcast to
//    every node; reported next to the remote single-call latency.
// 4. 1 MiB remote echo: synchronous small_message AsyncEcho to the container
//    on node 2 (a pool of --target + 1 containers). MB/s = payload bytes (one
//    way) / time, like a ping-pong. Baseline: a ZeroMQ REQ/REP round trip of
//    a 1 MiB message. The full reply is compared with the input outside the
//    timed part, in both.
//
// Every no-op must succeed and every echo must return the input: any failure
// makes the exit status 1. A plain program (not Google Benchmark): the
// cluster must already run (see scripts/run_remote_benchmark.sh).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "bench_util.h"
#include "chimaera/chimaera.h"
#include "small_message/small_message_client.h"

namespace {

using Clock = std::chrono::steady_clock;
using hshm::u32;
using hshm::u64;

/** Bytes in a reported megabyte. */
constexpr double kMB = 1e6;
/** Bytes of every baseline message of the latency and pipeline tests. */
constexpr size_t kSmallMsg = 64;

/** How long one task may take before the run is declared broken (us). */
u64 g_task_timeout_us = 10 * 1000 * 1000;

using chi_bench::ElapsedNs;

/** Seconds between two steady_clock readings. */
double ElapsedSec(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

/** The time point `seconds` after `start`. */
Clock::time_point After(Clock::time_point start, double seconds) {
  return start + std::chrono::duration_cast<Clock::duration>(
                     std::chrono::duration<double>(seconds));
}

/** The byte at offset `i` of every echo payload (differs between
 * neighbouring offsets, so a shifted copy is caught). */
char PatternByte(u64 i) { return static_cast<char>((i * 131 + 7) & 0xff); }

/** Failures of the run; `fatal` once a task hung (the run stops). */
struct Errors {
  u64 count = 0;
  std::string first;
  bool fatal = false;

  /** Records a failure described by `what` (printed at once). */
  void Fail(const std::string &what) {
    if (count++ == 0) first = what;
    if (count <= 5)
      fprintf(stderr, "remote_benchmark: ERROR: %s\n", what.c_str());
  }
};

/** Order statistics of a sample of durations (ns). */
struct Summary {
  size_t n = 0;
  double min = 0;
  double p50 = 0;
  double p99 = 0;
  double p999 = 0;
  double mean = 0;
  double total = 0;  // Sum of the sample.
};

using chi_bench::Quantile;

/** Sorts `samples` and summarizes them (zeros when empty). */
Summary Summarize(std::vector<u64> &samples) {
  Summary s;
  s.n = samples.size();
  if (samples.empty()) return s;
  std::sort(samples.begin(), samples.end());
  s.min = static_cast<double>(samples.front());
  s.p50 = Quantile(samples, 0.5);
  s.p99 = Quantile(samples, 0.99);
  s.p999 = Quantile(samples, 0.999);
  for (u64 v : samples) s.total += static_cast<double>(v);
  s.mean = s.total / static_cast<double>(samples.size());
  return s;
}

/** Prints one latency line (microseconds). */
void PrintLatency(const std::string &what, const Summary &s,
                  const std::string &note = "") {
  printf(
      "  %-36s n=%-6zu min %8.1f  p50 %8.1f  mean %8.1f  p99 %8.1f  p99.9 "
      "%8.1f us%s\n",
      what.c_str(), s.n, s.min / 1e3, s.p50 / 1e3, s.mean / 1e3, s.p99 / 1e3,
      s.p999 / 1e3, note.c_str());
}

/** `a / b`, or 0 when `b` is 0. */
double Ratio(double a, double b) { return b > 0 ? a / b : 0.0; }

/** The note printed when a run stopped at its time cap before `want`. */
std::string CapNote(size_t got, u64 want) {
  if (got >= want) return "";
  return "  [time cap: " + std::to_string(got) + " of " + std::to_string(want) +
         "]";
}

// ---------------------------------------------------------------------------
// Chimaera side.
// ---------------------------------------------------------------------------

/** Waits for `t` (at most g_task_timeout_us). Returns false, after recording
 * a fatal error, if it did not complete: the task is then left alone. */
template <typename TaskT>
bool Await(const chi::FullPtr<TaskT> &t, const char *what, Errors *err) {
  if (t->WaitFor(g_task_timeout_us)) return true;
  err->Fail(std::string(what) + " did not complete within " +
            std::to_string(g_task_timeout_us / 1000) + " ms");
  err->fatal = true;
  return false;
}

/** Waits for no-op `t`, checks its status and frees it. False on failure. */
template <typename TaskT>
bool ReapNoop(chi::FullPtr<TaskT> &t, Errors *err) {
  if (!Await(t, "a no-op", err)) return false;
  chi::Status s = t->GetStatus();
  CHI_IPC->DelTask(t);
  t = chi::FullPtr<TaskT>();
  if (!s.ok()) {
    err->Fail("no-op failed: " + s.ToString());
    return false;
  }
  return true;
}

/** Runs one no-op of `client` on `dom` to completion. False on failure. */
template <typename ClientT>
bool OneNoop(ClientT &client, const chi::DomainQuery &dom, Errors *err) {
  auto t = client.AsyncNoop(dom);
  if (t.IsNull()) {
    err->Fail("main segment is full");
    return false;
  }
  return ReapNoop(t, err);
}

/** Times `n` synchronous no-ops of `client` on `dom` (AsyncNoop + Wait +
 * DelTask each) after `warmup` untimed ones; stops early after `max_seconds`
 * or on an error. Returns the per-task round trips (ns). */
template <typename ClientT>
std::vector<u64> MeasureNoop(ClientT &client, const chi::DomainQuery &dom,
                             u64 n, u64 warmup, double max_seconds,
                             Errors *err) {
  std::vector<u64> samples;
  for (u64 i = 0; i < warmup; ++i) {
    if (!OneNoop(client, dom, err)) return samples;
  }
  samples.reserve(n);
  Clock::time_point deadline = After(Clock::now(), max_seconds);
  for (u64 i = 0; i < n; ++i) {
    Clock::time_point a = Clock::now();
    bool ok = OneNoop(client, dom, err);
    Clock::time_point b = Clock::now();
    if (!ok) break;
    samples.push_back(ElapsedNs(a, b));
    if (b >= deadline) break;
  }
  return samples;
}

/** Keeps `depth` admin no-ops on `dom` in flight (a ring: when full, reaps
 * the oldest) until `seconds` pass or `max_tasks` were submitted, then drains
 * the ring. Returns completed tasks/s over the whole run. */
double NoopThroughput(chi::admin::Client &admin, const chi::DomainQuery &dom,
                      u32 depth, double seconds, u64 max_tasks, u64 *done,
                      Errors *err) {
  std::vector<chi::FullPtr<chi::admin::NoopTask>> ring(depth);
  size_t head = 0;  // Oldest in-flight slot once the ring is full.
  u64 submitted = 0;
  *done = 0;
  Clock::time_point start = Clock::now();
  Clock::time_point deadline = After(start, seconds);
  bool ok = true;
  while (ok && submitted < max_tasks) {
    // Check the clock every 16 submissions to keep it off the hot path.
    if ((submitted & 15) == 0 && Clock::now() >= deadline) break;
    chi::FullPtr<chi::admin::NoopTask> &slot = ring[head];
    if (!slot.IsNull()) {
      if (!ReapNoop(slot, err)) {
        ok = false;
        break;
      }
      (*done)++;
    }
    slot = admin.AsyncNoop(dom);
    if (slot.IsNull()) {
      err->Fail("main segment is full");
      break;
    }
    head = (head + 1) % depth;
    submitted++;
  }
  for (size_t i = 0; i < depth && !err->fatal; ++i) {
    chi::FullPtr<chi::admin::NoopTask> &slot = ring[(head + i) % depth];
    if (!slot.IsNull() && ReapNoop(slot, err)) (*done)++;
  }
  return static_cast<double>(*done) / ElapsedSec(start, Clock::now());
}

/** Times `iters` synchronous echoes of the `size` bytes of `input` (which
 * holds the pattern) by container `dom` of `client`, after `warmup` untimed
 * ones. The timed part of each is submit + Wait and FreeBuffer(reply) +
 * DelTask; the check of every reply byte in between is not timed. Stops on
 * an error. Returns the per-echo times (ns). */
std::vector<u64> MeasureEcho(chi::small_message::Client &client,
                             const chi::FullPtr<char> &input, u64 size,
                             const chi::DomainQuery &dom, u64 iters, u64 warmup,
                             Errors *err) {
  std::vector<u64> samples;
  std::vector<char> want(size);
  for (u64 i = 0; i < size; ++i) want[i] = PatternByte(i);
  for (u64 i = 0; i < warmup + iters; ++i) {
    Clock::time_point a = Clock::now();
    auto t = client.AsyncEcho(input.shm_, size, dom);
    if (t.IsNull()) {
      err->Fail("main segment is full");
      break;
    }
    if (!Await(t, "an echo", err)) break;
    Clock::time_point b = Clock::now();
    chi::Status s = t->GetStatus();
    bool ok = false;
    if (!s.ok()) {
      err->Fail("echo failed: " + s.ToString());
    } else if (t->ret_size_ != size) {
      err->Fail("echo returned " + std::to_string(t->ret_size_) + " of " +
                std::to_string(size) + " bytes");
    } else {
      chi::FullPtr<char> ret(t->ret_);
      if (ret.IsNull() || std::memcmp(ret.ptr_, want.data(), size) != 0) {
        err->Fail("echo reply bytes differ from the input");
      } else {
        ok = true;
      }
    }
    Clock::time_point c = Clock::now();
    (void)CHI_IPC->FreeBuffer(t->ret_);
    CHI_IPC->DelTask(t);
    Clock::time_point d = Clock::now();
    if (!ok) break;
    if (i >= warmup) samples.push_back(ElapsedNs(a, b) + ElapsedNs(c, d));
  }
  return samples;
}

// ---------------------------------------------------------------------------
// Raw ZeroMQ baselines.
// ---------------------------------------------------------------------------

/** An echo server thread: a REP socket (replies to each request with it) or
 * a ROUTER socket (sends each message back to its sender), bound to a free
 * port of `host`. Stops when destroyed. */
class ZmqEchoServer {
 public:
  ZmqEchoServer(zmq::context_t &ctx, zmq::socket_type type,
                const std::string &host)
      : sock_(ctx, type), router_(type == zmq::socket_type::router) {
    sock_.set(zmq::sockopt::linger, 0);
    sock_.set(zmq::sockopt::sndhwm, 0);  // No limit: a ROUTER would drop.
    sock_.set(zmq::sockopt::rcvhwm, 0);
    sock_.set(zmq::sockopt::rcvtimeo, 50);  // To notice stop_.
    if (router_) sock_.set(zmq::sockopt::router_mandatory, 1);
    sock_.bind("tcp://" + host + ":*");
    endpoint_ = sock_.get(zmq::sockopt::last_endpoint);
    thread_ = std::thread([this] { Serve(); });
  }
  ~ZmqEchoServer() {
    stop_.store(true);
    thread_.join();
  }
  ZmqEchoServer(const ZmqEchoServer &) = delete;
  ZmqEchoServer &operator=(const ZmqEchoServer &) = delete;

  /** Where clients connect ("tcp://host:port"). */
  const std::string &endpoint() const { return endpoint_; }
  /** False if the server hit a ZeroMQ error. */
  bool ok() const { return !failed_.load(); }

 private:
  void Serve() {
    zmq::message_t id, msg;
    try {
      while (!stop_.load(std::memory_order_relaxed)) {
        if (router_) {
          if (!sock_.recv(id, zmq::recv_flags::none)) continue;
          (void)sock_.recv(msg, zmq::recv_flags::none);  // Same message.
          sock_.send(id, zmq::send_flags::sndmore);
          sock_.send(msg, zmq::send_flags::none);
        } else {
          if (!sock_.recv(msg, zmq::recv_flags::none)) continue;
          sock_.send(msg, zmq::send_flags::none);
        }
      }
    } catch (const zmq::error_t &e) {
      fprintf(stderr, "remote_benchmark: ZeroMQ echo server: %s\n", e.what());
      failed_.store(true);
    }
  }

  zmq::socket_t sock_;
  bool router_;
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> failed_{false};
  std::thread thread_;
};

/** Times `n` REQ/REP round trips of a `size`-byte message (the pattern) to
 * the REP server at `endpoint`, after `warmup` untimed ones; every reply is
 * compared with the message outside the timed part. Stops on an error or
 * after `max_seconds`. Returns the per-trip times (ns). */
std::vector<u64> MeasureZmqReqRep(zmq::context_t &ctx,
                                  const std::string &endpoint, size_t size,
                                  u64 n, u64 warmup, double max_seconds,
                                  Errors *err) {
  std::vector<u64> samples;
  std::vector<char> payload(size);
  for (size_t i = 0; i < size; ++i) payload[i] = PatternByte(i);
  try {
    zmq::socket_t req(ctx, zmq::socket_type::req);
    req.set(zmq::sockopt::linger, 0);
    req.set(zmq::sockopt::rcvtimeo,
            static_cast<int>(std::min<u64>(g_task_timeout_us / 1000, 1 << 30)));
    req.connect(endpoint);
    zmq::message_t reply;
    samples.reserve(n);
    Clock::time_point deadline = Clock::time_point::max();
    for (u64 i = 0; i < warmup + n; ++i) {
      if (i == warmup) deadline = After(Clock::now(), max_seconds);
      Clock::time_point a = Clock::now();
      req.send(zmq::buffer(payload), zmq::send_flags::none);
      bool got = req.recv(reply, zmq::recv_flags::none).has_value();
      Clock::time_point b = Clock::now();
      if (!got) {
        err->Fail("ZeroMQ REQ/REP reply timed out");
        break;
      }
      if (reply.size() != size ||
          std::memcmp(reply.data(), payload.data(), size) != 0) {
        err->Fail("ZeroMQ REQ/REP reply differs from the request");
        break;
      }
      if (i >= warmup) {
        samples.push_back(ElapsedNs(a, b));
        if (b >= deadline) break;
      }
    }
  } catch (const zmq::error_t &e) {
    err->Fail(std::string("ZeroMQ REQ/REP: ") + e.what());
  }
  return samples;
}

/** Keeps `depth` 64-byte messages outstanding from a DEALER to the ROUTER
 * echo server at `endpoint` (sends one more per reply) until `seconds` pass
 * or `max_msgs` were sent, then drains. Returns replies/s. */
double ZmqPipeline(zmq::context_t &ctx, const std::string &endpoint, u32 depth,
                   double seconds, u64 max_msgs, u64 *done, Errors *err) {
  *done = 0;
  char payload[kSmallMsg];
  for (size_t i = 0; i < kSmallMsg; ++i) payload[i] = PatternByte(i);
  Clock::time_point start = Clock::now();
  try {
    zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
    dealer.set(zmq::sockopt::linger, 0);
    dealer.set(zmq::sockopt::sndhwm, 0);
    dealer.set(zmq::sockopt::rcvhwm, 0);
    dealer.set(zmq::sockopt::rcvtimeo, static_cast<int>(std::min<u64>(
                                           g_task_timeout_us / 1000, 1 << 30)));
    dealer.connect(endpoint);
    zmq::message_t reply;
    u64 sent = 0;
    // The first message waits for the connection; start the clock after it.
    dealer.send(zmq::buffer(payload, kSmallMsg), zmq::send_flags::none);
    if (!dealer.recv(reply, zmq::recv_flags::none)) {
      err->Fail("ZeroMQ pipeline: no reply");
      return 0;
    }
    start = Clock::now();
    Clock::time_point deadline = After(start, seconds);
    for (; sent < depth && sent < max_msgs; ++sent) {
      dealer.send(zmq::buffer(payload, kSmallMsg), zmq::send_flags::none);
    }
    bool more = true;
    while (*done < sent) {
      if (!dealer.recv(reply, zmq::recv_flags::none)) {
        err->Fail("ZeroMQ pipeline reply timed out");
        return 0;
      }
      if (reply.size() != kSmallMsg ||
          std::memcmp(reply.data(), payload, kSmallMsg) != 0) {
        err->Fail("ZeroMQ pipeline reply differs from the message");
        return 0;
      }
      (*done)++;
      if (more && (sent & 15) == 0 && Clock::now() >= deadline) more = false;
      if (more && sent < max_msgs) {
        dealer.send(zmq::buffer(payload, kSmallMsg), zmq::send_flags::none);
        sent++;
      }
    }
  } catch (const zmq::error_t &e) {
    err->Fail(std::string("ZeroMQ pipeline: ") + e.what());
    return 0;
  }
  return static_cast<double>(*done) / ElapsedSec(start, Clock::now());
}

// ---------------------------------------------------------------------------
// The report.
// ---------------------------------------------------------------------------

/** One row of the final summary table. */
struct Row {
  std::string metric;
  std::string chimaera;
  std::string baseline;
  std::string ratio;
};

/** printf into a std::string. */
template <typename... Args>
std::string Fmt(const char *fmt, Args... args) {
  char buf[128];
  snprintf(buf, sizeof(buf), fmt, args...);
  return buf;
}

/** "1.23 us" from nanoseconds. */
std::string Us(double ns) { return Fmt("%.1f us", ns / 1e3); }

void PrintTable(const std::vector<Row> &rows) {
  printf("  %-38s %16s %16s %12s\n", "metric", "Chimaera", "raw ZeroMQ",
         "ratio");
  for (const Row &r : rows) {
    printf("  %-38s %16s %16s %12s\n", r.metric.c_str(), r.chimaera.c_str(),
           r.baseline.c_str(), r.ratio.c_str());
  }
}

/** The number of admin containers (= nodes), or 0 on an error. */
u32 CountNodes(Errors *err) {
  chi::StatusOr<std::vector<chi::admin::PoolDesc>> pools =
      chi::admin::Client().ListPools();
  if (!pools.ok()) {
    err->Fail("ListPools: " + pools.status().ToString());
    return 0;
  }
  for (const chi::admin::PoolDesc &d : *pools) {
    if (d.id == chi::kAdminPoolId) return d.num_containers;
  }
  err->Fail("ListPools does not list the admin pool");
  return 0;
}

}  // namespace

/** Parses options, runs the four measurements and prints the report. */
int main(int argc, char **argv) {
  CLI::App app{
      "Measure remote (node-to-node) Chimaera task latency, throughput, "
      "broadcast and 1 MiB echo from the node CHI_SERVER_ADDR names, each "
      "beside a raw ZeroMQ TCP baseline measured in this program."};
  u64 tasks = 20000;
  u64 warmup = 2000;
  double seconds = 1.0;
  u64 max_tasks = 200000;
  u64 bcast_iters = 2000;
  u64 echo_iters = 200;
  u64 echo_size = u64{1} << 20;
  double max_seconds = 15.0;
  double bcast_max_seconds = 5.0;
  u32 target = 1;
  u32 timeout_ms = 10000;
  std::string zmq_host = "127.0.0.3";
  bool skip_local = false, skip_throughput = false, skip_bcast = false,
       skip_echo = false;
  app.add_option("-n,--tasks", tasks,
                 "Timed synchronous no-ops (remote and local) and ZeroMQ "
                 "64-byte round trips")
      ->check(CLI::Range(static_cast<u64>(1), static_cast<u64>(1) << 32));
  app.add_option("--warmup", warmup, "Untimed no-ops / round trips first")
      ->check(CLI::Range(static_cast<u64>(0), static_cast<u64>(1) << 32));
  app.add_option("-s,--seconds", seconds,
                 "Duration of each throughput configuration")
      ->check(CLI::Range(0.01, 60.0));
  app.add_option("--max-tasks", max_tasks,
                 "Task (message) cap of each throughput configuration")
      ->check(CLI::Range(static_cast<u64>(1), static_cast<u64>(1) << 40));
  app.add_option("--bcast-iters", bcast_iters,
                 "Timed synchronous broadcasts per node count")
      ->check(CLI::Range(static_cast<u64>(1), static_cast<u64>(1) << 32));
  app.add_option("--echo-iters", echo_iters, "Timed synchronous echoes")
      ->check(CLI::Range(static_cast<u64>(1), static_cast<u64>(1) << 32));
  app.add_option("--echo-size", echo_size, "Bytes of each echo")
      ->check(CLI::Range(static_cast<u64>(1), static_cast<u64>(1) << 30));
  app.add_option("--max-seconds", max_seconds,
                 "Time cap of each no-op and 64 B latency run (it stops early "
                 "past it)")
      ->check(CLI::Range(0.01, 3600.0));
  app.add_option("--bcast-max-seconds", bcast_max_seconds,
                 "Time cap of each broadcast latency run")
      ->check(CLI::Range(0.01, 3600.0));
  app.add_option("--target", target,
                 "Global id of the remote container (admin container i is on "
                 "node i+1)")
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--zmq-host", zmq_host,
                 "Address the ZeroMQ baseline server binds (a free port)");
  app.add_option("--timeout-ms", timeout_ms,
                 "A task or reply slower than this is an error")
      ->check(CLI::Range(1, 1 << 30));
  app.add_flag("--skip-local", skip_local, "Skip the local no-op reference");
  app.add_flag("--skip-throughput", skip_throughput,
               "Skip the throughput test");
  app.add_flag("--skip-bcast", skip_bcast, "Skip the broadcast test");
  app.add_flag("--skip-echo", skip_echo, "Skip the 1 MiB echo test");
  CLI11_PARSE(app, argc, argv);
  g_task_timeout_us = u64{timeout_ms} * 1000;
  // Line by line even into a pipe or file, so a killed run shows its progress.
  setvbuf(stdout, nullptr, _IOLBF, 0);

  if (!chi_bench::ConnectAndPrintHeader("remote_benchmark")) return 1;
  Errors err;
  u32 nodes = CountNodes(&err);
  u32 my_node = CHI_IPC->node_id();
  u32 target_node = nodes ? target % nodes + 1 : 0;
  printf(
      "cluster of %u node%s; remote target: admin container %u on node %u; "
      "ZeroMQ baseline on %s\n",
      nodes, nodes == 1 ? "" : "s", target, target_node, zmq_host.c_str());
  if (nodes < 2 || target_node == my_node) {
    fprintf(stderr,
            "remote_benchmark: needs a cluster of at least 2 nodes and a "
            "target on another node (attached to node %u, target node %u)\n",
            my_node, target_node);
    CHIMAERA->ClientFinalize();
    return 1;
  }
  printf("\n");
  zmq::context_t ctx(1);
  chi::admin::Client admin;
  chi::DomainQuery remote = chi::DomainQuery::GetGlobalId(target);
  std::vector<Row> table;
  Clock::time_point run_start = Clock::now();

  // 1. Remote no-op latency.
  printf(
      "1. Synchronous no-op round trip (AsyncNoop+Wait+DelTask; %llu "
      "warm-up, %llu timed)\n",
      static_cast<unsigned long long>(warmup),
      static_cast<unsigned long long>(tasks));
  std::vector<u64> rem =
      MeasureNoop(admin, remote, tasks, warmup, max_seconds, &err);
  Summary rem_s = Summarize(rem);
  PrintLatency("remote no-op (node " + std::to_string(my_node) + " -> " +
                   std::to_string(target_node) + ")",
               rem_s, CapNote(rem_s.n, tasks));
  Summary loc_s;
  if (!skip_local && !err.fatal) {
    std::vector<u64> loc =
        MeasureNoop(admin, chi::DomainQuery::GetLocalHash(0), tasks,
                    std::min<u64>(warmup, 1000), max_seconds, &err);
    loc_s = Summarize(loc);
    PrintLatency("local no-op (node " + std::to_string(my_node) + ")", loc_s,
                 CapNote(loc_s.n, tasks));
  }
  Summary zrr_s;
  {
    ZmqEchoServer server(ctx, zmq::socket_type::rep, zmq_host);
    std::vector<u64> z = MeasureZmqReqRep(ctx, server.endpoint(), kSmallMsg,
                                          tasks, warmup, max_seconds, &err);
    zrr_s = Summarize(z);
    PrintLatency("ZeroMQ REQ/REP 64 B " + server.endpoint().substr(6), zrr_s,
                 CapNote(zrr_s.n, tasks));
    if (!server.ok()) err.Fail("the ZeroMQ REP server failed");
  }
  printf("  ratio remote/raw: p50 %.2fx  p99 %.2fx;  remote/local p50 %.2fx\n",
         Ratio(rem_s.p50, zrr_s.p50), Ratio(rem_s.p99, zrr_s.p99),
         Ratio(rem_s.p50, loc_s.p50));
  table.push_back({"remote no-op p50", Us(rem_s.p50), Us(zrr_s.p50),
                   Fmt("%.2fx", Ratio(rem_s.p50, zrr_s.p50))});
  table.push_back({"remote no-op p99", Us(rem_s.p99), Us(zrr_s.p99),
                   Fmt("%.2fx", Ratio(rem_s.p99, zrr_s.p99))});
  table.push_back({"remote no-op p99.9", Us(rem_s.p999), "", ""});
  table.push_back({"remote no-op mean", Us(rem_s.mean), "", ""});
  if (!skip_local) {
    table.push_back({"local no-op p50 (reference)", Us(loc_s.p50), "",
                     Fmt("%.4fx", Ratio(loc_s.p50, zrr_s.p50))});
  }

  // 2. Remote throughput.
  if (!skip_throughput && !err.fatal) {
    printf(
        "\n2. Remote async no-op throughput (ring of W to node %u; %.2f s or "
        "%llu tasks each) vs ZeroMQ DEALER->ROUTER 64 B pipeline\n",
        target_node, seconds, static_cast<unsigned long long>(max_tasks));
    u64 done = 0;
    // Untimed warm-up of the remote path with tasks in flight.
    NoopThroughput(admin, remote, 16, std::min(0.1, seconds), max_tasks, &done,
                   &err);
    ZmqEchoServer server(ctx, zmq::socket_type::router, zmq_host);
    for (u32 depth : {1u, 16u, 256u, 1024u}) {
      if (err.fatal) break;
      u64 cdone = 0, zdone = 0;
      double c = NoopThroughput(admin, remote, depth, seconds, max_tasks,
                                &cdone, &err);
      double z = ZmqPipeline(ctx, server.endpoint(), depth, seconds, max_tasks,
                             &zdone, &err);
      printf(
          "  W=%4u  Chimaera %10.0f tasks/s (%7llu)  ZeroMQ %10.0f msgs/s "
          "(%7llu)  ratio %.3fx\n",
          depth, c, static_cast<unsigned long long>(cdone), z,
          static_cast<unsigned long long>(zdone), Ratio(c, z));
      table.push_back({"remote throughput W=" + std::to_string(depth),
                       Fmt("%.0f /s", c), Fmt("%.0f /s", z),
                       Fmt("%.3fx", Ratio(c, z))});
    }
    if (!server.ok()) err.Fail("the ZeroMQ ROUTER server failed");
  }

  // 3. Broadcast latency.
  if (!skip_bcast && !err.fatal) {
    printf(
        "\n3. Synchronous broadcast no-op (GetGlobalBcast; %llu timed each), "
        "ratio to the remote single call p50 (%.1f us)\n",
        static_cast<unsigned long long>(bcast_iters), rem_s.p50 / 1e3);
    u64 bwarm = std::max<u64>(bcast_iters / 10, 10);
    for (u32 k = 2; k <= std::min<u32>(nodes, 4) && !err.fatal; ++k) {
      chi::small_message::Client pool;
      std::string name = "remote_bench_bcast" + std::to_string(k);
      hshm::Status s = pool.Create(name, k);
      if (!s.ok()) {
        err.Fail("small_message pool " + name + ": " + s.ToString());
        break;
      }
      std::vector<u64> b =
          MeasureNoop(pool, chi::DomainQuery::GetGlobalBcast(), bcast_iters,
                      bwarm, bcast_max_seconds, &err);
      Summary bs = Summarize(b);
      double ratio = Ratio(bs.p50, rem_s.p50);
      std::string note = Fmt("  p50 %.2fx remote", ratio);
      if (k == 4)
        note += ratio <= 2.0 ? " (aim <= 2x: met)" : " (aim <= 2x: NOT met)";
      note += CapNote(bs.n, bcast_iters);
      PrintLatency("bcast to " + std::to_string(k) + " nodes (pool of " +
                       std::to_string(k) + ")",
                   bs, note);
      table.push_back({"bcast " + std::to_string(k) + " nodes p50", Us(bs.p50),
                       "", Fmt("%.2fx rem", ratio)});
      table.push_back({"bcast " + std::to_string(k) + " nodes p99", Us(bs.p99),
                       "", Fmt("%.2fx rem", Ratio(bs.p99, rem_s.p99))});
    }
    if (!err.fatal) {
      std::vector<u64> b =
          MeasureNoop(admin, chi::DomainQuery::GetGlobalBcast(), bcast_iters,
                      bwarm, bcast_max_seconds, &err);
      Summary bs = Summarize(b);
      double ratio = Ratio(bs.p50, rem_s.p50);
      PrintLatency(
          "admin bcast to all " + std::to_string(nodes) + " nodes", bs,
          Fmt("  p50 %.2fx remote", ratio) +
              (ratio <= 2.0 ? " (aim <= 2x: met)" : " (aim <= 2x: NOT met)") +
              CapNote(bs.n, bcast_iters));
      table.push_back({"admin bcast " + std::to_string(nodes) + " nodes p50",
                       Us(bs.p50), "", Fmt("%.2fx rem", ratio)});
    }
  }

  // 4. Large remote echo.
  double echo_mbps = 0;
  if (!skip_echo && !err.fatal) {
    printf(
        "\n4. Synchronous %llu-byte echo to node %u (%llu timed; MB/s = "
        "payload one way / time) vs ZeroMQ REQ/REP of the same size\n",
        static_cast<unsigned long long>(echo_size), target_node,
        static_cast<unsigned long long>(echo_iters));
    chi::small_message::Client echo;
    // Container `target` of a pool of target + 1 containers is on node
    // target % nodes + 1, like the admin container.
    hshm::Status s = echo.Create("remote_bench_echo", target + 1);
    chi::FullPtr<char> input;
    if (!s.ok()) {
      err.Fail("small_message pool remote_bench_echo: " + s.ToString());
    } else if ((input = CHI_IPC->AllocateBuffer(echo_size)).IsNull()) {
      err.Fail("cannot allocate the echo input: client_data is full");
    } else {
      for (u64 i = 0; i < echo_size; ++i) input.ptr_[i] = PatternByte(i);
      std::vector<u64> e =
          MeasureEcho(echo, input, echo_size, remote, echo_iters, 10, &err);
      (void)CHI_IPC->FreeBuffer(input.shm_);
      Summary es = Summarize(e);
      double mbps = es.total > 0 ? static_cast<double>(es.n * echo_size) / kMB /
                                       (es.total / 1e9)
                                 : 0.0;
      Summary zs;
      {
        ZmqEchoServer server(ctx, zmq::socket_type::rep, zmq_host);
        std::vector<u64> z =
            MeasureZmqReqRep(ctx, server.endpoint(), echo_size, echo_iters, 10,
                             max_seconds, &err);
        zs = Summarize(z);
        if (!server.ok()) err.Fail("the ZeroMQ REP server failed");
      }
      double zmbps = zs.total > 0 ? static_cast<double>(zs.n * echo_size) /
                                        kMB / (zs.total / 1e9)
                                  : 0.0;
      echo_mbps = mbps;
      PrintLatency("Chimaera echo", es, Fmt("  %8.1f MB/s", mbps));
      PrintLatency("ZeroMQ REQ/REP", zs, Fmt("  %8.1f MB/s", zmbps));
      double ratio = Ratio(mbps, zmbps);
      printf("  ratio Chimaera/raw MB/s: %.3fx %s\n", ratio,
             ratio >= 0.8 ? "(aim >= 0.8: met)" : "(aim >= 0.8: NOT met)");
      table.push_back({"1 MiB echo MB/s", Fmt("%.1f MB/s", mbps),
                       Fmt("%.1f MB/s", zmbps), Fmt("%.3fx", ratio)});
      table.push_back({"1 MiB echo p50", Us(es.p50), Us(zs.p50),
                       Fmt("%.2fx", Ratio(es.p50, zs.p50))});
    }
  }

  printf("\nSummary (node %u -> node %u, %u nodes, load average %s, %.1f s)\n",
         my_node, target_node, nodes, chi_bench::LoadAverage().c_str(),
         ElapsedSec(run_start, Clock::now()));
  PrintTable(table);
  printf(
      "  (ratio: Chimaera / raw ZeroMQ; 'rem': / the remote no-op of the "
      "same percentile; MB/s and rates: higher is better)\n");
  // One line for scripts (run_remote_benchmark.sh CURVE=compare).
  printf("\nRESULT remote_noop_p50_us=%.2f echo_mb_per_s=%.1f\n",
         rem_s.p50 / 1e3, echo_mbps);
  if (err.count) {
    printf("\nERRORS: %llu (first: %s)\n",
           static_cast<unsigned long long>(err.count), err.first.c_str());
  } else {
    printf("\nAll no-ops succeeded and every echo matched its input.\n");
  }
  if (err.fatal) {
    // A task is still in flight: leave without detaching under it.
    fflush(stdout);
    std::_Exit(1);
  }
  CHIMAERA->ClientFinalize();
  return err.count ? 1 : 0;
}
