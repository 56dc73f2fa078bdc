#pragma once

// The attempts of the step being done, and what the saved job state keeps of them: the
// RETRY_LATER count, the time spent (across restarts of the daemon), and how often an attempt
// was started without finishing, so that a step the daemon dies in again and again fails
// ("daemon died N times") instead of looping. Pure: time comes in as arguments; the caller
// saves the JobState.

#include <chrono>
#include <cstdint>

#include "state/state_store.hpp"

namespace upparat::state {

class StepAttempts {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  /// `step` begins at `now`. `saved` (may be null: nothing is saved) is the job's state: a step
  /// that is already the saved one continues with its saved retries and time; a step run
  /// again only on the way back to a later saved step (the download gate before a resumed
  /// download, the download before a resumed install) is a check that neither replaces the
  /// saved step nor counts; any other step becomes the saved step with fresh counts.
  void begin(JobState* saved, SavedStep step, TimePoint now);

  /// An attempt starts: counted in saved->unfinished_starts until ended().
  void started(JobState* saved, TimePoint now);
  /// The attempt returned, whatever its result: the daemon did not die during it.
  void ended(JobState* saved, TimePoint now);
  /// The attempt was stopped on purpose (SIGTERM): takes back only what started() counted.
  /// True when `saved` changed.
  bool stopped_on_purpose(JobState* saved);
  /// The download synced bytes beyond `saved->resume`: earlier deaths no longer count, only
  /// the attempt under way. Call before saving the new resume state. True when `saved` changed.
  bool progressed(JobState* saved, std::uint64_t synced_bytes);

  /// RETRY_LATER: the next attempt is a retry.
  void retried() { ++retry_count_; }
  [[nodiscard]] int retry_count() const { return retry_count_; }
  /// Seconds spent in the step, also before a restart of the daemon.
  [[nodiscard]] std::int64_t elapsed_seconds(TimePoint now) const;
  /// Seconds spent in the step before this daemon began it.
  [[nodiscard]] std::int64_t elapsed_before() const { return elapsed_before_; }

 private:
  int retry_count_ = 0;
  TimePoint first_start_{};
  std::int64_t elapsed_before_ = 0;
  bool counting_ = true;  // the attempts are the saved step's own
  bool counted_ = false;  // the attempt under way was counted in unfinished_starts
};

}  // namespace upparat::state
