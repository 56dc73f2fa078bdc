#include "download/signing.hpp"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/safe_fs.hpp"

namespace upparat::download {
namespace {

constexpr std::size_t kMaxPemFile = 1024 * 1024;
constexpr int kMinRsaBits = 2048;

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* c) const { EVP_PKEY_CTX_free(c); }
};

Result<std::string> read_small_file(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    return fail(std::string(std::strerror(errno)));
  }
  UniqueFd file(fd);
  std::string text;
  char chunk[16384];
  for (;;) {
    const auto got = ::read(file.get(), chunk, sizeof chunk);
    if (got < 0 && errno == EINTR) {
      continue;
    }
    if (got < 0) {
      return fail(std::string(std::strerror(errno)));
    }
    if (got == 0) {
      break;
    }
    text.append(chunk, static_cast<std::size_t>(got));
    if (text.size() > kMaxPemFile) {
      return fail("larger than 1 MiB: not a PEM certificate");
    }
  }
  return text;
}

std::string subject_of(X509* cert) {
  std::unique_ptr<BIO, BioFree> out(BIO_new(BIO_s_mem()));
  if (!out || X509_NAME_print_ex(out.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) < 0) {
    return "(no subject)";
  }
  char* data = nullptr;
  const long length = BIO_get_mem_data(out.get(), &data);
  std::string subject(data, static_cast<std::size_t>(length > 0 ? length : 0));
  return subject.empty() ? std::string("(empty subject)") : subject;
}

std::string subjects(const SigningCertificates& certificates, bool all,
                     SignatureAlgorithm algorithm) {
  std::string out;
  for (const auto& c : certificates) {
    if (all || c.algorithm == algorithm) {
      out += (out.empty() ? "" : "; ") + c.subject;
    }
  }
  return out;
}

}  // namespace

Result<SigningCertificate> load_signing_certificate(const std::filesystem::path& path) {
  const std::string where = "signing certificate " + path.string() + ": ";
  auto text = read_small_file(path);
  if (!text) {
    return fail(where + text.error().message());
  }
  SigningCertificate out;
  out.path = path;
  std::unique_ptr<BIO, BioFree> bio(BIO_new_mem_buf(text->data(), static_cast<int>(text->size())));
  if (!bio) {
    return fail(where + "out of memory");
  }
  EVP_PKEY* key = nullptr;
  std::unique_ptr<X509, X509Free> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (cert) {
    key = X509_get_pubkey(cert.get());
    out.subject = subject_of(cert.get());
  } else {
    (void)BIO_reset(bio.get());
    key = PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr);
    out.subject = "public key " + path.string();
  }
  if (key == nullptr) {
    return fail(where +
                "not a PEM certificate (-----BEGIN CERTIFICATE-----) or public key "
                "(-----BEGIN PUBLIC KEY-----)");
  }
  out.key.reset(key, EVP_PKEY_free);
  const int type = EVP_PKEY_get_base_id(key);
  if (type == EVP_PKEY_EC) {
    char group[64] = {};
    std::size_t length = 0;
    if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                       &length) != 1 ||
        std::strcmp(group, "prime256v1") != 0) {
      return fail(where + "an ECDSA key on curve " + (group[0] != '\0' ? group : "unknown") +
                  ": only P-256 (prime256v1) is supported");
    }
    out.algorithm = SignatureAlgorithm::EcdsaP256Sha256;
  } else if (type == EVP_PKEY_RSA) {
    if (EVP_PKEY_get_bits(key) < kMinRsaBits) {
      return fail(where + "an RSA key of " + std::to_string(EVP_PKEY_get_bits(key)) +
                  " bits: at least 2048 are needed");
    }
    out.algorithm = SignatureAlgorithm::RsaSha256;
  } else {
    return fail(where + "its key is neither ECDSA P-256 nor RSA");
  }
  return out;
}

Result<std::string> verify_signature(const SigningCertificates& certificates,
                                     const Signature& signature, const std::uint8_t* digest,
                                     std::size_t digest_size) {
  const std::string algorithm = to_string(signature.algorithm);
  if (certificates.empty()) {
    return fail("the job is signed (" + algorithm +
                ") but no [download] signing_certificates are configured to verify it");
  }
  bool tried = false;
  for (const auto& c : certificates) {
    if (c.algorithm != signature.algorithm || !c.key) {
      continue;
    }
    tried = true;
    std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> ctx(EVP_PKEY_CTX_new(c.key.get(), nullptr));
    if (!ctx || EVP_PKEY_verify_init(ctx.get()) != 1 ||
        EVP_PKEY_CTX_set_signature_md(ctx.get(), EVP_sha256()) != 1) {
      continue;
    }
    if (signature.algorithm == SignatureAlgorithm::RsaSha256 &&
        EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_PADDING) != 1) {
      continue;
    }
    if (EVP_PKEY_verify(ctx.get(), signature.bytes.data(), signature.bytes.size(), digest,
                        digest_size) == 1) {
      return c.subject;
    }
  }
  if (!tried) {
    return fail("the " + algorithm + " signature cannot be checked: no configured signing " +
                "certificate has a key of that algorithm (configured: " +
                subjects(certificates, true, signature.algorithm) + ")");
  }
  return fail("the " + algorithm + " signature does not verify with the signing certificates " +
              subjects(certificates, false, signature.algorithm));
}

}  // namespace upparat::download
