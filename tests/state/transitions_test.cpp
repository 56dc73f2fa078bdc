#include "state/transitions.hpp"

#include <gtest/gtest.h>

#include <string>

namespace upparat::state {
namespace {

TEST(Transitions, AJobEndsOnlyWhenTheFlowReturnsToFetchJobs) {
  const auto* done = find_transition(Phase::Finishing, Trigger::Done);
  ASSERT_TRUE(done);
  EXPECT_EQ(done->to, Phase::FetchJobs);
  EXPECT_EQ(done->action, OnTransition::EndJob);
  const auto* stopped = find_transition(Phase::Stopping, Trigger::WorkEnded);
  ASSERT_TRUE(stopped);
  EXPECT_EQ(stopped->action, OnTransition::EndJob);
  EXPECT_EQ(find_transition(Phase::FetchJobs, Trigger::JobSelected)->action, OnTransition::Nothing);
}

TEST(Transitions, FailureAndCancelLeadOutOfEveryPhaseThatWorksOnAJob) {
  for (auto p : {Phase::DescribeJob, Phase::VerifyJob, Phase::DownloadGate, Phase::Download,
                 Phase::DescribeForInstall, Phase::Install, Phase::RebootAck, Phase::Restart,
                 Phase::VerifyInstallation, Phase::Ready, Phase::Finishing}) {
    ASSERT_TRUE(has_job(p)) << to_string(p);
    ASSERT_TRUE(find_transition(p, Trigger::StepFailed)) << to_string(p);
    EXPECT_EQ(find_transition(p, Trigger::Gone)->to, Phase::Stopping) << to_string(p);
    EXPECT_EQ(find_transition(p, Trigger::UpdateRefused)->to, Phase::Stopping) << to_string(p);
  }
  for (auto p :
       {Phase::Idle, Phase::FetchJobs, Phase::Monitor, Phase::Stopping, Phase::ShuttingDown}) {
    EXPECT_FALSE(has_job(p)) << to_string(p);
    EXPECT_FALSE(find_transition(p, Trigger::Gone)) << to_string(p);
  }
}

TEST(Transitions, ShutdownLeadsFromEveryPhaseAndNothingLeavesIt) {
  for (auto p : {Phase::Idle, Phase::FetchJobs, Phase::Monitor, Phase::Download, Phase::Restart,
                 Phase::Finishing, Phase::Stopping}) {
    const auto* t = find_transition(p, Trigger::Shutdown);
    ASSERT_TRUE(t) << to_string(p);
    EXPECT_EQ(t->to, Phase::ShuttingDown);
  }
  EXPECT_FALSE(find_transition(Phase::ShuttingDown, Trigger::Shutdown));
  EXPECT_FALSE(find_transition(Phase::ShuttingDown, Trigger::JobsNotified));
}

TEST(Transitions, NoRowForATriggerThePhaseDoesNotExpect) {
  EXPECT_FALSE(find_transition(Phase::Monitor, Trigger::Downloaded));
  EXPECT_FALSE(find_transition(Phase::FetchJobs, Trigger::Done));
}

TEST(Transitions, EverySavedStepHasAResumeRule) {
  EXPECT_FALSE(resume_rule(SavedStep::VerifyJob).trigger);  // starts over as new
  EXPECT_EQ(resume_rule(SavedStep::Install).trigger, Trigger::ResumeDownload);
  EXPECT_EQ(resume_rule(SavedStep::Install).streaming, Trigger::ResumeStream);
  // A streamed install through the host's download starts again from byte 0.
  EXPECT_EQ(resume_rule(SavedStep::Install).host_streaming, Trigger::ResumeHostStream);
  EXPECT_EQ(find_transition(Phase::DescribeJob, Trigger::ResumeHostStream)->to, Phase::Install);
  EXPECT_EQ(find_transition(Phase::DownloadGate, Trigger::GateOpenHostStream)->to, Phase::Install);
  EXPECT_EQ(resume_rule(SavedStep::Finish).trigger, Trigger::ResumeFinish);
  // Ending the process is the purpose of restart: its deaths are not counted.
  EXPECT_FALSE(resume_rule(SavedStep::Restart).step);
  EXPECT_FALSE(resume_rule(SavedStep::Reboot).step);
  EXPECT_EQ(resume_rule(SavedStep::DownloadGate).step, plugin::Step::Download);
}

TEST(Transitions, NamesForTheLog) {
  EXPECT_EQ(std::string(to_string(Trigger::UpdateRefused)), "update_refused");
  EXPECT_EQ(std::string(to_string(Phase::RebootAck)), "reboot_ack");
}

}  // namespace
}  // namespace upparat::state
