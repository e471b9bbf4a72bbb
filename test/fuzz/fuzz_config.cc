// libFuzzer target for the YAML configuration: chi::ServerConfig loaded from
// arbitrary text (hshm::BaseConfig::LoadText over yaml-cpp, then
// ServerConfig::ParseYAML with its range checks and ConfigParse::ParseSize).
// Loading must return a Status for any input and never throw or crash.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "chimaera/config_manager.h"

namespace {

/** The embedded defaults, parsed once (LoadText(yaml, true) would parse them
 * again for every input, which would dominate the run time). */
const chi::ServerConfig &Defaults() {
  static const chi::ServerConfig *defaults = [] {
    auto *config = new chi::ServerConfig();
    if (!config->LoadText("", /*with_default=*/true).ok()) abort();
    return config;
  }();
  return *defaults;
}

}  // namespace

/** Loads one input on top of the defaults, then on its own. */
extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::string yaml(reinterpret_cast<const char *>(data), size);
  chi::ServerConfig config = Defaults();
  hshm::Status with_defaults = config.LoadText(yaml, /*with_default=*/false);
  if (with_defaults.ok()) {
    // Accepted settings are within the documented ranges.
    if (config.num_low_latency_ < 1 || config.num_high_latency_ < 1 ||
        config.queue_depth_ < 2 || config.port_ < 1 || config.port_ > 65534) {
      abort();
    }
  } else if (with_defaults.message().empty()) {
    abort();  // Every error explains itself.
  }
  chi::ServerConfig bare;
  (void)bare.LoadText(yaml, /*with_default=*/false);
  return 0;
}
