// The import of a Python Upparat INI file (configparser syntax) with the Python defaults.

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>

#include "common/text.hpp"
#include "config/config.hpp"
#include "config/detail.hpp"

namespace upparat::config {
namespace fs = std::filesystem;

using detail::finalize;
using detail::kLogLevels;
using detail::resolve;
using detail::set_seconds;

namespace {

// What the INI reader strips around lines, section names, keys and values.
constexpr std::string_view kIniSpaces = " \t\r\n";

}  // namespace

Result<Config> parse_ini(const std::string& text, const fs::path& file,
                         const Overrides& overrides) {
  // Python's configparser: [section], "key = value" or "key: value", # and ; comments,
  // indented continuation lines, keys case-insensitive.
  std::map<std::string, std::map<std::string, std::string>> sections;
  std::string section;
  std::string last_key;
  std::istringstream in(text);
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    const std::string trimmed(trim(line, kIniSpaces));
    if (trimmed.empty() || trimmed[0] == '#' || trimmed[0] == ';') {
      continue;
    }
    if (!line.empty() && (line[0] == ' ' || line[0] == '\t') && !last_key.empty()) {
      sections[section][last_key] += "\n" + trimmed;
      continue;
    }
    if (trimmed.front() == '[') {
      if (trimmed.back() != ']') {
        return fail(file.string() + ":" + std::to_string(number) + ": expected a [section] line");
      }
      section = lower(trim(std::string_view(trimmed).substr(1, trimmed.size() - 2), kIniSpaces));
      sections[section];
      last_key.clear();
      continue;
    }
    auto sep = trimmed.find_first_of("=:");
    if (sep == std::string::npos || sep == 0) {
      return fail(file.string() + ":" + std::to_string(number) +
                  ": expected 'key = value' or a [section]");
    }
    if (section.empty()) {
      return fail(file.string() + ":" + std::to_string(number) +
                  ": expected a [section] before the first key");
    }
    last_key = lower(trim(std::string_view(trimmed).substr(0, sep), kIniSpaces));
    sections[section][last_key] = trim(std::string_view(trimmed).substr(sep + 1), kIniSpaces);
  }

  Config config;
  config.file = file;
  config.format = Format::Ini;
  config.broker.host = "127.0.0.1";
  config.broker.port = 1883;
  config.broker.client_id = "upparat";
  config.download.allow_http = true;
  config.warnings.push_back(
      "imported a Python Upparat INI file: plain http download URLs are allowed");
  fs::path download_location = "/tmp";

  auto get = [&](const std::string& sec, const std::string& key) -> std::optional<std::string> {
    auto s = sections.find(sec);
    if (s == sections.end()) {
      return std::nullopt;
    }
    auto k = s->second.find(key);
    if (k == s->second.end()) {
      return std::nullopt;
    }
    return k->second;
  };
  auto integer = [&](const std::string& sec, const std::string& key, std::int64_t min,
                     std::int64_t max) -> Result<std::optional<std::int64_t>> {
    auto v = get(sec, key);
    if (!v) {
      return std::optional<std::int64_t>{};
    }
    char* end = nullptr;
    errno = 0;
    long long n = std::strtoll(v->c_str(), &end, 10);
    if (v->empty() || *end != '\0' || errno != 0 || n < min || n > max) {
      return fail(file.string() + ": [" + sec + "] " + key + ": expected an integer from " +
                  std::to_string(min) + " to " + std::to_string(max) + ", got '" + *v + "'");
    }
    return std::optional<std::int64_t>{n};
  };

  const std::map<std::string, std::set<std::string>> known = {
      {"service", {"log_level", "download_location"}},
      {"broker", {"host", "port", "thing_name", "client_id", "cafile", "certfile", "keyfile"}},
      {"hooks",
       {"version", "download", "install", "restart", "ready", "retry_interval", "max_retries"}}};
  for (const auto& [sec, keys] : sections) {
    auto k = known.find(sec);
    if (k == known.end()) {
      config.warnings.push_back("[" + sec + "] is not used by this daemon: ignored");
      continue;
    }
    for (const auto& [key, value] : keys) {
      if (!k->second.count(key)) {
        config.warnings.push_back("[" + sec + "] " + key + " is not used by this daemon: ignored");
      }
    }
  }

  if (auto level = get("service", "log_level")) {
    std::string l = lower(*level);
    if (l == "warning") {
      l = "warn";
    }
    if (l == "fatal") {
      l = "critical";
    }
    if (!kLogLevels.count(l)) {
      return fail(file.string() +
                  ": [service] log_level: expected one of debug, info, warning, "
                  "error, critical, got '" +
                  *level + "'");
    }
    config.service.log_level = l;
  }
  if (auto location = get("service", "download_location"); location && !location->empty()) {
    download_location = resolve(file, *location);
  }
  config.service.state_directory = download_location / "upparat" / "state";
  config.download.directory = download_location / "upparat";

  auto& b = config.broker;
  if (auto host = get("broker", "host"); host && !host->empty()) {
    b.host = *host;
  }
  UPPARAT_TRY(port, integer("broker", "port", 1, 65535));
  if (*port) {
    b.port = static_cast<std::uint16_t>(**port);
  }
  if (auto thing = get("broker", "thing_name"); thing && !thing->empty()) {
    b.thing_name = *thing;
  }
  if (auto client = get("broker", "client_id"); client && !client->empty()) {
    b.client_id = *client;
  }
  for (auto [key, target] : {std::pair<const char*, fs::path*>{"cafile", &b.cafile},
                             {"certfile", &b.certfile},
                             {"keyfile", &b.keyfile}}) {
    if (auto v = get("broker", key); v && !v->empty()) {
      *target = resolve(file, *v);
    }
  }
  if (b.certfile.empty() && b.keyfile.empty()) {
    b.plain_tcp = true;
  } else {
    // As the Python version: certificates mean AWS IoT, on 443 (ALPN) or 8883.
    if (b.port != 443 && b.port != 8883) {
      return fail(file.string() + ": [broker] port: expected 443 or 8883 with certificates, got " +
                  std::to_string(b.port));
    }
    b.alpn = true;
  }

  UPPARAT_TRY(interval, integer("hooks", "retry_interval", 0, 86400));
  set_seconds(config.retry.retry_interval, *interval);
  UPPARAT_TRY(retries, integer("hooks", "max_retries", 0, 100000));
  if (*retries) {
    config.retry.max_retries = static_cast<int>(**retries);
  }

  Plugin script;
  script.name = "script";
  script.path = plugin_directory() / "upparat-script.so";
  for (Step step : kSteps) {
    const std::string name(to_string(step));
    if (auto hook = get("hooks", name); hook && !hook->empty()) {
      script.settings[name] = fs::absolute(resolve(file, *hook)).lexically_normal().string();
    }
    config.steps[name] = "script";
  }
  config.plugins["script"] = std::move(script);

  if (auto ok = finalize(config, overrides); !ok) {
    return fail(ok.error());
  }
  return config;
}
}  // namespace upparat::config
