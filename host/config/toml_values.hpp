#pragma once
// Reading TOML tables with strict types, and turning TOML values into the text handed to
// plugins. Private to host/config.

#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <toml.hpp>
#include <utility>
#include <vector>

#include "common/error.hpp"

namespace upparat::config::detail {

/// "a string", "an integer", ... for messages.
[[nodiscard]] const char* type_name(toml::value_t type);

/// A TOML scalar in its TOML spelling (strings as they are).
[[nodiscard]] std::string scalar_text(const toml::value& value);

/// JSON text of a TOML value (arrays and tables handed to plugins); table keys sorted.
[[nodiscard]] std::string to_json(const toml::value& value);

/// Flattens a plugin's table into dotted keys (nested tables), arrays as JSON.
void flatten(const toml::value& table, const std::string& prefix,
             std::map<std::string, std::string>& out);

/// Reads one table of the TOML document, refusing unknown keys and wrong types. Every error
/// reads "<file>: [<section>] <key>: expected ..., got ...".
class Section {
 public:
  Section(const std::filesystem::path& file, std::string name, const toml::value* table)
      : file_(file), name_(std::move(name)), table_(table) {}

  [[nodiscard]] Error error(const std::string& key, const std::string& what) const {
    std::string where = file_.string() + ":";
    if (!name_.empty()) {
      where += " [" + name_ + "]";
    }
    if (!key.empty()) {
      where += " " + key;
    }
    return Error(where + ": " + what);
  }

  const toml::value* find(const std::string& key) {
    known_.insert(key);
    if (!table_) {
      return nullptr;
    }
    const auto& table = table_->as_table();
    auto it = table.find(key);
    return it == table.end() ? nullptr : &it->second;
  }

  Result<std::optional<std::string>> string(const std::string& key, bool allow_empty = false) {
    const auto* v = find(key);
    if (!v) {
      return std::optional<std::string>{};
    }
    if (!v->is_string()) {
      return fail(error(key, std::string("expected a string, got ") + type_name(v->type())));
    }
    std::string text = v->as_string().str;
    if (text.empty() && !allow_empty) {
      return fail(error(key, "expected a non-empty string"));
    }
    return std::optional<std::string>{text};
  }

  Result<std::optional<std::int64_t>> integer(const std::string& key, std::int64_t min,
                                              std::int64_t max) {
    const auto* v = find(key);
    if (!v) {
      return std::optional<std::int64_t>{};
    }
    std::string range = "an integer from " + std::to_string(min) + " to " + std::to_string(max);
    if (!v->is_integer()) {
      return fail(error(key, "expected " + range + ", got " + type_name(v->type())));
    }
    auto n = v->as_integer();
    if (n < min || n > max) {
      return fail(error(key, "expected " + range + ", got " + std::to_string(n)));
    }
    return std::optional<std::int64_t>{n};
  }

  Result<std::optional<bool>> boolean(const std::string& key) {
    const auto* v = find(key);
    if (!v) {
      return std::optional<bool>{};
    }
    if (!v->is_boolean()) {
      return fail(error(
          key, std::string("expected a boolean (true or false), got ") + type_name(v->type())));
    }
    return std::optional<bool>{v->as_boolean()};
  }

  Result<const toml::value*> table(const std::string& key) {
    const auto* v = find(key);
    if (v && !v->is_table()) {
      return fail(error(key, std::string("expected a table, got ") + type_name(v->type())));
    }
    return v;
  }

  /// Refuses keys that were never asked for.
  Status finish() const {
    if (!table_) {
      return {};
    }
    std::vector<std::string> unknown;
    for (const auto& [key, value] : table_->as_table()) {
      if (!known_.count(key)) {
        unknown.push_back(key);
      }
    }
    if (unknown.empty()) {
      return {};
    }
    std::sort(unknown.begin(), unknown.end());
    std::string expected;
    for (const auto& k : std::set<std::string>(known_.begin(), known_.end())) {
      expected += (expected.empty() ? "" : ", ") + k;
    }
    return fail(error(unknown.front(), "unknown key (expected one of: " + expected + ")"));
  }

 private:
  const std::filesystem::path& file_;
  std::string name_;
  const toml::value* table_;
  std::set<std::string> known_;
};
}  // namespace upparat::config::detail
