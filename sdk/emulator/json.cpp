#include "emulator/json.hpp"

namespace upparat::emulator {

std::string to_json(const rapidjson::Value& value) {
  return write_json([&value](JsonWriter& w) { value.Accept(w); });
}

std::string json_quote(const std::string& text) {
  return write_json([&text](JsonWriter& w) {
    w.String(text.data(), static_cast<rapidjson::SizeType>(text.size()));
  });
}

void write_details(JsonWriter& w, const std::map<std::string, std::string>& details) {
  w.StartObject();
  for (const auto& [k, v] : details) {
    w.Key(k.data(), static_cast<rapidjson::SizeType>(k.size()));
    w.String(v);
  }
  w.EndObject();
}

void write_status(JsonWriter& w, ExecStatus status,
                  const std::map<std::string, std::string>& details) {
  put(w, "status", to_string(status));
  w.Key("statusDetails");
  write_details(w, details);
}

void write_execution_times(JsonWriter& w, const Execution& e) {
  put(w, "queuedAt", e.queued_at);
  write_optional_int(w, "startedAt", e.started_at);
  put(w, "lastUpdatedAt", e.last_updated_at);
  put(w, "versionNumber", e.version_number);
  put(w, "executionNumber", e.execution_number);
}

void write_execution_record(JsonWriter& w, const Execution& e, const ExecutionRecordKeys& keys) {
  w.StartObject();
  put(w, "jobId", e.job_id);
  put(w, "thingName", e.thing_name);
  write_status(w, e.status, e.status_details);
  write_execution_times(w, e);
  if (keys.with_seq) {
    put(w, "seq", e.seq);
  }
  write_optional_int(w, keys.step_deadline, e.step_deadline);
  write_optional_int(w, keys.in_progress_deadline, e.in_progress_deadline);
  put(w, "deleted", e.deleted);
  w.Key("history");
  w.StartArray();
  for (const auto& h : e.history) {
    w.StartObject();
    write_status(w, h.status, h.status_details);
    put(w, "at", h.at);
    put(w, "versionNumber", h.version_number);
    put(w, "cause", h.cause);
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
}

std::optional<std::string> json_string(const rapidjson::Value& v, const char* key) {
  if (v.IsObject() && v.HasMember(key) && v[key].IsString()) {
    return std::string(v[key].GetString(), v[key].GetStringLength());
  }
  return std::nullopt;
}

std::optional<long long> json_int(const rapidjson::Value& v, const char* key) {
  if (v.IsObject() && v.HasMember(key) && v[key].IsInt64()) {
    return v[key].GetInt64();
  }
  return std::nullopt;
}

bool json_bool(const rapidjson::Value& v, const char* key, bool fallback) {
  if (v.IsObject() && v.HasMember(key) && v[key].IsBool()) {
    return v[key].GetBool();
  }
  return fallback;
}

std::map<std::string, std::string> json_string_map(const rapidjson::Value& v, const char* key) {
  std::map<std::string, std::string> out;
  if (!v.IsObject() || !v.HasMember(key) || !v[key].IsObject()) {
    return out;
  }
  for (auto it = v[key].MemberBegin(); it != v[key].MemberEnd(); ++it) {
    if (it->value.IsString()) {
      out[std::string(it->name.GetString(), it->name.GetStringLength())] =
          std::string(it->value.GetString(), it->value.GetStringLength());
    }
  }
  return out;
}

std::optional<std::vector<std::string>> json_strings(const rapidjson::Value& v, const char* key) {
  std::vector<std::string> out;
  if (!v.IsObject() || !v.HasMember(key) || !v[key].IsArray()) {
    return out;
  }
  for (const auto& s : v[key].GetArray()) {
    if (!s.IsString()) {
      return std::nullopt;
    }
    out.emplace_back(s.GetString(), s.GetStringLength());
  }
  return out;
}

void write_retry_config(JsonWriter& w, const RetryConfig& retry) {
  w.Key("jobExecutionsRetryConfig");
  w.StartObject();
  w.Key("criteriaList");
  w.StartArray();
  for (const auto& c : retry.criteria) {
    w.StartObject();
    put(w, "failureType", to_string(c.failure_type));
    put(w, "numberOfRetries", c.number_of_retries);
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
}

Result<std::optional<RetryConfig>> read_retry_config(const rapidjson::Value& body) {
  if (!body.HasMember("jobExecutionsRetryConfig")) {
    return std::optional<RetryConfig>();
  }
  const auto& config = body["jobExecutionsRetryConfig"];
  if (!config.IsObject() || !config.HasMember("criteriaList") ||
      !config["criteriaList"].IsArray()) {
    return fail("jobExecutionsRetryConfig must be {\"criteriaList\": [...]}");
  }
  RetryConfig retry;
  for (const auto& c : config["criteriaList"].GetArray()) {
    auto type = failure_type_from_string(json_string(c, "failureType").value_or(""));
    auto count = json_int(c, "numberOfRetries");
    if (!type || !count) {
      return fail(
          "each retry criterion needs failureType (FAILED, TIMED_OUT or ALL) and "
          "numberOfRetries");
    }
    retry.criteria.push_back({*type, static_cast<int>(*count)});
  }
  return std::optional<RetryConfig>(std::move(retry));
}

}  // namespace upparat::emulator
