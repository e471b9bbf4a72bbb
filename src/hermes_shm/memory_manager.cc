#include "hermes_shm/memory/memory_manager.h"

namespace hipc {

namespace internal {
AllocatorSlot g_allocator_table[kMaxAllocators];
}  // namespace internal

char *ToProcessAddressChecked(const Pointer &p, u64 size) {
  if (p.IsNull() || p.alloc_id_.major_ >= internal::kMaxAllocators) {
    return nullptr;
  }
  auto &slot = internal::g_allocator_table[p.alloc_id_.major_];
  char *base = slot.base.load(std::memory_order_acquire);
  u64 region = slot.size.load(std::memory_order_acquire);
  if (!base || p.off_.off_ > region || size > region - p.off_.off_) {
    return nullptr;
  }
  return base + p.off_.off_;
}

Status MemoryManager::Register(AllocatorId id, char *region, size_t size,
                               void *alloc) {
  if (id.major_ == 0 || id.major_ >= internal::kMaxAllocators) {
    return Status::InvalidArgument("allocator id major " +
                                   std::to_string(id.major_) +
                                   " out of range [1, 63]");
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto &slot = internal::g_allocator_table[id.major_];
  if (slot.alloc.load(std::memory_order_relaxed) != nullptr) {
    return Status::AlreadyExists("allocator id " + std::to_string(id.major_) +
                                 " is already registered");
  }
  slot.size.store(size, std::memory_order_relaxed);
  slot.minor.store(id.minor_, std::memory_order_relaxed);
  slot.alloc.store(alloc, std::memory_order_release);
  slot.generation.fetch_add(1, std::memory_order_relaxed);
  slot.base.store(region, std::memory_order_release);
  return Status::Ok();
}

void MemoryManager::Unregister(AllocatorId id) {
  if (id.major_ >= internal::kMaxAllocators) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto &slot = internal::g_allocator_table[id.major_];
  slot.base.store(nullptr, std::memory_order_release);
  slot.alloc.store(nullptr, std::memory_order_release);
  slot.size.store(0, std::memory_order_relaxed);
  slot.generation.fetch_add(1, std::memory_order_relaxed);
}

u64 MemoryManager::Generation(u32 major) const {
  if (major >= internal::kMaxAllocators) return 0;
  return internal::g_allocator_table[major].generation.load(
      std::memory_order_acquire);
}

}  // namespace hipc
