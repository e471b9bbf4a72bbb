// Shared-memory pointers.
//
// - OffsetPointer: a byte offset into an allocator's region.
// - Pointer: allocator id + offset; the same value is valid in every process
//   that attached the allocator. Stored in shared memory and in queues.
// - FullPtr<T>: this process's address plus the Pointer, so either side is at
//   hand without a lookup.
//
// Null convention: an OffsetPointer / Pointer is null iff its offset is
// kNullOffset; a FullPtr is null iff its process address is null.
// Pointer -> address conversion is O(1): a load from a fixed table indexed by
// the allocator id (see memory_manager.h).
#ifndef HERMES_SHM_MEMORY_POINTER_H_
#define HERMES_SHM_MEMORY_POINTER_H_

#include <atomic>
#include <cstring>

#include "hermes_shm/types.h"

namespace hipc {

using hshm::u32;
using hshm::u64;

/** Identifies an allocator in every process. major_ indexes the process's
 * allocator table (1..kMaxAllocators-1; 0 is null); minor_ is free for the
 * creator (Chimaera stores the node id). */
struct AllocatorId {
  u32 major_ = 0;
  u32 minor_ = 0;

  AllocatorId() = default;
  AllocatorId(u32 major, u32 minor) : major_(major), minor_(minor) {}
  /** Both halves as one word, so that a comparison is one instruction
   * (compilers do not merge the two 32-bit compares). */
  HSHM_INLINE u64 Word() const {
    u64 w;
    std::memcpy(&w, this, sizeof(w));
    return w;
  }
  /** True for the null id {0, 0}. */
  HSHM_INLINE bool IsNull() const { return Word() == 0; }
  /** The null id. */
  static AllocatorId GetNull() { return AllocatorId(); }
  HSHM_INLINE bool operator==(const AllocatorId &o) const {
    return Word() == o.Word();
  }
  bool operator!=(const AllocatorId &o) const { return !(*this == o); }
};
static_assert(sizeof(AllocatorId) == sizeof(u64), "Word() covers the id");

/** Offset value meaning "no object". */
static GLOBAL_CROSS_CONST u64 kNullOffset = ~0ull;

/** A byte offset into an allocator's region. */
struct OffsetPointer {
  u64 off_ = kNullOffset;

  OffsetPointer() = default;
  explicit OffsetPointer(u64 off) : off_(off) {}
  HSHM_INLINE bool IsNull() const { return off_ == kNullOffset; }
  static OffsetPointer GetNull() { return OffsetPointer(); }
  HSHM_INLINE u64 load() const { return off_; }
  bool operator==(const OffsetPointer &o) const { return off_ == o.off_; }
  bool operator!=(const OffsetPointer &o) const { return off_ != o.off_; }
};

/** Allocator id + offset: a process-independent address. 16 bytes, trivially
 * copyable. */
struct Pointer {
  AllocatorId alloc_id_;
  OffsetPointer off_;

  Pointer() = default;
  Pointer(AllocatorId id, u64 off) : alloc_id_(id), off_(off) {}
  HSHM_INLINE bool IsNull() const { return off_.IsNull(); }
  static Pointer GetNull() { return Pointer(); }
  bool operator==(const Pointer &o) const {
    return alloc_id_ == o.alloc_id_ && off_ == o.off_;
  }
  bool operator!=(const Pointer &o) const { return !(*this == o); }
};

namespace internal {

/** Most allocators one process can have attached at once. */
static GLOBAL_CROSS_CONST u32 kMaxAllocators = 64;

/** One row of the process's allocator table. */
struct AllocatorSlot {
  std::atomic<char *> base{nullptr};   ///< Start of the region (offset 0).
  std::atomic<u64> size{0};            ///< Region size in bytes.
  std::atomic<u32> minor{0};           ///< Minor id of the attached allocator.
  std::atomic<void *> alloc{nullptr};  ///< The process-local allocator object.
  std::atomic<u64> generation{0};      ///< Bumped on every (un)registration.
};

/** The table; defined in memory_manager.cc. */
extern AllocatorSlot g_allocator_table[kMaxAllocators];

}  // namespace internal

/** Converts a Pointer to this process's address in O(1). Returns null for a
 * null pointer or an allocator this process has not attached. */
HSHM_INLINE char *ToProcessAddress(const Pointer &p) {
  if (p.IsNull() || p.alloc_id_.major_ >= internal::kMaxAllocators) {
    return nullptr;
  }
  char *base = internal::g_allocator_table[p.alloc_id_.major_].base.load(
      std::memory_order_acquire);
  return base ? base + p.off_.off_ : nullptr;
}

/** Like ToProcessAddress, but also checks that [off, off + size) lies inside
 * the allocator's region; null if not. For pointers from untrusted peers. */
char *ToProcessAddressChecked(const Pointer &p, u64 size);

/** A process address together with its Pointer. */
template <typename T>
struct FullPtr {
  T *ptr_ = nullptr;
  Pointer shm_;

  /** A null FullPtr. */
  FullPtr() = default;
  /** From both halves. REQUIRES: they name the same object. */
  FullPtr(T *ptr, const Pointer &shm) : ptr_(ptr), shm_(shm) {}
  /** From a Pointer, converted in O(1). Null if the allocator is unknown. */
  explicit FullPtr(const Pointer &shm)
      : ptr_(reinterpret_cast<T *>(ToProcessAddress(shm))), shm_(shm) {
    if (!ptr_) shm_ = Pointer::GetNull();
  }
  /** Reinterprets as a FullPtr to U (same address). */
  template <typename U>
  HSHM_INLINE FullPtr<U> Cast() const {
    return FullPtr<U>(reinterpret_cast<U *>(ptr_), shm_);
  }
  HSHM_INLINE bool IsNull() const { return ptr_ == nullptr; }
  HSHM_INLINE T *get() const { return ptr_; }
  HSHM_INLINE T *operator->() const { return ptr_; }
  HSHM_INLINE T &operator*() const { return *ptr_; }
  static FullPtr GetNull() { return FullPtr(); }
  bool operator==(const FullPtr &o) const { return shm_ == o.shm_; }
};

}  // namespace hipc

#endif  // HERMES_SHM_MEMORY_POINTER_H_
