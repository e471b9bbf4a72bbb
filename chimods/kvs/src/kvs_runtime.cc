// Runtime side of the kvs module: each container indexes its share of the
// keys in process memory (an ordered map, for Scan) and keeps the values in
// runtime_data.
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <tuple>
#include <vector>

#include "chimaera/config_manager.h"
#include "hermes_shm/util/rw_lock.h"
#include "kvs/kvs_tasks.h"

namespace chi::kvs {

namespace {

/** The least of runtime_data that values leave free (else a sixteenth of
 * it): room for the runtime's replies once the values filled the rest. */
constexpr u64 kMinRdataReserve = 1 << 20;

/** Checks a key's size and buffer; on success `*key` is its address. */
Status KeyBytes(const hipc::Pointer &p, u64 size, bool allow_empty,
                const char **key) {
  if ((size == 0 && !allow_empty) || size > kMaxKeySize) {
    return Status::InvalidArgument("kvs: keys are 1.." +
                                   std::to_string(kMaxKeySize) +
                                   " bytes, not " + std::to_string(size));
  }
  *key = CHI_IPC->DataBuffer(p, size);
  if (!*key) {
    return Status::InvalidArgument("kvs: key buffer is not " +
                                   std::to_string(size) +
                                   " bytes inside a data segment");
  }
  return Status::Ok();
}

/** Process memory the keys of every kvs container of this runtime take (sum
 * of their IndexCost): one budget for the node, so that more containers or
 * pools do not multiply it. Changed atomically by any worker. */
std::atomic<u64> g_node_index_bytes{0};

}  // namespace

/** Container of the kvs module: one shard of the pool's keys. Methods may
 * run concurrently on several workers; mu_ guards index_ (no method yields
 * while holding it). */
class Runtime : public Module<Runtime, Kvs> {
 public:
  /** Frees every stored value. Runs alone, after the last task. */
  void Destroy() override {
    for (auto &kv : index_) (void)CHI_IPC->FreeBuffer(kv.second.data);
    index_.clear();
    ReleaseIndex(index_bytes_);
    index_bytes_ = 0;
  }

  /** Stores a copy of the value in runtime_data under the key. Workers call
   * it. */
  void Run(PutTask *task, RunContext &rctx) {
    task->replaced_ = 0;
    const char *key;
    Status s = KeyBytes(task->data_, task->key_size_, false, &key);
    if (!s.ok()) return task->SetStatus(s);
    // Overflow-safe: key_size_ <= kMaxKeySize was checked.
    if (task->value_size_ > ~0ull - task->key_size_) {
      return task->SetStatus(Status::InvalidArgument("kvs: value too large"));
    }
    if (!CHI_IPC->DataBuffer(task->data_,
                             task->key_size_ + task->value_size_)) {
      return task->SetStatus(Status::InvalidArgument(
          "kvs: key + value buffer is not inside a data segment"));
    }
    // The key's copy first: a bad_alloc here has nothing to free yet.
    std::string k(key, task->key_size_);
    Value v{hipc::Pointer::GetNull(), task->value_size_};
    if (v.size > 0) {
      // runtime_data also carries the runtime's own replies (chimaera_stat,
      // pool lists, other methods' outputs): values leave it a reserve.
      const u64 cap = CHI_IPC->rdata_alloc()->GetRegionSize();
      const u64 reserve = std::max<u64>(kMinRdataReserve, cap / 16);
      const hshm::i64 used = CHI_IPC->rdata_alloc()->GetBytesInUse();
      using Heap = hipc::HeapAllocator;
      // The block it takes: its size class, header included. (Puts on
      // other workers may take some of the reserve meanwhile: it is kept
      // to within a few values.)
      const u64 block =
          v.size > Heap::kMaxAllocSize
              ? ~0ull
              : Heap::ClassSize(Heap::ClassOf(v.size + Heap::kBlockHeaderSize));
      if (used < 0 || block > cap ||
          static_cast<u64>(used) + block + reserve > cap) {
        return task->SetStatus(Status::ResourceExhausted(
            "kvs: no room for a " + std::to_string(v.size) +
            "-byte value in runtime_data, whose last " +
            std::to_string(reserve) + " bytes are kept for the runtime"));
      }
      FullPtr<char> buf = CHI_IPC->AllocateBuffer(v.size);
      if (buf.IsNull()) {
        return task->SetStatus(
            Status::OutOfMemory("kvs: runtime_data has no room for a " +
                                std::to_string(v.size) + "-byte value"));
      }
      std::memcpy(buf.ptr_, key + task->key_size_, v.size);
      v.data = buf.shm_;
    }
    Value old{hipc::Pointer::GetNull(), 0};
    bool full = false;
    u64 used = 0;
    {
      std::unique_lock<hshm::WriterFirstRwLock> lock(mu_);
      auto it = index_.lower_bound(k);
      if (it != index_.end() && it->first == k) {
        old = it->second;
        it->second = v;
        task->replaced_ = 1;
      } else if (!ReserveIndex(IndexCost(k.size()), &used)) {
        full = true;
      } else {
        const u64 cost = IndexCost(k.size());
        try {
          index_.emplace_hint(it, std::move(k), v);
        } catch (...) {  // bad_alloc: undo the reservation and the value
          ReleaseIndex(cost);
          (void)CHI_IPC->FreeBuffer(v.data);
          throw;  // the worker completes the task with Internal
        }
        index_bytes_ += cost;
      }
    }
    if (full) {
      (void)CHI_IPC->FreeBuffer(v.data);
      return task->SetStatus(Status::ResourceExhausted(
          "kvs: the keys of this node's kvs containers take " +
          std::to_string(used) + " bytes of process memory; at most " +
          std::to_string(MaxIndexBytes()) +
          " (shm.runtime_data), so no new key fits"));
    }
    (void)CHI_IPC->FreeBuffer(old.data);
  }

  /** Copies the key's value into a client_data buffer. NotFound if absent.
   * Workers call it. */
  void Run(GetTask *task, RunContext &rctx) {
    task->value_ = hipc::Pointer::GetNull();
    task->value_size_ = 0;
    const char *key;
    Status s = KeyBytes(task->key_, task->key_size_, false, &key);
    if (!s.ok()) return task->SetStatus(s);
    std::string k(key, task->key_size_);
    // The output buffer is allocated outside the lock: an allocation may
    // wait on client_data's heap lock (which a client may hold), and a
    // writer queued behind this reader would then hold up every worker
    // that touches the container. The value may change meanwhile: then
    // the lookup is made again with a buffer of its new size (after
    // kGetTries of those, under the lock, as a Put may keep changing it).
    constexpr int kGetTries = 8;
    FullPtr<char> out;
    u64 have = 0;  // bytes `out` holds
    u64 size = 0;  // the value's size when it was copied
    for (int tries = 1;; ++tries) {
      std::shared_lock<hshm::WriterFirstRwLock> lock(mu_);
      auto it = index_.find(k);
      if (it == index_.end()) {
        lock.unlock();
        (void)CHI_IPC->FreeBuffer(out.shm_);
        return task->SetStatus(Status::NotFound("kvs: no such key"));
      }
      const Value v = it->second;
      if (v.size != have || (v.size != 0 && out.IsNull())) {
        if (tries < kGetTries) lock.unlock();
        (void)CHI_IPC->FreeBuffer(out.shm_);
        out = v.size ? CHI_IPC->AllocateClientBuffer(v.size) : FullPtr<char>();
        have = v.size;
        if (v.size != 0 && out.IsNull()) {
          if (lock.owns_lock()) lock.unlock();
          return task->SetStatus(
              Status::OutOfMemory("kvs: client_data has no room for a " +
                                  std::to_string(v.size) + "-byte value"));
        }
        if (!lock.owns_lock()) continue;  // look again
      }
      if (v.size != 0)
        std::memcpy(out.ptr_, FullPtr<char>(v.data).ptr_, v.size);
      size = v.size;
      break;
    }
    if (size == 0) return;
    task->value_ = out.shm_;
    task->value_size_ = size;
  }

  /** Removes the key and frees its value. NotFound if absent. Workers call
   * it. */
  void Run(DeleteTask *task, RunContext &rctx) {
    const char *key;
    Status s = KeyBytes(task->key_, task->key_size_, false, &key);
    if (!s.ok()) return task->SetStatus(s);
    std::string k(key, task->key_size_);
    Value old{hipc::Pointer::GetNull(), 0};
    {
      std::unique_lock<hshm::WriterFirstRwLock> lock(mu_);
      auto it = index_.find(k);
      if (it == index_.end()) {
        return task->SetStatus(Status::NotFound("kvs: no such key"));
      }
      old = it->second;
      index_bytes_ -= IndexCost(it->first.size());
      ReleaseIndex(IndexCost(it->first.size()));
      index_.erase(it);
    }
    (void)CHI_IPC->FreeBuffer(old.data);
  }

  /** Lists this container's first max_count_ matching keys into a
   * client_data buffer. Workers call it. */
  void Run(ScanTask *task, RunContext &rctx) {
    task->keys_ = hipc::Pointer::GetNull();
    task->keys_size_ = 0;
    task->count_ = 0;
    task->num_containers_ = num_containers_;
    const char *key;
    Status s = KeyBytes(task->key_, task->key_size_, true, &key);
    if (!s.ok()) return task->SetStatus(s);
    auto mode = task->mode_;
    if (mode != ScanMode::kFromKey && mode != ScanMode::kPrefix) {
      return task->SetStatus(Status::InvalidArgument(
          "kvs: unknown scan mode " +
          std::to_string(static_cast<u32>(task->mode_))));
    }
    if (task->max_count_ == 0) return;
    std::string start(key, task->key_size_);
    // The reply is built in private memory under the lock and copied into
    // client_data after it (see Get: no allocation under the lock).
    std::string reply;
    u32 count = 0;
    {
      std::shared_lock<hshm::WriterFirstRwLock> lock(mu_);
      // Matching keys are contiguous from lower_bound(start) in both modes.
      for (auto it = index_.lower_bound(start);
           it != index_.end() && count < task->max_count_; ++it) {
        if (mode == ScanMode::kPrefix &&
            it->first.compare(0, start.size(), start) != 0) {
          break;
        }
        u32 len = static_cast<u32>(it->first.size());
        reply.append(reinterpret_cast<const char *>(&len), sizeof(len));
        reply.append(it->first);
        ++count;
      }
    }
    if (count == 0) return;
    FullPtr<char> out = CHI_IPC->AllocateClientBuffer(reply.size());
    if (out.IsNull()) {
      return task->SetStatus(
          Status::OutOfMemory("kvs: client_data has no room for " +
                              std::to_string(reply.size()) + " bytes of keys"));
    }
    std::memcpy(out.ptr_, reply.data(), reply.size());
    task->keys_ = out.shm_;
    task->keys_size_ = reply.size();
    task->count_ = count;
  }

  /** Migration: every pair as [u32 key size][key][u64 value size][value].
   * Runs with no task on this container. */
  Status SaveState(std::string *out) override {
    std::shared_lock<hshm::WriterFirstRwLock> lock(mu_);
    for (const auto &kv : index_) {
      const char *v = kv.second.size
                          ? CHI_IPC->DataBuffer(kv.second.data, kv.second.size)
                          : "";
      if (!v) return Status::Internal("kvs: a stored value is unreadable");
      u32 klen = static_cast<u32>(kv.first.size());
      u64 vlen = kv.second.size;
      out->append(reinterpret_cast<const char *>(&klen), sizeof(klen));
      out->append(kv.first);
      out->append(reinterpret_cast<const char *>(&vlen), sizeof(vlen));
      out->append(v, vlen);
    }
    return Status::Ok();
  }

  /** Migration: rebuilds the pairs SaveState wrote (checked as untrusted:
   * sizes within the input and the key limit). Before any task runs. */
  Status LoadState(const std::string &in) override {
    size_t at = 0;
    auto corrupt = [] {
      return Status::InvalidArgument("kvs: corrupt container state");
    };
    std::unique_lock<hshm::WriterFirstRwLock> lock(mu_);
    while (at < in.size()) {
      u32 klen;
      u64 vlen;
      if (in.size() - at < sizeof(klen)) return corrupt();
      std::memcpy(&klen, in.data() + at, sizeof(klen));
      at += sizeof(klen);
      if (klen == 0 || klen > kMaxKeySize || in.size() - at < klen) {
        return corrupt();
      }
      std::string key(in.data() + at, klen);
      at += klen;
      if (in.size() - at < sizeof(vlen)) return corrupt();
      std::memcpy(&vlen, in.data() + at, sizeof(vlen));
      at += sizeof(vlen);
      if (in.size() - at < vlen) return corrupt();
      Value v{hipc::Pointer::GetNull(), vlen};
      if (vlen > 0) {
        FullPtr<char> buf = CHI_IPC->AllocateBuffer(vlen);
        if (buf.IsNull()) {
          return Status::OutOfMemory("kvs: no room for a migrated value");
        }
        std::memcpy(buf.ptr_, in.data() + at, vlen);
        v.data = buf.shm_;
      }
      at += vlen;
      const u64 cost = IndexCost(key.size());
      decltype(index_)::iterator it;
      bool inserted;
      try {
        std::tie(it, inserted) = index_.try_emplace(std::move(key), v);
      } catch (...) {  // bad_alloc: the value is in no index yet
        (void)CHI_IPC->FreeBuffer(v.data);
        throw;
      }
      if (inserted) {
        u64 used;
        if (!ReserveIndex(cost, &used)) {
          if (!v.data.IsNull()) (void)CHI_IPC->FreeBuffer(v.data);
          index_.erase(it);
          return Status::ResourceExhausted(
              "kvs: the migrated keys do not fit this node's key budget");
        }
        index_bytes_ += cost;
      } else {
        if (!it->second.data.IsNull()) {
          (void)CHI_IPC->FreeBuffer(it->second.data);
        }
        it->second = v;
      }
    }
    return Status::Ok();
  }

 private:
  /** A stored value: a runtime_data buffer (null when empty) and its size.
   */
  struct Value {
    hipc::Pointer data;
    u64 size;
  };

  /** Process memory a key of `n` bytes takes in index_ (counted: the
   * string, plus about a map node and a string header). */
  static u64 IndexCost(u64 n) { return n + 96; }
  /** Most process memory the keys of all kvs containers of this runtime may
   * take: as much as the runtime_data segment that holds the values. A
   * client cannot make the runtime's own heap grow without bound with keys
   * of empty values, in one container or in many. */
  static u64 MaxIndexBytes() {
    return CHI_CONFIG_MANAGER->config().rdata_size_;
  }
  /** Takes `cost` bytes of the node's key budget; false (nothing taken,
   * `*used` what the keys take now) if they do not fit. Any worker. */
  static bool ReserveIndex(u64 cost, u64 *used) {
    const u64 max = MaxIndexBytes();
    u64 prev = g_node_index_bytes.load(std::memory_order_relaxed);
    do {
      if (cost > max || prev > max - cost) {
        *used = prev;
        return false;
      }
    } while (!g_node_index_bytes.compare_exchange_weak(
        prev, prev + cost, std::memory_order_relaxed));
    return true;
  }
  /** Gives back `cost` bytes of the node's key budget. Any worker. */
  static void ReleaseIndex(u64 cost) {
    g_node_index_bytes.fetch_sub(cost, std::memory_order_relaxed);
  }

  hshm::WriterFirstRwLock mu_;  ///< Writers first: readers never shut Put out.
  std::map<std::string, Value> index_;
  u64 index_bytes_ = 0;  ///< Sum of IndexCost over index_ (guarded by mu_).
};

}  // namespace chi::kvs

CHI_MODULE(chi::kvs::Runtime);
