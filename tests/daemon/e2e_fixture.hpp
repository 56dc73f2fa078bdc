#pragma once

// The end-to-end fixture shared by tests/daemon/e2e_*_test.cpp: the real `upparat` binary with
// the real script plugin and hook scripts, against a real mosquitto and the Jobs + S3
// emulator. Tests check the cloud's view (the emulator's execution and its status history),
// as an operator would see it. Every test checks that no daemon log holds a pre-signed
// URL's signature.

#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support/binaries.hpp"
#include "support/certificates.hpp"
#include "support/emulator_fixture.hpp"
#include "support/mosquitto.hpp"
#include "support/process.hpp"
#include "support/temp_dir.hpp"

namespace upparat::test {

namespace e2e {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

inline constexpr const char* kThing = "thing-e2e";
inline constexpr const char* kBucket = "demo-bucket";
inline constexpr const char* kKey = "fw.bin";

/// One execution's cloud view: final status, state, and the states reported on the way.
struct CloudView {
  std::string status;
  std::string state;
  std::string message;
  std::vector<std::string> states;  ///< statusDetails.state of each history entry, in order
};

inline std::optional<CloudView> parse_execution(const std::string& json) {
  rapidjson::Document d;
  d.Parse(json.c_str());
  if (d.HasParseError() || !d.IsObject() || !d.HasMember("executions") ||
      !d["executions"].IsArray() || d["executions"].Empty()) {
    return std::nullopt;
  }
  const auto& e = d["executions"][0];
  CloudView view;
  view.status = e["status"].GetString();
  if (e.HasMember("statusDetails") && e["statusDetails"].IsObject()) {
    const auto& sd = e["statusDetails"];
    if (sd.HasMember("state") && sd["state"].IsString()) {
      view.state = sd["state"].GetString();
    }
    if (sd.HasMember("message") && sd["message"].IsString()) {
      view.message = sd["message"].GetString();
    }
  }
  if (e.HasMember("history") && e["history"].IsArray()) {
    for (const auto& h : e["history"].GetArray()) {
      if (h.HasMember("statusDetails") && h["statusDetails"].IsObject() &&
          h["statusDetails"].HasMember("state") && h["statusDetails"]["state"].IsString()) {
        view.states.push_back(h["statusDetails"]["state"].GetString());
      }
    }
  }
  return view;
}

inline std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& i : items) {
    out += (out.empty() ? "" : ", ") + i;
  }
  return out;
}

inline bool contains(const std::vector<std::string>& items, const std::string& item) {
  return std::find(items.begin(), items.end(), item) != items.end();
}

inline std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes (an event, not a sleep).
inline bool eventually(const std::function<bool()>& condition,
                       std::chrono::milliseconds timeout = 60s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) {
      return true;
    }
    std::this_thread::sleep_for(50ms);
  }
  return condition();
}

/// What write_config() puts in the daemon's TOML file.
struct DaemonConfig {
  fs::path state_dir;
  std::string thing = kThing;
  /// [broker] over mTLS instead of plain TCP.
  std::optional<std::uint16_t> tls_port;
  fs::path cafile, certfile, keyfile;
  /// Appended after the generated tables (before [plugins.script]).
  std::string extra;
  /// Keys appended to the generated [jobs] table.
  std::string jobs;
  /// Keys appended to the generated [download] table.
  std::string download;
  std::string file_name = "upparat.toml";
};

class E2eFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    UPPARAT_SKIP_UNLESS_EXECUTABLE(kMosquittoPath);
    UPPARAT_SKIP_UNLESS_EXECUTABLE(UPPARAT_DAEMON_BIN);
    UPPARAT_SKIP_UNLESS_EXECUTABLE(UPPARAT_EMULATOR_BIN);
    // The fixture finds the emulator in $PATH when the support library was built without
    // its path.
    std::string path = fs::path(UPPARAT_EMULATOR_BIN).parent_path().string() + ":" +
                       (std::getenv("PATH") ? std::getenv("PATH") : "/usr/bin:/bin");
    ::setenv("PATH", path.c_str(), 1);

    auto dir = TempDir::create("e2e-daemon");
    ASSERT_TRUE(dir) << dir.error().message();
    dir_.emplace(std::move(*dir));
    auto broker = start_broker();
    ASSERT_TRUE(broker) << broker.error().message();
    broker_.emplace(std::move(*broker));
    EmulatorOptions options;
    options.broker_uri = broker_->plain_uri();
    auto emulator = EmulatorFixture::start(options);
    ASSERT_TRUE(emulator) << emulator.error().message();
    emulator_.emplace(std::move(*emulator));
    firmware_ = std::string(300 * 1024, 'x');
    for (std::size_t i = 0; i < firmware_.size(); i += 7) {
      firmware_[i] = static_cast<char>('a' + i % 26);
    }
    auto put = emulator_->put_object(kBucket, kKey, firmware_);
    ASSERT_TRUE(put) << put.error().message();
    write_version("1.0.0");
  }

  /// The broker of the test; a fixture for TLS overrides it (keeping a plain listener for
  /// the emulator).
  virtual Result<Mosquitto> start_broker() { return Mosquitto::start(); }

  void TearDown() override {
    // Nothing the daemon logged may hold a pre-signed URL's signature.
    for (const auto& log : logs_) {
      std::string text = read_text(log);
      EXPECT_EQ(text.find("X-Amz-Signature"), std::string::npos) << "in " << log;
    }
  }

  fs::path path(const std::string& name) const { return dir_->path() / name; }

  void write_version(const std::string& version, const std::string& file = "installed_version") {
    std::ofstream(path(file)) << version << "\n";
  }
  std::string installed_version(const std::string& file = "installed_version") const {
    std::ifstream in(path(file));
    std::string v;
    std::getline(in, v);
    return v;
  }

  fs::path hook(const std::string& name, const std::string& body) {
    auto p = path("hooks/" + name + ".sh");
    fs::create_directories(p.parent_path());
    std::ofstream(p) << "#!/bin/sh\n" << body << "\n";
    fs::permissions(p, fs::perms::owner_all);
    return p;
  }

  /// The classic example hooks: version prints the installed version, install "installs"
  /// by copying the file and recording the job's meta as the new version.
  void default_hooks() {
    const std::string d = dir_->path().string();
    hooks_["version"] = hook("version", "cat '" + d + "/installed_version'");
    hooks_["install"] = hook("install", "echo \"installing $4\"\ncp \"$4\" '" + d +
                                            "/installed.bin' || exit 1\n"
                                            "echo \"$3\" > '" +
                                            d +
                                            "/installed_version'\n"
                                            "echo done");
    hooks_["ready"] = hook("ready", "exit 0");
  }

  /// A restart hook that, like a reboot, stops the daemon (SIGTERM) and never returns in time.
  void rebooting_restart_hook() {
    hooks_["restart"] =
        hook("restart", "echo reboot >> '" + path("reboots").string() + "'\nkill -TERM $(cat '" +
                            path("daemon.pid").string() + "')\nsleep 2\nexit 0");
  }

  // --- Hooks that stop in a step until the test acts (events, not sleeps) -----------------

  /// Shell text for the start of a hook of `step`: if the file "block_<step>" exists, the hook
  /// removes it (so it blocks once), writes its PID to "<step>_entered" and waits until the
  /// file "release" exists (at most 60 s), then fails. Otherwise it goes on with the body.
  std::string gate(const std::string& step) const {
    const std::string block = path("block_" + step).string();
    const std::string entered = path(step + "_entered").string();
    return "if [ -e '" + block + "' ]; then\n  rm -f '" + block + "'\n  echo $$ > '" + entered +
           ".tmp' && mv '" + entered + ".tmp' '" + entered + "'\n  n=0\n  while [ ! -e '" +
           path("release").string() +
           "' ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done\n  exit 1\nfi\n";
  }

  /// Hooks for every step, each blockable with block(step): version, download (gate, allows),
  /// install (logs "$3" to install_log, copies the file, records "$3" as version), restart
  /// (a reboot while "reboot_once" exists, which it removes; else a soft restart), ready.
  void gated_hooks() {
    const std::string d = dir_->path().string();
    hooks_["version"] = hook("version", gate("version") + "cat '" + d + "/installed_version'");
    hooks_["download"] = hook("download", gate("download") + "exit 0");
    hooks_["install"] =
        hook("install", gate("install") + "echo \"$3\" >> '" + d + "/install_log'\ncp \"$4\" '" +
                            d + "/installed.bin' || exit 1\necho \"$3\" > '" + d +
                            "/installed_version'\necho done");
    hooks_["restart"] = hook(
        "restart", gate("restart") + "if [ -e '" + d + "/reboot_once' ]; then\n  rm -f '" + d +
                       "/reboot_once'\n  echo reboot >> '" + d + "/reboots'\n  kill -TERM $(cat '" +
                       d + "/daemon.pid')\n  sleep 2\nfi\nexit 0");
    hooks_["ready"] = hook("ready", gate("ready") + "exit 0");
  }

  void block(const std::string& step) { std::ofstream(path("block_" + step)) << "1\n"; }
  void release() { std::ofstream(path("release")) << "1\n"; }

  /// Waits until the blocked hook of `step` runs; returns its PID (0 on time-out).
  pid_t wait_entered(const std::string& step, std::chrono::seconds timeout = 60s) {
    auto file = path(step + "_entered");
    if (!eventually([&] { return fs::exists(file); }, timeout)) {
      return 0;
    }
    return static_cast<pid_t>(std::atol(read_text(file).c_str()));
  }

  std::vector<std::string> install_log() const {
    std::vector<std::string> lines;
    std::ifstream in(path("install_log"));
    for (std::string line; std::getline(in, line);) {
      lines.push_back(line);
    }
    return lines;
  }

  /// GET /s3/stats of the firmware: body bytes sent so far.
  std::uint64_t s3_body_bytes_sent() const {
    auto json =
        emulator_->request("GET", std::string("/s3/stats?bucket=") + kBucket + "&key=" + kKey);
    if (!json) {
      return 0;
    }
    rapidjson::Document d;
    d.Parse(json->c_str());
    if (d.HasParseError() || !d.IsObject() || !d.HasMember("bodyBytesSent") ||
        !d["bodyBytesSent"].IsUint64()) {
      return 0;
    }
    return d["bodyBytesSent"].GetUint64();
  }

  // --- Configuration and processes ----------------------------------------------------------

  fs::path write_config(const fs::path& state_dir, const std::string& extra = "") {
    DaemonConfig c;
    c.state_dir = state_dir;
    c.extra = extra;
    return write_config(c);
  }

  fs::path write_config(const DaemonConfig& c) {
    std::string plugin = "[plugins.script]\npath = \"" + std::string(UPPARAT_SCRIPT_PLUGIN) +
                         "\"\nkill_grace_seconds = 2\n";
    for (const auto& [step, p] : hooks_) {
      plugin += step + " = \"" + p.string() + "\"\n";
    }
    std::string broker = "[broker]\nhost = \"127.0.0.1\"\n";
    if (c.tls_port) {
      broker += "port = " + std::to_string(*c.tls_port) + "\ncafile = \"" + c.cafile.string() +
                "\"\ncertfile = \"" + c.certfile.string() + "\"\nkeyfile = \"" +
                c.keyfile.string() + "\"\n";
    } else {
      broker += "port = " + std::to_string(broker_->port()) + "\nplain_tcp = true\n";
    }
    std::string text = "[service]\nstate_directory = \"" + c.state_dir.string() + "\"\n" + broker +
                       "thing_name = \"" + c.thing +
                       "\"\nreconnect_min = 1\nreconnect_max = 2\n"
                       "[jobs]\nupdate_timeout = 5\n" +
                       c.jobs + "[download]\nallow_http = true\n" + c.download +
                       "[retry]\nretry_interval = 1\nmax_retries = 3\n" + c.extra + plugin;
    auto file = path(c.file_name);
    std::ofstream(file) << text;
    return file;
  }

  ServiceProcess start_daemon(const fs::path& config, const std::string& name = "upparat",
                              std::vector<std::pair<std::string, std::string>> env = {}) {
    ProcessOptions o;
    o.argv = {UPPARAT_DAEMON_BIN, "-c", config.string(), "-v"};
    o.env = std::move(env);
    o.name = name;
    o.log_path = path(name + "-" + std::to_string(logs_.size()) + ".log");
    o.stop_grace = 15s;
    logs_.push_back(o.log_path);
    auto p = ServiceProcess::start(o);
    EXPECT_TRUE(p) << p.error().message();
    std::ofstream(path("daemon.pid")) << p->pid() << "\n";
    return std::move(*p);
  }

  // --- The cloud ----------------------------------------------------------------------------

  /// Creates job `job_id` and returns once the daemon is inside step `where`: a hook step
  /// (whose hook is blocked, see gated_hooks()) or "downloading" (the transfer, stalled by an S3
  /// fault). For "ready" the restart hook reboots first, and `daemon` becomes the daemon that
  /// continues after the reboot. Returns the blocked hook's PID (0 for "downloading"); check
  /// HasFatalFailure() after the call.
  pid_t run_job_into(const std::string& where, const std::string& job_id, const fs::path& config,
                     std::optional<ServiceProcess>& daemon) {
    pid_t hook_pid = 0;
    if (where == "ready") {
      std::ofstream(path("reboot_once")) << "1\n";
      block("ready");
      create_job(job_id, document("2.0.0", "2.0.0"));
      auto exited = daemon->wait_exit(60s);
      EXPECT_TRUE(exited) << exited.error().message();
      if (!exited) {
        return 0;
      }
      daemon.reset();
      daemon.emplace(start_daemon(config, "upparat-after-reboot"));
      hook_pid = wait_entered("ready");
      EXPECT_NE(hook_pid, 0) << daemon->log_tail();
    } else if (where == "downloading") {
      EXPECT_TRUE(emulator_->add_s3_fault(kBucket, kKey,
                                          R"("stallAfterBytes":65536,"stallMs":8000,"times":1)"));
      create_job(job_id, document("2.0.0", "2.0.0"));
      EXPECT_TRUE(eventually([&] {
        std::error_code ec;
        auto size = fs::file_size(path("state/downloads/" + job_id + ".part"), ec);
        return (!ec && size > 0) || s3_body_bytes_sent() > 0;
      })) << daemon->log_tail();
    } else {
      block(where);
      create_job(job_id, document("2.0.0", "2.0.0"));
      hook_pid = wait_entered(where);
      EXPECT_NE(hook_pid, 0) << daemon->log_tail();
    }
    return hook_pid;
  }

  std::string document(const std::string& version, const std::string& meta,
                       bool force = false) const {
    return std::string("{\"action\":\"update\",\"version\":\"") + version + "\",\"file\":\"" +
           "${aws:iot:s3-presigned-url:https://" + kBucket + ".s3.amazonaws.com/" + kKey + "}" +
           "\",\"force\":" + (force ? "true" : "false") + ",\"meta\":\"" + meta + "\"}";
  }

  void create_job(const std::string& job_id, const std::string& doc,
                  const std::string& thing = kThing,
                  std::optional<int> url_expiry_seconds = std::nullopt) {
    auto r = emulator_->create_job(job_id, doc, {thing}, std::nullopt, url_expiry_seconds);
    ASSERT_TRUE(r) << r.error().message();
  }

  std::optional<CloudView> view(const std::string& job_id,
                                const std::string& thing = kThing) const {
    auto json = emulator_->describe(thing, job_id);
    if (!json) {
      return std::nullopt;
    }
    return parse_execution(*json);
  }

  /// Polls the emulator until the execution has `status` (generous bound).
  CloudView wait_status(const std::string& job_id, const std::string& status,
                        std::chrono::seconds timeout = 60s, const std::string& thing = kThing) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    CloudView last;
    while (std::chrono::steady_clock::now() < deadline) {
      if (auto v = view(job_id, thing)) {
        last = *v;
        if (v->status == status) {
          return *v;
        }
      }
      std::this_thread::sleep_for(200ms);
    }
    ADD_FAILURE() << job_id << " did not reach " << status << " within " << timeout.count()
                  << " s; last: " << last.status << " " << last.state << " (" << last.message
                  << ") history: " << join(last.states);
    return last;
  }

  /// Polls until the cloud's history of the execution holds `state`.
  bool wait_state_reported(const std::string& job_id, const std::string& state,
                           std::chrono::seconds timeout = 60s) {
    return eventually(
        [&] {
          auto v = view(job_id);
          return v && contains(v->states, state);
        },
        timeout);
  }

  std::optional<TempDir> dir_;
  std::optional<Mosquitto> broker_;
  std::optional<EmulatorFixture> emulator_;
  std::string firmware_;
  std::map<std::string, fs::path> hooks_;
  std::vector<fs::path> logs_;
};

}  // namespace e2e
}  // namespace upparat::test
