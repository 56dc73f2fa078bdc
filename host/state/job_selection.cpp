#include "state/job_selection.hpp"

#include <algorithm>

namespace upparat::state {

Selection select_job(const jobs::PendingJobs& pending,
                     const std::function<bool(const jobs::JobSummary&)>& ours) {
  Selection out;
  std::vector<const jobs::JobSummary*> in_progress;
  for (const auto& j : pending.in_progress) {
    if (ours(j)) {
      in_progress.push_back(&j);
    }
  }
  if (in_progress.size() > 1) {
    for (const auto* j : in_progress) {
      out.multiple_in_progress.push_back(*j);
    }
    return out;
  }
  if (in_progress.size() == 1) {
    out.job = *in_progress.front();
    return out;
  }
  const jobs::JobSummary* oldest = nullptr;
  for (const auto& j : pending.queued) {
    // Oldest queuedAt first; ties keep AWS's queue order.
    if (ours(j) && (!oldest || j.queued_at < oldest->queued_at)) {
      oldest = &j;
    }
  }
  if (oldest) {
    out.job = *oldest;
  }
  return out;
}

}  // namespace upparat::state
