#pragma once

// Payloads of the AWS IoT Jobs device API: request builders and response parsers (RapidJSON).
// Parsers never throw: malformed payloads are an Error.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.hpp"

namespace upparat::jobs {

/// AWS writes timestamps in seconds, some tools in milliseconds: values above 10^11 are read
/// as milliseconds. Returns whole seconds.
[[nodiscard]] std::int64_t timestamp_seconds(std::int64_t value);

/// SUCCEEDED, FAILED, TIMED_OUT, REJECTED, REMOVED, CANCELED.
[[nodiscard]] bool is_terminal_status(std::string_view status);

struct JobSummary {
  std::string job_id;
  std::int64_t queued_at = 0;  ///< epoch seconds
  std::int64_t execution_number = 0;
  std::int64_t version_number = 0;
};

/// get/accepted, or the "jobs" of a notify.
struct PendingJobs {
  std::vector<JobSummary> in_progress;
  std::vector<JobSummary> queued;
  std::optional<std::string> client_token;
};

struct ExecutionState {
  std::string status;
  std::map<std::string, std::string> status_details;
  std::int64_t version_number = 0;
};

struct Execution {
  std::string job_id;
  std::string status;
  std::map<std::string, std::string> status_details;
  /// The jobDocument re-serialised as compact JSON ("" when the answer had none). A document
  /// sent as a JSON string is kept as that string's content.
  std::string document_json;
  std::int64_t queued_at = 0;
  std::int64_t version_number = 0;
  std::int64_t execution_number = 0;
};

struct DescribeAccepted {
  Execution execution;
  std::optional<std::string> client_token;
};

struct UpdateAccepted {
  std::optional<ExecutionState> execution_state;
  std::optional<std::string> client_token;
};

struct Rejected {
  std::string code;
  std::string message;
  std::optional<std::string> client_token;
  std::optional<ExecutionState> execution_state;
};

[[nodiscard]] Result<PendingJobs> parse_get_accepted(std::string_view payload);
/// `{"timestamp":N,"jobs":{"IN_PROGRESS":[...],"QUEUED":[...]}}`; `{"jobs":{}}` is empty.
[[nodiscard]] Result<PendingJobs> parse_notify(std::string_view payload);
[[nodiscard]] Result<DescribeAccepted> parse_describe_accepted(std::string_view payload);
[[nodiscard]] Result<UpdateAccepted> parse_update_accepted(std::string_view payload);
/// Any */rejected payload.
[[nodiscard]] Result<Rejected> parse_rejected(std::string_view payload);

/// `{"clientToken":T}`
[[nodiscard]] std::string build_get_request(std::string_view client_token);
/// `{"executionNumber"?:N,"includeJobDocument":true,"clientToken":T}`. With executionNumber
/// the answer is about that execution only (ResourceNotFound when it does not exist).
[[nodiscard]] std::string build_describe_request(std::string_view client_token,
                                                 std::optional<std::int64_t> execution_number = {});

struct UpdateRequest {
  std::string status;   ///< IN_PROGRESS, SUCCEEDED, FAILED, REJECTED
  std::string state;    ///< statusDetails.state
  std::string message;  ///< statusDetails.message; sanitised here ("" -> "none")
  std::optional<int> step_timeout_minutes;
  std::optional<std::int64_t> expected_version;
  /// The execution the update is for: an update never lands on a newer execution of the job
  /// (a retry after a time-out or failure).
  std::optional<std::int64_t> execution_number;
  /// Ask for the executionState (with its versionNumber) in the accepted answer.
  bool include_execution_state = false;
  std::string client_token;
};

/// `{"status":S,"statusDetails":{"state":..,"message":..},"stepTimeoutInMinutes"?,
/// "expectedVersion"?,"executionNumber"?,"includeJobExecutionState"?:true,"clientToken":T}`.
/// The statusDetails are status_details_of(request).
[[nodiscard]] std::string build_update_request(const UpdateRequest& request);

/// The statusDetails build_update_request() sends: state and message, each passed through
/// sanitize_status_detail(). A cloud that applied the update shows exactly these.
[[nodiscard]] std::map<std::string, std::string> status_details_of(const UpdateRequest& request);

}  // namespace upparat::jobs
