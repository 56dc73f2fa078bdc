// Where the daemon looks for plugins named without a '/': installed to any prefix, run from the
// build tree, or the configured prefix's folder.

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>

#include "config/config.hpp"
#include "support/temp_dir.hpp"

namespace upparat::config {
namespace {

namespace fs = std::filesystem;

class PluginDirectoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = test::TempDir::create("plugin-dir");
    ASSERT_TRUE(dir) << dir.error().message();
    dir_.emplace(std::move(*dir));
  }
  fs::path path(const fs::path& relative) const { return dir_->path() / relative; }
  std::optional<test::TempDir> dir_;
};

TEST_F(PluginDirectoryTest, InstalledToAnyPrefixUsesThePrefixsPluginFolder) {
  const fs::path prefix = path("opt/upparat");
  fs::create_directories(prefix / UPPARAT_PLUGIN_RELATIVE_DIR);
  for (const char* exe : {"sbin/upparat", "bin/upparat-plugin-check"}) {
    EXPECT_EQ(plugin_directory_for(prefix / exe, path("build"), path("build/plugins")),
              prefix / UPPARAT_PLUGIN_RELATIVE_DIR)
        << exe;
  }
}

TEST_F(PluginDirectoryTest, TheBuildTreeUsesTheBuildsPluginFolder) {
  EXPECT_EQ(plugin_directory_for(path("build/host/daemon/upparat"), path("build"),
                                 path("build/lib/upparat/plugins")),
            path("build/lib/upparat/plugins"));
}

TEST_F(PluginDirectoryTest, ElsewhereTheConfiguredPrefixsFolder) {
  // No plugin folder next to it, not in the build tree.
  EXPECT_EQ(plugin_directory_for(path("copied/sbin/upparat"), path("build"), path("build/p")),
            fs::path(UPPARAT_DEFAULT_PLUGIN_DIR));
  // A folder whose name merely starts like the build tree's is not inside it.
  EXPECT_EQ(plugin_directory_for(path("build2/upparat"), path("build"), path("build/p")),
            fs::path(UPPARAT_DEFAULT_PLUGIN_DIR));
}

TEST_F(PluginDirectoryTest, TheEnvironmentVariableWins) {
  ::setenv("UPPARAT_PLUGIN_DIR", path("mine").c_str(), 1);
  EXPECT_EQ(plugin_directory(), path("mine"));
  ::unsetenv("UPPARAT_PLUGIN_DIR");
  // This test binary runs from the build tree.
  EXPECT_EQ(plugin_directory(), fs::path(UPPARAT_BUILD_PLUGIN_DIR));
}

}  // namespace
}  // namespace upparat::config
