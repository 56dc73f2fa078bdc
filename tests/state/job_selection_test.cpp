#include "state/job_selection.hpp"

#include <gtest/gtest.h>

namespace upparat::state {
namespace {

jobs::JobSummary job(const std::string& id, std::int64_t queued_at = 1000) {
  jobs::JobSummary j;
  j.job_id = id;
  j.queued_at = queued_at;
  j.execution_number = 1;
  return j;
}

bool prefixed(const jobs::JobSummary& j) {
  return j.job_id.rfind("upparat_", 0) == 0;
}

TEST(JobSelection, NothingPending) {
  const auto s = select_job({}, prefixed);
  EXPECT_FALSE(s.job);
  EXPECT_TRUE(s.multiple_in_progress.empty());
}

TEST(JobSelection, InProgressBeforeQueued) {
  jobs::PendingJobs p;
  p.queued = {job("upparat_q", 1)};
  p.in_progress = {job("other"), job("upparat_ip", 5000)};
  EXPECT_EQ(select_job(p, prefixed).job->job_id, "upparat_ip");
}

TEST(JobSelection, OldestQueuedFirstAndTiesKeepTheQueueOrder) {
  jobs::PendingJobs p;
  p.queued = {job("upparat_b", 2000), job("other", 1), job("upparat_a", 1000),
              job("upparat_c", 1000)};
  EXPECT_EQ(select_job(p, prefixed).job->job_id, "upparat_a");
}

TEST(JobSelection, MoreThanOneInProgressOfOursIsInvalid) {
  jobs::PendingJobs p;
  p.in_progress = {job("upparat_1"), job("other"), job("upparat_2")};
  p.queued = {job("upparat_3")};
  const auto s = select_job(p, prefixed);
  EXPECT_FALSE(s.job);
  ASSERT_EQ(s.multiple_in_progress.size(), 2u);
  EXPECT_EQ(s.multiple_in_progress[0].job_id, "upparat_1");
  EXPECT_EQ(s.multiple_in_progress[1].job_id, "upparat_2");
}

TEST(JobSelection, OnlyJobsThePredicateCallsOurs) {
  jobs::PendingJobs p;
  p.in_progress = {job("upparat_ended")};
  p.queued = {job("other"), job("upparat_next")};
  const auto s = select_job(
      p, [](const jobs::JobSummary& j) { return prefixed(j) && j.job_id != "upparat_ended"; });
  ASSERT_TRUE(s.job);
  EXPECT_EQ(s.job->job_id, "upparat_next");
}

}  // namespace
}  // namespace upparat::state
