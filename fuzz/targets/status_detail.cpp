// The statusDetails sanitiser (host/common/sanitize.cpp): whatever a plugin or hook says,
// what it returns is a value AWS IoT Jobs accepts, and sanitising it again changes nothing.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/sanitize.hpp"
#include "fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = upparat::fuzz::text(data, size);
  const std::string clean = upparat::sanitize_status_detail(text);
  UPPARAT_FUZZ_ASSERT(upparat::is_valid_status_detail(clean));
  UPPARAT_FUZZ_ASSERT(upparat::is_valid_utf8(clean));
  UPPARAT_FUZZ_ASSERT(upparat::sanitize_status_detail(clean) == clean);
  if (upparat::is_valid_status_detail(text)) {
    UPPARAT_FUZZ_ASSERT(upparat::is_valid_utf8(text));
  }
  return 0;
}
