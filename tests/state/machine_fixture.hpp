#pragma once

// A deterministic world for the state machine: a fake clock, an in-memory state store, the
// emulator's AWS IoT Jobs model as the cloud, and a worker whose step and download results the
// test scripts.

#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "emulator/jobs_model.hpp"
#include "jobs/messages.hpp"
#include "jobs/topics.hpp"
#include "state/machine.hpp"

namespace upparat::state::testing {

inline const std::string kThing = "thing-1";

class FakeClock final : public MonotonicClock {
 public:
  TimePoint now() const override { return now_; }
  TimePoint now_{std::chrono::hours(1000)};
};

/// A job as a test queues it. `status` and `details` other than QUEUED are what an earlier
/// session of the device left (applied through the device API after creation).
struct CloudJob {
  std::string id;
  std::string status = "QUEUED";
  std::map<std::string, std::string> details;
  std::string document;  // JSON object text
  std::int64_t queued_at = 1000;
};

struct SentUpdate {
  std::string job_id;
  std::string status;
  std::string state;
  std::string message;
  std::optional<int> step_timeout;
  std::string token;
  std::optional<std::int64_t> execution_number;  ///< as sent
  std::optional<std::int64_t> expected_version;  ///< as sent
  bool include_state = false;                    ///< includeJobExecutionState
  std::int64_t applied_to = 0;                   ///< the execution it changed (0: refused or lost)
};

inline std::string doc(
    const std::string& version, bool force = false,
    const std::string& file = "https://bucket.s3.amazonaws.com/fw.raucb?X-Amz-Signature=abc") {
  return std::string("{\"action\":\"update\",\"version\":\"") + version + "\",\"file\":\"" + file +
         "\",\"force\":" + (force ? "true" : "false") + ",\"meta\":\"m\"}";
}

/// The cloud of one thing: the emulator's AWS IoT Jobs model (so AWS's semantics have one
/// source), answering the machine's requests at once, plus the test's knobs on the way in and
/// out (held, lost or refused requests, lost answers) and a record of what was sent.
/// Notifications the model publishes are not delivered: a test sends notify() itself.
class FakeCloud {
 public:
  /// Every job has an in-progress timer of this length and up to 10 retries after a time-out,
  /// so time_out() can end an execution and queue the next one as AWS does.
  static constexpr int kInProgressTimeoutMinutes = 10080;

  std::vector<SentUpdate> updates;  // every update the machine sent, accepted or not
  int throttle_updates = 0;         // answer the next N updates with RequestThrottled
  bool answer = true;               // false: requests pile up in `held`
  bool lose_updates = false;        // true: updates are recorded, then lost (no answer)
  // Updates for which this is true are refused with InvalidRequest (as AWS refuses a
  // statusDetails value it does not accept).
  std::function<bool(const SentUpdate&)> refuse;
  int lose_answers = 0;  // the next N updates are handled, their answers lost
  std::vector<Publish> held;
  int gets = 0;
  int describes = 0;
  /// The executionNumber of each describe (nullopt: none sent).
  std::vector<std::optional<std::int64_t>> described_executions;
  /// Earlier executions are unknown: naming one is ResourceNotFound.
  bool forget_past = false;
  /// A describe answers the current execution whatever executionNumber it names.
  bool describe_ignores_number = false;
  /// notify lists at most this many executions.
  std::size_t notify_limit = 15;

  FakeCloud() : clock_(std::make_shared<emulator::Clock>()), model_(clock_, nullptr) {}

  void add(const CloudJob& job) {
    emulator::JobSpec spec;
    spec.job_id = job.id;
    spec.document = job.document;
    spec.things = {kThing};
    spec.presign = false;  // placeholders stay text, as in a job without presigned URL config
    spec.queued_at = job.queued_at;
    spec.in_progress_timeout_minutes = kInProgressTimeoutMinutes;
    spec.retry = emulator::RetryConfig{{{emulator::RetryConfig::FailureType::TimedOut, 10}}};
    auto created = model_.create_job(spec);
    ASSERT_TRUE(created) << created.error().message();
    if (job.status != "QUEUED") {
      device_update(job.id, job.status, job.details);
    }
  }

  /// An update of the execution from outside this machine (an earlier session of the device,
  /// another process): no expectedVersion, so it always applies to a pending execution.
  void device_update(const std::string& id, const std::string& status,
                     const std::map<std::string, std::string>& details) {
    rapidjson::StringBuffer b;
    rapidjson::Writer<rapidjson::StringBuffer> w(b);
    w.StartObject();
    w.Key("status");
    w.String(status.c_str());
    if (!details.empty()) {
      w.Key("statusDetails");
      w.StartObject();
      for (const auto& [k, v] : details) {
        w.Key(k.c_str());
        w.String(v.c_str());
      }
      w.EndObject();
    }
    w.EndObject();
    auto out = model_.handle(jobs::topic_prefix(kThing) + "/" + id + "/update", b.GetString());
    ASSERT_TRUE(!out.empty() && out.front().topic.find("/accepted") != std::string::npos)
        << (out.empty() ? "no answer" : out.front().payload);
  }

  /// CancelJob (forced: an IN_PROGRESS execution is canceled too).
  void cancel(const std::string& id) { ASSERT_TRUE(model_.cancel_job(id, true)); }

  /// DeleteJobExecution, forced.
  void remove(const std::string& id) { ASSERT_TRUE(model_.delete_execution(kThing, id, true)); }

  /// The in-progress timers expire: every IN_PROGRESS execution ends TIMED_OUT, and a retry
  /// queues the job's next execution (executionNumber + 1, QUEUED, versionNumber 1).
  void time_out() { (void)model_.advance_clock(60LL * kInProgressTimeoutMinutes + 1); }

  /// The job's current execution; nullopt when there is none (deleted, never created).
  std::optional<emulator::Execution> execution(const std::string& id) const {
    std::optional<emulator::Execution> current;
    for (auto& e : model_.executions(kThing, id)) {
      if (!e.deleted) {
        current = std::move(e);
      }
    }
    return current;
  }

  /// The notify the thing would get now.
  std::string notify() {
    apply_options();
    return model_.notify_message(kThing).payload;
  }

  static std::string token_of(const rapidjson::Document& d) {
    if (d.IsObject() && d.HasMember("clientToken") && d["clientToken"].IsString()) {
      return d["clientToken"].GetString();
    }
    return "";
  }

  /// Answers one request; returns the answers (topic, payload).
  std::vector<MqttMessage> respond(const Publish& p) {
    const std::string prefix = jobs::topic_prefix(kThing) + "/";
    const std::string rest = p.topic.substr(prefix.size());
    rapidjson::Document d;
    d.Parse(p.payload.c_str());
    std::optional<std::int64_t> number;
    if (d.IsObject() && d.HasMember("executionNumber") && d["executionNumber"].IsInt64()) {
      number = d["executionNumber"].GetInt64();
    }
    const auto slash = rest.find('/');
    const std::string id = slash == std::string::npos ? "" : rest.substr(0, slash);
    const bool update = slash != std::string::npos && rest.substr(slash + 1) == "update";
    if (rest == "get") {
      ++gets;
    } else if (!update) {
      ++describes;
      described_executions.push_back(number);
    } else {
      SentUpdate u;
      u.job_id = id;
      u.status = d["status"].GetString();
      u.state = d["statusDetails"]["state"].GetString();
      u.message = d["statusDetails"]["message"].GetString();
      if (d.HasMember("stepTimeoutInMinutes")) {
        u.step_timeout = d["stepTimeoutInMinutes"].GetInt();
      }
      u.token = token_of(d);
      u.execution_number = number;
      if (d.HasMember("expectedVersion")) {
        u.expected_version = d["expectedVersion"].GetInt64();
      }
      u.include_state =
          d.HasMember("includeJobExecutionState") && d["includeJobExecutionState"].GetBool();
      updates.push_back(u);
      if (lose_updates) {
        return {};
      }
      if (refuse && refuse(u)) {
        return {{p.topic + "/rejected",
                 "{\"code\":\"InvalidRequest\",\"message\":\"refused\","
                 "\"clientToken\":\"" +
                     u.token + "\",\"timestamp\":1700000000}"}};
      }
    }
    const auto before = update ? execution(id) : std::nullopt;
    apply_options();
    emulator::Faults faults;
    faults.reject_updates_next = throttle_updates;
    model_.set_faults(faults);
    const auto out = model_.handle(p.topic, p.payload);
    throttle_updates = model_.faults().reject_updates_next;
    std::vector<MqttMessage> answers;
    bool accepted = false;
    for (const auto& m : out) {
      if (m.kind == emulator::Outgoing::Kind::Response) {
        answers.push_back({m.topic, m.payload});
        accepted = accepted || m.topic == p.topic + "/accepted";
      }
    }
    if (update && accepted && before) {
      updates.back().applied_to = number.value_or(before->execution_number);
    }
    if (update && lose_answers > 0 && !answers.empty()) {
      --lose_answers;
      return {};
    }
    return answers;
  }

  /// The states the cloud applied to one execution of a job, in order.
  std::vector<std::string> applied(const std::string& job_id, std::int64_t execution) const {
    std::vector<std::string> out;
    for (const auto& u : updates) {
      if (u.job_id == job_id && u.applied_to == execution) {
        out.push_back(u.state);
      }
    }
    return out;
  }

  /// The states of the updates sent for a job, in order (duplicates collapsed).
  std::vector<std::string> states(const std::string& job_id) const {
    std::vector<std::string> out;
    std::string last_token;
    for (const auto& u : updates) {
      if (u.job_id == job_id && u.token != last_token) {
        out.push_back(u.state);
        last_token = u.token;
      }
    }
    return out;
  }

 private:
  void apply_options() {
    emulator::ModelOptions options;
    options.forget_earlier_executions = forget_past;
    options.describe_ignores_execution_number = describe_ignores_number;
    options.notify_limit = notify_limit;
    model_.set_options(options);
  }

  std::shared_ptr<emulator::Clock> clock_;
  emulator::JobsModel model_;
};

/// What a step returns when it runs; nullopt leaves it running (e.g. a restart that reboots).
using StepScript = std::function<std::optional<plugin::StepResult>(const RunStep&)>;

inline plugin::StepResult ok(std::string text = "") {
  return {plugin::Outcome::Ok, std::move(text), std::nullopt};
}
inline plugin::StepResult failed(std::string text) {
  return {plugin::Outcome::Failed, std::move(text), std::nullopt};
}
inline plugin::StepResult not_supported() {
  return {plugin::Outcome::NotSupported, "", std::nullopt};
}
inline plugin::StepResult retry_later(std::optional<std::chrono::seconds> after = {}) {
  return {plugin::Outcome::RetryLater, "busy", after};
}

inline std::optional<download::DownloadResult> complete_download(const RunDownload& d) {
  download::DownloadResult r;
  r.outcome = download::Outcome::Complete;
  r.file = "/dl/" + d.request.job_id;
  return r;
}

/// Hooks in the classic sense: which are "configured" and what they answer.
struct Hooks {
  // installed version before and after the update; "" = no version hook
  std::string version_before = "1.0";
  std::string version_after = "2.0";
  bool download = true;
  bool install = true;
  enum class Restart { None, Reboots, Returns, Fails } restart = Restart::Reboots;
  bool ready = true;
};

class World {
 public:
  explicit World(MachineSettings settings = {}) : settings_(std::move(settings)) {
    settings_.thing_name = kThing;
    boot();
  }

  /// Creates a new machine on the same store and cloud (the daemon restarted). The running
  /// work of the old one is forgotten (its process died).
  void boot() {
    machine_ = std::make_unique<Machine>(settings_, store, clock);
    timers_.clear();
    running_step.reset();
    running_download.reset();
    rebooted_ = false;
    handle(Started{});
  }

  void connect() { handle(Connected{}); }

  /// Delivers an event and everything that follows from it (cloud answers, scripted steps).
  void handle(const Event& event) {
    std::deque<Event> queue{event};
    while (!queue.empty()) {
      Event e = std::move(queue.front());
      queue.pop_front();
      auto actions = machine_->handle(e);
      for (auto& a : actions) {
        apply(a, queue);
      }
    }
  }

  void apply(Action& a, std::deque<Event>& queue) {
    actions.push_back(a);
    if (auto* p = std::get_if<Publish>(&a)) {
      published.push_back(*p);
      if (!cloud.answer) {
        cloud.held.push_back(*p);
        return;
      }
      for (auto& m : cloud.respond(*p)) {
        queue.push_back(m);
      }
    } else if (auto* t = std::get_if<SetTimer>(&a)) {
      timers_[t->id] = clock.now_ + t->delay;
    } else if (auto* c = std::get_if<CancelTimer>(&a)) {
      timers_.erase(c->id);
    } else if (auto* r = std::get_if<RunStep>(&a)) {
      EXPECT_FALSE(running_step || running_download) << "two works at once";
      steps_run.push_back(*r);
      running_step = *r;
      auto result = script(*r);
      if (result) {
        running_step.reset();
        queue.push_back(StepFinished{r->work, r->step, *result});
      }
    } else if (auto* d = std::get_if<RunDownload>(&a)) {
      EXPECT_FALSE(running_step || running_download) << "two works at once";
      downloads_run.push_back(*d);
      running_download = *d;
      if (download_script) {
        auto result = download_script(*d);
        if (result) {
          running_download.reset();
          queue.push_back(DownloadFinished{d->work, *result});
        }
      }
    } else if (auto* s = std::get_if<StopWork>(&a)) {
      stopped.push_back(s->work);
      // Like the runtime: a not-interruptible install never sees the stop; a plugin that
      // ignores it (ignore_stop) runs on until the test finishes it.
      const bool uninterruptible = running_step && running_step->step == plugin::Step::Install &&
                                   settings_.install_not_interruptible;
      if (running_step && running_step->work == s->work && !uninterruptible && !ignore_stop) {
        auto w = *running_step;
        running_step.reset();
        queue.push_back(StepFinished{w.work, w.step, failed("stopped")});
      }
      if (running_download && running_download->work == s->work) {
        auto w = *running_download;
        running_download.reset();
        download::DownloadResult r;
        r.outcome = download::Outcome::Cancelled;
        queue.push_back(DownloadFinished{w.work, r});
      }
    } else if (auto* e = std::get_if<Exit>(&a)) {
      EXPECT_FALSE(exited) << "Exit twice";
      exited = true;
      exit_reason = e->reason;
    }
  }

  /// Moves the clock, firing due timers in order.
  void advance(std::chrono::milliseconds by) {
    const TimePoint end = clock.now_ + by;
    for (;;) {
      auto next = std::min_element(timers_.begin(), timers_.end(),
                                   [](auto& a, auto& b) { return a.second < b.second; });
      if (next == timers_.end() || next->second > end) {
        break;
      }
      const auto id = next->first;
      clock.now_ = std::max(clock.now_, next->second);
      timers_.erase(next);
      handle(TimerFired{id});
    }
    clock.now_ = end;
  }

  void finish_step(plugin::StepResult result) {
    ASSERT_TRUE(running_step.has_value());
    auto w = *running_step;
    running_step.reset();
    handle(StepFinished{w.work, w.step, std::move(result)});
  }

  void finish_download(download::Outcome outcome, std::string reason = "") {
    ASSERT_TRUE(running_download.has_value());
    auto w = *running_download;
    running_download.reset();
    download::DownloadResult r;
    r.outcome = outcome;
    r.reason = std::move(reason);
    if (outcome == download::Outcome::Complete) {
      r.file = "/dl/" + w.request.job_id;
    }
    handle(DownloadFinished{w.work, r});
  }

  /// Sends notify with the cloud's current pending jobs.
  void notify() { handle(MqttMessage{jobs::topic_prefix(kThing) + "/notify", cloud.notify()}); }

  /// Delivers the held requests' answers (in order, or reversed).
  void release_held(bool reversed = false) {
    auto held = std::move(cloud.held);
    cloud.held.clear();
    cloud.answer = true;
    std::vector<MqttMessage> answers;
    for (auto& p : held) {
      for (auto& m : cloud.respond(p)) {
        answers.push_back(m);
      }
    }
    if (reversed) {
      std::reverse(answers.begin(), answers.end());
    }
    for (auto& m : answers) {
      handle(m);
    }
  }

  /// Scripts steps like the classic hooks.
  void use(Hooks hooks) {
    hooks_ = hooks;
    script = [this](const RunStep& r) -> std::optional<plugin::StepResult> {
      switch (r.step) {
        case plugin::Step::Version:
          if (hooks_.version_before.empty()) {
            return not_supported();
          }
          return ok(rebooted_ ? hooks_.version_after : hooks_.version_before);
        case plugin::Step::Download:
          return hooks_.download ? ok() : not_supported();
        case plugin::Step::Install:
          return hooks_.install ? ok() : not_supported();
        case plugin::Step::Restart:
          switch (hooks_.restart) {
            case Hooks::Restart::None:
              return not_supported();
            case Hooks::Restart::Reboots:
              return std::nullopt;
            case Hooks::Restart::Returns:
              return ok();
            case Hooks::Restart::Fails:
              return failed("restart broke");
          }
          return std::nullopt;
        case plugin::Step::Ready:
          return hooks_.ready ? ok() : not_supported();
      }
      return std::nullopt;
    };
  }

  /// Steps of this kind never return (the plugin hangs, or the daemon dies while it runs),
  /// while *while_set is true (always when null); the other steps run as scripted before.
  void hang_at(plugin::Step step, const bool* while_set = nullptr) {
    auto before = script;
    script = [before, step, while_set](const RunStep& r) -> std::optional<plugin::StepResult> {
      if (r.step == step && (!while_set || *while_set)) {
        return std::nullopt;
      }
      return before(r);
    };
  }

  /// The n-th work started (0 = the first step or download) never returns, while *while_set
  /// is true (always when null); the other works run as scripted before.
  void hang_at_work(int n, const bool* while_set = nullptr) {
    auto works = std::make_shared<int>(0);
    auto hang = [works, n, while_set] { return (!while_set || *while_set) && (*works)++ == n; };
    auto before = script;
    script = [before, hang](const RunStep& r) -> std::optional<plugin::StepResult> {
      if (hang()) {
        return std::nullopt;
      }
      return before(r);
    };
    auto before_download = download_script;
    download_script = [before_download,
                       hang](const RunDownload& d) -> std::optional<download::DownloadResult> {
      if (hang()) {
        return std::nullopt;
      }
      return before_download(d);
    };
  }

  /// Downloads run until the test finishes them (finish_download).
  void hold_downloads() {
    download_script = [](const RunDownload&) { return std::optional<download::DownloadResult>(); };
  }

  /// Steps of this kind answer `result`; the other steps run as scripted before.
  void answer_at(plugin::Step step, plugin::StepResult result) {
    auto before = script;
    script = [before, step, result](const RunStep& r) -> std::optional<plugin::StepResult> {
      if (r.step == step) {
        return result;
      }
      return before(r);
    };
  }

  /// Runs `effect` when a step of this kind starts, then the step as scripted before.
  void before_step(plugin::Step step, std::function<void(const RunStep&)> effect) {
    auto before = script;
    script = [before, step, effect](const RunStep& r) {
      if (r.step == step) {
        effect(r);
      }
      return before(r);
    };
  }

  /// How many times a step of this kind was started.
  int runs_of(plugin::Step step) const {
    return static_cast<int>(std::count_if(steps_run.begin(), steps_run.end(),
                                          [&](const RunStep& r) { return r.step == step; }));
  }

  /// The device reboots during the restart step: a new daemon on the new version.
  void reboot() {
    boot();
    rebooted_ = true;
    connect();
  }

  MachineSettings settings_;
  FakeClock clock;
  MemoryStateStore store;
  FakeCloud cloud;
  std::unique_ptr<Machine> machine_;
  std::map<std::uint64_t, TimePoint> timers_;
  std::vector<Action> actions;
  std::vector<Publish> published;
  std::vector<RunStep> steps_run;
  std::vector<RunDownload> downloads_run;
  std::vector<std::uint64_t> stopped;
  std::optional<RunStep> running_step;
  std::optional<RunDownload> running_download;
  bool exited = false;
  std::optional<ExitReason> exit_reason;
  /// The running step ignores StopWork (a plugin that does not check should_stop).
  bool ignore_stop = false;
  Hooks hooks_;
  bool rebooted_ = false;
  StepScript script = [](const RunStep&) { return std::optional<plugin::StepResult>(); };
  std::function<std::optional<download::DownloadResult>(const RunDownload&)> download_script =
      complete_download;

  Phase phase() const { return machine_->phase(); }
};

/// "STATUS state" of the job's current execution, or "<deleted>".
inline std::string final_state(const World& w, const std::string& id = "upparat_1") {
  auto e = w.cloud.execution(id);
  if (!e) {
    return "<deleted>";
  }
  auto d = e->status_details.find("state");
  return std::string(emulator::to_string(e->status)) + " " +
         (d == e->status_details.end() ? "" : d->second);
}

/// The statusDetails message of the job's current execution.
inline std::string final_message(const World& w, const std::string& id = "upparat_1") {
  auto e = w.cloud.execution(id);
  if (!e) {
    return "<deleted>";
  }
  auto it = e->status_details.find("message");
  return it == e->status_details.end() ? "" : it->second;
}

}  // namespace upparat::state::testing
