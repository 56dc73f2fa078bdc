// The signature field's parser: base64 to DER (ECDSA) or the raw block (RSA), structure checked.

#include "common/signature.hpp"

#include <gtest/gtest.h>

#include <string>

namespace upparat {
namespace {

// SEQUENCE { INTEGER 0x11 x 32, INTEGER 0x00 0x80 0x22 x 31 } (71 bytes).
constexpr const char* kGoodEcdsa =
    "MEUCIBERERERERERERERERERERERERERERERERERERERERERAiEAgCIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIi"
    "I=";

std::string ecdsa_error(const std::string& text) {
  auto parsed = parse_signature(SignatureAlgorithm::EcdsaP256Sha256, text);
  EXPECT_FALSE(parsed) << text;
  return parsed ? std::string() : parsed.error().message();
}

TEST(SignatureParser, DecodesAGoodEcdsaSignature) {
  auto parsed = parse_signature(SignatureAlgorithm::EcdsaP256Sha256, kGoodEcdsa);
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_EQ(parsed->algorithm, SignatureAlgorithm::EcdsaP256Sha256);
  ASSERT_EQ(parsed->bytes.size(), 71U);
  EXPECT_EQ(parsed->bytes[0], 0x30);
  EXPECT_EQ(parsed->bytes[4], 0x11);
  EXPECT_EQ(parsed->bytes[70], 0x22);
  // The padding is optional.
  std::string unpadded = kGoodEcdsa;
  unpadded.pop_back();
  auto again = parse_signature(SignatureAlgorithm::EcdsaP256Sha256, unpadded);
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(again->bytes, parsed->bytes);
}

TEST(SignatureParser, RefusesWhatIsNotBase64) {
  EXPECT_NE(ecdsa_error("").find("empty"), std::string::npos);
  EXPECT_NE(ecdsa_error("not base64!").find("not base64 (character 4)"), std::string::npos);
  EXPECT_NE(ecdsa_error(std::string(kGoodEcdsa) + "\n").find("not base64"), std::string::npos);
  EXPECT_NE(ecdsa_error("A===").find("not base64"), std::string::npos);
  EXPECT_NE(ecdsa_error("AAAAA").find("wrong length"), std::string::npos);
  EXPECT_NE(ecdsa_error("AB==").find("stray bits"), std::string::npos);
  EXPECT_NE(ecdsa_error(std::string(4000, 'A')).find("longer than"), std::string::npos);
}

TEST(SignatureParser, RefusesWhatIsNotAnEcdsaSignature) {
  // Trailing byte outside the SEQUENCE.
  EXPECT_NE(
      ecdsa_error("MEUCIBERERERERERERERERERERERERERERERERERERERERERAiEAgCIiIiIiIiIiIiIiIiIiIiIiIiIi"
                  "IiIiIiIiIiIiIiIA")
          .find("length does not match"),
      std::string::npos);
  // A byte inside the SEQUENCE after the two INTEGERs.
  EXPECT_NE(ecdsa_error("MEUCIBERERERERERERERERERERERERERERERERERERERERERAiARERERERERERERERERERERER"
                        "EREREREREREREREREREQA=")
                .find("after its two INTEGERs"),
            std::string::npos);
  EXPECT_NE(ecdsa_error("MEQCIIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAiARERERERERERERERERERERER"
                        "EREREREREREREREREREQ==")
                .find("negative"),
            std::string::npos);
  EXPECT_NE(ecdsa_error("MEQCIAARAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAiARERERERERERERERERERERER"
                        "EREREREREREREREREREQ==")
                .find("minimally"),
            std::string::npos);
  EXPECT_NE(ecdsa_error("MCUCAQACIBERERERERERERERERERERERERERERERERERERERERER").find("zero"),
            std::string::npos);
  EXPECT_NE(ecdsa_error("MEUCIQEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAIgERERERERERERERERERERER"
                        "ERERERERERERERERERERE=")
                .find("longer than 256 bits"),
            std::string::npos);
  // One INTEGER only.
  EXPECT_NE(ecdsa_error("MCICIBERERERERERERERERERERERERERERERERERERERERER")
                .find("its s is not a DER INTEGER"),
            std::string::npos);
  EXPECT_NE(ecdsa_error("AAECAwQFBgcI").find("not a DER SEQUENCE"), std::string::npos);
  // An RSA-sized block is no DER.
  EXPECT_NE(ecdsa_error(std::string(344, 'A')).find("not an ECDSA signature"), std::string::npos);
}

TEST(SignatureParser, RsaIsARawBlockOfAKeysSize) {
  auto rsa = parse_signature(SignatureAlgorithm::RsaSha256, std::string(344, 'B'));
  ASSERT_TRUE(rsa) << rsa.error().message();
  EXPECT_EQ(rsa->bytes.size(), 258U);
  auto small = parse_signature(SignatureAlgorithm::RsaSha256, std::string(88, 'A'));
  ASSERT_FALSE(small);
  EXPECT_NE(small.error().message().find("not an RSA signature: 66 bytes"), std::string::npos);
}

TEST(SignatureParser, Names) {
  EXPECT_STREQ(to_string(SignatureAlgorithm::EcdsaP256Sha256), "SHA256withECDSA");
  EXPECT_STREQ(to_string(SignatureAlgorithm::RsaSha256), "SHA256withRSA");
  EXPECT_STREQ(field_name(SignatureAlgorithm::EcdsaP256Sha256), "sig-sha256-ecdsa");
  EXPECT_STREQ(field_name(SignatureAlgorithm::RsaSha256), "sig-sha256-rsa");
}

}  // namespace
}  // namespace upparat
