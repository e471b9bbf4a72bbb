// Runtime side of "stats": one Run() per task type.
#include <mutex>
#include <unordered_map>

#include "stats/stats.h"

namespace stats {

/** A container: the sums of the keys that hash to it. */
class Runtime : public chi::Module<Runtime, Stats> {
 public:
  void Run(AddTask *t, chi::RunContext &) {
    std::lock_guard<std::mutex> lock(mu_);
    sums_[t->key_].Add(Sum{t->value_, 1});
  }
  void Run(GetTask *t, chi::RunContext &) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sums_.find(t->key_);
    if (it == sums_.end()) return t->SetStatus(chi::Status::NotFound("key"));
    t->total_ = it->second;
  }
  void Run(HistogramTask *t, chi::RunContext &) {
    for (u64 v : CHI_IPC->CopyIn<u64>(t->data_, t->bytes_)) ++t->bins_[v % 16];
  }
  void Run(TotalTask *t, chi::RunContext &) {
    if (!t->local_) {  // fan out to every container and merge
      auto merge = [t](TotalTask &part) { t->total_.Add(part.total_); };
      return t->SetStatus(
          Client(pool_id_).Gather<TotalTask>(num_containers_, merge, 1u));
    }
    std::lock_guard<std::mutex> lock(mu_);
    for (auto &kv : sums_) t->total_.Add(kv.second);
  }

 private:
  std::mutex mu_;
  std::unordered_map<u64, Sum> sums_;
};

}  // namespace stats

CHI_MODULE(stats::Runtime);
