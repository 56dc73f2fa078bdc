#include "emulator/jobs_model.hpp"

#include <algorithm>
#include <cctype>
#include <set>
#include <utility>

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include "common/sanitize.hpp"
#include "emulator/json.hpp"

namespace upparat::emulator {
namespace {

using Writer = JsonWriter;
using Details = std::map<std::string, std::string>;

constexpr const char* kPrefix = "$aws/things/";
constexpr const char* kPlaceholder = "${aws:iot:s3-presigned-url:";
constexpr int kMaxStepTimeoutMinutes = 10080;

std::size_t utf8_chars(const std::string& text) {
  std::size_t n = 0;
  for (unsigned char c : text) {
    if ((c & 0xC0) != 0x80) {
      ++n;
    }
  }
  return n;
}

bool chars_in(const std::string& text, bool allow_colon) {
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '_' || c == '-' || (allow_colon && c == ':')) {
      continue;
    }
    return false;
  }
  return true;
}

void write_summary(Writer& w, const Execution& e) {
  w.StartObject();
  put(w, "jobId", e.job_id);
  write_execution_times(w, e);
  w.EndObject();
}

/// An array of the summaries of the executions in `status`.
void write_summaries(Writer& w, const std::vector<Execution*>& executions, ExecStatus status) {
  w.StartArray();
  for (const Execution* e : executions) {
    if (e->status == status) {
      write_summary(w, *e);
    }
  }
  w.EndArray();
}

void write_execution(Writer& w, const Execution& e, const std::string* document) {
  w.StartObject();
  put(w, "jobId", e.job_id);
  put(w, "thingName", e.thing_name);
  if (document) {
    w.Key("jobDocument");
    w.RawValue(document->data(), document->size(), rapidjson::kObjectType);
  }
  write_status(w, e.status, e.status_details);
  write_execution_times(w, e);
  w.EndObject();
}

void write_execution_state(Writer& w, const Execution& e) {
  w.StartObject();
  write_status(w, e.status, e.status_details);
  put(w, "versionNumber", e.version_number);
  w.EndObject();
}

/// Validates statusDetails; returns an error message or "".
std::string check_status_details(const rapidjson::Value& value, Details& out) {
  if (!value.IsObject()) {
    return "statusDetails must be an object of strings";
  }
  for (auto it = value.MemberBegin(); it != value.MemberEnd(); ++it) {
    std::string key(it->name.GetString(), it->name.GetStringLength());
    if (key.empty() || utf8_chars(key) > 128 || !chars_in(key, true)) {
      return "statusDetails key '" + key + "' must be 1-128 characters of [a-zA-Z0-9:_-]";
    }
    if (!it->value.IsString()) {
      return "statusDetails value of '" + key + "' must be a string";
    }
    std::string v(it->value.GetString(), it->value.GetStringLength());
    if (!is_valid_status_detail(v)) {
      return "statusDetails value of '" + key +
             "' must be 1-1024 characters (UTF-16 units) matching [^\\p{C}]: no control, "
             "format, surrogate, private-use or unassigned character";
    }
    out[key] = v;
  }
  return "";
}

std::string json_escape_url(const std::string& url) {
  std::string out;
  for (char c : url) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
    }
    out.push_back(c);
  }
  return out;
}

/// Finds every placeholder URL of a document.
std::vector<std::string> placeholder_urls(const std::string& document) {
  std::vector<std::string> urls;
  std::size_t pos = 0;
  const std::string prefix = kPlaceholder;
  while ((pos = document.find(prefix, pos)) != std::string::npos) {
    std::size_t end = document.find('}', pos);
    if (end == std::string::npos) {
      break;
    }
    urls.push_back(document.substr(pos + prefix.size(), end - pos - prefix.size()));
    pos = end + 1;
  }
  return urls;
}

struct Request {
  std::string thing;
  std::string topic;
  rapidjson::Document body;
  std::optional<std::string> client_token;
};

std::string rejected_payload(const std::string& code, const std::string& message,
                             const std::optional<std::string>& client_token, long long ts,
                             const Execution* state) {
  return write_json([&](Writer& w) {
    w.StartObject();
    put(w, "code", code);
    put(w, "message", message);
    if (client_token) {
      put(w, "clientToken", *client_token);
    }
    put(w, "timestamp", ts);
    if (state) {
      w.Key("executionState");
      write_execution_state(w, *state);
    }
    w.EndObject();
  });
}

}  // namespace

// ---------------------------------------------------------------------------------------------
namespace {
constexpr std::pair<ExecStatus, const char*> kStatusNames[] = {
    {ExecStatus::Queued, "QUEUED"},       {ExecStatus::InProgress, "IN_PROGRESS"},
    {ExecStatus::Succeeded, "SUCCEEDED"}, {ExecStatus::Failed, "FAILED"},
    {ExecStatus::TimedOut, "TIMED_OUT"},  {ExecStatus::Rejected, "REJECTED"},
    {ExecStatus::Removed, "REMOVED"},     {ExecStatus::Canceled, "CANCELED"}};
}  // namespace

const char* to_string(ExecStatus status) {
  for (const auto& [s, name] : kStatusNames) {
    if (s == status) {
      return name;
    }
  }
  return "UNKNOWN";
}

std::optional<ExecStatus> exec_status_from_string(const std::string& text) {
  for (const auto& [s, name] : kStatusNames) {
    if (text == name) {
      return s;
    }
  }
  return std::nullopt;
}

const char* to_string(RetryConfig::FailureType type) {
  switch (type) {
    case RetryConfig::FailureType::Failed:
      return "FAILED";
    case RetryConfig::FailureType::TimedOut:
      return "TIMED_OUT";
    case RetryConfig::FailureType::All:
      return "ALL";
  }
  return "ALL";
}

std::optional<RetryConfig::FailureType> failure_type_from_string(const std::string& text) {
  for (auto type : {RetryConfig::FailureType::Failed, RetryConfig::FailureType::TimedOut,
                    RetryConfig::FailureType::All}) {
    if (text == to_string(type)) {
      return type;
    }
  }
  return std::nullopt;
}

bool is_terminal(ExecStatus status) {
  return status != ExecStatus::Queued && status != ExecStatus::InProgress;
}

bool valid_thing_name(const std::string& name) {
  return !name.empty() && name.size() <= 128 && chars_in(name, true);
}

Result<S3Location> parse_s3_url(const std::string& url) {
  // A placeholder holds an https S3 object URL; the S3 side knows how to read its forms.
  if (url.rfind("https://", 0) != 0) {
    return fail("S3 URL '" + url + "' must start with https://");
  }
  auto ref = parse_s3_object_url(url);
  if (!ref) {
    return fail(ref.error().context("S3 URL '" + url + "'"));
  }
  return *ref;
}

// ---------------------------------------------------------------------------------------------
JobsModel::JobsModel(std::shared_ptr<Clock> clock, Presigner presigner, ModelOptions options)
    : clock_(std::move(clock)), presigner_(std::move(presigner)), options_(options) {}

void JobsModel::set_faults(const Faults& faults) {
  std::lock_guard lock(mutex_);
  faults_ = faults;
}

Faults JobsModel::faults() const {
  std::lock_guard lock(mutex_);
  return faults_;
}

void JobsModel::set_options(const ModelOptions& options) {
  std::lock_guard lock(mutex_);
  options_ = options;
}

ModelOptions JobsModel::options() const {
  std::lock_guard lock(mutex_);
  return options_;
}

std::vector<Outgoing> JobsModel::handle(const std::string& topic, const std::string& payload) {
  // AWS's message broker refuses such a publish (PAYLOAD_LIMIT_EXCEEDED): the Jobs service
  // never sees it, so there is no answer at all.
  if (payload.size() > kMaxMqttPayloadBytes) {
    return {};
  }
  std::lock_guard lock(mutex_);
  std::vector<Outgoing> out;
  expire_timers_locked(out);
  auto responses = handle_locked(topic, payload);
  out.insert(out.end(), responses.begin(), responses.end());
  return apply_faults_locked(std::move(out));
}

std::vector<Outgoing> JobsModel::tick() {
  std::lock_guard lock(mutex_);
  std::vector<Outgoing> out;
  expire_timers_locked(out);
  return apply_faults_locked(std::move(out));
}

Outgoing JobsModel::notify_message(const std::string& thing) {
  std::lock_guard lock(mutex_);
  std::vector<Outgoing> out;
  notify_locked(thing, out);
  return out.front();
}

std::vector<Outgoing> JobsModel::advance_clock(long long seconds) {
  clock_->advance(std::chrono::seconds(seconds));
  return tick();
}

std::vector<Outgoing> JobsModel::apply_faults_locked(std::vector<Outgoing> out) {
  std::vector<Outgoing> result;
  for (auto& m : out) {
    OutputFaults& f =
        m.kind == Outgoing::Kind::Response ? faults_.responses : faults_.notifications;
    m.delay_ms = f.delay_ms;
    if (f.drop_next > 0) {
      --f.drop_next;
      continue;
    }
    if (f.duplicate_next > 0) {
      --f.duplicate_next;
      result.push_back(m);
    }
    result.push_back(std::move(m));
  }
  return result;
}

Execution* JobsModel::find_locked(const std::string& thing, const std::string& job_id) {
  auto it = executions_.find(thing);
  if (it == executions_.end()) {
    return nullptr;
  }
  Execution* latest = nullptr;
  for (auto& e : it->second) {
    if (e.job_id == job_id && !e.deleted) {
      latest = &e;
    }
  }
  return latest;
}

Execution* JobsModel::find_numbered_locked(const std::string& thing, const std::string& job_id,
                                           std::optional<long long> number) {
  Execution* current = find_locked(thing, job_id);
  if (!current || !number || *number == current->execution_number) {
    return current;
  }
  if (options_.forget_earlier_executions) {
    return nullptr;
  }
  for (auto& e : executions_[thing]) {
    if (e.job_id == job_id && !e.deleted && e.execution_number == *number) {
      return &e;
    }
  }
  return nullptr;
}

void JobsModel::retry_locked(const Execution& ended) {
  const Job& job = jobs_.at(ended.job_id);
  if (!job.retry || job.status != "IN_PROGRESS") {
    return;
  }
  using Type = RetryConfig::FailureType;
  int allowed = 0;
  for (const auto& c : job.retry->criteria) {
    if (c.failure_type == Type::All ||
        (c.failure_type == Type::Failed && ended.status == ExecStatus::Failed) ||
        (c.failure_type == Type::TimedOut && ended.status == ExecStatus::TimedOut)) {
      allowed = std::max(allowed, c.number_of_retries);
    }
  }
  if (ended.execution_number > allowed) {  // execution n follows n - 1 retries
    return;
  }
  Execution next;
  next.job_id = ended.job_id;
  next.thing_name = ended.thing_name;
  next.execution_number = ended.execution_number + 1;
  next.queued_at = next.last_updated_at = now();
  next.seq = ++seq_;
  next.history.push_back({ExecStatus::Queued, {}, next.queued_at, 1, "retry"});
  executions_[ended.thing_name].push_back(std::move(next));
}

std::vector<Execution*> JobsModel::pending_locked(const std::string& thing) {
  std::vector<Execution*> result;
  auto it = executions_.find(thing);
  if (it == executions_.end()) {
    return result;
  }
  for (auto& e : it->second) {
    if (!e.deleted && e.status == ExecStatus::InProgress) {
      result.push_back(&e);
    }
  }
  const auto in_progress = result.size();
  for (auto& e : it->second) {
    if (!e.deleted && e.status == ExecStatus::Queued) {
      result.push_back(&e);
    }
  }
  std::stable_sort(
      result.begin() + static_cast<std::ptrdiff_t>(in_progress), result.end(),
      [](const Execution* a, const Execution* b) { return a->queued_at < b->queued_at; });
  return result;
}

Execution* JobsModel::head_locked(const std::string& thing) {
  auto pending = pending_locked(thing);
  return pending.empty() ? nullptr : pending.front();
}

std::optional<std::string> JobsModel::head_id_locked(const std::string& thing) {
  Execution* head = head_locked(thing);
  if (!head) {
    return std::nullopt;
  }
  return head->job_id + "#" + std::to_string(head->execution_number);
}

std::string JobsModel::resolve_document_locked(const Job& job) const {
  if (!job.url_expiry_seconds || !presigner_) {
    return job.document;
  }
  std::string doc;
  const std::string& src = job.document;
  const std::string prefix = kPlaceholder;
  std::size_t pos = 0;
  while (true) {
    std::size_t start = src.find(prefix, pos);
    std::size_t end = start == std::string::npos ? std::string::npos : src.find('}', start);
    if (end == std::string::npos) {
      doc += src.substr(pos);
      break;
    }
    doc += src.substr(pos, start - pos);
    std::string url = src.substr(start + prefix.size(), end - start - prefix.size());
    auto loc = parse_s3_url(url);
    if (loc) {
      doc += json_escape_url(presigner_(loc->bucket, loc->key, *job.url_expiry_seconds));
    } else {
      doc += src.substr(start, end + 1 - start);
    }
    pos = end + 1;
  }
  return doc;
}

void JobsModel::notify_locked(const std::string& thing, std::vector<Outgoing>& out) {
  auto pending = pending_locked(thing);
  if (pending.size() > options_.notify_limit) {
    pending.resize(options_.notify_limit);
  }
  std::string payload = write_json([&](Writer& w) {
    w.StartObject();
    put(w, "timestamp", now());
    w.Key("jobs");
    w.StartObject();
    for (ExecStatus s : {ExecStatus::InProgress, ExecStatus::Queued}) {
      bool any = std::any_of(pending.begin(), pending.end(),
                             [s](const Execution* e) { return e->status == s; });
      if (any) {
        w.Key(to_string(s));
        write_summaries(w, pending, s);
      }
    }
    w.EndObject();
    w.EndObject();
  });
  out.push_back({kPrefix + thing + "/jobs/notify", payload, Outgoing::Kind::Notification, 0});
}

void JobsModel::notify_next_locked(const std::string& thing, std::vector<Outgoing>& out) {
  Execution* head = head_locked(thing);
  std::string doc = head ? resolve_document_locked(jobs_.at(head->job_id)) : "";
  std::string payload = write_json([&](Writer& w) {
    w.StartObject();
    put(w, "timestamp", now());
    if (head) {
      w.Key("execution");
      write_execution(w, *head, &doc);
    }
    w.EndObject();
  });
  out.push_back({kPrefix + thing + "/jobs/notify-next", payload, Outgoing::Kind::Notification, 0});
}

void JobsModel::after_change_locked(const std::string& thing,
                                    const std::optional<std::string>& old_head, bool status_changed,
                                    std::vector<Outgoing>& out) {
  if (status_changed) {
    notify_locked(thing, out);
  }
  if (head_id_locked(thing) != old_head) {
    notify_next_locked(thing, out);
  }
}

void JobsModel::set_status_locked(Execution& e, ExecStatus status, const std::string& cause) {
  long long ts = now();
  if (status == ExecStatus::InProgress && e.status == ExecStatus::Queued) {
    e.started_at = ts;
    const Job& job = jobs_.at(e.job_id);
    if (job.in_progress_timeout_minutes) {
      e.in_progress_deadline = ts + 60LL * *job.in_progress_timeout_minutes;
    }
  }
  e.status = status;
  e.last_updated_at = ts;
  ++e.version_number;
  if (is_terminal(status)) {
    e.step_deadline.reset();
    e.in_progress_deadline.reset();
  }
  e.history.push_back({status, e.status_details, ts, e.version_number, cause});
}

void JobsModel::update_job_status_locked(const std::string& job_id) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end() || it->second.status != "IN_PROGRESS") {
    return;
  }
  for (const auto& thing : it->second.things) {
    Execution* e = find_locked(thing, job_id);
    if (e && !is_terminal(e->status)) {
      return;
    }
  }
  it->second.status = "COMPLETED";
}

void JobsModel::expire_timers_locked(std::vector<Outgoing>& out) {
  long long ts = now();
  for (auto& [thing, list] : executions_) {
    for (std::size_t i = 0; i < list.size(); ++i) {
      Execution& e = list[i];
      if (e.deleted || e.status != ExecStatus::InProgress) {
        continue;
      }
      bool step = e.step_deadline && *e.step_deadline <= ts;
      bool in_progress = e.in_progress_deadline && *e.in_progress_deadline <= ts;
      if (!step && !in_progress) {
        continue;
      }
      auto old_head = head_id_locked(thing);
      set_status_locked(e, ExecStatus::TimedOut, step ? "step-timeout" : "in-progress-timeout");
      std::string job_id = e.job_id;
      retry_locked(e);  // may reallocate `list`; the loop goes on by index
      after_change_locked(thing, old_head, true, out);
      update_job_status_locked(job_id);
    }
  }
}

// ---------------------------------------------------------------------------------------------
std::vector<Outgoing> JobsModel::handle_locked(const std::string& topic,
                                               const std::string& payload) {
  std::vector<Outgoing> out;
  const std::string prefix = kPrefix;
  if (topic.rfind(prefix, 0) != 0) {
    return out;
  }
  auto thing_end = topic.find('/', prefix.size());
  if (thing_end == std::string::npos) {
    return out;
  }
  std::string thing = topic.substr(prefix.size(), thing_end - prefix.size());
  const std::string jobs = "/jobs/";
  if (topic.compare(thing_end, jobs.size(), jobs) != 0) {
    return out;
  }
  std::string rest = topic.substr(thing_end + jobs.size());
  std::vector<std::string> segs;
  {
    std::size_t p = 0;
    while (true) {
      auto n = rest.find('/', p);
      segs.push_back(rest.substr(p, n == std::string::npos ? std::string::npos : n - p));
      if (n == std::string::npos) {
        break;
      }
      p = n + 1;
    }
  }
  // Our own publications come back through the broker: ignore them.
  if (segs.back() == "accepted" || segs.back() == "rejected") {
    return out;
  }
  if (rest == "notify" || rest == "notify-next") {
    return out;
  }

  long long ts = now();
  std::optional<std::string> token;
  auto reject = [&](const std::string& code, const std::string& message,
                    const Execution* state = nullptr) {
    out.push_back({topic + "/rejected", rejected_payload(code, message, token, ts, state),
                   Outgoing::Kind::Response, 0});
    return out;
  };

  enum class Op { Get, StartNext, Describe, Update } op;
  std::string job_id;
  if (segs.size() == 1 && segs[0] == "get") {
    op = Op::Get;
  } else if (segs.size() == 1 && segs[0] == "start-next") {
    op = Op::StartNext;
  } else if (segs.size() == 2 && segs[1] == "get") {
    op = Op::Describe;
    job_id = segs[0];
  } else if (segs.size() == 2 && segs[1] == "update") {
    op = Op::Update;
    job_id = segs[0];
  } else {
    return reject("InvalidTopic", "Unknown topic " + topic);
  }

  rapidjson::Document body;
  if (payload.empty()) {
    body.SetObject();
  } else {
    body.Parse<rapidjson::kParseValidateEncodingFlag | rapidjson::kParseIterativeFlag>(
        payload.data(), payload.size());
    if (body.HasParseError()) {
      return reject("InvalidJson", std::string("Could not parse the request as JSON: ") +
                                       rapidjson::GetParseError_En(body.GetParseError()));
    }
    if (!body.IsObject()) {
      return reject("InvalidJson", "The request must be a JSON object");
    }
  }
  if (body.HasMember("clientToken")) {
    if (!body["clientToken"].IsString()) {
      return reject("InvalidRequest", "clientToken must be a string");
    }
    token = std::string(body["clientToken"].GetString(), body["clientToken"].GetStringLength());
  }
  if (!valid_thing_name(thing)) {
    return reject("InvalidRequest",
                  "Thing name '" + thing + "' must be 1-128 characters of [a-zA-Z0-9:_-]");
  }
  if ((op == Op::Describe && job_id != "$next" && !valid_job_id(job_id)) ||
      (op == Op::Update && !valid_job_id(job_id))) {
    return reject("InvalidRequest",
                  "Job id '" + job_id + "' must be 1-64 characters of [a-zA-Z0-9_-]");
  }
  auto get_bool = [&](const char* name, bool fallback, std::string& error) {
    if (!body.HasMember(name)) {
      return fallback;
    }
    if (!body[name].IsBool()) {
      error = std::string(name) + " must be a boolean";
      return fallback;
    }
    return body[name].GetBool();
  };
  auto get_int = [&](const char* name, std::optional<long long>& value) -> std::string {
    if (!body.HasMember(name)) {
      return "";
    }
    if (!body[name].IsInt64()) {
      return std::string(name) + " must be an integer";
    }
    value = body[name].GetInt64();
    return "";
  };

  auto accepted = [&](const std::function<void(Writer&)>& fill) {
    std::string payload = write_json([&](Writer& w) {
      w.StartObject();
      fill(w);
      put(w, "timestamp", ts);
      if (token) {
        put(w, "clientToken", *token);
      }
      w.EndObject();
    });
    out.push_back({topic + "/accepted", payload, Outgoing::Kind::Response, 0});
  };

  switch (op) {
    case Op::Get: {
      auto pending = pending_locked(thing);
      accepted([&](Writer& w) {
        for (ExecStatus s : {ExecStatus::InProgress, ExecStatus::Queued}) {
          w.Key(s == ExecStatus::InProgress ? "inProgressJobs" : "queuedJobs");
          write_summaries(w, pending, s);
        }
      });
      return out;
    }
    case Op::StartNext: {
      Details details;
      bool has_details = body.HasMember("statusDetails");
      if (has_details) {
        std::string error = check_status_details(body["statusDetails"], details);
        if (!error.empty()) {
          return reject("InvalidRequest", error);
        }
      }
      std::optional<long long> step;
      if (auto error = get_int("stepTimeoutInMinutes", step); !error.empty()) {
        return reject("InvalidRequest", error);
      }
      if (step && (*step < 1 || *step > kMaxStepTimeoutMinutes)) {
        return reject("InvalidRequest", "stepTimeoutInMinutes must be 1-10080");
      }
      Execution* head = head_locked(thing);
      if (!head) {
        accepted([](Writer&) {});
        return out;
      }
      std::vector<Outgoing> notes;
      if (head->status == ExecStatus::Queued) {
        auto old_head = head_id_locked(thing);
        if (has_details) {
          head->status_details = details;
        }
        set_status_locked(*head, ExecStatus::InProgress, "start-next");
        if (step) {
          head->step_deadline = ts + 60 * *step;
        }
        after_change_locked(thing, old_head, true, notes);
      }
      const Job& job = jobs_.at(head->job_id);
      std::string doc = resolve_document_locked(job);
      accepted([&](Writer& w) {
        w.Key("execution");
        write_execution(w, *head, &doc);
      });
      out.insert(out.end(), notes.begin(), notes.end());
      return out;
    }
    case Op::Describe: {
      std::string error;
      bool include_doc = get_bool("includeJobDocument", true, error);
      if (!error.empty()) {
        return reject("InvalidRequest", error);
      }
      std::optional<long long> number;
      if (auto e = get_int("executionNumber", number); !e.empty()) {
        return reject("InvalidRequest", e);
      }
      if (options_.describe_ignores_execution_number) {
        number.reset();
      }
      Execution* e =
          job_id == "$next" ? head_locked(thing) : find_numbered_locked(thing, job_id, number);
      if (job_id == "$next" && !e) {
        accepted([](Writer&) {});
        return out;
      }
      if (!e || (job_id == "$next" && number && *number != e->execution_number)) {
        return reject("ResourceNotFound", "No job execution of " + job_id + " for thing " + thing);
      }
      if (is_terminal(e->status) && options_.terminal_state_reached_on_describe) {
        return reject("TerminalStateReached", "The job execution is in a terminal state");
      }
      std::string doc = include_doc ? resolve_document_locked(jobs_.at(e->job_id)) : "";
      accepted([&](Writer& w) {
        w.Key("execution");
        write_execution(w, *e, include_doc ? &doc : nullptr);
      });
      return out;
    }
    case Op::Update: {
      if (faults_.reject_updates_next > 0) {
        --faults_.reject_updates_next;
        return reject(faults_.reject_updates_code, faults_.reject_updates_code == "RequestThrottled"
                                                       ? "Rate exceeded"
                                                       : "Internal error");
      }
      if (!body.HasMember("status") || !body["status"].IsString()) {
        return reject("InvalidRequest", "status is required and must be a string");
      }
      auto status = exec_status_from_string(body["status"].GetString());
      if (!status || !(status == ExecStatus::InProgress || status == ExecStatus::Failed ||
                       status == ExecStatus::Succeeded || status == ExecStatus::Rejected)) {
        return reject(
            "InvalidRequest",
            std::string("status must be IN_PROGRESS, FAILED, SUCCEEDED or REJECTED, not ") +
                body["status"].GetString());
      }
      Details details;
      bool has_details = body.HasMember("statusDetails");
      if (has_details) {
        std::string error = check_status_details(body["statusDetails"], details);
        if (!error.empty()) {
          return reject("InvalidRequest", error);
        }
      }
      std::optional<long long> expected, number, step;
      for (auto [name, slot] :
           {std::pair{"expectedVersion", &expected}, std::pair{"executionNumber", &number},
            std::pair{"stepTimeoutInMinutes", &step}}) {
        if (auto error = get_int(name, *slot); !error.empty()) {
          return reject("InvalidRequest", error);
        }
      }
      if (step && *step != -1 && (*step < 1 || *step > kMaxStepTimeoutMinutes)) {
        return reject("InvalidRequest",
                      "stepTimeoutInMinutes must be 1-10080, or -1 to clear the step timer");
      }
      std::string error;
      bool include_state = get_bool("includeJobExecutionState", false, error);
      bool include_doc = get_bool("includeJobDocument", false, error);
      if (!error.empty()) {
        return reject("InvalidRequest", error);
      }

      Execution* e = find_numbered_locked(thing, job_id, number);
      if (!e) {
        return reject("ResourceNotFound", "No job execution of " + job_id + " for thing " + thing);
      }
      const bool stale = expected && *expected != e->version_number;
      auto version_mismatch = [&] {
        return reject("VersionMismatch",
                      "expectedVersion " + std::to_string(*expected) + " does not match version " +
                          std::to_string(e->version_number),
                      e);
      };
      if (stale && options_.version_mismatch_before_terminal) {
        return version_mismatch();
      }
      if (is_terminal(e->status)) {
        return reject(
            "InvalidStateTransition",
            std::string("The job execution is ") + to_string(e->status) + ", a terminal state", e);
      }
      if (stale) {
        return version_mismatch();
      }
      auto old_head = head_id_locked(thing);
      bool changed = e->status != *status;
      if (has_details) {
        e->status_details = details;
      }
      set_status_locked(*e, *status, "update");
      if (*status == ExecStatus::InProgress && step) {
        if (*step == -1) {
          e->step_deadline.reset();
        } else {
          e->step_deadline = ts + 60 * *step;
        }
      }
      std::string doc = include_doc ? resolve_document_locked(jobs_.at(job_id)) : "";
      accepted([&](Writer& w) {
        if (include_state) {
          w.Key("executionState");
          write_execution_state(w, *e);
        }
        if (include_doc) {
          w.Key("jobDocument");
          w.RawValue(doc.data(), doc.size(), rapidjson::kObjectType);
        }
      });
      if (*status == ExecStatus::Failed) {
        retry_locked(*e);  // `e` may dangle from here
      }
      after_change_locked(thing, old_head, changed, out);
      update_job_status_locked(job_id);
      return out;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
Result<std::vector<Outgoing>> JobsModel::create_job(const JobSpec& spec) {
  if (!valid_job_id(spec.job_id)) {
    return fail("InvalidRequest: job id '" + spec.job_id +
                "' must be 1-64 characters of [a-zA-Z0-9_-]");
  }
  if (utf8_chars(spec.document) > kMaxJobDocumentChars) {
    return fail("InvalidRequest: the job document has more than 32768 characters");
  }
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseValidateEncodingFlag | rapidjson::kParseIterativeFlag>(
      spec.document.data(), spec.document.size());
  if (doc.HasParseError() || !doc.IsObject()) {
    return fail("InvalidRequest: the job document must be a JSON object");
  }
  if (spec.things.empty()) {
    return fail("InvalidRequest: a job needs at least one thing");
  }
  for (const auto& t : spec.things) {
    if (!valid_thing_name(t)) {
      return fail("InvalidRequest: thing name '" + t +
                  "' must be 1-128 characters of [a-zA-Z0-9:_-]");
    }
  }
  if (spec.in_progress_timeout_minutes &&
      (*spec.in_progress_timeout_minutes < 1 ||
       *spec.in_progress_timeout_minutes > kMaxStepTimeoutMinutes)) {
    return fail("InvalidRequest: the in-progress timeout must be 1-10080 minutes");
  }
  if (spec.retry) {
    for (const auto& c : spec.retry->criteria) {
      if (c.number_of_retries < 0 || c.number_of_retries > 10) {
        return fail("InvalidRequest: numberOfRetries must be 0-10");
      }
    }
  }
  if (spec.url_expiry_seconds &&
      (*spec.url_expiry_seconds < 60 || *spec.url_expiry_seconds > 3600)) {
    return fail("InvalidRequest: the pre-signed URL expiry must be 60-3600 seconds");
  }
  if (spec.presign) {
    for (const auto& url : placeholder_urls(spec.document)) {
      if (auto loc = parse_s3_url(url); !loc) {
        return fail(loc.error().context("InvalidRequest"));
      }
    }
  }
  std::lock_guard lock(mutex_);
  std::vector<Outgoing> out;
  expire_timers_locked(out);
  if (jobs_.count(spec.job_id)) {
    return fail("ResourceAlreadyExists: job " + spec.job_id + " already exists");
  }
  Job job;
  job.job_id = spec.job_id;
  job.document = spec.document;
  for (const auto& t : spec.things) {
    if (std::find(job.things.begin(), job.things.end(), t) == job.things.end()) {
      job.things.push_back(t);
    }
  }
  job.in_progress_timeout_minutes = spec.in_progress_timeout_minutes;
  job.retry = spec.retry;
  if (spec.presign) {
    job.url_expiry_seconds = spec.url_expiry_seconds.value_or(options_.url_expiry_seconds);
  }
  long long ts = now();
  job.created_at = ts;
  job.seq = ++seq_;
  jobs_[job.job_id] = job;
  for (const auto& thing : job.things) {
    auto old_head = head_id_locked(thing);
    Execution e;
    e.job_id = job.job_id;
    e.thing_name = thing;
    e.queued_at = spec.queued_at.value_or(ts);
    e.last_updated_at = ts;
    e.seq = ++seq_;
    e.history.push_back({ExecStatus::Queued, {}, ts, 1, "created"});
    executions_[thing].push_back(std::move(e));
    after_change_locked(thing, old_head, true, out);
  }
  return apply_faults_locked(std::move(out));
}

Result<std::vector<Outgoing>> JobsModel::cancel_job(const std::string& job_id, bool force) {
  std::lock_guard lock(mutex_);
  std::vector<Outgoing> out;
  expire_timers_locked(out);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) {
    return fail("ResourceNotFound: no job " + job_id);
  }
  if (it->second.status == "COMPLETED") {
    return fail("InvalidRequest: job " + job_id + " is already completed");
  }
  it->second.status = "CANCELED";
  it->second.force_canceled = it->second.force_canceled || force;
  for (const auto& thing : it->second.things) {
    Execution* e = find_locked(thing, job_id);
    if (!e) {
      continue;
    }
    if (e->status == ExecStatus::Queued || (force && e->status == ExecStatus::InProgress)) {
      auto old_head = head_id_locked(thing);
      set_status_locked(*e, ExecStatus::Canceled, force ? "cancel --force" : "cancel");
      after_change_locked(thing, old_head, true, out);
    }
  }
  return apply_faults_locked(std::move(out));
}

Result<std::vector<Outgoing>> JobsModel::delete_execution(const std::string& thing,
                                                          const std::string& job_id, bool force) {
  std::lock_guard lock(mutex_);
  std::vector<Outgoing> out;
  expire_timers_locked(out);
  Execution* e = find_locked(thing, job_id);
  if (!e) {
    return fail("ResourceNotFound: no execution of job " + job_id + " on thing " + thing);
  }
  if (!is_terminal(e->status) && !force) {
    return fail(std::string("InvalidRequest: the execution is ") + to_string(e->status) +
                "; only a terminal execution can be deleted without force");
  }
  bool was_pending = !is_terminal(e->status);
  auto old_head = head_id_locked(thing);
  e->deleted = true;
  e->step_deadline.reset();
  e->in_progress_deadline.reset();
  e->history.push_back({e->status, e->status_details, now(), e->version_number, "deleted"});
  if (was_pending) {
    after_change_locked(thing, old_head, true, out);
  }
  update_job_status_locked(job_id);
  return apply_faults_locked(std::move(out));
}

std::vector<Job> JobsModel::jobs() const {
  std::lock_guard lock(mutex_);
  std::vector<Job> result;
  for (const auto& [id, job] : jobs_) {
    result.push_back(job);
  }
  std::sort(result.begin(), result.end(), [](const Job& a, const Job& b) { return a.seq < b.seq; });
  return result;
}

std::optional<Job> JobsModel::job(const std::string& job_id) const {
  std::lock_guard lock(mutex_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) {
    return std::nullopt;
  }
  return it->second;
}

std::vector<Execution> JobsModel::executions(const std::string& thing,
                                             const std::string& job_id) const {
  std::lock_guard lock(mutex_);
  std::vector<Execution> result;
  for (const auto& [name, list] : executions_) {
    if (!thing.empty() && name != thing) {
      continue;
    }
    for (const auto& e : list) {
      if (job_id.empty() || e.job_id == job_id) {
        result.push_back(e);
      }
    }
  }
  std::sort(result.begin(), result.end(),
            [](const Execution& a, const Execution& b) { return a.seq < b.seq; });
  return result;
}

// ---------------------------------------------------------------------------------------------
std::string JobsModel::save() const {
  std::lock_guard lock(mutex_);
  return write_json([this](Writer& w) {
    w.StartObject();
    put(w, "seq", seq_);
    w.Key("jobs");
    w.StartArray();
    for (const auto& [id, j] : jobs_) {
      w.StartObject();
      put(w, "jobId", j.job_id);
      put(w, "document", j.document);
      w.Key("things");
      w.StartArray();
      for (const auto& t : j.things) {
        w.String(t);
      }
      w.EndArray();
      write_optional_int(w, "inProgressTimeoutMinutes", j.in_progress_timeout_minutes);
      write_optional_int(w, "urlExpirySeconds", j.url_expiry_seconds);
      if (j.retry) {
        write_retry_config(w, *j.retry);
      }
      put(w, "status", j.status);
      put(w, "forceCanceled", j.force_canceled);
      put(w, "createdAt", j.created_at);
      put(w, "seq", j.seq);
      w.EndObject();
    }
    w.EndArray();
    w.Key("executions");
    w.StartArray();
    for (const auto& [thing, list] : executions_) {
      for (const auto& e : list) {
        write_execution_record(w, e, {"stepDeadline", "inProgressDeadline", true});
      }
    }
    w.EndArray();
    w.EndObject();
  });
}

Status JobsModel::load(const std::string& json) {
  rapidjson::Document d;
  d.Parse<rapidjson::kParseIterativeFlag>(json.data(), json.size());
  if (d.HasParseError() || !d.IsObject()) {
    return fail("emulator state is not a JSON object");
  }
  auto str = [](const rapidjson::Value& v, const char* k) {
    return json_string(v, k).value_or("");
  };
  std::map<std::string, Job> jobs;
  std::map<std::string, std::vector<Execution>> executions;
  if (!d.HasMember("jobs") || !d["jobs"].IsArray() || !d.HasMember("executions") ||
      !d["executions"].IsArray()) {
    return fail("emulator state lacks jobs or executions");
  }
  for (const auto& v : d["jobs"].GetArray()) {
    if (!v.IsObject()) {
      return fail("emulator state: a job is not an object");
    }
    Job j;
    j.job_id = str(v, "jobId");
    j.document = str(v, "document");
    auto things = json_strings(v, "things");
    if (!things) {
      return fail("emulator state: a thing of job '" + j.job_id + "' is not a string");
    }
    j.things = std::move(*things);
    if (auto n = json_int(v, "inProgressTimeoutMinutes")) {
      j.in_progress_timeout_minutes = static_cast<int>(*n);
    }
    if (auto n = json_int(v, "urlExpirySeconds")) {
      j.url_expiry_seconds = static_cast<int>(*n);
    }
    auto retry = read_retry_config(v);
    if (!retry) {
      return fail("emulator state: job '" + j.job_id + "': " + retry.error().message());
    }
    j.retry = *retry;
    j.status = str(v, "status");
    j.force_canceled = json_bool(v, "forceCanceled", false);
    j.created_at = json_int(v, "createdAt").value_or(0);
    j.seq = json_int(v, "seq").value_or(0);
    if (!valid_job_id(j.job_id)) {
      return fail("emulator state: invalid job id '" + j.job_id + "'");
    }
    jobs[j.job_id] = j;
  }
  for (const auto& v : d["executions"].GetArray()) {
    if (!v.IsObject()) {
      return fail("emulator state: an execution is not an object");
    }
    Execution e;
    e.job_id = str(v, "jobId");
    e.thing_name = str(v, "thingName");
    auto status = exec_status_from_string(str(v, "status"));
    if (!status || !jobs.count(e.job_id) || !valid_thing_name(e.thing_name)) {
      return fail("emulator state: invalid execution of job '" + e.job_id + "'");
    }
    e.status = *status;
    e.status_details = json_string_map(v, "statusDetails");
    e.queued_at = json_int(v, "queuedAt").value_or(0);
    e.started_at = json_int(v, "startedAt");
    e.last_updated_at = json_int(v, "lastUpdatedAt").value_or(0);
    e.version_number = json_int(v, "versionNumber").value_or(1);
    e.execution_number = json_int(v, "executionNumber").value_or(1);
    e.seq = json_int(v, "seq").value_or(0);
    e.step_deadline = json_int(v, "stepDeadline");
    e.in_progress_deadline = json_int(v, "inProgressDeadline");
    e.deleted = json_bool(v, "deleted", false);
    if (v.HasMember("history") && v["history"].IsArray()) {
      for (const auto& h : v["history"].GetArray()) {
        if (!h.IsObject()) {
          continue;
        }
        StatusChange c;
        c.status = exec_status_from_string(str(h, "status")).value_or(ExecStatus::Queued);
        c.status_details = json_string_map(h, "statusDetails");
        c.at = json_int(h, "at").value_or(0);
        c.version_number = json_int(h, "versionNumber").value_or(0);
        c.cause = str(h, "cause");
        e.history.push_back(c);
      }
    }
    executions[e.thing_name].push_back(e);
  }
  for (auto& [thing, list] : executions) {
    std::sort(list.begin(), list.end(),
              [](const Execution& a, const Execution& b) { return a.seq < b.seq; });
  }
  std::lock_guard lock(mutex_);
  jobs_ = std::move(jobs);
  executions_ = std::move(executions);
  seq_ = json_int(d, "seq").value_or(0);
  return {};
}

}  // namespace upparat::emulator
