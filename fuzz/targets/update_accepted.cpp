// parse_update_accepted (host/jobs/messages.cpp) on any bytes: an answer of AWS IoT Jobs, or of
// anything else that can publish on the thing's topics.

#include <cstddef>
#include <cstdint>

#include "fuzz.hpp"
#include "jobs/messages.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  (void)upparat::jobs::parse_update_accepted(upparat::fuzz::text(data, size));
  return 0;
}
