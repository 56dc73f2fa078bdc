#include "common/sanitize.hpp"

#include <gtest/gtest.h>

#include <cstdint>
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

  // Only astral characters, each two UTF-16 code units: 512 of them, 2048 bytes.
  std::string emoji;
  for (int i = 0; i < 2000; ++i) {
    emoji += "\xF0\x9F\x98\x80";
  }
  const std::string cut = sanitize_status_detail(emoji);
  EXPECT_EQ(cut.size(), 2048u);
  EXPECT_EQ(characters(cut), 512u);
  EXPECT_TRUE(is_valid_utf8(cut));
}

TEST(SanitizeStatusDetail, AstralCharactersCountTwoUtf16Units) {
  const std::string emoji = "\xF0\x9F\x98\x80";  // U+1F600
  // 1022 + 2 units: exactly at the limit.
  EXPECT_EQ(sanitize_status_detail(std::string(1022, 'x') + emoji + "y"),
            std::string(1022, 'x') + emoji);
  // 1023 + 2 units would be 1025: the emoji is left out whole, not cut in half.
  EXPECT_EQ(sanitize_status_detail(std::string(1023, 'x') + emoji), std::string(1023, 'x'));
  EXPECT_EQ(sanitize_status_detail(std::string(1023, 'x') + emoji + "y"), std::string(1023, 'x'));
  // An odd limit left over after emoji: 511 emoji (1022 units), then 'a' and 'b' fit, 'c' not.
  std::string text;
  for (int i = 0; i < 511; ++i) {
    text += emoji;
  }
  EXPECT_EQ(sanitize_status_detail(text + "abc"), text + "ab");
  EXPECT_EQ(sanitize_status_detail(text + "a" + emoji), text + "a");
}

TEST(SanitizeStatusDetail, ReplacementsCountOneUnitEach) {
  const std::string fffd = "\xEF\xBF\xBD";
  std::string expected;
  for (int i = 0; i < 1024; ++i) {
    expected += fffd;
  }
  EXPECT_EQ(sanitize_status_detail(std::string(1024, '\xFF')), expected);
  EXPECT_EQ(sanitize_status_detail(std::string(3000, '\xFF')), expected);
  // A private use astral character becomes one space: one unit, not two.
  EXPECT_EQ(sanitize_status_detail(std::string(1022, 'x') + "\xF3\xB0\x80\x80" + "yz"),
            std::string(1022, 'x') + " y");
}

TEST(SanitizeStatusDetail, EveryCategoryCCharacterBecomesASpace) {
  // Format (Cf): zero width space, byte order mark, soft hyphen, language tag, Arabic number
  // sign, left-to-right mark.
  EXPECT_EQ(sanitize_status_detail("a\xE2\x80\x8B"
                                   "b"),
            "a b");
  EXPECT_EQ(sanitize_status_detail("a\xEF\xBB\xBF"
                                   "b"),
            "a b");
  EXPECT_EQ(sanitize_status_detail("a\xC2\xAD"
                                   "b"),
            "a b");
  EXPECT_EQ(sanitize_status_detail("a\xF3\xA0\x80\x81"
                                   "b"),
            "a b");
  EXPECT_EQ(sanitize_status_detail("a\xD8\x80"
                                   "b"),
            "a b");
  EXPECT_EQ(sanitize_status_detail("a\xE2\x80\x8E"
                                   "b"),
            "a b");
  // Private use (Co): U+E000, U+F8FF, U+F0000 and U+10FFFD.
  EXPECT_EQ(sanitize_status_detail("a\xEE\x80\x80"
                                   "b"),
            "a b");
  EXPECT_EQ(sanitize_status_detail("a\xEF\xA3\xBF"
                                   "b"),
            "a b");
  EXPECT_EQ(sanitize_status_detail("a\xF3\xB0\x80\x80"
                                   "b"),
            "a b");
  EXPECT_EQ(sanitize_status_detail("a\xF4\x8F\xBF\xBD"
                                   "b"),
            "a b");
  // Unassigned (Cn): U+0378, the noncharacters U+FFFF and U+10FFFF, and U+E0080.
  EXPECT_EQ(sanitize_status_detail("a\xCD\xB8"
                                   "b"),
            "a b");
  EXPECT_EQ(sanitize_status_detail("a\xEF\xBF\xBF"
                                   "b"),
            "a b");
  EXPECT_EQ(sanitize_status_detail("a\xF4\x8F\xBF\xBF"
                                   "b"),
            "a b");
  EXPECT_EQ(sanitize_status_detail("a\xF3\xA0\x82\x80"
                                   "b"),
            "a b");
  // A version file that starts with a byte order mark.
  EXPECT_EQ(sanitize_status_detail("\xEF\xBB\xBF"
                                   "1.2.3\n"),
            "1.2.3");
}

TEST(SanitizeStatusDetail, EncodedSurrogatePairBecomesReplacementCharacters) {
  // U+1F600 written as two encoded surrogates (CESU-8): six invalid bytes.
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(sanitize_status_detail("a\xED\xA0\xBD\xED\xB8\x80"),
            "a" + fffd + fffd + fffd + fffd + fffd + fffd);
}

TEST(SanitizeStatusDetail, SeparatorsAndOtherAssignedCharactersAreKept) {
  // Line and paragraph separators are Zl and Zp, not C: AWS accepts them.
  EXPECT_EQ(sanitize_status_detail("a\xE2\x80\xA8"
                                   "b\xE2\x80\xA9"
                                   "c"),
            "a\xE2\x80\xA8"
            "b\xE2\x80\xA9"
            "c");
  // No-break space, ideographic space, U+FFFD itself, the last assigned BMP symbols and an
  // astral ideograph.
  const std::string kept =
      "\xC2\xA0x\xE3\x80\x80y\xEF\xBF\xBD\xEF\xBF\xBC\xEF\xBF\xBD\xF0\xA0\x80\x80";
  EXPECT_EQ(sanitize_status_detail("z" + kept + "z"), "z" + kept + "z");
}

TEST(IsUnicodeCategoryC, Boundaries) {
  for (std::uint32_t c :
       {0x00u,   0x1Fu,   0x7Fu,    0x80u,    0x9Fu,     0xADu,     0x378u,   0x600u,
        0x200Bu, 0x200Fu, 0x2064u,  0xD800u,  0xDFFFu,   0xE000u,   0xF8FFu,  0xFEFFu,
        0xFFFEu, 0xFFFFu, 0xE0001u, 0xF0000u, 0x10FFFDu, 0x10FFFFu, 0x110000u}) {
    EXPECT_TRUE(is_unicode_category_c(c)) << std::hex << c;
  }
  for (std::uint32_t c : {0x20u, 0x7Eu, 0xA0u, 0xACu, 0xAEu, 0x377u, 0x37Au, 0x2028u, 0x2029u,
                          0xF900u, 0xFFFDu, 0x1F600u, 0x20000u, 0xE0100u, 0xE01EFu}) {
    EXPECT_FALSE(is_unicode_category_c(c)) << std::hex << c;
  }
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

TEST(IsValidStatusDetail, MatchesAwsRule) {
  EXPECT_TRUE(is_valid_status_detail("download_start"));
  EXPECT_TRUE(is_valid_status_detail("\xC3\xA4 \xE2\x82\xAC \xF0\x9F\x98\x80"));
  EXPECT_TRUE(is_valid_status_detail(std::string(1024, 'x')));
  EXPECT_TRUE(is_valid_status_detail(std::string(1022, 'x') + "\xF0\x9F\x98\x80"));
  EXPECT_FALSE(is_valid_status_detail(""));
  EXPECT_FALSE(is_valid_status_detail(std::string(1025, 'x')));
  EXPECT_FALSE(is_valid_status_detail(std::string(1023, 'x') + "\xF0\x9F\x98\x80"));  // 1025 units
  EXPECT_FALSE(is_valid_status_detail("a\nb"));                                       // Cc
  EXPECT_FALSE(
      is_valid_status_detail("a\xE2\x80\x8B"
                             "b"));  // U+200B, Cf
  EXPECT_FALSE(
      is_valid_status_detail("\xEF\xBB\xBF"
                             "a"));                      // U+FEFF, Cf
  EXPECT_FALSE(is_valid_status_detail("\xEE\x80\x80"));  // U+E000, Co
  EXPECT_FALSE(is_valid_status_detail("\xED\xA0\x80"));  // an encoded surrogate
  EXPECT_FALSE(is_valid_status_detail("\xC3"));          // invalid UTF-8
}

TEST(SanitizeStatusDetail, OutputIsAlwaysAValidStatusDetail) {
  std::string bytes;
  for (int i = 0; i < 256; ++i) {
    bytes += static_cast<char>(i);
  }
  for (const std::string& in :
       {bytes, bytes + bytes + bytes + bytes + bytes, std::string(), std::string("\n\t"),
        std::string(2000, 'x'), std::string("\xE2\x80\x8B\xEE\x80\x80")}) {
    EXPECT_TRUE(is_valid_status_detail(sanitize_status_detail(in))) << in.size();
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
