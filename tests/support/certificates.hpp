#pragma once

// A throw-away certificate authority for TLS tests (generated with the OpenSSL API, EC P-256).

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "support/temp_dir.hpp"

namespace upparat::test {

/// The key of an issued certificate.
enum class KeyType { EcP256, EcP384, Rsa2048, Rsa1024 };

/// A certificate and its private key, both PEM files.
struct CertificateFiles {
  std::filesystem::path cert;
  std::filesystem::path key;
};

struct CertificateRequest {
  std::string common_name;
  /// subjectAltName entries.
  std::vector<std::string> dns_names;
  std::vector<std::string> ip_addresses;
  /// extendedKeyUsage serverAuth (true) or clientAuth (false).
  bool server = false;
  /// extendedKeyUsage codeSigning instead (a code-signing certificate).
  bool code_signing = false;
  KeyType key = KeyType::EcP256;
  /// Validity relative to now; a negative not_after gives an expired certificate.
  std::chrono::seconds not_before{-std::chrono::hours(1)};
  std::chrono::seconds not_after{std::chrono::hours(24 * 30)};
  /// Files are "<file_stem>.pem" and "<file_stem>.key" in the CA's directory;
  /// default: common_name (characters other than [A-Za-z0-9._-] replaced by '_').
  std::string file_stem;
};

/// A CA in its own TempDir ("ca.pem", "ca.key"), with a server certificate for
/// 127.0.0.1 / localhost ("server.pem", "server.key"; CN=localhost, subjectAltName
/// IP:127.0.0.1, DNS:localhost) made at creation. Client certificates are issued on demand
/// with CN = thing name, as AWS IoT things use. Files live until the CA is destroyed; the
/// service fixtures copy what they need, so they may outlive it.
class CertificateAuthority {
 public:
  static Result<CertificateAuthority> create(const std::string& common_name = "Upparat Test CA");

  [[nodiscard]] const std::filesystem::path& dir() const { return dir_.path(); }
  [[nodiscard]] const std::filesystem::path& ca_cert() const { return ca_.cert; }
  [[nodiscard]] const std::filesystem::path& ca_key() const { return ca_.key; }
  [[nodiscard]] const CertificateFiles& server() const { return server_; }

  /// A client certificate with CN = thing_name (files "<thing_name>.pem"/".key").
  Result<CertificateFiles> issue_client(const std::string& thing_name);
  /// Any certificate signed by this CA.
  Result<CertificateFiles> issue(const CertificateRequest& request);

 private:
  explicit CertificateAuthority(TempDir dir) : dir_(std::move(dir)) {}
  TempDir dir_;
  CertificateFiles ca_;
  CertificateFiles server_;
};

}  // namespace upparat::test
