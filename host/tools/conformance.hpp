#pragma once

// upparat-plugin-check --conformance: runs a plugin through the daemon's real loader and checks
// what the daemon relies on, printing one line per check and a summary.

#include <filesystem>
#include <iosfwd>
#include <map>
#include <string>

namespace upparat::tools {

struct ConformanceOptions {
  std::filesystem::path plugin;
  std::map<std::string, std::string> config;
  /// Run the restart step too (it may reboot the machine the kit runs on).
  bool allow_restart = false;
  /// create/destroy cycles of the leak check.
  int cycles = 100;
};

/// Runs every check, writing the report to `out`. Returns the number of failed checks.
int run_conformance(const ConformanceOptions& options, std::ostream& out);

}  // namespace upparat::tools
