// The runtime (host/daemon/daemon.cpp), built into this test with its test seam
// (UPPARAT_DAEMON_TEST_SEAMS; the daemon itself never has it): an exception that escapes the
// event loop, as std::bad_alloc would, must be logged and end the process in order.

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <new>

#include "config/config.hpp"
#include "daemon/daemon.hpp"
#include "support/temp_dir.hpp"

namespace upparat::daemon {
namespace {

config::Config offline_config(const test::TempDir& dir) {
  config::Config c;
  c.file = dir / "upparat.toml";
  c.service.state_directory = dir / "state";
  c.download.directory = dir / "state/downloads";
  c.broker.host = "127.0.0.1";
  c.broker.port = 1;  // never reached: the loop throws at its first event
  c.broker.plain_tcp = true;
  c.broker.thing_name = "thing-1";
  c.broker.client_id = "thing-1";
  return c;
}

// What main() does, with a loop that throws at its first event (the worker and the signal
// thread already run). Exits the process with the daemon's exit code.
[[noreturn]] void run_daemon_whose_loop_throws(const config::Config& config) {
  setup_logging("info");
  int code = kExitFailure;
  try {
    auto daemon = Daemon::create(config);
    if (!daemon) {
      spdlog::error("{}", daemon.error().message());
      std::exit(99);
    }
    (*daemon)->set_before_event([] { throw std::bad_alloc(); });
    code = (*daemon)->run();
  } catch (const std::exception& e) {
    spdlog::critical("unexpected error: {}", e.what());
  }
  std::exit(code);
}

// Before, the exception left Daemon::run() with the worker and signal threads joinable, and
// destroying the daemon called std::terminate (SIGABRT) before main() could log anything.
TEST(DaemonDeathTest, ExceptionInTheEventLoopIsLoggedAndEndsTheDaemonInOrder) {
  auto dir = test::TempDir::create("daemon-test");
  ASSERT_TRUE(dir) << dir.error().message();
  const auto config = offline_config(*dir);
  EXPECT_EXIT(run_daemon_whose_loop_throws(config), ::testing::ExitedWithCode(kExitFailure),
              "unexpected error in the event loop: std::bad_alloc.*stopped");
}

}  // namespace
}  // namespace upparat::daemon
