// The script plugin as the daemon uses it: loaded through upparat::plugin::LoadedPlugin (the
// real loader), so what these tests see is what reaches the state machine and the cloud.

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/stop_signal.hpp"
#include "plugin/plugin.hpp"
#include "script_test_util.hpp"

namespace upparat::script {
namespace {

using plugin::LoadedPlugin;
using plugin::Outcome;
using plugin::Step;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;
using test_util::kill_if_running;
using test_util::process_gone;
using test_util::read_text;
using test_util::ScratchDir;
using test_util::wait_for_pid_file;

class ScriptPluginLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const auto& entry : std::filesystem::directory_iterator(UPPARAT_SCRIPT_HOOKS_DIR)) {
      if (entry.path().extension() == ".sh") {
        dir_.write(entry.path().filename().string(), read_text(entry.path()), 0755);
      }
    }
  }
  void TearDown() override {
    for (const char* name : {"child.pid", "grandchild.pid"}) {
      kill_if_running(static_cast<pid_t>(std::atoi(read_text(dir_.path() / name).c_str())));
    }
  }

  std::string hook(const std::string& name) const { return (dir_.path() / name).string(); }

  Result<std::unique_ptr<LoadedPlugin>> load(const std::map<std::string, std::string>& config) {
    return LoadedPlugin::load(UPPARAT_SCRIPT_PLUGIN_PATH, config);
  }

  plugin::StepResult run(LoadedPlugin& loaded, Step step, const plugin::JobContext& job,
                         const StopSignal& stop, std::vector<std::string>* progress = nullptr) {
    plugin::StepServices services;
    services.stop = &stop;
    services.store = &store_;
    std::mutex mutex;
    services.progress = [&](std::string_view line, int percent) {
      EXPECT_EQ(percent, -1);
      if (progress != nullptr && !line.empty()) {
        std::lock_guard<std::mutex> lock(mutex);
        progress->emplace_back(line);
      }
    };
    return loaded.run(step, job, services);
  }

  ScratchDir dir_;
  plugin::KeyValueStore store_;
};

TEST_F(ScriptPluginLoaderTest, InspectShowsTheDescriptor) {
  auto info = LoadedPlugin::inspect(UPPARAT_SCRIPT_PLUGIN_PATH);
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->name, "script");
  EXPECT_EQ(info->capabilities, 0u);
}

TEST_F(ScriptPluginLoaderTest, VersionAndExitCodes) {
  auto loaded = load({{"version", hook("version.sh")},
                      {"download", hook("retry.sh")},
                      {"ready", hook("fail.sh")}});
  ASSERT_TRUE(loaded) << loaded.error().message();
  StopSignal stop;
  plugin::JobContext job;
  job.meta = "meta";

  auto version = run(**loaded, Step::Version, job, stop);
  EXPECT_EQ(version.outcome, Outcome::Ok);
  EXPECT_EQ(version.text, "1.6.4-RELEASE");

  auto download = run(**loaded, Step::Download, job, stop);
  EXPECT_EQ(download.outcome, Outcome::RetryLater);
  EXPECT_EQ(download.text, "critical section active");
  EXPECT_FALSE(download.retry_after.has_value()) << "the daemon's retry_interval applies";

  auto ready = run(**loaded, Step::Ready, job, stop);
  EXPECT_EQ(ready.outcome, Outcome::Failed);
  EXPECT_EQ(ready.text, "exit code 1: second error | third error | fourth error");

  EXPECT_EQ(run(**loaded, Step::Restart, job, stop).outcome, Outcome::NotSupported);
}

TEST_F(ScriptPluginLoaderTest, ServesOnlyTheStepsWithAHook) {
  auto loaded = load({{"install", hook("args.sh")}, {"restart", hook("args.sh")}});
  ASSERT_TRUE(loaded) << loaded.error().message();
  EXPECT_FALSE((*loaded)->serves(Step::Version));
  EXPECT_FALSE((*loaded)->serves(Step::Download));
  EXPECT_TRUE((*loaded)->serves(Step::Install));
  EXPECT_TRUE((*loaded)->serves(Step::Restart));
  EXPECT_FALSE((*loaded)->serves(Step::Ready));
}

TEST_F(ScriptPluginLoaderTest, FailureTextIsSanitisedForTheCloud) {
  auto loaded = load({{"ready", hook("bad_stderr.sh")}});
  ASSERT_TRUE(loaded) << loaded.error().message();
  StopSignal stop;
  auto result = run(**loaded, Step::Ready, plugin::JobContext{}, stop);
  EXPECT_EQ(result.outcome, Outcome::Failed);
  // Control characters (\x01, ESC, TAB) became spaces, \xff\xfe became U+FFFD.
  EXPECT_EQ(result.text.rfind("exit code 2: bad", 0), 0u) << result.text;
  for (char c : result.text) {
    EXPECT_FALSE(static_cast<unsigned char>(c) < 0x20 || c == 0x7f) << result.text;
  }
  EXPECT_EQ(result.text.find('\xff'), std::string::npos);
  EXPECT_NE(result.text.find("\xEF\xBF\xBD"), std::string::npos);
  EXPECT_NE(result.text.find("red"), std::string::npos);
}

TEST_F(ScriptPluginLoaderTest, InstallProgressAndArguments) {
  auto loaded = load({{"install", hook("big_output.sh")}, {"restart", hook("args.sh")}});
  ASSERT_TRUE(loaded) << loaded.error().message();
  StopSignal stop;
  plugin::JobContext job;
  job.file_path = "/tmp/fw.raucb";
  std::vector<std::string> progress;
  auto install = run(**loaded, Step::Install, job, stop, &progress);
  EXPECT_EQ(install.outcome, Outcome::Ok) << install.text;
  EXPECT_GE(progress.size(), 40000u);

  job.meta = "two words";
  job.force = true;
  job.seconds_since_first = 3;
  job.retry_count = 1;
  auto restart = run(**loaded, Step::Restart, job, stop);
  EXPECT_EQ(restart.outcome, Outcome::Ok) << restart.text;
  const char expected[] =
      "3\0"
      "1\0"
      "two words\0"
      "True";  // NUL-separated, NUL-ended
  EXPECT_EQ(read_text(dir_.path() / "args.out"), std::string(expected, sizeof expected));
}

TEST_F(ScriptPluginLoaderTest, StopKillsTheWholeGroup) {
  auto loaded = load({{"install", hook("grandchild.sh")}, {"kill_grace_seconds", "2"}});
  ASSERT_TRUE(loaded) << loaded.error().message();
  StopSignal stop;
  plugin::JobContext job;
  job.file_path = "/tmp/fw.raucb";
  std::thread stopper([&] {
    wait_for_pid_file(dir_.path() / "grandchild.pid", seconds(20));
    wait_for_pid_file(dir_.path() / "child.pid", seconds(20));
    stop.request();
  });
  const auto start = Clock::now();
  auto result = run(**loaded, Step::Install, job, stop);
  stopper.join();
  EXPECT_LT(Clock::now() - start, seconds(15));
  EXPECT_EQ(result.outcome, Outcome::Failed);
  EXPECT_EQ(result.text, "stopped");
  EXPECT_TRUE(
      process_gone(wait_for_pid_file(dir_.path() / "child.pid", milliseconds(0)), seconds(5)));
  EXPECT_TRUE(
      process_gone(wait_for_pid_file(dir_.path() / "grandchild.pid", milliseconds(0)), seconds(5)));
}

TEST_F(ScriptPluginLoaderTest, ConfigurationErrorsAreLoadErrors) {
  dir_.write("plain.sh", "#!/bin/sh\n", 0644);
  auto loaded = load({{"install", hook("plain.sh")}});
  ASSERT_FALSE(loaded);
  EXPECT_NE(loaded.error().message().find("not executable"), std::string::npos)
      << loaded.error().message();

  loaded = load({{"install", hook("missing.sh")}});
  ASSERT_FALSE(loaded);
  EXPECT_NE(loaded.error().message().find("no such file"), std::string::npos)
      << loaded.error().message();

  loaded = load({{"install_from_url", "true"}});
  ASSERT_FALSE(loaded);
  EXPECT_NE(loaded.error().message().find("install_from_url"), std::string::npos)
      << loaded.error().message();
}

}  // namespace
}  // namespace upparat::script
