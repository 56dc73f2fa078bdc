// upparat-plugin-check <plugin.so> [key=value ...]
// upparat-plugin-check --conformance [--allow-restart] <plugin.so> [key=value ...]
//
// Loads a plugin through the daemon's own loader and prints its descriptor. With key=value
// arguments it also creates an instance with that configuration, prints the steps that instance
// serves and destroys it again, which runs the plugin's own configuration checks. Exit 0 when
// everything passed, 1 with the error on stderr when not, 2 on a usage error. --conformance
// runs the conformance kit (tools/conformance.hpp) instead.

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <iostream>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "plugin/plugin.hpp"
#include "tools/conformance.hpp"

namespace {

using upparat::plugin::LoadedPlugin;
using upparat::plugin::PluginInfo;
using upparat::plugin::Step;

constexpr const char* kUsage =
    "usage: upparat-plugin-check <plugin.so> [key=value ...]\n"
    "       upparat-plugin-check --conformance [--allow-restart] <plugin.so> [key=value ...]\n"
    "\n"
    "Loads an Upparat plugin through the daemon's loader, checks its ABI and prints its\n"
    "descriptor. With key=value arguments (the plugin's configuration, nested TOML keys\n"
    "dotted: dbus.bus=system) it also creates an instance, prints the steps it serves\n"
    "and destroys it again.\n"
    "--conformance runs the plugin's steps on a sample job and file, asks each step to stop,\n"
    "checks the texts it returns, runs the steps again with / read-only except the paths it\n"
    "was given, creates and destroys it 100 times, and reports every check (restart only\n"
    "with --allow-restart: it may reboot this machine).\n"
    "Exit status: 0 when the plugin loads (every conformance check passed), 1 when it does\n"
    "not (the reason on stderr), 2 on a usage error.\n";

std::string join(const std::vector<std::string>& items, std::string_view separator) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) {
      out += separator;
    }
    out += item;
  }
  return out;
}

void print_info(const PluginInfo& info) {
  std::vector<std::string> provided;
  std::vector<std::string> missing;
  for (upparat::Step step : upparat::kSteps) {
    (info.provides[upparat::index(step)] ? provided : missing)
        .emplace_back(upparat::to_string(step));
  }
  const auto capabilities = upparat::plugin::capability_names(info.capabilities);
  std::cout << "path:          " << info.path.string() << "\n"
            << "name:          " << info.name << "\n"
            << "version:       " << info.version << "\n"
            << "license:       " << (info.license.empty() ? "(none)" : info.license) << "\n"
            << "description:   " << (info.description.empty() ? "(none)" : info.description) << "\n"
            << "abi:           " << info.abi_major << "." << info.abi_minor << " (daemon speaks "
            << upparat::plugin::kHostAbiMajor << "." << upparat::plugin::kHostAbiMinor << ")\n"
            << "capabilities:  " << (capabilities.empty() ? "none" : join(capabilities, " "))
            << "\n"
            << "steps:         " << (provided.empty() ? "none" : join(provided, " ")) << "\n"
            << "without:       " << (missing.empty() ? "none" : join(missing, " ")) << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  // The plugin's own log lines go to stderr; stdout carries the descriptor only.
  spdlog::set_default_logger(spdlog::stderr_logger_st("upparat-plugin-check"));

  std::vector<std::string_view> args(argv + 1, argv + argc);
  if (!args.empty() && (args[0] == "-h" || args[0] == "--help")) {
    std::cout << kUsage;
    return 0;
  }
  bool conformance = false;
  bool allow_restart = false;
  while (!args.empty() && (args[0] == "--conformance" || args[0] == "--allow-restart")) {
    (args[0] == "--conformance" ? conformance : allow_restart) = true;
    args.erase(args.begin());
  }
  if (allow_restart && !conformance) {
    std::cerr << "upparat-plugin-check: --allow-restart goes with --conformance\n" << kUsage;
    return 2;
  }
  if (args.empty() || args[0].empty()) {
    std::cerr << kUsage;
    return 2;
  }
  const std::filesystem::path path(args[0]);
  std::map<std::string, std::string> config;
  for (std::size_t i = 1; i < args.size(); ++i) {
    const auto equals = args[i].find('=');
    if (equals == std::string_view::npos || equals == 0) {
      std::cerr << "upparat-plugin-check: '" << args[i] << "' is not key=value\n" << kUsage;
      return 2;
    }
    const std::string key(args[i].substr(0, equals));
    if (!config.emplace(key, std::string(args[i].substr(equals + 1))).second) {
      std::cerr << "upparat-plugin-check: key '" << key << "' given twice\n";
      return 2;
    }
  }

  if (conformance) {
    upparat::tools::ConformanceOptions options;
    options.plugin = path;
    options.config = config;
    options.allow_restart = allow_restart;
    return upparat::tools::run_conformance(options, std::cout) == 0 ? 0 : 1;
  }

  auto info = LoadedPlugin::inspect(path);
  if (!info) {
    std::cerr << "upparat-plugin-check: " << info.error().message() << "\n";
    return 1;
  }
  print_info(*info);
  if (config.empty()) {
    std::cout << "instance:      not created (pass key=value arguments to create one)\n";
    return 0;
  }
  std::vector<std::string> served;
  {
    auto plugin = LoadedPlugin::load(path, config);
    if (!plugin) {
      std::cout.flush();
      std::cerr << "upparat-plugin-check: " << plugin.error().message() << "\n";
      return 1;
    }
    for (const upparat::Step step : upparat::kSteps) {
      if ((*plugin)->serves(step)) {
        served.emplace_back(upparat::to_string(step));
      }
    }
  }  // destroyed here, before the report
  std::cout << "serves:        " << (served.empty() ? "none" : join(served, " ")) << "\n";
  std::cout << "instance:      created with " << config.size()
            << (config.size() == 1 ? " configuration entry" : " configuration entries")
            << " and destroyed\n";
  return 0;
}
