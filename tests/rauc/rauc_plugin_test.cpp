// The RAUC plugin (upparat-rauc.so), loaded through the host's plugin loader, against the real
// RAUC 1.8 service on a private D-Bus daemon with file-backed slots (tests/rauc/rauc_system.hpp).

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/stop_signal.hpp"
#include "plugin/key_value_store.hpp"
#include "plugin/plugin.hpp"
#include "rauc/rauc_system.hpp"

namespace upparat::test::rauc {
namespace {

using plugin::JobContext;
using plugin::KeyValueStore;
using plugin::LoadedPlugin;
using plugin::Outcome;
using plugin::Step;
using plugin::StepResult;
using plugin::StepServices;

/// The daemon's side of a step: a stop signal, the job's store, the progress it receives.
struct Harness {
  StopSignal stop;
  KeyValueStore store;
  std::mutex mutex;
  std::vector<std::pair<std::string, int>> progress;

  StepServices services() {
    StepServices s;
    s.stop = &stop;
    s.store = &store;
    s.progress = [this](std::string_view line, int percent) {
      const std::lock_guard<std::mutex> lock(mutex);
      progress.emplace_back(std::string(line), percent);
    };
    return s;
  }
};

JobContext job(const std::string& version, std::optional<fs::path> file) {
  JobContext j;
  j.job_id = "upparat_rauc";
  j.execution_number = 1;
  j.version = version;
  j.url = "https://example.invalid/bundle.raucb";
  j.document_json = R"({"action":"update"})";
  j.file_path = std::move(file);
  return j;
}

std::string outcome(const StepResult& r) {
  switch (r.outcome) {
    case Outcome::Ok:
      return "OK: " + r.text;
    case Outcome::RetryLater:
      return "RETRY_LATER: " + r.text;
    case Outcome::Failed:
      return "FAILED: " + r.text;
    case Outcome::NotSupported:
      return "NOT_SUPPORTED";
  }
  return "?";
}

class RaucPluginTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto missing = missing_requirement(); !missing.empty()) {
      UPPARAT_SKIP() << missing;
    }
    auto system = RaucSystem::create();
    ASSERT_TRUE(system) << system.error().message();
    rauc_.emplace(std::move(*system));
    std::ofstream(rauc_->path("os-release")) << "NAME=Test\nVERSION_ID=\"1.0.0\"\n";
  }

  std::unique_ptr<LoadedPlugin> load(std::map<std::string, std::string> extra = {}) {
    std::map<std::string, std::string> config = {
        {"bus_address", rauc_->bus_address()},
        {"call_timeout_seconds", "2"},
        {"version_file", rauc_->path("os-release").string()},
        {"restart", "soft"}};
    for (auto& [k, v] : extra) {
      config[k] = v;
    }
    auto p = LoadedPlugin::load(UPPARAT_RAUC_PLUGIN, config);
    EXPECT_TRUE(p) << p.error().message();
    return p ? std::move(*p) : nullptr;
  }

  StepResult run(LoadedPlugin& p, Step step, const JobContext& j, Harness& h) {
    return p.run(step, j, h.services());
  }

  std::string service_log() const { return read_all(rauc_->path("rauc-service.log")); }

  std::optional<RaucSystem> rauc_;
};

TEST_F(RaucPluginTest, GoodBundleLandsInSlotBAndReadyMarksItGoodAfterTheReboot) {
  ASSERT_TRUE(rauc_->start_service("A"));
  auto bundle = rauc_->bundle("good", "2.0.0");
  ASSERT_TRUE(bundle) << bundle.error().message();
  auto p = load();
  ASSERT_TRUE(p);
  Harness h;
  // A factory slot has no bundle version in RAUC's status: the os-release file tells.
  EXPECT_EQ(outcome(run(*p, Step::Version, job("2.0.0", std::nullopt), h)), "OK: 1.0.0");

  auto r = run(*p, Step::Install, job("2.0.0", *bundle), h);
  ASSERT_EQ(r.outcome, Outcome::Ok) << outcome(r) << "\n" << service_log();
  EXPECT_TRUE(rauc_->slot_holds("B", "good")) << "slot B does not hold the bundle's image";
  EXPECT_EQ(h.store.get("rauc.primary_slot").value_or(""), "rootfs.1");
  EXPECT_EQ(h.store.get("rauc.primary_bootname").value_or(""), "B");
  {
    const std::lock_guard<std::mutex> lock(h.mutex);
    ASSERT_FALSE(h.progress.empty());
    EXPECT_EQ(h.progress.back().second, 100);
    bool installing_line = false;
    for (const auto& [line, percent] : h.progress) {
      installing_line = installing_line || line.find("Installing") != std::string::npos;
    }
    EXPECT_TRUE(installing_line) << "no progress line from RAUC";
  }

  ASSERT_TRUE(rauc_->reboot_into("B"));
  Harness after;
  after.store.set("rauc.primary_slot", "rootfs.1");
  after.store.set("rauc.primary_bootname", "B");
  EXPECT_EQ(outcome(run(*p, Step::Version, job("2.0.0", std::nullopt), after)), "OK: 2.0.0");
  EXPECT_EQ(rauc_->boot_state("B"), "bad") << "RAUC marks the target bad while installing";
  EXPECT_EQ(outcome(run(*p, Step::Ready, job("2.0.0", std::nullopt), after)), "OK: ");
  EXPECT_EQ(rauc_->boot_state("B"), "good");
}

TEST_F(RaucPluginTest, CompatibleMismatchFailsWithRaucsReason) {
  ASSERT_TRUE(rauc_->start_service("A"));
  auto bundle = rauc_->bundle("other", "2.0.0", "another-device");
  ASSERT_TRUE(bundle) << bundle.error().message();
  auto p = load();
  ASSERT_TRUE(p);
  Harness h;
  auto r = run(*p, Step::Install, job("2.0.0", *bundle), h);
  EXPECT_EQ(r.outcome, Outcome::Failed) << outcome(r);
  EXPECT_NE(r.text.find("Compatible mismatch: Expected 'upparat-test' but bundle manifest has "
                        "'another-device'"),
            std::string::npos)
      << r.text;
  EXPECT_FALSE(h.store.get("rauc.primary_slot"));
}

TEST_F(RaucPluginTest, TamperedBundleFailsWithRaucsSignatureError) {
  ASSERT_TRUE(rauc_->start_service("A"));
  auto bundle = rauc_->bundle("tampered", "2.0.0");
  ASSERT_TRUE(bundle) << bundle.error().message();
  {
    std::fstream f(*bundle, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(1000);
    f.put('\x5a');
  }
  auto p = load();
  ASSERT_TRUE(p);
  Harness h;
  auto r = run(*p, Step::Install, job("2.0.0", *bundle), h);
  EXPECT_EQ(r.outcome, Outcome::Failed) << outcome(r);
  EXPECT_NE(r.text.find("RAUC install failed: "), std::string::npos) << r.text;
  EXPECT_NE(r.text.find("signature"), std::string::npos) << r.text;
  EXPECT_FALSE(rauc_->slot_holds("B", "tampered")) << "the tampered image was written";
}

TEST_F(RaucPluginTest, ServiceNotRunningIsAClearError) {
  auto p = load();
  ASSERT_TRUE(p);
  Harness h;
  auto r = run(*p, Step::Install, job("2.0.0", rauc_->path("none.raucb")), h);
  EXPECT_EQ(outcome(r), "FAILED: the RAUC service (de.pengutronix.rauc) is not running on " +
                            rauc_->bus_address() + ": start it (systemctl start rauc)");
  // Right after a boot the service may still be starting: ready tries again later.
  EXPECT_EQ(run(*p, Step::Ready, job("2.0.0", std::nullopt), h).outcome, Outcome::RetryLater);
}

// A bus address whose socket is not there is refused before sdbus-c++ tries it (that library
// leaks on a failed connection, which the sanitizer pass reports).
TEST_F(RaucPluginTest, MissingBusSocketIsAClearErrorWithoutAConnectionAttempt) {
  const std::string socket = rauc_->path("no-bus").string();
  auto p = load({{"bus_address", "unix:path=" + socket}});
  ASSERT_TRUE(p);
  Harness h;
  auto r = run(*p, Step::Install, job("2.0.0", rauc_->path("none.raucb")), h);
  EXPECT_EQ(outcome(r), "FAILED: cannot connect to D-Bus at unix:path=" + socket +
                            ": no D-Bus socket at " + socket + ": No such file or directory");
}

TEST_F(RaucPluginTest, StoppedServiceIsARetryAfterTheCallTimeoutNotAHang) {
  ASSERT_TRUE(rauc_->start_service("A"));
  auto bundle = rauc_->bundle("good", "2.0.0");
  ASSERT_TRUE(bundle) << bundle.error().message();
  auto p = load();
  ASSERT_TRUE(p);
  ASSERT_TRUE(rauc_->service()->send_signal(SIGSTOP));
  Harness h;
  const auto start = std::chrono::steady_clock::now();
  auto r = run(*p, Step::Install, job("2.0.0", *bundle), h);
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(outcome(r),
            "RETRY_LATER: the RAUC service did not answer reading Operation within 2 s");
  EXPECT_LT(took, 10s);
  ASSERT_TRUE(rauc_->service()->send_signal(SIGCONT));
}

TEST_F(RaucPluginTest, BusyRaucIsARetryAndItsFinishedInstallOfTheSameVersionIsNotRepeated) {
  ASSERT_TRUE(rauc_->start_service("A"));
  auto bundle = rauc_->bundle("good", "2.0.0");
  ASSERT_TRUE(bundle) << bundle.error().message();
  rauc_->slow_backend(3);
  // An install this job started before the daemon restarted keeps RAUC busy.
  ASSERT_TRUE(rauc_->busctl({"call", "de.pengutronix.rauc", "/", "de.pengutronix.rauc.Installer",
                             "InstallBundle", "sa{sv}", bundle->string(), "0"}));
  ASSERT_TRUE(rauc_->service()->wait_for_line("Marking target slot", 30s));
  auto p = load({{"busy_wait_seconds", "0"}});
  ASSERT_TRUE(p);
  Harness h;
  auto r = run(*p, Step::Install, job("2.0.0", *bundle), h);
  EXPECT_EQ(outcome(r),
            "RETRY_LATER: RAUC is busy (operation 'installing'): waiting for its "
            "install to finish");
  EXPECT_FALSE(r.retry_after) << "the daemon's retry_interval applies";
  // The host tries again later; once RAUC is idle the plugin finds its version installed.
  ASSERT_TRUE(rauc_->service()->wait_for_line("succeeded", 30s));
  r = run(*p, Step::Install, job("2.0.0", *bundle), h);
  EXPECT_EQ(r.outcome, Outcome::Ok) << outcome(r);
  EXPECT_EQ(h.store.get("rauc.primary_bootname").value_or(""), "B");
  std::string log = rauc_->bootloader_log();
  std::size_t installs = 0;
  for (auto at = log.find("set-primary"); at != std::string::npos;
       at = log.find("set-primary", at + 1)) {
    ++installs;
  }
  EXPECT_EQ(installs, 1u) << log;
}

TEST_F(RaucPluginTest, ServiceKilledMidInstallFails) {
  ASSERT_TRUE(rauc_->start_service("A"));
  auto bundle = rauc_->bundle("good", "2.0.0");
  ASSERT_TRUE(bundle) << bundle.error().message();
  rauc_->slow_backend(20);
  auto p = load();
  ASSERT_TRUE(p);
  Harness h;
  auto running = std::async(std::launch::async,
                            [&] { return run(*p, Step::Install, job("2.0.0", *bundle), h); });
  ASSERT_TRUE(rauc_->service()->wait_for_line("Marking target slot", 30s));
  rauc_->service()->kill9();
  ASSERT_EQ(running.wait_for(15s), std::future_status::ready);
  auto r = running.get();
  EXPECT_EQ(r.outcome, Outcome::Failed) << outcome(r);
  EXPECT_NE(r.text.find("the RAUC service stopped during the install"), std::string::npos)
      << r.text;
}

TEST_F(RaucPluginTest, ServiceStoppedMidInstallFailsAfterTheTimeoutNotAHang) {
  ASSERT_TRUE(rauc_->start_service("A"));
  auto bundle = rauc_->bundle("good", "2.0.0");
  ASSERT_TRUE(bundle) << bundle.error().message();
  rauc_->slow_backend(20);
  auto p = load();
  ASSERT_TRUE(p);
  Harness h;
  auto running = std::async(std::launch::async,
                            [&] { return run(*p, Step::Install, job("2.0.0", *bundle), h); });
  ASSERT_TRUE(rauc_->service()->wait_for_line("Marking target slot", 30s));
  ASSERT_TRUE(rauc_->service()->send_signal(SIGSTOP));
  const bool ended = running.wait_for(15s) == std::future_status::ready;
  ASSERT_TRUE(rauc_->service()->send_signal(SIGCONT));
  ASSERT_TRUE(ended) << "the install did not end while RAUC was stopped";
  auto r = running.get();
  EXPECT_EQ(r.outcome, Outcome::Failed) << outcome(r);
  EXPECT_NE(r.text.find("the RAUC service stopped answering during the install"), std::string::npos)
      << r.text;
}

TEST_F(RaucPluginTest, BootIntoTheOldSlotFailsNamingBothSlots) {
  ASSERT_TRUE(rauc_->start_service("A"));
  auto p = load();
  ASSERT_TRUE(p);
  Harness h;
  h.store.set("rauc.primary_slot", "rootfs.1");
  h.store.set("rauc.primary_bootname", "B");
  const std::string reason =
      "FAILED: booted slot rootfs.0 (bootname A), but the install made rootfs.1 (bootname B) "
      "primary: the bootloader went back to the old slot";
  EXPECT_EQ(outcome(run(*p, Step::Ready, job("2.0.0", std::nullopt), h)), reason);
  EXPECT_EQ(outcome(run(*p, Step::Version, job("2.0.0", std::nullopt), h)), reason);
  EXPECT_EQ(rauc_->boot_state("A"), "good");
}

TEST_F(RaucPluginTest, EmptyStoreChecksTheBootedSlotsBundleVersion) {
  ASSERT_TRUE(rauc_->start_service("A"));
  auto bundle = rauc_->bundle("good", "2.0.0");
  ASSERT_TRUE(bundle) << bundle.error().message();
  auto p = load();
  ASSERT_TRUE(p);
  Harness h;
  ASSERT_EQ(run(*p, Step::Install, job("2.0.0", *bundle), h).outcome, Outcome::Ok);
  ASSERT_TRUE(rauc_->reboot_into("B"));
  Harness empty;  // the state folder lived on slot A
  EXPECT_EQ(outcome(run(*p, Step::Ready, job("3.0.0", std::nullopt), empty)),
            "FAILED: booted slot rootfs.1 (bootname B) holds bundle version '2.0.0', not the "
            "job's version '3.0.0': the bootloader went back to the old slot, or the bundle was "
            "not installed");
  EXPECT_EQ(outcome(run(*p, Step::Ready, job("2.0.0", std::nullopt), empty)), "OK: ");
  EXPECT_EQ(rauc_->boot_state("B"), "good");
}

TEST_F(RaucPluginTest, HealthCommandAndWaitingForSomeoneElseToMarkGood) {
  ASSERT_TRUE(rauc_->start_service("B"));
  ASSERT_TRUE(rauc_->busctl({"call", "de.pengutronix.rauc", "/", "de.pengutronix.rauc.Installer",
                             "Mark", "ss", "bad", "booted"}));
  const fs::path unhealthy = rauc_->path("unhealthy.sh");
  std::ofstream(unhealthy) << "#!/bin/sh\necho 'app did not start' >&2\nexit 1\n";
  fs::permissions(unhealthy, fs::perms::owner_all);
  Harness h;
  h.store.set("rauc.primary_bootname", "B");
  {
    auto p = load({{"health_command", unhealthy.string()}});
    ASSERT_TRUE(p);
    EXPECT_EQ(
        outcome(run(*p, Step::Ready, job("2.0.0", std::nullopt), h)),
        "FAILED: health command " + unhealthy.string() + " failed: exit code 1: app did not start");
    EXPECT_EQ(rauc_->boot_state("B"), "bad");
  }
  auto p = load({{"mark_good", "false"}});
  ASSERT_TRUE(p);
  EXPECT_EQ(outcome(run(*p, Step::Ready, job("2.0.0", std::nullopt), h)),
            "RETRY_LATER: waiting until the booted slot rootfs.1 (bootname B) is marked good");
  ASSERT_TRUE(rauc_->busctl({"call", "de.pengutronix.rauc", "/", "de.pengutronix.rauc.Installer",
                             "Mark", "ss", "good", "booted"}));
  EXPECT_EQ(outcome(run(*p, Step::Ready, job("2.0.0", std::nullopt), h)), "OK: ");
}

TEST_F(RaucPluginTest, RestartCommandFailsOrWaitsForTheSystemToGoDown) {
  const fs::path failing = rauc_->path("no-reboot.sh");
  std::ofstream(failing) << "#!/bin/sh\necho 'reboot: not allowed' >&2\nexit 1\n";
  fs::permissions(failing, fs::perms::owner_all);
  const fs::path rebooting = rauc_->path("reboot.sh");
  std::ofstream(rebooting) << "#!/bin/sh\necho reboot >> '" << rauc_->path("reboots").string()
                           << "'\n";
  fs::permissions(rebooting, fs::perms::owner_all);
  Harness h;
  {
    auto p = load({{"restart", "command"}, {"restart_command", failing.string()}});
    ASSERT_TRUE(p);
    EXPECT_EQ(outcome(run(*p, Step::Restart, job("2.0.0", std::nullopt), h)),
              "FAILED: restart command " + failing.string() +
                  " failed: exit code 1: reboot: not allowed");
  }
  auto p = load({{"restart", "command"},
                 {"restart_command", rebooting.string()},
                 {"reboot_wait_seconds", "1"}});
  ASSERT_TRUE(p);
  EXPECT_EQ(outcome(run(*p, Step::Restart, job("2.0.0", std::nullopt), h)),
            "FAILED: the reboot was requested, but the system still runs after 1 s");
  EXPECT_EQ(read_all(rauc_->path("reboots")), "reboot\n");
  // A stop (a cancel) ends the wait at once.
  p = load({{"restart", "command"},
            {"restart_command", rebooting.string()},
            {"reboot_wait_seconds", "60"}});
  ASSERT_TRUE(p);
  const auto start = std::chrono::steady_clock::now();
  auto stopper = std::async(std::launch::async, [&] {
    std::this_thread::sleep_for(300ms);
    h.stop.request();
  });
  EXPECT_EQ(outcome(run(*p, Step::Restart, job("2.0.0", std::nullopt), h)),
            "FAILED: stopped while waiting for the reboot");
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
}

// The conformance kit (upparat-plugin-check --conformance), as a vendor runs it, against the
// real service: the sample file is no bundle, so install fails with RAUC's reason; the install
// is not interruptible, so it is not asked to stop.
TEST_F(RaucPluginTest, PassesTheConformanceKit) {
  auto run =
      run_process({UPPARAT_PLUGIN_CHECK, "--conformance", "--allow-restart", UPPARAT_RAUC_PLUGIN,
                   "bus_address=" + rauc_->bus_address(), "call_timeout_seconds=2",
                   "version_file=" + rauc_->path("os-release").string(), "restart=soft"},
                  std::chrono::seconds(120));
  ASSERT_TRUE(run) << run.error().message();
  EXPECT_TRUE(run->status.success()) << run->output;
  EXPECT_NE(run->output.find("result: every check passed"), std::string::npos) << run->output;
  EXPECT_EQ(run->output.find("install: returned"), std::string::npos) << run->output;
}

TEST_F(RaucPluginTest, BadConfigurationIsRefusedWithTheReason) {
  auto p = LoadedPlugin::load(UPPARAT_RAUC_PLUGIN, {{"restart", "command"}});
  ASSERT_FALSE(p);
  EXPECT_NE(p.error().message().find("restart = 'command' needs restart_command"),
            std::string::npos)
      << p.error().message();
  p = LoadedPlugin::load(UPPARAT_RAUC_PLUGIN, {{"bus", "system"}});
  ASSERT_FALSE(p);
  EXPECT_NE(p.error().message().find("unknown key 'bus'"), std::string::npos)
      << p.error().message();
}

}  // namespace
}  // namespace upparat::test::rauc
