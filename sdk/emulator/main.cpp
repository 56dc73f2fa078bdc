// upparat-jobs-emulator: a local AWS IoT Jobs + S3 look-alike on a real MQTT broker, and a
// CLI to act on a running one (like the AWS console or CLI). See docs/emulator.md.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <httplib.h>
#include <rapidjson/document.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <algorithm>

#include "emulator/clock.hpp"
#include "emulator/control_server.hpp"
#include "emulator/jobs_model.hpp"
#include "emulator/json.hpp"
#include "emulator/mqtt_front.hpp"
#include "emulator/s3/s3_server.hpp"
#include "emulator/signer.hpp"

namespace upparat::emulator {
namespace {

constexpr const char* kUsage = R"(usage:
  upparat-jobs-emulator serve --broker tcp://127.0.0.1:PORT [--control-port N] [--s3-port N]
        [--s3-cert FILE --s3-key FILE | --s3-http] [--state FILE] [--url-expiry SECONDS]
        [--terminal-state-reached] [--verbose]
  upparat-jobs-emulator COMMAND --control http://127.0.0.1:PORT [options]
commands:
  create-job --job-id ID --document FILE --thing NAME [--thing NAME ...]
             [--in-progress-timeout MINUTES] [--url-expiry SECONDS] [--no-presigned-url]
             [--retry FAILED|TIMED_OUT|ALL:N ...]
             [--sign-file FILE --sign-key KEY.pem]   adds sig-sha256-ecdsa (EC P-256 key) or
                                 sig-sha256-rsa (RSA key): the signature of FILE's SHA-256
  cancel-job --job-id ID [--force]
  delete-execution --thing NAME --job-id ID [--force]
  describe [--thing NAME] [--job-id ID] [--json]     executions with their status history
  list-jobs [--json]
  advance-clock --seconds N | --minutes N
  put-object --bucket B --key K --file PATH
  set-fault jobs [--drop-responses N] [--duplicate-responses N] [--delay-responses-ms MS]
                 [--drop-notifications N] [--duplicate-notifications N]
                 [--delay-notifications-ms MS] [--throttle-updates N] [--fail-updates N]
                 [--terminal-state-reached on|off]
  set-fault s3 --bucket B --key K [--close-after-bytes N] [--reset-after-bytes N]
               [--stall-ms MS] [--stall-after-bytes N] [--error-status CODE]
               [--rate-limit BYTES_PER_S] [--corrupt-offset N] [--ignore-range] [--times N]
  clear-faults
The control URL may also come from $UPPARAT_EMULATOR_CONTROL.
)";

/// --name value pairs (repeatable) and bare flags.
struct Args {
  std::string command;
  std::string sub;
  std::multimap<std::string, std::string> values;

  [[nodiscard]] bool has(const std::string& k) const { return values.count(k) > 0; }
  [[nodiscard]] std::string get(const std::string& k, const std::string& fallback = "") const {
    auto it = values.find(k);
    return it == values.end() ? fallback : it->second;
  }
  [[nodiscard]] std::vector<std::string> all(const std::string& k) const {
    std::vector<std::string> out;
    auto [a, b] = values.equal_range(k);
    for (auto it = a; it != b; ++it) {
      out.push_back(it->second);
    }
    return out;
  }
};

const std::vector<std::string> kFlags = {"--s3-http",      "--force",
                                         "--json",         "--no-presigned-url",
                                         "--ignore-range", "--terminal-state-reached",
                                         "--verbose",      "--help"};

Result<Args> parse_args(int argc, char** argv) {
  Args args;
  if (argc < 2) {
    return fail("no command");
  }
  args.command = argv[1];
  int i = 2;
  if (args.command == "set-fault" && i < argc && argv[i][0] != '-') {
    args.sub = argv[i++];
  }
  for (; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0) {
      return fail("unexpected argument '" + a + "'");
    }
    if (std::find(kFlags.begin(), kFlags.end(), a) != kFlags.end()) {
      args.values.emplace(a, "true");
      continue;
    }
    if (i + 1 >= argc) {
      return fail(a + " needs a value");
    }
    args.values.emplace(a, argv[++i]);
  }
  return args;
}

Result<long long> to_int(const std::string& text, const std::string& what) {
  try {
    std::size_t pos = 0;
    long long v = std::stoll(text, &pos);
    if (pos != text.size()) {
      throw std::invalid_argument(text);
    }
    return v;
  } catch (const std::exception&) {
    return fail(what + ": '" + text + "' is not an integer");
  }
}

std::string format_time(long long epoch) {
  std::time_t t = static_cast<std::time_t>(epoch);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// serve

Status write_state(const std::filesystem::path& file, const std::string& content) {
  auto tmp = file;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return fail("state file " + tmp.string() + ": " + std::strerror(errno));
  }
  const char* p = content.data();
  std::size_t left = content.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      ::close(fd);
      return fail("state file " + tmp.string() + ": " + std::strerror(errno));
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  ::fsync(fd);
  ::close(fd);
  std::error_code ec;
  std::filesystem::rename(tmp, file, ec);
  if (ec) {
    return fail("state file " + file.string() + ": " + ec.message());
  }
  return {};
}

int serve(const Args& args) {
  spdlog::set_default_logger(spdlog::stderr_color_mt("jobs-emulator"));
  spdlog::set_level(args.has("--verbose") ? spdlog::level::debug : spdlog::level::info);
  if (!args.has("--broker")) {
    std::cerr << "serve: --broker tcp://127.0.0.1:PORT is required\n";
    return 2;
  }
  // Signals are taken by sigwait() below; every thread inherits the blocked mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  auto int_opt = [&](const char* name, long long fallback) -> Result<long long> {
    if (!args.has(name)) {
      return fallback;
    }
    return to_int(args.get(name), name);
  };
  auto s3_port = int_opt("--s3-port", 0);
  auto control_port = int_opt("--control-port", 0);
  auto url_expiry = int_opt("--url-expiry", 3600);
  for (const auto* r : {&s3_port, &control_port, &url_expiry}) {
    if (!*r) {
      std::cerr << "serve: " << r->error().message() << "\n";
      return 2;
    }
  }
  if (*s3_port < 0 || *s3_port > 65535 || *control_port < 0 || *control_port > 65535) {
    std::cerr << "serve: ports must be 0..65535\n";
    return 2;
  }
  if (*url_expiry < 60 || *url_expiry > 3600) {
    std::cerr << "serve: --url-expiry must be 60..3600 seconds (as AWS)\n";
    return 2;
  }
  if (args.has("--s3-cert") != args.has("--s3-key")) {
    std::cerr << "serve: --s3-cert and --s3-key go together\n";
    return 2;
  }
  if (args.has("--s3-cert") && args.has("--s3-http")) {
    std::cerr << "serve: --s3-http and --s3-cert exclude each other\n";
    return 2;
  }

  auto clock = std::make_shared<Clock>();
  std::filesystem::path state_file = args.get("--state");
  std::string saved_model;
  if (!state_file.empty() && std::filesystem::exists(state_file)) {
    std::ifstream in(state_file);
    std::stringstream ss;
    ss << in.rdbuf();
    rapidjson::Document d;
    d.Parse(ss.str().c_str());
    if (d.HasParseError() || !d.IsObject() || !d.HasMember("model") || !d["model"].IsObject()) {
      std::cerr << "serve: state file " << state_file << " is not an emulator state\n";
      return 1;
    }
    if (auto offset = json_int(d, "clockOffsetSeconds")) {
      clock->advance(std::chrono::seconds(*offset));
    }
    saved_model = to_json(d["model"]);
  }

  S3Options s3_options;
  s3_options.port = static_cast<uint16_t>(*s3_port);
  s3_options.cert_file = args.get("--s3-cert");
  s3_options.key_file = args.get("--s3-key");
  s3_options.clock = clock;
  if (s3_options.cert_file.empty() && !args.has("--s3-http")) {
    spdlog::warn("no --s3-cert/--s3-key: the S3 side serves plain HTTP");
  }
  auto s3 = S3Server::start(s3_options);
  if (!s3) {
    std::cerr << "serve: S3 side: " << s3.error().message() << "\n";
    return 1;
  }
  S3Server* s3_raw = s3->get();

  ModelOptions model_options;
  model_options.url_expiry_seconds = static_cast<int>(*url_expiry);
  model_options.terminal_state_reached_on_describe = args.has("--terminal-state-reached");
  auto model = std::make_shared<JobsModel>(
      clock,
      [s3_raw](const std::string& bucket, const std::string& key, int expiry) {
        return s3_raw->presign(bucket, key, std::chrono::seconds(expiry));
      },
      model_options);
  if (!saved_model.empty()) {
    if (auto st = model->load(saved_model); !st) {
      std::cerr << "serve: " << st.error().message() << "\n";
      return 1;
    }
  }

  std::mutex state_mutex;
  auto persist = [&state_file, &state_mutex, model, clock] {
    if (state_file.empty()) {
      return;
    }
    std::lock_guard lock(state_mutex);
    long long offset =
        clock->now_seconds() - std::chrono::duration_cast<std::chrono::seconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count();
    std::string content =
        "{\"clockOffsetSeconds\":" + std::to_string(offset) + ",\"model\":" + model->save() + "}";
    if (auto st = write_state(state_file, content); !st) {
      spdlog::error("{}", st.error().message());
    }
  };

  auto front = MqttFront::start(args.get("--broker"), model, persist);
  if (!front) {
    std::cerr << "serve: " << front.error().message() << "\n";
    return 1;
  }
  MqttFront* front_raw = front->get();
  ControlContext ctx;
  ctx.model = model;
  ctx.s3 = s3_raw;
  ctx.publish = [front_raw](std::vector<Outgoing> out) { front_raw->publish(std::move(out)); };
  ctx.after_change = persist;
  auto control = ControlServer::start(static_cast<uint16_t>(*control_port), ctx);
  if (!control) {
    std::cerr << "serve: " << control.error().message() << "\n";
    return 1;
  }
  persist();
  // Timers that expired while the emulator was down fire now.
  front_raw->publish(model->tick());

  std::printf("{\"ready\":true,\"control_port\":%u,\"s3_port\":%u,\"s3_endpoint\":\"%s\"}\n",
              static_cast<unsigned>((*control)->port()), static_cast<unsigned>(s3_raw->port()),
              s3_raw->endpoint().c_str());
  std::fflush(stdout);
  spdlog::info("serving AWS IoT Jobs on {}, control http://127.0.0.1:{}, S3 {}",
               args.get("--broker"), (*control)->port(), s3_raw->endpoint());

  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("signal {}: stopping", sig);
  control->reset();
  front->reset();
  persist();
  s3->reset();
  return 0;
}

// ---------------------------------------------------------------------------------------------
// client commands

class ControlClient {
 public:
  explicit ControlClient(const std::string& url) : client_(url) {
    client_.set_connection_timeout(5);
    client_.set_read_timeout(30);
  }

  /// Returns the parsed body of a 2xx answer, or the error the emulator gave.
  Result<rapidjson::Document> call(const std::string& method, const std::string& path,
                                   const std::string& body = "") {
    httplib::Result res{nullptr, httplib::Error::Unknown};
    if (method == "GET") {
      res = client_.Get(path.c_str());
    } else if (method == "POST") {
      res = client_.Post(path.c_str(), body, "application/json");
    } else if (method == "PUT") {
      res = client_.Put(path.c_str(), body, "application/json");
    } else {
      res = client_.Delete(path.c_str());
    }
    if (!res) {
      return fail("cannot reach the emulator's control channel: " +
                  httplib::to_string(res.error()));
    }
    rapidjson::Document d;
    d.Parse(res->body.c_str());
    if (d.HasParseError()) {
      return fail("HTTP " + std::to_string(res->status) + ": " + res->body);
    }
    if (res->status / 100 != 2) {
      std::string msg = d.IsObject() && d.HasMember("error") && d["error"].IsString()
                            ? d["error"].GetString()
                            : res->body;
      return fail(msg);
    }
    return d;
  }

 private:
  httplib::Client client_;
};

void print_execution(const rapidjson::Value& e) {
  std::printf("%-24s %-32s %-12s version %lld  execution %lld%s\n", e["thingName"].GetString(),
              e["jobId"].GetString(), e["status"].GetString(),
              static_cast<long long>(e["versionNumber"].GetInt64()),
              static_cast<long long>(e["executionNumber"].GetInt64()),
              e["deleted"].GetBool() ? "  (deleted)" : "");
  if (e.HasMember("stepTimeoutAt")) {
    std::printf("    step timer expires %s\n", format_time(e["stepTimeoutAt"].GetInt64()).c_str());
  }
  if (e.HasMember("inProgressTimeoutAt")) {
    std::printf("    in-progress timer expires %s\n",
                format_time(e["inProgressTimeoutAt"].GetInt64()).c_str());
  }
  for (const auto& h : e["history"].GetArray()) {
    std::printf("    %s  %-12s v%-3lld %-20s %s\n", format_time(h["at"].GetInt64()).c_str(),
                h["status"].GetString(), static_cast<long long>(h["versionNumber"].GetInt64()),
                h["cause"].GetString(),
                h["statusDetails"].MemberCount() ? to_json(h["statusDetails"]).c_str() : "");
  }
}

void print_job_line(const rapidjson::Value& j) {
  std::map<std::string, int> counts;
  for (const auto& e : j["executions"].GetArray()) {
    if (!e["deleted"].GetBool()) {
      ++counts[e["status"].GetString()];
    }
  }
  std::string summary;
  for (const auto& [s, n] : counts) {
    summary += (summary.empty() ? "" : " ") + s + "=" + std::to_string(n);
  }
  std::printf("%-32s %-12s %s  things: %u  %s\n", j["jobId"].GetString(), j["status"].GetString(),
              format_time(j["createdAt"].GetInt64()).c_str(), j["things"].Size(), summary.c_str());
}

std::string read_whole(const std::string& path, bool& ok) {
  std::ifstream in(path, std::ios::binary);
  ok = static_cast<bool>(in);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string quote(const std::string& s) {
  return json_quote(s);
}

using FlagKeys = std::initializer_list<std::pair<const char*, const char*>>;

/// `"key":N,...` for each (flag, key) given on the command line, in order; an error when a
/// value is not an integer.
Result<std::string> int_fields(const Args& args, FlagKeys flag_keys) {
  std::string out;
  for (auto [flag, key] : flag_keys) {
    if (!args.has(flag)) {
      continue;
    }
    auto v = to_int(args.get(flag), flag);
    if (!v) {
      return fail(v.error());
    }
    out += (out.empty() ? "\"" : ",\"") + std::string(key) + "\":" + std::to_string(*v);
  }
  return out;
}

int run_client(const Args& args) {
  std::string url = args.get("--control", std::getenv("UPPARAT_EMULATOR_CONTROL")
                                              ? std::getenv("UPPARAT_EMULATOR_CONTROL")
                                              : "");
  if (url.empty()) {
    std::cerr << args.command << ": --control http://127.0.0.1:PORT is required\n";
    return 2;
  }
  ControlClient client(url);
  auto need = [&](std::initializer_list<const char*> names) {
    for (const char* n : names) {
      if (!args.has(n)) {
        std::cerr << args.command << ": " << n << " is required\n";
        return false;
      }
    }
    return true;
  };
  auto report = [&](const auto& r) {
    if (!r) {
      std::cerr << args.command << ": " << r.error().message() << "\n";
    }
    return r.has_value();
  };
  const auto& usage_ok = report;
  // Prints the array `key` of an answer item by item (or the whole answer with --json).
  auto print_list = [&](const Result<rapidjson::Document>& r, const char* key,
                        void (*print_item)(const rapidjson::Value&)) {
    if (!report(r)) {
      return 1;
    }
    if (args.has("--json")) {
      std::printf("%s\n", to_json(*r).c_str());
      return 0;
    }
    if ((*r)[key].Empty()) {
      std::printf("no %s\n", key);
    }
    for (const auto& item : (*r)[key].GetArray()) {
      print_item(item);
    }
    return 0;
  };
  const std::string& c = args.command;

  if (c == "create-job") {
    if (!need({"--job-id", "--document", "--thing"})) {
      return 2;
    }
    bool ok = false;
    std::string doc = read_whole(args.get("--document"), ok);
    if (!ok) {
      std::cerr << "create-job: cannot read " << args.get("--document") << "\n";
      return 1;
    }
    if (args.has("--sign-file") != args.has("--sign-key")) {
      std::cerr << "create-job: --sign-file and --sign-key go together\n";
      return 2;
    }
    if (args.has("--sign-file")) {
      auto signature = sign_file(args.get("--sign-key"), args.get("--sign-file"));
      auto signed_doc =
          signature ? add_signature(doc, *signature) : Result<std::string>(fail(signature.error()));
      if (!signed_doc) {
        std::cerr << "create-job: " << signed_doc.error().message() << "\n";
        return 1;
      }
      doc = std::move(*signed_doc);
    }
    std::string body = "{\"jobId\":" + quote(args.get("--job-id")) + ",\"document\":" + quote(doc) +
                       ",\"things\":[";
    auto things = args.all("--thing");
    for (std::size_t i = 0; i < things.size(); ++i) {
      body += (i ? "," : "") + quote(things[i]);
    }
    body += "]";
    auto fields = int_fields(args, {{"--in-progress-timeout", "inProgressTimeoutMinutes"},
                                    {"--url-expiry", "urlExpirySeconds"}});
    if (!usage_ok(fields)) {
      return 2;
    }
    if (!fields->empty()) {
      body += "," + *fields;
    }
    if (args.has("--no-presigned-url")) {
      body += ",\"presignedUrl\":false";
    }
    if (auto retries = args.all("--retry"); !retries.empty()) {
      // TYPE:N, as AWS CLI's criteriaList entries; the control side checks them.
      std::string list;
      for (const auto& r : retries) {
        const auto colon = r.find(':');
        const std::string count = colon == std::string::npos ? "" : r.substr(colon + 1);
        if (count.empty() || count.size() > 2 ||
            count.find_first_not_of("0123456789") != std::string::npos) {
          std::cerr << "create-job: --retry takes FAILED:N, TIMED_OUT:N or ALL:N\n";
          return 2;
        }
        list += std::string(list.empty() ? "" : ",") +
                "{\"failureType\":" + quote(r.substr(0, colon)) + ",\"numberOfRetries\":" + count +
                "}";
      }
      body += ",\"jobExecutionsRetryConfig\":{\"criteriaList\":[" + list + "]}";
    }
    body += "}";
    auto r = client.call("POST", "/jobs", body);
    if (!report(r)) {
      return 1;
    }
    if (args.has("--json")) {
      std::printf("%s\n", to_json(*r).c_str());
    } else {
      std::printf("created job %s for %zu thing(s)\n", args.get("--job-id").c_str(), things.size());
    }
    return 0;
  }
  if (c == "cancel-job") {
    if (!need({"--job-id"})) {
      return 2;
    }
    auto r =
        client.call("POST", "/jobs/" + args.get("--job-id") + "/cancel",
                    std::string("{\"force\":") + (args.has("--force") ? "true" : "false") + "}");
    if (!report(r)) {
      return 1;
    }
    print_job_line(*r);
    return 0;
  }
  if (c == "delete-execution") {
    if (!need({"--thing", "--job-id"})) {
      return 2;
    }
    auto r =
        client.call("DELETE", "/things/" + args.get("--thing") + "/jobs/" + args.get("--job-id") +
                                  (args.has("--force") ? "?force=true" : ""));
    if (!report(r)) {
      return 1;
    }
    std::printf("deleted the execution of %s on %s\n", args.get("--job-id").c_str(),
                args.get("--thing").c_str());
    return 0;
  }
  if (c == "describe") {
    auto r = client.call(
        "GET", "/executions?thing=" + httplib::detail::encode_query_param(args.get("--thing")) +
                   "&jobId=" + httplib::detail::encode_query_param(args.get("--job-id")));
    return print_list(r, "executions", print_execution);
  }
  if (c == "list-jobs") {
    return print_list(client.call("GET", "/jobs"), "jobs", print_job_line);
  }
  if (c == "advance-clock") {
    long long seconds = 0;
    if (args.has("--seconds") || args.has("--minutes")) {
      auto v = to_int(args.has("--seconds") ? args.get("--seconds") : args.get("--minutes"),
                      "advance-clock");
      if (!v) {
        std::cerr << v.error().message() << "\n";
        return 2;
      }
      seconds = args.has("--seconds") ? *v : *v * 60;
    } else {
      std::cerr << "advance-clock: --seconds N or --minutes N is required\n";
      return 2;
    }
    auto r = client.call("POST", "/clock/advance", "{\"seconds\":" + std::to_string(seconds) + "}");
    if (!report(r)) {
      return 1;
    }
    std::printf("emulator time is now %s\n", format_time((*r)["now"].GetInt64()).c_str());
    return 0;
  }
  if (c == "put-object") {
    if (!need({"--bucket", "--key", "--file"})) {
      return 2;
    }
    std::string file = std::filesystem::absolute(args.get("--file")).string();
    auto r = client.call("POST", "/s3/objects",
                         "{\"bucket\":" + quote(args.get("--bucket")) + ",\"key\":" +
                             quote(args.get("--key")) + ",\"file\":" + quote(file) + "}");
    if (!report(r)) {
      return 1;
    }
    std::printf(
        "stored s3://%s/%s (ETag %s)\nuse in a job document: ${aws:iot:s3-presigned-url:%s}\n",
        args.get("--bucket").c_str(), args.get("--key").c_str(), (*r)["etag"].GetString(),
        (*r)["url"].GetString());
    return 0;
  }
  if (c == "set-fault" && args.sub == "jobs") {
    std::string body;
    auto responses = int_fields(args, {{"--drop-responses", "drop"},
                                       {"--duplicate-responses", "duplicate"},
                                       {"--delay-responses-ms", "delayMs"}});
    if (!usage_ok(responses)) {
      return 2;
    }
    auto notifications = int_fields(args, {{"--drop-notifications", "drop"},
                                           {"--duplicate-notifications", "duplicate"},
                                           {"--delay-notifications-ms", "delayMs"}});
    if (!usage_ok(notifications)) {
      return 2;
    }
    std::vector<std::string> parts;
    if (!responses->empty()) {
      parts.push_back("\"responses\":{" + *responses + "}");
    }
    if (!notifications->empty()) {
      parts.push_back("\"notifications\":{" + *notifications + "}");
    }
    for (auto [flag, code] : {std::pair{"--throttle-updates", "RequestThrottled"},
                              std::pair{"--fail-updates", "InternalError"}}) {
      auto count = int_fields(args, {{flag, "count"}});
      if (!usage_ok(count)) {
        return 2;
      }
      if (!count->empty()) {
        parts.push_back("\"rejectUpdates\":{" + *count + ",\"code\":\"" + code + "\"}");
      }
    }
    if (args.has("--terminal-state-reached")) {
      parts.push_back(std::string("\"terminalStateReachedOnDescribe\":") +
                      (args.get("--terminal-state-reached") == "off" ? "false" : "true"));
    }
    for (std::size_t i = 0; i < parts.size(); ++i) {
      body += (i ? "," : "") + parts[i];
    }
    auto r = client.call("PUT", "/faults", "{" + body + "}");
    if (!report(r)) {
      return 1;
    }
    std::printf("jobs faults: %s\n", to_json(*r).c_str());
    return 0;
  }
  if (c == "set-fault" && args.sub == "s3") {
    if (!need({"--bucket", "--key"})) {
      return 2;
    }
    std::string body =
        "{\"bucket\":" + quote(args.get("--bucket")) + ",\"key\":" + quote(args.get("--key"));
    auto fields = int_fields(args, {{"--close-after-bytes", "closeAfterBytes"},
                                    {"--reset-after-bytes", "resetAfterBytes"},
                                    {"--stall-ms", "stallMs"},
                                    {"--stall-after-bytes", "stallAfterBytes"},
                                    {"--error-status", "errorStatus"},
                                    {"--rate-limit", "rateLimitBytesPerSecond"},
                                    {"--corrupt-offset", "corruptOffset"},
                                    {"--times", "times"}});
    if (!usage_ok(fields)) {
      return 2;
    }
    if (!fields->empty()) {
      body += "," + *fields;
    }
    if (args.has("--ignore-range")) {
      body += ",\"ignoreRange\":true";
    }
    body += "}";
    auto r = client.call("POST", "/s3/faults", body);
    if (!report(r)) {
      return 1;
    }
    std::printf("S3 fault added for %s/%s\n", args.get("--bucket").c_str(),
                args.get("--key").c_str());
    return 0;
  }
  if (c == "clear-faults") {
    auto r = client.call("DELETE", "/faults");
    if (!report(r)) {
      return 1;
    }
    auto r2 = client.call("DELETE", "/s3/faults");
    if (!report(r2)) {
      return 1;
    }
    std::printf("all faults cleared\n");
    return 0;
  }
  std::cerr << "unknown command '" << c << (args.sub.empty() ? "" : " " + args.sub) << "'\n"
            << kUsage;
  return 2;
}

}  // namespace
}  // namespace upparat::emulator

int main(int argc, char** argv) {
  using namespace upparat::emulator;
  auto args = parse_args(argc, argv);
  if (!args) {
    std::cerr << "upparat-jobs-emulator: " << args.error().message() << "\n" << kUsage;
    return 2;
  }
  if (args->command == "--help" || args->command == "help" || args->has("--help")) {
    std::cout << kUsage;
    return 0;
  }
  try {
    if (args->command == "serve") {
      return serve(*args);
    }
    return run_client(*args);
  } catch (const std::exception& e) {
    std::cerr << "upparat-jobs-emulator: " << e.what() << "\n";
    return 1;
  }
}
