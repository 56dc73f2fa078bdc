#pragma once

// Which pending job the daemon works on: an IN_PROGRESS job of ours first (a continued
// update), else our QUEUED job with the oldest queuedAt. More than one IN_PROGRESS job of ours
// is an invalid state: all of them fail.

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "jobs/messages.hpp"

namespace upparat::state {

struct Selection {
  /// Our IN_PROGRESS jobs when there is more than one of them, else empty.
  std::vector<jobs::JobSummary> multiple_in_progress;
  /// The job to work on; nullopt when none is pending (or when multiple_in_progress is set).
  std::optional<jobs::JobSummary> job;
};

/// `ours` says whether a listed job is the daemon's to work on (prefix, valid id, not ended
/// on this device).
[[nodiscard]] Selection select_job(const jobs::PendingJobs& pending,
                                   const std::function<bool(const jobs::JobSummary&)>& ours);

}  // namespace upparat::state
