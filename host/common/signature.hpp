#pragma once

// The code-signing signature of a job document: `sig-sha256-ecdsa` or `sig-sha256-rsa`, the
// base64 text AWS Signer gives as the `signature` of its signed object. Parsing is pure (no
// crypto library): the verification is in download/signing.hpp.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.hpp"

namespace upparat {

enum class SignatureAlgorithm {
  EcdsaP256Sha256,  ///< SHA256withECDSA: a DER ECDSA-Sig-Value over the file's SHA-256
  RsaSha256,        ///< SHA256withRSA: an RSASSA-PKCS1-v1_5 signature (raw, as long as the key)
};

/// "SHA256withECDSA" or "SHA256withRSA" (AWS Signer's names).
[[nodiscard]] const char* to_string(SignatureAlgorithm algorithm);
/// The job document's field: "sig-sha256-ecdsa" or "sig-sha256-rsa".
[[nodiscard]] const char* field_name(SignatureAlgorithm algorithm);

struct Signature {
  SignatureAlgorithm algorithm = SignatureAlgorithm::EcdsaP256Sha256;
  std::vector<std::uint8_t> bytes;  ///< decoded: DER for ECDSA, the raw block for RSA
  bool operator==(const Signature& o) const { return algorithm == o.algorithm && bytes == o.bytes; }
};

/// Decodes the base64 text of a signature field and checks its structure: for ECDSA a DER
/// SEQUENCE of two positive, minimally encoded INTEGERs of at most 256 bits and nothing after
/// it; for RSA 128 to 1024 bytes (1024- to 8192-bit keys). Padding '=' is optional; any other
/// character than the base64 alphabet (whitespace too) is refused. The error says what is
/// wrong without repeating the input.
[[nodiscard]] Result<Signature> parse_signature(SignatureAlgorithm algorithm,
                                                std::string_view base64);

}  // namespace upparat
