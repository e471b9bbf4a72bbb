// chimaera_stat: prints what a live runtime holds (node, workers and their
// lanes, pools and containers, task counts).
//
//   chimaera_stat                 the report, once
//   chimaera_stat --json          the same data as one JSON object
//   chimaera_stat --watch [S]     refresh every S seconds (default 1) with
//                                 tasks/s per worker and pool; Ctrl-C stops,
//                                 --count N stops after N refreshes
//   chimaera_stat --wait [S]      wait up to S seconds (default 30) for a
//                                 runtime to answer first (for scripts)
//
// Exit status: 0 on success, 1 if no runtime answered (within --wait) or a
// request failed, 2 for bad arguments.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>

#include "chimaera/chimaera.h"
#include "json_lite.h"

namespace {

volatile sig_atomic_t g_stop = 0;

/** SIGINT/SIGTERM: ends --watch after the current refresh. */
void OnSignal(int) { g_stop = 1; }

/** Seconds since an arbitrary start (monotonic). */
double NowSec() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/** Sleeps `secs`, waking early on Ctrl-C. */
void SleepInterruptible(double secs) {
  double until = NowSec() + secs;
  while (!g_stop && NowSec() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(
        static_cast<int>(std::min(50.0, (until - NowSec()) * 1000) + 1)));
  }
}

/** Attaches to the runtime, retrying until `wait_s` seconds have passed
 * (once if `wait_s` is negative). */
hshm::Status Connect(double wait_s) {
  double deadline = NowSec() + std::max(0.0, wait_s);
  hshm::Status s;
  for (;;) {
    s = CHIMAERA_CLIENT_INIT();
    if (s.ok() || wait_s < 0 || g_stop || NowSec() >= deadline) break;
    SleepInterruptible(std::min(0.2, deadline - NowSec()));
  }
  if (!s.ok() && wait_s >= 0) {
    return hshm::Status(s.code(), "no runtime answered within " +
                                      std::to_string(static_cast<int>(wait_s)) +
                                      " s: " + s.message());
  }
  return s;
}

/** Completed-task counters of one sample, keyed "worker N" / "pool ID". */
using Counters = std::map<std::string, double>;

/** The per-worker and per-pool completed counts of a --json report. */
Counters ReadCounters(const chi_tools::JsonValue &stat) {
  Counters c;
  for (auto &w : stat["workers"].array) {
    c["worker " + std::to_string(static_cast<long>(w["id"].Num()))] =
        w["tasks_completed"].Num();
  }
  for (auto &p : stat["pools"].array) {
    c["pool " + p["id"].str + " '" + p["name"].str + "'"] =
        p["tasks_completed"].Num();
  }
  return c;
}

/** Prints tasks/s between two samples `secs` apart, as text or as a JSON
 * object member list. */
std::string Rates(const Counters &prev, const Counters &cur, double secs,
                  bool json) {
  std::string out;
  char buf[256];
  for (auto &[key, value] : cur) {
    auto it = prev.find(key);
    double delta = it == prev.end() ? value : value - it->second;
    double rate = secs > 0 && delta > 0 ? delta / secs : 0;
    if (json) {
      std::string k;
      for (char ch : key) k += (ch == '"' || ch == '\\') ? '_' : ch;
      snprintf(buf, sizeof(buf), "%s\"%s\":%.1f", out.empty() ? "" : ",",
               k.c_str(), rate);
    } else {
      snprintf(buf, sizeof(buf), "  %-40s %12.1f tasks/s\n", key.c_str(), rate);
    }
    out += buf;
  }
  return out;
}

/** Reads an optional seconds argument: "" keeps `*out` (the default);
 * false if it is not a number in [lo, hi]. */
bool ParseSeconds(const std::string &arg, double lo, double hi, double *out) {
  if (arg.empty()) return true;
  char *end = nullptr;
  double v = std::strtod(arg.c_str(), &end);
  if (end == arg.c_str() || *end != '\0' || !(v >= lo && v <= hi)) {
    return false;
  }
  *out = v;
  return true;
}

}  // namespace

int main(int argc, char **argv) {
  CLI::App app{"Print the state of the local Chimaera runtime."};
  bool json = false;
  std::string watch_arg, wait_arg;
  unsigned count = 0;
  app.add_flag("--json", json, "Print one JSON object (per refresh)");
  CLI::Option *watch_opt =
      app.add_option("--watch", watch_arg,
                     "Refresh every SECONDS (default 1) with tasks/s deltas; "
                     "Ctrl-C stops")
          ->expected(0, 1);
  app.add_option("--count", count, "With --watch: stop after N refreshes")
      ->check(CLI::Range(1u, 1000000u))
      ->needs(watch_opt);
  app.add_option("--wait", wait_arg,
                 "Wait up to SECONDS (default 30) for a runtime to answer")
      ->expected(0, 1);
  CLI11_PARSE(app, argc, argv);
  const bool watching = app.count("--watch") > 0;
  const bool waiting = app.count("--wait") > 0;
  double watch = 1.0, wait = 30.0;
  if ((watching && !ParseSeconds(watch_arg, 0.05, 3600, &watch)) ||
      (waiting && !ParseSeconds(wait_arg, 0, 86400, &wait))) {
    fprintf(stderr,
            "chimaera_stat: --watch takes 0.05..3600 seconds, --wait "
            "0..86400\n");
    return 2;
  }
  signal(SIGINT, OnSignal);
  signal(SIGTERM, OnSignal);

  hshm::Status s = Connect(waiting ? wait : -1);
  if (!s.ok()) {
    fprintf(stderr, "chimaera_stat: %s\n", s.ToString().c_str());
    return 1;
  }
  chi::admin::Client admin;
  const bool tty = isatty(STDOUT_FILENO);
  Counters prev;
  double prev_t = 0;
  int rc = 0;
  for (unsigned n = 1;; ++n) {
    auto text = json || watching ? admin.StatJson() : admin.Stat();
    double now = NowSec();
    if (!text.ok()) {
      fprintf(stderr, "chimaera_stat: %s\n", text.status().ToString().c_str());
      rc = 1;
      break;
    }
    if (!watching) {
      fputs(text->c_str(), stdout);
      break;
    }
    chi_tools::JsonValue stat;
    std::string error;
    if (!chi_tools::JsonParser::Parse(*text, &stat, &error)) {
      fprintf(stderr, "chimaera_stat: malformed report from the runtime: %s\n",
              error.c_str());
      rc = 1;
      break;
    }
    Counters cur = ReadCounters(stat);
    double secs = n == 1 ? 0 : now - prev_t;
    if (json) {
      // One line per refresh: the report and the rates since the last one.
      std::string body = *text;
      while (!body.empty() && body.back() == '\n') body.pop_back();
      printf(
          "{\"refresh\":%u,\"interval_s\":%.3f,\"rates\":{%s},\"stat\":%s}\n",
          n, secs, Rates(prev, cur, secs, true).c_str(), body.c_str());
    } else {
      auto report = admin.Stat();
      if (tty) fputs("\033[H\033[2J", stdout);  // home + clear screen
      printf("chimaera_stat: refresh %u (every %.2f s; Ctrl-C stops)\n", n,
             watch);
      fputs(report.ok() ? report->c_str() : "(report failed)\n", stdout);
      if (n == 1) {
        printf("rates: after the next refresh\n");
      } else {
        printf("rates over the last %.2f s:\n%s", secs,
               Rates(prev, cur, secs, false).c_str());
      }
    }
    fflush(stdout);
    prev = cur;
    prev_t = now;
    if (g_stop || (count && n >= count)) break;
    SleepInterruptible(watch);
    if (g_stop) break;
  }
  CHIMAERA->ClientFinalize();
  return rc;
}
