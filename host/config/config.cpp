#include "config/config.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "config/detail.hpp"

#ifndef UPPARAT_DEFAULT_PLUGIN_DIR
#define UPPARAT_DEFAULT_PLUGIN_DIR "/usr/lib/upparat/plugins"
#endif

namespace upparat::config {
namespace fs = std::filesystem;

namespace {

bool valid_thing_name(const std::string& name) {
  if (name.empty() || name.size() > 128) {
    return false;
  }
  return std::all_of(name.begin(), name.end(), [](unsigned char c) {
    return std::isalnum(c) || c == ':' || c == '_' || c == '-';
  });
}

std::string host_name() {
  char buffer[256] = {};
  if (::gethostname(buffer, sizeof(buffer) - 1) != 0) {
    return {};
  }
  return buffer;
}

/// Checks that `path` is a regular file this process can read.
Status check_readable(const fs::path& path) {
  std::error_code ec;
  auto status = fs::status(path, ec);
  if (ec || !fs::exists(status)) {
    return fail("no such file: " + path.string());
  }
  if (!fs::is_regular_file(status)) {
    return fail("not a regular file: " + path.string());
  }
  if (::access(path.c_str(), R_OK) != 0) {
    return fail("cannot read " + path.string() + ": " + std::strerror(errno));
  }
  return {};
}

}  // namespace

fs::path detail::resolve(const fs::path& base_file, const fs::path& path) {
  if (path.empty() || path.is_absolute()) {
    return path;
  }
  return (base_file.has_parent_path() ? base_file.parent_path() : fs::path(".")) / path;
}

Status detail::finalize(Config& config, const Overrides& overrides) {
  const std::string file = config.file.string();
  auto& broker = config.broker;
  if (overrides.thing_name) {
    broker.thing_name = *overrides.thing_name;
  }
  if (broker.thing_name.empty()) {
    broker.thing_name = host_name();
  }
  if (!valid_thing_name(broker.thing_name)) {
    return fail(file + ": [broker] thing_name: expected 1-128 characters of [a-zA-Z0-9:_-], got '" +
                broker.thing_name + "'" +
                (overrides.thing_name ? " (from -t)" : " (set thing_name or use -t)"));
  }
  if (broker.client_id.empty()) {
    broker.client_id = broker.thing_name;
  }
  if (broker.client_id.size() > 128) {
    return fail(file + ": [broker] client_id: expected at most 128 bytes");
  }
  if (broker.host.empty()) {
    return fail(file + ": [broker] host: expected the broker's host name (missing)");
  }

  if (!broker.plain_tcp) {
    if (broker.certfile.empty() || broker.keyfile.empty()) {
      return fail(file + ": [broker] " + (broker.certfile.empty() ? "certfile" : "keyfile") +
                  ": expected the device's certificate and key for TLS (or plain_tcp = true for "
                  "a local broker)");
    }
    for (auto [key, path] : {std::pair<const char*, fs::path*>{"cafile", &broker.cafile},
                             {"certfile", &broker.certfile},
                             {"keyfile", &broker.keyfile}}) {
      if (path->empty()) {
        continue;
      }
      if (auto ok = check_readable(*path); !ok) {
        return fail(file + ": [broker] " + key + ": expected a readable file, " +
                    ok.error().message());
      }
    }
    // The private key is the device's identity: anyone who can read it can act as the device
    // towards AWS IoT. A group may need it (the daemon's own group); others never do.
    struct stat key {};
    if (::stat(broker.keyfile.c_str(), &key) == 0 && (key.st_mode & S_IRWXO) != 0) {
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(key.st_mode & 07777));
      config.warnings.push_back(
          "[broker] keyfile: the private key " + broker.keyfile.string() +
          " is accessible to every user of the device (mode " + mode +
          "): any of them can act as this device; run chmod o-rwx on it (0600, or 0640 for the "
          "daemon's group)");
    }
  } else {
    // The only way to turn TLS off: said loudly at every start.
    config.warnings.push_back(
        "[broker] plain_tcp = true: MQTT WITHOUT TLS to " + broker.host +
        " (no encryption, no authentication of the broker); use it only for a broker on this "
        "device or a trusted local link, never for AWS IoT");
  }

  if (config.download.directory.empty()) {
    config.download.directory = config.service.state_directory / "downloads";
  }
  if (!config.download.ca_file.empty()) {
    if (auto ok = check_readable(config.download.ca_file); !ok) {
      return fail(file + ": [download] ca_file: expected a readable file, " + ok.error().message());
    }
  }
  for (const auto& path : config.download.signing_certificate_files) {
    auto certificate = download::load_signing_certificate(path);
    if (!certificate) {
      return fail(file + ": [download] signing_certificates: " + certificate.error().message());
    }
    config.download.signing_certificates.push_back(std::move(*certificate));
  }
  if (config.download.require_signature && config.download.signing_certificates.empty()) {
    return fail(file +
                ": [download] require_signature: true needs signing_certificates to verify "
                "the signatures with");
  }

  // Without [steps], a single plugin serves every step.
  if (config.steps.empty() && config.plugins.size() == 1) {
    for (Step step : kSteps) {
      config.steps[std::string(to_string(step))] = config.plugins.begin()->first;
    }
  }
  for (const auto& [step, plugin] : config.steps) {
    if (!config.plugins.count(plugin)) {
      return fail(file + ": [steps] " + step +
                  ": expected the name of a [plugins.NAME] table, got '" + plugin + "'");
    }
  }
  for (auto& [name, plugin] : config.plugins) {
    if (auto ok = check_readable(plugin.path); !ok) {
      return fail(file + ": [plugins." + name + "] path: expected a plugin shared object, " +
                  ok.error().message());
    }
    bool used = std::any_of(config.steps.begin(), config.steps.end(),
                            [&, n = name](const auto& s) { return s.second == n; });
    if (!used) {
      config.warnings.push_back("[plugins." + name + "] is not used by any step in [steps]");
    }
  }
  return {};
}

fs::path plugin_directory() {
  if (const char* dir = std::getenv("UPPARAT_PLUGIN_DIR"); dir && *dir) {
    return dir;
  }
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    return plugin_directory_for(exe, fs::path(UPPARAT_BUILD_TREE), UPPARAT_BUILD_PLUGIN_DIR);
  }
  return UPPARAT_DEFAULT_PLUGIN_DIR;
}

fs::path plugin_directory_for(const fs::path& exe, const fs::path& build_tree,
                              const fs::path& build_plugins) {
  // <prefix>/sbin/upparat or <prefix>/bin/upparat-plugin-check, whatever the prefix.
  std::error_code ec;
  const fs::path installed = exe.parent_path().parent_path() / UPPARAT_PLUGIN_RELATIVE_DIR;
  if (fs::is_directory(installed, ec)) {
    return installed;
  }
  // An executable of this build, still in its build tree: the plugins built with it.
  const fs::path relative = exe.lexically_relative(build_tree);
  if (!relative.empty() && *relative.begin() != "..") {
    return build_plugins;
  }
  return UPPARAT_DEFAULT_PLUGIN_DIR;
}

Result<Config> load(const fs::path& file, const Overrides& overrides) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    std::error_code ec;
    if (!fs::exists(file, ec)) {
      return fail(file.string() + ": no such configuration file");
    }
    return fail(file.string() + ": cannot read: " + std::strerror(errno));
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  std::string text = buffer.str();
  if (text.size() > 1024 * 1024) {
    return fail(file.string() + ": expected a configuration file below 1 MiB");
  }
  if (file.extension() == ".ini") {
    return parse_ini(text, file, overrides);
  }
  return parse_toml(text, file, overrides);
}

std::string describe(const Config& config) {
  std::ostringstream out;
  const auto& b = config.broker;
  out << "configuration " << config.file.string()
      << (config.format == Format::Ini ? " (Python Upparat INI)" : "") << "\n";
  out << "  broker     " << (b.plain_tcp ? "tcp://" : "ssl://") << b.host << ":" << b.port
      << (b.alpn ? " (ALPN x-amzn-mqtt-ca)" : "") << "\n";
  out << "  thing      " << b.thing_name << " (client id " << b.client_id << ")\n";
  out << "  state      " << config.service.state_directory.string() << "\n";
  out << "  downloads  " << config.download.directory.string() << "\n";
  for (const auto& certificate : config.download.signing_certificates) {
    out << "  signer     " << certificate.subject << " (" << to_string(certificate.algorithm)
        << ", " << certificate.path.string() << ")\n";
  }
  if (!config.download.signing_certificates.empty()) {
    out << "  signatures "
        << (config.download.require_signature ? "required" : "checked when a job is signed")
        << "\n";
  }
  out << "  job prefix " << config.jobs.prefix << "\n";
  for (Step s : kSteps) {
    const std::string step(to_string(s));
    auto it = config.steps.find(step);
    out << "  step " << step << std::string(9 - step.size(), ' ');
    if (it == config.steps.end()) {
      out << "(none)\n";
      continue;
    }
    const Plugin& plugin = config.plugins.at(it->second);
    out << it->second << " (" << plugin.path.string() << ")";
    if (s == Step::Install && plugin.stream) {
      out << ", stream = true: installs from the job's URL if the plugin can";
    }
    out << "\n";
  }
  return out.str();
}

}  // namespace upparat::config
