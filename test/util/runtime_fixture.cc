#include "runtime_fixture.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "chimaera/chimaera.h"
#include "hermes_shm/memory/posix_shm.h"
#include "hermes_shm/util/futex.h"

namespace chi_test {

namespace {

/** Waits up to `timeout_ms` for `pid`; returns its wait status or -1. */
int WaitPid(int pid, int timeout_ms) {
  for (int i = 0; i < timeout_ms; ++i) {
    int st = 0;
    int r = waitpid(pid, &st, WNOHANG);
    if (r == pid) return st;
    if (r < 0) return -1;
    usleep(1000);
  }
  return -1;
}

/** True if something accepts TCP connections on host:port. */
/** The IPv4 address of `host`, which may be IPv4-mapped IPv6
 * ("::ffff:127.0.0.2": the same socket address space). */
std::string V4(const std::string &host) {
  const std::string mapped = "::ffff:";
  return host.compare(0, mapped.size(), mapped) == 0
             ? host.substr(mapped.size())
             : host;
}

bool Listening(const std::string &host, int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, V4(host).c_str(), &a.sin_addr);
  bool ok = connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a)) == 0;
  close(fd);
  return ok;
}

std::string ReadAll(const std::string &path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/** True if a TCP socket can bind `host`:`port` now. */
bool PortFree(const std::string &host, int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, V4(host).c_str(), &a.sin_addr);
  bool ok = bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a)) == 0;
  close(fd);
  return ok;
}

}  // namespace

std::string BinDir() { return CHIMAERA_TEST_BIN_DIR; }

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = 0;
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len);
  int port = ntohs(a.sin_port);
  close(fd);
  return port;
}

int ConnectLoopback(int port, int timeout_s) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval tv{timeout_s, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

std::string WriteTempFile(const std::string &tag, const std::string &text) {
  static std::atomic<int> counter{0};
  std::string path = "/tmp/chi_test_" + std::to_string(getpid()) + "_" +
                     std::to_string(counter++) + "_" + tag;
  std::ofstream out(path);
  out << text;
  return path;
}

RuntimeProcess::RuntimeProcess(const std::string &extra_yaml, bool full_yaml) {
  port_ = FreePort();
  std::string yaml = extra_yaml;
  if (!full_yaml) {
    yaml = "network:\n  port: " + std::to_string(port_) +
           "\nshm:\n  main: 32m\n  client_data: 32m\n  runtime_data: 16m\n" +
           extra_yaml;
  }
  conf_ = WriteTempFile("conf.yaml", yaml);
  log_ = conf_ + ".log";
  setenv("CHI_SERVER_CONF", conf_.c_str(), 1);
}

RuntimeProcess::RuntimeProcess(int port, const std::string &yaml)
    : port_(port) {
  conf_ = WriteTempFile("conf.yaml", yaml);
  log_ = conf_ + ".log";
  setenv("CHI_SERVER_CONF", conf_.c_str(), 1);
}

RuntimeProcess::~RuntimeProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    if (WaitPid(pid_, 10000) == -1) {
      kill(pid_, SIGKILL);
      WaitPid(pid_, 5000);
    }
  }
  for (const char *seg : {"main", "client_data", "runtime_data"}) {
    (void)hipc::PosixShmMmap::Unlink(SegmentName(seg));
  }
  unlink(conf_.c_str());
  unlink(log_.c_str());
}

std::string RuntimeProcess::SegmentName(const std::string &segment) const {
  return hipc::PosixShmMmap::MakeName(host_ + ":" + std::to_string(port_),
                                      segment);
}

std::string RuntimeProcess::Log() const {
  std::string log = ReadAll(log_);
  if (!exit_note_.empty()) log += "[the runtime " + exit_note_ + "]\n";
  return log;
}

hshm::Status RuntimeProcess::Start() {
  exit_note_.clear();
  std::string exe = BinDir() + "/chimaera_start_runtime";
  pid_ = fork();
  if (pid_ < 0) return hshm::Status::FromErrno("fork", errno);
  if (pid_ == 0) {
    // If the test process dies (a crash, or ctest's timeout kill), the
    // runtime gets SIGTERM and shuts down cleanly, removing its segments.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    int fd = open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 1);
    dup2(fd, 2);
    setenv("CHI_SERVER_CONF", conf_.c_str(), 1);
    if (node_id_ > 0) {
      setenv("CHI_NODE_ID", std::to_string(node_id_).c_str(), 1);
    } else {
      unsetenv("CHI_NODE_ID");
    }
    execl(exe.c_str(), exe.c_str(), nullptr);
    _exit(127);
  }
  for (int i = 0; i < 1000; ++i) {
    if (Log().find("ready") != std::string::npos && Listening(host_, port_)) {
      return hshm::Status::Ok();
    }
    int st = 0;
    if (waitpid(pid_, &st, WNOHANG) == pid_) {
      pid_ = -1;
      return hshm::Status::Unavailable("runtime exited at start: " + Log());
    }
    usleep(10000);
  }
  return hshm::Status::Timeout("runtime did not start in 10 s: " + Log());
}

hshm::Status RuntimeProcess::Stop() {
  std::string out;
  int rc = RunProgram({BinDir() + "/chimaera_stop_runtime"}, conf_, &out);
  if (rc != 0) {
    // Say whether the runtime had died on its own (the likelier cause).
    const std::string state =
        Running() ? "it still runs"
                  : "it had " + (exit_note_.empty() ? std::string("exited")
                                                    : exit_note_);
    return hshm::Status::Internal("chimaera_stop_runtime exited " +
                                  std::to_string(rc) + " (" + state +
                                  "): " + out);
  }
  int st = WaitPid(pid_, 15000);
  if (st == -1) return hshm::Status::Timeout("runtime did not exit");
  pid_ = -1;
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    return hshm::Status::Internal("runtime exit status " + std::to_string(st) +
                                  ": " + Log());
  }
  return hshm::Status::Ok();
}

void RuntimeProcess::Kill(int sig) {
  exit_note_.clear();  // killed on purpose (or already gone)
  if (pid_ <= 0) return;
  kill(pid_, sig);
  WaitPid(pid_, 10000);
  pid_ = -1;
}

bool RuntimeProcess::Running() {
  if (pid_ <= 0) return false;
  int st = 0;
  if (waitpid(pid_, &st, WNOHANG) == pid_) {
    pid_ = -1;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) exit_note_ = DescribeExit(st);
    return false;
  }
  return true;
}

std::string DescribeExit(int status) {
  if (WIFSIGNALED(status)) {
    return "killed by signal " + std::to_string(WTERMSIG(status));
  }
  if (WIFEXITED(status)) {
    return "exited with status " + std::to_string(WEXITSTATUS(status));
  }
  return "wait status " + std::to_string(status);
}

int RunProgram(const std::vector<std::string> &argv, const std::string &conf,
               std::string *output, int timeout_s) {
  std::string out_path = WriteTempFile("out.txt", "");
  int pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    int fd = open(out_path.c_str(), O_WRONLY | O_TRUNC, 0600);
    dup2(fd, 1);
    dup2(fd, 2);
    if (conf.empty()) {
      unsetenv("CHI_SERVER_CONF");
    } else {
      setenv("CHI_SERVER_CONF", conf.c_str(), 1);
    }
    std::vector<char *> args;
    for (auto &a : argv) args.push_back(const_cast<char *>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  int st = WaitPid(pid, timeout_s * 1000);
  if (st == -1) {
    kill(pid, SIGKILL);
    WaitPid(pid, 5000);
  }
  if (output) *output = ReadAll(out_path);
  unlink(out_path.c_str());
  if (st == -1 || !WIFEXITED(st)) return -1;
  return WEXITSTATUS(st);
}

bool WaitAllThreadsStopped(int pid) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  for (int i = 0; i < 5000; ++i) {
    bool all = true;
    std::error_code ec;
    for (const auto &e : std::filesystem::directory_iterator(dir, ec)) {
      std::ifstream f(e.path() / "stat");
      std::string line;
      std::getline(f, line);
      size_t paren = line.rfind(')');
      if (paren == std::string::npos || paren + 2 >= line.size() ||
          !std::strchr("TtZX", line[paren + 2])) {
        all = false;
        break;
      }
    }
    if (all && !ec) return true;
    usleep(1000);
  }
  return false;
}

int DeadAfterMs() {
  const char *v = std::getenv("CHI_TEST_DEAD_AFTER_MS");
  int ms = v ? std::atoi(v) : 0;
  return ms > 0 ? ms : 1500;
}

LocalCluster::LocalCluster(int n, const std::string &extra_yaml,
                           const std::string &network_yaml, bool ipv6)
    : ipv6_(ipv6) {
  // Two consecutive ports free on every node's address: the client port
  // and the node-to-node one. (FreePort looks at 127.0.0.1 only, where
  // another test's cluster does not bind.)
  int port = FreePort();
  for (int tries = 0; tries < 50; ++tries) {
    bool ok = port < 65534 && PortFree("127.0.0.1", port + 1);
    for (int i = 1; ok && i <= n; ++i) {
      ok = PortFree(host(i), port) && PortFree(host(i), port + 1);
    }
    if (ok) break;
    port = FreePort();
  }
  std::string hosts = "127.0.0.[2-" + std::to_string(n + 1) + "]\n";
  if (ipv6_) {
    hosts.clear();
    for (int i = 1; i <= n; ++i) hosts += host(i) + "\n";
  }
  hostfile_ = WriteTempFile("hosts", hosts);
  port_ = port;
  extra_yaml_ = extra_yaml;
  network_yaml_ = network_yaml;
  for (int i = 1; i <= n; ++i) nodes_.push_back(MakeNode(i, ""));
}

std::unique_ptr<RuntimeProcess> LocalCluster::MakeNode(
    int i, const std::string &node_network_yaml) const {
  std::string yaml =
      "network:\n  port: " + std::to_string(port_) +
      "\n  hostfile: " + hostfile_ + "\n  heartbeat_ms: 50\n  dead_after_ms: " +
      std::to_string(DeadAfterMs()) + "\n" + network_yaml_ + node_network_yaml +
      "shm:\n  main: 16m\n  client_data: 32m\n"
      "  runtime_data: 32m\n" +
      extra_yaml_;
  auto rt = std::make_unique<RuntimeProcess>(port_, yaml);
  rt->set_host(host(i));
  rt->set_node_id(i);
  return rt;
}

void LocalCluster::SetNodeNetworkYaml(int i, const std::string &network_yaml) {
  if (i < 1 || i > size() || node(i).pid() > 0) {
    fprintf(stderr, "LocalCluster::SetNodeNetworkYaml(%d): %s\n", i,
            i < 1 || i > size() ? "no such node" : "the node is running");
    abort();
  }
  nodes_[i - 1] = MakeNode(i, network_yaml);
}

LocalCluster::~LocalCluster() {
  Disconnect();
  unsetenv("CHI_SERVER_ADDR");
  nodes_.clear();
  unlink(hostfile_.c_str());
}

hshm::Status LocalCluster::Start() {
  for (auto &n : nodes_) {
    hshm::Status s = n->Start();
    if (!s.ok()) return s;
  }
  return hshm::Status::Ok();
}

hshm::Status LocalCluster::Restart(int i) {
  if (node(i).Running()) node(i).Kill(SIGKILL);
  return node(i).Start();
}

hshm::Status LocalCluster::Connect(int i) {
  Disconnect();
  setenv("CHI_SERVER_CONF", node(i).config_path().c_str(), 1);
  setenv("CHI_SERVER_ADDR", host(i).c_str(), 1);
  hshm::Status s = CHIMAERA_CLIENT_INIT();
  connected_ = s.ok();
  return s;
}

void LocalCluster::Disconnect() {
  if (connected_) CHIMAERA->ClientFinalize();
  connected_ = false;
}

hshm::Status LocalCluster::StopAll() {
  Disconnect();
  hshm::Status first;
  for (int i = 1; i <= size(); ++i) {
    if (!node(i).Running()) {
      // A node that died on its own (not by Kill) is a failure too.
      if (!node(i).exit_note().empty() && first.ok()) {
        first = hshm::Status::Internal("node " + std::to_string(i) + " " +
                                       node(i).exit_note());
      }
      continue;
    }
    setenv("CHI_SERVER_ADDR", host(i).c_str(), 1);
    hshm::Status s = node(i).Stop();
    if (!s.ok() && first.ok()) first = s;
  }
  unsetenv("CHI_SERVER_ADDR");
  return first;
}

std::string LocalCluster::Logs() {
  std::string all;
  for (int i = 1; i <= size(); ++i) {
    all += "--- node " + std::to_string(i) + " ---\n" + node(i).Log();
  }
  return all;
}

}  // namespace chi_test
