#include "jobs/messages.hpp"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "common/sanitize.hpp"

namespace upparat::jobs {
namespace {

using rapidjson::Value;

Result<rapidjson::Document> parse_object(std::string_view payload) {
  rapidjson::Document doc;
  // An empty payload is read as {} (AWS does so too).
  if (payload.empty()) {
    payload = "{}";
  }
  doc.Parse(payload.data(), payload.size());
  if (doc.HasParseError()) {
    return fail("invalid JSON at offset " + std::to_string(doc.GetErrorOffset()));
  }
  if (!doc.IsObject()) {
    return fail("not a JSON object");
  }
  return doc;
}

std::optional<std::string> opt_string(const Value& obj, const char* key) {
  auto it = obj.FindMember(key);
  if (it == obj.MemberEnd() || !it->value.IsString()) {
    return std::nullopt;
  }
  return std::string(it->value.GetString(), it->value.GetStringLength());
}

std::optional<std::int64_t> opt_int(const Value& obj, const char* key) {
  auto it = obj.FindMember(key);
  if (it == obj.MemberEnd()) {
    return std::nullopt;
  }
  if (it->value.IsInt64()) {
    return it->value.GetInt64();
  }
  if (it->value.IsDouble()) {
    // Converting a double outside int64's range is undefined behaviour (x86 yields INT64_MIN):
    // such a number counts as absent.
    const double number = it->value.GetDouble();
    if (number >= -9223372036854775808.0 && number < 9223372036854775808.0) {
      return static_cast<std::int64_t>(number);
    }
  }
  return std::nullopt;
}

std::string to_compact_json(const Value& value) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  value.Accept(writer);
  return std::string(buffer.GetString(), buffer.GetSize());
}

Result<std::map<std::string, std::string>> parse_details(const Value& obj, const char* key) {
  std::map<std::string, std::string> out;
  auto it = obj.FindMember(key);
  if (it == obj.MemberEnd() || it->value.IsNull()) {
    return out;
  }
  if (!it->value.IsObject()) {
    return fail(std::string(key) + " is not an object");
  }
  for (auto m = it->value.MemberBegin(); m != it->value.MemberEnd(); ++m) {
    if (m->value.IsString()) {
      out[m->name.GetString()] = std::string(m->value.GetString(), m->value.GetStringLength());
    } else {
      out[m->name.GetString()] = to_compact_json(m->value);
    }
  }
  return out;
}

Result<JobSummary> parse_summary(const Value& v) {
  if (!v.IsObject()) {
    return fail("job summary is not an object");
  }
  JobSummary s;
  auto id = opt_string(v, "jobId");
  if (!id) {
    return fail("job summary without jobId");
  }
  s.job_id = *id;
  s.queued_at = timestamp_seconds(opt_int(v, "queuedAt").value_or(0));
  s.execution_number = opt_int(v, "executionNumber").value_or(0);
  s.version_number = opt_int(v, "versionNumber").value_or(0);
  return s;
}

Result<std::vector<JobSummary>> parse_summaries(const Value& obj, const char* key) {
  std::vector<JobSummary> out;
  auto it = obj.FindMember(key);
  if (it == obj.MemberEnd() || it->value.IsNull()) {
    return out;
  }
  if (!it->value.IsArray()) {
    return fail(std::string(key) + " is not an array");
  }
  for (const auto& v : it->value.GetArray()) {
    auto s = parse_summary(v);
    if (!s) {
      return fail(s.error().context(key));
    }
    out.push_back(std::move(*s));
  }
  return out;
}

Result<PendingJobs> parse_pending(const Value& obj, const char* in_progress, const char* queued) {
  PendingJobs p;
  auto a = parse_summaries(obj, in_progress);
  if (!a) {
    return fail(a.error());
  }
  auto b = parse_summaries(obj, queued);
  if (!b) {
    return fail(b.error());
  }
  p.in_progress = std::move(*a);
  p.queued = std::move(*b);
  return p;
}

Result<std::optional<ExecutionState>> parse_execution_state(const Value& obj) {
  auto it = obj.FindMember("executionState");
  if (it == obj.MemberEnd() || it->value.IsNull()) {
    return std::optional<ExecutionState>{};
  }
  if (!it->value.IsObject()) {
    return fail("executionState is not an object");
  }
  ExecutionState s;
  s.status = opt_string(it->value, "status").value_or("");
  auto details = parse_details(it->value, "statusDetails");
  if (!details) {
    return fail(details.error());
  }
  s.status_details = std::move(*details);
  s.version_number = opt_int(it->value, "versionNumber").value_or(0);
  return std::optional<ExecutionState>(std::move(s));
}

}  // namespace

std::int64_t timestamp_seconds(std::int64_t value) {
  return value > 100000000000LL ? value / 1000 : value;
}

bool is_terminal_status(std::string_view status) {
  return status == "SUCCEEDED" || status == "FAILED" || status == "TIMED_OUT" ||
         status == "REJECTED" || status == "REMOVED" || status == "CANCELED";
}

Result<PendingJobs> parse_get_accepted(std::string_view payload) {
  auto doc = parse_object(payload);
  if (!doc) {
    return fail(doc.error().context("get/accepted"));
  }
  auto p = parse_pending(*doc, "inProgressJobs", "queuedJobs");
  if (!p) {
    return fail(p.error().context("get/accepted"));
  }
  p->client_token = opt_string(*doc, "clientToken");
  return p;
}

Result<PendingJobs> parse_notify(std::string_view payload) {
  auto doc = parse_object(payload);
  if (!doc) {
    return fail(doc.error().context("notify"));
  }
  auto it = doc->FindMember("jobs");
  if (it == doc->MemberEnd() || it->value.IsNull()) {
    return PendingJobs{};
  }
  if (!it->value.IsObject()) {
    return fail("notify: jobs is not an object");
  }
  auto p = parse_pending(it->value, "IN_PROGRESS", "QUEUED");
  if (!p) {
    return fail(p.error().context("notify"));
  }
  return p;
}

Result<DescribeAccepted> parse_describe_accepted(std::string_view payload) {
  auto doc = parse_object(payload);
  if (!doc) {
    return fail(doc.error().context("describe accepted"));
  }
  DescribeAccepted out;
  out.client_token = opt_string(*doc, "clientToken");
  auto it = doc->FindMember("execution");
  if (it == doc->MemberEnd() || !it->value.IsObject()) {
    return fail("describe accepted: no execution");
  }
  const Value& e = it->value;
  auto id = opt_string(e, "jobId");
  if (!id) {
    return fail("describe accepted: execution without jobId");
  }
  out.execution.job_id = *id;
  out.execution.status = opt_string(e, "status").value_or("");
  auto details = parse_details(e, "statusDetails");
  if (!details) {
    return fail(details.error().context("describe accepted"));
  }
  out.execution.status_details = std::move(*details);
  out.execution.queued_at = timestamp_seconds(opt_int(e, "queuedAt").value_or(0));
  out.execution.version_number = opt_int(e, "versionNumber").value_or(0);
  out.execution.execution_number = opt_int(e, "executionNumber").value_or(0);
  auto d = e.FindMember("jobDocument");
  if (d != e.MemberEnd() && !d->value.IsNull()) {
    if (d->value.IsString()) {
      out.execution.document_json.assign(d->value.GetString(), d->value.GetStringLength());
    } else {
      out.execution.document_json = to_compact_json(d->value);
    }
  }
  return out;
}

Result<UpdateAccepted> parse_update_accepted(std::string_view payload) {
  auto doc = parse_object(payload);
  if (!doc) {
    return fail(doc.error().context("update accepted"));
  }
  UpdateAccepted out;
  out.client_token = opt_string(*doc, "clientToken");
  auto state = parse_execution_state(*doc);
  if (!state) {
    return fail(state.error().context("update accepted"));
  }
  out.execution_state = std::move(*state);
  return out;
}

Result<Rejected> parse_rejected(std::string_view payload) {
  auto doc = parse_object(payload);
  if (!doc) {
    return fail(doc.error().context("rejected"));
  }
  Rejected out;
  auto code = opt_string(*doc, "code");
  if (!code) {
    return fail("rejected: no code");
  }
  out.code = *code;
  out.message = opt_string(*doc, "message").value_or("");
  out.client_token = opt_string(*doc, "clientToken");
  auto state = parse_execution_state(*doc);
  if (!state) {
    return fail(state.error().context("rejected"));
  }
  out.execution_state = std::move(*state);
  return out;
}

namespace {
template <class F>
std::string write_object(F&& body) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  w.StartObject();
  body(w);
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

void key_string(rapidjson::Writer<rapidjson::StringBuffer>& w, const char* key,
                std::string_view value) {
  w.Key(key);
  w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
}
}  // namespace

std::string build_get_request(std::string_view client_token) {
  return write_object([&](auto& w) { key_string(w, "clientToken", client_token); });
}

std::string build_describe_request(std::string_view client_token,
                                   std::optional<std::int64_t> execution_number) {
  return write_object([&](auto& w) {
    if (execution_number) {
      w.Key("executionNumber");
      w.Int64(*execution_number);
    }
    w.Key("includeJobDocument");
    w.Bool(true);
    key_string(w, "clientToken", client_token);
  });
}

std::map<std::string, std::string> status_details_of(const UpdateRequest& r) {
  return {{"state", sanitize_status_detail(r.state)},
          {"message", sanitize_status_detail(r.message)}};
}

std::string build_update_request(const UpdateRequest& r) {
  const auto details = status_details_of(r);
  return write_object([&](auto& w) {
    key_string(w, "status", r.status);
    w.Key("statusDetails");
    w.StartObject();
    key_string(w, "state", details.at("state"));
    key_string(w, "message", details.at("message"));
    w.EndObject();
    if (r.step_timeout_minutes) {
      w.Key("stepTimeoutInMinutes");
      w.Int(*r.step_timeout_minutes);
    }
    if (r.expected_version) {
      w.Key("expectedVersion");
      w.Int64(*r.expected_version);
    }
    if (r.execution_number) {
      w.Key("executionNumber");
      w.Int64(*r.execution_number);
    }
    if (r.include_execution_state) {
      w.Key("includeJobExecutionState");
      w.Bool(true);
    }
    key_string(w, "clientToken", r.client_token);
  });
}

}  // namespace upparat::jobs
