// End to end: the real `upparat` binary with the real script plugin and hook scripts, against
// a real mosquitto and the Jobs + S3 emulator. Each test checks the cloud's view (the
// emulator's execution and its status history), as an operator would see it.

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cstring>

#include "e2e_fixture.hpp"

namespace upparat::test {
namespace {

using namespace e2e;  // NOLINT(google-build-using-namespace)

class E2eDaemonTest : public E2eFixture {};

TEST_F(E2eDaemonTest, SoftRestartCompletesWithEveryStatusReported) {
  default_hooks();
  hooks_["restart"] = hook("restart", "exit 0");
  auto config = write_config(path("state"));
  auto daemon = start_daemon(config);
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_job("upparat_soft", document("2.0.0", "2.0.0"));
  auto view = wait_status("upparat_soft", "SUCCEEDED");
  EXPECT_EQ(view.state, "complete_soft_restart") << join(view.states);
  for (const char* state : {"download_start", "installation_start", "reboot_start"}) {
    EXPECT_TRUE(contains(view.states, state)) << state << " missing in " << join(view.states);
  }
  EXPECT_EQ(installed_version(), "2.0.0");
  std::ifstream in(path("installed.bin"), std::ios::binary);
  std::string installed((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(installed, firmware_);
  auto stopped = daemon.stop();
  ASSERT_TRUE(stopped);
  EXPECT_TRUE(stopped->success()) << stopped->describe() << "\n" << daemon.log_tail();
}

TEST_F(E2eDaemonTest, RebootContinuationReportsCompleteReady) {
  default_hooks();
  rebooting_restart_hook();
  auto config = write_config(path("state"));
  {
    auto daemon = start_daemon(config);
    ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
    create_job("upparat_reboot", document("2.0.0", "2.0.0"));
    auto exited = daemon.wait_exit(60s);
    ASSERT_TRUE(exited) << exited.error().message();
    auto view = parse_execution(*emulator_->describe(kThing, "upparat_reboot"));
    ASSERT_TRUE(view);
    EXPECT_EQ(view->status, "IN_PROGRESS");
    EXPECT_EQ(view->state, "reboot_start") << join(view->states);
  }
  // "After the reboot": a new daemon reports the result.
  auto daemon = start_daemon(config, "upparat-after-reboot");
  auto view = wait_status("upparat_reboot", "SUCCEEDED");
  EXPECT_EQ(view.state, "complete_ready") << join(view.states);
  EXPECT_EQ(installed_version(), "2.0.0");
}

TEST_F(E2eDaemonTest, RebootContinuationWithEmptyStateDirectory) {
  default_hooks();
  rebooting_restart_hook();
  {
    auto daemon = start_daemon(write_config(path("slot-a")));
    ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
    create_job("upparat_ab", document("2.0.0", "2.0.0"));
    ASSERT_TRUE(daemon.wait_exit(60s));
  }
  // The other slot booted with an empty state directory: the cloud's reboot_start drives it.
  auto daemon = start_daemon(write_config(path("slot-b")), "upparat-slot-b");
  auto view = wait_status("upparat_ab", "SUCCEEDED");
  EXPECT_EQ(view.state, "complete_ready") << join(view.states);
}

TEST_F(E2eDaemonTest, VersionAlreadyInstalled) {
  default_hooks();
  write_version("3.1.0");
  auto daemon = start_daemon(write_config(path("state")));
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_job("upparat_same", document("3.1.0", "3.1.0"));
  auto view = wait_status("upparat_same", "SUCCEEDED");
  EXPECT_EQ(view.state, "version_already_installed") << join(view.states);
  EXPECT_FALSE(contains(view.states, "download_start"));
}

TEST_F(E2eDaemonTest, NoInstallationHookProvided) {
  default_hooks();
  hooks_.erase("install");
  auto daemon = start_daemon(write_config(path("state")));
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_job("upparat_noinstall", document("2.0.0", "2.0.0"));
  auto view = wait_status("upparat_noinstall", "SUCCEEDED");
  EXPECT_EQ(view.state, "no_installation_hook_provided") << join(view.states);
  EXPECT_TRUE(contains(view.states, "download_start"));
  // A step that does not exist is not announced (the classic missing hook).
  EXPECT_FALSE(contains(view.states, "installation_start")) << join(view.states);
}

TEST_F(E2eDaemonTest, StepsLeftOutOfStepsAreNotAnnounced) {
  default_hooks();
  hooks_["restart"] = hook("restart", "exit 0");
  // The plugin has install and restart hooks, but [steps] gives those steps no plugin.
  auto daemon = start_daemon(write_config(
      path("state"), "[steps]\nversion = \"script\"\ndownload = \"script\"\nready = \"script\"\n"));
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_job("upparat_nosteps", document("2.0.0", "2.0.0"));
  auto view = wait_status("upparat_nosteps", "SUCCEEDED");
  EXPECT_EQ(view.state, "no_installation_hook_provided") << join(view.states);
  EXPECT_TRUE(contains(view.states, "download_start")) << join(view.states);
  EXPECT_FALSE(contains(view.states, "installation_start")) << join(view.states);
  EXPECT_EQ(installed_version(), "1.0.0") << "install must not run";
}

TEST_F(E2eDaemonTest, NoRestartHookProvided) {
  default_hooks();  // no restart hook
  auto daemon = start_daemon(write_config(path("state")));
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_job("upparat_norestart", document("2.0.0", "2.0.0"));
  auto view = wait_status("upparat_norestart", "SUCCEEDED");
  EXPECT_EQ(view.state, "no_restart_hook_provided") << join(view.states);
  EXPECT_TRUE(contains(view.states, "installation_start")) << join(view.states);
  EXPECT_EQ(installed_version(), "2.0.0");
  EXPECT_FALSE(contains(view.states, "reboot_start")) << join(view.states);
}

TEST_F(E2eDaemonTest, MalformedDocumentIsRejectedAndTheDaemonGoesOn) {
  default_hooks();
  hooks_["restart"] = hook("restart", "exit 0");
  auto daemon = start_daemon(write_config(path("state")));
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_job("upparat_bad", R"({"action":"update","version":"2.0.0"})");
  auto view = wait_status("upparat_bad", "REJECTED");
  EXPECT_EQ(view.state, "invalid_job_document");
  EXPECT_NE(view.message.find("file"), std::string::npos) << view.message;
  // ... and the next job is done.
  create_job("upparat_good", document("2.0.0", "2.0.0"));
  auto good = wait_status("upparat_good", "SUCCEEDED");
  EXPECT_EQ(good.state, "complete_soft_restart") << join(good.states);
}

TEST_F(E2eDaemonTest, SecondInstanceIsRefusedNamingTheHolder) {
  default_hooks();
  auto config = write_config(path("state"));
  auto first = start_daemon(config);
  ASSERT_TRUE(first.wait_for_line("ready: subscribed", 30s)) << first.log_tail();
  auto second = start_daemon(config, "upparat-second");
  auto exited = second.wait_exit(10s);
  ASSERT_TRUE(exited) << exited.error().message();
  EXPECT_FALSE(exited->success());
  EXPECT_NE(second.log_text().find(std::to_string(first.pid())), std::string::npos)
      << second.log_text();
  EXPECT_TRUE(first.running());
}

TEST_F(E2eDaemonTest, CancelDuringInstallKillsTheHook) {
  default_hooks();
  hooks_["install"] = hook("install", "echo started > '" + path("install_started").string() +
                                          "'\nsleep 60\necho finished > '" +
                                          path("install_finished").string() + "'");
  auto daemon = start_daemon(write_config(path("state")));
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_job("upparat_cancel", document("2.0.0", "2.0.0"));
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (!fs::exists(path("install_started")) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(fs::exists(path("install_started"))) << daemon.log_tail();
  ASSERT_TRUE(emulator_->cancel_job("upparat_cancel", true));
  // The hook is gone well before its 60 s sleep ends, and the daemon takes the next job.
  std::this_thread::sleep_for(5s);
  EXPECT_FALSE(fs::exists(path("install_finished")));
  create_job("upparat_after_cancel", document("1.0.0", "1.0.0"));
  auto view = wait_status("upparat_after_cancel", "SUCCEEDED");
  EXPECT_EQ(view.state, "version_already_installed") << join(view.states);
}

TEST_F(E2eDaemonTest, SigkillMidDownloadThenRestartFinishes) {
  default_hooks();
  hooks_["restart"] = hook("restart", "exit 0");
  auto config = write_config(path("state"));
  // Slow the transfer so that the kill lands mid-download.
  ASSERT_TRUE(
      emulator_->add_s3_fault(kBucket, kKey, R"("rateLimitBytesPerSecond":100000,"times":1)"));
  {
    auto daemon = start_daemon(config);
    ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
    create_job("upparat_kill", document("2.0.0", "2.0.0"));
    ASSERT_TRUE(daemon.wait_for_line("downloading", 30s)) << daemon.log_tail();
    std::this_thread::sleep_for(1s);
    daemon.kill9();
  }
  auto daemon = start_daemon(config, "upparat-restarted");
  auto view = wait_status("upparat_kill", "SUCCEEDED", 90s);
  EXPECT_EQ(view.state, "complete_soft_restart") << join(view.states);
  EXPECT_EQ(installed_version(), "2.0.0");
}

TEST_F(E2eDaemonTest, BrokerRestartMidJob) {
  default_hooks();
  hooks_["restart"] = hook("restart", "exit 0");
  hooks_["install"] =
      hook("install", "sleep 4\necho \"$3\" > '" + path("installed_version").string() + "'");
  auto daemon = start_daemon(write_config(path("state")));
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_job("upparat_broker", document("2.0.0", "2.0.0"));
  ASSERT_TRUE(daemon.wait_for_line("install step", 60s)) << daemon.log_tail();
  ASSERT_TRUE(broker_->restart());
  auto view = wait_status("upparat_broker", "SUCCEEDED", 90s);
  EXPECT_EQ(view.state, "complete_soft_restart") << join(view.states);
}

TEST_F(E2eDaemonTest, PythonIniImport) {
  default_hooks();
  hooks_["restart"] = hook("restart", "exit 0");
  std::string ini = "[service]\nlog_level = debug\ndownload_location = " + path("dl").string() +
                    "\n[broker]\nhost = 127.0.0.1\nport = " + std::to_string(broker_->port()) +
                    "\nthing_name = " + kThing + "\n[hooks]\n";
  for (const auto& [step, p] : hooks_) {
    ini += step + " = " + p.string() + "\n";
  }
  ini += "retry_interval = 1\nmax_retries = 2\n[sentry]\ndsn = https://example.invalid/1\n";
  auto file = path("upparat.ini");
  std::ofstream(file) << ini;
  ProcessOptions o;
  o.argv = {UPPARAT_DAEMON_BIN, "-c", file.string()};
  o.name = "upparat-ini";
  o.log_path = path("upparat-ini.log");
  o.env = {{"UPPARAT_PLUGIN_DIR", fs::path(UPPARAT_SCRIPT_PLUGIN).parent_path().string()}};
  logs_.push_back(o.log_path);
  auto daemon = ServiceProcess::start(o);
  ASSERT_TRUE(daemon) << daemon.error().message();
  ASSERT_TRUE(daemon->wait_for_line("ready: subscribed", 30s)) << daemon->log_tail();
  EXPECT_NE(daemon->log_text().find("[sentry]"), std::string::npos) << daemon->log_tail();
  create_job("upparat_ini", document("2.0.0", "2.0.0"));
  auto view = wait_status("upparat_ini", "SUCCEEDED");
  EXPECT_EQ(view.state, "complete_soft_restart") << join(view.states);
  EXPECT_TRUE(fs::exists(path("dl/upparat/state")));
}

TEST_F(E2eDaemonTest, TwoDaemonsWithOneClientIdAreToldSo) {
  default_hooks();
  auto first_config = write_config(path("state-1"));
  fs::rename(first_config, path("first.toml"));
  auto second_config = write_config(path("state-2"));
  auto first = start_daemon(path("first.toml"), "upparat-first");
  auto second = start_daemon(second_config, "upparat-second");
  // Each connect takes the client id from the other: both see their connection dropped
  // right after connecting, and one of them says why within a few cycles.
  auto deadline = std::chrono::steady_clock::now() + 60s;
  bool said = false;
  while (!said && std::chrono::steady_clock::now() < deadline) {
    said = first.log_text().find("is probably used by another connection") != std::string::npos ||
           second.log_text().find("is probably used by another connection") != std::string::npos;
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_TRUE(said) << first.log_tail() << "\n" << second.log_tail();
  EXPECT_TRUE(first.running());
  EXPECT_TRUE(second.running());
}

TEST_F(E2eDaemonTest, SigtermDuringInstallStopsTheHookReportsNothingAndResumes) {
  default_hooks();
  hooks_["restart"] = hook("restart", "exit 0");
  const std::string marker = path("install_tried").string();
  hooks_["install"] = hook("install", "if [ ! -e '" + marker + "' ]; then touch '" + marker +
                                          "'; sleep 60; fi\necho \"$3\" > '" +
                                          path("installed_version").string() + "'");
  auto config = write_config(path("state"));
  {
    auto daemon = start_daemon(config);
    ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
    create_job("upparat_term", document("2.0.0", "2.0.0"));
    auto deadline = std::chrono::steady_clock::now() + 60s;
    while (!fs::exists(marker) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(100ms);
    }
    ASSERT_TRUE(fs::exists(marker)) << daemon.log_tail();
    auto begin = std::chrono::steady_clock::now();
    auto stopped = daemon.stop();  // SIGTERM (SIGKILL only after 15 s)
    ASSERT_TRUE(stopped);
    EXPECT_TRUE(stopped->success()) << stopped->describe() << "\n" << daemon.log_tail();
    EXPECT_LT(std::chrono::steady_clock::now() - begin, 14s) << daemon.log_tail();
    auto view = parse_execution(*emulator_->describe(kThing, "upparat_term"));
    ASSERT_TRUE(view);
    EXPECT_EQ(view->status, "IN_PROGRESS") << "nothing is reported for the interrupted step";
    EXPECT_EQ(view->state, "installation_start") << join(view->states);
  }
  auto daemon = start_daemon(config, "upparat-resumed");
  auto view = wait_status("upparat_term", "SUCCEEDED", 90s);
  EXPECT_EQ(view.state, "complete_soft_restart") << join(view.states);
  EXPECT_EQ(installed_version(), "2.0.0");
}

// The signal thread is ended with SIGUSR2 when the daemon stops. A SIGUSR2 from anyone else
// is ignored; before, it ended the signal thread, and SIGTERM was never taken any more.
TEST_F(E2eDaemonTest, StraySigusr2DoesNotDisableTheStop) {
  default_hooks();
  auto daemon = start_daemon(write_config(path("state")));
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  ASSERT_TRUE(daemon.send_signal(SIGUSR2));
  EXPECT_TRUE(daemon.wait_for_line("received SIGUSR2: ignored", 10s)) << daemon.log_tail();
  auto begin = std::chrono::steady_clock::now();
  auto stopped = daemon.stop();  // SIGTERM (SIGKILL only after 15 s)
  ASSERT_TRUE(stopped);
  EXPECT_TRUE(stopped->success()) << stopped->describe() << "\n" << daemon.log_tail();
  EXPECT_LT(std::chrono::steady_clock::now() - begin, 10s) << daemon.log_tail();
  EXPECT_NE(daemon.log_text().find("received SIGTERM"), std::string::npos) << daemon.log_tail();
}

TEST_F(E2eDaemonTest, SystemdNotifyReadyStatusAndWatchdog) {
  default_hooks();
  hooks_["restart"] = hook("restart", "exit 0");
  // systemd's side of sd_notify(3): a datagram socket named by NOTIFY_SOCKET.
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string socket_path = path("notify.sock").string();
  ASSERT_LT(socket_path.size(), sizeof(addr.sun_path));
  std::strcpy(addr.sun_path, socket_path.c_str());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ProcessOptions o;
  o.argv = {UPPARAT_DAEMON_BIN, "-c", write_config(path("state")).string()};
  o.name = "upparat-notify";
  o.log_path = path("upparat-notify.log");
  o.env = {{"NOTIFY_SOCKET", socket_path}, {"WATCHDOG_USEC", "1000000"}};
  o.unset_env = {"WATCHDOG_PID"};
  logs_.push_back(o.log_path);
  auto daemon = ServiceProcess::start(o);
  ASSERT_TRUE(daemon) << daemon.error().message();
  std::vector<std::string> received;
  auto has = [&](const std::string& prefix) {
    return std::count_if(received.begin(), received.end(),
                         [&](const std::string& m) { return m.find(prefix) != std::string::npos; });
  };
  bool job_created = false;
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < deadline &&
         !(has("READY=1") && has("WATCHDOG=1") >= 3 && has("STATUS=") >= 2)) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 200) == 1) {
      char buffer[4096];
      auto n = ::recv(fd, buffer, sizeof(buffer), 0);
      if (n > 0) {
        received.emplace_back(buffer, static_cast<std::size_t>(n));
      }
    }
    if (has("READY=1") && !job_created) {
      job_created = true;
      create_job("upparat_notify", document("2.0.0", "2.0.0"));
    }
  }
  ::close(fd);
  EXPECT_EQ(has("READY=1"), 1) << join(received);
  EXPECT_GE(has("WATCHDOG=1"), 3) << "WatchdogSec=1 s: a ping every 0.5 s; " << join(received);
  EXPECT_GE(has("STATUS="), 2) << join(received);
  ASSERT_TRUE(daemon->stop());
  EXPECT_TRUE(daemon->exit_status()->success()) << daemon->log_tail();
}

TEST_F(E2eDaemonTest, ThrottledDuplicatedAndDroppedResponsesStillEndInOrder) {
  default_hooks();
  hooks_["restart"] = hook("restart", "exit 0");
  auto daemon = start_daemon(write_config(path("state")));
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  // Two updates throttled, two answers sent twice, one answer lost (resent after 5 s), and
  // every answer late.
  ASSERT_TRUE(emulator_->set_faults(R"({"rejectUpdates":{"count":2,"code":"RequestThrottled"},)"
                                    R"("responses":{"duplicate":2,"drop":1,"delayMs":300}})"));
  create_job("upparat_faults", document("2.0.0", "2.0.0"));
  auto view = wait_status("upparat_faults", "SUCCEEDED", 90s);
  EXPECT_EQ(view.state, "complete_soft_restart") << join(view.states);
  // The cloud saw the steps in their order, whatever the transport did.
  std::vector<std::string> order;
  for (const auto& s : view.states) {
    if (s != "download_progress" && s != "installation_progress" &&
        (order.empty() || order.back() != s)) {
      order.push_back(s);
    }
  }
  EXPECT_EQ(join(order), "download_start, installation_start, reboot_start, complete_soft_restart");
}

TEST_F(E2eDaemonTest, JournalGetsPriorityPrefixesAndNoColours) {
  default_hooks();
  auto log = path("journal.log");
  std::ofstream(log).flush();
  struct stat st {};
  ASSERT_EQ(::stat(log.c_str(), &st), 0);
  ProcessOptions o;
  o.argv = {UPPARAT_DAEMON_BIN, "-c", write_config(path("state")).string(), "--check-config"};
  o.name = "upparat-journal";
  o.log_path = log;
  // systemd sets JOURNAL_STREAM to the device and inode of the stderr it connected.
  o.env = {{"JOURNAL_STREAM", std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino)}};
  auto p = ServiceProcess::start(o);
  ASSERT_TRUE(p) << p.error().message();
  auto exited = p->wait_exit(30s);
  ASSERT_TRUE(exited);
  EXPECT_TRUE(exited->success()) << p->log_text();
  auto text = p->log_text();
  EXPECT_NE(text.find("<6>plugin script"), std::string::npos) << text;
  EXPECT_EQ(text.find("\x1b["), std::string::npos) << "no colour codes in the journal";
}

}  // namespace
}  // namespace upparat::test
