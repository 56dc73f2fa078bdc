#include "state/step_attempts.hpp"

#include <gtest/gtest.h>

namespace upparat::state {
namespace {

using namespace std::chrono_literals;
const StepAttempts::TimePoint t0{std::chrono::hours(1)};

JobState saved_at(SavedStep step, int unfinished = 0, int retries = 0, std::int64_t elapsed = 0) {
  JobState s;
  s.job_id = "upparat_1";
  s.execution_number = 1;
  s.step = step;
  s.unfinished_starts = unfinished;
  s.retry_count = retries;
  s.step_elapsed_seconds = elapsed;
  return s;
}

TEST(StepAttempts, ANewStepBecomesTheSavedStepWithFreshCounts) {
  JobState s = saved_at(SavedStep::VerifyJob, 2, 3, 40);
  StepAttempts a;
  a.begin(&s, SavedStep::Install, t0);
  EXPECT_EQ(s.step, SavedStep::Install);
  EXPECT_EQ(s.unfinished_starts, 0);
  EXPECT_EQ(s.retry_count, 0);
  EXPECT_EQ(a.retry_count(), 0);
  EXPECT_EQ(a.elapsed_seconds(t0 + 5s), 5);
}

TEST(StepAttempts, TheSavedStepContinuesWithItsRetriesAndTime) {
  JobState s = saved_at(SavedStep::Install, 1, 2, 100);
  StepAttempts a;
  a.begin(&s, SavedStep::Install, t0);
  EXPECT_EQ(a.retry_count(), 2);
  EXPECT_EQ(a.elapsed_before(), 100);
  EXPECT_EQ(a.elapsed_seconds(t0 + 20s), 120);
  a.started(&s, t0 + 20s);
  EXPECT_EQ(s.unfinished_starts, 2);  // the death before, and this attempt
  EXPECT_EQ(s.step_elapsed_seconds, 120);
  a.ended(&s, t0 + 30s);
  EXPECT_EQ(s.unfinished_starts, 0);
  EXPECT_EQ(s.step_elapsed_seconds, 130);
  a.retried();
  a.started(&s, t0 + 40s);
  EXPECT_EQ(s.retry_count, 3);
}

TEST(StepAttempts, AReRunBeforeTheSavedStepNeitherReplacesItNorCounts) {
  for (auto [saved, rerun] : {std::pair{SavedStep::Download, SavedStep::DownloadGate},
                              std::pair{SavedStep::Install, SavedStep::Download}}) {
    JobState s = saved_at(saved, 2, 1, 50);
    StepAttempts a;
    a.begin(&s, rerun, t0);
    a.started(&s, t0);
    a.ended(&s, t0 + 1s);
    a.started(&s, t0 + 2s);
    EXPECT_FALSE(a.stopped_on_purpose(&s));
    EXPECT_FALSE(a.progressed(&s, 1000));
    EXPECT_EQ(s.step, saved);
    EXPECT_EQ(s.unfinished_starts, 2);
    EXPECT_EQ(s.retry_count, 1);
    EXPECT_EQ(s.step_elapsed_seconds, 50);
  }
}

TEST(StepAttempts, AStopOnPurposeTakesBackOnlyWhatThisAttemptCounted) {
  JobState s = saved_at(SavedStep::Install, 2);
  StepAttempts a;
  a.begin(&s, SavedStep::Install, t0);
  EXPECT_FALSE(a.stopped_on_purpose(&s)) << "no attempt under way";
  a.started(&s, t0);
  EXPECT_EQ(s.unfinished_starts, 3);
  EXPECT_TRUE(a.stopped_on_purpose(&s));
  EXPECT_EQ(s.unfinished_starts, 2);
  EXPECT_FALSE(a.stopped_on_purpose(&s)) << "taken back once";
}

TEST(StepAttempts, SyncedBytesLeaveOnlyTheAttemptUnderWay) {
  JobState s = saved_at(SavedStep::Download, 2);
  s.resume.synced_bytes = 4096;
  StepAttempts a;
  a.begin(&s, SavedStep::Download, t0);
  a.started(&s, t0);
  EXPECT_EQ(s.unfinished_starts, 3);
  EXPECT_FALSE(a.progressed(&s, 4096)) << "no new bytes";
  EXPECT_TRUE(a.progressed(&s, 8192));
  EXPECT_EQ(s.unfinished_starts, 1);
}

TEST(StepAttempts, WithoutASavedStateOnlyTimeAndRetriesAreKept) {
  StepAttempts a;
  a.begin(nullptr, SavedStep::VerifyJob, t0);
  a.started(nullptr, t0);
  a.retried();
  EXPECT_EQ(a.retry_count(), 1);
  EXPECT_FALSE(a.stopped_on_purpose(nullptr));
  EXPECT_EQ(a.elapsed_seconds(t0 + 3s), 3);
}

}  // namespace
}  // namespace upparat::state
