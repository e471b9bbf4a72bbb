// Runtime side of "stats": one Run() per task type.
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "stats/stats.h"

namespace stats {

/** A container: the sums of the keys that hash to it. */
class Runtime : public chi::Module<Runtime, Stats> {
 public:
  void Run(AddTask *t, chi::RunContext &) {
    std::lock_guard<std::mutex> lock(mu_);
    Sum &s = sums_[t->key_];
    s.sum += t->value_;
    s.count += 1;
  }
  void Run(GetTask *t, chi::RunContext &) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sums_.find(t->key_);
    if (it == sums_.end()) return t->SetStatus(chi::Status::NotFound("key"));
    t->sum_ = it->second.sum;
    t->count_ = it->second.count;
  }
  void Run(HistogramTask *t, chi::RunContext &) {
    const char *p = CHI_IPC->DataBuffer(t->data_, t->bytes_);
    for (u64 i = 0, v; p && i + 8 <= t->bytes_; i += 8) {
      std::memcpy(&v, p + i, 8);
      t->bins_[v % 16] += 1;
    }
  }
  void Run(TotalTask *t, chi::RunContext &) {
    if (t->local_) {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto &kv : sums_) {
        t->sum_ += kv.second.sum;
        t->count_ += kv.second.count;
      }
      return;
    }
    auto parts = Client(pool_id_).AsyncEach<TotalTask>(num_containers_, 1u);
    t->SetStatus(chi::WaitAll(parts));  // fan out to every container, merge
    for (auto &part : parts) {
      if (!part.status().ok()) continue;
      t->sum_ += part->sum_;
      t->count_ += part->count_;
    }
  }

 private:
  struct Sum {
    u64 sum = 0, count = 0;
  };
  std::mutex mu_;
  std::unordered_map<u64, Sum> sums_;
};

}  // namespace stats

CHI_MODULE(stats::Runtime);
