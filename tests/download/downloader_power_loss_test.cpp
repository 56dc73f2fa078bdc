// Power cuts at every operation of a download (tests/support/power_loss_file_system.hpp): the
// downloader and the state store that keeps its resume states (as the daemon does) share the
// fake, which is cut after each write, fsync, rename and folder fsync. The next start, in
// another boot and with the plain file system, must resume from what was saved and end with
// the source's bytes; a file under the final name is complete at every cut.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "common/stop_signal.hpp"
#include "download/downloader.hpp"
#include "download_test_util.hpp"
#include "emulator/s3/s3_server.hpp"
#include "state/state_store.hpp"
#include "support/certificates.hpp"
#include "support/power_loss_file_system.hpp"
#include "support/result.hpp"
#include "support/temp_dir.hpp"

namespace upparat::download {
namespace {

using namespace std::chrono_literals;
using test::must;
using test::PowerLossFileSystem;
using Unsynced = PowerLossFileSystem::Unsynced;
namespace fs = std::filesystem;

constexpr const char* kBucket = "firmware";
constexpr const char* kKey = "power.raucb";
constexpr std::size_t kSize = 5 * 64 * 1024 + 100;  // five synced lengths and a tail

struct Tally {
  int cuts = 0;
  int resumed = 0;         // the next start kept synced bytes
  int final_complete = 0;  // the final file was in place (and complete) after the cut
};

class DownloaderPowerLoss : public ::testing::TestWithParam<Unsynced> {
 protected:
  void SetUp() override {
    ca_.emplace(must(test::CertificateAuthority::create(), "CA"));
    emulator::S3Options options;
    options.cert_file = ca_->server().cert.string();
    options.key_file = ca_->server().key.string();
    server_ = must(emulator::S3Server::start(options), "S3 server");
    data_ = test::random_bytes(kSize, 41);
    must(server_->put_object(kBucket, kKey, data_), "put_object");
    tmp_.emplace(must(test::TempDir::create("download-power"), "temp dir"));
    settings_.directory = tmp_->path() / "downloads";
    settings_.ca_file = ca_->ca_cert().string();
    settings_.backoff_base = 10ms;
    settings_.backoff_cap = 50ms;
    settings_.max_attempts = 3;
    settings_.fsync_every_bytes = 64 * 1024;
    settings_.connect_timeout = 5s;
    settings_.reserve_bytes = 0;
    settings_.boot_id = "boot-before-the-cut";
    request_.job_id = "upparat_power";
    request_.url = server_->presign(kBucket, kKey, 3600s);
    request_.sha256 = test::sha256_hex(data_);
    request_.size = kSize;
  }

  // Downloads with the power going off after `cut` operations (none: never), cuts it, and
  // checks what the next start finds and does.
  void run(std::optional<int> cut, int* operations, Tally& outcome) {
    const fs::path state_dir = tmp_->path() / "state";
    for (const auto& dir : {settings_.directory, state_dir}) {
      fs::remove_all(dir);
      fs::create_directory(dir);
      fs::permissions(dir, fs::perms::owner_all);
    }
    const std::string where = "cut after " + (cut ? std::to_string(*cut) : "all") + " operations";
    auto fake = must(PowerLossFileSystem::create({settings_.directory, state_dir}), "fake");
    if (cut) {
      fake->cut_after(*cut);
    }
    {
      state::FileStateStore store(state_dir, fake);
      state::JobState job;
      job.job_id = request_.job_id;
      job.execution_number = 1;
      job.step = state::SavedStep::Download;
      // The daemon's state on entering the download (Deferred: the cloud knows it).
      if (store.save(job, state::Durability::Deferred)) {
        Downloader downloader(settings_, fake);
        ResumeState resume;
        StopSignal stop;
        // Each synced length, saved with the job (Synced, as the daemon does); a save the
        // power cut refused changes nothing.
        const auto result = downloader.run(request_, resume, stop, {}, [&](const ResumeState& s) {
          job.resume = s;
          (void)store.save(job, state::Durability::Synced);
        });
        if (!cut) {
          ASSERT_EQ(result.outcome, Outcome::Complete) << result.reason;
        }
      }
    }
    if (!cut) {
      *operations = fake->operations();
    }
    UPPARAT_ASSERT_OK(fake->cut_power(GetParam()));
    ++outcome.cuts;

    // The next start: another boot, the plain file system.
    auto rebooted = settings_;
    rebooted.boot_id = "boot-after-the-cut";
    Downloader downloader(rebooted);
    const fs::path final_file = downloader.final_path(request_.job_id);
    const fs::path part_file = downloader.part_path(request_.job_id);
    const bool final_in_place = fs::exists(final_file);
    if (final_in_place) {
      // Never a partial file under the final name.
      ASSERT_EQ(must(test::read_file(final_file), "final file"), data_) << where;
      ++outcome.final_complete;
    }
    state::FileStateStore next(state_dir);
    auto loaded = next.load();
    ASSERT_TRUE(loaded) << where << ": " << loaded.error().message();
    ResumeState resume = *loaded ? (*loaded)->resume : ResumeState{};
    const auto saved = resume.synced_bytes;
    if (saved > 0 && !final_in_place) {
      // What the state says was synced is in the partial file.
      ASSERT_TRUE(fs::exists(part_file))
          << where << ": the state says " << saved << " bytes were synced, and "
          << part_file.string() << " is gone";
      const auto part = must(test::read_file(part_file), "partial file");
      ASSERT_GE(part.size(), saved) << where;
      ASSERT_EQ(part.substr(0, saved), data_.substr(0, saved)) << where;
      ++outcome.resumed;
    }
    StopSignal stop;
    const auto result = downloader.run(request_, resume, stop);
    ASSERT_EQ(result.outcome, Outcome::Complete) << where << ": " << result.reason;
    EXPECT_EQ(must(test::read_file(final_file), "final file"), data_) << where;
    EXPECT_FALSE(fs::exists(part_file)) << where;
    if (!final_in_place) {
      // Resumed from the saved length: only the rest was fetched.
      EXPECT_EQ(result.bytes_transferred, kSize - saved) << where;
    }
  }

  std::optional<test::CertificateAuthority> ca_;
  std::unique_ptr<emulator::S3Server> server_;
  std::optional<test::TempDir> tmp_;
  std::string data_;
  Settings settings_;
  Request request_;
};

TEST_P(DownloaderPowerLoss, EveryCutResumesFromTheSavedLengthAndNeverTakesAPartialFile) {
  int operations = 0;
  Tally outcome;
  run(std::nullopt, &operations, outcome);
  if (HasFatalFailure()) {
    return;
  }
  ASSERT_GT(operations, 30);
  for (int cut = 0; cut <= operations; ++cut) {
    run(cut, nullptr, outcome);
    if (HasFatalFailure()) {
      return;
    }
  }
  // Not vacuous: cuts in the middle resumed from synced bytes, late ones found the file done.
  EXPECT_GT(outcome.resumed, 3);
  EXPECT_GT(outcome.final_complete, 0);
  EXPECT_LT(outcome.final_complete, outcome.cuts);
}

INSTANTIATE_TEST_SUITE_P(Unsynced, DownloaderPowerLoss,
                         ::testing::Values(Unsynced::Dropped, Unsynced::Zeros),
                         [](const auto& info) {
                           return info.param == Unsynced::Dropped ? "DataDropped" : "SizeKept";
                         });

}  // namespace
}  // namespace upparat::download
