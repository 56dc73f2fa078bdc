#include "common/sanitize.hpp"

#include <gtest/gtest.h>

#include <string>

namespace upparat {
namespace {

// Counts UTF-8 characters (every byte that does not continue a sequence).
std::size_t characters(const std::string& text) {
  std::size_t count = 0;
  for (unsigned char c : text) {
    count += (c & 0xC0) != 0x80 ? 1 : 0;
  }
  return count;
}

TEST(SanitizeStatusDetail, PlainTextPassesUnchanged) {
  EXPECT_EQ(sanitize_status_detail("install failed: exit code 3"), "install failed: exit code 3");
  EXPECT_EQ(sanitize_status_detail("gr\xC3\xBC\xC3\x9F \xE2\x82\xAC \xF0\x9F\x98\x80"),
            "gr\xC3\xBC\xC3\x9F \xE2\x82\xAC \xF0\x9F\x98\x80");
}

TEST(SanitizeStatusDetail, ControlCharactersBecomeSpaces) {
  EXPECT_EQ(sanitize_status_detail("a\nb\tc\rd\x01"
                                   "e\x7F"
                                   "f\x1B[31mg"),
            "a b c d e f [31mg");
  // C1 controls (U+0080..U+009F) too.
  EXPECT_EQ(sanitize_status_detail("a\xC2\x85"
                                   "b\xC2\x9F"
                                   "c"),
            "a b c");
  // NUL inside the text.
  EXPECT_EQ(sanitize_status_detail(std::string("a\0b", 3)), "a b");
}

TEST(SanitizeStatusDetail, LeadingAndTrailingSpaceIsTrimmed) {
  EXPECT_EQ(sanitize_status_detail("\n\n  error: disk full\n"), "error: disk full");
}

TEST(SanitizeStatusDetail, InvalidUtf8IsReplaced) {
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(sanitize_status_detail("a\xFF"
                                   "b"),
            "a" + fffd + "b");
  EXPECT_EQ(sanitize_status_detail("\xC3"), fffd);                        // truncated sequence
  EXPECT_EQ(sanitize_status_detail("\xC0\xAF"), fffd + fffd);             // overlong '/'
  EXPECT_EQ(sanitize_status_detail("\xED\xA0\x80"), fffd + fffd + fffd);  // a surrogate
  EXPECT_EQ(sanitize_status_detail("\xF4\x90\x80\x80x"), fffd + fffd + fffd + fffd + "x");
  EXPECT_EQ(sanitize_status_detail("\x80\x80"), fffd + fffd);  // stray continuation bytes
}

TEST(SanitizeStatusDetail, EmptyBecomesNone) {
  EXPECT_EQ(sanitize_status_detail(""), "none");
  EXPECT_EQ(sanitize_status_detail(" \n\t\r "), "none");
}

TEST(SanitizeStatusDetail, CutTo1024Characters) {
  EXPECT_EQ(sanitize_status_detail(std::string(1024, 'x')), std::string(1024, 'x'));
  EXPECT_EQ(sanitize_status_detail(std::string(5000, 'x')), std::string(1024, 'x'));
  EXPECT_EQ(kStatusDetailMaxChars, 1024u);
}

TEST(SanitizeStatusDetail, CutNeverSplitsACharacter) {
  // 1023 ASCII characters, then 3-byte euro signs: the cut falls after the first euro sign.
  const std::string euro = "\xE2\x82\xAC";
  std::string text(1023, 'x');
  for (int i = 0; i < 10; ++i) {
    text += euro;
  }
  const std::string out = sanitize_status_detail(text);
  EXPECT_EQ(out, std::string(1023, 'x') + euro);
  EXPECT_EQ(characters(out), 1024u);

  // Only 4-byte characters: 1024 of them, 4096 bytes.
  std::string emoji;
  for (int i = 0; i < 2000; ++i) {
    emoji += "\xF0\x9F\x98\x80";
  }
  const std::string cut = sanitize_status_detail(emoji);
  EXPECT_EQ(cut.size(), 4096u);
  EXPECT_EQ(characters(cut), 1024u);
  EXPECT_TRUE(is_valid_utf8(cut));
}

TEST(SanitizeStatusDetail, OutputIsAlwaysValidUtf8) {
  std::string bytes;
  for (int i = 0; i < 256; ++i) {
    bytes += static_cast<char>(i);
  }
  const std::string out = sanitize_status_detail(bytes + bytes);
  EXPECT_TRUE(is_valid_utf8(out));
  for (unsigned char c : out) {
    EXPECT_FALSE(c < 0x20 || c == 0x7F) << static_cast<int>(c);
  }
}

TEST(IsValidUtf8, AcceptsAndRefuses) {
  EXPECT_TRUE(is_valid_utf8(""));
  EXPECT_TRUE(is_valid_utf8("plain"));
  EXPECT_TRUE(is_valid_utf8("\xC3\xA4\xE2\x82\xAC\xF0\x9F\x98\x80"));
  EXPECT_FALSE(is_valid_utf8("\xC3"));
  EXPECT_FALSE(is_valid_utf8("\xC0\x80"));
  EXPECT_FALSE(is_valid_utf8("\xED\xBF\xBF"));
  EXPECT_FALSE(is_valid_utf8("\xF5\x80\x80\x80"));
}

}  // namespace
}  // namespace upparat
