// chimaera_trace: starts, stops, clears and dumps the task trace of the
// local runtime (see chimaera/trace.h). The dump is Chrome trace-event JSON:
// open it in the Perfetto UI (ui.perfetto.dev) or chrome://tracing.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "chimaera/chimaera.h"

namespace {

/** Writes `text` to `path` ("-": stdout); false (with a message) on error. */
bool WriteText(const std::string &path, const std::string &text) {
  if (path == "-") {
    return fwrite(text.data(), 1, text.size(), stdout) == text.size();
  }
  FILE *f = fopen(path.c_str(), "w");
  if (!f) {
    fprintf(stderr, "chimaera_trace: cannot open %s for writing\n",
            path.c_str());
    return false;
  }
  bool ok = fwrite(text.data(), 1, text.size(), f) == text.size();
  ok = (fclose(f) == 0) && ok;
  if (!ok) fprintf(stderr, "chimaera_trace: cannot write %s\n", path.c_str());
  return ok;
}

/** Prints `s` as this tool's error and returns exit status 1. */
int Fail(const hshm::Status &s) {
  fprintf(stderr, "chimaera_trace: %s\n", s.ToString().c_str());
  return 1;
}

}  // namespace

/** Runs the requested operations in the order dump, stop, clear, start, so
 * that `--dump f --clear` saves then resets and `--clear --start` begins a
 * fresh recording; then prints the state (to stderr if dumping to stdout). */
int main(int argc, char **argv) {
  CLI::App app{
      "Control the task trace of the Chimaera runtime named by "
      "CHI_SERVER_CONF (or the default configuration). Operations run in the "
      "order --dump, --stop, --clear, --start; the state is printed last."};
  bool start = false, stop = false, clear = false;
  std::string dump;
  app.add_flag("--start", start, "Start recording task timelines");
  app.add_flag("--stop", stop, "Stop recording (the records stay)");
  app.add_flag("--clear", clear, "Forget what was recorded so far");
  app.add_option("--dump", dump,
                 "Write the trace as Chrome trace-event JSON to this file "
                 "('-': stdout); open it in ui.perfetto.dev");
  CLI11_PARSE(app, argc, argv);

  hshm::Status s = CHIMAERA_CLIENT_INIT();
  if (!s.ok()) return Fail(s);
  chi::admin::Client admin;
  int rc = 0;
  if (!dump.empty()) {
    auto json = admin.TraceDump();
    if (!json.ok()) {
      rc = Fail(json.status());
    } else if (!WriteText(dump, *json)) {
      rc = 1;
    }
  }
  using chi::admin::TraceOp;
  for (auto [wanted, op] :
       {std::pair<bool, chi::u32>{stop, chi::admin::kTraceStop},
        {clear, chi::admin::kTraceClear},
        {start, chi::admin::kTraceStart}}) {
    if (!wanted || rc != 0) continue;
    auto on = admin.TraceControl(op);
    if (!on.ok()) rc = Fail(on.status());
  }
  if (rc == 0) {
    chi::u64 recorded = 0;
    auto on = admin.TraceControl(chi::admin::kTraceQuery, &recorded);
    if (!on.ok()) {
      rc = Fail(on.status());
    } else {
      fprintf(dump == "-" ? stderr : stdout,
              "tracing %s, %llu records since the last clear\n",
              *on ? "on" : "off", static_cast<unsigned long long>(recorded));
    }
  }
  CHIMAERA->ClientFinalize();
  return rc;
}
