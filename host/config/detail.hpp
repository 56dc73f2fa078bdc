#pragma once
// Declarations shared by the configuration's sources (TOML schema, INI import, load and
// finalize). Not installed and not included outside host/config.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <set>
#include <string>

#include "config/config.hpp"

namespace upparat::config::detail {

/// The log levels spdlog knows, as written in the TOML file.
inline const std::set<std::string> kLogLevels = {"trace", "debug",    "info", "warn",
                                                 "error", "critical", "off"};

/// Evaluates `expr` (a Result) into `var`, returning its error from the enclosing function.
#define UPPARAT_TRY(var, expr) \
  auto var = (expr);           \
  if (!var)                    \
    return fail(var.error());

template <class T>
void set_if(T& target, const std::optional<T>& value) {
  if (value) {
    target = *value;
  }
}

inline void set_seconds(std::chrono::seconds& target, const std::optional<std::int64_t>& value) {
  if (value) {
    target = std::chrono::seconds(*value);
  }
}

/// `path` relative to the folder of `base_file` (absolute and empty paths as they are).
[[nodiscard]] std::filesystem::path resolve(const std::filesystem::path& base_file,
                                            const std::filesystem::path& path);

/// Checks everything that does not depend on the format: defaults, certificates, plugins.
[[nodiscard]] Status finalize(Config& config, const Overrides& overrides);

}  // namespace upparat::config::detail
