// The state and download folders at start: created one level at a time with the daemon's
// mode, refused (with the folder at fault and what to do) when another user could change
// them; also through the real daemon binary, started and with --check-config. "Another user"
// is uid 65534 (nobody): those tests chown and need root (CI runs as root); without it they
// are skipped with the reason.
#include "daemon/folders.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>

#include "config/config.hpp"
#include "daemon/daemon.hpp"
#include "support/binaries.hpp"
#include "support/process.hpp"
#include "support/temp_dir.hpp"

namespace upparat::daemon {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr uid_t kNobody = 65534;

#define SKIP_UNLESS_ROOT()                                                                \
  do {                                                                                    \
    if (::geteuid() != 0) {                                                               \
      UPPARAT_SKIP() << "needs root to make a root-owned /tmp-like folder and to give a " \
                        "folder to another user (uid 65534); CI runs the tests as root";  \
    }                                                                                     \
  } while (false)

mode_t mode_of(const fs::path& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

class FoldersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = test::TempDir::create("folders");
    ASSERT_TRUE(dir) << dir.error().message();
    dir_.emplace(std::move(*dir));
    // The INI import looks for the script plugin here.
    ::setenv("UPPARAT_PLUGIN_DIR", fs::path(UPPARAT_SCRIPT_PLUGIN).parent_path().c_str(), 1);
  }

  fs::path path(const std::string& name) const { return dir_->path() / name; }

  fs::path folder(const std::string& name, mode_t mode) {
    fs::create_directories(path(name));
    EXPECT_EQ(::chmod(path(name).c_str(), mode), 0);
    return path(name);
  }

  /// A TOML configuration with `state` as state_directory, and its file.
  fs::path toml_file(const fs::path& state, const std::string& extra = "") {
    auto file = dir_->write_file(
        "upparat.toml", "[service]\nstate_directory = \"" + state.string() +
                            "\"\n[broker]\nhost = \"127.0.0.1\"\nport = 1\nplain_tcp = true\n"
                            "thing_name = \"device-1\"\n" +
                            extra + "[plugins.script]\npath = \"" + UPPARAT_SCRIPT_PLUGIN + "\"\n");
    EXPECT_TRUE(file) << file.error().message();
    return *file;
  }

  config::Config toml(const fs::path& state, const std::string& extra = "") {
    auto config = config::load(toml_file(state, extra));
    EXPECT_TRUE(config) << config.error().message();
    return config ? *config : config::Config{};
  }

  /// A Python Upparat INI file with `download_location`, and its file.
  fs::path ini_file(const fs::path& download_location) {
    auto file = dir_->write_file("upparat.ini",
                                 "[service]\ndownload_location = " + download_location.string() +
                                     "\n[broker]\nhost = 127.0.0.1\n"
                                     "port = 1\nthing_name = device-1\n");
    EXPECT_TRUE(file) << file.error().message();
    return *file;
  }

  config::Config ini(const fs::path& download_location) {
    auto config = config::load(ini_file(download_location));
    EXPECT_TRUE(config) << config.error().message();
    return config ? *config : config::Config{};
  }

  /// Runs the real daemon; expects it to exit with `code` and print every one of `parts`.
  void expect_daemon_refuses(const std::vector<std::string>& args, int code,
                             std::initializer_list<std::string> parts) {
    std::vector<std::string> argv = {UPPARAT_DAEMON_BIN};
    argv.insert(argv.end(), args.begin(), args.end());
    auto run = test::run_process(argv, 20s);
    ASSERT_TRUE(run) << run.error().message() << " (the daemon did not refuse to start)";
    EXPECT_FALSE(run->status.signaled) << run->output;
    EXPECT_EQ(run->status.exit_code, code) << run->output;
    for (const auto& part : parts) {
      EXPECT_NE(run->output.find(part), std::string::npos)
          << "'" << part << "' not in: " << run->output;
    }
  }

  std::optional<test::TempDir> dir_;
};

TEST_F(FoldersTest, StateAndDownloadFoldersAreCreatedWithMode0700) {
  const mode_t old_umask = ::umask(0022);
  const auto config = toml(path("var/lib/upparat"));
  auto ok = prepare_folders(config, ::geteuid());
  ::umask(old_umask);
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ(mode_of(path("var")), 0700u);
  EXPECT_EQ(mode_of(path("var/lib/upparat")), 0700u);
  EXPECT_EQ(mode_of(path("var/lib/upparat/downloads")), 0700u);
  // Twice is fine.
  EXPECT_TRUE(prepare_folders(config, ::geteuid()));
}

TEST_F(FoldersTest, GroupReadableFoldersAre0750) {
  const auto config = toml(path("state"), "[download]\ngroup_readable = true\n");
  ASSERT_TRUE(prepare_folders(config, ::geteuid()));
  EXPECT_EQ(folder_mode(config), 0750u);
  EXPECT_EQ(mode_of(path("state")), 0750u);
  EXPECT_EQ(mode_of(path("state/downloads")), 0750u);
}

TEST_F(FoldersTest, CheckCreatesNothing) {
  const auto config = toml(path("state"));
  ASSERT_TRUE(check_folders(config, ::geteuid()));
  EXPECT_FALSE(fs::exists(path("state")));
}

TEST_F(FoldersTest, StateFolderUnderAGroupWritableFolderIsRefused) {
  const auto shared = folder("shared", 0775);
  const auto config = toml(shared / "state");
  for (bool create : {true, false}) {
    auto ok = create ? prepare_folders(config, ::geteuid()) : check_folders(config, ::geteuid());
    ASSERT_FALSE(ok);
    EXPECT_NE(ok.error().message().find("state folder " + (shared / "state").string() + ": " +
                                        shared.string() + " is writable by its group or others"),
              std::string::npos)
        << ok.error().message();
  }
  EXPECT_FALSE(fs::exists(shared / "state"));
}

TEST_F(FoldersTest, DownloadFolderOfAnotherUserIsRefused) {
  SKIP_UNLESS_ROOT();
  const auto theirs = folder("theirs", 0755);
  ASSERT_EQ(::chown(theirs.c_str(), kNobody, kNobody), 0);
  const auto config = toml(path("state"), "[download]\ndirectory = \"" + theirs.string() + "\"\n");
  auto ok = prepare_folders(config, ::geteuid());
  ASSERT_FALSE(ok);
  EXPECT_NE(ok.error().message().find("download folder " + theirs.string() + ": " +
                                      theirs.string() + " belongs to uid 65534"),
            std::string::npos)
      << ok.error().message();
}

TEST_F(FoldersTest, IniImportCreatesItsFoldersUnderATmpLikeFolder) {
  SKIP_UNLESS_ROOT();
  const auto tmp = folder("tmp", 01777);
  const auto config = ini(tmp);
  ASSERT_EQ(config.download.directory, tmp / "upparat");
  auto ok = prepare_folders(config, ::geteuid());
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ(mode_of(tmp / "upparat"), 0700u);
  EXPECT_EQ(mode_of(tmp / "upparat" / "state"), 0700u);
}

TEST_F(FoldersTest, IniImportRefusesAnUpparatFolderOfAnotherUser) {
  SKIP_UNLESS_ROOT();
  // Another user made /tmp/upparat before the daemon's first start.
  const auto tmp = folder("tmp", 01777);
  const auto squatted = folder("tmp/upparat", 0755);
  ASSERT_EQ(::chown(squatted.c_str(), kNobody, kNobody), 0);
  const auto config = ini(tmp);
  auto ok = prepare_folders(config, ::geteuid());
  ASSERT_FALSE(ok);
  const auto message = ok.error().message();
  EXPECT_NE(message.find(squatted.string() + " belongs to uid 65534"), std::string::npos)
      << message;
  EXPECT_NE(message.find("download_location"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(squatted / "state"));
  // Group- or world-writable is refused the same way.
  ASSERT_EQ(::chown(squatted.c_str(), 0, 0), 0);
  ASSERT_EQ(::chmod(squatted.c_str(), 0777), 0);
  ok = prepare_folders(config, ::geteuid());
  ASSERT_FALSE(ok);
  EXPECT_NE(ok.error().message().find(squatted.string() + " is writable"), std::string::npos)
      << ok.error().message();
}

TEST_F(FoldersTest, DaemonRefusesToStartUnderAGroupWritableFolder) {
  const auto shared = folder("shared", 0775);
  const auto file = toml_file(shared / "state");
  const std::string message = shared.string() + " is writable by its group or others";
  expect_daemon_refuses({"-c", file.string()}, kExitFailure, {message, "chmod go-w"});
  expect_daemon_refuses({"-c", file.string(), "--check-config"}, kExitConfig, {message});
  EXPECT_FALSE(fs::exists(shared / "state"));
}

TEST_F(FoldersTest, DaemonRefusesTheIniImportsFolderOfAnotherUser) {
  SKIP_UNLESS_ROOT();
  const auto tmp = folder("tmp", 01777);
  const auto squatted = folder("tmp/upparat", 0700);
  ASSERT_EQ(::chown(squatted.c_str(), kNobody, kNobody), 0);
  const auto file = ini_file(tmp);
  expect_daemon_refuses({"-c", file.string()}, kExitFailure,
                        {squatted.string() + " belongs to uid 65534", "download_location"});
}

}  // namespace
}  // namespace upparat::daemon
