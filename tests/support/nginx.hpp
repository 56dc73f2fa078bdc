#pragma once

// A real nginx serving a directory over HTTP and, optionally, HTTPS.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.hpp"
#include "support/certificates.hpp"
#include "support/process.hpp"
#include "support/temp_dir.hpp"

namespace upparat::test {

struct NginxOptions {
  /// The directory served at "/"; default: the fixture's own "<dir>/www" (see root()).
  std::filesystem::path root;
  /// Also serve HTTPS on a second port with the CA's server certificate (files are copied).
  const CertificateAuthority* tls = nullptr;
  /// Added inside each server { } block, e.g. "location /slow/ { limit_rate 1k; }".
  std::string extra_server_config;
  std::chrono::milliseconds start_timeout{std::chrono::seconds(10)};
};

/// /usr/sbin/nginx -p <dir> -c <dir>/nginx.conf -g 'daemon off;' with pid, logs and temp
/// paths inside its TempDir (nothing under /var or /run), one worker, listening on
/// 127.0.0.1 only. Range requests, ETag and If-Range work as nginx does for static files.
/// The access log records method, URI, status, bytes sent and the Range header.
class Nginx {
 public:
  static Result<Nginx> start(NginxOptions options = {});

  Nginx(Nginx&&) noexcept = default;
  /// Stops this one's service before taking the other's.
  Nginx& operator=(Nginx&& other) noexcept;
  ~Nginx() = default;

  [[nodiscard]] const std::filesystem::path& root() const { return root_; }
  /// Writes a file below root() (creating directories); returns its full path.
  Result<std::filesystem::path> put_file(const std::filesystem::path& relative,
                                         std::string_view content) const;

  [[nodiscard]] std::uint16_t http_port() const { return http_port_; }
  /// 0 without TLS.
  [[nodiscard]] std::uint16_t https_port() const { return https_port_; }
  /// "http://127.0.0.1:P/<path>" (a leading '/' in path is optional).
  [[nodiscard]] std::string http_url(std::string_view path) const;
  /// "https://127.0.0.1:Q/<path>"; requires TLS.
  [[nodiscard]] std::string https_url(std::string_view path) const;
  /// https_url() when TLS is on, else http_url().
  [[nodiscard]] std::string url(std::string_view path) const;

  /// "<method> <uri> <status> <body bytes> range=<Range header>" per request.
  [[nodiscard]] std::string access_log() const;

  Status stop();
  [[nodiscard]] ServiceProcess& process() { return *process_; }
  [[nodiscard]] const std::filesystem::path& dir() const { return dir_.path(); }

 private:
  explicit Nginx(TempDir dir) : dir_(std::move(dir)) {}

  TempDir dir_;
  std::filesystem::path root_;
  std::uint16_t http_port_ = 0;
  std::uint16_t https_port_ = 0;
  std::optional<ServiceProcess> process_;
};

}  // namespace upparat::test
