#include "support/emulator_fixture.hpp"

#include <curl/curl.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <regex>

namespace upparat::test {
namespace {

std::string quote(const std::string& s) {
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
  return sb.GetString();
}

size_t collect(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

Status ok(const Result<std::string>& r) {
  if (!r) {
    return fail(r.error());
  }
  return {};
}

}  // namespace

std::filesystem::path emulator_binary() {
#ifdef UPPARAT_EMULATOR_BIN
  return UPPARAT_EMULATOR_BIN;
#else
  return "upparat-jobs-emulator";
#endif
}

Result<HttpAnswer> http_request(const std::string& method, const std::string& url,
                                const std::string& body, const std::filesystem::path& ca) {
  CURL* curl = curl_easy_init();
  if (!curl) {
    return fail("curl_easy_init failed");
  }
  HttpAnswer answer;
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  if (method != "GET" && method != "DELETE") {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  }
  if (!ca.empty()) {
    curl_easy_setopt(curl, CURLOPT_CAINFO, ca.c_str());
  }
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &answer.body);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, 30L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
  CURLcode rc = curl_easy_perform(curl);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &answer.status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  if (rc != CURLE_OK) {
    return fail(method + " " + url + ": " + curl_easy_strerror(rc));
  }
  return answer;
}

std::string EmulatorFixture::control_url() const {
  return "http://127.0.0.1:" + std::to_string(control_port_);
}

Result<EmulatorFixture> EmulatorFixture::start(EmulatorOptions options) {
  EmulatorFixture fixture;
  auto dir = TempDir::create("emulator");
  if (!dir) {
    return fail(dir.error().context("emulator"));
  }
  fixture.dir_.emplace(std::move(*dir));
  std::vector<std::string> argv = {emulator_binary().string(), "serve", "--broker",
                                   options.broker_uri};
  if (options.ca) {
    std::error_code ec;
    auto cert = *fixture.dir_ / "s3.pem";
    auto key = *fixture.dir_ / "s3.key";
    std::filesystem::copy_file(options.ca->server().cert, cert, ec);
    if (!ec) {
      std::filesystem::copy_file(options.ca->server().key, key, ec);
    }
    if (ec) {
      return fail("emulator: copy the S3 certificate: " + ec.message());
    }
    argv.insert(argv.end(), {"--s3-cert", cert.string(), "--s3-key", key.string()});
  } else {
    argv.push_back("--s3-http");
  }
  if (!options.state_file.empty()) {
    argv.insert(argv.end(), {"--state", options.state_file.string()});
  }
  if (options.url_expiry_seconds) {
    argv.insert(argv.end(), {"--url-expiry", std::to_string(*options.url_expiry_seconds)});
  }
  if (options.terminal_state_reached) {
    argv.push_back("--terminal-state-reached");
  }
  argv.insert(argv.end(), options.extra_args.begin(), options.extra_args.end());

  ProcessOptions process_options;
  process_options.argv = argv;
  process_options.name = "upparat-jobs-emulator";
  process_options.log_path = *fixture.dir_ / "emulator.log";
  auto process = ServiceProcess::start(process_options);
  if (!process) {
    return fail(process.error().context("emulator"));
  }
  fixture.process_.emplace(std::move(*process));
  auto line = fixture.process_->wait_for_line("\"ready\":true", options.start_timeout);
  if (!line) {
    return fail(line.error().context("emulator did not get ready"));
  }
  rapidjson::Document d;
  auto start = line->find('{');
  d.Parse(line->c_str() + (start == std::string::npos ? 0 : start));
  if (d.HasParseError() || !d.IsObject() || !d.HasMember("control_port") ||
      !d.HasMember("s3_port") || !d.HasMember("s3_endpoint")) {
    return fail("emulator: unexpected ready line: " + *line);
  }
  fixture.control_port_ = static_cast<std::uint16_t>(d["control_port"].GetUint());
  fixture.s3_port_ = static_cast<std::uint16_t>(d["s3_port"].GetUint());
  fixture.s3_endpoint_ = d["s3_endpoint"].GetString();
  return fixture;
}

Result<std::string> EmulatorFixture::request(const std::string& method, const std::string& path,
                                             const std::string& body) const {
  auto answer = http_request(method, control_url() + path, body);
  if (!answer) {
    return fail(answer.error());
  }
  if (answer->status / 100 != 2) {
    return fail(method + " " + path + ": HTTP " + std::to_string(answer->status) + ": " +
                answer->body);
  }
  return answer->body;
}

Result<std::string> EmulatorFixture::create_job(const std::string& job_id,
                                                const std::string& document,
                                                const std::vector<std::string>& things,
                                                std::optional<int> in_progress_timeout_minutes,
                                                std::optional<int> url_expiry_seconds) const {
  std::string body =
      "{\"jobId\":" + quote(job_id) + ",\"document\":" + quote(document) + ",\"things\":[";
  for (std::size_t i = 0; i < things.size(); ++i) {
    body += (i ? "," : "") + quote(things[i]);
  }
  body += "]";
  if (in_progress_timeout_minutes) {
    body += ",\"inProgressTimeoutMinutes\":" + std::to_string(*in_progress_timeout_minutes);
  }
  if (url_expiry_seconds) {
    body += ",\"urlExpirySeconds\":" + std::to_string(*url_expiry_seconds);
  }
  body += "}";
  return request("POST", "/jobs", body);
}

Status EmulatorFixture::cancel_job(const std::string& job_id, bool force) const {
  return ok(request("POST", "/jobs/" + job_id + "/cancel", force ? R"({"force":true})" : "{}"));
}

Status EmulatorFixture::delete_execution(const std::string& thing, const std::string& job_id,
                                         bool force) const {
  return ok(
      request("DELETE", "/things/" + thing + "/jobs/" + job_id + (force ? "?force=true" : "")));
}

Result<std::string> EmulatorFixture::describe(const std::string& thing,
                                              const std::string& job_id) const {
  return request("GET", "/executions?thing=" + thing + "&jobId=" + job_id);
}

Result<std::string> EmulatorFixture::list_jobs() const {
  return request("GET", "/jobs");
}

Status EmulatorFixture::advance_clock(std::chrono::seconds by) const {
  return ok(request("POST", "/clock/advance", "{\"seconds\":" + std::to_string(by.count()) + "}"));
}

Status EmulatorFixture::put_object(const std::string& bucket, const std::string& key,
                                   const std::string& data) const {
  return ok(request("POST", "/s3/objects",
                    "{\"bucket\":" + quote(bucket) + ",\"key\":" + quote(key) +
                        ",\"data\":" + quote(data) + "}"));
}

Status EmulatorFixture::put_object_file(const std::string& bucket, const std::string& key,
                                        const std::filesystem::path& file) const {
  return ok(request("POST", "/s3/objects",
                    "{\"bucket\":" + quote(bucket) + ",\"key\":" + quote(key) +
                        ",\"file\":" + quote(std::filesystem::absolute(file).string()) + "}"));
}

Result<std::string> EmulatorFixture::presign(const std::string& bucket, const std::string& key,
                                             std::chrono::seconds expiry) const {
  auto r = request("POST", "/s3/presign",
                   "{\"bucket\":" + quote(bucket) + ",\"key\":" + quote(key) +
                       ",\"expirySeconds\":" + std::to_string(expiry.count()) + "}");
  if (!r) {
    return r;
  }
  rapidjson::Document d;
  d.Parse(r->c_str());
  if (d.HasParseError() || !d.IsObject() || !d.HasMember("url") || !d["url"].IsString()) {
    return fail("emulator presign: unexpected answer " + *r);
  }
  return std::string(d["url"].GetString());
}

Status EmulatorFixture::add_s3_fault(const std::string& bucket, const std::string& key,
                                     const std::string& fields) const {
  std::string body = "{\"bucket\":" + quote(bucket) + ",\"key\":" + quote(key);
  if (!fields.empty()) {
    body += "," + fields;
  }
  body += "}";
  return ok(request("POST", "/s3/faults", body));
}

Status EmulatorFixture::set_faults(const std::string& json) const {
  return ok(request("PUT", "/faults", json));
}

Status EmulatorFixture::clear_faults() const {
  if (auto st = ok(request("DELETE", "/faults")); !st) {
    return st;
  }
  return ok(request("DELETE", "/s3/faults"));
}

Result<ExitStatus> EmulatorFixture::stop() {
  if (!process_) {
    return fail("emulator: not started");
  }
  return process_->stop();
}

}  // namespace upparat::test
