#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace upparat {

/// The largest statusDetails value AWS IoT Jobs accepts, in characters.
inline constexpr std::size_t kStatusDetailMaxChars = 1024;

/// Turns any text into a valid statusDetails value: control characters (C0, DEL, C1) become
/// spaces, invalid UTF-8 sequences become U+FFFD, leading and trailing spaces are trimmed, the
/// result is cut to kStatusDetailMaxChars characters (never inside a character) and an empty
/// result becomes "none". Everything a plugin or hook says that reaches the cloud passes here.
[[nodiscard]] std::string sanitize_status_detail(std::string_view text);

/// True when `text` is well-formed UTF-8 (RFC 3629: no overlong forms, surrogates or values
/// above U+10FFFF).
[[nodiscard]] bool is_valid_utf8(std::string_view text);

}  // namespace upparat
