#include "chimaera/module_manager.h"

#include <dlfcn.h>
#include <limits.h>
#include <sys/stat.h>
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

/** True if `path` names an existing directory. */
bool IsDir(const std::string &path) {
  struct stat st;
  return !path.empty() && stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

/** `path` with symbolic links and ".." resolved, or unchanged if it does not
 * exist. */
std::string Canonical(const std::string &path) {
  char buf[PATH_MAX];
  if (path.empty() || !realpath(path.c_str(), buf)) return path;
  return buf;
}

/** The directory part of `path` ("" if it has none). */
std::string DirName(const std::string &path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash);
}

/** True if `path` is `dir` or lies below it (both canonical). */
bool IsUnder(const std::string &path, const std::string &dir) {
  if (dir.empty() || path.compare(0, dir.size(), dir) != 0) return false;
  return path.size() == dir.size() || path[dir.size()] == '/';
}

}  // namespace

std::vector<std::string> ModuleManager::SearchPaths(
    const std::vector<std::string> &config_paths, const char *env_list,
    const Origin &origin) {
  std::vector<std::string> out;
  auto add = [&out](const std::string &p) {
    if (p.empty()) return;
    for (auto &q : out) {
      if (q == p) return;
    }
    out.push_back(p);
  };
  for (auto &p : config_paths) add(p);
  for (auto &p : SplitPaths(env_list)) add(hshm::ConfigParse::ExpandPath(p));
  // Installed modules sit beside the runtime library, wherever the tree was
  // installed (or relocated to).
  std::string lib = Canonical(origin.runtime_lib);
  if (IsDir(lib)) add(lib);
  std::string exe = Canonical(origin.exe);
  if (!exe.empty() && !origin.bin_to_lib.empty()) {
    std::string exe_lib = Canonical(DirName(exe) + "/" + origin.bin_to_lib);
    if (IsDir(exe_lib)) add(exe_lib);
  }
  // The build tree's modules only for a program running from the build tree.
  std::string tree = Canonical(origin.build_tree);
  std::string prefix = Canonical(origin.install_prefix);
  // Installed: under the prefix, unless the prefix holds the build tree
  // (e.g. a prefix of $HOME) and the program is in that tree: the deeper
  // of the two decides.
  auto installed_at = [&](const std::string &path) {
    return !prefix.empty() && IsUnder(path, prefix) &&
           (!IsUnder(path, tree) || IsUnder(prefix, tree));
  };
  const bool installed = installed_at(exe) || installed_at(lib);
  if (!origin.build_module_dir.empty() && !installed &&
      (IsUnder(exe, tree) || IsUnder(lib, tree))) {
    add(origin.build_module_dir);
  }
  return out;
}

ModuleManager::Origin ModuleManager::CurrentOrigin() {
  Origin o;
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n > 0) o.exe.assign(buf, static_cast<size_t>(n));
  Dl_info info;
  if (dladdr(reinterpret_cast<void *>(&SplitPaths), &info) && info.dli_fname) {
    o.runtime_lib = DirName(info.dli_fname);
  }
#ifdef CHIMAERA_BIN_TO_LIB
  o.bin_to_lib = CHIMAERA_BIN_TO_LIB;
#endif
#ifdef CHIMAERA_BUILD_TREE
  o.build_tree = CHIMAERA_BUILD_TREE;
#endif
#ifdef CHIMAERA_BUILD_MODULE_DIR
  o.build_module_dir = CHIMAERA_BUILD_MODULE_DIR;
#endif
#ifdef CHIMAERA_INSTALL_PREFIX
  o.install_prefix = CHIMAERA_INSTALL_PREFIX;
#endif
  return o;
}

void ModuleManager::Init(const std::vector<std::string> &config_paths) {
  std::vector<std::string> paths = SearchPaths(
      config_paths, std::getenv("CHI_MODULE_PATH"), CurrentOrigin());
  std::lock_guard<std::mutex> lock(mu_);
  paths_ = std::move(paths);
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
