#include "common/sanitize.hpp"

#include <algorithm>
#include <cstdint>
#include <iterator>

namespace upparat {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Length of the valid UTF-8 sequence at text[i] and its code point, or 0 when invalid
// (overlong forms, surrogates and values above U+10FFFF are invalid, as RFC 3629 says).
std::size_t decode_utf8(std::string_view text, std::size_t i, std::uint32_t& code_point) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[i + k]); };
  const unsigned char lead = byte(0);
  std::size_t length = 0;
  std::uint32_t min = 0;
  if (lead < 0x80) {
    code_point = lead;
    return 1;
  } else if ((lead & 0xE0) == 0xC0) {
    length = 2, min = 0x80, code_point = lead & 0x1F;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3, min = 0x800, code_point = lead & 0x0F;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4, min = 0x10000, code_point = lead & 0x07;
  } else {
    return 0;
  }
  if (i + length > text.size()) {
    return 0;
  }
  for (std::size_t k = 1; k < length; ++k) {
    if ((byte(k) & 0xC0) != 0x80) {
      return 0;
    }
    code_point = (code_point << 6) | (byte(k) & 0x3F);
  }
  if (code_point < min || code_point > 0x10FFFF || (code_point >= 0xD800 && code_point <= 0xDFFF)) {
    return 0;
  }
  return length;
}

struct CodePointRange {
  std::uint32_t first;
  std::uint32_t last;
};

// Every code point outside these ranges is of general category C: control, format, surrogate,
// private use or unassigned (in the Unicode version named in the file).
constexpr CodePointRange kNotCategoryC[] = {
#include "common/unicode_not_c.inc"
};

// UTF-16 code units of a code point: astral characters take a surrogate pair.
std::size_t utf16_units(std::uint32_t code_point) {
  return code_point > 0xFFFF ? 2 : 1;
}

}  // namespace

bool is_unicode_category_c(std::uint32_t code_point) {
  // The first range whose last code point is not below code_point is the only one that can
  // hold it.
  const auto* it = std::lower_bound(
      std::begin(kNotCategoryC), std::end(kNotCategoryC), code_point,
      [](const CodePointRange& range, std::uint32_t value) { return range.last < value; });
  return it == std::end(kNotCategoryC) || code_point < it->first;
}

bool is_valid_utf8(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    std::uint32_t code_point = 0;
    const std::size_t length = decode_utf8(text, i, code_point);
    if (length == 0) {
      return false;
    }
    i += length;
  }
  return true;
}

bool is_valid_status_detail(std::string_view text) {
  std::size_t units = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    std::uint32_t code_point = 0;
    const std::size_t length = decode_utf8(text, i, code_point);
    if (length == 0 || is_unicode_category_c(code_point)) {
      return false;
    }
    units += utf16_units(code_point);
    i += length;
  }
  return units >= 1 && units <= kStatusDetailMaxChars;
}

std::string sanitize_status_detail(std::string_view text) {
  std::string out;
  out.reserve(std::min(text.size(), kStatusDetailMaxChars * 4));
  std::size_t units = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    std::uint32_t code_point = 0;
    const std::size_t length = decode_utf8(text, i, code_point);
    // U+FFFD and the space take one unit; a kept astral character takes two and is dropped
    // whole when only one is left.
    const std::size_t needed =
        length == 0 || is_unicode_category_c(code_point) ? 1 : utf16_units(code_point);
    if (units + needed > kStatusDetailMaxChars) {
      break;
    }
    if (length == 0) {
      out += kReplacement;
      ++i;
    } else if (is_unicode_category_c(code_point)) {
      out += ' ';
      i += length;
    } else {
      out.append(text.substr(i, length));
      i += length;
    }
    units += needed;
  }
  // Trim spaces at both ends (they often come from newlines turned into spaces).
  const auto first = out.find_first_not_of(' ');
  if (first == std::string::npos) {
    return "none";
  }
  out.erase(0, first);
  out.erase(out.find_last_not_of(' ') + 1);
  return out;
}

}  // namespace upparat
