// The daemon's sd_notify(3) (host/daemon/sd_notify.hpp) against real datagram sockets, as the
// service manager listens: a socket file, and an abstract socket ("@name"). The systemd_unit
// test runs the daemon under the real systemd (Type=notify, WatchdogSec).

#include "daemon/sd_notify.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>

#include "support/result.hpp"
#include "support/temp_dir.hpp"

namespace upparat::daemon {
namespace {

using test::must;

// A datagram socket bound to `name` (a path, or "@abstract"), as systemd's notify socket.
class Listener {
 public:
  explicit Listener(const std::string& name) : fd_(::socket(AF_UNIX, SOCK_DGRAM, 0)) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, name.data(), name.size());
    if (name[0] == '@') {
      address.sun_path[0] = '\0';
    }
    const auto size = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
    EXPECT_EQ(::bind(fd_, reinterpret_cast<const sockaddr*>(&address), size), 0)
        << std::strerror(errno);
  }
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  ~Listener() { ::close(fd_); }

  // The next datagram, or "" when none comes within a second.
  std::string receive() {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 1000) != 1) {
      return "";
    }
    char buffer[4096];
    const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
    return n > 0 ? std::string(buffer, static_cast<std::size_t>(n)) : "";
  }

 private:
  int fd_;
};

class SdNotifyTest : public ::testing::Test {
 protected:
  void TearDown() override {
    ::unsetenv("NOTIFY_SOCKET");
    ::unsetenv("WATCHDOG_USEC");
    ::unsetenv("WATCHDOG_PID");
  }
};

TEST_F(SdNotifyTest, SendsEachStateToTheSocketFile) {
  auto dir = must(test::TempDir::create("sd-notify"), "temp dir");
  const std::string name = (dir.path() / "notify").string();
  Listener listener(name);
  ::setenv("NOTIFY_SOCKET", name.c_str(), 1);
  EXPECT_TRUE(sd_notify_state("READY=1"));
  EXPECT_EQ(listener.receive(), "READY=1");
  EXPECT_TRUE(sd_notify_state("STATUS=job upparat_1: downloading"));
  EXPECT_EQ(listener.receive(), "STATUS=job upparat_1: downloading");
}

TEST_F(SdNotifyTest, SendsToAnAbstractSocket) {
  const std::string name = "@upparat-sd-notify-test-" + std::to_string(::getpid());
  Listener listener(name);
  ::setenv("NOTIFY_SOCKET", name.c_str(), 1);
  EXPECT_TRUE(sd_notify_state("WATCHDOG=1"));
  EXPECT_EQ(listener.receive(), "WATCHDOG=1");
}

TEST_F(SdNotifyTest, WithoutAServiceManagerNothingIsSent) {
  EXPECT_FALSE(sd_notify_state("READY=1"));
  ::setenv("NOTIFY_SOCKET", "relative/name", 1);
  EXPECT_FALSE(sd_notify_state("READY=1"));
  ::setenv("NOTIFY_SOCKET", "/nonexistent/upparat/notify", 1);
  EXPECT_FALSE(sd_notify_state("READY=1"));
  ::setenv("NOTIFY_SOCKET", ("/" + std::string(200, 'x')).c_str(), 1);
  EXPECT_FALSE(sd_notify_state("READY=1"));
}

TEST_F(SdNotifyTest, WatchdogPeriodFromTheEnvironment) {
  EXPECT_FALSE(sd_watchdog_period());
  ::setenv("WATCHDOG_USEC", "30000000", 1);
  EXPECT_EQ(sd_watchdog_period(), std::chrono::microseconds(30000000));
  ::setenv("WATCHDOG_PID", std::to_string(::getpid()).c_str(), 1);
  EXPECT_EQ(sd_watchdog_period(), std::chrono::microseconds(30000000));
  ::setenv("WATCHDOG_PID", std::to_string(::getpid() + 1).c_str(), 1);
  EXPECT_FALSE(sd_watchdog_period()) << "meant for another process";
  ::unsetenv("WATCHDOG_PID");
  for (const char* bad : {"0", "-5", "abc", "12x", "", "99999999999999999999999"}) {
    ::setenv("WATCHDOG_USEC", bad, 1);
    EXPECT_FALSE(sd_watchdog_period()) << bad;
  }
}

}  // namespace
}  // namespace upparat::daemon
