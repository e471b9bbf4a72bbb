// Helpers shared by the lightbeam tests: free loopback endpoints and bounded
// polling.
#ifndef CHIMAERA_TEST_UNIT_HSHM_NET_TEST_UTIL_H_
#define CHIMAERA_TEST_UNIT_HSHM_NET_TEST_UTIL_H_

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

namespace hshm_test {

/** "ip:port" with a port that was free on `ip` a moment ago (a test failure
 * and port 1 if nothing can be bound there). */
inline std::string FreeEndpoint(const char *ip) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = 0;
  inet_pton(AF_INET, ip, &a.sin_addr);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a)) != 0) {
    ADD_FAILURE() << "cannot bind " << ip << ":0";
    if (fd >= 0) close(fd);
    return std::string(ip) + ":1";
  }
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len);
  close(fd);
  return std::string(ip) + ":" + std::to_string(ntohs(a.sin_port));
}

/** Polls `cond` every millisecond until it holds (true) or `ms` pass
 * (false). */
template <typename F>
bool WaitFor(F cond, int ms = 10000) {
  auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (!cond()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace hshm_test

#endif  // CHIMAERA_TEST_UNIT_HSHM_NET_TEST_UTIL_H_
