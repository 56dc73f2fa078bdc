// Seeded chaos runs: the real daemon with the script plugin against the Jobs + S3 emulator and
// a real mosquitto, while faults land at random moments. Each run prints its seed; a failed
// run is replayed exactly with --seed S --runs 1 (the moments are drawn from the seed; the
// machine's timing still varies a little).
//
//   upparat_chaos [--runs N] [--seed S] [--max-seconds T] [--verbose]
//
// A run queues one or two jobs (sometimes cancels one), injects up to four faults at random
// moments in its first seconds (SIGKILL of the daemon and a restart, broker restart, HTTP cut
// by FIN or RST, a burst of 503, URL expiry, an install hook that hangs past its deadline,
// SIGTERM and a restart), then lets everything settle and checks:
//   - each job's final status is the right one (CANCELED after a cancel; SUCCEEDED, or FAILED
//     installation_hook_failed when its install hook hung);
//   - a SUCCEEDED job's installed file is identical to the source;
//   - no install ran twice for a job, except after the daemon died during that install;
//   - no process is left behind (no hook outlives the daemon's shutdown);
//   - the state folder holds no partial or temporary file of an ended job;
//   - bytes fetched <= 1.05 x size + what was in flight at each fault that cuts a transfer.
// The output ends with a table: runs, faults injected by kind, failures with their seeds.
// Exit status 0 when every run passed, 1 otherwise, 2 for a bad command line.

#include <signal.h>
#include <unistd.h>

#include <rapidjson/document.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/emulator_fixture.hpp"
#include "support/mosquitto.hpp"
#include "support/process.hpp"
#include "support/temp_dir.hpp"

namespace upparat::test::chaos {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* kBucket = "chaos";
constexpr std::uint64_t kRateBytesPerSecond = 1024 * 1024;
/// A transfer cut can waste what the kernel and curl held in flight: generous for loopback.
constexpr std::uint64_t kInFlightBytes = 1024 * 1024;

enum class Fault {
  Kill,
  BrokerRestart,
  HttpCut,
  HttpReset,
  Http503,
  UrlExpiry,
  HookHang,
  Sigterm,
  Cancel,
  kCount
};
constexpr std::array<const char*, static_cast<std::size_t>(Fault::kCount)> kFaultNames = {
    "sigkill",    "broker-restart", "http-fin", "http-rst", "http-503",
    "url-expiry", "hook-hang",      "sigterm",  "cancel"};

const char* name(Fault f) {
  return kFaultNames[static_cast<std::size_t>(f)];
}

struct Options {
  int runs = 10;
  std::optional<std::uint64_t> seed;
  double max_seconds = 0;  // 0 = no bound
  bool verbose = false;
};

struct JobPlan {
  std::string id;
  std::string key;
  std::string meta;
  std::string content;
  bool canceled = false;  ///< the cancel succeeded while the job was pending
};

struct PlannedFault {
  Clock::duration at;
  Fault fault;
  int job = 0;  ///< which job's object an S3 fault is on
};

struct RunResult {
  std::uint64_t seed = 0;
  std::vector<std::string> problems;
  std::map<Fault, int> injected;
  double seconds = 0;
};

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> lines_of(const fs::path& p) {
  std::vector<std::string> out;
  std::ifstream in(p);
  for (std::string line; std::getline(in, line);) {
    out.push_back(line);
  }
  return out;
}

/// The processes whose command line mentions `needle` (the run's folder): hooks left behind.
std::vector<pid_t> processes_mentioning(const std::string& needle) {
  std::vector<pid_t> out;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string pid = entry.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos) {
      continue;
    }
    std::string cmdline = read_file(entry.path() / "cmdline");
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    if (cmdline.find(needle) != std::string::npos) {
      out.push_back(static_cast<pid_t>(std::stol(pid)));
    }
  }
  return out;
}

/// What the emulator knows of one execution: status, statusDetails.state.
struct CloudState {
  std::string status;
  std::string state;
};

std::optional<CloudState> cloud_state(const EmulatorFixture& emulator, const std::string& thing,
                                      const std::string& job) {
  auto json = emulator.describe(thing, job);
  if (!json) {
    return std::nullopt;
  }
  rapidjson::Document d;
  d.Parse(json->c_str());
  if (d.HasParseError() || !d.HasMember("executions") || !d["executions"].IsArray() ||
      d["executions"].Empty()) {
    return std::nullopt;
  }
  const auto& e = d["executions"][d["executions"].Size() - 1];
  CloudState s;
  s.status = e["status"].GetString();
  if (e.HasMember("statusDetails") && e["statusDetails"].HasMember("state")) {
    s.state = e["statusDetails"]["state"].GetString();
  }
  return s;
}

std::uint64_t bytes_sent(const EmulatorFixture& emulator, const std::string& key) {
  auto json = emulator.request("GET", std::string("/s3/stats?bucket=") + kBucket + "&key=" + key);
  if (!json) {
    return 0;
  }
  rapidjson::Document d;
  d.Parse(json->c_str());
  if (d.HasParseError() || !d.HasMember("bodyBytesSent")) {
    return 0;
  }
  return d["bodyBytesSent"].GetUint64();
}

bool terminal(const std::string& status) {
  return status == "SUCCEEDED" || status == "FAILED" || status == "REJECTED" ||
         status == "CANCELED" || status == "TIMED_OUT" || status == "REMOVED";
}

/// One run, in its own folder, thing and S3 objects, on the shared broker and emulator.
class Run {
 public:
  Run(std::uint64_t seed, int index, Mosquitto& broker, EmulatorFixture& emulator, bool verbose)
      : rng_(seed), broker_(broker), emulator_(emulator), verbose_(verbose) {
    result_.seed = seed;
    thing_ = "chaos-" + std::to_string(index);
  }

  RunResult execute() {
    const auto start = Clock::now();
    auto dir = TempDir::create("upparat-chaos");
    if (!dir) {
      return problem("cannot create a folder: " + dir.error().message());
    }
    dir_.emplace(std::move(*dir));
    plan();
    write_hooks();
    write_config();
    if (!put_objects()) {
      return result_;
    }
    start_daemon();
    for (std::size_t i = 0; i < jobs_.size(); ++i) {
      auto r = emulator_.create_job(jobs_[i].id, document(jobs_[i]), {thing_}, std::nullopt, 60);
      if (!r) {
        return problem("create-job: " + r.error().message());
      }
    }
    inject_faults(start);
    settle();
    check();
    result_.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    return result_;
  }

 private:
  RunResult& problem(const std::string& text) {
    result_.problems.push_back(text);
    return result_;
  }

  std::uint64_t uniform(std::uint64_t lo, std::uint64_t hi) {
    return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng_);
  }

  fs::path path(const std::string& name) const { return dir_->path() / name; }

  void plan() {
    const int count = uniform(0, 2) == 0 ? 2 : 1;
    for (int i = 0; i < count; ++i) {
      JobPlan j;
      j.id = "upparat_" + thing_ + "_" + std::to_string(i);
      j.key = thing_ + "/fw" + std::to_string(i) + ".bin";
      j.meta = "2." + std::to_string(i + 1);
      j.content.resize(uniform(256, 2048) * 1024);
      for (auto& c : j.content) {
        c = static_cast<char>(rng_());
      }
      jobs_.push_back(std::move(j));
    }
    const int faults = static_cast<int>(uniform(0, 4));
    for (int i = 0; i < faults; ++i) {
      PlannedFault f;
      f.at = std::chrono::milliseconds(uniform(0, 4000));
      f.fault = static_cast<Fault>(uniform(0, static_cast<std::uint64_t>(Fault::kCount) - 1));
      f.job = static_cast<int>(uniform(0, jobs_.size() - 1));
      faults_.push_back(f);
    }
    std::sort(faults_.begin(), faults_.end(),
              [](const PlannedFault& a, const PlannedFault& b) { return a.at < b.at; });
  }

  std::string document(const JobPlan& j) const {
    return std::string(R"({"action":"update","version":")") + j.meta +
           R"(","file":"${aws:iot:s3-presigned-url:https://)" + kBucket + ".s3.amazonaws.com/" +
           j.key + R"(}","meta":")" + j.meta + R"("})";
  }

  void write_hook(const std::string& step, const std::string& body) {
    const fs::path p = path("hooks/" + step + ".sh");
    fs::create_directories(p.parent_path());
    std::ofstream(p) << "#!/bin/sh\n" << body << "\n";
    fs::permissions(p, fs::perms::owner_all);
  }

  void write_hooks() {
    const std::string d = dir_->path().string();
    std::ofstream(path("installed_version")) << "1.0\n";
    write_hook("version", "cat '" + d + "/installed_version'");
    // The install logs its start and end; when "hang_install" exists it removes it, records
    // the job and hangs past the install deadline.
    write_hook("install", "echo \"start $3\" >> '" + d + "/install_log'\nif [ -e '" + d +
                              "/hang_install' ]; then\n  rm -f '" + d +
                              "/hang_install'\n  echo \"$3\" >> '" + d +
                              "/hung'\n  sleep 30\nfi\ncp \"$4\" '" + d +
                              "/installed_'\"$3\"'.bin' || exit 1\necho \"$3\" > '" + d +
                              "/installed_version'\necho \"end $3\" >> '" + d + "/install_log'");
    write_hook("restart", "exit 0");
    write_hook("ready", "exit 0");
  }

  void write_config() {
    const std::string d = dir_->path().string();
    std::ofstream(path("upparat.toml"))
        << "[service]\nstate_directory = \"" << d << "/state\"\n"
        << "[broker]\nhost = \"127.0.0.1\"\nport = " << broker_.port()
        << "\nplain_tcp = true\nthing_name = \"" << thing_
        << "\"\nreconnect_min = 1\nreconnect_max = 2\n"
        << "[jobs]\nupdate_timeout = 5\nstop_grace = 5\n"
        << "[jobs.deadlines]\ninstall = 3\n"
        << "[download]\nallow_http = true\nbackoff_cap = 2\nfsync_interval = 1\n"
        << "[retry]\nretry_interval = 1\nmax_retries = 5\n"
        << "[plugins.script]\npath = \"" << UPPARAT_SCRIPT_PLUGIN << "\"\nkill_grace_seconds = 1\n"
        << "version = \"" << d << "/hooks/version.sh\"\ninstall = \"" << d
        << "/hooks/install.sh\"\nrestart = \"" << d << "/hooks/restart.sh\"\nready = \"" << d
        << "/hooks/ready.sh\"\n";
  }

  bool put_objects() {
    for (const auto& j : jobs_) {
      const fs::path file = path(j.meta + ".source");
      std::ofstream(file, std::ios::binary) << j.content;
      if (auto st = emulator_.put_object_file(kBucket, j.key, file); !st) {
        problem("put-object: " + st.error().message());
        return false;
      }
      // Slow enough that faults land in the middle of the transfer.
      if (auto st =
              emulator_.add_s3_fault(kBucket, j.key,
                                     R"("rateLimitBytesPerSecond":)" +
                                         std::to_string(kRateBytesPerSecond) + R"(,"times":-1)");
          !st) {
        problem("s3 fault: " + st.error().message());
        return false;
      }
    }
    return true;
  }

  void start_daemon() {
    ProcessOptions o;
    o.argv = {UPPARAT_DAEMON_BIN, "-c", path("upparat.toml").string(), "-v"};
    o.name = "upparat";
    o.log_path = path("upparat-" + std::to_string(starts_++) + ".log");
    o.stop_grace = 15s;
    o.dump_log_on_failure = false;
    auto p = ServiceProcess::start(o);
    if (!p) {
      problem("cannot start the daemon: " + p.error().message());
      return;
    }
    daemon_.emplace(std::move(*p));
  }

  /// What systemd does when the unit's main process dies: the rest of its cgroup is killed.
  void kill_leftover_hooks() {
    for (pid_t pid : processes_mentioning(dir_->path().string())) {
      ::kill(pid, SIGKILL);
    }
  }

  void inject(const PlannedFault& f) {
    ++result_.injected[f.fault];
    const JobPlan& job = jobs_[static_cast<std::size_t>(f.job)];
    if (verbose_) {
      std::printf("  %s: %s\n", thing_.c_str(), name(f.fault));
    }
    switch (f.fault) {
      case Fault::Kill:
      case Fault::Sigterm:
        if (daemon_) {
          if (f.fault == Fault::Kill) {
            daemon_->kill9();
          } else {
            (void)daemon_->stop();
          }
          kill_leftover_hooks();
          ++cuts_;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(uniform(100, 800)));
        start_daemon();
        break;
      case Fault::BrokerRestart:
        if (auto st = broker_.restart(); !st) {
          problem("broker restart: " + st.error().message());
        }
        break;
      case Fault::HttpCut:
      case Fault::HttpReset:
        (void)emulator_.add_s3_fault(
            kBucket, job.key,
            std::string(f.fault == Fault::HttpCut ? R"("closeAfterBytes":)"
                                                  : R"("resetAfterBytes":)") +
                std::to_string(uniform(64, 512) * 1024) + R"(,"times":1)");
        ++cuts_;
        break;
      case Fault::Http503:
        (void)emulator_.add_s3_fault(
            kBucket, job.key, R"("errorStatus":503,"times":)" + std::to_string(uniform(1, 2)));
        break;
      case Fault::UrlExpiry:
        (void)emulator_.advance_clock(120s);
        ++cuts_;
        break;
      case Fault::HookHang:
        std::ofstream(path("hang_install")) << "1\n";
        break;
      case Fault::Cancel: {
        auto before = cloud_state(emulator_, thing_, job.id);
        if (before && !terminal(before->status) && emulator_.cancel_job(job.id, true)) {
          jobs_[static_cast<std::size_t>(f.job)].canceled = true;
        }
        break;
      }
      case Fault::kCount:
        break;
    }
  }

  void inject_faults(Clock::time_point start) {
    for (const auto& f : faults_) {
      std::this_thread::sleep_until(start + f.at);
      inject(f);
    }
  }

  bool all_ended() {
    for (const auto& j : jobs_) {
      auto s = cloud_state(emulator_, thing_, j.id);
      if (!s || !terminal(s->status)) {
        return false;
      }
    }
    return true;
  }

  /// The daemon ended its jobs locally too: no download and no saved job state left.
  bool idle() const {
    std::error_code ec;
    for (const auto& entry : fs::recursive_directory_iterator(path("state"), ec)) {
      if (entry.is_regular_file() && stray(entry.path())) {
        return false;
      }
    }
    return true;
  }

  static bool stray(const fs::path& file) {
    const std::string name = file.filename().string();
    return name.find(".part") != std::string::npos || name.find(".tmp") != std::string::npos ||
           name.rfind("upparat_", 0) == 0;
  }

  void settle() {
    // A hang marker no install consumed would hang a later run's install: gone now.
    fs::remove(path("hang_install"));
    if (!daemon_ || !daemon_->running()) {
      start_daemon();
    }
    const auto deadline = Clock::now() + 90s;
    while (Clock::now() < deadline && !all_ended()) {
      if (daemon_ && !daemon_->running()) {
        // Exit 75 (a step that did not stop) asks for a restart, as systemd would.
        start_daemon();
      }
      std::this_thread::sleep_for(200ms);
    }
    // The last update's answer may still be on its way; the daemon then removes the download.
    const auto idle_deadline = Clock::now() + 10s;
    while (Clock::now() < idle_deadline && !idle()) {
      std::this_thread::sleep_for(100ms);
    }
    if (daemon_) {
      auto stopped = daemon_->stop();
      if (!stopped) {
        problem("daemon stop: " + stopped.error().message());
      } else if (!stopped->success() && !(!stopped->signaled && stopped->exit_code == 75) &&
                 !(stopped->signaled && stopped->signal == SIGTERM)) {
        // 75: a step that did not stop asks for a restart. SIGTERM's default action: the
        // signal came before the daemon installed its handler (nothing to save yet).
        problem("the daemon ended with " + stopped->describe() + " on SIGTERM");
      }
    }
  }

  void check() {
    std::error_code ec;
    const auto installs = lines_of(path("install_log"));
    const auto hung = lines_of(path("hung"));
    for (const auto& j : jobs_) {
      auto s = cloud_state(emulator_, thing_, j.id);
      const std::string got = s ? s->status + " " + s->state : "<unknown>";
      const bool hang = std::find(hung.begin(), hung.end(), j.meta) != hung.end();
      if (j.canceled) {
        if (!s || s->status != "CANCELED") {
          problem(j.id + ": canceled, but ends " + got);
        }
      } else if (!s || s->status != "SUCCEEDED") {
        if (!(hang && s && s->status == "FAILED" && s->state == "installation_hook_failed")) {
          problem(j.id + ": ends " + got + (hang ? " (its install hook hung)" : ""));
        }
      } else if (read_file(path("installed_" + j.meta + ".bin")) != j.content) {
        problem(j.id + ": SUCCEEDED, but the installed file (" +
                std::to_string(fs::file_size(path("installed_" + j.meta + ".bin"), ec)) +
                " bytes) differs from the source (" + std::to_string(j.content.size()) + " bytes)");
      }
      // Installs: a start without an end is an install the daemon died in (or that hung).
      int starts = 0;
      int unfinished = 0;
      bool open = false;
      for (const auto& line : installs) {
        if (line == "start " + j.meta) {
          unfinished += open ? 1 : 0;
          open = true;
          ++starts;
        } else if (line == "end " + j.meta) {
          open = false;
        }
      }
      if (starts > 1 + unfinished) {
        problem(j.id + ": installed " + std::to_string(starts) + " times, " +
                std::to_string(unfinished) + " of them unfinished");
      }
      const std::uint64_t sent = bytes_sent(emulator_, j.key);
      const auto allowed =
          static_cast<std::uint64_t>(1.05 * static_cast<double>(j.content.size())) +
          cuts_ * kInFlightBytes;
      if (sent > allowed) {
        problem(j.id + ": fetched " + std::to_string(sent) + " bytes for " +
                std::to_string(j.content.size()) + " (allowed " + std::to_string(allowed) + ")");
      }
    }
    if (auto left = processes_mentioning(dir_->path().string()); !left.empty()) {
      problem(std::to_string(left.size()) + " process(es) left behind (first pid " +
              std::to_string(left.front()) + ")");
      kill_leftover_hooks();
    }
    for (const auto& entry : fs::recursive_directory_iterator(path("state"), ec)) {
      if (entry.is_regular_file() && stray(entry.path())) {
        problem("stray file in the state folder: " + entry.path().string());
      }
    }
    if (!result_.problems.empty()) {
      for (int i = 0; i < starts_; ++i) {
        const auto log = path("upparat-" + std::to_string(i) + ".log");
        std::string text = read_file(log);
        if (text.size() > 3000) {
          text = "..." + text.substr(text.size() - 3000);
        }
        result_.problems.push_back("log " + log.filename().string() + ":\n" + text);
      }
    }
  }

  std::mt19937_64 rng_;
  Mosquitto& broker_;
  EmulatorFixture& emulator_;
  bool verbose_;
  std::string thing_;
  std::optional<TempDir> dir_;
  std::vector<JobPlan> jobs_;
  std::vector<PlannedFault> faults_;
  std::optional<ServiceProcess> daemon_;
  int starts_ = 0;
  std::uint64_t cuts_ = 0;
  RunResult result_;
};

std::optional<Options> parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    try {
      if (a == "--runs" && has_value) {
        o.runs = std::stoi(argv[++i]);
      } else if (a == "--seed" && has_value) {
        o.seed = std::stoull(argv[++i]);
      } else if (a == "--max-seconds" && has_value) {
        o.max_seconds = std::stod(argv[++i]);
      } else if (a == "--verbose") {
        o.verbose = true;
      } else {
        return std::nullopt;
      }
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }
  if (o.runs < 1) {
    return std::nullopt;
  }
  return o;
}

int main_impl(int argc, char** argv) {
  auto options = parse(argc, argv);
  if (!options) {
    std::fprintf(stderr,
                 "usage: upparat_chaos [--runs N] [--seed S] [--max-seconds T] [--verbose]\n");
    return 2;
  }
  ::signal(SIGPIPE, SIG_IGN);
  auto broker = Mosquitto::start();
  if (!broker) {
    std::fprintf(stderr, "cannot start mosquitto: %s\n", broker.error().message().c_str());
    return 1;
  }
  EmulatorOptions eo;
  eo.broker_uri = broker->uri();
  eo.url_expiry_seconds = 60;
  auto emulator = EmulatorFixture::start(eo);
  if (!emulator) {
    std::fprintf(stderr, "cannot start the emulator: %s\n", emulator.error().message().c_str());
    return 1;
  }
  std::random_device device;
  std::uint64_t seed = options->seed.value_or((std::uint64_t{device()} << 32) | device());
  const auto start = Clock::now();
  std::map<Fault, int> injected;
  std::vector<RunResult> failures;
  int runs = 0;
  for (; runs < options->runs; ++runs) {
    if (options->max_seconds > 0 &&
        std::chrono::duration<double>(Clock::now() - start).count() > options->max_seconds) {
      std::printf("time bound of %.0f s reached\n", options->max_seconds);
      break;
    }
    Run run(seed, runs, *broker, *emulator, options->verbose);
    RunResult r = run.execute();
    std::string faults;
    for (const auto& [f, n] : r.injected) {
      injected[f] += n;
      faults += std::string(faults.empty() ? "" : ", ") + name(f) +
                (n > 1 ? " x" + std::to_string(n) : "");
    }
    std::printf("run %d seed %llu: %s in %.1f s (%s)\n", runs + 1,
                static_cast<unsigned long long>(r.seed), r.problems.empty() ? "ok" : "FAILED",
                r.seconds, faults.empty() ? "no faults" : faults.c_str());
    for (const auto& p : r.problems) {
      std::printf("    %s\n", p.c_str());
    }
    std::fflush(stdout);
    if (!r.problems.empty()) {
      failures.push_back(r);
    }
    seed = std::mt19937_64(seed)();  // the next run's seed follows from this one
  }
  std::printf("\n%-16s %s\n", "runs", std::to_string(runs).c_str());
  for (std::size_t i = 0; i < kFaultNames.size(); ++i) {
    const auto it = injected.find(static_cast<Fault>(i));
    std::printf("%-16s %d\n", kFaultNames[i], it == injected.end() ? 0 : it->second);
  }
  std::printf("%-16s %zu", "failures", failures.size());
  for (const auto& f : failures) {
    std::printf(" %llu", static_cast<unsigned long long>(f.seed));
  }
  std::printf("\n");
  return failures.empty() ? 0 : 1;
}

}  // namespace
}  // namespace upparat::test::chaos

int main(int argc, char** argv) {
  return upparat::test::chaos::main_impl(argc, argv);
}
