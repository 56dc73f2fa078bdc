#include "mqtt/tcp_nodelay.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace upparat::mqtt {
namespace {

// A socket descriptor closed at the end of the test.
struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) {
      ::close(fd);
    }
  }
};

// A listening socket on 127.0.0.1 (a port the kernel picks) and its port.
std::uint16_t listen_on_loopback(Fd& server) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(server.fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  EXPECT_EQ(::listen(server.fd, 4), 0);
  socklen_t length = sizeof address;
  EXPECT_EQ(::getsockname(server.fd, reinterpret_cast<sockaddr*>(&address), &length), 0);
  return ntohs(address.sin_port);
}

void connect_to(const Fd& client, std::uint16_t port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(port);
  ASSERT_EQ(::connect(client.fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
}

TEST(TcpNodelay, SetOnTheConnectionsToThePortOnly) {
  Fd broker(::socket(AF_INET, SOCK_STREAM, 0));
  Fd other(::socket(AF_INET, SOCK_STREAM, 0));
  const std::uint16_t broker_port = listen_on_loopback(broker);
  const std::uint16_t other_port = listen_on_loopback(other);
  Fd to_broker(::socket(AF_INET, SOCK_STREAM, 0));
  Fd to_other(::socket(AF_INET, SOCK_STREAM, 0));
  Fd unconnected(::socket(AF_INET, SOCK_STREAM, 0));
  connect_to(to_broker, broker_port);
  connect_to(to_other, other_port);
  ASSERT_EQ(tcp_nodelay(to_broker.fd), 0);

  EXPECT_EQ(set_nodelay_to_peer_port(broker_port), 1);
  EXPECT_EQ(tcp_nodelay(to_broker.fd), 1);
  EXPECT_EQ(tcp_nodelay(to_other.fd), 0);
  EXPECT_EQ(tcp_nodelay(unconnected.fd), 0);
  EXPECT_EQ(tcp_nodelay(broker.fd), 0);  // the listener has no peer
}

TEST(TcpNodelay, NoConnectionToThePortFindsNothing) {
  Fd server(::socket(AF_INET, SOCK_STREAM, 0));
  const std::uint16_t port = listen_on_loopback(server);
  EXPECT_EQ(set_nodelay_to_peer_port(port), 0);
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  Fd read_end(pipe_fds[0]);
  Fd write_end(pipe_fds[1]);
  EXPECT_EQ(tcp_nodelay(read_end.fd), -1);  // not a socket
}

}  // namespace
}  // namespace upparat::mqtt
