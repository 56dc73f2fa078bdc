// The machine's flow for a streamed install (MachineSettings::install_stream): the install step
// reads the host's download (RunStep::stream), against the fake cloud and clock of
// machine_fixture.hpp.

#include <gtest/gtest.h>

#include <algorithm>

#include "machine_fixture.hpp"

namespace upparat::state::testing {
namespace {

using namespace std::chrono_literals;
using plugin::Step;
using Strings = std::vector<std::string>;

MachineSettings streaming() {
  MachineSettings s;
  s.install_stream = true;
  return s;
}

void start(World& w) {
  CloudJob j;
  j.id = "upparat_1";
  j.document = doc("2.0");
  w.cloud.add(std::move(j));
  w.connect();
}

Hooks soft_restart() {
  Hooks h;
  h.restart = Hooks::Restart::Returns;
  return h;
}

std::vector<const RunStep*> installs(const World& w) {
  std::vector<const RunStep*> out;
  for (const auto& r : w.steps_run) {
    if (r.step == Step::Install) {
      out.push_back(&r);
    }
  }
  return out;
}

std::vector<StreamUrl> stream_urls(const World& w) {
  std::vector<StreamUrl> out;
  for (const auto& a : w.actions) {
    if (auto* u = std::get_if<StreamUrl>(&a)) {
      out.push_back(*u);
    }
  }
  return out;
}

download::DownloadResult refused(std::uint64_t bytes) {
  download::DownloadResult r;
  r.outcome = download::Outcome::UrlExpired;
  r.reason = "HTTP 403";
  r.bytes_transferred = bytes;
  return r;
}

TEST(StreamedInstall, AnnouncesTheDownloadThenTheInstallAndRunsTheInstallWithTheStream) {
  World w(streaming());
  w.use(soft_restart());
  start(w);
  EXPECT_TRUE(w.downloads_run.empty());
  const auto runs = installs(w);
  ASSERT_EQ(runs.size(), 1u);
  ASSERT_TRUE(runs[0]->stream.has_value());
  EXPECT_EQ(runs[0]->stream->job_id, "upparat_1");
  EXPECT_EQ(runs[0]->stream->url.rfind("https://bucket.s3.amazonaws.com/fw.raucb", 0), 0u);
  EXPECT_FALSE(runs[0]->job.file_path.has_value());
  EXPECT_EQ(w.cloud.states("upparat_1"), (Strings{"download_start", "installation_start",
                                                  "reboot_start", "complete_soft_restart"}));
  EXPECT_EQ(w.cloud.describes, 1);
  // The other steps have no stream.
  for (const auto& r : w.steps_run) {
    EXPECT_EQ(r.stream.has_value(), r.step == Step::Install) << to_string(r.step);
  }
}

TEST(StreamedInstall, NoByteIsStreamedBeforeInstallationStartWasAccepted) {
  World w(streaming());
  w.use(soft_restart());
  // From the download gate on, the cloud's answers are held.
  w.before_step(Step::Download, [&](const RunStep&) { w.cloud.answer = false; });
  start(w);
  EXPECT_TRUE(installs(w).empty());
  EXPECT_EQ(w.phase(), Phase::Install);
  w.release_held();
  EXPECT_EQ(installs(w).size(), 1u);
  EXPECT_EQ(final_state(w), "SUCCEEDED complete_soft_restart");
}

TEST(StreamedInstall, AnExpiredUrlIsDescribedAgainWhileTheInstallWaits) {
  World w(streaming());
  w.use(soft_restart());
  w.hang_at(Step::Install);
  start(w);
  ASSERT_TRUE(w.running_step && w.running_step->step == Step::Install);
  const auto work = w.running_step->work;
  w.handle(StreamUrlExpired{work, refused(100000)});
  EXPECT_EQ(w.phase(), Phase::Install);
  EXPECT_EQ(w.cloud.describes, 2);
  ASSERT_EQ(stream_urls(w).size(), 1u);
  EXPECT_EQ(stream_urls(w)[0].work, work);
  EXPECT_EQ(stream_urls(w)[0].url.rfind("https://bucket.s3.amazonaws.com/fw.raucb", 0), 0u);
  // The install went on: still the same work, not stopped, not started again.
  ASSERT_TRUE(w.running_step);
  EXPECT_EQ(w.running_step->work, work);
  EXPECT_TRUE(w.stopped.empty());
  EXPECT_EQ(installs(w).size(), 1u);
  // A second expiry later in the stream: described again at once (bytes arrived meanwhile).
  w.handle(StreamUrlExpired{work, refused(50000)});
  EXPECT_EQ(stream_urls(w).size(), 2u);
  w.finish_step(ok());
  EXPECT_EQ(final_state(w), "SUCCEEDED complete_soft_restart");
  EXPECT_EQ(w.cloud.states("upparat_1"),
            (Strings{"download_start", "installation_start", "download_interrupt",
                     "download_interrupt", "reboot_start", "complete_soft_restart"}));
}

TEST(StreamedInstall, AUrlRefusedFiveTimesStopsTheInstallAndFailsTheJobOnceItReturned) {
  World w(streaming());
  w.use(soft_restart());
  w.hang_at(Step::Install);
  start(w);
  ASSERT_TRUE(w.running_step);
  const auto work = w.running_step->work;
  for (int i = 0; i < 5; ++i) {
    w.handle(StreamUrlExpired{work, refused(0)});
    w.advance(10min);
  }
  EXPECT_EQ(w.stopped, std::vector<std::uint64_t>{work});
  EXPECT_EQ(final_state(w), "FAILED installation_hook_failed");
  EXPECT_EQ(final_message(w),
            "the download URL was refused (HTTP 403) 5 times in a row with a fresh URL each time");
}

TEST(StreamedInstall, AfterADaemonRestartTheStreamedInstallStartsAgainFromTheStart) {
  World w(streaming());
  w.use(soft_restart());
  bool hang = true;
  w.hang_at(Step::Install, &hang);
  start(w);
  ASSERT_TRUE(w.running_step && w.running_step->step == Step::Install);
  hang = false;
  w.boot();
  w.connect();
  EXPECT_TRUE(w.downloads_run.empty());
  const auto runs = installs(w);
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_TRUE(runs[1]->stream.has_value());
  EXPECT_EQ(final_state(w), "SUCCEEDED complete_soft_restart");
  EXPECT_EQ(w.cloud.states("upparat_1"),
            (Strings{"download_start", "installation_start", "download_start", "installation_start",
                     "reboot_start", "complete_soft_restart"}));
}

TEST(StreamedInstall, AFailedStreamFailsTheInstallWithItsReason) {
  World w(streaming());
  w.use(soft_restart());
  w.answer_at(Step::Install, failed("sha256: expected a, got b"));
  start(w);
  EXPECT_EQ(final_state(w), "FAILED installation_hook_failed");
  EXPECT_EQ(final_message(w), "sha256: expected a, got b");
}

TEST(StreamedInstall, WithoutAnInstallPluginNothingIsStreamed) {
  MachineSettings s = streaming();
  s.step_configured[index(Step::Install)] = false;
  World w(s);
  Hooks h = soft_restart();
  h.install = false;
  w.use(h);
  start(w);
  EXPECT_TRUE(installs(w).empty());
  EXPECT_EQ(final_state(w), "SUCCEEDED no_installation_hook_provided");
}

}  // namespace
}  // namespace upparat::state::testing
