#pragma once

// Helpers shared by the downloader tests.

#include <sys/stat.h>

#include <cstdint>
#include <random>
#include <string>
#include <string_view>

#include "support/digest.hpp"

namespace upparat::test {

/// Deterministic pseudo-random content (so a failure can be reproduced).
inline std::string random_bytes(std::size_t size, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::string out(size, '\0');
  for (auto& c : out) {
    c = static_cast<char>(rng() & 0xff);
  }
  return out;
}

inline mode_t file_mode(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return 0;
  }
  return st.st_mode & 07777;
}

}  // namespace upparat::test
