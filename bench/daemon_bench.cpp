// The whole daemon, measured: the real `upparat` binary with the script plugin (hooks are short
// shell scripts) against the Jobs + S3 emulator and a real mosquitto (`set_tcp_nodelay true`),
// the device over mTLS and S3 over HTTPS, all on loopback. Each figure is printed beside a
// baseline measured in the same run:
//
//   1. job notify -> first HTTP request of the download (from the daemon's debug log), median
//      and p95 over --jobs jobs, beside the emulator's own MQTT round trip (a get answered);
//   2. messages the daemon publishes for one job of --big-mib MiB, beside a 64 KiB job's;
//   3. idle memory of the connected daemon (private, PSS, RSS from /proc/PID/smaps_rollup),
//      beside a bare OpenSSL mTLS client (`openssl s_client`) connected to the same broker;
//   4. idle CPU (utime + stime) over --idle-seconds, beside the same OpenSSL client's;
//   5. bytes fetched / file size after a SIGKILL at 3/8 of a rate-limited download and a
//      restart, beside an uninterrupted download's;
//   6. --daemons daemons, each with one 1 MiB job created at once: median job time and time
//      to all SUCCEEDED (beside the single daemon's job time of 1.), summed PSS of the idle
//      daemons (beside N bare OpenSSL clients, computed from 3.), the CPU time the daemons,
//      their hooks, the emulator and the broker used until all were SUCCEEDED (and the bound
//      the last three alone set on "all done"), and where the job time went: each phase's
//      median from the daemons' debug logs, each update's round trip split with the emulator's
//      --verbose log into the way there, the emulator's own work and the way back.
//
// The daemons run with the Environment= lines of config/upparat.service, as the unit runs
// them; --bare leaves them out.
//
//   upparat-daemon-bench [--smoke] [--daemons N] [--jobs J] [--idle-seconds S] [--big-mib M]
//                        [--daemon PATH] [--keep-logs DIR] [--bare]
//
// --smoke: N = 10, 5 jobs, no idle window, a 64 MiB big job; CI runs it. The benchmark exits
// non-zero when the daemon misbehaves (a job that does not succeed in time, a daemon that does
// not connect, a resume that starts over), never because a figure is slow.

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "mqtt/tcp_nodelay.hpp"
#include "support/certificates.hpp"
#include "support/emulator_fixture.hpp"
#include "support/mosquitto.hpp"
#include "support/mqtt_client.hpp"
#include "support/process.hpp"
#include "support/temp_dir.hpp"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using upparat::test::CertificateAuthority;
using upparat::test::CertificateFiles;
using upparat::test::EmulatorFixture;
using upparat::test::Mosquitto;
using upparat::test::ProcessOptions;
using upparat::test::ServiceProcess;
using SystemClock = std::chrono::system_clock;

constexpr const char* kBucket = "bench";

struct Options {
  bool smoke = false;
  /// The daemon binary (default: this build's), e.g. an older build to compare with.
  std::string daemon = UPPARAT_DAEMON_BIN;
  int daemons = 200;
  int jobs = 20;
  int idle_seconds = 60;
  std::uint64_t big_mib = 1024;
  /// Copy every daemon's log and the emulator's here at the end (for a look at the timeline).
  std::string keep_logs;
  /// Run the daemons with the environment the systemd unit gives them (its `Environment=`
  /// lines), as installed; `--bare` runs them with the benchmark's own environment only.
  bool unit_environment = true;
};

/// The `Environment=` assignments of a systemd unit file (unquoted KEY=VALUE words, as ours
/// writes them).
std::vector<std::pair<std::string, std::string>> environment_of_unit(const fs::path& unit) {
  std::vector<std::pair<std::string, std::string>> env;
  std::ifstream in(unit);
  for (std::string line; std::getline(in, line);) {
    const std::string key = "Environment=";
    if (line.rfind(key, 0) != 0) {
      continue;
    }
    std::istringstream words(line.substr(key.size()));
    for (std::string word; words >> word;) {
      auto eq = word.find('=');
      if (eq != std::string::npos && eq > 0) {
        env.emplace_back(word.substr(0, eq), word.substr(eq + 1));
      }
    }
  }
  return env;
}

/// A failure of the daemon or of the set-up: unwinds, so every process started is stopped.
struct Failure {
  std::string message;
};

[[noreturn]] void die(const std::string& message) {
  throw Failure{message};
}

template <typename T>
T must(upparat::Result<T> r, const std::string& what) {
  if (!r) {
    die(what + ": " + r.error().message());
  }
  return std::move(*r);
}

void must(const upparat::Status& s, const std::string& what) {
  if (!s) {
    die(what + ": " + s.error().message());
  }
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) {
    return 0;
  }
  std::sort(v.begin(), v.end());
  auto i = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

double now_ms() {
  return static_cast<double>(std::chrono::duration_cast<std::chrono::microseconds>(
                                 SystemClock::now().time_since_epoch())
                                 .count()) /
         1000.0;
}

std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_file(const fs::path& file, const std::string& text, bool executable = false) {
  fs::create_directories(file.parent_path());
  std::ofstream(file) << text;
  if (executable) {
    fs::permissions(file, fs::perms::owner_all);
  }
}

/// A daemon log line: its time (epoch ms, from "YYYY-MM-DD HH:MM:SS.mmm", local time) and text.
struct LogLine {
  double ms = 0;
  std::string text;
};

// The local time a log line starts with, in epoch ms: "YYYY-MM-DD HH:MM:SS.mmm" in `format`
// (the daemon's lines start with it, the emulator's put it in brackets).
std::optional<double> local_time_ms(const std::string& line, const char* format) {
  std::tm tm{};
  int millis = 0;
  if (std::sscanf(line.c_str(), format, &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                  &tm.tm_min, &tm.tm_sec, &millis) != 7) {
    return std::nullopt;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  tm.tm_isdst = -1;
  return static_cast<double>(std::mktime(&tm)) * 1000.0 + millis;
}

// The clientToken of a logged request or answer, "" when it has none.
std::string client_token(const std::string& text) {
  const std::string key = "\"clientToken\":\"";
  const auto at = text.find(key);
  const auto end = at == std::string::npos ? at : text.find('"', at + key.size());
  return end == std::string::npos ? "" : text.substr(at + key.size(), end - at - key.size());
}

std::vector<LogLine> parse_log(const fs::path& file) {
  std::vector<LogLine> lines;
  std::istringstream in(read_text(file));
  for (std::string line; std::getline(in, line);) {
    const auto ms = line.size() < 24 ? std::nullopt : local_time_ms(line, "%d-%d-%d %d:%d:%d.%d");
    if (ms) {
      lines.push_back(LogLine{*ms, line.substr(24)});
    }
  }
  return lines;
}

/// CPU seconds (user + system) a process used so far, with its waited-for children (the
/// daemon's hooks) when `children`; 0 once it is gone.
double cpu_seconds(pid_t pid, bool children = false) {
  const std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
  // Field 2 (comm) may hold spaces: count from after its closing parenthesis, where field 3
  // begins; utime, stime, cutime and cstime are fields 14 to 17.
  const auto close = stat.rfind(')');
  if (close == std::string::npos) {
    return 0;
  }
  std::istringstream rest(stat.substr(close + 1));
  std::vector<double> fields;
  for (std::string field; rest >> field;) {
    fields.push_back(std::atof(field.c_str()));
  }
  if (fields.size() < 15) {
    return 0;
  }
  double ticks = fields[11] + fields[12] + (children ? fields[13] + fields[14] : 0);
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

/// The emulator's --verbose log: when each request came in ("<-") and each answer went out
/// ("->"), by thing and clientToken.
struct EmulatorTimes {
  std::map<std::pair<std::string, std::string>, double> in, out;
};

EmulatorTimes parse_emulator_log(const fs::path& file) {
  EmulatorTimes times;
  std::istringstream in(read_text(file));
  const std::string things = "$aws/things/";
  for (std::string line; std::getline(in, line);) {
    const auto ms = local_time_ms(line, "[%d-%d-%d %d:%d:%d.%d]");
    const auto arrow = line.find("] <- $aws/");
    const auto at = arrow != std::string::npos ? arrow : line.find("] -> $aws/");
    const std::string token = client_token(line);
    if (!ms || at == std::string::npos || token.empty()) {
      continue;
    }
    const auto thing_at = at + 5 + things.size();
    const auto thing_end = line.find('/', thing_at);
    if (thing_end == std::string::npos) {
      continue;
    }
    auto key = std::make_pair(line.substr(thing_at, thing_end - thing_at), token);
    (arrow != std::string::npos ? times.in : times.out).emplace(key, *ms);
  }
  return times;
}

/// Memory of a process from /proc/PID/smaps_rollup, in KiB.
struct Memory {
  long rss = 0, pss = 0, private_kib = 0, anonymous = 0;
};

Memory memory_of(pid_t pid) {
  Memory m;
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
  // The first line names the range; then "Key:   value kB" lines.
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string key;
    long value = 0;
    if (!(fields >> key >> value)) {
      continue;
    }
    if (key == "Rss:") {
      m.rss = value;
    } else if (key == "Pss:") {
      m.pss = value;
    } else if (key == "Private_Clean:" || key == "Private_Dirty:") {
      m.private_kib += value;
    } else if (key == "Anonymous:") {
      m.anonymous = value;
    }
  }
  return m;
}

int threads_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("Threads:", 0) == 0) {
      return std::atoi(line.c_str() + 8);
    }
  }
  return 0;
}

/// Per thread of a process: its name, context switches (voluntary + not) and CPU seconds.
struct ThreadSample {
  std::string name;
  long switches = 0;
  double cpu = 0;
};

std::map<std::string, ThreadSample> threads_sample(pid_t pid) {
  std::map<std::string, ThreadSample> out;
  const fs::path tasks = "/proc/" + std::to_string(pid) + "/task";
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(tasks, ec)) {
    ThreadSample t;
    std::ifstream status(entry.path() / "status");
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("Name:", 0) == 0) {
        t.name = line.substr(line.find_first_not_of(" \t", 5));
      } else if (line.rfind("voluntary_ctxt_switches:", 0) == 0 ||
                 line.rfind("nonvoluntary_ctxt_switches:", 0) == 0) {
        t.switches += std::atol(line.c_str() + line.find(':') + 1);
      }
    }
    std::string stat = read_text(entry.path() / "stat");
    auto close = stat.rfind(')');
    if (close != std::string::npos) {
      std::istringstream in(stat.substr(close + 2));
      std::vector<std::string> f;
      for (std::string x; in >> x;) {
        f.push_back(x);
      }
      if (f.size() > 12) {
        t.cpu = static_cast<double>(std::stoull(f[11]) + std::stoull(f[12])) /
                static_cast<double>(::sysconf(_SC_CLK_TCK));
      }
    }
    out[entry.path().filename().string()] = t;
  }
  return out;
}

std::string document(const std::string& version, const std::string& key) {
  return std::string(R"({"action":"update","version":")") + version +
         R"(","file":"${aws:iot:s3-presigned-url:https://)" + kBucket + ".s3.amazonaws.com/" + key +
         R"(}","force":false,"meta":")" + version + R"("})";
}

/// One device: its directory, certificate, hooks, configuration and (when running) process.
struct Device {
  std::string thing;
  fs::path dir;
  fs::path config;
  std::optional<ServiceProcess> process;
  int starts = 0;

  [[nodiscard]] fs::path log() const {
    return dir / ("upparat-" + std::to_string(starts) + ".log");
  }
};

class Bench {
 public:
  explicit Bench(Options options) : options_(std::move(options)) {}
  Bench(const Bench&) = delete;
  Bench& operator=(const Bench&) = delete;
  ~Bench() {
    if (options_.keep_logs.empty() || !dir_) {
      return;
    }
    std::error_code ec;
    fs::create_directories(options_.keep_logs, ec);
    if (emulator_) {
      fs::copy_file(emulator_->process().log_path(), fs::path(options_.keep_logs) / "emulator.log",
                    fs::copy_options::overwrite_existing, ec);
    }
    // Every daemon's log, as <device>-<log name>.
    for (const auto& device : fs::directory_iterator(dir_->path(), ec)) {
      if (!device.is_directory(ec)) {
        continue;
      }
      for (const auto& e : fs::directory_iterator(device.path(), ec)) {
        if (e.path().extension() == ".log") {
          fs::copy_file(e.path(),
                        fs::path(options_.keep_logs) / (device.path().filename().string() + "-" +
                                                        e.path().filename().string()),
                        fs::copy_options::overwrite_existing, ec);
        }
      }
    }
  }

  void run();

 private:
  /// With --keep-logs, a copy of the process's /proc/PID/smaps as <name>.smaps: which mapping
  /// holds the memory the figures sum up.
  void keep_smaps(pid_t pid, const std::string& name) const {
    if (options_.keep_logs.empty()) {
      return;
    }
    std::error_code ec;
    fs::create_directories(options_.keep_logs, ec);
    std::ofstream(fs::path(options_.keep_logs) / (name + ".smaps"))
        << read_text("/proc/" + std::to_string(pid) + "/smaps");
  }
  Device make_device(const std::string& thing);
  void start(Device& d);
  void wait_ready(Device& d, std::chrono::seconds timeout);
  /// Polls the emulator until every listed execution of `job_id` is SUCCEEDED; dies on a
  /// terminal failure or at the timeout.
  void wait_succeeded(const std::string& job_id, std::size_t count, std::chrono::seconds timeout);
  std::uint64_t body_bytes_sent(const std::string& key);
  fs::path make_file(const std::string& name, std::uint64_t size);

  void emulator_round_trip();
  void latency();
  void messages();
  void idle();
  void crash_resume();
  void many();

  Options options_;
  std::optional<upparat::test::TempDir> dir_;
  std::optional<CertificateAuthority> ca_;
  std::optional<Mosquitto> broker_;
  std::optional<EmulatorFixture> emulator_;
  std::optional<Device> main_;
  double single_job_ms_ = 0;
  Memory bare_client_;
  /// What the daemons get besides the benchmark's environment (the unit's Environment=).
  std::vector<std::pair<std::string, std::string>> daemon_env_;
};

Device Bench::make_device(const std::string& thing) {
  Device d;
  d.thing = thing;
  d.dir = dir_->path() / thing;
  fs::create_directories(d.dir);
  CertificateFiles cert = must(ca_->issue_client(thing), "client certificate");
  const std::string dir = d.dir.string();
  write_file(d.dir / "installed_version", "1.0.0\n");
  write_file(d.dir / "hooks/version.sh", "#!/bin/sh\ncat '" + dir + "/installed_version'\n", true);
  write_file(d.dir / "hooks/install.sh",
             "#!/bin/sh\necho \"$3\" > '" + dir + "/installed_version'\n", true);
  write_file(d.dir / "hooks/ready.sh", "#!/bin/sh\nexit 0\n", true);
  std::string text =
      "[service]\nstate_directory = \"" + dir + "/state\"\n" +
      "[broker]\nhost = \"127.0.0.1\"\nport = " + std::to_string(broker_->port()) +
      "\ncafile = \"" + ca_->ca_cert().string() + "\"\ncertfile = \"" + cert.cert.string() +
      "\"\nkeyfile = \"" + cert.key.string() + "\"\nthing_name = \"" + thing +
      "\"\nreconnect_min = 1\nreconnect_max = 2\n"
      "[download]\nca_file = \"" +
      ca_->ca_cert().string() + "\"\n[plugins.script]\npath = \"" + UPPARAT_SCRIPT_PLUGIN +
      "\"\nversion = \"" + dir + "/hooks/version.sh\"\ninstall = \"" + dir +
      "/hooks/install.sh\"\nready = \"" + dir + "/hooks/ready.sh\"\n";
  d.config = d.dir / "upparat.toml";
  write_file(d.config, text);
  return d;
}

void Bench::start(Device& d) {
  ++d.starts;
  ProcessOptions o;
  o.argv = {options_.daemon, "-c", d.config.string(), "-v"};
  o.env = daemon_env_;
  o.name = d.thing;
  o.log_path = d.log();
  o.stop_grace = 15s;
  o.dump_log_on_failure = false;
  d.process.emplace(must(ServiceProcess::start(o), "start the daemon of " + d.thing));
}

void Bench::wait_ready(Device& d, std::chrono::seconds timeout) {
  auto line = d.process->wait_for_line("ready: subscribed", timeout);
  if (!line) {
    die(d.thing + " did not connect: " + line.error().message());
  }
}

void Bench::wait_succeeded(const std::string& job_id, std::size_t count,
                           std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string last;
  while (std::chrono::steady_clock::now() < deadline) {
    last = must(emulator_->describe("", job_id), "describe " + job_id);
    std::size_t succeeded = 0;
    for (auto at = last.find("\"status\":\""); at != std::string::npos;
         at = last.find("\"status\":\"", at + 1)) {
      // Only each execution's own status, not its history entries': those follow "history".
      auto status = last.substr(at + 10, last.find('"', at + 10) - at - 10);
      if (status == "FAILED" || status == "REJECTED" || status == "TIMED_OUT") {
        die("job " + job_id + " ended " + status + ": " + last.substr(0, 2000));
      }
    }
    for (auto at = last.find("\"thingName\""); at != std::string::npos;
         at = last.find("\"thingName\"", at + 1)) {
      auto status_at = last.find("\"status\":\"", at);
      if (status_at != std::string::npos && last.compare(status_at + 10, 9, "SUCCEEDED") == 0) {
        ++succeeded;
      }
    }
    if (succeeded >= count) {
      return;
    }
    std::this_thread::sleep_for(50ms);
  }
  die("job " + job_id + " not SUCCEEDED on " + std::to_string(count) + " things within " +
      std::to_string(timeout.count()) + " s: " + last.substr(0, 2000) +
      (main_ && main_->process ? "\nlog of " + main_->thing + ":\n" + main_->process->log_tail(30)
                               : std::string()));
}

std::uint64_t Bench::body_bytes_sent(const std::string& key) {
  auto json =
      must(emulator_->request("GET", std::string("/s3/stats?bucket=") + kBucket + "&key=" + key),
           "S3 stats");
  auto at = json.find("\"bodyBytesSent\":");
  return at == std::string::npos ? 0 : std::stoull(json.substr(at + 16));
}

fs::path Bench::make_file(const std::string& name, std::uint64_t size) {
  auto file = dir_->path() / "objects" / name;
  fs::create_directories(file.parent_path());
  // Generated content: a pattern every 4 KiB, holes between (a sparse file reads as zeros).
  {
    std::ofstream out(file, std::ios::binary);
    for (std::uint64_t at = 0; at < size; at += 1 << 20) {
      out.seekp(static_cast<std::streamoff>(at));
      out << name << ' ' << at << '\n';
    }
  }
  fs::resize_file(file, size);
  must(emulator_->put_object_file(kBucket, name, file), "store " + name);
  return file;
}

void Bench::emulator_round_trip() {
  // The emulator's own round trip, as a device sees it over the same broker and mTLS: a get
  // answered on /accepted. The client sets TCP_NODELAY like the daemon.
  CertificateFiles cert = must(ca_->issue_client("bench-rt"), "client certificate");
  upparat::test::MqttClientOptions o;
  o.uri = broker_->uri();
  o.client_id = "bench-rt";
  o.ca_cert = ca_->ca_cert();
  o.cert = cert.cert;
  o.key = cert.key;
  auto client = must(upparat::test::MqttTestClient::connect(o), "round-trip client");
  upparat::mqtt::set_nodelay_to_peer_port(broker_->port());
  const std::string topic = "$aws/things/bench-rt/jobs/get";
  must(client.subscribe(topic + "/accepted"), "subscribe");
  std::vector<double> rtt;
  for (int i = 0; i < options_.jobs; ++i) {
    double t0 = now_ms();
    must(client.publish(topic, "{}"), "publish get");
    must(client.wait_for_message(topic + "/accepted", 10s), "get answer");
    rtt.push_back(now_ms() - t0);
  }
  std::printf("emulator round trip (get -> accepted, %d): median %.2f ms, p95 %.2f ms\n",
              options_.jobs, percentile(rtt, 0.5), percentile(rtt, 0.95));
}

void Bench::latency() {
  Device& d = *main_;
  make_file("small.bin", 64 * 1024);
  make_file("one-mib.bin", 1 << 20);
  std::vector<double> latency;
  std::vector<double> hook;  // the version hook's run, start to result
  std::vector<double> own;   // the rest: the daemon's own share
  std::vector<double> job_time;
  for (int i = 0; i < options_.jobs; ++i) {
    const std::string job = "upparat_latency_" + std::to_string(i);
    const std::string version = "2.0." + std::to_string(i);
    const std::string key = i % 2 == 0 ? "small.bin" : "one-mib.bin";
    std::this_thread::sleep_for(200ms);
    double created = now_ms();
    must(emulator_->create_job(job, document(version, key), {d.thing}), "create " + job);
    wait_succeeded(job, 1, 120s);
    double notify = 0;
    double request = 0;
    double done = 0;
    double hook_start = 0;
    double hook_end = 0;
    for (const auto& l : parse_log(d.log())) {
      if (l.ms + 1 < created) {
        continue;
      }
      if (notify == 0 &&
          l.text.find("message on $aws/things/" + d.thing + "/jobs/notify") != std::string::npos) {
        notify = l.ms;
      }
      if (hook_start == 0 && l.text.find("running version hook") != std::string::npos) {
        hook_start = l.ms;
      }
      if (hook_start != 0 && hook_end == 0 && l.text.find("verify_job -> ") != std::string::npos) {
        hook_end = l.ms;
      }
      if (request == 0 && l.text.find("download " + job + ": ") != std::string::npos) {
        request = l.ms;
      }
      if (l.text.find("publish $aws/things/" + d.thing + "/jobs/" + job + "/update") !=
              std::string::npos &&
          l.text.find("SUCCEEDED") != std::string::npos) {
        done = l.ms;
      }
    }
    if (notify == 0 || request == 0 || done == 0) {
      die("no notify, download or SUCCEEDED line for " + job + " in " + d.log().string());
    }
    latency.push_back(request - notify);
    hook.push_back(hook_end - hook_start);
    own.push_back(request - notify - (hook_end - hook_start));
    if (key == "one-mib.bin") {
      job_time.push_back(done - created);
    }
  }
  single_job_ms_ = percentile(job_time, 0.5);
  std::printf(
      "notify -> first HTTP request (%d jobs): median %.1f ms, p95 %.1f ms\n"
      "  of which the version hook (a 2-line shell script): median %.1f ms, p95 %.1f ms\n"
      "  the rest, the daemon's own share: median %.1f ms, p95 %.1f ms\n"
      "one daemon, 1 MiB job, created -> SUCCEEDED published: median %.0f ms\n",
      options_.jobs, percentile(latency, 0.5), percentile(latency, 0.95), percentile(hook, 0.5),
      percentile(hook, 0.95), percentile(own, 0.5), percentile(own, 0.95), single_job_ms_);
}

void Bench::messages() {
  Device& d = *main_;
  const std::uint64_t size = options_.big_mib << 20;
  make_file("big.bin", size);
  auto count = [&](const std::string& job, const std::string& key, std::uint64_t bytes) {
    std::size_t from = fs::file_size(d.log());
    must(emulator_->create_job(job, document(job, key), {d.thing}), "create " + job);
    wait_succeeded(job, 1, std::chrono::seconds(120 + bytes / (8 << 20)));
    std::string text = read_text(d.log()).substr(from);
    int n = 0;
    for (auto at = text.find(" publish $aws/"); at != std::string::npos;
         at = text.find(" publish $aws/", at + 1)) {
      ++n;
    }
    return n;
  };
  int small = count("upparat_messages_small", "small.bin", 64 * 1024);
  double t0 = now_ms();
  int big = count("upparat_messages_big", "big.bin", size);
  double seconds = (now_ms() - t0) / 1000.0;
  std::printf("messages published per job: %d for %llu MiB (%.1f s) beside %d for 64 KiB\n", big,
              static_cast<unsigned long long>(options_.big_mib), seconds, small);
}

void Bench::idle() {
  Device& d = *main_;
  CertificateFiles cert = must(ca_->issue_client("bench-openssl"), "client certificate");
  ProcessOptions o;
  o.argv = {"/usr/bin/openssl",
            "s_client",
            "-quiet",
            "-connect",
            "127.0.0.1:" + std::to_string(broker_->port()),
            "-CAfile",
            ca_->ca_cert().string(),
            "-cert",
            cert.cert.string(),
            "-key",
            cert.key.string()};
  o.name = "openssl-s_client";
  o.log_path = dir_->path() / "s_client.log";
  o.dump_log_on_failure = false;
  auto client = must(ServiceProcess::start(o), "openssl s_client");
  // The handshake is done well within this; the daemon is idle by now.
  std::this_thread::sleep_for(3s);
  if (!client.running()) {
    die("openssl s_client exited: " + client.log_tail());
  }
  Memory daemon = memory_of(d.process->pid());
  bare_client_ = memory_of(client.pid());
  keep_smaps(d.process->pid(), "daemon-idle-after-jobs");
  keep_smaps(client.pid(), "openssl-s_client-idle");
  std::printf(
      "idle, after jobs (KiB)     private  anonymous   PSS    RSS   threads\n"
      "  daemon                  %7ld  %9ld %6ld %6ld   %d\n"
      "  openssl s_client (mTLS) %7ld  %9ld %6ld %6ld   %d\n",
      daemon.private_kib, daemon.anonymous, daemon.pss, daemon.rss, threads_of(d.process->pid()),
      bare_client_.private_kib, bare_client_.anonymous, bare_client_.pss, bare_client_.rss,
      threads_of(client.pid()));
  if (options_.idle_seconds > 0) {
    double d0 = cpu_seconds(d.process->pid());
    double c0 = cpu_seconds(client.pid());
    auto before = threads_sample(d.process->pid());
    std::this_thread::sleep_for(std::chrono::seconds(options_.idle_seconds));
    auto after = threads_sample(d.process->pid());
    std::printf("idle CPU over %d s: daemon %.2f s, openssl s_client %.2f s\n",
                options_.idle_seconds, cpu_seconds(d.process->pid()) - d0,
                cpu_seconds(client.pid()) - c0);
    std::printf("  daemon threads idle (tid name: wake-ups, CPU s over the window):\n");
    for (const auto& [tid, t] : after) {
      auto b = before.find(tid);
      const long switches = t.switches - (b == before.end() ? 0 : b->second.switches);
      const double cpu = t.cpu - (b == before.end() ? 0 : b->second.cpu);
      std::printf("    %s %s: %ld, %.2f\n", tid.c_str(), t.name.c_str(), switches, cpu);
    }
  }
}

void Bench::crash_resume() {
  Device& d = *main_;
  // 8 MiB at 1 MiB/s (the smoke run: 4 MiB at 1 MiB/s), killed at 3/8 of the file.
  const std::uint64_t size = options_.smoke ? 4 << 20 : 8 << 20;
  const std::uint64_t rate = 1 << 20;
  make_file("resume.bin", size);
  make_file("whole.bin", size);
  must(emulator_->add_s3_fault(
           kBucket, "resume.bin",
           "\"rateLimitBytesPerSecond\":" + std::to_string(rate) + ",\"times\":-1"),
       "rate limit");
  must(emulator_->create_job("upparat_resume", document("upparat_resume", "resume.bin"), {d.thing}),
       "create");
  const fs::path part = d.dir / "state/downloads/upparat_resume.part";
  auto deadline = std::chrono::steady_clock::now() + 60s;
  for (;;) {
    std::error_code ec;
    auto have = fs::file_size(part, ec);
    if (!ec && have >= size * 3 / 8) {
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      die("the download of resume.bin did not reach 3/8 in 60 s: " + d.process->log_tail());
    }
    std::this_thread::sleep_for(20ms);
  }
  d.process->kill9();
  start(d);
  wait_succeeded("upparat_resume", 1, 120s);
  double ratio = static_cast<double>(body_bytes_sent("resume.bin")) / static_cast<double>(size);
  must(emulator_->create_job("upparat_whole", document("upparat_whole", "whole.bin"), {d.thing}),
       "create");
  wait_succeeded("upparat_whole", 1, 60s);
  double whole = static_cast<double>(body_bytes_sent("whole.bin")) / static_cast<double>(size);
  std::printf(
      "bytes fetched / size after a SIGKILL at 3/8 of %llu MiB (1 MiB/s) and a restart: %.3f "
      "beside %.3f without a kill\n",
      static_cast<unsigned long long>(size >> 20), ratio, whole);
  // A resume that starts over fetches 1 + 3/8 of the file: a broken resume, not a slow one.
  if (ratio > 1.3) {
    die("the restarted daemon fetched " + std::to_string(ratio) + " x the file");
  }
}

// One daemon's job of many(), phase by phase, from its debug log: each phase's duration goes
// to `phases` under a name whose first three characters order the table. A request's round trip
// is split with the emulator's times into the way there, the emulator's own work and the way
// back (broker, scheduling, the daemon's receiving thread).
void breakdown(const std::string& thing, const std::vector<LogLine>& lines,
               const EmulatorTimes& emulator, std::map<std::string, std::vector<double>>& phases) {
  auto find = [&](std::size_t from, const std::string& a, const std::string& b = "") {
    for (std::size_t i = from; i < lines.size(); ++i) {
      if (lines[i].text.find(a) != std::string::npos &&
          (b.empty() || lines[i].text.find(b) != std::string::npos)) {
        return i;
      }
    }
    return lines.size();
  };
  auto span = [&](const std::string& name, std::size_t from, std::size_t to) {
    if (from < lines.size() && to < lines.size()) {
      phases[name].push_back(lines[to].ms - lines[from].ms);
    }
  };
  const std::size_t selected = find(0, "selected job upparat_many");
  std::size_t notify = lines.size();
  for (std::size_t i = 0; i < selected && i < lines.size(); ++i) {
    if (lines[i].text.find("/jobs/notify (") != std::string::npos) {
      notify = i;
    }
  }
  span("1  notify -> job picked (from the notify, or after a get)", notify, selected);
  const std::size_t describe = find(selected, "publish $aws/", "/upparat_many/get:");
  span("2  describe round trip", describe, find(describe, "/upparat_many/get/accepted"));
  const std::size_t version = find(selected, "upparat_many: version step");
  span("3  version step (the hook)", version, find(version, "state machine: verify_job ->"));
  const std::size_t download = find(selected, "download upparat_many: https");
  span("4  download (1 MiB over HTTPS)", download,
       find(download, "download upparat_many: complete"));
  int order = 5;
  for (const std::string state : {"download_start", "installation_start"}) {
    const std::size_t sent = find(selected, "/upparat_many/update:", "\"" + state + "\"");
    const std::size_t answered = find(sent, "/upparat_many/update/accepted");
    const std::string number = std::to_string(order++);
    const std::string name = number + "  " + state + " update round trip";
    span(name, sent, answered);
    if (sent >= lines.size() || answered >= lines.size()) {
      continue;
    }
    const auto key = std::make_pair(thing, client_token(lines[sent].text));
    const auto in = emulator.in.find(key);
    const auto out = emulator.out.find(key);
    if (in != emulator.in.end() && out != emulator.out.end()) {
      phases[number + "a   of which to the emulator"].push_back(in->second - lines[sent].ms);
      phases[number + "b   in the emulator"].push_back(out->second - in->second);
      phases[number + "c   back to the daemon"].push_back(lines[answered].ms - out->second);
    }
  }
  const std::size_t install = find(selected, "upparat_many: install step");
  span("7  install step (the hook)", install, find(install, "upparat_many: SUCCEEDED"));
  span("8  notify -> SUCCEEDED published", notify,
       find(selected, "publish $aws/", "\"SUCCEEDED\""));
}

void Bench::many() {
  const int n = options_.daemons;
  std::vector<Device> devices;
  devices.reserve(static_cast<std::size_t>(n));
  std::vector<std::string> things;
  for (int i = 0; i < n; ++i) {
    devices.push_back(make_device("bench-many-" + std::to_string(i)));
    things.push_back(devices.back().thing);
  }
  double t_start = now_ms();
  for (auto& d : devices) {
    start(d);
  }
  for (auto& d : devices) {
    wait_ready(d, std::chrono::seconds(60 + n / 2));
  }
  double connected_s = (now_ms() - t_start) / 1000.0;
  std::this_thread::sleep_for(2s);
  long pss = 0;
  long private_kib = 0;
  long anonymous = 0;
  keep_smaps(devices.front().process->pid(), "daemon-idle-before-job");
  for (auto& d : devices) {
    Memory m = memory_of(d.process->pid());
    pss += m.pss;
    private_kib += m.private_kib;
    anonymous += m.anonymous;
  }
  // Per daemon its own CPU and its hooks' (the children it waited for), then the emulator's
  // and the broker's.
  auto cpu_now = [&] {
    std::vector<double> cpu;
    for (auto& d : devices) {
      const double own = cpu_seconds(d.process->pid());
      cpu.push_back(own);
      cpu.push_back(cpu_seconds(d.process->pid(), true) - own);
    }
    cpu.push_back(cpu_seconds(emulator_->process().pid()));
    cpu.push_back(cpu_seconds(broker_->process().pid()));
    return cpu;
  };
  const std::vector<double> cpu_before = cpu_now();
  double created = now_ms();
  must(emulator_->create_job("upparat_many", document("3.0.0", "one-mib.bin"), things),
       "create many");
  wait_succeeded("upparat_many", things.size(), std::chrono::seconds(120 + n));
  double all_seen = now_ms() - created;
  const std::vector<double> cpu_after = cpu_now();
  std::vector<double> times;
  // Where each daemon's job time went, from its log and the emulator's (see breakdown()).
  std::map<std::string, std::vector<double>> phases;
  const EmulatorTimes emulator_times = parse_emulator_log(emulator_->process().log_path());
  for (auto& d : devices) {
    const auto lines = parse_log(d.log());
    double done = 0;
    for (const auto& l : lines) {
      if (l.text.find("/jobs/upparat_many/update") != std::string::npos &&
          l.text.find("SUCCEEDED") != std::string::npos &&
          l.text.find(" publish $aws/") != std::string::npos) {
        done = l.ms;
      }
    }
    if (done == 0) {
      die("no SUCCEEDED publish in " + d.log().string());
    }
    times.push_back(done - created);
    breakdown(d.thing, lines, emulator_times, phases);
  }
  double cpu_daemons = 0;
  double cpu_hooks = 0;
  for (std::size_t i = 0; i < devices.size(); ++i) {
    cpu_daemons += cpu_after[2 * i] - cpu_before[2 * i];
    cpu_hooks += cpu_after[2 * i + 1] - cpu_before[2 * i + 1];
  }
  const std::size_t others = 2 * devices.size();
  const double cpu_emulator = cpu_after[others] - cpu_before[others];
  const double cpu_broker = cpu_after[others + 1] - cpu_before[others + 1];
  const long cores = ::sysconf(_SC_NPROCESSORS_ONLN);
  const double fixed = cpu_hooks + cpu_emulator + cpu_broker;
  std::printf(
      "%d daemons (all connected in %.1f s), one 1 MiB job each, created at once:\n"
      "  job time: median %.0f ms, p95 %.0f ms, all SUCCEEDED after %.0f ms (seen by the "
      "emulator's poll: %.0f ms); one daemon alone: %.0f ms\n"
      "  summed idle PSS %.1f MiB (private %.1f MiB) beside %d bare OpenSSL clients' %.1f MiB;\n"
      "  anonymous memory of one idle daemon before its first job: %ld KiB (mean) beside the "
      "OpenSSL client's %ld KiB\n"
      "  CPU used until all SUCCEEDED (%.1f s on %ld cores): daemons %.1f s, their hooks %.1f s, "
      "emulator %.1f s, broker %.1f s\n"
      "  the hooks, the emulator and the broker alone take %.1f s of CPU: all done no sooner "
      "than %.1f s on %ld cores, whatever the daemon\n"
      "  where the time went (median over the daemons, ms):\n",
      n, connected_s, percentile(times, 0.5), percentile(times, 0.95),
      *std::max_element(times.begin(), times.end()), all_seen, single_job_ms_,
      static_cast<double>(pss) / 1024.0, static_cast<double>(private_kib) / 1024.0, n,
      static_cast<double>(bare_client_.pss) * n / 1024.0, anonymous / n, bare_client_.anonymous,
      all_seen / 1000.0, cores, cpu_daemons, cpu_hooks, cpu_emulator, cpu_broker, fixed,
      fixed / static_cast<double>(cores), cores);
  for (const auto& [name, values] : phases) {
    std::printf("    %-58s %6.0f  (p95 %.0f, %zu daemons)\n", name.c_str() + 3,
                percentile(values, 0.5), percentile(values, 0.95), values.size());
  }
  for (auto& d : devices) {
    auto stopped = d.process->stop();
    if (!stopped || !stopped->success()) {
      die(d.thing + " did not stop cleanly: " + d.process->log_tail());
    }
  }
}

void Bench::run() {
  // The emulator binary is found in $PATH by the fixture.
  std::string path = fs::path(UPPARAT_EMULATOR_BIN).parent_path().string() + ":" +
                     (std::getenv("PATH") ? std::getenv("PATH") : "/usr/bin:/bin");
  ::setenv("PATH", path.c_str(), 1);
  dir_.emplace(must(upparat::test::TempDir::create("daemon-bench"), "temporary directory"));
  ca_.emplace(must(CertificateAuthority::create(), "CA"));
  upparat::test::MosquittoOptions mo;
  mo.tls = &*ca_;
  mo.plain_listener_too = true;
  mo.extra_config = "set_tcp_nodelay true\n";
  broker_.emplace(must(Mosquitto::start(mo), "mosquitto"));
  upparat::test::EmulatorOptions eo;
  eo.broker_uri = broker_->plain_uri();
  eo.ca = &*ca_;
  eo.extra_args = {"--verbose"};  // each request and answer with its time, for the breakdown
  emulator_.emplace(must(EmulatorFixture::start(eo), "emulator"));

  std::printf("daemon benchmark: %s, %d daemons, %d jobs, idle window %d s\n",
              options_.smoke ? "smoke" : "full", options_.daemons, options_.jobs,
              options_.idle_seconds);
  if (options_.unit_environment) {
    daemon_env_ = environment_of_unit(UPPARAT_SERVICE_UNIT);
    if (daemon_env_.empty()) {
      die(std::string("no Environment= line in ") + UPPARAT_SERVICE_UNIT);
    }
  }
  std::printf("daemon environment: %s\n",
              daemon_env_.empty() ? "the benchmark's own (--bare)"
                                  : "the benchmark's own and, as upparat.service sets them:");
  for (const auto& [key, value] : daemon_env_) {
    std::printf("  %s=%s\n", key.c_str(), value.c_str());
  }
  emulator_round_trip();
  main_.emplace(make_device("bench-main"));
  start(*main_);
  wait_ready(*main_, 60s);
  latency();
  messages();
  idle();
  crash_resume();
  auto stopped = main_->process->stop();
  if (!stopped || !stopped->success()) {
    die("the daemon did not stop cleanly: " + main_->process->log_tail());
  }
  many();
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  // Each figure as it is measured, also into a file or a pipe.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  Options o;
  bool daemons_set = false;
  bool jobs_set = false;
  bool idle_set = false;
  bool big_set = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> long {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "daemon-bench: %s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return std::atol(argv[++i]);
    };
    if (arg == "--smoke") {
      o.smoke = true;
    } else if (arg == "--keep-logs" && i + 1 < argc) {
      o.keep_logs = argv[++i];
    } else if (arg == "--bare") {
      o.unit_environment = false;
    } else if (arg == "--daemon" && i + 1 < argc) {
      o.daemon = argv[++i];
    } else if (arg == "--daemons") {
      o.daemons = static_cast<int>(value());
      daemons_set = true;
    } else if (arg == "--jobs") {
      o.jobs = static_cast<int>(value());
      jobs_set = true;
    } else if (arg == "--idle-seconds") {
      o.idle_seconds = static_cast<int>(value());
      idle_set = true;
    } else if (arg == "--big-mib") {
      o.big_mib = static_cast<std::uint64_t>(value());
      big_set = true;
    } else {
      std::fprintf(stderr,
                   "usage: upparat-daemon-bench [--smoke] [--daemons N] [--jobs J] "
                   "[--idle-seconds S] [--big-mib M] [--daemon PATH] [--keep-logs DIR] [--bare]\n");
      return 2;
    }
  }
  if (o.smoke) {
    o.daemons = daemons_set ? o.daemons : 10;
    o.jobs = jobs_set ? o.jobs : 5;
    o.idle_seconds = idle_set ? o.idle_seconds : 0;
    o.big_mib = big_set ? o.big_mib : 64;
  }
  if (o.daemons < 1 || o.jobs < 2 || o.idle_seconds < 0 || o.big_mib < 1) {
    std::fprintf(stderr, "daemon-bench: --daemons >= 1, --jobs >= 2, --big-mib >= 1\n");
    return 2;
  }
  try {
    Bench bench(o);
    bench.run();
  } catch (const Failure& f) {
    std::fprintf(stderr, "daemon-bench: FAILED: %s\n", f.message.c_str());
    return 1;
  }
  return 0;
}
