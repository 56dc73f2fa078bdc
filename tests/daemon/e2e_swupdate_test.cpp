// End to end with the SWUpdate plugin: the real daemon downloads a signed .swu from the
// emulator's S3 and installs it through a real SWUpdate daemon (tests/support/swupdate.hpp),
// which writes the image into a plain file. Then the same streamed (`stream = true`): the
// plugin feeds SWUpdate while the daemon downloads, through the emulator's S3 cutting
// connections, letting the URL expire and slowing the transfer so the daemon can be SIGKILLed.

#include <algorithm>
#include <filesystem>
#include <optional>
#include <string>

#include "e2e_fixture.hpp"
#include "support/digest.hpp"
#include "support/swupdate.hpp"

namespace upparat::test::e2e {
namespace {

class E2eSwupdateTest : public E2eFixture {
 protected:
  void SetUp() override {
    E2eFixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) {
      return;
    }
    UPPARAT_SKIP_UNLESS_EXECUTABLE(kSwupdatePath);
    UPPARAT_SKIP_UNLESS_EXECUTABLE(kCpioPath);
    fs::create_directories(path("swupdate"));
    fs::create_directories(path("sockets"));
    auto fixture = SwupdateFixture::create(path("swupdate"), path("sockets"));
    ASSERT_TRUE(fixture) << fixture.error().message();
    swupdate_.emplace(std::move(*fixture));
    auto started = swupdate_->start();
    ASSERT_TRUE(started) << started.error().message();
  }
  void TearDown() override {
    if (swupdate_) {
      swupdate_->stop();
    }
    E2eFixture::TearDown();
  }

  /// Puts a signed archive whose image SWUpdate writes to installed.bin on the emulator's S3.
  void publish(const std::string& image, const SwuOptions& options = {}) {
    auto swu = swupdate_->make_swu("update.swu",
                                   {SwuImage{"rootfs.img", image, path("installed.bin")}}, options);
    ASSERT_TRUE(swu) << swu.error().message();
    auto content = read_file(*swu);
    ASSERT_TRUE(content) << content.error().message();
    auto put = emulator_->put_object(kBucket, kKey, *content);
    ASSERT_TRUE(put) << put.error().message();
    archive_ = std::move(*content);
  }

  /// The daemon with the script plugin for the version and the SWUpdate plugin for the
  /// install, reaching SWUpdate's sockets through TMPDIR as libswupdate wants.
  /// With `stream`, the install is streamed (the daemon's `stream = true`).
  ServiceProcess start_swupdate_daemon(bool stream = false, const std::string& name = "upparat") {
    const std::string d = dir_->path().string();
    hooks_["version"] = hook("version", "cat '" + d + "/installed_version'");
    auto config =
        write_config(path("state"),
                     "[steps]\nversion = \"script\"\ninstall = \"swupdate\"\n"
                     "[plugins.swupdate]\npath = \"" UPPARAT_SWUPDATE_PLUGIN
                     "\"\n"
                     "control_socket_dir = \"" +
                         path("sockets").string() + "\"\n" + (stream ? "stream = true\n" : ""));
    ProcessOptions o;
    o.argv = {UPPARAT_DAEMON_BIN, "-c", config.string(), "-v"};
    o.name = name;
    o.log_path = path("upparat-" + std::to_string(logs_.size()) + ".log");
    o.env = {{"TMPDIR", path("sockets").string()}};
    o.stop_grace = 15s;
    logs_.push_back(o.log_path);
    auto p = ServiceProcess::start(o);
    EXPECT_TRUE(p) << p.error().message();
    return std::move(*p);
  }

  /// A document with the archive's size and this sha256 (the stream's tail is held back until
  /// both match).
  std::string stream_document(const std::string& sha256) const {
    return std::string("{\"action\":\"update\",\"version\":\"2.0.0\",\"file\":\"") +
           "${aws:iot:s3-presigned-url:https://" + kBucket + ".s3.amazonaws.com/" + kKey + "}" +
           "\",\"sha256\":\"" + sha256 + "\",\"size\":" + std::to_string(archive_.size()) +
           ",\"force\":false,\"meta\":\"2.0.0\"}";
  }
  std::string good_document() const { return stream_document(sha256_hex(archive_)); }

  /// A 2 MiB image (large enough for cuts and a slowed first transfer, small enough to be
  /// quick), published as the archive's only image.
  void publish_stream_image() {
    image_.resize(2 * 1024 * 1024 + 123);
    std::uint32_t x = 4711;
    for (auto& c : image_) {
      x = x * 1103515245U + 12345U;
      c = static_cast<char>(x >> 24);
    }
    publish(image_);
  }

  bool installed_identical() const { return read_text(path("installed.bin")) == image_; }

  /// A streamed install: download_start, then installation_start, and no local copy.
  void expect_streamed(const CloudView& v) {
    const auto& s = v.states;
    const auto download = std::find(s.begin(), s.end(), "download_start");
    const auto install = std::find(s.begin(), s.end(), "installation_start");
    ASSERT_NE(download, s.end()) << join(s);
    ASSERT_NE(install, s.end()) << join(s);
    EXPECT_LT(download, install) << join(s);
    EXPECT_TRUE(contains(s, "installation_progress")) << join(s);
    std::error_code ec;
    EXPECT_TRUE(!fs::exists(path("state/downloads"), ec) ||
                fs::is_empty(path("state/downloads"), ec));
  }

  std::optional<SwupdateFixture> swupdate_;
  std::string archive_;
  std::string image_;
};

TEST_F(E2eSwupdateTest, DownloadedArchiveIsInstalledBySwupdate) {
  std::string image(512 * 1024, '\0');
  for (std::size_t i = 0; i < image.size(); ++i) {
    image[i] = static_cast<char>((i * 131) ^ (i >> 9));
  }
  publish(image);
  auto daemon = start_swupdate_daemon();
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_job("upparat_swu", document("2.0.0", "2.0.0"));
  auto view = wait_status("upparat_swu", "SUCCEEDED");
  EXPECT_EQ(view.state, "no_restart_hook_provided") << join(view.states);
  for (const char* state : {"download_start", "installation_start", "installation_progress"}) {
    EXPECT_TRUE(contains(view.states, state)) << state << " missing in " << join(view.states);
  }
  EXPECT_TRUE(read_text(path("installed.bin")) == image) << "the installed image differs";
}

TEST_F(E2eSwupdateTest, CorruptedImageFailsWithSwupdatesReason) {
  SwuOptions options;
  options.corrupt_first_image = true;
  publish(std::string(64 * 1024, 'u'), options);
  auto daemon = start_swupdate_daemon();
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_job("upparat_swu_bad", document("2.0.0", "2.0.0"));
  auto view = wait_status("upparat_swu_bad", "FAILED");
  EXPECT_NE(view.message.find("HASH mismatch"), std::string::npos)
      << view.message << " / " << join(view.states);
}

TEST_F(E2eSwupdateTest, StreamedArchiveIsInstalledWhileItDownloads) {
  publish_stream_image();
  auto daemon = start_swupdate_daemon(true);
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_job("upparat_swu_stream", good_document());
  auto v = wait_status("upparat_swu_stream", "SUCCEEDED", 60s);
  EXPECT_EQ(v.state, "no_restart_hook_provided") << join(v.states) << daemon.log_tail();
  expect_streamed(v);
  EXPECT_TRUE(installed_identical()) << "the installed image differs";
  EXPECT_EQ(s3_body_bytes_sent(), archive_.size());
}

// The connection is cut twice in the middle of the stream (a FIN, then an RST): the download
// resumes where it stopped, SWUpdate only sees the bytes pause, and every byte was sent once.
TEST_F(E2eSwupdateTest, TwoCutsMidStreamStillInstallTheIdenticalImage) {
  publish_stream_image();
  ASSERT_TRUE(emulator_->add_s3_fault(kBucket, kKey, R"("closeAfterBytes":500000)"));
  ASSERT_TRUE(emulator_->add_s3_fault(kBucket, kKey, R"("resetAfterBytes":700000)"));
  auto daemon = start_swupdate_daemon(true);
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_job("upparat_swu_cuts", good_document());
  auto v = wait_status("upparat_swu_cuts", "SUCCEEDED", 60s);
  EXPECT_EQ(v.state, "no_restart_hook_provided") << join(v.states) << daemon.log_tail();
  expect_streamed(v);
  EXPECT_TRUE(installed_identical()) << "the installed image differs";
  EXPECT_EQ(s3_body_bytes_sent(), archive_.size());
}

// The pre-signed URL expires in the middle of the stream: the daemon fetches a fresh URL while
// SWUpdate waits, and the stream goes on where it stopped.
TEST_F(E2eSwupdateTest, AnUrlExpiringMidStreamIsRenewedWhileSwupdateWaits) {
  publish_stream_image();
  ASSERT_TRUE(emulator_->add_s3_fault(
      kBucket, kKey, R"("stallAfterBytes":400000,"stallMs":3000,"closeAfterBytes":500000)"));
  auto daemon = start_swupdate_daemon(true);
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_job("upparat_swu_expiry", good_document(), kThing, 60);
  ASSERT_TRUE(eventually([&] { return s3_body_bytes_sent() > 0; })) << daemon.log_tail();
  ASSERT_TRUE(emulator_->advance_clock(120s));
  auto v = wait_status("upparat_swu_expiry", "SUCCEEDED", 60s);
  EXPECT_EQ(v.state, "no_restart_hook_provided") << join(v.states) << daemon.log_tail();
  EXPECT_TRUE(contains(v.states, "download_interrupt")) << join(v.states);
  expect_streamed(v);
  EXPECT_TRUE(installed_identical()) << "the installed image differs";
  EXPECT_LE(s3_body_bytes_sent(), archive_.size() + 1024);
}

// The document's sha256 is wrong: the daemon holds back the archive's tail, the plugin closes
// the install socket and SWUpdate aborts: the image is never completed, the job FAILS.
TEST_F(E2eSwupdateTest, AWrongSha256FailsTheStreamedInstallAndNothingIsInstalled) {
  publish_stream_image();
  auto daemon = start_swupdate_daemon(true);
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_job("upparat_swu_badsum", stream_document(std::string(64, '0')));
  auto v = wait_status("upparat_swu_badsum", "FAILED", 60s);
  EXPECT_EQ(v.state, "installation_hook_failed") << join(v.states);
  const auto reason = v.message.find("sha256: expected 0000");
  EXPECT_NE(reason, std::string::npos) << v.message;
  EXPECT_EQ(v.message.find("sha256: expected 0000", reason + 1), std::string::npos)
      << "the reason twice: " << v.message;
  EXPECT_NE(v.message.find("SWUpdate was not given the archive's end"), std::string::npos)
      << v.message;
  EXPECT_FALSE(installed_identical()) << "SWUpdate installed the image of a failed stream";
  // Its image ended early, so SWUpdate refused it.
  EXPECT_NE(read_text(path("swupdate/swupdate.log")).find("Not installing"), std::string::npos)
      << read_text(path("swupdate/swupdate.log"));
}

// SIGKILL in the middle of the stream: SWUpdate aborts the install whose socket closed, and the
// restarted daemon streams the archive again from byte 0; the job SUCCEEDS.
TEST_F(E2eSwupdateTest, SigkillMidStreamSucceedsAfterTheRestartFromByteZero) {
  publish_stream_image();
  // The first transfer only is slowed (about 10 s for the archive).
  ASSERT_TRUE(emulator_->add_s3_fault(kBucket, kKey, R"("rateLimitBytesPerSecond":200000)"));
  std::optional<ServiceProcess> daemon;
  daemon.emplace(start_swupdate_daemon(true));
  ASSERT_TRUE(daemon->wait_for_line("ready: subscribed", 30s)) << daemon->log_tail();
  create_job("upparat_swu_kill", good_document());
  ASSERT_TRUE(eventually([&] { return s3_body_bytes_sent() > 300000; })) << daemon->log_tail();
  daemon->kill9();
  const auto before_restart = s3_body_bytes_sent();
  EXPECT_LT(before_restart, archive_.size());
  daemon.reset();
  daemon.emplace(start_swupdate_daemon(true, "upparat-restarted"));
  auto v = wait_status("upparat_swu_kill", "SUCCEEDED", 60s);
  EXPECT_EQ(v.state, "no_restart_hook_provided") << join(v.states) << daemon->log_tail();
  EXPECT_TRUE(installed_identical()) << "the installed image differs";
  // From byte 0 again: the whole archive after what the first daemon had fetched.
  EXPECT_GE(s3_body_bytes_sent(), before_restart + archive_.size());
}

}  // namespace
}  // namespace upparat::test::e2e
