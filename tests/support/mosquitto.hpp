#pragma once

// A real mosquitto broker on a free loopback port.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "common/error.hpp"
#include "support/certificates.hpp"
#include "support/process.hpp"
#include "support/temp_dir.hpp"

namespace upparat::test {

struct MosquittoOptions {
  /// mTLS listener (require_certificate true) with the CA's server certificate; the CA's
  /// files are copied, so the CA may be destroyed first. Null: plain TCP, allow_anonymous.
  const CertificateAuthority* tls = nullptr;
  /// With tls: whether clients must present a certificate signed by the CA.
  bool require_certificate = true;
  /// With tls: also open a plain TCP listener (e.g. for the emulator or an observer that
  /// needs no certificate); see plain_port() / plain_uri().
  bool plain_listener_too = false;
  /// Keep retained messages and sessions in the fixture's directory across restart().
  bool persistence = false;
  /// Appended to the generated mosquitto.conf.
  std::string extra_config;
  /// 0: a free port.
  std::uint16_t port = 0;
  std::chrono::milliseconds start_timeout{std::chrono::seconds(10)};
};

/// /usr/sbin/mosquitto with a generated config in its own TempDir, listening on
/// 127.0.0.1:port() only, logging everything (stdout) to the process log. Stopped and
/// its directory removed by the destructor.
class Mosquitto {
 public:
  static Result<Mosquitto> start(MosquittoOptions options = {});
  /// Shorthand for an mTLS broker using `ca`.
  static Result<Mosquitto> start_tls(const CertificateAuthority& ca);

  Mosquitto(Mosquitto&&) noexcept = default;
  /// Stops this one's service before taking the other's.
  Mosquitto& operator=(Mosquitto&& other) noexcept;
  ~Mosquitto() = default;

  [[nodiscard]] std::uint16_t port() const { return port_; }
  [[nodiscard]] std::string host() const;
  /// "tcp://127.0.0.1:P" or, with TLS, "ssl://127.0.0.1:P" (Paho's URI forms).
  [[nodiscard]] std::string uri() const;
  [[nodiscard]] bool tls() const { return tls_; }
  /// The plain listener: port() without TLS, the extra one with plain_listener_too, else 0.
  [[nodiscard]] std::uint16_t plain_port() const { return tls_ ? extra_plain_port_ : port_; }
  /// "tcp://127.0.0.1:<plain_port()>".
  [[nodiscard]] std::string plain_uri() const;

  /// Stops the broker (SIGTERM); clients see the connection drop.
  Status stop();
  /// Starts it again on the same port (stopping it first if it runs) and waits until it
  /// listens. With persistence, retained messages and sessions survive.
  Status restart();
  [[nodiscard]] bool running();

  /// The running (or last) broker process: pid(), log_text(), wait_for_line(), kill9().
  [[nodiscard]] ServiceProcess& process() { return *process_; }
  [[nodiscard]] const std::filesystem::path& dir() const { return dir_.path(); }

 private:
  explicit Mosquitto(TempDir dir) : dir_(std::move(dir)) {}
  Status launch(std::chrono::milliseconds timeout);

  TempDir dir_;
  std::filesystem::path config_;
  std::uint16_t port_ = 0;
  std::uint16_t extra_plain_port_ = 0;
  bool tls_ = false;
  std::chrono::milliseconds start_timeout_{};
  std::optional<ServiceProcess> process_;
};

}  // namespace upparat::test
