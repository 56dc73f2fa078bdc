// End to end: a streamed install through the host's downloader. The install step is the
// stream fixture plugin (tests/plugin/fixtures/stream_plugin.cpp, a real .so with
// INSTALL_STREAM) that writes the stream to a file; the other steps are the script plugin's.
// Real daemon, mosquitto and the Jobs + S3 emulator, whose S3 side cuts connections, lets the
// URL expire, and slows the first transfer so the daemon can be SIGKILLed in the middle.

#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "e2e_fixture.hpp"
#include "support/digest.hpp"

namespace upparat::test {
namespace {

using namespace e2e;  // NOLINT(google-build-using-namespace)

class E2eStreamTest : public E2eFixture {
 protected:
  void SetUp() override {
    E2eFixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) {
      return;
    }
    default_hooks();
    hooks_["restart"] = hook("restart", "exit 0");
    // 2 MiB: large enough for cuts and a slow first transfer, small enough to be quick.
    image_.resize(2 * 1024 * 1024 + 123);
    std::uint32_t x = 12345;
    for (auto& c : image_) {
      x = x * 1103515245u + 12345u;
      c = static_cast<char>(x >> 24);
    }
    auto put = emulator_->put_object(kBucket, kKey, image_);
    ASSERT_TRUE(put) << put.error().message();
  }

  fs::path config(const std::string& plugin_extra = "") {
    DaemonConfig c;
    c.state_dir = path("state");
    c.extra = std::string("[steps]\nversion = \"script\"\ninstall = \"streamer\"\n") +
              "restart = \"script\"\n[plugins.streamer]\npath = \"" + UPPARAT_FIXTURE_STREAM +
              "\"\nstream = true\noutput = \"" + output().string() + "\"\nrecord = \"" +
              path("record").string() + "\"\n" + plugin_extra;
    return write_config(c);
  }

  std::string stream_document(const std::string& sha256) const {
    return std::string("{\"action\":\"update\",\"version\":\"2.0.0\",\"file\":\"") +
           "${aws:iot:s3-presigned-url:https://" + kBucket + ".s3.amazonaws.com/" + kKey + "}" +
           "\",\"sha256\":\"" + sha256 + "\",\"size\":" + std::to_string(image_.size()) +
           ",\"force\":false,\"meta\":\"2.0.0\"}";
  }
  std::string good_document() const { return stream_document(sha256_hex(image_)); }

  fs::path output() const { return path("streamed.bin"); }
  std::string record() const { return read_text(path("record")); }

  // The states reported in order, checked for the streamed install's announcements.
  static void expect_announced_in_order(const CloudView& v) {
    const auto& s = v.states;
    const auto download = std::find(s.begin(), s.end(), "download_start");
    const auto install = std::find(s.begin(), s.end(), "installation_start");
    ASSERT_NE(download, s.end()) << join(s);
    ASSERT_NE(install, s.end()) << join(s);
    EXPECT_LT(download, install) << join(s);
  }

  std::string image_;
};

// The connection is cut twice in the middle of the stream (a FIN, then an RST): the download
// resumes where it stopped, the plugin's file is identical, and every byte was sent once.
TEST_F(E2eStreamTest, TwoCutsMidStreamStillInstallTheIdenticalFile) {
  ASSERT_TRUE(emulator_->add_s3_fault(kBucket, kKey, R"("closeAfterBytes":500000)"));
  ASSERT_TRUE(emulator_->add_s3_fault(kBucket, kKey, R"("resetAfterBytes":700000)"));
  auto daemon = start_daemon(config());
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_job("upparat_stream", good_document());
  auto v = wait_status("upparat_stream", "SUCCEEDED", 60s);
  EXPECT_EQ(v.state, "complete_soft_restart") << join(v.states) << "\n" << daemon.log_tail();
  expect_announced_in_order(v);
  EXPECT_TRUE(contains(v.states, "installation_progress")) << join(v.states);
  EXPECT_TRUE(read_text(output()) == image_) << "the installed file differs";
  EXPECT_EQ(s3_body_bytes_sent(), image_.size());
  EXPECT_NE(record().find("complete " + std::to_string(image_.size())), std::string::npos)
      << record();
  // No local copy: nothing of the image in the download folder.
  std::error_code ec;
  EXPECT_TRUE(!fs::exists(path("state/downloads"), ec) ||
              fs::is_empty(path("state/downloads"), ec));
}

// The pre-signed URL expires in the middle of the stream: the job is described again for a
// fresh URL while the install waits, and the stream goes on where it stopped.
TEST_F(E2eStreamTest, AnUrlExpiringMidStreamIsRenewedWhileTheInstallWaits) {
  ASSERT_TRUE(emulator_->add_s3_fault(
      kBucket, kKey, R"("stallAfterBytes":400000,"stallMs":3000,"closeAfterBytes":500000)"));
  auto daemon = start_daemon(config());
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_job("upparat_expiry", good_document(), kThing, 60);
  ASSERT_TRUE(eventually([&] { return s3_body_bytes_sent() > 0; })) << daemon.log_tail();
  ASSERT_TRUE(emulator_->advance_clock(120s));
  auto v = wait_status("upparat_expiry", "SUCCEEDED", 60s);
  EXPECT_EQ(v.state, "complete_soft_restart") << join(v.states);
  EXPECT_TRUE(contains(v.states, "download_interrupt")) << join(v.states);
  expect_announced_in_order(v);
  EXPECT_TRUE(read_text(output()) == image_) << "the installed file differs";
  EXPECT_LE(s3_body_bytes_sent(), image_.size() + 1024);
  // One install, that waited: the plugin was entered once.
  EXPECT_EQ(record().find("entered"), record().rfind("entered")) << record();
}

// The job document's sha256 is wrong: the host holds back the file's tail, the stream fails,
// the plugin sees a failed end and installs nothing; the job FAILS with the mismatch.
TEST_F(E2eStreamTest, AWrongSha256FailsTheJobAndThePluginSeesAFailedEnd) {
  auto daemon = start_daemon(config());
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_job("upparat_badsum", stream_document(std::string(64, '0')));
  auto v = wait_status("upparat_badsum", "FAILED", 60s);
  EXPECT_EQ(v.state, "installation_hook_failed") << join(v.states);
  EXPECT_NE(v.message.find("sha256: expected 0000"), std::string::npos) << v.message;
  EXPECT_NE(record().find("failed the download does not match the job document"), std::string::npos)
      << record();
  EXPECT_FALSE(fs::exists(output()));
}

// An install that claims success without reading its stream to a complete end: the daemon
// does not believe it, and the job FAILS.
TEST_F(E2eStreamTest, AnInstallThatSucceedsBeforeTheStreamIsCompleteFails) {
  auto daemon = start_daemon(config("succeed_without_reading = true\n"));
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_job("upparat_early", good_document());
  auto v = wait_status("upparat_early", "FAILED", 60s);
  EXPECT_EQ(v.state, "installation_hook_failed") << join(v.states);
  EXPECT_NE(v.message.find("reported success, but its stream did not end complete"),
            std::string::npos)
      << v.message;
  EXPECT_TRUE(daemon.running()) << daemon.log_tail();
}

// A forced cancel in the middle of the stream stops the install and its download: the plugin
// sees a failed end, installs nothing, and the daemon takes the next job.
TEST_F(E2eStreamTest, ACancelMidStreamStopsTheInstallAndItsDownload) {
  ASSERT_TRUE(emulator_->add_s3_fault(kBucket, kKey, R"("rateLimitBytesPerSecond":200000)"));
  auto daemon = start_daemon(config());
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_job("upparat_cancel", good_document());
  ASSERT_TRUE(eventually([&] {
    return record().find("entered") != std::string::npos && s3_body_bytes_sent() > 200000;
  })) << daemon.log_tail();
  ASSERT_TRUE(emulator_->cancel_job("upparat_cancel", true));
  ASSERT_TRUE(eventually([&] { return record().find("failed") != std::string::npos; }, 20s))
      << record() << daemon.log_tail();
  EXPECT_FALSE(fs::exists(output()));
  const auto sent = s3_body_bytes_sent();
  EXPECT_LT(sent, image_.size());
  // The daemon is free again: the next job streams and succeeds.
  create_job("upparat_next", good_document());
  auto v = wait_status("upparat_next", "SUCCEEDED", 60s);
  EXPECT_EQ(v.state, "complete_soft_restart") << join(v.states) << daemon.log_tail();
  EXPECT_TRUE(read_text(output()) == image_) << "the installed file differs";
}

// SIGKILL in the middle of the stream: the restarted daemon streams the install again from
// byte 0 and the job SUCCEEDS with the identical file.
TEST_F(E2eStreamTest, SigkillMidStreamSucceedsAfterTheRestart) {
  ASSERT_TRUE(emulator_->add_s3_fault(kBucket, kKey, R"("rateLimitBytesPerSecond":200000)"));
  const auto cfg = config();
  std::optional<ServiceProcess> daemon;
  daemon.emplace(start_daemon(cfg));
  ASSERT_TRUE(daemon->wait_for_line("ready: subscribed", 30s)) << daemon->log_tail();
  create_job("upparat_kill", good_document());
  ASSERT_TRUE(eventually([&] {
    return record().find("entered") != std::string::npos && s3_body_bytes_sent() > 300000;
  })) << daemon->log_tail();
  daemon->kill9();
  auto before = view("upparat_kill");
  ASSERT_TRUE(before);
  EXPECT_EQ(before->status, "IN_PROGRESS") << join(before->states);
  EXPECT_FALSE(fs::exists(output()));
  daemon.reset();
  daemon.emplace(start_daemon(cfg, "upparat-restarted"));
  auto v = wait_status("upparat_kill", "SUCCEEDED", 60s);
  EXPECT_EQ(v.state, "complete_soft_restart") << join(v.states);
  EXPECT_TRUE(read_text(output()) == image_) << "the installed file differs";
  EXPECT_NE(record().find("complete " + std::to_string(image_.size())), std::string::npos)
      << record();
}

}  // namespace
}  // namespace upparat::test
