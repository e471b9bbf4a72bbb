// A GoogleTest fixture for ChiMod tests: every test gets its own runtime
// subprocess (chi_test::RuntimeProcess) and this process attaches to it as a
// client; the client detaches and the runtime stops cleanly afterwards.
#ifndef CHIMAERA_TEST_CHIMODS_CHIMOD_TEST_FIXTURE_H_
#define CHIMAERA_TEST_CHIMODS_CHIMOD_TEST_FIXTURE_H_

#include <gtest/gtest.h>

#include <random>
#include <string>

#include "../../src/tools/json_lite.h"
#include "chimaera/chimaera.h"
#include "runtime_fixture.h"

namespace chi_test {

/** Starts a runtime before each test and stops it after. Tests use the
 * module clients directly. */
class ChiModTest : public ::testing::Test {
 protected:
  /** A runtime with the default test configuration. */
  ChiModTest() = default;
  /** A runtime with `extra_yaml` added to the test configuration. */
  explicit ChiModTest(const std::string &extra_yaml) : rt_(extra_yaml) {}

  /** Starts the runtime and attaches this process to it. */
  void SetUp() override {
    hshm::Status s = rt_.Start();
    ASSERT_TRUE(s.ok()) << s << "\n" << rt_.Log();
    s = CHIMAERA_CLIENT_INIT();
    ASSERT_TRUE(s.ok()) << s;
  }
  /** Detaches, then stops the runtime and checks it exited cleanly (so a
   * module that crashed the runtime fails the test). */
  void TearDown() override {
    CHIMAERA->ClientFinalize();
    hshm::Status s = rt_.Stop();
    EXPECT_TRUE(s.ok()) << s << "\n" << rt_.Log();
  }

  RuntimeProcess rt_;
};

/** A runtime with two low-latency workers (0 and 1) over four
 * process-queue lanes: worker 0 drains lanes 0 and 2, worker 1 lanes 1 and
 * 3 (a task addressed to container c uses lane c). */
class TwoWorkerTest : public ChiModTest {
 protected:
  TwoWorkerTest()
      : ChiModTest("workers:\n  low_latency: 2\n  high_latency: 4\n") {}
};

/** The attached runtime's chimaera_stat --json report, parsed (an empty
 * value, and a test failure, if it cannot be read or parsed). */
inline chi_tools::JsonValue StatJson() {
  chi_tools::JsonValue v;
  auto text = chi::admin::Client().StatJson();
  EXPECT_TRUE(text.ok()) << text.status();
  if (!text.ok()) return v;
  std::string error;
  EXPECT_TRUE(chi_tools::JsonParser::Parse(*text, &v, &error))
      << error << ": " << *text;
  return v;
}

/** `size` pseudo-random bytes (fixed seed per call site's `seed`). */
inline std::string RandomBytes(size_t size, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::string s(size, '\0');
  for (size_t i = 0; i < size; ++i) s[i] = static_cast<char>(gen() & 0xff);
  return s;
}

/** `size` bytes of repetitive text (compresses well). */
inline std::string CompressibleBytes(size_t size) {
  static const char kText[] =
      "Chimaera runs tasks in containers of pools; tasks live in shared "
      "memory. ";
  std::string s;
  s.reserve(size);
  while (s.size() < size) {
    s.append(kText, std::min(sizeof(kText) - 1, size - s.size()));
  }
  return s;
}

}  // namespace chi_test

#endif  // CHIMAERA_TEST_CHIMODS_CHIMOD_TEST_FIXTURE_H_
