// The copy from the configuration into the settings of the state machine, the downloader and
// the MQTT session: each field set to a distinctive value arrives where it belongs. Plugins are
// the real script plugin and fixture plugins, loaded through the daemon's loader.

#include "daemon/settings.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>

#include "jobs/topics.hpp"

namespace upparat::daemon {
namespace {

using namespace std::chrono_literals;
using plugin::LoadedPlugin;
using plugin::Step;
using ::testing::ElementsAre;

constexpr StepPlugins kNoPlugins{};

std::unique_ptr<LoadedPlugin> load(const std::string& path,
                                   const std::map<std::string, std::string>& settings = {}) {
  auto plugin = LoadedPlugin::load(path, settings);
  if (!plugin) {
    throw std::runtime_error(plugin.error().message());
  }
  return std::move(*plugin);
}

/// The script plugin with a hook (/bin/true) for each of `steps`.
std::unique_ptr<LoadedPlugin> script(std::initializer_list<const char*> steps) {
  std::map<std::string, std::string> settings;
  for (const char* step : steps) {
    settings[step] = "/bin/true";
  }
  return load(UPPARAT_SCRIPT_PLUGIN, settings);
}

// ---- state::MachineSettings ----------------------------------------------------------------

TEST(MachineSettingsFromConfig, ThingName) {
  config::Config c;
  c.broker.thing_name = "thing-from-config";
  EXPECT_EQ(machine_settings(c, kNoPlugins).thing_name, "thing-from-config");
}

TEST(MachineSettingsFromConfig, JobPrefix) {
  config::Config c;
  c.jobs.prefix = "fw_";
  EXPECT_EQ(machine_settings(c, kNoPlugins).job_prefix, "fw_");
}

TEST(MachineSettingsFromConfig, AllowHttp) {
  config::Config c;
  ASSERT_FALSE(state::MachineSettings{}.allow_http);
  c.download.allow_http = true;
  EXPECT_TRUE(machine_settings(c, kNoPlugins).allow_http);
}

TEST(MachineSettingsFromConfig, RetryInterval) {
  config::Config c;
  c.retry.retry_interval = 17s;
  EXPECT_EQ(machine_settings(c, kNoPlugins).retry_interval, 17s);
}

TEST(MachineSettingsFromConfig, MaxRetries) {
  config::Config c;
  c.retry.max_retries = 7;
  EXPECT_EQ(machine_settings(c, kNoPlugins).max_retries, 7);
}

TEST(MachineSettingsFromConfig, StepDeadlineOfEachStep) {
  config::Config c;
  c.jobs.deadlines = {101s, 102s, 103s, 104s, 105s};
  const auto ms = machine_settings(c, kNoPlugins);
  EXPECT_EQ(ms.step_deadline[index(Step::Version)], 101s);
  EXPECT_EQ(ms.step_deadline[index(Step::Download)], 102s);
  EXPECT_EQ(ms.step_deadline[index(Step::Install)], 103s);
  EXPECT_EQ(ms.step_deadline[index(Step::Restart)], 104s);
  EXPECT_EQ(ms.step_deadline[index(Step::Ready)], 105s);
}

TEST(MachineSettingsFromConfig, StepTimeoutMarginInWholeMinutesRoundedUp) {
  config::Config c;
  c.jobs.step_timeout_margin = 180s;
  EXPECT_EQ(machine_settings(c, kNoPlugins).step_timeout_margin, 3min);
  c.jobs.step_timeout_margin = 181s;
  EXPECT_EQ(machine_settings(c, kNoPlugins).step_timeout_margin, 4min);
  c.jobs.step_timeout_margin = 0s;
  EXPECT_EQ(machine_settings(c, kNoPlugins).step_timeout_margin, 0min);
}

TEST(MachineSettingsFromConfig, ProgressPercent) {
  config::Config c;
  c.jobs.progress_percent = 13;
  EXPECT_EQ(machine_settings(c, kNoPlugins).progress_percent, 13);
}

TEST(MachineSettingsFromConfig, ProgressInterval) {
  config::Config c;
  c.jobs.progress_interval = 11s;
  EXPECT_EQ(machine_settings(c, kNoPlugins).progress_interval, 11s);
}

TEST(MachineSettingsFromConfig, UpdateTimeoutIsTheResendOfUpdatesAndRequests) {
  config::Config c;
  c.jobs.update_timeout = 9s;
  const auto ms = machine_settings(c, kNoPlugins);
  EXPECT_EQ(ms.update_resend, 9s);
  EXPECT_EQ(ms.request_resend, 9s);
}

TEST(MachineSettingsFromConfig, PollInterval) {
  config::Config c;
  c.jobs.poll_interval = 0s;
  EXPECT_EQ(machine_settings(c, kNoPlugins).poll_interval, 0s);
  c.jobs.poll_interval = 1234s;
  EXPECT_EQ(machine_settings(c, kNoPlugins).poll_interval, 1234s);
}

TEST(MachineSettingsFromConfig, MaxUrlRefusals) {
  config::Config c;
  c.jobs.max_url_refusals = 42;
  EXPECT_EQ(machine_settings(c, kNoPlugins).max_url_refusals, 42);
}

TEST(MachineSettingsFromConfig, StopGrace) {
  config::Config c;
  c.jobs.stop_grace = 7s;
  EXPECT_EQ(machine_settings(c, kNoPlugins).stop_grace, 7s);
}

TEST(MachineSettingsFromConfig, InstallNotInterruptibleFromTheInstallPluginsCapability) {
  config::Config c;
  c.steps["install"] = "x";
  const auto stubborn = load(UPPARAT_FIXTURE_STUBBORN_NOT_INTERRUPTIBLE);
  StepPlugins plugins{};
  plugins[index(Step::Install)] = stubborn.get();
  EXPECT_TRUE(machine_settings(c, plugins).install_not_interruptible);
  const auto script_plugin = script({"install"});
  plugins[index(Step::Install)] = script_plugin.get();
  EXPECT_FALSE(machine_settings(c, plugins).install_not_interruptible);
  plugins[index(Step::Install)] = nullptr;
  plugins[index(Step::Version)] = stubborn.get();
  EXPECT_FALSE(machine_settings(c, plugins).install_not_interruptible) << "not the installer";
}

TEST(MachineSettingsFromConfig, SettingsWithoutAKeyKeepTheMachinesDefaults) {
  const state::MachineSettings defaults;
  const auto ms = machine_settings(config::Config{}, kNoPlugins);
  EXPECT_EQ(ms.update_backoff_base, defaults.update_backoff_base);
  EXPECT_EQ(ms.update_backoff_cap, defaults.update_backoff_cap);
  EXPECT_EQ(ms.url_refused_backoff_base, defaults.url_refused_backoff_base);
  EXPECT_EQ(ms.url_refused_backoff_cap, defaults.url_refused_backoff_cap);
  EXPECT_EQ(ms.max_unfinished_starts, defaults.max_unfinished_starts);
}

TEST(MachineSettingsFromConfig, AStepWithoutAPluginIsNotConfigured) {
  const auto plugin = script({"version", "download", "install", "restart", "ready"});
  StepPlugins plugins{};
  plugins[index(Step::Version)] = plugin.get();
  plugins[index(Step::Install)] = plugin.get();
  plugins[index(Step::Ready)] = plugin.get();
  EXPECT_THAT(machine_settings(config::Config{}, plugins).step_configured,
              ElementsAre(true, false, true, false, true));
  EXPECT_THAT(machine_settings(config::Config{}, kNoPlugins).step_configured,
              ElementsAre(false, false, false, false, false));
}

TEST(MachineSettingsFromConfig, AStepItsPluginDoesNotServeIsNotConfigured) {
  // The script plugin serves the steps with a hook, here install only, for every step.
  const auto installer = script({"install"});
  StepPlugins plugins;
  plugins.fill(installer.get());
  EXPECT_THAT(machine_settings(config::Config{}, plugins).step_configured,
              ElementsAre(false, false, true, false, false));

  // A plugin built for ABI 1.0 serves every step it has a function for (restart: none).
  const auto abi_1_0 = load(UPPARAT_FIXTURE_GOOD_C);
  plugins.fill(abi_1_0.get());
  EXPECT_THAT(machine_settings(config::Config{}, plugins).step_configured,
              ElementsAre(true, true, true, false, true));
}

TEST(MachineSettingsFromConfig, InstallFromUrlNeedsStreamAndTheCapability) {
  config::Config c;
  c.steps["install"] = "x";
  c.plugins["x"].stream = true;
  const auto streaming = load(UPPARAT_FIXTURE_GOOD);  // has INSTALL_FROM_URL
  StepPlugins plugins{};
  plugins[index(Step::Install)] = streaming.get();
  EXPECT_TRUE(machine_settings(c, plugins).install_from_url);

  c.plugins["x"].stream = false;
  EXPECT_FALSE(machine_settings(c, plugins).install_from_url) << "not asked for";

  c.plugins["x"].stream = true;
  const auto no_url = script({"install"});  // no INSTALL_FROM_URL
  plugins[index(Step::Install)] = no_url.get();
  EXPECT_FALSE(machine_settings(c, plugins).install_from_url) << "not able to";

  // The streaming plugin is the install step's, but this instance does not serve install.
  const auto not_installing = load(UPPARAT_FIXTURE_GOOD, {{"steps", "version"}});
  plugins[index(Step::Install)] = not_installing.get();
  EXPECT_FALSE(machine_settings(c, plugins).install_from_url);

  // The streaming plugin serves another step; install has no plugin.
  plugins[index(Step::Install)] = nullptr;
  plugins[index(Step::Version)] = streaming.get();
  c.steps = {{"version", "x"}};
  EXPECT_FALSE(machine_settings(c, plugins).install_from_url);
}

TEST(MachineSettingsFromConfig, InstallStreamNeedsStreamAndTheCapability) {
  config::Config c;
  c.steps["install"] = "x";
  c.plugins["x"].stream = true;
  const auto streaming = load(UPPARAT_FIXTURE_STREAM, {{"output", "/nonexistent/out"}});
  StepPlugins plugins{};
  plugins[index(Step::Install)] = streaming.get();
  EXPECT_TRUE(machine_settings(c, plugins).install_stream);
  EXPECT_FALSE(machine_settings(c, plugins).install_from_url);

  c.plugins["x"].stream = false;
  EXPECT_FALSE(machine_settings(c, plugins).install_stream) << "not asked for";

  // INSTALL_FROM_URL alone streams from the URL, not through the host.
  c.plugins["x"].stream = true;
  const auto from_url = load(UPPARAT_FIXTURE_GOOD);
  plugins[index(Step::Install)] = from_url.get();
  EXPECT_FALSE(machine_settings(c, plugins).install_stream);
  EXPECT_TRUE(machine_settings(c, plugins).install_from_url);
}

// ---- step_plugins --------------------------------------------------------------------------

TEST(StepPluginsFromConfig, EachStepGetsThePluginItNames) {
  std::map<std::string, std::unique_ptr<LoadedPlugin>> plugins;
  plugins["a"] = script({"install"});
  plugins["b"] = script({"version"});
  config::Config c;
  c.steps = {{"install", "a"}, {"version", "b"}, {"ready", "b"}};
  const StepPlugins result = step_plugins(c, plugins);
  EXPECT_EQ(result[index(Step::Version)], plugins["b"].get());
  EXPECT_EQ(result[index(Step::Download)], nullptr);
  EXPECT_EQ(result[index(Step::Install)], plugins["a"].get());
  EXPECT_EQ(result[index(Step::Restart)], nullptr);
  EXPECT_EQ(result[index(Step::Ready)], plugins["b"].get());
}

// ---- download::Settings --------------------------------------------------------------------

TEST(DownloadSettingsFromConfig, Directory) {
  config::Config c;
  c.download.directory = "/data/upparat-downloads";
  EXPECT_EQ(download_settings(c).directory, "/data/upparat-downloads");
}

TEST(DownloadSettingsFromConfig, CaFile) {
  config::Config c;
  c.download.ca_file = "/etc/ssl/private-ca.pem";
  EXPECT_EQ(download_settings(c).ca_file, "/etc/ssl/private-ca.pem");
}

TEST(DownloadSettingsFromConfig, Proxy) {
  config::Config c;
  c.download.proxy = "http://proxy.invalid:3128";
  EXPECT_EQ(download_settings(c).proxy, "http://proxy.invalid:3128");
}

TEST(DownloadSettingsFromConfig, AllowHttp) {
  config::Config c;
  ASSERT_FALSE(download::Settings{}.allow_http);
  c.download.allow_http = true;
  EXPECT_TRUE(download_settings(c).allow_http);
}

TEST(DownloadSettingsFromConfig, MaxBytesPerSecond) {
  config::Config c;
  c.download.max_bytes_per_second = 123456;
  EXPECT_EQ(download_settings(c).max_bytes_per_second, 123456u);
}

TEST(DownloadSettingsFromConfig, ReserveBytes) {
  config::Config c;
  c.download.reserve_bytes = 4242;
  EXPECT_EQ(download_settings(c).reserve_bytes, 4242u);
}

TEST(DownloadSettingsFromConfig, FsyncInterval) {
  config::Config c;
  c.download.fsync_interval = 3s;
  EXPECT_EQ(download_settings(c).fsync_every, 3s);
}

TEST(DownloadSettingsFromConfig, BackoffCap) {
  config::Config c;
  c.download.backoff_cap = 21s;
  EXPECT_EQ(download_settings(c).backoff_cap, 21s);
}

TEST(DownloadSettingsFromConfig, GroupReadable) {
  config::Config c;
  auto ds = download_settings(c);
  EXPECT_EQ(ds.directory_mode, 0700u);
  EXPECT_EQ(ds.file_mode, 0600u);
  c.download.group_readable = true;
  ds = download_settings(c);
  EXPECT_EQ(ds.directory_mode, 0750u);
  EXPECT_EQ(ds.file_mode, 0640u);
}

// ---- mqtt::Settings ------------------------------------------------------------------------

TEST(MqttSettingsFromConfig, Host) {
  config::Config c;
  c.broker.host = "example-ats.iot.eu-west-1.amazonaws.com";
  EXPECT_EQ(mqtt_settings(c).host, "example-ats.iot.eu-west-1.amazonaws.com");
}

TEST(MqttSettingsFromConfig, Port) {
  config::Config c;
  c.broker.port = 4443;
  EXPECT_EQ(mqtt_settings(c).port, 4443);
}

TEST(MqttSettingsFromConfig, ClientId) {
  config::Config c;
  c.broker.client_id = "client-from-config";
  EXPECT_EQ(mqtt_settings(c).client_id, "client-from-config");
}

TEST(MqttSettingsFromConfig, CaFile) {
  config::Config c;
  c.broker.cafile = "/etc/upparat/AmazonRootCA1.pem";
  EXPECT_EQ(mqtt_settings(c).cafile, "/etc/upparat/AmazonRootCA1.pem");
}

TEST(MqttSettingsFromConfig, CertFile) {
  config::Config c;
  c.broker.certfile = "/etc/upparat/device.pem.crt";
  EXPECT_EQ(mqtt_settings(c).certfile, "/etc/upparat/device.pem.crt");
}

TEST(MqttSettingsFromConfig, KeyFile) {
  config::Config c;
  c.broker.keyfile = "/etc/upparat/private.pem.key";
  EXPECT_EQ(mqtt_settings(c).keyfile, "/etc/upparat/private.pem.key");
}

TEST(MqttSettingsFromConfig, Alpn) {
  config::Config c;
  ASSERT_FALSE(mqtt::Settings{}.alpn);
  c.broker.alpn = true;
  EXPECT_TRUE(mqtt_settings(c).alpn);
}

TEST(MqttSettingsFromConfig, PlainTcp) {
  config::Config c;
  ASSERT_FALSE(mqtt::Settings{}.plain_tcp);
  c.broker.plain_tcp = true;
  EXPECT_TRUE(mqtt_settings(c).plain_tcp);
}

TEST(MqttSettingsFromConfig, KeepAlive) {
  config::Config c;
  c.broker.keep_alive = 45s;
  EXPECT_EQ(mqtt_settings(c).keep_alive, 45s);
}

TEST(MqttSettingsFromConfig, ReconnectMin) {
  config::Config c;
  c.broker.reconnect_min = 7s;
  EXPECT_EQ(mqtt_settings(c).reconnect_min, 7000ms);
}

TEST(MqttSettingsFromConfig, ReconnectMax) {
  config::Config c;
  c.broker.reconnect_max = 99s;
  EXPECT_EQ(mqtt_settings(c).reconnect_max, 99000ms);
}

TEST(MqttSettingsFromConfig, SubscriptionsAreTheJobTopicsOfTheThing) {
  config::Config c;
  c.broker.thing_name = "thing-from-config";
  const auto topics = mqtt_settings(c).subscriptions;
  EXPECT_EQ(topics, jobs::subscription_topics("thing-from-config"));
  EXPECT_THAT(topics, ::testing::Contains("$aws/things/thing-from-config/jobs/notify"));
}

}  // namespace
}  // namespace upparat::daemon
