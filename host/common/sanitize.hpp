#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace upparat {

/// The largest statusDetails value AWS IoT Jobs accepts, in UTF-16 code units (Java chars: a
/// character above U+FFFF counts 2).
inline constexpr std::size_t kStatusDetailMaxChars = 1024;

/// Turns any text into a statusDetails value AWS accepts (`[^\p{C}]{1,1024}`): every character
/// of Unicode general category C (control Cc, format Cf such as U+200B or U+FEFF, private use
/// Co, unassigned Cn) becomes a space, every byte of an invalid UTF-8 sequence (encoded
/// surrogates included) becomes U+FFFD, the result is cut to kStatusDetailMaxChars UTF-16 code
/// units (never inside a character), leading and trailing spaces are trimmed and an empty
/// result becomes "none". Everything a plugin or hook says that reaches the cloud passes here.
[[nodiscard]] std::string sanitize_status_detail(std::string_view text);

/// True when `code_point` is of Unicode general category C (Cc, Cf, Cs, Co or Cn) in the
/// Unicode version of host/common/unicode_not_c.inc (scripts/gen-unicode-c.py), or is above
/// U+10FFFF. Characters assigned in a later Unicode version count as unassigned.
[[nodiscard]] bool is_unicode_category_c(std::uint32_t code_point);

/// True when AWS IoT Jobs accepts `text` as a statusDetails value as it is: well-formed UTF-8,
/// 1 to kStatusDetailMaxChars UTF-16 code units, no character of category C. What
/// sanitize_status_detail returns always is; the emulator refuses what is not.
[[nodiscard]] bool is_valid_status_detail(std::string_view text);

/// True when `text` is well-formed UTF-8 (RFC 3629: no overlong forms, surrogates or values
/// above U+10FFFF).
[[nodiscard]] bool is_valid_utf8(std::string_view text);

}  // namespace upparat
