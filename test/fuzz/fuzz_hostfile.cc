// libFuzzer target for the hostfile parser
// (hshm::ConfigParse::ParseHostfileText, which ParseHostfile runs on a file's
// contents, and ExpandHostPattern beneath it). Parsing must return a Status
// for any text and never crash, hang or exhaust memory.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "hermes_shm/config/config_parse.h"

/** Parses one input as a hostfile and checks the hosts it yields. */
extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string text(reinterpret_cast<const char *>(data), size);
  hshm::StatusOr<std::vector<std::string>> hosts =
      hshm::ConfigParse::ParseHostfileText(text);
  if (!hosts.ok()) {
    if (hosts.status().message().empty()) abort();
    return 0;
  }
  if (hosts->size() > hshm::ConfigParse::kMaxHosts) abort();
  for (const std::string &host : *hosts) {
    // Comments, blank lines and whitespace never become (part of) a host.
    if (host.empty() ||
        host.find_first_of("#[] \t\n\r\v\f") != std::string::npos) {
      abort();
    }
  }
  return 0;
}
