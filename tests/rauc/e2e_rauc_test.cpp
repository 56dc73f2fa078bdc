// End to end with the RAUC plugin: the real daemon, mosquitto and the Jobs + S3 emulator, and
// the real RAUC 1.8 service on a private D-Bus daemon (tests/rauc/rauc_system.hpp). A reboot
// is simulated: the restart command records it, the test kills the daemon (as a power cut
// would), starts `rauc service` again as if the other slot had booted, then the daemon.

#include <chrono>
#include <filesystem>
#include <string>

#include "daemon/e2e_fixture.hpp"
#include "rauc/rauc_system.hpp"

namespace upparat::test {
namespace {

using namespace e2e;  // NOLINT(google-build-using-namespace)
using rauc::RaucSystem;

class E2eRaucTest : public E2eFixture {
 protected:
  void SetUp() override {
    if (auto missing = rauc::missing_requirement(); !missing.empty()) {
      UPPARAT_SKIP() << missing;
    }
    E2eFixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) {
      return;
    }
    auto system = RaucSystem::create();
    ASSERT_TRUE(system) << system.error().message();
    rauc_.emplace(std::move(*system));
    ASSERT_TRUE(rauc_->start_service("A"));
    auto bundle = rauc_->bundle("good", "2.0.0");
    ASSERT_TRUE(bundle) << bundle.error().message();
    ASSERT_TRUE(emulator_->put_object(kBucket, kKey, rauc::read_all(*bundle)));
    std::ofstream(path("os-release")) << "VERSION_ID=1.0.0\n";
    restart_command_ = hook("restart", "echo reboot >> '" + path("reboots").string() + "'");
  }

  fs::path rauc_config(bool stream = false) {
    DaemonConfig c;
    c.state_dir = path("state");
    c.extra =
        "[steps]\nversion = \"rauc\"\ninstall = \"rauc\"\nrestart = \"rauc\"\n"
        "ready = \"rauc\"\n[plugins.rauc]\npath = \"" +
        std::string(UPPARAT_RAUC_PLUGIN) + "\"\nstream = " + (stream ? "true" : "false") +
        "\nbus_address = \"" + rauc_->bus_address() +
        "\"\ncall_timeout_seconds = 5\nversion_file = \"" + path("os-release").string() +
        "\"\nrestart = \"command\"\nrestart_command = \"" + restart_command_.string() +
        "\"\nreboot_wait_seconds = 120\n";
    c.jobs = "[jobs.deadlines]\ninstall = 60\n";
    return write_config(c);
  }

  /// Runs job `job_id` up to the restart, then "reboots" into `boot_slot`: kills the daemon,
  /// restarts RAUC as booted from that slot, and starts the daemon again.
  void install_and_reboot(const std::string& job_id, const fs::path& config,
                          const std::string& boot_slot, bool wipe_state = false) {
    daemon_.emplace(start_daemon(config));
    ASSERT_TRUE(daemon_->wait_for_line("ready: subscribed", 30s)) << daemon_->log_tail();
    create_job(job_id, document("2.0.0", "2.0.0"));
    ASSERT_TRUE(eventually([&] { return fs::exists(path("reboots")); }, 60s))
        << daemon_->log_tail();
    daemon_->kill9();
    daemon_.reset();
    if (wipe_state) {
      // The state folder lived on the slot that is no longer booted.
      fs::remove_all(path("state"));
    }
    ASSERT_TRUE(rauc_->reboot_into(boot_slot));
    daemon_.emplace(start_daemon(config, "upparat-after-reboot"));
  }

  std::optional<RaucSystem> rauc_;
  std::optional<ServiceProcess> daemon_;
  fs::path restart_command_;
};

TEST_F(E2eRaucTest, InstallRebootIntoBAndReadyMarksItGood) {
  install_and_reboot("upparat_rauc_good", rauc_config(), "B");
  if (HasFatalFailure()) {
    return;
  }
  auto v = wait_status("upparat_rauc_good", "SUCCEEDED", 60s);
  EXPECT_EQ(v.state, "complete_ready") << daemon_->log_tail();
  EXPECT_TRUE(contains(v.states, "installation_progress")) << join(v.states);
  EXPECT_TRUE(rauc_->slot_holds("B", "good")) << "slot B does not hold the bundle's image";
  EXPECT_EQ(rauc_->boot_state("B"), "good");
}

TEST_F(E2eRaucTest, EmptyStateFolderAfterTheRebootStillSucceeds) {
  install_and_reboot("upparat_rauc_wiped", rauc_config(), "B", true);
  if (HasFatalFailure()) {
    return;
  }
  auto v = wait_status("upparat_rauc_wiped", "SUCCEEDED", 60s);
  EXPECT_EQ(v.state, "complete_ready") << daemon_->log_tail();
  EXPECT_EQ(rauc_->boot_state("B"), "good");
}

TEST_F(E2eRaucTest, BootBackIntoAFailsNamingBothSlots) {
  install_and_reboot("upparat_rauc_rollback", rauc_config(), "A");
  if (HasFatalFailure()) {
    return;
  }
  auto v = wait_status("upparat_rauc_rollback", "FAILED", 60s);
  EXPECT_NE(v.message.find("booted slot rootfs.0 (bootname A), but the install made rootfs.1 "
                           "(bootname B) primary: the bootloader went back to the old slot"),
            std::string::npos)
      << v.state << ": " << v.message << "\n"
      << daemon_->log_tail();
}

TEST_F(E2eRaucTest, UrlInstallThroughDebiansRaucDownloadsTheBundleItself) {
  install_and_reboot("upparat_rauc_url", rauc_config(true), "B");
  if (HasFatalFailure()) {
    return;
  }
  auto v = wait_status("upparat_rauc_url", "SUCCEEDED", 60s);
  EXPECT_EQ(v.state, "complete_ready") << daemon_->log_tail();
  EXPECT_TRUE(rauc_->slot_holds("B", "good")) << "slot B does not hold the bundle's image";
  // RAUC fetched the bundle from S3 itself (Debian's RAUC: into its own temporary folder).
  EXPECT_NE(rauc::read_all(rauc_->path("rauc-service.log"))
                .find("Remote URI detected, downloading bundle"),
            std::string::npos);
  EXPECT_TRUE(fs::is_empty(path("state/downloads")));
}

// The daemon dies while RAUC installs; the daemon that starts next finds RAUC busy, waits, and
// takes the finished install of the job's version instead of installing a second time.
TEST_F(E2eRaucTest, DaemonKilledMidInstallDoesNotInstallTwice) {
  rauc_->slow_backend(4);
  const auto config = rauc_config();
  daemon_.emplace(start_daemon(config));
  ASSERT_TRUE(daemon_->wait_for_line("ready: subscribed", 30s)) << daemon_->log_tail();
  create_job("upparat_rauc_killed", document("2.0.0", "2.0.0"));
  ASSERT_TRUE(rauc_->service()->wait_for_line("Marking target slot", 30s));
  daemon_->kill9();
  daemon_.reset();
  daemon_.emplace(start_daemon(config, "upparat-restarted"));
  ASSERT_TRUE(eventually([&] { return fs::exists(path("reboots")); }, 60s)) << daemon_->log_tail();
  EXPECT_TRUE(daemon_->wait_for_line("finished; not installing it again", 5s))
      << daemon_->log_tail();
  std::string log = rauc_->bootloader_log();
  std::size_t installs = 0;
  for (auto at = log.find("set-primary"); at != std::string::npos;
       at = log.find("set-primary", at + 1)) {
    ++installs;
  }
  EXPECT_EQ(installs, 1u) << log;
}

// The documented example config/rauc.toml is a valid configuration of the plugin.
TEST_F(E2eRaucTest, TheExampleConfigurationIsValid) {
  std::string example = rauc::read_all(fs::path(UPPARAT_SOURCE_DIR) / "config/rauc.toml");
  const std::string path_line = "path = \"upparat-rauc.so\"";
  const auto at = example.find(path_line);
  ASSERT_NE(at, std::string::npos);
  example.replace(at, path_line.size(), "path = \"" + std::string(UPPARAT_RAUC_PLUGIN) + "\"");
  DaemonConfig c;
  c.state_dir = path("state");
  c.extra = example;
  auto ran = run_process({UPPARAT_DAEMON_BIN, "-c", write_config(c).string(), "--check-config"});
  ASSERT_TRUE(ran) << ran.error().message();
  EXPECT_TRUE(ran->status.success()) << ran->output;
}

}  // namespace
}  // namespace upparat::test
