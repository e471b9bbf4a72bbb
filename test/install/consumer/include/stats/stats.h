// "stats", a ChiMod written with one declaration per method: per-key sums
// routed by key hash, a histogram of a caller's buffer, and a pool-wide
// total that one container gathers from all of them.
#pragma once
#include "chimaera/module.h"

namespace stats {
using chi::u64;

/** A sum of values and how many there were. */
struct Sum {
  u64 sum = 0, count = 0;
  void Add(const Sum &o) { *this = {sum + o.sum, count + o.count}; }
};
/** Adds value_ to key_'s sum (send it to GetGlobalHash(key_)). */
struct AddTask : chi::Task {
  IN u64 key_ = 0, value_ = 0;
  CHI_FIELDS(In(key_), In(value_))
};
/** key_'s sum; NotFound if it has none. */
struct GetTask : chi::Task {
  IN u64 key_ = 0;
  OUT Sum total_;
  CHI_FIELDS(In(key_), Out(total_))
};
/** Counts the u64s in data_[0, bytes_) by value % 16. */
struct HistogramTask : chi::Task {
  IN hipc::Pointer data_;
  IN u64 bytes_ = 0;
  OUT u64 bins_[16] = {};
  CHI_FIELDS(In(bytes_), InBuf(data_, bytes_), Out(bins_))
};
/** The sum of every key of the pool (local_: this container only). */
struct TotalTask : chi::Task {
  IN chi::u32 local_ = 0;
  OUT Sum total_;
  CHI_FIELDS(In(local_), Out(total_))
};

/** The module: its name, methods (ids follow this order), one shard per
 * core (each container's tasks run on one worker, one at a time). */
struct Stats {
  static constexpr char kName[] = "stats";
  static constexpr bool kPinned = true;
  using Methods = chi::Methods<AddTask, GetTask, HistogramTask, TotalTask>;
};
using Client = chi::ModuleClient<Stats>;

}  // namespace stats
