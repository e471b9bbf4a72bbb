// The handshake's wire: one request line, one reply line, over TCP.
#include "chimaera/handshake.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <memory>
#include <vector>

#include "hermes_shm/util/futex.h"
#include "hermes_shm/util/log_limit.h"

namespace chi {

namespace {

/** The longest reply line a client reads. */
constexpr size_t kMaxReplyBytes = 4096;
/** How long Serve waits in poll() before it looks at `stop` again. */
constexpr int kPollMs = 100;
/** Connections accepted per pass, so that answering keeps pace. */
constexpr int kAcceptsPerPass = 16;
/** A client's pause before it tries again after losing its connection. */
constexpr int kRetryPauseMs = 10;
/** Longest pause between tries (the pause doubles from kRetryPauseMs). */
constexpr int kMaxRetryPauseMs = 200;

/** `host` without the brackets of a bracketed IPv6 address. */
std::string Unbracket(const std::string &host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    return host.substr(1, host.size() - 2);
  }
  return host;
}

/** Owns a descriptor; closes it on destruction. */
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd &) = delete;
  Fd &operator=(const Fd &) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

/** Milliseconds left until `deadline_ns` (0 once it passed). */
int MsLeft(u64 deadline_ns) {
  u64 now = hshm::NowNs();
  if (now >= deadline_ns) return 0;
  return static_cast<int>((deadline_ns - now + 999999) / 1000000);
}

/** Waits until `fd` has `events` or `deadline_ns` passes; true if it has. */
bool WaitFor(int fd, short events, u64 deadline_ns) {
  for (;;) {
    pollfd p{fd, events, 0};
    int rc = poll(&p, 1, MsLeft(deadline_ns));
    if (rc > 0) return true;
    if (rc == 0) return false;
    if (errno != EINTR) return false;
  }
}

/** Resolves `host`:`port` (numeric port) for a stream socket. */
Status Resolve(const std::string &host, u32 port, bool passive,
               addrinfo **out) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  const std::string h = Unbracket(host);
  int rc = getaddrinfo(h.c_str(), std::to_string(port).c_str(), &hints, out);
  if (rc != 0) {
    return Status::InvalidArgument("cannot resolve '" + host +
                                   "': " + gai_strerror(rc));
  }
  return Status::Ok();
}

/** How one try of the exchange ended, besides its status. */
enum class TryEnd {
  kDone,    ///< A reply line came.
  kAbsent,  ///< Nothing listens there (or this address family is off).
  kLost,    ///< The server closed the connection first: worth another try.
  kFailed,  ///< Anything else (a timeout, a malformed reply).
};

/** True for a connect() error that means no server at that address. */
bool NothingThere(int err) {
  return err == ECONNREFUSED || err == EAFNOSUPPORT || err == EADDRNOTAVAIL ||
         err == ENETUNREACH || err == EHOSTUNREACH;
}

/** One try of the exchange with the server at `a`, until `deadline_ns`. */
Status TryHandshake(const addrinfo *a, const std::string &where,
                    const std::string &line, u64 deadline_ns, u32 timeout_ms,
                    std::string *reply, TryEnd *end) {
  *end = TryEnd::kFailed;
  Fd fd(socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) {
    const int err = errno;
    if (NothingThere(err)) *end = TryEnd::kAbsent;
    return Status::FromErrno("socket", err);
  }
  int err = 0;
  if (connect(fd.get(), a->ai_addr, a->ai_addrlen) != 0) {
    err = errno;
    if (err == EINPROGRESS) {
      if (!WaitFor(fd.get(), POLLOUT, deadline_ns)) {
        return Status::Unavailable("could not connect to the runtime at " +
                                   where + " within " +
                                   std::to_string(timeout_ms) + " ms");
      }
      socklen_t len = sizeof(err);
      getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    }
  }
  if (err != 0) {
    if (NothingThere(err)) *end = TryEnd::kAbsent;
    return Status::Unavailable("could not reach the runtime at " + where +
                               ": " + strerror(err));
  }
  // The request is far smaller than a socket buffer: one send suffices.
  if (send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(line.size())) {
    *end = TryEnd::kLost;
    return Status::Unavailable("could not send the handshake to " + where);
  }
  std::string in;
  char buf[512];
  for (;;) {
    size_t nl = in.find('\n');
    if (nl != std::string::npos) {
      *reply = in.substr(0, nl);
      *end = TryEnd::kDone;
      return Status::Ok();
    }
    if (in.size() > kMaxReplyBytes) {
      return Status::Unavailable("oversized handshake reply from " + where);
    }
    if (!WaitFor(fd.get(), POLLIN, deadline_ns)) {
      return Status::Unavailable("the runtime at " + where +
                                 " did not answer within " +
                                 std::to_string(timeout_ms) + " ms");
    }
    ssize_t n = recv(fd.get(), buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      in.append(buf, static_cast<size_t>(n));
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
      if (in.empty()) *end = TryEnd::kLost;
      return Status::Unavailable("the runtime at " + where +
                                 " closed the handshake without a reply");
    }
  }
}

}  // namespace

Status HandshakeCall(const std::string &host, u32 port,
                     const std::string &request, u32 timeout_ms,
                     std::string *reply, bool *absent) {
  if (absent) *absent = false;
  const std::string where = host + ":" + std::to_string(port);
  if (request.size() >= HandshakeServer::kMaxRequestBytes ||
      request.find('\n') != std::string::npos) {
    return Status::InvalidArgument(
        "a handshake request is one line under 256 bytes");
  }
  const u64 deadline = hshm::NowNs() + u64{timeout_ms} * 1000000;
  addrinfo *ai = nullptr;
  Status s = Resolve(host, port, false, &ai);
  if (!s.ok()) return Status::Unavailable(s.message());
  std::unique_ptr<addrinfo, void (*)(addrinfo *)> owner(ai, freeaddrinfo);
  const std::string line = request + "\n";
  int pause_ms = kRetryPauseMs;
  int tries = 0;
  for (;;) {
    ++tries;
    // Every address the host has (a name may have an IPv6 one that no
    // runtime binds). The first error that is not an absence is the one
    // to report.
    Status first = Status::Ok();
    bool lost = false;
    for (const addrinfo *a = ai; a; a = a->ai_next) {
      TryEnd end;
      s = TryHandshake(a, where, line, deadline, timeout_ms, reply, &end);
      if (end == TryEnd::kDone) return s;
      if (end != TryEnd::kAbsent && first.ok()) first = s;
      lost = lost || end == TryEnd::kLost;
    }
    if (first.ok()) {
      if (absent) *absent = true;
      return Status::Unavailable(
          "no Chimaera runtime is listening on " + where +
          " (start one with chimaera_start_runtime, using the same "
          "CHI_SERVER_CONF)");
    }
    // Closed without a reply: newer connections pushed ours out (many
    // clients at once, or a flood). Again while time remains, backing off
    // (what closes every connection may be no handshake server at all).
    if (!lost) return first;
    if (MsLeft(deadline) <= pause_ms) {
      return Status::Unavailable(
          first.message() + " (" + std::to_string(tries) +
          " tries: a runtime flooded with connections, or a port that is "
          "not a runtime's client port, e.g. its network.rpc_port)");
    }
    usleep(pause_ms * 1000);
    pause_ms = std::min(pause_ms * 2, kMaxRetryPauseMs);
  }
}

bool IsLocalAddress(const std::string &host) {
  addrinfo *ai = nullptr;
  if (!Resolve(host, 0, true, &ai).ok()) return false;
  std::unique_ptr<addrinfo, void (*)(addrinfo *)> owner(ai, freeaddrinfo);
  for (const addrinfo *a = ai; a; a = a->ai_next) {
    // Port 0: the bind succeeds for any address of this machine, taken or
    // not, and fails with EADDRNOTAVAIL for another machine's.
    Fd fd(socket(a->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (fd.get() >= 0 && bind(fd.get(), a->ai_addr, a->ai_addrlen) == 0) {
      return true;
    }
  }
  return false;
}

HandshakeServer::~HandshakeServer() {
  if (listen_fd_ >= 0) close(listen_fd_);
}

Status HandshakeServer::Bind(const std::string &host, u32 port) {
  const std::string where = host + ":" + std::to_string(port);
  addrinfo *ai = nullptr;
  HSHM_RETURN_IF_ERROR(Resolve(host, port, true, &ai));
  std::unique_ptr<addrinfo, void (*)(addrinfo *)> owner(ai, freeaddrinfo);
  // IPv4 first (a name such as localhost may also have an IPv6 address);
  // clients try every address of the name.
  std::vector<const addrinfo *> order;
  for (const addrinfo *a = ai; a; a = a->ai_next) {
    if (a->ai_family == AF_INET) order.push_back(a);
  }
  for (const addrinfo *a = ai; a; a = a->ai_next) {
    if (a->ai_family != AF_INET) order.push_back(a);
  }
  int err = EADDRNOTAVAIL;
  for (const addrinfo *a : order) {
    int fd =
        socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      err = errno;
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 128) == 0) {
      if (listen_fd_ >= 0) close(listen_fd_);
      listen_fd_ = fd;
      return Status::Ok();
    }
    err = errno;
    close(fd);
    // Another runtime has it: not a reason to take the name's other address.
    if (err == EADDRINUSE) break;
  }
  if (err == EADDRINUSE) {
    return Status::AlreadyExists("address " + where + " is in use");
  }
  return Status::FromErrno("bind " + where, err);
}

void HandshakeServer::Serve(const std::atomic<bool> &stop,
                            const Handler &handler, u32 conn_timeout_ms) {
  struct Conn {
    int fd;
    u64 deadline_ns;
    std::string buf;
  };
  std::deque<Conn> conns;  // oldest first
  std::vector<pollfd> pfds;
  u64 listen_paused_until = 0;  // set while accept() finds no descriptor
  auto close_at = [&](size_t i, std::atomic<u64> *counter) {
    close(conns[i].fd);
    conns.erase(conns.begin() + static_cast<std::ptrdiff_t>(i));
    if (counter) counter->fetch_add(1, std::memory_order_relaxed);
  };
  while (!stop.load(std::memory_order_acquire)) {
    const u64 now = hshm::NowNs();
    const bool listening = listen_fd_ >= 0 && now >= listen_paused_until;
    pfds.clear();
    pfds.push_back({listening ? listen_fd_ : -1, POLLIN, 0});
    for (const Conn &c : conns) pfds.push_back({c.fd, POLLIN, 0});
    if (poll(pfds.data(), pfds.size(), kPollMs) < 0) {
      // revents stay 0: only the timeouts below run.
      if (errno != EINTR) {
        // Not expected (EINVAL, ENOMEM): say so and keep serving.
        HSHM_LOG_LIMITED("chimaera: handshake server: poll: %s\n",
                         strerror(errno));
        usleep(kPollMs * 1000);
      }
    }
    const u64 after = hshm::NowNs();
    // Requests first, so that a client whose line has arrived is answered
    // before newer connections push it out. Walk backwards: closing one
    // shifts only the entries already visited.
    for (size_t i = conns.size(); i-- > 0;) {
      Conn &c = conns[i];
      const short ev = pfds[i + 1].revents;
      if (ev & (POLLIN | POLLHUP | POLLERR)) {
        char buf[kMaxRequestBytes + 1];
        const size_t room = kMaxRequestBytes + 1 - c.buf.size();
        ssize_t n = recv(c.fd, buf, room, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
          close_at(i, nullptr);
          continue;
        }
        if (n > 0) c.buf.append(buf, static_cast<size_t>(n));
        const size_t nl = c.buf.find('\n');
        if (nl != std::string::npos) {
          std::string line;
          try {
            line = handler(c.buf.substr(0, nl)) + "\n";
          } catch (...) {  // e.g. bad_alloc: no allocation here
            line.clear();
          }
          static const char kInternal[] = "ERR internal error\n";
          const char *out = line.empty() ? kInternal : line.data();
          const size_t out_len =
              line.empty() ? sizeof(kInternal) - 1 : line.size();
          // A short reply into an empty socket buffer: one send, or none.
          (void)send(c.fd, out, out_len, MSG_DONTWAIT | MSG_NOSIGNAL);
          close_at(i, &answered_);
          continue;
        }
        if (c.buf.size() > kMaxRequestBytes) {
          close_at(i, &too_long_);
          continue;
        }
      }
      if (after >= c.deadline_ns) close_at(i, &timed_out_);
    }
    if (listening && (pfds[0].revents & POLLIN)) {
      for (int k = 0; k < kAcceptsPerPass; ++k) {
        int fd =
            accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
          if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
              errno == ENOMEM) {
            // Out of descriptors elsewhere in the process: the pending
            // connection stays queued, and polling for it again at once
            // would spin. Look again shortly.
            listen_paused_until = after + u64{kPollMs} * 1000000;
          }
          break;
        }
        if (conns.size() >= kMaxConnections) close_at(0, &evicted_);
        conns.push_back(
            Conn{fd, after + u64{conn_timeout_ms} * 1000000, std::string()});
        accepted_.fetch_add(1, std::memory_order_relaxed);
      }
    }
    open_.store(conns.size(), std::memory_order_relaxed);
  }
  for (const Conn &c : conns) close(c.fd);
  open_.store(0, std::memory_order_relaxed);
}

HandshakeServer::Stats HandshakeServer::stats() const {
  Stats s;
  s.accepted = accepted_.load(std::memory_order_relaxed);
  s.answered = answered_.load(std::memory_order_relaxed);
  s.evicted = evicted_.load(std::memory_order_relaxed);
  s.timed_out = timed_out_.load(std::memory_order_relaxed);
  s.too_long = too_long_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace chi
