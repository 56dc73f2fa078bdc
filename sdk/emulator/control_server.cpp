#include "emulator/control_server.hpp"

#include <chrono>
#include <thread>

#include <httplib.h>
#include <rapidjson/document.h>
#include <spdlog/spdlog.h>

#include "emulator/json.hpp"
#include "emulator/s3/s3_server.hpp"

namespace upparat::emulator {
namespace {

using Writer = JsonWriter;

void write_execution(Writer& w, const Execution& e) {
  write_execution_record(w, e, {"stepTimeoutAt", "inProgressTimeoutAt", false});
}

void write_job(Writer& w, const Job& job, const std::vector<Execution>& executions) {
  w.StartObject();
  put(w, "jobId", job.job_id);
  put(w, "status", job.status);
  put(w, "forceCanceled", job.force_canceled);
  put(w, "createdAt", job.created_at);
  w.Key("things");
  w.StartArray();
  for (const auto& t : job.things) {
    w.String(t);
  }
  w.EndArray();
  write_optional_int(w, "inProgressTimeoutMinutes", job.in_progress_timeout_minutes);
  put(w, "presignedUrl", job.url_expiry_seconds.has_value());
  write_optional_int(w, "urlExpirySeconds", job.url_expiry_seconds);
  if (job.retry) {
    write_retry_config(w, *job.retry);
  }
  w.Key("document");
  w.RawValue(job.document.data(), job.document.size(), rapidjson::kObjectType);
  w.Key("executions");
  w.StartArray();
  for (const auto& e : executions) {
    write_execution(w, e);
  }
  w.EndArray();
  w.EndObject();
}

void reply(httplib::Response& res, int status, const std::string& body) {
  res.status = status;
  res.set_content(body, "application/json");
}

/// Replies with a JSON object of one string member.
void reply_member(httplib::Response& res, int status, const char* key, const std::string& value) {
  reply(res, status, write_json([&](Writer& w) {
          w.StartObject();
          put(w, key, value);
          w.EndObject();
        }));
}

void reply_error(httplib::Response& res, int status, const std::string& message) {
  reply_member(res, status, "error", message);
}

/// Maps a model error ("Code: message") to an HTTP status.
int status_of(const Error& error) {
  const auto& m = error.message();
  if (m.rfind("ResourceNotFound", 0) == 0) {
    return 404;
  }
  if (m.rfind("ResourceAlreadyExists", 0) == 0) {
    return 409;
  }
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

/// Parses an S3 control request into `body` and returns its bucket and key; replies with the
/// error when the body is not an object, there is no S3 side or a name is missing.
struct S3Target {
  std::string bucket;
  std::string key;
};
std::optional<S3Target> s3_request(const ControlContext& ctx, const httplib::Request& req,
                                   httplib::Response& res, rapidjson::Document& body) {
  if (!parse_body(req, res, body)) {
    return std::nullopt;
  }
  if (!ctx.s3) {
    reply_error(res, 503, "no S3 server");
    return std::nullopt;
  }
  auto bucket = json_string(body, "bucket");
  auto key = json_string(body, "key");
  if (!bucket || !key || bucket->empty() || key->empty()) {
    reply_error(res, 400, "bucket and key are required");
    return std::nullopt;
  }
  return S3Target{*bucket, *key};
}

/// Writes {"<key>": [items...]} with `write_item` for each item.
template <typename Items, typename WriteItem>
std::string list_to_json(const char* key, const Items& items, WriteItem write_item) {
  return write_json([&](Writer& w) {
    w.StartObject();
    w.Key(key);
    w.StartArray();
    for (const auto& item : items) {
      write_item(w, item);
    }
    w.EndArray();
    w.EndObject();
  });
}

std::string faults_to_json(const Faults& f, const ModelOptions& o) {
  return write_json([&](Writer& w) {
    auto out = [&w](const char* key, const OutputFaults& of) {
      w.Key(key);
      w.StartObject();
      put(w, "drop", of.drop_next);
      put(w, "duplicate", of.duplicate_next);
      put(w, "delayMs", of.delay_ms);
      w.EndObject();
    };
    w.StartObject();
    out("responses", f.responses);
    out("notifications", f.notifications);
    w.Key("rejectUpdates");
    w.StartObject();
    put(w, "count", f.reject_updates_next);
    put(w, "code", f.reject_updates_code);
    w.EndObject();
    put(w, "terminalStateReachedOnDescribe", o.terminal_state_reached_on_describe);
    put(w, "versionMismatchBeforeTerminal", o.version_mismatch_before_terminal);
    put(w, "forgetEarlierExecutions", o.forget_earlier_executions);
    put(w, "describeIgnoresExecutionNumber", o.describe_ignores_execution_number);
    w.EndObject();
  });
}

}  // namespace

std::string job_to_json(const Job& job, const std::vector<Execution>& executions) {
  return write_json([&](Writer& w) { write_job(w, job, executions); });
}

std::string execution_to_json(const Execution& execution) {
  return write_json([&](Writer& w) { write_execution(w, execution); });
}

struct ControlServer::Impl {
  ControlContext ctx;
  httplib::Server server;
  std::thread thread;
  std::uint16_t port = 0;

  ~Impl() {
    server.stop();
    if (thread.joinable()) {
      thread.join();
    }
  }

  void changed(std::vector<Outgoing> out) {
    if (ctx.publish) {
      ctx.publish(std::move(out));
    }
    if (ctx.after_change) {
      ctx.after_change();
    }
  }

  void routes() {
    server.Get("/health", [](const httplib::Request&, httplib::Response& res) {
      reply(res, 200, R"({"ok":true})");
    });

    server.Post("/jobs", [this](const httplib::Request& req, httplib::Response& res) {
      rapidjson::Document body;
      if (!parse_body(req, res, body)) {
        return;
      }
      JobSpec spec;
      spec.job_id = json_string(body, "jobId").value_or("");
      if (body.HasMember("document") && body["document"].IsString()) {
        spec.document = body["document"].GetString();
      } else if (body.HasMember("document") && body["document"].IsObject()) {
        spec.document = to_json(body["document"]);
      } else {
        return reply_error(res, 400, "document (a JSON object, or its text) is required");
      }
      auto things = json_strings(body, "things");
      if (!things) {
        return reply_error(res, 400, "things must be strings");
      }
      spec.things = std::move(*things);
      if (auto v = json_int(body, "inProgressTimeoutMinutes")) {
        spec.in_progress_timeout_minutes = static_cast<int>(*v);
      }
      if (auto v = json_int(body, "urlExpirySeconds")) {
        spec.url_expiry_seconds = static_cast<int>(*v);
      }
      spec.presign = json_bool(body, "presignedUrl", true);
      if (auto retry = read_retry_config(body); !retry) {
        return reply_error(res, 400, retry.error().message());
      } else {
        spec.retry = *retry;
      }
      auto out = ctx.model->create_job(spec);
      if (!out) {
        return reply_error(res, status_of(out.error()), out.error().message());
      }
      changed(std::move(*out));
      reply(res, 201,
            job_to_json(*ctx.model->job(spec.job_id), ctx.model->executions("", spec.job_id)));
    });

    server.Get("/jobs", [this](const httplib::Request&, httplib::Response& res) {
      reply(res, 200, list_to_json("jobs", ctx.model->jobs(), [this](Writer& w, const Job& job) {
              write_job(w, job, ctx.model->executions("", job.job_id));
            }));
    });

    server.Get(R"(/jobs/([A-Za-z0-9_-]+))",
               [this](const httplib::Request& req, httplib::Response& res) {
                 auto job = ctx.model->job(req.matches[1]);
                 if (!job) {
                   return reply_error(res, 404, "no job " + std::string(req.matches[1]));
                 }
                 reply(res, 200, job_to_json(*job, ctx.model->executions("", job->job_id)));
               });

    server.Post(R"(/jobs/([A-Za-z0-9_-]+)/cancel)",
                [this](const httplib::Request& req, httplib::Response& res) {
                  rapidjson::Document body;
                  if (!parse_body(req, res, body)) {
                    return;
                  }
                  std::string id = req.matches[1];
                  auto out = ctx.model->cancel_job(id, json_bool(body, "force", false));
                  if (!out) {
                    return reply_error(res, status_of(out.error()), out.error().message());
                  }
                  changed(std::move(*out));
                  reply(res, 200, job_to_json(*ctx.model->job(id), ctx.model->executions("", id)));
                });

    server.Get("/executions", [this](const httplib::Request& req, httplib::Response& res) {
      reply(res, 200,
            list_to_json(
                "executions",
                ctx.model->executions(req.get_param_value("thing"), req.get_param_value("jobId")),
                write_execution));
    });

    server.Delete(R"(/things/([A-Za-z0-9:_-]+)/jobs/([A-Za-z0-9_-]+))",
                  [this](const httplib::Request& req, httplib::Response& res) {
                    bool force = req.get_param_value("force") == "true";
                    auto out = ctx.model->delete_execution(req.matches[1], req.matches[2], force);
                    if (!out) {
                      return reply_error(res, status_of(out.error()), out.error().message());
                    }
                    changed(std::move(*out));
                    reply(res, 200, R"({"deleted":true})");
                  });

    server.Get("/clock", [this](const httplib::Request&, httplib::Response& res) {
      reply(res, 200, "{\"now\":" + std::to_string(ctx.model->now()) + "}");
    });

    server.Post("/clock/advance", [this](const httplib::Request& req, httplib::Response& res) {
      rapidjson::Document body;
      if (!parse_body(req, res, body)) {
        return;
      }
      auto seconds = json_int(body, "seconds");
      if (!seconds || *seconds < 0) {
        return reply_error(res, 400, "seconds (a non-negative integer) is required");
      }
      changed(ctx.model->advance_clock(*seconds));
      reply(res, 200, "{\"now\":" + std::to_string(ctx.model->now()) + "}");
    });

    server.Get("/faults", [this](const httplib::Request&, httplib::Response& res) {
      reply(res, 200, faults_to_json(ctx.model->faults(), ctx.model->options()));
    });

    server.Put("/faults", [this](const httplib::Request& req, httplib::Response& res) {
      rapidjson::Document body;
      if (!parse_body(req, res, body)) {
        return;
      }
      Faults f = ctx.model->faults();
      for (auto [key, slot] :
           {std::pair{"responses", &f.responses}, std::pair{"notifications", &f.notifications}}) {
        if (!body.HasMember(key)) {
          continue;
        }
        const auto& v = body[key];
        if (!v.IsObject()) {
          return reply_error(res, 400, std::string(key) + " must be an object");
        }
        slot->drop_next = static_cast<int>(json_int(v, "drop").value_or(slot->drop_next));
        slot->duplicate_next =
            static_cast<int>(json_int(v, "duplicate").value_or(slot->duplicate_next));
        slot->delay_ms = static_cast<int>(json_int(v, "delayMs").value_or(slot->delay_ms));
      }
      if (body.HasMember("rejectUpdates")) {
        const auto& v = body["rejectUpdates"];
        if (!v.IsObject()) {
          return reply_error(res, 400, "rejectUpdates must be an object");
        }
        f.reject_updates_next = static_cast<int>(json_int(v, "count").value_or(0));
        f.reject_updates_code = json_string(v, "code").value_or("RequestThrottled");
        if (f.reject_updates_code != "RequestThrottled" &&
            f.reject_updates_code != "InternalError") {
          return reply_error(res, 400,
                             "rejectUpdates.code must be RequestThrottled or InternalError");
        }
      }
      ModelOptions o = ctx.model->options();
      o.terminal_state_reached_on_describe =
          json_bool(body, "terminalStateReachedOnDescribe", o.terminal_state_reached_on_describe);
      o.version_mismatch_before_terminal =
          json_bool(body, "versionMismatchBeforeTerminal", o.version_mismatch_before_terminal);
      o.forget_earlier_executions =
          json_bool(body, "forgetEarlierExecutions", o.forget_earlier_executions);
      o.describe_ignores_execution_number =
          json_bool(body, "describeIgnoresExecutionNumber", o.describe_ignores_execution_number);
      ctx.model->set_options(o);
      ctx.model->set_faults(f);
      reply(res, 200, faults_to_json(f, o));
    });

    server.Delete("/faults", [this](const httplib::Request&, httplib::Response& res) {
      ctx.model->set_faults({});
      ModelOptions o = ctx.model->options();
      o.terminal_state_reached_on_describe = false;
      o.version_mismatch_before_terminal = false;
      ctx.model->set_options(o);
      reply(res, 200, faults_to_json({}, o));
    });

    // --- S3 side ---
    server.Post("/s3/objects", [this](const httplib::Request& req, httplib::Response& res) {
      rapidjson::Document body;
      auto target = s3_request(ctx, req, res, body);
      if (!target) {
        return;
      }
      const std::string& bucket = target->bucket;
      const std::string& key = target->key;
      Status st;
      if (auto file = json_string(body, "file")) {
        st = ctx.s3->put_object_file(bucket, key, *file);
      } else if (auto data = json_string(body, "data")) {
        st = ctx.s3->put_object(bucket, key, *data);
      } else {
        return reply_error(res, 400, "file (a local path) or data is required");
      }
      if (!st) {
        return reply_error(res, 400, st.error().message());
      }
      reply(res, 201, write_json([&](Writer& w) {
              w.StartObject();
              put(w, "bucket", bucket);
              put(w, "key", key);
              put(w, "etag", ctx.s3->etag(bucket, key).value_or(""));
              put(w, "url", "https://s3.amazonaws.com/" + bucket + "/" + key);
              w.EndObject();
            }));
    });

    server.Post("/s3/presign", [this](const httplib::Request& req, httplib::Response& res) {
      rapidjson::Document body;
      auto target = s3_request(ctx, req, res, body);
      if (!target) {
        return;
      }
      auto expiry =
          json_int(body, "expirySeconds").value_or(ctx.model->options().url_expiry_seconds);
      reply_member(res, 200, "url",
                   ctx.s3->presign(target->bucket, target->key, std::chrono::seconds(expiry)));
    });

    server.Post("/s3/faults", [this](const httplib::Request& req, httplib::Response& res) {
      rapidjson::Document body;
      auto target = s3_request(ctx, req, res, body);
      if (!target) {
        return;
      }
      S3Fault f;
      auto u64 = [&](const char* name, std::optional<uint64_t>& slot) {
        if (auto v = json_int(body, name); v && *v >= 0) {
          slot = static_cast<uint64_t>(*v);
        }
      };
      u64("closeAfterBytes", f.close_after_bytes);
      u64("resetAfterBytes", f.reset_after_bytes);
      u64("stallAfterBytes", f.stall_after_bytes);
      u64("rateLimitBytesPerSecond", f.rate_limit_bytes_per_second);
      u64("corruptOffset", f.corrupt_offset);
      if (auto v = json_int(body, "stallMs")) {
        f.stall_ms = static_cast<int>(*v);
      }
      if (auto v = json_int(body, "errorStatus")) {
        f.error_status = static_cast<int>(*v);
      }
      f.ignore_range = json_bool(body, "ignoreRange", false);
      f.times = static_cast<int>(json_int(body, "times").value_or(1));
      auto st = ctx.s3->add_fault(target->bucket, target->key, f);
      if (!st) {
        return reply_error(res, 400, st.error().message());
      }
      reply(res, 201, R"({"added":true})");
    });

    server.Delete("/s3/faults", [this](const httplib::Request&, httplib::Response& res) {
      if (!ctx.s3) {
        return reply_error(res, 503, "no S3 server");
      }
      ctx.s3->clear_faults();
      reply(res, 200, R"({"cleared":true})");
    });

    server.Get("/s3/stats", [this](const httplib::Request& req, httplib::Response& res) {
      if (!ctx.s3) {
        return reply_error(res, 503, "no S3 server");
      }
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
            if (ep) {
              std::rethrow_exception(ep);
            }
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
    if (p <= 0) {
      return fail("control channel: cannot bind 127.0.0.1");
    }
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
