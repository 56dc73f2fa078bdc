// Code-signing: the certificates of [download] signing_certificates, the verification over the
// SHA-256 the downloader computed, in the downloader (against the emulator's S3 side) and in
// a streamed install's StreamPipe. Signatures come from the emulator's signer, as in desk tests.
#include "download/signing.hpp"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "download/downloader.hpp"
#include "download/stream.hpp"
#include "download_test_util.hpp"
#include "emulator/s3/s3_server.hpp"
#include "emulator/signer.hpp"
#include "support/certificates.hpp"
#include "support/result.hpp"
#include "support/temp_dir.hpp"

namespace upparat::download {
namespace {

using namespace std::chrono_literals;
using test::must;
namespace fs = std::filesystem;

constexpr const char* kBucket = "firmware";

std::vector<std::uint8_t> sha256(const std::string& data) {
  std::vector<std::uint8_t> out(32);
  unsigned int length = 0;
  EVP_Digest(data.data(), data.size(), out.data(), &length, EVP_sha256(), nullptr);
  return out;
}

class SigningTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ca_.emplace(must(test::CertificateAuthority::create("Signing Test CA"), "CA"));
    ecdsa_ = issue("Firmware ECDSA 2026", test::KeyType::EcP256);
    rsa_ = issue("Firmware RSA 2026", test::KeyType::Rsa2048);
    other_ = issue("Someone Else", test::KeyType::EcP256);
  }

  test::CertificateFiles issue(const std::string& name, test::KeyType key) {
    test::CertificateRequest request;
    request.common_name = name;
    request.code_signing = true;
    request.key = key;
    return must(ca_->issue(request), "issue " + name);
  }

  SigningCertificate load(const test::CertificateFiles& files) {
    return must(load_signing_certificate(files.cert), "load " + files.cert.string());
  }

  // The job document's signature of `data` made with `key`, parsed as the daemon does.
  Signature sign(const test::CertificateFiles& files, const std::string& data) {
    auto signed_data = must(emulator::sign_data(files.key, data), "sign");
    const auto algorithm = signed_data.field == "sig-sha256-rsa"
                               ? SignatureAlgorithm::RsaSha256
                               : SignatureAlgorithm::EcdsaP256Sha256;
    return must(parse_signature(algorithm, signed_data.base64), "parse the signature");
  }

  std::optional<test::CertificateAuthority> ca_;
  test::CertificateFiles ecdsa_, rsa_, other_;
};

TEST_F(SigningTest, LoadsCertificatesAndPublicKeys) {
  const auto ecdsa = load(ecdsa_);
  EXPECT_EQ(ecdsa.algorithm, SignatureAlgorithm::EcdsaP256Sha256);
  EXPECT_EQ(ecdsa.subject, "CN=Firmware ECDSA 2026");
  EXPECT_EQ(ecdsa.path, ecdsa_.cert);
  const auto rsa = load(rsa_);
  EXPECT_EQ(rsa.algorithm, SignatureAlgorithm::RsaSha256);
  EXPECT_EQ(rsa.subject, "CN=Firmware RSA 2026");

  // A bare public key, as `openssl pkey -pubout` writes it.
  auto tmp = must(test::TempDir::create("signing"), "temp dir");
  const auto pub = tmp.path() / "public.pem";
  ASSERT_EQ(std::system(("openssl pkey -in " + ecdsa_.key.string() + " -pubout -out " +
                         pub.string() + " 2>/dev/null")
                            .c_str()),
            0);
  const auto key = must(load_signing_certificate(pub), "public key");
  EXPECT_EQ(key.algorithm, SignatureAlgorithm::EcdsaP256Sha256);
  EXPECT_EQ(key.subject, "public key " + pub.string());
}

TEST_F(SigningTest, RefusesWhatCannotVerify) {
  auto tmp = must(test::TempDir::create("signing"), "temp dir");
  auto error = [](const fs::path& path) {
    auto loaded = load_signing_certificate(path);
    EXPECT_FALSE(loaded) << path;
    return loaded ? std::string() : loaded.error().message();
  };
  const auto missing = error(tmp.path() / "missing.pem");
  EXPECT_NE(missing.find("missing.pem"), std::string::npos) << missing;
  EXPECT_NE(missing.find("No such file"), std::string::npos) << missing;

  UPPARAT_ASSERT_OK(test::write_file(tmp.path() / "text.pem", "not a certificate\n"));
  EXPECT_NE(error(tmp.path() / "text.pem").find("not a PEM certificate"), std::string::npos);
  // A private key is not a certificate.
  EXPECT_NE(error(ecdsa_.key).find("not a PEM certificate"), std::string::npos);

  const auto p384 = error(issue("P-384", test::KeyType::EcP384).cert);
  EXPECT_NE(p384.find("only P-256"), std::string::npos) << p384;
  const auto rsa1024 = error(issue("RSA 1024", test::KeyType::Rsa1024).cert);
  EXPECT_NE(rsa1024.find("1024 bits: at least 2048"), std::string::npos) << rsa1024;
}

TEST_F(SigningTest, VerifiesEcdsaAndRsaOverTheDigest) {
  const std::string data = test::random_bytes(100000, 3);
  const auto digest = sha256(data);
  const SigningCertificates certificates = {load(ecdsa_), load(rsa_)};
  for (const auto* files : {&ecdsa_, &rsa_}) {
    const auto signature = sign(*files, data);
    auto verified = verify_signature(certificates, signature, digest.data(), digest.size());
    ASSERT_TRUE(verified) << verified.error().message();
    EXPECT_EQ(*verified, files == &ecdsa_ ? "CN=Firmware ECDSA 2026" : "CN=Firmware RSA 2026");
  }
}

TEST_F(SigningTest, OneChangedByteOrAnotherKeyDoesNotVerify) {
  const std::string data = test::random_bytes(5000, 4);
  auto changed = data;
  changed[1234] = static_cast<char>(changed[1234] ^ 1);
  const SigningCertificates certificates = {load(ecdsa_), load(rsa_)};
  const auto digest = sha256(changed);
  auto verified = verify_signature(certificates, sign(ecdsa_, data), digest.data(), digest.size());
  ASSERT_FALSE(verified);
  EXPECT_EQ(verified.error().message(),
            "the SHA256withECDSA signature does not verify with the signing certificates "
            "CN=Firmware ECDSA 2026");

  const auto good = sha256(data);
  verified = verify_signature(certificates, sign(other_, data), good.data(), good.size());
  ASSERT_FALSE(verified);
  EXPECT_NE(verified.error().message().find("does not verify"), std::string::npos);

  verified = verify_signature({load(ecdsa_)}, sign(rsa_, data), good.data(), good.size());
  ASSERT_FALSE(verified);
  EXPECT_EQ(verified.error().message(),
            "the SHA256withRSA signature cannot be checked: no configured signing certificate "
            "has a key of that algorithm (configured: CN=Firmware ECDSA 2026)");

  verified = verify_signature({}, sign(rsa_, data), good.data(), good.size());
  ASSERT_FALSE(verified);
  EXPECT_NE(verified.error().message().find("no [download] signing_certificates"),
            std::string::npos);
}

TEST_F(SigningTest, TheSecondCertificateMayVerify) {
  const std::string data = test::random_bytes(5000, 5);
  const auto digest = sha256(data);
  auto verified = verify_signature({load(other_), load(ecdsa_)}, sign(ecdsa_, data), digest.data(),
                                   digest.size());
  ASSERT_TRUE(verified) << verified.error().message();
  EXPECT_EQ(*verified, "CN=Firmware ECDSA 2026");
}

// The downloader: the signature is checked over the hash computed as the bytes arrived,
// before the file gets its final name.
class SignedDownloadTest : public SigningTest {
 protected:
  void SetUp() override {
    SigningTest::SetUp();
    emulator::S3Options options;
    options.cert_file = ca_->server().cert.string();
    options.key_file = ca_->server().key.string();
    server_ = must(emulator::S3Server::start(options), "S3 server");
    tmp_.emplace(must(test::TempDir::create("signed-download"), "temp dir"));
    settings_.directory = tmp_->path() / "downloads";
    settings_.ca_file = ca_->ca_cert().string();
    settings_.backoff_base = 10ms;
    settings_.backoff_cap = 50ms;
    settings_.connect_timeout = 5s;
    settings_.signing_certificates = {load(rsa_), load(ecdsa_)};
  }

  Request request(const std::string& key, const std::string& data, bool sha256) {
    must(server_->put_object(kBucket, key, data), "put_object");
    Request r;
    r.job_id = "upparat_" + key;
    r.url = server_->presign(kBucket, key, 3600s);
    if (sha256) {
      r.sha256 = test::sha256_hex(data);
      r.size = data.size();
    }
    return r;
  }

  std::unique_ptr<emulator::S3Server> server_;
  std::optional<test::TempDir> tmp_;
  Settings settings_;
};

TEST_F(SignedDownloadTest, AGoodSignatureCompletesAndNamesTheCertificate) {
  const auto data = test::random_bytes(300 * 1024, 6);
  for (bool with_sha256 : {true, false}) {
    auto r = request(with_sha256 ? "with" : "without", data, with_sha256);
    r.signature = sign(ecdsa_, data);
    Downloader d(settings_);
    ResumeState resume;
    StopSignal stop;
    const auto result = d.run(r, resume, stop);
    ASSERT_EQ(result.outcome, Outcome::Complete) << result.reason;
    EXPECT_EQ(result.signer, "CN=Firmware ECDSA 2026");
    // Again from the final file (a restart before the install): verified again.
    const auto again = d.run(r, resume, stop);
    ASSERT_EQ(again.outcome, Outcome::Complete) << again.reason;
    EXPECT_EQ(again.signer, "CN=Firmware ECDSA 2026");
  }
}

TEST_F(SignedDownloadTest, ABadSignatureFailsAndRemovesThePartialFile) {
  const auto data = test::random_bytes(200 * 1024, 7);
  auto r = request("bad", data, true);
  r.signature = sign(other_, data);
  Downloader d(settings_);
  ResumeState resume;
  StopSignal stop;
  const auto result = d.run(r, resume, stop);
  ASSERT_EQ(result.outcome, Outcome::Failed);
  EXPECT_EQ(result.reason,
            "signature: the SHA256withECDSA signature does not verify with the signing "
            "certificates CN=Firmware ECDSA 2026");
  EXPECT_FALSE(fs::exists(d.part_path(r.job_id)));
  EXPECT_FALSE(fs::exists(d.final_path(r.job_id)));
  // The file is the one the job names: it was not downloaded a second time.
  EXPECT_EQ(server_->stats(kBucket, "bad").get_requests, 1u);

  // A final file left from before is verified, and removed when it does not verify.
  fs::create_directories(settings_.directory);
  UPPARAT_ASSERT_OK(test::write_file(d.final_path(r.job_id), data));
  const auto again = d.run(r, resume, stop);
  ASSERT_EQ(again.outcome, Outcome::Failed);
  EXPECT_FALSE(fs::exists(d.final_path(r.job_id)));
}

TEST_F(SignedDownloadTest, ASignedJobWithoutCertificatesFailsBeforeDownloading) {
  const auto data = test::random_bytes(1000, 8);
  auto r = request("nocert", data, true);
  r.signature = sign(ecdsa_, data);
  settings_.signing_certificates.clear();
  Downloader d(settings_);
  ResumeState resume;
  StopSignal stop;
  const auto result = d.run(r, resume, stop);
  ASSERT_EQ(result.outcome, Outcome::Failed);
  EXPECT_NE(result.reason.find("no [download] signing_certificates"), std::string::npos);
  EXPECT_EQ(server_->stats(kBucket, "nocert").get_requests, 0u);
}

// A streamed install: a signature that does not verify keeps the stream's tail back.
TEST_F(SigningTest, StreamWithABadSignatureNeverReleasesItsTail) {
  const std::string data = test::random_bytes(20000, 9);
  for (bool good : {false, true}) {
    StopSignal stop;
    auto pipe =
        must(StreamPipe::create(test::sha256_hex(data), data.size(), stop,
                                sign(good ? rsa_ : other_, data), {load(ecdsa_), load(rsa_)}),
             "pipe");
    UPPARAT_ASSERT_OK(pipe->write(data.data(), data.size()));
    const auto complete = pipe->complete();
    std::string got;
    char buffer[65536];
    for (;;) {
      const auto n = ::read(pipe->reader_fd(), buffer, sizeof buffer);
      if (n <= 0) {
        break;
      }
      got.append(buffer, static_cast<std::size_t>(n));
    }
    if (good) {
      ASSERT_TRUE(complete) << complete.error().message();
      EXPECT_EQ(got, data);
      EXPECT_EQ(pipe->signer(), "CN=Firmware RSA 2026");
    } else {
      ASSERT_FALSE(complete);
      EXPECT_NE(complete.error().message().find(
                    "signature: the SHA256withECDSA signature does not verify"),
                std::string::npos)
          << complete.error().message();
      EXPECT_EQ(got, data.substr(0, data.size() - StreamPipe::kStreamTail));
      EXPECT_EQ(pipe->state(), StreamState::Failed);
    }
  }
}

}  // namespace
}  // namespace upparat::download
