// Tests of the script plugin: the real upparat-script.so, loaded with dlopen through its C
// entry point exactly as the daemon's loader does, running the real hook scripts of
// tests/script/hooks/.

#include <dlfcn.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <upparat/plugin.h>

#include "common/sanitize.hpp"
#include "common/stop_signal.hpp"
#include "script_test_util.hpp"

namespace upparat::script {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;
using test_util::kill_if_running;
using test_util::process_gone;
using test_util::read_text;
using test_util::ScratchDir;
using test_util::wait_for_pid_file;

enum class Step { Version, Download, Install, Restart, Ready };

struct Job {
  std::string meta = "meta";
  std::optional<std::string> file;
  bool force = false;
  std::int64_t seconds_since_first = 0;
  std::int32_t retry_count = 0;
  std::string signer;
};

struct Outcome {
  std::int32_t code = -1;
  std::string text;
  std::int64_t retry_after = 0;
};

/// What the host side of one step sees: progress lines, and the stop signal.
struct StepData {
  StopSignal stop;
  std::mutex mutex;
  std::vector<std::string> progress;
  std::function<void(const std::string&)> on_progress;
};

void progress_service(void* data, const char* line, std::int32_t percent) {
  auto* step = static_cast<StepData*>(data);
  EXPECT_EQ(percent, -1);
  const std::string text = line != nullptr ? line : "";
  {
    std::lock_guard<std::mutex> lock(step->mutex);
    step->progress.push_back(text);
  }
  if (step->on_progress) {
    step->on_progress(text);
  }
}
std::int32_t should_stop_service(void* data) {
  return static_cast<StepData*>(data)->stop.requested() ? 1 : 0;
}
const char* store_get_service(void*, const char*) {
  return nullptr;
}
std::int32_t store_set_service(void*, const char*, const char*) {
  return 0;
}

struct HostLog {
  std::mutex mutex;
  std::vector<std::string> lines;
};
void log_service(void* data, std::int32_t, const char* message) {
  auto* log = static_cast<HostLog*>(data);
  std::lock_guard<std::mutex> lock(log->mutex);
  log->lines.emplace_back(message);
}

/// The plugin .so, loaded for real, with at most one instance.
class LoadedScriptPlugin {
 public:
  LoadedScriptPlugin() {
    handle_ = ::dlopen(UPPARAT_SCRIPT_PLUGIN_PATH, RTLD_NOW | RTLD_LOCAL);
    if (handle_ == nullptr) {
      throw std::runtime_error(std::string("dlopen: ") + ::dlerror());
    }
    auto entry =
        reinterpret_cast<upparat_plugin_entry_fn>(::dlsym(handle_, UPPARAT_PLUGIN_ENTRY_SYMBOL));
    if (entry == nullptr) {
      throw std::runtime_error("no entry symbol");
    }
    descriptor_ = entry(UPPARAT_ABI_MAJOR, UPPARAT_ABI_MINOR);
    if (descriptor_ == nullptr) {
      throw std::runtime_error("plugin refused the host");
    }
    host_ = upparat_host{sizeof(upparat_host), 0, &log_, &log_service};
  }
  LoadedScriptPlugin(const LoadedScriptPlugin&) = delete;
  LoadedScriptPlugin& operator=(const LoadedScriptPlugin&) = delete;
  ~LoadedScriptPlugin() {
    if (instance_ != nullptr) {
      descriptor_->functions->destroy(instance_);
    }
    ::dlclose(handle_);
  }

  [[nodiscard]] const upparat_plugin_descriptor& descriptor() const { return *descriptor_; }

  /// Creates the instance; returns "" on success, else the plugin's message.
  std::string create(const std::map<std::string, std::string>& config) {
    std::vector<upparat_config_entry> entries;
    for (const auto& [key, value] : config) {
      entries.push_back({key.c_str(), value.c_str()});
    }
    const upparat_config cfg{sizeof(upparat_config), static_cast<std::uint32_t>(entries.size()),
                             entries.data()};
    char text[1024] = "";
    upparat_result result{sizeof(upparat_result), UPPARAT_FAILED, -1, text, sizeof text, 0};
    descriptor_->functions->create(&host_, &cfg, &instance_, &result);
    if (result.code == UPPARAT_OK && instance_ != nullptr) {
      return "";
    }
    EXPECT_EQ(instance_, nullptr);
    return text[0] != '\0' ? text : "(create failed without a message)";
  }

  /// The instance's answer to the ABI 1.1 `steps` function (UPPARAT_STEP_* bits).
  std::uint32_t steps() {
    EXPECT_NE(instance_, nullptr);
    EXPECT_NE(descriptor_->functions->steps, nullptr);
    return descriptor_->functions->steps(instance_);
  }

  Outcome run(Step step, const Job& job, StepData& data) {
    EXPECT_NE(instance_, nullptr);
    const upparat_plugin_functions& f = *descriptor_->functions;
    upparat_step_fn fn = step == Step::Version    ? f.version
                         : step == Step::Download ? f.download
                         : step == Step::Install  ? f.install
                         : step == Step::Restart  ? f.restart
                                                  : f.ready;
    const std::string document = "{\"version\":\"2.0.0\"}";
    upparat_job_context context{};
    context.struct_size = sizeof context;
    context.force = job.force ? 1 : 0;
    context.job_id = "upparat_42";
    context.execution_number = 1;
    context.version = "2.0.0";
    context.meta = job.meta.c_str();
    context.url = "https://example.invalid/fw.raucb";
    context.sha256 = nullptr;
    context.size = -1;
    context.document_json = document.c_str();
    context.file_path = job.file ? job.file->c_str() : nullptr;
    context.seconds_since_first = job.seconds_since_first;
    context.retry_count = job.retry_count;
    context.signer = job.signer.c_str();
    const upparat_step_services services{sizeof(upparat_step_services),
                                         0,
                                         &data,
                                         &progress_service,
                                         &should_stop_service,
                                         data.stop.fd(),
                                         0,
                                         &store_get_service,
                                         &store_set_service,
                                         -1,
                                         0,
                                         nullptr};
    char text[1024] = "";
    upparat_result result{sizeof(upparat_result), UPPARAT_FAILED, -1, text, sizeof text, 0};
    fn(instance_, &context, &services, &result);
    return Outcome{result.code, text, result.retry_after_seconds};
  }

  HostLog log_;

 private:
  void* handle_ = nullptr;
  const upparat_plugin_descriptor* descriptor_ = nullptr;
  upparat_host host_{};
  upparat_instance* instance_ = nullptr;
};

class ScriptPluginTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const auto& entry : std::filesystem::directory_iterator(UPPARAT_SCRIPT_HOOKS_DIR)) {
      if (entry.path().extension() == ".sh") {
        dir_.write(entry.path().filename().string(), read_text(entry.path()), 0755);
      }
    }
  }
  void TearDown() override {
    // Whatever a failed test left running.
    for (const char* name : {"child.pid", "grandchild.pid"}) {
      kill_if_running(static_cast<pid_t>(std::atoi(read_text(dir_.path() / name).c_str())));
    }
  }

  std::string hook(const std::string& name) const { return (dir_.path() / name).string(); }

  /// Creates an instance that runs `script` for `step` (and nothing else); fails the test when
  /// create refuses.
  void create_with(const std::string& step, const std::string& script,
                   std::map<std::string, std::string> extra = {}) {
    extra[step] = hook(script);
    const std::string error = plugin_.create(extra);
    ASSERT_EQ(error, "");
  }

  /// Arguments recorded by args.sh.
  std::vector<std::string> recorded_args() const {
    const std::string text = read_text(dir_.path() / "args.out");
    std::vector<std::string> args;
    std::size_t start = 0;
    for (std::size_t i = 0; i < text.size(); ++i) {
      if (text[i] == '\0') {
        args.push_back(text.substr(start, i - start));
        start = i + 1;
      }
    }
    return args;
  }

  ScratchDir dir_;
  LoadedScriptPlugin plugin_;
};

TEST_F(ScriptPluginTest, DescriptorNamesTheScriptPlugin) {
  EXPECT_STREQ(plugin_.descriptor().name, "script");
  EXPECT_EQ(plugin_.descriptor().abi_major, UPPARAT_ABI_MAJOR);
  EXPECT_EQ(plugin_.descriptor().capabilities, 0u) << "no streaming, interruptible";
}

TEST_F(ScriptPluginTest, VersionIsTheLastNonEmptyStdoutLine) {
  create_with("version", "version.sh");
  StepData data;
  const Outcome outcome = plugin_.run(Step::Version, Job{}, data);
  EXPECT_EQ(outcome.code, UPPARAT_OK) << outcome.text;
  EXPECT_EQ(outcome.text, "1.6.4-RELEASE");
  EXPECT_TRUE(data.progress.empty()) << "only install reports progress";
}

TEST_F(ScriptPluginTest, VersionHookPrintingNothingFails) {
  dir_.write("silent.sh", "#!/bin/sh\nexit 0\n", 0755);
  create_with("version", "silent.sh");
  StepData data;
  const Outcome outcome = plugin_.run(Step::Version, Job{}, data);
  EXPECT_EQ(outcome.code, UPPARAT_FAILED);
  EXPECT_NE(outcome.text.find("printed no version"), std::string::npos) << outcome.text;
}

TEST_F(ScriptPluginTest, UnconfiguredHooksAreNotSupported) {
  create_with("version", "version.sh");
  for (Step step : {Step::Download, Step::Install, Step::Restart, Step::Ready}) {
    StepData data;
    Job job;
    job.file = hook("version.sh");
    EXPECT_EQ(plugin_.run(step, job, data).code, UPPARAT_NOT_SUPPORTED);
  }
}

TEST_F(ScriptPluginTest, ServesOnlyTheStepsWithAHook) {
  EXPECT_EQ(plugin_.descriptor().abi_minor, UPPARAT_ABI_MINOR);
  ASSERT_EQ(plugin_.create({{"version", hook("version.sh")},
                            {"install", hook("args.sh")},
                            {"ready", ""},
                            {"kill_grace_seconds", "1"}}),
            "");
  EXPECT_EQ(plugin_.steps(), UPPARAT_STEP_VERSION | UPPARAT_STEP_INSTALL);
}

TEST_F(ScriptPluginTest, WithEveryHookItServesEveryStep) {
  std::map<std::string, std::string> config;
  for (const char* step : {"version", "download", "install", "restart", "ready"}) {
    config[step] = hook("args.sh");
  }
  ASSERT_EQ(plugin_.create(config), "");
  EXPECT_EQ(plugin_.steps(), UPPARAT_STEP_ALL);
}

TEST_F(ScriptPluginTest, WithoutHooksItServesNothing) {
  ASSERT_EQ(plugin_.create({{"kill_grace_seconds", "1"}}), "");
  EXPECT_EQ(plugin_.steps(), 0u);
}

TEST_F(ScriptPluginTest, EmptyHookValueMeansNotConfigured) {
  ASSERT_EQ(plugin_.create({{"version", hook("version.sh")}, {"ready", ""}}), "");
  StepData data;
  EXPECT_EQ(plugin_.run(Step::Ready, Job{}, data).code, UPPARAT_NOT_SUPPORTED);
}

TEST_F(ScriptPluginTest, ExitThreeIsRetryLaterWithTheReason) {
  create_with("download", "retry.sh");
  StepData data;
  Job job;
  job.retry_count = 2;
  const Outcome outcome = plugin_.run(Step::Download, job, data);
  EXPECT_EQ(outcome.code, UPPARAT_RETRY_LATER);
  EXPECT_EQ(outcome.retry_after, -1) << "the host applies retry_interval";
  EXPECT_EQ(outcome.text, "critical section active");
}

TEST_F(ScriptPluginTest, OtherExitCodesFailWithTheLastStderrLines) {
  create_with("ready", "fail.sh");
  StepData data;
  const Outcome outcome = plugin_.run(Step::Ready, Job{}, data);
  EXPECT_EQ(outcome.code, UPPARAT_FAILED);
  EXPECT_EQ(outcome.text, "exit code 1: second error | third error | fourth error");
}

TEST_F(ScriptPluginTest, KilledBySignalFails) {
  create_with("ready", "killed.sh");
  StepData data;
  const Outcome outcome = plugin_.run(Step::Ready, Job{}, data);
  EXPECT_EQ(outcome.code, UPPARAT_FAILED);
  EXPECT_EQ(outcome.text, "killed by signal SIGKILL: about to be killed");
}

TEST_F(ScriptPluginTest, InstallGetsTheClassicArgumentsExactly) {
  create_with("install", "args.sh");
  StepData data;
  Job job;
  job.meta = "a 'quoted' \"meta\" with $HOME, *, ; rm -rf / and\na newline \xC3\xA4";
  job.file = "/var/lib/upparat/upparat/upparat 42/fw bundle.raucb";
  job.seconds_since_first = 125;
  job.retry_count = 4;
  const Outcome outcome = plugin_.run(Step::Install, job, data);
  ASSERT_EQ(outcome.code, UPPARAT_OK) << outcome.text;
  EXPECT_EQ(recorded_args(), (std::vector<std::string>{"125", "4", job.meta, *job.file}));
  EXPECT_EQ(data.progress, (std::vector<std::string>{"recorded 4 arguments"}));
}

TEST_F(ScriptPluginTest, HooksGetTheSignerInTheirEnvironment) {
  create_with("install", "signer.sh");
  StepData data;
  Job job;
  job.file = "/var/lib/upparat/downloads/upparat_42";
  job.signer = "CN=Firmware 2026,O=Example";
  const Outcome signed_run = plugin_.run(Step::Install, job, data);
  ASSERT_EQ(signed_run.code, UPPARAT_OK) << signed_run.text;
  EXPECT_EQ(read_text(dir_.path() / "signer.out"), "CN=Firmware 2026,O=Example");
  // Unsigned: set and empty, whatever the daemon's own environment holds.
  ::setenv("UPPARAT_SIGNER", "inherited", 1);
  job.signer.clear();
  ASSERT_EQ(plugin_.run(Step::Install, job, data).code, UPPARAT_OK);
  ::unsetenv("UPPARAT_SIGNER");
  EXPECT_EQ(read_text(dir_.path() / "signer.out"), "");
}

TEST_F(ScriptPluginTest, RestartGetsForceAsTrueOrFalse) {
  create_with("restart", "args.sh");
  for (bool force : {true, false}) {
    StepData data;
    Job job;
    job.force = force;
    job.meta = "";
    const Outcome outcome = plugin_.run(Step::Restart, job, data);
    ASSERT_EQ(outcome.code, UPPARAT_OK) << outcome.text;
    EXPECT_EQ(recorded_args(), (std::vector<std::string>{"0", "0", "", force ? "True" : "False"}));
  }
}

TEST_F(ScriptPluginTest, VersionDownloadAndReadyGetThreeArguments) {
  ASSERT_EQ(plugin_.create({{"version", hook("args.sh")},
                            {"download", hook("args.sh")},
                            {"ready", hook("args.sh")}}),
            "");
  for (Step step : {Step::Version, Step::Download, Step::Ready}) {
    StepData data;
    Job job;
    job.meta = "m";
    job.seconds_since_first = 60;
    job.retry_count = 1;
    const Outcome outcome = plugin_.run(step, job, data);
    ASSERT_EQ(outcome.code, UPPARAT_OK) << outcome.text;
    EXPECT_EQ(recorded_args(), (std::vector<std::string>{"60", "1", "m"}));
  }
}

TEST_F(ScriptPluginTest, InstallOutputIsStreamedLineByLineAsProgress) {
  create_with("install", "stream.sh");
  StepData data;
  const auto seen = dir_.path() / "seen";
  data.on_progress = [&](const std::string& line) {
    if (line == "step one") {
      dir_.write("seen", "", 0644);
    }
  };
  Job job;
  job.file = "/tmp/fw.raucb";
  const Outcome outcome = plugin_.run(Step::Install, job, data);
  EXPECT_EQ(outcome.code, UPPARAT_OK) << outcome.text;
  EXPECT_EQ(outcome.text, "installed /tmp/fw.raucb");
  EXPECT_EQ(data.progress,
            (std::vector<std::string>{"step one", "step two", "installed /tmp/fw.raucb"}));
}

TEST_F(ScriptPluginTest, MegabytesOfOutputAndAGiantLineAreHandled) {
  create_with("install", "big_output.sh");
  StepData data;
  Job job;
  job.file = "/tmp/fw.raucb";
  const auto start = Clock::now();
  const Outcome outcome = plugin_.run(Step::Install, job, data);
  EXPECT_LT(Clock::now() - start, seconds(60));
  ASSERT_EQ(outcome.code, UPPARAT_OK) << outcome.text;
  std::size_t x_lines = 0;
  std::size_t y_bytes = 0;
  std::size_t longest = 0;
  for (const std::string& line : data.progress) {
    longest = std::max(longest, line.size());
    if (!line.empty() && line[0] == 'x') {
      ++x_lines;
    }
    if (!line.empty() && line[0] == 'y') {
      y_bytes += line.size();
    }
  }
  EXPECT_EQ(x_lines, 40000u);
  EXPECT_EQ(y_bytes, 3000000u) << "the giant line arrives whole, in pieces";
  EXPECT_LE(longest, 64u * 1024u) << "a line is capped";
  EXPECT_LE(outcome.text.size(), 1023u);
}

TEST_F(ScriptPluginTest, MegabytesOnStderrStillGiveAShortReason) {
  create_with("install", "big_stderr.sh");
  StepData data;
  Job job;
  job.file = "/tmp/fw.raucb";
  const Outcome outcome = plugin_.run(Step::Install, job, data);
  EXPECT_EQ(outcome.code, UPPARAT_FAILED);
  EXPECT_EQ(outcome.text.rfind("exit code 1: ", 0), 0u) << outcome.text.substr(0, 100);
  EXPECT_NE(outcome.text.find("disk full"), std::string::npos);
  EXPECT_LE(outcome.text.size(), 1000u);
}

TEST_F(ScriptPluginTest, StderrWithControlCharactersAndInvalidUtf8) {
  create_with("ready", "bad_stderr.sh");
  StepData data;
  const Outcome outcome = plugin_.run(Step::Ready, Job{}, data);
  EXPECT_EQ(outcome.code, UPPARAT_FAILED);
  // The plugin returns the hook's words; the host sanitises everything bound for the cloud.
  EXPECT_EQ(outcome.text, "exit code 2: bad\x01 \x1b[31mred\x1b[0m \xff\xfe bytes\tend");
  const std::string sanitised = sanitize_status_detail(outcome.text);
  EXPECT_EQ(sanitised.find('\x01'), std::string::npos);
  EXPECT_EQ(sanitised.find('\x1b'), std::string::npos);
  EXPECT_EQ(sanitised.find('\xff'), std::string::npos);
  EXPECT_NE(sanitised.find("\xEF\xBF\xBD"), std::string::npos) << "U+FFFD replaces bad bytes";
  EXPECT_EQ(sanitised.rfind("exit code 2: bad", 0), 0u) << sanitised;
}

TEST_F(ScriptPluginTest, StopEndsALongHookPromptly) {
  create_with("install", "long.sh");
  StepData data;
  Job job;
  job.file = "/tmp/fw.raucb";
  std::thread stopper([&] {
    wait_for_pid_file(dir_.path() / "child.pid", seconds(20));
    data.stop.request();
  });
  const auto start = Clock::now();
  const Outcome outcome = plugin_.run(Step::Install, job, data);
  const auto elapsed = Clock::now() - start;
  stopper.join();
  EXPECT_EQ(outcome.code, UPPARAT_FAILED);
  EXPECT_EQ(outcome.text, "stopped");
  EXPECT_LT(elapsed, seconds(9)) << "SIGTERM ends it, well before the default 10 s grace";
  const pid_t child = wait_for_pid_file(dir_.path() / "child.pid", milliseconds(0));
  EXPECT_TRUE(process_gone(child, seconds(5)));
}

TEST_F(ScriptPluginTest, HookIgnoringSigtermIsKilledAfterTheGrace) {
  create_with("restart", "ignore_term.sh", {{"kill_grace_seconds", "1"}});
  StepData data;
  std::thread stopper([&] {
    wait_for_pid_file(dir_.path() / "child.pid", seconds(20));
    data.stop.request();
  });
  const auto start = Clock::now();
  const Outcome outcome = plugin_.run(Step::Restart, Job{}, data);
  const auto elapsed = Clock::now() - start;
  stopper.join();
  EXPECT_EQ(outcome.code, UPPARAT_FAILED);
  EXPECT_EQ(outcome.text, "stopped");
  EXPECT_GE(elapsed, milliseconds(900)) << "SIGKILL must wait for the grace period";
  EXPECT_LT(elapsed, seconds(15));
  const pid_t child = wait_for_pid_file(dir_.path() / "child.pid", milliseconds(0));
  EXPECT_TRUE(process_gone(child, seconds(5)));
}

TEST_F(ScriptPluginTest, StopKillsChildAndGrandchild) {
  create_with("install", "grandchild.sh");
  StepData data;
  Job job;
  job.file = "/tmp/fw.raucb";
  std::thread stopper([&] {
    wait_for_pid_file(dir_.path() / "child.pid", seconds(20));
    data.stop.request();
  });
  const Outcome outcome = plugin_.run(Step::Install, job, data);
  stopper.join();
  EXPECT_EQ(outcome.text, "stopped");
  const pid_t child = wait_for_pid_file(dir_.path() / "child.pid", milliseconds(0));
  const pid_t grandchild = wait_for_pid_file(dir_.path() / "grandchild.pid", milliseconds(0));
  ASSERT_GT(child, 0);
  ASSERT_GT(grandchild, 0);
  EXPECT_TRUE(process_gone(child, seconds(5)));
  EXPECT_TRUE(process_gone(grandchild, seconds(5)));
}

TEST_F(ScriptPluginTest, StopKillsGrandchildThatIgnoresSigtermAndHoldsOutputOpen) {
  create_with("install", "stubborn_grandchild.sh", {{"kill_grace_seconds", "0.5"}});
  StepData data;
  Job job;
  job.file = "/tmp/fw.raucb";
  std::thread stopper([&] {
    wait_for_pid_file(dir_.path() / "child.pid", seconds(20));
    wait_for_pid_file(dir_.path() / "grandchild.pid", seconds(20));
    data.stop.request();
  });
  const auto start = Clock::now();
  const Outcome outcome = plugin_.run(Step::Install, job, data);
  stopper.join();
  EXPECT_LT(Clock::now() - start, seconds(15));
  EXPECT_EQ(outcome.text, "stopped");
  const pid_t grandchild = wait_for_pid_file(dir_.path() / "grandchild.pid", milliseconds(0));
  ASSERT_GT(grandchild, 0);
  EXPECT_TRUE(process_gone(grandchild, seconds(5)));
}

TEST_F(ScriptPluginTest, StopRequestedBeforeTheStepRunsNothing) {
  create_with("install", "args.sh");
  StepData data;
  data.stop.request();
  Job job;
  job.file = "/tmp/fw.raucb";
  const Outcome outcome = plugin_.run(Step::Install, job, data);
  EXPECT_EQ(outcome.code, UPPARAT_FAILED);
  EXPECT_EQ(outcome.text, "stopped");
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / "args.out"));
}

TEST_F(ScriptPluginTest, HookDeletedAfterStartupFailsTheStepClearly) {
  create_with("ready", "version.sh");
  std::filesystem::remove(dir_.path() / "version.sh");
  StepData data;
  const Outcome outcome = plugin_.run(Step::Ready, Job{}, data);
  EXPECT_EQ(outcome.code, UPPARAT_FAILED);
  EXPECT_NE(outcome.text.find("version.sh: cannot execute"), std::string::npos) << outcome.text;
}

// --- configuration errors at startup ------------------------------------------------------

TEST_F(ScriptPluginTest, MissingHookFailsCreate) {
  const std::string error = plugin_.create({{"install", hook("nope.sh")}});
  EXPECT_NE(error.find("hook 'install'"), std::string::npos) << error;
  EXPECT_NE(error.find("nope.sh"), std::string::npos) << error;
  EXPECT_NE(error.find("no such file"), std::string::npos) << error;
}

TEST_F(ScriptPluginTest, NonExecutableHookFailsCreate) {
  const std::string path = dir_.write("plain.sh", "#!/bin/sh\necho 1.0\n", 0644);
  const std::string error = plugin_.create({{"version", path}});
  EXPECT_NE(error.find("hook 'version'"), std::string::npos) << error;
  EXPECT_NE(error.find("not executable"), std::string::npos) << error;
}

TEST_F(ScriptPluginTest, DirectoryOrRelativeHookFailsCreate) {
  std::string error = plugin_.create({{"ready", dir_.path().string()}});
  EXPECT_NE(error.find("not a regular file"), std::string::npos) << error;
  error = plugin_.create({{"ready", "hooks/ready.sh"}});
  EXPECT_NE(error.find("must be absolute"), std::string::npos) << error;
}

TEST_F(ScriptPluginTest, UnknownKeyFailsCreateNamingIt) {
  std::string error = plugin_.create({{"install", hook("args.sh")}, {"install_from_url", "true"}});
  EXPECT_NE(error.find("unknown key 'install_from_url'"), std::string::npos) << error;
  error = plugin_.create({{"retry_interval", "60"}});
  EXPECT_NE(error.find("[retry]"), std::string::npos) << error;
}

TEST_F(ScriptPluginTest, InvalidKillGraceFailsCreate) {
  for (const char* value : {"", "abc", "-1", "10s", "1e9", "nan", "0x10", " 5", "1.2.3", "3601"}) {
    const std::string error = plugin_.create({{"kill_grace_seconds", value}});
    EXPECT_NE(error.find("kill_grace_seconds"), std::string::npos) << value << ": " << error;
  }
}

}  // namespace
}  // namespace upparat::script
