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
#include <vector>

#include <upparat/step.hpp>

#include "common/error.hpp"
#include "common/stop_signal.hpp"
#include "plugin/key_value_store.hpp"
#include "plugin/types.hpp"

namespace upparat::plugin {

/// The plugin ABI this daemon speaks (UPPARAT_ABI_MAJOR / UPPARAT_ABI_MINOR).
extern const std::uint16_t kHostAbiMajor;
extern const std::uint16_t kHostAbiMinor;

/// Names of the bits set in `capabilities`, in bit order: "INSTALL_FROM_URL",
/// "INSTALL_NOT_INTERRUPTIBLE", "INSTALL_STREAM", and "0x..." for a bit this daemon does not
/// know.
[[nodiscard]] std::vector<std::string> capability_names(std::uint64_t capabilities);

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
  PerStep<bool> provides{};
};

/// Services for one step call. They are used only while run() runs, possibly from threads of
/// the plugin, but never two at once: `progress` need not be thread-safe. Once run() returned,
/// late calls by a misbehaving plugin are ignored.
struct StepServices {
  /// Required. The plugin polls it and waits on its fd. For a plugin with
  /// kCapInstallNotInterruptible, pass a signal that does not fire during install.
  const StopSignal* stop = nullptr;
  /// May be empty. `line` is sanitised (sanitize_status_detail) or empty when the plugin gave
  /// none; `percent` is 0..100, or -1 when unknown.
  std::function<void(std::string_view line, int percent)> progress;
  KeyValueStore* store = nullptr;  ///< Required.
  /// A streamed install only (ABI 1.2): the descriptor the plugin reads the file from
  /// (upparat_step_services::stream_fd; -1 = none) and how that stream ended. A plugin built
  /// before ABI 1.2 sees neither. `stream_end` must be thread-safe.
  int stream_fd = -1;
  std::function<StreamEnd()> stream_end;
  /// May be null. Where run() writes what broke upparat/plugin.h's rules in the result text as
  /// the plugin wrote it (no NUL within the buffer, not valid UTF-8), before it cut and
  /// sanitised it into StepResult::text; "" when nothing did. For the conformance kit.
  std::string* text_defect = nullptr;
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

  /// Destroys the instance (the plugin joins its threads), then unloads the library. Must not
  /// run while run() does.
  ~LoadedPlugin();
  LoadedPlugin(const LoadedPlugin&) = delete;
  LoadedPlugin& operator=(const LoadedPlugin&) = delete;

  [[nodiscard]] const PluginInfo& info() const;
  [[nodiscard]] bool has_capability(std::uint64_t bit) const;

  /// Whether the instance serves `step`: it has the step's function and, from ABI 1.1 on, its
  /// `steps` function (asked once, right after create) lists the step. A step it does not
  /// serve is a missing hook: not announced, not run.
  [[nodiscard]] bool serves(Step step) const;

  /// Runs one step. Never throws; a step the instance does not serve is NotSupported (the
  /// plugin is not called), an unknown result code Failed. Steps of one instance are
  /// serialised (a second concurrent call waits).
  StepResult run(Step step, const JobContext& job, const StepServices& services);

 private:
  struct Impl;
  explicit LoadedPlugin(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace upparat::plugin
