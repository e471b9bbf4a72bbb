#include "chimaera/module_manager.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <sstream>

#include "hermes_shm/config/config_parse.h"

namespace chi {

namespace {

/** Splits a colon-separated path list. */
std::vector<std::string> SplitPaths(const char *list) {
  std::vector<std::string> out;
  if (!list) return out;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ':')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

}  // namespace

void ModuleManager::Init(const std::vector<std::string> &config_paths) {
  std::lock_guard<std::mutex> lock(mu_);
  paths_.clear();
  for (auto &p : SplitPaths(std::getenv("CHI_MODULE_PATH"))) {
    paths_.push_back(hshm::ConfigParse::ExpandPath(p));
  }
  for (auto &p : config_paths) paths_.push_back(p);
#ifdef CHIMAERA_BUILD_MODULE_DIR
  paths_.push_back(CHIMAERA_BUILD_MODULE_DIR);
#endif
  // The directory libchimaera_runtime.so was loaded from: installed modules
  // sit beside it, wherever the tree was installed.
  Dl_info info;
  if (dladdr(reinterpret_cast<void *>(&SplitPaths), &info) && info.dli_fname) {
    std::string lib = info.dli_fname;
    size_t slash = lib.rfind('/');
    if (slash != std::string::npos) paths_.push_back(lib.substr(0, slash));
  }
}

void ModuleManager::RegisterBuiltin(const std::string &name,
                                    ContainerFactory factory) {
  std::lock_guard<std::mutex> lock(mu_);
  factories_[name] = factory;
  origins_[name] = "(built in)";
}

StatusOr<ContainerFactory> ModuleManager::GetFactory(const std::string &name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = factories_.find(name);
  if (it != factories_.end()) return it->second;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) {
      return Status::InvalidArgument("invalid module name '" + name + "'");
    }
  }
  if (name.empty()) return Status::InvalidArgument("empty module name");
  std::string file = "lib" + name + "_runtime.so";
  std::string tried;
  for (const std::string &dir : paths_) {
    std::string path = dir + "/" + file;
    if (access(path.c_str(), R_OK) != 0) {
      tried += " " + dir;
      continue;
    }
    void *h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      return Status::InvalidArgument("cannot load module '" + name + "' from " +
                                     path + ": " + dlerror());
    }
    auto abi =
        reinterpret_cast<u32 (*)()>(dlsym(h, "chimaera_module_abi_version"));
    auto mod_name =
        reinterpret_cast<const char *(*)()>(dlsym(h, "chimaera_module_name"));
    auto factory = reinterpret_cast<ContainerFactory>(
        dlsym(h, "chimaera_create_container"));
    if (!abi || !mod_name || !factory) {
      dlclose(h);
      return Status::InvalidArgument(
          "module library " + path +
          " lacks the CHI_TASK_CC symbols (chimaera_module_abi_version, "
          "chimaera_module_name, chimaera_create_container)");
    }
    if (abi() != kModuleAbiVersion) {
      u32 v = abi();
      dlclose(h);
      return Status::InvalidArgument(
          "module '" + name + "' (" + path + ") was built for ABI version " +
          std::to_string(v) + " but this runtime has ABI version " +
          std::to_string(kModuleAbiVersion) + "; rebuild the module");
    }
    if (name != mod_name()) {
      std::string other = mod_name();
      dlclose(h);
      return Status::InvalidArgument("library " + path + " declares module '" +
                                     other + "', not '" + name + "'");
    }
    factories_[name] = factory;
    origins_[name] = path;
    return factory;
  }
  return Status::NotFound("module '" + name + "' not found: no " + file +
                          " in" + (tried.empty() ? " (no paths)" : tried));
}

std::vector<std::string> ModuleManager::ListModules() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (auto &kv : factories_) out.push_back(kv.first);
  return out;
}

std::vector<std::string> ModuleManager::paths() {
  std::lock_guard<std::mutex> lock(mu_);
  return paths_;
}

}  // namespace chi
