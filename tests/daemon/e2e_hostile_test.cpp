// Hostile input end to end: the real daemon with the script plugin, mosquitto and the Jobs + S3
// emulator, fed what a broken or malicious peer, plugin or local user can produce. Each test
// checks the exact status and statusDetails the cloud sees and what is left in the state
// folder.

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <set>

#include "common/sanitize.hpp"
#include "e2e_fixture.hpp"
#include "support/mqtt_client.hpp"

namespace upparat::test {
namespace {

using namespace e2e;  // NOLINT(google-build-using-namespace)

class E2eHostileTest : public E2eFixture {
 protected:
  /// Names in `folder` and below, relative to it ("downloads", "downloads/x", ...).
  std::set<std::string> entries(const fs::path& folder) const {
    std::set<std::string> names;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(folder, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      names.insert(fs::relative(it->path(), folder).string());
    }
    return names;
  }

  /// Waits until the daemon, just started, is idle.
  void wait_idle(ServiceProcess& daemon) {
    EXPECT_TRUE(daemon.wait_for_line("status: waiting for jobs", 60s)) << daemon.log_tail();
  }

  /// The state folder as the daemon leaves it when no job is under way.
  const std::set<std::string> idle_state_ = {"downloads", "upparat.lock"};

  /// Waits until the job that just ended is cleaned from `state` (its final update is
  /// confirmed after the cloud shows its status).
  void wait_clean(const fs::path& state) {
    EXPECT_TRUE(eventually([&] { return entries(state) == idle_state_; }, 30s))
        << "left: " << join(std::vector<std::string>(entries(state).begin(), entries(state).end()));
  }
};

// A state file the daemon cannot use (a newer format, cut short, not JSON, a FIFO, a link) is
// ignored with an error naming it; the daemon neither hangs nor follows the link, and the next
// job runs to its end with a clean state folder.
TEST_F(E2eHostileTest, AnUnusableStateFileIsIgnoredAndTheNextJobSucceeds) {
  default_hooks();
  hooks_["restart"] = hook("restart", "exit 0");
  const fs::path state = path("state");
  fs::create_directory(state);
  fs::permissions(state, fs::perms::owner_all);
  const fs::path config = write_config(state);
  const fs::path outside = path("outside.txt");
  std::ofstream(outside) << "precious\n";

  struct Plant {
    std::string name;
    std::function<void(const fs::path&)> plant;
    std::string reason;  // in the daemon's error
  };
  const auto text = [](std::string content) {
    return [content](const fs::path& file) { std::ofstream(file, std::ios::binary) << content; };
  };
  const std::vector<Plant> plants = {
      {"newer-format",
       text(R"({"format":2,"job_id":"upparat_future","execution_number":1,"step":"install"})"),
       "unknown format"},
      {"truncated", text(R"({"format":1,"job_id":"upparat_cut","execution_nu)"), "state.json"},
      {"not-json",
       text(std::string("\x7f"
                        "ELF\x02\x01\x01\0\0garbage",
                        16)),
       "state.json"},
      {"fifo", [](const fs::path& file) { ASSERT_EQ(::mkfifo(file.c_str(), 0600), 0); },
       "not a regular file"},
      {"symlink", [&](const fs::path& file) { fs::create_symlink(outside, file); },
       "symbolic link"},
  };
  int n = 0;
  for (const auto& p : plants) {
    SCOPED_TRACE(p.name);
    ++n;
    fs::remove(state / "state.json");
    p.plant(state / "state.json");
    ASSERT_FALSE(HasFatalFailure());
    auto daemon = start_daemon(config, "upparat-" + p.name);
    auto error = daemon.wait_for_line("ignoring the saved job state", 30s);
    ASSERT_TRUE(error) << daemon.log_tail();
    EXPECT_NE(error->find(p.reason), std::string::npos) << *error;
    wait_idle(daemon);
    const std::string job = "upparat_state_" + std::to_string(n);
    const std::string version = "2." + std::to_string(n) + ".0";
    create_job(job, document(version, version));
    auto view = wait_status(job, "SUCCEEDED");
    EXPECT_EQ(view.state, "complete_soft_restart") << join(view.states);
    EXPECT_EQ(installed_version(), version);
    wait_clean(state);
    auto stopped = daemon.stop();
    ASSERT_TRUE(stopped);
    EXPECT_TRUE(stopped->success()) << stopped->describe() << "\n" << daemon.log_tail();
    EXPECT_EQ(read_text(outside), "precious\n") << "the link's target was written";
    EXPECT_EQ(entries(state), idle_state_);
  }
}

// Job ids a forged notify or job list can carry ('/', "..", NUL, 200 characters) are never
// acted on, nor are messages over 128 KiB: no request names them, no file is made from them,
// and a real job still runs.
TEST_F(E2eHostileTest, HostileJobIdsFromTheBrokerAreIgnored) {
  default_hooks();
  hooks_["restart"] = hook("restart", "exit 0");
  auto daemon = start_daemon(write_config(path("state")));
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  auto client = MqttTestClient::connect(broker_->plain_uri());
  ASSERT_TRUE(client) << client.error().message();
  const std::string jobs = std::string("$aws/things/") + kThing + "/jobs/";
  ASSERT_TRUE(client->subscribe(jobs + "#"));

  const std::vector<std::string> hostile = {
      "upparat_../../x",     "upparat_a/b", "upparat_" + std::string(200, 'a'),
      R"(upparat_a\u0000b)", "upparat_..",  "upparat_$next",
      "upparat_a b"};
  std::string summaries;
  for (const auto& id : hostile) {
    summaries += std::string(summaries.empty() ? "" : ",") + R"({"jobId":")" + id +
                 R"(","queuedAt":1,"lastUpdatedAt":1,"executionNumber":1,"versionNumber":1})";
  }
  ASSERT_TRUE(
      client->publish(jobs + "notify", R"({"timestamp":1,"jobs":{"QUEUED":[)" + summaries + "]}}"));
  ASSERT_TRUE(client->publish(jobs + "get/accepted", R"({"timestamp":1,"inProgressJobs":[],)"
                                                     R"("queuedJobs":[)" +
                                                         summaries + "]}"));
  // Over AWS's 128 KiB MQTT limit: AWS never delivers such a message; a forged one changes
  // nothing either.
  const std::string big = R"({"timestamp":1,"jobs":{"QUEUED":[{"jobId":"upparat_big","pad":")" +
                          std::string(128 * 1024 + 1, 'p') + R"("}]}})";
  ASSERT_TRUE(client->publish(jobs + "notify", big));
  ASSERT_TRUE(client->publish(jobs + "get/accepted", big));
  wait_idle(daemon);
  create_job("upparat_after", document("2.0.0", "2.0.0"));
  auto view = wait_status("upparat_after", "SUCCEEDED");
  EXPECT_EQ(view.state, "complete_soft_restart") << join(view.states);
  wait_clean(path("state"));

  // Every request the daemon sent about a job (describe, update) names the real one.
  const auto ends_with = [](const std::string& text, const std::string& end) {
    return text.size() >= end.size() &&
           text.compare(text.size() - end.size(), end.size(), end) == 0;
  };
  int requests = 0;
  for (const auto& m : client->take_all()) {
    const std::string rest = m.topic.substr(jobs.size());
    if (rest != "get" && (ends_with(rest, "/get") || ends_with(rest, "/update"))) {
      ++requests;
      EXPECT_EQ(rest.substr(0, rest.find('/')), "upparat_after") << m.topic;
    }
  }
  EXPECT_GT(requests, 0);
  auto stopped = daemon.stop();
  ASSERT_TRUE(stopped);
  EXPECT_TRUE(stopped->success()) << stopped->describe() << "\n" << daemon.log_tail();
  EXPECT_EQ(entries(path("state")), idle_state_);
  EXPECT_FALSE(fs::exists(path("x")));
}

// A URL with user information: the credentials go to the server only (as Basic
// authentication; S3 ignores them next to a pre-signed query), never into a log or the cloud.
TEST_F(E2eHostileTest, UserInformationInTheUrlIsNeverShown) {
  default_hooks();
  hooks_["restart"] = hook("restart", "exit 0");
  auto daemon = start_daemon(write_config(path("state")));
  wait_idle(daemon);
  auto url = emulator_->presign(kBucket, kKey);
  ASSERT_TRUE(url) << url.error().message();
  const auto scheme_end = url->find("://") + 3;
  const std::string with_user =
      url->substr(0, scheme_end) + "operator:s3cr3t-pw@" + url->substr(scheme_end);
  const std::string doc =
      R"({"action":"update","version":"2.0.0","file":")" + with_user + R"(","meta":"2.0.0"})";
  create_job("upparat_userinfo", doc);
  auto view = wait_status("upparat_userinfo", "SUCCEEDED");
  EXPECT_EQ(view.state, "complete_soft_restart") << join(view.states);
  EXPECT_EQ(installed_version(), "2.0.0");
  wait_clean(path("state"));
  auto stopped = daemon.stop();
  ASSERT_TRUE(stopped);
  EXPECT_EQ(daemon.log_text().find("s3cr3t-pw"), std::string::npos) << daemon.log_tail();
  EXPECT_EQ(daemon.log_text().find("operator"), std::string::npos) << daemon.log_tail();
  EXPECT_EQ(entries(path("state")), idle_state_);
}

// A job document of 32 KiB (AWS's limit at creation) reaches the hooks whole.
TEST_F(E2eHostileTest, ADocumentOf32KiBRunsToTheEnd) {
  default_hooks();
  hooks_["restart"] = hook("restart", "exit 0");
  auto daemon = start_daemon(write_config(path("state")));
  wait_idle(daemon);
  const std::string empty = document("2.0.0", "");
  const std::string meta(32768 - empty.size(), 'm');
  const std::string doc = document("2.0.0", meta);
  ASSERT_EQ(doc.size(), 32768u);
  create_job("upparat_big", doc);
  auto view = wait_status("upparat_big", "SUCCEEDED");
  EXPECT_EQ(view.state, "complete_soft_restart") << join(view.states);
  EXPECT_EQ(installed_version(), meta) << "the install hook's $3";
  wait_clean(path("state"));
  auto stopped = daemon.stop();
  ASSERT_TRUE(stopped);
  EXPECT_TRUE(stopped->success()) << stopped->describe() << "\n" << daemon.log_tail();
  EXPECT_EQ(entries(path("state")), idle_state_);
}

// A hook that fails with 10 KiB of output, invalid UTF-8, control and format characters: the
// job FAILS with a statusDetails message AWS accepts (the emulator refuses any other).
TEST_F(E2eHostileTest, AHooksHostileTextReachesTheCloudSanitised) {
  default_hooks();
  hooks_["install"] =
      hook("install",
           "head -c 10240 /dev/zero | tr '\\0' 'x'\n"
           "printf 'bad\\001\\033[31m\\377\\376 \\342\\200\\256evil\\357\\273\\277'\n"
           "exit 1");
  auto daemon = start_daemon(write_config(path("state")));
  wait_idle(daemon);
  create_job("upparat_text", document("2.0.0", "2.0.0"));
  auto view = wait_status("upparat_text", "FAILED");
  EXPECT_EQ(view.state, "installation_hook_failed") << join(view.states);
  EXPECT_TRUE(is_valid_status_detail(view.message)) << view.message;
  EXPECT_NE(view.message.find("bad"), std::string::npos) << view.message;
  EXPECT_EQ(view.message.find('\x1b'), std::string::npos);
  EXPECT_NE(view.message.find("\xEF\xBF\xBD"), std::string::npos) << "U+FFFD for \\377";
  EXPECT_EQ(view.message.find("\xE2\x80\xAE"), std::string::npos) << "U+202E removed";
  EXPECT_EQ(installed_version(), "1.0.0");
  wait_clean(path("state"));
  auto stopped = daemon.stop();
  ASSERT_TRUE(stopped);
  EXPECT_TRUE(stopped->success()) << stopped->describe() << "\n" << daemon.log_tail();
  EXPECT_EQ(entries(path("state")), idle_state_);
}

// A FIFO planted at the download's name must neither block the daemon nor be taken for the
// download: the job fails naming it, the daemon removes it with the job's files, and the next
// job runs.
TEST_F(E2eHostileTest, AFifoAtTheDownloadPathFailsTheJobWithoutHanging) {
  default_hooks();
  hooks_["restart"] = hook("restart", "exit 0");
  auto daemon = start_daemon(write_config(path("state")));
  wait_idle(daemon);
  ASSERT_EQ(::mkfifo(path("state/downloads/upparat_fifo.part").c_str(), 0600), 0);
  create_job("upparat_fifo", document("2.0.0", "2.0.0"));
  auto view = wait_status("upparat_fifo", "FAILED");
  EXPECT_EQ(view.state, "download_hook_failed") << join(view.states);
  EXPECT_NE(view.message.find("upparat_fifo.part is not a regular file"), std::string::npos)
      << view.message;
  EXPECT_EQ(installed_version(), "1.0.0");
  wait_clean(path("state"));
  // The ended job's names in the download folder are cleaned, whatever was planted there.
  EXPECT_EQ(entries(path("state/downloads")), std::set<std::string>{});
  create_job("upparat_after_fifo", document("2.0.0", "2.0.0"));
  auto after = wait_status("upparat_after_fifo", "SUCCEEDED");
  EXPECT_EQ(after.state, "complete_soft_restart") << join(after.states);
  wait_clean(path("state"));
  auto stopped = daemon.stop();
  ASSERT_TRUE(stopped);
  EXPECT_TRUE(stopped->success()) << stopped->describe() << "\n" << daemon.log_tail();
  EXPECT_EQ(entries(path("state")), idle_state_);
}

// The real binary: plain_tcp is warned about at every start and check; a plugin that its group
// or others could change is refused by --check-config (exit 78) and by a start.
TEST_F(E2eHostileTest, PlainTcpIsWarnedAboutAndAPluginOthersCanChangeIsRefused) {
  default_hooks();
  const fs::path plugins = path("plugins");
  fs::create_directory(plugins);
  const auto k755 = fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                    fs::perms::others_read | fs::perms::others_exec;
  fs::permissions(plugins, k755);
  const fs::path copy = plugins / "upparat-script.so";
  fs::copy_file(UPPARAT_SCRIPT_PLUGIN, copy);
  fs::permissions(copy, k755);
  const fs::path config = write_config(path("state"));
  std::string text = read_text(config);
  const std::string original = UPPARAT_SCRIPT_PLUGIN;
  text.replace(text.find(original), original.size(), copy.string());
  std::ofstream(config) << text;

  auto checked = run_process({UPPARAT_DAEMON_BIN, "-c", config.string(), "--check-config"});
  ASSERT_TRUE(checked) << checked.error().message();
  EXPECT_TRUE(checked->status.success()) << checked->output;
  EXPECT_NE(checked->output.find("plain_tcp = true: MQTT WITHOUT TLS to 127.0.0.1"),
            std::string::npos)
      << checked->output;

  fs::permissions(copy, fs::perms::group_write, fs::perm_options::add);
  const std::string refusal =
      copy.string() + ": refused: " + copy.string() +
      " is writable by its group or others (mode 0775), so another user could change what the "
      "daemon runs: run chmod go-w " +
      copy.string();
  auto refused = run_process({UPPARAT_DAEMON_BIN, "-c", config.string(), "--check-config"});
  ASSERT_TRUE(refused) << refused.error().message();
  EXPECT_EQ(refused->status.exit_code, 78) << refused->output;
  EXPECT_NE(refused->output.find(refusal), std::string::npos) << refused->output;

  auto daemon = start_daemon(config);
  auto exited = daemon.wait_exit(30s);
  ASSERT_TRUE(exited) << exited.error().message();
  EXPECT_FALSE(exited->success());
  EXPECT_NE(daemon.log_text().find(refusal), std::string::npos) << daemon.log_tail();
}

}  // namespace
}  // namespace upparat::test
