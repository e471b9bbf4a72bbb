// IpcManager: compiled into chimaera_client (CHIMAERA_RUNTIME=0) and
// chimaera_runtime (CHIMAERA_RUNTIME=1); the server half exists only in the
// runtime.
#include "chimaera/ipc_manager.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <mutex>
#include <sstream>
#include <vector>

#include "chimaera/config_manager.h"
#include "chimaera/handshake.h"
#include "chimaera/task_graph.h"
#include "hermes_shm/memory/memory_manager.h"
#include "hermes_shm/thread_model.h"
#include "hermes_shm/util/futex.h"
#include "hermes_shm/util/log_limit.h"
#include "hermes_shm/util/tsan.h"
#if CHIMAERA_RUNTIME
#include "chimaera/process_reaper.h"
#include "chimaera/worker.h"
#endif

namespace chi {

namespace {

constexpr u64 kIpcMagic = 0x4348494950433031ull;  // "CHIIPC01"
/** Allocator id majors of the three segments (minor = node id). */
constexpr u32 kMainAllocMajor = 1;
constexpr u32 kCdataAllocMajor = 2;
constexpr u32 kRdataAllocMajor = 3;
/** Protocol words of the handshake. */
constexpr const char kHello[] = "HELLO";
constexpr const char kOk[] = "OK";

/** Error message stored after a task fails: length-prefixed text. */
struct ErrorText {
  u32 len;
  char text[1];
};

/** True if process `pid` exists. */
bool PidAlive(int pid) { return hshm::ProcessAlive(pid); }

}  // namespace

/** Counts attachments in this process (per-thread caches key on it). */
static std::atomic<u64> g_attach_counter{0};

IpcManager::IpcManager() = default;

IpcManager::~IpcManager() = default;

//------------------------------------------------------------------------------
// Client side
//------------------------------------------------------------------------------

Status IpcManager::ClientInit() {
  if (initialized_) return Status::Ok();
  const ServerConfig &conf = CHI_CONFIG_MANAGER->config();
  send_timeout_ms_ = conf.client_timeout_ms_;
  task_timeout_ms_ = conf.task_timeout_ms_;
  runtime_stale_ms_ = conf.runtime_stale_ms_;
  std::string host, reply;
  HSHM_RETURN_IF_ERROR(FindRuntime(&host, &reply));
  std::string where = host + ":" + std::to_string(conf.port_);
  std::istringstream in(reply);
  std::string word, key, main, cdata, rdata;
  u32 node = 0;
  int pid = 0;
  in >> word;
  if (word != kOk) {
    return Status::Unavailable("runtime at " + where + " refused: " + reply);
  }
  if (!(in >> node >> pid >> key >> main >> cdata >> rdata)) {
    return Status::Internal("malformed handshake reply from " + where);
  }
  HSHM_RETURN_IF_ERROR(AttachSegments(main, cdata, rdata));
  // The pid from the handshake, and its start time from /proc: the copies
  // in `main` are for tools only (any client can rewrite them; a wrong start
  // time made this client take a live runtime for a dead one).
  runtime_pid_ = pid;
  runtime_start_time_ = hshm::ProcessStartTime(pid);
  server_addr_ = where;
  server_host_ = host;
  server_port_ = conf.port_;
  instance_key_ = key;
  node_id_ = node;
  attach_gen_ = g_attach_counter.fetch_add(1) + 1;
  registered_pid_.store(getpid(), std::memory_order_relaxed);
  initialized_ = true;
  static std::once_flag fork_handler;
  std::call_once(fork_handler, [] {
    pthread_atfork(nullptr, nullptr, &IpcManager::AfterForkInChild);
    // A forked child registers before its first block carries its pid, so
    // that one dying before its first Send is reaped too.
    hipc::SetNewOwnerHook(&IpcManager::RegisterIfForked);
  });
  return Status::Ok();
}

Status IpcManager::FindRuntime(std::string *host, std::string *reply) const {
  const ServerConfig &conf = CHI_CONFIG_MANAGER->config();
  const char *addr_env = std::getenv("CHI_SERVER_ADDR");
  if (addr_env && *addr_env) {
    *host = addr_env;
    return Handshake(*host, conf.port_, reply);
  }
  if (conf.node_id_ != 0 && conf.node_id_ <= conf.hosts_.size()) {
    *host = conf.hosts_[conf.node_id_ - 1];
    return Handshake(*host, conf.port_, reply);
  }
  // As the runtime binds the first entry it can, so the first local entry
  // with a runtime is this machine's node (several, as on a test machine
  // whose nodes are 127.0.0.x, leave the rest to CHI_SERVER_ADDR).
  std::vector<std::string> local;
  Status first_absent;
  for (const std::string &h : conf.hosts_) {
    if (!IsLocalAddress(h)) continue;
    local.push_back(h);
    bool absent = false;
    Status s = Handshake(h, conf.port_, reply, &absent);
    if (s.ok() || !absent) {
      *host = h;
      return s;
    }
    if (first_absent.ok()) first_absent = s;
  }
  std::string entries;
  for (size_t i = 0; i < conf.hosts_.size() && i < 4; ++i) {
    entries += (i ? ", " : "") + conf.hosts_[i];
  }
  if (conf.hosts_.size() > 4) entries += ", ...";
  if (local.empty()) {
    return Status::Unavailable(
        "no hostfile entry (" + entries +
        ") is an address of this machine, and a client attaches to the "
        "runtime on its own machine; set CHI_SERVER_ADDR (or CHI_NODE_ID) "
        "to the entry of this machine's node");
  }
  if (local.size() == 1) return first_absent;
  return Status::Unavailable(
      "no Chimaera runtime is listening on port " + std::to_string(conf.port_) +
      " of this machine's " + std::to_string(local.size()) +
      " hostfile entries (start one with chimaera_start_runtime, using the "
      "same CHI_SERVER_CONF)");
}

Status IpcManager::Handshake(const std::string &host, u32 port,
                             std::string *reply, bool *absent) const {
  // The pid lets the runtime's reaper free what this process leaves behind
  // if it dies.
  const std::string req = std::string(kHello) + " " +
                          std::to_string(kModuleAbiVersion) + " " +
                          std::to_string(getpid());
  return HandshakeCall(host, port, req,
                       CHI_CONFIG_MANAGER->config().client_timeout_ms_, reply,
                       absent);
}

void IpcManager::AfterForkInChild() {
  // Single-threaded here (the child of fork). Only a store: the work waits
  // for the child's first heap block or Send (RegisterIfForked), so that
  // fork+exec costs nothing.
  IpcManager *m = CHI_IPC;
  if (m->initialized_ && !m->is_runtime_) {
    m->attach_gen_ = g_attach_counter.fetch_add(1) + 1;
  }
}

void IpcManager::RegisterForkedChild() {
  Status s;
  for (int attempt = 0; attempt < 40; ++attempt) {
    std::string reply;
    s = Handshake(server_host_, server_port_, &reply);
    if (!s.ok()) break;
    if (reply.compare(0, 2, kOk) == 0) return;
    s = Status::Unavailable("the runtime refused: " + reply);
    // Our pid was a dead client's, whose memory is still being freed.
    if (reply.find("still being reaped") == std::string::npos) break;
    HSHM_THREAD_MODEL->SleepForUs(50000);
  }
  HSHM_LOG_LIMITED(
      "chimaera: forked process %d could not register with the runtime "
      "(what it leaves behind if it dies stays allocated): %s\n",
      hshm::CachedPid(), s.ToString().c_str());
}

void IpcManager::RegisterIfForked() {
  IpcManager *m = CHI_IPC;
  if (!m->initialized_ || m->is_runtime_) return;
  int reg = m->registered_pid_.load(std::memory_order_relaxed);
  const int self = hshm::CachedPid();
  if (reg != self && m->registered_pid_.compare_exchange_strong(
                         reg, self, std::memory_order_relaxed)) {
    m->RegisterForkedChild();  // one thread of the child
  }
}

Status IpcManager::AttachSegments(const std::string &main,
                                  const std::string &cdata,
                                  const std::string &rdata) {
  HSHM_RETURN_IF_ERROR(main_shm_.Attach(main));
  HSHM_RETURN_IF_ERROR(cdata_shm_.Attach(cdata));
  HSHM_RETURN_IF_ERROR(rdata_shm_.Attach(rdata));
  MakeAllocators();
  HSHM_RETURN_IF_ERROR(
      main_alloc_->Attach(main_shm_.data(), main_shm_.data_size()));
  HSHM_RETURN_IF_ERROR(
      cdata_alloc_->Attach(cdata_shm_.data(), cdata_shm_.data_size()));
  HSHM_RETURN_IF_ERROR(
      rdata_alloc_->Attach(rdata_shm_.data(), rdata_shm_.data_size()));
  shared_ = main_alloc_->GetCustomHeader<IpcShared>();
  if (!shared_ || shared_->magic_ != kIpcMagic ||
      shared_->ready_.load(std::memory_order_acquire) != 1) {
    return Status::Unavailable("runtime segments are not ready");
  }
  HSHM_RETURN_IF_ERROR(RegisterAllocators());
  queue_ = FullPtr<ProcessQueue>(shared_->process_queue_).ptr_;
  workers_ = FullPtr<WorkerShared>(shared_->workers_).ptr_;
  if (!queue_ || !workers_) return Status::Internal("corrupt main segment");
  // A client trusts the runtime's segment for the queue's shape, but checks
  // that it fits in the segment before using it.
  u32 lanes = queue_->num_lanes();
  u64 depth = queue_->depth();
  if (lanes == 0 || lanes > 4096 || queue_->num_prios() != kNumPrios ||
      depth < 2 || depth > (1ull << 32) || (depth & (depth - 1)) != 0 ||
      !main_alloc_->IsLiveBlock(
          shared_->process_queue_,
          ProcessQueue::ComputeSize(lanes, kNumPrios, depth))) {
    return Status::Internal("corrupt process queue in the main segment");
  }
  num_workers_ = shared_->num_workers_;
  MakeLaneViews(lanes, depth);
  return Status::Ok();
}

void IpcManager::MakeAllocators() {
  main_owned_ = std::make_unique<CHI_MAIN_ALLOC_T>();
  main_alloc_ = main_owned_.get();
  cdata_owned_ = std::make_unique<CHI_CDATA_ALLOC_T>();
  cdata_alloc_ = cdata_owned_.get();
  rdata_owned_ = std::make_unique<CHI_RDATA_ALLOC_T>();
  rdata_alloc_ = rdata_owned_.get();
}

Status IpcManager::RegisterAllocators() {
  auto *mm = HSHM_MEMORY_MANAGER;
  HSHM_RETURN_IF_ERROR(mm->Register(main_alloc_->GetId(),
                                    main_alloc_->GetRegion(),
                                    main_alloc_->GetRegionSize(), main_alloc_));
  HSHM_RETURN_IF_ERROR(
      mm->Register(cdata_alloc_->GetId(), cdata_alloc_->GetRegion(),
                   cdata_alloc_->GetRegionSize(), cdata_alloc_));
  HSHM_RETURN_IF_ERROR(
      mm->Register(rdata_alloc_->GetId(), rdata_alloc_->GetRegion(),
                   rdata_alloc_->GetRegionSize(), rdata_alloc_));
  return Status::Ok();
}

//------------------------------------------------------------------------------
// Runtime side
//------------------------------------------------------------------------------

Status IpcManager::ServerInit() {
#if CHIMAERA_RUNTIME
  if (initialized_) return Status::Ok();
  is_runtime_ = true;
  stopping_.store(false, std::memory_order_relaxed);
  const ServerConfig &conf = CHI_CONFIG_MANAGER->config();
  task_timeout_ms_ = conf.task_timeout_ms_;
  runtime_stale_ms_ = conf.runtime_stale_ms_;
  handshake_ = std::make_unique<HandshakeServer>();
  std::string errors;
  for (size_t i = 0; i < conf.hosts_.size(); ++i) {
    // A runtime told its node id binds that hostfile entry only.
    if (conf.node_id_ != 0 && i + 1 != conf.node_id_) continue;
    Status b = handshake_->Bind(conf.hosts_[i], conf.port_);
    if (b.ok()) {
      node_id_ = static_cast<NodeId>(i + 1);
      server_addr_ = conf.hosts_[i] + ":" + std::to_string(conf.port_);
      break;
    }
    errors += " " + conf.hosts_[i] + " (" + b.ToString() + ");";
  }
  if (node_id_ == 0) {
    return Status::AlreadyExists(
        "could not bind port " + std::to_string(conf.port_) +
        " on any hostfile address; is another runtime using it?" + errors);
  }
  instance_key_ = server_addr_;
  Status created = CreateSegments();
  if (!created.ok()) {
    // No runtime will use them: a failed start leaves no segments behind.
    ReleaseSegments(/*created=*/false);
    return created;
  }
  attach_gen_ = g_attach_counter.fetch_add(1) + 1;
  initialized_ = true;
  return Status::Ok();
#else
  return Status::Unimplemented("ServerInit needs chimaera_runtime");
#endif
}

Status IpcManager::CreateSegments() {
  const ServerConfig &conf = CHI_CONFIG_MANAGER->config();
  struct Seg {
    hipc::PosixShmMmap *shm;
    const char *name;
    u64 size;
  } segs[] = {{&main_shm_, "main", conf.main_size_},
              {&cdata_shm_, "client_data", conf.cdata_size_},
              {&rdata_shm_, "runtime_data", conf.rdata_size_}};
  for (auto &s : segs) {
    std::string name = hipc::PosixShmMmap::MakeName(instance_key_, s.name);
    if (hipc::PosixShmMmap::Exists(name)) {
      // We hold the port, so a live owner would be a runtime of another
      // configuration sharing our key: refuse. Otherwise it is stale.
      hipc::PosixShmMmap old;
      int owner = old.Attach(name).ok() ? old.creator_pid() : -1;
      old.Detach();
      if (owner > 0 && owner != getpid() && PidAlive(owner)) {
        return Status::AlreadyExists("segment " + name +
                                     " belongs to running process " +
                                     std::to_string(owner));
      }
      HSHM_RETURN_IF_ERROR(hipc::PosixShmMmap::Unlink(name));
      fprintf(stderr, "chimaera: removed stale segment %s (owner %d gone)\n",
              name.c_str(), owner);
    }
    Status st = s.shm->Create(name, s.size);
    if (!st.ok()) {
      return Status(st.code(), std::string("creating segment '") + s.name +
                                   "': " + st.message());
    }
  }
  MakeAllocators();
  HSHM_RETURN_IF_ERROR(main_alloc_->Create(
      hipc::AllocatorId(kMainAllocMajor, node_id_), main_shm_.data(),
      main_shm_.data_size(), sizeof(IpcShared)));
  HSHM_RETURN_IF_ERROR(
      cdata_alloc_->Create(hipc::AllocatorId(kCdataAllocMajor, node_id_),
                           cdata_shm_.data(), cdata_shm_.data_size()));
  HSHM_RETURN_IF_ERROR(
      rdata_alloc_->Create(hipc::AllocatorId(kRdataAllocMajor, node_id_),
                           rdata_shm_.data(), rdata_shm_.data_size()));
  HSHM_RETURN_IF_ERROR(RegisterAllocators());

  shared_ = new (main_alloc_->GetCustomHeader<IpcShared>()) IpcShared();
  shared_->magic_ = kIpcMagic;
  shared_->node_id_ = node_id_;
  shared_->runtime_pid_ = getpid();
  shared_->runtime_start_time_ = hshm::ProcessStartTime(getpid());
  shared_->heartbeat_ns_.store(hshm::NowNs(), std::memory_order_relaxed);
  shared_->next_task_major_.store((static_cast<u64>(node_id_) << 48) | 1);
  u32 lanes = std::max(conf.num_low_latency_, conf.num_high_latency_);
  Status st;
  auto q = ProcessQueue::New(main_alloc_, HSHM_MCTX, lanes, kNumPrios,
                             conf.queue_depth_, &st);
  if (q.IsNull()) {
    return Status(st.code(),
                  "process queue (" + std::to_string(lanes) + " lanes x " +
                      std::to_string(kNumPrios) + " priorities x " +
                      std::to_string(conf.queue_depth_) +
                      " slots): " + st.message() + "; raise shm.main (" +
                      std::to_string(conf.main_size_) +
                      " bytes) or lower queue.depth");
  }
  queue_ = q.ptr_;
  queue_ptr_ = q.shm_;
  shared_->process_queue_ = q.shm_;
  // The runtime keeps its own copy of every shape it relies on; the copies
  // in the segment are for clients only.
  MakeLaneViews(lanes, conf.queue_depth_);
  num_workers_ = conf.NumWorkers();
  shared_->num_workers_ = num_workers_;
  auto w = main_alloc_->AllocatePtr<WorkerShared>(HSHM_MCTX, num_workers_);
  if (w.IsNull()) {
    return Status::OutOfMemory(
        "main segment: no room for the worker table; "
        "raise shm.main (" +
        std::to_string(conf.main_size_) + " bytes)");
  }
  for (u32 i = 0; i < num_workers_; ++i) new (&w.ptr_[i]) WorkerShared();
  workers_ = w.ptr_;
  workers_ptr_ = w.shm_;
  shared_->workers_ = w.shm_;
  main_alloc_->FlushThreadCache();
  return Status::Ok();
}

Status IpcManager::StartServer() {
#if CHIMAERA_RUNTIME
  shared_->ready_.store(1, std::memory_order_release);
  server_stop_.store(false);
  server_thread_ = std::thread([this] { ServerLoop(); });
  return Status::Ok();
#else
  return Status::Unimplemented("StartServer needs chimaera_runtime");
#endif
}

void IpcManager::ServerLoop() {
  HSHM_THREAD_MODEL->SetName("chi_server");
  const u32 conn_timeout_ms = CHI_CONFIG_MANAGER->config().client_timeout_ms_;
  handshake_->Serve(
      server_stop_,
      [this](const std::string &req) { return AnswerHandshake(req); },
      conn_timeout_ms);
}

std::string IpcManager::AnswerHandshake(const std::string &request) {
  std::istringstream in(request);
  std::string word;
  u32 abi = 0;
  int client_pid = 0;
  in >> word >> abi >> client_pid;
  if (word != kHello) return "ERR unknown request";
  if (abi != kModuleAbiVersion) {
    return "ERR client ABI " + std::to_string(abi) +
           " does not match runtime ABI " + std::to_string(kModuleAbiVersion);
  }
  if (Stopping()) return "ERR runtime is shutting down";
  if (client_pid > 0 && !hshm::ProcessAlive(client_pid)) {
    // Nothing could ever reap it; each dead pid costs the reaper walks.
    return "ERR no live process has pid " + std::to_string(client_pid);
  }
#if CHIMAERA_RUNTIME
  // The handshake comes over loopback TCP, so the pid is a claim, not a
  // proof: the reaper only acts once that process is gone.
  if (client_pid > 0 && !CHI_REAPER->RegisterClient(client_pid)) {
    return "ERR a dead process with pid " + std::to_string(client_pid) +
           " is still being reaped; retry shortly";
  }
#endif
  return std::string(kOk) + " " + std::to_string(node_id_) + " " +
         std::to_string(getpid()) + " " + instance_key_ + " " +
         main_shm_.name() + " " + cdata_shm_.name() + " " + rdata_shm_.name();
}

void IpcManager::MakeLaneViews(u32 num_lanes, u64 depth) {
  num_lanes_ = num_lanes;
  lane_views_.clear();
  lane_views_.reserve(static_cast<size_t>(num_lanes) * kNumPrios);
  for (u32 p = 0; p < kNumPrios; ++p) {
    for (u32 l = 0; l < num_lanes; ++l) {
      lane_views_.push_back(
          ProcessQueue::MakeView(queue_, num_lanes, kNumPrios, depth, l, p));
    }
  }
}

void IpcManager::BeginShutdown() {
  stopping_.store(true, std::memory_order_release);
  if (shared_) shared_->shutdown_.store(1, std::memory_order_release);
}

void IpcManager::Finalize() {
  if (server_thread_.joinable()) {
    server_stop_.store(true, std::memory_order_release);
    server_thread_.join();
  }
  handshake_.reset();
  if (!initialized_) return;
  ReleaseSegments(/*created=*/true);
}

void IpcManager::ReleaseSegments(bool created) {
  auto *mm = HSHM_MEMORY_MANAGER;
  if (created) {
    // Every thread's caches, not only this one's: a client that detaches
    // and attaches again (Python's disconnect/connect) would otherwise lose
    // what its other threads had cached, each time.
    if (main_alloc_) main_alloc_->FlushAllThreadCaches();
    if (cdata_alloc_) cdata_alloc_->FlushAllThreadCaches();
    if (rdata_alloc_) rdata_alloc_->FlushAllThreadCaches();
  }
  // Only a slot that holds this allocator (a failed start may not have
  // registered it, nor given it its id).
  auto unregister = [mm](auto *alloc) {
    if (!alloc) return;
    const hipc::AllocatorId id = alloc->GetId();
    if (id.major_ < hipc::internal::kMaxAllocators &&
        hipc::internal::g_allocator_table[id.major_].alloc.load(
            std::memory_order_acquire) == static_cast<void *>(alloc)) {
      mm->Unregister(id);
    }
  };
  unregister(main_alloc_);
  unregister(cdata_alloc_);
  unregister(rdata_alloc_);
  if (is_runtime_) {
    (void)main_shm_.Destroy();
    (void)cdata_shm_.Destroy();
    (void)rdata_shm_.Destroy();
  } else {
    main_shm_.Detach();
    cdata_shm_.Detach();
    rdata_shm_.Detach();
  }
  // Other threads' caches may still name these allocator objects; they only
  // compare the address and never dereference an unregistered one.
  main_alloc_ = nullptr;
  cdata_alloc_ = nullptr;
  rdata_alloc_ = nullptr;
  main_owned_.reset();
  cdata_owned_.reset();
  rdata_owned_.reset();
  shared_ = nullptr;
  queue_ = nullptr;
  queue_ptr_ = hipc::Pointer::GetNull();
  workers_ptr_ = hipc::Pointer::GetNull();
  lane_views_.clear();
  num_lanes_ = 0;
  num_workers_ = 0;
  workers_ = nullptr;
  initialized_ = false;
}

//------------------------------------------------------------------------------
// Both sides
//------------------------------------------------------------------------------

FullPtr<char> IpcManager::AllocateBuffer(size_t size) {
#if CHIMAERA_RUNTIME
  return rdata_alloc_->Allocate(HSHM_MCTX, size);
#else
  return cdata_alloc_->Allocate(HSHM_MCTX, size);
#endif
}

FullPtr<char> IpcManager::AllocateClientBuffer(size_t size) {
  return cdata_alloc_->Allocate(HSHM_MCTX, size);
}

const char *IpcManager::DataBuffer(const hipc::Pointer &p, u64 size) const {
  static const char kEmpty[1] = {0};
  if (size == 0) return kEmpty;
  if (p.alloc_id_ != cdata_alloc_->GetId() &&
      p.alloc_id_ != rdata_alloc_->GetId()) {
    return nullptr;
  }
  return hipc::ToProcessAddressChecked(p, size);
}

Status IpcManager::FreeBuffer(const hipc::Pointer &p) {
  if (p.IsNull()) return Status::Ok();
  if (p.alloc_id_ == cdata_alloc_->GetId()) {
    return cdata_alloc_->Free(HSHM_MCTX, p);
  }
  if (p.alloc_id_ == rdata_alloc_->GetId()) {
    return rdata_alloc_->Free(HSHM_MCTX, p);
  }
  if (p.alloc_id_ == main_alloc_->GetId()) {
    return main_alloc_->Free(HSHM_MCTX, p);
  }
  return Status::InvalidArgument("FreeBuffer: pointer of unknown allocator");
}

void IpcManager::HoldInputs(const hipc::Pointer &task,
                            std::initializer_list<hipc::Pointer> inputs) {
  std::vector<hipc::Pointer> held;
  for (const hipc::Pointer &p : inputs) {
    if (!p.IsNull()) held.push_back(p);
  }
  if (held.empty()) return;
  HeldInputs &s = HeldStripe(task.off_.off_);
  std::lock_guard<std::mutex> l(s.mu);
  auto [it, added] = s.by_task.try_emplace(task.off_.off_);
  it->second.insert(it->second.end(), held.begin(), held.end());
  if (added) held_inputs_count_.fetch_add(1, std::memory_order_relaxed);
}

void IpcManager::FreeHeldInputs(const hipc::Pointer &task) {
  std::vector<hipc::Pointer> held;
  {
    HeldInputs &s = HeldStripe(task.off_.off_);
    std::lock_guard<std::mutex> l(s.mu);
    auto it = s.by_task.find(task.off_.off_);
    if (it == s.by_task.end()) return;
    held = std::move(it->second);
    s.by_task.erase(it);
    held_inputs_count_.fetch_sub(1, std::memory_order_relaxed);
  }
  // Only this process's own blocks (a module could have named another's).
  for (const hipc::Pointer &p : held) {
    (void)FreeBufferOwnedBy(p, hshm::CachedPid());
  }
}

Status IpcManager::FreeBufferOwnedBy(const hipc::Pointer &p, int pid) {
  if (p.IsNull()) return Status::Ok();
  if (pid < 0) return Status::InvalidArgument("FreeBufferOwnedBy: no owner");
  if (p.alloc_id_ == cdata_alloc_->GetId()) {
    return cdata_alloc_->FreeOwnedBy(HSHM_MCTX, p, pid);
  }
  if (p.alloc_id_ == rdata_alloc_->GetId()) {
    return rdata_alloc_->FreeOwnedBy(HSHM_MCTX, p, pid);
  }
  // (Never `main`: task blocks and the runtime's structures live there.)
  return Status::InvalidArgument(
      "FreeBufferOwnedBy: not a data-segment pointer");
}

void IpcManager::SetBufferOwner(const hipc::Pointer &p, int pid) {
  if (p.IsNull()) return;
  if (p.alloc_id_ == cdata_alloc_->GetId()) {
    cdata_alloc_->SetBlockOwner(p, pid);
  } else if (p.alloc_id_ == rdata_alloc_->GetId()) {
    rdata_alloc_->SetBlockOwner(p, pid);
  } else if (p.alloc_id_ == main_alloc_->GetId()) {
    main_alloc_->SetBlockOwner(p, pid);
  }
}

int IpcManager::BufferOwner(const hipc::Pointer &p) const {
  if (p.IsNull()) return -1;
  if (p.alloc_id_ == cdata_alloc_->GetId()) return cdata_alloc_->BlockOwner(p);
  if (p.alloc_id_ == rdata_alloc_->GetId()) return rdata_alloc_->BlockOwner(p);
  if (p.alloc_id_ == main_alloc_->GetId()) return main_alloc_->BlockOwner(p);
  return -1;
}

bool IpcManager::MayFreeExtra(const hipc::Pointer &p, const Task *task) const {
  if (!is_runtime_) return true;
  return p.alloc_id_ == main_alloc_->GetId() && !IsRuntimeStructure(p) &&
         p != main_alloc_->ToPointer(task) &&
         main_alloc_->LiveBlockSize(p) != 0;
}

void IpcManager::FreeTaskExtras(Task *task) {
  // Each read once: in the runtime the task is one of its own subtasks,
  // whose block every client can write.
  const hipc::Pointer err = task->err_;
  const hipc::Pointer ext = task->ext_;
  task->err_ = hipc::Pointer::GetNull();
  task->ext_ = hipc::Pointer::GetNull();
  if (!err.IsNull() && MayFreeExtra(err, task)) (void)FreeBuffer(err);
  if (!ext.IsNull() && MayFreeExtra(ext, task)) internal::FreeTaskExtBlock(ext);
  if (local_err_count_.load(std::memory_order_relaxed) != 0) {
    std::lock_guard<std::mutex> lock(local_err_mu_);
    if (local_errs_.erase(task)) {
      local_err_count_.store(static_cast<u32>(local_errs_.size()),
                             std::memory_order_relaxed);
    }
  }
}

std::string IpcManager::LocalTaskError(const Task *task) const {
  if (local_err_count_.load(std::memory_order_relaxed) == 0) return {};
  std::lock_guard<std::mutex> lock(local_err_mu_);
  auto it = local_errs_.find(task);
  return it == local_errs_.end() ? std::string() : it->second;
}

void IpcManager::SetTaskError(Task *task, const std::string &msg) {
  hipc::Pointer old = task->err_;
  task->err_ = hipc::Pointer::GetNull();
  if (!old.IsNull()) (void)FreeBuffer(old);
  hipc::Pointer err = NewErrorText(msg);
  if (err.IsNull()) {
    // A client keeps the text itself; the runtime reports the code alone.
    if (!is_runtime_) {
      std::lock_guard<std::mutex> lock(local_err_mu_);
      local_errs_[task] = msg;
      local_err_count_.store(static_cast<u32>(local_errs_.size()),
                             std::memory_order_relaxed);
    }
    return;
  }
  task->err_ = err;
}

hipc::Pointer IpcManager::NewErrorText(const std::string &msg) {
  FullPtr<char> buf =
      main_alloc_->Allocate(HSHM_MCTX, sizeof(u32) + msg.size() + 1);
  if (buf.IsNull()) return hipc::Pointer::GetNull();
  auto *et = reinterpret_cast<ErrorText *>(buf.ptr_);
  et->len = static_cast<u32>(msg.size());
  std::memcpy(et->text, msg.data(), msg.size());
  et->text[msg.size()] = '\0';
  return buf.shm_;
}

namespace {
/** What each thread keeps for itself, in one thread_local so that a use
 * costs one TLS lookup (__tls_get_addr, in a shared library) instead of one
 * per variable. Trivially destructible: no TLS guard on the hot path. */
struct ThreadState {
  /** Reserved task-graph ids [major_next, major_end), valid for the
   * attachment major_gen. */
  u64 major_next = 0;
  u64 major_end = 0;
  u64 major_gen = 0;
  /** The process-queue lane this thread submits to (spread over lanes by
   * pid and thread id, fixed per thread so its tasks stay in order), valid
   * for the attachment lane_gen (a reconnect may change the count; the new
   * segments may even map at the old addresses, so addresses are no key). */
  u64 lane_gen = 0;
  u32 lane = ~0u;
  /** Synchronous-call deadline in ms (0: the configured one). */
  u64 task_timeout_ms = 0;
};
thread_local ThreadState tls_thread;

/** The calling thread's ThreadState. The empty asm hides where the pointer
 * came from, so that GCC keeps it in a register rather than calling
 * __tls_get_addr again for each later use (it rematerializes TLS addresses
 * otherwise). */
inline ThreadState *ThisThread() {
  ThreadState *t = &tls_thread;
  asm("" : "+r"(t));
  return t;
}
constexpr u64 kMajorBatch = 4096;
}  // namespace

TaskNode IpcManager::NewTaskNode() {
  // Reserve ids in batches so that threads do not contend on one counter.
  ThreadState &t = *ThisThread();
  if (t.major_next == t.major_end || t.major_gen != attach_gen_) {
    t.major_gen = attach_gen_;
    t.major_next = shared_->next_task_major_.fetch_add(
        kMajorBatch, std::memory_order_relaxed);
    t.major_end = t.major_next + kMajorBatch;
  }
  return TaskNode(t.major_next++, 0);
}

bool IpcManager::RuntimeAlive() const {
  if (!shared_) return false;
  if (Stopping()) return false;
  return RuntimeProcessAlive();
}

int IpcManager::runtime_pid() const {
  return is_runtime_ ? getpid() : runtime_pid_;
}

bool IpcManager::RuntimeProcessAlive() const {
  if (!shared_) return false;
  return is_runtime_ ||
         hshm::ProcessAliveSince(runtime_pid_, runtime_start_time_);
}

Status IpcManager::CheckRuntimeAlive() const {
  if (!shared_) return Status::Unavailable("not attached to a runtime");
  if (is_runtime_) return Status::Ok();
  if (!hshm::ProcessAliveSince(runtime_pid_, runtime_start_time_)) {
    return Status::Unavailable(
        "the Chimaera runtime exited before the task completed");
  }
  u64 beat = shared_->heartbeat_ns_.load(std::memory_order_relaxed);
  u64 now = hshm::NowNs();
  if (now > beat &&
      now - beat > static_cast<u64>(runtime_stale_ms_) * 1000000) {
    return Status::Unavailable("the Chimaera runtime (pid " +
                               std::to_string(runtime_pid_) +
                               ") has not stamped its heartbeat for " +
                               std::to_string((now - beat) / 1000000) +
                               " ms: it is stopped or wedged");
  }
  return Status::Ok();
}

void IpcManager::StampHeartbeat() {
  if (shared_) {
    shared_->heartbeat_ns_.store(hshm::NowNs(), std::memory_order_relaxed);
  }
}

u64 IpcManager::TaskTimeoutUs() const {
  u64 ms = ThisThread()->task_timeout_ms;
  if (ms == 0) ms = task_timeout_ms_;
  return ms * 1000;
}

u64 IpcManager::SetThreadTaskTimeoutMs(u64 timeout_ms) {
  ThreadState &t = *ThisThread();
  u64 prev = t.task_timeout_ms;
  t.task_timeout_ms = timeout_ms;
  return prev;
}

void IpcManager::WakeLaneWorker(LaneView &lane) {
  // The id is in client-writable memory: bound it by our own count (a wrong
  // id only wakes the wrong worker).
  u32 w = lane.header().worker_id_.load(std::memory_order_relaxed);
  if (w >= num_workers_) return;
  WorkerShared &ws = workers_[w];
  // Dekker with the worker's store(sleeping=1); fence; re-check lanes. The
  // push that precedes this call published with a seq_cst RMW, so this
  // seq_cst load needs no fence of its own: either the worker sees the task
  // or this load sees the sleeper.
  if (ws.sleeping_.load(std::memory_order_seq_cst) != 0) {
    ws.sleeping_.store(0, std::memory_order_relaxed);
    ws.wakeups_.fetch_add(1, std::memory_order_relaxed);
    hshm::FutexWake(&ws.sleeping_, 1);
  }
}

u32 IpcManager::ThreadLane() {
  ThreadState &t = *ThisThread();
  if (__builtin_expect(t.lane_gen != attach_gen_, 0)) {
    // First use since this attachment (or since a fork: see
    // AfterForkInChild).
    if (!is_runtime_) RegisterIfForked();
    t.lane_gen = attach_gen_;
    t.lane = static_cast<u32>((static_cast<u64>(getpid()) * 2654435761u +
                               HSHM_THREAD_MODEL->GetTid()) %
                              num_lanes_);
  }
  return t.lane;
}

Status IpcManager::Send(Task *task) {
  if (!shared_ || Stopping()) {
    return Status::Unavailable("the Chimaera runtime is not running");
  }
  // A fresh submission: the runtime accepts it once (kTaskAccepted).
  task->state_.store(0, std::memory_order_relaxed);
  task->claim_.store(0, std::memory_order_relaxed);
  u32 prio = task->prio_ < kNumPrios ? task->prio_ : kLowLatency;
  // A task that names its container goes to that container's lane, so the
  // tasks of different containers spread over the workers in one hop and
  // each container's tasks from this thread stay in order; others use this
  // thread's lane.
  u32 lane_idx = ThreadLane();
  const DomainQuery &q = task->dom_query_;
  if (q.kind_ == DomainQuery::kLocalId || q.kind_ == DomainQuery::kGlobalId) {
    lane_idx = num_lanes_ == 1 ? 0 : q.sel_ % num_lanes_;
  }
  LaneView &lane = GetLaneView(lane_idx, prio);
  hipc::Pointer ptr = main_alloc_->ToPointer(task);
  hipc::OffsetPointer p = ptr.off_;
#if CHIMAERA_RUNTIME
  Worker::TraceSubmit(task, ptr);  // a subtask: link it to its parent's run
#endif
  // A fire-and-forget task leaves this process here: the runtime frees it,
  // and another thread of ours may get the block back from the heap. Our
  // accesses come before that (tsan.h); released before the push, since
  // after it the block may already be gone.
  if (task->IsFireAndForget()) HSHM_TSAN_RELEASE(HSHM_TSAN_BLOCK_KEY(task));
  if (__builtin_expect(lane.TryPush(p), 1)) {
    WakeLaneWorker(lane);
    return Status::Ok();
  }
  // The lane is full: back off until it drains, the runtime dies, or the
  // timeout passes. Inside the runtime, yield the fiber so the worker can
  // drain the lane itself.
  u64 deadline = hshm::NowNs() + static_cast<u64>(send_timeout_ms_) * 1000000;
  for (u32 i = 0;; ++i) {
    WakeLaneWorker(lane);
#if CHIMAERA_RUNTIME
    if (!Worker::YieldCurrentFiber()) HSHM_THREAD_MODEL->SleepForUs(10);
#else
    if (i < 64) {
      HSHM_THREAD_MODEL->Yield();
    } else {
      HSHM_THREAD_MODEL->SleepForUs(50);
    }
#endif
    if (lane.TryPush(p)) {
      WakeLaneWorker(lane);
      return Status::Ok();
    }
    // Not pushed: unsent again, so that no stale offset can claim it.
    if (!RuntimeAlive()) {
      task->claim_.store(kTaskUnsent, std::memory_order_relaxed);
      return Status::Unavailable("the Chimaera runtime stopped");
    }
    if (hshm::NowNs() > deadline) {
      task->claim_.store(kTaskUnsent, std::memory_order_relaxed);
      return Status::ResourceExhausted(
          "process queue lane " + std::to_string(lane_idx) +
          " stayed full for " + std::to_string(send_timeout_ms_) + " ms");
    }
  }
}

namespace internal {

std::string TaskErrorMessage(const Task *task) {
  // One read of each field: the runtime reads predecessors' messages from
  // blocks their clients may still change.
  const hipc::Pointer err = task->err_;
  if (err.IsNull()) return CHI_IPC->LocalTaskError(task);
  const char *p = hipc::ToProcessAddressChecked(err, sizeof(u32));
  if (!p) return "(error message unavailable)";
  u32 len;
  std::memcpy(&len, p, sizeof(len));
  if (!hipc::ToProcessAddressChecked(err, sizeof(u32) + u64{len} + 1)) {
    return "(corrupt error message)";
  }
  return std::string(p + offsetof(ErrorText, text),
                     std::min<u32>(len, kMaxErrorText));
}

}  // namespace internal

}  // namespace chi
