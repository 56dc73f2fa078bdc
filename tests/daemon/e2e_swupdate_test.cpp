// End to end with the SWUpdate plugin: the real daemon downloads a signed .swu from the
// emulator's S3 and installs it through a real SWUpdate daemon (tests/support/swupdate.hpp),
// which writes the image into a plain file.

#include <filesystem>
#include <optional>
#include <string>

#include "e2e_fixture.hpp"
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
  }

  /// The daemon with the script plugin for the version and the SWUpdate plugin for the
  /// install, reaching SWUpdate's sockets through TMPDIR as libswupdate wants.
  ServiceProcess start_swupdate_daemon() {
    const std::string d = dir_->path().string();
    hooks_["version"] = hook("version", "cat '" + d + "/installed_version'");
    auto config = write_config(path("state"),
                               "[steps]\nversion = \"script\"\ninstall = \"swupdate\"\n"
                               "[plugins.swupdate]\npath = \"" UPPARAT_SWUPDATE_PLUGIN
                               "\"\n"
                               "control_socket_dir = \"" +
                                   path("sockets").string() + "\"\n");
    ProcessOptions o;
    o.argv = {UPPARAT_DAEMON_BIN, "-c", config.string(), "-v"};
    o.name = "upparat";
    o.log_path = path("upparat-" + std::to_string(logs_.size()) + ".log");
    o.env = {{"TMPDIR", path("sockets").string()}};
    o.stop_grace = 15s;
    logs_.push_back(o.log_path);
    auto p = ServiceProcess::start(o);
    EXPECT_TRUE(p) << p.error().message();
    return std::move(*p);
  }

  std::optional<SwupdateFixture> swupdate_;
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

}  // namespace
}  // namespace upparat::test::e2e
