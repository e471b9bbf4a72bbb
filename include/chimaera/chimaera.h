// Chimaera: the entry point of clients and of the runtime.
//
//   Client:   hshm::Status s = CHIMAERA_CLIENT_INIT();
//   Runtime:  hshm::Status s = CHIMAERA_RUNTIME_INIT(); CHIMAERA->ServerWait();
//
// Init may be called from any thread; concurrent calls initialise once.
#ifndef CHIMAERA_CHIMAERA_H_
#define CHIMAERA_CHIMAERA_H_

#include <condition_variable>
#include <mutex>

#include "chimaera/admin/admin_client.h"
#include "chimaera/chimaera_types.h"
#include "chimaera/config_manager.h"
#include "chimaera/container.h"
#include "chimaera/ipc_manager.h"
#include "chimaera/module.h"
#include "chimaera/task.h"
#include "hermes_shm/singleton.h"

namespace chi {

/** The process's Chimaera instance (client or runtime). */
class Chimaera {
 public:
  /** Loads the configuration and attaches to the local runtime. Errors:
   * configuration errors, Unavailable when no runtime answers. */
  Status ClientInit();
  /** Starts the runtime: configuration, IPC (server + segments), modules,
   * the admin pool, workers. Runtime library only. */
  Status ServerInit();
  /** Blocks until a StopRuntime task (or RequestStop) arrives. Meanwhile,
   * every 100 ms, fails the forwarded tasks whose replies are overdue
   * (network.request_timeout_ms). The runtime's main thread. */
  void ServerWait();
  /** Asks ServerWait to return. Any thread (not a signal handler: it takes
   * a lock; chimaera_start_runtime calls it from a sigwait thread). */
  void RequestStop();
  /** Stops workers (draining in-flight tasks for workers.stop_drain_ms),
   * destroys pools and frees the segments. Call after ServerWait. Timeout
   * if a worker stayed inside a method past the drain plus
   * WorkOrchestrator::kExitGraceMs: then nothing is
   * freed (that worker may still use it), and the process should _exit
   * (chimaera_start_runtime does; the next start removes the segments). */
  Status ServerStop();
  /** Detaches a client from the runtime. */
  void ClientFinalize();
  /** True in the runtime process once ServerInit succeeded. */
  bool IsRuntime() const { return is_runtime_; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_requested_ = false;
  bool client_ready_ = false;
  bool is_runtime_ = false;
};

}  // namespace chi

#define CHIMAERA (::hshm::Singleton<::chi::Chimaera>::GetInstance())
/** Attaches this client process to the local runtime; returns a Status. */
#define CHIMAERA_CLIENT_INIT() (CHIMAERA->ClientInit())
/** Starts the runtime in this process; returns a Status. */
#define CHIMAERA_RUNTIME_INIT() (CHIMAERA->ServerInit())

#endif  // CHIMAERA_CHIMAERA_H_
