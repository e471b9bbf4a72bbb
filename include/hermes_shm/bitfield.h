// Bitfields used for flags stored in shared memory (trivially copyable).
#ifndef HERMES_SHM_BITFIELD_H_
#define HERMES_SHM_BITFIELD_H_

#include "hermes_shm/types.h"

namespace hshm {

/** A set of flag bits. Not atomic: the owner of the enclosing object mutates
 * it; concurrent readers must synchronise by other means. */
template <typename T>
struct bitfield {
  T bits_ = 0;

  bitfield() = default;
  /** Starts with `bits` set. */
  explicit bitfield(T bits) : bits_(bits) {}
  /** Sets every bit in `mask`. */
  HSHM_INLINE void SetBits(T mask) { bits_ |= mask; }
  /** Clears every bit in `mask`. */
  HSHM_INLINE void UnsetBits(T mask) { bits_ &= ~mask; }
  /** True if any bit of `mask` is set. */
  HSHM_INLINE bool Any(T mask) const { return (bits_ & mask) != 0; }
  /** True if every bit of `mask` is set (false for an empty mask). */
  HSHM_INLINE bool All(T mask) const {
    return mask != 0 && (bits_ & mask) == mask;
  }
  /** Clears all bits. */
  HSHM_INLINE void Clear() { bits_ = 0; }
  /** The raw bits. */
  HSHM_INLINE T Get() const { return bits_; }
};

using bitfield8_t = bitfield<u8>;
using bitfield16_t = bitfield<u16>;
using bitfield32_t = bitfield<u32>;
using bitfield64_t = bitfield<u64>;
/** The default flag word (32 bits), e.g. Task::task_flags_. */
using ibitfield = bitfield32_t;

/** Builds a mask with bit `n` set. */
#define BIT_OPT(T, n) (((T)1) << (n))

}  // namespace hshm

#endif  // HERMES_SHM_BITFIELD_H_
