#include "support/certificates.hpp"

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <memory>

namespace upparat::test {

namespace fs = std::filesystem;

namespace {

struct Deleter {
  void operator()(X509* x) const { X509_free(x); }
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
  void operator()(X509_EXTENSION* e) const { X509_EXTENSION_free(e); }
  void operator()(BIGNUM* b) const { BN_free(b); }
  void operator()(BIO* b) const { BIO_free(b); }
};
using X509Ptr = std::unique_ptr<X509, Deleter>;
using KeyPtr = std::unique_ptr<EVP_PKEY, Deleter>;

std::string openssl_error(const std::string& what) {
  unsigned long code = ERR_get_error();
  char buffer[256] = "unknown error";
  if (code != 0) {
    ERR_error_string_n(code, buffer, sizeof buffer);
  }
  ERR_clear_error();
  return what + ": " + buffer;
}

std::string file_stem_for(const std::string& name) {
  std::string stem = name.empty() ? std::string("cert") : name;
  for (char& c : stem) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      c = '_';
    }
  }
  if (stem[0] == '.') {
    stem[0] = '_';
  }
  return stem;
}

Status add_extension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX context;
  X509V3_set_ctx(&context, issuer, cert, nullptr, nullptr, 0);
  std::unique_ptr<X509_EXTENSION, Deleter> extension(
      X509V3_EXT_conf_nid(nullptr, &context, nid, value.c_str()));
  if (!extension || X509_add_ext(cert, extension.get(), -1) != 1) {
    return fail(openssl_error(std::string("extension ") + OBJ_nid2sn(nid) + "=" + value));
  }
  return {};
}

struct Made {
  X509Ptr cert;
  KeyPtr key;
};

// Makes a key and a certificate for it; self-signed when issuer_cert is null.
Result<Made> make_certificate(const std::string& common_name, X509* issuer_cert,
                              EVP_PKEY* issuer_key, std::chrono::seconds not_before,
                              std::chrono::seconds not_after,
                              const std::vector<std::pair<int, std::string>>& extensions,
                              KeyType type = KeyType::EcP256) {
  KeyPtr key;
  switch (type) {
    case KeyType::EcP256:
      key.reset(EVP_EC_gen("P-256"));
      break;
    case KeyType::EcP384:
      key.reset(EVP_EC_gen("P-384"));
      break;
    case KeyType::Rsa2048:
      key.reset(EVP_RSA_gen(2048));
      break;
    case KeyType::Rsa1024:
      key.reset(EVP_RSA_gen(1024));
      break;
  }
  if (!key) {
    return fail(openssl_error("EC key generation"));
  }
  X509Ptr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), 2) != 1) {
    return fail(openssl_error("X509_new"));
  }
  std::unique_ptr<BIGNUM, Deleter> serial(BN_new());
  if (!serial || BN_rand(serial.get(), 63, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr) {
    return fail(openssl_error("serial number"));
  }
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), static_cast<long>(not_before.count()));
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), static_cast<long>(not_after.count()));
  X509_NAME* subject = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(common_name.c_str()), -1,
                                 -1, 0) != 1) {
    return fail(openssl_error("common name \"" + common_name + "\""));
  }
  X509* issuer = issuer_cert != nullptr ? issuer_cert : cert.get();
  EVP_PKEY* signer = issuer_key != nullptr ? issuer_key : key.get();
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(issuer)) != 1 ||
      X509_set_pubkey(cert.get(), key.get()) != 1) {
    return fail(openssl_error("issuer/public key"));
  }
  for (const auto& [nid, value] : extensions) {
    if (auto status = add_extension(cert.get(), issuer, nid, value); !status) {
      return fail(status.error());
    }
  }
  if (X509_sign(cert.get(), signer, EVP_sha256()) == 0) {
    return fail(openssl_error("signing"));
  }
  return Made{std::move(cert), std::move(key)};
}

Status write_pem(const Made& made, const CertificateFiles& files) {
  {
    std::unique_ptr<BIO, Deleter> bio(BIO_new_file(files.cert.c_str(), "w"));
    if (!bio || PEM_write_bio_X509(bio.get(), made.cert.get()) != 1) {
      return fail(openssl_error("write " + files.cert.string()));
    }
  }
  {
    std::unique_ptr<BIO, Deleter> bio(BIO_new_file(files.key.c_str(), "w"));
    if (!bio || PEM_write_bio_PrivateKey(bio.get(), made.key.get(), nullptr, nullptr, 0, nullptr,
                                         nullptr) != 1) {
      return fail(openssl_error("write " + files.key.string()));
    }
  }
  std::error_code ec;
  fs::permissions(files.key, fs::perms::owner_read | fs::perms::owner_write,
                  fs::perm_options::replace, ec);
  return {};
}

Result<Made> load(const CertificateFiles& files) {
  Made made;
  {
    std::unique_ptr<BIO, Deleter> bio(BIO_new_file(files.cert.c_str(), "r"));
    made.cert.reset(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  }
  {
    std::unique_ptr<BIO, Deleter> bio(BIO_new_file(files.key.c_str(), "r"));
    made.key.reset(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  }
  if (!made.cert || !made.key) {
    return fail(openssl_error("read the CA from " + files.cert.parent_path().string()));
  }
  return made;
}

}  // namespace

Result<CertificateAuthority> CertificateAuthority::create(const std::string& common_name) {
  auto dir = TempDir::create("ca");
  if (!dir) {
    return fail(dir.error());
  }
  CertificateAuthority ca(std::move(*dir));
  ca.ca_ = {ca.dir() / "ca.pem", ca.dir() / "ca.key"};
  auto made = make_certificate(common_name, nullptr, nullptr, -std::chrono::hours(1),
                               std::chrono::hours(24 * 365),
                               {{NID_basic_constraints, "critical,CA:TRUE"},
                                {NID_key_usage, "critical,keyCertSign,cRLSign"},
                                {NID_subject_key_identifier, "hash"},
                                {NID_authority_key_identifier, "keyid:always"}});
  if (!made) {
    return fail(made.error().context("create the test CA"));
  }
  if (auto status = write_pem(*made, ca.ca_); !status) {
    return fail(status.error().context("create the test CA"));
  }
  CertificateRequest server;
  server.common_name = "localhost";
  server.dns_names = {"localhost"};
  server.ip_addresses = {"127.0.0.1"};
  server.server = true;
  server.file_stem = "server";
  auto files = ca.issue(server);
  if (!files) {
    return fail(files.error());
  }
  ca.server_ = *files;
  return ca;
}

Result<CertificateFiles> CertificateAuthority::issue_client(const std::string& thing_name) {
  CertificateRequest request;
  request.common_name = thing_name;
  return issue(request);
}

Result<CertificateFiles> CertificateAuthority::issue(const CertificateRequest& request) {
  const std::string what = "issue a certificate for \"" + request.common_name + "\"";
  auto issuer = load(ca_);
  if (!issuer) {
    return fail(issuer.error().context(what));
  }
  std::vector<std::pair<int, std::string>> extensions = {
      {NID_basic_constraints, "critical,CA:FALSE"},
      {NID_key_usage, "critical,digitalSignature,keyAgreement"},
      {NID_ext_key_usage,
       request.code_signing ? "codeSigning" : (request.server ? "serverAuth" : "clientAuth")},
      {NID_subject_key_identifier, "hash"},
      {NID_authority_key_identifier, "keyid:always"}};
  std::string alt_names;
  for (const auto& dns : request.dns_names) {
    alt_names += (alt_names.empty() ? "" : ",") + std::string("DNS:") + dns;
  }
  for (const auto& ip : request.ip_addresses) {
    alt_names += (alt_names.empty() ? "" : ",") + std::string("IP:") + ip;
  }
  if (!alt_names.empty()) {
    extensions.emplace_back(NID_subject_alt_name, alt_names);
  }
  auto made = make_certificate(request.common_name, issuer->cert.get(), issuer->key.get(),
                               request.not_before, request.not_after, extensions, request.key);
  if (!made) {
    return fail(made.error().context(what));
  }
  const std::string stem =
      file_stem_for(request.file_stem.empty() ? request.common_name : request.file_stem);
  CertificateFiles files{dir() / (stem + ".pem"), dir() / (stem + ".key")};
  if (auto status = write_pem(*made, files); !status) {
    return fail(status.error().context(what));
  }
  return files;
}

}  // namespace upparat::test
