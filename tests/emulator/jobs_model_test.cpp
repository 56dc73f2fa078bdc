// Conformance tests of the emulator's AWS IoT Jobs model, written from
// /work/shared/spec/aws-iot-jobs.md (the AWS IoT Jobs device MQTT API), not from the daemon.
#include "emulator/jobs_model.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace upparat::emulator {
namespace {

const std::string T = "$aws/things/dev1/jobs";

rapidjson::Document parse(const std::string& text) {
  rapidjson::Document d;
  d.Parse(text.c_str());
  EXPECT_FALSE(d.HasParseError()) << text;
  return d;
}

class JobsModelTest : public ::testing::Test {
 protected:
  JobsModelTest()
      : clock_(std::make_shared<Clock>()),
        model_(clock_, [this](const std::string& b, const std::string& k, int expiry) {
          ++presigned_;
          return "https://127.0.0.1:1/" + b + "/" + k + "?X-Amz-Expires=" + std::to_string(expiry) +
                 "&n=" + std::to_string(presigned_);
        }) {}

  void create(const std::string& id, std::vector<std::string> things = {"dev1"},
              std::string doc = R"({"action":"update","version":"1.0"})") {
    JobSpec spec;
    spec.job_id = id;
    spec.document = std::move(doc);
    spec.things = std::move(things);
    auto r = model_.create_job(spec);
    ASSERT_TRUE(r) << r.error().message();
  }

  std::vector<Outgoing> send(const std::string& topic, const std::string& payload = "") {
    return model_.handle(topic, payload);
  }

  /// The one message on `topic` among `out` (fails if not exactly one).
  static rapidjson::Document only(const std::vector<Outgoing>& out, const std::string& topic) {
    int n = 0;
    std::string payload;
    for (const auto& m : out) {
      if (m.topic == topic) {
        ++n;
        payload = m.payload;
      }
    }
    EXPECT_EQ(n, 1) << "messages on " << topic;
    if (n == 0) {
      return parse("{}");
    }
    return parse(payload);
  }

  static int count(const std::vector<Outgoing>& out, const std::string& topic) {
    int n = 0;
    for (const auto& m : out) {
      n += m.topic == topic ? 1 : 0;
    }
    return n;
  }

  std::shared_ptr<Clock> clock_;
  int presigned_ = 0;
  JobsModel model_;
};

// ---- topics and payloads -------------------------------------------------------------------

TEST_F(JobsModelTest, GetPendingWithEmptyPayloadIsAnswered) {
  auto out = send(T + "/get");
  auto d = only(out, T + "/get/accepted");
  EXPECT_TRUE(d["inProgressJobs"].IsArray());
  EXPECT_EQ(d["queuedJobs"].Size(), 0u);
  EXPECT_TRUE(d["timestamp"].IsInt64());
  EXPECT_FALSE(d.HasMember("clientToken"));
}

TEST_F(JobsModelTest, ClientTokenIsEchoedInAcceptedAndRejected) {
  auto d = only(send(T + "/get", R"({"clientToken":"tok-1"})"), T + "/get/accepted");
  EXPECT_STREQ(d["clientToken"].GetString(), "tok-1");
  auto r = only(send(T + "/nope/update", R"({"clientToken":"tok-2","status":"SUCCEEDED"})"),
                T + "/nope/update/rejected");
  EXPECT_STREQ(r["code"].GetString(), "ResourceNotFound");
  EXPECT_STREQ(r["clientToken"].GetString(), "tok-2");
  EXPECT_TRUE(r["timestamp"].IsInt64());
  EXPECT_FALSE(r.HasMember("executionState"));
}

TEST_F(JobsModelTest, InvalidJsonIsRejected) {
  for (const std::string payload : {"{", "not json", "[1,2]", "\"text\""}) {
    auto r = only(send(T + "/get", payload), T + "/get/rejected");
    EXPECT_STREQ(r["code"].GetString(), "InvalidJson") << payload;
  }
  auto r = only(send(T + "/get", std::string("{\"clientToken\":\"\xff\"}")), T + "/get/rejected");
  EXPECT_STREQ(r["code"].GetString(), "InvalidJson");
}

TEST_F(JobsModelTest, DeeplyNestedPayloadsDoNotCrash) {
  // As deep as fits in the 128 KiB MQTT payload limit.
  auto r = only(send(T + "/get", std::string(kMaxMqttPayloadBytes, '[')), T + "/get/rejected");
  EXPECT_STREQ(r["code"].GetString(), "InvalidJson");
  std::string nested = "{\"x\":" + std::string(60000, '[') + std::string(60000, ']') + "}";
  (void)only(send(T + "/get", nested), T + "/get/accepted");
}

TEST_F(JobsModelTest, PayloadOverTheMqttLimitIsDroppedUnanswered) {
  create("job1");
  // A valid start-next padded to exactly 128 KiB is served ...
  auto padded = [](std::size_t size) {
    std::string head = R"({"clientToken":"c","pad":")";
    std::string tail = "\"}";
    return head + std::string(size - head.size() - tail.size(), 'x') + tail;
  };
  ASSERT_EQ(padded(kMaxMqttPayloadBytes).size(), 131072u);
  auto d = only(send(T + "/job1/get", padded(kMaxMqttPayloadBytes)), T + "/job1/get/accepted");
  EXPECT_STREQ(d["clientToken"].GetString(), "c");
  // ... one byte more is refused like AWS's broker does: no answer, no state change.
  EXPECT_TRUE(send(T + "/start-next", padded(kMaxMqttPayloadBytes + 1)).empty());
  EXPECT_TRUE(send(T + "/get", std::string(kMaxMqttPayloadBytes + 1, '[')).empty());
  auto executions = model_.executions("dev1", "job1");
  ASSERT_EQ(executions.size(), 1u);
  EXPECT_EQ(executions[0].status, ExecStatus::Queued);
  EXPECT_EQ(executions[0].version_number, 1);
  // The next request within the limit is answered as usual.
  d = only(send(T + "/start-next", padded(kMaxMqttPayloadBytes)), T + "/start-next/accepted");
  EXPECT_STREQ(d["execution"]["status"].GetString(), "IN_PROGRESS");
}

TEST_F(JobsModelTest, UnknownTopicIsInvalidTopic) {
  for (const std::string& topic :
       {T + "/foo", T + "/a/b/c", T + "/job1/delete", T + "/start-next/x/y"}) {
    auto r = only(send(topic, "{}"), topic + "/rejected");
    EXPECT_STREQ(r["code"].GetString(), "InvalidTopic") << topic;
  }
}

TEST_F(JobsModelTest, OwnPublicationsAndForeignTopicsAreIgnored) {
  create("job1");
  EXPECT_TRUE(send(T + "/get/accepted", "{}").empty());
  EXPECT_TRUE(send(T + "/job1/update/rejected", "{}").empty());
  EXPECT_TRUE(send(T + "/notify", "{}").empty());
  EXPECT_TRUE(send(T + "/notify-next", "{}").empty());
  EXPECT_TRUE(send("$aws/things/dev1/shadow/get", "{}").empty());
  EXPECT_TRUE(send("other/topic", "{}").empty());
}

TEST_F(JobsModelTest, InvalidIdsAreInvalidRequest) {
  auto r = only(send(T + "/bad.id/get"), T + "/bad.id/get/rejected");
  EXPECT_STREQ(r["code"].GetString(), "InvalidRequest");
  std::string long_id(65, 'a');
  r = only(send(T + "/" + long_id + "/update", R"({"status":"SUCCEEDED"})"),
           T + "/" + long_id + "/update/rejected");
  EXPECT_STREQ(r["code"].GetString(), "InvalidRequest");
  r = only(send("$aws/things/bad thing/jobs/get"), "$aws/things/bad thing/jobs/get/rejected");
  EXPECT_STREQ(r["code"].GetString(), "InvalidRequest");
  r = only(send(T + "/$next/update", R"({"status":"SUCCEEDED"})"), T + "/$next/update/rejected");
  EXPECT_STREQ(r["code"].GetString(), "InvalidRequest");
  r = only(send(T + "/get", R"({"clientToken":5})"), T + "/get/rejected");
  EXPECT_STREQ(r["code"].GetString(), "InvalidRequest");
}

// ---- creation, notify and notify-next ---------------------------------------------------------

TEST_F(JobsModelTest, CreateQueuesAndNotifiesEachThing) {
  JobSpec spec{"job1", R"({"a":1})", {"dev1", "dev2"}, std::nullopt, std::nullopt, true, {}, {}};
  auto out = model_.create_job(spec);
  ASSERT_TRUE(out);
  for (std::string thing : {"dev1", "dev2"}) {
    auto n = only(*out, "$aws/things/" + thing + "/jobs/notify");
    ASSERT_EQ(n["jobs"]["QUEUED"].Size(), 1u);
    EXPECT_STREQ(n["jobs"]["QUEUED"][0]["jobId"].GetString(), "job1");
    EXPECT_EQ(n["jobs"]["QUEUED"][0]["versionNumber"].GetInt64(), 1);
    EXPECT_EQ(n["jobs"]["QUEUED"][0]["executionNumber"].GetInt64(), 1);
    EXPECT_FALSE(n["jobs"].HasMember("IN_PROGRESS"));
    auto next = only(*out, "$aws/things/" + thing + "/jobs/notify-next");
    EXPECT_STREQ(next["execution"]["jobId"].GetString(), "job1");
    EXPECT_STREQ(next["execution"]["status"].GetString(), "QUEUED");
    EXPECT_EQ(next["execution"]["jobDocument"]["a"].GetInt(), 1);
    EXPECT_STREQ(next["execution"]["thingName"].GetString(), thing.c_str());
  }
  // A second job does not change the head of the queue: notify only.
  spec.job_id = "job2";
  out = model_.create_job(spec);
  ASSERT_TRUE(out);
  EXPECT_EQ(count(*out, T + "/notify"), 1);
  EXPECT_EQ(count(*out, T + "/notify-next"), 0);
  auto n = only(*out, T + "/notify");
  ASSERT_EQ(n["jobs"]["QUEUED"].Size(), 2u);
  EXPECT_STREQ(n["jobs"]["QUEUED"][1]["jobId"].GetString(), "job2");
}

TEST_F(JobsModelTest, CreateValidatesLikeAws) {
  auto bad = [&](JobSpec spec) { return !model_.create_job(spec).has_value(); };
  EXPECT_TRUE(bad({"bad id", "{}", {"dev1"}, {}, {}, true, {}, {}}));
  EXPECT_TRUE(bad({std::string(65, 'j'), "{}", {"dev1"}, {}, {}, true, {}, {}}));
  EXPECT_TRUE(bad({"job", "[1]", {"dev1"}, {}, {}, true, {}, {}}));
  EXPECT_TRUE(bad({"job", "{", {"dev1"}, {}, {}, true, {}, {}}));
  EXPECT_TRUE(bad({"job", "{}", {}, {}, {}, true, {}, {}}));
  EXPECT_TRUE(bad({"job", "{}", {"bad/thing"}, {}, {}, true, {}, {}}));
  EXPECT_TRUE(bad({"job", "{}", {std::string(129, 't')}, {}, {}, true, {}, {}}));
  EXPECT_TRUE(bad({"job", "{}", {"dev1"}, 0, {}, true, {}, {}}));
  EXPECT_TRUE(bad({"job", "{}", {"dev1"}, 10081, {}, true, {}, {}}));
  EXPECT_TRUE(bad({"job", "{}", {"dev1"}, {}, 59, true, {}, {}}));
  EXPECT_TRUE(bad({"job", "{}", {"dev1"}, {}, 3601, true, {}, {}}));
  EXPECT_TRUE(bad({"job",
                   R"({"f":"${aws:iot:s3-presigned-url:https://example.com/x}"})",
                   {"dev1"},
                   {},
                   {},
                   true,
                   {},
                   {}}));
  std::string big = R"({"pad":")" + std::string(32768, 'x') + "\"}";
  EXPECT_TRUE(bad({"job", big, {"dev1"}, {}, {}, true, {}, {}}));
  std::string fits = R"({"p":")" + std::string(32768 - 8, 'x') + "\"}";
  ASSERT_EQ(fits.size(), 32768u);
  EXPECT_FALSE(bad({"job", fits, {"dev1"}, {}, {}, true, {}, {}}));
  EXPECT_TRUE(bad({"job", "{}", {"dev1"}, {}, {}, true, {}, {}}));  // already exists
}

TEST_F(JobsModelTest, NotifyListsAtMost15InProgressFirst) {
  for (int i = 0; i < 20; ++i) {
    create("job" + std::to_string(i));
  }
  // Move job5 to IN_PROGRESS by an update.
  auto out = send(T + "/job5/update", R"({"status":"IN_PROGRESS"})");
  auto n = only(out, T + "/notify");
  ASSERT_EQ(n["jobs"]["IN_PROGRESS"].Size(), 1u);
  EXPECT_STREQ(n["jobs"]["IN_PROGRESS"][0]["jobId"].GetString(), "job5");
  ASSERT_EQ(n["jobs"]["QUEUED"].Size(), 14u);
  EXPECT_STREQ(n["jobs"]["QUEUED"][0]["jobId"].GetString(), "job0");
  // The head moved from job0 (QUEUED) to job5 (IN_PROGRESS).
  auto next = only(out, T + "/notify-next");
  EXPECT_STREQ(next["execution"]["jobId"].GetString(), "job5");
  // get lists everything.
  auto g = only(send(T + "/get"), T + "/get/accepted");
  EXPECT_EQ(g["inProgressJobs"].Size(), 1u);
  EXPECT_EQ(g["queuedJobs"].Size(), 19u);
}

// ---- start-next -----------------------------------------------------------------------------

TEST_F(JobsModelTest, StartNextWithNothingPendingHasNoExecution) {
  auto d = only(send(T + "/start-next", R"({"clientToken":"c"})"), T + "/start-next/accepted");
  EXPECT_FALSE(d.HasMember("execution"));
  EXPECT_STREQ(d["clientToken"].GetString(), "c");
}

TEST_F(JobsModelTest, StartNextStartsQueuedAndKeepsInProgressDetails) {
  create("job1");
  create("job2");
  clock_->advance(std::chrono::seconds(10));
  auto out = send(T + "/start-next", R"({"statusDetails":{"state":"downloading"}})");
  auto d = only(out, T + "/start-next/accepted");
  const auto& e = d["execution"];
  EXPECT_STREQ(e["jobId"].GetString(), "job1");
  EXPECT_STREQ(e["status"].GetString(), "IN_PROGRESS");
  EXPECT_STREQ(e["statusDetails"]["state"].GetString(), "downloading");
  EXPECT_EQ(e["versionNumber"].GetInt64(), 2);
  EXPECT_EQ(e["startedAt"].GetInt64(), e["queuedAt"].GetInt64() + 10);
  EXPECT_TRUE(e["jobDocument"].IsObject());
  EXPECT_EQ(count(out, T + "/notify"), 1);
  EXPECT_EQ(count(out, T + "/notify-next"), 0);  // head unchanged
  // Again: the IN_PROGRESS execution is returned with its own statusDetails.
  out = send(T + "/start-next", R"({"statusDetails":{"state":"other"}})");
  d = only(out, T + "/start-next/accepted");
  EXPECT_STREQ(d["execution"]["jobId"].GetString(), "job1");
  EXPECT_STREQ(d["execution"]["statusDetails"]["state"].GetString(), "downloading");
  EXPECT_EQ(d["execution"]["versionNumber"].GetInt64(), 2);
  EXPECT_EQ(count(out, T + "/notify"), 0);
}

TEST_F(JobsModelTest, StartNextValidatesItsFields) {
  create("job1");
  for (const std::string payload :
       {R"({"stepTimeoutInMinutes":0})", R"({"stepTimeoutInMinutes":10081})",
        R"({"stepTimeoutInMinutes":-1})", R"({"stepTimeoutInMinutes":"5"})",
        R"({"statusDetails":{"k":1}})", R"({"statusDetails":"x"})"}) {
    auto r = only(send(T + "/start-next", payload), T + "/start-next/rejected");
    EXPECT_STREQ(r["code"].GetString(), "InvalidRequest") << payload;
  }
  EXPECT_STREQ(model_.executions("dev1")[0].status == ExecStatus::Queued ? "q" : "x", "q");
}

// ---- describe ---------------------------------------------------------------------------------

TEST_F(JobsModelTest, DescribeIncludesDocumentByDefault) {
  create("job1");
  auto d = only(send(T + "/job1/get"), T + "/job1/get/accepted");
  EXPECT_STREQ(d["execution"]["jobDocument"]["action"].GetString(), "update");
  EXPECT_STREQ(d["execution"]["status"].GetString(), "QUEUED");
  EXPECT_FALSE(d["execution"].HasMember("startedAt"));
  d = only(send(T + "/job1/get", R"({"includeJobDocument":false})"), T + "/job1/get/accepted");
  EXPECT_FALSE(d["execution"].HasMember("jobDocument"));
  auto r = only(send(T + "/job1/get", R"({"executionNumber":2})"), T + "/job1/get/rejected");
  EXPECT_STREQ(r["code"].GetString(), "ResourceNotFound");
  r = only(send(T + "/job9/get"), T + "/job9/get/rejected");
  EXPECT_STREQ(r["code"].GetString(), "ResourceNotFound");
  r = only(send("$aws/things/dev2/jobs/job1/get"), "$aws/things/dev2/jobs/job1/get/rejected");
  EXPECT_STREQ(r["code"].GetString(), "ResourceNotFound");
  r = only(send(T + "/job1/get", R"({"includeJobDocument":"yes"})"), T + "/job1/get/rejected");
  EXPECT_STREQ(r["code"].GetString(), "InvalidRequest");
}

TEST_F(JobsModelTest, DescribeNextFollowsTheQueue) {
  auto d = only(send(T + "/$next/get"), T + "/$next/get/accepted");
  EXPECT_FALSE(d.HasMember("execution"));
  create("job1");
  create("job2");
  (void)send(T + "/job2/update", R"({"status":"IN_PROGRESS"})");
  d = only(send(T + "/$next/get"), T + "/$next/get/accepted");
  EXPECT_STREQ(d["execution"]["jobId"].GetString(), "job2");
}

TEST_F(JobsModelTest, DescribeOfTerminalExecutionAnswersOrRejectsByOption) {
  create("job1");
  (void)send(T + "/job1/update", R"({"status":"SUCCEEDED"})");
  auto d = only(send(T + "/job1/get"), T + "/job1/get/accepted");
  EXPECT_STREQ(d["execution"]["status"].GetString(), "SUCCEEDED");
  auto options = model_.options();
  options.terminal_state_reached_on_describe = true;
  model_.set_options(options);
  auto r = only(send(T + "/job1/get"), T + "/job1/get/rejected");
  EXPECT_STREQ(r["code"].GetString(), "TerminalStateReached");
}

// ---- update -----------------------------------------------------------------------------------

TEST_F(JobsModelTest, UpdateRunsTheStateMachine) {
  create("job1");
  create("job2");
  auto out = send(
      T + "/job1/update",
      R"({"status":"IN_PROGRESS","statusDetails":{"state":"a"},"includeJobExecutionState":true})");
  auto d = only(out, T + "/job1/update/accepted");
  EXPECT_STREQ(d["executionState"]["status"].GetString(), "IN_PROGRESS");
  EXPECT_EQ(d["executionState"]["versionNumber"].GetInt64(), 2);
  EXPECT_FALSE(d.HasMember("jobDocument"));
  EXPECT_EQ(count(out, T + "/notify"), 1);
  EXPECT_EQ(count(out, T + "/notify-next"), 0);
  // IN_PROGRESS -> IN_PROGRESS: statusDetails kept when left out; no notification.
  out =
      send(T + "/job1/update",
           R"({"status":"IN_PROGRESS","includeJobExecutionState":true,"includeJobDocument":true})");
  d = only(out, T + "/job1/update/accepted");
  EXPECT_STREQ(d["executionState"]["statusDetails"]["state"].GetString(), "a");
  EXPECT_EQ(d["executionState"]["versionNumber"].GetInt64(), 3);
  EXPECT_STREQ(d["jobDocument"]["action"].GetString(), "update");
  EXPECT_EQ(out.size(), 1u);
  // Sending statusDetails replaces the whole map.
  d = only(
      send(T + "/job1/update",
           R"({"status":"IN_PROGRESS","statusDetails":{"b":"2"},"includeJobExecutionState":true})"),
      T + "/job1/update/accepted");
  EXPECT_FALSE(d["executionState"]["statusDetails"].HasMember("state"));
  EXPECT_STREQ(d["executionState"]["statusDetails"]["b"].GetString(), "2");
  // Wrong expectedVersion.
  auto r = only(send(T + "/job1/update", R"({"status":"SUCCEEDED","expectedVersion":3})"),
                T + "/job1/update/rejected");
  EXPECT_STREQ(r["code"].GetString(), "VersionMismatch");
  EXPECT_EQ(r["executionState"]["versionNumber"].GetInt64(), 4);
  EXPECT_STREQ(r["executionState"]["status"].GetString(), "IN_PROGRESS");
  // Terminal: notify + notify-next with the next job.
  out = send(T + "/job1/update", R"({"status":"SUCCEEDED","expectedVersion":4})");
  (void)only(out, T + "/job1/update/accepted");
  auto n = only(out, T + "/notify");
  EXPECT_FALSE(n["jobs"].HasMember("IN_PROGRESS"));
  EXPECT_EQ(n["jobs"]["QUEUED"].Size(), 1u);
  auto next = only(out, T + "/notify-next");
  EXPECT_STREQ(next["execution"]["jobId"].GetString(), "job2");
  // Leaving a terminal state.
  r = only(send(T + "/job1/update", R"({"status":"IN_PROGRESS"})"), T + "/job1/update/rejected");
  EXPECT_STREQ(r["code"].GetString(), "InvalidStateTransition");
  EXPECT_STREQ(r["executionState"]["status"].GetString(), "SUCCEEDED");
  // Last one: notify {} and notify-next with no execution.
  out = send(T + "/job2/update", R"({"status":"REJECTED"})");
  n = only(out, T + "/notify");
  EXPECT_EQ(n["jobs"].MemberCount(), 0u);
  next = only(out, T + "/notify-next");
  EXPECT_FALSE(next.HasMember("execution"));
  EXPECT_TRUE(next["timestamp"].IsInt64());
  EXPECT_EQ(model_.job("job1")->status, "COMPLETED");
  // The history holds every change.
  auto e = model_.executions("dev1", "job1").at(0);
  ASSERT_EQ(e.history.size(), 5u);
  EXPECT_EQ(e.history.back().status, ExecStatus::Succeeded);
}

TEST_F(JobsModelTest, StaleVersionOnATerminalExecutionByOption) {
  create("job1");
  (void)only(send(T + "/job1/update", R"({"status":"IN_PROGRESS","statusDetails":{"state":"a"}})"),
             T + "/job1/update/accepted");
  ASSERT_TRUE(model_.cancel_job("job1", true));
  // Default: the terminal state is checked first.
  const std::string stale = R"({"status":"IN_PROGRESS","expectedVersion":2,"clientToken":"c"})";
  auto r = only(send(T + "/job1/update", stale), T + "/job1/update/rejected");
  EXPECT_STREQ(r["code"].GetString(), "InvalidStateTransition");
  auto options = model_.options();
  options.version_mismatch_before_terminal = true;
  model_.set_options(options);
  r = only(send(T + "/job1/update", stale), T + "/job1/update/rejected");
  EXPECT_STREQ(r["code"].GetString(), "VersionMismatch");
  EXPECT_STREQ(r["executionState"]["status"].GetString(), "CANCELED");
  EXPECT_STREQ(r["executionState"]["statusDetails"]["state"].GetString(), "a");
  EXPECT_EQ(r["executionState"]["versionNumber"].GetInt64(), 3);
  // The right version still meets the terminal state.
  r = only(send(T + "/job1/update", R"({"status":"IN_PROGRESS","expectedVersion":3})"),
           T + "/job1/update/rejected");
  EXPECT_STREQ(r["code"].GetString(), "InvalidStateTransition");
}

TEST_F(JobsModelTest, UpdateAllowsQueuedToTerminal) {
  for (std::string status : {"SUCCEEDED", "FAILED", "REJECTED"}) {
    create("j" + status);
    auto out = send(T + "/j" + status + "/update", R"({"status":")" + status + R"("})");
    (void)only(out, T + "/j" + status + "/update/accepted");
  }
}

TEST_F(JobsModelTest, UpdateRejectsBadRequests) {
  create("job1");
  const std::vector<std::string> bad = {
      R"({})",
      R"({"status":"QUEUED"})",
      R"({"status":"TIMED_OUT"})",
      R"({"status":"CANCELED"})",
      R"({"status":"done"})",
      R"({"status":5})",
      R"({"status":"IN_PROGRESS","expectedVersion":"1"})",
      R"({"status":"IN_PROGRESS","stepTimeoutInMinutes":0})",
      R"({"status":"IN_PROGRESS","stepTimeoutInMinutes":10081})",
      R"({"status":"IN_PROGRESS","includeJobDocument":1})",
      R"({"status":"IN_PROGRESS","statusDetails":{"":"v"}})",
      R"({"status":"IN_PROGRESS","statusDetails":{"bad key":"v"}})",
      R"({"status":"IN_PROGRESS","statusDetails":{"k":""}})",
      R"({"status":"IN_PROGRESS","statusDetails":{"k":"a\nb"}})",
      // Every category C character, not only controls: U+200B (Cf), U+FEFF (Cf), U+E000 (Co),
      // and 1023 characters + an astral one (1025 UTF-16 units). Invalid UTF-8 is InvalidJson.
      "{\"status\":\"IN_PROGRESS\",\"statusDetails\":{\"k\":\"a\xE2\x80\x8B"
      "b\"}}",
      "{\"status\":\"IN_PROGRESS\",\"statusDetails\":{\"k\":\"\xEF\xBB\xBF"
      "a\"}}",
      "{\"status\":\"IN_PROGRESS\",\"statusDetails\":{\"k\":\"\xEE\x80\x80\"}}",
      R"({"status":"IN_PROGRESS","statusDetails":{"k":")" + std::string(1023, 'v') +
          "\xF0\x9F\x98\x80\"}}",
      R"({"status":"IN_PROGRESS","statusDetails":{"k":{"x":"y"}}})",
      R"({"status":"IN_PROGRESS","statusDetails":{"k":")" + std::string(1025, 'v') + "\"}}",
      R"({"status":"IN_PROGRESS","statusDetails":{")" + std::string(129, 'k') + "\":\"v\"}}",
  };
  for (const auto& payload : bad) {
    auto r = only(send(T + "/job1/update", payload), T + "/job1/update/rejected");
    EXPECT_STREQ(r["code"].GetString(), "InvalidRequest") << payload;
  }
  // Limits are inclusive.
  std::string ok = R"({"status":"IN_PROGRESS","statusDetails":{")" + std::string(128, 'k') +
                   "\":\"" + std::string(1024, 'v') + "\",\"a:b_c-d\":\"ü\"}}";
  (void)only(send(T + "/job1/update", ok), T + "/job1/update/accepted");
  auto r = only(send(T + "/job1/update", R"({"status":"SUCCEEDED","executionNumber":7})"),
                T + "/job1/update/rejected");
  EXPECT_STREQ(r["code"].GetString(), "ResourceNotFound");
}

// ---- timers -----------------------------------------------------------------------------------

TEST_F(JobsModelTest, StepTimeoutTimesOut) {
  create("job1");
  create("job2");
  (void)send(T + "/start-next", R"({"stepTimeoutInMinutes":2})");
  EXPECT_TRUE(model_.advance_clock(119).empty());
  auto out = model_.advance_clock(1);
  auto n = only(out, T + "/notify");
  EXPECT_FALSE(n["jobs"].HasMember("IN_PROGRESS"));
  auto next = only(out, T + "/notify-next");
  EXPECT_STREQ(next["execution"]["jobId"].GetString(), "job2");
  auto d = only(send(T + "/job1/get"), T + "/job1/get/accepted");
  EXPECT_STREQ(d["execution"]["status"].GetString(), "TIMED_OUT");
  auto r = only(send(T + "/job1/update", R"({"status":"SUCCEEDED"})"), T + "/job1/update/rejected");
  EXPECT_STREQ(r["code"].GetString(), "InvalidStateTransition");
}

TEST_F(JobsModelTest, StepTimeoutIsReplacedOrClearedByUpdate) {
  create("job1");
  (void)send(T + "/start-next", R"({"stepTimeoutInMinutes":1})");
  clock_->advance(std::chrono::seconds(50));
  (void)send(T + "/job1/update", R"({"status":"IN_PROGRESS","stepTimeoutInMinutes":5})");
  EXPECT_TRUE(model_.advance_clock(60).empty());                  // the old 1-minute timer is gone
  (void)send(T + "/job1/update", R"({"status":"IN_PROGRESS"})");  // left out: kept
  EXPECT_TRUE(model_.advance_clock(200).empty());
  (void)send(T + "/job1/update", R"({"status":"IN_PROGRESS","stepTimeoutInMinutes":-1})");
  EXPECT_TRUE(model_.advance_clock(3600).empty());
  EXPECT_EQ(model_.executions("dev1", "job1")[0].status, ExecStatus::InProgress);
  (void)send(T + "/job1/update", R"({"status":"IN_PROGRESS","stepTimeoutInMinutes":1})");
  EXPECT_FALSE(model_.advance_clock(60).empty());
  EXPECT_EQ(model_.executions("dev1", "job1")[0].status, ExecStatus::TimedOut);
  EXPECT_EQ(model_.executions("dev1", "job1")[0].history.back().cause, "step-timeout");
}

TEST_F(JobsModelTest, InProgressTimeoutIsNotExtendedByStepTimer) {
  JobSpec spec{"job1", "{}", {"dev1"}, 2, std::nullopt, true, {}, {}};
  ASSERT_TRUE(model_.create_job(spec));
  (void)send(T + "/start-next", R"({"stepTimeoutInMinutes":60})");
  EXPECT_TRUE(model_.advance_clock(100).empty());
  (void)send(T + "/job1/update", R"({"status":"IN_PROGRESS","stepTimeoutInMinutes":60})");
  auto out = model_.advance_clock(20);
  EXPECT_EQ(count(out, T + "/notify"), 1);
  auto e = model_.executions("dev1", "job1")[0];
  EXPECT_EQ(e.status, ExecStatus::TimedOut);
  EXPECT_EQ(e.history.back().cause, "in-progress-timeout");
  // A QUEUED execution does not time out.
  spec.job_id = "job2";
  ASSERT_TRUE(model_.create_job(spec));
  EXPECT_TRUE(model_.advance_clock(100000).empty());
}

TEST_F(JobsModelTest, TimersFireOnTheNextRequestToo) {
  create("job1");
  (void)send(T + "/start-next", R"({"stepTimeoutInMinutes":1})");
  clock_->advance(std::chrono::seconds(61));  // no tick
  auto out = send(T + "/job1/get");
  EXPECT_EQ(count(out, T + "/notify"), 1);
  auto d = only(out, T + "/job1/get/accepted");
  EXPECT_STREQ(d["execution"]["status"].GetString(), "TIMED_OUT");
}

// ---- cancel and delete --------------------------------------------------------------------

TEST_F(JobsModelTest, CancelWithoutForceLeavesInProgress) {
  create("job1", {"dev1", "dev2"});
  (void)send(T + "/start-next");
  auto out = model_.cancel_job("job1", false);
  ASSERT_TRUE(out);
  EXPECT_EQ(count(*out, T + "/notify"), 0);
  auto n = only(*out, "$aws/things/dev2/jobs/notify");
  EXPECT_EQ(n["jobs"].MemberCount(), 0u);
  (void)only(*out, "$aws/things/dev2/jobs/notify-next");
  EXPECT_EQ(model_.executions("dev2", "job1")[0].status, ExecStatus::Canceled);
  EXPECT_EQ(model_.executions("dev1", "job1")[0].status, ExecStatus::InProgress);
  (void)only(send(T + "/job1/update", R"({"status":"SUCCEEDED"})"), T + "/job1/update/accepted");
  EXPECT_EQ(model_.job("job1")->status, "CANCELED");
}

TEST_F(JobsModelTest, ForcedCancelStopsInProgress) {
  create("job1");
  create("job2");
  (void)send(T + "/start-next");
  auto out = model_.cancel_job("job1", true);
  ASSERT_TRUE(out);
  auto n = only(*out, T + "/notify");
  EXPECT_FALSE(n["jobs"].HasMember("IN_PROGRESS"));
  auto next = only(*out, T + "/notify-next");
  EXPECT_STREQ(next["execution"]["jobId"].GetString(), "job2");
  auto r = only(send(T + "/job1/update", R"({"status":"SUCCEEDED"})"), T + "/job1/update/rejected");
  EXPECT_STREQ(r["code"].GetString(), "InvalidStateTransition");
  EXPECT_STREQ(r["executionState"]["status"].GetString(), "CANCELED");
  EXPECT_FALSE(model_.cancel_job("nojob", true));
}

TEST_F(JobsModelTest, DeleteExecutionNeedsForceUnlessTerminal) {
  create("job1");
  (void)send(T + "/start-next");
  EXPECT_FALSE(model_.delete_execution("dev1", "job1", false));
  auto out = model_.delete_execution("dev1", "job1", true);
  ASSERT_TRUE(out);
  auto n = only(*out, T + "/notify");
  EXPECT_EQ(n["jobs"].MemberCount(), 0u);
  auto next = only(*out, T + "/notify-next");
  EXPECT_FALSE(next.HasMember("execution"));
  auto r = only(send(T + "/job1/get"), T + "/job1/get/rejected");
  EXPECT_STREQ(r["code"].GetString(), "ResourceNotFound");
  r = only(send(T + "/job1/update", R"({"status":"SUCCEEDED"})"), T + "/job1/update/rejected");
  EXPECT_STREQ(r["code"].GetString(), "ResourceNotFound");
  EXPECT_FALSE(model_.delete_execution("dev1", "job1", true));
  // A terminal execution is deleted without force and without notifications.
  create("job2");
  (void)send(T + "/job2/update", R"({"status":"FAILED"})");
  out = model_.delete_execution("dev1", "job2", false);
  ASSERT_TRUE(out);
  EXPECT_TRUE(out->empty());
  EXPECT_TRUE(model_.executions("dev1", "job2")[0].deleted);
}

TEST_F(JobsModelTest, RemovingAnExecutionBehindTheHeadSendsNotifyOnly) {
  create("job1");
  create("job2");
  create("job3");
  auto out = model_.delete_execution("dev1", "job2", true);
  ASSERT_TRUE(out);
  auto n = only(*out, T + "/notify");
  ASSERT_EQ(n["jobs"]["QUEUED"].Size(), 2u);
  EXPECT_STREQ(n["jobs"]["QUEUED"][1]["jobId"].GetString(), "job3");
  EXPECT_EQ(count(*out, T + "/notify-next"), 0);
  out = model_.cancel_job("job3", false);
  ASSERT_TRUE(out);
  EXPECT_EQ(count(*out, T + "/notify"), 1);
  EXPECT_EQ(count(*out, T + "/notify-next"), 0);
  // Cancelling the head moves it.
  out = model_.cancel_job("job1", false);
  ASSERT_TRUE(out);
  auto next = only(*out, T + "/notify-next");
  EXPECT_FALSE(next.HasMember("execution"));
}

TEST_F(JobsModelTest, ThingsAreIndependent) {
  create("job1", {"dev1", "dev2"});
  auto out = send(T + "/job1/update", R"({"status":"SUCCEEDED"})");
  for (const auto& m : out) {
    EXPECT_EQ(m.topic.rfind(T + "/", 0), 0u) << m.topic;
  }
  auto d = only(send("$aws/things/dev2/jobs/job1/get"), "$aws/things/dev2/jobs/job1/get/accepted");
  EXPECT_STREQ(d["execution"]["status"].GetString(), "QUEUED");
  EXPECT_EQ(model_.job("job1")->status, "IN_PROGRESS");
  (void)send("$aws/things/dev2/jobs/job1/update", R"({"status":"FAILED"})");
  EXPECT_EQ(model_.job("job1")->status, "COMPLETED");
  EXPECT_FALSE(model_.cancel_job("job1", false));  // a completed job cannot be cancelled
}

// ---- pre-signed URLs ----------------------------------------------------------------------

TEST_F(JobsModelTest, ParsesTheThreeS3UrlForms) {
  auto a = parse_s3_url("https://s3.eu-west-1.amazonaws.com/bucket/dir/fw%20a.raucb");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->bucket, "bucket");
  EXPECT_EQ(a->key, "dir/fw a.raucb");
  auto b = parse_s3_url("https://s3.amazonaws.com/bkt/fw.bin");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->bucket, "bkt");
  EXPECT_EQ(b->key, "fw.bin");
  auto c = parse_s3_url("https://my.bucket.s3.us-east-1.amazonaws.com/k/e/y");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->bucket, "my.bucket");
  EXPECT_EQ(c->key, "k/e/y");
  auto d = parse_s3_url("https://bucket.s3.amazonaws.com/fw.raucb");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->bucket, "bucket");
  for (std::string bad :
       {"http://s3.amazonaws.com/b/k", "https://s3.amazonaws.com/b", "https://example.com/b/k",
        "https://s3.amazonaws.com/", "https://bucket.s3.amazonaws.com/", "not a url"}) {
    EXPECT_FALSE(parse_s3_url(bad)) << bad;
  }
}

TEST_F(JobsModelTest, PlaceholdersAreReplacedOnEveryFetch) {
  JobSpec spec{
      "job1",
      R"({"file":"${aws:iot:s3-presigned-url:https://s3.amazonaws.com/bkt/fw.bin}",)"
      R"("other":"${aws:iot:s3-presigned-url:https://bkt2.s3.eu-west-1.amazonaws.com/x}"})",
      {"dev1"},
      std::nullopt,
      120,
      true,
      {},
      {}};
  auto out = model_.create_job(spec);
  ASSERT_TRUE(out);
  auto next = only(*out, T + "/notify-next");
  std::string u0 = next["execution"]["jobDocument"]["file"].GetString();
  EXPECT_EQ(u0.rfind("https://127.0.0.1:1/bkt/fw.bin?X-Amz-Expires=120&n=", 0), 0u) << u0;
  EXPECT_EQ(std::string(next["execution"]["jobDocument"]["other"].GetString())
                .rfind("https://127.0.0.1:1/bkt2/x?", 0),
            0u);
  auto d1 = only(send(T + "/job1/get"), T + "/job1/get/accepted");
  auto d2 = only(send(T + "/start-next"), T + "/start-next/accepted");
  std::string u1 = d1["execution"]["jobDocument"]["file"].GetString();
  std::string u2 = d2["execution"]["jobDocument"]["file"].GetString();
  EXPECT_NE(u0, u1);
  EXPECT_NE(u1, u2);
  // Without a pre-signed URL configuration the placeholder stays text.
  spec.job_id = "job2";
  spec.presign = false;
  ASSERT_TRUE(model_.create_job(spec));
  auto d3 = only(send(T + "/job2/get"), T + "/job2/get/accepted");
  EXPECT_STREQ(d3["execution"]["jobDocument"]["file"].GetString(),
               "${aws:iot:s3-presigned-url:https://s3.amazonaws.com/bkt/fw.bin}");
}

TEST_F(JobsModelTest, DefaultUrlExpiryComesFromOptions) {
  create("job1", {"dev1"},
         R"({"file":"${aws:iot:s3-presigned-url:https://s3.amazonaws.com/b/k}"})");
  auto d = only(send(T + "/job1/get"), T + "/job1/get/accepted");
  EXPECT_NE(
      std::string(d["execution"]["jobDocument"]["file"].GetString()).find("X-Amz-Expires=3600"),
      std::string::npos);
}

// ---- fault knobs --------------------------------------------------------------------------

TEST_F(JobsModelTest, FaultsDropDuplicateAndDelay) {
  Faults f;
  f.responses.drop_next = 1;
  f.notifications.duplicate_next = 1;
  f.notifications.delay_ms = 250;
  model_.set_faults(f);
  EXPECT_TRUE(send(T + "/get").empty());   // dropped
  EXPECT_EQ(send(T + "/get").size(), 1u);  // next one passes
  create("job1");                          // notify (twice) + notify-next
  auto out = model_.cancel_job("job1", false);
  ASSERT_TRUE(out);
  EXPECT_EQ(count(*out, T + "/notify"), 1);
  for (const auto& m : *out) {
    EXPECT_EQ(m.delay_ms, 250);
  }
  f = {};
  f.notifications.drop_next = 2;
  model_.set_faults(f);
  create("job2");
  EXPECT_EQ(model_.faults().notifications.drop_next, 0);
}

TEST_F(JobsModelTest, DuplicatedNotificationIsSentTwice) {
  Faults f;
  f.notifications.duplicate_next = 1;
  model_.set_faults(f);
  JobSpec spec{"job1", "{}", {"dev1"}, std::nullopt, std::nullopt, true, {}, {}};
  auto out = model_.create_job(spec);
  ASSERT_TRUE(out);
  EXPECT_EQ(count(*out, T + "/notify"), 2);
  EXPECT_EQ(count(*out, T + "/notify-next"), 1);
}

TEST_F(JobsModelTest, NextUpdatesAreThrottledOrFail) {
  create("job1");
  Faults f;
  f.reject_updates_next = 2;
  f.reject_updates_code = "RequestThrottled";
  model_.set_faults(f);
  for (int i = 0; i < 2; ++i) {
    auto r = only(send(T + "/job1/update", R"({"status":"IN_PROGRESS","clientToken":"t"})"),
                  T + "/job1/update/rejected");
    EXPECT_STREQ(r["code"].GetString(), "RequestThrottled");
    EXPECT_STREQ(r["clientToken"].GetString(), "t");
  }
  (void)only(send(T + "/job1/update", R"({"status":"IN_PROGRESS"})"), T + "/job1/update/accepted");
  f.reject_updates_next = 1;
  f.reject_updates_code = "InternalError";
  model_.set_faults(f);
  auto r = only(send(T + "/job1/update", R"({"status":"SUCCEEDED"})"), T + "/job1/update/rejected");
  EXPECT_STREQ(r["code"].GetString(), "InternalError");
  EXPECT_EQ(model_.executions("dev1", "job1")[0].status, ExecStatus::InProgress);
}

// ---- state ------------------------------------------------------------------------------------

TEST_F(JobsModelTest, SaveAndLoadRoundTrip) {
  create("job1", {"dev1", "dev2"});
  create("job2");
  (void)send(T + "/start-next", R"({"statusDetails":{"s":"x"},"stepTimeoutInMinutes":3})");
  ASSERT_TRUE(model_.delete_execution("dev2", "job1", true));
  std::string saved = model_.save();
  JobsModel other(clock_, nullptr);
  ASSERT_TRUE(other.load(saved));
  EXPECT_EQ(other.save(), saved);
  auto e = other.executions("dev1", "job1").at(0);
  EXPECT_EQ(e.status, ExecStatus::InProgress);
  EXPECT_EQ(e.status_details.at("s"), "x");
  EXPECT_TRUE(other.executions("dev2", "job1").at(0).deleted);
  EXPECT_FALSE(other.advance_clock(180).empty());  // the step timer survived
  EXPECT_FALSE(other.load("{"));
  EXPECT_FALSE(other.load("[]"));
  EXPECT_FALSE(
      other.load(R"({"jobs":[],"executions":[{"jobId":"x","thingName":"t","status":"QUEUED"}]})"));
}

// ---- retries (jobExecutionsRetryConfig) ------------------------------------------------------

class JobsModelRetryTest : public JobsModelTest {
 protected:
  void create_retried(RetryConfig::FailureType type, int retries,
                      std::optional<int> in_progress_timeout = std::nullopt) {
    JobSpec spec;
    spec.job_id = "job1";
    spec.document = R"({"version":"1.0"})";
    spec.things = {"dev1"};
    spec.in_progress_timeout_minutes = in_progress_timeout;
    spec.retry = RetryConfig{{{type, retries}}};
    auto r = model_.create_job(spec);
    ASSERT_TRUE(r) << r.error().message();
  }

  std::vector<Execution> executions() const { return model_.executions("dev1", "job1"); }
};

TEST_F(JobsModelRetryTest, AFailedExecutionIsFollowedByTheNextUntilTheRetriesAreUsed) {
  create_retried(RetryConfig::FailureType::Failed, 1);
  auto out = send(T + "/job1/update", R"({"status":"FAILED"})");
  ASSERT_EQ(count(out, T + "/job1/update/accepted"), 1);
  auto notify = only(out, T + "/notify");
  ASSERT_TRUE(notify["jobs"].HasMember("QUEUED")) << "the retry is announced";
  EXPECT_EQ(notify["jobs"]["QUEUED"][0]["executionNumber"].GetInt64(), 2);
  EXPECT_EQ(notify["jobs"]["QUEUED"][0]["versionNumber"].GetInt64(), 1);
  auto list = executions();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].status, ExecStatus::Failed);
  EXPECT_EQ(list[1].status, ExecStatus::Queued);
  EXPECT_EQ(list[1].execution_number, 2);
  EXPECT_EQ(list[1].history.front().cause, "retry");
  EXPECT_EQ(model_.job("job1")->status, "IN_PROGRESS") << "not completed while a retry is queued";

  // Requests without executionNumber are about execution 2; its failure has no retry left.
  out = send(T + "/job1/update", R"({"status":"FAILED","expectedVersion":1})");
  ASSERT_EQ(count(out, T + "/job1/update/accepted"), 1);
  EXPECT_EQ(executions().size(), 2u);
  EXPECT_EQ(model_.job("job1")->status, "COMPLETED");
}

TEST_F(JobsModelRetryTest, OnlyTheConfiguredFailureTypeIsRetried) {
  create_retried(RetryConfig::FailureType::TimedOut, 3);
  (void)send(T + "/job1/update", R"({"status":"FAILED"})");
  EXPECT_EQ(executions().size(), 1u) << "a FAILED execution is not retried for TIMED_OUT";
}

TEST_F(JobsModelRetryTest, ATimedOutExecutionIsRetried) {
  create_retried(RetryConfig::FailureType::All, 2, 10);
  (void)send(T + "/job1/update", R"({"status":"IN_PROGRESS"})");
  auto out = model_.advance_clock(11 * 60);
  EXPECT_EQ(count(out, T + "/notify"), 1);
  auto list = executions();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].status, ExecStatus::TimedOut);
  EXPECT_EQ(list[1].status, ExecStatus::Queued);
  EXPECT_EQ(list[1].execution_number, 2);
}

TEST_F(JobsModelRetryTest, ACanceledJobIsNotRetried) {
  create_retried(RetryConfig::FailureType::All, 2, 10);
  (void)send(T + "/job1/update", R"({"status":"IN_PROGRESS"})");
  ASSERT_TRUE(model_.cancel_job("job1", true));
  (void)model_.advance_clock(11 * 60);
  EXPECT_EQ(executions().size(), 1u);
}

TEST_F(JobsModelRetryTest, AnEarlierExecutionIsDescribedAndCannotBeUpdated) {
  create_retried(RetryConfig::FailureType::Failed, 1);
  (void)send(T + "/job1/update", R"({"status":"FAILED","statusDetails":{"state":"one"}})");
  auto d = only(send(T + "/job1/get", R"({"executionNumber":1})"), T + "/job1/get/accepted");
  EXPECT_STREQ(d["execution"]["status"].GetString(), "FAILED");
  EXPECT_EQ(d["execution"]["executionNumber"].GetInt64(), 1);
  d = only(send(T + "/job1/get", "{}"), T + "/job1/get/accepted");
  EXPECT_STREQ(d["execution"]["status"].GetString(), "QUEUED");
  EXPECT_EQ(d["execution"]["executionNumber"].GetInt64(), 2);
  auto r = only(send(T + "/job1/update", R"({"status":"IN_PROGRESS","executionNumber":1})"),
                T + "/job1/update/rejected");
  EXPECT_STREQ(r["code"].GetString(), "InvalidStateTransition");
  EXPECT_STREQ(r["executionState"]["status"].GetString(), "FAILED");
  EXPECT_EQ(executions()[1].status, ExecStatus::Queued) << "execution 2 untouched";
  r = only(send(T + "/job1/get", R"({"executionNumber":3})"), T + "/job1/get/rejected");
  EXPECT_STREQ(r["code"].GetString(), "ResourceNotFound");
}

TEST_F(JobsModelRetryTest, OptionsForgetEarlierExecutionsOrIgnoreTheNumber) {
  create_retried(RetryConfig::FailureType::Failed, 1);
  (void)send(T + "/job1/update", R"({"status":"FAILED"})");
  ModelOptions o;
  o.forget_earlier_executions = true;
  model_.set_options(o);
  auto r = only(send(T + "/job1/get", R"({"executionNumber":1})"), T + "/job1/get/rejected");
  EXPECT_STREQ(r["code"].GetString(), "ResourceNotFound");
  r = only(send(T + "/job1/update", R"({"status":"IN_PROGRESS","executionNumber":1})"),
           T + "/job1/update/rejected");
  EXPECT_STREQ(r["code"].GetString(), "ResourceNotFound");
  o = {};
  o.describe_ignores_execution_number = true;
  model_.set_options(o);
  auto d = only(send(T + "/job1/get", R"({"executionNumber":1})"), T + "/job1/get/accepted");
  EXPECT_EQ(d["execution"]["executionNumber"].GetInt64(), 2);
}

TEST_F(JobsModelRetryTest, RetryConfigurationSurvivesSaveAndLoad) {
  create_retried(RetryConfig::FailureType::Failed, 1);
  JobsModel other(clock_, nullptr);
  ASSERT_TRUE(other.load(model_.save()));
  ASSERT_TRUE(other.job("job1")->retry);
  (void)other.handle(T + "/job1/update", R"({"status":"FAILED"})");
  EXPECT_EQ(other.executions("dev1", "job1").size(), 2u);
}

TEST_F(JobsModelRetryTest, RetriesAboveTenAreRefused) {
  JobSpec spec;
  spec.job_id = "job1";
  spec.document = "{}";
  spec.things = {"dev1"};
  spec.retry = RetryConfig{{{RetryConfig::FailureType::All, 11}}};
  EXPECT_FALSE(model_.create_job(spec));
}

TEST_F(JobsModelTest, QueuedExecutionsAreListedInQueuedAtOrder) {
  for (auto [id, at] : {std::pair{"late", 3000LL}, std::pair{"early", 1000LL}}) {
    JobSpec spec;
    spec.job_id = id;
    spec.document = "{}";
    spec.things = {"dev1"};
    spec.queued_at = at;
    ASSERT_TRUE(model_.create_job(spec));
  }
  auto g = only(send(T + "/get", "{}"), T + "/get/accepted");
  ASSERT_EQ(g["queuedJobs"].Size(), 2u);
  EXPECT_STREQ(g["queuedJobs"][0]["jobId"].GetString(), "early");
  EXPECT_EQ(g["queuedJobs"][0]["queuedAt"].GetInt64(), 1000);
  auto n = parse(model_.notify_message("dev1").payload);
  EXPECT_STREQ(n["jobs"]["QUEUED"][0]["jobId"].GetString(), "early");
}

}  // namespace
}  // namespace upparat::emulator
