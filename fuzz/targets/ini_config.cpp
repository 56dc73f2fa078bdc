// The importer of Python Upparat INI files (host/config/ini_import.cpp) on any bytes.

#include <cstddef>
#include <cstdint>
#include <string>

#include "config/config.hpp"
#include "fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(upparat::fuzz::text(data, size));
  auto config = upparat::config::parse_ini(text, "/nonexistent/upparat.ini");
  if (config) {
    (void)upparat::config::describe(*config);
  }
  return 0;
}
