#include "common/url.hpp"

#include <cctype>

#include "common/text.hpp"

namespace upparat {
namespace {

bool is_scheme_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '+' || c == '-' || c == '.';
}

// Printable ASCII without space: what may appear in a URL as written by a human or a signer.
bool is_url_char(char c) {
  return c > 0x20 && c < 0x7f;
}

// The scheme, or npos when the text does not start with one followed by ':'.
std::size_t scheme_end(std::string_view url) {
  if (url.empty() || std::isalpha(static_cast<unsigned char>(url[0])) == 0) {
    return std::string_view::npos;
  }
  std::size_t i = 1;
  while (i < url.size() && is_scheme_char(url[i])) {
    ++i;
  }
  if (i >= url.size() || url[i] != ':') {
    return std::string_view::npos;
  }
  return i;
}

}  // namespace

std::string url_scheme(std::string_view url) {
  const auto end = scheme_end(url);
  return end == std::string_view::npos ? std::string() : lower(url.substr(0, end));
}

Result<Url> parse_url(std::string_view url) {
  const auto end = scheme_end(url);
  if (end == std::string_view::npos) {
    return fail("not an absolute URL (no scheme)");
  }
  Url out;
  out.scheme = lower(url.substr(0, end));
  std::string_view rest = url.substr(end + 1);
  if (rest.substr(0, 2) != "//") {
    return fail("URL without a host (\"" + out.scheme + ":\")");
  }
  rest.remove_prefix(2);
  for (char c : rest) {
    if (!is_url_char(c)) {
      return fail("URL contains a space, a control or a non-ASCII character");
    }
  }
  // The fragment is never sent; the query starts at the first '?'.
  if (const auto hash = rest.find('#'); hash != std::string_view::npos) {
    rest = rest.substr(0, hash);
  }
  if (const auto q = rest.find('?'); q != std::string_view::npos) {
    out.has_query = true;
    rest = rest.substr(0, q);
  }
  const auto slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  out.path = slash == std::string_view::npos ? std::string() : std::string(rest.substr(slash));
  if (const auto at = authority.rfind('@'); at != std::string_view::npos) {
    out.has_userinfo = true;
    authority.remove_prefix(at + 1);
  }
  std::string_view host = authority;
  std::string_view port;
  if (!authority.empty() && authority[0] == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) {
      return fail("URL with an unterminated IPv6 address");
    }
    host = authority.substr(0, close + 1);
    const auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') {
        return fail("URL with garbage after its IPv6 address");
      }
      port = after.substr(1);
    }
  } else if (const auto colon = authority.find(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty()) {
    return fail("URL without a host");
  }
  if (!port.empty()) {
    unsigned long value = 0;
    for (char c : port) {
      if (std::isdigit(static_cast<unsigned char>(c)) == 0) {
        return fail("URL with a bad port");
      }
      value = value * 10 + static_cast<unsigned long>(c - '0');
      if (value > 65535) {
        return fail("URL with a bad port");
      }
    }
    if (value == 0) {
      return fail("URL with a bad port");
    }
    out.port = static_cast<std::uint16_t>(value);
  }
  out.host = std::string(host);
  return out;
}

std::string redact_url(std::string_view url) {
  const auto parsed = parse_url(url);
  if (!parsed) {
    return "<invalid url>";
  }
  std::string out = parsed->scheme + "://" + parsed->host;
  if (parsed->port) {
    out += ":" + std::to_string(*parsed->port);
  }
  out += parsed->path;
  if (parsed->has_query) {
    out += "?<redacted>";
  }
  return out;
}

}  // namespace upparat
