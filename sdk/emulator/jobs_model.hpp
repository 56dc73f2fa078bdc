#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "common/job_id.hpp"
#include "emulator/clock.hpp"
#include "emulator/s3/s3_server.hpp"

namespace upparat::emulator {

/// One MQTT message the emulator publishes (a response or a notification).
struct Outgoing {
  enum class Kind { Response, Notification };
  std::string topic;
  std::string payload;
  Kind kind = Kind::Response;
  /// Publish after this delay (a fault knob); 0 = at once.
  int delay_ms = 0;
};

/// Turns (bucket, key, expiry seconds) into a pre-signed URL (the S3 side's presign()).
using Presigner =
    std::function<std::string(const std::string& bucket, const std::string& key, int expiry)>;

/// An S3 object named by a `${aws:iot:s3-presigned-url:URL}` placeholder.
using S3Location = S3ObjectRef;

/// Parses `https://s3.<region>.amazonaws.com/<bucket>/<key>`,
/// `https://s3.amazonaws.com/<bucket>/<key>` and
/// `https://<bucket>.s3[.<region>].amazonaws.com/<key>`; the key is percent-decoded.
[[nodiscard]] Result<S3Location> parse_s3_url(const std::string& url);

/// Execution statuses of AWS IoT Jobs.
enum class ExecStatus {
  Queued,
  InProgress,
  Succeeded,
  Failed,
  TimedOut,
  Rejected,
  Removed,
  Canceled
};
[[nodiscard]] const char* to_string(ExecStatus status);
[[nodiscard]] std::optional<ExecStatus> exec_status_from_string(const std::string& text);
[[nodiscard]] bool is_terminal(ExecStatus status);

/// One entry of an execution's status history (every accepted change, by device or by
/// the service: creation, start, updates, cancel, time-out).
struct StatusChange {
  ExecStatus status = ExecStatus::Queued;
  std::map<std::string, std::string> status_details;
  long long at = 0;
  long long version_number = 0;
  std::string cause;  // "created", "start-next", "update", "cancel", "step-timeout", ...
};

struct Execution {
  std::string job_id;
  std::string thing_name;
  ExecStatus status = ExecStatus::Queued;
  std::map<std::string, std::string> status_details;
  long long queued_at = 0;
  std::optional<long long> started_at;
  long long last_updated_at = 0;
  long long version_number = 1;
  long long execution_number = 1;
  /// Queue order (creation order of executions of a thing).
  long long seq = 0;
  std::optional<long long> step_deadline;
  std::optional<long long> in_progress_deadline;
  bool deleted = false;
  std::vector<StatusChange> history;
};

/// A job's retry configuration (`jobExecutionsRetryConfig`): an execution that ends with a
/// failure one of the criteria matches is followed by a new QUEUED execution of the same job,
/// numbered one higher, while fewer retries were made than that criterion allows.
struct RetryConfig {
  enum class FailureType { Failed, TimedOut, All };
  struct Criterion {
    FailureType failure_type = FailureType::All;
    int number_of_retries = 0;  // 0..10
  };
  std::vector<Criterion> criteria;
};
[[nodiscard]] const char* to_string(RetryConfig::FailureType type);
[[nodiscard]] std::optional<RetryConfig::FailureType> failure_type_from_string(
    const std::string& text);

struct Job {
  std::string job_id;
  std::string document;  // JSON text as given (placeholders unresolved)
  std::vector<std::string> things;
  std::optional<int> in_progress_timeout_minutes;
  /// Pre-signed URL configuration: expiry in seconds; nullopt = none (placeholders stay text).
  std::optional<int> url_expiry_seconds;
  std::optional<RetryConfig> retry;
  std::string status = "IN_PROGRESS";  // IN_PROGRESS, CANCELED, COMPLETED
  bool force_canceled = false;
  long long created_at = 0;
  long long seq = 0;
};

struct JobSpec {
  std::string job_id;
  std::string document;
  std::vector<std::string> things;
  std::optional<int> in_progress_timeout_minutes;
  /// Expiry of pre-signed URLs (60..3600); nullopt = the model's default.
  std::optional<int> url_expiry_seconds;
  /// false: the job has no pre-signed URL configuration; placeholders are left as text.
  bool presign = true;
  std::optional<RetryConfig> retry;
  /// The executions' queuedAt (epoch seconds); nullopt = now. Queued executions are listed in
  /// queuedAt order, so a test can queue a job "earlier" than one created before it.
  std::optional<long long> queued_at;
};

/// Fault knobs for one kind of outgoing message.
struct OutputFaults {
  int drop_next = 0;       // drop the next N messages of this kind
  int duplicate_next = 0;  // send the next N messages of this kind twice
  int delay_ms = 0;        // delay every message of this kind (0 = off)
};

struct Faults {
  OutputFaults responses;
  OutputFaults notifications;
  int reject_updates_next = 0;                           // answer the next N updates with ...
  std::string reject_updates_code = "RequestThrottled";  // ... this code (or InternalError)
};

struct ModelOptions {
  /// Default expiry of pre-signed URLs, seconds.
  int url_expiry_seconds = 3600;
  /// Answer a describe of a terminal execution with TerminalStateReached instead of the
  /// execution (AWS documents this loosely; a device must handle both).
  bool terminal_state_reached_on_describe = false;
  /// An update with a wrong expectedVersion to a terminal execution is VersionMismatch (the
  /// version is checked first) instead of InvalidStateTransition. AWS does not document which
  /// check comes first; both answers carry the executionState, and a device must handle both.
  bool version_mismatch_before_terminal = false;
  /// notify lists at most this many executions.
  std::size_t notify_limit = 15;
  /// A describe or update naming an earlier execution of a retried job (executionNumber) is
  /// ResourceNotFound instead of being about that execution. AWS documents executionNumber
  /// for DescribeJobExecution but not what it answers for an execution a retry replaced.
  bool forget_earlier_executions = false;
  /// A describe answers the job's current execution whatever executionNumber it names.
  bool describe_ignores_execution_number = false;
};

/// The AWS IoT Jobs service in memory: things, jobs, executions, timers and the device MQTT
/// API as a function from a request (topic, payload) to the messages to publish. Thread-safe.
class JobsModel {
 public:
  JobsModel(std::shared_ptr<Clock> clock, Presigner presigner, ModelOptions options = {});

  /// Handles one message a device published on `$aws/things/{thing}/jobs/...`. Messages the
  /// emulator itself publishes (…/accepted, …/rejected, notify, notify-next) and topics
  /// outside the Jobs prefix yield nothing, and so does a payload over kMaxMqttPayloadBytes.
  [[nodiscard]] std::vector<Outgoing> handle(const std::string& topic, const std::string& payload);

  /// Moves executions whose step or in-progress timer expired to TIMED_OUT.
  [[nodiscard]] std::vector<Outgoing> tick();

  // --- control operations (the console / AWS CLI side) ---
  [[nodiscard]] Result<std::vector<Outgoing>> create_job(const JobSpec& spec);
  [[nodiscard]] Result<std::vector<Outgoing>> cancel_job(const std::string& job_id, bool force);
  [[nodiscard]] Result<std::vector<Outgoing>> delete_execution(const std::string& thing,
                                                               const std::string& job_id,
                                                               bool force);
  /// The notify message a thing would get now (its pending executions).
  [[nodiscard]] Outgoing notify_message(const std::string& thing);
  /// Advances the clock and fires the timers that expired.
  [[nodiscard]] std::vector<Outgoing> advance_clock(long long seconds);

  [[nodiscard]] std::vector<Job> jobs() const;
  [[nodiscard]] std::optional<Job> job(const std::string& job_id) const;
  /// Executions (deleted ones included, flagged), optionally filtered.
  [[nodiscard]] std::vector<Execution> executions(const std::string& thing = "",
                                                  const std::string& job_id = "") const;

  void set_faults(const Faults& faults);
  [[nodiscard]] Faults faults() const;
  void set_options(const ModelOptions& options);
  [[nodiscard]] ModelOptions options() const;

  /// The whole state as JSON (jobs, executions with history, clock offset excluded).
  [[nodiscard]] std::string save() const;
  /// Replaces the state with a saved one.
  [[nodiscard]] Status load(const std::string& json);

  [[nodiscard]] long long now() const { return clock_->now_seconds(); }
  [[nodiscard]] std::shared_ptr<Clock> clock() const { return clock_; }

 private:
  std::vector<Outgoing> handle_locked(const std::string& topic, const std::string& payload);
  void expire_timers_locked(std::vector<Outgoing>& out);
  std::vector<Execution*> pending_locked(const std::string& thing);
  Execution* head_locked(const std::string& thing);
  /// The job's current (latest) execution on a thing, deleted ones excluded.
  Execution* find_locked(const std::string& thing, const std::string& job_id);
  /// The execution a request is about: the current one, or the one `number` names.
  Execution* find_numbered_locked(const std::string& thing, const std::string& job_id,
                                  std::optional<long long> number);
  /// After `e` ended FAILED or TIMED_OUT: queues the next execution if the job's retry
  /// configuration allows it. May reallocate the thing's executions (`e` then dangles).
  void retry_locked(const Execution& e);
  std::string resolve_document_locked(const Job& job) const;
  void notify_locked(const std::string& thing, std::vector<Outgoing>& out);
  void notify_next_locked(const std::string& thing, std::vector<Outgoing>& out);
  /// Adds notify (when `status_changed`) and notify-next (when the head moved) for a thing.
  void after_change_locked(const std::string& thing, const std::optional<std::string>& old_head,
                           bool status_changed, std::vector<Outgoing>& out);
  std::optional<std::string> head_id_locked(const std::string& thing);
  void set_status_locked(Execution& e, ExecStatus status, const std::string& cause);
  std::vector<Outgoing> apply_faults_locked(std::vector<Outgoing> out);
  void update_job_status_locked(const std::string& job_id);

  std::shared_ptr<Clock> clock_;
  Presigner presigner_;
  ModelOptions options_;
  Faults faults_;
  mutable std::mutex mutex_;
  std::map<std::string, Job> jobs_;
  // thing -> executions in queue order
  std::map<std::string, std::vector<Execution>> executions_;
  long long seq_ = 0;
};

/// Validation rules of AWS IoT Jobs (exposed for tests and the CLI).
using upparat::valid_job_id;
[[nodiscard]] bool valid_thing_name(const std::string& name);
inline constexpr std::size_t kMaxJobDocumentChars = 32768;
/// AWS IoT Core's MQTT payload limit (128 KiB). A larger request is dropped unanswered, as
/// AWS's broker drops it before the Jobs service sees it.
inline constexpr std::size_t kMaxMqttPayloadBytes = 128 * 1024;

}  // namespace upparat::emulator
