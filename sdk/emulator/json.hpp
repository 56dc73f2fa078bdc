#pragma once

// JSON helpers shared by the Jobs model, the control channel and the CLI of the emulator:
// writing executions (with their status history) and reading optional fields.

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "emulator/jobs_model.hpp"

namespace upparat::emulator {

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

/// Runs `fill` on a fresh writer and returns the JSON text it wrote.
template <typename Fill>
[[nodiscard]] std::string write_json(Fill&& fill) {
  rapidjson::StringBuffer sb;
  JsonWriter w(sb);
  std::forward<Fill>(fill)(w);
  return sb.GetString();
}

/// Writes one member `"key": value`.
inline void put(JsonWriter& w, const char* key, const std::string& value) {
  w.Key(key);
  w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
}
inline void put(JsonWriter& w, const char* key, const char* value) {
  w.Key(key);
  w.String(value);
}
inline void put(JsonWriter& w, const char* key, bool value) {
  w.Key(key);
  w.Bool(value);
}
inline void put(JsonWriter& w, const char* key, long long value) {
  w.Key(key);
  w.Int64(value);
}
inline void put(JsonWriter& w, const char* key, int value) {
  w.Key(key);
  w.Int(value);
}

/// `value` as compact JSON text.
[[nodiscard]] std::string to_json(const rapidjson::Value& value);
/// `text` as a JSON string literal (quoted and escaped).
[[nodiscard]] std::string json_quote(const std::string& text);

/// Writes `"key": value` when the value is set.
template <typename Int>
void write_optional_int(JsonWriter& w, const char* key, const std::optional<Int>& value) {
  if (value) {
    put(w, key, static_cast<long long>(*value));
  }
}

/// A statusDetails object.
void write_details(JsonWriter& w, const std::map<std::string, std::string>& details);
/// `"status": ..., "statusDetails": {...}`.
void write_status(JsonWriter& w, ExecStatus status,
                  const std::map<std::string, std::string>& details);
/// `"queuedAt", "startedAt"?, "lastUpdatedAt", "versionNumber", "executionNumber"` (the tail
/// of AWS's JobExecutionSummary and JobExecution).
void write_execution_times(JsonWriter& w, const Execution& e);

/// Key names of the internal fields of a full execution record.
struct ExecutionRecordKeys {
  const char* step_deadline;
  const char* in_progress_deadline;
  /// Also write the queue order ("seq").
  bool with_seq;
};
/// A full execution record: the AWS fields, timers, the deleted flag and the status history
/// (the control channel's and the state file's form).
void write_execution_record(JsonWriter& w, const Execution& e, const ExecutionRecordKeys& keys);

/// Reads a member of an object; nullopt when it is missing or of another type.
[[nodiscard]] std::optional<std::string> json_string(const rapidjson::Value& v, const char* key);
[[nodiscard]] std::optional<long long> json_int(const rapidjson::Value& v, const char* key);
[[nodiscard]] bool json_bool(const rapidjson::Value& v, const char* key, bool fallback);
/// The string members of an object member `key` (other members are skipped).
[[nodiscard]] std::map<std::string, std::string> json_string_map(const rapidjson::Value& v,
                                                                 const char* key);
/// The string elements of an array member `key`; nullopt when one is not a string.
[[nodiscard]] std::optional<std::vector<std::string>> json_strings(const rapidjson::Value& v,
                                                                   const char* key);

/// The member `"jobExecutionsRetryConfig": {"criteriaList": [{"failureType":
/// "FAILED"|"TIMED_OUT"|"ALL", "numberOfRetries": N}, ...]}` as CreateJob takes it; the control
/// API and the saved state use this form.
void write_retry_config(JsonWriter& w, const RetryConfig& retry);
/// Reads that member of `object`; nullopt when it is absent, an error when it is malformed.
[[nodiscard]] Result<std::optional<RetryConfig>> read_retry_config(const rapidjson::Value& object);

}  // namespace upparat::emulator
