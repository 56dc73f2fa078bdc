#pragma once

// The daemon's configuration: a TOML file (config/upparat.toml documents every key) or, as is,
// a Python Upparat INI file. Validation is strict and happens before anything connects: every
// error names the file, the key and what was expected.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <upparat/step.hpp>

#include "common/error.hpp"
#include "download/signing.hpp"

namespace upparat::config {

enum class Format { Toml, Ini };

struct Service {
  std::string log_level = "info";  ///< trace, debug, info, warn, error, critical, off
  std::filesystem::path state_directory = "/var/lib/upparat";
};

struct Broker {
  std::string host;
  std::uint16_t port = 8883;
  std::string thing_name;  ///< defaults to the host name
  std::string client_id;   ///< defaults to thing_name
  std::filesystem::path cafile;
  std::filesystem::path certfile;
  std::filesystem::path keyfile;
  bool alpn = false;       ///< offer ALPN x-amzn-mqtt-ca (default: on for port 443)
  bool plain_tcp = false;  ///< no TLS at all: a local broker only (a mosquitto bridge)
  std::chrono::seconds keep_alive{60};
  /// Reconnect back-off: from min, doubling, up to max.
  std::chrono::seconds reconnect_min{1};
  std::chrono::seconds reconnect_max{120};
};

struct Jobs {
  std::string prefix = "upparat_";
  /// Progress budget: a progress message at most every `progress_interval` and only after at
  /// least `progress_percent` more percent (when the total is known).
  std::chrono::seconds progress_interval{30};
  int progress_percent = 4;
  /// Local deadline of each step, retries included.
  PerStep<std::chrono::seconds> deadlines = {std::chrono::seconds(600), std::chrono::seconds(86400),
                                             std::chrono::seconds(7200), std::chrono::seconds(1800),
                                             std::chrono::seconds(1800)};
  /// Added to a step's deadline for the stepTimeoutInMinutes sent to AWS.
  std::chrono::seconds step_timeout_margin{600};
  /// A status update not answered within this time is sent again.
  std::chrono::seconds update_timeout{30};
  /// While idle, a `get` after this long without news (a lost notify); 0 = off.
  std::chrono::seconds poll_interval{600};
  /// A download URL refused (HTTP 403) this many times in a row without a byte transferred,
  /// a fresh URL each time, FAILS the job download_hook_failed.
  int max_url_refusals = 5;
  /// A plugin step asked to stop (deadline, cancel) that has not returned after this long is
  /// abandoned: the job FAILS "... the plugin did not stop" and the daemon exits (status 75).
  std::chrono::seconds stop_grace{30};
};

struct Download {
  std::filesystem::path directory;  ///< defaults to <state_directory>/downloads
  std::filesystem::path ca_file;    ///< empty: the system's CA store
  std::string proxy;                ///< empty: libcurl's default (environment)
  bool allow_http = false;
  std::uint64_t max_bytes_per_second = 0;
  std::chrono::seconds fsync_interval{5};
  /// Free space a download must leave on its filesystem.
  std::uint64_t reserve_bytes = 16 * 1024 * 1024;
  std::chrono::seconds backoff_cap{64};
  bool group_readable = false;  ///< directory 0750 and files 0640 (an installer's group)
  /// `signing_certificates`: PEM certificates or public keys a signed job's file is verified
  /// with (several: key rotation), resolved to absolute paths, and loaded from them when the
  /// configuration is loaded (a file missing, not PEM, or not ECDSA P-256 / RSA is an error).
  std::vector<std::filesystem::path> signing_certificate_files;
  download::SigningCertificates signing_certificates;
  /// REJECT job documents without a signature (needs signing_certificates).
  bool require_signature = false;
};

struct Retry {
  std::chrono::seconds retry_interval{60};
  int max_retries = 60;
};

/// A `[plugins.NAME]` table. The daemon's own keys (`path`, `stream`) are parsed here and are
/// not part of `settings`.
struct Plugin {
  std::string name;
  std::filesystem::path path;  ///< resolved to an absolute path
  /// `stream = true`: as the install plugin, install from the job's URL instead of a
  /// downloaded file (the plugin must have INSTALL_FROM_URL).
  bool stream = false;
  std::map<std::string, std::string> settings;  ///< flattened, dotted keys, values as text
};

struct Config {
  std::filesystem::path file;
  Format format = Format::Toml;
  Service service;
  Broker broker;
  Jobs jobs;
  Download download;
  Retry retry;
  /// Step name -> plugin name; a step missing here has no plugin (like a missing hook).
  std::map<std::string, std::string> steps;
  std::map<std::string, Plugin> plugins;
  /// Things worth telling the operator that are not errors (INI import: http, unknown keys).
  std::vector<std::string> warnings;
};

/// Overrides from the command line.
struct Overrides {
  std::optional<std::string> thing_name;  ///< -t
};

/// Where plugins named without a '/' are looked for: $UPPARAT_PLUGIN_DIR if set, else
/// plugin_directory_for() of this executable.
[[nodiscard]] std::filesystem::path plugin_directory();

/// The plugin folder of the executable `exe`: `<exe>/../../<libdir>/upparat/plugins` when that
/// folder exists (installed to any prefix: `<prefix>/sbin/upparat`); else `build_plugins` when
/// `exe` is inside `build_tree` (run from the build); else the folder of the prefix the build
/// was configured with.
[[nodiscard]] std::filesystem::path plugin_directory_for(
    const std::filesystem::path& exe, const std::filesystem::path& build_tree,
    const std::filesystem::path& build_plugins);

/// Loads and validates `file` (at most 1 MiB): a Python Upparat INI file when its name ends in
/// `.ini`, TOML otherwise. The format is chosen by the extension alone, never by the content.
[[nodiscard]] Result<Config> load(const std::filesystem::path& file,
                                  const Overrides& overrides = {});

/// Parses TOML text (`file` only names it in messages and anchors relative paths).
[[nodiscard]] Result<Config> parse_toml(const std::string& text, const std::filesystem::path& file,
                                        const Overrides& overrides = {});

/// Parses a Python Upparat INI file.
[[nodiscard]] Result<Config> parse_ini(const std::string& text, const std::filesystem::path& file,
                                       const Overrides& overrides = {});

/// A human-readable summary (for --check-config), without secrets.
[[nodiscard]] std::string describe(const Config& config);

}  // namespace upparat::config
