#include "common/signature.hpp"

#include <cstddef>

namespace upparat {
namespace {

// The largest signature field accepted: an 8192-bit RSA signature is 1368 base64 characters.
constexpr std::size_t kMaxBase64 = 2048;
constexpr std::size_t kMinRsaBytes = 128;
constexpr std::size_t kMaxRsaBytes = 1024;

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') {
    return c - 'A';
  }
  if (c >= 'a' && c <= 'z') {
    return c - 'a' + 26;
  }
  if (c >= '0' && c <= '9') {
    return c - '0' + 52;
  }
  if (c == '+') {
    return 62;
  }
  if (c == '/') {
    return 63;
  }
  return -1;
}

Result<std::vector<std::uint8_t>> decode_base64(std::string_view text) {
  if (text.empty()) {
    return fail("it is empty");
  }
  if (text.size() > kMaxBase64) {
    return fail("it is longer than " + std::to_string(kMaxBase64) + " characters");
  }
  std::size_t padding = 0;
  while (!text.empty() && text.back() == '=' && padding < 2) {
    text.remove_suffix(1);
    ++padding;
  }
  if (padding > 0 && (text.size() + padding) % 4 != 0) {
    return fail("it is not base64 (wrong padding)");
  }
  if (text.size() % 4 == 1) {
    return fail("it is not base64 (wrong length)");
  }
  std::vector<std::uint8_t> out;
  out.reserve(text.size() * 3 / 4);
  std::uint32_t bits = 0;
  int count = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const int v = base64_value(text[i]);
    if (v < 0) {
      return fail("it is not base64 (character " + std::to_string(i + 1) + ")");
    }
    bits = (bits << 6) | static_cast<std::uint32_t>(v);
    count += 6;
    if (count >= 8) {
      count -= 8;
      out.push_back(static_cast<std::uint8_t>((bits >> count) & 0xff));
    }
  }
  // The bits left over must be zero: one text per signature.
  if ((bits & ((1U << count) - 1)) != 0) {
    return fail("it is not base64 (stray bits at the end)");
  }
  return out;
}

// One DER INTEGER at `pos`: a positive, minimally encoded value of at most 256 bits.
Status der_integer(const std::vector<std::uint8_t>& der, std::size_t& pos, const char* name) {
  if (pos + 2 > der.size() || der[pos] != 0x02) {
    return fail(std::string("its ") + name + " is not a DER INTEGER");
  }
  const std::size_t length = der[pos + 1];
  pos += 2;
  if (length == 0 || length > 33 || pos + length > der.size()) {
    return fail(std::string("its ") + name + " has a bad length");
  }
  const std::uint8_t first = der[pos];
  if ((first & 0x80) != 0) {
    return fail(std::string("its ") + name + " is negative");
  }
  if (length > 1 && first == 0 && (der[pos + 1] & 0x80) == 0) {
    return fail(std::string("its ") + name + " is not minimally encoded");
  }
  if (length == 33 && first != 0) {
    return fail(std::string("its ") + name + " is longer than 256 bits");
  }
  bool zero = true;
  for (std::size_t i = 0; i < length; ++i) {
    zero = zero && der[pos + i] == 0;
  }
  if (zero) {
    return fail(std::string("its ") + name + " is zero");
  }
  pos += length;
  return {};
}

Status check_ecdsa_der(const std::vector<std::uint8_t>& der) {
  // SEQUENCE { INTEGER r, INTEGER s }: at most 2 + 2 * 35 bytes, so a short-form length.
  if (der.size() < 8 || der[0] != 0x30) {
    return fail("it is not a DER SEQUENCE");
  }
  if ((der[1] & 0x80) != 0 || static_cast<std::size_t>(der[1]) + 2 != der.size()) {
    return fail("its DER length does not match its size");
  }
  std::size_t pos = 2;
  if (auto st = der_integer(der, pos, "r"); !st) {
    return st;
  }
  if (auto st = der_integer(der, pos, "s"); !st) {
    return st;
  }
  if (pos != der.size()) {
    return fail("its DER SEQUENCE has bytes after its two INTEGERs");
  }
  return {};
}

}  // namespace

const char* to_string(SignatureAlgorithm algorithm) {
  switch (algorithm) {
    case SignatureAlgorithm::EcdsaP256Sha256:
      return "SHA256withECDSA";
    case SignatureAlgorithm::RsaSha256:
      return "SHA256withRSA";
  }
  return "unknown";
}

const char* field_name(SignatureAlgorithm algorithm) {
  switch (algorithm) {
    case SignatureAlgorithm::EcdsaP256Sha256:
      return "sig-sha256-ecdsa";
    case SignatureAlgorithm::RsaSha256:
      return "sig-sha256-rsa";
  }
  return "unknown";
}

Result<Signature> parse_signature(SignatureAlgorithm algorithm, std::string_view base64) {
  auto bytes = decode_base64(base64);
  if (!bytes) {
    return fail(bytes.error());
  }
  if (algorithm == SignatureAlgorithm::EcdsaP256Sha256) {
    if (auto st = check_ecdsa_der(*bytes); !st) {
      return fail("not an ECDSA signature: " + st.error().message());
    }
  } else if (bytes->size() < kMinRsaBytes || bytes->size() > kMaxRsaBytes) {
    return fail("not an RSA signature: " + std::to_string(bytes->size()) +
                " bytes (an RSA signature of a 1024- to 8192-bit key has 128 to 1024)");
  }
  return Signature{algorithm, std::move(*bytes)};
}

}  // namespace upparat
