#pragma once

// Helpers of the fuzz targets (targets/*.cpp).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace upparat::fuzz {

/// The fuzzer's bytes as text (any bytes: NUL, invalid UTF-8, no terminator).
inline std::string_view text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace upparat::fuzz

/// A property every input must keep: libFuzzer reports a broken one as a crash, with the input.
#define UPPARAT_FUZZ_ASSERT(condition)                                                      \
  do {                                                                                      \
    if (!(condition)) {                                                                     \
      std::fprintf(stderr, "%s:%d: property broken: %s\n", __FILE__, __LINE__, #condition); \
      std::abort();                                                                         \
    }                                                                                       \
  } while (false)
