#include "support/openssl_server.hpp"

#include <sstream>

#include "support/binaries.hpp"
#include "support/net.hpp"

namespace upparat::test {

namespace fs = std::filesystem;

namespace {

constexpr int kStartAttempts = 3;
constexpr const char* kAlpnPrefix = "ALPN protocols advertised by the client: ";

}  // namespace

Result<OpensslServer> OpensslServer::start(const CertificateAuthority& ca,
                                           OpensslServerOptions options) {
  if (!is_executable(kOpensslPath)) {
    return fail(std::string(kOpensslPath) + " is not installed");
  }
  auto dir = TempDir::create("s_server");
  if (!dir) {
    return fail(dir.error().context("start openssl s_server"));
  }
  OpensslServer server(std::move(*dir));
  std::error_code ec;
  for (const auto& [from, to] : {std::pair{ca.ca_cert(), server.dir_.path() / "ca.pem"},
                                 std::pair{ca.server().cert, server.dir_.path() / "server.pem"},
                                 std::pair{ca.server().key, server.dir_.path() / "server.key"}}) {
    fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
    if (ec) {
      return fail("start openssl s_server: copy " + from.string() + ": " + ec.message());
    }
  }
  Error last_error("not started");
  for (int attempt = 0; attempt < kStartAttempts; ++attempt) {
    auto port = free_port();
    if (!port) {
      return fail(port.error().context("start openssl s_server"));
    }
    server.port_ = *port;
    ProcessOptions process;
    // -www: answer requests itself instead of relaying stdin (which is /dev/null: at EOF
    // s_server would quit, or with -ign_eof spin on it).
    // stdbuf -oL: s_server prints the ALPN offer to stdout through stdio and flushes it
    // only now and then; line buffering makes each line visible at once.
    process.argv = {"stdbuf",
                    "-oL",
                    kOpensslPath,
                    "s_server",
                    "-accept",
                    std::string(kLoopback) + ":" + std::to_string(*port),
                    "-alpn",
                    options.alpn,
                    "-cert",
                    (server.dir_.path() / "server.pem").string(),
                    "-key",
                    (server.dir_.path() / "server.key").string(),
                    "-CAfile",
                    (server.dir_.path() / "ca.pem").string(),
                    options.require_client_certificate ? "-Verify" : "-verify",
                    "1",
                    "-www"};
    process.name = "openssl-s_server";
    process.log_path = server.dir_.path() / "s_server.log";
    process.stop_grace = std::chrono::seconds(2);
    auto started = ServiceProcess::start(std::move(process));
    if (!started) {
      return fail(started.error().context("start openssl s_server"));
    }
    server.process_ = std::move(*started);
    auto ready = server.process_->wait_for_port(server.port_, options.start_timeout);
    if (ready) {
      return server;
    }
    last_error = ready.error();
    const bool port_taken = server.process_->log_text().find("in use") != std::string::npos;
    server.process_.reset();
    if (!port_taken) {
      break;
    }
  }
  return fail(last_error.context("start openssl s_server"));
}

OpensslServer& OpensslServer::operator=(OpensslServer&& other) noexcept {
  if (this != &other) {
    process_.reset();
    dir_ = std::move(other.dir_);
    port_ = other.port_;
    process_ = std::move(other.process_);
    other.process_.reset();
  }
  return *this;
}

std::string OpensslServer::uri() const {
  return "ssl://" + std::string(kLoopback) + ":" + std::to_string(port_);
}

Result<std::vector<std::string>> OpensslServer::wait_for_client_alpn(
    std::chrono::milliseconds timeout) {
  auto line = process_->wait_for_line(std::string_view(kAlpnPrefix), timeout);
  if (!line) {
    return fail(line.error().context("no ALPN offer seen"));
  }
  std::string list = line->substr(line->find(kAlpnPrefix) + std::string(kAlpnPrefix).size());
  std::vector<std::string> protocols;
  std::istringstream in(list);
  std::string protocol;
  while (std::getline(in, protocol, ',')) {
    while (!protocol.empty() && (protocol.front() == ' ')) {
      protocol.erase(protocol.begin());
    }
    while (!protocol.empty() && (protocol.back() == ' ' || protocol.back() == '\r')) {
      protocol.pop_back();
    }
    if (!protocol.empty()) {
      protocols.push_back(protocol);
    }
  }
  return protocols;
}

}  // namespace upparat::test
