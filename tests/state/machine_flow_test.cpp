#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>

#include "machine_fixture.hpp"

namespace upparat::state::testing {
namespace {

using namespace std::chrono_literals;
using plugin::Step;
using Strings = std::vector<std::string>;

CloudJob queued(const std::string& id, const std::string& version = "2.0", bool force = false,
                std::int64_t queued_at = 1000) {
  CloudJob j;
  j.id = id;
  j.document = doc(version, force);
  j.queued_at = queued_at;
  return j;
}

// Queues the job in the cloud and connects: it runs as far as the world's scripts let it.
void start(World& w, CloudJob job = queued("upparat_1")) {
  w.cloud.add(std::move(job));
  w.connect();
}

// ---- the contract's status table, row by row --------------------------------------------

struct Row {
  const char* name;
  Hooks hooks;
  bool force;
  Strings states;       // every update, in order
  std::string outcome;  // final "STATUS state"
  bool reboot = false;  // the restart step reboots: a new daemon continues
};

Hooks hooks_with(std::function<void(Hooks&)> f) {
  Hooks h;
  f(h);
  return h;
}

void PrintTo(const Row& row, std::ostream* os) {
  *os << row.name;
}

class StatusTable : public ::testing::TestWithParam<Row> {};

TEST_P(StatusTable, EndsAsTheContractSays) {
  const Row& row = GetParam();
  World w;
  w.use(row.hooks);
  start(w, queued("upparat_1", "2.0", row.force));
  if (row.reboot) {
    ASSERT_EQ(w.phase(), Phase::Restart);
    ASSERT_TRUE(w.running_step && w.running_step->step == Step::Restart);
    w.reboot();
  }
  EXPECT_EQ(final_state(w, "upparat_1"), row.outcome);
  EXPECT_EQ(w.cloud.states("upparat_1"), row.states);
  EXPECT_EQ(w.phase(), Phase::Monitor);
  EXPECT_FALSE(w.store.state_.has_value()) << "state kept after the job ended";
}

const Strings kToInstall = {"download_start", "installation_start"};

Strings with(Strings a, Strings b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

INSTANTIATE_TEST_SUITE_P(
    Contract, StatusTable,
    ::testing::Values(
        Row{"version_already_installed",
            hooks_with([](Hooks& h) { h.version_before = "2.0"; }),
            false,
            {"version_already_installed"},
            "SUCCEEDED version_already_installed"},
        Row{"no_installation_hook_provided", hooks_with([](Hooks& h) { h.install = false; }), false,
            with(kToInstall, {"no_installation_hook_provided"}),
            "SUCCEEDED no_installation_hook_provided"},
        Row{"no_restart_hook_provided",
            hooks_with([](Hooks& h) { h.restart = Hooks::Restart::None; }), false,
            with(kToInstall, {"reboot_start", "no_restart_hook_provided"}),
            "SUCCEEDED no_restart_hook_provided"},
        Row{"complete_soft_restart",
            hooks_with([](Hooks& h) { h.restart = Hooks::Restart::Returns; }), false,
            with(kToInstall, {"reboot_start", "complete_soft_restart"}),
            "SUCCEEDED complete_soft_restart"},
        Row{"complete_ready", Hooks{}, false, with(kToInstall, {"reboot_start", "complete_ready"}),
            "SUCCEEDED complete_ready", true},
        Row{"complete_no_ready_check", hooks_with([](Hooks& h) { h.ready = false; }), false,
            with(kToInstall, {"reboot_start", "complete_no_ready_check"}),
            "SUCCEEDED complete_no_ready_check", true},
        Row{"complete_no_version_check", hooks_with([](Hooks& h) { h.version_before = ""; }), false,
            with(kToInstall, {"reboot_start", "complete_no_version_check"}),
            "SUCCEEDED complete_no_version_check", true},
        Row{"version_mismatch", hooks_with([](Hooks& h) { h.version_after = "1.0"; }), false,
            with(kToInstall, {"reboot_start", "version_mismatch"}), "FAILED version_mismatch",
            true},
        Row{"force_skips_version_check", hooks_with([](Hooks& h) {
              h.version_before = "2.0";
              h.restart = Hooks::Restart::Returns;
            }),
            true, with(kToInstall, {"reboot_start", "complete_soft_restart"}),
            "SUCCEEDED complete_soft_restart"},
        Row{"restart_hook_failed", hooks_with([](Hooks& h) { h.restart = Hooks::Restart::Fails; }),
            false, with(kToInstall, {"reboot_start", "restart_hook_failed"}),
            "FAILED restart_hook_failed"}),
    [](const auto& info) { return std::string(info.param.name); });

// Steps without a configured plugin are not run at all, like the classic missing hooks: no
// installation_start / reboot_start for them.
TEST(Machine, MissingHooksAreNotRun) {
  {
    MachineSettings s;
    s.step_configured[static_cast<int>(Step::Install)] = false;
    World w(s);
    w.use(Hooks{});
    start(w);
    EXPECT_EQ(w.cloud.states("upparat_1"),
              (Strings{"download_start", "no_installation_hook_provided"}));
  }
  {
    MachineSettings s;
    s.step_configured[static_cast<int>(Step::Restart)] = false;
    World w(s);
    w.use(Hooks{});
    start(w);
    EXPECT_EQ(w.cloud.states("upparat_1"),
              (Strings{"download_start", "installation_start", "no_restart_hook_provided"}));
  }
  {
    MachineSettings s;
    s.step_configured[static_cast<int>(Step::Version)] = false;
    s.step_configured[static_cast<int>(Step::Ready)] = false;
    s.step_configured[static_cast<int>(Step::Download)] = false;
    World w(s);
    w.use(Hooks{});
    start(w);
    w.reboot();
    EXPECT_EQ(final_state(w, "upparat_1"), "SUCCEEDED complete_no_version_check");
    for (const auto& r : w.steps_run) {
      EXPECT_TRUE(r.step == Step::Install || r.step == Step::Restart);
    }
  }
  {
    MachineSettings s;
    s.step_configured[static_cast<int>(Step::Ready)] = false;
    World w(s);
    w.use(Hooks{});
    start(w);
    w.reboot();
    EXPECT_EQ(final_state(w, "upparat_1"), "SUCCEEDED complete_no_ready_check");
  }
}

// Failing steps: FAILED <step>_hook_failed with the plugin's reason.
struct FailRow {
  Step step;
  bool after_reboot;
  std::string state;
};

void PrintTo(const FailRow& row, std::ostream* os) {
  *os << row.state << (row.after_reboot ? " after reboot" : "");
}

class HookFailed : public ::testing::TestWithParam<FailRow> {};

TEST_P(HookFailed, FailsWithTheReason) {
  const FailRow& row = GetParam();
  World w;
  w.use(Hooks{});
  auto classic = w.script;
  w.script = [&](const RunStep& r) -> std::optional<plugin::StepResult> {
    const bool after = w.rebooted_;
    if (r.step == row.step && after == row.after_reboot) {
      return failed("it broke\nbadly");
    }
    return classic(r);
  };
  start(w);
  if (row.after_reboot) {
    w.reboot();
  }
  EXPECT_EQ(final_state(w, "upparat_1"), "FAILED " + row.state);
  EXPECT_EQ(final_message(w, "upparat_1"), "it broke badly");  // sanitised
  EXPECT_EQ(w.phase(), Phase::Monitor);
}

INSTANTIATE_TEST_SUITE_P(Contract, HookFailed,
                         ::testing::Values(FailRow{Step::Version, false, "version_hook_failed"},
                                           FailRow{Step::Download, false, "download_hook_failed"},
                                           FailRow{Step::Install, false,
                                                   "installation_hook_failed"},
                                           FailRow{Step::Version, true, "version_hook_failed"},
                                           FailRow{Step::Ready, true, "ready_hook_failed"}));

TEST(Machine, FullFlowSendsStepTimeoutsAndJobContext) {
  MachineSettings s;
  s.step_deadline = {600s, 3600s, 1200s, 300s, 300s};
  s.step_timeout_margin = 5min;
  World w(s);
  w.use(Hooks{});
  CloudJob j = queued("upparat_7");
  j.document = "{\"version\":\"2.0\",\"file\":\"https://h/f\",\"meta\":\"hello\",\"sha256\":\"" +
               std::string(64, 'A') + "\",\"size\":42}";
  w.cloud.add(j);
  w.connect();
  ASSERT_EQ(w.phase(), Phase::Restart);
  std::map<std::string, std::optional<int>> timeouts;
  for (const auto& u : w.cloud.updates) {
    timeouts[u.state] = u.step_timeout;
  }
  EXPECT_EQ(timeouts["download_start"], 65);      // 3600 s + 5 min
  EXPECT_EQ(timeouts["installation_start"], 25);  // 1200 s + 5 min
  EXPECT_EQ(timeouts["reboot_start"], 25);        // 300 + 600 + 300 s + 5 min
  ASSERT_EQ(w.downloads_run.size(), 1u);
  EXPECT_EQ(w.downloads_run[0].request.url, "https://h/f");
  EXPECT_EQ(w.downloads_run[0].request.sha256, std::string(64, 'a'));
  EXPECT_EQ(w.downloads_run[0].request.size, 42u);
  const auto install = std::find_if(w.steps_run.begin(), w.steps_run.end(),
                                    [](auto& r) { return r.step == Step::Install; });
  ASSERT_NE(install, w.steps_run.end());
  EXPECT_EQ(install->job.file_path, std::filesystem::path("/dl/upparat_7"));
  EXPECT_EQ(install->job.meta, "hello");
  EXPECT_EQ(install->job.version, "2.0");
  EXPECT_EQ(install->job.execution_number, 1);
  EXPECT_TRUE(install->store);
  // reboot_start is saved before it is sent, and acknowledged before restart runs
  ASSERT_TRUE(w.store.state_);
  EXPECT_EQ(w.store.state_->step, SavedStep::Restart);
  EXPECT_EQ(final_state(w, "upparat_7"), "IN_PROGRESS reboot_start");
}

// ---- which jobs -----------------------------------------------------------------------

TEST(Machine, InProgressFirstElseOldestQueued) {
  World w;
  w.use(hooks_with([](Hooks& h) { h.restart = Hooks::Restart::Returns; }));
  w.cloud.add(queued("upparat_new", "2.0", false, 3000));
  w.cloud.add(queued("upparat_old", "2.0", false, 1000));
  CloudJob ip = queued("upparat_running", "2.0", false, 5000);
  ip.status = "IN_PROGRESS";
  ip.details = {{"state", "download_progress"}};
  w.cloud.add(ip);
  w.connect();
  // All three are done one after the other, in the contract's order.
  Strings order;
  for (const auto& u : w.cloud.updates) {
    if (order.empty() || order.back() != u.job_id) {
      order.push_back(u.job_id);
    }
  }
  EXPECT_EQ(order, (Strings{"upparat_running", "upparat_old", "upparat_new"}));
  for (auto id : {"upparat_running", "upparat_old", "upparat_new"}) {
    EXPECT_EQ(final_state(w, id), "SUCCEEDED complete_soft_restart") << id;
  }
}

TEST(Machine, NonPrefixedJobsAreIgnored) {
  World w;
  w.use(Hooks{});
  start(w, queued("other_agent_job"));
  EXPECT_EQ(w.phase(), Phase::Monitor);
  EXPECT_TRUE(w.cloud.updates.empty());
  EXPECT_EQ(w.cloud.describes, 0);
  w.notify();  // lists only the foreign job
  EXPECT_EQ(w.phase(), Phase::Monitor);
  EXPECT_EQ(w.cloud.gets, 1);
}

TEST(Machine, ConfigurablePrefix) {
  MachineSettings s;
  s.job_prefix = "ota-";
  World w(s);
  w.use(hooks_with([](Hooks& h) { h.version_before = "2.0"; }));
  w.cloud.add(queued("upparat_1"));
  start(w, queued("ota-1"));
  EXPECT_EQ(final_state(w, "ota-1"), "SUCCEEDED version_already_installed");
  EXPECT_EQ(final_state(w, "upparat_1"), "QUEUED ");
}

TEST(Machine, MultipleInProgressFailsAll) {
  World w;
  w.use(Hooks{});
  for (auto id : {"upparat_a", "upparat_b"}) {
    CloudJob j = queued(id);
    j.status = "IN_PROGRESS";
    w.cloud.add(j);
  }
  w.cloud.add(queued("upparat_c", "1.0"));  // installed already
  w.use(hooks_with([](Hooks& h) { h.version_before = "1.0"; }));
  w.connect();
  EXPECT_EQ(final_state(w, "upparat_a"), "FAILED error_multiple_in_progress");
  EXPECT_EQ(final_state(w, "upparat_b"), "FAILED error_multiple_in_progress");
  EXPECT_EQ(final_state(w, "upparat_c"), "SUCCEEDED version_already_installed");
  EXPECT_TRUE(w.steps_run.size() == 1 && w.steps_run[0].step == Step::Version);
}

TEST(Machine, NotifyInMonitorFetchesJobs) {
  World w;
  w.use(hooks_with([](Hooks& h) { h.version_before = "2.0"; }));
  w.connect();
  EXPECT_EQ(w.phase(), Phase::Monitor);
  w.cloud.add(queued("upparat_1"));
  w.notify();
  EXPECT_EQ(final_state(w, "upparat_1"), "SUCCEEDED version_already_installed");
  EXPECT_EQ(w.phase(), Phase::Monitor);
}

// A notify that lists fewer than 10 executions is complete: the job is picked from it, as
// from a get's answer, and described at once.
TEST(Machine, CompleteNotifyPicksTheJobWithoutAGet) {
  World w;
  w.use(hooks_with([](Hooks& h) { h.version_before = "2.0"; }));
  w.connect();
  ASSERT_EQ(w.phase(), Phase::Monitor);
  ASSERT_EQ(w.cloud.gets, 1);
  w.cloud.add(queued("other_1"));
  w.cloud.add(queued("upparat_1"));
  w.notify();
  EXPECT_EQ(final_state(w, "upparat_1"), "SUCCEEDED version_already_installed");
  // The only get after the connect's is the one after the job ended.
  EXPECT_EQ(w.cloud.gets, 2);
  EXPECT_EQ(w.phase(), Phase::Monitor);
}

// AWS IoT carries at most 128 KiB: a larger notify is forged and names nothing to work on.
TEST(Machine, NotifyOverAwsLimitIsIgnored) {
  World w;
  w.use(Hooks{});
  w.connect();
  ASSERT_EQ(w.phase(), Phase::Monitor);
  const std::string big = R"({"timestamp":1,"jobs":{"QUEUED":[{"jobId":"upparat_big","queuedAt":1,)"
                          R"("lastUpdatedAt":1,"executionNumber":1,"versionNumber":1}]},"pad":")" +
                          std::string(128 * 1024, 'p') + R"("})";
  w.handle(MqttMessage{jobs::topic_prefix(kThing) + "/notify", big});
  EXPECT_EQ(w.phase(), Phase::Monitor);
  EXPECT_EQ(w.cloud.gets, 1);
  EXPECT_EQ(w.cloud.describes, 0);
}

// A notify lists at most 15 executions (10 in older documentation): when other agents' jobs
// fill it, a new job of ours is left out and must still be fetched.
TEST(Machine, NotifyFullOfOtherAgentsJobsFetchesJobs) {
  for (int listed : {10, 15}) {
    World w;
    w.use(hooks_with([](Hooks& h) { h.version_before = "2.0"; }));
    w.connect();
    ASSERT_EQ(w.phase(), Phase::Monitor);
    w.cloud.notify_limit = static_cast<std::size_t>(listed);
    for (int i = 0; i < listed; ++i) {
      w.cloud.add(queued("other_" + std::to_string(i)));
    }
    w.cloud.add(queued("upparat_new", "2.0", false, 2000));  // queued last: not listed
    ASSERT_EQ(w.cloud.notify().find("upparat_new"), std::string::npos);
    w.notify();
    EXPECT_EQ(final_state(w, "upparat_new"), "SUCCEEDED version_already_installed") << listed;
  }
}

TEST(Machine, ShortNotifyOfOtherAgentsJobsIsIgnored) {
  World w;
  w.use(Hooks{});
  w.connect();
  w.cloud.add(queued("other_1"));
  w.notify();
  EXPECT_EQ(w.cloud.gets, 1);
  EXPECT_EQ(w.phase(), Phase::Monitor);
}

// ---- job documents ---------------------------------------------------------------------

class MalformedDocument : public ::testing::TestWithParam<std::pair<std::string, std::string>> {};

TEST_P(MalformedDocument, IsRejectedWithAReason) {
  World w;
  w.use(Hooks{});
  CloudJob j = queued("upparat_bad");
  j.document = GetParam().first;
  w.cloud.add(j);
  w.cloud.add(queued("upparat_good", "1.0", false, 5000));
  w.use(hooks_with([](Hooks& h) { h.version_before = "1.0"; }));
  w.connect();
  EXPECT_EQ(final_state(w, "upparat_bad"), "REJECTED invalid_job_document");
  EXPECT_NE(final_message(w, "upparat_bad").find(GetParam().second), std::string::npos)
      << final_message(w, "upparat_bad");
  EXPECT_EQ(final_state(w, "upparat_good"), "SUCCEEDED version_already_installed")
      << "the daemon goes on";
}

INSTANTIATE_TEST_SUITE_P(
    Documents, MalformedDocument,
    ::testing::Values(std::make_pair("{\"version\":\"2\"}", "'file'"),
                      std::make_pair("{\"file\":\"https://h/f\"}", "'version'"),
                      std::make_pair("{\"version\":2,\"file\":\"https://h/f\"}", "'version'"),
                      std::make_pair("{\"version\":\"2\",\"file\":\"ftp://h/f\"}", "https"),
                      std::make_pair("{\"version\":\"2\",\"file\":\"http://h/f\"}", "http"),
                      std::make_pair("{\"version\":\"2\",\"file\":\"${aws:iot:s3-presigned-url:"
                                     "https://s3.amazonaws.com/b/k}\"}",
                                     "placeholder"),
                      std::make_pair("{\"version\":\"2\",\"file\":\"https://h/f\",\"force\":1}",
                                     "'force'")));
// A document that is not a JSON object cannot reach a device (CreateJob refuses it); the
// parser's own tests (tests/jobs/jobs_protocol_test.cpp) cover it.

TEST(Machine, HttpAllowedWhenConfigured) {
  MachineSettings s;
  s.allow_http = true;
  World w(s);
  w.use(hooks_with([](Hooks& h) { h.restart = Hooks::Restart::Returns; }));
  CloudJob j = queued("upparat_1");
  j.document = doc("2.0", false, "http://127.0.0.1/f");
  w.cloud.add(j);
  w.connect();
  EXPECT_EQ(final_state(w, "upparat_1"), "SUCCEEDED complete_soft_restart");
}

// ---- restarts of the daemon -------------------------------------------------------------

// Kill the daemon while `step` runs; a new one must finish the job as if nothing happened.
class RestartAtStep : public ::testing::TestWithParam<int> {};

TEST_P(RestartAtStep, NewDaemonFinishesTheJob) {
  const int stop_at = GetParam();  // index of the work to die in (0 = version, 1 = gate, ...)
  World w;
  w.use(Hooks{});
  bool hanging = true;  // until the daemon died in the work
  w.hang_at_work(stop_at, &hanging);
  start(w);
  ASSERT_TRUE(w.running_step || w.running_download);
  const bool in_restart = w.running_step && w.running_step->step == Step::Restart;
  hanging = false;
  if (in_restart) {
    w.reboot();
  } else {
    w.boot();
    w.connect();
  }
  if (!in_restart && w.phase() == Phase::Restart) {
    w.reboot();  // the continued job reached the (rebooting) restart step
  }
  EXPECT_EQ(final_state(w, "upparat_1"), "SUCCEEDED complete_ready");
  const auto states = w.cloud.states("upparat_1");
  EXPECT_EQ(std::count(states.begin(), states.end(), "reboot_start"), 1);
  EXPECT_EQ(w.phase(), Phase::Monitor);
}

// version, download gate, download, install, restart (ready after reboot is covered below)
INSTANTIATE_TEST_SUITE_P(Steps, RestartAtStep, ::testing::Values(0, 1, 2, 3, 4));

TEST(Machine, RestartBeforeRebootStartWasAcceptedSendsItAgain) {
  World w;
  w.use(Hooks{});
  auto classic = w.script;
  // reboot_start will get no answer
  w.before_step(Step::Install, [&](const RunStep&) { w.cloud.lose_updates = true; });
  start(w);
  ASSERT_EQ(w.phase(), Phase::RebootAck);
  EXPECT_EQ(w.store.state_->step, SavedStep::Reboot);
  EXPECT_FALSE(w.running_step) << "no restart before reboot_start is accepted";
  w.cloud.lose_updates = false;
  w.script = classic;
  w.boot();
  w.connect();
  ASSERT_EQ(w.phase(), Phase::Restart);
  EXPECT_EQ(w.runs_of(Step::Install), 1) << "the install is not redone";
  w.reboot();
  EXPECT_EQ(final_state(w, "upparat_1"), "SUCCEEDED complete_ready");
}

TEST(Machine, RestartDuringReadyContinues) {
  World w;
  w.use(Hooks{});
  start(w);
  auto classic = w.script;
  w.hang_at(Step::Ready);
  w.reboot();
  ASSERT_TRUE(w.running_step && w.running_step->step == Step::Ready);
  w.script = classic;
  w.reboot();
  EXPECT_EQ(final_state(w, "upparat_1"), "SUCCEEDED complete_ready");
}

TEST(Machine, LocalStateWinsOverCloudDetails) {
  // The cloud says reboot_start (e.g. a late duplicate), the local state says download:
  // the download is redone rather than the installation verified.
  World w;
  w.use(Hooks{});
  w.cloud.add(queued("upparat_1"));
  JobState s;
  s.job_id = "upparat_1";
  s.execution_number = 1;
  s.step = SavedStep::Download;
  s.resume = {1234, "etag"};
  w.store.state_ = s;
  w.cloud.device_update("upparat_1", "IN_PROGRESS", {{"state", "reboot_start"}});
  w.hold_downloads();
  w.boot();
  w.connect();
  ASSERT_TRUE(w.running_download);
  EXPECT_EQ(w.running_download->resume, (download::ResumeState{1234, "etag"}));
}

TEST(Machine, EmptyStateDirectoryStillContinuesAfterRebootStart) {
  World w;
  w.use(Hooks{});
  w.rebooted_ = true;
  CloudJob j = queued("upparat_1");
  j.status = "IN_PROGRESS";
  j.details = {{"state", "reboot_start"}};
  w.cloud.add(j);
  w.connect();
  EXPECT_EQ(final_state(w, "upparat_1"), "SUCCEEDED complete_ready");
  EXPECT_EQ(w.cloud.states("upparat_1"), Strings{"complete_ready"});
}

TEST(Machine, StaleLocalStateOfAnotherExecutionIsIgnored) {
  World w;
  w.use(hooks_with([](Hooks& h) { h.version_before = "2.0"; }));
  JobState s;
  s.job_id = "upparat_1";
  s.execution_number = 7;
  s.step = SavedStep::Restart;
  w.store.state_ = s;
  w.cloud.add(queued("upparat_1"));
  w.boot();
  w.connect();
  EXPECT_EQ(final_state(w, "upparat_1"), "SUCCEEDED version_already_installed");
}

TEST(Machine, DaemonDyingThreeTimesInAStepFailsTheJob) {
  World w;
  w.use(Hooks{});
  // the daemon dies during install, every time
  w.hang_at(Step::Install);
  start(w);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(w.running_step && w.running_step->step == Step::Install) << i;
    w.boot();
    w.connect();
  }
  ASSERT_TRUE(w.running_step && w.running_step->step == Step::Install);
  w.boot();
  w.connect();
  EXPECT_EQ(final_state(w, "upparat_1"), "FAILED installation_hook_failed");
  EXPECT_EQ(final_message(w, "upparat_1"), "daemon died 3 times during install");
  EXPECT_EQ(w.runs_of(Step::Install), 3);
}

TEST(Machine, GracefulShutdownDoesNotCountAsADeath) {
  World w;
  w.use(Hooks{});
  bool hang = true;
  w.hang_at(Step::Install, &hang);
  start(w);
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(w.running_step && w.running_step->step == Step::Install);
    const auto updates = w.cloud.updates.size();
    w.handle(ShutdownRequested{});
    EXPECT_TRUE(w.exited);
    EXPECT_EQ(w.cloud.updates.size(), updates) << "nothing reported for the interrupted step";
    w.exited = false;
    w.boot();
    w.connect();
  }
  hang = false;
  w.boot();
  w.connect();
  EXPECT_EQ(w.phase(), Phase::Restart);
}

// Power cuts during a long download: each boot resumes it, and as long as bytes reach the
// disk between the cuts, the download is not "dying" and goes on.
// Between the notify and the download's first request nothing is fsynced: those states only
// repeat what the cloud knows. The install's and the restart's attempt counts are fsynced
// before their plugin runs, and a synced length of the download is fsynced as it comes.
TEST(Machine, NoFsyncBeforeTheDownloadRequestButBeforeInstallAndRestart) {
  using Saves = std::vector<std::pair<SavedStep, Durability>>;
  World w;
  w.use(Hooks{});
  Saves before_download, before_install, before_restart;
  bool resume_synced = false;
  w.download_script = [&](const RunDownload& d) -> std::optional<download::DownloadResult> {
    before_download = w.store.durabilities_;
    w.handle(DownloadResumeState{d.work, {4096, "\"e\""}});
    resume_synced =
        w.store.durabilities_.back() == std::make_pair(SavedStep::Download, Durability::Synced);
    return complete_download(d);
  };
  w.before_step(Step::Install, [&](const RunStep&) { before_install = w.store.durabilities_; });
  w.before_step(Step::Restart, [&](const RunStep&) { before_restart = w.store.durabilities_; });
  start(w);
  ASSERT_EQ(w.phase(), Phase::Restart);
  ASSERT_FALSE(before_download.empty());
  for (const auto& [step, durability] : before_download) {
    EXPECT_EQ(durability, Durability::Deferred) << to_string(step);
  }
  EXPECT_TRUE(resume_synced);
  ASSERT_FALSE(before_install.empty());
  EXPECT_EQ(before_install.back(), std::make_pair(SavedStep::Install, Durability::Synced));
  ASSERT_FALSE(before_restart.empty());
  EXPECT_EQ(before_restart.back(), std::make_pair(SavedStep::Restart, Durability::Synced));
  for (const auto& [step, durability] : w.store.durabilities_) {
    if (step != SavedStep::VerifyJob && step != SavedStep::DownloadGate &&
        step != SavedStep::Download) {
      EXPECT_EQ(durability, Durability::Synced) << to_string(step);
    }
  }
}

// An install resumed after a reboot downloads again first, its saved step still `install`:
// those saves are fsynced too, so a torn one cannot lose the install's attempt count.
TEST(Machine, DownloadBeforeAResumedInstallIsSynced) {
  World w;
  w.use(Hooks{});
  JobState s;
  s.job_id = "upparat_1";
  s.execution_number = 1;
  s.step = SavedStep::Install;
  s.unfinished_starts = 1;
  w.store.state_ = s;
  CloudJob j = queued("upparat_1");
  j.status = "IN_PROGRESS";
  w.cloud.add(j);
  w.hold_downloads();
  w.boot();
  w.connect();
  ASSERT_TRUE(w.running_download);
  ASSERT_FALSE(w.store.durabilities_.empty());
  for (const auto& [step, durability] : w.store.durabilities_) {
    EXPECT_EQ(durability, Durability::Synced) << to_string(step);
  }
}

TEST(Machine, PowerCutsDuringADownloadThatAdvancesDoNotFailIt) {
  for (bool force : {true, false}) {
    World w;
    w.use(Hooks{});
    w.download_script = [](const RunDownload&) {
      return std::optional<download::DownloadResult>();
    };
    start(w, queued("upparat_1", "2.0", force));
    for (std::uint64_t cut = 1; cut <= 5; ++cut) {
      ASSERT_TRUE(w.running_download)
          << "force " << force << " cut " << cut << ": " << final_state(w, "upparat_1") << " "
          << final_message(w, "upparat_1");
      w.handle(DownloadResumeState{w.running_download->work, {cut * 4096, "\"e\""}});
      w.boot();
      w.connect();
    }
    w.download_script = complete_download;
    w.finish_download(download::Outcome::Complete);
    EXPECT_NE(w.phase(), Phase::Finishing) << force;
    EXPECT_EQ(w.cloud.execution("upparat_1")->status, emulator::ExecStatus::InProgress) << force;
  }
}

// A download that dies without a byte written, boot after boot, fails the job; the download
// gate run before each resumed download does not reset that count.
TEST(Machine, DownloadDyingThreeTimesWithoutProgressFailsTheJob) {
  World w;
  w.use(Hooks{});
  w.hold_downloads();
  start(w);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(w.running_download) << i;
    w.boot();
    w.connect();
  }
  EXPECT_EQ(final_state(w, "upparat_1"), "FAILED download_hook_failed");
  EXPECT_EQ(final_message(w, "upparat_1"), "daemon died 3 times during download");
  EXPECT_EQ(w.downloads_run.size(), 3u);
}

// The gate is a step of its own: a daemon dying in the download hook three times fails too.
TEST(Machine, DownloadGateDyingThreeTimesFailsTheJob) {
  World w;
  w.use(Hooks{});
  w.hang_at(Step::Download);
  start(w);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(w.running_step && w.running_step->step == Step::Download) << i;
    EXPECT_EQ(w.store.state_->step, SavedStep::DownloadGate);
    w.boot();
    w.connect();
  }
  EXPECT_EQ(final_state(w, "upparat_1"), "FAILED download_hook_failed");
  EXPECT_EQ(final_message(w, "upparat_1"), "daemon died 3 times during download");
}

// Resuming an install downloads again first. A SIGTERM then stops that download; it was not an
// install attempt, so the install's count of deaths stays as it was.
TEST(Machine, ShutdownDuringTheDownloadBeforeAResumedInstallKeepsTheInstallCount) {
  World w;
  w.use(Hooks{});
  JobState s;
  s.job_id = "upparat_1";
  s.execution_number = 1;
  s.step = SavedStep::Install;
  s.unfinished_starts = 2;
  w.store.state_ = s;
  CloudJob j = queued("upparat_1");
  j.status = "IN_PROGRESS";
  w.cloud.add(j);
  w.hold_downloads();
  w.boot();
  w.connect();
  ASSERT_TRUE(w.running_download);
  w.handle(ShutdownRequested{});
  ASSERT_TRUE(w.store.state_);
  EXPECT_EQ(w.store.state_->step, SavedStep::Install);
  EXPECT_EQ(w.store.state_->unfinished_starts, 2);
}

// The saved step must say `reboot` before the restart is announced or started: with the old
// `install` saved, the next boot would install again and restart again, on every boot.
TEST(Machine, RestartIsNotStartedWhenTheRebootStepCannotBeSaved) {
  World w;
  w.use(Hooks{});
  w.before_step(Step::Install, [&](const RunStep&) {
    w.store.fail_saves_with = "write state.json.tmp: No space left on device";
  });
  start(w);
  EXPECT_EQ(w.cloud.states("upparat_1"),
            (Strings{"download_start", "installation_start", "restart_hook_failed"}));
  EXPECT_EQ(final_state(w, "upparat_1"), "FAILED restart_hook_failed");
  EXPECT_EQ(final_message(w, "upparat_1"),
            "cannot save the job state before the restart: write state.json.tmp: No space left "
            "on device");
  EXPECT_FALSE(std::any_of(w.steps_run.begin(), w.steps_run.end(),
                           [](const RunStep& r) { return r.step == Step::Restart; }));
  EXPECT_EQ(w.phase(), Phase::Monitor);
}

TEST(Machine, ShutdownDuringRestartStopsAndReportsNothing) {
  World w;
  w.use(Hooks{});
  start(w);
  ASSERT_EQ(w.phase(), Phase::Restart);
  const auto stops = w.stopped.size();
  const auto updates = w.cloud.updates.size();
  w.handle(ShutdownRequested{});
  EXPECT_TRUE(w.exited);
  EXPECT_EQ(w.stopped.size(), stops);
  EXPECT_EQ(w.cloud.updates.size(), updates);
  EXPECT_EQ(w.store.state_->step, SavedStep::Restart);
}

// ---- cancellation ----------------------------------------------------------------------

class CancelAtStep : public ::testing::TestWithParam<int> {};

TEST_P(CancelAtStep, StopsTheWorkAndWaitsForJobs) {
  const int cancel_at = GetParam();
  World w;
  w.use(Hooks{});
  auto classic = w.script;
  w.hang_at_work(cancel_at);
  start(w);
  ASSERT_TRUE(w.running_step || w.running_download);
  const std::uint64_t running = w.running_step ? w.running_step->work : w.running_download->work;
  const auto updates = w.cloud.updates.size();
  w.cloud.remove("upparat_1");  // forced delete
  w.notify();
  EXPECT_NE(std::find(w.stopped.begin(), w.stopped.end(), running), w.stopped.end());
  EXPECT_EQ(w.phase(), Phase::Monitor);
  EXPECT_EQ(w.cloud.updates.size(), updates);
  EXPECT_FALSE(w.store.state_.has_value());
  bool removed = false;
  for (auto& a : w.actions) {
    if (auto* r = std::get_if<RemoveDownload>(&a)) {
      removed |= r->job_id == "upparat_1";
    }
  }
  EXPECT_TRUE(removed);
  // A new job is picked up normally.
  w.script = classic;
  w.download_script = complete_download;
  w.use(hooks_with([](Hooks& h) { h.version_before = "3.0"; }));
  w.cloud.add(queued("upparat_2", "3.0"));
  w.notify();
  EXPECT_EQ(final_state(w, "upparat_2"), "SUCCEEDED version_already_installed");
}

INSTANTIATE_TEST_SUITE_P(Steps, CancelAtStep, ::testing::Values(0, 1, 2, 3));

TEST(Machine, CancelWhileWaitingForInstallationStartPreventsTheInstall) {
  World w;
  w.use(Hooks{});
  w.cloud.add(queued("upparat_1"));
  w.hold_downloads();
  w.connect();
  ASSERT_TRUE(w.running_download);
  w.cloud.answer = false;  // installation_start will wait
  w.finish_download(download::Outcome::Complete);
  ASSERT_EQ(w.phase(), Phase::Install);
  // The job is cancelled (forced) before the update arrives.
  w.cloud.cancel("upparat_1");
  w.release_held();
  EXPECT_EQ(w.phase(), Phase::Monitor);
  EXPECT_EQ(w.runs_of(Step::Install), 0);
}

TEST(Machine, NotifyWithoutTheJobButStillInProgressContinues) {
  World w;
  w.use(Hooks{});
  w.hold_downloads();
  start(w);
  ASSERT_TRUE(w.running_download);
  // notify lists at most 15 jobs: one that does not list ours is not proof of a cancel.
  w.handle(MqttMessage{jobs::topic_prefix(kThing) + "/notify",
                       "{\"timestamp\":1,\"jobs\":{\"QUEUED\":[]}}"});
  EXPECT_TRUE(w.running_download);
  EXPECT_EQ(w.phase(), Phase::Download);
  EXPECT_EQ(w.cloud.describes, 2);  // select + the check
}

TEST(Machine, UpdateRejectedAsTerminalCancels) {
  World w;
  w.use(Hooks{});
  w.hold_downloads();
  start(w);
  ASSERT_TRUE(w.running_download);
  w.cloud.cancel("upparat_1");
  w.handle(DownloadProgress{w.running_download->work, {50, 100}});  // -> download_progress
  EXPECT_FALSE(w.running_download);
  EXPECT_EQ(w.phase(), Phase::Monitor);
}

// ---- execution numbers: a retry's new execution is not ours -------------------------------

// How the cloud answers a describe that names our execution after a retry queued the next one.
enum class PastExecution { Answered, NotFound, NumberIgnored };

void PrintTo(PastExecution p, std::ostream* os) {
  *os << (p == PastExecution::Answered   ? "Answered"
          : p == PastExecution::NotFound ? "NotFound"
                                         : "NumberIgnored");
}

class RetriedExecution : public ::testing::TestWithParam<PastExecution> {};

// The in-progress timer of execution 1 expires and a retry queues execution 2: notify lists the
// job QUEUED again, with executionNumber 2. That is not our execution going on: the work on
// execution 1 stops and execution 2 is done from the start.
TEST_P(RetriedExecution, NotifyOfTheNextExecutionStopsTheWorkOnOurs) {
  World w;
  w.cloud.forget_past = GetParam() == PastExecution::NotFound;
  w.cloud.describe_ignores_number = GetParam() == PastExecution::NumberIgnored;
  w.use(Hooks{});
  w.hold_downloads();
  start(w);
  ASSERT_TRUE(w.running_download);
  const auto first = w.running_download->work;
  const auto describes = w.cloud.describes;
  w.cloud.time_out();
  w.notify();
  EXPECT_NE(std::find(w.stopped.begin(), w.stopped.end(), first), w.stopped.end())
      << "the download of execution 1 goes on";
  EXPECT_GT(w.cloud.describes, describes);
  ASSERT_GE(w.cloud.described_executions.size(), 2u);
  EXPECT_EQ(w.cloud.described_executions[1], std::optional<std::int64_t>(1))
      << "the check names our execution";
  // Execution 2 is picked and done from the start (version check, then download).
  ASSERT_TRUE(w.running_download);
  EXPECT_NE(w.running_download->work, first);
  ASSERT_TRUE(w.store.state_);
  EXPECT_EQ(w.store.state_->execution_number, 2);
  EXPECT_EQ(w.steps_run.back().job.execution_number, 2);
  EXPECT_EQ(w.cloud.applied("upparat_1", 2), Strings{"download_start"});
  for (const auto& u : w.cloud.updates) {
    EXPECT_TRUE(u.execution_number.has_value()) << u.state << " without executionNumber";
  }
}

INSTANTIATE_TEST_SUITE_P(Cloud, RetriedExecution,
                         ::testing::Values(PastExecution::Answered, PastExecution::NotFound,
                                           PastExecution::NumberIgnored),
                         [](const auto& info) {
                           std::ostringstream os;
                           PrintTo(info.param, &os);
                           return os.str();
                         });

// The notify of the retry is lost: the next update of ours names execution 1, is refused, and
// never lands on execution 2.
TEST(Machine, UpdatesNeverLandOnTheNextExecution) {
  World w;
  w.use(hooks_with([](Hooks& h) { h.restart = Hooks::Restart::Returns; }));
  bool hang = true;
  w.hang_at(Step::Install, &hang);
  start(w);
  ASSERT_TRUE(w.running_step && w.running_step->step == Step::Install);
  w.cloud.time_out();
  hang = false;
  w.finish_step(ok());  // -> reboot_start for execution 1
  EXPECT_EQ(final_state(w, "upparat_1"), "SUCCEEDED complete_soft_restart");
  EXPECT_EQ(w.cloud.applied("upparat_1", 1), (Strings{"download_start", "installation_start"}));
  EXPECT_EQ(w.cloud.applied("upparat_1", 2), (Strings{"download_start", "installation_start",
                                                      "reboot_start", "complete_soft_restart"}))
      << "execution 2 is installed by itself, not finished with execution 1's install";
  EXPECT_EQ(w.runs_of(Step::Install), 2);
}

// ---- updates: order, duplicates, throttling ------------------------------------------------

// ---- a final update the cloud refuses ---------------------------------------------------

std::vector<std::string> statuses(const World& w, const std::string& id) {
  std::vector<std::string> out;
  for (const auto& u : w.cloud.updates) {
    if (u.job_id == id) {
      out.push_back(u.status + " " + u.state + " " + u.message);
    }
  }
  return out;
}

// A refused final update must not make the daemon run the job again: it is sent once more
// with minimal statusDetails (a QUEUED job is set IN_PROGRESS first).
TEST(Machine, RefusedFinalUpdateIsSentAgainMinimalAndTheJobIsNotRedone) {
  World w;
  w.use(Hooks{});
  w.answer_at(Step::Version, failed("bad \xef\xbf\xbe reason"));
  w.cloud.refuse = [](const SentUpdate& u) { return u.message != "none"; };
  start(w);
  EXPECT_EQ(final_state(w, "upparat_1"), "FAILED version_hook_failed");
  EXPECT_EQ(final_message(w, "upparat_1"), "none");
  EXPECT_EQ(w.runs_of(Step::Version), 1);
  const auto sent = statuses(w, "upparat_1");
  ASSERT_EQ(sent.size(), 3u);
  EXPECT_EQ(sent[1], "IN_PROGRESS version_hook_failed none");
  EXPECT_EQ(sent[2], "FAILED version_hook_failed none");
  EXPECT_EQ(w.phase(), Phase::Monitor);
  EXPECT_FALSE(w.store.state_);
}

// Refused even when minimal: the execution ends on the device. It is skipped when jobs are
// selected (so later jobs run), also after a restart, and the minimal update is retried with
// back-off until the cloud takes it.
TEST(Machine, FinalUpdateRefusedForGoodEndsTheExecutionLocally) {
  World w;
  w.use(hooks_with([](Hooks& h) { h.restart = Hooks::Restart::Returns; }));
  bool refusing = true;
  w.cloud.refuse = [&](const SentUpdate& u) {
    return refusing && u.job_id == "upparat_1" && u.status != "IN_PROGRESS";
  };
  start(w);
  EXPECT_EQ(w.cloud.execution("upparat_1")->status, emulator::ExecStatus::InProgress);
  EXPECT_EQ(w.phase(), Phase::Monitor);
  ASSERT_EQ(w.store.ended_.size(), 1u);
  EXPECT_EQ(w.store.ended_[0].job_id, "upparat_1");
  EXPECT_EQ(w.store.ended_[0].status, "SUCCEEDED");
  EXPECT_EQ(w.store.ended_[0].state, "complete_soft_restart");
  const int installs = w.runs_of(Step::Install);
  EXPECT_EQ(installs, 1);

  // A later job runs; the ended one is not run again, also after a restart.
  w.cloud.add(queued("upparat_2", "2.0", false, 2000));
  w.notify();
  EXPECT_EQ(final_state(w, "upparat_2"), "SUCCEEDED complete_soft_restart");
  w.boot();
  w.connect();
  EXPECT_EQ(w.phase(), Phase::Monitor);
  EXPECT_EQ(w.runs_of(Step::Install), installs + 1);

  // The minimal update is retried with back-off; once accepted, the record goes.
  const auto tries = w.cloud.updates.size();
  w.advance(std::chrono::minutes(1));
  EXPECT_GT(w.cloud.updates.size(), tries);
  refusing = false;
  w.advance(std::chrono::hours(1));
  EXPECT_EQ(final_state(w, "upparat_1"), "SUCCEEDED complete_soft_restart");
  EXPECT_TRUE(w.store.ended_.empty());
  EXPECT_EQ(w.runs_of(Step::Install), installs + 1);
}

TEST(Machine, ThrottledUpdatesAreRetriedWithBackoff) {
  World w;
  w.use(hooks_with([](Hooks& h) { h.restart = Hooks::Restart::Returns; }));
  w.cloud.throttle_updates = 3;
  start(w);
  EXPECT_EQ(w.cloud.updates.size(), 1u);
  w.advance(120s);
  EXPECT_EQ(final_state(w, "upparat_1"), "SUCCEEDED complete_soft_restart");
  // the same clientToken was retried
  EXPECT_EQ(w.cloud.updates[0].token, w.cloud.updates[3].token);
}

TEST(Machine, UnansweredUpdateIsResentWithTheSameToken) {
  World w;
  w.use(Hooks{});
  w.cloud.add(queued("upparat_1"));
  w.cloud.lose_updates = true;
  w.connect();
  ASSERT_EQ(w.cloud.updates.size(), 1u);
  EXPECT_EQ(w.cloud.updates[0].state, "download_start");
  w.advance(29s);
  EXPECT_EQ(w.cloud.updates.size(), 1u);
  w.advance(2s);
  ASSERT_EQ(w.cloud.updates.size(), 2u);
  EXPECT_EQ(w.cloud.updates[1].token, w.cloud.updates[0].token);
  EXPECT_EQ(w.phase(), Phase::Install) << "install waits for installation_start";
  w.cloud.lose_updates = false;
  w.advance(31s);
  EXPECT_EQ(w.phase(), Phase::Restart);
}

TEST(Machine, OneUpdateInFlightAndProgressMerged) {
  World w;
  w.use(Hooks{});
  w.hold_downloads();
  start(w);
  ASSERT_TRUE(w.running_download);
  w.cloud.answer = false;
  const auto before = w.published.size();
  for (int i = 1; i < 100; ++i) {
    w.handle(DownloadProgress{w.running_download->work, {std::uint64_t(i) * 10, 1000}});
  }
  // Only the first progress went out; the others wait and merge into one.
  EXPECT_EQ(w.published.size() - before, 1u);
  w.release_held();
  const auto& last = w.cloud.updates.back();
  EXPECT_EQ(last.state, "download_progress");
  EXPECT_EQ(last.message, "{\"downloaded_bytes\": 960}");  // the last 4 % step
  EXPECT_EQ(w.cloud.states("upparat_1").size(), 3u);       // start, first progress, merged latest
}

// All bytes in: the download's end is near, and installation_start must not wait behind a
// progress update (one update in flight).
TEST(Machine, NoProgressUpdateForTheLastByte) {
  World w;
  w.use(Hooks{});
  w.hold_downloads();
  start(w);
  ASSERT_TRUE(w.running_download);
  w.handle(DownloadProgress{w.running_download->work, {500, 1000}});
  w.handle(DownloadProgress{w.running_download->work, {1000, 1000}});
  w.finish_download(download::Outcome::Complete);
  const auto states = w.cloud.states("upparat_1");
  ASSERT_GE(states.size(), 3u);
  EXPECT_EQ(states[0], "download_start");
  EXPECT_EQ(states[1], "download_progress");
  EXPECT_EQ(states[2], "installation_start");
  EXPECT_EQ(w.cloud.updates[1].message, "{\"downloaded_bytes\": 500}");
}

// The saves one event asks for (a step's attempt ended, the next step entered, its attempt
// started) are one write, made before any of the event's actions runs.
TEST(Machine, TheSavesOfOneEventAreOneWrite) {
  World w;
  w.use(Hooks{});
  start(w);
  using Saves = std::vector<std::pair<SavedStep, Durability>>;
  const Saves expected = {
      {SavedStep::VerifyJob, Durability::Deferred},     // described: version step started
      {SavedStep::DownloadGate, Durability::Deferred},  // version ended, gate step started
      {SavedStep::Download, Durability::Deferred},      // gate open, download started
      {SavedStep::Install, Durability::Synced},         // downloaded, install entered
      {SavedStep::Install, Durability::Synced},         // installation_start accepted
      {SavedStep::Reboot, Durability::Synced},          // installed, reboot_start sent
      {SavedStep::Restart, Durability::Synced},         // reboot_start accepted
  };
  EXPECT_EQ(w.store.durabilities_, expected);
}

TEST(Machine, ProgressBudget) {
  World w;
  w.use(Hooks{});
  w.hold_downloads();
  start(w);
  ASSERT_TRUE(w.running_download);
  const std::uint64_t total = 1ull << 30;
  for (std::uint64_t b = 0; b <= total; b += 1 << 20) {
    w.handle(DownloadProgress{w.running_download->work, {b, total}});
    w.advance(100ms);
  }
  const auto states = w.cloud.states("upparat_1");
  const auto progress = std::count(states.begin(), states.end(), "download_progress");
  EXPECT_GE(progress, 20);
  EXPECT_LE(progress, 30);
  // Install lines: at most one per progress_interval (30 s), the latest line wins.
  w.script = [](const RunStep& r) -> std::optional<plugin::StepResult> {
    if (r.step == Step::Install) {
      return std::nullopt;
    }
    return ok();
  };
  w.finish_download(download::Outcome::Complete);
  ASSERT_TRUE(w.running_step && w.running_step->step == Step::Install);
  const auto work = w.running_step->work;
  for (int i = 0; i < 600; ++i) {
    w.handle(StepProgress{work, "line " + std::to_string(i), -1});
    w.advance(1s);
  }
  const auto after = w.cloud.states("upparat_1");
  const auto lines = std::count(after.begin(), after.end(), "installation_progress");
  EXPECT_GE(lines, 15);
  EXPECT_LE(lines, 22);
  EXPECT_EQ(w.cloud.updates.back().message.rfind("line ", 0), 0u);
}

TEST(Machine, StaleAndDuplicatedAnswersAreIgnored) {
  World w;
  w.use(Hooks{});
  w.cloud.add(queued("upparat_1"));
  w.cloud.answer = false;
  w.connect();
  // A get answer with a foreign token, a describe answer nobody asked for, garbage.
  const std::string t = jobs::topic_prefix(kThing);
  w.handle(MqttMessage{t + "/get/accepted",
                       "{\"inProgressJobs\":[],\"queuedJobs\":[],\"clientToken\":\"x\"}"});
  w.handle(MqttMessage{t + "/upparat_1/get/accepted", "{\"execution\":{\"jobId\":\"upparat_1\"}}"});
  w.handle(MqttMessage{t + "/upparat_1/update/accepted", "not json"});
  w.handle(MqttMessage{"$aws/things/other/jobs/notify", "{}"});
  EXPECT_EQ(w.phase(), Phase::FetchJobs);
  // The real answer, twice.
  auto held = w.cloud.held;
  w.release_held();
  w.cloud.answer = false;
  for (auto& p : held) {
    for (auto& m : w.cloud.respond(p)) {
      w.handle(m);
    }
  }
  w.cloud.answer = true;
  w.release_held();
  w.release_held();
  EXPECT_EQ(w.phase(), Phase::Restart);
  EXPECT_EQ(w.runs_of(Step::Install), 1);
}

// ---- expectedVersion: a resent, duplicated or late update is never applied twice ---------

// Every update carries the execution's versionNumber as expectedVersion and asks for the
// executionState: from the describe at the start, from each accepted answer after it, and from
// the describe of the new daemon after the reboot. None meets a VersionMismatch.
TEST(Machine, EveryUpdateCarriesTheExpectedVersion) {
  World w;
  w.use(Hooks{});
  start(w);
  ASSERT_EQ(w.phase(), Phase::Restart);
  w.reboot();
  EXPECT_EQ(final_state(w, "upparat_1"), "SUCCEEDED complete_ready");
  std::int64_t version = 1;  // a new execution
  for (const auto& u : w.cloud.updates) {
    EXPECT_EQ(u.expected_version, std::optional<std::int64_t>(version)) << u.state;
    EXPECT_TRUE(u.include_state) << u.state;
    EXPECT_EQ(u.applied_to, 1) << u.state;
    ++version;
  }
  EXPECT_EQ(w.cloud.execution("upparat_1")->version_number, 5);
}

// installation_start is applied but its answer is lost; the resend (same token, same
// expectedVersion) meets VersionMismatch showing exactly what it sent: it was accepted, and it
// is not applied a second time.
TEST(Machine, ResentUpdateWhoseAnswerWasLostIsNotAppliedAgain) {
  World w;
  w.use(hooks_with([](Hooks& h) { h.restart = Hooks::Restart::Returns; }));
  w.hold_downloads();
  start(w);
  ASSERT_TRUE(w.running_download);
  w.cloud.lose_answers = 1;
  w.finish_download(download::Outcome::Complete);
  ASSERT_EQ(w.phase(), Phase::Install);
  EXPECT_FALSE(w.running_step) << "no install before installation_start is answered";
  w.advance(31s);  // resent
  EXPECT_EQ(final_state(w, "upparat_1"), "SUCCEEDED complete_soft_restart");
  EXPECT_EQ(w.cloud.applied("upparat_1", 1), (Strings{"download_start", "installation_start",
                                                      "reboot_start", "complete_soft_restart"}));
  EXPECT_EQ(w.cloud.execution("upparat_1")->version_number, 5) << "versionNumber jumped";
  EXPECT_EQ(w.runs_of(Step::Install), 1);
}

// A copy of installation_progress (a QoS 1 duplicate, or the network's late copy) reaches the
// cloud after reboot_start was applied: it changes nothing.
TEST(Machine, LateCopyOfAnOlderUpdateDoesNotOverwriteANewerOne) {
  World w;
  w.use(Hooks{});
  bool hang = true;
  w.hang_at(Step::Install, &hang);
  start(w);
  ASSERT_TRUE(w.running_step && w.running_step->step == Step::Install);
  w.handle(StepProgress{w.running_step->work, "writing slot B", 50});
  ASSERT_EQ(final_state(w, "upparat_1"), "IN_PROGRESS installation_progress");
  const Publish copy = w.published.back();
  ASSERT_NE(copy.payload.find("installation_progress"), std::string::npos);
  hang = false;
  w.finish_step(ok());
  ASSERT_EQ(w.phase(), Phase::Restart);
  ASSERT_EQ(final_state(w, "upparat_1"), "IN_PROGRESS reboot_start");
  for (auto& m : w.cloud.respond(copy)) {
    w.handle(m);
  }
  EXPECT_EQ(final_state(w, "upparat_1"), "IN_PROGRESS reboot_start");
  EXPECT_EQ(w.phase(), Phase::Restart);
  w.reboot();
  EXPECT_EQ(final_state(w, "upparat_1"), "SUCCEEDED complete_ready");
}

// Someone else changed the execution since we last saw it: our update meets VersionMismatch
// with other statusDetails, and is sent again on top of that change.
TEST(Machine, UpdateMeetingAnotherChangeIsSentAgainWithTheNewVersion) {
  World w;
  w.use(Hooks{});
  w.hold_downloads();
  start(w);
  ASSERT_TRUE(w.running_download);
  w.cloud.device_update("upparat_1", "IN_PROGRESS", {{"state", "operator_note"}});  // version 3
  w.handle(DownloadProgress{w.running_download->work, {500, 1000}});
  EXPECT_EQ(final_state(w, "upparat_1"), "IN_PROGRESS download_progress");
  ASSERT_EQ(w.cloud.updates.size(), 3u);
  EXPECT_EQ(w.cloud.updates[1].token, w.cloud.updates[2].token);
  EXPECT_EQ(w.cloud.updates[1].applied_to, 0) << "refused: it expected version 2";
  EXPECT_EQ(w.cloud.updates[2].expected_version, std::optional<std::int64_t>(3));
  EXPECT_EQ(w.cloud.updates[2].applied_to, 1);
  EXPECT_TRUE(w.running_download);
}

// ---- retries and deadlines ----------------------------------------------------------------

TEST(Machine, RetryLaterRunsTheStepAgain) {
  World w;
  w.use(hooks_with([](Hooks& h) { h.restart = Hooks::Restart::Returns; }));
  auto classic = w.script;
  int gate_calls = 0;
  w.script = [&](const RunStep& r) -> std::optional<plugin::StepResult> {
    if (r.step == Step::Download) {
      EXPECT_EQ(r.job.retry_count, gate_calls);
      if (gate_calls++ < 2) {
        return retry_later(gate_calls == 1 ? std::optional<std::chrono::seconds>(5s)
                                           : std::nullopt);
      }
    }
    return classic(r);
  };
  start(w);
  EXPECT_EQ(gate_calls, 1);
  w.advance(5s);
  EXPECT_EQ(gate_calls, 2);
  w.advance(59s);
  EXPECT_EQ(gate_calls, 2);
  w.advance(1s);  // retry_interval 60 s
  EXPECT_EQ(gate_calls, 3);
  EXPECT_EQ(final_state(w, "upparat_1"), "SUCCEEDED complete_soft_restart");
}

TEST(Machine, RetriesExhaustedFailTheStep) {
  MachineSettings s;
  s.max_retries = 2;
  s.retry_interval = 1s;
  World w(s);
  w.use(Hooks{});
  w.script = [&](const RunStep&) { return std::optional<plugin::StepResult>(retry_later()); };
  start(w);
  w.advance(10s);
  EXPECT_EQ(final_state(w, "upparat_1"), "FAILED version_hook_failed");
  EXPECT_EQ(final_message(w, "upparat_1"), "timed out after 2 retries");
  EXPECT_EQ(w.steps_run.size(), 3u);
}

TEST(Machine, StepDeadlineStopsAndFails) {
  MachineSettings s;
  s.step_deadline[static_cast<int>(Step::Install)] = 100s;
  World w(s);
  w.use(Hooks{});
  w.hang_at(Step::Install);
  start(w);
  ASSERT_TRUE(w.running_step && w.running_step->step == Step::Install);
  const auto work = w.running_step->work;
  w.advance(99s);
  EXPECT_TRUE(w.running_step);
  w.advance(2s);
  EXPECT_NE(std::find(w.stopped.begin(), w.stopped.end(), work), w.stopped.end());
  EXPECT_EQ(final_state(w, "upparat_1"), "FAILED installation_hook_failed");
  EXPECT_EQ(final_message(w, "upparat_1"), "timed out after 100 s");
  EXPECT_EQ(w.phase(), Phase::Monitor);
}

// Install has a deadline of 100 s.
MachineSettings install_deadline_100s(MachineSettings s = {}) {
  s.step_deadline[static_cast<int>(Step::Install)] = 100s;
  return s;
}

// Runs a job into an install step that hangs (the test finishes it, or never).
void hang_in_install(World& w) {
  w.use(Hooks{});
  w.hang_at(Step::Install);
  start(w);
}

bool failed_sent(const World& w) {
  return std::any_of(w.cloud.updates.begin(), w.cloud.updates.end(),
                     [](const SentUpdate& u) { return u.status == "FAILED"; });
}

TEST(Machine, StepIgnoringTheStopIsAbandonedAfterTheGrace) {
  MachineSettings s;
  s.stop_grace = 30s;
  World w(install_deadline_100s(s));
  hang_in_install(w);
  ASSERT_TRUE(w.running_step && w.running_step->step == Step::Install);
  w.ignore_stop = true;
  const auto work = w.running_step->work;
  const auto steps = w.steps_run.size();
  w.advance(101s);
  EXPECT_NE(std::find(w.stopped.begin(), w.stopped.end(), work), w.stopped.end());
  EXPECT_FALSE(failed_sent(w)) << "no FAILED while the plugin may still install";
  w.advance(28s);
  EXPECT_FALSE(failed_sent(w));
  EXPECT_FALSE(w.exited);
  EXPECT_EQ(w.phase(), Phase::Install);
  w.advance(2s);
  EXPECT_EQ(final_state(w, "upparat_1"), "FAILED installation_hook_failed");
  EXPECT_EQ(final_message(w, "upparat_1"),
            "timed out after 100 s; the plugin did not stop within 30 s");
  ASSERT_TRUE(w.store.state_.has_value());
  EXPECT_EQ(w.store.state_->step, SavedStep::Finish);
  EXPECT_EQ(w.store.state_->final_status, "FAILED");
  EXPECT_TRUE(w.exited) << "the daemon must exit: this one cannot take another job";
  EXPECT_EQ(w.exit_reason, ExitReason::PluginStuck);
  EXPECT_EQ(w.steps_run.size(), steps);
  // The next daemon finds the job ended and goes on.
  w.exited = false;
  w.ignore_stop = false;
  w.boot();
  w.connect();
  EXPECT_EQ(w.phase(), Phase::Monitor);
  EXPECT_FALSE(w.store.state_.has_value());
  EXPECT_EQ(w.steps_run.size(), steps);
}

TEST(Machine, AbandonedStepExitsAfterUpdateResendWithoutAnAnswer) {
  MachineSettings s;
  s.stop_grace = 30s;
  s.update_resend = 20s;
  World w(install_deadline_100s(s));
  hang_in_install(w);
  w.ignore_stop = true;
  w.cloud.lose_updates = true;
  w.advance(131s);
  ASSERT_TRUE(failed_sent(w));
  EXPECT_EQ(w.store.state_->step, SavedStep::Finish);
  EXPECT_FALSE(w.exited) << "waits for the answer first";
  w.advance(20s);
  EXPECT_TRUE(w.exited);
  EXPECT_EQ(w.exit_reason, ExitReason::PluginStuck);
}

TEST(Machine, StoppedStepReturningWithinTheGraceFailsWithTheDeadline) {
  World w(install_deadline_100s());
  hang_in_install(w);
  w.ignore_stop = true;
  w.advance(101s);
  EXPECT_FALSE(failed_sent(w));
  w.advance(10s);
  // It returns late, even successfully: the job still fails, and nothing is abandoned.
  w.finish_step(ok());
  EXPECT_EQ(final_state(w, "upparat_1"), "FAILED installation_hook_failed");
  EXPECT_EQ(final_message(w, "upparat_1"), "timed out after 100 s");
  EXPECT_EQ(w.phase(), Phase::Monitor);
  w.advance(1h);
  EXPECT_FALSE(w.exited);
}

TEST(Machine, CancelledStepIgnoringTheStopIsAbandonedAfterTheGrace) {
  MachineSettings s;
  s.stop_grace = 30s;
  World w(install_deadline_100s(s));
  hang_in_install(w);
  w.ignore_stop = true;
  const auto updates = w.cloud.updates.size();
  w.cloud.remove("upparat_1");
  w.notify();
  EXPECT_EQ(w.phase(), Phase::Stopping);
  w.advance(29s);
  EXPECT_FALSE(w.exited);
  w.advance(2s);
  EXPECT_TRUE(w.exited);
  EXPECT_EQ(w.exit_reason, ExitReason::PluginStuck);
  EXPECT_EQ(w.cloud.updates.size(), updates) << "nothing to report for a gone job";
}

struct LateResult {
  const char* name;
  plugin::StepResult result;
  std::string outcome;  // final "STATUS state", "" = still going (restart reboots)
  std::string message;
};

void PrintTo(const LateResult& c, std::ostream* os) {
  *os << c.name;
}

// The machine chooses how the runtime may stop each step; the runtime does not re-derive it.
TEST(Machine, EachStepCarriesItsStopPolicy) {
  for (bool not_interruptible : {false, true}) {
    MachineSettings s;
    s.install_not_interruptible = not_interruptible;
    World w(s);
    w.use(hooks_with([](Hooks& h) { h.restart = Hooks::Restart::Returns; }));
    w.cloud.add(queued("upparat_1"));
    w.connect();
    ASSERT_EQ(final_state(w, "upparat_1"), "SUCCEEDED complete_soft_restart");
    for (const RunStep& r : w.steps_run) {
      const StopPolicy expected = r.step == Step::Install && not_interruptible
                                      ? StopPolicy::NotInterruptible
                                  : r.step == Step::Restart ? StopPolicy::RunsOnAtShutdown
                                                            : StopPolicy::Interruptible;
      EXPECT_EQ(r.stop_policy, expected) << to_string(r.step) << " " << not_interruptible;
    }
  }
}

class NotInterruptibleInstallPastItsDeadline : public ::testing::TestWithParam<LateResult> {};

TEST_P(NotInterruptibleInstallPastItsDeadline, GetsNoFailedBeforeItReturns) {
  const LateResult& c = GetParam();
  MachineSettings s;
  s.install_not_interruptible = true;
  World w(install_deadline_100s(s));
  hang_in_install(w);
  ASSERT_TRUE(w.running_step && w.running_step->step == Step::Install);
  const auto work = w.running_step->work;
  w.advance(101s);
  w.advance(2h);  // far past the deadline and any grace
  EXPECT_TRUE(w.running_step) << "never stopped";
  EXPECT_EQ(std::find(w.stopped.begin(), w.stopped.end(), work), w.stopped.end());
  EXPECT_FALSE(failed_sent(w)) << "no FAILED while the install runs";
  EXPECT_FALSE(w.exited);
  EXPECT_EQ(w.phase(), Phase::Install);
  // Its result, when it finally comes, counts as it is (a retry is no longer possible).
  w.finish_step(c.result);
  if (c.outcome.empty()) {
    EXPECT_EQ(w.phase(), Phase::Restart);
    EXPECT_EQ(w.cloud.states("upparat_1").back(), "reboot_start");
    EXPECT_FALSE(failed_sent(w));
  } else {
    EXPECT_EQ(final_state(w, "upparat_1"), c.outcome);
    EXPECT_EQ(final_message(w, "upparat_1"), c.message);
  }
  EXPECT_FALSE(w.exited);
}

INSTANTIATE_TEST_SUITE_P(
    Results, NotInterruptibleInstallPastItsDeadline,
    ::testing::Values(LateResult{"ok", ok(), "", ""},
                      LateResult{"failed", failed("flash error"), "FAILED installation_hook_failed",
                                 "flash error"},
                      LateResult{"retry_later", retry_later(), "FAILED installation_hook_failed",
                                 "timed out after 100 s"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Machine, NotInterruptibleInstallIsStillStoppedByTheDeadlineBeforeItRuns) {
  // Only the running install is spared: the other steps, and an install waiting for a retry,
  // fail at the deadline as usual.
  MachineSettings s;
  s.install_not_interruptible = true;
  s.step_deadline[static_cast<int>(Step::Install)] = 100s;
  World w(s);
  w.use(Hooks{});
  w.answer_at(Step::Install, retry_later(std::chrono::seconds(500)));
  start(w);
  w.advance(101s);
  EXPECT_EQ(final_state(w, "upparat_1"), "FAILED installation_hook_failed");
  EXPECT_EQ(final_message(w, "upparat_1"), "timed out after 100 s");
}

// ---- downloads ---------------------------------------------------------------------------

TEST(Machine, ExpiredUrlDescribesAgainAndResumes) {
  World w;
  w.use(hooks_with([](Hooks& h) { h.restart = Hooks::Restart::Returns; }));
  int runs = 0;
  w.download_script = [&](const RunDownload& d) -> std::optional<download::DownloadResult> {
    download::DownloadResult r;
    r.outcome = runs++ == 0 ? download::Outcome::UrlExpired : download::Outcome::Complete;
    r.file = "/dl/" + d.request.job_id;
    return r;
  };
  start(w);
  EXPECT_EQ(runs, 2);
  const auto states = w.cloud.states("upparat_1");
  EXPECT_EQ(states, (Strings{"download_start", "download_interrupt", "download_start",
                             "installation_start", "reboot_start", "complete_soft_restart"}));
  EXPECT_EQ(w.cloud.describes, 2);
}

// A URL refused (403) before a single byte arrived, a fresh one each time.
std::optional<download::DownloadResult> refused(std::uint64_t bytes = 0) {
  download::DownloadResult r;
  r.outcome = download::Outcome::UrlExpired;
  r.reason = "HTTP 403";
  r.bytes_transferred = bytes;
  return r;
}

bool download_removed(const World& w, const std::string& job_id) {
  return std::any_of(w.actions.begin(), w.actions.end(), [&](const Action& a) {
    auto* r = std::get_if<RemoveDownload>(&a);
    return r && r->job_id == job_id;
  });
}

TEST(Machine, RefusedUrlBacksOffAndFailsAfterFiveRefusals) {
  World w;
  w.use(Hooks{});
  std::vector<TimePoint> runs;
  w.download_script = [&](const RunDownload&) {
    runs.push_back(w.clock.now_);
    return refused();
  };
  start(w);
  // The first refusal may be a URL that merely expired: described again at once.
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(w.cloud.describes, 2);
  EXPECT_EQ(w.phase(), Phase::Download);
  EXPECT_FALSE(w.running_download);
  // Then it backs off: nothing is asked for a while.
  w.advance(20s);
  EXPECT_EQ(runs.size(), 2u);
  EXPECT_EQ(w.cloud.describes, 2);
  w.advance(1h);
  ASSERT_EQ(runs.size(), 5u);
  EXPECT_EQ(w.cloud.describes, 5);
  for (std::size_t i = 2; i + 1 < runs.size(); ++i) {
    EXPECT_GT(runs[i + 1] - runs[i], runs[i] - runs[i - 1]) << "gap " << i;
  }
  EXPECT_GE(runs[2] - runs[1], 25s);
  EXPECT_EQ(final_state(w, "upparat_1"), "FAILED download_hook_failed");
  EXPECT_EQ(final_message(w, "upparat_1"),
            "the download URL was refused (HTTP 403) 5 times in a row with a fresh URL each time");
  EXPECT_EQ(w.phase(), Phase::Monitor);
  EXPECT_FALSE(w.store.state_);
  EXPECT_TRUE(download_removed(w, "upparat_1"));
  // And it stays quiet.
  const int describes = w.cloud.describes;
  w.advance(2h);
  EXPECT_EQ(w.cloud.describes, describes);
  EXPECT_EQ(runs.size(), 5u);
}

TEST(Machine, RefusalLimitIsConfigurable) {
  MachineSettings s;
  s.max_url_refusals = 2;
  s.url_refused_backoff_base = 1s;
  World w(s);
  w.use(Hooks{});
  w.download_script = [&](const RunDownload&) { return refused(); };
  start(w);
  EXPECT_EQ(w.downloads_run.size(), 2u);
  EXPECT_EQ(final_state(w, "upparat_1"), "FAILED download_hook_failed");
  EXPECT_EQ(final_message(w, "upparat_1"),
            "the download URL was refused (HTTP 403) 2 times in a row with a fresh URL each time");
}

TEST(Machine, BytesTransferredResetTheRefusalCount) {
  World w;
  w.use(hooks_with([](Hooks& h) { h.restart = Hooks::Restart::Returns; }));
  // 4 refusals, one expiry after progress, 4 refusals, then the download completes: never 5
  // refusals in a row.
  int run = 0;
  w.download_script = [&](const RunDownload& d) -> std::optional<download::DownloadResult> {
    ++run;
    if (run == 5) {
      return refused(4096);
    }
    if (run < 10) {
      return refused();
    }
    return complete_download(d);
  };
  start(w);
  w.advance(2h);
  EXPECT_EQ(run, 10);
  EXPECT_EQ(final_state(w, "upparat_1"), "SUCCEEDED complete_soft_restart");
}

TEST(Machine, CancelDuringTheRefusalBackOffStopsAsking) {
  World w;
  w.use(Hooks{});
  w.download_script = [&](const RunDownload&) { return refused(); };
  start(w);
  ASSERT_EQ(w.downloads_run.size(), 2u);
  ASSERT_EQ(w.phase(), Phase::Download);
  w.cloud.cancel("upparat_1");
  w.notify();
  EXPECT_EQ(w.phase(), Phase::Monitor);
  EXPECT_FALSE(w.store.state_);
  EXPECT_TRUE(download_removed(w, "upparat_1"));
  w.advance(1h);
  EXPECT_EQ(w.downloads_run.size(), 2u);
}

TEST(Machine, ShutdownDuringTheRefusalBackOffExits) {
  World w;
  w.use(Hooks{});
  w.download_script = [&](const RunDownload&) { return refused(); };
  start(w);
  ASSERT_EQ(w.phase(), Phase::Download);
  w.handle(ShutdownRequested{});
  EXPECT_TRUE(w.exited);
  w.advance(1h);
  EXPECT_EQ(w.downloads_run.size(), 2u);
  ASSERT_TRUE(w.store.state_);  // the job goes on after the restart
  EXPECT_EQ(w.store.state_->job_id, "upparat_1");
}

TEST(Machine, DownloadResumeStateIsSaved) {
  World w;
  w.use(Hooks{});
  w.hold_downloads();
  start(w);
  ASSERT_TRUE(w.running_download);
  w.handle(DownloadResumeState{w.running_download->work, {4096, "\"e1\""}});
  ASSERT_TRUE(w.store.state_);
  EXPECT_EQ(w.store.state_->resume, (download::ResumeState{4096, "\"e1\""}));
  EXPECT_EQ(w.store.state_->step, SavedStep::Download);
}

TEST(Machine, DownloadFailureFailsTheJob) {
  World w;
  w.use(Hooks{});
  w.download_script = [&](const RunDownload&) {
    download::DownloadResult r;
    r.outcome = download::Outcome::Failed;
    r.reason = "SHA-256 mismatch";
    return std::optional<download::DownloadResult>(r);
  };
  start(w);
  EXPECT_EQ(final_state(w, "upparat_1"), "FAILED download_hook_failed");
  EXPECT_EQ(final_message(w, "upparat_1"), "SHA-256 mismatch");
}

TEST(Machine, InstallFromUrlSkipsTheDownloadAndDescribesAgain) {
  MachineSettings s;
  s.install_from_url = true;
  World w(s);
  w.use(hooks_with([](Hooks& h) { h.restart = Hooks::Restart::Returns; }));
  start(w);
  EXPECT_TRUE(w.downloads_run.empty());
  EXPECT_EQ(w.cloud.describes, 2);
  const auto install = std::find_if(w.steps_run.begin(), w.steps_run.end(),
                                    [](auto& r) { return r.step == Step::Install; });
  ASSERT_NE(install, w.steps_run.end());
  EXPECT_FALSE(install->job.file_path.has_value());
  EXPECT_EQ(install->job.url.rfind("https://bucket.s3.amazonaws.com/fw.raucb", 0), 0u);
  EXPECT_EQ(w.cloud.states("upparat_1"),
            (Strings{"installation_start", "reboot_start", "complete_soft_restart"}));
}

TEST(Machine, RestartDuringStreamingInstallDescribesAgain) {
  MachineSettings s;
  s.install_from_url = true;
  World w(s);
  w.use(hooks_with([](Hooks& h) { h.restart = Hooks::Restart::Returns; }));
  bool hang = true;
  w.hang_at(Step::Install, &hang);
  start(w);
  ASSERT_TRUE(w.running_step && w.running_step->step == Step::Install);
  const int describes = w.cloud.describes;
  hang = false;
  w.boot();
  w.connect();
  EXPECT_EQ(w.cloud.describes, describes + 2);  // select + fresh URL
  EXPECT_TRUE(w.downloads_run.empty());
  EXPECT_EQ(final_state(w, "upparat_1"), "SUCCEEDED complete_soft_restart");
}

TEST(Machine, CancelDuringRestartStopsTheStep) {
  World w;
  w.use(Hooks{});
  start(w);
  ASSERT_TRUE(w.running_step && w.running_step->step == Step::Restart);
  const auto work = w.running_step->work;
  w.cloud.cancel("upparat_1");
  w.notify();
  EXPECT_NE(std::find(w.stopped.begin(), w.stopped.end(), work), w.stopped.end());
  EXPECT_EQ(w.phase(), Phase::Monitor);
  EXPECT_FALSE(w.store.state_);
}

TEST(Machine, FinalUpdateSurvivesARestart) {
  // The final update is lost and the daemon restarts: it is sent again, not recomputed.
  World v;
  v.use(hooks_with([](Hooks& h) { h.restart = Hooks::Restart::Returns; }));
  v.cloud.add(queued("upparat_1"));
  auto classic = v.script;
  v.script = [&](const RunStep& r) {
    if (r.step == Step::Restart) {
      v.cloud.lose_updates = true;
    }
    return classic(r);
  };
  v.connect();
  ASSERT_EQ(v.phase(), Phase::Finishing);
  ASSERT_TRUE(v.store.state_);
  EXPECT_EQ(v.store.state_->step, SavedStep::Finish);
  EXPECT_EQ(v.store.state_->final_state, "complete_soft_restart");
  v.cloud.lose_updates = false;
  v.script = classic;
  v.boot();
  v.connect();
  EXPECT_EQ(final_state(v, "upparat_1"), "SUCCEEDED complete_soft_restart");
  EXPECT_EQ(v.runs_of(Step::Restart), 1);
}

TEST(Machine, KeyValueStoreIsSavedWithTheState) {
  World w;
  w.use(Hooks{});
  auto classic = w.script;
  w.script = [&](const RunStep& r) -> std::optional<plugin::StepResult> {
    if (r.step == Step::Install) {
      r.store->set("slot", std::string("B"));
    }
    return classic(r);
  };
  start(w);
  ASSERT_TRUE(w.store.state_);
  EXPECT_EQ(w.store.state_->store.at("slot"), "B");
  std::optional<std::string> seen;
  w.script = [&](const RunStep& r) -> std::optional<plugin::StepResult> {
    if (r.step == Step::Ready) {
      seen = r.store->get("slot");
    }
    return classic(r);
  };
  w.reboot();
  EXPECT_EQ(seen, std::optional<std::string>("B"));
}

TEST(Machine, ReconnectResendsAndRefetches) {
  World w;
  w.use(Hooks{});
  w.connect();
  ASSERT_EQ(w.phase(), Phase::Monitor);
  w.handle(Disconnected{});
  w.cloud.add(queued("upparat_1"));  // its notify was missed
  w.use(hooks_with([](Hooks& h) { h.version_before = "2.0"; }));
  w.connect();
  EXPECT_EQ(final_state(w, "upparat_1"), "SUCCEEDED version_already_installed");
}

// ---- lost notify: the safety-net get -----------------------------------------------------

TEST(Machine, LostNotifyIsCaughtByTheSlowPoll) {
  World w;
  w.use(hooks_with([](Hooks& h) { h.version_before = "2.0"; }));
  w.connect();
  ASSERT_EQ(w.phase(), Phase::Monitor);
  EXPECT_EQ(w.cloud.gets, 1);
  w.cloud.add(queued("upparat_1"));  // its notify is lost
  w.advance(590s);
  EXPECT_EQ(w.cloud.gets, 1);
  EXPECT_EQ(final_state(w, "upparat_1"), "QUEUED ");
  w.advance(80s);              // 600 s + up to 10 % jitter
  EXPECT_EQ(w.cloud.gets, 3);  // the poll, then the get after the job
  EXPECT_EQ(final_state(w, "upparat_1"), "SUCCEEDED version_already_installed");
  // It keeps polling while idle, slowly.
  w.advance(2h);
  EXPECT_GE(w.cloud.gets, 3 + 10);
  EXPECT_LE(w.cloud.gets, 3 + 12);
}

TEST(Machine, PollOnlyWhileIdle) {
  World w;
  w.use(Hooks{});
  w.hold_downloads();
  start(w);
  ASSERT_TRUE(w.running_download);
  const int gets = w.cloud.gets;
  w.advance(3h);
  EXPECT_EQ(w.cloud.gets, gets);
  EXPECT_TRUE(w.running_download);
}

TEST(Machine, PollIntervalZeroTurnsThePollOff) {
  MachineSettings s;
  s.poll_interval = 0s;
  World w(s);
  w.use(Hooks{});
  w.connect();
  ASSERT_EQ(w.phase(), Phase::Monitor);
  w.advance(24h);
  EXPECT_EQ(w.cloud.gets, 1);
}

TEST(Machine, PollWhileOfflineWaitsForTheReconnect) {
  MachineSettings s;
  s.poll_interval = 60s;
  World w(s);
  w.use(hooks_with([](Hooks& h) { h.version_before = "2.0"; }));
  w.connect();
  w.handle(Disconnected{});
  w.advance(10min);
  EXPECT_EQ(w.cloud.gets, 1);
  EXPECT_EQ(w.phase(), Phase::Monitor);
  start(w);
  EXPECT_EQ(final_state(w, "upparat_1"), "SUCCEEDED version_already_installed");
  const int gets = w.cloud.gets;
  w.advance(70s);  // polling again
  EXPECT_EQ(w.cloud.gets, gets + 1);
}

// ---- every stop removes the download and the saved state ----------------------------------

TEST(Machine, MultipleInProgressRemovesTheSavedStateAndDownloads) {
  World w;
  w.use(Hooks{});
  w.hold_downloads();
  start(w, queued("upparat_a"));
  ASSERT_TRUE(w.running_download);
  ASSERT_TRUE(w.store.state_);
  // The daemon restarts; meanwhile a second job of ours was set IN_PROGRESS by someone else.
  CloudJob b = queued("upparat_b");
  b.status = "IN_PROGRESS";
  w.cloud.add(b);
  w.boot();
  w.connect();
  EXPECT_EQ(final_state(w, "upparat_a"), "FAILED error_multiple_in_progress");
  EXPECT_EQ(final_state(w, "upparat_b"), "FAILED error_multiple_in_progress");
  EXPECT_FALSE(w.store.state_);
  EXPECT_TRUE(download_removed(w, "upparat_a"));
  EXPECT_TRUE(download_removed(w, "upparat_b"));
  EXPECT_EQ(w.phase(), Phase::Monitor);
}

TEST(Machine, SavedJobReplacedByAVanishingJobLosesItsDownload) {
  World w;
  w.use(Hooks{});
  w.hold_downloads();
  start(w);
  ASSERT_TRUE(w.store.state_);
  // upparat_1 is deleted while the daemon is down; upparat_2 is listed, then deleted before
  // its describe is answered.
  w.cloud.remove("upparat_1");
  w.cloud.add(queued("upparat_2"));
  w.boot();
  w.actions.clear();
  w.cloud.answer = false;
  w.connect();
  ASSERT_EQ(w.cloud.held.size(), 1u);  // the get
  auto get = w.cloud.held.front();
  w.cloud.held.clear();
  for (auto& m : w.cloud.respond(get)) {
    w.handle(m);
  }
  ASSERT_EQ(w.phase(), Phase::DescribeJob);
  w.cloud.remove("upparat_2");
  w.release_held();
  EXPECT_EQ(w.phase(), Phase::Monitor);
  EXPECT_FALSE(w.store.state_);
  EXPECT_TRUE(download_removed(w, "upparat_1"));
}

TEST(Machine, EveryTerminalEndRemovesTheDownloadAndTheState) {
  struct Case {
    const char* name;
    Hooks hooks;
    std::string outcome;
  };
  const Case cases[] = {
      {"succeeded", hooks_with([](Hooks& h) { h.restart = Hooks::Restart::Returns; }),
       "SUCCEEDED complete_soft_restart"},
      {"install failed", hooks_with([](Hooks& h) { h.install = false; }),
       "SUCCEEDED no_installation_hook_provided"},
      {"restart failed", hooks_with([](Hooks& h) { h.restart = Hooks::Restart::Fails; }),
       "FAILED restart_hook_failed"},
      {"already installed", hooks_with([](Hooks& h) { h.version_before = "2.0"; }),
       "SUCCEEDED version_already_installed"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    World w;
    w.use(c.hooks);
    start(w);
    EXPECT_EQ(final_state(w, "upparat_1"), c.outcome);
    EXPECT_FALSE(w.store.state_);
    EXPECT_TRUE(download_removed(w, "upparat_1"));
    EXPECT_EQ(w.phase(), Phase::Monitor);
  }
}

TEST(Machine, NeverUsesStartNextOrNext) {
  World w;
  w.use(hooks_with([](Hooks& h) { h.restart = Hooks::Restart::Returns; }));
  start(w);
  for (const auto& p : w.published) {
    EXPECT_EQ(p.topic.find("start-next"), std::string::npos);
    EXPECT_EQ(p.topic.find("$next"), std::string::npos);
    EXPECT_EQ(p.qos, 1);
  }
}

TEST(Machine, NotifyDuringAGetIsNotLostToTheGetsStaleAnswer) {
  World w;
  w.use(hooks_with([](Hooks& h) { h.version_before = "2.0"; }));
  w.cloud.answer = false;  // the get's answer will be late
  w.connect();
  ASSERT_EQ(w.cloud.held.size(), 1u);
  // The cloud answers the get now (nothing pending), but the answer is still on its way...
  auto stale = w.cloud.respond(w.cloud.held.front());
  w.cloud.held.clear();
  w.cloud.answer = true;
  w.cloud.add(queued("upparat_1"));
  w.notify();  // ...when the new job's notify overtakes it.
  for (auto& m : stale) {
    w.handle(m);
  }
  EXPECT_EQ(final_state(w, "upparat_1"), "SUCCEEDED version_already_installed");
}

}  // namespace
}  // namespace upparat::state::testing
