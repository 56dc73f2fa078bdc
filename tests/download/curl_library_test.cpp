// libcurl is loaded only while the downloader needs it (host/download/curl_library.hpp), so an
// idle daemon does not carry it and the 25 libraries it pulls in. This binary does not link
// libcurl (tests/download/CMakeLists.txt links it --as-needed), so its own mappings show each
// load and unload.

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "download/curl_library.hpp"
#include "download/downloader.hpp"
#include "emulator/s3/s3_server.hpp"
#include "support/certificates.hpp"
#include "support/digest.hpp"
#include "support/result.hpp"
#include "support/temp_dir.hpp"

namespace upparat::download {
namespace {

using namespace std::chrono_literals;
using test::must;

bool mapped_within(std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!CurlLibrary::mapped()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

TEST(CurlLibraryTest, LoadedWhileHeldSharedByAllAndUnloadedAfterTheLast) {
  ASSERT_FALSE(CurlLibrary::mapped()) << "this test binary must not link libcurl";
  {
    auto first = must(CurlLibrary::load(), "load");
    auto second = must(CurlLibrary::load(), "load");
    EXPECT_EQ(first.get(), second.get());
    EXPECT_TRUE(CurlLibrary::mapped());
    first.reset();
    EXPECT_TRUE(CurlLibrary::mapped());
  }
  EXPECT_FALSE(CurlLibrary::mapped());
  // Loaded again, it works again.
  auto again = must(CurlLibrary::load(), "load again");
  CURL* easy = again->easy_init();
  ASSERT_NE(easy, nullptr);
  again->easy_cleanup(easy);
}

TEST(DownloaderLibraryTest, DownloadsLoadLibcurlAndTheEndOfTheJobUnloadsIt) {
  ASSERT_FALSE(CurlLibrary::mapped()) << "this test binary must not link libcurl";
  auto ca = must(test::CertificateAuthority::create(), "CA");
  emulator::S3Options options;
  options.cert_file = ca.server().cert.string();
  options.key_file = ca.server().key.string();
  auto server = must(emulator::S3Server::start(options), "S3 server");
  auto tmp = must(test::TempDir::create("curl-library"), "temp dir");
  Settings settings;
  settings.directory = tmp.path() / "downloads";
  settings.ca_file = ca.ca_cert().string();
  settings.max_attempts = 1;
  const std::string data(256 * 1024, 'x');
  must(server->put_object("firmware", "image.bin", data), "put_object");

  Downloader downloader(settings);
  EXPECT_FALSE(CurlLibrary::mapped()) << "a Downloader alone must not load libcurl";
  // prepare() loads it in the background; release() before any transfer unloads it.
  downloader.prepare();
  EXPECT_TRUE(mapped_within(10s));
  downloader.release();
  EXPECT_FALSE(CurlLibrary::mapped());

  for (int job = 1; job <= 2; ++job) {
    Request request;
    request.job_id = "upparat_" + std::to_string(job);
    request.url = server->presign("firmware", "image.bin", 3600s);
    request.sha256 = test::sha256_hex(data);
    request.size = data.size();
    ResumeState resume;
    StopSignal stop;
    const DownloadResult result = downloader.run(request, resume, stop);
    ASSERT_EQ(result.outcome, Outcome::Complete) << result.reason;
    EXPECT_EQ(must(test::read_file(result.file), "read"), data);
    // Kept for the rest of the job (a fresh URL, a streamed install) ...
    EXPECT_TRUE(CurlLibrary::mapped());
    // ... and gone when it is over.
    downloader.release();
    EXPECT_FALSE(CurlLibrary::mapped()) << "job " << job;
  }
}

}  // namespace
}  // namespace upparat::download
