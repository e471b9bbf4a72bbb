#include "hermes_shm/memory/pointer.h"

#include <gtest/gtest.h>

#include <type_traits>

#include "test_util.h"

namespace {

using hipc::FullPtr;
using hipc::Pointer;

TEST(PointerTest, NullConvention) {
  Pointer p;
  EXPECT_TRUE(p.IsNull());
  EXPECT_TRUE(Pointer::GetNull().IsNull());
  EXPECT_TRUE(hipc::OffsetPointer().IsNull());
  EXPECT_FALSE(Pointer(hipc::AllocatorId(1, 0), 0).IsNull());
  FullPtr<int> f;
  EXPECT_TRUE(f.IsNull());
  EXPECT_EQ(hipc::ToProcessAddress(p), nullptr);
  static_assert(std::is_trivially_copyable<Pointer>::value, "shm type");
  static_assert(sizeof(Pointer) == 16, "two words");
}

TEST(PointerTest, ConvertsBothWaysInO1) {
  hshm_test::ShmHeap<hipc::HeapAllocator> heap(1 << 20, 5);
  ASSERT_TRUE(heap.status().ok()) << heap.status();
  FullPtr<int> a = heap.alloc().NewObj<int>(HSHM_MCTX, 7);
  ASSERT_FALSE(a.IsNull());
  FullPtr<int> b(a.shm_);
  EXPECT_EQ(a.ptr_, b.ptr_);
  EXPECT_EQ(*b, 7);
  EXPECT_EQ(heap.alloc().ToPointer(a.ptr_), a.shm_);
  EXPECT_EQ(hipc::ToProcessAddressChecked(a.shm_, sizeof(int)),
            reinterpret_cast<char *>(a.ptr_));
  // Out of the region or an unknown allocator: null, never garbage.
  Pointer far(a.shm_.alloc_id_, heap.shm().data_size() - 2);
  EXPECT_EQ(hipc::ToProcessAddressChecked(far, 8), nullptr);
  Pointer unknown(hipc::AllocatorId(40, 0), 64);
  EXPECT_TRUE(FullPtr<int>(unknown).IsNull());
  Pointer bad_major(hipc::AllocatorId(1000, 0), 64);
  EXPECT_EQ(hipc::ToProcessAddress(bad_major), nullptr);
  EXPECT_TRUE(heap.alloc().DelObj(HSHM_MCTX, a).ok());
}

TEST(MemoryManagerTest, RegistrationErrors) {
  int dummy;
  char region[64];
  EXPECT_FALSE(
      HSHM_MEMORY_MANAGER->Register(hipc::AllocatorId(0, 0), region, 64, &dummy)
          .ok());
  EXPECT_FALSE(HSHM_MEMORY_MANAGER
                   ->Register(hipc::AllocatorId(64, 0), region, 64, &dummy)
                   .ok());
  hipc::AllocatorId id(9, 0);
  ASSERT_TRUE(HSHM_MEMORY_MANAGER->Register(id, region, 64, &dummy).ok());
  EXPECT_EQ(HSHM_MEMORY_MANAGER->Register(id, region, 64, &dummy).code(),
            hshm::StatusCode::kAlreadyExists);
  EXPECT_EQ(HSHM_MEMORY_MANAGER->GetAllocator<int>(id), &dummy);
  HSHM_MEMORY_MANAGER->Unregister(id);
  EXPECT_EQ(HSHM_MEMORY_MANAGER->GetAllocator<int>(id), nullptr);
}

}  // namespace
