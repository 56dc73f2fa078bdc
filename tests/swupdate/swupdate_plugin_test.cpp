// Tests of the SWUpdate plugin: the real upparat-swupdate.so, loaded with dlopen through its C
// entry point as the daemon's loader does, installing signed archives through a real SWUpdate
// daemon (tests/support/swupdate.hpp) that writes its images into plain files.

#include <dlfcn.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <network_ipc.h>
#include <upparat/plugin.h>
#include <toml.hpp>

#include "common/stop_signal.hpp"
#include "support/binaries.hpp"
#include "support/swupdate.hpp"
#include "support/temp_dir.hpp"

namespace upparat::swupdate {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::seconds;
using test::SwuImage;
using test::SwuOptions;
using test::SwupdateFixture;
using test::TempDir;

enum class Step { Version, Install, Restart, Ready };

struct Outcome {
  std::int32_t code = -1;
  std::string text;
};

struct StepData {
  StopSignal stop;
  std::mutex mutex;
  std::vector<std::pair<std::string, int>> progress;
  /// Request the stop when the first progress line arrives (the transfer is under way).
  bool stop_on_progress = false;
  /// A streamed install: the read end of the stream and how it ended (stream_end_service).
  int stream_fd = -1;
  std::atomic<std::int32_t> stream_state{UPPARAT_STREAM_RUNNING};
  std::string stream_reason;  // Written before stream_state turns FAILED.
};

void progress_service(void* data, const char* line, std::int32_t percent) {
  auto* step = static_cast<StepData*>(data);
  std::lock_guard<std::mutex> lock(step->mutex);
  step->progress.emplace_back(line != nullptr ? line : "", percent);
  if (step->stop_on_progress) {
    step->stop.request();
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
void log_service(void*, std::int32_t, const char*) {}
std::int32_t stream_end_service(void* data, char* reason, std::uint32_t capacity) {
  auto* step = static_cast<StepData*>(data);
  const std::int32_t state = step->stream_state.load();
  if (state == UPPARAT_STREAM_FAILED && reason != nullptr && capacity > 0) {
    std::snprintf(reason, capacity, "%s", step->stream_reason.c_str());
  }
  return state;
}

/// The plugin .so, loaded for real, with at most one instance.
class LoadedPlugin {
 public:
  LoadedPlugin() {
    handle_ = ::dlopen(UPPARAT_SWUPDATE_PLUGIN_PATH, RTLD_NOW | RTLD_LOCAL);
    if (handle_ == nullptr) {
      throw std::runtime_error(std::string("dlopen: ") + ::dlerror());
    }
    auto entry =
        reinterpret_cast<upparat_plugin_entry_fn>(::dlsym(handle_, UPPARAT_PLUGIN_ENTRY_SYMBOL));
    if (entry == nullptr) {
      throw std::runtime_error("no entry symbol");
    }
    descriptor_ = entry(UPPARAT_ABI_MAJOR, UPPARAT_ABI_MINOR);
    host_ = upparat_host{sizeof(upparat_host), 0, nullptr, &log_service};
  }
  LoadedPlugin(const LoadedPlugin&) = delete;
  LoadedPlugin& operator=(const LoadedPlugin&) = delete;
  ~LoadedPlugin() {
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
    return text[0] != '\0' ? text : "(create failed without a message)";
  }

  std::uint32_t steps() { return descriptor_->functions->steps(instance_); }

  Outcome run(Step step, const std::optional<std::string>& file, StepData& data) {
    const upparat_plugin_functions& f = *descriptor_->functions;
    upparat_step_fn fn = step == Step::Version   ? f.version
                         : step == Step::Install ? f.install
                         : step == Step::Restart ? f.restart
                                                 : f.ready;
    upparat_job_context context{};
    context.struct_size = sizeof context;
    context.job_id = "upparat_42";
    context.execution_number = 1;
    context.version = "2.0.0";
    context.meta = "";
    context.url = "https://example.invalid/update.swu";
    context.size = -1;
    context.document_json = "{}";
    context.file_path = file ? file->c_str() : nullptr;
    const upparat_step_services services{sizeof(upparat_step_services),
                                         0,
                                         &data,
                                         &progress_service,
                                         &should_stop_service,
                                         data.stop.fd(),
                                         0,
                                         &store_get_service,
                                         &store_set_service,
                                         data.stream_fd,  // -1: an install from the file
                                         0,
                                         data.stream_fd >= 0 ? &stream_end_service : nullptr};
    char text[4096] = "";
    upparat_result result{sizeof(upparat_result), UPPARAT_FAILED, -1, text, sizeof text, 0};
    fn(instance_, &context, &services, &result);
    return Outcome{result.code, text};
  }

 private:
  void* handle_ = nullptr;
  const upparat_plugin_descriptor* descriptor_ = nullptr;
  upparat_host host_{};
  upparat_instance* instance_ = nullptr;
};

/// The folder of SWUpdate's sockets. libswupdate reads $TMPDIR once per process, so the whole
/// test program uses one folder, set before the first libswupdate call.
TempDir* g_socket_dir = nullptr;

class SocketDirEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    auto dir = TempDir::create("swupdate-sockets");
    ASSERT_TRUE(dir) << dir.error().message();
    dir_.emplace(std::move(*dir));
    g_socket_dir = &*dir_;
    ::setenv("TMPDIR", dir_->path().c_str(), 1);
  }
  void TearDown() override {
    g_socket_dir = nullptr;
    dir_.reset();
  }

 private:
  std::optional<TempDir> dir_;
};

const auto* const kEnvironment = ::testing::AddGlobalTestEnvironment(new SocketDirEnvironment);

std::string random_bytes(std::size_t size, unsigned seed) {
  std::string data(size, '\0');
  unsigned value = seed;
  for (char& c : data) {
    value = value * 1103515245U + 12345U;
    c = static_cast<char>(value >> 16);
  }
  return data;
}

/// Waits until the process is in the stopped state ('T' in /proc/<pid>/stat): kill() returns
/// before the signal took effect.
bool stopped(pid_t pid) {
  const auto until = Clock::now() + seconds(5);
  while (Clock::now() < until) {
    auto stat = test::read_file("/proc/" + std::to_string(pid) + "/stat");
    const auto paren = stat ? stat->rfind(')') : std::string::npos;
    if (paren != std::string::npos && paren + 2 < stat->size() && (*stat)[paren + 2] == 'T') {
      return true;
    }
    ::usleep(10 * 1000);
  }
  return false;
}

/// The host's side of a streamed install, as StreamPipe does it: the archive goes through a
/// socket pair, its last 4096 bytes held back until the end is decided. Complete sends them
/// and ends the stream COMPLETE; otherwise the stream ends FAILED without them.
class StreamFeeder {
 public:
  StreamFeeder(std::string archive, bool complete, StepData& data) {
    int fds[2] = {-1, -1};
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
      throw std::runtime_error("socketpair failed");
    }
    data.stream_fd = reader_ = fds[0];
    writer_ = fds[1];
    thread_ = std::thread([this, archive = std::move(archive), complete, &data] {
      const std::size_t tail = std::min<std::size_t>(archive.size(), 4096);
      const bool sent = send_all(archive.data(), archive.size() - tail);
      if (sent && complete && send_all(archive.data() + archive.size() - tail, tail)) {
        data.stream_state = UPPARAT_STREAM_COMPLETE;
      } else {
        data.stream_reason = "sha256: expected 0000, got something else";
        data.stream_state = UPPARAT_STREAM_FAILED;
      }
      ::shutdown(writer_, SHUT_WR);
    });
  }
  StreamFeeder(const StreamFeeder&) = delete;
  StreamFeeder& operator=(const StreamFeeder&) = delete;
  /// After the step returned: a writer still blocked fails once the reader is closed.
  ~StreamFeeder() {
    ::shutdown(reader_, SHUT_RDWR);
    thread_.join();
    ::close(reader_);
    ::close(writer_);
  }

 private:
  bool send_all(const char* data, std::size_t size) const {
    while (size > 0) {
      const ssize_t n = ::send(writer_, data, size, MSG_NOSIGNAL);
      if (n <= 0) {
        return false;
      }
      data += n;
      size -= static_cast<std::size_t>(n);
    }
    return true;
  }

  int reader_ = -1;
  int writer_ = -1;
  std::thread thread_;
};

class SwupdatePluginTest : public ::testing::Test {
 protected:
  void SetUp() override {
    UPPARAT_SKIP_UNLESS_EXECUTABLE(test::kSwupdatePath);
    UPPARAT_SKIP_UNLESS_EXECUTABLE(test::kCpioPath);
    UPPARAT_SKIP_UNLESS_EXECUTABLE(test::kOpensslPath);
    ASSERT_NE(g_socket_dir, nullptr);
    auto work = TempDir::create("swupdate");
    ASSERT_TRUE(work) << work.error().message();
    work_.emplace(std::move(*work));
    auto fixture = SwupdateFixture::create(work_->path(), g_socket_dir->path());
    ASSERT_TRUE(fixture) << fixture.error().message();
    swupdate_.emplace(std::move(*fixture));
    auto started = swupdate_->start();
    ASSERT_TRUE(started) << started.error().message();
  }
  void TearDown() override {
    if (swupdate_) {
      swupdate_->stop();
    }
  }

  fs::path target(const std::string& name) const { return work_->path() / name; }

  /// An archive with one image of `size` bytes written to target("out.bin").
  fs::path archive(const std::string& name, const std::string& content,
                   const SwuOptions& options = {}) {
    auto made =
        swupdate_->make_swu(name, {SwuImage{"image.bin", content, target("out.bin")}}, options);
    EXPECT_TRUE(made) << made.error().message();
    return made ? *made : fs::path();
  }

  std::string read(const fs::path& path) const {
    auto text = test::read_file(path);
    return text ? *text : std::string("<missing>");
  }

  std::optional<TempDir> work_;
  std::optional<SwupdateFixture> swupdate_;
  LoadedPlugin plugin_;
};

TEST_F(SwupdatePluginTest, DescriptorNamesTheSwupdatePlugin) {
  EXPECT_STREQ(plugin_.descriptor().name, "swupdate");
  EXPECT_EQ(plugin_.descriptor().capabilities, UPPARAT_CAP_INSTALL_STREAM);
  ASSERT_EQ(plugin_.create({}), "");
  EXPECT_EQ(plugin_.steps(), UPPARAT_STEP_INSTALL);
}

// The conformance kit (upparat-plugin-check --conformance), as a vendor runs it, against the
// real SWUpdate (its sockets under this process's TMPDIR, which the tool inherits): the sample
// file is no .swu, so SWUpdate refuses it and the install fails with SWUpdate's reason.
TEST_F(SwupdatePluginTest, PassesTheConformanceKit) {
  auto run =
      test::run_process({UPPARAT_PLUGIN_CHECK, "--conformance", UPPARAT_SWUPDATE_PLUGIN_PATH},
                        std::chrono::seconds(120));
  ASSERT_TRUE(run) << run.error().message();
  EXPECT_TRUE(run->status.success()) << run->output;
  EXPECT_NE(run->output.find("result: every check passed"), std::string::npos) << run->output;
  EXPECT_NE(run->output.find("ok    install: FAILED"), std::string::npos) << run->output;
}

TEST_F(SwupdatePluginTest, GoodArchiveWritesItsImageAndReportsProgress) {
  const std::string content = random_bytes(300 * 1024, 1);
  const fs::path swu = archive("good.swu", content);
  ASSERT_EQ(plugin_.create({}), "");
  StepData data;
  const Outcome outcome = plugin_.run(Step::Install, swu.string(), data);
  EXPECT_EQ(outcome.code, UPPARAT_OK) << outcome.text;
  EXPECT_TRUE(read(target("out.bin")) == content) << "the image was not written as it is";
  std::lock_guard<std::mutex> lock(data.mutex);
  bool saw_image = false;
  for (const auto& [line, percent] : data.progress) {
    if (line.find("step 1 of 1: image.bin") != std::string::npos) {
      saw_image = true;
      EXPECT_GE(percent, 0);
      EXPECT_LE(percent, 100);
    }
  }
  EXPECT_TRUE(saw_image) << "no progress line names the image (" << data.progress.size()
                         << " lines)";
}

TEST_F(SwupdatePluginTest, CorruptedImageFailsWithSwupdatesHashMismatch) {
  SwuOptions options;
  options.corrupt_first_image = true;
  const fs::path swu = archive("bad.swu", random_bytes(64 * 1024, 2), options);
  ASSERT_EQ(plugin_.create({}), "");
  StepData data;
  const Outcome outcome = plugin_.run(Step::Install, swu.string(), data);
  EXPECT_EQ(outcome.code, UPPARAT_FAILED);
  EXPECT_NE(outcome.text.find("HASH mismatch"), std::string::npos) << outcome.text;
}

TEST_F(SwupdatePluginTest, DryRunWritesNothing) {
  const fs::path swu = archive("dry.swu", random_bytes(64 * 1024, 3));
  ASSERT_EQ(plugin_.create({{"dry_run", "true"}}), "");
  StepData data;
  const Outcome outcome = plugin_.run(Step::Install, swu.string(), data);
  EXPECT_EQ(outcome.code, UPPARAT_OK) << outcome.text;
  EXPECT_FALSE(fs::exists(target("out.bin")));
}

TEST_F(SwupdatePluginTest, WithoutDryRunSwupdatesOwnDryRunSettingHolds) {
  // swupdate -n: every install is a dry run; the plugin must not override it.
  auto restarted = swupdate_->start({"-n"});
  ASSERT_TRUE(restarted) << restarted.error().message();
  const fs::path swu = archive("dry.swu", random_bytes(64 * 1024, 12));
  ASSERT_EQ(plugin_.create({}), "");
  StepData data;
  const Outcome outcome = plugin_.run(Step::Install, swu.string(), data);
  EXPECT_EQ(outcome.code, UPPARAT_OK) << outcome.text;
  EXPECT_FALSE(fs::exists(target("out.bin")));
}

TEST_F(SwupdatePluginTest, ArchivePaddedAtItsEndSucceedsFromTheFinalStatus) {
  // SWUpdate 2022.12 stops reading after the padding it expects and closes its socket: a
  // client still writing gets EPIPE or ECONNRESET although the install succeeded.
  const std::string content = random_bytes(128 * 1024, 4);
  SwuOptions options;
  options.trailing_padding = 1024 * 1024;
  const fs::path swu = archive("padded.swu", content, options);
  ASSERT_EQ(plugin_.create({}), "");
  StepData data;
  const Outcome outcome = plugin_.run(Step::Install, swu.string(), data);
  EXPECT_EQ(outcome.code, UPPARAT_OK) << outcome.text;
  EXPECT_TRUE(read(target("out.bin")) == content);
}

TEST_F(SwupdatePluginTest, SoftwareSetAndRunningModeSelectTheImages) {
  const std::string content = random_bytes(32 * 1024, 5);
  SwuOptions options;
  options.software_set = "stable";
  options.running_mode = "main";
  const fs::path swu = archive("set.swu", content, options);
  ASSERT_EQ(plugin_.create({{"software_set", "stable"}, {"running_mode", "main"}}), "");
  StepData data;
  const Outcome outcome = plugin_.run(Step::Install, swu.string(), data);
  EXPECT_EQ(outcome.code, UPPARAT_OK) << outcome.text;
  EXPECT_TRUE(read(target("out.bin")) == content);
}

TEST_F(SwupdatePluginTest, StoppedDaemonIsRetryLaterSayingSwupdateIsNotRunning) {
  const fs::path swu = archive("good.swu", random_bytes(1024, 6));
  swupdate_->stop();
  ASSERT_EQ(plugin_.create({}), "");
  StepData data;
  const Outcome outcome = plugin_.run(Step::Install, swu.string(), data);
  EXPECT_EQ(outcome.code, UPPARAT_RETRY_LATER);
  EXPECT_NE(outcome.text.find("SWUpdate is not running"), std::string::npos) << outcome.text;
}

TEST_F(SwupdatePluginTest, BusyDaemonIsRetryLater) {
  const fs::path swu = archive("good.swu", random_bytes(1024, 7));
  // Another client's install that has not sent its archive yet keeps SWUpdate busy.
  swupdate_request request{};
  ::swupdate_prepare_req(&request);
  const int other = ::ipc_inst_start_ext(&request, sizeof(request));
  ASSERT_GE(other, 0);
  // SWUpdate acknowledges before its installer thread takes the request (and until then it
  // would acknowledge a second one): wait until its status says RUN.
  bool running = false;
  for (const auto until = Clock::now() + seconds(10); !running && Clock::now() < until;) {
    ipc_message status{};
    running = ::ipc_get_status_timeout(&status, 500) > 0 && status.data.status.current == RUN;
  }
  ASSERT_TRUE(running) << "SWUpdate did not start the other client's install";
  ASSERT_EQ(plugin_.create({}), "");
  StepData data;
  const Outcome outcome = plugin_.run(Step::Install, swu.string(), data);
  ::ipc_end(other);
  EXPECT_EQ(outcome.code, UPPARAT_RETRY_LATER);
  EXPECT_NE(outcome.text.find("busy"), std::string::npos) << outcome.text;
}

TEST_F(SwupdatePluginTest, SigstoppedDaemonFailsWithinTheAnswerTimeout) {
  const fs::path swu = archive("good.swu", random_bytes(1024, 8));
  ASSERT_TRUE(swupdate_->daemon()->send_signal(SIGSTOP));
  ASSERT_TRUE(stopped(swupdate_->daemon()->pid())) << "swupdate did not stop on SIGSTOP";
  ASSERT_EQ(plugin_.create({{"answer_timeout_seconds", "1"}}), "");
  StepData data;
  const auto start = Clock::now();
  const Outcome outcome = plugin_.run(Step::Install, swu.string(), data);
  const auto took = Clock::now() - start;
  EXPECT_EQ(outcome.code, UPPARAT_FAILED);
  EXPECT_NE(outcome.text.find("does not answer"), std::string::npos) << outcome.text;
  EXPECT_LT(took, seconds(5));
  // Its abandoned requests may make it die of SIGPIPE once it runs again: TearDown stops it.
}

TEST_F(SwupdatePluginTest, StopBeforeTheInstallFailsPromptlyAndWritesNothing) {
  const fs::path swu = archive("good.swu", random_bytes(64 * 1024, 9));
  ASSERT_EQ(plugin_.create({}), "");
  StepData data;
  data.stop.request();
  const Outcome outcome = plugin_.run(Step::Install, swu.string(), data);
  EXPECT_EQ(outcome.code, UPPARAT_FAILED);
  EXPECT_NE(outcome.text.find("stopped"), std::string::npos) << outcome.text;
  EXPECT_FALSE(fs::exists(target("out.bin")));
}

TEST_F(SwupdatePluginTest, StopDuringTheTransferAbortsAndSwupdateTakesTheNextInstall) {
  // 16 MiB: far more than the socket buffers hold, so SWUpdate reports its first progress
  // while the plugin is still writing.
  const fs::path big = archive("big.swu", random_bytes(16 * 1024 * 1024, 10));
  ASSERT_EQ(plugin_.create({}), "");
  StepData data;
  data.stop_on_progress = true;
  const Outcome stopped_outcome = plugin_.run(Step::Install, big.string(), data);
  EXPECT_EQ(stopped_outcome.code, UPPARAT_FAILED);
  EXPECT_NE(stopped_outcome.text.find("before the whole archive reached SWUpdate"),
            std::string::npos)
      << stopped_outcome.text;

  // SWUpdate aborted that install: it runs the next one (after it is idle again; the plugin
  // answers RETRY_LATER while it is still busy).
  const std::string content = random_bytes(32 * 1024, 11);
  const fs::path small = archive("small.swu", content);
  Outcome next;
  const auto until = Clock::now() + seconds(20);
  do {
    StepData again;
    next = plugin_.run(Step::Install, small.string(), again);
  } while (next.code == UPPARAT_RETRY_LATER && Clock::now() < until);
  EXPECT_EQ(next.code, UPPARAT_OK) << next.text;
  EXPECT_TRUE(read(target("out.bin")) == content);
}

TEST_F(SwupdatePluginTest, StopAfterTheLastByteWaitsStopWaitForTheResult) {
  // A small archive is written at once; SWUpdate's first progress comes after the last byte,
  // and its post-install script keeps it busy for 4 s after that.
  const std::string content = random_bytes(4 * 1024, 13);
  SwuOptions options;
  options.postinstall_sleep_seconds = 4;
  const fs::path swu = archive("slow.swu", content, options);

  ASSERT_EQ(plugin_.create({{"stop_wait_seconds", "1"}}), "");
  StepData short_wait;
  short_wait.stop_on_progress = true;
  auto start = Clock::now();
  const Outcome gave_up = plugin_.run(Step::Install, swu.string(), short_wait);
  EXPECT_EQ(gave_up.code, UPPARAT_FAILED);
  EXPECT_NE(gave_up.text.find("stopped; SWUpdate did not report a result within 1 s"),
            std::string::npos)
      << gave_up.text;
  EXPECT_LT(Clock::now() - start, seconds(3));

  // With a longer wait the stop does not cut the install short: SWUpdate's result counts.
  LoadedPlugin patient;
  ASSERT_EQ(patient.create({{"stop_wait_seconds", "15"}}), "");
  Outcome waited;
  const auto until = Clock::now() + seconds(20);
  do {
    StepData long_wait;
    long_wait.stop_on_progress = true;
    waited = patient.run(Step::Install, swu.string(), long_wait);
  } while (waited.code == UPPARAT_RETRY_LATER && Clock::now() < until);
  EXPECT_EQ(waited.code, UPPARAT_OK) << waited.text;
  EXPECT_TRUE(read(target("out.bin")) == content);
}

TEST_F(SwupdatePluginTest, BackToBackInstallsNeverHang) {
  // Each install starts as soon as the previous one ended: SWUpdate 2022.12 then sometimes
  // acknowledges a request that its installer never takes. That must be RETRY_LATER within
  // answer_timeout_seconds, never a wait for result_timeout_seconds.
  const std::string content = random_bytes(2 * 1024, 14);
  const fs::path swu = archive("tiny.swu", content);
  ASSERT_EQ(plugin_.create({{"answer_timeout_seconds", "2"}, {"result_timeout_seconds", "8"}}), "");
  int succeeded = 0;
  for (int i = 0; i < 12; ++i) {
    StepData data;
    const auto start = Clock::now();
    const Outcome outcome = plugin_.run(Step::Install, swu.string(), data);
    EXPECT_LT(Clock::now() - start, seconds(6)) << "install " << i << ": " << outcome.text;
    if (outcome.code == UPPARAT_OK) {
      ++succeeded;
    } else {
      EXPECT_EQ(outcome.code, UPPARAT_RETRY_LATER) << "install " << i << ": " << outcome.text;
    }
  }
  EXPECT_GT(succeeded, 0);
}

TEST_F(SwupdatePluginTest, StreamedArchiveIsInstalledOnceTheStreamEndsComplete) {
  const std::string content = random_bytes(300 * 1024, 15);
  auto bytes = test::read_file(archive("stream.swu", content));
  ASSERT_TRUE(bytes) << bytes.error().message();
  ASSERT_EQ(plugin_.create({}), "");
  StepData data;
  Outcome outcome;
  {
    StreamFeeder feeder(*bytes, true, data);
    outcome = plugin_.run(Step::Install, std::nullopt, data);
  }
  EXPECT_EQ(outcome.code, UPPARAT_OK) << outcome.text;
  EXPECT_TRUE(read(target("out.bin")) == content) << "the image was not written as it is";
}

TEST_F(SwupdatePluginTest, FailedStreamAbortsSwupdateWithTheHostsReason) {
  // The image is the archive's last member: SWUpdate writes most of it while it streams, but
  // without the held-back tail it never completes it nor reads the archive's end.
  const std::string content = random_bytes(300 * 1024, 16);
  auto bytes = test::read_file(archive("stream.swu", content));
  ASSERT_TRUE(bytes) << bytes.error().message();
  ASSERT_EQ(plugin_.create({}), "");
  StepData data;
  Outcome outcome;
  {
    StreamFeeder feeder(*bytes, false, data);
    outcome = plugin_.run(Step::Install, std::nullopt, data);
  }
  EXPECT_EQ(outcome.code, UPPARAT_FAILED);
  EXPECT_NE(outcome.text.find("the stream failed"), std::string::npos) << outcome.text;
  EXPECT_NE(outcome.text.find("sha256: expected 0000"), std::string::npos) << outcome.text;
  EXPECT_FALSE(read(target("out.bin")) == content) << "SWUpdate installed a failed stream";
  EXPECT_EQ(outcome.text.find("nevertheless"), std::string::npos) << outcome.text;

  // SWUpdate failed that install and is idle again: the next one succeeds at once.
  const std::string next_content = random_bytes(32 * 1024, 17);
  StepData again;
  const Outcome next =
      plugin_.run(Step::Install, archive("next.swu", next_content).string(), again);
  EXPECT_EQ(next.code, UPPARAT_OK) << next.text;
  EXPECT_TRUE(read(target("out.bin")) == next_content);
}

TEST_F(SwupdatePluginTest, StreamOfAPaddedArchiveSucceedsAfterSwupdateClosedEarly) {
  // SWUpdate closes its socket after the archive's end and before the padding: the plugin
  // reads the rest of the stream, learns that it is complete, and takes SWUpdate's result.
  const std::string content = random_bytes(128 * 1024, 18);
  SwuOptions options;
  options.trailing_padding = 1024 * 1024;
  auto bytes = test::read_file(archive("padded.swu", content, options));
  ASSERT_TRUE(bytes) << bytes.error().message();
  ASSERT_EQ(plugin_.create({}), "");
  StepData data;
  Outcome outcome;
  {
    StreamFeeder feeder(*bytes, true, data);
    outcome = plugin_.run(Step::Install, std::nullopt, data);
    EXPECT_EQ(data.stream_state.load(), UPPARAT_STREAM_COMPLETE);
  }
  EXPECT_EQ(outcome.code, UPPARAT_OK) << outcome.text;
  EXPECT_TRUE(read(target("out.bin")) == content);
}

TEST_F(SwupdatePluginTest, MissingFileFailsClearly) {
  ASSERT_EQ(plugin_.create({}), "");
  StepData data;
  const Outcome outcome = plugin_.run(Step::Install, target("none.swu").string(), data);
  EXPECT_EQ(outcome.code, UPPARAT_FAILED);
  EXPECT_NE(outcome.text.find("cannot open"), std::string::npos) << outcome.text;
}

// Configuration, version, ready and restart need no daemon but share the fixture's folder.
using SwupdatePluginConfigTest = SwupdatePluginTest;

TEST_F(SwupdatePluginConfigTest, RefusesBadConfigurationsSayingWhatToDo) {
  EXPECT_NE(plugin_.create({{"colour", "blue"}}).find("unknown key 'colour'"), std::string::npos);
  EXPECT_NE(plugin_.create({{"software_set", "stable"}}).find("set both or neither"),
            std::string::npos);
  EXPECT_NE(plugin_.create({{"dry_run", "yes"}}).find("expected true or false"), std::string::npos);
  EXPECT_NE(plugin_.create({{"stall_timeout_seconds", "0"}}).find("above 0"), std::string::npos);
  EXPECT_NE(plugin_.create({{"version_file", "/etc/sw-versions"}}).find("version_name"),
            std::string::npos);
  EXPECT_NE(plugin_.create({{"ready_command", "relative.sh"}}).find("absolute"), std::string::npos);
  const std::string wrong_dir = plugin_.create({{"control_socket_dir", "/nonexistent"}});
  EXPECT_NE(wrong_dir.find("set TMPDIR=/nonexistent"), std::string::npos) << wrong_dir;
  EXPECT_EQ(plugin_.create({{"control_socket_dir", g_socket_dir->path().string()}}), "");
}

TEST_F(SwupdatePluginConfigTest, VersionFromAnSwVersionsFile) {
  auto file = work_->write_file("sw-versions", "# name version\nbootloader 2.1\nrootfs 1.4.2\n");
  ASSERT_TRUE(file);
  ASSERT_EQ(plugin_.create({{"version_file", file->string()}, {"version_name", "rootfs"}}), "");
  EXPECT_EQ(plugin_.steps(), UPPARAT_STEP_INSTALL | UPPARAT_STEP_VERSION);
  StepData data;
  const Outcome outcome = plugin_.run(Step::Version, std::nullopt, data);
  EXPECT_EQ(outcome.code, UPPARAT_OK);
  EXPECT_EQ(outcome.text, "1.4.2");
}

TEST_F(SwupdatePluginConfigTest, VersionFromAKeyFileAndAMissingKeyFails) {
  auto file = work_->write_file("os-release", "NAME=\"Demo\"\nVERSION_ID=\"3.0.1\"\n");
  ASSERT_TRUE(file);
  ASSERT_EQ(plugin_.create({{"version_file", file->string()}, {"version_key", "VERSION_ID"}}), "");
  StepData data;
  const Outcome found = plugin_.run(Step::Version, std::nullopt, data);
  EXPECT_EQ(found.code, UPPARAT_OK);
  EXPECT_EQ(found.text, "3.0.1");

  LoadedPlugin other;
  ASSERT_EQ(other.create({{"version_file", file->string()}, {"version_key", "BUILD_ID"}}), "");
  const Outcome missing = other.run(Step::Version, std::nullopt, data);
  EXPECT_EQ(missing.code, UPPARAT_FAILED);
  EXPECT_NE(missing.text.find("has no key 'BUILD_ID'"), std::string::npos) << missing.text;
}

TEST_F(SwupdatePluginConfigTest, VersionReadyAndRestartRunTheirCommands) {
  auto version = work_->write_file("version.sh", "#!/bin/sh\necho 4.5.6\n");
  auto ready = work_->write_file("ready.sh", "#!/bin/sh\necho unhealthy: disk >&2\nexit 1\n");
  auto restart = work_->write_file("restart.sh", "#!/bin/sh\ntouch \"$0.ran\"\n");
  ASSERT_TRUE(version && ready && restart);
  for (const auto& path : {*version, *ready, *restart}) {
    fs::permissions(path, fs::perms::owner_all);
  }
  ASSERT_EQ(plugin_.create({{"version_command", version->string()},
                            {"ready_command", ready->string()},
                            {"restart_command", restart->string()}}),
            "");
  EXPECT_EQ(plugin_.steps(), UPPARAT_STEP_ALL & ~UPPARAT_STEP_DOWNLOAD);
  StepData data;
  const Outcome v = plugin_.run(Step::Version, std::nullopt, data);
  EXPECT_EQ(v.code, UPPARAT_OK);
  EXPECT_EQ(v.text, "4.5.6");
  const Outcome r = plugin_.run(Step::Ready, std::nullopt, data);
  EXPECT_EQ(r.code, UPPARAT_FAILED);
  EXPECT_NE(r.text.find("unhealthy: disk"), std::string::npos) << r.text;
  const Outcome s = plugin_.run(Step::Restart, std::nullopt, data);
  EXPECT_EQ(s.code, UPPARAT_OK) << s.text;
  EXPECT_TRUE(fs::exists(restart->string() + ".ran"));
}

TEST_F(SwupdatePluginConfigTest, TheExampleConfigurationIsAccepted) {
  // config/swupdate.toml's [plugins.swupdate] as the daemon hands it over (without its own key
  // `path`), with the example commands pointed at an executable of this test.
  auto command = work_->write_file("command.sh", "#!/bin/sh\nexit 0\n");
  ASSERT_TRUE(command);
  fs::permissions(*command, fs::perms::owner_all);
  const auto data = toml::parse(fs::path(UPPARAT_SOURCE_DIR) / "config/swupdate.toml");
  std::map<std::string, std::string> config;
  for (const auto& [key, value] : toml::find(data, "plugins", "swupdate").as_table()) {
    if (key == "path") {
      continue;
    }
    if (value.is_string()) {
      config[key] = value.as_string().str;
    } else if (value.is_boolean()) {
      config[key] = value.as_boolean() ? "true" : "false";
    } else {
      config[key] = toml::format(value);
    }
    if (key.size() > 8 && key.compare(key.size() - 8, 8, "_command") == 0) {
      config[key] = command->string();
    }
  }
  EXPECT_GE(config.size(), 8U);
  EXPECT_EQ(plugin_.create(config), "");
}

TEST_F(SwupdatePluginConfigTest, RefusesBadRestartSettings) {
  auto command = work_->write_file("restart.sh", "#!/bin/sh\nexit 0\n");
  ASSERT_TRUE(command);
  fs::permissions(*command, fs::perms::owner_all);
  EXPECT_NE(plugin_.create({{"restart", "reboot"}}).find("expected command"), std::string::npos);
  EXPECT_NE(plugin_.create({{"restart", "command"}}).find("needs restart_command"),
            std::string::npos);
  EXPECT_NE(plugin_.create({{"restart", "logind"}, {"restart_command", command->string()}})
                .find("only with restart = 'command'"),
            std::string::npos);
  EXPECT_NE(plugin_.create({{"post_update_reboots", "maybe"}}).find("expected true or false"),
            std::string::npos);
  EXPECT_EQ(plugin_.create({{"restart", "logind"}}), "");
  EXPECT_EQ(plugin_.steps(), UPPARAT_STEP_INSTALL | UPPARAT_STEP_RESTART);
}

TEST_F(SwupdatePluginConfigTest, ReadyCommandIsKilledAfterItsTimeoutAndExitThreeIsRetryLater) {
  auto slow = work_->write_file("slow.sh", "#!/bin/sh\nexec sleep 30\n");
  auto later = work_->write_file("later.sh", "#!/bin/sh\necho not yet >&2\nexit 3\n");
  ASSERT_TRUE(slow && later);
  fs::permissions(*slow, fs::perms::owner_all);
  fs::permissions(*later, fs::perms::owner_all);
  ASSERT_EQ(plugin_.create({{"ready_command", slow->string()}, {"ready_timeout_seconds", "0.5"}}),
            "");
  StepData data;
  const auto start = Clock::now();
  const Outcome timed_out = plugin_.run(Step::Ready, std::nullopt, data);
  EXPECT_EQ(timed_out.code, UPPARAT_FAILED);
  EXPECT_NE(timed_out.text.find("ready_command did not end within 1 s"), std::string::npos)
      << timed_out.text;
  EXPECT_LT(Clock::now() - start, seconds(12));

  LoadedPlugin other;
  ASSERT_EQ(other.create({{"ready_command", later->string()}}), "");
  const Outcome retry = other.run(Step::Ready, std::nullopt, data);
  EXPECT_EQ(retry.code, UPPARAT_RETRY_LATER);
  EXPECT_EQ(retry.text, "not yet");
}

// restart = "swupdate": SWUpdate runs its post-update command (swupdate -p) on the plugin's
// POST_UPDATE request.
TEST_F(SwupdatePluginConfigTest, RestartRunsSwupdatesPostUpdateCommand) {
  const fs::path marker = target("post-update.ran");
  auto script =
      work_->write_file("post-update.sh", "#!/bin/sh\necho ran >> " + marker.string() + "\n");
  ASSERT_TRUE(script);
  fs::permissions(*script, fs::perms::owner_all);
  auto restarted = swupdate_->start({"-p", script->string()});
  ASSERT_TRUE(restarted) << restarted.error().message();

  // A post-update command that does not reboot: a soft restart that finished.
  ASSERT_EQ(plugin_.create({{"restart", "swupdate"}, {"post_update_reboots", "false"}}), "");
  EXPECT_EQ(plugin_.steps(), UPPARAT_STEP_INSTALL | UPPARAT_STEP_RESTART);
  StepData data;
  const Outcome soft = plugin_.run(Step::Restart, std::nullopt, data);
  EXPECT_EQ(soft.code, UPPARAT_OK) << soft.text;
  EXPECT_EQ(read(marker), "ran\n");

  // One that should reboot: the step waits for the system to go down, and fails when it
  // still runs after reboot_wait_seconds.
  LoadedPlugin rebooting;
  ASSERT_EQ(rebooting.create({{"restart", "swupdate"}, {"reboot_wait_seconds", "0.5"}}), "");
  StepData again;
  const Outcome still_up = rebooting.run(Step::Restart, std::nullopt, again);
  EXPECT_EQ(still_up.code, UPPARAT_FAILED);
  EXPECT_NE(still_up.text.find("the reboot was requested, but the system still runs after 1 s"),
            std::string::npos)
      << still_up.text;
  EXPECT_EQ(read(marker), "ran\nran\n");
}

TEST_F(SwupdatePluginConfigTest, RestartFailsWhenThePostUpdateCommandFails) {
  auto script = work_->write_file("post-update.sh", "#!/bin/sh\nexit 1\n");
  ASSERT_TRUE(script);
  fs::permissions(*script, fs::perms::owner_all);
  auto restarted = swupdate_->start({"-p", script->string()});
  ASSERT_TRUE(restarted) << restarted.error().message();
  ASSERT_EQ(plugin_.create({{"restart", "swupdate"}}), "");
  StepData data;
  const Outcome failed = plugin_.run(Step::Restart, std::nullopt, data);
  EXPECT_EQ(failed.code, UPPARAT_FAILED);
  EXPECT_NE(failed.text.find("SWUpdate's post-update command failed"), std::string::npos)
      << failed.text;

  swupdate_->stop();
  const Outcome not_running = plugin_.run(Step::Restart, std::nullopt, data);
  EXPECT_EQ(not_running.code, UPPARAT_RETRY_LATER);
  EXPECT_NE(not_running.text.find("SWUpdate is not running"), std::string::npos)
      << not_running.text;
}

// restart = "logind" goes through plugin_system's reboot: a bus that is not there fails the
// step with a clear reason, within its time limit. (A real reboot is tested under systemd in
// tests/systemd for the RAUC plugin, which shares the code.)
TEST_F(SwupdatePluginConfigTest, RestartThroughLogindFailsClearlyWithoutTheBus) {
  ASSERT_EQ(plugin_.create({{"restart", "logind"},
                            {"logind_bus_address", "unix:path=" + target("no-bus").string()}}),
            "");
  StepData data;
  const auto start = Clock::now();
  const Outcome failed = plugin_.run(Step::Restart, std::nullopt, data);
  EXPECT_EQ(failed.code, UPPARAT_FAILED);
  EXPECT_NE(failed.text.find("cannot ask systemd-logind"), std::string::npos) << failed.text;
  EXPECT_LT(Clock::now() - start, seconds(30));
}

}  // namespace
}  // namespace upparat::swupdate
