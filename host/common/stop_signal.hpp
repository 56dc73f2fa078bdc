#pragma once

#include <atomic>
#include <chrono>

namespace upparat {

/// A one-shot "please stop" flag that can also be waited on: request() makes fd() readable
/// (an eventfd), so code blocked in poll() on a socket or a pipe wakes up at once. Thread-safe.
/// Once requested it stays requested; make a new StopSignal for the next piece of work.
class StopSignal {
 public:
  StopSignal();
  ~StopSignal();
  StopSignal(const StopSignal&) = delete;
  StopSignal& operator=(const StopSignal&) = delete;

  /// Asks the work to stop. Safe to call from any thread, and more than once.
  void request();

  [[nodiscard]] bool requested() const { return requested_.load(std::memory_order_acquire); }

  /// A file descriptor that becomes readable once request() was called. Never read it.
  [[nodiscard]] int fd() const { return fd_; }

  /// Sleeps for up to `duration`, returning early (true) when a stop is requested.
  bool wait_for(std::chrono::milliseconds duration) const;

 private:
  int fd_;
  std::atomic<bool> requested_{false};
};

}  // namespace upparat
