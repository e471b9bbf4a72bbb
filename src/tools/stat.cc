// chimaera_stat: prints what a live runtime holds (node, workers and their
// lanes, pools and containers, task counts).
#include <CLI/CLI.hpp>
#include <cstdio>

#include "chimaera/chimaera.h"

int main(int argc, char **argv) {
  CLI::App app{"Print the state of the local Chimaera runtime."};
  CLI11_PARSE(app, argc, argv);
  hshm::Status s = CHIMAERA_CLIENT_INIT();
  if (!s.ok()) {
    fprintf(stderr, "chimaera_stat: %s\n", s.ToString().c_str());
    return 1;
  }
  chi::admin::Client admin;
  auto text = admin.Stat();
  if (!text.ok()) {
    fprintf(stderr, "chimaera_stat: %s\n", text.status().ToString().c_str());
    return 1;
  }
  fputs(text->c_str(), stdout);
  CHIMAERA->ClientFinalize();
  return 0;
}
