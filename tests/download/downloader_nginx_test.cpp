// The downloader against a real nginx: large-file integrity over HTTPS, redirects, and a
// real full disk (a small tmpfs in a private mount namespace).
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "download/downloader.hpp"
#include "download_test_util.hpp"
#include "support/binaries.hpp"
#include "support/certificates.hpp"
#include "support/nginx.hpp"
#include "support/process.hpp"
#include "support/result.hpp"
#include "support/temp_dir.hpp"

namespace upparat::download {
namespace {

using namespace std::chrono_literals;
using test::must;
namespace fs = std::filesystem;

class DownloaderNginxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    UPPARAT_SKIP_UNLESS_EXECUTABLE(test::kNginxPath);
    ca_.emplace(must(test::CertificateAuthority::create(), "CA"));
    test::NginxOptions options;
    options.tls = &*ca_;
    options.extra_server_config =
        "location = /to-ftp { return 302 ftp://127.0.0.1:1/file.bin; }\n"
        "location = /to-http { return 302 http://127.0.0.1:1/file.bin; }\n"
        "location = /to-file { return 302 file:///etc/passwd; }\n"
        "location = /to-same { return 302 /small.bin; }\n"
        "location /slow/ { limit_rate 512k; }\n";
    nginx_.emplace(must(test::Nginx::start(options), "nginx"));
    tmp_.emplace(must(test::TempDir::create("download-nginx"), "temp dir"));
    settings_.directory = tmp_->path() / "downloads";
    settings_.ca_file = ca_->ca_cert().string();
    settings_.backoff_base = 10ms;
    settings_.backoff_cap = 100ms;
    settings_.max_attempts = 3;
  }

  std::optional<test::CertificateAuthority> ca_;
  std::optional<test::Nginx> nginx_;
  std::optional<test::TempDir> tmp_;
  Settings settings_;
};

TEST_F(DownloaderNginxTest, LargeFileIntegrity) {
  const std::size_t size = 64 * 1024 * 1024 + 3;
  const auto data = test::random_bytes(size, 99);
  must(nginx_->put_file("big.bin", data), "put_file");
  Request r;
  r.job_id = "upparat_big";
  r.url = nginx_->https_url("big.bin");
  r.sha256 = test::sha256_hex(data);
  r.size = size;
  Downloader d(settings_);
  ResumeState resume;
  StopSignal stop;
  int resume_updates = 0;
  const auto result = d.run(r, resume, stop, {}, [&](const ResumeState&) { ++resume_updates; });
  ASSERT_EQ(result.outcome, Outcome::Complete) << result.reason;
  EXPECT_EQ(fs::file_size(result.file), size);
  EXPECT_EQ(test::sha256_hex(must(test::read_file(result.file), "read")), *r.sha256);
  // fsync by bytes (16 MiB by default) or time, not per chunk.
  EXPECT_GE(resume_updates, 2);
  EXPECT_LE(resume_updates, 40);
}

TEST_F(DownloaderNginxTest, ResumesWithRangeAndIfRangeFromNginx) {
  const auto data = test::random_bytes(2 * 1024 * 1024, 98);
  must(nginx_->put_file("slow/r.bin", data), "put_file");
  Request r;
  r.job_id = "upparat_range";
  r.url = nginx_->https_url("slow/r.bin");
  r.sha256 = test::sha256_hex(data);
  settings_.fsync_every_bytes = 64 * 1024;
  Downloader d(settings_);
  ResumeState resume;
  StopSignal stop;
  auto result = d.run(r, resume, stop, [&](const Progress& p) {
    if (p.bytes > 256 * 1024) {
      stop.request();
    }
  });
  ASSERT_EQ(result.outcome, Outcome::Cancelled) << result.reason;
  ASSERT_GT(resume.synced_bytes, 0u);
  ASSERT_FALSE(resume.etag.empty());
  StopSignal stop2;
  result = d.run(r, resume, stop2);
  ASSERT_EQ(result.outcome, Outcome::Complete) << result.reason;
  EXPECT_EQ(must(test::read_file(result.file), "read"), data);
  EXPECT_NE(nginx_->access_log().find("206"), std::string::npos) << nginx_->access_log();
}

TEST_F(DownloaderNginxTest, RedirectToAnotherSchemeIsRefused) {
  must(nginx_->put_file("small.bin", "hello"), "put_file");
  Downloader d(settings_);
  for (const char* path : {"to-ftp", "to-http", "to-file"}) {
    Request r;
    r.job_id = "upparat_redirect";
    r.url = nginx_->https_url(path);
    ResumeState resume;
    StopSignal stop;
    const auto result = d.run(r, resume, stop);
    EXPECT_EQ(result.outcome, Outcome::Failed) << path;
    EXPECT_NE(result.reason.find("Unsupported protocol"), std::string::npos) << result.reason;
  }
  // A redirect within https is followed.
  Request r;
  r.job_id = "upparat_redirect_ok";
  r.url = nginx_->https_url("to-same");
  ResumeState resume;
  StopSignal stop;
  const auto result = d.run(r, resume, stop);
  ASSERT_EQ(result.outcome, Outcome::Complete) << result.reason;
  EXPECT_EQ(must(test::read_file(result.file), "read"), "hello");
}

class DiskFullTest : public DownloaderNginxTest {
 protected:
  // Runs `script` (sh) as root in a private mount namespace with a 4 MiB tmpfs on $1.
  Result<test::ProcessOutput> in_small_fs(const std::string& script,
                                          std::vector<std::string> args) {
    std::vector<std::string> argv = {
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        "set -u; mount -t tmpfs -o size=4m tmpfs \"$1\" || exit 90; " + script,
        "sh",
        (tmp_->path() / "mnt").string()};
    argv.insert(argv.end(), args.begin(), args.end());
    fs::create_directories(tmp_->path() / "mnt");
    return test::run_process(argv, 60s);
  }

  void SetUp() override {
    DownloaderNginxTest::SetUp();
    if (IsSkipped()) {
      return;
    }
    fs::create_directories(tmp_->path() / "probe");
    const auto probe =
        test::run_process({"unshare", "-m", "--propagation", "private", "mount", "-t", "tmpfs",
                           "-o", "size=1m", "tmpfs", (tmp_->path() / "probe").string()},
                          10s);
    if (!probe || !probe->status.success()) {
      UPPARAT_SKIP() << "a private mount namespace with a tmpfs is not permitted here ("
                     << (probe ? probe->output : probe.error().message()) << ")";
    }
  }
};

TEST_F(DiskFullTest, DiskFillingUpDuringDownloadFailsAndLeavesNothing) {
  const auto data = test::random_bytes(3 * 1024 * 1024, 97);
  must(nginx_->put_file("slow/full.bin", data), "put_file");
  // Start the download (paced by nginx), fill the disk under it, then list what is left.
  const std::string script =
      "d=\"$1\"; shift; \"$@\" & pid=$!; sleep 0.7; "
      "dd if=/dev/zero of=\"$d/filler\" bs=64k 2>/dev/null; "
      "wait $pid; rc=$?; echo \"exit=$rc\"; echo \"left=$(ls -A \"$d/downloads\")\"";
  const auto out = in_small_fs(
      script, {DOWNLOAD_TOOL_PATH, "--dir", (tmp_->path() / "mnt" / "downloads").string(), "--job",
               "upparat_full", "--url", nginx_->https_url("slow/full.bin"), "--ca",
               settings_.ca_file, "--sha256", test::sha256_hex(data), "--reserve-bytes", "0"});
  ASSERT_TRUE(out.has_value()) << out.error().message();
  const auto& text = out->output;
  EXPECT_NE(text.find("outcome failed"), std::string::npos) << text;
  EXPECT_NE(text.find("space"), std::string::npos) << text;
  EXPECT_NE(text.find("exit=1"), std::string::npos) << text;
  EXPECT_NE(text.find("left=\n"), std::string::npos) << text;  // no .part, no final file
}

TEST_F(DiskFullTest, TooLittleSpaceIsRefusedUpFront) {
  const auto data = test::random_bytes(6 * 1024 * 1024, 96);
  must(nginx_->put_file("six.bin", data), "put_file");
  const auto out =
      in_small_fs("d=\"$1\"; shift; \"$@\"; echo \"exit=$?\"",
                  {DOWNLOAD_TOOL_PATH, "--dir", (tmp_->path() / "mnt" / "downloads").string(),
                   "--job", "upparat_six", "--url", nginx_->https_url("six.bin"), "--ca",
                   settings_.ca_file, "--size", std::to_string(data.size())});
  ASSERT_TRUE(out.has_value()) << out.error().message();
  EXPECT_NE(out->output.find("not enough free space"), std::string::npos) << out->output;
  EXPECT_NE(out->output.find("exit=1"), std::string::npos) << out->output;
  EXPECT_EQ(nginx_->access_log().find("six.bin"), std::string::npos) << nginx_->access_log();
}

}  // namespace
}  // namespace upparat::download
