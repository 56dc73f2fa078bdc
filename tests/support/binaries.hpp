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

}  // namespace upparat::test

/// In a TEST body (or SetUp): skips the test, saying why, when `path` is not executable.
///   UPPARAT_SKIP_UNLESS_EXECUTABLE(upparat::test::kMosquittoPath);
#define UPPARAT_SKIP_UNLESS_EXECUTABLE(path)                                               \
  do {                                                                                     \
    if (!::upparat::test::is_executable(path)) {                                           \
      GTEST_SKIP() << (path) << " is not installed (scripts/install-deps.sh installs it)"; \
    }                                                                                      \
  } while (false)
