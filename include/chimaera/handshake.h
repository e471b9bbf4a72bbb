// The handshake: how a client process learns a runtime's segments.
//
// A client opens a TCP connection to the runtime's port, sends one request
// line, reads one reply line, and the runtime closes the connection. The
// server keeps at most kMaxConnections connections, each for at most its
// connection timeout, so a process that floods the port with connections
// (or opens them and never sends) costs the runtime a bounded number of
// descriptors and no busy loop; it can only delay other handshakes.
#ifndef CHIMAERA_HANDSHAKE_H_
#define CHIMAERA_HANDSHAKE_H_

#include <atomic>
#include <functional>
#include <string>

#include "chimaera/chimaera_types.h"

namespace chi {

/** Sends `request` (one line, no newline in it) to the handshake server at
 * `host`:`port` and stores its reply line (without the newline) in `reply`.
 * `host` is an address or a name; IPv6 addresses may be bracketed. Fails
 * with Unavailable if there is no server, it closes the connection without
 * a reply, or `timeout_ms` passes; then, if `absent` is given, *absent says
 * whether the failure was that nothing listened on any of the host's
 * addresses (so that another host may be tried at once). Callable from any
 * thread. */
Status HandshakeCall(const std::string &host, u32 port,
                     const std::string &request, u32 timeout_ms,
                     std::string *reply, bool *absent = nullptr);

/** True if `host` (an address or a name; IPv6 addresses may be bracketed)
 * resolves to an address of this machine, i.e. one a socket can bind: how a
 * client finds its own node's hostfile entry, as the runtime does when it
 * binds the first entry it can. False if it does not resolve. Callable from
 * any thread. */
bool IsLocalAddress(const std::string &host);

/** The runtime's side of the handshake: one thread (Serve) answers request
 * lines with a handler. Not copyable; Bind, then Serve on one thread; Serve
 * returns once `stop` is set (within 100 ms). */
class HandshakeServer {
 public:
  /** Connections kept open at once; the oldest goes when another arrives. */
  static constexpr size_t kMaxConnections = 64;
  /** The longest request line read (a longer one closes the connection). */
  static constexpr size_t kMaxRequestBytes = 256;
  /** Answers one request line with one reply line (no newlines). */
  using Handler = std::function<std::string(const std::string &request)>;

  /** What the server has done so far (approximate while it runs). */
  struct Stats {
    u64 accepted = 0;   ///< Connections accepted.
    u64 answered = 0;   ///< Requests answered.
    u64 evicted = 0;    ///< Closed to make room for a newer connection.
    u64 timed_out = 0;  ///< Closed after the timeout without a request.
    u64 too_long = 0;   ///< Closed for a request over kMaxRequestBytes.
  };

  HandshakeServer() = default;
  ~HandshakeServer();
  HandshakeServer(const HandshakeServer &) = delete;
  HandshakeServer &operator=(const HandshakeServer &) = delete;

  /** Listens on `host`:`port` (an address or a name, as for HandshakeCall).
   * Fails with AlreadyExists if the address is in use, InvalidArgument if
   * it does not resolve. */
  Status Bind(const std::string &host, u32 port);
  /** Serves until `stop` is set: answers each request with `handler` and
   * closes each connection after its answer, after `conn_timeout_ms`
   * without a full request, or when kMaxConnections newer ones are open.
   * The handler runs on this thread. */
  void Serve(const std::atomic<bool> &stop, const Handler &handler,
             u32 conn_timeout_ms);
  /** Connections open now (for tests and stat). */
  size_t open_connections() const {
    return open_.load(std::memory_order_relaxed);
  }
  /** A copy of the counters. */
  Stats stats() const;

 private:
  int listen_fd_ = -1;
  std::atomic<size_t> open_{0};
  std::atomic<u64> accepted_{0}, answered_{0}, evicted_{0}, timed_out_{0},
      too_long_{0};
};

}  // namespace chi

#endif  // CHIMAERA_HANDSHAKE_H_
