// A test ChiMod whose containers make their own queues: one low-latency and
// one high-latency. Tasks report which worker ran them.
#ifndef CHIMAERA_TEST_UNIT_CHIMAERA_QUEUE_TEST_MOD_H_
#define CHIMAERA_TEST_UNIT_CHIMAERA_QUEUE_TEST_MOD_H_

#include "chimaera/container.h"

namespace queue_test_mod {

static GLOBAL_CROSS_CONST chi::MethodId kWhere = chi::BaseMethod::kCustom;
/** Recurses until it overflows its fiber stack (a WhereTask). */
static GLOBAL_CROSS_CONST chi::MethodId kOverflow =
    chi::BaseMethod::kCustom + 1;

/** Returns the id of the worker that ran it, after spinning `spin_us`. */
struct WhereTask : public chi::Task {
  IN chi::u32 spin_us_ = 0;
  OUT chi::u32 worker_ = ~0u;
  OUT chi::u32 container_ = ~0u;
  explicit WhereTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc)
      : chi::Task(alloc) {}
  WhereTask(const hipc::CtxAllocator<CHI_ALLOC_T> &alloc,
            const chi::TaskNode &node, const chi::PoolId &pool,
            const chi::DomainQuery &dom, chi::u32 prio, chi::u32 spin_us)
      : chi::Task(alloc), spin_us_(spin_us) {
    SetBase(node, pool, dom, kWhere);
    prio_ = prio;
  }
};

}  // namespace queue_test_mod

#endif  // CHIMAERA_TEST_UNIT_CHIMAERA_QUEUE_TEST_MOD_H_
