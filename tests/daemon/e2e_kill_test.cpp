// End to end: SIGKILL of the daemon (a crash, a power cut) at each step of a job, then a new
// daemon that finishes the job correctly. Hooks wait on marker files, so the kill lands in the
// intended step. Real daemon, script plugin, mosquitto and Jobs + S3 emulator.

#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "e2e_fixture.hpp"

namespace upparat::test {
namespace {

using namespace e2e;  // NOLINT(google-build-using-namespace)

struct KillCase {
  const char* where;        ///< a hook step, or "downloading" (the transfer itself)
  const char* final_state;  ///< what the restarted daemon reports
};

class E2eKillTest : public E2eFixture, public ::testing::WithParamInterface<KillCase> {};

TEST_P(E2eKillTest, RestartAfterSigkillFinishesTheJob) {
  const KillCase& c = GetParam();
  const std::string where = c.where;
  gated_hooks();
  auto config = write_config(path("state"));
  std::optional<ServiceProcess> daemon;
  daemon.emplace(start_daemon(config));
  ASSERT_TRUE(daemon->wait_for_line("ready: subscribed", 30s)) << daemon->log_tail();

  const pid_t hook_pid = run_job_into(where, "upparat_kill", config, daemon);
  if (HasFailure()) {
    return;
  }

  daemon->kill9();
  // A hook that outlived the daemon (its own process group) fails now; nobody hears it.
  release();
  if (hook_pid != 0) {
    EXPECT_TRUE(wait_process_gone(hook_pid, 30s));
  }
  auto before = view("upparat_kill");
  ASSERT_TRUE(before);
  EXPECT_NE(before->status, "SUCCEEDED");
  EXPECT_NE(before->status, "FAILED") << join(before->states);

  daemon.reset();
  daemon.emplace(start_daemon(config, "upparat-restarted"));
  auto after = wait_status("upparat_kill", "SUCCEEDED", 90s);
  EXPECT_EQ(after.state, c.final_state) << join(after.states);
  EXPECT_EQ(installed_version(), "2.0.0");
  EXPECT_EQ(read_text(path("installed.bin")), firmware_);
  // The blocked install attempt ended before installing: exactly one install happened.
  EXPECT_EQ(install_log(), std::vector<std::string>{"2.0.0"});
  EXPECT_TRUE(daemon->running()) << daemon->log_tail();
}

INSTANTIATE_TEST_SUITE_P(EveryStep, E2eKillTest,
                         ::testing::Values(KillCase{"version", "complete_soft_restart"},
                                           KillCase{"download", "complete_soft_restart"},
                                           KillCase{"downloading", "complete_soft_restart"},
                                           KillCase{"install", "complete_soft_restart"},
                                           KillCase{"restart", "complete_ready"},
                                           KillCase{"ready", "complete_ready"}),
                         [](const ::testing::TestParamInfo<KillCase>& info) {
                           return std::string(info.param.where);
                         });

}  // namespace
}  // namespace upparat::test
