#include "support/mqtt_client.hpp"

#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>

#include <mqtt/async_client.h>

namespace upparat::test {

struct MqttTestClient::Impl : public virtual mqtt::callback {
  MqttClientOptions options;
  std::unique_ptr<mqtt::async_client> client;
  std::mutex mutex;
  std::condition_variable arrived;
  std::deque<MqttMessage> queue;

  void message_arrived(mqtt::const_message_ptr message) override {
    MqttMessage copy{message->get_topic(), message->to_string(), message->get_qos(),
                     message->is_retained()};
    {
      std::lock_guard lock(mutex);
      queue.push_back(std::move(copy));
    }
    arrived.notify_all();
  }
  void connection_lost(const std::string& /*cause*/) override {}
  void delivery_complete(mqtt::delivery_token_ptr /*token*/) override {}

  // Waits for a token; a timeout or a failed token is an error.
  Status wait(const mqtt::token_ptr& token, const std::string& what) const {
    try {
      if (!token->wait_for(options.timeout)) {
        return fail(what + ": no answer within " + std::to_string(options.timeout.count()) + " ms");
      }
      return {};
    } catch (const mqtt::exception& error) {
      return fail(what + ": " + error.what());
    }
  }
};

MqttTestClient::MqttTestClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MqttTestClient::MqttTestClient(MqttTestClient&&) noexcept = default;
MqttTestClient& MqttTestClient::operator=(MqttTestClient&& other) noexcept {
  if (this != &other) {
    (void)disconnect();
    impl_ = std::move(other.impl_);
  }
  return *this;
}

MqttTestClient::~MqttTestClient() {
  (void)disconnect();
}

Result<MqttTestClient> MqttTestClient::connect(MqttClientOptions options) {
  static std::atomic<int> counter{0};
  if (options.client_id.empty()) {
    options.client_id =
        "upparat-test-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
  }
  const std::string what = "MQTT connect " + options.client_id + " to " + options.uri;
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  try {
    impl->client = std::make_unique<mqtt::async_client>(options.uri, options.client_id);
    impl->client->set_callback(*impl);
    mqtt::connect_options connect;
    connect.set_clean_session(options.clean_session);
    connect.set_keep_alive_interval(options.keep_alive);
    connect.set_connect_timeout(std::chrono::duration_cast<std::chrono::seconds>(options.timeout));
    connect.set_automatic_reconnect(false);
    if (options.uri.rfind("ssl://", 0) == 0) {
      mqtt::ssl_options ssl;
      if (!options.ca_cert.empty()) {
        ssl.set_trust_store(options.ca_cert.string());
      }
      if (!options.cert.empty()) {
        ssl.set_key_store(options.cert.string());
      }
      if (!options.key.empty()) {
        ssl.set_private_key(options.key.string());
      }
      ssl.set_enable_server_cert_auth(true);
      ssl.set_verify(true);
      if (!options.alpn.empty()) {
        ssl.set_alpn_protos(options.alpn);
      }
      connect.set_ssl(std::move(ssl));
    }
    if (auto status = impl->wait(impl->client->connect(connect), what); !status) {
      return fail(status.error());
    }
  } catch (const std::exception& error) {
    return fail(what + ": " + error.what());
  }
  return MqttTestClient(std::move(impl));
}

Result<MqttTestClient> MqttTestClient::connect(const std::string& uri) {
  MqttClientOptions options;
  options.uri = uri;
  return connect(std::move(options));
}

Status MqttTestClient::subscribe(const std::string& filter, int qos) {
  const std::string what = "subscribe to " + filter;
  try {
    auto token = impl_->client->subscribe(filter, qos);
    if (auto status = impl_->wait(token, what); !status) {
      return status;
    }
    const auto response = token->get_subscribe_response();
    for (auto code : response.get_reason_codes()) {
      if (static_cast<int>(code) >= 0x80) {
        return fail(what + ": refused by the broker (" + std::to_string(static_cast<int>(code)) +
                    ")");
      }
    }
  } catch (const std::exception& error) {
    return fail(what + ": " + error.what());
  }
  return {};
}

Status MqttTestClient::unsubscribe(const std::string& filter) {
  try {
    return impl_->wait(impl_->client->unsubscribe(filter), "unsubscribe from " + filter);
  } catch (const std::exception& error) {
    return fail("unsubscribe from " + filter + ": " + error.what());
  }
}

Status MqttTestClient::publish(const std::string& topic, std::string_view payload, int qos,
                               bool retained) {
  try {
    return impl_->wait(impl_->client->publish(topic, payload.data(), payload.size(), qos, retained),
                       "publish to " + topic);
  } catch (const std::exception& error) {
    return fail("publish to " + topic + ": " + error.what());
  }
}

Result<MqttMessage> MqttTestClient::wait_for_message(std::chrono::milliseconds timeout) {
  std::unique_lock lock(impl_->mutex);
  if (!impl_->arrived.wait_for(lock, timeout, [this] { return !impl_->queue.empty(); })) {
    return fail(impl_->options.client_id + ": no MQTT message within " +
                std::to_string(timeout.count()) + " ms");
  }
  MqttMessage message = std::move(impl_->queue.front());
  impl_->queue.pop_front();
  return message;
}

Result<MqttMessage> MqttTestClient::wait_for_message(const std::string& topic,
                                                     std::chrono::milliseconds timeout) {
  std::unique_lock lock(impl_->mutex);
  std::optional<MqttMessage> found;
  auto take = [&] {
    for (auto it = impl_->queue.begin(); it != impl_->queue.end(); ++it) {
      if (it->topic == topic) {
        found = std::move(*it);
        impl_->queue.erase(it);
        return true;
      }
    }
    return false;
  };
  if (!impl_->arrived.wait_for(lock, timeout, take)) {
    std::string queued;
    for (const auto& message : impl_->queue) {
      queued += "\n  " + message.topic;
    }
    return fail(impl_->options.client_id + ": no MQTT message on " + topic + " within " +
                std::to_string(timeout.count()) + " ms" +
                (queued.empty() ? std::string() : "; queued on other topics:" + queued));
  }
  return std::move(*found);
}

std::vector<MqttMessage> MqttTestClient::take_all() {
  std::lock_guard lock(impl_->mutex);
  std::vector<MqttMessage> all(std::make_move_iterator(impl_->queue.begin()),
                               std::make_move_iterator(impl_->queue.end()));
  impl_->queue.clear();
  return all;
}

bool MqttTestClient::connected() const {
  return impl_ && impl_->client && impl_->client->is_connected();
}

Status MqttTestClient::disconnect() {
  if (!impl_ || !impl_->client) {
    return {};
  }
  try {
    if (impl_->client->is_connected()) {
      return impl_->wait(impl_->client->disconnect(), "MQTT disconnect");
    }
  } catch (const std::exception& error) {
    return fail(std::string("MQTT disconnect: ") + error.what());
  }
  return {};
}

const std::string& MqttTestClient::client_id() const {
  return impl_->options.client_id;
}

}  // namespace upparat::test
