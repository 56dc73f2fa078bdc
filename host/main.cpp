// upparat: the OTA update daemon for AWS IoT Jobs.

#include <malloc.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>

#include "config/config.hpp"
#include "daemon/daemon.hpp"
#include "daemon/folders.hpp"

#ifndef UPPARAT_VERSION
#define UPPARAT_VERSION "0.0.0"
#endif

namespace {

constexpr const char* kDefaultConfig = "/etc/upparat/upparat.toml";

void print_help() {
  std::printf(
      "Usage: upparat [-c FILE] [-v] [-t THING] [--check-config]\n"
      "       upparat --version | --help\n"
      "\n"
      "Over-the-air update agent for AWS IoT Jobs: picks up jobs whose id starts with\n"
      "'upparat_', downloads the file of the job document and runs the configured plugins\n"
      "(version, download, install, restart, ready).\n"
      "\n"
      "Options:\n"
      "  -c, --config FILE     configuration: TOML, or a Python Upparat INI file (*.ini)\n"
      "                        (default: %s)\n"
      "  -v, --verbose         log debug messages\n"
      "  -t, --thing-name NAME the AWS IoT thing name (overrides [broker] thing_name)\n"
      "      --check-config    validate the configuration and load the plugins, then exit\n"
      "      --version         print the version and exit\n"
      "  -h, --help            print this help and exit\n"
      "\n"
      "Exit status: 0 stopped on SIGTERM/SIGINT or check passed, 1 failure (for example another\n"
      "instance holds the lock), 2 usage error, 75 a plugin step did not stop,\n"
      "78 configuration error.\n"
      "Documentation: docs/configuration.md and docs/daemon.md.\n",
      kDefaultConfig);
}

}  // namespace

int main(int argc, char** argv) {
  // Block the stop signals before any thread exists: the daemon's signal thread takes them
  // with sigwait(), and every thread (Paho's, the worker) inherits the mask.
  upparat::daemon::block_daemon_signals();
  signal(SIGPIPE, SIG_IGN);
  // One malloc arena for all threads: glibc gives each thread that allocates (Paho's two, the
  // worker, a download) an arena of its own, and what a job freed there stays private memory
  // of the idle daemon (about 850 KiB measured). The threads rarely allocate at once.
  mallopt(M_ARENA_MAX, 1);

  std::string config_path = kDefaultConfig;
  bool verbose = false;
  bool check_only = false;
  upparat::config::Overrides overrides;

  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](const char* name) -> std::optional<std::string> {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "upparat: %s needs a value (see --help)\n", name);
        return std::nullopt;
      }
      return std::string(argv[++i]);
    };
    if (arg == "-h" || arg == "--help") {
      print_help();
      return upparat::daemon::kExitOk;
    } else if (arg == "--version") {
      std::printf("upparat %s (plugin ABI 1.x)\n", UPPARAT_VERSION);
      return upparat::daemon::kExitOk;
    } else if (arg == "-v" || arg == "--verbose") {
      verbose = true;
    } else if (arg == "--check-config") {
      check_only = true;
    } else if (arg == "-c" || arg == "--config") {
      auto v = value("-c");
      if (!v) {
        return upparat::daemon::kExitUsage;
      }
      config_path = *v;
    } else if (arg == "-t" || arg == "--thing-name") {
      auto v = value("-t");
      if (!v) {
        return upparat::daemon::kExitUsage;
      }
      overrides.thing_name = *v;
    } else {
      std::fprintf(stderr, "upparat: unknown argument '%s' (see --help)\n", arg.c_str());
      return upparat::daemon::kExitUsage;
    }
  }

  upparat::daemon::setup_logging(verbose ? "debug" : "info");
  auto config = upparat::config::load(config_path, overrides);
  if (!config) {
    spdlog::error("{}", config.error().message());
    return upparat::daemon::kExitConfig;
  }
  if (!verbose) {
    spdlog::set_level(spdlog::level::from_str(config->service.log_level));
  }
  for (const auto& warning : config->warnings) {
    spdlog::warn("{}: {}", config->file.string(), warning);
  }

  if (check_only) {
    if (auto ok = upparat::daemon::check_folders(*config, ::geteuid()); !ok) {
      spdlog::error("{}", ok.error().message());
      return upparat::daemon::kExitConfig;
    }
    if (auto ok = upparat::daemon::check_plugins(*config); !ok) {
      spdlog::error("{}", ok.error().message());
      return upparat::daemon::kExitConfig;
    }
    std::cout << upparat::config::describe(*config) << "configuration OK\n";
    return upparat::daemon::kExitOk;
  }

  spdlog::info("upparat {} starting", UPPARAT_VERSION);
  try {
    auto daemon = upparat::daemon::Daemon::create(*config);
    if (!daemon) {
      spdlog::error("{}", daemon.error().message());
      return upparat::daemon::kExitFailure;
    }
    return (*daemon)->run();
  } catch (const std::exception& e) {
    spdlog::critical("unexpected error: {}", e.what());
    return upparat::daemon::kExitFailure;
  }
}
