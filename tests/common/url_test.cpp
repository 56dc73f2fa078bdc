#include "common/url.hpp"

#include <gtest/gtest.h>

namespace upparat {
namespace {

TEST(RedactUrl, DropsQueryUserinfoAndFragment) {
  EXPECT_EQ(redact_url("https://bucket.s3.amazonaws.com/fw.raucb?X-Amz-Signature=abc&X=1"),
            "https://bucket.s3.amazonaws.com/fw.raucb?<redacted>");
  EXPECT_EQ(redact_url("HTTPS://user:secret@host:8443/a/b#frag"), "https://host:8443/a/b");
  EXPECT_EQ(redact_url("https://host?q"), "https://host?<redacted>");
  EXPECT_EQ(redact_url("https://host/p?"), "https://host/p?<redacted>");
  EXPECT_EQ(redact_url("https://host/p#x?y"), "https://host/p");
  EXPECT_EQ(redact_url("http://[::1]:80/x?a"), "http://[::1]:80/x?<redacted>");
  EXPECT_EQ(redact_url("https://a@b@host/x"), "https://host/x");
}

TEST(RedactUrl, InvalidTextRevealsNothing) {
  for (const char* text :
       {"", "not a url?secret", "bucket/key?secret", "https://", "https://host:99999/x?secret",
        "https://ho st/x?secret", "https://host/\x01?secret", "mailto:secret", "https://[::1/x"}) {
    EXPECT_EQ(redact_url(text), "<invalid url>") << text;
  }
}

TEST(ParseUrl, Parts) {
  auto url = parse_url("HtTpS://u:p@Example.com:443/p/q.raucb?x=1#f");
  ASSERT_TRUE(url.has_value()) << url.error().message();
  EXPECT_EQ(url->scheme, "https");
  EXPECT_EQ(url->host, "Example.com");
  EXPECT_EQ(url->port, 443);
  EXPECT_EQ(url->path, "/p/q.raucb");
  EXPECT_TRUE(url->has_query);
  EXPECT_TRUE(url->has_userinfo);
  url = parse_url("ftp://h");
  ASSERT_TRUE(url.has_value());
  EXPECT_EQ(url->scheme, "ftp");
  EXPECT_EQ(url->path, "");
  EXPECT_FALSE(url->port.has_value());
  EXPECT_FALSE(parse_url("file:/etc/passwd").has_value());
  EXPECT_FALSE(parse_url("https://h:0/").has_value());
  EXPECT_FALSE(parse_url("https://h:x/").has_value());
  EXPECT_FALSE(parse_url("1http://h/").has_value());
  const auto error = parse_url("https://h/\x7f?X-Amz-Signature=topsecret");
  ASSERT_FALSE(error.has_value());
  EXPECT_EQ(error.error().message().find("topsecret"), std::string::npos);
}

TEST(UrlScheme, LowerCaseOrEmpty) {
  EXPECT_EQ(url_scheme("HTTPS://x"), "https");
  EXPECT_EQ(url_scheme("file:///x"), "file");
  EXPECT_EQ(url_scheme("s3://b/k"), "s3");
  EXPECT_EQ(url_scheme("/just/a/path"), "");
  EXPECT_EQ(url_scheme(""), "");
}

}  // namespace
}  // namespace upparat
