#pragma once

// A small synchronous MQTT client (Paho C++) for tests: connect, subscribe, publish, and wait
// for messages. Plays the cloud side, an observer, or a device in conformance tests.

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.hpp"

namespace upparat::test {

struct MqttClientOptions {
  /// "tcp://127.0.0.1:P" or "ssl://127.0.0.1:P" (e.g. Mosquitto::uri()).
  std::string uri;
  /// Default: a unique "upparat-test-<n>".
  std::string client_id;
  /// For ssl:// : the CA to trust, and the client certificate/key (mTLS).
  std::filesystem::path ca_cert;
  std::filesystem::path cert;
  std::filesystem::path key;
  /// Offered ALPN protocols (ssl:// only), e.g. {"x-amzn-mqtt-ca"}.
  std::vector<std::string> alpn;
  bool clean_session = true;
  std::chrono::seconds keep_alive{30};
  std::chrono::milliseconds timeout{std::chrono::seconds(10)};
};

struct MqttMessage {
  std::string topic;
  std::string payload;
  int qos = 0;
  bool retained = false;
};

/// Connected on return from connect(); disconnects in the destructor. Messages of the
/// subscriptions are queued in arrival order until taken by wait_for_message(). Move-only.
class MqttTestClient {
 public:
  static Result<MqttTestClient> connect(MqttClientOptions options);
  /// Plain connect with default options.
  static Result<MqttTestClient> connect(const std::string& uri);

  MqttTestClient(MqttTestClient&&) noexcept;
  MqttTestClient& operator=(MqttTestClient&&) noexcept;
  ~MqttTestClient();

  /// Subscribes and waits for the SUBACK (a refused subscription is an error).
  Status subscribe(const std::string& filter, int qos = 1);
  Status unsubscribe(const std::string& filter);
  /// Publishes and waits until the broker acknowledged it (QoS 1/2) or it was sent (QoS 0).
  Status publish(const std::string& topic, std::string_view payload, int qos = 1,
                 bool retained = false);

  /// Takes the oldest queued message.
  Result<MqttMessage> wait_for_message(std::chrono::milliseconds timeout);
  /// Takes the oldest queued message whose topic equals `topic` (others stay queued).
  Result<MqttMessage> wait_for_message(const std::string& topic, std::chrono::milliseconds timeout);
  /// Takes every queued message without waiting.
  std::vector<MqttMessage> take_all();

  [[nodiscard]] bool connected() const;
  Status disconnect();
  [[nodiscard]] const std::string& client_id() const;

 private:
  struct Impl;
  explicit MqttTestClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace upparat::test
