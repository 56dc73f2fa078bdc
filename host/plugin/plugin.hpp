#pragma once

// The host's view of a loaded plugin: load a .so through Boost.DLL, check its ABI, create an
// instance with its configuration, run steps. No C type of upparat/plugin.h leaks past here.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.hpp"
#include "common/stop_signal.hpp"

namespace upparat::plugin {

enum class Step { Version, Download, Install, Restart, Ready };

/// "version", "download", "install", "restart", "ready".
[[nodiscard]] std::string_view step_name(Step step);

enum class Outcome { Ok, RetryLater, Failed, NotSupported };

struct StepResult {
  Outcome outcome = Outcome::Failed;
  /// The version (version step, Ok) or the reason (Failed, RetryLater), already passed through
  /// sanitize_status_detail() for anything but the version.
  std::string text;
  /// For RetryLater: the plugin's own delay, when it gave one.
  std::optional<std::chrono::seconds> retry_after;
};

/// Capability bits (UPPARAT_CAP_*), mirrored so callers need not include the C header.
inline constexpr std::uint64_t kCapInstallFromUrl = 1u << 0;
inline constexpr std::uint64_t kCapInstallNotInterruptible = 1u << 1;

struct PluginInfo {
  std::filesystem::path path;
  std::string name;
  std::string version;
  std::string license;
  std::string description;
  std::uint16_t abi_major = 0;
  std::uint16_t abi_minor = 0;
  std::uint64_t capabilities = 0;
  /// Which steps the function table provides (non-null pointers), in Step order.
  bool provides[5] = {false, false, false, false, false};
};

/// What a step works on.
struct JobContext {
  std::string job_id;
  std::int64_t execution_number = 0;
  std::string version;
  std::string meta;
  std::string url;
  std::optional<std::string> sha256;
  std::optional<std::int64_t> size;
  std::string document_json;
  std::optional<std::filesystem::path> file_path;
  bool force = false;
  std::int64_t seconds_since_first = 0;
  std::int32_t retry_count = 0;
};

/// The job's durable key/value store (saved by the daemon with its job state). Thread-safe:
/// plugins may write from their own threads while a step runs.
class KeyValueStore {
 public:
  KeyValueStore() = default;
  explicit KeyValueStore(std::map<std::string, std::string> values) : values_(std::move(values)) {}
  [[nodiscard]] std::optional<std::string> get(const std::string& key) const;
  /// False when the key (1-128 of [A-Za-z0-9._-]) or the value (<= 4096 bytes) is refused.
  bool set(const std::string& key, std::optional<std::string> value);
  [[nodiscard]] std::map<std::string, std::string> snapshot() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::string> values_;
};

/// Services for one step call.
struct StepServices {
  const StopSignal* stop = nullptr;                                  ///< Required.
  std::function<void(std::string_view line, int percent)> progress;  ///< May be empty.
  KeyValueStore* store = nullptr;                                    ///< Required.
};

/// A loaded plugin with one instance. Destroys the instance before releasing its library.
class LoadedPlugin {
 public:
  /// Loads `path` (RTLD_NOW | RTLD_LOCAL), checks the ABI, creates the instance with `config`.
  /// Each failure is an Error that says what happened and what to do.
  [[nodiscard]] static Result<std::unique_ptr<LoadedPlugin>> load(
      const std::filesystem::path& path, const std::map<std::string, std::string>& config);

  /// Loads and checks the descriptor without creating an instance (upparat-plugin-check).
  [[nodiscard]] static Result<PluginInfo> inspect(const std::filesystem::path& path);

  ~LoadedPlugin();
  LoadedPlugin(const LoadedPlugin&) = delete;
  LoadedPlugin& operator=(const LoadedPlugin&) = delete;

  [[nodiscard]] const PluginInfo& info() const;
  [[nodiscard]] bool has_capability(std::uint64_t bit) const;

  /// Runs one step. Never throws; a NULL step function is NotSupported. Steps of one instance
  /// are serialised (a second concurrent call waits).
  StepResult run(Step step, const JobContext& job, const StepServices& services);

 private:
  struct Impl;
  explicit LoadedPlugin(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace upparat::plugin
