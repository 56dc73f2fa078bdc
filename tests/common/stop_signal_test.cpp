#include "common/stop_signal.hpp"

#include <fcntl.h>
#include <poll.h>

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <thread>
#include <vector>

namespace upparat {
namespace {

using namespace std::chrono_literals;

bool readable(int fd, int timeout_ms) {
  pollfd pfd{fd, POLLIN, 0};
  return ::poll(&pfd, 1, timeout_ms) == 1 && (pfd.revents & POLLIN) != 0;
}

TEST(StopSignal, StartsNotRequested) {
  StopSignal stop;
  EXPECT_FALSE(stop.requested());
  EXPECT_GE(stop.fd(), 0);
  EXPECT_FALSE(readable(stop.fd(), 0));
}

TEST(StopSignal, RequestMakesTheFdReadableAndStays) {
  StopSignal stop;
  stop.request();
  EXPECT_TRUE(stop.requested());
  EXPECT_TRUE(readable(stop.fd(), 0));
  stop.request();  // idempotent
  EXPECT_TRUE(stop.requested());
  EXPECT_TRUE(readable(stop.fd(), 0));  // stays readable: the host never reads it
}

TEST(StopSignal, WaitForTimesOutWithoutARequest) {
  StopSignal stop;
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(stop.wait_for(50ms));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 50ms);
  EXPECT_FALSE(stop.wait_for(0ms));
}

TEST(StopSignal, WaitForReturnsEarlyOnRequestFromAnotherThread) {
  StopSignal stop;
  auto requester = std::async(std::launch::async, [&stop] {
    std::this_thread::sleep_for(100ms);
    stop.request();
  });
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(stop.wait_for(60s));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 30s);
  requester.get();
  EXPECT_TRUE(stop.wait_for(0ms));  // already requested: at once
}

TEST(StopSignal, PollOnTheFdWakesOnRequest) {
  StopSignal stop;
  auto requester = std::async(std::launch::async, [&stop] {
    std::this_thread::sleep_for(100ms);
    stop.request();
  });
  EXPECT_TRUE(readable(stop.fd(), 30 * 1000));
  requester.get();
}

TEST(StopSignal, ConcurrentRequests) {
  StopSignal stop;
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&stop] { stop.request(); });
  }
  for (auto& t : threads) {
    t.join();
  }
  EXPECT_TRUE(stop.requested());
  EXPECT_TRUE(readable(stop.fd(), 0));
}

TEST(StopSignal, FdIsCloseOnExec) {
  StopSignal stop;
  EXPECT_NE(::fcntl(stop.fd(), F_GETFD) & FD_CLOEXEC, 0);
}

}  // namespace
}  // namespace upparat
