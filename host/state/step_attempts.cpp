#include "state/step_attempts.hpp"

namespace upparat::state {
namespace {

bool rerun_before(SavedStep saved, SavedStep step) {
  return (step == SavedStep::DownloadGate && saved == SavedStep::Download) ||
         (step == SavedStep::Download && saved == SavedStep::Install);
}

}  // namespace

void StepAttempts::begin(JobState* saved, SavedStep step, TimePoint now) {
  first_start_ = now;
  elapsed_before_ = 0;
  retry_count_ = 0;
  counting_ = true;
  counted_ = false;
  if (saved == nullptr) {
    return;
  }
  if (rerun_before(saved->step, step)) {
    counting_ = false;
  } else if (saved->step == step) {
    retry_count_ = saved->retry_count;
    elapsed_before_ = saved->step_elapsed_seconds;
  } else {
    saved->step = step;
    saved->unfinished_starts = 0;
    saved->retry_count = 0;
    saved->step_elapsed_seconds = 0;
  }
}

std::int64_t StepAttempts::elapsed_seconds(TimePoint now) const {
  return elapsed_before_ +
         std::chrono::duration_cast<std::chrono::seconds>(now - first_start_).count();
}

void StepAttempts::started(JobState* saved, TimePoint now) {
  if (saved == nullptr || !counting_) {
    return;
  }
  ++saved->unfinished_starts;
  counted_ = true;
  saved->retry_count = retry_count_;
  saved->step_elapsed_seconds = elapsed_seconds(now);
}

void StepAttempts::ended(JobState* saved, TimePoint now) {
  counted_ = false;
  if (saved == nullptr || !counting_) {
    return;
  }
  saved->unfinished_starts = 0;
  saved->step_elapsed_seconds = elapsed_seconds(now);
}

bool StepAttempts::stopped_on_purpose(JobState* saved) {
  if (saved == nullptr || !counted_) {
    return false;
  }
  --saved->unfinished_starts;
  counted_ = false;
  return true;
}

bool StepAttempts::progressed(JobState* saved, std::uint64_t synced_bytes) {
  if (saved == nullptr || !counting_ || synced_bytes <= saved->resume.synced_bytes) {
    return false;
  }
  saved->unfinished_starts = counted_ ? 1 : 0;
  return true;
}

}  // namespace upparat::state
