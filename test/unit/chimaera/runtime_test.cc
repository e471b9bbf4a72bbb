// End-to-end tests: a real chimaera_start_runtime subprocess per test, with
// its own port and shared-memory names.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <type_traits>
#include <vector>

#include "chimaera/chimaera.h"
#include "chimaera/handshake.h"
#include "hermes_shm/memory/posix_shm.h"
#include "hermes_shm/util/futex.h"
#include "runtime_fixture.h"

namespace {

using chi_test::RunProgram;
using chi_test::RuntimeProcess;
using hshm::StatusCode;

std::string Bin(const std::string &name) {
  return chi_test::BinDir() + "/" + name;
}

TEST(RuntimeTest, SeparateClientProcess100kTasksThenCleanStop) {
  RuntimeProcess rt;
  ASSERT_TRUE(rt.Start().ok()) << rt.Log();
  // 100,000 echo tasks from 4 threads, synchronously and then with 256 in
  // flight per thread; the program checks every result.
  std::string out;
  int rc = RunProgram({Bin("chimaera_workload"), "--threads", "4", "--tasks",
                       "100000", "--window", "256"},
                      rt.config_path(), &out, 120);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("synchronous  4 threads x 25000 echo tasks"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("asynchronous 4 threads x 25000"), std::string::npos);
  EXPECT_EQ(out.find("WRONG"), std::string::npos) << out;
  // Stop: exit code 0, no process, no segment left.
  hshm::Status s = rt.Stop();
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_FALSE(rt.Running());
  for (const char *seg : {"main", "client_data", "runtime_data"}) {
    EXPECT_FALSE(hipc::PosixShmMmap::Exists(rt.SegmentName(seg))) << seg;
  }
}

TEST(RuntimeTest, InProcessClientSyncAsyncAndSubtasksOnOneWorker) {
  RuntimeProcess rt("workers:\n  low_latency: 1\n  high_latency: 1\n");
  ASSERT_TRUE(rt.Start().ok()) << rt.Log();
  ASSERT_TRUE(CHIMAERA_CLIENT_INIT().ok());
  chi::admin::Client admin;
  auto v = admin.Echo(42);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, 42u);
  // A task that waits on subtasks completes with a single low-latency
  // worker: the parent's fiber yields while the same worker runs the
  // subtasks. Two levels: 30 parents x 30 children.
  auto sum = admin.FanOut(30, 2);
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_EQ(*sum, 30u * (30 * 31 / 2));
  // Several fan-outs in flight at once on that worker.
  std::vector<chi::FullPtr<chi::admin::FanOutTask>> tasks;
  for (int i = 0; i < 8; ++i) tasks.push_back(admin.AsyncFanOut(100));
  for (auto &t : tasks) {
    t->Wait();
    EXPECT_TRUE(t->GetStatus().ok());
    EXPECT_EQ(t->sum_, 5050u);
    CHI_IPC->DelTask(t);
  }
  CHIMAERA->ClientFinalize();
  EXPECT_TRUE(rt.Stop().ok());
}

TEST(RuntimeTest, UnknownMethodAndPoolAreClearErrors) {
  RuntimeProcess rt;
  ASSERT_TRUE(rt.Start().ok()) << rt.Log();
  ASSERT_TRUE(CHIMAERA_CLIENT_INIT().ok());
  chi::admin::Client admin;
  auto t = admin.AsyncNoop();
  ASSERT_FALSE(t.IsNull());
  t->Wait();
  CHI_IPC->DelTask(t);

  auto bad = chi::admin::NewAdminTask<chi::admin::NoopTask>(
      CHI_IPC->NewTaskNode(), chi::DomainQuery());
  bad->method_ = 999;
  bad = chi::Submit(bad);
  ASSERT_TRUE(bad->WaitFor(5000000));
  hshm::Status s = bad->GetStatus();
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_NE(s.message().find("no method 999"), std::string::npos) << s;
  CHI_IPC->DelTask(bad);

  auto nopool = chi::admin::NewAdminTask<chi::admin::NoopTask>(
      CHI_IPC->NewTaskNode(), chi::DomainQuery());
  nopool->pool_id_ = chi::PoolId(7, 7);
  nopool = chi::Submit(nopool);
  ASSERT_TRUE(nopool->WaitFor(5000000));
  s = nopool->GetStatus();
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_NE(s.message().find("no pool with id 7.7"), std::string::npos) << s;
  CHI_IPC->DelTask(nopool);

  auto nocontainer = chi::admin::NewAdminTask<chi::admin::NoopTask>(
      CHI_IPC->NewTaskNode(), chi::DomainQuery::GetLocalId(5));
  nocontainer = chi::Submit(nocontainer);
  ASSERT_TRUE(nocontainer->WaitFor(5000000));
  EXPECT_EQ(nocontainer->GetStatus().code(), StatusCode::kNotFound);
  CHI_IPC->DelTask(nocontainer);

  // The runtime keeps serving.
  EXPECT_TRUE(admin.Noop().ok());
  CHIMAERA->ClientFinalize();
  EXPECT_TRUE(rt.Stop().ok());
}

TEST(RuntimeTest, EveryDomainQueryKindResolves) {
  static_assert(std::is_trivially_copyable<chi::DomainQuery>::value, "shm");
  static_assert(std::is_trivially_copyable<chi::DomainId>::value, "shm");
  static_assert(std::is_trivially_copyable<chi::TaskNode>::value, "shm");
  static_assert(sizeof(chi::DomainQuery) == 8, "small, no strings");
  RuntimeProcess rt;
  ASSERT_TRUE(rt.Start().ok()) << rt.Log();
  ASSERT_TRUE(CHIMAERA_CLIENT_INIT().ok());
  chi::admin::Client admin;
  for (const chi::DomainQuery &q :
       {chi::DomainQuery::GetLocalId(0), chi::DomainQuery::GetGlobalId(0),
        chi::DomainQuery::GetLocalHash(7), chi::DomainQuery::GetGlobalHash(9),
        chi::DomainQuery::GetGlobalBcast(), chi::DomainQuery::GetDynamic()}) {
    auto v = admin.Echo(q.kind_ + 100, q);
    ASSERT_TRUE(v.ok()) << "kind " << q.kind_ << ": " << v.status();
    EXPECT_EQ(*v, q.kind_ + 100u);
  }
  EXPECT_EQ(admin.Echo(1, chi::DomainQuery::GetGlobalId(3)).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(admin.Echo(1, chi::DomainQuery(42, 0)).status().code(),
            StatusCode::kInvalidArgument);
  CHIMAERA->ClientFinalize();
  EXPECT_TRUE(rt.Stop().ok());
}

TEST(RuntimeTest, PeriodicAndFireAndForgetTasks) {
  RuntimeProcess rt;
  ASSERT_TRUE(rt.Start().ok()) << rt.Log();
  ASSERT_TRUE(CHIMAERA_CLIENT_INIT().ok());
  chi::admin::Client admin;
  // Periodic: runs every millisecond until stopped.
  auto p = chi::admin::NewAdminTask<chi::admin::EchoTask>(
      CHI_IPC->NewTaskNode(), chi::DomainQuery(), chi::u64{5});
  p->SetPeriodic(1e6);
  p = chi::Submit(p);
  // Still running after 300 ms. At least 10 runs in that time (30x slack:
  // a TSan runtime on a loaded 2-core machine once managed 9 in 100 ms),
  // and no more than one per period, plus slack.
  EXPECT_FALSE(p->WaitFor(300000));
  p->RequestStop();
  ASSERT_TRUE(p->WaitFor(5000000));
  EXPECT_TRUE(p->GetStatus().ok());
  EXPECT_GE(p->run_count_, 10u);
  EXPECT_LE(p->run_count_, 600u);
  CHI_IPC->DelTask(p);
  // Fire-and-forget: the runtime frees them; the worker's count shows they
  // ran.
  chi::u64 before = CHI_IPC->workers()[0].tasks_done_.load();
  for (int i = 0; i < 10000; ++i) {
    auto f = chi::admin::NewAdminTask<chi::admin::NoopTask>(
        CHI_IPC->NewTaskNode(), chi::DomainQuery());
    ASSERT_FALSE(f.IsNull());
    f->SetFireAndForget();
    ASSERT_TRUE(CHI_IPC->Send(f).ok());
  }
  ASSERT_TRUE(admin.Noop().ok());
  EXPECT_GE(CHI_IPC->workers()[0].tasks_done_.load(), before + 10001);
  CHIMAERA->ClientFinalize();
  EXPECT_TRUE(rt.Stop().ok());
}

// Regression: a client thread's lane index was cached across reconnects, so
// moving to a runtime with fewer lanes indexed out of range.
TEST(RuntimeTest, ReconnectToARuntimeWithFewerLanes) {
  {
    RuntimeProcess wide("workers:\n  low_latency: 3\n  high_latency: 3\n");
    ASSERT_TRUE(wide.Start().ok()) << wide.Log();
    ASSERT_TRUE(CHIMAERA_CLIENT_INIT().ok());
    ASSERT_EQ(CHI_IPC->process_queue()->num_lanes(), 3u);
    EXPECT_TRUE(chi::admin::Client().Noop().ok());
    CHIMAERA->ClientFinalize();
    EXPECT_TRUE(wide.Stop().ok());
  }
  RuntimeProcess narrow;
  ASSERT_TRUE(narrow.Start().ok()) << narrow.Log();
  ASSERT_TRUE(CHIMAERA_CLIENT_INIT().ok());
  ASSERT_EQ(CHI_IPC->process_queue()->num_lanes(), 1u);
  for (chi::u32 prio : {chi::kLowLatency, chi::kHighLatency}) {
    auto t = chi::admin::NewAdminTask<chi::admin::EchoTask>(
        CHI_IPC->NewTaskNode(), chi::DomainQuery(), chi::u64{5});
    t->prio_ = prio;
    t = chi::Submit(t);
    ASSERT_TRUE(t->WaitFor(5000000));
    EXPECT_TRUE(t->GetStatus().ok());
    EXPECT_EQ(t->ret_, 5u);
    CHI_IPC->DelTask(t);
  }
  CHIMAERA->ClientFinalize();
  EXPECT_TRUE(narrow.Stop().ok());
}

TEST(RuntimeTest, ClientWithNoRuntimeFailsFast) {
  RuntimeProcess rt;  // configured, never started
  hshm::u64 t0 = hshm::NowNs();
  hshm::Status s = CHIMAERA_CLIENT_INIT();
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("no Chimaera runtime"), std::string::npos) << s;
  EXPECT_LT(hshm::NowNs() - t0, 1000000000ull);
  std::string out;
  EXPECT_NE(RunProgram({Bin("chimaera_stop_runtime")}, rt.config_path(), &out),
            0);
  EXPECT_NE(out.find("no Chimaera runtime"), std::string::npos) << out;
  EXPECT_NE(RunProgram({Bin("chimaera_stat")}, rt.config_path(), &out), 0);
}

TEST(RuntimeTest, BadConfigurationStopsStartWithAClearMessage) {
  std::string out;
  std::string bad =
      chi_test::WriteTempFile("bad.yaml", "workers:\n  low_latency: lots\n");
  EXPECT_EQ(RunProgram({Bin("chimaera_start_runtime")}, bad, &out), 1);
  // The file once, then the key with its section.
  EXPECT_NE(out.find("configuration " + bad +
                     ": key 'workers.low_latency': expected non-negative "
                     "integer, got 'lots'"),
            std::string::npos)
      << out;
  EXPECT_EQ(out.find(bad), out.rfind(bad)) << out;
  // A node number out of range is the option's error, not CHI_NODE_ID's.
  EXPECT_NE(
      RunProgram({Bin("chimaera_start_runtime"), "--node", "70000"}, bad, &out),
      0);
  EXPECT_NE(out.find("--node"), std::string::npos) << out;
  EXPECT_EQ(out.find("CHI_NODE_ID '"), std::string::npos) << out;
  std::string unknown = chi_test::WriteTempFile("unk.yaml", "wrkers: {}\n");
  EXPECT_EQ(RunProgram({Bin("chimaera_start_runtime")}, unknown, &out), 1);
  EXPECT_NE(out.find("unknown key 'wrkers'"), std::string::npos) << out;
  EXPECT_EQ(RunProgram({Bin("chimaera_start_runtime")},
                       "/nonexistent/chimaera.yaml", &out),
            1);
  EXPECT_NE(out.find("/nonexistent/chimaera.yaml"), std::string::npos) << out;
  // A CPU this process may not run on stops the start (before, each worker
  // logged an unnamed pthread_setaffinity_np error and ran unpinned).
  RuntimeProcess cpus("workers:\n  cpus: [100000]\n");
  EXPECT_EQ(
      RunProgram({Bin("chimaera_start_runtime")}, cpus.config_path(), &out), 1);
  EXPECT_NE(out.find("'workers.cpus': this process may not run on CPU 100000"),
            std::string::npos)
      << out;
  for (const char *seg : {"main", "client_data", "runtime_data"}) {
    EXPECT_FALSE(hipc::PosixShmMmap::Exists(cpus.SegmentName(seg))) << seg;
  }
  // A trace output nobody can write is said at start, not at exit (when
  // the trace was lost).
  RuntimeProcess trace("trace:\n  output: /nonexistent/dir/t.json\n");
  EXPECT_EQ(
      RunProgram({Bin("chimaera_start_runtime")}, trace.config_path(), &out),
      1);
  EXPECT_NE(out.find("'trace.output': cannot write a file in /nonexistent/dir"),
            std::string::npos)
      << out;
  unlink(bad.c_str());
  unlink(unknown.c_str());
}

// A start that fails once its segments exist (here: the process queue does
// not fit `main`) says which keys to change and leaves no segment behind.
TEST(RuntimeTest, AStartThatFailsLeavesNoSegments) {
  const int port = chi_test::FreePort();
  RuntimeProcess rt(port, "network:\n  port: " + std::to_string(port) +
                              "\nqueue:\n  depth: 1048576\nshm:\n  main: 1m"
                              "\n  client_data: 4m\n  runtime_data: 4m\n");
  std::string out;
  EXPECT_EQ(RunProgram({Bin("chimaera_start_runtime")}, rt.config_path(), &out),
            1);
  EXPECT_NE(out.find("raise shm.main"), std::string::npos) << out;
  EXPECT_NE(out.find("queue.depth"), std::string::npos) << out;
  for (const char *seg : {"main", "client_data", "runtime_data"}) {
    EXPECT_FALSE(hipc::PosixShmMmap::Exists(rt.SegmentName(seg))) << seg;
  }
}

TEST(RuntimeTest, SecondRuntimeOnTheSamePortIsRefused) {
  RuntimeProcess rt;
  ASSERT_TRUE(rt.Start().ok()) << rt.Log();
  std::string out;
  EXPECT_EQ(RunProgram({Bin("chimaera_start_runtime")}, rt.config_path(), &out),
            1);
  EXPECT_NE(out.find("could not bind port"), std::string::npos) << out;
  // The first one is unharmed.
  ASSERT_TRUE(CHIMAERA_CLIENT_INIT().ok());
  EXPECT_TRUE(chi::admin::Client().Noop().ok());
  CHIMAERA->ClientFinalize();
  EXPECT_TRUE(rt.Stop().ok());
}

TEST(RuntimeTest, CrashedRuntimeIsDetectedAndItsSegmentsCleaned) {
  RuntimeProcess rt;
  ASSERT_TRUE(rt.Start().ok()) << rt.Log();
  ASSERT_TRUE(CHIMAERA_CLIENT_INIT().ok());
  // A waiting client learns that the runtime died.
  auto p = chi::admin::NewAdminTask<chi::admin::NoopTask>(
      CHI_IPC->NewTaskNode(), chi::DomainQuery());
  p->SetPeriodic(1e6);
  p = chi::Submit(p);
  EXPECT_FALSE(p->WaitFor(20000));
  rt.Kill(SIGKILL);
  ASSERT_TRUE(p->WaitFor(5000000));
  EXPECT_EQ(p->GetStatus().code(), StatusCode::kUnavailable);
  CHI_IPC->DelTask(p);
  CHIMAERA->ClientFinalize();
  // Its segments outlive it; the next start removes them.
  EXPECT_TRUE(hipc::PosixShmMmap::Exists(rt.SegmentName("main")));
  ASSERT_TRUE(rt.Start().ok()) << rt.Log();
  EXPECT_NE(rt.Log().find("removed stale segment"), std::string::npos)
      << rt.Log();
  EXPECT_TRUE(rt.Stop().ok());
}

// Two runtimes on one machine, as two nodes of a hostfile: each binds the
// first free address (node id = its offset + 1) and has its own segments.
TEST(RuntimeTest, HostfileGivesEachRuntimeItsNodeId) {
  int port = chi_test::FreePort();
  std::string hosts =
      chi_test::WriteTempFile("hosts", "# two nodes\n127.0.0.[2-3]\n");
  std::string yaml = "network:\n  port: " + std::to_string(port) +
                     "\n  hostfile: " + hosts +
                     "\nshm:\n  main: 16m\n  client_data: 16m\n"
                     "  runtime_data: 16m\n";
  RuntimeProcess node1(port, yaml);
  node1.set_host("127.0.0.2");
  ASSERT_TRUE(node1.Start().ok()) << node1.Log();
  EXPECT_NE(node1.Log().find("node 1 listening on 127.0.0.2:"),
            std::string::npos)
      << node1.Log();
  RuntimeProcess node2(port, yaml);
  node2.set_host("127.0.0.3");
  ASSERT_TRUE(node2.Start().ok()) << node2.Log();
  EXPECT_NE(node2.Log().find("node 2 listening on 127.0.0.3:"),
            std::string::npos)
      << node2.Log();
  EXPECT_NE(node1.SegmentName("main"), node2.SegmentName("main"));
  EXPECT_TRUE(hipc::PosixShmMmap::Exists(node2.SegmentName("main")));
  // A third one finds every address taken.
  std::string out;
  EXPECT_EQ(
      RunProgram({Bin("chimaera_start_runtime")}, node1.config_path(), &out),
      1);
  EXPECT_NE(out.find("could not bind port"), std::string::npos) << out;
  // A client picks its node with CHI_SERVER_ADDR.
  setenv("CHI_SERVER_ADDR", "127.0.0.3", 1);
  ASSERT_TRUE(CHIMAERA_CLIENT_INIT().ok());
  EXPECT_EQ(CHI_IPC->node_id(), 2u);
  EXPECT_TRUE(chi::admin::Client().Noop().ok());
  CHIMAERA->ClientFinalize();
  unsetenv("CHI_SERVER_ADDR");
  // chimaera_stop_runtime (no CHI_SERVER_ADDR) stops node 1, the first.
  EXPECT_TRUE(node1.Stop().ok());
  EXPECT_TRUE(node2.Running());
  // Then a client without CHI_SERVER_ADDR finds node 2: the next of this
  // machine's entries with a runtime listening.
  ASSERT_TRUE(CHIMAERA_CLIENT_INIT().ok());
  EXPECT_EQ(CHI_IPC->node_id(), 2u);
  EXPECT_TRUE(chi::admin::Client().Noop().ok());
  CHIMAERA->ClientFinalize();
  unlink(hosts.c_str());
}

// workers.reinforcement: 0 turns off balancing, stuck-worker recovery,
// load reports and more: the runtime says so instead of staying silent.
TEST(RuntimeTest, NoReinforcementThreadIsSaidAtStart) {
  RuntimeProcess rt("workers:\n  reinforcement: 0\n");
  ASSERT_TRUE(rt.Start().ok()) << rt.Log();
  EXPECT_NE(rt.Log().find("workers.reinforcement is 0: no lane balancing"),
            std::string::npos)
      << rt.Log();
  EXPECT_TRUE(rt.Stop().ok()) << rt.Log();
  RuntimeProcess one;
  ASSERT_TRUE(one.Start().ok()) << one.Log();
  EXPECT_EQ(one.Log().find("workers.reinforcement is 0"), std::string::npos);
  EXPECT_TRUE(one.Stop().ok()) << one.Log();
}

/** Two documentation addresses (RFC 5737) that are not this machine's,
 * standing for other machines of a cluster (a VM may own one of them). */
std::vector<std::string> FarAddresses() {
  std::vector<std::string> far;
  for (const char *a : {"203.0.113.7", "203.0.113.8", "198.51.100.7",
                        "198.51.100.8", "192.0.2.77", "192.0.2.78"}) {
    if (!chi::IsLocalAddress(a)) far.push_back(a);
  }
  return far;
}

// On a cluster a client attaches to its own machine's node, whatever the
// hostfile's first entry (another machine's), and a client on a machine
// no entry names is told so.
TEST(RuntimeTest, AClientAttachesToItsOwnMachinesNode) {
  EXPECT_TRUE(chi::IsLocalAddress("127.0.0.1"));
  EXPECT_TRUE(chi::IsLocalAddress("localhost"));
  const std::vector<std::string> far = FarAddresses();
  ASSERT_GE(far.size(), 2u) << "this machine owns the test's addresses";
  int port = chi_test::FreePort();
  std::string hosts =
      chi_test::WriteTempFile("hosts", far[0] + "\n127.0.0.1\n");
  std::string yaml = "network:\n  port: " + std::to_string(port) +
                     "\n  hostfile: " + hosts +
                     "\nshm:\n  main: 16m\n  client_data: 16m\n"
                     "  runtime_data: 16m\n";
  RuntimeProcess rt(port, yaml);
  ASSERT_TRUE(rt.Start().ok()) << rt.Log();
  EXPECT_NE(rt.Log().find("node 2 listening on 127.0.0.1:"), std::string::npos)
      << rt.Log();
  unsetenv("CHI_SERVER_ADDR");
  hshm::Status s = CHIMAERA_CLIENT_INIT();
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(CHI_IPC->node_id(), 2u);
  EXPECT_TRUE(chi::admin::Client().Noop().ok());
  CHIMAERA->ClientFinalize();
  // So do the tools (chimaera_stop_runtime, without CHI_SERVER_ADDR).
  EXPECT_TRUE(rt.Stop().ok());
  unlink(hosts.c_str());

  std::string others =
      chi_test::WriteTempFile("hosts", far[0] + "\n" + far[1] + "\n");
  std::string conf = chi_test::WriteTempFile(
      "conf.yaml", "network:\n  port: " + std::to_string(port) +
                       "\n  hostfile: " + others + "\n");
  std::string out;
  EXPECT_EQ(RunProgram({Bin("chimaera_stat")}, conf, &out), 1);
  EXPECT_NE(out.find("no hostfile entry (" + far[0] + ", " + far[1] +
                     ") is an address of this machine"),
            std::string::npos)
      << out;
  unlink(others.c_str());
  unlink(conf.c_str());
}

}  // namespace
