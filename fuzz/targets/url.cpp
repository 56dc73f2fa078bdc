// The URL parser and redaction (host/common/url.cpp): a redacted URL hides the query and is
// printable ASCII.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/url.hpp"
#include "fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = upparat::fuzz::text(data, size);
  auto url = upparat::parse_url(text);
  const std::string redacted = upparat::redact_url(text);
  (void)upparat::url_scheme(text);
  if (!url) {
    UPPARAT_FUZZ_ASSERT(redacted == "<invalid url>");
    return 0;
  }
  if (url->has_query) {
    UPPARAT_FUZZ_ASSERT(redacted.find("?<redacted>") != std::string::npos);
  }
  // The redacted form is printable ASCII: safe in a log line.
  for (const char c : redacted) {
    UPPARAT_FUZZ_ASSERT(c >= 0x20 && c < 0x7F);
  }
  return 0;
}
