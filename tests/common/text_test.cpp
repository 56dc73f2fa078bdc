// The shared text helpers: trimming with the default and with chosen characters, ASCII case
// folding, and the job id rule.

#include "common/text.hpp"

#include <gtest/gtest.h>

#include <string>

#include "common/job_id.hpp"

namespace upparat {
namespace {

TEST(Trim, RemovesWhitespaceAtBothEndsOnly) {
  EXPECT_EQ(trim("  a b \t"), "a b");
  EXPECT_EQ(trim("\r\n\v\fx\f\v\n\r"), "x");
  EXPECT_EQ(trim("x"), "x");
  EXPECT_EQ(trim(""), "");
  EXPECT_EQ(trim(" \t\r\n"), "");
  EXPECT_EQ(trim(" abc ", ""), " abc ");
}

TEST(Trim, OnlyTheGivenCharacters) {
  EXPECT_EQ(trim(" \r\nvalue \r\n", " \t"), "\r\nvalue \r\n");
  EXPECT_EQ(trim("\t value\t ", " \t"), "value");
  EXPECT_EQ(trim_front(" \t x \r\n", " \t"), "x \r\n");
  EXPECT_EQ(trim_back(" x \r\n", " \t\r\n"), " x");
  EXPECT_EQ(trim_front("   ", " "), "");
  EXPECT_EQ(trim_back("   ", " "), "");
}

TEST(Trim, IsAViewIntoTheText) {
  const std::string text = "  inner  ";
  const auto view = trim(text);
  EXPECT_EQ(view.data(), text.data() + 2);
  EXPECT_EQ(view.size(), 5u);
}

TEST(Lower, FoldsAsciiLettersAndKeepsOtherBytes) {
  EXPECT_EQ(lower("HtTpS://Example.COM:443/"), "https://example.com:443/");
  EXPECT_EQ(lower("ÄÖ-09_"), "ÄÖ-09_");
  EXPECT_EQ(lower(""), "");
}

TEST(Iequals, IgnoresCaseButNotLength) {
  EXPECT_TRUE(iequals("Content-Range", "content-range"));
  EXPECT_TRUE(iequals("", ""));
  EXPECT_FALSE(iequals("etag", "etags"));
  EXPECT_FALSE(iequals("etag", "e-ag"));
}

TEST(ValidJobId, AwsRules) {
  EXPECT_TRUE(valid_job_id("upparat_1-A"));
  EXPECT_TRUE(valid_job_id(std::string(64, 'z')));
  EXPECT_FALSE(valid_job_id(std::string(65, 'z')));
  EXPECT_FALSE(valid_job_id(""));
  for (const char* bad : {"../x", "a b", "a/b", "a.b", "a:b", "caf\xc3\xa9", "$next"}) {
    EXPECT_FALSE(valid_job_id(bad)) << bad;
  }
}

}  // namespace
}  // namespace upparat
