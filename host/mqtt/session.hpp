#pragma once

// The MQTT session with AWS IoT Core (or a local broker) through Paho MQTT C++.
//
// - mTLS with the device certificate, server verification always on (host name included), SNI
//   (Paho sets it from the host), ALPN `x-amzn-mqtt-ca` when asked (port 443).
// - Persistent session (clean session off), QoS 1 everywhere.
// - Reconnects by itself with exponential back-off, also when the very first connect fails.
//   After each connect it subscribes again (Paho does not, and cannot tell whether the broker
//   kept the session), and only then reports "subscribed".
// - Three connections lost within seconds of their connect mean another client uses the same
//   client id: said so in the log, and the back-off grows up to minutes.
// - publish() never blocks: while offline, messages are buffered by Paho and delivered in
//   order after the reconnect.
// Callbacks run on Paho's or the session's threads: they must only hand the data over.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/error.hpp"

namespace upparat::mqtt {

struct Settings {
  std::string host;
  std::uint16_t port = 8883;
  std::string client_id;
  std::string cafile;  ///< empty: the system's trust store
  std::string certfile;
  std::string keyfile;
  bool alpn = false;       ///< offer ALPN x-amzn-mqtt-ca
  bool plain_tcp = false;  ///< no TLS (a local broker only)
  std::chrono::seconds keep_alive{60};
  std::chrono::seconds connect_timeout{30};
  std::chrono::milliseconds reconnect_min{1000};
  std::chrono::milliseconds reconnect_max{120000};
  /// A connection lost sooner than this after its connect counts as a "quick" disconnect.
  std::chrono::milliseconds quick_disconnect{10000};
  /// Back-off ceiling once another client seems to use the same client id.
  std::chrono::milliseconds duplicate_backoff_max{300000};
  /// Topic filters subscribed (QoS 1) after every connect.
  std::vector<std::string> subscriptions;
  /// Messages kept while offline.
  int max_buffered = 10000;
  /// TCP_NODELAY on the broker connection (see tcp_nodelay.hpp). Off only to measure what it
  /// saves (bench/mqtt_round_trip_bench).
  bool tcp_nodelay = true;
};

struct Callbacks {
  /// A message arrived (any thread).
  std::function<void(std::string topic, std::string payload)> on_message;
  /// Connected and every subscription acknowledged (any thread).
  std::function<void()> on_subscribed;
  /// The connection was lost or a connect failed (any thread).
  std::function<void(std::string reason)> on_disconnected;
};

class Session {
 public:
  Session(Settings settings, Callbacks callbacks);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  /// Starts connecting in the background; connect failures are retried, never fatal. Fails only
  /// on settings Paho refuses (a malformed host).
  Status start();

  /// Publishes with QoS 1 without waiting; buffered while offline. False when Paho refused it
  /// (buffer full, client stopping); the caller's resend timer covers that.
  bool publish(const std::string& topic, const std::string& payload);

  /// Waits up to `flush` for the delivery of what was published, then disconnects. Idempotent.
  void stop(std::chrono::milliseconds flush);

  [[nodiscard]] bool connected() const;

  /// The URI connected to, e.g. "ssl://host:443".
  [[nodiscard]] std::string server_uri() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace upparat::mqtt
