// The TOML configuration: the schema of each section, read with strict types.

#include <algorithm>
#include <cctype>
#include <sstream>
#include <string_view>

#include "common/sanitize.hpp"
#include "config/config.hpp"
#include "config/detail.hpp"
#include "config/toml_values.hpp"

namespace upparat::config {
namespace fs = std::filesystem;

using detail::finalize;
using detail::flatten;
using detail::kLogLevels;
using detail::resolve;
using detail::scalar_text;
using detail::Section;
using detail::set_if;
using detail::set_seconds;
using detail::to_json;
using detail::type_name;

namespace {

bool valid_prefix(const std::string& prefix) {
  return prefix.size() <= 63 && std::all_of(prefix.begin(), prefix.end(), [](unsigned char c) {
           return std::isalnum(c) || c == '_' || c == '-';
         });
}

}  // namespace

Result<Config> parse_toml(const std::string& text, const fs::path& file,
                          const Overrides& overrides) {
  // TOML is UTF-8. Checked before toml11 sees the text: toml11 3.7 reads past its buffer when
  // it reports invalid UTF-8 in a literal string. Line by line, to name the line (a
  // multi-byte character never contains '\n').
  std::size_t line_start = 0;
  for (int line = 1; line_start <= text.size(); ++line) {
    const std::size_t end = std::min(text.find('\n', line_start), text.size());
    if (!is_valid_utf8(std::string_view(text).substr(line_start, end - line_start))) {
      return fail(file.string() + ": invalid TOML: line " + std::to_string(line) +
                  " is not valid UTF-8 (a TOML file must be UTF-8 encoded)");
    }
    line_start = end + 1;
  }
  toml::value root;
  try {
    std::istringstream in(text);
    root = toml::parse(in, file.string());
  } catch (const std::exception& e) {
    return fail(file.string() + ": invalid TOML: " + e.what());
  }
  Config config;
  config.file = file;
  config.format = Format::Toml;

  Section top(file, "", &root);
  // [service]
  {
    UPPARAT_TRY(t, top.table("service"));
    Section s(file, "service", *t);
    UPPARAT_TRY(level, s.string("log_level"));
    if (*level) {
      if (!kLogLevels.count(**level)) {
        return fail(s.error("log_level",
                            "expected one of trace, debug, info, warn, error, "
                            "critical, off, got '" +
                                **level + "'"));
      }
      config.service.log_level = **level;
    }
    UPPARAT_TRY(dir, s.string("state_directory"));
    if (*dir) {
      config.service.state_directory = resolve(file, **dir);
    }
    if (auto ok = s.finish(); !ok) {
      return fail(ok.error());
    }
  }
  // [broker]
  {
    UPPARAT_TRY(t, top.table("broker"));
    Section s(file, "broker", *t);
    auto& b = config.broker;
    UPPARAT_TRY(host, s.string("host"));
    set_if(b.host, *host);
    UPPARAT_TRY(port, s.integer("port", 1, 65535));
    if (*port) {
      b.port = static_cast<std::uint16_t>(**port);
    }
    UPPARAT_TRY(thing, s.string("thing_name"));
    set_if(b.thing_name, *thing);
    UPPARAT_TRY(client, s.string("client_id"));
    set_if(b.client_id, *client);
    for (auto [key, target] : {std::pair<const char*, fs::path*>{"cafile", &b.cafile},
                               {"certfile", &b.certfile},
                               {"keyfile", &b.keyfile}}) {
      UPPARAT_TRY(v, s.string(key));
      if (*v) {
        *target = resolve(file, **v);
      }
    }
    UPPARAT_TRY(alpn, s.boolean("alpn"));
    b.alpn = alpn->value_or(b.port == 443);
    UPPARAT_TRY(plain, s.boolean("plain_tcp"));
    set_if(b.plain_tcp, *plain);
    UPPARAT_TRY(keep_alive, s.integer("keep_alive", 30, 1200));
    set_seconds(b.keep_alive, *keep_alive);
    UPPARAT_TRY(rmin, s.integer("reconnect_min", 1, 3600));
    set_seconds(b.reconnect_min, *rmin);
    UPPARAT_TRY(rmax, s.integer("reconnect_max", 1, 3600));
    set_seconds(b.reconnect_max, *rmax);
    if (b.reconnect_max < b.reconnect_min) {
      return fail(s.error("reconnect_max", "expected a value not below reconnect_min"));
    }
    if (b.plain_tcp && b.alpn && alpn->has_value()) {
      return fail(s.error("alpn", "expected false with plain_tcp = true (ALPN needs TLS)"));
    }
    if (b.plain_tcp) {
      b.alpn = false;
    }
    if (!*t) {
      return fail(file.string() + ": [broker]: expected a [broker] table with at least host");
    }
    if (auto ok = s.finish(); !ok) {
      return fail(ok.error());
    }
  }
  // [jobs]
  {
    UPPARAT_TRY(t, top.table("jobs"));
    Section s(file, "jobs", *t);
    auto& j = config.jobs;
    UPPARAT_TRY(prefix, s.string("prefix", true));
    if (*prefix) {
      if (!valid_prefix(**prefix)) {
        return fail(s.error(
            "prefix", "expected up to 63 characters of [a-zA-Z0-9_-], got '" + **prefix + "'"));
      }
      j.prefix = **prefix;
    }
    UPPARAT_TRY(interval, s.integer("progress_interval", 0, 86400));
    set_seconds(j.progress_interval, *interval);
    UPPARAT_TRY(percent, s.integer("progress_percent", 0, 100));
    if (*percent) {
      j.progress_percent = static_cast<int>(**percent);
    }
    UPPARAT_TRY(margin, s.integer("step_timeout_margin", 0, 86400));
    set_seconds(j.step_timeout_margin, *margin);
    UPPARAT_TRY(update_timeout, s.integer("update_timeout", 1, 3600));
    set_seconds(j.update_timeout, *update_timeout);
    UPPARAT_TRY(poll_interval, s.integer("poll_interval", 0, 7 * 86400));
    set_seconds(j.poll_interval, *poll_interval);
    UPPARAT_TRY(refusals, s.integer("max_url_refusals", 1, 1000));
    if (*refusals) {
      j.max_url_refusals = static_cast<int>(**refusals);
    }
    UPPARAT_TRY(grace, s.integer("stop_grace", 1, 3600));
    set_seconds(j.stop_grace, *grace);
    UPPARAT_TRY(deadlines, s.table("deadlines"));
    Section d(file, "jobs.deadlines", *deadlines);
    for (Step step : kSteps) {
      // AWS's step timeout is at most 10080 minutes (7 days): keep deadline + margin below.
      UPPARAT_TRY(v, d.integer(std::string(to_string(step)), 1, 7 * 86400 - 86400));
      set_seconds(j.deadlines[index(step)], *v);
    }
    if (auto ok = d.finish(); !ok) {
      return fail(ok.error());
    }
    if (auto ok = s.finish(); !ok) {
      return fail(ok.error());
    }
  }
  // [download]
  {
    UPPARAT_TRY(t, top.table("download"));
    Section s(file, "download", *t);
    auto& d = config.download;
    UPPARAT_TRY(dir, s.string("directory"));
    if (*dir) {
      d.directory = resolve(file, **dir);
    }
    UPPARAT_TRY(ca, s.string("ca_file"));
    if (*ca) {
      d.ca_file = resolve(file, **ca);
    }
    UPPARAT_TRY(proxy, s.string("proxy", true));
    set_if(d.proxy, *proxy);
    UPPARAT_TRY(http, s.boolean("allow_http"));
    set_if(d.allow_http, *http);
    UPPARAT_TRY(speed, s.integer("max_bytes_per_second", 0, INT64_MAX));
    if (*speed) {
      d.max_bytes_per_second = static_cast<std::uint64_t>(**speed);
    }
    UPPARAT_TRY(reserve, s.integer("reserve_bytes", 0, INT64_MAX));
    if (*reserve) {
      d.reserve_bytes = static_cast<std::uint64_t>(**reserve);
    }
    UPPARAT_TRY(fsync, s.integer("fsync_interval", 1, 3600));
    set_seconds(d.fsync_interval, *fsync);
    UPPARAT_TRY(cap, s.integer("backoff_cap", 1, 3600));
    set_seconds(d.backoff_cap, *cap);
    UPPARAT_TRY(group, s.boolean("group_readable"));
    set_if(d.group_readable, *group);
    if (const auto* certs = s.find("signing_certificates")) {
      if (!certs->is_array()) {
        return fail(s.error(
            "signing_certificates",
            std::string("expected an array of file names, got ") + type_name(certs->type())));
      }
      for (const auto& entry : certs->as_array()) {
        if (!entry.is_string() || entry.as_string().str.empty()) {
          return fail(s.error("signing_certificates",
                              std::string("expected an array of file names, got an entry that "
                                          "is ") +
                                  (entry.is_string() ? "empty" : type_name(entry.type()))));
        }
        d.signing_certificate_files.push_back(resolve(file, entry.as_string().str));
      }
    }
    UPPARAT_TRY(require, s.boolean("require_signature"));
    set_if(d.require_signature, *require);
    if (auto ok = s.finish(); !ok) {
      return fail(ok.error());
    }
  }
  // [retry]
  {
    UPPARAT_TRY(t, top.table("retry"));
    Section s(file, "retry", *t);
    UPPARAT_TRY(interval, s.integer("retry_interval", 0, 86400));
    set_seconds(config.retry.retry_interval, *interval);
    UPPARAT_TRY(max, s.integer("max_retries", 0, 100000));
    if (*max) {
      config.retry.max_retries = static_cast<int>(**max);
    }
    if (auto ok = s.finish(); !ok) {
      return fail(ok.error());
    }
  }
  // [plugins.NAME]
  {
    UPPARAT_TRY(t, top.table("plugins"));
    if (*t) {
      for (const auto& [name, value] : (*t)->as_table()) {
        std::string section = "plugins." + name;
        if (!value.is_table()) {
          return fail(file.string() + ": [plugins] " + name + ": expected a table [" + section +
                      "] with a path, got " + type_name(value.type()));
        }
        Plugin plugin;
        plugin.name = name;
        const auto& table = value.as_table();
        auto path = table.find("path");
        if (path == table.end()) {
          return fail(file.string() + ": [" + section +
                      "] path: expected the plugin's .so file (missing)");
        }
        if (!path->second.is_string() || path->second.as_string().str.empty()) {
          return fail(file.string() + ": [" + section +
                      "] path: expected a non-empty string, got " + type_name(path->second.type()));
        }
        fs::path p = path->second.as_string().str;
        plugin.path = p.has_parent_path() ? resolve(file, p) : plugin_directory() / p;
        Section host_keys(file, section, &value);
        UPPARAT_TRY(stream, host_keys.boolean("stream"));
        plugin.stream = stream->value_or(false);
        for (const auto& [key, setting] : table) {
          // The daemon's own keys are not handed to the plugin.
          if (key == "path" || key == "stream") {
            continue;
          }
          if (setting.is_table()) {
            flatten(setting, key, plugin.settings);
          } else if (setting.is_array()) {
            plugin.settings[key] = to_json(setting);
          } else {
            plugin.settings[key] = scalar_text(setting);
          }
        }
        config.plugins[name] = std::move(plugin);
      }
    }
  }
  // [steps]
  {
    UPPARAT_TRY(t, top.table("steps"));
    Section s(file, "steps", *t);
    for (Step step : kSteps) {
      const std::string name(to_string(step));
      UPPARAT_TRY(plugin, s.string(name));
      if (*plugin) {
        config.steps[name] = **plugin;
      }
    }
    if (auto ok = s.finish(); !ok) {
      return fail(ok.error());
    }
  }
  if (auto ok = top.finish(); !ok) {
    return fail(ok.error());
  }
  if (auto ok = finalize(config, overrides); !ok) {
    return fail(ok.error());
  }
  return config;
}
}  // namespace upparat::config
