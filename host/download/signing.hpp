#pragma once

// Code-signing certificates and the check of a job's signature against them. The signature is
// verified over the SHA-256 the downloader computed as the bytes arrived: the file is never
// read a second time.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "common/signature.hpp"

using EVP_PKEY = struct evp_pkey_st;

namespace upparat::download {

/// One `[download] signing_certificates` entry: a PEM certificate or public key.
struct SigningCertificate {
  std::filesystem::path path;
  /// The certificate's subject (RFC 2253, e.g. "CN=Firmware 2026,O=Example"), or
  /// "public key <path>" for a bare public key. Logged, named in errors, given to plugins.
  std::string subject;
  SignatureAlgorithm algorithm = SignatureAlgorithm::EcdsaP256Sha256;
  std::shared_ptr<EVP_PKEY> key;
};

using SigningCertificates = std::vector<SigningCertificate>;

/// Reads a PEM certificate or public key (at most 1 MiB). Fails, naming the file, when it is
/// missing, not PEM, or its key is neither ECDSA P-256 nor RSA of at least 2048 bits.
[[nodiscard]] Result<SigningCertificate> load_signing_certificate(
    const std::filesystem::path& path);

/// Verifies `signature` over the SHA-256 `digest` (32 bytes) with each certificate of its
/// algorithm in turn. Returns the subject of the first one that verifies; the error names the
/// algorithm and the subjects tried (or that none has a key of that algorithm).
[[nodiscard]] Result<std::string> verify_signature(const SigningCertificates& certificates,
                                                   const Signature& signature,
                                                   const std::uint8_t* digest,
                                                   std::size_t digest_size);

}  // namespace upparat::download
