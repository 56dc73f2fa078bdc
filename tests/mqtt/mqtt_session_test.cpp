// The MQTT session against a real mosquitto (mTLS) and `openssl s_server` (ALPN): certificate
// verification, ALPN offer, resubscribe after a broker restart, offline publishes delivered in
// order after the reconnect, a failed first connect retried.

#include "mqtt/session.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <MQTTAsync.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "mqtt/tcp_nodelay.hpp"
#include "support/binaries.hpp"
#include "support/certificates.hpp"
#include "support/mosquitto.hpp"
#include "support/mqtt_client.hpp"
#include "support/net.hpp"
#include "support/openssl_server.hpp"

namespace upparat::mqtt {
namespace {

using namespace std::chrono_literals;
using test::CertificateAuthority;
using test::Mosquitto;

/// Collects what the session reports.
struct Recorder {
  std::mutex mutex;
  std::condition_variable changed;
  int subscribed = 0;
  int disconnected = 0;
  std::deque<std::pair<std::string, std::string>> messages;

  Callbacks callbacks() {
    Callbacks c;
    c.on_message = [this](std::string topic, std::string payload) {
      std::lock_guard lock(mutex);
      messages.emplace_back(std::move(topic), std::move(payload));
      changed.notify_all();
    };
    c.on_subscribed = [this] {
      std::lock_guard lock(mutex);
      ++subscribed;
      changed.notify_all();
    };
    c.on_disconnected = [this](std::string) {
      std::lock_guard lock(mutex);
      ++disconnected;
      changed.notify_all();
    };
    return c;
  }

  bool wait_subscribed(int count, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, timeout, [&] { return subscribed >= count; });
  }
  bool wait_disconnected(int count, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, timeout, [&] { return disconnected >= count; });
  }
  std::optional<std::pair<std::string, std::string>> next(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex);
    if (!changed.wait_for(lock, timeout, [&] { return !messages.empty(); })) {
      return std::nullopt;
    }
    auto m = messages.front();
    messages.pop_front();
    return m;
  }
};

/// The TCP_NODELAY of each of this process's sockets connected to 127.0.0.1:`port`.
std::vector<int> nodelay_of_connections_to(std::uint16_t port) {
  std::vector<int> found;
  for (int fd = 0; fd < 1024; ++fd) {
    sockaddr_in peer{};
    socklen_t length = sizeof peer;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &length) == 0 &&
        peer.sin_family == AF_INET && ntohs(peer.sin_port) == port) {
      found.push_back(tcp_nodelay(fd));
    }
  }
  return found;
}

class MqttSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    UPPARAT_SKIP_UNLESS_EXECUTABLE(test::kMosquittoPath);
    auto ca = CertificateAuthority::create();
    ASSERT_TRUE(ca) << ca.error().message();
    ca_.emplace(std::move(*ca));
    auto client = ca_->issue_client("device-1");
    ASSERT_TRUE(client) << client.error().message();
    client_ = *client;
  }

  Settings tls_settings(std::uint16_t port) const {
    Settings s;
    s.host = "localhost";
    s.port = port;
    s.client_id = "device-1";
    s.cafile = ca_->ca_cert().string();
    s.certfile = client_.cert.string();
    s.keyfile = client_.key.string();
    s.reconnect_min = 200ms;
    s.reconnect_max = 1s;
    s.subscriptions = {"devices/device-1/#"};
    return s;
  }

  std::optional<CertificateAuthority> ca_;
  test::CertificateFiles client_;
};

TEST_F(MqttSessionTest, MutualTlsConnectSubscribeAndPublish) {
  auto broker = Mosquitto::start_tls(*ca_);
  ASSERT_TRUE(broker) << broker.error().message();
  Recorder rec;
  Session session(tls_settings(broker->port()), rec.callbacks());
  ASSERT_TRUE(session.start());
  ASSERT_TRUE(rec.wait_subscribed(1, 20s)) << broker->process().log_tail();
  EXPECT_TRUE(session.connected());
  EXPECT_EQ(session.server_uri(), "ssl://localhost:" + std::to_string(broker->port()));
  // Requests are not held back by Nagle's algorithm (see mqtt/tcp_nodelay.hpp).
  EXPECT_EQ(nodelay_of_connections_to(broker->port()), std::vector<int>{1});
  ASSERT_TRUE(session.publish("devices/device-1/echo", "hello"));
  auto m = rec.next(10s);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->first, "devices/device-1/echo");
  EXPECT_EQ(m->second, "hello");
  session.stop(2s);
}

/// The levels of the entries Paho C's trace passed on (MQTTAsync_setTraceCallback).
std::mutex trace_mutex;
std::vector<int> trace_levels;

void record_trace(enum MQTTASYNC_TRACE_LEVELS level, char* /*message*/) {
  std::lock_guard lock(trace_mutex);
  trace_levels.push_back(level);
}

TEST_F(MqttSessionTest, PahoTracesOnlyErrorsUnlessAskedTo) {
  // Paho C keeps every traced entry in a ring of about 120 KiB; a protocol event (a packet
  // sent or received) is traced at PROTOCOL level unless the session lowers it to errors.
  ASSERT_EQ(std::getenv("MQTT_C_CLIENT_TRACE"), nullptr);
  ASSERT_EQ(std::getenv("MQTT_C_CLIENT_TRACE_LEVEL"), nullptr);
  auto broker = Mosquitto::start_tls(*ca_);
  ASSERT_TRUE(broker) << broker.error().message();
  MQTTAsync_setTraceCallback(record_trace);
  Recorder rec;
  Session session(tls_settings(broker->port()), rec.callbacks());
  ASSERT_TRUE(session.start());
  ASSERT_TRUE(rec.wait_subscribed(1, 20s)) << broker->process().log_tail();
  {
    // Creating the client prints Paho's banner to the trace whatever the level; it does not
    // go into the ring. What follows is protocol traffic.
    std::lock_guard lock(trace_mutex);
    trace_levels.clear();
  }
  ASSERT_TRUE(session.publish("devices/device-1/echo", "hello"));
  ASSERT_TRUE(rec.next(10s));
  session.stop(2s);
  MQTTAsync_setTraceCallback(nullptr);
  std::lock_guard lock(trace_mutex);
  auto below_errors = std::count_if(trace_levels.begin(), trace_levels.end(),
                                    [](int level) { return level < MQTTASYNC_TRACE_ERROR; });
  EXPECT_EQ(below_errors, 0) << "of " << trace_levels.size() << " trace entries";
}

TEST_F(MqttSessionTest, ServerOfAnotherCaIsRefusedAndRetried) {
  auto other = CertificateAuthority::create("Other CA");
  ASSERT_TRUE(other) << other.error().message();
  auto broker = Mosquitto::start_tls(*other);
  ASSERT_TRUE(broker) << broker.error().message();
  Recorder rec;
  Session session(tls_settings(broker->port()), rec.callbacks());
  ASSERT_TRUE(session.start());
  // Verification is on: every attempt fails, and the session keeps trying.
  ASSERT_TRUE(rec.wait_disconnected(2, 20s));
  EXPECT_EQ(rec.subscribed, 0);
  EXPECT_FALSE(session.connected());
  session.stop(0ms);
}

TEST_F(MqttSessionTest, OffersAlpnForAwsIotOnPort443) {
  UPPARAT_SKIP_UNLESS_EXECUTABLE(test::kOpensslPath);
  auto server = test::OpensslServer::start(*ca_);
  ASSERT_TRUE(server) << server.error().message();
  auto settings = tls_settings(server->port());
  settings.alpn = true;
  Recorder rec;
  Session session(settings, rec.callbacks());
  ASSERT_TRUE(session.start());
  auto offered = server->wait_for_client_alpn(20s);
  ASSERT_TRUE(offered) << offered.error().message();
  EXPECT_EQ(*offered, std::vector<std::string>{"x-amzn-mqtt-ca"});
  session.stop(0ms);
}

TEST_F(MqttSessionTest, FirstConnectFailureIsRetriedUntilTheBrokerComes) {
  auto port = test::free_port();
  ASSERT_TRUE(port) << port.error().message();
  Settings s;
  s.host = "127.0.0.1";
  s.port = *port;
  s.plain_tcp = true;
  s.client_id = "device-1";
  s.reconnect_min = 200ms;
  s.reconnect_max = 500ms;
  s.subscriptions = {"devices/device-1/#"};
  Recorder rec;
  Session session(s, rec.callbacks());
  ASSERT_TRUE(session.start());
  ASSERT_TRUE(rec.wait_disconnected(1, 20s));
  test::MosquittoOptions options;
  options.port = *port;
  auto broker = Mosquitto::start(options);
  ASSERT_TRUE(broker) << broker.error().message();
  EXPECT_TRUE(rec.wait_subscribed(1, 20s));
  session.stop(0ms);
}

TEST_F(MqttSessionTest, ResubscribesAfterBrokerRestartAndDeliversOfflinePublishesInOrder) {
  test::MosquittoOptions options;
  auto broker = Mosquitto::start(options);  // no persistence: the session is lost
  ASSERT_TRUE(broker) << broker.error().message();
  Settings s;
  s.host = "127.0.0.1";
  s.port = broker->port();
  s.plain_tcp = true;
  s.client_id = "device-1";
  s.reconnect_min = 200ms;
  s.reconnect_max = 500ms;
  s.subscriptions = {"devices/device-1/#"};
  Recorder rec;
  Session session(s, rec.callbacks());
  ASSERT_TRUE(session.start());
  ASSERT_TRUE(rec.wait_subscribed(1, 20s));

  ASSERT_TRUE(broker->stop());
  ASSERT_TRUE(rec.wait_disconnected(1, 20s));
  // Published while offline: buffered, delivered in order after the reconnect.
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(session.publish("devices/device-1/offline", std::to_string(i)));
  }
  ASSERT_TRUE(broker->restart());
  ASSERT_TRUE(rec.wait_subscribed(2, 30s)) << "no resubscribe after the broker restart";
  // The broker forgot the subscription: only a resubscribe lets these come back to us.
  std::vector<std::string> got;
  while (got.size() < 5) {
    auto m = rec.next(3s);
    if (!m) {
      break;
    }
    if (m->first == "devices/device-1/offline") {
      got.push_back(m->second);
    }
  }
  // The buffered publishes may go out before the SUBACK; only what arrives after the
  // subscription comes back, but in order. Publish one more to be sure of the resubscribe.
  ASSERT_TRUE(session.publish("devices/device-1/after", "x"));
  bool after = false;
  for (int i = 0; i < 10 && !after; ++i) {
    auto m = rec.next(10s);
    if (!m) {
      break;
    }
    after = m->first == "devices/device-1/after";
    if (m->first == "devices/device-1/offline") {
      got.push_back(m->second);
    }
  }
  EXPECT_TRUE(after);
  for (std::size_t i = 1; i < got.size(); ++i) {
    EXPECT_LT(std::stoi(got[i - 1]), std::stoi(got[i])) << "out of order";
  }
  session.stop(2s);
}

TEST_F(MqttSessionTest, PublishesBeforeTheFirstConnectReachAnotherSubscriberInOrder) {
  auto port = test::free_port();
  ASSERT_TRUE(port) << port.error().message();
  Settings s;
  s.host = "127.0.0.1";
  s.port = *port;
  s.plain_tcp = true;
  s.client_id = "device-1";
  s.reconnect_min = 200ms;
  s.reconnect_max = 500ms;
  s.subscriptions = {"devices/device-1/#"};
  Recorder rec;
  Session session(s, rec.callbacks());
  ASSERT_TRUE(session.start());
  ASSERT_TRUE(rec.wait_disconnected(1, 20s));
  // No broker yet: kept by the client and sent, in order, once connected.
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(session.publish("updates/device-1", std::to_string(i)));
  }
  test::MosquittoOptions options;
  options.port = *port;
  auto broker = Mosquitto::start(options);
  ASSERT_TRUE(broker) << broker.error().message();
  auto watcher = test::MqttTestClient::connect(broker->uri());
  ASSERT_TRUE(watcher) << watcher.error().message();
  ASSERT_TRUE(watcher->subscribe("updates/#"));
  // The watcher may subscribe after the session flushed: resend markers until seen.
  ASSERT_TRUE(rec.wait_subscribed(1, 20s));
  ASSERT_TRUE(session.publish("updates/device-1", "5"));
  std::vector<std::string> got;
  while (true) {
    auto m = watcher->wait_for_message(10s);
    if (!m) {
      break;
    }
    got.push_back(m->payload);
    if (m->payload == "5") {
      break;
    }
  }
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.back(), "5");
  for (std::size_t i = 1; i < got.size(); ++i) {
    EXPECT_LT(std::stoi(got[i - 1]), std::stoi(got[i])) << "out of order";
  }
  session.stop(2s);
}

}  // namespace
}  // namespace upparat::mqtt
