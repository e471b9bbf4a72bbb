// Basic integer types and portability macros of the Hermes SHM subset.
#ifndef HERMES_SHM_TYPES_H_
#define HERMES_SHM_TYPES_H_

#include <cstddef>
#include <cstdint>

/** Force-inline a small hot-path function. */
#define HSHM_INLINE inline __attribute__((always_inline))

/** A constant usable from host code in every process (and, in upstream HSHM,
 * from GPU code). Namespace-scope constants use it: `static GLOBAL_CROSS_CONST
 * u32 kX = 1;`. */
#define GLOBAL_CROSS_CONST constexpr

/** Size of a cache line; shared counters are padded to it. */
#define HSHM_CACHELINE_SIZE 64

namespace hshm {

using u8 = uint8_t;
using u16 = uint16_t;
using u32 = uint32_t;
using u64 = uint64_t;
using i8 = int8_t;
using i16 = int16_t;
using i32 = int32_t;
using i64 = int64_t;

}  // namespace hshm

#endif  // HERMES_SHM_TYPES_H_
