// Unit tests of the example plugin: its real shared object, loaded the way the daemon loads
// it (upparat/testing.hpp), on jobs built here.

#include <upparat/testing.hpp>

#include <gtest/gtest.h>

#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

namespace {

namespace fs = std::filesystem;
using upparat::Step;
using upparat::testing::JobSpec;
using upparat::testing::LoadedPlugin;

class ExamplePluginTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "example-plugin-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    write(dir_ / "version", "1.0.0\n");
    write(dir_ / "image.bin", std::string(100000, 'x'));
  }
  void TearDown() override { fs::remove_all(dir_); }

  static void write(const fs::path& path, const std::string& text) {
    std::ofstream(path, std::ios::binary) << text;
  }
  static std::string read(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  std::map<std::string, std::string> config() const {
    return {{"version_file", (dir_ / "version").string()}, {"target", (dir_ / "slot").string()}};
  }

  fs::path dir_;
};

TEST_F(ExamplePluginTest, RefusesAnUnknownKey) {
  EXPECT_THROW(LoadedPlugin(EXAMPLE_PLUGIN_PATH, {{"colour", "red"}}), std::runtime_error);
}

TEST_F(ExamplePluginTest, UpdatesFromOneVersionToTheNext) {
  LoadedPlugin plugin(EXAMPLE_PLUGIN_PATH, config());
  EXPECT_STREQ(plugin.descriptor().name, "example");
  JobSpec job;
  job.version = "2.0.0";
  job.file = (dir_ / "image.bin").string();
  job.size = 100000;

  auto version = plugin.run(Step::Version, job);
  EXPECT_EQ(version.code, UPPARAT_OK);
  EXPECT_EQ(version.text, "1.0.0");

  auto install = plugin.run(Step::Install, job);
  ASSERT_EQ(install.code, UPPARAT_OK) << install.text;
  EXPECT_EQ(read(dir_ / "slot"), read(dir_ / "image.bin"));
  ASSERT_FALSE(install.progress.empty());
  EXPECT_EQ(install.progress.back().second, 100);

  EXPECT_EQ(plugin.run(Step::Restart, job).code, UPPARAT_OK);
  EXPECT_EQ(plugin.run(Step::Version, job).text, "2.0.0");
  EXPECT_EQ(plugin.run(Step::Ready, job).code, UPPARAT_OK);
}

TEST_F(ExamplePluginTest, ReadyFailsOnTheOldVersion) {
  LoadedPlugin plugin(EXAMPLE_PLUGIN_PATH, config());
  JobSpec job;
  job.version = "2.0.0";
  auto ready = plugin.run(Step::Ready, job);
  EXPECT_EQ(ready.code, UPPARAT_FAILED);
  EXPECT_NE(ready.text.find("running 1.0.0"), std::string::npos) << ready.text;
}

TEST_F(ExamplePluginTest, InstallStopsWhenAsked) {
  write(dir_ / "big.bin", std::string(64 << 20, 'y'));
  LoadedPlugin plugin(EXAMPLE_PLUGIN_PATH, config());
  JobSpec job;
  job.file = (dir_ / "big.bin").string();
  const auto start = std::chrono::steady_clock::now();
  auto out = plugin.run(Step::Install, job, std::chrono::milliseconds(0));
  EXPECT_EQ(out.code, UPPARAT_FAILED);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

}  // namespace
