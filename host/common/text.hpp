#pragma once

// Small text helpers shared by the host, the plugins and the emulator: trimming and ASCII case
// folding. Header-only, so that anything whose include path reaches host/ can use them without
// linking.

#include <algorithm>
#include <cctype>
#include <string>
#include <string_view>

namespace upparat {

/// The characters std::isspace accepts in the C locale.
inline constexpr std::string_view kWhitespace = " \t\n\v\f\r";

/// `text` without the leading characters found in `chars`. A view into `text`.
[[nodiscard]] inline std::string_view trim_front(std::string_view text,
                                                 std::string_view chars = kWhitespace) {
  const auto first = text.find_first_not_of(chars);
  return first == std::string_view::npos ? std::string_view() : text.substr(first);
}

/// `text` without the trailing characters found in `chars`. A view into `text`.
[[nodiscard]] inline std::string_view trim_back(std::string_view text,
                                                std::string_view chars = kWhitespace) {
  const auto last = text.find_last_not_of(chars);
  return last == std::string_view::npos ? std::string_view() : text.substr(0, last + 1);
}

/// `text` without the leading and trailing characters found in `chars`. A view into `text`:
/// the text must outlive it (copy it into a std::string to keep it).
[[nodiscard]] inline std::string_view trim(std::string_view text,
                                           std::string_view chars = kWhitespace) {
  return trim_back(trim_front(text, chars), chars);
}

/// `text` with every letter in lower case (std::tolower, byte by byte).
[[nodiscard]] inline std::string lower(std::string_view text) {
  std::string out(text);
  for (auto& c : out) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

/// True when `a` and `b` are equal ignoring case (std::tolower, byte by byte).
[[nodiscard]] inline bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

}  // namespace upparat
