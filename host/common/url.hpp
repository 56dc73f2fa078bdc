#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.hpp"

namespace upparat {

/// The parts of an absolute URL `scheme://[userinfo@]host[:port][/path][?query][#fragment]`.
/// Only what the host needs: deciding on the scheme and printing a URL without its secrets.
struct Url {
  std::string scheme;  ///< lower case, e.g. "https"
  std::string host;    ///< as written (an IPv6 literal keeps its brackets)
  std::optional<std::uint16_t> port;
  std::string path;  ///< "" or starting with "/"
  bool has_query = false;
  bool has_userinfo = false;
};

/// Parses an absolute URL with an authority ("//host"). Fails on anything else (no scheme,
/// "file:/x", spaces or control characters, a bad port), with a message that never repeats the
/// URL's query or user information.
[[nodiscard]] Result<Url> parse_url(std::string_view url);

/// The URL's scheme in lower case ("https"), or "" when it has none.
[[nodiscard]] std::string url_scheme(std::string_view url);

/// The URL as it may be logged, stored or reported: pre-signed URLs carry credentials in
/// their query, so the query becomes "<redacted>" and user information and fragments are
/// dropped: "https://bucket.s3.amazonaws.com/fw.raucb?<redacted>". Bytes that are not
/// printable ASCII are percent-encoded. Text that parse_url() refuses yields "<invalid url>".
[[nodiscard]] std::string redact_url(std::string_view url);

}  // namespace upparat
