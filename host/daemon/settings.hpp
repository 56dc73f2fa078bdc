#pragma once

// The copy from the configuration into the settings of each component: pure functions, each
// field checked by a unit test (tests/daemon/settings_test.cpp).

#include <array>
#include <map>
#include <memory>
#include <string>

#include "config/config.hpp"
#include "download/downloader.hpp"
#include "mqtt/session.hpp"
#include "plugin/plugin.hpp"
#include "state/machine.hpp"

namespace upparat::daemon {

/// The plugin configured for each step (nullptr: none).
using StepPlugins = PerStep<plugin::LoadedPlugin*>;

/// The loaded plugin of each step of `config.steps`. `plugins` holds every plugin of
/// `config.plugins` by name (config::load has checked that [steps] names only those).
[[nodiscard]] StepPlugins step_plugins(
    const config::Config& config,
    const std::map<std::string, std::unique_ptr<plugin::LoadedPlugin>>& plugins);

/// The state machine's settings. A step is configured when it has a plugin that serves it
/// (LoadedPlugin::serves). With `stream = true` in the install plugin's table:
/// `install_stream` when it has INSTALL_STREAM, else `install_from_url` when it has
/// INSTALL_FROM_URL.
[[nodiscard]] state::MachineSettings machine_settings(const config::Config& config,
                                                      const StepPlugins& plugins);

/// The downloader's settings.
[[nodiscard]] download::Settings download_settings(const config::Config& config);

/// The MQTT session's settings, subscriptions included.
[[nodiscard]] mqtt::Settings mqtt_settings(const config::Config& config);

}  // namespace upparat::daemon
