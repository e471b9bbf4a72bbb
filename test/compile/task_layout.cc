// Compile-only checks of what a task type may hold (test/compile/
// CMakeLists.txt compiles this file with and without TASK_WITH_STRING).
// A task lives in shared memory and the runtime copies its bytes: a member
// with a destructor (std::string) must not compile, neither when a client
// makes the task nor when a runtime module registers its method.
#include <string>

#include "chimaera/module.h"

namespace {

struct PutTask : chi::Task {
  IN chi::u64 key_ = 0;
#ifdef TASK_WITH_STRING
  TEMP std::string name_;  // not listed in CHI_FIELDS, still refused
#endif
  CHI_FIELDS(In(key_))
};

struct Layout {
  static constexpr char kName[] = "layout";
  using Methods = chi::Methods<PutTask>;
};

#if CHIMAERA_RUNTIME
class Runtime : public chi::Module<Runtime, Layout> {
 public:
  void Run(PutTask *t) { (void)t; }
};
#endif

}  // namespace

/** A client makes (never sends) one task; a runtime module registers its
 * method (each side's check alone). */
void MakeOne() {
#if CHIMAERA_RUNTIME
  Runtime rt;
  (void)rt;
#else
  auto t = chi::NewMethodTask<Layout, PutTask>(chi::TaskNode(), chi::PoolId(),
                                               chi::DomainQuery(), chi::u64{1});
  (void)t;
#endif
}
