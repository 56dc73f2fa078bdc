// The TOML configuration loader (host/config: parse_toml and its strict validation) on any
// bytes. The file name only anchors relative paths and names the file in messages.

#include <cstddef>
#include <cstdint>
#include <string>

#include "config/config.hpp"
#include "fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(upparat::fuzz::text(data, size));
  auto config = upparat::config::parse_toml(text, "/nonexistent/upparat.toml");
  if (config) {
    (void)upparat::config::describe(*config);
  }
  return 0;
}
