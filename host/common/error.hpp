#pragma once

#include <string>
#include <string_view>
#include <utility>

#include <tl/expected.hpp>

namespace upparat {

/// An error that is expected to happen (network, disk, bad data, plugin results): a message
/// for humans that each layer prefixes with its context.
class Error {
 public:
  explicit Error(std::string message) : message_(std::move(message)) {}

  [[nodiscard]] const std::string& message() const { return message_; }

  /// Returns "<context>: <message>", like RAUC's g_propagate_prefixed_error.
  [[nodiscard]] Error context(std::string_view context) const {
    return Error(std::string(context) + ": " + message_);
  }

 private:
  std::string message_;
};

template <class T>
using Result = tl::expected<T, Error>;

/// Result of an operation that returns nothing but can fail.
using Status = tl::expected<void, Error>;

[[nodiscard]] inline tl::unexpected<Error> fail(std::string message) {
  return tl::make_unexpected(Error(std::move(message)));
}

[[nodiscard]] inline tl::unexpected<Error> fail(Error error) {
  return tl::make_unexpected(std::move(error));
}

}  // namespace upparat
