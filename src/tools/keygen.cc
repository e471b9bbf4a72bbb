// chimaera_keygen: writes the cluster CURVE key pair file that every node of
// a cluster names in network.curve_key_file (mode 0600), or checks one.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "hermes_shm/lightbeam/curve.h"

namespace {

/** Prints `s` as chimaera_keygen's error and returns the exit status 1. */
int Fail(const hshm::Status &s) {
  fprintf(stderr, "chimaera_keygen: %s\n", s.ToString().c_str());
  return 1;
}

}  // namespace

/** Parses the command line, then writes (or checks) one key file. */
int main(int argc, char **argv) {
  CLI::App app{
      "Write a Chimaera cluster CURVE key pair (ZeroMQ Z85) to a new file "
      "with mode 0600. Copy it to every node and set network.curve: true and "
      "network.curve_key_file in the runtime configuration."};
  std::string out, check;
  bool force = false;
  auto *o = app.add_option("-o,--output", out, "Key file to write");
  auto *c = app.add_option("--check", check,
                           "Check an existing key file instead and print its "
                           "public key (the same on every node)");
  o->excludes(c);
  app.add_flag("-f,--force", force, "Replace an existing output file")
      ->needs(o);
  CLI11_PARSE(app, argc, argv);
  if (out.empty() && check.empty()) {
    fprintf(stderr, "chimaera_keygen: give -o FILE (or --check FILE)\n%s",
            app.help().c_str());
    return 2;
  }
  if (!hshm::lbm::CurveAvailable()) {
    return Fail(hshm::Status::Unimplemented(
        "this libzmq was built without CURVE support"));
  }
  if (!check.empty()) {
    auto keys = hshm::lbm::ReadCurveKeyFile(check);
    if (!keys.ok()) return Fail(keys.status());
    printf("%s: valid; public key %s\n", check.c_str(),
           keys->public_key.c_str());
    return 0;
  }
  auto keys = hshm::lbm::NewCurveKeyPair();
  if (!keys.ok()) return Fail(keys.status());
  hshm::Status s = hshm::lbm::WriteCurveKeyFile(out, *keys, force);
  if (!s.ok()) return Fail(s);
  printf("wrote the cluster key pair to %s (mode 0600); public key %s\n",
         out.c_str(), keys->public_key.c_str());
  return 0;
}
