// The handshake server and client on their own (no runtime): answers,
// the connection cap, timeouts, oversized requests, and the client's
// errors.
#include "chimaera/handshake.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "runtime_fixture.h"

namespace {

using chi::HandshakeServer;

/** A server on 127.0.0.1 (a free port) answering "echo <request>", served
 * by its own thread until destroyed. */
class EchoServer {
 public:
  explicit EchoServer(hshm::u32 conn_timeout_ms) {
    port_ = chi_test::FreePort();
    hshm::Status s = server_.Bind("127.0.0.1", port_);
    EXPECT_TRUE(s.ok()) << s;
    thread_ = std::thread([this, conn_timeout_ms] {
      server_.Serve(
          stop_, [](const std::string &req) { return "echo " + req; },
          conn_timeout_ms);
    });
  }
  ~EchoServer() {
    stop_ = true;
    thread_.join();
  }
  int port() const { return port_; }
  HandshakeServer &server() { return server_; }

 private:
  HandshakeServer server_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  int port_ = 0;
};

/** Polls `pred` every 10 ms for up to 3 s. */
template <typename Pred>
bool Eventually(Pred pred) {
  for (int i = 0; i < 300; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

TEST(HandshakeTest, AnswersOneLinePerConnection) {
  EchoServer echo(2000);
  for (int i = 0; i < 20; ++i) {
    std::string reply;
    hshm::Status s = chi::HandshakeCall(
        "127.0.0.1", echo.port(), "hi " + std::to_string(i), 2000, &reply);
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(reply, "echo hi " + std::to_string(i));
  }
  EXPECT_TRUE(Eventually([&] { return echo.server().stats().answered == 20; }));
  EXPECT_TRUE(
      Eventually([&] { return echo.server().open_connections() == 0; }));
}

// Past kMaxConnections idle connections the oldest are closed, and a
// client still gets its answer.
TEST(HandshakeTest, TheOldestConnectionsMakeRoom) {
  EchoServer echo(10000);
  std::vector<int> idle;
  for (size_t i = 0; i < HandshakeServer::kMaxConnections + 10; ++i) {
    int fd = chi_test::ConnectLoopback(echo.port(), 3);
    ASSERT_GE(fd, 0);
    idle.push_back(fd);
  }
  EXPECT_TRUE(Eventually([&] {
    return echo.server().stats().accepted ==
           HandshakeServer::kMaxConnections + 10;
  }));
  EXPECT_LE(echo.server().open_connections(), HandshakeServer::kMaxConnections);
  EXPECT_GE(echo.server().stats().evicted, 10u);
  // The first ones were closed by the server: they read the end.
  char c;
  EXPECT_EQ(recv(idle[0], &c, 1, 0), 0);
  std::string reply;
  hshm::Status s =
      chi::HandshakeCall("127.0.0.1", echo.port(), "late", 2000, &reply);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(reply, "echo late");
  for (int fd : idle) close(fd);
}

// A connection that sends nothing is closed after the timeout, and one
// that sends more than kMaxRequestBytes without a newline at once.
TEST(HandshakeTest, SilentAndOversizedConnectionsAreClosed) {
  EchoServer echo(300);
  int silent = chi_test::ConnectLoopback(echo.port(), 3);
  ASSERT_GE(silent, 0);
  char c;
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(recv(silent, &c, 1, 0), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  close(silent);
  EXPECT_TRUE(Eventually([&] { return echo.server().stats().timed_out == 1; }));

  int big = chi_test::ConnectLoopback(echo.port(), 3);
  ASSERT_GE(big, 0);
  const std::string junk(HandshakeServer::kMaxRequestBytes + 1, 'x');
  ASSERT_EQ(send(big, junk.data(), junk.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(junk.size()));
  EXPECT_EQ(recv(big, &c, 1, 0), 0);  // closed without a reply
  close(big);
  EXPECT_TRUE(Eventually([&] { return echo.server().stats().too_long == 1; }));
}

TEST(HandshakeTest, ClientErrorsAreClear) {
  std::string reply;
  // Nothing listens on a port just freed.
  const int port = chi_test::FreePort();
  auto t0 = std::chrono::steady_clock::now();
  hshm::Status s = chi::HandshakeCall("127.0.0.1", port, "hi", 2000, &reply);
  EXPECT_EQ(s.code(), hshm::StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("no Chimaera runtime is listening"),
            std::string::npos)
      << s;
  EXPECT_LT(std::chrono::steady_clock::now() - t0,
            std::chrono::milliseconds(500));
  // A listener that never answers: the deadline holds.
  HandshakeServer mute;
  const int mute_port = chi_test::FreePort();
  ASSERT_TRUE(mute.Bind("127.0.0.1", mute_port).ok());  // never served
  t0 = std::chrono::steady_clock::now();
  s = chi::HandshakeCall("127.0.0.1", mute_port, "hi", 300, &reply);
  EXPECT_EQ(s.code(), hshm::StatusCode::kUnavailable) << s;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1));
  // A port whose server closes every connection without a reply (another
  // protocol's, e.g. a runtime's node-to-node port): a few tries, backing
  // off, and an error that says what the port may be. Before, the client
  // connected every 10 ms until its deadline (hundreds of connections).
  {
    const int closer_port = chi_test::FreePort();
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(lfd, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(closer_port));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr *>(&sa), sizeof(sa)), 0);
    ASSERT_EQ(listen(lfd, 64), 0);
    std::atomic<bool> stop{false};
    std::atomic<int> accepted{0};
    std::thread closer([&] {
      while (!stop) {
        pollfd p{lfd, POLLIN, 0};
        if (poll(&p, 1, 10) != 1) continue;
        int c = accept(lfd, nullptr, nullptr);
        if (c < 0) continue;
        ++accepted;
        close(c);
      }
    });
    t0 = std::chrono::steady_clock::now();
    s = chi::HandshakeCall("127.0.0.1", closer_port, "hi", 1000, &reply);
    const auto took = std::chrono::steady_clock::now() - t0;
    stop = true;
    closer.join();
    close(lfd);
    EXPECT_EQ(s.code(), hshm::StatusCode::kUnavailable) << s;
    EXPECT_NE(s.message().find("network.rpc_port"), std::string::npos) << s;
    EXPECT_LE(accepted.load(), 12);
    EXPECT_LT(took, std::chrono::milliseconds(1500));
  }
  // An address that is in use cannot be bound twice.
  HandshakeServer again;
  EXPECT_EQ(again.Bind("127.0.0.1", mute_port).code(),
            hshm::StatusCode::kAlreadyExists);
}

}  // namespace
