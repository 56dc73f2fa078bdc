// End to end: a forced delete of the execution in every state the daemon can be in, a cancel
// right after the job is picked, several IN_PROGRESS jobs, and jobs of other agents (without
// the prefix). Real daemon, script plugin, mosquitto and Jobs + S3 emulator.

#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "e2e_fixture.hpp"
#include "support/mqtt_client.hpp"

namespace upparat::test {
namespace {

using namespace e2e;  // NOLINT(google-build-using-namespace)

class E2eCancelTest : public E2eFixture {
 protected:
  /// The daemon is back to waiting for work: no saved state, no download left.
  bool back_to_waiting(const std::string& job_id) {
    return eventually(
        [&] {
          return !fs::exists(path("state/state.json")) &&
                 !fs::exists(path("state/downloads/" + job_id + ".part")) &&
                 !fs::exists(path("state/downloads/" + job_id));
        },
        60s);
  }

  /// A next job is done completely (download, install, soft restart).
  void next_job_completes(ServiceProcess& daemon) {
    create_job("upparat_next", document("3.0.0", "3.0.0"));
    auto next = wait_status("upparat_next", "SUCCEEDED", 90s);
    EXPECT_EQ(next.state, "complete_soft_restart") << join(next.states);
    EXPECT_EQ(installed_version(), "3.0.0");
    EXPECT_EQ(read_text(path("installed.bin")), firmware_);
    EXPECT_TRUE(daemon.running()) << daemon.log_tail();
  }
};

/// Where the daemon is when the execution is deleted.
struct DeleteCase {
  const char* where;    ///< a hook step, or "downloading" (the transfer itself)
  bool before_install;  ///< no install may have begun
};

class E2eForcedDeleteTest : public E2eCancelTest,
                            public ::testing::WithParamInterface<DeleteCase> {};

TEST_P(E2eForcedDeleteTest, StopsTheWorkAndTakesTheNextJob) {
  const DeleteCase& c = GetParam();
  const std::string where = c.where;
  gated_hooks();
  auto config = write_config(path("state"));
  std::optional<ServiceProcess> daemon;
  daemon.emplace(start_daemon(config));
  ASSERT_TRUE(daemon->wait_for_line("ready: subscribed", 30s)) << daemon->log_tail();

  const pid_t hook_pid = run_job_into(where, "upparat_deleted", config, daemon);
  if (HasFailure()) {
    return;
  }

  ASSERT_TRUE(emulator_->delete_execution(kThing, "upparat_deleted", true));
  if (hook_pid != 0) {
    EXPECT_TRUE(wait_process_gone(hook_pid, 30s)) << "the " << where << " hook still runs\n"
                                                  << daemon->log_tail();
  }
  EXPECT_TRUE(back_to_waiting("upparat_deleted")) << daemon->log_tail();
  if (c.before_install) {
    EXPECT_TRUE(install_log().empty()) << "installed: " << join(install_log());
  }
  next_job_completes(*daemon);
  EXPECT_EQ(install_log().empty() ? "" : install_log().back(), "3.0.0");
}

INSTANTIATE_TEST_SUITE_P(
    EveryState, E2eForcedDeleteTest,
    ::testing::Values(DeleteCase{"version", true}, DeleteCase{"download", true},
                      DeleteCase{"downloading", true}, DeleteCase{"install", false},
                      DeleteCase{"restart", false}, DeleteCase{"ready", false}),
    [](const ::testing::TestParamInfo<DeleteCase>& info) { return std::string(info.param.where); });

TEST_F(E2eCancelTest, CancelRightAfterThePickBeforeTheFirstUpdateIsAccepted) {
  gated_hooks();
  auto daemon = start_daemon(write_config(path("state")));
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  // Every answer comes 3 s late: the daemon's first update (download_start) is recorded by
  // the cloud, but its acceptance is still on the way when the job is cancelled.
  ASSERT_TRUE(emulator_->set_faults(R"({"responses":{"delayMs":3000}})"));
  create_job("upparat_picked", document("2.0.0", "2.0.0"));
  ASSERT_TRUE(wait_state_reported("upparat_picked", "download_start")) << daemon.log_tail();
  ASSERT_TRUE(emulator_->cancel_job("upparat_picked", true));
  EXPECT_TRUE(back_to_waiting("upparat_picked")) << daemon.log_tail();
  ASSERT_TRUE(emulator_->clear_faults());
  auto picked = view("upparat_picked");
  ASSERT_TRUE(picked);
  EXPECT_EQ(picked->status, "CANCELED");
  EXPECT_FALSE(contains(picked->states, "installation_start")) << join(picked->states);
  EXPECT_TRUE(install_log().empty()) << "installed: " << join(install_log());
  next_job_completes(daemon);
}

TEST_F(E2eCancelTest, SeveralInProgressJobsAllFail) {
  gated_hooks();
  create_job("upparat_one", document("2.0.0", "2.0.0"));
  create_job("upparat_two", document("2.0.0", "2.0.0"));
  // Another agent (or an older daemon) left both IN_PROGRESS.
  auto client = MqttTestClient::connect(broker_->plain_uri());
  ASSERT_TRUE(client) << client.error().message();
  for (const char* id : {"upparat_one", "upparat_two"}) {
    ASSERT_TRUE(client->publish(std::string("$aws/things/") + kThing + "/jobs/" + id + "/update",
                                R"({"status":"IN_PROGRESS"})"));
  }
  ASSERT_TRUE(eventually([&] {
    auto one = view("upparat_one");
    auto two = view("upparat_two");
    return one && two && one->status == "IN_PROGRESS" && two->status == "IN_PROGRESS";
  }));
  auto daemon = start_daemon(write_config(path("state")));
  for (const char* id : {"upparat_one", "upparat_two"}) {
    auto v = wait_status(id, "FAILED");
    EXPECT_EQ(v.state, "error_multiple_in_progress") << id << ": " << join(v.states);
  }
  EXPECT_TRUE(install_log().empty()) << "installed: " << join(install_log());
  EXPECT_EQ(installed_version(), "1.0.0");
  // ... and the daemon goes on with new work.
  next_job_completes(daemon);
}

TEST_F(E2eCancelTest, JobsWithoutThePrefixAreIgnored) {
  gated_hooks();
  // Older than ours: by queue order it would be picked first.
  create_job("other_agent_job", document("9.9.9", "9.9.9"));
  auto daemon = start_daemon(write_config(path("state")));
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_job("upparat_mine", document("2.0.0", "2.0.0"));
  auto mine = wait_status("upparat_mine", "SUCCEEDED");
  EXPECT_EQ(mine.state, "complete_soft_restart") << join(mine.states);
  auto other = view("other_agent_job");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, "QUEUED");
  EXPECT_TRUE(other->states.empty()) << "never updated: " << join(other->states);
  EXPECT_EQ(install_log(), std::vector<std::string>{"2.0.0"});
  EXPECT_EQ(daemon.log_text().find("other_agent_job/"), std::string::npos)
      << "no request about another agent's job";
}

}  // namespace
}  // namespace upparat::test
