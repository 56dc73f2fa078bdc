#pragma once

// How often progress reaches the cloud: each message costs the fleet money and the device
// bandwidth, so a download reports when its percentage advanced by a step (or, size unknown,
// every interval), and an install's latest line goes out at most every interval (or when the
// plugin's percentage advanced by a step).

#include <chrono>
#include <optional>

namespace upparat::state {

class ProgressBudget {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  ProgressBudget(int percent_step, std::chrono::seconds interval)
      : percent_step_(percent_step), interval_(interval) {}

  /// A download starts: its start message counts as the first report, at 0 %.
  void start_download(TimePoint now) {
    last_sent_ = now;
    last_percent_ = 0;
  }
  /// An install starts: nothing reported yet, so its first line is due at once.
  void start_install() {
    last_sent_.reset();
    last_percent_ = -1;
  }

  /// Download progress at `percent` (nullopt: size unknown): whether to report it now. A due
  /// report counts as sent.
  bool download_due(std::optional<int> percent, TimePoint now) {
    const bool due = percent ? *percent - last_percent_ >= percent_step_ : interval_passed(now);
    if (due) {
      sent(percent.value_or(-1), now);
    }
    return due;
  }

  /// An install line with `percent` (-1: unknown): whether to report it now. A due report
  /// counts as sent; otherwise the line waits until line_due_at().
  bool line_due(int percent, TimePoint now) {
    const bool due =
        (percent >= 0 && percent - last_percent_ >= percent_step_) || interval_passed(now);
    if (due) {
      sent(percent, now);
    }
    return due;
  }

  /// When a waiting line becomes due (call after line_due() returned false).
  [[nodiscard]] TimePoint line_due_at() const { return *last_sent_ + interval_; }

  /// A waiting line went out at `now`.
  void sent(int percent, TimePoint now) {
    last_sent_ = now;
    if (percent >= 0) {
      last_percent_ = percent;
    }
  }

 private:
  [[nodiscard]] bool interval_passed(TimePoint now) const {
    return !last_sent_ || now - *last_sent_ >= interval_;
  }

  int percent_step_;
  std::chrono::seconds interval_;
  std::optional<TimePoint> last_sent_;
  int last_percent_ = -1;
};

}  // namespace upparat::state
