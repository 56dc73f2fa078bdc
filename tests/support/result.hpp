#pragma once

// Helpers to use upparat::Result / upparat::Status in GoogleTest tests.

#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include <gtest/gtest.h>

#include "common/error.hpp"

/// ASSERT_TRUE on a Result/Status that prints the error message when it fails.
#define UPPARAT_ASSERT_OK(expr)                                \
  do {                                                         \
    const auto& upparat_result_ = (expr);                      \
    ASSERT_TRUE(upparat_result_.has_value())                   \
        << #expr << ": " << upparat_result_.error().message(); \
  } while (false)

/// EXPECT_TRUE on a Result/Status that prints the error message when it fails.
#define UPPARAT_EXPECT_OK(expr)                                \
  do {                                                         \
    const auto& upparat_result_ = (expr);                      \
    EXPECT_TRUE(upparat_result_.has_value())                   \
        << #expr << ": " << upparat_result_.error().message(); \
  } while (false)

namespace upparat::test {

/// Thrown by must(): GoogleTest reports it as a failure of the test with the message.
class MustFailed : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Unwraps a Result in test code, where a failure should end the test:
///   auto broker = must(Mosquitto::start());
/// On error throws MustFailed("<what>: <error message>"), which GoogleTest reports as a
/// failed test ("C++ exception with description ... thrown in the test body"). Fixture
/// destructors still run, so no process is left behind.
template <class T>
T must(Result<T> result, std::string_view what = "must") {
  if (!result) {
    throw MustFailed(std::string(what) + ": " + result.error().message());
  }
  return std::move(*result);
}

inline void must(Status status, std::string_view what = "must") {
  if (!status) {
    throw MustFailed(std::string(what) + ": " + status.error().message());
  }
}

}  // namespace upparat::test
