// Client API of the kvs module. Header-only, so it compiles into clients
// (CHIMAERA_RUNTIME=0) and into other runtime modules (=1) alike.
//
// Create() (or Attach()) first; then every AsyncX returns the submitted task
// (null if the `main` segment is full): Wait() on it, read its OUT fields,
// free what it returned with CHI_IPC->FreeBuffer and CHI_IPC->DelTask() the
// task. Every X() does all of that and returns the result. Point operations
// go to the container that owns the key (GetGlobalHash(KeyHash(key))); Scan
// asks every container and merges. A Client may be shared by threads once
// created.
#ifndef CHIMODS_KVS_KVS_CLIENT_H_
#define CHIMODS_KVS_KVS_CLIENT_H_

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "chimaera/admin/admin_client.h"
#include "chimaera/client_util.h"
#include "kvs/kvs_tasks.h"

namespace chi::kvs {

/** Client of one kvs pool: ModuleClient's generic calls plus named forms
 * that route each key to its container. */
class Client : public ModuleClient<Kvs> {
 public:
  /** Scan everything (max_count). */
  static constexpr u32 kScanAll = ~0u;

  /** A client with no pool yet: call Create() or Attach(). */
  Client() = default;

  /** Gets or creates the pool `pool_name` with `num_containers` containers
   * (an existing pool keeps its own count). Errors are GetOrCreatePool's. */
  Status Create(const std::string &pool_name, u32 num_containers = 1) {
    bool existed = false;
    StatusOr<PoolId> id = admin::Client().GetOrCreatePool(
        pool_name, Kvs::kName, num_containers, "", &existed);
    if (!id.ok()) return id.status();
    if (!existed) {
      pool_id_ = *id;
      num_containers_ = num_containers;
      return Status::Ok();
    }
    return Attach(*id);
  }
  /** Uses the existing kvs pool `pool_id` (asks it for its container count).
   */
  Status Attach(const PoolId &pool_id) {
    pool_id_ = pool_id;
    num_containers_ = 0;
    u32 n = 0;
    HSHM_RETURN_IF_ERROR(WaitAndFree(
        AsyncScanContainer(0, FullPtr<char>(), 0, ScanMode::kFromKey, 0),
        [&](ScanTask *t) {
          n = t->num_containers_;
          (void)CHI_IPC->FreeBuffer(t->keys_);
        }));
    if (n == 0) return Status::Internal("kvs pool reported no containers");
    num_containers_ = n;
    return Status::Ok();
  }
  /** Destroys the pool (see PoolClient::Destroy) and unbinds the client. */
  Status Destroy() {
    Status s = ModuleClient::Destroy();
    if (s.ok()) num_containers_ = 0;
    return s;
  }
  /** Containers of the pool (0 before Create). */
  u32 num_containers() const { return num_containers_; }

  /** The query that reaches the container owning `key`. */
  static DomainQuery KeyQuery(const char *key, u64 size) {
    return DomainQuery::GetGlobalHash(KeyHash(key, size));
  }

  /** Submits a Put of the pair in the caller's buffer `data` (key bytes,
   * then value bytes; kept allocated until the task completes). */
  FullPtr<PutTask> AsyncPut(const FullPtr<char> &data, u64 key_size,
                            u64 value_size) {
    return Async<PutTask>(KeyQuery(data.ptr_, key_size), data.shm_, key_size,
                          value_size)
        .Release();
  }
  /** AsyncPut of the pair in `data`, a buffer the task owns from here on:
   * freed with it, also if it is abandoned (chi::SubmitOwningInputs). */
  FullPtr<PutTask> AsyncPutOwning(const FullPtr<char> &data, u64 key_size,
                                  u64 value_size) {
    return SubmitOwningInputs(NewTask<PutTask>(KeyQuery(data.ptr_, key_size),
                                               data.shm_, key_size, value_size),
                              {data.shm_});
  }
  /** Stores `value` under `key` (replacing any value). `*replaced` (if not
   * null) tells whether the key existed. */
  Status Put(const std::string &key, const std::string &value,
             bool *replaced = nullptr) {
    FullPtr<char> buf;
    HSHM_RETURN_IF_ERROR(CopyIn(key, value, &buf));
    // The task owns the buffer: an abandoned Put may still run, and the
    // runtime frees the pair with it.
    return WaitAndFree(AsyncPutOwning(buf, key.size(), value.size()),
                       [&](PutTask *t) {
                         if (replaced) *replaced = t->replaced_ != 0;
                       });
  }

  /** Submits a Get of the key in the caller's buffer `key`. After Wait the
   * caller frees task->value_. */
  FullPtr<GetTask> AsyncGet(const FullPtr<char> &key, u64 key_size) {
    return Async<GetTask>(KeyQuery(key.ptr_, key_size), key.shm_, key_size)
        .Release();
  }
  /** AsyncGet of the key in `key`, a buffer the task owns (as
   * AsyncPutOwning). */
  FullPtr<GetTask> AsyncGetOwning(const FullPtr<char> &key, u64 key_size) {
    return SubmitOwningInputs(
        NewTask<GetTask>(KeyQuery(key.ptr_, key_size), key.shm_, key_size),
        {key.shm_});
  }
  /** The value of `key`; NotFound if it has none. */
  StatusOr<std::string> Get(const std::string &key) {
    FullPtr<char> buf;
    HSHM_RETURN_IF_ERROR(CopyIn(key, "", &buf));
    std::string value;
    Status s = WaitAndFree(AsyncGetOwning(buf, key.size()), [&](GetTask *t) {
      FullPtr<char> v(t->value_);
      if (!v.IsNull()) value.assign(v.ptr_, t->value_size_);
      (void)CHI_IPC->FreeBuffer(t->value_);
    });
    if (!s.ok()) return s;
    return value;
  }

  /** Submits a Delete of the key in the caller's buffer `key`. */
  FullPtr<DeleteTask> AsyncDelete(const FullPtr<char> &key, u64 key_size) {
    return Async<DeleteTask>(KeyQuery(key.ptr_, key_size), key.shm_, key_size)
        .Release();
  }
  /** AsyncDelete of the key in `key`, a buffer the task owns (as
   * AsyncPutOwning). */
  FullPtr<DeleteTask> AsyncDeleteOwning(const FullPtr<char> &key,
                                        u64 key_size) {
    return SubmitOwningInputs(
        NewTask<DeleteTask>(KeyQuery(key.ptr_, key_size), key.shm_, key_size),
        {key.shm_});
  }
  /** Removes `key`; NotFound if it has no value. */
  Status Delete(const std::string &key) {
    FullPtr<char> buf;
    HSHM_RETURN_IF_ERROR(CopyIn(key, "", &buf));
    return WaitAndFree(AsyncDeleteOwning(buf, key.size()), [](DeleteTask *) {});
  }

  /** Submits a Scan of container `container` only (see ScanTask). After
   * Wait the caller frees task->keys_. */
  FullPtr<ScanTask> AsyncScanContainer(u32 container, const FullPtr<char> &key,
                                       u64 key_size, ScanMode mode,
                                       u32 max_count) {
    return Async<ScanTask>(DomainQuery::GetGlobalId(container), key.shm_,
                           key_size, mode, max_count)
        .Release();
  }
  /** The first `max_count` keys of the whole pool, in bytewise order, that
   * are >= `key` (kFromKey) or start with `key` (kPrefix). */
  StatusOr<std::vector<std::string>> Scan(const std::string &key,
                                          u32 max_count = kScanAll,
                                          ScanMode mode = ScanMode::kFromKey) {
    if (num_containers_ == 0) {
      return Status::InvalidArgument("kvs client: Create() first");
    }
    // One task per container, all in flight at once, each owning its copy
    // of the key: freed with it, also when it is abandoned (the runtime may
    // still read it then) or could not be allocated.
    std::vector<FullPtr<ScanTask>> tasks;
    tasks.reserve(num_containers_);
    Status first_error;
    for (u32 i = 0; i < num_containers_; ++i) {
      FullPtr<char> buf;
      Status copied = CopyIn(key, "", &buf);
      if (!copied.ok()) {
        if (first_error.ok()) first_error = copied;
        tasks.emplace_back();  // a null task: OutOfMemory below
        continue;
      }
      tasks.push_back(SubmitOwningInputs(
          NewTask<ScanTask>(DomainQuery::GetGlobalId(i), buf.shm_,
                            u64{key.size()}, mode, max_count),
          {buf.shm_}));
    }
    std::vector<std::string> keys;
    for (auto &t : tasks) {
      Status s = WaitAndFree(t, [&](ScanTask *st) {
        FullPtr<char> out(st->keys_);
        if (!ParseKeys(out.ptr_, st->keys_size_, st->count_, &keys)) {
          first_error = Status::Internal("kvs: malformed Scan reply");
        }
        (void)CHI_IPC->FreeBuffer(st->keys_);
      });
      if (!s.ok() && first_error.ok()) first_error = s;
    }
    if (!first_error.ok()) return first_error;
    // Each container sent its smallest matches, so the pool's smallest
    // max_count matches are among them.
    std::sort(keys.begin(), keys.end());
    if (keys.size() > max_count) keys.resize(max_count);
    return keys;
  }

 private:
  /** Copies `a` then `b` into a new data-segment buffer `*buf` (null when
   * both are empty). */
  static Status CopyIn(const std::string &a, const std::string &b,
                       FullPtr<char> *buf) {
    size_t n = a.size() + b.size();
    if (n == 0) return Status::Ok();
    *buf = CHI_IPC->AllocateBuffer(n);
    if (buf->IsNull()) return Status::OutOfMemory("data segment is full");
    std::memcpy(buf->ptr_, a.data(), a.size());
    std::memcpy(buf->ptr_ + a.size(), b.data(), b.size());
    return Status::Ok();
  }
  /** Appends the `count` length-prefixed keys in `p[0, size)` to `*keys`;
   * false if the records do not fit `size`. */
  static bool ParseKeys(const char *p, u64 size, u32 count,
                        std::vector<std::string> *keys) {
    if (count > 0 && !p) return false;
    u64 off = 0;
    for (u32 i = 0; i < count; ++i) {
      u32 len;
      if (size - off < sizeof(len)) return false;
      std::memcpy(&len, p + off, sizeof(len));
      off += sizeof(len);
      if (size - off < len) return false;
      keys->emplace_back(p + off, len);
      off += len;
    }
    return true;
  }

  u32 num_containers_ = 0;
};

}  // namespace chi::kvs

#endif  // CHIMODS_KVS_KVS_CLIENT_H_
