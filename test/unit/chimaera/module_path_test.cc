// The module search order (ModuleManager::SearchPaths): configuration paths,
// CHI_MODULE_PATH, the install library directories, and the build tree only
// for programs that run from it.
#include <gtest/gtest.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "chimaera/module_manager.h"

namespace {

using chi::ModuleManager;

/** A scratch tree: <root>/prefix/{bin,lib} and <root>/build/{bin,mods}. */
class ModulePathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/chi_modpath_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    char real[PATH_MAX];
    ASSERT_NE(realpath(tmpl, real), nullptr);
    root_ = real;
    for (const char *d : {"/prefix", "/prefix/bin", "/prefix/lib", "/build",
                          "/build/bin", "/build/mods", "/conf", "/env"}) {
      ASSERT_EQ(mkdir((root_ + d).c_str(), 0700), 0) << d;
    }
  }
  void TearDown() override {
    std::string cmd = "rm -rf '" + root_ + "'";
    ASSERT_EQ(system(cmd.c_str()), 0);
  }
  /** An origin for a program at `exe` whose runtime library is in `lib`. */
  ModuleManager::Origin Origin(const std::string &exe, const std::string &lib) {
    ModuleManager::Origin o;
    o.exe = root_ + exe;
    o.runtime_lib = root_ + lib;
    o.bin_to_lib = "../lib";
    o.build_tree = root_ + "/build";
    o.build_module_dir = root_ + "/build/mods";
    return o;
  }
  std::string root_;
};

TEST_F(ModulePathTest, InstalledRuntimeSearchesConfigEnvThenItsLibNeverBuild) {
  std::string env = root_ + "/env:" + root_ + "/conf";  // a duplicate too
  auto paths = ModuleManager::SearchPaths(
      {root_ + "/conf"}, env.c_str(),
      Origin("/prefix/bin/chimaera_start_runtime", "/prefix/lib"));
  std::vector<std::string> want = {root_ + "/conf", root_ + "/env",
                                   root_ + "/prefix/lib"};
  EXPECT_EQ(paths, want);
}

// An install prefix inside the build tree (scripts/build.sh's default,
// <build>/install) is still an install: the build tree's modules are not
// searched.
TEST_F(ModulePathTest, AnInstallInsideTheBuildTreeNeverSearchesTheBuild) {
  ASSERT_EQ(mkdir((root_ + "/build/install").c_str(), 0700), 0);
  ASSERT_EQ(mkdir((root_ + "/build/install/bin").c_str(), 0700), 0);
  ASSERT_EQ(mkdir((root_ + "/build/install/lib").c_str(), 0700), 0);
  auto o =
      Origin("/build/install/bin/chimaera_start_runtime", "/build/install/lib");
  o.install_prefix = root_ + "/build/install";
  auto paths = ModuleManager::SearchPaths({}, nullptr, o);
  std::vector<std::string> want = {root_ + "/build/install/lib"};
  EXPECT_EQ(paths, want);
  // The build tree's own programs still search it.
  o = Origin("/build/bin/chimaera_start_runtime", "/build/bin");
  o.install_prefix = root_ + "/build/install";
  paths = ModuleManager::SearchPaths({}, nullptr, o);
  want = {root_ + "/build/bin", root_ + "/build/mods"};
  EXPECT_EQ(paths, want);
  // Also when the prefix holds the build tree (a prefix of $HOME with the
  // build under it): the build tree is the deeper of the two.
  o.install_prefix = root_;
  paths = ModuleManager::SearchPaths({}, nullptr, o);
  EXPECT_EQ(paths, want);
}

TEST_F(ModulePathTest, ExecutableLibDirIsFoundWithoutTheRuntimeLibrary) {
  // A runtime library found elsewhere (e.g. a copied program): the
  // directory beside the executable's bin/ still comes before the build.
  auto paths = ModuleManager::SearchPaths(
      {}, nullptr, Origin("/prefix/bin/chimaera_start_runtime", "/nowhere"));
  std::vector<std::string> want = {root_ + "/prefix/lib"};
  EXPECT_EQ(paths, want);
}

TEST_F(ModulePathTest, BuildTreeProgramSearchesTheBuildTreeLast) {
  auto paths = ModuleManager::SearchPaths(
      {root_ + "/conf"}, (root_ + "/env").c_str(),
      Origin("/build/bin/chimaera_start_runtime", "/build/bin"));
  std::vector<std::string> want = {root_ + "/conf", root_ + "/env",
                                   root_ + "/build/bin", root_ + "/build/mods"};
  EXPECT_EQ(paths, want);
}

TEST_F(ModulePathTest, ThisProcessSearchesTheBuildTreeItRunsFrom) {
  // This test binary runs from the build tree: its modules come last.
  ModuleManager::Origin o = ModuleManager::CurrentOrigin();
  EXPECT_FALSE(o.exe.empty());
  EXPECT_FALSE(o.runtime_lib.empty());
  auto paths = ModuleManager::SearchPaths({}, nullptr, o);
  ASSERT_FALSE(paths.empty());
  EXPECT_EQ(paths.back(), o.build_module_dir);
}

}  // namespace
