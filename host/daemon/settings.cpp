#include "daemon/settings.hpp"

#include "jobs/topics.hpp"

namespace upparat::daemon {

StepPlugins step_plugins(
    const config::Config& config,
    const std::map<std::string, std::unique_ptr<plugin::LoadedPlugin>>& plugins) {
  StepPlugins result{};
  for (Step step : kSteps) {
    auto it = config.steps.find(std::string(to_string(step)));
    result[index(step)] = it == config.steps.end() ? nullptr : plugins.at(it->second).get();
  }
  return result;
}

state::MachineSettings machine_settings(const config::Config& config, const StepPlugins& plugins) {
  state::MachineSettings ms;
  ms.thing_name = config.broker.thing_name;
  ms.job_prefix = config.jobs.prefix;
  ms.allow_http = config.download.allow_http;
  ms.require_signature = config.download.require_signature;
  ms.retry_interval = config.retry.retry_interval;
  ms.max_retries = config.retry.max_retries;
  ms.step_deadline = config.jobs.deadlines;
  // AWS takes whole minutes: round the margin up, so the cloud never gives up first.
  ms.step_timeout_margin =
      std::chrono::minutes((config.jobs.step_timeout_margin.count() + 59) / 60);
  ms.progress_percent = config.jobs.progress_percent;
  ms.progress_interval = config.jobs.progress_interval;
  ms.update_resend = config.jobs.update_timeout;
  ms.request_resend = config.jobs.update_timeout;
  ms.poll_interval = config.jobs.poll_interval;
  ms.max_url_refusals = config.jobs.max_url_refusals;
  ms.stop_grace = config.jobs.stop_grace;
  // A step is configured when its plugin serves it (the script plugin: a hook is set).
  for (Step step : kSteps) {
    ms.step_configured[index(step)] =
        plugins[index(step)] != nullptr && plugins[index(step)]->serves(step);
  }
  const plugin::LoadedPlugin* installer = plugins[index(Step::Install)];
  const auto name = config.steps.find("install");
  if (installer != nullptr && installer->serves(plugin::Step::Install) &&
      name != config.steps.end()) {
    const auto table = config.plugins.find(name->second);
    const bool stream = table != config.plugins.end() && table->second.stream;
    // Through the host's downloader when the plugin can: it resumes cut connections and
    // fetches fresh URLs, which a plugin's own download from the URL may not.
    ms.install_stream = stream && installer->has_capability(plugin::kCapInstallStream);
    ms.install_from_url =
        stream && !ms.install_stream && installer->has_capability(plugin::kCapInstallFromUrl);
    ms.install_not_interruptible = installer->has_capability(plugin::kCapInstallNotInterruptible);
  }
  return ms;
}

download::Settings download_settings(const config::Config& config) {
  download::Settings ds;
  ds.directory = config.download.directory;
  ds.ca_file = config.download.ca_file.string();
  ds.proxy = config.download.proxy;
  ds.allow_http = config.download.allow_http;
  ds.max_bytes_per_second = config.download.max_bytes_per_second;
  ds.reserve_bytes = config.download.reserve_bytes;
  ds.fsync_every = config.download.fsync_interval;
  ds.backoff_cap = config.download.backoff_cap;
  ds.signing_certificates = config.download.signing_certificates;
  if (config.download.group_readable) {
    ds.directory_mode = 0750;
    ds.file_mode = 0640;
  }
  return ds;
}

mqtt::Settings mqtt_settings(const config::Config& config) {
  mqtt::Settings mq;
  mq.host = config.broker.host;
  mq.port = config.broker.port;
  mq.client_id = config.broker.client_id;
  mq.cafile = config.broker.cafile.string();
  mq.certfile = config.broker.certfile.string();
  mq.keyfile = config.broker.keyfile.string();
  mq.alpn = config.broker.alpn;
  mq.plain_tcp = config.broker.plain_tcp;
  mq.keep_alive = config.broker.keep_alive;
  mq.reconnect_min = config.broker.reconnect_min;
  mq.reconnect_max = config.broker.reconnect_max;
  mq.subscriptions = jobs::subscription_topics(config.broker.thing_name);
  return mq;
}

}  // namespace upparat::daemon
