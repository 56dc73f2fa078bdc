// End to end: code-signed updates. Jobs are created with the emulator's CLI, which signs the
// file with a test key (SHA256withECDSA or SHA256withRSA) as AWS Signer would; the real daemon
// verifies the signature over the SHA-256 it computed while downloading, before anything
// installs the file. Real daemon, script plugin (and the stream fixture plugin), mosquitto
// and the Jobs + S3 emulator.

#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "e2e_fixture.hpp"
#include "support/certificates.hpp"
#include "support/digest.hpp"

namespace upparat::test {
namespace {

using namespace e2e;  // NOLINT(google-build-using-namespace)

class E2eSigningTest : public E2eFixture {
 protected:
  void SetUp() override {
    E2eFixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) {
      return;
    }
    auto ca = CertificateAuthority::create("Signing CA");
    ASSERT_TRUE(ca) << ca.error().message();
    ca_.emplace(std::move(*ca));
    ecdsa_ = issue("Firmware ECDSA 2026", KeyType::EcP256);
    rsa_ = issue("Firmware RSA 2026", KeyType::Rsa2048);
    other_ = issue("Retired Key", KeyType::EcP256);
    std::ofstream(path("firmware.bin"), std::ios::binary) << firmware_;
    default_hooks();
    // The install hook also records the certificate that verified the file (ABI 1.3 signer).
    const std::string d = dir_->path().string();
    hooks_["install"] =
        hook("install", "printf '%s' \"$UPPARAT_SIGNER\" > '" + d + "/signer'\ncp \"$4\" '" + d +
                            "/installed.bin' || exit 1\necho \"$3\" > '" + d +
                            "/installed_version'\necho done");
  }

  CertificateFiles issue(const std::string& name, KeyType key) {
    CertificateRequest request;
    request.common_name = name;
    request.code_signing = true;
    request.key = key;
    auto files = ca_->issue(request);
    EXPECT_TRUE(files) << files.error().message();
    return files ? *files : CertificateFiles{};
  }

  fs::path config(const std::vector<fs::path>& certificates, bool require = false) {
    DaemonConfig c;
    c.state_dir = path("state");
    std::string list;
    for (const auto& cert : certificates) {
      list += (list.empty() ? "\"" : ", \"") + cert.string() + "\"";
    }
    c.download =
        "signing_certificates = [" + list + "]\n" + (require ? "require_signature = true\n" : "");
    return write_config(c);
  }

  std::string signed_document(const std::string& data) const {
    return std::string("{\"action\":\"update\",\"version\":\"2.0.0\",\"file\":\"") +
           "${aws:iot:s3-presigned-url:https://" + kBucket + ".s3.amazonaws.com/" + kKey + "}" +
           "\",\"sha256\":\"" + sha256_hex(data) + "\",\"size\":" + std::to_string(data.size()) +
           ",\"force\":false,\"meta\":\"2.0.0\"}";
  }

  // `upparat-jobs-emulator create-job ... --sign-file F --sign-key K`, as on a desk.
  void create_signed_job(const std::string& job_id, const fs::path& key,
                         const std::string& document) {
    const auto doc = path(job_id + ".json");
    std::ofstream(doc) << document;
    std::vector<std::string> argv = {UPPARAT_EMULATOR_BIN,
                                     "create-job",
                                     "--control",
                                     emulator_->control_url(),
                                     "--job-id",
                                     job_id,
                                     "--document",
                                     doc.string(),
                                     "--thing",
                                     kThing};
    if (!key.empty()) {
      argv.insert(argv.end(),
                  {"--sign-file", path("firmware.bin").string(), "--sign-key", key.string()});
    }
    auto ran = run_process(argv);
    ASSERT_TRUE(ran) << ran.error().message();
    ASSERT_TRUE(ran->status.success()) << ran->output;
  }

  // The daemon's download folder holds nothing of the job.
  void expect_no_download_left() {
    std::error_code ec;
    EXPECT_TRUE(!fs::exists(path("state/downloads"), ec) ||
                fs::is_empty(path("state/downloads"), ec));
  }

  std::optional<CertificateAuthority> ca_;
  CertificateFiles ecdsa_, rsa_, other_;
};

TEST_F(E2eSigningTest, GoodEcdsaAndRsaSignaturesInstall) {
  auto daemon = start_daemon(config({rsa_.cert, ecdsa_.cert}, true));
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_signed_job("upparat_ecdsa", ecdsa_.key, signed_document(firmware_));
  auto v = wait_status("upparat_ecdsa", "SUCCEEDED", 60s);
  EXPECT_EQ(installed_version(), "2.0.0") << daemon.log_tail();
  EXPECT_EQ(read_text(path("installed.bin")), firmware_);
  EXPECT_TRUE(daemon.wait_for_line(
      "SHA256withECDSA signature verified with the signing certificate CN=Firmware ECDSA 2026",
      10s))
      << daemon.log_tail();
  EXPECT_EQ(read_text(path("signer")), "CN=Firmware ECDSA 2026");

  write_version("1.0.0");
  create_signed_job("upparat_rsa", rsa_.key, signed_document(firmware_));
  v = wait_status("upparat_rsa", "SUCCEEDED", 60s);
  EXPECT_EQ(installed_version(), "2.0.0");
  EXPECT_TRUE(daemon.wait_for_line(
      "SHA256withRSA signature verified with the signing certificate CN=Firmware RSA 2026", 10s))
      << daemon.log_tail();
  EXPECT_EQ(read_text(path("signer")), "CN=Firmware RSA 2026");
}

// The file in the bucket changed by one byte after it was signed: FAILED, with both reasons.
TEST_F(E2eSigningTest, AFileChangedAfterSigningFailsWithBothReasons) {
  auto daemon = start_daemon(config({ecdsa_.cert}));
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  auto changed = firmware_;
  changed[1000] = static_cast<char>(changed[1000] ^ 1);
  ASSERT_TRUE(emulator_->put_object(kBucket, kKey, changed));
  create_signed_job("upparat_changed", ecdsa_.key, signed_document(firmware_));
  auto v = wait_status("upparat_changed", "FAILED", 60s);
  EXPECT_EQ(v.state, "download_hook_failed") << join(v.states);
  EXPECT_NE(v.message.find("sha256: expected " + sha256_hex(firmware_)), std::string::npos)
      << v.message;
  EXPECT_NE(v.message.find("signature: the SHA256withECDSA signature does not verify with the "
                           "signing certificates CN=Firmware ECDSA 2026"),
            std::string::npos)
      << v.message;
  EXPECT_EQ(installed_version(), "1.0.0");
  expect_no_download_left();
}

TEST_F(E2eSigningTest, ASignatureOfAnotherKeyFails) {
  auto daemon = start_daemon(config({ecdsa_.cert, rsa_.cert}));
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_signed_job("upparat_wrongkey", other_.key, signed_document(firmware_));
  auto v = wait_status("upparat_wrongkey", "FAILED", 60s);
  EXPECT_EQ(v.state, "download_hook_failed") << join(v.states);
  EXPECT_EQ(v.message,
            "signature: the SHA256withECDSA signature does not verify with the signing "
            "certificates CN=Firmware ECDSA 2026");
  EXPECT_EQ(installed_version(), "1.0.0");
  expect_no_download_left();
}

TEST_F(E2eSigningTest, AnUnsignedJobIsRejectedWhenSignaturesAreRequired) {
  auto daemon = start_daemon(config({ecdsa_.cert}, true));
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_signed_job("upparat_unsigned", {}, signed_document(firmware_));
  auto v = wait_status("upparat_unsigned", "REJECTED", 60s);
  EXPECT_EQ(v.state, "invalid_job_document") << join(v.states);
  EXPECT_NE(v.message.find("unsigned job"), std::string::npos) << v.message;
  EXPECT_EQ(installed_version(), "1.0.0");
  EXPECT_EQ(s3_body_bytes_sent(), 0u);
}

TEST_F(E2eSigningTest, AGarbageSignatureIsRejected) {
  auto daemon = start_daemon(config({ecdsa_.cert}));
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  auto doc = signed_document(firmware_);
  doc.insert(doc.size() - 1, ",\"sig-sha256-ecdsa\":\"bm90IGEgc2lnbmF0dXJl\"");
  create_signed_job("upparat_garbage", {}, doc);
  auto v = wait_status("upparat_garbage", "REJECTED", 60s);
  EXPECT_EQ(v.state, "invalid_job_document") << join(v.states);
  EXPECT_EQ(v.message,
            "'sig-sha256-ecdsa' is malformed: not an ECDSA signature: it is not a DER SEQUENCE");
  EXPECT_EQ(s3_body_bytes_sent(), 0u);
}

// Key rotation: the first certificate does not verify, the second does.
TEST_F(E2eSigningTest, TheSecondOfTwoCertificatesVerifies) {
  auto daemon = start_daemon(config({other_.cert, ecdsa_.cert}, true));
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_signed_job("upparat_rotation", ecdsa_.key, signed_document(firmware_));
  wait_status("upparat_rotation", "SUCCEEDED", 60s);
  EXPECT_EQ(installed_version(), "2.0.0");
  EXPECT_TRUE(
      daemon.wait_for_line("verified with the signing certificate CN=Firmware ECDSA 2026", 10s))
      << daemon.log_tail();
}

// SIGKILL in the middle of the download: the restarted daemon resumes it, hashes the prefix
// on disk and verifies the signature over the whole file.
TEST_F(E2eSigningTest, ASignatureIsVerifiedAfterADownloadResumedAfterSigkill) {
  const auto cfg = config({ecdsa_.cert}, true);
  std::optional<ServiceProcess> daemon;
  daemon.emplace(start_daemon(cfg));
  ASSERT_TRUE(daemon->wait_for_line("ready: subscribed", 30s)) << daemon->log_tail();
  ASSERT_TRUE(emulator_->add_s3_fault(kBucket, kKey,
                                      R"("stallAfterBytes":65536,"stallMs":8000,"times":1)"));
  create_signed_job("upparat_resumed", ecdsa_.key, signed_document(firmware_));
  ASSERT_TRUE(eventually([&] {
    std::error_code ec;
    return fs::file_size(path("state/downloads/upparat_resumed.part"), ec) > 0 && !ec;
  })) << daemon->log_tail();
  daemon->kill9();
  daemon.reset();
  daemon.emplace(start_daemon(cfg, "upparat-restarted"));
  wait_status("upparat_resumed", "SUCCEEDED", 60s);
  EXPECT_EQ(read_text(path("installed.bin")), firmware_);
  EXPECT_EQ(read_text(path("signer")), "CN=Firmware ECDSA 2026");
  EXPECT_TRUE(daemon->wait_for_line("from byte", 10s)) << daemon->log_tail();
  EXPECT_TRUE(daemon->wait_for_line(
      "SHA256withECDSA signature verified with the signing certificate CN=Firmware ECDSA 2026",
      10s))
      << daemon->log_tail();
}

// A streamed install: the signature joins the checks that release the stream's last bytes.
TEST_F(E2eSigningTest, AStreamedInstallWithABadSignatureNeverGetsTheTail) {
  DaemonConfig c;
  c.state_dir = path("state");
  c.download = "signing_certificates = [\"" + ecdsa_.cert.string() + "\"]\n";
  c.extra = std::string("[steps]\nversion = \"script\"\ninstall = \"streamer\"\n") +
            "[plugins.streamer]\npath = \"" + UPPARAT_FIXTURE_STREAM +
            "\"\nstream = true\noutput = \"" + path("streamed.bin").string() + "\"\nrecord = \"" +
            path("record").string() + "\"\n";
  auto daemon = start_daemon(write_config(c));
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_signed_job("upparat_stream_bad", other_.key, signed_document(firmware_));
  auto v = wait_status("upparat_stream_bad", "FAILED", 60s);
  EXPECT_EQ(v.state, "installation_hook_failed") << join(v.states);
  EXPECT_NE(v.message.find("signature: the SHA256withECDSA signature does not verify"),
            std::string::npos)
      << v.message;
  EXPECT_NE(read_text(path("record")).find("failed"), std::string::npos)
      << read_text(path("record"));
  EXPECT_FALSE(fs::exists(path("streamed.bin")));

  create_signed_job("upparat_stream_good", ecdsa_.key, signed_document(firmware_));
  wait_status("upparat_stream_good", "SUCCEEDED", 60s);
  EXPECT_TRUE(read_text(path("streamed.bin")) == firmware_) << "the installed file differs";
  EXPECT_TRUE(daemon.wait_for_line("streamed file's SHA256withECDSA signature verified", 10s))
      << daemon.log_tail();
}

}  // namespace
}  // namespace upparat::test
