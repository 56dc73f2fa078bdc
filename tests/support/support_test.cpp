// Self-tests of the test-support library: each fixture really starts, is reachable, and
// leaves no process or file behind.

#include <curl/curl.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <regex>
#include <set>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "support/binaries.hpp"
#include "support/certificates.hpp"
#include "support/mosquitto.hpp"
#include "support/mqtt_client.hpp"
#include "support/net.hpp"
#include "support/nginx.hpp"
#include "support/openssl_server.hpp"
#include "support/process.hpp"
#include "support/result.hpp"
#include "support/temp_dir.hpp"

namespace upparat::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

bool process_gone(pid_t pid) {
  return wait_process_gone(pid);
}

ProcessOptions shell(const std::string& script) {
  ProcessOptions options;
  options.argv = {"/bin/sh", "-c", script};
  options.name = "sh";
  return options;
}

// ---- TempDir, free_port ----------------------------------------------------------------

TEST(TempDirTest, IsCreatedPrivateAndRemovedWithItsContent) {
  fs::path path;
  {
    auto dir = must(TempDir::create("selftest"));
    path = dir.path();
    EXPECT_TRUE(fs::is_directory(path));
    EXPECT_EQ(fs::status(path).permissions() & fs::perms::all, fs::perms::owner_all);
    auto file = must(dir.write_file("a/b/c.txt", "hello"));
    EXPECT_EQ(must(read_file(file)), "hello");
    TempDir moved = std::move(dir);
    EXPECT_EQ(moved.path(), path);
    EXPECT_TRUE(dir.path().empty());
  }
  EXPECT_FALSE(fs::exists(path));
}

TEST(FreePortTest, GivesDistinctPortsAwayFromWellKnownOnes) {
  std::set<std::uint16_t> ports;
  for (int i = 0; i < 20; ++i) {
    auto port = must(free_port());
    EXPECT_NE(port, 0);
    EXPECT_NE(port, 80);
    EXPECT_NE(port, 443);
    EXPECT_NE(port, 1883);
    EXPECT_NE(port, 8883);
    EXPECT_FALSE(port_accepts(port));
    EXPECT_TRUE(ports.insert(port).second) << "port " << port << " handed out twice";
  }
  EXPECT_FALSE(wait_for_port(must(free_port()), 100ms).has_value());
}

// ---- ServiceProcess --------------------------------------------------------------------

TEST(ServiceProcessTest, WaitsForALineAndStopsTheWholeGroup) {
  pid_t pid = -1;
  pid_t child = -1;
  fs::path log_dir;
  {
    auto process =
        must(ServiceProcess::start(shell("sleep 60 & echo \"child $!\"; echo ready; wait")));
    pid = process.pid();
    log_dir = process.log_path().parent_path();
    EXPECT_EQ(::getpgid(pid), pid) << "the child leads its own process group";
    auto line = must(process.wait_for_line(std::regex("^child ([0-9]+)$"), 10s));
    child = std::stoi(line.substr(6));
    EXPECT_EQ(must(process.wait_for_line("ready", 10s)), "ready");
    EXPECT_TRUE(process.running());
    EXPECT_TRUE(process_alive(child));
  }
  EXPECT_TRUE(process_gone(pid));
  EXPECT_TRUE(process_gone(child)) << "the background child was left running";
  EXPECT_FALSE(fs::exists(log_dir));
}

TEST(ServiceProcessTest, SigkillsAProcessThatIgnoresSigterm) {
  ProcessOptions options = shell("trap '' TERM; echo ready; while :; do sleep 0.1; done");
  options.stop_grace = 300ms;
  auto process = must(ServiceProcess::start(options));
  must(process.wait_for_line("ready", 10s));
  const auto begin = std::chrono::steady_clock::now();
  auto status = must(process.stop());
  EXPECT_TRUE(status.signaled);
  EXPECT_EQ(status.signal, SIGKILL) << status.describe();
  EXPECT_LT(std::chrono::steady_clock::now() - begin, 20s);
  EXPECT_FALSE(process.running());
  EXPECT_TRUE(process_gone(process.pid()));
}

TEST(ServiceProcessTest, WaitForLineFailsAsSoonAsTheProcessExits) {
  auto process = must(ServiceProcess::start(shell("echo starting; echo oops >&2; exit 3")));
  const auto begin = std::chrono::steady_clock::now();
  auto line = process.wait_for_line("ready", 60s);
  ASSERT_FALSE(line.has_value());
  EXPECT_LT(std::chrono::steady_clock::now() - begin, 30s);
  EXPECT_NE(line.error().message().find("exit code 3"), std::string::npos)
      << line.error().message();
  EXPECT_NE(line.error().message().find("oops"), std::string::npos) << "quotes the log";
  EXPECT_EQ(process.exit_status()->exit_code, 3);
  EXPECT_EQ(process.log_text(), "starting\noops\n");
}

TEST(ServiceProcessTest, WaitForLineTimesOutAndHonoursTheOffset) {
  auto process = must(ServiceProcess::start(shell("echo one; read x; sleep 60")));
  must(process.wait_for_line("one", 10s));
  const std::size_t offset = process.log_offset();
  EXPECT_EQ(offset, 4u);
  auto again = process.wait_for_line("one", 200ms, offset);
  ASSERT_FALSE(again.has_value());
  EXPECT_NE(again.error().message().find("within 200 ms"), std::string::npos)
      << again.error().message();
  EXPECT_TRUE(process.running()) << "stdin is /dev/null, so read returns at once";
}

TEST(ServiceProcessTest, ChildGetsCleanSignalsNullStdinAndNoInheritedDescriptors) {
  // A blocked and an ignored signal in the test process must not reach the child.
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR2);
  sigset_t old_mask;
  ASSERT_EQ(::pthread_sigmask(SIG_BLOCK, &block, &old_mask), 0);
  auto old_handler = std::signal(SIGUSR1, SIG_IGN);
  int leaked = ::open("/dev/null", O_RDONLY);  // no O_CLOEXEC
  ASSERT_GE(leaked, 0);

  auto status = run_process({"/bin/sh", "-c",
                             "grep -E '^Sig(Blk|Ign)' /proc/self/status; "
                             "readlink /proc/self/fd/0; ls /proc/$$/fd"});

  ::close(leaked);
  std::signal(SIGUSR1, old_handler);
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);

  ASSERT_TRUE(status.has_value()) << status.error().message();
  const std::string& out = status->output;
  EXPECT_NE(out.find("SigBlk:\t0000000000000000"), std::string::npos) << out;
  // glibc keeps its two internal real-time signals (32, 33) ignored; SIGUSR1 must not be.
  auto ignored = out.find("SigIgn:\t");
  ASSERT_NE(ignored, std::string::npos) << out;
  const unsigned long long ignored_mask = std::stoull(out.substr(ignored + 8, 16), nullptr, 16);
  EXPECT_EQ(ignored_mask & (1ULL << (SIGUSR1 - 1)), 0u) << out;
  EXPECT_EQ(ignored_mask & ((1ULL << 31) - 1), 0u) << "no standard signal ignored:\n" << out;
  EXPECT_NE(out.find("/dev/null\n"), std::string::npos) << out;
  // The shell's own fds: 0, 1, 2, and at most one it opened itself (e.g. for the script).
  EXPECT_EQ(out.find("\n" + std::to_string(leaked) + "\n"), std::string::npos)
      << "fd " << leaked << " leaked into the child:\n"
      << out;
}

TEST(ServiceProcessTest, RunProcessReportsExitCodesAndBadPrograms) {
  EXPECT_TRUE(must(run_process({"true"})).status.success());
  EXPECT_EQ(must(run_process({"false"})).status.exit_code, 1);
  EXPECT_FALSE(run_process({"/nonexistent/program"}).has_value());
  auto slow = run_process({"sleep", "30"}, 200ms);
  ASSERT_FALSE(slow.has_value());
  EXPECT_NE(slow.error().message().find("still runs"), std::string::npos) << slow.error().message();
  EXPECT_FALSE(ServiceProcess::start(ProcessOptions{}).has_value());
}

TEST(ServiceProcessTest, Kill9AndEnvironment) {
  ProcessOptions options = shell("echo \"value=$UPPARAT_X home=${HOME:-unset}\"; sleep 60");
  options.env = {{"UPPARAT_X", "42"}};
  options.unset_env = {"HOME"};
  auto process = must(ServiceProcess::start(options));
  EXPECT_EQ(must(process.wait_for_line("value=", 10s)), "value=42 home=unset");
  auto status = process.kill9();
  EXPECT_TRUE(status.signaled);
  EXPECT_EQ(status.signal, SIGKILL);
  EXPECT_TRUE(process_gone(process.pid()));
  EXPECT_FALSE(process.send_signal(SIGTERM).has_value());
}

// ---- CertificateAuthority --------------------------------------------------------------

TEST(CertificateAuthorityTest, IssuesVerifiableServerAndClientCertificates) {
  UPPARAT_SKIP_UNLESS_EXECUTABLE(kOpensslPath);
  fs::path dir;
  {
    auto ca = must(CertificateAuthority::create());
    dir = ca.dir();
    auto client = must(ca.issue_client("thing-1"));
    EXPECT_EQ(client.cert.filename(), "thing-1.pem");
    auto verify = must(run_process({kOpensslPath, "verify", "-CAfile", ca.ca_cert().string(),
                                    ca.server().cert.string(), client.cert.string()}));
    EXPECT_TRUE(verify.status.success()) << verify.output;
    auto server = must(run_process({kOpensslPath, "x509", "-in", ca.server().cert.string(),
                                    "-noout", "-ext", "subjectAltName,extendedKeyUsage"}));
    EXPECT_NE(server.output.find("DNS:localhost"), std::string::npos) << server.output;
    EXPECT_NE(server.output.find("IP Address:127.0.0.1"), std::string::npos) << server.output;
    EXPECT_NE(server.output.find("TLS Web Server Authentication"), std::string::npos);
    auto subject = must(
        run_process({kOpensslPath, "x509", "-in", client.cert.string(), "-noout", "-subject"}));
    EXPECT_NE(subject.output.find("CN = thing-1"), std::string::npos) << subject.output;

    CertificateRequest expired;
    expired.common_name = "old";
    expired.not_before = -std::chrono::hours(48);
    expired.not_after = -std::chrono::hours(24);
    auto old = must(ca.issue(expired));
    auto check = must(
        run_process({kOpensslPath, "verify", "-CAfile", ca.ca_cert().string(), old.cert.string()}));
    EXPECT_FALSE(check.status.success());
    EXPECT_NE(check.output.find("expired"), std::string::npos) << check.output;
  }
  EXPECT_FALSE(fs::exists(dir));
}

// ---- Mosquitto -------------------------------------------------------------------------

void round_trip(MqttTestClient& client, const std::string& topic) {
  UPPARAT_ASSERT_OK(client.subscribe(topic, 1));
  UPPARAT_ASSERT_OK(client.publish(topic, "payload-" + topic, 1));
  auto message = client.wait_for_message(topic, 10s);
  ASSERT_TRUE(message.has_value()) << message.error().message();
  EXPECT_EQ(message->payload, "payload-" + topic);
}

TEST(MosquittoTest, PlainBrokerRoundTripRestartAndCleanup) {
  UPPARAT_SKIP_UNLESS_EXECUTABLE(kMosquittoPath);
  pid_t first_pid = -1;
  pid_t second_pid = -1;
  fs::path dir;
  {
    auto broker = must(Mosquitto::start());
    dir = broker.dir();
    first_pid = broker.process().pid();
    EXPECT_EQ(broker.uri(), "tcp://127.0.0.1:" + std::to_string(broker.port()));
    auto client = must(MqttTestClient::connect(broker.uri()));
    round_trip(client, "upparat/test/plain");

    UPPARAT_ASSERT_OK(broker.restart());
    second_pid = broker.process().pid();
    EXPECT_NE(first_pid, second_pid);
    EXPECT_TRUE(process_gone(first_pid));
    for (int i = 0; i < 100 && client.connected(); ++i) {
      std::this_thread::sleep_for(50ms);
    }
    EXPECT_FALSE(client.connected()) << "the restart dropped the client";
    auto again = must(MqttTestClient::connect(broker.uri()));
    round_trip(again, "upparat/test/after-restart");

    UPPARAT_ASSERT_OK(broker.stop());
    EXPECT_FALSE(broker.running());
    EXPECT_FALSE(MqttTestClient::connect(broker.uri()).has_value());
  }
  EXPECT_TRUE(process_gone(second_pid));
  EXPECT_FALSE(fs::exists(dir));
}

TEST(MosquittoTest, PersistenceKeepsRetainedMessagesAcrossRestart) {
  UPPARAT_SKIP_UNLESS_EXECUTABLE(kMosquittoPath);
  MosquittoOptions options;
  options.persistence = true;
  auto broker = must(Mosquitto::start(options));
  {
    auto client = must(MqttTestClient::connect(broker.uri()));
    UPPARAT_ASSERT_OK(client.publish("upparat/test/retained", "kept", 1, true));
  }
  must(broker.restart(), "restart");
  auto client = must(MqttTestClient::connect(broker.uri()));
  UPPARAT_ASSERT_OK(client.subscribe("upparat/test/retained"));
  auto message = client.wait_for_message("upparat/test/retained", 10s);
  ASSERT_TRUE(message.has_value()) << message.error().message();
  EXPECT_EQ(message->payload, "kept");
  EXPECT_TRUE(message->retained);
}

TEST(MosquittoTest, MutualTlsBrokerAcceptsOnlyClientsWithACertificate) {
  UPPARAT_SKIP_UNLESS_EXECUTABLE(kMosquittoPath);
  pid_t pid = -1;
  fs::path dir;
  {
    auto ca = must(CertificateAuthority::create());
    auto thing = must(ca.issue_client("thing-1"));
    MosquittoOptions broker_options;
    broker_options.tls = &ca;
    broker_options.plain_listener_too = true;
    auto broker = must(Mosquitto::start(broker_options));
    pid = broker.process().pid();
    dir = broker.dir();
    EXPECT_EQ(broker.uri(), "ssl://127.0.0.1:" + std::to_string(broker.port()));

    MqttClientOptions options;
    options.uri = broker.uri();
    options.ca_cert = ca.ca_cert();
    options.cert = thing.cert;
    options.key = thing.key;
    auto client = MqttTestClient::connect(options);
    ASSERT_TRUE(client.has_value()) << client.error().message() << "\n"
                                    << broker.process().log_tail();
    round_trip(*client, "upparat/test/mtls");

    // The plain listener reaches the same broker.
    ASSERT_NE(broker.plain_port(), 0);
    auto observer = must(MqttTestClient::connect(broker.plain_uri()));
    UPPARAT_ASSERT_OK(observer.subscribe("upparat/test/both"));
    UPPARAT_ASSERT_OK(client->publish("upparat/test/both", "across"));
    EXPECT_EQ(must(observer.wait_for_message("upparat/test/both", 10s)).payload, "across");

    MqttClientOptions anonymous = options;
    anonymous.cert.clear();
    anonymous.key.clear();
    anonymous.timeout = 1s;  // with TLS 1.3 the refusal comes after the handshake
    EXPECT_FALSE(MqttTestClient::connect(anonymous).has_value());

    auto stranger_ca = must(CertificateAuthority::create("Another CA"));
    auto stranger = must(stranger_ca.issue_client("thing-1"));
    MqttClientOptions foreign = options;
    foreign.cert = stranger.cert;
    foreign.key = stranger.key;
    foreign.timeout = 1s;
    EXPECT_FALSE(MqttTestClient::connect(foreign).has_value());
  }
  EXPECT_TRUE(process_gone(pid));
  EXPECT_FALSE(fs::exists(dir));
}

// ---- Nginx -----------------------------------------------------------------------------

struct CurlResult {
  long status = 0;
  std::string body;
  std::string error;
};

std::size_t append_body(char* data, std::size_t size, std::size_t count, void* out) {
  static_cast<std::string*>(out)->append(data, size * count);
  return size * count;
}

CurlResult curl_get(const std::string& url, const fs::path& ca = {}, const char* range = nullptr) {
  CurlResult result;
  CURL* curl = curl_easy_init();
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, append_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &result.body);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, 20L);
  curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
  if (!ca.empty()) {
    curl_easy_setopt(curl, CURLOPT_CAINFO, ca.c_str());
  }
  if (range != nullptr) {
    curl_easy_setopt(curl, CURLOPT_RANGE, range);
  }
  CURLcode code = curl_easy_perform(curl);
  if (code != CURLE_OK) {
    result.error = curl_easy_strerror(code);
  }
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &result.status);
  curl_easy_cleanup(curl);
  return result;
}

TEST(NginxTest, ServesFilesOverHttpAndHttpsAndCleansUp) {
  UPPARAT_SKIP_UNLESS_EXECUTABLE(kNginxPath);
  pid_t pid = -1;
  fs::path dir;
  {
    auto ca = must(CertificateAuthority::create());
    NginxOptions options;
    options.tls = &ca;
    auto server = must(Nginx::start(options));
    pid = server.process().pid();
    dir = server.dir();
    must(server.put_file("files/update.bin", "0123456789"));

    auto plain = curl_get(server.http_url("files/update.bin"));
    EXPECT_EQ(plain.error, "");
    EXPECT_EQ(plain.status, 200);
    EXPECT_EQ(plain.body, "0123456789");

    EXPECT_EQ(server.url("/x"), server.https_url("/x"));
    auto secure = curl_get(server.https_url("/files/update.bin"), ca.ca_cert(), "2-5");
    EXPECT_EQ(secure.error, "");
    EXPECT_EQ(secure.status, 206);
    EXPECT_EQ(secure.body, "2345");

    auto missing = curl_get(server.http_url("nothing"));
    EXPECT_EQ(missing.status, 404);

    auto untrusted = curl_get(server.https_url("/files/update.bin"));  // system CAs only
    EXPECT_NE(untrusted.error, "") << "the test CA must not be trusted by default";

    const std::string log = server.access_log();
    EXPECT_NE(log.find("GET /files/update.bin 206 4 range=bytes=2-5"), std::string::npos) << log;
  }
  EXPECT_TRUE(process_gone(pid));
  EXPECT_FALSE(fs::exists(dir));
}

// ---- OpensslServer ---------------------------------------------------------------------

TEST(OpensslServerTest, ReportsTheAlpnProtocolsAClientOffers) {
  UPPARAT_SKIP_UNLESS_EXECUTABLE(kOpensslPath);
  pid_t pid = -1;
  fs::path dir;
  {
    auto ca = must(CertificateAuthority::create());
    auto thing = must(ca.issue_client("thing-1"));
    auto server = must(OpensslServer::start(ca));
    pid = server.process().pid();
    dir = server.dir();

    // openssl s_client offering the protocol sees it negotiated.
    auto client = must(run_process(
        {kOpensslPath, "s_client", "-connect", "127.0.0.1:" + std::to_string(server.port()),
         "-alpn", "x-amzn-mqtt-ca", "-CAfile", ca.ca_cert().string(), "-cert", thing.cert.string(),
         "-key", thing.key.string(), "-verify_return_error"}));
    EXPECT_NE(client.output.find("ALPN protocol: x-amzn-mqtt-ca"), std::string::npos)
        << client.output;
    auto offered = must(server.wait_for_client_alpn(10s));
    EXPECT_EQ(offered, std::vector<std::string>{"x-amzn-mqtt-ca"});

    // A Paho client with ALPN set offers it too (its connect fails: s_server speaks no MQTT).
    const std::size_t offset = server.process().log_offset();
    MqttClientOptions options;
    options.uri = server.uri();
    options.ca_cert = ca.ca_cert();
    options.cert = thing.cert;
    options.key = thing.key;
    options.alpn = {"x-amzn-mqtt-ca"};
    options.timeout = 1s;
    EXPECT_FALSE(MqttTestClient::connect(options).has_value());
    auto line = server.process().wait_for_line("ALPN protocols advertised", 10s, offset);
    ASSERT_TRUE(line.has_value()) << line.error().message();
    EXPECT_NE(line->find("x-amzn-mqtt-ca"), std::string::npos) << *line;
  }
  EXPECT_TRUE(process_gone(pid));
  EXPECT_FALSE(fs::exists(dir));
}

}  // namespace
}  // namespace upparat::test
