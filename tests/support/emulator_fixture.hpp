#pragma once

// The AWS IoT Jobs + S3 emulator (sdk/emulator, binary upparat-jobs-emulator) as a test
// fixture: started on free loopback ports against a broker, driven through its HTTP control
// channel, always stopped.

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

/// Path of the upparat-jobs-emulator binary of this build.
[[nodiscard]] std::filesystem::path emulator_binary();

/// The status and body of an HTTP answer.
struct HttpAnswer {
  long status = 0;
  std::string body;
};

/// One HTTP(S) request with libcurl (no proxy, 30 s timeout): method GET/POST/PUT/DELETE, a
/// JSON body for POST/PUT; with `ca`, HTTPS trusts only that CA certificate. Any HTTP status
/// is an answer; only a failed transfer is an error.
Result<HttpAnswer> http_request(const std::string& method, const std::string& url,
                                const std::string& body = "", const std::filesystem::path& ca = {});

struct EmulatorOptions {
  /// The broker the Jobs side connects to, e.g. Mosquitto::uri() ("tcp://127.0.0.1:P").
  std::string broker_uri;
  /// S3 over HTTPS with this CA's server certificate (copied; the CA may be destroyed
  /// first). Null: plain HTTP.
  const CertificateAuthority* ca = nullptr;
  /// Persist state in this file (--state); empty: in memory.
  std::filesystem::path state_file;
  /// Default expiry of pre-signed URLs (--url-expiry); nullopt: the emulator's 3600 s.
  std::optional<int> url_expiry_seconds;
  /// Describe of a terminal execution answers TerminalStateReached (--terminal-state-reached).
  bool terminal_state_reached = false;
  std::vector<std::string> extra_args;
  std::chrono::milliseconds start_timeout{std::chrono::seconds(20)};
};

/// A running upparat-jobs-emulator. The destructor stops it (SIGTERM, then SIGKILL).
/// Control calls return the emulator's JSON answer, or its error message ("HTTP 404: ...").
class EmulatorFixture {
 public:
  static Result<EmulatorFixture> start(EmulatorOptions options);

  EmulatorFixture(EmulatorFixture&&) noexcept = default;
  EmulatorFixture& operator=(EmulatorFixture&&) noexcept = default;
  ~EmulatorFixture() = default;

  [[nodiscard]] std::uint16_t control_port() const { return control_port_; }
  [[nodiscard]] std::uint16_t s3_port() const { return s3_port_; }
  /// "https://127.0.0.1:P" (or http:// without a CA).
  [[nodiscard]] const std::string& s3_endpoint() const { return s3_endpoint_; }
  /// "http://127.0.0.1:P", for the CLI's --control.
  [[nodiscard]] std::string control_url() const;

  /// Any control call: method GET/POST/PUT/DELETE, path like "/jobs", JSON body.
  Result<std::string> request(const std::string& method, const std::string& path,
                              const std::string& body = "") const;

  /// Creates a job for `things` from a JSON document (text); returns the job's JSON.
  Result<std::string> create_job(const std::string& job_id, const std::string& document,
                                 const std::vector<std::string>& things,
                                 std::optional<int> in_progress_timeout_minutes = std::nullopt,
                                 std::optional<int> url_expiry_seconds = std::nullopt) const;
  Status cancel_job(const std::string& job_id, bool force = false) const;
  Status delete_execution(const std::string& thing, const std::string& job_id,
                          bool force = false) const;
  /// {"executions":[...]} with each execution's status history; empty filters match all.
  Result<std::string> describe(const std::string& thing = "", const std::string& job_id = "") const;
  Result<std::string> list_jobs() const;
  Status advance_clock(std::chrono::seconds by) const;

  Status put_object(const std::string& bucket, const std::string& key,
                    const std::string& data) const;
  Status put_object_file(const std::string& bucket, const std::string& key,
                         const std::filesystem::path& file) const;
  /// A pre-signed URL of the S3 side.
  Result<std::string> presign(const std::string& bucket, const std::string& key,
                              std::chrono::seconds expiry = std::chrono::seconds(3600)) const;
  /// Adds an S3 fault; `fields` are JSON members of POST /s3/faults, e.g.
  /// R"("errorStatus":503,"times":2)" (see docs/emulator.md).
  Status add_s3_fault(const std::string& bucket, const std::string& key,
                      const std::string& fields) const;
  /// PUT /faults with a JSON object, e.g. R"({"responses":{"drop":1}})".
  Status set_faults(const std::string& json) const;
  /// Clears Jobs and S3 faults.
  Status clear_faults() const;

  /// Stops the emulator now (SIGTERM); the state file (if any) is written.
  Result<ExitStatus> stop();
  [[nodiscard]] ServiceProcess& process() { return *process_; }

 private:
  EmulatorFixture() = default;
  std::optional<TempDir> dir_;
  std::optional<ServiceProcess> process_;
  std::uint16_t control_port_ = 0;
  std::uint16_t s3_port_ = 0;
  std::string s3_endpoint_;
};

}  // namespace upparat::test
