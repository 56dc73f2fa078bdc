// The daemon's update path (jobs::UpdateQueue, its requests and its reading of the answers)
// against the emulator's AWS IoT Jobs model (emulator::JobsModel), with the network's faults
// played by the test: a QoS 1 request delivered twice, an answer lost, a late copy of an older
// request, a forced cancel, another client's change. The cloud's view (versionNumber, status
// history, statusDetails) is the model's.

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "emulator/jobs_model.hpp"
#include "jobs/messages.hpp"
#include "jobs/topics.hpp"
#include "jobs/update_queue.hpp"

namespace upparat::jobs {
namespace {

using namespace std::chrono_literals;

const std::string kThing = "dev1";
const std::string kJob = "upparat_1";

class UpdateQueueOnEmulator : public ::testing::Test {
 protected:
  UpdateQueueOnEmulator()
      : model_(std::make_shared<emulator::Clock>(),
               [](const std::string& b, const std::string& k, int) {
                 return "https://127.0.0.1:1/" + b + "/" + k;
               }) {}

  void SetUp() override {
    emulator::JobSpec spec;
    spec.job_id = kJob;
    spec.document = R"({"version":"2.0","file":"https://h/f"})";
    spec.things = {kThing};
    ASSERT_TRUE(model_.create_job(spec));
    // The daemon describes the job it picked: the starting point of expectedVersion.
    auto answers =
        model_.handle(describe_topic(kThing, kJob), build_describe_request("d", std::int64_t{1}));
    ASSERT_EQ(answers.size(), 1u);
    auto described = parse_describe_accepted(answers[0].payload);
    ASSERT_TRUE(described) << answers[0].payload;
    queue_.set_version(kJob, described->execution.execution_number,
                       described->execution.version_number);
  }

  std::string enqueue(const std::string& status, const std::string& state, bool progress = false) {
    Update u;
    u.job_id = kJob;
    u.execution_number = 1;
    u.status = status;
    u.state = state;
    u.progress = progress;
    return queue_.enqueue(u);
  }

  /// The one request the queue sends now.
  Outgoing send() {
    auto out = queue_.poll(now_);
    EXPECT_EQ(out.size(), 1u);
    return out.empty() ? Outgoing{} : out[0];
  }

  /// The request reaches the cloud; returns the answers it publishes (notifications dropped).
  std::vector<emulator::Outgoing> to_cloud(const Outgoing& request) {
    std::vector<emulator::Outgoing> answers;
    for (auto& m : model_.handle(request.topic, request.payload)) {
      if (m.kind == emulator::Outgoing::Kind::Response) {
        answers.push_back(std::move(m));
      }
    }
    return answers;
  }

  /// An answer reaches the daemon: the queue's outcome, if any.
  std::optional<UpdateOutcome> to_daemon(const emulator::Outgoing& answer) {
    auto topic = parse_topic(kThing, answer.topic);
    EXPECT_TRUE(topic) << answer.topic;
    if (!topic) {
      return std::nullopt;
    }
    if (topic->kind == TopicKind::UpdateAccepted) {
      auto a = parse_update_accepted(answer.payload);
      EXPECT_TRUE(a) << answer.payload;
      return a ? queue_.on_accepted(topic->job_id, *a) : std::nullopt;
    }
    auto r = parse_rejected(answer.payload);
    EXPECT_TRUE(r) << answer.payload;
    return r ? queue_.on_rejected(topic->job_id, *r, now_) : std::nullopt;
  }

  /// Sends the head, delivers it and its answers: the outcome.
  std::optional<UpdateOutcome> round_trip() {
    std::optional<UpdateOutcome> outcome;
    for (const auto& a : to_cloud(send())) {
      if (auto o = to_daemon(a)) {
        outcome = o;
      }
    }
    return outcome;
  }

  emulator::Execution execution() { return model_.executions(kThing, kJob).at(0); }

  std::string cloud_state() {
    auto e = execution();
    return std::string(emulator::to_string(e.status)) + " " + e.status_details["state"];
  }

  std::optional<std::int64_t> expected_version(const Outgoing& request) {
    rapidjson::Document d;
    d.Parse(request.payload.c_str());
    if (!d.HasMember("expectedVersion")) {
      return std::nullopt;
    }
    return d["expectedVersion"].GetInt64();
  }

  /// Another client (an operator's tool) updates the execution.
  void other_client_update(const std::string& state) {
    auto answers =
        to_cloud({update_topic(kThing, kJob),
                  R"({"status":"IN_PROGRESS","statusDetails":{"state":")" + state + R"("}})"});
    ASSERT_EQ(answers.size(), 1u);
    ASSERT_NE(answers[0].topic.find("/accepted"), std::string::npos) << answers[0].payload;
  }

  emulator::JobsModel model_;
  UpdateQueue queue_{kThing, UpdateQueueSettings{30000ms, 1000ms, 8000ms}, "tok"};
  TimePoint now_{std::chrono::hours(1)};
};

// A QoS 1 request delivered twice (a redelivery may come with a new packet id and no DUP flag)
// is applied once, whichever of its two answers the daemon reads first.
TEST_F(UpdateQueueOnEmulator, DuplicatedUpdateIsAppliedOnce) {
  for (const bool reversed : {false, true}) {
    SCOPED_TRACE(reversed ? "the refusal answered first" : "the acceptance answered first");
    const auto before = execution().version_number;
    const auto token = enqueue("IN_PROGRESS", reversed ? "reboot_start" : "installation_start");
    const Outgoing request = send();
    auto answers = to_cloud(request);
    for (auto& a : to_cloud(request)) {
      answers.push_back(a);
    }
    ASSERT_EQ(answers.size(), 2u);
    if (reversed) {
      std::swap(answers[0], answers[1]);
    }
    auto first = to_daemon(answers[0]);
    ASSERT_TRUE(first);
    EXPECT_EQ(first->client_token, token);
    EXPECT_EQ(first->result, UpdateResult::Accepted);
    EXPECT_FALSE(to_daemon(answers[1])) << "the second answer is stale";
    EXPECT_EQ(execution().version_number, before + 1) << "applied twice";
    EXPECT_TRUE(queue_.empty());
  }
  EXPECT_EQ(execution().history.size(), 3u);  // created, installation_start, reboot_start
}

// The update is applied but its answer is lost; after update_resend it goes out again with the
// same token and expectedVersion, meets VersionMismatch showing what it sent: accepted.
TEST_F(UpdateQueueOnEmulator, LostAnswerThenResendIsAccepted) {
  const auto token = enqueue("IN_PROGRESS", "installation_start");
  emulator::Faults faults;
  faults.responses.drop_next = 1;
  model_.set_faults(faults);
  EXPECT_FALSE(round_trip()) << "the answer was dropped";
  EXPECT_EQ(cloud_state(), "IN_PROGRESS installation_start");
  EXPECT_TRUE(queue_.poll(now_ + 29s).empty());
  now_ += 30s;
  auto outcome = round_trip();
  ASSERT_TRUE(outcome);
  EXPECT_EQ(outcome->client_token, token);
  EXPECT_EQ(outcome->result, UpdateResult::Accepted);
  EXPECT_EQ(execution().version_number, 2) << "the resend was applied again";
  EXPECT_EQ(execution().history.size(), 2u);
  // The next update goes on from the version the refusal showed.
  enqueue("IN_PROGRESS", "reboot_start");
  outcome = round_trip();
  ASSERT_TRUE(outcome);
  EXPECT_EQ(outcome->result, UpdateResult::Accepted);
  EXPECT_EQ(cloud_state(), "IN_PROGRESS reboot_start");
}

// A late copy of installation_progress reaches the cloud after reboot_start was applied: it is
// refused and its answer, naming an update no longer in flight, is ignored.
TEST_F(UpdateQueueOnEmulator, LateCopyOfAnOlderUpdateDoesNotOverwriteANewerOne) {
  enqueue("IN_PROGRESS", "installation_progress", true);
  const Outgoing progress = send();
  for (const auto& a : to_cloud(progress)) {
    ASSERT_TRUE(to_daemon(a));
  }
  enqueue("IN_PROGRESS", "reboot_start");
  auto outcome = round_trip();
  ASSERT_TRUE(outcome);
  ASSERT_EQ(cloud_state(), "IN_PROGRESS reboot_start");
  const auto version = execution().version_number;
  for (const auto& a : to_cloud(progress)) {
    EXPECT_NE(a.topic.find("/rejected"), std::string::npos) << a.payload;
    EXPECT_FALSE(to_daemon(a));
  }
  EXPECT_EQ(cloud_state(), "IN_PROGRESS reboot_start");
  EXPECT_EQ(execution().version_number, version);
}

// installation_start was applied, its answer lost, and the job is cancelled by force (the
// statusDetails stay installation_start). The resend is refused with the CANCELED
// executionState: the job is gone, not "accepted" although the details match. AWS may answer
// VersionMismatch or InvalidStateTransition here; both are played.
TEST_F(UpdateQueueOnEmulator, ForcedCancelIsGone) {
  for (const bool version_first : {true, false}) {
    SCOPED_TRACE(version_first ? "VersionMismatch" : "InvalidStateTransition");
    auto options = model_.options();
    options.version_mismatch_before_terminal = version_first;
    model_.set_options(options);
    const std::string job = "upparat_f" + std::to_string(version_first);
    emulator::JobSpec spec;
    spec.job_id = job;
    spec.document = R"({"version":"2.0","file":"https://h/f"})";
    spec.things = {kThing};
    ASSERT_TRUE(model_.create_job(spec));
    queue_.set_version(job, 1, 1);
    Update u;
    u.job_id = job;
    u.execution_number = 1;
    u.status = "IN_PROGRESS";
    u.state = "installation_start";
    const auto token = queue_.enqueue(u);
    u.state = "reboot_start";
    queue_.enqueue(u);
    emulator::Faults faults;
    faults.responses.drop_next = 1;
    model_.set_faults(faults);
    auto out = queue_.poll(now_);
    ASSERT_EQ(out.size(), 1u);
    ASSERT_TRUE(to_cloud(out[0]).empty());
    ASSERT_TRUE(model_.cancel_job(job, true));
    out = queue_.poll(now_ + 30s);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(expected_version(out[0]), 1);
    auto answers = to_cloud(out[0]);
    ASSERT_EQ(answers.size(), 1u);
    EXPECT_NE(answers[0].payload.find(version_first ? "VersionMismatch" : "InvalidStateTransition"),
              std::string::npos)
        << answers[0].payload;
    auto outcome = to_daemon(answers[0]);
    ASSERT_TRUE(outcome);
    EXPECT_EQ(outcome->client_token, token);
    EXPECT_EQ(outcome->result, UpdateResult::Gone);
    EXPECT_FALSE(queue_.has_pending(job)) << "reboot_start is dropped too";
  }
}

// Another client changed the execution since the daemon last saw it: the update meets
// VersionMismatch with other statusDetails, and goes out again with the new version, on top.
TEST_F(UpdateQueueOnEmulator, MismatchWithOtherDetailsIsSentAgainWithTheNewVersion) {
  const auto token = enqueue("IN_PROGRESS", "download_start");
  other_client_update("operator_note");  // version 2
  const Outgoing first = send();
  EXPECT_EQ(expected_version(first), 1);
  for (const auto& a : to_cloud(first)) {
    EXPECT_FALSE(to_daemon(a)) << "not an outcome: it goes out again";
  }
  EXPECT_EQ(cloud_state(), "IN_PROGRESS operator_note");
  const Outgoing again = send();
  EXPECT_EQ(expected_version(again), 2);
  std::optional<UpdateOutcome> outcome;
  for (const auto& a : to_cloud(again)) {
    outcome = to_daemon(a);
  }
  ASSERT_TRUE(outcome);
  EXPECT_EQ(outcome->client_token, token);
  EXPECT_EQ(outcome->result, UpdateResult::Accepted);
  EXPECT_EQ(cloud_state(), "IN_PROGRESS download_start");
  EXPECT_EQ(execution().version_number, 3);
}

// Same, for a progress update with a newer update queued behind it: the newer one goes out
// instead (with the new version), the stale progress line is not sent again.
TEST_F(UpdateQueueOnEmulator, MismatchOfASupersededProgressUpdateSendsTheNewerOne) {
  enqueue("IN_PROGRESS", "installation_progress", true);
  other_client_update("operator_note");
  const Outgoing progress = send();
  const auto token = enqueue("IN_PROGRESS", "reboot_start");
  for (const auto& a : to_cloud(progress)) {
    EXPECT_FALSE(to_daemon(a));
  }
  auto outcome = round_trip();
  ASSERT_TRUE(outcome);
  EXPECT_EQ(outcome->client_token, token);
  EXPECT_EQ(outcome->result, UpdateResult::Accepted);
  EXPECT_EQ(cloud_state(), "IN_PROGRESS reboot_start");
  std::vector<std::string> states;
  for (const auto& h : execution().history) {
    states.push_back(h.status_details.count("state") ? h.status_details.at("state") : "");
  }
  EXPECT_EQ(states, (std::vector<std::string>{"", "operator_note", "reboot_start"}));
}

}  // namespace
}  // namespace upparat::jobs
