// Two broken ChiMod libraries for the module loader's error paths. Built
// twice: with BAD_ABI as libbad_abi_mod_runtime.so (claims another ABI
// version), without it as libno_symbol_mod_runtime.so (exports nothing).
#include "chimaera/container.h"

#ifdef BAD_ABI
extern "C" {
/** Claims an ABI this runtime does not have. */
__attribute__((visibility("default"))) chi::u32 chimaera_module_abi_version() {
  return chi::kModuleAbiVersion + 41;
}
/** The module's name. */
__attribute__((visibility("default"))) const char *chimaera_module_name() {
  return "bad_abi_mod";
}
/** Never called: the loader refuses the module first. */
__attribute__((visibility("default"))) chi::Container *
chimaera_create_container() {
  return nullptr;
}
}
#else
/** A library with no CHI_TASK_CC symbols at all. */
int no_symbol_mod_marker() { return 1; }
#endif
