#include "daemon/sd_notify.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>

namespace upparat::daemon {
namespace {

// A positive decimal number, or nullopt.
std::optional<unsigned long long> positive_number(const char* text) {
  if (text == nullptr || *text < '0' || *text > '9') {
    return std::nullopt;
  }
  errno = 0;
  char* end = nullptr;
  const unsigned long long value = std::strtoull(text, &end, 10);
  if (errno != 0 || *end != '\0' || value == 0) {
    return std::nullopt;
  }
  return value;
}

}  // namespace

bool sd_notify_state(std::string_view state) {
  const char* name = std::getenv("NOTIFY_SOCKET");
  if (name == nullptr || (name[0] != '/' && name[0] != '@')) {
    return false;
  }
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  const std::size_t length = std::strlen(name);
  if (length >= sizeof address.sun_path) {
    return false;
  }
  std::memcpy(address.sun_path, name, length);
  if (name[0] == '@') {
    address.sun_path[0] = '\0';  // an abstract socket: no file, the name follows a NUL
  }
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return false;
  }
  const auto size = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + length);
  ssize_t sent = 0;
  do {
    sent = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
                    reinterpret_cast<const sockaddr*>(&address), size);
  } while (sent < 0 && errno == EINTR);
  ::close(fd);
  return sent == static_cast<ssize_t>(state.size());
}

std::optional<std::chrono::microseconds> sd_watchdog_period() {
  const auto usec = positive_number(std::getenv("WATCHDOG_USEC"));
  if (!usec) {
    return std::nullopt;
  }
  if (const char* pid_text = std::getenv("WATCHDOG_PID"); pid_text != nullptr) {
    const auto pid = positive_number(pid_text);
    if (!pid || *pid != static_cast<unsigned long long>(::getpid())) {
      return std::nullopt;  // meant for another process (e.g. the one that started us)
    }
  }
  return std::chrono::microseconds(*usec);
}

}  // namespace upparat::daemon
