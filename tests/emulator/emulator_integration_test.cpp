// The emulator binary end to end: a real mosquitto, the emulator process, a Paho client as
// the device, libcurl against the S3 side (HTTPS with the fixture's CA), and the CLI.
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <algorithm>
#include <chrono>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "mqtt/tcp_nodelay.hpp"
#include "support/binaries.hpp"
#include "support/certificates.hpp"
#include "support/emulator_fixture.hpp"
#include "support/mosquitto.hpp"
#include "support/mqtt_client.hpp"
#include "support/net.hpp"
#include "support/process.hpp"
#include "support/result.hpp"
#include "support/temp_dir.hpp"

namespace upparat::test {
namespace {

using namespace std::chrono_literals;
const std::string T = "$aws/things/dev1/jobs";
const std::string kDoc =
    R"({"action":"update","version":"1.0","file":"${aws:iot:s3-presigned-url:https://s3.amazonaws.com/bkt/fw.bin}"})";

rapidjson::Document parse(const std::string& text) {
  rapidjson::Document d;
  d.Parse(text.c_str());
  EXPECT_FALSE(d.HasParseError()) << text;
  if (d.HasParseError()) {
    d.Parse("{}");
  }
  return d;
}

/// GETs a URL trusting only `ca`; returns the HTTP status and fills `body`.
long http_get(const std::string& url, const std::filesystem::path& ca, std::string& body) {
  auto answer = http_request("GET", url, "", ca);
  EXPECT_TRUE(answer) << (answer ? "" : answer.error().message());
  body = answer ? answer->body : "";
  return answer ? answer->status : 0;
}

class EmulatorIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    UPPARAT_SKIP_UNLESS_EXECUTABLE(kMosquittoPath);
    if (!is_executable(emulator_binary())) {
      UPPARAT_SKIP() << emulator_binary() << " is not built";
    }
    ca_.emplace(must(CertificateAuthority::create()));
    broker_.emplace(must(Mosquitto::start()));
    EmulatorOptions options;
    options.broker_uri = broker_->uri();
    options.ca = &*ca_;
    emulator_.emplace(must(EmulatorFixture::start(options)));
    MqttClientOptions client_options;
    client_options.uri = broker_->uri();
    client_options.client_id = "dev1";
    device_.emplace(must(MqttTestClient::connect(client_options)));
    must(device_->subscribe(T + "/#", 1));
  }

  /// Publishes a request and returns the parsed answer on `reply_topic`.
  rapidjson::Document ask(const std::string& topic, const std::string& payload,
                          const std::string& reply_topic) {
    must(device_->publish(topic, payload, 1));
    auto msg = must(device_->wait_for_message(reply_topic, 10s), "waiting for " + reply_topic);
    return parse(msg.payload);
  }

  std::optional<CertificateAuthority> ca_;
  std::optional<Mosquitto> broker_;
  std::optional<EmulatorFixture> emulator_;
  std::optional<MqttTestClient> device_;
};

TEST_F(EmulatorIntegrationTest, RunsAJobThroughTheBrokerAndServesItsFile) {
  must(emulator_->put_object("bkt", "fw.bin", "firmware-bytes"));
  must(emulator_->create_job("upparat_1", kDoc, {"dev1"}));
  auto next = parse(must(device_->wait_for_message(T + "/notify-next", 10s)).payload);
  EXPECT_STREQ(next["execution"]["jobId"].GetString(), "upparat_1");
  auto notify = parse(must(device_->wait_for_message(T + "/notify", 10s)).payload);
  EXPECT_EQ(notify["jobs"]["QUEUED"].Size(), 1u);

  auto started =
      ask(T + "/start-next", R"({"clientToken":"c1","statusDetails":{"state":"download"}})",
          T + "/start-next/accepted");
  EXPECT_STREQ(started["clientToken"].GetString(), "c1");
  std::string url = started["execution"]["jobDocument"]["file"].GetString();
  EXPECT_EQ(url.rfind(emulator_->s3_endpoint() + "/bkt/fw.bin?", 0), 0u) << url;
  std::string body;
  EXPECT_EQ(http_get(url, ca_->ca_cert(), body), 200);
  EXPECT_EQ(body, "firmware-bytes");

  auto done = ask(T + "/upparat_1/update",
                  R"({"status":"SUCCEEDED","expectedVersion":2,"includeJobExecutionState":true})",
                  T + "/upparat_1/update/accepted");
  EXPECT_STREQ(done["executionState"]["status"].GetString(), "SUCCEEDED");
  auto empty_next = parse(must(device_->wait_for_message(T + "/notify-next", 10s)).payload);
  EXPECT_FALSE(empty_next.HasMember("execution"));

  auto history = parse(must(emulator_->describe("dev1", "upparat_1")));
  const auto& e = history["executions"][0];
  EXPECT_STREQ(e["status"].GetString(), "SUCCEEDED");
  EXPECT_EQ(e["history"].Size(), 3u);

  auto rejected =
      ask(T + "/upparat_1/update", R"({"status":"IN_PROGRESS"})", T + "/upparat_1/update/rejected");
  EXPECT_STREQ(rejected["code"].GetString(), "InvalidStateTransition");
  EXPECT_STREQ(rejected["executionState"]["status"].GetString(), "SUCCEEDED");
}

TEST_F(EmulatorIntegrationTest, EveryFetchSignsAFreshUrlThatExpires) {
  must(emulator_->put_object("bkt", "fw.bin", "abc"));
  must(emulator_->create_job("upparat_2", kDoc, {"dev1"}, std::nullopt, 60));
  auto first = ask(T + "/upparat_2/get", "", T + "/upparat_2/get/accepted");
  std::string url1 = first["execution"]["jobDocument"]["file"].GetString();
  must(emulator_->advance_clock(2s));
  auto second = ask(T + "/upparat_2/get", "{}", T + "/upparat_2/get/accepted");
  std::string url2 = second["execution"]["jobDocument"]["file"].GetString();
  EXPECT_NE(url1, url2);
  std::string body;
  EXPECT_EQ(http_get(url1, ca_->ca_cert(), body), 200);
  must(emulator_->advance_clock(120s));
  EXPECT_EQ(http_get(url1, ca_->ca_cert(), body), 403);
  EXPECT_EQ(http_get(url2, ca_->ca_cert(), body), 403);
  auto third = ask(T + "/upparat_2/get", "{}", T + "/upparat_2/get/accepted");
  EXPECT_EQ(http_get(third["execution"]["jobDocument"]["file"].GetString(), ca_->ca_cert(), body),
            200);
  EXPECT_EQ(body, "abc");
}

TEST_F(EmulatorIntegrationTest, PayloadOverTheMqttLimitGetsNoAnswer) {
  // AWS's broker refuses a publish over 128 KiB: the Jobs service never answers it.
  std::string head = R"({"clientToken":"big","pad":")";
  std::string big = head + std::string(128 * 1024 + 1 - head.size() - 2, 'x') + "\"}";
  ASSERT_EQ(big.size(), 128u * 1024 + 1);
  must(device_->publish(T + "/get", big, 1));
  EXPECT_FALSE(device_->wait_for_message(T + "/get/accepted", 1500ms)) << "no answer expected";
  EXPECT_FALSE(device_->wait_for_message(T + "/get/rejected", 100ms)) << "no answer expected";
  // The emulator still serves the next request.
  auto d = ask(T + "/get", R"({"clientToken":"small"})", T + "/get/accepted");
  EXPECT_STREQ(d["clientToken"].GetString(), "small");
}

TEST_F(EmulatorIntegrationTest, ClockAdvanceFiresStepTimeout) {
  must(emulator_->create_job("upparat_3", R"({"a":1})", {"dev1"}));
  (void)must(device_->wait_for_message(T + "/notify-next", 10s));  // notify came before it
  device_->take_all();
  (void)ask(T + "/start-next", R"({"stepTimeoutInMinutes":1})", T + "/start-next/accepted");
  auto started =
      parse(must(device_->wait_for_message(T + "/notify", 10s)).payload);  // QUEUED -> IN_PROGRESS
  EXPECT_EQ(started["jobs"]["IN_PROGRESS"].Size(), 1u);
  must(emulator_->advance_clock(61s));
  auto notify = parse(must(device_->wait_for_message(T + "/notify", 10s)).payload);
  EXPECT_EQ(notify["jobs"].MemberCount(), 0u);
  auto d = ask(T + "/upparat_3/get", "{}", T + "/upparat_3/get/accepted");
  EXPECT_STREQ(d["execution"]["status"].GetString(), "TIMED_OUT");
}

TEST_F(EmulatorIntegrationTest, CancelAndDeleteNotifyTheDevice) {
  must(emulator_->create_job("upparat_4", R"({"a":1})", {"dev1"}));
  (void)must(device_->wait_for_message(T + "/notify-next", 10s));  // notify came before it
  device_->take_all();
  (void)ask(T + "/start-next", "{}", T + "/start-next/accepted");
  (void)must(device_->wait_for_message(T + "/notify", 10s));  // QUEUED -> IN_PROGRESS
  must(emulator_->cancel_job("upparat_4", true));
  auto notify = parse(must(device_->wait_for_message(T + "/notify", 10s)).payload);
  EXPECT_EQ(notify["jobs"].MemberCount(), 0u);
  auto next = parse(must(device_->wait_for_message(T + "/notify-next", 10s)).payload);
  EXPECT_FALSE(next.HasMember("execution"));
  EXPECT_FALSE(emulator_->delete_execution("dev1", "nope", true));
  must(emulator_->delete_execution("dev1", "upparat_4"));
  auto r = ask(T + "/upparat_4/get", "{}", T + "/upparat_4/get/rejected");
  EXPECT_STREQ(r["code"].GetString(), "ResourceNotFound");
}

TEST_F(EmulatorIntegrationTest, FaultKnobsActOnTheWire) {
  must(emulator_->create_job("upparat_5", R"({"a":1})", {"dev1"}));
  device_->take_all();
  must(emulator_->set_faults(
      R"({"responses":{"drop":1},"rejectUpdates":{"count":1,"code":"RequestThrottled"}})"));
  must(device_->publish(T + "/get", "{}", 1));
  EXPECT_FALSE(device_->wait_for_message(T + "/get/accepted", 1500ms))
      << "the response should be dropped";
  (void)ask(T + "/get", "{}", T + "/get/accepted");
  auto r =
      ask(T + "/upparat_5/update", R"({"status":"IN_PROGRESS"})", T + "/upparat_5/update/rejected");
  EXPECT_STREQ(r["code"].GetString(), "RequestThrottled");
  (void)ask(T + "/upparat_5/update", R"({"status":"IN_PROGRESS"})",
            T + "/upparat_5/update/accepted");
  // Duplicated and delayed responses.
  must(emulator_->set_faults(R"({"responses":{"duplicate":1,"delayMs":300}})"));
  auto sent = std::chrono::steady_clock::now();
  (void)ask(T + "/get", "{}", T + "/get/accepted");
  EXPECT_GE(std::chrono::steady_clock::now() - sent, 250ms);
  (void)must(device_->wait_for_message(T + "/get/accepted", 10s), "the duplicate");
  // An S3 fault through the control channel: one 503, then the object.
  must(emulator_->put_object("bkt", "fw.bin", "xyz"));
  must(emulator_->add_s3_fault("bkt", "fw.bin", R"("errorStatus":503,"times":1)"));
  std::string body;
  auto url = must(emulator_->presign("bkt", "fw.bin"));
  EXPECT_EQ(http_get(url, ca_->ca_cert(), body), 503);
  EXPECT_EQ(http_get(url, ca_->ca_cert(), body), 200);
  EXPECT_EQ(body, "xyz");
  EXPECT_FALSE(emulator_->add_s3_fault("bkt", "fw.bin", R"("errorStatus":200)"));
  auto stats = parse(must(emulator_->request("GET", "/s3/stats?bucket=bkt&key=fw.bin")));
  EXPECT_EQ(stats["getRequests"].GetInt(), 2);
  must(emulator_->clear_faults());
  auto faults = parse(must(emulator_->request("GET", "/faults")));
  EXPECT_EQ(faults["responses"]["delayMs"].GetInt(), 0);
}

TEST_F(EmulatorIntegrationTest, CliActsOnARunningEmulator) {
  auto dir = must(TempDir::create("emucli"));
  auto doc = must(dir.write_file("doc.json", R"({"action":"update","version":"2"})"));
  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.begin(), emulator_binary().string());
    args.insert(args.end(), {"--control", emulator_->control_url()});
    return must(run_process(args));
  };
  auto out = cli({"create-job", "--job-id", "upparat_cli", "--document", doc.string(), "--thing",
                  "dev1", "--thing", "dev2"});
  EXPECT_TRUE(out.status.success()) << out.output;
  out = cli({"list-jobs"});
  EXPECT_NE(out.output.find("upparat_cli"), std::string::npos) << out.output;
  EXPECT_NE(out.output.find("QUEUED=2"), std::string::npos) << out.output;
  out = cli({"advance-clock", "--minutes", "2"});
  EXPECT_TRUE(out.status.success()) << out.output;
  out = cli({"cancel-job", "--job-id", "upparat_cli"});
  EXPECT_TRUE(out.status.success()) << out.output;
  out = cli({"describe", "--thing", "dev2"});
  EXPECT_TRUE(std::regex_search(out.output, std::regex("dev2 +upparat_cli +CANCELED")))
      << out.output;
  EXPECT_NE(out.output.find("cancel"), std::string::npos);
  out = cli({"cancel-job", "--job-id", "missing"});
  EXPECT_FALSE(out.status.success());
  EXPECT_NE(out.output.find("no job missing"), std::string::npos) << out.output;
  out = cli({"create-job", "--job-id", "bad id", "--document", doc.string(), "--thing", "dev1"});
  EXPECT_FALSE(out.status.success());
  out = cli({"frobnicate"});
  EXPECT_EQ(out.status.exit_code, 2);
  out = cli({"set-fault", "jobs", "--throttle-updates", "2", "--delay-notifications-ms", "50"});
  EXPECT_TRUE(out.status.success()) << out.output;
  auto faults = parse(must(emulator_->request("GET", "/faults")));
  EXPECT_EQ(faults["rejectUpdates"]["count"].GetInt(), 2);
  EXPECT_EQ(faults["notifications"]["delayMs"].GetInt(), 50);
  out = cli({"clear-faults"});
  EXPECT_TRUE(out.status.success()) << out.output;
  out = cli({"delete-execution", "--thing", "dev1", "--job-id", "upparat_cli"});
  EXPECT_TRUE(out.status.success()) << out.output;
  out = cli({"describe", "--thing", "dev1", "--json"});
  EXPECT_NE(out.output.find("\"deleted\":true"), std::string::npos) << out.output;
  auto file = must(dir.write_file("fw.bin", "0123456789"));
  out = cli({"put-object", "--bucket", "b", "--key", "k", "--file", file.string()});
  EXPECT_TRUE(out.status.success()) << out.output;
  std::string body;
  EXPECT_EQ(http_get(must(emulator_->presign("b", "k")), ca_->ca_cert(), body), 200);
  EXPECT_EQ(body, "0123456789");
}

// A job created by the CLI with --retry: its failed execution is followed by execution 2, and
// the earlier one stays describable by number.
TEST_F(EmulatorIntegrationTest, CliRetryQueuesTheNextExecution) {
  auto dir = must(TempDir::create("emuretry"));
  auto doc = must(dir.write_file("doc.json", R"({"action":"update","version":"2"})"));
  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.begin(), emulator_binary().string());
    args.insert(args.end(), {"--control", emulator_->control_url()});
    return must(run_process(args));
  };
  auto out = cli({"create-job", "--job-id", "upparat_retry", "--document", doc.string(), "--thing",
                  "dev1", "--retry", "FAILED:1", "--json"});
  ASSERT_TRUE(out.status.success()) << out.output;
  EXPECT_NE(out.output.find(R"("failureType":"FAILED","numberOfRetries":1)"), std::string::npos)
      << out.output;
  out = cli({"create-job", "--job-id", "upparat_bad_retry", "--document", doc.string(), "--thing",
             "dev1", "--retry", "FAILED"});
  EXPECT_EQ(out.status.exit_code, 2) << out.output;
  out = cli({"create-job", "--job-id", "upparat_bad_retry", "--document", doc.string(), "--thing",
             "dev1", "--retry", "SOMETIMES:1"});
  EXPECT_EQ(out.status.exit_code, 1) << out.output;
  EXPECT_NE(out.output.find("failureType"), std::string::npos) << out.output;
  device_->take_all();
  (void)ask(T + "/upparat_retry/update", R"({"status":"FAILED"})",
            T + "/upparat_retry/update/accepted");
  auto notify = parse(must(device_->wait_for_message(T + "/notify", 10s)).payload);
  ASSERT_TRUE(notify["jobs"].HasMember("QUEUED")) << "the retry is announced";
  EXPECT_EQ(notify["jobs"]["QUEUED"][0]["executionNumber"].GetInt64(), 2);
  auto d =
      ask(T + "/upparat_retry/get", R"({"executionNumber":1})", T + "/upparat_retry/get/accepted");
  EXPECT_STREQ(d["execution"]["status"].GetString(), "FAILED");
  out = cli({"describe", "--thing", "dev1", "--json"});
  EXPECT_NE(out.output.find(R"("cause":"retry")"), std::string::npos) << out.output;
}

TEST(EmulatorProcessTest, StatePersistsAcrossRestart) {
  UPPARAT_SKIP_UNLESS_EXECUTABLE(kMosquittoPath);
  if (!is_executable(emulator_binary())) {
    UPPARAT_SKIP() << emulator_binary() << " is not built";
  }
  auto broker = must(Mosquitto::start());
  auto dir = must(TempDir::create("emustate"));
  EmulatorOptions options;
  options.broker_uri = broker.uri();
  options.state_file = dir / "state.json";
  {
    auto emulator = must(EmulatorFixture::start(options));
    must(emulator.create_job("upparat_keep", R"({"a":1})", {"dev1"}));
    must(emulator.advance_clock(600s));
    auto status = must(emulator.stop());
    EXPECT_TRUE(status.success()) << status.describe();
  }
  auto emulator = must(EmulatorFixture::start(options));
  auto jobs = parse(must(emulator.list_jobs()));
  ASSERT_EQ(jobs["jobs"].Size(), 1u);
  EXPECT_STREQ(jobs["jobs"][0]["jobId"].GetString(), "upparat_keep");
  auto clock = parse(must(emulator.request("GET", "/clock")));
  auto real_now = std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  EXPECT_GE(clock["now"].GetInt64(), real_now + 590);
}

// The emulator acknowledges each request (PUBACK) and publishes its answer right after: with
// TCP_NODELAY on its broker connection the answer goes out at once, as AWS answers, instead of
// waiting about 40 ms for the broker's delayed ACK of the PUBACK. The device and the broker
// set TCP_NODELAY too, so only the emulator's side can hold a round trip back.
TEST(EmulatorProcessTest, AnswersWithoutWaitingForTheBrokersDelayedAck) {
  UPPARAT_SKIP_UNLESS_EXECUTABLE(kMosquittoPath);
  if (!is_executable(emulator_binary())) {
    UPPARAT_SKIP() << emulator_binary() << " is not built";
  }
  MosquittoOptions broker_options;
  broker_options.extra_config = "set_tcp_nodelay true\n";
  auto broker = must(Mosquitto::start(broker_options));
  EmulatorOptions options;
  options.broker_uri = broker.uri();
  auto emulator = must(EmulatorFixture::start(options));
  MqttClientOptions client_options;
  client_options.uri = broker.uri();
  client_options.client_id = "dev1";
  auto device = must(MqttTestClient::connect(client_options));
  ASSERT_EQ(upparat::mqtt::set_nodelay_to_peer_port(broker.port()), 1);
  must(device.subscribe(T + "/get/accepted", 1));
  std::vector<double> round_trips;
  for (int i = 0; i < 11; ++i) {
    const auto start = std::chrono::steady_clock::now();
    must(device.publish(T + "/get", "{}", 1));
    must(device.wait_for_message(T + "/get/accepted", 10s));
    round_trips.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
            .count());
  }
  std::sort(round_trips.begin(), round_trips.end());
  // Without TCP_NODELAY every round trip takes 40 ms or more.
  EXPECT_LT(round_trips[round_trips.size() / 2], 20.0);
}

// A job created for many things at once notifies each of them (notify and notify-next): the
// emulator queues the burst instead of dropping what does not fit Paho's default queue of 100.
TEST_F(EmulatorIntegrationTest, JobForManyThingsNotifiesEveryOne) {
  constexpr int kThings = 150;
  must(device_->subscribe("$aws/things/+/jobs/notify-next", 1));
  std::vector<std::string> things;
  for (int i = 0; i < kThings; ++i) {
    things.push_back("many-" + std::to_string(i));
  }
  must(emulator_->create_job("upparat_many", kDoc, things));
  std::set<std::string> notified;
  while (notified.size() < things.size()) {
    auto m = device_->wait_for_message(10s);
    if (!m) {
      break;
    }
    if (m->topic.rfind("$aws/things/many-", 0) == 0) {
      notified.insert(m->topic);
    }
  }
  EXPECT_EQ(notified.size(), things.size());
}

TEST(EmulatorProcessTest, BadCommandLinesAndUnreachableBrokerFailClearly) {
  if (!is_executable(emulator_binary())) {
    UPPARAT_SKIP() << emulator_binary() << " is not built";
  }
  const std::string closed = "127.0.0.1:" + std::to_string(must(free_port()));
  auto out = must(run_process({emulator_binary().string(), "serve"}));
  EXPECT_EQ(out.status.exit_code, 2);
  EXPECT_NE(out.output.find("--broker"), std::string::npos) << out.output;
  out = must(run_process(
      {emulator_binary().string(), "serve", "--broker", "tcp://" + closed, "--url-expiry", "5"}));
  EXPECT_EQ(out.status.exit_code, 2) << out.output;
  out = must(run_process(
      {emulator_binary().string(), "serve", "--broker", "tcp://" + closed, "--s3-http"}));
  EXPECT_EQ(out.status.exit_code, 1) << out.output;
  EXPECT_NE(out.output.find("MQTT broker"), std::string::npos) << out.output;
  out =
      must(run_process({emulator_binary().string(), "list-jobs", "--control", "http://" + closed}));
  EXPECT_EQ(out.status.exit_code, 1) << out.output;
  EXPECT_NE(out.output.find("cannot reach"), std::string::npos) << out.output;
}

}  // namespace
}  // namespace upparat::test
