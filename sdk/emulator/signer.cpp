#include "emulator/signer.hpp"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <vector>

namespace upparat::emulator {
namespace {

struct Free {
  void operator()(BIO* b) const { BIO_free(b); }
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
  void operator()(EVP_PKEY_CTX* c) const { EVP_PKEY_CTX_free(c); }
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

std::string base64(const std::vector<unsigned char>& bytes) {
  static const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const unsigned v = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += alphabet[v & 63];
  }
  if (i + 1 == bytes.size()) {
    const unsigned v = bytes[i] << 16;
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == bytes.size()) {
    const unsigned v = (bytes[i] << 16) | (bytes[i + 1] << 8);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

}  // namespace

Result<FileSignature> sign_data(const std::filesystem::path& key_file, const std::string& data) {
  std::unique_ptr<BIO, Free> bio(BIO_new_file(key_file.c_str(), "r"));
  std::unique_ptr<EVP_PKEY, Free> key(
      bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!key) {
    return fail("signing key " + key_file.string() + ": not a readable PEM private key");
  }
  FileSignature out;
  const int type = EVP_PKEY_get_base_id(key.get());
  if (type == EVP_PKEY_EC) {
    char group[64] = {};
    std::size_t length = 0;
    if (EVP_PKEY_get_utf8_string_param(key.get(), OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                       &length) != 1 ||
        std::strcmp(group, "prime256v1") != 0) {
      return fail("signing key " + key_file.string() + ": an EC key must be on P-256");
    }
    out.field = "sig-sha256-ecdsa";
  } else if (type == EVP_PKEY_RSA) {
    out.field = "sig-sha256-rsa";
  } else {
    return fail("signing key " + key_file.string() + ": neither EC P-256 nor RSA");
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_length = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &digest_length, EVP_sha256(), nullptr) != 1) {
    return fail("SHA-256 failed");
  }
  std::unique_ptr<EVP_PKEY_CTX, Free> ctx(EVP_PKEY_CTX_new(key.get(), nullptr));
  if (!ctx || EVP_PKEY_sign_init(ctx.get()) != 1 ||
      EVP_PKEY_CTX_set_signature_md(ctx.get(), EVP_sha256()) != 1 ||
      (type == EVP_PKEY_RSA && EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_PADDING) != 1)) {
    return fail("signing key " + key_file.string() + ": cannot sign with it");
  }
  std::size_t size = 0;
  if (EVP_PKEY_sign(ctx.get(), nullptr, &size, digest, digest_length) != 1) {
    return fail("signing failed");
  }
  std::vector<unsigned char> signature(size);
  if (EVP_PKEY_sign(ctx.get(), signature.data(), &size, digest, digest_length) != 1) {
    return fail("signing failed");
  }
  signature.resize(size);
  out.base64 = base64(signature);
  return out;
}

Result<FileSignature> sign_file(const std::filesystem::path& key,
                                const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    return fail("cannot read " + file.string());
  }
  const std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) {
    return fail("cannot read " + file.string());
  }
  return sign_data(key, data);
}

Result<std::string> add_signature(const std::string& document, const FileSignature& signature) {
  rapidjson::Document doc;
  doc.Parse(document.data(), document.size());
  if (doc.HasParseError() || !doc.IsObject()) {
    return fail("the job document is not a JSON object");
  }
  for (const char* field : {"sig-sha256-ecdsa", "sig-sha256-rsa"}) {
    doc.RemoveMember(field);
  }
  auto& allocator = doc.GetAllocator();
  doc.AddMember(rapidjson::Value(signature.field.c_str(), allocator),
                rapidjson::Value(signature.base64.c_str(), allocator), allocator);
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  doc.Accept(w);
  return std::string(sb.GetString(), sb.GetSize());
}

}  // namespace upparat::emulator
