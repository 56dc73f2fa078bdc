#pragma once

// Code-signing for desk tests: signs a file's SHA-256 with a private key the way AWS Signer
// does (SHA256withECDSA: DER; SHA256withRSA: PKCS#1 v1.5) and adds the base64 signature to a
// job document as `sig-sha256-ecdsa` or `sig-sha256-rsa`.

#include <filesystem>
#include <string>

#include "common/error.hpp"

namespace upparat::emulator {

struct FileSignature {
  std::string field;   ///< "sig-sha256-ecdsa" (EC P-256 key) or "sig-sha256-rsa" (RSA key)
  std::string base64;  ///< the signature as the job document carries it
};

/// Signs the SHA-256 of `file` with the PEM private key `key` (EC P-256 or RSA).
[[nodiscard]] Result<FileSignature> sign_file(const std::filesystem::path& key,
                                              const std::filesystem::path& file);

/// Signs the SHA-256 of `data` with the PEM private key `key` (EC P-256 or RSA).
[[nodiscard]] Result<FileSignature> sign_data(const std::filesystem::path& key,
                                              const std::string& data);

/// `document` (a JSON object) with `signature.field` set to `signature.base64`.
[[nodiscard]] Result<std::string> add_signature(const std::string& document,
                                                const FileSignature& signature);

}  // namespace upparat::emulator
