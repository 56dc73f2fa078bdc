#include "mqtt/session.hpp"

#include <spdlog/spdlog.h>

#include <mqtt/async_client.h>
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <random>
#include <thread>

#include "mqtt/tcp_nodelay.hpp"

namespace upparat::mqtt {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

/// Forwards Paho's action results to a function (Paho keeps a reference: it must outlive the
/// call, so each lives in Impl).
class Listener : public ::mqtt::iaction_listener {
 public:
  std::function<void(const ::mqtt::token&)> success;
  std::function<void(const ::mqtt::token&)> failure;
  void on_success(const ::mqtt::token& token) override {
    if (success) {
      success(token);
    }
  }
  void on_failure(const ::mqtt::token& token) override {
    if (failure) {
      failure(token);
    }
  }
};

std::string describe_failure(const ::mqtt::token& token) {
  int rc = token.get_return_code();
  std::string text = "return code " + std::to_string(rc);
  switch (rc) {
    case 1:
      text += " (unacceptable protocol version)";
      break;
    case 2:
      text += " (client id rejected)";
      break;
    case 3:
      text += " (server unavailable)";
      break;
    case 4:
      text += " (bad user name or password)";
      break;
    case 5:
      text += " (not authorised)";
      break;
    case -1:
      text +=
          " (TCP or TLS connect failed: is the broker reachable, are the certificates valid, is "
          "the clock set?)";
      break;
    default:
      break;
  }
  return text;
}

}  // namespace

struct Session::Impl : public ::mqtt::callback {
  Settings settings;
  Callbacks callbacks;
  std::string uri;
  std::unique_ptr<::mqtt::async_client> client;
  ::mqtt::connect_options options;
  Listener connect_listener;
  Listener subscribe_listener;

  std::mutex mutex;
  std::condition_variable wake;
  enum class State { Idle, Connecting, Connected, Stopped } state = State::Idle;
  Clock::time_point next_attempt = Clock::now();
  milliseconds backoff{0};
  Clock::time_point connected_at{};
  int quick_disconnects = 0;
  bool stopping = false;
  std::atomic<bool> subscribed{false};
  std::thread thread;
  std::mt19937_64 random{std::random_device{}()};

  // ::mqtt::callback (Paho's thread): only hand over.
  void connected(const std::string&) override {}
  void connection_lost(const std::string& cause) override {
    subscribed = false;
    {
      std::lock_guard lock(mutex);
      if (stopping) {
        return;
      }
      auto lived = Clock::now() - connected_at;
      if (lived < settings.quick_disconnect) {
        ++quick_disconnects;
      } else {
        quick_disconnects = 0;
      }
      state = State::Idle;
      schedule_locked();
    }
    wake.notify_all();
    spdlog::warn("mqtt: connection to {} lost{}{}", uri, cause.empty() ? "" : ": ", cause);
    if (callbacks.on_disconnected) {
      callbacks.on_disconnected(cause.empty() ? "connection lost" : cause);
    }
  }
  void message_arrived(::mqtt::const_message_ptr message) override {
    if (callbacks.on_message && message) {
      callbacks.on_message(message->get_topic(), message->get_payload_str());
    }
  }
  void delivery_complete(::mqtt::delivery_token_ptr) override {}

  /// Sets the time of the next connect attempt (mutex held).
  void schedule_locked() {
    milliseconds ceiling = settings.reconnect_max;
    if (quick_disconnects >= 3) {
      ceiling = std::max(settings.duplicate_backoff_max, settings.reconnect_max);
      if (quick_disconnects == 3 || quick_disconnects % 10 == 0) {
        spdlog::error(
            "mqtt: client id {} is probably used by another connection (disconnected {} times "
            "right after connecting); backing off up to {} s",
            settings.client_id, quick_disconnects,
            std::chrono::duration_cast<std::chrono::seconds>(ceiling).count());
      }
    }
    backoff = backoff.count() == 0 ? settings.reconnect_min : std::min(ceiling, backoff * 2);
    // Full jitter in the upper half keeps a fleet from reconnecting in lockstep.
    std::uniform_int_distribution<long long> jitter(backoff.count() / 2, backoff.count());
    next_attempt = Clock::now() + milliseconds(jitter(random));
  }

  void run() {
    std::unique_lock lock(mutex);
    while (!stopping) {
      if (state != State::Idle) {
        wake.wait(lock);
        continue;
      }
      if (Clock::now() < next_attempt) {
        wake.wait_until(lock, next_attempt);
        continue;
      }
      state = State::Connecting;
      lock.unlock();
      spdlog::info("mqtt: connecting to {} as {}", uri, settings.client_id);
      try {
        client->connect(options, nullptr, connect_listener);
      } catch (const std::exception& e) {
        spdlog::warn("mqtt: connect to {} failed: {}", uri, e.what());
        lock.lock();
        state = State::Idle;
        schedule_locked();
        continue;
      }
      lock.lock();
    }
  }

  void on_connect_success() {
    {
      std::lock_guard lock(mutex);
      // Paho may report one connect's success twice: subscribe once.
      if (stopping || state == State::Connected) {
        return;
      }
      state = State::Connected;
      connected_at = Clock::now();
    }
    spdlog::info("mqtt: connected to {}", uri);
    // Before the first request goes out: see tcp_nodelay.hpp.
    if (settings.tcp_nodelay && set_nodelay_to_peer_port(settings.port) == 0) {
      spdlog::warn(
          "mqtt: no socket to port {} found to set TCP_NODELAY on; requests may wait "
          "about 40 ms each for the broker's delayed ACK",
          settings.port);
    }
    // Paho does not resubscribe and cannot tell whether the broker kept the session.
    auto topics = ::mqtt::string_collection::create(settings.subscriptions);
    std::vector<int> qos(settings.subscriptions.size(), 1);
    try {
      client->subscribe(topics, qos, nullptr, subscribe_listener);
    } catch (const std::exception& e) {
      spdlog::error("mqtt: subscribe failed: {}", e.what());
      force_reconnect();
    }
  }

  void on_connect_failure(const ::mqtt::token& token) {
    std::string reason = describe_failure(token);
    {
      std::lock_guard lock(mutex);
      if (stopping) {
        return;
      }
      state = State::Idle;
      schedule_locked();
    }
    wake.notify_all();
    spdlog::warn("mqtt: connect to {} failed: {}; retrying", uri, reason);
    if (callbacks.on_disconnected) {
      callbacks.on_disconnected("connect failed: " + reason);
    }
  }

  void on_subscribe_success(const ::mqtt::token& token) {
    try {
      const auto response = token.get_subscribe_response();
      for (auto code : response.get_reason_codes()) {
        if (static_cast<int>(code) >= 0x80) {
          spdlog::error(
              "mqtt: the broker refused a subscription (code {}): check the policy of "
              "the device certificate",
              static_cast<int>(code));
          force_reconnect();
          return;
        }
      }
    } catch (const std::exception&) {
      // Older Paho builds do not fill the response for MQTT 3.1.1: accept.
    }
    {
      std::lock_guard lock(mutex);
      // A connection that stayed long enough to subscribe resets the back-off only when it
      // is not one of a series of quick disconnects.
      if (quick_disconnects == 0) {
        backoff = milliseconds(0);
      }
    }
    subscribed = true;
    spdlog::info("mqtt: subscribed to {} topic filters", settings.subscriptions.size());
    if (callbacks.on_subscribed) {
      callbacks.on_subscribed();
    }
  }

  /// Drops the connection so that the reconnect logic runs again (not from Paho's thread
  /// while holding a token: disconnect is asynchronous).
  void force_reconnect() {
    try {
      client->disconnect(0);
    } catch (const std::exception&) {
    }
    {
      std::lock_guard lock(mutex);
      state = State::Idle;
      schedule_locked();
    }
    wake.notify_all();
  }
};

Session::Session(Settings settings, Callbacks callbacks) : impl_(std::make_unique<Impl>()) {
  impl_->settings = std::move(settings);
  impl_->callbacks = std::move(callbacks);
  const auto& s = impl_->settings;
  impl_->uri = (s.plain_tcp ? "tcp://" : "ssl://") + s.host + ":" + std::to_string(s.port);
}

Session::~Session() {
  stop(milliseconds(0));
}

namespace {

/// Paho C writes each protocol event (every packet sent or received) into a ring of its last
/// 400 trace entries, about 120 KiB that it keeps for a trace nobody reads unless tracing was
/// asked for. Only errors go into it now, so those pages are never touched. Asked for with
/// Paho's own variables (MQTT_C_CLIENT_TRACE, MQTT_C_CLIENT_TRACE_LEVEL; docs/daemon.md), the
/// trace stays as Paho sets it.
void keep_only_errors_in_paho_trace() {
  if (std::getenv("MQTT_C_CLIENT_TRACE") == nullptr &&
      std::getenv("MQTT_C_CLIENT_TRACE_LEVEL") == nullptr) {
    MQTTAsync_setTraceLevel(MQTTASYNC_TRACE_ERROR);
  }
}

}  // namespace

Status Session::start() {
  auto& impl = *impl_;
  const auto& s = impl.settings;
  try {
    ::mqtt::create_options create(MQTTVERSION_3_1_1);
    create.set_send_while_disconnected(true, true);
    create.set_max_buffered_messages(s.max_buffered);
    create.set_delete_oldest_messages(false);
    keep_only_errors_in_paho_trace();
    impl.client = std::make_unique<::mqtt::async_client>(impl.uri, s.client_id, create, nullptr);
    impl.client->set_callback(impl);

    ::mqtt::connect_options options;
    options.set_mqtt_version(MQTTVERSION_3_1_1);
    options.set_clean_session(false);
    options.set_keep_alive_interval(s.keep_alive);
    options.set_connect_timeout(s.connect_timeout);
    options.set_automatic_reconnect(false);  // the session's own loop reconnects
    if (!s.plain_tcp) {
      ::mqtt::ssl_options ssl;
      if (!s.cafile.empty()) {
        ssl.set_trust_store(s.cafile);
      }
      ssl.set_key_store(s.certfile);
      ssl.set_private_key(s.keyfile);
      ssl.set_enable_server_cert_auth(true);
      ssl.set_verify(true);  // host name verification
      ssl.set_ssl_version(MQTT_SSL_VERSION_TLS_1_2);
      if (s.alpn) {
        ssl.set_alpn_protos({"x-amzn-mqtt-ca"});
      }
      // No ssl error handler: Paho C++ 1.2 keeps a pointer to the ssl_options object as its
      // context, which dangles once the options are copied into connect_options.
      options.set_ssl(std::move(ssl));
    }
    impl.options = options;
  } catch (const std::exception& e) {
    return fail(std::string("mqtt: cannot create a client for ") + impl.uri + ": " + e.what());
  }
  impl.connect_listener.success = [&impl](const ::mqtt::token&) { impl.on_connect_success(); };
  impl.connect_listener.failure = [&impl](const ::mqtt::token& t) { impl.on_connect_failure(t); };
  impl.subscribe_listener.success = [&impl](const ::mqtt::token& t) {
    impl.on_subscribe_success(t);
  };
  impl.subscribe_listener.failure = [&impl](const ::mqtt::token&) {
    spdlog::error("mqtt: subscribe failed; reconnecting");
    impl.force_reconnect();
  };
  impl.thread = std::thread([&impl] { impl.run(); });
  return {};
}

bool Session::publish(const std::string& topic, const std::string& payload) {
  if (!impl_->client) {
    return false;
  }
  try {
    auto message = ::mqtt::make_message(topic, payload, 1, false);
    impl_->client->publish(message);
    return true;
  } catch (const std::exception& e) {
    spdlog::warn("mqtt: publish to {} not accepted by the client: {}", topic, e.what());
    return false;
  }
}

void Session::stop(milliseconds flush) {
  auto& impl = *impl_;
  {
    std::lock_guard lock(impl.mutex);
    if (impl.state == Impl::State::Stopped) {
      return;
    }
    impl.stopping = true;
  }
  impl.wake.notify_all();
  if (impl.thread.joinable()) {
    impl.thread.join();
  }
  if (impl.client) {
    auto deadline = Clock::now() + flush;
    try {
      if (flush.count() > 0 && impl.client->is_connected()) {
        for (const auto& token : impl.client->get_pending_delivery_tokens()) {
          auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
          if (left.count() <= 0) {
            break;
          }
          token->wait_for(left);
        }
      }
    } catch (const std::exception& e) {
      spdlog::debug("mqtt: flushing: {}", e.what());
    }
    try {
      if (impl.client->is_connected()) {
        impl.client->disconnect(milliseconds(1000))->wait_for(milliseconds(2000));
      }
    } catch (const std::exception& e) {
      spdlog::debug("mqtt: disconnect: {}", e.what());
    }
    try {
      impl.client->disable_callbacks();
    } catch (const std::exception& e) {
      // Refused while a connect is still pending; the client is destroyed right after.
      spdlog::debug("mqtt: disable callbacks: {}", e.what());
    }
  }
  std::lock_guard lock(impl.mutex);
  impl.state = Impl::State::Stopped;
}

bool Session::connected() const {
  return impl_->subscribed.load();
}

std::string Session::server_uri() const {
  return impl_->uri;
}

}  // namespace upparat::mqtt
