// A streamed download (Downloader::stream into a StreamPipe) against the emulator's S3 side, in
// process, over HTTPS on loopback: the tail held back until the file is verified, cuts resumed
// without fetching a byte twice, a fresh URL after expiry, and a server that would start the
// file again (never spliced onto what the install step already read).

#include "download/stream.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <thread>

#include "download/downloader.hpp"
#include "download_test_util.hpp"
#include "emulator/s3/s3_server.hpp"
#include "support/certificates.hpp"
#include "support/result.hpp"
#include "support/temp_dir.hpp"

namespace upparat::download {
namespace {

using namespace std::chrono_literals;
using test::must;
using test::random_bytes;
using test::sha256_hex;

constexpr const char* kBucket = "firmware";

// Reads a stream's reader end until its end of file, on a thread of its own (the install).
class Reader {
 public:
  explicit Reader(int fd) : thread_([this, fd] { run(fd); }) {}
  ~Reader() { join(); }
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  // The bytes read once the stream reached its end of file.
  std::string join() {
    if (thread_.joinable()) {
      thread_.join();
    }
    return data_;
  }
  std::size_t size() const { return size_.load(); }

 private:
  void run(int fd) {
    char buffer[65536];
    for (;;) {
      const auto n = ::read(fd, buffer, sizeof buffer);
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n <= 0) {
        return;
      }
      data_.append(buffer, static_cast<std::size_t>(n));
      size_ += static_cast<std::size_t>(n);
    }
  }
  std::string data_;
  std::atomic<std::size_t> size_{0};
  std::thread thread_;
};

std::unique_ptr<StreamPipe> pipe_for(const std::string& data, const StopSignal& stop,
                                     bool checks = true) {
  std::optional<std::string> sha;
  std::optional<std::uint64_t> size;
  if (checks) {
    sha = sha256_hex(data);
    size = data.size();
  }
  return must(StreamPipe::create(sha, size, stop), "stream pipe");
}

TEST(StreamPipe, HoldsBackTheLast4KiBUntilTheFileIsVerified) {
  const auto data = random_bytes(100000, 1);
  StopSignal stop;
  auto pipe = pipe_for(data, stop);
  Reader reader(pipe->reader_fd());
  UPPARAT_ASSERT_OK(pipe->write(data.data(), 60000));
  UPPARAT_ASSERT_OK(pipe->write(data.data() + 60000, data.size() - 60000));
  // Everything but the tail arrives; the tail waits for complete().
  const auto before = data.size() - StreamPipe::kStreamTail;
  ASSERT_TRUE([&] {
    for (int i = 0; i < 200 && reader.size() < before; ++i) {
      std::this_thread::sleep_for(10ms);
    }
    return reader.size() == before;
  }()) << reader.size();
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(reader.size(), before);
  EXPECT_EQ(pipe->state(), StreamState::Running);
  UPPARAT_ASSERT_OK(pipe->complete());
  EXPECT_EQ(reader.join(), data);
  EXPECT_EQ(pipe->state(), StreamState::Complete);
}

TEST(StreamPipe, AWrongSha256FailsTheStreamWithoutItsTail) {
  const auto data = random_bytes(50000, 2);
  StopSignal stop;
  auto pipe = must(StreamPipe::create(std::string(64, 'a'), data.size(), stop), "pipe");
  Reader reader(pipe->reader_fd());
  UPPARAT_ASSERT_OK(pipe->write(data.data(), data.size()));
  const auto done = pipe->complete();
  ASSERT_FALSE(done);
  EXPECT_NE(done.error().message().find("sha256: expected aaaa"), std::string::npos)
      << done.error().message();
  EXPECT_EQ(reader.join(), data.substr(0, data.size() - StreamPipe::kStreamTail));
  EXPECT_EQ(pipe->state(), StreamState::Failed);
  EXPECT_NE(pipe->reason().find("sha256"), std::string::npos) << pipe->reason();
}

TEST(StreamPipe, AWrongSizeAndASmallFile) {
  const auto data = random_bytes(1000, 3);
  StopSignal stop;
  auto pipe = must(StreamPipe::create(std::nullopt, 1001, stop), "pipe");
  Reader reader(pipe->reader_fd());
  UPPARAT_ASSERT_OK(pipe->write(data.data(), data.size()));
  EXPECT_FALSE(pipe->complete());
  // A file smaller than the tail is held back whole: nothing of it reached the reader.
  EXPECT_EQ(reader.join(), "");
  EXPECT_NE(pipe->reason().find("size: expected 1001 bytes, got 1000"), std::string::npos)
      << pipe->reason();
}

TEST(StreamPipe, AWriteBlockedOnAReaderThatDoesNotReadEndsOnStop) {
  const auto data = random_bytes(8 * 1024 * 1024, 4);
  StopSignal stop;
  auto pipe = pipe_for(data, stop);
  std::thread stopper([&] {
    std::this_thread::sleep_for(200ms);
    stop.request();
  });
  const auto start = std::chrono::steady_clock::now();
  const auto written = pipe->write(data.data(), data.size());  // nobody reads
  stopper.join();
  EXPECT_FALSE(written);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
  pipe->fail("stopped");
  EXPECT_EQ(pipe->state(), StreamState::Failed);
  EXPECT_EQ(pipe->reason(), "stopped");
}

class StreamDownloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ca_.emplace(must(test::CertificateAuthority::create(), "CA"));
    clock_ = std::make_shared<emulator::Clock>();
    emulator::S3Options options;
    options.cert_file = ca_->server().cert.string();
    options.key_file = ca_->server().key.string();
    options.clock = clock_;
    server_ = must(emulator::S3Server::start(options), "S3 server");
    tmp_.emplace(must(test::TempDir::create("stream"), "temp dir"));
    settings_.directory = tmp_->path() / "downloads";
    settings_.ca_file = ca_->ca_cert().string();
    settings_.backoff_base = 10ms;
    settings_.backoff_cap = 100ms;
    settings_.low_speed_time = 1s;
    settings_.connect_timeout = 5s;
  }

  std::string put(const std::string& key, std::size_t size, std::uint32_t seed) {
    auto data = random_bytes(size, seed);
    must(server_->put_object(kBucket, key, data), "put_object");
    return data;
  }
  Request request(const std::string& key, const std::string& data) {
    Request r;
    r.job_id = "upparat_" + key;
    r.url = server_->presign(kBucket, key, 60s);
    r.sha256 = sha256_hex(data);
    r.size = data.size();
    return r;
  }

  std::optional<test::CertificateAuthority> ca_;
  std::shared_ptr<emulator::Clock> clock_;
  std::unique_ptr<emulator::S3Server> server_;
  std::optional<test::TempDir> tmp_;
  Settings settings_;
};

TEST_F(StreamDownloadTest, TwoCutsAreResumedAndNoByteIsFetchedTwice) {
  const auto data = put("cuts", 2 * 1024 * 1024 + 5, 5);
  emulator::S3Fault cut;
  cut.close_after_bytes = 300 * 1024;
  UPPARAT_ASSERT_OK(server_->add_fault(kBucket, "cuts", cut));
  emulator::S3Fault reset;
  reset.reset_after_bytes = 500 * 1024;
  UPPARAT_ASSERT_OK(server_->add_fault(kBucket, "cuts", reset));
  Downloader d(settings_);
  StopSignal stop;
  auto pipe = pipe_for(data, stop);
  Reader reader(pipe->reader_fd());
  ResumeState resume;
  const auto result = d.stream(request("cuts", data), resume, *pipe, stop);
  ASSERT_EQ(result.outcome, Outcome::Complete) << result.reason;
  UPPARAT_ASSERT_OK(pipe->complete());
  EXPECT_EQ(reader.join(), data);
  const auto stats = server_->stats(kBucket, "cuts");
  EXPECT_EQ(stats.get_requests, 3u);
  EXPECT_EQ(stats.body_bytes_sent, data.size());
  // Nothing went to the download folder.
  EXPECT_FALSE(std::filesystem::exists(d.part_path("upparat_cuts")));
}

TEST_F(StreamDownloadTest, TheBandwidthLimitHoldsForAStream) {
  // libcurl lets about the first MiB through at full speed, then paces the rest.
  const auto data = put("slow", 4 * 1024 * 1024, 10);
  settings_.max_bytes_per_second = 2 * 1024 * 1024;
  Downloader d(settings_);
  StopSignal stop;
  auto pipe = pipe_for(data, stop);
  Reader reader(pipe->reader_fd());
  ResumeState resume;
  const auto start = std::chrono::steady_clock::now();
  const auto result = d.stream(request("slow", data), resume, *pipe, stop);
  ASSERT_EQ(result.outcome, Outcome::Complete) << result.reason;
  EXPECT_GE(std::chrono::steady_clock::now() - start, 1s);
  UPPARAT_ASSERT_OK(pipe->complete());
  EXPECT_EQ(reader.join(), data);
}

TEST_F(StreamDownloadTest, AnExpiredUrlResumesWithAFreshOneWhereTheStreamStopped) {
  const auto data = put("expiry", 1024 * 1024, 6);
  emulator::S3Fault cut;
  cut.close_after_bytes = 300 * 1024;
  UPPARAT_ASSERT_OK(server_->add_fault(kBucket, "expiry", cut));
  Downloader d(settings_);
  StopSignal stop;
  auto pipe = pipe_for(data, stop);
  Reader reader(pipe->reader_fd());
  ResumeState resume;
  auto r = request("expiry", data);
  std::atomic<bool> advanced{false};
  const auto first = d.stream(r, resume, *pipe, stop, [&](const Progress& p) {
    if (p.bytes >= 300 * 1024 && !advanced.exchange(true)) {
      clock_->advance(120s);
    }
  });
  ASSERT_EQ(first.outcome, Outcome::UrlExpired) << first.reason;
  EXPECT_EQ(resume.synced_bytes, 300u * 1024);
  EXPECT_EQ(pipe->state(), StreamState::Running);
  r.url = server_->presign(kBucket, "expiry", 60s);
  const auto second = d.stream(r, resume, *pipe, stop);
  ASSERT_EQ(second.outcome, Outcome::Complete) << second.reason;
  UPPARAT_ASSERT_OK(pipe->complete());
  EXPECT_EQ(reader.join(), data);
  EXPECT_EQ(server_->stats(kBucket, "expiry").body_bytes_sent, data.size());
}

TEST_F(StreamDownloadTest, AServerThatSendsTheWholeFileAgainFailsTheStream) {
  const auto data = put("whole", 1024 * 1024, 7);
  emulator::S3Fault cut;
  cut.close_after_bytes = 200 * 1024;
  UPPARAT_ASSERT_OK(server_->add_fault(kBucket, "whole", cut));
  emulator::S3Fault no_range;
  no_range.ignore_range = true;
  UPPARAT_ASSERT_OK(server_->add_fault(kBucket, "whole", no_range));
  Downloader d(settings_);
  StopSignal stop;
  auto pipe = pipe_for(data, stop);
  Reader reader(pipe->reader_fd());
  ResumeState resume;
  const auto result = d.stream(request("whole", data), resume, *pipe, stop);
  ASSERT_EQ(result.outcome, Outcome::Failed) << result.reason;
  EXPECT_NE(result.reason.find("never spliced"), std::string::npos) << result.reason;
  pipe->fail(result.reason);
  const auto got = reader.join();
  EXPECT_LE(got.size(), 200u * 1024);
  EXPECT_EQ(got, data.substr(0, got.size()));
}

TEST_F(StreamDownloadTest, AnObjectReplacedMidStreamFailsTheStream) {
  const auto data = put("changed", 1024 * 1024, 8);
  emulator::S3Fault cut;
  cut.close_after_bytes = 200 * 1024;
  UPPARAT_ASSERT_OK(server_->add_fault(kBucket, "changed", cut));
  Downloader d(settings_);
  StopSignal stop;
  auto pipe = pipe_for(data, stop);
  Reader reader(pipe->reader_fd());
  ResumeState resume;
  auto r = request("changed", data);
  std::atomic<bool> replaced{false};
  const auto result = d.stream(r, resume, *pipe, stop, [&](const Progress& p) {
    if (p.bytes >= 200 * 1024 && !replaced.exchange(true)) {
      (void)put("changed", 1024 * 1024, 9);  // another ETag: If-Range gets the whole new file
    }
  });
  ASSERT_EQ(result.outcome, Outcome::Failed) << result.reason;
  EXPECT_NE(result.reason.find("never spliced"), std::string::npos) << result.reason;
  pipe->fail(result.reason);
  reader.join();
}

}  // namespace
}  // namespace upparat::download
