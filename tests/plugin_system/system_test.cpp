// plugins/system: reading a key of an os-release-style file, and the health command (real
// processes).

#include "system/system.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>

#include "support/temp_dir.hpp"

namespace upparat::plugin_system {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class PluginSystemTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = test::TempDir::create("plugin-system");
    ASSERT_TRUE(dir) << dir.error().message();
    dir_.emplace(std::move(*dir));
  }
  fs::path script(const std::string& name, const std::string& body) {
    auto p = dir_->write_file(name, "#!/bin/sh\n" + body + "\n");
    EXPECT_TRUE(p);
    fs::permissions(*p, fs::perms::owner_all);
    return *p;
  }
  std::optional<test::TempDir> dir_;
};

TEST_F(PluginSystemTest, ReadsKeysOfAnOsReleaseFile) {
  auto file = dir_->write_file("os-release",
                               "# comment\nNAME=\"Debian GNU/Linux\"\nVERSION_ID='12'\n"
                               "BUILD_ID=2026.11\nPRETTY=\"say \\\"hi\\\"\"\nEMPTY=\n");
  ASSERT_TRUE(file);
  EXPECT_EQ(read_release_key(file->string(), "NAME").value_or("?"), "Debian GNU/Linux");
  EXPECT_EQ(read_release_key(file->string(), "VERSION_ID").value_or("?"), "12");
  EXPECT_EQ(read_release_key(file->string(), "BUILD_ID").value_or("?"), "2026.11");
  EXPECT_EQ(read_release_key(file->string(), "PRETTY").value_or("?"), "say \"hi\"");
  auto empty = read_release_key(file->string(), "EMPTY");
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().message(), file->string() + ": EMPTY is empty");
  auto missing = read_release_key(file->string(), "VERSION");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().message(), file->string() + " has no VERSION=... line");
  auto absent = read_release_key((*dir_ / "nope").string(), "NAME");
  ASSERT_FALSE(absent);
  EXPECT_NE(absent.error().message().find("cannot read"), std::string::npos);
}

TEST_F(PluginSystemTest, HealthCommandPassesFailsAndTimesOut) {
  HealthCommand ok;
  ok.argv = {script("ok.sh", "exit 0").string()};
  EXPECT_TRUE(run_health_command(ok));

  HealthCommand bad;
  bad.argv = {script("bad.sh", "echo 'service x is down' >&2\nexit 4").string()};
  auto failed = run_health_command(bad);
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().message(),
            "health command " + bad.argv[0] + " failed: exit code 4: service x is down");

  HealthCommand slow;
  slow.argv = {script("slow.sh", "sleep 30").string()};
  slow.timeout = 300ms;
  const auto start = std::chrono::steady_clock::now();
  auto timed_out = run_health_command(slow);
  ASSERT_FALSE(timed_out);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_NE(timed_out.error().message().find("timed out"), std::string::npos)
      << timed_out.error().message();

  HealthCommand missing;
  missing.argv = {(*dir_ / "missing.sh").string()};
  EXPECT_FALSE(run_health_command(missing));
}

TEST_F(PluginSystemTest, RebootOnABusWithoutLogindFailsWithinTheTimeout) {
  // No bus listens here: the error names the address instead of hanging.
  auto r = reboot_via_logind("unix:path=" + (*dir_ / "no-bus").string(), 2s);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("no-bus"), std::string::npos) << r.error().message();
}

}  // namespace
}  // namespace upparat::plugin_system
