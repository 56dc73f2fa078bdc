// The downloader against the emulator's S3 side, in process, over HTTPS on loopback: faults
// (FIN, RST, stalls, 5xx, expiry, corruption, a server without ranges), stops, restarts and
// disk errors injected through the FileSystem seam.
#include "download/downloader.hpp"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "common/file_system.hpp"
#include "download_test_util.hpp"
#include "emulator/s3/s3_server.hpp"
#include "support/binaries.hpp"
#include "support/certificates.hpp"
#include "support/process.hpp"
#include "support/result.hpp"
#include "support/temp_dir.hpp"

namespace upparat::download {
namespace {

using namespace std::chrono_literals;
using test::must;
using test::random_bytes;
using test::sha256_hex;
namespace fs = std::filesystem;

constexpr const char* kBucket = "firmware";

class DownloaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ca_.emplace(must(test::CertificateAuthority::create(), "CA"));
    clock_ = std::make_shared<emulator::Clock>();
    emulator::S3Options options;
    options.cert_file = ca_->server().cert.string();
    options.key_file = ca_->server().key.string();
    options.clock = clock_;
    server_ = must(emulator::S3Server::start(options), "S3 server");
    tmp_.emplace(must(test::TempDir::create("download"), "temp dir"));
    settings_.directory = tmp_->path() / "downloads";
    settings_.ca_file = ca_->ca_cert().string();
    settings_.backoff_base = 10ms;
    settings_.backoff_cap = 100ms;
    settings_.fsync_every_bytes = 64 * 1024;
    settings_.low_speed_time = 1s;
    settings_.connect_timeout = 5s;
    settings_.progress_interval = 0ms;
  }

  std::string put(const std::string& key, std::size_t size, std::uint32_t seed = 1) {
    auto data = random_bytes(size, seed);
    must(server_->put_object(kBucket, key, data), "put_object");
    return data;
  }

  std::string url(const std::string& key, std::chrono::seconds expiry = 3600s) {
    return server_->presign(kBucket, key, expiry);
  }

  Request request(const std::string& key, const std::string& data, bool checks = true) {
    Request r;
    r.job_id = "upparat_" + key;
    std::replace(r.job_id.begin(), r.job_id.end(), '.', '_');
    r.url = url(key);
    if (checks) {
      r.sha256 = sha256_hex(data);
      r.size = data.size();
    }
    return r;
  }

  DownloadResult run(Downloader& d, const Request& r, ResumeState& resume) {
    StopSignal stop;
    return d.run(r, resume, stop, {}, [this](const ResumeState& s) { saved_.push_back(s); });
  }

  std::string read(const fs::path& path) { return must(test::read_file(path), "read"); }

  std::optional<test::CertificateAuthority> ca_;
  std::shared_ptr<emulator::Clock> clock_;
  std::unique_ptr<emulator::S3Server> server_;
  std::optional<test::TempDir> tmp_;
  Settings settings_;
  std::vector<ResumeState> saved_;
};

TEST_F(DownloaderTest, DownloadsVerifiesAndRenames) {
  const auto data = put("a.raucb", 1024 * 1024 + 17);
  Downloader d(settings_);
  ResumeState resume;
  std::vector<Progress> progress;
  StopSignal stop;
  const auto r = request("a.raucb", data);
  const auto result = d.run(
      r, resume, stop, [&](const Progress& p) { progress.push_back(p); },
      [&](const ResumeState& s) { saved_.push_back(s); });
  ASSERT_EQ(result.outcome, Outcome::Complete) << result.reason;
  EXPECT_EQ(result.file, d.final_path(r.job_id));
  EXPECT_EQ(result.file, settings_.directory / "upparat_a_raucb");
  EXPECT_EQ(read(result.file), data);
  EXPECT_FALSE(fs::exists(d.part_path(r.job_id)));
  EXPECT_EQ(test::file_mode(result.file), 0600u);
  EXPECT_EQ(test::file_mode(settings_.directory), 0700u);
  EXPECT_EQ(result.bytes_transferred, data.size());
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back().bytes, data.size());
  EXPECT_EQ(progress.back().percent(), 100);
  for (std::size_t i = 1; i < progress.size(); ++i) {
    EXPECT_LE(progress[i - 1].bytes, progress[i].bytes);
  }
  // fsynced periodically (every 64 KiB here), not once per chunk and not only at the end.
  ASSERT_GE(saved_.size(), 2u);
  EXPECT_LE(saved_.size(), data.size() / (64 * 1024) + 3);
  EXPECT_EQ(saved_.back().synced_bytes, data.size());
  EXPECT_EQ(saved_.back().etag, server_->etag(kBucket, "a.raucb").value());
}

TEST_F(DownloaderTest, WithoutChecksumsAndEmptyFile) {
  const auto data = put("b", 300 * 1024);
  const auto empty = put("empty", 0);
  Downloader d(settings_);
  ResumeState resume;
  auto result = run(d, request("b", data, false), resume);
  ASSERT_EQ(result.outcome, Outcome::Complete) << result.reason;
  EXPECT_EQ(read(result.file), data);
  ResumeState resume2;
  result = run(d, request("empty", empty), resume2);
  ASSERT_EQ(result.outcome, Outcome::Complete) << result.reason;
  EXPECT_EQ(read(result.file), "");
}

// A fault the server injects (or a few), from which the download recovers: it completes with
// the right bytes, at a bounded cost in requests, bytes and time.
struct RecoveredFault {
  const char* name;
  std::size_t size;
  std::uint32_t seed;
  std::vector<emulator::S3Fault> faults;
  std::optional<std::uint64_t> get_requests;  // exactly this many GETs, when set
  std::uint64_t max_extra_bytes;  // body bytes sent beyond the object's size, at the most
  bool at_least_size;             // and at least the object's size (no byte fetched too few)
  std::optional<std::chrono::seconds> within;  // finished within this time, when set
};

// Twelve cuts at random offsets in the first 200,000 bytes, each by the given fault field.
std::vector<emulator::S3Fault> random_cuts(std::optional<std::uint64_t> emulator::S3Fault::*field,
                                           std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<emulator::S3Fault> faults;
  for (int i = 0; i < 12; ++i) {
    emulator::S3Fault fault;
    fault.*field = std::uniform_int_distribution<std::uint64_t>(0, 200000)(rng);
    faults.push_back(fault);
  }
  return faults;
}

emulator::S3Fault stall() {
  emulator::S3Fault fault;
  fault.stall_after_bytes = 100 * 1024;
  fault.stall_ms = 20000;
  return fault;
}

emulator::S3Fault server_errors(int status, int times) {
  emulator::S3Fault fault;
  fault.error_status = status;
  fault.times = times;
  return fault;
}

emulator::S3Fault corrupt(std::uint64_t offset) {
  emulator::S3Fault fault;
  fault.corrupt_offset = offset;
  return fault;
}

emulator::S3Fault close_after(std::uint64_t bytes) {
  emulator::S3Fault fault;
  fault.close_after_bytes = bytes;
  return fault;
}

emulator::S3Fault ignore_range() {
  emulator::S3Fault fault;
  fault.ignore_range = true;
  return fault;
}

constexpr std::size_t kMiB = 1024 * 1024;

const RecoveredFault kRecoveredFaults[] = {
    // Connection closed (FIN) at random offsets: resumed without refetching; every byte
    // received is kept, so the total fetched is the file size (plus a little slack).
    {"ConnectionClosedAtRandomOffsets",
     2 * kMiB,
     7,
     random_cuts(&emulator::S3Fault::close_after_bytes, 42),
     13,
     2 * kMiB / 50,
     true,
     {}},
    // Connection reset (RST) at random offsets: a reset may drop what the kernel had received
    // but the downloader had not read yet; still close.
    {"ConnectionResetAtRandomOffsets",
     2 * kMiB,
     8,
     random_cuts(&emulator::S3Fault::reset_after_bytes, 43),
     13,
     2 * kMiB / 4,
     false,
     {}},
    // A stall is abandoned (low_speed_time is 1 s) and resumed, long before it would end.
    {"Stall", 512 * 1024, 9, {stall()}, {}, 512 * 1024 / 10, false, 15s},
    // A burst of 503 answers is retried.
    {"ServerErrorBurst", 256 * 1024, 10, {server_errors(503, 5)}, 6, UINT64_MAX, false, {}},
    // A corrupted byte: the digest differs, the object is downloaded once more.
    {"CorruptedByte", 300 * 1024, 13, {corrupt(123456)}, 2, UINT64_MAX, false, {}},
    // A cut, then a full answer (200) to the Range request: restarts from zero.
    {"FullAnswerInsteadOfRange",
     400 * 1024,
     15,
     {close_after(150 * 1024), ignore_range()},
     2,
     UINT64_MAX,
     false,
     {}},
};

class RecoveredFaultTest : public DownloaderTest,
                           public ::testing::WithParamInterface<RecoveredFault> {};

TEST_P(RecoveredFaultTest, CompletesWithTheRightBytes) {
  const auto& c = GetParam();
  const std::string key = c.name;
  const auto data = put(key, c.size, c.seed);
  for (const auto& fault : c.faults) {
    UPPARAT_ASSERT_OK(server_->add_fault(kBucket, key, fault));
  }
  Downloader d(settings_);
  ResumeState resume;
  const auto start = std::chrono::steady_clock::now();
  const auto result = run(d, request(key, data), resume);
  ASSERT_EQ(result.outcome, Outcome::Complete) << result.reason;
  EXPECT_EQ(read(result.file), data);
  if (c.within) {
    EXPECT_LT(std::chrono::steady_clock::now() - start, *c.within);
  }
  const auto stats = server_->stats(kBucket, key);
  if (c.get_requests) {
    EXPECT_EQ(stats.get_requests, *c.get_requests);
  }
  if (c.max_extra_bytes != UINT64_MAX) {
    EXPECT_LE(stats.body_bytes_sent, c.size + c.max_extra_bytes);
  }
  if (c.at_least_size) {
    EXPECT_GE(stats.body_bytes_sent, c.size);
  }
}

INSTANTIATE_TEST_SUITE_P(Faults, RecoveredFaultTest, ::testing::ValuesIn(kRecoveredFaults),
                         [](const auto& info) { return std::string(info.param.name); });

TEST_F(DownloaderTest, GivesUpAfterMaxAttempts) {
  const auto data = put("down", 1000, 11);
  emulator::S3Fault fault;
  fault.error_status = 500;
  fault.times = -1;
  UPPARAT_ASSERT_OK(server_->add_fault(kBucket, "down", fault));
  settings_.max_attempts = 3;
  Downloader d(settings_);
  ResumeState resume;
  const auto result = run(d, request("down", data), resume);
  EXPECT_EQ(result.outcome, Outcome::Failed);
  EXPECT_NE(result.reason.find("HTTP 500"), std::string::npos) << result.reason;
  EXPECT_NE(result.reason.find("3 attempts"), std::string::npos) << result.reason;
  EXPECT_EQ(server_->stats(kBucket, "down").get_requests, 3u);
}

TEST_F(DownloaderTest, UrlExpiryMidwayKeepsBytesAndContinuesWithFreshUrl) {
  const std::size_t size = 1024 * 1024;
  const auto data = put("exp", size, 12);
  emulator::S3Fault fault;
  fault.close_after_bytes = 300 * 1024;
  UPPARAT_ASSERT_OK(server_->add_fault(kBucket, "exp", fault));
  auto r = request("exp", data);
  r.url = url("exp", 60s);
  Downloader d(settings_);
  ResumeState resume;
  StopSignal stop;
  // Expire the URL as soon as the first (cut) response was received.
  std::atomic<bool> advanced{false};
  const auto result = d.run(r, resume, stop,
                            [&](const Progress& p) {
                              if (p.bytes >= 300 * 1024 && !advanced.exchange(true)) {
                                clock_->advance(120s);
                              }
                            },
                            {});
  ASSERT_EQ(result.outcome, Outcome::UrlExpired) << result.reason;
  EXPECT_NE(result.reason.find("403"), std::string::npos) << result.reason;
  EXPECT_EQ(result.reason.find("X-Amz-Signature"), std::string::npos) << result.reason;
  EXPECT_EQ(resume.synced_bytes, 300u * 1024);
  EXPECT_EQ(fs::file_size(d.part_path(r.job_id)), 300u * 1024);
  EXPECT_FALSE(fs::exists(d.final_path(r.job_id)));

  r.url = url("exp", 60s);  // the fresh URL of the next describe
  const auto second = d.run(r, resume, stop);
  ASSERT_EQ(second.outcome, Outcome::Complete) << second.reason;
  EXPECT_EQ(read(second.file), data);
  EXPECT_EQ(second.bytes_transferred, size - 300 * 1024);
  EXPECT_LE(server_->stats(kBucket, "exp").body_bytes_sent, size + 1024);
}

TEST_F(DownloaderTest, CorruptedTwiceFailsWithBothDigestsAndLeavesNoFile) {
  const auto data = put("corrupt2", 300 * 1024, 14);
  emulator::S3Fault fault;
  fault.corrupt_offset = 5;
  fault.times = 2;
  UPPARAT_ASSERT_OK(server_->add_fault(kBucket, "corrupt2", fault));
  Downloader d(settings_);
  ResumeState resume;
  const auto r = request("corrupt2", data);
  const auto result = run(d, r, resume);
  ASSERT_EQ(result.outcome, Outcome::Failed);
  auto corrupted = data;
  corrupted[5] = static_cast<char>(corrupted[5] ^ 0xff);
  EXPECT_NE(result.reason.find(sha256_hex(data)), std::string::npos) << result.reason;
  EXPECT_NE(result.reason.find(sha256_hex(corrupted)), std::string::npos) << result.reason;
  EXPECT_FALSE(fs::exists(d.part_path(r.job_id)));
  EXPECT_FALSE(fs::exists(d.final_path(r.job_id)));
  EXPECT_EQ(resume.synced_bytes, 0u);
}

TEST_F(DownloaderTest, RangeNotSatisfiableOnCompletePartMeansComplete) {
  const auto data = put("full", 200 * 1024, 16);
  Downloader d(settings_);
  fs::create_directories(settings_.directory);
  auto r = request("full", data);
  UPPARAT_ASSERT_OK(test::write_file(d.part_path(r.job_id), data));
  ResumeState resume{data.size(), server_->etag(kBucket, "full").value(), ""};
  r.size.reset();  // the size unknown: the server must be asked (and answers 416)
  const auto result = run(d, r, resume);
  ASSERT_EQ(result.outcome, Outcome::Complete) << result.reason;
  EXPECT_EQ(read(result.file), data);
  EXPECT_EQ(result.bytes_transferred, 0u);
  EXPECT_EQ(server_->stats(kBucket, "full").get_requests, 1u);
}

TEST_F(DownloaderTest, CompletePartWithKnownSizeIsVerifiedWithoutAsking) {
  const auto data = put("known", 100 * 1024, 17);
  Downloader d(settings_);
  fs::create_directories(settings_.directory);
  const auto r = request("known", data);
  UPPARAT_ASSERT_OK(test::write_file(d.part_path(r.job_id), data));
  ResumeState resume{data.size(), "", ""};
  const auto result = run(d, r, resume);
  ASSERT_EQ(result.outcome, Outcome::Complete) << result.reason;
  EXPECT_EQ(server_->stats(kBucket, "known").get_requests, 0u);
}

TEST_F(DownloaderTest, ForgedUrlIsRefusedAsExpired) {
  const auto data = put("forged", 1000, 18);
  auto r = request("forged", data);
  const auto pos = r.url.find("X-Amz-Signature=");
  ASSERT_NE(pos, std::string::npos);
  r.url[pos + 17] = r.url[pos + 17] == '0' ? '1' : '0';
  Downloader d(settings_);
  ResumeState resume;
  const auto result = run(d, r, resume);
  EXPECT_EQ(result.outcome, Outcome::UrlExpired) << result.reason;
  EXPECT_NE(result.reason.find("HTTP 403"), std::string::npos) << result.reason;
  EXPECT_EQ(result.reason.find("X-Amz"), std::string::npos) << result.reason;
  EXPECT_FALSE(fs::exists(d.final_path(r.job_id)));
}

TEST_F(DownloaderTest, MissingObjectFails) {
  Downloader d(settings_);
  ResumeState resume;
  Request r;
  r.job_id = "upparat_missing";
  r.url = url("does-not-exist");
  const auto result = run(d, r, resume);
  EXPECT_EQ(result.outcome, Outcome::Failed);
  EXPECT_NE(result.reason.find("HTTP 404"), std::string::npos) << result.reason;
}

TEST_F(DownloaderTest, SchemesOtherThanHttpsAreRefused) {
  Downloader d(settings_);
  for (const char* u : {"ftp://127.0.0.1/x", "file:///etc/passwd", "http://127.0.0.1:1/x",
                        "gopher://a/b", "no-scheme", "https://", "https://exa mple.com/x"}) {
    ResumeState resume;
    Request r;
    r.job_id = "upparat_scheme";
    r.url = u;
    const auto result = run(d, r, resume);
    EXPECT_EQ(result.outcome, Outcome::Failed) << u;
    EXPECT_FALSE(result.reason.empty());
  }
}

TEST_F(DownloaderTest, PlainHttpOnlyWhenAllowed) {
  emulator::S3Options options;
  options.clock = clock_;
  auto plain = must(emulator::S3Server::start(options), "plain S3");
  const auto data = random_bytes(50000, 19);
  UPPARAT_ASSERT_OK(plain->put_object(kBucket, "h", data));
  Request r;
  r.job_id = "upparat_http";
  r.url = plain->presign(kBucket, "h", 600s);
  r.sha256 = sha256_hex(data);
  {
    Downloader d(settings_);
    ResumeState resume;
    const auto result = run(d, r, resume);
    EXPECT_EQ(result.outcome, Outcome::Failed);
    EXPECT_NE(result.reason.find("\"http\" refused"), std::string::npos) << result.reason;
    EXPECT_EQ(plain->stats(kBucket, "h").requests, 0u);
  }
  settings_.allow_http = true;
  Downloader d(settings_);
  ResumeState resume;
  const auto result = run(d, r, resume);
  ASSERT_EQ(result.outcome, Outcome::Complete) << result.reason;
  EXPECT_EQ(read(result.file), data);
}

TEST_F(DownloaderTest, UntrustedCertificateIsNeverAccepted) {
  const auto data = put("tls", 1000, 20);
  auto other = must(test::CertificateAuthority::create("Other CA"), "other CA");
  settings_.ca_file = other.ca_cert().string();
  settings_.max_attempts = 2;
  Downloader d(settings_);
  ResumeState resume;
  const auto result = run(d, request("tls", data), resume);
  EXPECT_EQ(result.outcome, Outcome::Failed);
  EXPECT_NE(result.reason.find("SSL"), std::string::npos) << result.reason;
  EXPECT_EQ(server_->stats(kBucket, "tls").get_requests, 0u);
}

TEST_F(DownloaderTest, ConfiguredProxyIsUsed) {
  const auto data = put("proxied", 1000, 36);
  settings_.proxy = "http://127.0.0.1:1";  // nothing listens there
  settings_.max_attempts = 1;
  Downloader d(settings_);
  ResumeState resume;
  const auto result = run(d, request("proxied", data), resume);
  EXPECT_EQ(result.outcome, Outcome::Failed);
  EXPECT_NE(result.reason.find("connect"), std::string::npos) << result.reason;
  EXPECT_EQ(server_->stats(kBucket, "proxied").requests, 0u);
}

TEST_F(DownloaderTest, StopDuringTransferEndsPromptlyAndKeepsBytes) {
  const auto data = put("slow", 4 * 1024 * 1024, 21);
  emulator::S3Fault fault;
  fault.rate_limit_bytes_per_second = 256 * 1024;
  UPPARAT_ASSERT_OK(server_->add_fault(kBucket, "slow", fault));
  Downloader d(settings_);
  ResumeState resume;
  StopSignal stop;
  std::chrono::steady_clock::time_point stop_time;
  const auto r = request("slow", data);
  const auto result = d.run(r, resume, stop, [&](const Progress& p) {
    if (p.bytes > 100 * 1024 && !stop.requested()) {
      stop_time = std::chrono::steady_clock::now();
      stop.request();
    }
  });
  const auto took = std::chrono::steady_clock::now() - stop_time;
  ASSERT_EQ(result.outcome, Outcome::Cancelled) << result.reason;
  EXPECT_LT(took, 1500ms);
  EXPECT_GT(resume.synced_bytes, 100u * 1024);
  EXPECT_EQ(fs::file_size(d.part_path(r.job_id)), resume.synced_bytes);
  EXPECT_FALSE(fs::exists(d.final_path(r.job_id)));
}

TEST_F(DownloaderTest, StopFromAnotherThreadDuringBackoff) {
  const auto data = put("backoff", 1000, 22);
  emulator::S3Fault fault;
  fault.error_status = 503;
  fault.times = -1;
  UPPARAT_ASSERT_OK(server_->add_fault(kBucket, "backoff", fault));
  settings_.backoff_base = 60s;
  settings_.backoff_cap = 60s;
  Downloader d(settings_);
  ResumeState resume;
  StopSignal stop;
  std::chrono::steady_clock::time_point stop_time;
  std::thread stopper([&] {
    while (server_->stats(kBucket, "backoff").get_requests < 1) {
      std::this_thread::sleep_for(5ms);
    }
    // Now in a back-off sleep of up to 60 s (or, rarely, already in the next attempt).
    std::this_thread::sleep_for(300ms);
    stop_time = std::chrono::steady_clock::now();
    stop.request();
  });
  const auto result = d.run(request("backoff", data), resume, stop);
  const auto end = std::chrono::steady_clock::now();
  stopper.join();
  EXPECT_EQ(result.outcome, Outcome::Cancelled) << result.reason;
  EXPECT_LT(end - stop_time, 1000ms);
}

// Starts tests/download/download_tool on `r` (a separate process to SIGKILL), saving its state
// to `state`, with an fsync every `fsync_bytes`.
test::ServiceProcess start_download_tool(const Settings& settings, const Request& r,
                                         std::size_t size, const fs::path& state,
                                         std::size_t fsync_bytes) {
  test::ProcessOptions options;
  options.argv = {DOWNLOAD_TOOL_PATH,
                  "--dir",
                  settings.directory.string(),
                  "--job",
                  r.job_id,
                  "--url",
                  r.url,
                  "--sha256",
                  *r.sha256,
                  "--size",
                  std::to_string(size),
                  "--state",
                  state.string(),
                  "--ca",
                  settings.ca_file,
                  "--fsync-bytes",
                  std::to_string(fsync_bytes)};
  return must(test::ServiceProcess::start(options), "download_tool");
}

// The state file download_tool writes: synced bytes, ETag, boot id, a line each.
ResumeState read_tool_state(const fs::path& state) {
  std::ifstream in(state);
  ResumeState resume;
  in >> resume.synced_bytes;
  in.ignore();
  std::getline(in, resume.etag);
  std::getline(in, resume.boot_id);
  return resume;
}

TEST_F(DownloaderTest, RestartAfterSigkillPicksUpPartialFileAndState) {
  const std::size_t size = 3 * 1024 * 1024;
  const auto data = put("restart", size, 23);
  emulator::S3Fault fault;
  fault.rate_limit_bytes_per_second = 1024 * 1024;
  UPPARAT_ASSERT_OK(server_->add_fault(kBucket, "restart", fault));
  const auto r = request("restart", data);
  const auto state = tmp_->path() / "state";
  auto tool = start_download_tool(settings_, r, size, state, 64 * 1024);
  // Wait until it has synced about a third of the file, then pull the plug.
  UPPARAT_ASSERT_OK(tool.wait_for_line(
      [](const std::string& line) {
        return line.rfind("state ", 0) == 0 && std::stoull(line.substr(6)) >= 1024 * 1024;
      },
      20s));
  tool.kill9();
  ResumeState resume = read_tool_state(state);
  ASSERT_GE(resume.synced_bytes, 1024u * 1024);
  EXPECT_EQ(resume.etag, server_->etag(kBucket, "restart").value());
  const auto sent_before = server_->stats(kBucket, "restart").body_bytes_sent;

  const auto synced = resume.synced_bytes;
  // As after a power cut: another boot, so only the synced bytes count.
  auto rebooted = settings_;
  rebooted.boot_id = "another-boot";
  Downloader d(rebooted);
  const auto result = run(d, r, resume);
  ASSERT_EQ(result.outcome, Outcome::Complete) << result.reason;
  EXPECT_EQ(read(result.file), data);
  EXPECT_EQ(result.bytes_transferred, size - synced);
  EXPECT_EQ(server_->stats(kBucket, "restart").body_bytes_sent - sent_before, size - synced);
  // Lost: only what was received after the last saved fsync (at most 64 KiB + in flight).
  EXPECT_LE(server_->stats(kBucket, "restart").body_bytes_sent, size + 512 * 1024);
}

TEST_F(DownloaderTest, SigkillInTheSameBootKeepsEveryWrittenByte) {
  const std::size_t size = 3 * 1024 * 1024;
  const auto data = put("crash", size, 28);
  emulator::S3Fault fault;
  fault.rate_limit_bytes_per_second = 1024 * 1024;
  UPPARAT_ASSERT_OK(server_->add_fault(kBucket, "crash", fault));
  const auto r = request("crash", data);
  const auto state = tmp_->path() / "state";
  // No fsync by size during the test: what survives the SIGKILL is the page cache.
  auto tool = start_download_tool(settings_, r, size, state, 64 * 1024 * 1024);
  Downloader d(settings_);
  const auto part = d.part_path(r.job_id);
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  std::error_code ec;
  while (fs::file_size(part, ec) < 1024 * 1024 || ec) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the download did not get to 1 MiB";
    std::this_thread::sleep_for(20ms);
  }
  tool.kill9();
  const auto written = fs::file_size(part);
  ResumeState resume = read_tool_state(state);
  ASSERT_LT(resume.synced_bytes, written) << "the test needs unsynced bytes at the SIGKILL";
  EXPECT_EQ(resume.etag, server_->etag(kBucket, "crash").value());
  EXPECT_FALSE(resume.boot_id.empty());
  const auto sent_before = server_->stats(kBucket, "crash").body_bytes_sent;

  const auto result = run(d, r, resume);  // the same boot: this machine's boot id
  ASSERT_EQ(result.outcome, Outcome::Complete) << result.reason;
  EXPECT_EQ(read(result.file), data);
  EXPECT_EQ(result.bytes_transferred, size - written);
  EXPECT_EQ(server_->stats(kBucket, "crash").body_bytes_sent - sent_before, size - written);
  // Lost: only what was in flight at the SIGKILL.
  EXPECT_LE(server_->stats(kBucket, "crash").body_bytes_sent, size + 512 * 1024);
}

TEST_F(DownloaderTest, UnsyncedTailOfGarbageIsCutOff) {
  const std::size_t size = 600 * 1024;
  const auto data = put("tail", size, 24);
  Downloader d(settings_);
  fs::create_directories(settings_.directory);
  const auto r = request("tail", data);
  // A power cut: 200 KiB were fsynced, then a tail of zeros the kernel never wrote.
  UPPARAT_ASSERT_OK(test::write_file(d.part_path(r.job_id),
                                     data.substr(0, 200 * 1024) + std::string(100 * 1024, '\0')));
  ResumeState resume{200 * 1024, server_->etag(kBucket, "tail").value(), "the-boot-before"};
  const auto result = run(d, r, resume);
  ASSERT_EQ(result.outcome, Outcome::Complete) << result.reason;
  EXPECT_EQ(read(result.file), data);
  EXPECT_EQ(result.bytes_transferred, size - 200 * 1024);
}

TEST_F(DownloaderTest, ChangedObjectRestartsFromZeroThroughIfRange) {
  const auto old_data = put("changed", 300 * 1024, 25);
  Downloader d(settings_);
  fs::create_directories(settings_.directory);
  const auto job = std::string("upparat_changed");
  UPPARAT_ASSERT_OK(test::write_file(d.part_path(job), old_data.substr(0, 100 * 1024)));
  ResumeState resume{100 * 1024, server_->etag(kBucket, "changed").value(), ""};
  const auto new_data = put("changed", 300 * 1024, 26);  // replaced on the server
  const auto result = run(d, request("changed", new_data), resume);
  ASSERT_EQ(result.outcome, Outcome::Complete) << result.reason;
  EXPECT_EQ(read(result.file), new_data);
  EXPECT_EQ(result.bytes_transferred, new_data.size());
}

TEST_F(DownloaderTest, ExistingFinalFileIsVerifiedNotDownloaded) {
  const auto data = put("done", 1000, 27);
  Downloader d(settings_);
  fs::create_directories(settings_.directory);
  const auto r = request("done", data);
  UPPARAT_ASSERT_OK(test::write_file(d.final_path(r.job_id), data));
  ResumeState resume;
  auto result = run(d, r, resume);
  ASSERT_EQ(result.outcome, Outcome::Complete) << result.reason;
  EXPECT_EQ(server_->stats(kBucket, "done").get_requests, 0u);
  // A wrong final file is not trusted.
  UPPARAT_ASSERT_OK(test::write_file(d.final_path(r.job_id), "garbage"));
  result = run(d, r, resume);
  ASSERT_EQ(result.outcome, Outcome::Complete) << result.reason;
  EXPECT_EQ(read(result.file), data);
  EXPECT_EQ(server_->stats(kBucket, "done").get_requests, 1u);
}

TEST_F(DownloaderTest, SizeDifferentFromJobDocumentFails) {
  const auto data = put("size", 1000, 28);
  auto r = request("size", data);
  r.size = 999;
  Downloader d(settings_);
  ResumeState resume;
  const auto result = run(d, r, resume);
  EXPECT_EQ(result.outcome, Outcome::Failed);
  EXPECT_NE(result.reason.find("1000 bytes"), std::string::npos) << result.reason;
  EXPECT_NE(result.reason.find("999 bytes"), std::string::npos) << result.reason;
}

TEST_F(DownloaderTest, InvalidJobIdsNeverBecomeFileNames) {
  Downloader d(settings_);
  for (const std::string& id :
       std::vector<std::string>{"", "../etc", "a/b", "x.part", std::string(65, 'a'), "a b",
                                std::string("a\0b", 3), "."}) {
    ResumeState resume;
    Request r;
    r.job_id = id;
    r.url = url("whatever");
    const auto result = run(d, r, resume);
    EXPECT_EQ(result.outcome, Outcome::Failed) << id;
    EXPECT_NE(result.reason.find("job id"), std::string::npos);
  }
  EXPECT_FALSE(fs::exists(settings_.directory));
  EXPECT_TRUE(valid_job_id(std::string(64, 'a')));
  EXPECT_TRUE(valid_job_id("upparat_1-2"));
}

TEST_F(DownloaderTest, BadSha256InJobDocumentFails) {
  const auto data = put("badsha", 10, 29);
  auto r = request("badsha", data);
  r.sha256 = "xyz";
  Downloader d(settings_);
  ResumeState resume;
  EXPECT_EQ(run(d, r, resume).outcome, Outcome::Failed);
}

TEST_F(DownloaderTest, CleanAndRemove) {
  Downloader d(settings_);
  fs::create_directories(settings_.directory);
  for (const auto* name : {"upparat_1", "upparat_1.part", "upparat_2", "upparat_2.part"}) {
    UPPARAT_ASSERT_OK(test::write_file(settings_.directory / name, "x"));
  }
  UPPARAT_ASSERT_OK(test::write_file(settings_.directory / "not ours.txt", "x"));
  UPPARAT_ASSERT_OK(d.clean("upparat_2"));
  EXPECT_FALSE(fs::exists(settings_.directory / "upparat_1"));
  EXPECT_FALSE(fs::exists(settings_.directory / "upparat_1.part"));
  EXPECT_TRUE(fs::exists(settings_.directory / "upparat_2"));
  EXPECT_TRUE(fs::exists(settings_.directory / "upparat_2.part"));
  EXPECT_TRUE(fs::exists(settings_.directory / "not ours.txt"));
  UPPARAT_ASSERT_OK(d.remove("upparat_2"));
  EXPECT_FALSE(fs::exists(settings_.directory / "upparat_2"));
  EXPECT_FALSE(fs::exists(settings_.directory / "upparat_2.part"));
  UPPARAT_ASSERT_OK(test::write_file(settings_.directory / "upparat_3", "x"));
  UPPARAT_ASSERT_OK(d.clean(""));
  EXPECT_FALSE(fs::exists(settings_.directory / "upparat_3"));
  EXPECT_FALSE(d.remove("../x").has_value());
  UPPARAT_EXPECT_OK(d.remove("upparat_none"));
}

// A file outside the download folder that a planted link points at: it must stay as it is.
class Victim {
 public:
  explicit Victim(const fs::path& path) : path_(path) {
    UPPARAT_EXPECT_OK(test::write_file(path_, content_));
    EXPECT_EQ(::chmod(path_.c_str(), 0644), 0);
  }
  const fs::path& path() const { return path_; }
  void expect_unchanged() const {
    EXPECT_EQ(test::file_mode(path_), 0644u);
    EXPECT_EQ(fs::file_size(path_), content_.size());
    EXPECT_EQ(must(test::read_file(path_), "read"), content_);
  }

 private:
  fs::path path_;
  std::string content_ = std::string(5000, 'p');
};

TEST_F(DownloaderTest, SymlinkAtThePartFileIsRefusedAndItsTargetUntouched) {
  const auto data = put("planted", 100 * 1024, 40);
  Downloader d(settings_);
  fs::create_directories(settings_.directory);
  const Victim victim(tmp_->path() / "victim");
  const auto r = request("planted", data);
  fs::create_symlink(victim.path(), d.part_path(r.job_id));
  ResumeState resume;
  const auto result = run(d, r, resume);
  ASSERT_EQ(result.outcome, Outcome::Failed);
  EXPECT_NE(result.reason.find(d.part_path(r.job_id).string() + " is a symbolic link"),
            std::string::npos)
      << result.reason;
  victim.expect_unchanged();
  EXPECT_TRUE(fs::is_symlink(d.part_path(r.job_id)));
  EXPECT_FALSE(fs::exists(d.final_path(r.job_id)));
  EXPECT_EQ(server_->stats(kBucket, "planted").get_requests, 0u);
}

TEST_F(DownloaderTest, HardLinkAtThePartFileIsRefusedAndItsOtherNameUntouched) {
  const auto data = put("linked", 100 * 1024, 41);
  Downloader d(settings_);
  fs::create_directories(settings_.directory);
  const Victim victim(tmp_->path() / "victim");
  const auto r = request("linked", data);
  ASSERT_EQ(::link(victim.path().c_str(), d.part_path(r.job_id).c_str()), 0);
  ResumeState resume;
  const auto result = run(d, r, resume);
  ASSERT_EQ(result.outcome, Outcome::Failed);
  EXPECT_NE(result.reason.find("2 hard links"), std::string::npos) << result.reason;
  victim.expect_unchanged();
}

TEST_F(DownloaderTest, SymlinkAtTheFinalFileIsNeverTakenForTheDownload) {
  // The link points at a file with the very content of the download: it is still replaced by
  // a real file, so an installer never gets a path that leads elsewhere.
  const auto data = put("final-link", 5000, 42);
  Downloader d(settings_);
  fs::create_directories(settings_.directory);
  const auto elsewhere = tmp_->path() / "elsewhere";
  UPPARAT_ASSERT_OK(test::write_file(elsewhere, data));
  const auto r = request("final-link", data);
  fs::create_symlink(elsewhere, d.final_path(r.job_id));
  ResumeState resume;
  const auto result = run(d, r, resume);
  ASSERT_EQ(result.outcome, Outcome::Complete) << result.reason;
  EXPECT_FALSE(fs::is_symlink(result.file));
  EXPECT_EQ(read(result.file), data);
  EXPECT_EQ(read(elsewhere), data);
  EXPECT_EQ(server_->stats(kBucket, "final-link").get_requests, 1u);
}

TEST_F(DownloaderTest, GroupWritableDownloadFolderIsRefused) {
  const auto data = put("shared", 1000, 43);
  fs::create_directories(settings_.directory);
  ASSERT_EQ(::chmod(settings_.directory.c_str(), 0775), 0);
  Downloader d(settings_);
  ResumeState resume;
  const auto r = request("shared", data);
  const auto result = run(d, r, resume);
  ASSERT_EQ(result.outcome, Outcome::Failed);
  EXPECT_NE(result.reason.find(settings_.directory.string() + " is writable by its group"),
            std::string::npos)
      << result.reason;
  EXPECT_FALSE(fs::exists(d.part_path(r.job_id)));
  EXPECT_FALSE(d.clean(""));
  EXPECT_FALSE(d.remove(r.job_id));
}

TEST_F(DownloaderTest, DownloadFolderOfAnotherUserIsRefused) {
  if (::geteuid() != 0) {
    UPPARAT_SKIP() << "needs root to give the folder to another user (uid 65534); CI runs as root";
  }
  const auto data = put("theirs", 1000, 44);
  fs::create_directories(settings_.directory);
  ASSERT_EQ(::chown(settings_.directory.c_str(), 65534, 65534), 0);
  Downloader d(settings_);
  ResumeState resume;
  const auto r = request("theirs", data);
  const auto result = run(d, r, resume);
  ASSERT_EQ(result.outcome, Outcome::Failed);
  EXPECT_NE(result.reason.find(settings_.directory.string() + " belongs to uid 65534"),
            std::string::npos)
      << result.reason;
  EXPECT_FALSE(fs::exists(d.part_path(r.job_id)));
}

TEST_F(DownloaderTest, ConfiguredModes) {
  const auto data = put("modes", 1000, 30);
  settings_.directory_mode = 0750;
  settings_.file_mode = 0640;
  settings_.group = ::getgid();
  Downloader d(settings_);
  ResumeState resume;
  const auto result = run(d, request("modes", data), resume);
  ASSERT_EQ(result.outcome, Outcome::Complete) << result.reason;
  EXPECT_EQ(test::file_mode(result.file), 0640u);
  EXPECT_EQ(test::file_mode(settings_.directory), 0750u);
}

TEST_F(DownloaderTest, ProgressIsThrottled) {
  const auto data = put("throttle", 1024 * 1024, 31);
  emulator::S3Fault fault;
  fault.rate_limit_bytes_per_second = 2 * 1024 * 1024;
  UPPARAT_ASSERT_OK(server_->add_fault(kBucket, "throttle", fault));
  settings_.progress_interval = 200ms;
  Downloader d(settings_);
  ResumeState resume;
  StopSignal stop;
  int calls = 0;
  Progress last;
  const auto result = d.run(request("throttle", data), resume, stop, [&](const Progress& p) {
    ++calls;
    last = p;
  });
  ASSERT_EQ(result.outcome, Outcome::Complete) << result.reason;
  EXPECT_GE(calls, 2);
  EXPECT_LE(calls, 10);  // ~0.5 s of transfer at one call per 200 ms, plus first and last
  EXPECT_EQ(last.bytes, data.size());
}

TEST_F(DownloaderTest, SecretsNeverReachTheLog) {
  const auto data = put("secret", 200 * 1024, 32);
  emulator::S3Fault cut;
  cut.close_after_bytes = 1000;
  UPPARAT_ASSERT_OK(server_->add_fault(kBucket, "secret", cut));
  emulator::S3Fault err;
  err.error_status = 500;
  UPPARAT_ASSERT_OK(server_->add_fault(kBucket, "secret", err));
  std::ostringstream log;
  auto previous = spdlog::default_logger();
  auto logger = std::make_shared<spdlog::logger>(
      "capture", std::make_shared<spdlog::sinks::ostream_sink_mt>(log));
  logger->set_level(spdlog::level::trace);
  spdlog::set_default_logger(logger);
  auto r = request("secret", data);
  Downloader d(settings_);
  ResumeState resume;
  auto result = run(d, r, resume);
  clock_->advance(7200s);  // expired now
  UPPARAT_ASSERT_OK(d.remove(r.job_id));
  ResumeState resume2;
  auto expired = run(d, r, resume2);
  spdlog::set_default_logger(previous);
  ASSERT_EQ(result.outcome, Outcome::Complete) << result.reason;
  ASSERT_EQ(expired.outcome, Outcome::UrlExpired) << expired.reason;
  const auto query = r.url.substr(r.url.find('?') + 1);
  const auto signature = r.url.substr(r.url.find("X-Amz-Signature=") + 16);
  const auto text = log.str();
  EXPECT_NE(text.find("?<redacted>"), std::string::npos) << text;
  EXPECT_EQ(text.find(signature), std::string::npos) << text;
  EXPECT_EQ(text.find("X-Amz-Credential"), std::string::npos) << text;
  EXPECT_EQ(expired.reason.find(signature), std::string::npos);
}

// The FileSystem seam: a disk that fills up after `limit` bytes, or fails to fsync.
class FailingFileSystem : public FileSystem {
 public:
  explicit FailingFileSystem(std::uint64_t limit, int error = ENOSPC)
      : limit_(limit), error_(error) {}
  Status write_all(int fd, const char* data, std::size_t size) override {
    if (written_ + size > limit_) {
      return fail(std::string("write: ") + std::strerror(error_));
    }
    written_ += size;
    return FileSystem::write_all(fd, data, size);
  }
  Result<std::uint64_t> available_bytes(const std::filesystem::path&) override {
    return available_;
  }
  std::uint64_t available_ = 1ULL << 40;

 private:
  std::uint64_t limit_;
  int error_;
  std::uint64_t written_ = 0;
};

TEST_F(DownloaderTest, NoSpaceWhileWritingFailsAndLeavesNothing) {
  const auto data = put("enospc", 1024 * 1024, 33);
  auto disk = std::make_shared<FailingFileSystem>(300 * 1024);
  Downloader d(settings_, disk);
  ResumeState resume;
  const auto r = request("enospc", data);
  const auto result = run(d, r, resume);
  ASSERT_EQ(result.outcome, Outcome::Failed);
  EXPECT_NE(result.reason.find("No space left on device"), std::string::npos) << result.reason;
  EXPECT_FALSE(fs::exists(d.part_path(r.job_id)));
  EXPECT_FALSE(fs::exists(d.final_path(r.job_id)));
  EXPECT_EQ(resume.synced_bytes, 0u);
  EXPECT_EQ(server_->stats(kBucket, "enospc").get_requests, 1u);  // not retried
}

TEST_F(DownloaderTest, IoErrorFailsToo) {
  const auto data = put("eio", 100 * 1024, 34);
  auto disk = std::make_shared<FailingFileSystem>(0, EIO);
  Downloader d(settings_, disk);
  ResumeState resume;
  const auto result = run(d, request("eio", data), resume);
  ASSERT_EQ(result.outcome, Outcome::Failed);
  EXPECT_NE(result.reason.find("Input/output error"), std::string::npos) << result.reason;
}

TEST_F(DownloaderTest, NotEnoughFreeSpaceIsCheckedFirst) {
  const auto data = put("space", 100 * 1024, 35);
  auto disk = std::make_shared<FailingFileSystem>(1ULL << 40);
  disk->available_ = 1000;
  Downloader d(settings_, disk);
  ResumeState resume;
  const auto result = run(d, request("space", data), resume);
  ASSERT_EQ(result.outcome, Outcome::Failed);
  EXPECT_NE(result.reason.find("not enough free space"), std::string::npos) << result.reason;
  EXPECT_EQ(server_->stats(kBucket, "space").get_requests, 0u);
  // Size unknown in the job: checked when the server announces it.
  ResumeState resume2;
  const auto result2 = run(d, request("space", data, false), resume2);
  ASSERT_EQ(result2.outcome, Outcome::Failed);
  EXPECT_NE(result2.reason.find("not enough free space"), std::string::npos) << result2.reason;
}

// A download that fits but would leave less than reserve_bytes free fails before it starts:
// the job state, which shares the filesystem, must still be saved before the restart.
TEST_F(DownloaderTest, ReserveBytesAreKeptFree) {
  const auto data = put("reserve", 100 * 1024, 36);
  auto disk = std::make_shared<FailingFileSystem>(1ULL << 40);
  disk->available_ = data.size() + 1000;
  Downloader d(settings_, disk);
  ResumeState resume;
  const auto result = run(d, request("reserve", data), resume);
  ASSERT_EQ(result.outcome, Outcome::Failed);
  EXPECT_NE(result.reason.find("reserve_bytes"), std::string::npos) << result.reason;
  EXPECT_EQ(server_->stats(kBucket, "reserve").get_requests, 0u);
  // With room for the file and the reserve, it downloads.
  disk->available_ = data.size() + settings_.reserve_bytes;
  ResumeState resume2;
  EXPECT_EQ(run(d, request("reserve", data), resume2).outcome, Outcome::Complete);
}

}  // namespace
}  // namespace upparat::download
