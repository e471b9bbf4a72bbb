// Helpers shared by the hshm unit tests.
#ifndef CHIMAERA_TEST_UNIT_HSHM_TEST_UTIL_H_
#define CHIMAERA_TEST_UNIT_HSHM_TEST_UTIL_H_

#include <unistd.h>

#include <atomic>
#include <string>
#include <type_traits>

#include "hermes_shm/memory/allocator.h"
#include "hermes_shm/memory/memory_manager.h"
#include "hermes_shm/memory/posix_shm.h"

namespace hshm_test {

/** A segment name no other test (or run) uses. */
inline std::string UniqueShmName(const std::string &tag) {
  static std::atomic<int> counter{0};
  return hipc::PosixShmMmap::MakeName(
      "t" + std::to_string(getpid()) + "_" + std::to_string(counter++), tag);
}

/** A shared segment formatted as a registered allocator; unregistered and
 * unmapped when the fixture goes away. Its name is unlinked at creation. */
template <typename AllocT>
class ShmHeap {
 public:
  /** Creates a segment of `size` bytes with allocator id {major, 0}. */
  ShmHeap(size_t size, hshm::u32 major, size_t custom = 0) : id_(major, 0) {
    status_ = shm_.Create(UniqueShmName("heap"), size);
    if (!status_.ok()) return;
    // Unlink the name at once: the mapping (inherited by forked children)
    // stays valid, and nothing is left in /dev/shm even if the test aborts.
    (void)hipc::PosixShmMmap::Unlink(shm_.name());
    status_ = alloc_.Create(id_, shm_.data(), shm_.data_size(), custom);
    if (!status_.ok()) return;
    status_ = HSHM_MEMORY_MANAGER->Register(id_, shm_.data(), shm_.data_size(),
                                            &alloc_);
  }
  ~ShmHeap() {
    HSHM_MEMORY_MANAGER->Unregister(id_);
    (void)shm_.Destroy();
  }
  const hshm::Status &status() const { return status_; }
  AllocT &alloc() { return alloc_; }
  hipc::PosixShmMmap &shm() { return shm_; }

 private:
  hipc::AllocatorId id_;
  hipc::PosixShmMmap shm_;
  AllocT alloc_;
  hshm::Status status_;
};

/** Block bytes (header included) of a request of `size` bytes. */
inline hshm::u64 BlockBytes(size_t size) {
  return hipc::HeapAllocator::ClassSize(hipc::HeapAllocator::ClassOf(
      size + hipc::HeapAllocator::kBlockHeaderSize));
}

/** Flushes the calling thread's cache (a no-op for HeapAllocator). */
template <typename A>
void Flush(A &a) {
  if constexpr (std::is_same<A, hipc::ThreadLocalAllocator>::value) {
    a.FlushThreadCache();
  }
}

}  // namespace hshm_test

#endif  // CHIMAERA_TEST_UNIT_HSHM_TEST_UTIL_H_
