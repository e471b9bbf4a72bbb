// A client process for the hostile-client tests: it keeps submitting tasks
// (and leaving memory behind) until it is killed.
//
//   chimaera_hostile_client submit   -- async Echo tasks with a window, tasks
//       never sent, client_data buffers never freed, TextTasks whose output
//       buffers are never freed; prints "ready" once attached.
//   chimaera_hostile_client exit     -- does the same briefly, then exits
//       normally without cleaning up.
//   chimaera_hostile_client claim-runtime-blocks -- names itself the owner
//       of the runtime's process queue and worker table, then exits.
//   chimaera_hostile_client fake-running -- makes a task it never sends look
//       accepted by a worker (claim_), then exits: the reaper would wait
//       for a worker to free it for ever.
//   chimaera_hostile_client hold-heap-locks -- takes the heap locks of
//       `main` and `runtime_data` and keeps them until it is killed.
//   chimaera_hostile_client attach -- attaches and waits to be killed.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "chimaera/chimaera.h"

namespace {

/** Submits and abandons work for `iterations` rounds (forever if 0). */
int Run(u_int64_t iterations) {
  hshm::Status s = CHIMAERA_CLIENT_INIT();
  if (!s.ok()) {
    fprintf(stderr, "hostile_client: %s\n", s.ToString().c_str());
    return 2;
  }
  printf("ready\n");
  fflush(stdout);
  std::mt19937_64 rng(getpid());
  chi::admin::Client admin;
  std::vector<chi::FullPtr<chi::admin::EchoTask>> window;
  for (u_int64_t i = 0; iterations == 0 || i < iterations; ++i) {
    switch (rng() % 8) {
      case 0: {  // a task that is never sent
        auto t = chi::admin::NewAdminTask<chi::admin::EchoTask>(
            CHI_IPC->NewTaskNode(), chi::DomainQuery(), i);
        (void)t;
        break;
      }
      case 1: {  // a buffer that is never freed
        auto b = CHI_IPC->AllocateBuffer(64 + rng() % 4096);
        if (!b.IsNull()) memset(b.ptr_, 0x5a, 64);
        break;
      }
      case 2: {  // an output buffer the runtime hands us, never freed
        (void)chi::Submit(chi::admin::NewAdminTask<chi::admin::ListModulesTask>(
            CHI_IPC->NewTaskNode(), chi::DomainQuery()));
        break;
      }
      default: {  // echo traffic with up to 32 in flight
        auto t = admin.AsyncEcho(i);
        if (!t.IsNull()) window.push_back(t);
        if (window.size() >= 32) {
          for (size_t k = 0; k < window.size() / 2; ++k) {
            window[k]->Wait();
            if (window[k]->GetStatus().ok() && window[k]->ret_ != 0 &&
                rng() % 2) {
              CHI_IPC->DelTask(window[k]);
            }
          }
          window.erase(window.begin(), window.begin() + window.size() / 2);
        }
      }
    }
  }
  return 0;  // exits without cleaning up
}

/** Tags the runtime's own blocks of `main` with this pid, so that the
 * reaper would free them once it exits; then exits. */
int ClaimRuntimeBlocks() {
  hshm::Status s = CHIMAERA_CLIENT_INIT();
  if (!s.ok()) {
    fprintf(stderr, "hostile_client: %s\n", s.ToString().c_str());
    return 2;
  }
  auto *main = CHI_IPC->main_alloc();
  CHI_IPC->SetBufferOwner(main->ToPointer(CHI_IPC->process_queue()), getpid());
  CHI_IPC->SetBufferOwner(main->ToPointer(CHI_IPC->workers()), getpid());
  printf("ready\n");
  fflush(stdout);
  return 0;
}

/** Marks an unsent task of its own as a worker's (claim_ = kTaskAccepted),
 * leaves a buffer behind too, and exits. */
int FakeRunning() {
  hshm::Status s = CHIMAERA_CLIENT_INIT();
  if (!s.ok()) {
    fprintf(stderr, "hostile_client: %s\n", s.ToString().c_str());
    return 2;
  }
  auto t = chi::admin::NewAdminTask<chi::admin::EchoTask>(
      CHI_IPC->NewTaskNode(), chi::DomainQuery(), chi::u64{1});
  if (t.IsNull()) return 2;
  t->claim_.store(chi::kTaskAccepted);
  auto b = CHI_IPC->AllocateBuffer(4096);
  if (b.IsNull()) return 2;
  CHI_IPC->main_alloc()->FlushThreadCache();
  CHI_IPC->cdata_alloc()->FlushThreadCache();
  printf("ready\n");
  fflush(stdout);
  return 0;
}

/** Attaches, says "ready" and waits to be killed (a client with no task in
 * flight). */
int Attach() {
  if (!CHIMAERA_CLIENT_INIT().ok()) return 2;
  printf("ready\n");
  fflush(stdout);
  for (;;) pause();
}

/** Takes the heap locks of main and runtime_data and keeps them (a client
 * stopped inside an allocation, or one doing it on purpose). */
int HoldHeapLocks() {
  hshm::Status s = CHIMAERA_CLIENT_INIT();
  if (!s.ok()) return 2;
  using Hooks = hipc::internal::HeapTestHooks;
  if (!Hooks::LockMutex(CHI_IPC->main_alloc()->heap()) ||
      !Hooks::LockMutex(CHI_IPC->rdata_alloc()->heap())) {
    return 2;
  }
  printf("ready\n");
  fflush(stdout);
  for (;;) pause();
}

}  // namespace

int main(int argc, char **argv) {
  std::string mode = argc > 1 ? argv[1] : "submit";
  if (mode == "submit") return Run(0);
  if (mode == "exit") return Run(2000);
  if (mode == "claim-runtime-blocks") return ClaimRuntimeBlocks();
  if (mode == "fake-running") return FakeRunning();
  if (mode == "hold-heap-locks") return HoldHeapLocks();
  if (mode == "attach") return Attach();
  fprintf(stderr,
          "usage: chimaera_hostile_client "
          "submit|exit|claim-runtime-blocks|fake-running|hold-heap-locks|"
          "attach\n");
  return 2;
}
