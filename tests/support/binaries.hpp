#pragma once

// Where the real services used by the tests live, and skipping a test when one is missing.

#include <filesystem>
#include <string>

namespace upparat::test {

inline constexpr const char* kMosquittoPath = "/usr/sbin/mosquitto";
inline constexpr const char* kNginxPath = "/usr/sbin/nginx";
inline constexpr const char* kOpensslPath = "/usr/bin/openssl";

/// True if `path` is an executable file.
bool is_executable(const std::filesystem::path& path);

/// True when the environment variable CI is "true": there a test may not skip for a missing
/// root, kernel feature or tool, since CI is the place that must prove it.
bool in_ci();

}  // namespace upparat::test

/// In a TEST body (or SetUp): skips the test with the streamed reason, except under CI=true,
/// where the same reason fails it.
///   if (::geteuid() != 0) { UPPARAT_SKIP() << "needs root to mount a loop device"; }
#define UPPARAT_SKIP()                                                                             \
  return GTEST_MESSAGE_(::upparat::test::in_ci() ? "CI=true, where this test may not skip: " : "", \
                        ::upparat::test::in_ci() ? ::testing::TestPartResult::kFatalFailure        \
                                                 : ::testing::TestPartResult::kSkip)

/// In a TEST body (or SetUp): skips the test, saying why, when `path` is not executable.
///   UPPARAT_SKIP_UNLESS_EXECUTABLE(upparat::test::kMosquittoPath);
#define UPPARAT_SKIP_UNLESS_EXECUTABLE(path)                                                 \
  do {                                                                                       \
    if (!::upparat::test::is_executable(path)) {                                             \
      UPPARAT_SKIP() << (path) << " is not installed (scripts/install-deps.sh installs it)"; \
    }                                                                                        \
  } while (false)
