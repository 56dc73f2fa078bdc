#include "mqtt/tcp_nodelay.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cstdlib>
#include <memory>

namespace upparat::mqtt {

namespace {

struct DirCloser {
  void operator()(DIR* dir) const { ::closedir(dir); }
};

// The peer port of a connected TCP socket, or 0.
std::uint16_t tcp_peer_port(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) {
    return 0;
  }
  int type = 0;
  socklen_t length = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) != 0 || type != SOCK_STREAM) {
    return 0;
  }
  sockaddr_storage peer{};
  length = sizeof peer;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &length) != 0) {
    return 0;  // not connected (a listening socket, or the connect is not done)
  }
  if (peer.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in*>(&peer)->sin_port);
  }
  if (peer.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&peer)->sin6_port);
  }
  return 0;  // a Unix socket
}

}  // namespace

int set_nodelay_to_peer_port(std::uint16_t peer_port) {
  std::unique_ptr<DIR, DirCloser> dir(::opendir("/proc/self/fd"));
  if (!dir) {
    return 0;
  }
  const int own = ::dirfd(dir.get());
  int found = 0;
  while (const dirent* entry = ::readdir(dir.get())) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == own) {
      continue;
    }
    if (tcp_peer_port(static_cast<int>(fd)) != peer_port) {
      continue;
    }
    const int on = 1;
    if (::setsockopt(static_cast<int>(fd), IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) == 0) {
      ++found;
    }
  }
  return found;
}

int tcp_nodelay(int fd) {
  int value = 0;
  socklen_t length = sizeof value;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &value, &length) != 0) {
    return -1;
  }
  return value != 0 ? 1 : 0;
}

}  // namespace upparat::mqtt
