// Request/response round trips of the daemon's MQTT session through a real mosquitto on
// loopback, with TCP_NODELAY on the broker connection (the daemon's default) and without it
// (the baseline), alternating, in one run.
//
// Each round trip is what the daemon does between a job notify and the download: a QoS 1
// message arrives (the session sends its PUBACK) and the session publishes its next request at
// once; a responder client (TCP_NODELAY set) answers each request. Without TCP_NODELAY the
// request waits in the kernel for the broker's delayed ACK of the PUBACK.
//
//   upparat-mqtt-round-trip-bench [--rounds N] [--runs R]
// Prints the median round trip of each mode and their ratio.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "mqtt/session.hpp"
#include "mqtt/tcp_nodelay.hpp"
#include "support/mosquitto.hpp"
#include "support/mqtt_client.hpp"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using upparat::mqtt::Session;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Median round trip in milliseconds of `rounds` request/answer pairs, or a negative value.
double measure(std::uint16_t port, bool nodelay, int rounds, int run) {
  std::mutex mutex;
  std::condition_variable changed;
  int answers = 0;
  bool subscribed = false;
  upparat::mqtt::Callbacks callbacks;
  Session* session_ptr = nullptr;
  std::vector<Clock::time_point> sent;
  std::vector<double> trips;
  callbacks.on_subscribed = [&] {
    std::lock_guard lock(mutex);
    subscribed = true;
    changed.notify_all();
  };
  callbacks.on_message = [&](std::string, std::string) {
    std::lock_guard lock(mutex);
    if (sent.empty() || answers >= rounds) {
      return;  // not an answer to this run's requests
    }
    trips.push_back(std::chrono::duration<double, std::milli>(Clock::now() - sent.back()).count());
    if (++answers < rounds) {
      sent.push_back(Clock::now());
      session_ptr->publish("bench/req", "next");  // at once, as the machine does
    }
    changed.notify_all();
  };
  upparat::mqtt::Settings s;
  s.host = "127.0.0.1";
  s.port = port;
  s.plain_tcp = true;
  s.client_id = (nodelay ? "bench-nodelay-" : "bench-nagle-") + std::to_string(run);
  s.subscriptions = {"bench/resp"};
  s.tcp_nodelay = nodelay;
  Session session(s, callbacks);
  session_ptr = &session;
  if (!session.start()) {
    return -1;
  }
  std::unique_lock lock(mutex);
  if (!changed.wait_for(lock, 20s, [&] { return subscribed; })) {
    return -1;
  }
  sent.push_back(Clock::now());
  session.publish("bench/req", "first");
  const bool done = changed.wait_for(lock, 60s, [&] { return answers >= rounds; });
  lock.unlock();
  session.stop(1s);
  return done ? median(trips) : -1;
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 40;
  int runs = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--rounds") == 0) {
      rounds = std::max(1, std::atoi(argv[i + 1]));
    } else if (std::strcmp(argv[i], "--runs") == 0) {
      runs = std::max(1, std::atoi(argv[i + 1]));
    }
  }
  // The broker answers without Nagle's algorithm too, as AWS IoT's does: what remains is the
  // session's own socket.
  upparat::test::MosquittoOptions options;
  options.extra_config = "set_tcp_nodelay true\n";
  auto broker = upparat::test::Mosquitto::start(options);
  if (!broker) {
    std::fprintf(stderr, "mosquitto: %s\n", broker.error().message().c_str());
    return 1;
  }
  const std::uint16_t port = broker->port();
  auto responder = upparat::test::MqttTestClient::connect(broker->uri());
  if (!responder || !responder->subscribe("bench/req")) {
    std::fprintf(stderr, "responder could not connect or subscribe\n");
    return 1;
  }
  // Only the responder is connected yet: its answers are never held back.
  upparat::mqtt::set_nodelay_to_peer_port(port);
  std::atomic<bool> stop{false};
  std::thread answering([&] {
    while (!stop) {
      if (responder->wait_for_message("bench/req", 200ms)) {
        (void)responder->publish("bench/resp", "answer");
      }
    }
  });

  std::vector<double> with, without;
  for (int run = 0; run < runs; ++run) {
    with.push_back(measure(port, true, rounds, run));
    without.push_back(measure(port, false, rounds, run));
  }
  stop = true;
  answering.join();
  if (std::any_of(with.begin(), with.end(), [](double v) { return v < 0; }) ||
      std::any_of(without.begin(), without.end(), [](double v) { return v < 0; })) {
    std::fprintf(stderr, "a run did not complete\n");
    return 1;
  }
  const double a = median(with);
  const double b = median(without);
  std::printf("round trips: %d per run, %d runs each, alternating\n", rounds, runs);
  std::printf("median round trip, TCP_NODELAY (ours): %.2f ms\n", a);
  std::printf("median round trip, without (baseline): %.2f ms\n", b);
  std::printf("ratio ours / baseline: %.3f\n", b > 0 ? a / b : 0.0);
  return 0;
}
