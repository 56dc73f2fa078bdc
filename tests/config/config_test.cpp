// The configuration: every validation error names the file, the key and what is expected;
// the Python Upparat INI import applies the Python defaults.

#include "config/config.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <string>

#include "support/certificates.hpp"
#include "support/temp_dir.hpp"

namespace upparat::config {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::create("config");
    ASSERT_TRUE(dir) << dir.error().message();
    dir_.emplace(std::move(*dir));
    cert_ = *dir_->write_file("device.pem", "cert");
    key_ = *dir_->write_file("device.key", "key");
    ca_ = *dir_->write_file("ca.pem", "ca");
    plugin_ = *dir_->write_file("plugins/upparat-script.so", "not really a plugin");
    ::setenv("UPPARAT_PLUGIN_DIR", (dir_->path() / "plugins").c_str(), 1);
  }

  /// A valid TLS configuration plus `extra`.
  std::string base(const std::string& extra = "", const std::string& broker_extra = "") const {
    return "[broker]\nhost = \"example-ats.iot.eu-west-1.amazonaws.com\"\nport = 443\n"
           "thing_name = \"device-1\"\ncafile = \"" +
           ca_.string() + "\"\ncertfile = \"" + cert_.string() + "\"\nkeyfile = \"" +
           key_.string() + "\"\n" + broker_extra + extra;
  }

  Result<Config> toml(const std::string& text) {
    return parse_toml(text, dir_->path() / "upparat.toml");
  }

  /// Expects an error mentioning every one of `parts`.
  void expect_error(const std::string& text, std::initializer_list<std::string> parts) {
    auto config = toml(text);
    ASSERT_FALSE(config) << "accepted:\n" << text;
    for (const auto& part : parts) {
      EXPECT_NE(config.error().message().find(part), std::string::npos)
          << "'" << part << "' not in: " << config.error().message();
    }
    EXPECT_NE(config.error().message().find("upparat.toml"), std::string::npos)
        << config.error().message();
  }

  std::optional<TempDir> dir_;
  fs::path cert_, key_, ca_, plugin_;
};

TEST_F(ConfigTest, MinimalTlsConfigurationGetsTheDefaults) {
  auto config = toml(base());
  ASSERT_TRUE(config) << config.error().message();
  EXPECT_EQ(config->broker.port, 443);
  EXPECT_TRUE(config->broker.alpn) << "ALPN is on by default on port 443";
  EXPECT_FALSE(config->broker.plain_tcp);
  EXPECT_EQ(config->broker.client_id, "device-1");
  EXPECT_EQ(config->service.state_directory, "/var/lib/upparat");
  EXPECT_EQ(config->download.directory, "/var/lib/upparat/downloads");
  EXPECT_EQ(config->jobs.prefix, "upparat_");
  EXPECT_EQ(config->retry.retry_interval.count(), 60);
  EXPECT_EQ(config->retry.max_retries, 60);
  EXPECT_EQ(config->jobs.poll_interval.count(), 600);
  EXPECT_EQ(config->jobs.max_url_refusals, 5);
  EXPECT_EQ(config->jobs.stop_grace.count(), 30);
  EXPECT_TRUE(config->steps.empty());
}

TEST_F(ConfigTest, Port8883HasNoAlpnByDefault) {
  auto text = base();
  text.replace(text.find("port = 443"), 10, "port = 8883");
  auto config = toml(text);
  ASSERT_TRUE(config) << config.error().message();
  EXPECT_FALSE(config->broker.alpn);
}

TEST_F(ConfigTest, FullConfiguration) {
  auto config = toml(
      base("[service]\nlog_level = \"debug\"\nstate_directory = \"/data/upparat\"\n"
           "[jobs]\nprefix = \"fw_\"\nprogress_interval = 5\nprogress_percent = 10\n"
           "poll_interval = 0\nmax_url_refusals = 3\nstop_grace = 5\n"
           "[jobs.deadlines]\ninstall = 60\n"
           "[download]\ndirectory = \"/data/dl\"\nallow_http = true\nmax_bytes_per_second = 1000\n"
           "reserve_bytes = 4096\n"
           "[retry]\nretry_interval = 2\nmax_retries = 3\n"
           "[steps]\ninstall = \"script\"\nversion = \"script\"\n"
           "[plugins.script]\npath = \"upparat-script.so\"\ninstall = \"/bin/true\"\n"
           "kill_grace_seconds = 2.5\nflag = true\nlist = [1, \"a\"]\n"
           "[plugins.script.dbus]\nbus = \"system\"\n",
           "client_id = \"client-7\"\nalpn = false\n"));
  ASSERT_TRUE(config) << config.error().message();
  EXPECT_EQ(config->service.log_level, "debug");
  EXPECT_EQ(config->broker.client_id, "client-7");
  EXPECT_FALSE(config->broker.alpn);
  EXPECT_EQ(config->jobs.prefix, "fw_");
  EXPECT_EQ(config->jobs.poll_interval.count(), 0);
  EXPECT_EQ(config->jobs.max_url_refusals, 3);
  EXPECT_EQ(config->jobs.stop_grace.count(), 5);
  EXPECT_EQ(config->jobs.deadlines[index(Step::Install)].count(), 60);
  EXPECT_EQ(config->jobs.deadlines[index(Step::Download)].count(), 86400);
  EXPECT_EQ(config->download.directory, "/data/dl");
  EXPECT_EQ(config->download.max_bytes_per_second, 1000u);
  EXPECT_EQ(config->download.reserve_bytes, 4096u);
  EXPECT_EQ(config->retry.max_retries, 3);
  EXPECT_EQ(config->steps.at("install"), "script");
  EXPECT_EQ(config->steps.count("restart"), 0u);
  const auto& p = config->plugins.at("script");
  EXPECT_EQ(p.path, plugin_);
  EXPECT_EQ(p.settings.at("install"), "/bin/true");
  EXPECT_EQ(p.settings.at("kill_grace_seconds"), "2.5");
  EXPECT_EQ(p.settings.at("flag"), "true");
  EXPECT_EQ(p.settings.at("list"), "[1,\"a\"]");
  EXPECT_EQ(p.settings.at("dbus.bus"), "system");
  EXPECT_EQ(p.settings.count("path"), 0u);
}

TEST_F(ConfigTest, PluginArraysAndTablesAreValidJsonWithAwkwardStrings) {
  auto config = toml(base(
      "[plugins.script]\npath = \"upparat-script.so\"\n"
      "words = [\"say \\\"hi\\\"\", 'C:\\dir\\', \"tab\\there\\u0001\", \"grüße ✓\", \"a/b\"]\n"
      "nested = [{ \"key \\\"q\\\"\" = \"v\\\\\", n = 1.5, on = false }, [2, -3]]\n"
      "[plugins.script.deep]\nlist = [\"x\\ny\"]\n"));
  ASSERT_TRUE(config) << config.error().message();
  const auto& p = config->plugins.at("script");
  EXPECT_EQ(p.settings.at("words"),
            R"(["say \"hi\"","C:\\dir\\","tab\there\u0001","grüße ✓","a/b"])");
  EXPECT_EQ(p.settings.at("nested"), R"([{"key \"q\"":"v\\","n":1.5,"on":false},[2,-3]])");
  EXPECT_EQ(p.settings.at("deep.list"), R"(["x\ny"])");
}

TEST_F(ConfigTest, OnePluginWithoutStepsServesEveryStep) {
  auto config = toml(base("[plugins.script]\npath = \"upparat-script.so\"\n"));
  ASSERT_TRUE(config) << config.error().message();
  for (Step step : kSteps) {
    EXPECT_EQ(config->steps.at(std::string(to_string(step))), "script") << to_string(step);
  }
}

TEST_F(ConfigTest, ThingNameOverrideFromCommandLine) {
  Overrides o;
  o.thing_name = "from-cli";
  auto config = parse_toml(base(), dir_->path() / "upparat.toml", o);
  ASSERT_TRUE(config) << config.error().message();
  EXPECT_EQ(config->broker.thing_name, "from-cli");
  EXPECT_EQ(config->broker.client_id, "from-cli");
}

TEST_F(ConfigTest, SyntaxError) {
  expect_error("[broker\nhost = 1", {"invalid TOML"});
}

TEST_F(ConfigTest, UnknownTopLevelTable) {
  expect_error(base("[sentry]\ndsn = \"x\"\n"), {"sentry", "unknown key", "broker"});
}

TEST_F(ConfigTest, UnknownKeyInSection) {
  expect_error(base("", "hots = \"x\"\n"), {"[broker] hots", "unknown key", "host"});
}

TEST_F(ConfigTest, WrongTypes) {
  expect_error(base("", "").replace(base().find("port = 443"), 10, "port = \"443\""),
               {"[broker] port", "expected an integer from 1 to 65535", "got a string"});
  expect_error(base("[download]\nallow_http = \"yes\"\n"),
               {"[download] allow_http", "expected a boolean", "got a string"});
  expect_error(base("[service]\nstate_directory = 5\n"),
               {"[service] state_directory", "expected a string", "got an integer"});
  expect_error(base("[jobs]\ndeadlines = 5\n"), {"[jobs] deadlines", "expected a table"});
  expect_error(base("[plugins]\nscript = 1\n"), {"[plugins] script", "expected a table"});
}

TEST_F(ConfigTest, OutOfRange) {
  auto text = base();
  expect_error(text.replace(text.find("port = 443"), 10, "port = 70000"),
               {"[broker] port", "70000"});
  expect_error(base("[jobs.deadlines]\ninstall = 0\n"), {"[jobs.deadlines] install"});
  expect_error(base("[jobs]\nprogress_percent = 101\n"), {"[jobs] progress_percent"});
  expect_error(base("[jobs]\npoll_interval = -1\n"), {"[jobs] poll_interval"});
  expect_error(base("[jobs]\nmax_url_refusals = 0\n"), {"[jobs] max_url_refusals"});
  expect_error(base("[jobs]\nstop_grace = 0\n"), {"[jobs] stop_grace"});
  expect_error(base("", "keep_alive = 5\n"), {"[broker] keep_alive", "30 to 1200"});
}

TEST_F(ConfigTest, BadValues) {
  expect_error(base("[service]\nlog_level = \"loud\"\n"), {"[service] log_level", "loud"});
  expect_error(base("[jobs]\nprefix = \"a/b\"\n"), {"[jobs] prefix", "a/b"});
  auto text = base();
  expect_error(text.replace(text.find("\"device-1\""), 10, "\"bad name\""),
               {"[broker] thing_name", "bad name"});
  expect_error(base("[jobs.deadlines]\ninstal = 5\n"), {"[jobs.deadlines] instal", "unknown key"});
}

TEST_F(ConfigTest, MissingHost) {
  auto config = toml("[broker]\nplain_tcp = true\nthing_name = \"x\"\n");
  ASSERT_FALSE(config);
  EXPECT_NE(config.error().message().find("[broker] host"), std::string::npos)
      << config.error().message();
  expect_error("[service]\nlog_level = \"info\"\n", {"[broker]"});
}

TEST_F(ConfigTest, MissingOrUnreadableCertificates) {
  expect_error(
      base().replace(base().find(cert_.string()), cert_.string().size(), "/nonexistent.pem"),
      {"[broker] certfile", "no such file", "/nonexistent.pem"});
  expect_error("[broker]\nhost = \"h\"\nthing_name = \"t\"\n", {"[broker] certfile", "plain_tcp"});
  fs::permissions(key_, fs::perms::none);
  if (::geteuid() != 0) {  // root reads anything
    expect_error(base(), {"[broker] keyfile", "cannot read"});
  }
  expect_error(
      base().replace(base().find(ca_.string()), ca_.string().size(), dir_->path().string()),
      {"[broker] cafile", "not a regular file"});
}

TEST_F(ConfigTest, PlainTcpNeedsNoCertificatesAndRefusesAlpn) {
  auto config = toml(
      "[broker]\nhost = \"127.0.0.1\"\nport = 1883\nplain_tcp = true\n"
      "thing_name = \"t\"\n");
  ASSERT_TRUE(config) << config.error().message();
  EXPECT_TRUE(config->broker.plain_tcp);
  EXPECT_FALSE(config->broker.alpn);
  expect_error("[broker]\nhost = \"h\"\nplain_tcp = true\nalpn = true\nthing_name = \"t\"\n",
               {"[broker] alpn", "plain_tcp"});
}

/// The warnings of `config` that contain `part`.
std::size_t warnings_with(const Config& config, const std::string& part) {
  return static_cast<std::size_t>(
      std::count_if(config.warnings.begin(), config.warnings.end(),
                    [&](const std::string& w) { return w.find(part) != std::string::npos; }));
}

TEST_F(ConfigTest, PlainTcpIsTheOnlyWayWithoutTlsAndIsAlwaysWarnedAbout) {
  auto plain = toml(
      "[broker]\nhost = \"127.0.0.1\"\nport = 1883\nplain_tcp = true\n"
      "thing_name = \"t\"\n");
  ASSERT_TRUE(plain) << plain.error().message();
  EXPECT_EQ(warnings_with(*plain, "plain_tcp = true: MQTT WITHOUT TLS to 127.0.0.1"), 1u);
  // Without plain_tcp, missing certificates are an error, never a silent fall back to TCP;
  // plain_tcp = false is TLS.
  expect_error("[broker]\nhost = \"h\"\nthing_name = \"t\"\nplain_tcp = false\n",
               {"[broker] certfile", "plain_tcp"});
  fs::permissions(key_, fs::perms::owner_read);
  auto tls = toml(base());
  ASSERT_TRUE(tls) << tls.error().message();
  EXPECT_FALSE(tls->broker.plain_tcp);
  EXPECT_EQ(warnings_with(*tls, "WITHOUT TLS"), 0u);
  // An INI file without certificates means a local broker (as the Python version): warned too.
  auto ini = dir_->write_file("plain.ini", "[broker]\nhost = 127.0.0.1\nport = 1883\n");
  ASSERT_TRUE(ini);
  auto imported = load(*ini);
  ASSERT_TRUE(imported) << imported.error().message();
  EXPECT_TRUE(imported->broker.plain_tcp);
  EXPECT_EQ(warnings_with(*imported, "WITHOUT TLS"), 1u);
}

TEST_F(ConfigTest, APrivateKeyAccessibleToOthersIsWarnedAbout) {
  for (auto mode : {fs::perms::owner_read,
                    fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read}) {
    fs::permissions(key_, mode);
    auto config = toml(base());
    ASSERT_TRUE(config) << config.error().message();
    EXPECT_EQ(warnings_with(*config, "keyfile"), 0u) << static_cast<int>(mode);
  }
  for (auto [mode, shown] : {std::pair{fs::perms::owner_read | fs::perms::others_read, "0404"},
                             std::pair{fs::perms::owner_all | fs::perms::others_exec, "0701"},
                             std::pair{fs::perms::all, "0777"}}) {
    fs::permissions(key_, mode);
    auto config = toml(base());
    ASSERT_TRUE(config) << config.error().message();
    EXPECT_EQ(
        warnings_with(*config, std::string("[broker] keyfile: the private key ") + key_.string() +
                                   " is accessible to every user of the "
                                   "device (mode " +
                                   shown +
                                   "): any of them can act as this device; run "
                                   "chmod o-rwx"),
        1u)
        << shown;
  }
}

TEST_F(ConfigTest, PluginErrors) {
  expect_error(base("[plugins.x]\ninstall = \"/bin/true\"\n"), {"[plugins.x] path", "missing"});
  expect_error(base("[plugins.x]\npath = \"missing.so\"\n"),
               {"[plugins.x] path", "no such file", "missing.so"});
  expect_error(base("[plugins.x]\npath = \"upparat-script.so\"\n[steps]\ninstall = \"y\"\n"),
               {"[steps] install", "'y'"});
  expect_error(base("[steps]\nreboot = \"x\"\n"), {"[steps] reboot", "unknown key"});
}

TEST_F(ConfigTest, StreamIsTheDaemonsOwnBooleanAndNotHandedToThePlugin) {
  auto config = toml(base("[plugins.x]\npath = \"upparat-script.so\"\nstream = true\nmode = 1\n"));
  ASSERT_TRUE(config) << config.error().message();
  const auto& x = config->plugins.at("x");
  EXPECT_TRUE(x.stream);
  EXPECT_EQ(x.settings.count("stream"), 0u);
  EXPECT_EQ(x.settings.count("path"), 0u);
  EXPECT_EQ(x.settings.at("mode"), "1");

  config = toml(base("[plugins.x]\npath = \"upparat-script.so\"\nstream = false\n"));
  ASSERT_TRUE(config) << config.error().message();
  EXPECT_FALSE(config->plugins.at("x").stream);
  config = toml(base("[plugins.x]\npath = \"upparat-script.so\"\n"));
  ASSERT_TRUE(config) << config.error().message();
  EXPECT_FALSE(config->plugins.at("x").stream) << "no streaming unless asked for";
}

TEST_F(ConfigTest, StreamThatIsNoBooleanIsAnError) {
  // Anything but a TOML boolean would otherwise silently mean "do not stream".
  for (const char* value : {"1", "\"true\"", "\"yes\"", "[true]"}) {
    SCOPED_TRACE(value);
    expect_error(
        base(std::string("[plugins.x]\npath = \"upparat-script.so\"\nstream = ") + value + "\n"),
        {"[plugins.x] stream", "expected a boolean (true or false)"});
  }
  expect_error(base("[plugins.x]\npath = \"upparat-script.so\"\n[plugins.x.stream]\non = true\n"),
               {"[plugins.x] stream", "expected a boolean (true or false), got a table"});
}

TEST_F(ConfigTest, MissingFileNamesIt) {
  auto config = load(dir_->path() / "nope.toml");
  ASSERT_FALSE(config);
  EXPECT_NE(config.error().message().find("nope.toml"), std::string::npos);
}

// Found by fuzz_toml_config: toml11 read past its buffer (AddressSanitizer:
// heap-buffer-overflow) reporting invalid UTF-8 in a literal string.
TEST_F(ConfigTest, TextThatIsNotUtf8IsRefusedWithItsLine) {
  for (const std::string bad : {"x = 'a\xc3\xdf b'\n", "x = ['a\xc3\xdf b']\n", "x = \"\xff\"\n"}) {
    auto config = toml(base() + "[plugins.script]\npath = \"upparat-script.so\"\n" + bad);
    ASSERT_FALSE(config) << bad;
    EXPECT_NE(config.error().message().find("upparat.toml: invalid TOML: line 10 is not valid "
                                            "UTF-8 (a TOML file must be UTF-8 encoded)"),
              std::string::npos)
        << config.error().message();
  }
}

TEST_F(ConfigTest, PythonIniDefaults) {
  auto version = *dir_->write_file("hooks/version.sh", "#!/bin/sh\n");
  auto file =
      *dir_->write_file("upparat.ini",
                        "[service]\nlog_level = WARNING\ndownload_location = /data\n"
                        "[broker]\nthing_name = dev-1\n"
                        "[hooks]\nversion = " +
                            version.string() +
                            "\ninstall = hooks/install.sh\nretry_interval = 5\nmax_retries = 7\n"
                            "# a comment\n[sentry]\ndsn = https://x\n");
  auto config = load(file);
  ASSERT_TRUE(config) << config.error().message();
  EXPECT_EQ(config->format, Format::Ini);
  EXPECT_EQ(config->broker.host, "127.0.0.1");
  EXPECT_EQ(config->broker.port, 1883);
  EXPECT_EQ(config->broker.client_id, "upparat");
  EXPECT_EQ(config->broker.thing_name, "dev-1");
  EXPECT_TRUE(config->broker.plain_tcp);
  EXPECT_EQ(config->service.log_level, "warn");
  EXPECT_EQ(config->download.directory, "/data/upparat");
  EXPECT_EQ(config->service.state_directory, "/data/upparat/state");
  EXPECT_TRUE(config->download.allow_http);
  EXPECT_EQ(config->retry.retry_interval.count(), 5);
  EXPECT_EQ(config->retry.max_retries, 7);
  const auto& script = config->plugins.at("script");
  EXPECT_EQ(script.path, plugin_);
  EXPECT_EQ(script.settings.at("version"), version.string());
  EXPECT_EQ(script.settings.at("install"), (dir_->path() / "hooks/install.sh").string());
  EXPECT_EQ(script.settings.count("restart"), 0u);
  for (Step step : kSteps) {
    EXPECT_EQ(config->steps.at(std::string(to_string(step))), "script");
  }
  bool warned_http = false, warned_sentry = false;
  for (const auto& w : config->warnings) {
    warned_http |= w.find("http") != std::string::npos;
    warned_sentry |= w.find("[sentry]") != std::string::npos;
  }
  EXPECT_TRUE(warned_http);
  EXPECT_TRUE(warned_sentry);
}

TEST_F(ConfigTest, PythonIniWithCertificatesUsesAlpn) {
  auto file = *dir_->write_file("aws.ini",
                                "[broker]\nhost = x-ats.iot.eu-west-1.amazonaws.com\nport = 443\n"
                                "thing_name = dev-1\ncafile = " +
                                    ca_.string() + "\ncertfile = " + cert_.string() +
                                    "\nkeyfile = " + key_.string() + "\n");
  auto config = load(file);
  ASSERT_TRUE(config) << config.error().message();
  EXPECT_FALSE(config->broker.plain_tcp);
  EXPECT_TRUE(config->broker.alpn);
  auto bad = *dir_->write_file(
      "bad.ini", "[broker]\nport = 1883\nthing_name = d\ncertfile = " + cert_.string() +
                     "\nkeyfile = " + key_.string() + "\n");
  auto refused = load(bad);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("443 or 8883"), std::string::npos);
}

TEST_F(ConfigTest, PythonIniErrors) {
  auto file = *dir_->write_file("p.ini", "[broker]\nport = abc\nthing_name = d\n");
  auto config = load(file);
  ASSERT_FALSE(config);
  EXPECT_NE(config.error().message().find("p.ini: [broker] port"), std::string::npos)
      << config.error().message();
  auto garbage = *dir_->write_file("g.ini", "just text\n");
  EXPECT_FALSE(load(garbage));
}

TEST_F(ConfigTest, DescribeNamesBrokerAndSteps) {
  auto config = toml(base("[plugins.script]\npath = \"upparat-script.so\"\n"));
  ASSERT_TRUE(config);
  auto text = describe(*config);
  EXPECT_NE(text.find("ssl://example-ats.iot.eu-west-1.amazonaws.com:443"), std::string::npos);
  EXPECT_NE(text.find("ALPN"), std::string::npos);
  EXPECT_NE(text.find("step install"), std::string::npos);
  EXPECT_EQ(text.find("stream"), std::string::npos) << text;

  auto streaming = toml(base("[plugins.script]\npath = \"upparat-script.so\"\nstream = true\n"));
  ASSERT_TRUE(streaming);
  EXPECT_NE(describe(*streaming).find("upparat-script.so), stream = true"), std::string::npos)
      << describe(*streaming);
}

TEST_F(ConfigTest, SigningCertificatesAreLoadedWithTheConfiguration) {
  auto ca = test::CertificateAuthority::create("Config CA");
  ASSERT_TRUE(ca) << ca.error().message();
  test::CertificateRequest ecdsa;
  ecdsa.common_name = "Firmware ECDSA";
  ecdsa.code_signing = true;
  auto ecdsa_files = ca->issue(ecdsa);
  ASSERT_TRUE(ecdsa_files) << ecdsa_files.error().message();
  test::CertificateRequest rsa = ecdsa;
  rsa.common_name = "Firmware RSA";
  rsa.key = test::KeyType::Rsa2048;
  auto rsa_files = ca->issue(rsa);
  ASSERT_TRUE(rsa_files) << rsa_files.error().message();
  // Relative names are relative to the configuration file.
  fs::copy_file(rsa_files->cert, dir_->path() / "rsa.pem");

  auto config = toml(base("[download]\nsigning_certificates = [\"" + ecdsa_files->cert.string() +
                          "\", \"rsa.pem\"]\nrequire_signature = true\n"));
  ASSERT_TRUE(config) << config.error().message();
  const auto& certificates = config->download.signing_certificates;
  ASSERT_EQ(certificates.size(), 2u);
  EXPECT_EQ(certificates[0].subject, "CN=Firmware ECDSA");
  EXPECT_EQ(certificates[0].algorithm, SignatureAlgorithm::EcdsaP256Sha256);
  EXPECT_EQ(certificates[1].subject, "CN=Firmware RSA");
  EXPECT_EQ(certificates[1].algorithm, SignatureAlgorithm::RsaSha256);
  EXPECT_EQ(certificates[1].path, dir_->path() / "rsa.pem");
  EXPECT_TRUE(config->download.require_signature);
  const auto text = describe(*config);
  EXPECT_NE(text.find("signer     CN=Firmware ECDSA (SHA256withECDSA"), std::string::npos) << text;
  EXPECT_NE(text.find("signatures required"), std::string::npos) << text;

  // By default nothing is required and nothing is loaded.
  auto plain = toml(base());
  ASSERT_TRUE(plain) << plain.error().message();
  EXPECT_TRUE(plain->download.signing_certificates.empty());
  EXPECT_FALSE(plain->download.require_signature);
}

TEST_F(ConfigTest, SigningCertificateErrorsNameTheFileAndTheProblem) {
  expect_error(base("[download]\nsigning_certificates = [\"missing.pem\"]\n"),
               {"[download] signing_certificates", "missing.pem", "No such file"});
  expect_error(base("[download]\nsigning_certificates = [\"" + ca_.string() + "\"]\n"),
               {"[download] signing_certificates", ca_.string(), "not a PEM certificate"});
  expect_error(base("[download]\nsigning_certificates = \"one.pem\"\n"),
               {"[download] signing_certificates", "expected an array of file names"});
  expect_error(base("[download]\nsigning_certificates = [1]\n"),
               {"signing_certificates", "an entry that is an integer"});
  expect_error(base("[download]\nrequire_signature = true\n"),
               {"[download] require_signature", "needs signing_certificates"});
  expect_error(base("[download]\nrequire_signature = \"yes\"\n"),
               {"[download] require_signature", "expected a boolean"});
  auto ca = test::CertificateAuthority::create("Config CA");
  ASSERT_TRUE(ca) << ca.error().message();
  test::CertificateRequest p384;
  p384.common_name = "P-384";
  p384.key = test::KeyType::EcP384;
  auto files = ca->issue(p384);
  ASSERT_TRUE(files) << files.error().message();
  expect_error(base("[download]\nsigning_certificates = [\"" + files->cert.string() + "\"]\n"),
               {"signing_certificates", "only P-256"});
}

TEST_F(ConfigTest, DocumentedExampleIsValidAndSetsEveryKey) {
  // config/upparat.toml with its device files pointed at this test's files.
  auto text = test::read_file(fs::path(UPPARAT_SOURCE_DIR) / "config/upparat.toml");
  ASSERT_TRUE(text) << text.error().message();
  auto replace_all = [](std::string& s, const std::string& from, const std::string& to) {
    for (auto pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size())) {
      s.replace(pos, from.size(), to);
    }
  };
  replace_all(*text, "/etc/upparat/AmazonRootCA1.pem", ca_.string());
  replace_all(*text, "/etc/upparat/device.pem.crt", cert_.string());
  replace_all(*text, "/etc/upparat/private.pem.key", key_.string());
  auto config = toml(*text);
  ASSERT_TRUE(config) << config.error().message();
  EXPECT_EQ(config->broker.thing_name, "my-device");
  EXPECT_EQ(config->plugins.at("script").settings.at("install"), "/etc/upparat/hooks/install.sh");
  EXPECT_EQ(config->steps.size(), 5u);
}

}  // namespace
}  // namespace upparat::config
