// pinned_mod: a test ChiMod declared kPinned (one shard per core) whose one
// method is small_message's Probe: it says which worker ran it and whether
// another Probe of the same container overlapped it.
#ifndef CHIMAERA_TEST_CHIMODS_PINNED_MOD_H_
#define CHIMAERA_TEST_CHIMODS_PINNED_MOD_H_

#include "chimaera/module.h"
#include "small_message/small_message_tasks.h"

namespace pinned_mod {

using chi::small_message::ProbeTask;

/** The module: pinned, one method. */
struct PinnedMod {
  static constexpr char kName[] = "pinned_mod";
  static constexpr bool kPinned = true;
  using Methods = chi::Methods<ProbeTask>;
};
using Client = chi::ModuleClient<PinnedMod>;

}  // namespace pinned_mod

#endif  // CHIMAERA_TEST_CHIMODS_PINNED_MOD_H_
