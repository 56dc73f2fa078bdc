#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "emulator/jobs_model.hpp"

namespace upparat::emulator {

/// The Jobs service's MQTT side: a Paho client of a real broker, subscribed (QoS 1) to
/// `$aws/things/+/jobs/#`, that feeds every request to the model and publishes the model's
/// responses and notifications (QoS 1, honouring the delay fault knob). Requests are handled
/// on a worker thread, never in Paho's callback; a ticker fires expired timers every second.
/// Reconnects automatically. Thread-safe.
class MqttFront {
 public:
  /// Connects (waits up to 10 s for the first connection) and subscribes.
  /// `after_change` runs on the worker after each handled request (e.g. to save state).
  [[nodiscard]] static Result<std::unique_ptr<MqttFront>> start(
      const std::string& broker_uri, std::shared_ptr<JobsModel> model,
      std::function<void()> after_change = {});
  ~MqttFront();
  MqttFront(const MqttFront&) = delete;
  MqttFront& operator=(const MqttFront&) = delete;

  /// Queues messages for publication (each after its delay_ms).
  void publish(std::vector<Outgoing> messages);

  struct Impl;

 private:
  explicit MqttFront(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace upparat::emulator
