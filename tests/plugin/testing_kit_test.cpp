// The SDK's test kit (upparat/testing.hpp) on real plugin shared objects: what a vendor's unit
// test sees through it must be what the daemon does.

#include <upparat/testing.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "common/sanitize.hpp"
#include "plugin/key_value_store.hpp"

namespace {

using upparat::Step;
using upparat::testing::JobSpec;
using upparat::testing::LoadedPlugin;

TEST(TestingKit, LoadsCreatesAndRunsSteps) {
  LoadedPlugin plugin(UPPARAT_FIXTURE_GOOD, {{"version", "3.1"}});
  EXPECT_STREQ(plugin.descriptor().name, "fixture-good");
  EXPECT_TRUE(plugin.serves(Step::Install));
  EXPECT_FALSE(plugin.serves(Step::Restart));  // the fixture does not override it
  auto version = plugin.run(Step::Version, JobSpec{});
  EXPECT_EQ(version.code, UPPARAT_OK);
  EXPECT_EQ(version.text, "3.1");
  EXPECT_EQ(plugin.run(Step::Restart, JobSpec{}).code, UPPARAT_NOT_SUPPORTED);
  ASSERT_FALSE(plugin.logs().empty());
  EXPECT_NE(plugin.logs().front().second.find("configured with 1 entries"), std::string::npos);
}

TEST(TestingKit, ProgressAndTheStoreAreRecordedAcrossSteps) {
  LoadedPlugin plugin(UPPARAT_FIXTURE_GOOD);
  JobSpec job;
  job.meta = "thread-progress";
  auto out = plugin.run(Step::Install, job);
  EXPECT_EQ(out.code, UPPARAT_OK) << out.text;
  ASSERT_EQ(out.progress.size(), 10u);
  EXPECT_EQ(out.progress.front(), (std::pair<std::string, int32_t>("chunk 1", 10)));
  EXPECT_EQ(plugin.store().at("chunk"), "10");
}

TEST(TestingKit, TheStoreKeepsTheDaemonsLimits) {
  LoadedPlugin plugin(UPPARAT_FIXTURE_GOOD);
  JobSpec job;
  job.meta = "store-limits";
  auto out = plugin.run(Step::Install, job);
  EXPECT_EQ(out.text, "bad-key:refused big:refused max:accepted remove:ok gone:yes");
}

TEST(TestingKit, AStopRequestWakesAStepBlockedOnTheStopDescriptor) {
  LoadedPlugin plugin(UPPARAT_FIXTURE_GOOD);
  JobSpec job;
  job.meta = "block";
  auto out = plugin.run(Step::Install, job, std::chrono::milliseconds(50));
  EXPECT_EQ(out.code, UPPARAT_FAILED);
  EXPECT_EQ(out.text, "install stopped by the host");
}

// The kit is header-only and cannot use the daemon's code: its copy of the rules must agree.
TEST(TestingKit, StoreRulesAgreeWithTheDaemons) {
  using upparat::testing::kStoreMaxKeys;
  using upparat::testing::kStoreMaxValueBytes;
  EXPECT_EQ(kStoreMaxKeys, upparat::plugin::kStoreMaxEntries);
  EXPECT_EQ(kStoreMaxValueBytes, upparat::plugin::kStoreMaxValueBytes);
  for (const std::string& key :
       std::vector<std::string>{"", "a", "slot.B_1-x", "bad key", "a/b", "ä", std::string(128, 'k'),
                                std::string(129, 'k')}) {
    EXPECT_EQ(upparat::testing::valid_store_key(key), upparat::plugin::is_valid_store_key(key))
        << key;
  }
  for (const std::string& text :
       std::vector<std::string>{"", "plain", "\xC3\xA4", "\xC3", "\xC0\x80", "\xED\xA0\x80",
                                "\xF4\x90\x80\x80", "\xF0\x9F\x98\x80", "a\x80"}) {
    EXPECT_EQ(upparat::testing::valid_utf8(text), upparat::is_valid_utf8(text)) << text;
  }
}

TEST(TestingKit, ARefusedConfigurationOrAMissingFileThrowsWithTheReason) {
  try {
    LoadedPlugin plugin(UPPARAT_FIXTURE_GOOD, {{"colour", "red"}});
    FAIL() << "created";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown configuration key 'colour'"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(LoadedPlugin("/nonexistent/plugin.so"), std::runtime_error);
}

}  // namespace
