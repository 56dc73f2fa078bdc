#pragma once

// `openssl s_server` as a TLS peer that reports the ALPN protocols a client offers
// (mosquitto ignores ALPN, AWS IoT on port 443 requires "x-amzn-mqtt-ca").

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "support/certificates.hpp"
#include "support/process.hpp"
#include "support/temp_dir.hpp"

namespace upparat::test {

struct OpensslServerOptions {
  /// Protocols the server accepts (comma-separated, as for -alpn).
  std::string alpn = "x-amzn-mqtt-ca";
  /// -Verify 1 (client certificate required) rather than -verify 1 (requested only).
  bool require_client_certificate = true;
  std::chrono::milliseconds start_timeout{std::chrono::seconds(10)};
};

/// openssl s_server -accept 127.0.0.1:P -alpn ... -cert/-key (the CA's server
/// certificate) -CAfile (the CA) -Verify 1, output captured. It completes TLS handshakes
/// but speaks no MQTT, so a client's connect attempt fails after the handshake: tests only
/// look at what the client offered.
class OpensslServer {
 public:
  static Result<OpensslServer> start(const CertificateAuthority& ca,
                                     OpensslServerOptions options = {});

  OpensslServer(OpensslServer&&) noexcept = default;
  /// Stops this one's service before taking the other's.
  OpensslServer& operator=(OpensslServer&& other) noexcept;
  ~OpensslServer() = default;

  [[nodiscard]] std::uint16_t port() const { return port_; }
  /// "ssl://127.0.0.1:P" (Paho's URI form).
  [[nodiscard]] std::string uri() const;

  /// Waits until a client's handshake reached the ALPN step and returns the protocols it
  /// advertised, in its order (empty vector never: a client without ALPN prints nothing,
  /// so the wait times out).
  Result<std::vector<std::string>> wait_for_client_alpn(std::chrono::milliseconds timeout);

  /// Everything s_server printed so far.
  [[nodiscard]] std::string output() const { return process_->log_text(); }
  [[nodiscard]] ServiceProcess& process() { return *process_; }
  [[nodiscard]] const std::filesystem::path& dir() const { return dir_.path(); }

 private:
  explicit OpensslServer(TempDir dir) : dir_(std::move(dir)) {}

  TempDir dir_;
  std::uint16_t port_ = 0;
  std::optional<ServiceProcess> process_;
};

}  // namespace upparat::test
