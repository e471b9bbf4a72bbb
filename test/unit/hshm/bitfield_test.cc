#include "hermes_shm/bitfield.h"

#include <gtest/gtest.h>

#include <thread>
#include <type_traits>

#include "hermes_shm/singleton.h"

namespace {

TEST(BitfieldTest, SetUnsetAnyAll) {
  hshm::ibitfield f;
  EXPECT_FALSE(f.Any(0xff));
  f.SetBits(BIT_OPT(hshm::u32, 0) | BIT_OPT(hshm::u32, 3));
  EXPECT_TRUE(f.Any(1));
  EXPECT_TRUE(f.All(0x9));
  EXPECT_FALSE(f.All(0xb));
  EXPECT_FALSE(f.All(0));
  f.UnsetBits(1);
  EXPECT_EQ(f.Get(), 8u);
  f.Clear();
  EXPECT_EQ(f.Get(), 0u);
  static_assert(std::is_trivially_copyable<hshm::ibitfield>::value,
                "bitfields live in shared memory");
}

struct Counter {
  int value = 42;
};

TEST(SingletonTest, SameInstanceAcrossThreads) {
  Counter *a = hshm::Singleton<Counter>::GetInstance();
  Counter *b = nullptr;
  std::thread t([&] { b = hshm::Singleton<Counter>::GetInstance(); });
  t.join();
  EXPECT_EQ(a, b);
  EXPECT_EQ(a->value, 42);
}

}  // namespace
