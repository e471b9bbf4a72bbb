// The process's allocator table: which allocator ids are attached here and
// where their regions are mapped. Pointer conversion reads it lock-free
// (pointer.h); registration is serialised by a mutex.
#ifndef HERMES_SHM_MEMORY_MEMORY_MANAGER_H_
#define HERMES_SHM_MEMORY_MEMORY_MANAGER_H_

#include <mutex>

#include "hermes_shm/memory/allocator.h"
#include "hermes_shm/singleton.h"

namespace hipc {

/** Registry of attached allocators. Any thread may call any member. */
class MemoryManager {
 public:
  /** Makes `alloc` (region [region, region + size)) reachable through
   * Pointers with id `id`. Fails if the slot is taken or out of range.
   * REQUIRES: the allocator outlives its registration. */
  Status Register(AllocatorId id, char *region, size_t size, void *alloc);
  /** Removes id's registration (no-op if absent). Pointers with this id then
   * convert to null in this process. */
  void Unregister(AllocatorId id);
  /** The allocator object registered for `id`, or null. */
  template <typename AllocT>
  AllocT *GetAllocator(AllocatorId id) const {
    if (id.major_ >= internal::kMaxAllocators) return nullptr;
    return static_cast<AllocT *>(
        internal::g_allocator_table[id.major_].alloc.load(
            std::memory_order_acquire));
  }
  /** Generation of slot `major` (changes on every (un)registration). */
  u64 Generation(u32 major) const;
  /** Serialises (un)registration against thread-exit cache flushes. */
  std::mutex &mutex() { return mu_; }

 private:
  std::mutex mu_;
};

}  // namespace hipc

#define HSHM_MEMORY_MANAGER \
  (::hshm::Singleton<::hipc::MemoryManager>::GetInstance())

#endif  // HERMES_SHM_MEMORY_MEMORY_MANAGER_H_
