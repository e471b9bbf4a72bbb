#include "chimaera/chimaera.h"

#include <chrono>

#if CHIMAERA_RUNTIME
#include "chimaera/module_manager.h"
#include "chimaera/pool_manager.h"
#include "chimaera/process_reaper.h"
#include "chimaera/remote_manager.h"
#include "chimaera/trace.h"
#include "chimaera/work_orchestrator.h"
#endif

namespace chi {

#if CHIMAERA_RUNTIME
/** Defined in admin_runtime.cc. */
Container *NewAdminContainer();
#endif

Status Chimaera::ClientInit() {
  std::lock_guard<std::mutex> lock(mu_);
  if (client_ready_) return Status::Ok();
  HSHM_RETURN_IF_ERROR(CHI_CONFIG_MANAGER->Load());
  HSHM_RETURN_IF_ERROR(CHI_IPC->ClientInit());
  client_ready_ = true;
  return Status::Ok();
}

void Chimaera::ClientFinalize() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!client_ready_) return;
  CHI_IPC->Finalize();
  client_ready_ = false;
}

Status Chimaera::ServerInit() {
#if CHIMAERA_RUNTIME
  std::lock_guard<std::mutex> lock(mu_);
  if (is_runtime_) return Status::Ok();
  HSHM_RETURN_IF_ERROR(CHI_CONFIG_MANAGER->Load());
  // Before anything starts: a bad key file stops the runtime here.
  HSHM_RETURN_IF_ERROR(CHI_CONFIG_MANAGER->LoadCurveKeys());
  HSHM_RETURN_IF_ERROR(
      TraceManager::CheckOutput(CHI_CONFIG_MANAGER->config().trace_output_));
  Status s = CHI_IPC->ServerInit();
  if (!s.ok()) {
    CHI_IPC->Finalize();
    return s;
  }
  const ServerConfig &conf = CHI_CONFIG_MANAGER->config();
  CHI_MODULE_MANAGER->Init(conf.module_paths_);
  CHI_MODULE_MANAGER->RegisterBuiltin("chimaera_admin", &NewAdminContainer);
  CHI_POOL_MANAGER->Init(CHI_IPC->node_id());
  // The admin pool: one container on every node (container i on node i+1).
  PoolSpec admin_spec;
  admin_spec.name = "chimaera_admin";
  admin_spec.module = "chimaera_admin";
  admin_spec.num_containers = static_cast<u32>(conf.hosts_.size());
  for (u32 i = 1; i <= admin_spec.num_containers; ++i) {
    admin_spec.nodes.push_back(i);
  }
  bool existed = false;
  auto admin =
      CHI_POOL_MANAGER->GetOrCreatePool(admin_spec, &existed, &kAdminPoolId);
  if (!admin.ok()) {
    CHI_IPC->Finalize();
    return admin.status();
  }
  CHI_REMOTE->Reserve(conf.NumWorkers());
  s = CHI_WORK_ORCHESTRATOR->Init();
  if (s.ok()) s = CHI_REMOTE->Init();
  if (s.ok()) CHI_REAPER->Start(conf.reap_period_ms_, conf.reap_wait_ms_);
  if (s.ok()) s = CHI_IPC->StartServer();
  if (!s.ok()) {
    CHI_REAPER->Stop();
    CHI_REMOTE->Stop();
    (void)CHI_WORK_ORCHESTRATOR->Stop(0);
    CHI_IPC->Finalize();
    return s;
  }
  is_runtime_ = true;
  if (CHI_REMOTE->enabled()) {
    // Build this node's share of the pools the cluster already has (after a
    // restart); fire-and-forget, the runtime frees it.
    auto join = admin::NewAdminTask<admin::JoinClusterTask>(
        CHI_IPC->NewTaskNode(), DomainQuery());
    if (!join.IsNull()) {
      join->SetFireAndForget();
      Submit(join);
    }
  }
  return Status::Ok();
#else
  return Status::Unimplemented(
      "ServerInit requires the chimaera_runtime "
      "library");
#endif
}

void Chimaera::ServerWait() {
  std::unique_lock<std::mutex> lock(mu_);
#if CHIMAERA_RUNTIME
  // Wakes every 100 ms for what has no thread of its own: forwarded tasks
  // whose replies are overdue fail (RemoteManager::ExpireRequests), and the
  // heartbeat clients check is stamped (the reaper stamps it too, but one
  // of its passes can wait on the heap lock for seconds).
  constexpr auto kHousekeeping = std::chrono::milliseconds(100);
  while (
      !cv_.wait_for(lock, kHousekeeping, [this] { return stop_requested_; })) {
    lock.unlock();
    CHI_IPC->StampHeartbeat();
    if (CHI_REMOTE->enabled()) CHI_REMOTE->ExpireRequests();
    lock.lock();
  }
#else
  cv_.wait(lock, [this] { return stop_requested_; });
#endif
}

void Chimaera::RequestStop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_requested_ = true;
  }
  cv_.notify_all();
}

Status Chimaera::ServerStop() {
#if CHIMAERA_RUNTIME
  if (!is_runtime_) return Status::Ok();
  CHI_IPC->BeginShutdown();
  // The network first: tasks waiting on other nodes complete (Unavailable)
  // while the workers still run.
  CHI_REMOTE->Stop();
  Status stopped =
      CHI_WORK_ORCHESTRATOR->Stop(CHI_CONFIG_MANAGER->config().stop_drain_ms_);
  CHI_REAPER->Stop();
  // While pools still name the methods; also beside a worker still inside a
  // method (a dump is safe while workers record), whose stuck task the
  // trace may help explain.
  CHI_TRACE->WriteOutputAtExit();
  if (!stopped.ok()) return stopped;  // a worker still runs: free nothing
  CHI_POOL_MANAGER->DestroyAll();
  CHI_IPC->Finalize();
  is_runtime_ = false;
#endif
  return Status::Ok();
}

}  // namespace chi
