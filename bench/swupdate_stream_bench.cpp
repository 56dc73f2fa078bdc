// What a streamed install buys with SWUpdate: one signed .swu through the real daemon, the
// Jobs + S3 emulator (its S3 side rate-limited) and a real SWUpdate, measured in one run:
//
//   download   job created -> SUCCEEDED, the daemon downloads the file and a no-op script
//              install takes it (the download alone);
//   install    the local file through SWUpdate with the plugin's client (the install alone);
//   streamed   job created -> SUCCEEDED with the SWUpdate plugin and `stream = true`;
//   sequential job created -> SUCCEEDED with the SWUpdate plugin on the downloaded file.
//
//   upparat-swupdate-stream-bench [--size-mib N] [--rate-mib N] [--smoke]
//
//   --size-mib N  the image's size (default 512)
//   --rate-mib N  the S3 download limit in MiB/s (default 20)
//   --smoke       16 MiB: checks that everything runs (the ratios mean little)
//
// Prints each time and the ratios streamed / max(download, install) (target <= 1.1) and
// sequential / (download + install). Exits non-zero when a run fails, not on a missed target.
// Files go to a new folder under $TMPDIR (default /tmp), removed at the end.

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <rapidjson/document.h>

#include "support/emulator_fixture.hpp"
#include "support/mosquitto.hpp"
#include "support/process.hpp"
#include "support/swupdate.hpp"
#include "support/temp_dir.hpp"
#include "swupdate/swupdate_client.hpp"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using upparat::test::EmulatorFixture;
using upparat::test::Mosquitto;
using upparat::test::ServiceProcess;
using upparat::test::SwupdateFixture;

constexpr const char* kBucket = "bench-bucket";
constexpr const char* kKey = "bench.swu";
constexpr const char* kThing = "thing-bench";

/// Ends the run: thrown through main's objects, whose destructors stop every process.
[[noreturn]] void die(const std::string& what) {
  throw std::runtime_error(what);
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

/// The execution's status and last state, or empty when the emulator does not know it yet.
std::pair<std::string, std::string> execution_status(const EmulatorFixture& emulator,
                                                     const std::string& job_id) {
  auto json = emulator.describe(kThing, job_id);
  if (!json) {
    return {};
  }
  rapidjson::Document d;
  d.Parse(json->c_str());
  if (d.HasParseError() || !d.IsObject() || !d.HasMember("executions") ||
      !d["executions"].IsArray() || d["executions"].Empty()) {
    return {};
  }
  const auto& e = d["executions"][0];
  std::string detail;
  if (e.HasMember("statusDetails") && e["statusDetails"].IsObject()) {
    for (const char* key : {"state", "message"}) {
      if (e["statusDetails"].HasMember(key) && e["statusDetails"][key].IsString()) {
        detail += std::string(detail.empty() ? "" : ": ") + e["statusDetails"][key].GetString();
      }
    }
  }
  return {e.HasMember("status") && e["status"].IsString() ? e["status"].GetString() : "", detail};
}

struct Bench {
  fs::path work;
  std::optional<Mosquitto> broker;
  std::optional<EmulatorFixture> emulator;
  std::optional<SwupdateFixture> swupdate;
  std::string sha256;
  std::uint64_t size = 0;
  int jobs = 0;

  fs::path path(const std::string& name) const { return work / name; }

  fs::path write_config(const std::string& name, const std::string& steps) const {
    const fs::path hooks = path("hooks");
    std::string text =
        "[service]\nstate_directory = \"" + path("state-" + name).string() +
        "\"\n[broker]\nhost = \"127.0.0.1\"\nport = " + std::to_string(broker->port()) +
        "\nplain_tcp = true\nthing_name = \"" + kThing +
        "\"\n[download]\nallow_http = true\n"
        "[retry]\nretry_interval = 1\nmax_retries = 3\n" +
        steps + "[plugins.script]\npath = \"" UPPARAT_SCRIPT_PLUGIN "\"\n" + "version = \"" +
        (hooks / "version.sh").string() + "\"\ninstall = \"" + (hooks / "install.sh").string() +
        "\"\n";
    const fs::path file = path(name + ".toml");
    std::ofstream(file) << text;
    return file;
  }

  /// Runs one job through a fresh daemon; returns job created -> SUCCEEDED in seconds.
  double job(const std::string& name, const std::string& steps) {
    const fs::path config = write_config(name, steps);
    upparat::test::ProcessOptions o;
    o.argv = {UPPARAT_DAEMON_BIN, "-c", config.string(), "-v"};
    o.name = "upparat-" + name;
    o.log_path = path("upparat-" + name + ".log");
    o.env = {{"TMPDIR", swupdate->socket_dir().string()}};
    o.stop_grace = 15s;
    o.dump_log_on_failure = false;
    auto daemon = ServiceProcess::start(o);
    if (!daemon) {
      die(daemon.error().message());
    }
    if (!daemon->wait_for_line("ready: subscribed", 30s)) {
      die("the daemon did not get ready: " + daemon->log_tail());
    }
    const std::string job_id = "upparat_bench_" + std::to_string(++jobs) + "_" + name;
    const std::string document =
        std::string("{\"action\":\"update\",\"version\":\"2.0.0\",\"file\":\"") +
        "${aws:iot:s3-presigned-url:https://" + kBucket + ".s3.amazonaws.com/" + kKey + "}" +
        "\",\"sha256\":\"" + sha256 + "\",\"size\":" + std::to_string(size) +
        ",\"force\":false,\"meta\":\"2.0.0\"}";
    const auto start = Clock::now();
    if (auto created = emulator->create_job(job_id, document, {kThing}); !created) {
      die(created.error().message());
    }
    for (;;) {
      const auto [status, detail] = execution_status(*emulator, job_id);
      if (status == "SUCCEEDED") {
        const double took = seconds_since(start);
        (void)daemon->stop();
        return took;
      }
      if (status == "FAILED" || status == "REJECTED" || status == "TIMED_OUT") {
        die(name + ": the job ended " + status + " (" + detail + "): " + daemon->log_tail());
      }
      if (!daemon->running()) {
        die(name + ": the daemon exited: " + daemon->log_tail());
      }
      if (seconds_since(start) > 600) {
        die(name + ": the job did not succeed within 600 s (" + status + " " + detail +
            "): " + daemon->log_tail());
      }
      std::this_thread::sleep_for(20ms);
    }
  }

  /// The local file through SWUpdate with the plugin's client; seconds.
  double install_local(const fs::path& swu) const {
    const int fd = ::open(swu.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      die("cannot open " + swu.string() + ": " + std::strerror(errno));
    }
    upparat::swupdate::InstallOptions options;
    options.info = "bench";
    upparat::swupdate::InstallIo io;
    io.source_fd = fd;
    const auto start = Clock::now();
    const auto result = upparat::swupdate::install(options, io);
    const double took = seconds_since(start);
    ::close(fd);
    if (result.outcome != upparat::swupdate::Outcome::Succeeded) {
      die("install of the local file: " + result.reason);
    }
    return took;
  }

  /// SWUpdate fresh for each measurement: a request that arrives as its previous install ends
  /// may be lost (a quirk of 2022.12), which would add a retry to the time.
  void restart_swupdate() {
    if (auto started = swupdate->start(); !started) {
      die(started.error().message());
    }
  }
};

int run(int argc, char** argv) {
  std::uint64_t size_mib = 512;
  std::uint64_t rate_mib = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--size-mib" && i + 1 < argc) {
      size_mib = std::strtoull(argv[++i], nullptr, 10);
    } else if (arg == "--rate-mib" && i + 1 < argc) {
      rate_mib = std::strtoull(argv[++i], nullptr, 10);
    } else if (arg == "--smoke") {
      size_mib = 16;
    } else {
      die("usage: upparat-swupdate-stream-bench [--size-mib N] [--rate-mib N] [--smoke]");
    }
  }
  if (size_mib == 0 || rate_mib == 0) {
    die("--size-mib and --rate-mib must be above 0");
  }

  auto dir = upparat::test::TempDir::create("swupdate-bench");
  if (!dir) {
    die(dir.error().message());
  }
  Bench bench;
  bench.work = dir->path();
  fs::create_directories(bench.path("sockets"));
  fs::create_directories(bench.path("swupdate"));
  fs::create_directories(bench.path("hooks"));
  // libswupdate takes its sockets' folder from $TMPDIR, once per process.
  ::setenv("TMPDIR", bench.path("sockets").c_str(), 1);
  std::ofstream(bench.path("hooks/version.sh")) << "#!/bin/sh\necho 1.0.0\n";
  std::ofstream(bench.path("hooks/install.sh")) << "#!/bin/sh\nexit 0\n";
  fs::permissions(bench.path("hooks/version.sh"), fs::perms::owner_all);
  fs::permissions(bench.path("hooks/install.sh"), fs::perms::owner_all);

  auto broker = Mosquitto::start();
  if (!broker) {
    die(broker.error().message());
  }
  bench.broker.emplace(std::move(*broker));
  upparat::test::EmulatorOptions options;
  options.broker_uri = bench.broker->plain_uri();
  auto emulator = EmulatorFixture::start(options);
  if (!emulator) {
    die(emulator.error().message());
  }
  bench.emulator.emplace(std::move(*emulator));
  auto swupdate = SwupdateFixture::create(bench.path("swupdate"), bench.path("sockets"));
  if (!swupdate) {
    die(swupdate.error().message());
  }
  bench.swupdate.emplace(std::move(*swupdate));

  std::printf("making a %llu MiB image into a signed .swu in %s\n",
              static_cast<unsigned long long>(size_mib), bench.work.c_str());
  std::string image(size_mib * 1024 * 1024, '\0');
  std::uint64_t x = 88172645463325252ULL;
  for (std::size_t i = 0; i + 8 <= image.size(); i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(&image[i], &x, 8);
  }
  const fs::path target = bench.path("installed.img");
  auto swu = bench.swupdate->make_swu("bench.swu", {{"rootfs.img", image, target}});
  if (!swu) {
    die(swu.error().message());
  }
  image.clear();
  image.shrink_to_fit();
  // The archive's own folder of members is not needed any more.
  std::error_code ignored;
  fs::remove_all(bench.path("swupdate/bench.swu.d"), ignored);
  bench.size = fs::file_size(*swu);
  auto sha = upparat::test::run_process({"/usr/bin/sha256sum", swu->string()}, 120s);
  if (!sha || !sha->status.success() || sha->output.size() < 64) {
    die("sha256sum failed");
  }
  bench.sha256 = sha->output.substr(0, 64);
  if (auto put = bench.emulator->put_object_file(kBucket, kKey, *swu); !put) {
    die(put.error().message());
  }
  const std::uint64_t rate = rate_mib * 1024 * 1024;
  if (auto limited = bench.emulator->add_s3_fault(
          kBucket, kKey, "\"rateLimitBytesPerSecond\":" + std::to_string(rate) + ",\"times\":-1");
      !limited) {
    die(limited.error().message());
  }
  std::printf("archive: %llu bytes; download limited to %llu MiB/s (%.1f s at that rate)\n",
              static_cast<unsigned long long>(bench.size),
              static_cast<unsigned long long>(rate_mib), static_cast<double>(bench.size) / rate);
  std::fflush(stdout);

  const std::string script_install = "[steps]\nversion = \"script\"\ninstall = \"script\"\n";
  const std::string swupdate_install = std::string("[steps]\nversion = \"script\"\n") +
                                       "install = \"swupdate\"\n[plugins.swupdate]\npath = \"" +
                                       UPPARAT_SWUPDATE_PLUGIN + "\"\n";

  const double download = bench.job("download", script_install);
  std::printf("download   (job, no-op install)        %7.2f s\n", download);
  std::fflush(stdout);
  bench.restart_swupdate();
  const double install = bench.install_local(*swu);
  std::printf("install    (local file through SWUpdate) %5.2f s\n", install);
  std::fflush(stdout);
  bench.restart_swupdate();
  const double streamed = bench.job("streamed", swupdate_install + "stream = true\n");
  std::printf("streamed   (job, stream = true)        %7.2f s\n", streamed);
  std::fflush(stdout);
  bench.restart_swupdate();
  const double sequential = bench.job("sequential", swupdate_install);
  std::printf("sequential (job, download then install) %6.2f s\n", sequential);

  const double longer = std::max(download, install);
  std::printf("streamed / max(download, install)   = %.3f (target <= 1.1: %s)\n", streamed / longer,
              streamed <= 1.1 * longer ? "met" : "NOT met");
  std::printf("sequential / (download + install)   = %.3f\n", sequential / (download + install));
  std::printf("streamed / sequential               = %.3f\n", streamed / sequential);
  bench.swupdate->stop();
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "swupdate_stream_bench: %s\n", e.what());
    return 1;
  }
}
