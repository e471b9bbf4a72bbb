// pinned_mod: a test ChiMod declared kPinned (one shard per core): its
// Probe says which worker ran it and whether another Probe of the same
// container overlapped it.
#ifndef CHIMAERA_TEST_CHIMODS_PINNED_MOD_H_
#define CHIMAERA_TEST_CHIMODS_PINNED_MOD_H_

#include "chimaera/module.h"

namespace pinned_mod {

/** Busy-waits us_ microseconds (at most 100000), then reports. */
struct ProbeTask : chi::Task {
  static constexpr bool kNeverWaits = true;
  IN chi::u32 us_ = 0;
  OUT chi::u32 worker_ = ~0u;    ///< The worker that ran it.
  OUT chi::u32 overlapped_ = 0;  ///< 1 if another Probe of it ran meanwhile.
  CHI_FIELDS(In(us_), Out(worker_), Out(overlapped_))
};

/** The module: pinned, one method. */
struct PinnedMod {
  static constexpr char kName[] = "pinned_mod";
  static constexpr bool kPinned = true;
  using Methods = chi::Methods<ProbeTask>;
};
using Client = chi::ModuleClient<PinnedMod>;

}  // namespace pinned_mod

#endif  // CHIMAERA_TEST_CHIMODS_PINNED_MOD_H_
