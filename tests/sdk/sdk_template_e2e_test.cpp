// The SDK template's plugin, built out of tree against the installed SDK by the test
// sdk_package, takes a job to SUCCEEDED in the real daemon against the Jobs emulator.

#include <gtest/gtest.h>

#include "../daemon/e2e_fixture.hpp"

namespace upparat::test {
namespace {

using namespace e2e;  // NOLINT(google-build-using-namespace)

// The C++ template (CMake) and the C template (Makefile and pkg-config).
class SdkTemplateE2eTest : public E2eFixture, public ::testing::WithParamInterface<const char*> {};

TEST_P(SdkTemplateE2eTest, TheTemplatesPluginCompletesAJob) {
  const fs::path plugin = fs::path(UPPARAT_SDK_TEMPLATE_PLUGINS) / GetParam();
  if (!fs::exists(plugin)) {
    UPPARAT_SKIP() << plugin << " is not there: the test sdk_package builds it (CTest runs it "
                   << "first, as this test's fixture)";
  }
  DaemonConfig c;
  c.state_dir = path("state");
  c.extra = "[plugins.example]\npath = \"" + plugin.string() + "\"\nversion_file = \"" +
            path("installed_version").string() + "\"\ntarget = \"" + path("slot.img").string() +
            "\"\n[steps]\nversion = \"example\"\ndownload = \"example\"\ninstall = \"example\"\n"
            "restart = \"example\"\nready = \"example\"\n";
  auto daemon = start_daemon(write_config(c));
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_job("upparat_template", document("2.0.0", "template"));
  auto view = wait_status("upparat_template", "SUCCEEDED");
  EXPECT_EQ(view.state, "complete_soft_restart") << join(view.states);
  EXPECT_EQ(installed_version(), "2.0.0");
  std::ifstream in(path("slot.img"), std::ios::binary);
  const std::string slot((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(slot, firmware_);
  auto stopped = daemon.stop();
  ASSERT_TRUE(stopped);
  EXPECT_TRUE(stopped->success()) << stopped->describe() << "\n" << daemon.log_tail();
}

INSTANTIATE_TEST_SUITE_P(Templates, SdkTemplateE2eTest,
                         ::testing::Values("upparat-example.so", "upparat-example-c.so"));

}  // namespace
}  // namespace upparat::test
