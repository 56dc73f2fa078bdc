// End to end: plugins that ignore the request to stop. The install step is served by a real
// fixture plugin (.so) that sleeps without looking at should_stop(), once as is and once
// declaring INSTALL_NOT_INTERRUPTIBLE; the other steps by the script plugin. Real daemon,
// mosquitto and Jobs + S3 emulator.

#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <signal.h>

#include <chrono>
#include <optional>
#include <string>

#include "e2e_fixture.hpp"

namespace upparat::test {
namespace {

using namespace e2e;  // NOLINT(google-build-using-namespace)

constexpr int kExitPluginStuck = 75;  // host/daemon/daemon.hpp

class E2ePluginStopTest : public E2eFixture {
 protected:
  void SetUp() override {
    E2eFixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) {
      return;
    }
    default_hooks();
    hooks_["restart"] = hook("restart", "exit 0");
  }

  /// A configuration whose install step is the stubborn fixture `plugin`, sleeping `sleep`
  /// seconds; `install_deadline` 0 keeps the default deadline.
  fs::path stubborn_config(const std::string& plugin, int sleep, int install_deadline,
                           int stop_grace) {
    DaemonConfig c;
    c.state_dir = path("state");
    c.jobs = "stop_grace = " + std::to_string(stop_grace) + "\n";
    if (install_deadline > 0) {
      c.extra += "[jobs.deadlines]\ninstall = " + std::to_string(install_deadline) + "\n";
    }
    c.extra +=
        "[steps]\nversion = \"script\"\ninstall = \"stubborn\"\nrestart = \"script\"\n"
        "[plugins.stubborn]\npath = \"" +
        plugin + "\"\nsleep_seconds = " + std::to_string(sleep) + "\nrecord = \"" +
        record_file().string() + "\"\n";
    return write_config(c);
  }

  fs::path record_file() const { return path("install_record"); }
  bool recorded(const std::string& what) const {
    return read_text(record_file()).find(what + "\n") != std::string::npos;
  }

  std::string saved_step() const {
    rapidjson::Document d;
    d.Parse(read_text(path("state/state.json")).c_str());
    if (d.HasParseError() || !d.IsObject() || !d.HasMember("step") || !d["step"].IsString()) {
      return "";
    }
    return d["step"].GetString();
  }
};

// The install ignores the stop after its deadline: after stop_grace the job FAILS "... the
// plugin did not stop ...", `finish` is saved, and the daemon exits with a status of its own
// for systemd to restart it. Before, FAILED was sent at the deadline while the plugin ran on,
// and the daemon stayed in `finishing` for ever.
TEST_F(E2ePluginStopTest, InstallIgnoringTheStopFailsTheJobAndTheDaemonExitsForARestart) {
  auto config = stubborn_config(UPPARAT_FIXTURE_STUBBORN, 60, 2, 3);
  std::optional<ServiceProcess> daemon;
  daemon.emplace(start_daemon(config));
  ASSERT_TRUE(daemon->wait_for_line("ready: subscribed", 30s)) << daemon->log_tail();
  create_job("upparat_stuck", document("2.0.0", "2.0.0"));
  ASSERT_TRUE(eventually([&] { return recorded("entered"); })) << daemon->log_tail();

  auto exited = daemon->wait_exit(40s);
  ASSERT_TRUE(exited) << exited.error().message();
  EXPECT_FALSE(exited->signaled) << exited->describe();
  EXPECT_EQ(exited->exit_code, kExitPluginStuck) << exited->describe() << "\n"
                                                 << daemon->log_tail();
  EXPECT_FALSE(recorded("returned")) << "it was left running, not waited for";
  auto v = view("upparat_stuck");
  ASSERT_TRUE(v);
  EXPECT_EQ(v->status, "FAILED") << join(v->states);
  EXPECT_EQ(v->state, "installation_hook_failed");
  EXPECT_NE(v->message.find("the plugin did not stop"), std::string::npos) << v->message;
  EXPECT_EQ(saved_step(), "finish");

  // The restarted daemon (systemd's Restart=on-failure) sends the saved result again, ends
  // the job and waits for the next one.
  daemon.reset();
  daemon.emplace(start_daemon(config, "upparat-restarted"));
  EXPECT_TRUE(eventually([&] { return !fs::exists(path("state/state.json")); }))
      << daemon->log_tail();
  EXPECT_TRUE(daemon->wait_for_line("status: waiting for jobs", 30s)) << daemon->log_tail();
  EXPECT_EQ(view("upparat_stuck")->status, "FAILED");
  EXPECT_TRUE(daemon->running()) << daemon->log_tail();
}

// A not-interruptible install that runs past its deadline is waited for; its result counts.
// Before, the job was reported FAILED at the deadline while the install went on.
TEST_F(E2ePluginStopTest, NotInterruptibleInstallPastItsDeadlineIsWaitedFor) {
  auto config = stubborn_config(UPPARAT_FIXTURE_STUBBORN_NOT_INTERRUPTIBLE, 6, 2, 2);
  auto daemon = start_daemon(config);
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_job("upparat_slow", document("2.0.0", "2.0.0"));
  ASSERT_TRUE(eventually([&] { return recorded("entered"); })) << daemon.log_tail();
  auto v = wait_status("upparat_slow", "SUCCEEDED", 60s);
  EXPECT_EQ(v.state, "complete_soft_restart") << join(v.states);
  EXPECT_FALSE(contains(v.states, "installation_hook_failed")) << join(v.states);
  EXPECT_TRUE(recorded("returned"));
  EXPECT_NE(daemon.log_text().find("cannot be interrupted"), std::string::npos)
      << daemon.log_tail();
  EXPECT_TRUE(daemon.running()) << daemon.log_tail();
}

// SIGTERM during a not-interruptible install: the daemon waits for it (within the unit's
// TimeoutStopSec=60), reports nothing for it and exits 0 after it returned. Before, it gave up
// about 33 s after the signal and exited with the install still running.
TEST_F(E2ePluginStopTest, SigtermWaitsForANotInterruptibleInstall) {
  auto config = stubborn_config(UPPARAT_FIXTURE_STUBBORN_NOT_INTERRUPTIBLE, 38, 0, 30);
  auto daemon = start_daemon(config);
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_job("upparat_term", document("2.0.0", "2.0.0"));
  ASSERT_TRUE(eventually([&] { return recorded("entered"); })) << daemon.log_tail();
  const auto signalled = std::chrono::steady_clock::now();
  ASSERT_TRUE(daemon.send_signal(SIGTERM));  // the daemon only, as KillMode=mixed does
  auto exited = daemon.wait_exit(60s);
  const auto took = std::chrono::steady_clock::now() - signalled;
  ASSERT_TRUE(exited) << exited.error().message();
  EXPECT_TRUE(exited->success()) << exited->describe() << "\n" << daemon.log_tail();
  EXPECT_TRUE(recorded("returned"))
      << "exited while the install ran, after "
      << std::chrono::duration_cast<std::chrono::seconds>(took).count() << " s\n"
      << daemon.log_tail();
  EXPECT_LT(took, 55s) << "within the unit's TimeoutStopSec=60";
  auto v = view("upparat_term");
  ASSERT_TRUE(v);
  EXPECT_EQ(v->status, "IN_PROGRESS") << "nothing is reported for the interrupted job";
  EXPECT_EQ(v->state, "installation_start") << join(v->states);
}

}  // namespace
}  // namespace upparat::test
