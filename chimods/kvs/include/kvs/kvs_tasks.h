// Tasks of the kvs module: a key-value store spread over a pool's containers.
// Keys and values are byte strings; a key lives in exactly one container,
// chosen by the client with DomainQuery::GetGlobalHash(KeyHash(key)).
//
// Buffers: the caller puts keys (and, for Put, the value right after the key)
// in a data-segment buffer (CHI_IPC->AllocateBuffer) and keeps ownership of
// it. Values are stored in `runtime_data`. Replies (Get's value, Scan's keys)
// are allocated by the runtime in `client_data`; whoever waits on the task
// owns them and frees them with CHI_IPC->FreeBuffer.
//
// Errors (task status): InvalidArgument for a buffer outside the data
// segments or a key of the wrong size, NotFound for a missing key (Get,
// Delete), OutOfMemory when a segment has no room.
#ifndef CHIMODS_KVS_KVS_TASKS_H_
#define CHIMODS_KVS_KVS_TASKS_H_

#include <cstring>

#include "chimaera/module.h"

namespace chi::kvs {

/** Longest key (bytes). Keys are 1..kMaxKeySize bytes. */
static GLOBAL_CROSS_CONST u64 kMaxKeySize = 64 * 1024;

/** How a Scan selects keys. */
enum class ScanMode : u32 {
  kFromKey = 0,  ///< Keys >= the given key (bytewise order).
  kPrefix = 1,   ///< Keys that start with the given bytes.
};

/** The hash that places `key` (stable across processes: FNV-1a, 64-bit,
 * folded to 32). Any thread may call. */
inline u32 KeyHash(const char *key, u64 size) {
  u64 h = 14695981039346656037ull;
  for (u64 i = 0; i < size; ++i) {
    h ^= static_cast<unsigned char>(key[i]);
    h *= 1099511628211ull;
  }
  return static_cast<u32>(h ^ (h >> 32));
}

/** Stores value = data_[key_size_, key_size_ + value_size_) under key =
 * data_[0, key_size_), replacing any previous value. */
struct PutTask : public Task {
  CHI_IN hipc::Pointer data_;  ///< Key bytes followed by value bytes.
  CHI_IN u64 key_size_ = 0;    ///< 1..kMaxKeySize.
  CHI_IN u64 value_size_ = 0;  ///< May be 0.
  CHI_OUT u32 replaced_ = 0;   ///< 1 if the key had a value before.

  template <typename Ar>
  void Fields(Ar &ar) {
    ar.In(key_size_);
    ar.In(value_size_);
    ar.InBuf(data_, key_size_ + value_size_);
    ar.Out(replaced_);
  }
};

/** Returns the value of key = key_[0, key_size_) in value_ (client_data;
 * null for an empty value). NotFound if the key is absent. */
struct GetTask : public Task {
  CHI_IN hipc::Pointer key_;     ///< Key bytes.
  CHI_IN u64 key_size_ = 0;      ///< 1..kMaxKeySize.
  CHI_OUT hipc::Pointer value_;  ///< The value; the waiter frees it.
  CHI_OUT u64 value_size_ = 0;   ///< Bytes in value_.

  template <typename Ar>
  void Fields(Ar &ar) {
    ar.In(key_size_);
    ar.InBuf(key_, key_size_);
    ar.OutBuf(value_, value_size_);
  }
};

/** Removes key = key_[0, key_size_) and frees its value. NotFound if the key
 * is absent. */
struct DeleteTask : public Task {
  CHI_IN hipc::Pointer key_;  ///< Key bytes.
  CHI_IN u64 key_size_ = 0;   ///< 1..kMaxKeySize.

  template <typename Ar>
  void Fields(Ar &ar) {
    ar.In(key_size_);
    ar.InBuf(key_, key_size_);
  }
};

/** Lists, in bytewise order, at most max_count_ keys of ONE container that
 * match key_[0, key_size_) under mode_ (an empty key matches every key).
 * The keys come back in keys_ (client_data, null when there are none) as
 * count_ records of [u32 length, host byte order][length bytes]. Also reports
 * the pool's container count. A client scans the whole pool by sending one
 * ScanTask per container (DomainQuery::GetGlobalId(i)) and merging. */
struct ScanTask : public Task {
  CHI_IN hipc::Pointer key_;  ///< Start key or prefix (may be null).
  CHI_IN u64 key_size_ = 0;   ///< 0..kMaxKeySize.
  CHI_IN ScanMode mode_ = ScanMode::kFromKey;  ///< How keys are selected.
  CHI_IN u32 max_count_ = 0;        ///< Most keys to return (0: none).
  CHI_OUT hipc::Pointer keys_;      ///< Length-prefixed keys; waiter frees it.
  CHI_OUT u64 keys_size_ = 0;       ///< Bytes in keys_.
  CHI_OUT u32 count_ = 0;           ///< Keys in keys_.
  CHI_OUT u32 num_containers_ = 0;  ///< Containers of the pool.

  template <typename Ar>
  void Fields(Ar &ar) {
    ar.In(key_size_);
    ar.In(mode_);
    ar.In(max_count_);
    ar.InBuf(key_, key_size_);
    ar.OutBuf(keys_, keys_size_);
    ar.Out(count_);
    ar.Out(num_containers_);
  }
};

/** The module: its name and methods (ids kCustom + 0..3, in this order). */
struct Kvs {
  static constexpr char kName[] = "kvs";
  using Methods = chi::Methods<PutTask, GetTask, DeleteTask, ScanTask>;
};

}  // namespace chi::kvs

#endif  // CHIMODS_KVS_KVS_TASKS_H_
