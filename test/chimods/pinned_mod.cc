// Runtime side of the pinned_mod test ChiMod (see pinned_mod.h).
#include "pinned_mod.h"

#include <atomic>

#include "chimaera/worker.h"

namespace pinned_mod {

/** A container: counts the Probes running in it, without a lock. */
class Runtime : public chi::Module<Runtime, PinnedMod> {
 public:
  /** Spins, then reports where it ran and whether it overlapped another
   * Probe of this container. Workers call it. */
  void Run(ProbeTask *t, chi::RunContext &rctx) {
    if (t->us_ > 1000000) {
      return t->SetStatus(chi::Status::InvalidArgument("Probe: at most 1 s"));
    }
    // Pinning makes this single-threaded; atomic only so that a failure of
    // pinning shows as an overlap rather than as a data race.
    chi::u32 before = running_.fetch_add(1, std::memory_order_acq_rel);
    chi::u64 until = hshm::NowNs() + chi::u64{t->us_} * 1000;
    while (hshm::NowNs() < until) hshm::CpuRelax();
    chi::u32 after = running_.fetch_sub(1, std::memory_order_acq_rel);
    t->overlapped_ = before != 0 || after != 1;
    t->worker_ = rctx.worker_->id();
  }

 private:
  std::atomic<chi::u32> running_{0};
};

}  // namespace pinned_mod

CHI_MODULE(pinned_mod::Runtime);
