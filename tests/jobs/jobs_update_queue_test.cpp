#include <gtest/gtest.h>

#include <rapidjson/document.h>

#include "jobs/update_queue.hpp"

namespace upparat::jobs {
namespace {

using namespace std::chrono_literals;

Update progress(const std::string& job, const std::string& msg) {
  Update u;
  u.job_id = job;
  u.status = "IN_PROGRESS";
  u.state = "download_progress";
  u.message = msg;
  u.progress = true;
  return u;
}

Update state(const std::string& job, const std::string& status, const std::string& st) {
  Update u;
  u.job_id = job;
  u.status = status;
  u.state = st;
  return u;
}

std::string field(const std::string& payload, const char* a, const char* b = nullptr) {
  rapidjson::Document d;
  d.Parse(payload.c_str());
  const rapidjson::Value& v = b ? d[a][b] : d[a];
  return v.GetString();
}

UpdateAccepted accepted(const std::string& token) {
  UpdateAccepted a;
  a.client_token = token;
  return a;
}

Rejected rejected(const std::string& token, const std::string& code,
                  std::optional<std::string> status = {}) {
  Rejected r;
  r.client_token = token;
  r.code = code;
  if (status) {
    r.execution_state = ExecutionState{*status, {}, 1};
  }
  return r;
}

class UpdateQueueTest : public ::testing::Test {
 protected:
  UpdateQueue q{"t", UpdateQueueSettings{30000ms, 1000ms, 8000ms}, "p"};
  TimePoint now{std::chrono::hours(1)};
};

TEST_F(UpdateQueueTest, OneInFlightPerJobInOrder) {
  const auto t1 = q.enqueue(state("j", "IN_PROGRESS", "installation_start"));
  const auto t2 = q.enqueue(state("j", "IN_PROGRESS", "reboot_start"));
  EXPECT_NE(t1, t2);
  auto out = q.poll(now);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].topic, "$aws/things/t/jobs/j/update");
  EXPECT_EQ(field(out[0].payload, "statusDetails", "state"), "installation_start");
  EXPECT_EQ(field(out[0].payload, "clientToken"), t1);
  EXPECT_TRUE(q.poll(now).empty());
  // A stale or foreign answer changes nothing.
  EXPECT_FALSE(q.on_accepted("j", accepted("other")));
  EXPECT_FALSE(q.on_accepted("k", accepted(t1)));
  auto o = q.on_accepted("j", accepted(t1));
  ASSERT_TRUE(o);
  EXPECT_EQ(o->result, UpdateResult::Accepted);
  EXPECT_FALSE(q.on_accepted("j", accepted(t1))) << "duplicate";
  out = q.poll(now);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(field(out[0].payload, "clientToken"), t2);
  ASSERT_TRUE(q.on_accepted("j", accepted(t2)));
  EXPECT_TRUE(q.empty());
  EXPECT_FALSE(q.next_wakeup());
}

TEST_F(UpdateQueueTest, UpdatesNameTheirExecution) {
  Update u = state("j", "IN_PROGRESS", "download_start");
  u.execution_number = 3;
  q.enqueue(u);
  auto out = q.poll(now);
  ASSERT_EQ(out.size(), 1u);
  rapidjson::Document d;
  d.Parse(out[0].payload.c_str());
  ASSERT_TRUE(d.HasMember("executionNumber")) << out[0].payload;
  EXPECT_EQ(d["executionNumber"].GetInt64(), 3);
}

TEST_F(UpdateQueueTest, JobsAreIndependent) {
  q.enqueue(state("a", "FAILED", "error_multiple_in_progress"));
  q.enqueue(state("b", "FAILED", "error_multiple_in_progress"));
  EXPECT_EQ(q.poll(now).size(), 2u);
}

TEST_F(UpdateQueueTest, ProgressMergesLatestWins) {
  const auto t1 = q.enqueue(progress("j", "1"));
  ASSERT_EQ(q.poll(now).size(), 1u);  // in flight: stays
  q.enqueue(progress("j", "2"));
  q.enqueue(progress("j", "3"));
  ASSERT_TRUE(q.on_accepted("j", accepted(t1)));
  auto out = q.poll(now);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(field(out[0].payload, "statusDetails", "message"), "3");
}

TEST_F(UpdateQueueTest, ProgressDroppedBeforeAStateChange) {
  const auto t1 = q.enqueue(state("j", "IN_PROGRESS", "download_start"));
  q.poll(now);
  q.enqueue(progress("j", "9"));
  const auto t3 = q.enqueue(state("j", "IN_PROGRESS", "installation_start"));
  ASSERT_TRUE(q.on_accepted("j", accepted(t1)));
  auto out = q.poll(now);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(field(out[0].payload, "clientToken"), t3);
}

TEST_F(UpdateQueueTest, ResentAfterTimeoutWithSameToken) {
  const auto t1 = q.enqueue(state("j", "IN_PROGRESS", "download_start"));
  q.poll(now);
  EXPECT_EQ(*q.next_wakeup(), now + 30s);
  EXPECT_TRUE(q.poll(now + 29s).empty());
  auto out = q.poll(now + 30s);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(field(out[0].payload, "clientToken"), t1);
  q.resend_all();
  EXPECT_EQ(q.poll(now + 31s).size(), 1u);
}

TEST_F(UpdateQueueTest, ThrottledBacksOffExponentiallyCapped) {
  const auto t1 = q.enqueue(state("j", "IN_PROGRESS", "download_start"));
  TimePoint t = now;
  q.poll(t);
  const std::chrono::milliseconds expected[] = {1000ms, 2000ms, 4000ms, 8000ms, 8000ms};
  for (auto delay : expected) {
    EXPECT_FALSE(q.on_rejected("j", rejected(t1, "RequestThrottled"), t));
    EXPECT_EQ(*q.next_wakeup(), t + delay);
    EXPECT_TRUE(q.poll(t + delay - 1ms).empty());
    t += delay;
    ASSERT_EQ(q.poll(t).size(), 1u);
  }
  EXPECT_FALSE(q.on_rejected("j", rejected(t1, "InternalError"), t));
  EXPECT_FALSE(q.empty());
}

TEST_F(UpdateQueueTest, GoneOnCancelOrDelete) {
  for (auto [code, status] :
       {std::pair<std::string, std::optional<std::string>>{"ResourceNotFound", std::nullopt},
        {"TerminalStateReached", std::nullopt},
        {"InvalidStateTransition", std::string("CANCELED")}}) {
    const auto t = q.enqueue(state("j", "IN_PROGRESS", "installation_start"));
    q.enqueue(state("j", "IN_PROGRESS", "reboot_start"));
    q.poll(now);
    auto o = q.on_rejected("j", rejected(t, code, status), now);
    ASSERT_TRUE(o) << code;
    EXPECT_EQ(o->result, UpdateResult::Gone) << code;
    EXPECT_TRUE(q.empty()) << code;
  }
}

TEST_F(UpdateQueueTest, OtherRejectionsAreFinal) {
  const auto t = q.enqueue(state("j", "IN_PROGRESS", "x"));
  q.poll(now);
  auto o = q.on_rejected("j", rejected(t, "InvalidStateTransition", std::string("QUEUED")), now);
  ASSERT_TRUE(o);
  EXPECT_EQ(o->result, UpdateResult::Rejected);
  EXPECT_EQ(o->code, "InvalidStateTransition");
  EXPECT_TRUE(q.empty());
}

TEST_F(UpdateQueueTest, OwnTerminalUpdateResentIsAccepted) {
  // SUCCEEDED went through but its answer was lost; the resend is refused as a transition
  // out of SUCCEEDED: that is our own success, not a cancel.
  const auto t = q.enqueue(state("j", "SUCCEEDED", "complete_ready"));
  q.poll(now);
  auto o = q.on_rejected("j", rejected(t, "InvalidStateTransition", std::string("SUCCEEDED")), now);
  ASSERT_TRUE(o);
  EXPECT_EQ(o->result, UpdateResult::Accepted);
}

// ---- expectedVersion -----------------------------------------------------------------------

std::optional<std::int64_t> int_field(const std::string& payload, const char* key) {
  rapidjson::Document d;
  d.Parse(payload.c_str());
  if (!d.HasMember(key)) {
    return std::nullopt;
  }
  return d[key].GetInt64();
}

Update on_execution(Update u, std::int64_t execution) {
  u.execution_number = execution;
  return u;
}

Rejected mismatch(const std::string& token, const std::string& status, const std::string& st,
                  std::int64_t version, const std::string& message = "none") {
  Rejected r;
  r.client_token = token;
  r.code = "VersionMismatch";
  r.execution_state = ExecutionState{status, {{"state", st}, {"message", message}}, version};
  return r;
}

UpdateAccepted accepted_at(const std::string& token, std::int64_t version) {
  UpdateAccepted a = accepted(token);
  a.execution_state = ExecutionState{"IN_PROGRESS", {}, version};
  return a;
}

TEST_F(UpdateQueueTest, ExpectedVersionFromTheDescribeThenFromEachAnswer) {
  q.set_version("j", 1, 5);
  const auto t1 = q.enqueue(on_execution(state("j", "IN_PROGRESS", "download_start"), 1));
  auto out = q.poll(now);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(int_field(out[0].payload, "expectedVersion"), 5);
  rapidjson::Document d;
  d.Parse(out[0].payload.c_str());
  ASSERT_TRUE(d.HasMember("includeJobExecutionState"));
  EXPECT_TRUE(d["includeJobExecutionState"].GetBool());
  ASSERT_TRUE(q.on_accepted("j", accepted_at(t1, 6)));
  EXPECT_EQ(q.version("j"), 6);
  const auto t2 = q.enqueue(on_execution(state("j", "IN_PROGRESS", "installation_start"), 1));
  out = q.poll(now);
  EXPECT_EQ(int_field(out[0].payload, "expectedVersion"), 6);
  // An answer without executionState: each accepted update raises the version by one.
  ASSERT_TRUE(q.on_accepted("j", accepted(t2)));
  EXPECT_EQ(q.version("j"), 7);
}

TEST_F(UpdateQueueTest, NoExpectedVersionWhenNotKnownForThatExecution) {
  q.enqueue(on_execution(state("a", "IN_PROGRESS", "x"), 1));
  q.set_version("b", 1, 4);
  q.enqueue(on_execution(state("b", "IN_PROGRESS", "x"), 2));
  auto out = q.poll(now);
  ASSERT_EQ(out.size(), 2u);
  for (const auto& o : out) {
    EXPECT_FALSE(int_field(o.payload, "expectedVersion")) << o.payload;
  }
}

TEST_F(UpdateQueueTest, KnownVersionOnlyGrowsWithinAnExecution) {
  q.set_version("j", 1, 5);
  q.set_version("j", 1, 3);  // a describe answered before our last update was applied
  EXPECT_EQ(q.version("j"), 5);
  q.set_version("j", 1, 0);  // not known
  EXPECT_EQ(q.version("j"), 5);
  q.set_version("j", 2, 1);  // a new execution starts again
  EXPECT_EQ(q.version("j"), 1);
}

TEST_F(UpdateQueueTest, ResendKeepsTheExpectedVersionOfTheFirstSend) {
  q.set_version("j", 1, 5);
  q.enqueue(on_execution(state("j", "IN_PROGRESS", "installation_start"), 1));
  q.poll(now);
  q.set_version("j", 1, 6);  // e.g. a describe saw the first send applied
  auto out = q.poll(now + 30s);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(int_field(out[0].payload, "expectedVersion"), 5);
  q.resend_all();
  out = q.poll(now + 31s);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(int_field(out[0].payload, "expectedVersion"), 5);
}

TEST_F(UpdateQueueTest, MismatchShowingWhatWeSentIsAccepted) {
  // The first send was applied, its answer lost; the resend meets VersionMismatch.
  q.set_version("j", 1, 5);
  const auto t = q.enqueue(on_execution(state("j", "IN_PROGRESS", "installation_start"), 1));
  q.poll(now);
  auto o = q.on_rejected("j", mismatch(t, "IN_PROGRESS", "installation_start", 6), now);
  ASSERT_TRUE(o);
  EXPECT_EQ(o->result, UpdateResult::Accepted);
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.version("j"), 6);
}

TEST_F(UpdateQueueTest, MismatchWithOurDetailsButAnotherStatusIsNotOurs) {
  q.set_version("j", 1, 5);
  const auto t = q.enqueue(on_execution(state("j", "IN_PROGRESS", "x"), 1));
  q.poll(now);
  EXPECT_FALSE(q.on_rejected("j", mismatch(t, "QUEUED", "x", 6), now));
  auto out = q.poll(now);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(int_field(out[0].payload, "expectedVersion"), 6);
}

TEST_F(UpdateQueueTest, MismatchOnATerminalExecution) {
  // Cancelled by force (statusDetails kept): not ours, gone.
  q.set_version("j", 1, 5);
  auto t = q.enqueue(on_execution(state("j", "IN_PROGRESS", "installation_start"), 1));
  q.enqueue(on_execution(state("j", "IN_PROGRESS", "reboot_start"), 1));
  q.poll(now);
  auto o = q.on_rejected("j", mismatch(t, "CANCELED", "installation_start", 7), now);
  ASSERT_TRUE(o);
  EXPECT_EQ(o->result, UpdateResult::Gone);
  EXPECT_EQ(o->code, "VersionMismatch");
  EXPECT_TRUE(q.empty());
  EXPECT_FALSE(q.version("j"));
  // Our own terminal status: our final update was applied.
  q.set_version("j", 1, 5);
  t = q.enqueue(on_execution(state("j", "SUCCEEDED", "complete_ready"), 1));
  q.poll(now);
  o = q.on_rejected("j", mismatch(t, "SUCCEEDED", "complete_ready", 6), now);
  ASSERT_TRUE(o);
  EXPECT_EQ(o->result, UpdateResult::Accepted);
  EXPECT_FALSE(q.version("j")) << "forgotten after the terminal update";
}

TEST_F(UpdateQueueTest, MismatchWithOtherDetailsIsSentAgainWithTheNewVersion) {
  q.set_version("j", 1, 5);
  const auto t = q.enqueue(on_execution(state("j", "IN_PROGRESS", "reboot_start"), 1));
  q.poll(now);
  EXPECT_FALSE(q.on_rejected("j", mismatch(t, "IN_PROGRESS", "operator_note", 8), now));
  auto out = q.poll(now);  // at once
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(field(out[0].payload, "clientToken"), t);
  EXPECT_EQ(int_field(out[0].payload, "expectedVersion"), 8);
  // Again: now with back-off.
  EXPECT_FALSE(q.on_rejected("j", mismatch(t, "IN_PROGRESS", "operator_note", 9), now));
  EXPECT_EQ(*q.next_wakeup(), now + 1s);
  EXPECT_TRUE(q.poll(now + 999ms).empty());
  out = q.poll(now + 1s);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(int_field(out[0].payload, "expectedVersion"), 9);
  auto o = q.on_accepted("j", accepted_at(t, 10));
  ASSERT_TRUE(o);
  EXPECT_EQ(o->result, UpdateResult::Accepted);
}

TEST_F(UpdateQueueTest, MismatchOfAProgressUpdateWithANewerOneQueuedDropsIt) {
  q.set_version("j", 1, 5);
  const auto t1 = q.enqueue(on_execution(progress("j", "1"), 1));
  q.poll(now);
  const auto t2 = q.enqueue(on_execution(state("j", "IN_PROGRESS", "installation_start"), 1));
  EXPECT_FALSE(q.on_rejected("j", mismatch(t1, "IN_PROGRESS", "operator_note", 7), now));
  auto out = q.poll(now);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(field(out[0].payload, "clientToken"), t2);
  EXPECT_EQ(int_field(out[0].payload, "expectedVersion"), 7);
}

TEST_F(UpdateQueueTest, StaleMismatchOfAnOlderCopyIsIgnored) {
  q.set_version("j", 1, 5);
  const auto t1 = q.enqueue(on_execution(state("j", "IN_PROGRESS", "installation_progress"), 1));
  q.poll(now);
  ASSERT_TRUE(q.on_accepted("j", accepted_at(t1, 6)));
  const auto t2 = q.enqueue(on_execution(state("j", "IN_PROGRESS", "reboot_start"), 1));
  q.poll(now);
  // A late copy of t1 was refused: its answer names t1, not the update in flight.
  EXPECT_FALSE(q.on_rejected("j", mismatch(t1, "IN_PROGRESS", "reboot_start", 7), now));
  auto o = q.on_accepted("j", accepted_at(t2, 7));
  ASSERT_TRUE(o);
  EXPECT_EQ(o->client_token, t2);
}

TEST_F(UpdateQueueTest, MismatchWithoutExecutionStateIsARejection) {
  q.set_version("j", 1, 5);
  const auto t = q.enqueue(on_execution(state("j", "IN_PROGRESS", "x"), 1));
  q.poll(now);
  auto o = q.on_rejected("j", rejected(t, "VersionMismatch"), now);
  ASSERT_TRUE(o);
  EXPECT_EQ(o->result, UpdateResult::Rejected);
}

TEST_F(UpdateQueueTest, DropJob) {
  q.enqueue(state("j", "IN_PROGRESS", "x"));
  EXPECT_TRUE(q.has_pending("j"));
  q.set_version("j", 1, 3);
  q.drop_job("j");
  EXPECT_FALSE(q.has_pending("j"));
  EXPECT_FALSE(q.version("j"));
  EXPECT_TRUE(q.poll(now).empty());
}

}  // namespace
}  // namespace upparat::jobs
