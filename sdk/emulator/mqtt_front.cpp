#include "emulator/mqtt_front.hpp"

#include <unistd.h>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include <mqtt/async_client.h>
#include <spdlog/spdlog.h>

#include "mqtt/tcp_nodelay.hpp"

namespace upparat::emulator {
namespace {
constexpr const char* kFilter = "$aws/things/+/jobs/#";
constexpr int kMaxQueuedMessages = 100000;
using SteadyClock = std::chrono::steady_clock;
}  // namespace

struct MqttFront::Impl : public virtual ::mqtt::callback {
  std::shared_ptr<JobsModel> model;
  std::uint16_t broker_port = 0;
  std::function<void()> after_change;
  std::unique_ptr<::mqtt::async_client> client;
  std::mutex mutex;
  std::condition_variable cv;
  std::deque<std::pair<std::string, std::string>> incoming;
  std::multimap<SteadyClock::time_point, Outgoing> outgoing;
  bool stopping = false;
  std::thread worker;
  std::thread ticker;

  ~Impl() override {
    {
      std::lock_guard lock(mutex);
      stopping = true;
    }
    cv.notify_all();
    if (worker.joinable()) {
      worker.join();
    }
    if (ticker.joinable()) {
      ticker.join();
    }
    if (client) {
      try {
        client->disconnect()->wait_for(std::chrono::seconds(2));
      } catch (const std::exception&) {
        // already gone
      }
      // The callback (this object) is still whole here: Paho may call it until reset() returns.
      client.reset();
    }
  }

  void connected(const std::string& /*cause*/) override {
    // Each answer follows the PUBACK of its request: without TCP_NODELAY it would wait for
    // the broker's delayed ACK (about 40 ms), as AWS's service does not.
    upparat::mqtt::set_nodelay_to_peer_port(broker_port);
    try {
      client->subscribe(kFilter, 1);
    } catch (const std::exception& e) {
      spdlog::error("jobs emulator: subscribe {}: {}", kFilter, e.what());
    }
  }
  void connection_lost(const std::string& cause) override {
    spdlog::warn("jobs emulator: connection to the broker lost ({}); reconnecting", cause);
  }
  void message_arrived(::mqtt::const_message_ptr message) override {
    {
      std::lock_guard lock(mutex);
      incoming.emplace_back(message->get_topic(), message->get_payload_str());
    }
    cv.notify_all();
  }
  void delivery_complete(::mqtt::delivery_token_ptr) override {}

  void enqueue(std::vector<Outgoing> messages) {
    if (messages.empty()) {
      return;
    }
    {
      std::lock_guard lock(mutex);
      auto now = SteadyClock::now();
      for (auto& m : messages) {
        outgoing.emplace(now + std::chrono::milliseconds(m.delay_ms), std::move(m));
      }
    }
    cv.notify_all();
  }

  void send(const Outgoing& m) {
    spdlog::debug("-> {} {}", m.topic, m.payload.substr(0, 512));
    try {
      client->publish(m.topic, m.payload.data(), m.payload.size(), 1, false);
    } catch (const std::exception& e) {
      spdlog::warn("jobs emulator: publish {} failed: {}", m.topic, e.what());
    }
  }

  void run() {
    std::unique_lock lock(mutex);
    while (!stopping) {
      if (!incoming.empty()) {
        auto [topic, payload] = std::move(incoming.front());
        incoming.pop_front();
        lock.unlock();
        spdlog::debug("<- {} {}", topic, payload.substr(0, 512));
        if (payload.size() > kMaxMqttPayloadBytes) {
          spdlog::warn("<- {}: a payload of {} bytes is over the 128 KiB limit: dropped unanswered",
                       topic, payload.size());
        }
        auto out = model->handle(topic, payload);
        if (!out.empty() && after_change) {
          after_change();
        }
        enqueue(std::move(out));
        lock.lock();
        continue;
      }
      if (!outgoing.empty() && outgoing.begin()->first <= SteadyClock::now()) {
        Outgoing m = std::move(outgoing.begin()->second);
        outgoing.erase(outgoing.begin());
        lock.unlock();
        send(m);
        lock.lock();
        continue;
      }
      if (outgoing.empty()) {
        cv.wait(lock);
      } else {
        cv.wait_until(lock, outgoing.begin()->first);
      }
    }
  }

  void tick_loop() {
    std::unique_lock lock(mutex);
    while (!stopping) {
      cv.wait_for(lock, std::chrono::seconds(1));
      if (stopping) {
        break;
      }
      lock.unlock();
      auto out = model->tick();
      if (!out.empty() && after_change) {
        after_change();
      }
      enqueue(std::move(out));
      lock.lock();
    }
  }
};

MqttFront::MqttFront(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MqttFront::~MqttFront() = default;

void MqttFront::publish(std::vector<Outgoing> messages) {
  impl_->enqueue(std::move(messages));
}

Result<std::unique_ptr<MqttFront>> MqttFront::start(const std::string& broker_uri,
                                                    std::shared_ptr<JobsModel> model,
                                                    std::function<void()> after_change) {
  auto impl = std::make_unique<Impl>();
  impl->model = std::move(model);
  impl->after_change = std::move(after_change);
  try {
    std::string client_id = "upparat-jobs-emulator-" + std::to_string(::getpid());
    // A job for many things publishes two notifies per thing at once: Paho's default of 100
    // queued messages would drop the rest ("No more messages can be buffered").
    impl->client =
        std::make_unique<::mqtt::async_client>(broker_uri, client_id, kMaxQueuedMessages);
    const auto colon = broker_uri.rfind(':');
    impl->broker_port = static_cast<std::uint16_t>(
        colon == std::string::npos ? 0 : std::atoi(broker_uri.c_str() + colon + 1));
    impl->client->set_callback(*impl);
    auto options = ::mqtt::connect_options_builder()
                       .clean_session(true)
                       .keep_alive_interval(std::chrono::seconds(30))
                       .automatic_reconnect(std::chrono::milliseconds(200), std::chrono::seconds(5))
                       .connect_timeout(std::chrono::seconds(10))
                       .finalize();
    if (!impl->client->connect(options)->wait_for(std::chrono::seconds(10))) {
      return fail("MQTT broker " + broker_uri + ": no connection within 10 s");
    }
    upparat::mqtt::set_nodelay_to_peer_port(impl->broker_port);
    if (!impl->client->subscribe(kFilter, 1)->wait_for(std::chrono::seconds(10))) {
      return fail("MQTT broker " + broker_uri + ": no SUBACK for " + kFilter);
    }
  } catch (const std::exception& e) {
    return fail("MQTT broker " + broker_uri + ": " + e.what());
  }
  Impl* raw = impl.get();
  raw->worker = std::thread([raw] { raw->run(); });
  raw->ticker = std::thread([raw] { raw->tick_loop(); });
  return std::unique_ptr<MqttFront>(new MqttFront(std::move(impl)));
}

}  // namespace upparat::emulator
