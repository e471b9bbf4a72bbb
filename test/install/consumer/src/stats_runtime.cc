// Runtime side of "stats": one Run() per task type.
#include <unordered_map>

#include "stats/stats.h"

namespace stats {

/** A container: the sums of the keys that hash to it (pinned: no lock). */
class Runtime : public chi::Module<Runtime, Stats> {
 public:
  void Run(AddTask *t) { sums_[t->key_].Add({t->value_, 1}); }
  void Run(GetTask *t) {
    if (!sums_.count(t->key_)) return t->SetStatus(chi::Status::NotFound(""));
    t->total_ = sums_[t->key_];
  }
  void Run(HistogramTask *t) {
    for (u64 v : CHI_IPC->CopyIn<u64>(t->data_, t->bytes_)) ++t->bins_[v % 16];
  }
  void Run(TotalTask *t) {
    if (!t->local_) {  // fan out to every container and merge
      auto merge = [t](TotalTask &part) { t->total_.Add(part.total_); };
      return t->SetStatus(Gather<TotalTask>(merge, 1u));
    }
    for (auto &kv : sums_) t->total_.Add(kv.second);
  }

 private:
  std::unordered_map<u64, Sum> sums_;
};

}  // namespace stats

CHI_MODULE(stats::Runtime);
