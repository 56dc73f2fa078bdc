#include "support/net.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <thread>

namespace upparat::test {

namespace {

sockaddr_in loopback_address(std::uint16_t port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return address;
}

class Socket {
 public:
  Socket() : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {}
  ~Socket() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  [[nodiscard]] int fd() const { return fd_; }

 private:
  int fd_;
};

Result<std::uint16_t> kernel_port() {
  Socket socket;
  if (socket.fd() < 0) {
    return fail(std::string("socket: ") + std::strerror(errno));
  }
  sockaddr_in address = loopback_address(0);
  if (::bind(socket.fd(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    return fail(std::string("bind 127.0.0.1:0: ") + std::strerror(errno));
  }
  socklen_t length = sizeof address;
  if (::getsockname(socket.fd(), reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    return fail(std::string("getsockname: ") + std::strerror(errno));
  }
  return ntohs(address.sin_port);
}

}  // namespace

Result<std::uint16_t> free_port() {
  static std::mutex mutex;
  static std::set<std::uint16_t> handed_out;
  for (int attempt = 0; attempt < 100; ++attempt) {
    auto port = kernel_port();
    if (!port) {
      return fail(port.error().context("free_port"));
    }
    if (*port == 80 || *port == 443 || *port == 1883 || *port == 8883) {
      continue;
    }
    std::lock_guard lock(mutex);
    if (handed_out.insert(*port).second) {
      return *port;
    }
  }
  return fail("free_port: no new free port after 100 attempts");
}

bool port_accepts(std::uint16_t port) {
  Socket socket;
  if (socket.fd() < 0) {
    return false;
  }
  sockaddr_in address = loopback_address(port);
  return ::connect(socket.fd(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
}

Status wait_for_port(std::uint16_t port, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (port_accepts(port)) {
      return {};
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return fail("127.0.0.1:" + std::to_string(port) + " accepted no connection within " +
                  std::to_string(timeout.count()) + " ms");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace upparat::test
