// chimaera_kvs_workload: a kvs workload against a live runtime (any node of a
// cluster). `put` creates the pool (spread over every node) and stores keys;
// `get` reads them back, possibly from another node, and checks each value.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "chimaera/chimaera.h"
#include "hermes_shm/util/futex.h"
#include "kvs/kvs_client.h"

namespace {

/** The key and value of entry `i`. */
std::string Key(hshm::u64 i) { return "key-" + std::to_string(i); }
std::string Value(hshm::u64 i) {
  std::string v = "value-" + std::to_string(i) + "-";
  while (v.size() < 64) v += static_cast<char>('a' + i % 26);
  return v;
}

/** One task in flight with its buffer. */
struct Slot {
  chi::FullPtr<chi::kvs::PutTask> put;
  chi::FullPtr<chi::kvs::GetTask> get;
  chi::FullPtr<char> buf;
  hshm::u64 index = 0;
};

}  // namespace

int main(int argc, char **argv) {
  CLI::App app{"Put or get kvs keys through the local Chimaera runtime."};
  std::string mode, pool = "kvs_workload";
  hshm::u32 containers = 0, window = 128;
  hshm::u64 keys = 100000;
  app.add_option("mode", mode, "put or get")
      ->required()
      ->check(CLI::IsMember({"put", "get"}));
  app.add_option("-p,--pool", pool, "Pool name");
  app.add_option("-c,--containers", containers,
                 "Containers of a new pool (default: 2 per node)");
  app.add_option("-k,--keys", keys, "Keys");
  app.add_option("-w,--window", window, "Tasks in flight")
      ->check(CLI::Range(1, 4096));
  CLI11_PARSE(app, argc, argv);
  hshm::Status s = CHIMAERA_CLIENT_INIT();
  if (!s.ok()) {
    fprintf(stderr, "chimaera_kvs_workload: %s\n", s.ToString().c_str());
    return 1;
  }
  hshm::u32 nodes = CHI_CONFIG_MANAGER->config().hosts_.size();
  if (containers == 0) containers = 2 * nodes;
  chi::kvs::Client kvs;
  s = kvs.Create(pool, containers);
  if (!s.ok()) {
    fprintf(stderr, "chimaera_kvs_workload: pool %s: %s\n", pool.c_str(),
            s.ToString().c_str());
    return 1;
  }
  chi::NodeId self = CHI_IPC->node_id();
  std::vector<Slot> slots(window);
  hshm::u64 errors = 0, remote = 0, next = 0, done = 0;
  auto reap = [&](Slot &sl) {
    bool ok;
    if (sl.put.IsNull() && sl.get.IsNull()) return;
    if (!sl.put.IsNull()) {
      sl.put->Wait();
      ok = sl.put->GetStatus().ok();
      if (!ok && errors < 5) {
        fprintf(stderr, "put %s: %s\n", Key(sl.index).c_str(),
                sl.put->GetStatus().ToString().c_str());
      }
      CHI_IPC->DelTask(sl.put);
    } else {
      sl.get->Wait();
      ok = sl.get->GetStatus().ok();
      chi::FullPtr<char> v(sl.get->value_);
      std::string want = Value(sl.index);
      if (ok && (v.IsNull() || sl.get->value_size_ != want.size() ||
                 want.compare(0, want.size(), v.ptr_, want.size()) != 0)) {
        ok = false;
      }
      if (!ok && errors < 5) {
        fprintf(stderr, "get %s: %s\n", Key(sl.index).c_str(),
                sl.get->GetStatus().ok()
                    ? "wrong value"
                    : sl.get->GetStatus().ToString().c_str());
      }
      (void)CHI_IPC->FreeBuffer(sl.get->value_);
      CHI_IPC->DelTask(sl.get);
    }
    (void)CHI_IPC->FreeBuffer(sl.buf.shm_);
    sl = Slot();
    errors += !ok;
    ++done;
  };
  hshm::u64 t0 = hshm::NowNs();
  while (next < keys) {
    Slot &sl = slots[next % window];
    reap(sl);
    std::string k = Key(next), v = mode == "put" ? Value(next) : "";
    sl.buf = CHI_IPC->AllocateBuffer(k.size() + v.size());
    if (sl.buf.IsNull()) {
      fprintf(stderr, "chimaera_kvs_workload: client_data is full\n");
      return 1;
    }
    memcpy(sl.buf.ptr_, k.data(), k.size());
    memcpy(sl.buf.ptr_ + k.size(), v.data(), v.size());
    chi::u32 c = chi::kvs::KeyHash(k.data(), k.size()) % kvs.num_containers();
    remote += (c % nodes + 1) != self;
    sl.index = next;
    if (mode == "put") {
      sl.put = kvs.AsyncPut(sl.buf, k.size(), v.size());
    } else {
      sl.get = kvs.AsyncGet(sl.buf, k.size());
    }
    if (sl.put.IsNull() && sl.get.IsNull()) {
      // No task: the main segment is full. An error, not a lost key.
      if (errors < 5) {
        fprintf(stderr, "%s %s: the main segment is full\n", mode.c_str(),
                k.c_str());
      }
      (void)CHI_IPC->FreeBuffer(sl.buf.shm_);
      sl = Slot();
      ++errors;
      ++done;
    }
    ++next;
  }
  for (Slot &sl : slots) reap(sl);
  double secs = (hshm::NowNs() - t0) / 1e9;
  printf(
      "node %u: %s %llu keys (%llu on other nodes) of pool '%s' (%u "
      "containers over %u nodes): %.2f s, %.0f ops/s, %llu errors\n",
      self, mode.c_str(), static_cast<unsigned long long>(done),
      static_cast<unsigned long long>(remote), pool.c_str(),
      kvs.num_containers(), nodes, secs, done / secs,
      static_cast<unsigned long long>(errors));
  CHIMAERA->ClientFinalize();
  return errors ? 1 : 0;
}
