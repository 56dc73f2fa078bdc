#include "state/request_tracker.hpp"

#include <gtest/gtest.h>

#include <set>

namespace upparat::state {
namespace {

TEST(RequestTracker, AGetIsPublishedOnTheGetTopicWithAPrefixedToken) {
  RequestTracker t("thing-1", "uabc");
  const Request& r = t.get();
  EXPECT_EQ(r.purpose, RequestPurpose::Get);
  EXPECT_EQ(r.topic, "$aws/things/thing-1/jobs/get");
  EXPECT_EQ(r.token, "uabc-1");
  EXPECT_EQ(r.payload, R"({"clientToken":"uabc-1"})");
  EXPECT_TRUE(r.job_id.empty());
}

TEST(RequestTracker, ADescribeIsPinnedToAKnownExecutionOnly) {
  RequestTracker t("thing-1", "uabc");
  const Request& pinned = t.describe(RequestSlot::Flow, RequestPurpose::Select, "job-7", 3);
  EXPECT_EQ(pinned.topic, "$aws/things/thing-1/jobs/job-7/get");
  EXPECT_EQ(pinned.payload,
            R"({"executionNumber":3,"includeJobDocument":true,"clientToken":"uabc-1"})");
  const Request& unknown = t.describe(RequestSlot::Flow, RequestPurpose::Stream, "job-7", 0);
  EXPECT_EQ(unknown.payload, R"({"includeJobDocument":true,"clientToken":"uabc-2"})");
  EXPECT_EQ(unknown.purpose, RequestPurpose::Stream);
}

TEST(RequestTracker, TokensAreNeverReused) {
  RequestTracker t("thing-1", "u1");
  std::set<std::string> tokens;
  for (int i = 0; i < 50; ++i) {
    tokens.insert(t.get().token);
    tokens.insert(t.describe(RequestSlot::CancelCheck, RequestPurpose::Select, "j", 1).token);
  }
  EXPECT_EQ(tokens.size(), 100u);
}

TEST(RequestTracker, AnAnswerNeedsTheTokenAndTheJobOfItsSlotsRequest) {
  RequestTracker t("thing-1", "u1");
  const std::string get_token = t.get().token;
  EXPECT_TRUE(t.answers(RequestSlot::Flow, get_token, ""));
  EXPECT_FALSE(t.answers(RequestSlot::Flow, get_token, "job-1"));    // a get is about no job
  EXPECT_FALSE(t.answers(RequestSlot::Flow, std::nullopt, ""));      // no clientToken
  EXPECT_FALSE(t.answers(RequestSlot::Flow, "u0-1", ""));            // a predecessor's token
  EXPECT_FALSE(t.answers(RequestSlot::CancelCheck, get_token, ""));  // another slot's

  const std::string check =
      t.describe(RequestSlot::CancelCheck, RequestPurpose::Select, "job-1", 2).token;
  EXPECT_TRUE(t.answers(RequestSlot::CancelCheck, check, "job-1"));
  EXPECT_FALSE(t.answers(RequestSlot::CancelCheck, check, "job-2"));
  EXPECT_TRUE(t.answers(RequestSlot::Flow, get_token, ""));  // the slots are independent
}

TEST(RequestTracker, ANewRequestInASlotMakesTheOldAnswerStale) {
  RequestTracker t("thing-1", "u1");
  const std::string first = t.get().token;
  const std::string second =
      t.describe(RequestSlot::Flow, RequestPurpose::Select, "job-1", 1).token;
  EXPECT_FALSE(t.answers(RequestSlot::Flow, first, ""));
  EXPECT_TRUE(t.answers(RequestSlot::Flow, second, "job-1"));
}

TEST(RequestTracker, TakeEmptiesTheSlotAndReturnsTheRequestWithItsTimer) {
  RequestTracker t("thing-1", "u1");
  const std::string token = t.get().token;
  t.set_timer(RequestSlot::Flow, 42);
  auto taken = t.take(RequestSlot::Flow);
  ASSERT_TRUE(taken);
  EXPECT_EQ(taken->token, token);
  EXPECT_EQ(taken->timer, 42u);
  EXPECT_EQ(t.find(RequestSlot::Flow), nullptr);
  EXPECT_FALSE(t.answers(RequestSlot::Flow, token, ""));
  EXPECT_FALSE(t.take(RequestSlot::Flow));
}

TEST(RequestTracker, AFiredTimerFindsItsSlot) {
  RequestTracker t("thing-1", "u1");
  t.get();
  t.describe(RequestSlot::CancelCheck, RequestPurpose::Select, "job-1", 1);
  t.set_timer(RequestSlot::Flow, 7);
  t.set_timer(RequestSlot::CancelCheck, 8);
  EXPECT_EQ(t.slot_of_timer(7), RequestSlot::Flow);
  EXPECT_EQ(t.slot_of_timer(8), RequestSlot::CancelCheck);
  EXPECT_EQ(t.slot_of_timer(9), std::nullopt);
  EXPECT_EQ(t.slot_of_timer(0), std::nullopt);  // 0 is "no timer"
  t.take(RequestSlot::Flow);
  EXPECT_EQ(t.slot_of_timer(7), std::nullopt);  // the timer of a dropped request is stale
  t.set_timer(RequestSlot::Flow, 9);            // no request there: ignored
  EXPECT_EQ(t.slot_of_timer(9), std::nullopt);
}

}  // namespace
}  // namespace upparat::state
