#include "common/invariant.hpp"

#include <gtest/gtest.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace upparat {
namespace {

TEST(Invariant, HoldsQuietly) {
  EXPECT_TRUE(UPPARAT_CHECK(1 + 1 == 2, "arithmetic"));
}

// The CI runs the unit tests in a debug build (which must abort) and in a release build
// (which must log and let the caller recover); this test checks whichever it is built as.
TEST(Invariant, BrokenIsABug) {
#ifdef NDEBUG
  EXPECT_FALSE(UPPARAT_CHECK(1 + 1 == 3, "arithmetic"));
#else
  // The daemon logs to stderr, where a death test looks for the message.
  spdlog::set_default_logger(spdlog::stderr_logger_st("invariant_test"));
  EXPECT_DEATH((void)UPPARAT_CHECK(1 + 1 == 3, "arithmetic"), "this is a bug: arithmetic");
#endif
}

}  // namespace
}  // namespace upparat
