#pragma once

#include <atomic>
#include <chrono>

namespace upparat::emulator {

/// The emulator's notion of "now": wall-clock time plus an offset that tests (through the
/// control channel) can advance, so step and in-progress timeouts and URL expiry can be
/// tested without waiting for real minutes. Thread-safe.
class Clock {
 public:
  using time_point = std::chrono::system_clock::time_point;

  [[nodiscard]] time_point now() const {
    return std::chrono::system_clock::now() + std::chrono::seconds(offset_seconds_.load());
  }
  /// Whole epoch seconds, as the emulator writes timestamps.
  [[nodiscard]] long long now_seconds() const {
    return std::chrono::duration_cast<std::chrono::seconds>(now().time_since_epoch()).count();
  }
  void advance(std::chrono::seconds by) { offset_seconds_ += by.count(); }

 private:
  std::atomic<long long> offset_seconds_{0};
};

}  // namespace upparat::emulator
