// End to end: the daemon over mTLS, a pre-signed URL that expires mid-download, and two
// daemons with their own INI files side by side on one machine. Real daemon, script plugin,
// mosquitto and Jobs + S3 emulator.

#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "e2e_fixture.hpp"

namespace upparat::test {
namespace {

using namespace e2e;  // NOLINT(google-build-using-namespace)

class E2eTransportTest : public E2eFixture {};

TEST_F(E2eTransportTest, ExpiredUrlMidDownloadIsRenewed) {
  default_hooks();
  hooks_["restart"] = hook("restart", "exit 0");
  // The first GET stalls after 90 kB (while the test lets the URL expire), then the
  // connection closes at 100 kB: the resuming GET meets an expired URL (403).
  ASSERT_TRUE(emulator_->add_s3_fault(
      kBucket, kKey, R"("stallAfterBytes":90000,"stallMs":3000,"closeAfterBytes":100000)"));
  auto daemon = start_daemon(write_config(path("state")));
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_job("upparat_expiry", document("2.0.0", "2.0.0"), kThing, 60);
  ASSERT_TRUE(eventually([&] {
    std::error_code ec;
    auto size = fs::file_size(path("state/downloads/upparat_expiry.part"), ec);
    return (!ec && size > 0) || s3_body_bytes_sent() > 0;
  })) << daemon.log_tail();
  ASSERT_TRUE(emulator_->advance_clock(120s));
  auto v = wait_status("upparat_expiry", "SUCCEEDED", 90s);
  EXPECT_EQ(v.state, "complete_soft_restart") << join(v.states);
  EXPECT_TRUE(contains(v.states, "download_interrupt")) << join(v.states);
  EXPECT_EQ(read_text(path("installed.bin")), firmware_);
  EXPECT_EQ(installed_version(), "2.0.0");
}

TEST_F(E2eTransportTest, PahoTraceWhenAskedForWithItsOwnVariables) {
  // The daemon keeps Paho C's trace to errors (mqtt/session.cpp) unless the integrator asks
  // for it, as docs/daemon.md says, with Paho's own variables.
  default_hooks();
  auto trace = path("paho-trace.txt");
  auto daemon = start_daemon(
      write_config(path("state")), "upparat",
      {{"MQTT_C_CLIENT_TRACE", trace.string()}, {"MQTT_C_CLIENT_TRACE_LEVEL", "PROTOCOL"}});
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  ASSERT_TRUE(eventually([&] { return read_text(trace).find("SUBACK") != std::string::npos; }))
      << read_text(trace);
  EXPECT_NE(read_text(trace).find("CONNECT"), std::string::npos) << read_text(trace);
}

TEST_F(E2eTransportTest, TwoDaemonsWithTheirOwnIniFilesSideBySide) {
  const std::string job = "upparat_fleet";
  std::vector<ServiceProcess> daemons;
  for (const std::string name : {"a", "b"}) {
    const std::string d = dir_->path().string() + "/" + name;
    fs::create_directories(d);
    std::ofstream(d + "/installed_version") << "1.0.0\n";
    std::map<std::string, fs::path> hooks = {
        {"version", hook(name + "-version", "cat '" + d + "/installed_version'")},
        {"install",
         hook(name + "-install", "echo \"$4\" > '" + d + "/installed_from'\ncp \"$4\" '" + d +
                                     "/installed.bin' || exit 1\necho \"$3\" > '" + d +
                                     "/installed_version'")},
        {"restart", hook(name + "-restart", "exit 0")},
        {"ready", hook(name + "-ready", "exit 0")}};
    std::string ini = "[service]\nlog_level = debug\ndownload_location = " + d +
                      "/dl\n[broker]\nhost = 127.0.0.1\nport = " + std::to_string(broker_->port()) +
                      "\nthing_name = thing-" + name + "\n[hooks]\n";
    for (const auto& [step, p] : hooks) {
      ini += step + " = " + p.string() + "\n";
    }
    ini += "retry_interval = 1\nmax_retries = 2\n";
    auto file = path(name + ".ini");
    std::ofstream(file) << ini;
    ProcessOptions o;
    o.argv = {UPPARAT_DAEMON_BIN, "-c", file.string()};
    o.name = "upparat-" + name;
    o.log_path = path("upparat-" + name + ".log");
    o.env = {{"UPPARAT_PLUGIN_DIR", fs::path(UPPARAT_SCRIPT_PLUGIN).parent_path().string()}};
    logs_.push_back(o.log_path);
    auto daemon = ServiceProcess::start(o);
    ASSERT_TRUE(daemon) << daemon.error().message();
    daemons.push_back(std::move(*daemon));
  }
  for (auto& daemon : daemons) {
    ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  }
  // One job for both things, as a fleet rollout would be.
  auto created = emulator_->create_job(job, document("2.0.0", "2.0.0"), {"thing-a", "thing-b"});
  ASSERT_TRUE(created) << created.error().message();
  for (const std::string name : {"a", "b"}) {
    auto v = wait_status(job, "SUCCEEDED", 60s, "thing-" + name);
    EXPECT_EQ(v.state, "complete_soft_restart") << name << ": " << join(v.states);
    const fs::path d = dir_->path() / name;
    EXPECT_EQ(read_text(d / "installed_version"), "2.0.0\n") << name;
    EXPECT_EQ(read_text(d / "installed.bin"), firmware_) << name;
    // Its download and its state lived under its own <download_location>/upparat/.
    auto from = read_text(d / "installed_from");
    EXPECT_EQ(from.rfind((d / "dl" / "upparat").string() + "/", 0), 0u) << name << ": " << from;
    EXPECT_TRUE(fs::is_directory(d / "dl" / "upparat" / "state")) << name;
  }
  for (auto& daemon : daemons) {
    EXPECT_TRUE(daemon.running()) << daemon.log_tail();
    auto stopped = daemon.stop();
    ASSERT_TRUE(stopped);
    EXPECT_TRUE(stopped->success()) << stopped->describe() << "\n" << daemon.log_tail();
  }
}

/// The whole daemon over mutual TLS: the broker requires a client certificate signed by the
/// test CA; the emulator uses the broker's extra plain listener.
class E2eTlsTest : public E2eFixture {
 protected:
  Result<Mosquitto> start_broker() override {
    auto ca = CertificateAuthority::create();
    if (!ca) {
      return fail(ca.error());
    }
    ca_.emplace(std::move(*ca));
    MosquittoOptions options;
    options.tls = &*ca_;
    options.require_certificate = true;
    options.plain_listener_too = true;
    return Mosquitto::start(options);
  }
  std::optional<CertificateAuthority> ca_;
};

TEST_F(E2eTlsTest, WholeJobOverMutualTls) {
  ASSERT_TRUE(broker_->tls());
  // A port other than 443/8883: the TOML configuration allows any port with TLS (ALPN is
  // on by default only for 443).
  ASSERT_NE(broker_->port(), 443);
  ASSERT_NE(broker_->port(), 8883);
  auto client = ca_->issue_client(kThing);
  ASSERT_TRUE(client) << client.error().message();
  default_hooks();
  hooks_["restart"] = hook("restart", "exit 0");
  DaemonConfig c;
  c.state_dir = path("state");
  c.tls_port = broker_->port();
  c.cafile = ca_->ca_cert();
  c.certfile = client->cert;
  c.keyfile = client->key;
  auto daemon = start_daemon(write_config(c));
  ASSERT_TRUE(daemon.wait_for_line("ready: subscribed", 30s)) << daemon.log_tail();
  create_job("upparat_tls", document("2.0.0", "2.0.0"));
  auto v = wait_status("upparat_tls", "SUCCEEDED");
  EXPECT_EQ(v.state, "complete_soft_restart") << join(v.states);
  EXPECT_EQ(installed_version(), "2.0.0");
  // The broker saw the device on its TLS listener with the thing's certificate.
  EXPECT_NE(broker_->process().log_text().find(kThing), std::string::npos);
  auto stopped = daemon.stop();
  ASSERT_TRUE(stopped);
  EXPECT_TRUE(stopped->success()) << stopped->describe() << "\n" << daemon.log_tail();
}

TEST_F(E2eTlsTest, ClientWithoutTheCasCertificateIsRefused) {
  // The negative control of the test above: a device certificate from another CA never
  // gets the daemon subscribed.
  auto other = CertificateAuthority::create("Other CA");
  ASSERT_TRUE(other) << other.error().message();
  auto client = other->issue_client(kThing);
  ASSERT_TRUE(client) << client.error().message();
  default_hooks();
  DaemonConfig c;
  c.state_dir = path("state");
  c.tls_port = broker_->port();
  c.cafile = ca_->ca_cert();
  c.certfile = client->cert;
  c.keyfile = client->key;
  auto daemon = start_daemon(write_config(c));
  // Two refused connects in a row (the retry proves the first was not a fluke).
  auto first = daemon.wait_for_line("failed", 30s);
  ASSERT_TRUE(first) << daemon.log_tail();
  ASSERT_TRUE(daemon.wait_for_line("failed", 30s, daemon.log_offset())) << daemon.log_tail();
  EXPECT_EQ(daemon.log_text().find("ready: subscribed"), std::string::npos) << daemon.log_tail();
  EXPECT_TRUE(daemon.running()) << "a failed connect is retried, never a reason to exit\n"
                                << daemon.log_tail();
}

}  // namespace
}  // namespace upparat::test
