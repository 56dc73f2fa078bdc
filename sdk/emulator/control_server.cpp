#include "emulator/control_server.hpp"

#include <chrono>
#include <thread>

#include <httplib.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/spdlog.h>

#include "emulator/s3/s3_server.hpp"

namespace upparat::emulator {
namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

void write_details(Writer& w, const std::map<std::string, std::string>& details) {
  w.StartObject();
  for (const auto& [k, v] : details) {
    w.Key(k.data(), static_cast<rapidjson::SizeType>(k.size()));
    w.String(v);
  }
  w.EndObject();
}

void write_execution(Writer& w, const Execution& e) {
  auto opt = [&w](const char* key, const std::optional<long long>& v) {
    if (v) {
      w.Key(key);
      w.Int64(*v);
    }
  };
  w.StartObject();
  w.Key("jobId");
  w.String(e.job_id);
  w.Key("thingName");
  w.String(e.thing_name);
  w.Key("status");
  w.String(to_string(e.status));
  w.Key("statusDetails");
  write_details(w, e.status_details);
  w.Key("queuedAt");
  w.Int64(e.queued_at);
  opt("startedAt", e.started_at);
  w.Key("lastUpdatedAt");
  w.Int64(e.last_updated_at);
  w.Key("versionNumber");
  w.Int64(e.version_number);
  w.Key("executionNumber");
  w.Int64(e.execution_number);
  opt("stepTimeoutAt", e.step_deadline);
  opt("inProgressTimeoutAt", e.in_progress_deadline);
  w.Key("deleted");
  w.Bool(e.deleted);
  w.Key("history");
  w.StartArray();
  for (const auto& h : e.history) {
    w.StartObject();
    w.Key("status");
    w.String(to_string(h.status));
    w.Key("statusDetails");
    write_details(w, h.status_details);
    w.Key("at");
    w.Int64(h.at);
    w.Key("versionNumber");
    w.Int64(h.version_number);
    w.Key("cause");
    w.String(h.cause);
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
}

void write_job(Writer& w, const Job& job, const std::vector<Execution>& executions) {
  w.StartObject();
  w.Key("jobId");
  w.String(job.job_id);
  w.Key("status");
  w.String(job.status);
  w.Key("forceCanceled");
  w.Bool(job.force_canceled);
  w.Key("createdAt");
  w.Int64(job.created_at);
  w.Key("things");
  w.StartArray();
  for (const auto& t : job.things)
    w.String(t);
  w.EndArray();
  if (job.in_progress_timeout_minutes) {
    w.Key("inProgressTimeoutMinutes");
    w.Int(*job.in_progress_timeout_minutes);
  }
  w.Key("presignedUrl");
  w.Bool(job.url_expiry_seconds.has_value());
  if (job.url_expiry_seconds) {
    w.Key("urlExpirySeconds");
    w.Int(*job.url_expiry_seconds);
  }
  w.Key("document");
  w.RawValue(job.document.data(), job.document.size(), rapidjson::kObjectType);
  w.Key("executions");
  w.StartArray();
  for (const auto& e : executions)
    write_execution(w, e);
  w.EndArray();
  w.EndObject();
}

void reply(httplib::Response& res, int status, const std::string& body) {
  res.status = status;
  res.set_content(body, "application/json");
}

void reply_error(httplib::Response& res, int status, const std::string& message) {
  rapidjson::StringBuffer sb;
  Writer w(sb);
  w.StartObject();
  w.Key("error");
  w.String(message);
  w.EndObject();
  reply(res, status, sb.GetString());
}

/// Maps a model error ("Code: message") to an HTTP status.
int status_of(const Error& error) {
  const auto& m = error.message();
  if (m.rfind("ResourceNotFound", 0) == 0)
    return 404;
  if (m.rfind("ResourceAlreadyExists", 0) == 0)
    return 409;
  return 400;
}

bool parse_body(const httplib::Request& req, httplib::Response& res, rapidjson::Document& body) {
  if (req.body.empty()) {
    body.SetObject();
    return true;
  }
  body.Parse<rapidjson::kParseIterativeFlag>(req.body.data(), req.body.size());
  if (body.HasParseError() || !body.IsObject()) {
    reply_error(res, 400, "the request body must be a JSON object");
    return false;
  }
  return true;
}

std::optional<std::string> get_string(const rapidjson::Value& v, const char* key) {
  if (v.HasMember(key) && v[key].IsString())
    return std::string(v[key].GetString(), v[key].GetStringLength());
  return std::nullopt;
}

std::optional<long long> get_int(const rapidjson::Value& v, const char* key) {
  if (v.HasMember(key) && v[key].IsInt64())
    return v[key].GetInt64();
  return std::nullopt;
}

bool get_bool(const rapidjson::Value& v, const char* key, bool fallback) {
  if (v.HasMember(key) && v[key].IsBool())
    return v[key].GetBool();
  return fallback;
}

std::string faults_to_json(const Faults& f, const ModelOptions& o) {
  rapidjson::StringBuffer sb;
  Writer w(sb);
  auto out = [&w](const char* key, const OutputFaults& of) {
    w.Key(key);
    w.StartObject();
    w.Key("drop");
    w.Int(of.drop_next);
    w.Key("duplicate");
    w.Int(of.duplicate_next);
    w.Key("delayMs");
    w.Int(of.delay_ms);
    w.EndObject();
  };
  w.StartObject();
  out("responses", f.responses);
  out("notifications", f.notifications);
  w.Key("rejectUpdates");
  w.StartObject();
  w.Key("count");
  w.Int(f.reject_updates_next);
  w.Key("code");
  w.String(f.reject_updates_code);
  w.EndObject();
  w.Key("terminalStateReachedOnDescribe");
  w.Bool(o.terminal_state_reached_on_describe);
  w.EndObject();
  return sb.GetString();
}

}  // namespace

std::string job_to_json(const Job& job, const std::vector<Execution>& executions) {
  rapidjson::StringBuffer sb;
  Writer w(sb);
  write_job(w, job, executions);
  return sb.GetString();
}

std::string execution_to_json(const Execution& execution) {
  rapidjson::StringBuffer sb;
  Writer w(sb);
  write_execution(w, execution);
  return sb.GetString();
}

struct ControlServer::Impl {
  ControlContext ctx;
  httplib::Server server;
  std::thread thread;
  std::uint16_t port = 0;

  ~Impl() {
    server.stop();
    if (thread.joinable())
      thread.join();
  }

  void changed(std::vector<Outgoing> out) {
    if (ctx.publish)
      ctx.publish(std::move(out));
    if (ctx.after_change)
      ctx.after_change();
  }

  void routes() {
    server.Get("/health", [](const httplib::Request&, httplib::Response& res) {
      reply(res, 200, R"({"ok":true})");
    });

    server.Post("/jobs", [this](const httplib::Request& req, httplib::Response& res) {
      rapidjson::Document body;
      if (!parse_body(req, res, body))
        return;
      JobSpec spec;
      spec.job_id = get_string(body, "jobId").value_or("");
      if (body.HasMember("document") && body["document"].IsString()) {
        spec.document = body["document"].GetString();
      } else if (body.HasMember("document") && body["document"].IsObject()) {
        rapidjson::StringBuffer sb;
        Writer w(sb);
        body["document"].Accept(w);
        spec.document = sb.GetString();
      } else {
        return reply_error(res, 400, "document (a JSON object, or its text) is required");
      }
      if (body.HasMember("things") && body["things"].IsArray()) {
        for (const auto& t : body["things"].GetArray()) {
          if (!t.IsString())
            return reply_error(res, 400, "things must be strings");
          spec.things.push_back(t.GetString());
        }
      }
      if (auto v = get_int(body, "inProgressTimeoutMinutes"))
        spec.in_progress_timeout_minutes = static_cast<int>(*v);
      if (auto v = get_int(body, "urlExpirySeconds"))
        spec.url_expiry_seconds = static_cast<int>(*v);
      spec.presign = get_bool(body, "presignedUrl", true);
      auto out = ctx.model->create_job(spec);
      if (!out)
        return reply_error(res, status_of(out.error()), out.error().message());
      changed(std::move(*out));
      reply(res, 201,
            job_to_json(*ctx.model->job(spec.job_id), ctx.model->executions("", spec.job_id)));
    });

    server.Get("/jobs", [this](const httplib::Request&, httplib::Response& res) {
      rapidjson::StringBuffer sb;
      Writer w(sb);
      w.StartObject();
      w.Key("jobs");
      w.StartArray();
      for (const auto& job : ctx.model->jobs())
        write_job(w, job, ctx.model->executions("", job.job_id));
      w.EndArray();
      w.EndObject();
      reply(res, 200, sb.GetString());
    });

    server.Get(R"(/jobs/([A-Za-z0-9_-]+))",
               [this](const httplib::Request& req, httplib::Response& res) {
                 auto job = ctx.model->job(req.matches[1]);
                 if (!job)
                   return reply_error(res, 404, "no job " + std::string(req.matches[1]));
                 reply(res, 200, job_to_json(*job, ctx.model->executions("", job->job_id)));
               });

    server.Post(R"(/jobs/([A-Za-z0-9_-]+)/cancel)",
                [this](const httplib::Request& req, httplib::Response& res) {
                  rapidjson::Document body;
                  if (!parse_body(req, res, body))
                    return;
                  std::string id = req.matches[1];
                  auto out = ctx.model->cancel_job(id, get_bool(body, "force", false));
                  if (!out)
                    return reply_error(res, status_of(out.error()), out.error().message());
                  changed(std::move(*out));
                  reply(res, 200, job_to_json(*ctx.model->job(id), ctx.model->executions("", id)));
                });

    server.Get("/executions", [this](const httplib::Request& req, httplib::Response& res) {
      rapidjson::StringBuffer sb;
      Writer w(sb);
      w.StartObject();
      w.Key("executions");
      w.StartArray();
      for (const auto& e :
           ctx.model->executions(req.get_param_value("thing"), req.get_param_value("jobId"))) {
        write_execution(w, e);
      }
      w.EndArray();
      w.EndObject();
      reply(res, 200, sb.GetString());
    });

    server.Delete(R"(/things/([A-Za-z0-9:_-]+)/jobs/([A-Za-z0-9_-]+))",
                  [this](const httplib::Request& req, httplib::Response& res) {
                    bool force = req.get_param_value("force") == "true";
                    auto out = ctx.model->delete_execution(req.matches[1], req.matches[2], force);
                    if (!out)
                      return reply_error(res, status_of(out.error()), out.error().message());
                    changed(std::move(*out));
                    reply(res, 200, R"({"deleted":true})");
                  });

    server.Get("/clock", [this](const httplib::Request&, httplib::Response& res) {
      reply(res, 200, "{\"now\":" + std::to_string(ctx.model->now()) + "}");
    });

    server.Post("/clock/advance", [this](const httplib::Request& req, httplib::Response& res) {
      rapidjson::Document body;
      if (!parse_body(req, res, body))
        return;
      auto seconds = get_int(body, "seconds");
      if (!seconds || *seconds < 0)
        return reply_error(res, 400, "seconds (a non-negative integer) is required");
      changed(ctx.model->advance_clock(*seconds));
      reply(res, 200, "{\"now\":" + std::to_string(ctx.model->now()) + "}");
    });

    server.Get("/faults", [this](const httplib::Request&, httplib::Response& res) {
      reply(res, 200, faults_to_json(ctx.model->faults(), ctx.model->options()));
    });

    server.Put("/faults", [this](const httplib::Request& req, httplib::Response& res) {
      rapidjson::Document body;
      if (!parse_body(req, res, body))
        return;
      Faults f = ctx.model->faults();
      for (auto [key, slot] :
           {std::pair{"responses", &f.responses}, std::pair{"notifications", &f.notifications}}) {
        if (!body.HasMember(key))
          continue;
        const auto& v = body[key];
        if (!v.IsObject())
          return reply_error(res, 400, std::string(key) + " must be an object");
        slot->drop_next = static_cast<int>(get_int(v, "drop").value_or(slot->drop_next));
        slot->duplicate_next =
            static_cast<int>(get_int(v, "duplicate").value_or(slot->duplicate_next));
        slot->delay_ms = static_cast<int>(get_int(v, "delayMs").value_or(slot->delay_ms));
      }
      if (body.HasMember("rejectUpdates")) {
        const auto& v = body["rejectUpdates"];
        if (!v.IsObject())
          return reply_error(res, 400, "rejectUpdates must be an object");
        f.reject_updates_next = static_cast<int>(get_int(v, "count").value_or(0));
        f.reject_updates_code = get_string(v, "code").value_or("RequestThrottled");
        if (f.reject_updates_code != "RequestThrottled" &&
            f.reject_updates_code != "InternalError") {
          return reply_error(res, 400,
                             "rejectUpdates.code must be RequestThrottled or InternalError");
        }
      }
      ModelOptions o = ctx.model->options();
      o.terminal_state_reached_on_describe =
          get_bool(body, "terminalStateReachedOnDescribe", o.terminal_state_reached_on_describe);
      ctx.model->set_options(o);
      ctx.model->set_faults(f);
      reply(res, 200, faults_to_json(f, o));
    });

    server.Delete("/faults", [this](const httplib::Request&, httplib::Response& res) {
      ctx.model->set_faults({});
      ModelOptions o = ctx.model->options();
      o.terminal_state_reached_on_describe = false;
      ctx.model->set_options(o);
      reply(res, 200, faults_to_json({}, o));
    });

    // --- S3 side ---
    server.Post("/s3/objects", [this](const httplib::Request& req, httplib::Response& res) {
      rapidjson::Document body;
      if (!parse_body(req, res, body))
        return;
      if (!ctx.s3)
        return reply_error(res, 503, "no S3 server");
      auto bucket = get_string(body, "bucket");
      auto key = get_string(body, "key");
      if (!bucket || !key || bucket->empty() || key->empty())
        return reply_error(res, 400, "bucket and key are required");
      Status st;
      if (auto file = get_string(body, "file")) {
        st = ctx.s3->put_object_file(*bucket, *key, *file);
      } else if (auto data = get_string(body, "data")) {
        st = ctx.s3->put_object(*bucket, *key, *data);
      } else {
        return reply_error(res, 400, "file (a local path) or data is required");
      }
      if (!st)
        return reply_error(res, 400, st.error().message());
      rapidjson::StringBuffer sb;
      Writer w(sb);
      w.StartObject();
      w.Key("bucket");
      w.String(*bucket);
      w.Key("key");
      w.String(*key);
      w.Key("etag");
      w.String(ctx.s3->etag(*bucket, *key).value_or(""));
      w.Key("url");
      w.String("https://s3.amazonaws.com/" + *bucket + "/" + *key);
      w.EndObject();
      reply(res, 201, sb.GetString());
    });

    server.Post("/s3/presign", [this](const httplib::Request& req, httplib::Response& res) {
      rapidjson::Document body;
      if (!parse_body(req, res, body))
        return;
      if (!ctx.s3)
        return reply_error(res, 503, "no S3 server");
      auto bucket = get_string(body, "bucket");
      auto key = get_string(body, "key");
      if (!bucket || !key)
        return reply_error(res, 400, "bucket and key are required");
      auto expiry =
          get_int(body, "expirySeconds").value_or(ctx.model->options().url_expiry_seconds);
      rapidjson::StringBuffer sb;
      Writer w(sb);
      w.StartObject();
      w.Key("url");
      w.String(ctx.s3->presign(*bucket, *key, std::chrono::seconds(expiry)));
      w.EndObject();
      reply(res, 200, sb.GetString());
    });

    server.Post("/s3/faults", [this](const httplib::Request& req, httplib::Response& res) {
      rapidjson::Document body;
      if (!parse_body(req, res, body))
        return;
      if (!ctx.s3)
        return reply_error(res, 503, "no S3 server");
      auto bucket = get_string(body, "bucket");
      auto key = get_string(body, "key");
      if (!bucket || !key)
        return reply_error(res, 400, "bucket and key are required");
      S3Fault f;
      auto u64 = [&](const char* name, std::optional<uint64_t>& slot) {
        if (auto v = get_int(body, name); v && *v >= 0)
          slot = static_cast<uint64_t>(*v);
      };
      u64("closeAfterBytes", f.close_after_bytes);
      u64("resetAfterBytes", f.reset_after_bytes);
      u64("stallAfterBytes", f.stall_after_bytes);
      u64("rateLimitBytesPerSecond", f.rate_limit_bytes_per_second);
      u64("corruptOffset", f.corrupt_offset);
      if (auto v = get_int(body, "stallMs"))
        f.stall_ms = static_cast<int>(*v);
      if (auto v = get_int(body, "errorStatus"))
        f.error_status = static_cast<int>(*v);
      f.ignore_range = get_bool(body, "ignoreRange", false);
      f.times = static_cast<int>(get_int(body, "times").value_or(1));
      auto st = ctx.s3->add_fault(*bucket, *key, f);
      if (!st)
        return reply_error(res, 400, st.error().message());
      reply(res, 201, R"({"added":true})");
    });

    server.Delete("/s3/faults", [this](const httplib::Request&, httplib::Response& res) {
      if (!ctx.s3)
        return reply_error(res, 503, "no S3 server");
      ctx.s3->clear_faults();
      reply(res, 200, R"({"cleared":true})");
    });

    server.Get("/s3/stats", [this](const httplib::Request& req, httplib::Response& res) {
      if (!ctx.s3)
        return reply_error(res, 503, "no S3 server");
      auto s = ctx.s3->stats(req.get_param_value("bucket"), req.get_param_value("key"));
      reply(res, 200,
            "{\"requests\":" + std::to_string(s.requests) +
                ",\"getRequests\":" + std::to_string(s.get_requests) +
                ",\"faultedRequests\":" + std::to_string(s.faulted_requests) +
                ",\"bodyBytesSent\":" + std::to_string(s.body_bytes_sent) + "}");
    });

    server.set_exception_handler(
        [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
          std::string what = "internal error";
          try {
            if (ep)
              std::rethrow_exception(ep);
          } catch (const std::exception& e) {
            what = e.what();
          } catch (...) {
          }
          reply_error(res, 500, what);
        });
  }
};

ControlServer::ControlServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ControlServer::~ControlServer() = default;
std::uint16_t ControlServer::port() const {
  return impl_->port;
}

Result<std::unique_ptr<ControlServer>> ControlServer::start(std::uint16_t port,
                                                            ControlContext context) {
  auto impl = std::make_unique<Impl>();
  impl->ctx = std::move(context);
  impl->routes();
  if (port == 0) {
    int p = impl->server.bind_to_any_port("127.0.0.1");
    if (p <= 0)
      return fail("control channel: cannot bind 127.0.0.1");
    impl->port = static_cast<std::uint16_t>(p);
  } else {
    if (!impl->server.bind_to_port("127.0.0.1", port)) {
      return fail("control channel: cannot bind 127.0.0.1:" + std::to_string(port));
    }
    impl->port = port;
  }
  Impl* raw = impl.get();
  raw->thread = std::thread([raw] { raw->server.listen_after_bind(); });
  return std::unique_ptr<ControlServer>(new ControlServer(std::move(impl)));
}

}  // namespace upparat::emulator
