// ChiMod loading (runtime only): finds lib<module>_runtime.so in the module
// search paths, checks its ABI version and keeps its container factory.
//
// A module's runtime library exports its factory with one line:
//   CHI_TASK_CC(MyContainer, "my_module");
#ifndef CHIMAERA_MODULE_MANAGER_H_
#define CHIMAERA_MODULE_MANAGER_H_

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "chimaera/container.h"
#include "hermes_shm/singleton.h"

/** Exports the factory of container class `CLASS` for module `NAME` from a
 * ChiMod runtime library. Use once, in a source file of the module. */
#define CHI_TASK_CC(CLASS, NAME)                                              \
  extern "C" {                                                                \
  __attribute__((visibility("default"))) chi::u32                             \
  chimaera_module_abi_version() {                                             \
    return chi::kModuleAbiVersion;                                            \
  }                                                                           \
  __attribute__((visibility("default"))) const char *chimaera_module_name() { \
    return NAME;                                                              \
  }                                                                           \
  __attribute__((visibility("default"))) chi::Container *                     \
  chimaera_create_container() {                                               \
    return new CLASS();                                                       \
  }                                                                           \
  }

namespace chi {

/** Makes a new container of a module. */
using ContainerFactory = Container *(*)();

/** Loaded modules by name. Any thread may call any member. */
class ModuleManager {
 public:
  /** Where the running program and runtime library sit, for SearchPaths. */
  struct Origin {
    std::string exe;          ///< The running executable (/proc/self/exe).
    std::string runtime_lib;  ///< Directory of libchimaera_runtime.so.
    std::string bin_to_lib;   ///< Install bin -> lib relative path ("../lib").
    std::string build_tree;   ///< The build tree this library was built in.
    std::string build_module_dir;  ///< Where the build tree's ChiMods sit.
    /** The configured install prefix: a program installed there counts as
     * installed even when the prefix lies inside the build tree. */
    std::string install_prefix;
  };
  /** Records the directories to search, in the order SearchPaths gives. */
  void Init(const std::vector<std::string> &config_paths);
  /** The module search order: `config_paths`, then the entries of
   * `env_list` (CHI_MODULE_PATH, colon-separated), then the install library
   * directories (the runtime library's own directory and bin_to_lib beside
   * the executable, when they exist), and last the build tree's module
   * directory, only when the executable or the runtime library lies inside
   * that build tree and neither lies under the install prefix (an installed
   * runtime never searches it). Duplicates are
   * dropped. Pure: touches the file system only to test directories. */
  static std::vector<std::string> SearchPaths(
      const std::vector<std::string> &config_paths, const char *env_list,
      const Origin &origin);
  /** The Origin of this process and library. */
  static Origin CurrentOrigin();
  /** Registers a module compiled into the runtime (e.g. the admin module). */
  void RegisterBuiltin(const std::string &name, ContainerFactory factory);
  /** The factory of module `name`, loading lib<name>_runtime.so if needed.
   * Errors: NotFound (no such library in any path, with the paths tried),
   * InvalidArgument (missing symbol, ABI mismatch, name mismatch). */
  StatusOr<ContainerFactory> GetFactory(const std::string &name);
  /** Names of loaded modules. */
  std::vector<std::string> ListModules();
  /** The search paths, in order. */
  std::vector<std::string> paths();

 private:
  std::mutex mu_;
  std::vector<std::string> paths_;
  std::map<std::string, ContainerFactory> factories_;
  std::map<std::string, std::string> origins_;  ///< name -> library path
};

}  // namespace chi

#define CHI_MODULE_MANAGER \
  (::hshm::Singleton<::chi::ModuleManager>::GetInstance())

#endif  // CHIMAERA_MODULE_MANAGER_H_
