#include "config/config.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <toml.hpp>

#ifndef UPPARAT_DEFAULT_PLUGIN_DIR
#define UPPARAT_DEFAULT_PLUGIN_DIR "/usr/lib/upparat/plugins"
#endif

namespace upparat::config {
namespace fs = std::filesystem;

namespace {

const std::set<std::string> kLogLevels = {"trace", "debug",    "info", "warn",
                                          "error", "critical", "off"};

bool valid_thing_name(const std::string& name) {
  if (name.empty() || name.size() > 128)
    return false;
  return std::all_of(name.begin(), name.end(), [](unsigned char c) {
    return std::isalnum(c) || c == ':' || c == '_' || c == '-';
  });
}

bool valid_prefix(const std::string& prefix) {
  return prefix.size() <= 63 && std::all_of(prefix.begin(), prefix.end(), [](unsigned char c) {
           return std::isalnum(c) || c == '_' || c == '-';
         });
}

std::string host_name() {
  char buffer[256] = {};
  if (::gethostname(buffer, sizeof(buffer) - 1) != 0)
    return {};
  return buffer;
}

/// Checks that `path` is a regular file this process can read.
Status check_readable(const fs::path& path) {
  std::error_code ec;
  auto status = fs::status(path, ec);
  if (ec || !fs::exists(status))
    return fail("no such file: " + path.string());
  if (!fs::is_regular_file(status))
    return fail("not a regular file: " + path.string());
  if (::access(path.c_str(), R_OK) != 0)
    return fail("cannot read " + path.string() + ": " + std::strerror(errno));
  return {};
}

const char* type_name(toml::value_t type) {
  switch (type) {
    case toml::value_t::boolean:
      return "a boolean";
    case toml::value_t::integer:
      return "an integer";
    case toml::value_t::floating:
      return "a float";
    case toml::value_t::string:
      return "a string";
    case toml::value_t::array:
      return "an array";
    case toml::value_t::table:
      return "a table";
    case toml::value_t::empty:
      return "nothing";
    default:
      return "a date/time";
  }
}

/// JSON text of a TOML value (arrays and inline values handed to plugins).
std::string to_json(const toml::value& value);

std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c < 0x20) {
          char buffer[8];
          std::snprintf(buffer, sizeof(buffer), "\\u%04x", c);
          out += buffer;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

/// A TOML scalar in its TOML spelling (strings as they are).
std::string scalar_text(const toml::value& value) {
  switch (value.type()) {
    case toml::value_t::string:
      return value.as_string().str;
    case toml::value_t::boolean:
      return value.as_boolean() ? "true" : "false";
    case toml::value_t::integer:
      return std::to_string(value.as_integer());
    default: {
      std::ostringstream out;
      out << value;
      std::string text = out.str();
      while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back())))
        text.pop_back();
      return text;
    }
  }
}

std::string to_json(const toml::value& value) {
  switch (value.type()) {
    case toml::value_t::string:
      return json_string(value.as_string().str);
    case toml::value_t::array: {
      std::string out = "[";
      bool first = true;
      for (const auto& item : value.as_array()) {
        if (!first)
          out += ",";
        first = false;
        out += to_json(item);
      }
      return out + "]";
    }
    case toml::value_t::table: {
      std::map<std::string, const toml::value*> sorted;
      for (const auto& [k, v] : value.as_table())
        sorted[k] = &v;
      std::string out = "{";
      bool first = true;
      for (const auto& [k, v] : sorted) {
        if (!first)
          out += ",";
        first = false;
        out += json_string(k) + ":" + to_json(*v);
      }
      return out + "}";
    }
    case toml::value_t::boolean:
    case toml::value_t::integer:
    case toml::value_t::floating:
      return scalar_text(value);
    default:
      return json_string(scalar_text(value));
  }
}

/// Reads one table of the TOML document, refusing unknown keys and wrong types. Every error
/// reads "<file>: [<section>] <key>: expected ..., got ...".
class Section {
 public:
  Section(const fs::path& file, std::string name, const toml::value* table)
      : file_(file), name_(std::move(name)), table_(table) {}

  [[nodiscard]] Error error(const std::string& key, const std::string& what) const {
    std::string where = file_.string() + ":";
    if (!name_.empty())
      where += " [" + name_ + "]";
    if (!key.empty())
      where += " " + key;
    return Error(where + ": " + what);
  }

  const toml::value* find(const std::string& key) {
    known_.insert(key);
    if (!table_)
      return nullptr;
    const auto& table = table_->as_table();
    auto it = table.find(key);
    return it == table.end() ? nullptr : &it->second;
  }

  Result<std::optional<std::string>> string(const std::string& key, bool allow_empty = false) {
    const auto* v = find(key);
    if (!v)
      return std::optional<std::string>{};
    if (!v->is_string())
      return fail(error(key, std::string("expected a string, got ") + type_name(v->type())));
    std::string text = v->as_string().str;
    if (text.empty() && !allow_empty)
      return fail(error(key, "expected a non-empty string"));
    return std::optional<std::string>{text};
  }

  Result<std::optional<std::int64_t>> integer(const std::string& key, std::int64_t min,
                                              std::int64_t max) {
    const auto* v = find(key);
    if (!v)
      return std::optional<std::int64_t>{};
    std::string range = "an integer from " + std::to_string(min) + " to " + std::to_string(max);
    if (!v->is_integer())
      return fail(error(key, "expected " + range + ", got " + type_name(v->type())));
    auto n = v->as_integer();
    if (n < min || n > max)
      return fail(error(key, "expected " + range + ", got " + std::to_string(n)));
    return std::optional<std::int64_t>{n};
  }

  Result<std::optional<bool>> boolean(const std::string& key) {
    const auto* v = find(key);
    if (!v)
      return std::optional<bool>{};
    if (!v->is_boolean())
      return fail(error(
          key, std::string("expected a boolean (true or false), got ") + type_name(v->type())));
    return std::optional<bool>{v->as_boolean()};
  }

  Result<const toml::value*> table(const std::string& key) {
    const auto* v = find(key);
    if (v && !v->is_table())
      return fail(error(key, std::string("expected a table, got ") + type_name(v->type())));
    return v;
  }

  /// Refuses keys that were never asked for.
  Status finish() const {
    if (!table_)
      return {};
    std::vector<std::string> unknown;
    for (const auto& [key, value] : table_->as_table())
      if (!known_.count(key))
        unknown.push_back(key);
    if (unknown.empty())
      return {};
    std::sort(unknown.begin(), unknown.end());
    std::string expected;
    for (const auto& k : std::set<std::string>(known_.begin(), known_.end()))
      expected += (expected.empty() ? "" : ", ") + k;
    return fail(error(unknown.front(), "unknown key (expected one of: " + expected + ")"));
  }

 private:
  const fs::path& file_;
  std::string name_;
  const toml::value* table_;
  std::set<std::string> known_;
};

#define UPPARAT_TRY(var, expr) \
  auto var = (expr);           \
  if (!var)                    \
    return fail(var.error());

template <class T>
void set_if(T& target, const std::optional<T>& value) {
  if (value)
    target = *value;
}

void set_seconds(std::chrono::seconds& target, const std::optional<std::int64_t>& value) {
  if (value)
    target = std::chrono::seconds(*value);
}

/// Flattens a plugin's table into dotted keys (nested tables), arrays as JSON.
void flatten(const toml::value& table, const std::string& prefix,
             std::map<std::string, std::string>& out) {
  for (const auto& [key, value] : table.as_table()) {
    std::string full = prefix.empty() ? key : prefix + "." + key;
    if (value.is_table())
      flatten(value, full, out);
    else if (value.is_array())
      out[full] = to_json(value);
    else
      out[full] = scalar_text(value);
  }
}

fs::path resolve(const fs::path& base_file, const fs::path& path) {
  if (path.empty() || path.is_absolute())
    return path;
  return (base_file.has_parent_path() ? base_file.parent_path() : fs::path(".")) / path;
}

/// Checks everything that does not depend on the format: defaults, certificates, plugins.
Status finalize(Config& config, const Overrides& overrides) {
  const std::string file = config.file.string();
  auto& broker = config.broker;
  if (overrides.thing_name)
    broker.thing_name = *overrides.thing_name;
  if (broker.thing_name.empty())
    broker.thing_name = host_name();
  if (!valid_thing_name(broker.thing_name))
    return fail(file + ": [broker] thing_name: expected 1-128 characters of [a-zA-Z0-9:_-], got '" +
                broker.thing_name + "'" +
                (overrides.thing_name ? " (from -t)" : " (set thing_name or use -t)"));
  if (broker.client_id.empty())
    broker.client_id = broker.thing_name;
  if (broker.client_id.size() > 128)
    return fail(file + ": [broker] client_id: expected at most 128 bytes");
  if (broker.host.empty())
    return fail(file + ": [broker] host: expected the broker's host name (missing)");

  if (!broker.plain_tcp) {
    if (broker.certfile.empty() || broker.keyfile.empty())
      return fail(file + ": [broker] " + (broker.certfile.empty() ? "certfile" : "keyfile") +
                  ": expected the device's certificate and key for TLS (or plain_tcp = true for "
                  "a local broker)");
    for (auto [key, path] : {std::pair<const char*, fs::path*>{"cafile", &broker.cafile},
                             {"certfile", &broker.certfile},
                             {"keyfile", &broker.keyfile}}) {
      if (path->empty())
        continue;
      if (auto ok = check_readable(*path); !ok)
        return fail(file + ": [broker] " + key + ": expected a readable file, " +
                    ok.error().message());
    }
  }

  if (config.download.directory.empty())
    config.download.directory = config.service.state_directory / "downloads";
  if (!config.download.ca_file.empty())
    if (auto ok = check_readable(config.download.ca_file); !ok)
      return fail(file + ": [download] ca_file: expected a readable file, " + ok.error().message());

  // Without [steps], a single plugin serves every step.
  if (config.steps.empty() && config.plugins.size() == 1)
    for (Step step : kSteps)
      config.steps[std::string(to_string(step))] = config.plugins.begin()->first;
  for (const auto& [step, plugin] : config.steps)
    if (!config.plugins.count(plugin))
      return fail(file + ": [steps] " + step +
                  ": expected the name of a [plugins.NAME] table, got '" + plugin + "'");
  for (auto& [name, plugin] : config.plugins) {
    if (auto ok = check_readable(plugin.path); !ok)
      return fail(file + ": [plugins." + name + "] path: expected a plugin shared object, " +
                  ok.error().message());
    bool used = std::any_of(config.steps.begin(), config.steps.end(),
                            [&, n = name](const auto& s) { return s.second == n; });
    if (!used)
      config.warnings.push_back("[plugins." + name + "] is not used by any step in [steps]");
  }
  return {};
}

}  // namespace

fs::path plugin_directory() {
  if (const char* dir = std::getenv("UPPARAT_PLUGIN_DIR"); dir && *dir)
    return dir;
  return UPPARAT_DEFAULT_PLUGIN_DIR;
}

Result<Config> parse_toml(const std::string& text, const fs::path& file,
                          const Overrides& overrides) {
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
      if (!kLogLevels.count(**level))
        return fail(s.error("log_level",
                            "expected one of trace, debug, info, warn, error, "
                            "critical, off, got '" +
                                **level + "'"));
      config.service.log_level = **level;
    }
    UPPARAT_TRY(dir, s.string("state_directory"));
    if (*dir)
      config.service.state_directory = resolve(file, **dir);
    if (auto ok = s.finish(); !ok)
      return fail(ok.error());
  }
  // [broker]
  {
    UPPARAT_TRY(t, top.table("broker"));
    Section s(file, "broker", *t);
    auto& b = config.broker;
    UPPARAT_TRY(host, s.string("host"));
    set_if(b.host, *host);
    UPPARAT_TRY(port, s.integer("port", 1, 65535));
    if (*port)
      b.port = static_cast<std::uint16_t>(**port);
    UPPARAT_TRY(thing, s.string("thing_name"));
    set_if(b.thing_name, *thing);
    UPPARAT_TRY(client, s.string("client_id"));
    set_if(b.client_id, *client);
    for (auto [key, target] : {std::pair<const char*, fs::path*>{"cafile", &b.cafile},
                               {"certfile", &b.certfile},
                               {"keyfile", &b.keyfile}}) {
      UPPARAT_TRY(v, s.string(key));
      if (*v)
        *target = resolve(file, **v);
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
    if (b.reconnect_max < b.reconnect_min)
      return fail(s.error("reconnect_max", "expected a value not below reconnect_min"));
    if (b.plain_tcp && b.alpn && alpn->has_value())
      return fail(s.error("alpn", "expected false with plain_tcp = true (ALPN needs TLS)"));
    if (b.plain_tcp)
      b.alpn = false;
    if (!*t)
      return fail(file.string() + ": [broker]: expected a [broker] table with at least host");
    if (auto ok = s.finish(); !ok)
      return fail(ok.error());
  }
  // [jobs]
  {
    UPPARAT_TRY(t, top.table("jobs"));
    Section s(file, "jobs", *t);
    auto& j = config.jobs;
    UPPARAT_TRY(prefix, s.string("prefix", true));
    if (*prefix) {
      if (!valid_prefix(**prefix))
        return fail(s.error(
            "prefix", "expected up to 63 characters of [a-zA-Z0-9_-], got '" + **prefix + "'"));
      j.prefix = **prefix;
    }
    UPPARAT_TRY(interval, s.integer("progress_interval", 0, 86400));
    set_seconds(j.progress_interval, *interval);
    UPPARAT_TRY(percent, s.integer("progress_percent", 0, 100));
    if (*percent)
      j.progress_percent = static_cast<int>(**percent);
    UPPARAT_TRY(margin, s.integer("step_timeout_margin", 0, 86400));
    set_seconds(j.step_timeout_margin, *margin);
    UPPARAT_TRY(update_timeout, s.integer("update_timeout", 1, 3600));
    set_seconds(j.update_timeout, *update_timeout);
    UPPARAT_TRY(poll_interval, s.integer("poll_interval", 0, 7 * 86400));
    set_seconds(j.poll_interval, *poll_interval);
    UPPARAT_TRY(refusals, s.integer("max_url_refusals", 1, 1000));
    if (*refusals)
      j.max_url_refusals = static_cast<int>(**refusals);
    UPPARAT_TRY(grace, s.integer("stop_grace", 1, 3600));
    set_seconds(j.stop_grace, *grace);
    UPPARAT_TRY(deadlines, s.table("deadlines"));
    Section d(file, "jobs.deadlines", *deadlines);
    for (Step step : kSteps) {
      // AWS's step timeout is at most 10080 minutes (7 days): keep deadline + margin below.
      UPPARAT_TRY(v, d.integer(std::string(to_string(step)), 1, 7 * 86400 - 86400));
      set_seconds(j.deadlines[index(step)], *v);
    }
    if (auto ok = d.finish(); !ok)
      return fail(ok.error());
    if (auto ok = s.finish(); !ok)
      return fail(ok.error());
  }
  // [download]
  {
    UPPARAT_TRY(t, top.table("download"));
    Section s(file, "download", *t);
    auto& d = config.download;
    UPPARAT_TRY(dir, s.string("directory"));
    if (*dir)
      d.directory = resolve(file, **dir);
    UPPARAT_TRY(ca, s.string("ca_file"));
    if (*ca)
      d.ca_file = resolve(file, **ca);
    UPPARAT_TRY(proxy, s.string("proxy", true));
    set_if(d.proxy, *proxy);
    UPPARAT_TRY(http, s.boolean("allow_http"));
    set_if(d.allow_http, *http);
    UPPARAT_TRY(speed, s.integer("max_bytes_per_second", 0, INT64_MAX));
    if (*speed)
      d.max_bytes_per_second = static_cast<std::uint64_t>(**speed);
    UPPARAT_TRY(reserve, s.integer("reserve_bytes", 0, INT64_MAX));
    if (*reserve)
      d.reserve_bytes = static_cast<std::uint64_t>(**reserve);
    UPPARAT_TRY(fsync, s.integer("fsync_interval", 1, 3600));
    set_seconds(d.fsync_interval, *fsync);
    UPPARAT_TRY(cap, s.integer("backoff_cap", 1, 3600));
    set_seconds(d.backoff_cap, *cap);
    UPPARAT_TRY(group, s.boolean("group_readable"));
    set_if(d.group_readable, *group);
    if (auto ok = s.finish(); !ok)
      return fail(ok.error());
  }
  // [retry]
  {
    UPPARAT_TRY(t, top.table("retry"));
    Section s(file, "retry", *t);
    UPPARAT_TRY(interval, s.integer("retry_interval", 0, 86400));
    set_seconds(config.retry.retry_interval, *interval);
    UPPARAT_TRY(max, s.integer("max_retries", 0, 100000));
    if (*max)
      config.retry.max_retries = static_cast<int>(**max);
    if (auto ok = s.finish(); !ok)
      return fail(ok.error());
  }
  // [plugins.NAME]
  {
    UPPARAT_TRY(t, top.table("plugins"));
    if (*t) {
      for (const auto& [name, value] : (*t)->as_table()) {
        std::string section = "plugins." + name;
        if (!value.is_table())
          return fail(file.string() + ": [plugins] " + name + ": expected a table [" + section +
                      "] with a path, got " + type_name(value.type()));
        Plugin plugin;
        plugin.name = name;
        const auto& table = value.as_table();
        auto path = table.find("path");
        if (path == table.end())
          return fail(file.string() + ": [" + section +
                      "] path: expected the plugin's .so file (missing)");
        if (!path->second.is_string() || path->second.as_string().str.empty())
          return fail(file.string() + ": [" + section +
                      "] path: expected a non-empty string, got " + type_name(path->second.type()));
        fs::path p = path->second.as_string().str;
        plugin.path = p.has_parent_path() ? resolve(file, p) : plugin_directory() / p;
        Section host_keys(file, section, &value);
        UPPARAT_TRY(stream, host_keys.boolean("stream"));
        plugin.stream = stream->value_or(false);
        for (const auto& [key, setting] : table) {
          // The daemon's own keys are not handed to the plugin.
          if (key == "path" || key == "stream")
            continue;
          if (setting.is_table())
            flatten(setting, key, plugin.settings);
          else if (setting.is_array())
            plugin.settings[key] = to_json(setting);
          else
            plugin.settings[key] = scalar_text(setting);
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
      if (*plugin)
        config.steps[name] = **plugin;
    }
    if (auto ok = s.finish(); !ok)
      return fail(ok.error());
  }
  if (auto ok = top.finish(); !ok)
    return fail(ok.error());
  if (auto ok = finalize(config, overrides); !ok)
    return fail(ok.error());
  return config;
}

namespace {

std::string trim(const std::string& text) {
  auto begin = text.find_first_not_of(" \t\r\n");
  if (begin == std::string::npos)
    return {};
  auto end = text.find_last_not_of(" \t\r\n");
  return text.substr(begin, end - begin + 1);
}

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

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
    std::string trimmed = trim(line);
    if (trimmed.empty() || trimmed[0] == '#' || trimmed[0] == ';')
      continue;
    if (!line.empty() && (line[0] == ' ' || line[0] == '\t') && !last_key.empty()) {
      sections[section][last_key] += "\n" + trimmed;
      continue;
    }
    if (trimmed.front() == '[') {
      if (trimmed.back() != ']')
        return fail(file.string() + ":" + std::to_string(number) + ": expected a [section] line");
      section = lower(trim(trimmed.substr(1, trimmed.size() - 2)));
      sections[section];
      last_key.clear();
      continue;
    }
    auto sep = trimmed.find_first_of("=:");
    if (sep == std::string::npos || sep == 0)
      return fail(file.string() + ":" + std::to_string(number) +
                  ": expected 'key = value' or a [section]");
    if (section.empty())
      return fail(file.string() + ":" + std::to_string(number) +
                  ": expected a [section] before the first key");
    last_key = lower(trim(trimmed.substr(0, sep)));
    sections[section][last_key] = trim(trimmed.substr(sep + 1));
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
    if (s == sections.end())
      return std::nullopt;
    auto k = s->second.find(key);
    if (k == s->second.end())
      return std::nullopt;
    return k->second;
  };
  auto integer = [&](const std::string& sec, const std::string& key, std::int64_t min,
                     std::int64_t max) -> Result<std::optional<std::int64_t>> {
    auto v = get(sec, key);
    if (!v)
      return std::optional<std::int64_t>{};
    char* end = nullptr;
    errno = 0;
    long long n = std::strtoll(v->c_str(), &end, 10);
    if (v->empty() || *end != '\0' || errno != 0 || n < min || n > max)
      return fail(file.string() + ": [" + sec + "] " + key + ": expected an integer from " +
                  std::to_string(min) + " to " + std::to_string(max) + ", got '" + *v + "'");
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
    for (const auto& [key, value] : keys)
      if (!k->second.count(key))
        config.warnings.push_back("[" + sec + "] " + key + " is not used by this daemon: ignored");
  }

  if (auto level = get("service", "log_level")) {
    std::string l = lower(*level);
    if (l == "warning")
      l = "warn";
    if (l == "fatal")
      l = "critical";
    if (!kLogLevels.count(l))
      return fail(file.string() +
                  ": [service] log_level: expected one of debug, info, warning, "
                  "error, critical, got '" +
                  *level + "'");
    config.service.log_level = l;
  }
  if (auto location = get("service", "download_location"); location && !location->empty())
    download_location = resolve(file, *location);
  config.service.state_directory = download_location / "upparat" / "state";
  config.download.directory = download_location / "upparat";

  auto& b = config.broker;
  if (auto host = get("broker", "host"); host && !host->empty())
    b.host = *host;
  UPPARAT_TRY(port, integer("broker", "port", 1, 65535));
  if (*port)
    b.port = static_cast<std::uint16_t>(**port);
  if (auto thing = get("broker", "thing_name"); thing && !thing->empty())
    b.thing_name = *thing;
  if (auto client = get("broker", "client_id"); client && !client->empty())
    b.client_id = *client;
  for (auto [key, target] : {std::pair<const char*, fs::path*>{"cafile", &b.cafile},
                             {"certfile", &b.certfile},
                             {"keyfile", &b.keyfile}}) {
    if (auto v = get("broker", key); v && !v->empty())
      *target = resolve(file, *v);
  }
  if (b.certfile.empty() && b.keyfile.empty()) {
    b.plain_tcp = true;
  } else {
    // As the Python version: certificates mean AWS IoT, on 443 (ALPN) or 8883.
    if (b.port != 443 && b.port != 8883)
      return fail(file.string() + ": [broker] port: expected 443 or 8883 with certificates, got " +
                  std::to_string(b.port));
    b.alpn = true;
  }

  UPPARAT_TRY(interval, integer("hooks", "retry_interval", 0, 86400));
  set_seconds(config.retry.retry_interval, *interval);
  UPPARAT_TRY(retries, integer("hooks", "max_retries", 0, 100000));
  if (*retries)
    config.retry.max_retries = static_cast<int>(**retries);

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

  if (auto ok = finalize(config, overrides); !ok)
    return fail(ok.error());
  return config;
}

Result<Config> load(const fs::path& file, const Overrides& overrides) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    std::error_code ec;
    if (!fs::exists(file, ec))
      return fail(file.string() + ": no such configuration file");
    return fail(file.string() + ": cannot read: " + std::strerror(errno));
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  std::string text = buffer.str();
  if (text.size() > 1024 * 1024)
    return fail(file.string() + ": expected a configuration file below 1 MiB");
  if (file.extension() == ".ini")
    return parse_ini(text, file, overrides);
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
  out << "  job prefix " << config.jobs.prefix << "\n";
  for (Step s : kSteps) {
    const std::string step(to_string(s));
    auto it = config.steps.find(step);
    out << "  step " << step << std::string(9 - step.size(), ' ')
        << (it == config.steps.end()
                ? std::string("(none)")
                : it->second + " (" + config.plugins.at(it->second).path.string() + ")")
        << "\n";
  }
  return out.str();
}

}  // namespace upparat::config
