#include "state/machine.hpp"

#include <algorithm>
#include <deque>
#include <map>
#include <random>
#include <set>

#include <spdlog/spdlog.h>

#include "common/invariant.hpp"
#include "common/sanitize.hpp"
#include "common/url.hpp"
#include "jobs/document.hpp"
#include "jobs/messages.hpp"
#include "jobs/topics.hpp"
#include "jobs/update_queue.hpp"
#include "state/job_selection.hpp"
#include "state/progress_budget.hpp"
#include "state/transitions.hpp"

namespace upparat::state {
namespace {

using plugin::Outcome;
using plugin::Step;
using std::chrono::duration_cast;
using std::chrono::milliseconds;
using std::chrono::seconds;

// The statusDetails state of a failed step.
const char* failed_state(Step step) {
  switch (step) {
    case Step::Version:
      return "version_hook_failed";
    case Step::Download:
      return "download_hook_failed";
    case Step::Install:
      return "installation_hook_failed";
    case Step::Restart:
      return "restart_hook_failed";
    case Step::Ready:
      return "ready_hook_failed";
  }
  return "error";
}

std::string trim(std::string s) {
  const char* ws = " \t\r\n";
  s.erase(0, s.find_first_not_of(ws));
  const auto end = s.find_last_not_of(ws);
  s.erase(end == std::string::npos ? 0 : end + 1);
  return s;
}

// An execution number to send (0: not known, left out).
std::optional<std::int64_t> known_execution(std::int64_t execution_number) {
  if (execution_number > 0)
    return execution_number;
  return std::nullopt;
}

int to_minutes(seconds s) {
  const auto minutes = (s.count() + 59) / 60;
  return static_cast<int>(std::clamp<long long>(minutes, 1, 10080));
}

// A notify with this many entries may have left jobs out.
constexpr std::size_t kNotifyMayBeTruncated = 10;

enum class TimerPurpose {
  Request,
  CancelCheck,
  Updates,
  StepRetry,
  StepDeadline,
  Progress,
  Refetch,
  Poll,       // monitor: the safety-net get
  UrlRetry,   // download: the back-off before describing again for a fresh URL
  StopGrace,  // work asked to stop: abandoned when it has not returned by then
  Abandon,    // abandoned work: the bound of the wait for the FAILED update's answer
  Ended,      // the next try of an ended execution's minimal terminal update
};

enum class RequestPurpose { Get, Select, Stream };

}  // namespace

struct Machine::Impl {
  Impl(MachineSettings settings, StateStore& store, const MonotonicClock& clock)
      : s(std::move(settings)),
        store(store),
        clock(clock),
        updates(s.thing_name,
                jobs::UpdateQueueSettings{duration_cast<milliseconds>(s.update_resend),
                                          s.update_backoff_base, s.update_backoff_cap},
                random_prefix()) {
    token_prefix = random_prefix();
  }

  static std::string random_prefix() {
    std::random_device rd;
    static const char* hex = "0123456789abcdef";
    std::string out = "u";
    for (int i = 0; i < 8; ++i)
      out += hex[rd() % 16];
    return out;
  }

  MachineSettings s;
  StateStore& store;
  const MonotonicClock& clock;
  jobs::UpdateQueue updates;
  std::string token_prefix;
  std::uint64_t next_token = 1;
  std::uint64_t next_id = 1;  // timers and work share one sequence: ids are never reused

  Phase phase = Phase::Idle;
  std::vector<Action> out;
  bool connected = false;
  bool ever_connected = false;
  bool shutdown = false;

  // The job being worked on.
  struct Job {
    std::string id;
    std::int64_t execution = 0;
    std::string status;  // cloud status when described
    jobs::JobDocument doc;
    std::string document_json;
    std::shared_ptr<plugin::KeyValueStore> kv = std::make_shared<plugin::KeyValueStore>();
    std::optional<std::filesystem::path> file;
  };
  std::optional<Job> job;
  // The final update of the job was refused once: the minimal one went out.
  std::optional<jobs::Update> final_minimal;
  // Executions ended locally (their terminal update refused for good), by job id: never
  // worked on again; their minimal update is retried with back-off.
  struct Ended {
    EndedExecution execution;
    int tries = 0;
    std::uint64_t timer = 0;
    std::set<std::string> tokens;  // of the try in flight
  };
  std::map<std::string, Ended> ended;
  std::optional<std::string> selected;  // job id picked from get, before its describe
  std::int64_t selected_execution = 0;  // its execution number (0: not known)
  std::optional<JobState> durable;      // what is (to be) saved for the job

  // The outstanding get / describe of the flow, and the cancellation check.
  struct Request {
    RequestPurpose purpose = RequestPurpose::Get;
    std::string job_id;
    std::string token;
    std::string topic;
    std::string payload;
    std::uint64_t timer = 0;
  };
  std::optional<Request> request;
  std::optional<Request> cancel_check;

  // The running work (one at a time).
  struct Work {
    std::uint64_t id = 0;
    bool download = false;
    Step step = Step::Version;
  };
  std::optional<Work> work;

  // The step of the current phase: retries and deadline.
  Step step = Step::Version;
  int retry_count = 0;
  TimePoint step_first_start{};
  std::int64_t step_elapsed_base = 0;
  std::uint64_t retry_timer = 0;
  std::uint64_t deadline_timer = 0;
  // The step's deadline passed while its work ran: the reason the job fails with. Work that
  // can be stopped was asked to, and the job fails with it once the work returned; a
  // not-interruptible install is waited for and its result counts as it is.
  std::optional<std::string> deadline_missed;

  // Work asked to stop gets stop_grace to return; after that it is abandoned and the machine
  // asks the runtime to exit (a clean daemon replaces this one).
  std::uint64_t stop_grace_timer = 0;
  bool work_abandoned = false;
  std::uint64_t abandon_timer = 0;

  // Updates the flow waits for.
  std::string awaited_token;           // installation_start / reboot_start
  std::set<std::string> final_tokens;  // the terminal update(s)
  std::vector<jobs::Update> final_updates;
  bool refetch_later = false;
  // A notify listed jobs of ours while a get was on its way: the get's answer may predate them
  // (AWS does not order a response against a notification), so an empty answer is not trusted.
  bool notified_during_get = false;
  std::optional<TimePoint> updates_timer_at;
  std::uint64_t updates_timer = 0;
  std::uint64_t refetch_timer = 0;
  std::uint64_t poll_timer = 0;

  // Consecutive downloads of the job refused as UrlExpired without transferring a byte.
  int url_refusals = 0;

  // Whether the current step's attempts are the saved step's own (see rerun_before), and
  // whether the running attempt was counted in unfinished_starts.
  bool counting = true;
  bool attempt_counted = false;

  // Progress budget.
  ProgressBudget progress{s.progress_percent, s.progress_interval};
  std::optional<std::string> pending_line;
  std::uint64_t progress_timer = 0;

  std::map<std::uint64_t, TimerPurpose> timers;
  std::deque<Trigger> triggers;  // fired, not yet taken (see take_transitions)

  // ---------------------------------------------------------------- plumbing

  TimePoint now() const { return clock.now(); }

  std::string new_token() { return token_prefix + "-" + std::to_string(next_token++); }

  std::uint64_t set_timer(TimerPurpose purpose, milliseconds delay) {
    const std::uint64_t id = next_id++;
    timers[id] = purpose;
    out.push_back(SetTimer{id, std::max(delay, milliseconds(0))});
    return id;
  }

  void cancel_timer(std::uint64_t& id) {
    if (id != 0 && timers.erase(id) != 0)
      out.push_back(CancelTimer{id});
    id = 0;
  }

  void publish(std::string topic, std::string payload) {
    if (connected)
      out.push_back(Publish{std::move(topic), std::move(payload), 1});
  }

  void status(const std::string& text) { out.push_back(SystemdStatus{text}); }

  // Saves the job state. A failure is logged here; only the save before the restart must
  // succeed for the flow to go on (see enter_reboot_ack).
  Status persist() {
    if (!durable)
      return {};
    if (job)
      durable->store = job->kv->snapshot();
    auto saved = store.save(*durable);
    if (!saved)
      spdlog::error("cannot save the job state: {}", saved.error().message());
    return saved;
  }

  void forget_durable() {
    durable.reset();
    if (auto cleared = store.clear(); !cleared)
      spdlog::error("cannot remove the job state: {}", cleared.error().message());
  }

  void pump_updates() {
    if (connected)
      for (auto& o : updates.poll(now()))
        out.push_back(Publish{std::move(o.topic), std::move(o.payload), 1});
    const auto next = connected ? updates.next_wakeup() : std::nullopt;
    if (next == updates_timer_at)
      return;
    cancel_timer(updates_timer);
    updates_timer_at = next;
    if (next) {
      const TimePoint t = now();
      const auto delay = *next <= t ? milliseconds(0) : duration_cast<milliseconds>(*next - t);
      updates_timer = set_timer(TimerPurpose::Updates, delay + milliseconds(1));
    }
  }

  std::string enqueue(jobs::Update update) {
    spdlog::info("job {}: {} {} {}", update.job_id, update.status, update.state,
                 update.progress ? "" : update.message);
    return updates.enqueue(std::move(update));
  }

  std::string update(const std::string& status, const std::string& state,
                     const std::string& message = "none", std::optional<int> timeout = {},
                     bool progress = false) {
    jobs::Update u;
    u.job_id = job->id;
    u.execution_number = job->execution;
    u.status = status;
    u.state = state;
    u.message = sanitize_status_detail(message);
    u.step_timeout_minutes = timeout;
    u.progress = progress;
    return enqueue(std::move(u));
  }

  // ---------------------------------------------------------------- the table

  // Queues a trigger; handle() takes the transitions one after the other, so that entering a
  // phase never runs inside the transition that led there (Mender's PostEvent).
  void fire(Trigger trigger) { triggers.push_back(trigger); }

  void take_transitions() {
    while (!triggers.empty()) {
      const Trigger trigger = triggers.front();
      triggers.pop_front();
      const Phase from = phase;
      const Transition* found = find_transition(from, trigger);
      // Every trigger is fired from a phase that expects it.
      if (!UPPARAT_CHECK(found, std::string("no transition from ") + to_string(from) + " on " +
                                    to_string(trigger))) {
        triggers.clear();
        bug("no transition from " + std::string(to_string(from)) + " on " + to_string(trigger));
        continue;
      }
      leave(from);
      phase = found->to;
      spdlog::debug("state machine: {} -> {} on {}", to_string(from), to_string(phase),
                    to_string(trigger));
      if (found->action == OnTransition::EndJob)
        end_job();
      enter(phase);
    }
  }

  // After a broken invariant (logged by UPPARAT_CHECK in release builds): the job fails.
  void bug(const std::string& what) {
    if (job && has_job(phase) && phase != Phase::Finishing) {
      final_updates = {make_update("FAILED", failed_state(step), "internal error: " + what)};
      fire(Trigger::Bug);
    }
  }

  void leave(Phase) {
    cancel_timer(retry_timer);
    cancel_timer(deadline_timer);
    deadline_missed.reset();
    cancel_timer(progress_timer);
    cancel_timer(poll_timer);
    pending_line.reset();
    awaited_token.clear();
    if (request) {
      cancel_timer(request->timer);
      request.reset();
    }
  }

  void enter(Phase p) {
    switch (p) {
      case Phase::FetchJobs:
        return enter_fetch_jobs();
      case Phase::Monitor:
        status("waiting for jobs");
        return arm_poll();
      case Phase::DescribeJob:
        return send_request(RequestPurpose::Select, *selected);
      case Phase::VerifyJob:
        status("job " + job->id + ": checking the installed version");
        return begin_step(Step::Version, SavedStep::VerifyJob);
      case Phase::DownloadGate:
        status("job " + job->id + ": waiting for the download to be allowed");
        if (job->doc.force)
          return gate_open();
        return begin_step(Step::Download, SavedStep::DownloadGate);
      case Phase::Download:
        return enter_download();
      case Phase::DescribeForInstall:
        return send_request(RequestPurpose::Stream, job->id);
      case Phase::Install:
        return enter_install();
      case Phase::RebootAck:
        return enter_reboot_ack();
      case Phase::Restart:
        status("job " + job->id + ": restarting");
        return begin_step(Step::Restart, SavedStep::Restart);
      case Phase::VerifyInstallation:
        status("job " + job->id + ": verifying the installation");
        return begin_step(Step::Version, SavedStep::VerifyInstallation);
      case Phase::Ready:
        status("job " + job->id + ": checking readiness");
        return begin_step(Step::Ready, SavedStep::Ready);
      case Phase::Finishing:
        return enter_finishing();
      case Phase::Stopping:
        return enter_stopping();
      case Phase::Idle:
      case Phase::ShuttingDown:
        return;
    }
  }

  // ---------------------------------------------------------------- requests

  void send_request(RequestPurpose purpose, const std::string& job_id) {
    Request r;
    r.purpose = purpose;
    r.job_id = job_id;
    r.token = new_token();
    if (purpose == RequestPurpose::Get) {
      notified_during_get = false;
      r.topic = jobs::get_topic(s.thing_name);
      r.payload = jobs::build_get_request(r.token);
    } else {
      // Pinned to the execution: a retry's new execution is not this one.
      const std::int64_t execution =
          purpose == RequestPurpose::Select ? selected_execution : job->execution;
      r.topic = jobs::describe_topic(s.thing_name, job_id);
      r.payload = jobs::build_describe_request(r.token, known_execution(execution));
    }
    publish(r.topic, r.payload);
    r.timer = set_timer(TimerPurpose::Request, s.request_resend);
    request = std::move(r);
  }

  void resend(std::optional<Request>& r, TimerPurpose purpose) {
    if (!r)
      return;
    publish(r->topic, r->payload);
    cancel_timer(r->timer);
    r->timer = set_timer(purpose, s.request_resend);
  }

  void enter_fetch_jobs() {
    status("fetching jobs");
    if (refetch_later) {
      // The last job ended with a rejected update: do not loop on it at full speed.
      refetch_later = false;
      refetch_timer = set_timer(TimerPurpose::Refetch, s.request_resend);
      return;
    }
    send_request(RequestPurpose::Get, "");
  }

  // The safety net for a lost notify (QoS 1 messages are lost when the persistent session
  // expired): a slow `get` while nothing else is going on.
  void arm_poll() {
    if (s.poll_interval.count() <= 0)
      return;
    const auto base = duration_cast<milliseconds>(s.poll_interval);
    std::random_device rd;
    const auto jitter = milliseconds(base.count() / 10 > 0 ? rd() % (base.count() / 10 + 1) : 0);
    poll_timer = set_timer(TimerPurpose::Poll, base + jitter);
  }

  bool ours(const std::string& job_id) const {
    return job_id.compare(0, s.job_prefix.size(), s.job_prefix) == 0;
  }

  void on_get_accepted(const jobs::PendingJobs& pending) {
    forget_ended_not_listed(pending);
    const Selection selection = select_job(pending, [&](const jobs::JobSummary& j) {
      return ours(j.job_id) && jobs::valid_job_id(j.job_id) && !is_ended(j);
    });
    const auto& in_progress = selection.multiple_in_progress;
    if (!in_progress.empty()) {
      final_updates.clear();
      std::string ids;
      for (const auto& j : in_progress)
        ids += (ids.empty() ? "" : ", ") + j.job_id;
      for (const auto& j : in_progress) {
        updates.set_version(j.job_id, j.execution_number, j.version_number);
        jobs::Update u;
        u.job_id = j.job_id;
        u.execution_number = j.execution_number;
        u.status = "FAILED";
        u.state = "error_multiple_in_progress";
        u.message = sanitize_status_detail(std::to_string(in_progress.size()) +
                                           " upparat jobs are IN_PROGRESS: " + ids);
        final_updates.push_back(std::move(u));
      }
      spdlog::error("{} jobs IN_PROGRESS ({}): failing all of them", in_progress.size(), ids);
      // None of them goes on: their downloads and the saved state go (no job is set, so
      // end_job() does not run after this).
      for (const auto& j : in_progress)
        out.push_back(RemoveDownload{j.job_id});
      if (durable) {
        out.push_back(RemoveDownload{durable->job_id});
        forget_durable();
      }
      return fire(Trigger::MultipleInProgress);
    }
    if (selection.job) {
      selected = selection.job->job_id;
      selected_execution = selection.job->execution_number;
    } else {
      if (notified_during_get) {
        // Stale: a notify listed jobs after this get was sent. Wait for them as if that
        // notify came now, which fetches again.
        spdlog::debug("get answered nothing pending, but a notify listed jobs since: again");
        return fire(Trigger::GetStale);
      }
      if (durable) {
        spdlog::info("job {} of the saved state is no longer pending: forgetting it",
                     durable->job_id);
        out.push_back(RemoveDownload{durable->job_id});
        forget_durable();
      }
      return fire(Trigger::NoJobs);
    }
    spdlog::info("selected job {}", *selected);
    fire(Trigger::JobSelected);
  }

  void on_select_described(const jobs::Execution& e) {
    if (e.job_id != *selected)
      return;
    const bool local =
        durable && durable->job_id == e.job_id && durable->execution_number == e.execution_number;
    if (jobs::is_terminal_status(e.status) || other_execution(e, selected_execution)) {
      spdlog::info("job {} execution {} is {}: nothing to do", e.job_id, e.execution_number,
                   e.status);
      refetch_later = true;  // get listed it as pending: give the cloud time to agree
      return job_gone(e.job_id);
    }
    if (durable && !local) {
      spdlog::info("saved state of job {} (execution {}) is stale: forgetting it", durable->job_id,
                   durable->execution_number);
      out.push_back(RemoveDownload{durable->job_id});
      forget_durable();
    }
    Job j;
    j.id = e.job_id;
    j.execution = e.execution_number;
    j.status = e.status;
    j.document_json = e.document_json;
    if (job && job->id == j.id)
      j.kv = job->kv;
    else if (local)
      j.kv = std::make_shared<plugin::KeyValueStore>(durable->store);
    job = std::move(j);
    // The starting point of expectedVersion (also after a reboot or a re-describe).
    updates.set_version(e.job_id, e.execution_number, e.version_number);
    auto doc = jobs::parse_job_document(e.document_json, s.allow_http);
    if (!doc) {
      spdlog::error("job {}: invalid job document: {}", e.job_id, doc.error().message());
      final_updates = {make_update("REJECTED", "invalid_job_document", doc.error().message())};
      return fire(Trigger::InvalidDocument);
    }
    job->doc = std::move(*doc);
    spdlog::info("job {} ({}): version {}, file {}{}", job->id, e.status, job->doc.version,
                 redact_url(job->doc.file), job->doc.force ? ", forced" : "");
    if (local) {
      const ResumeRule& rule = resume_rule(durable->step);
      if (rule.step && durable->unfinished_starts >= s.max_unfinished_starts) {
        final_updates = {make_update("FAILED", failed_state(*rule.step),
                                     "daemon died " + std::to_string(durable->unfinished_starts) +
                                         " times during " + std::string(to_string(*rule.step)))};
        return fire(Trigger::DaemonDied);
      }
      spdlog::info("job {}: continuing from the saved step {}", job->id, to_string(durable->step));
      if (durable->step == SavedStep::Finish)
        final_updates = {
            make_update(durable->final_status, durable->final_state, durable->final_message)};
      if (rule.trigger)
        return fire(s.install_from_url ? rule.streaming : *rule.trigger);
      // verify_job: start over as if new, keeping the saved counts
    } else {
      durable = JobState{};
      durable->job_id = job->id;
      durable->execution_number = job->execution;
    }
    durable->version = job->doc.version;
    durable->force = job->doc.force;
    if (e.status == "IN_PROGRESS") {
      auto state = e.status_details.find("state");
      if (!local && state != e.status_details.end() && state->second == "reboot_start")
        return fire(Trigger::AlreadyRebooted);
      return fire(Trigger::Redo);
    }
    if (job->doc.force)
      return fire(Trigger::Redo);
    fire(Trigger::CheckVersion);
  }

  jobs::Update make_update(const std::string& status, const std::string& state,
                           const std::string& message) {
    jobs::Update u;
    u.job_id = job ? job->id : *selected;
    u.execution_number = job ? job->execution : selected_execution;
    u.status = status;
    u.state = state;
    u.message = sanitize_status_detail(message);
    return u;
  }

  // A describe pinned to `execution` answered another one (a cloud that ignored the field).
  static bool other_execution(const jobs::Execution& e, std::int64_t execution) {
    return execution > 0 && e.execution_number > 0 && e.execution_number != execution;
  }

  void on_stream_described(const jobs::Execution& e) {
    if (jobs::is_terminal_status(e.status) || other_execution(e, job->execution))
      return job_gone(e.job_id);
    updates.set_version(e.job_id, e.execution_number, e.version_number);
    auto doc = jobs::parse_job_document(e.document_json, s.allow_http);
    if (doc)
      job->doc.file = doc->file;
    else
      spdlog::warn("job {}: describe for a fresh URL: {}", job->id, doc.error().message());
    fire(Trigger::FreshUrl);
  }

  // ---------------------------------------------------------------- steps

  // On the way back to a saved step, the step before it runs again (the download gate
  // before a resumed download, the download before a resumed install). That run is a check,
  // not an attempt of the saved step: it neither replaces the saved step nor counts.
  static bool rerun_before(SavedStep saved, SavedStep durable_step) {
    return (durable_step == SavedStep::DownloadGate && saved == SavedStep::Download) ||
           (durable_step == SavedStep::Download && saved == SavedStep::Install);
  }

  // Makes `durable_step` the saved step (keeping its counters when it already was), or marks
  // the step as a re-run before the saved one.
  void save_step_start(SavedStep durable_step) {
    step_first_start = now();
    step_elapsed_base = 0;
    retry_count = 0;
    counting = true;
    if (!durable)
      return;
    if (rerun_before(durable->step, durable_step)) {
      counting = false;
    } else if (durable->step == durable_step) {
      retry_count = durable->retry_count;
      step_elapsed_base = durable->step_elapsed_seconds;
    } else {
      durable->step = durable_step;
      durable->unfinished_starts = 0;
      durable->retry_count = 0;
      durable->step_elapsed_seconds = 0;
    }
  }

  // Starts the step of the current phase (first attempt).
  void begin_step(Step st, SavedStep durable_step) {
    step = st;
    save_step_start(durable_step);
    const seconds deadline = s.step_deadline[index(st)] - seconds(step_elapsed_base);
    if (!configured(st)) {
      // The classic missing hook: not run at all.
      return on_step_finished(StepFinished{0, st, {Outcome::NotSupported, "", std::nullopt}});
    }
    deadline_timer =
        set_timer(TimerPurpose::StepDeadline, std::max<milliseconds>(deadline, milliseconds(0)));
    run_step();
  }

  bool configured(Step st) const { return s.step_configured[index(st)]; }

  std::int64_t step_elapsed() const {
    return step_elapsed_base + duration_cast<seconds>(now() - step_first_start).count();
  }

  // Saves that an attempt starts (counted until it finishes).
  void attempt_starts() {
    if (!durable)
      return;
    if (counting) {
      ++durable->unfinished_starts;
      attempt_counted = true;
      durable->retry_count = retry_count;
      durable->step_elapsed_seconds = step_elapsed();
    }
    persist();
  }

  void attempt_ended() {
    attempt_counted = false;
    if (!durable || !counting)
      return;
    durable->unfinished_starts = 0;
    durable->step_elapsed_seconds = step_elapsed();
    persist();
  }

  plugin::JobContext context() const {
    plugin::JobContext c;
    c.job_id = job->id;
    c.execution_number = job->execution;
    c.version = job->doc.version;
    c.meta = job->doc.meta;
    c.url = job->doc.file;
    c.sha256 = job->doc.sha256;
    c.size = job->doc.size;
    c.document_json = job->document_json;
    c.file_path = job->file;
    c.force = job->doc.force;
    c.seconds_since_first = step_elapsed();
    c.retry_count = retry_count;
    return c;
  }

  void run_step() {
    attempt_starts();
    Work w{next_id++, false, step};
    work = w;
    out.push_back(RunStep{w.id, step, context(), job->kv});
  }

  void on_step_finished(const StepFinished& f) {
    attempt_ended();
    const auto& r = f.result;
    if (r.outcome == Outcome::RetryLater) {
      if (deadline_missed)
        return step_failed(*deadline_missed);
      if (retry_count >= s.max_retries)
        return step_failed("timed out after " + std::to_string(s.max_retries) + " retries");
      const auto delay = r.retry_after.value_or(s.retry_interval);
      spdlog::info("job {}: {} step asks to retry in {} s ({}){}", job->id, to_string(step),
                   delay.count(), retry_count + 1, r.text.empty() ? "" : ": " + r.text);
      retry_timer = set_timer(TimerPurpose::StepRetry, delay);
      return;
    }
    if (r.outcome == Outcome::Failed)
      return step_failed(r.text.empty() ? "failed" : r.text);
    const bool ok = r.outcome == Outcome::Ok;
    switch (phase) {
      case Phase::VerifyJob: {
        if (ok && trim(r.text) == job->doc.version) {
          spdlog::info("job {}: version {} is already installed", job->id, job->doc.version);
          final_updates = {make_update("SUCCEEDED", "version_already_installed", "none")};
          return fire(Trigger::VersionInstalled);
        }
        if (ok)
          spdlog::info("job {}: running {}, installing {}", job->id, trim(r.text),
                       job->doc.version);
        return fire(Trigger::VersionDiffers);
      }
      case Phase::DownloadGate:
        return gate_open();
      case Phase::Install:
        if (!ok) {
          final_updates = {make_update("SUCCEEDED", "no_installation_hook_provided", "none")};
          return fire(Trigger::NoInstaller);
        }
        return fire(Trigger::Installed);
      case Phase::Restart:
        final_updates = {ok ? make_update("SUCCEEDED", "complete_soft_restart", "none")
                            : make_update("SUCCEEDED", "no_restart_hook_provided", "none")};
        return fire(ok ? Trigger::SoftRestart : Trigger::NoRestarter);
      case Phase::VerifyInstallation: {
        if (!ok) {
          final_updates = {make_update("SUCCEEDED", "complete_no_version_check", "none")};
          return fire(Trigger::NoVersionCheck);
        }
        const std::string installed = trim(r.text);
        if (installed != job->doc.version) {
          final_updates = {
              make_update("FAILED", "version_mismatch",
                          "Expected version '" + job->doc.version + "', got '" + installed + "'")};
          return fire(Trigger::VersionMismatch);
        }
        return fire(Trigger::VersionMatches);
      }
      case Phase::Ready:
        final_updates = {ok ? make_update("SUCCEEDED", "complete_ready", "none")
                            : make_update("SUCCEEDED", "complete_no_ready_check", "none")};
        return fire(ok ? Trigger::Healthy : Trigger::NoReadyCheck);
      default:
        spdlog::error("state machine: step result in phase {}", to_string(phase));
    }
  }

  void step_failed(const std::string& reason) {
    spdlog::error("job {}: {} step failed: {}", job->id, to_string(step), reason);
    final_updates = {make_update("FAILED", failed_state(step), reason)};
    fire(Trigger::StepFailed);
  }

  void on_deadline() {
    deadline_timer = 0;
    const auto limit = s.step_deadline[index(step)].count();
    const std::string reason = "timed out after " + std::to_string(limit) + " s";
    if (!work)
      return step_failed(reason);
    // No FAILED while the work runs: a step that goes on could still install, activate a
    // slot or reboot after the job was reported FAILED.
    deadline_missed = reason;
    if (uninterruptible(*work)) {
      spdlog::error(
          "job {}: the install step passed its deadline of {} s, but it cannot be interrupted "
          "(INSTALL_NOT_INTERRUPTIBLE): waiting for it to end; its result counts as it is",
          job->id, limit);
      status("job " + job->id + ": installing, past the deadline");
      return;
    }
    spdlog::error("job {}: the {} step passed its deadline of {} s: asking it to stop", job->id,
                  to_string(step), limit);
    stop_work();
  }

  bool uninterruptible(const Work& w) const {
    return !w.download && w.step == Step::Install && s.install_not_interruptible;
  }

  // Asks the running work to stop. Work that can be stopped has stop_grace to return.
  void stop_work() {
    if (!work)
      return;
    out.push_back(StopWork{work->id});
    if (!uninterruptible(*work) && !work_abandoned && stop_grace_timer == 0)
      stop_grace_timer = set_timer(TimerPurpose::StopGrace, s.stop_grace);
  }

  // The running work reported back (before `work` is reset).
  void work_returned() {
    cancel_timer(stop_grace_timer);
    cancel_timer(abandon_timer);
    if (work_abandoned)
      spdlog::warn("job {}: the abandoned {} ended after all", job ? job->id : "?",
                   work->download ? "download" : to_string(work->step));
    work_abandoned = false;
  }

  // The work asked to stop did not return within stop_grace: it is abandoned. The job's
  // result is reported and saved, then the runtime is asked to exit, since the plugin cannot
  // be unloaded while it runs and this daemon could not run another step meanwhile.
  void on_stop_grace() {
    stop_grace_timer = 0;
    if (!work || phase == Phase::ShuttingDown)
      return;
    work_abandoned = true;
    const std::string what(work->download ? "download" : to_string(work->step));
    spdlog::critical(
        "job {}: the {} did not return within {} s of the request to stop: abandoning it; "
        "the daemon exits once the job's result is reported, for a clean daemon to take over",
        job ? job->id : "?", what, s.stop_grace.count());
    if (!deadline_missed)
      return exit_for_stuck_work();  // Stopping: the job is gone, nothing to report
    final_updates = {make_update("FAILED", failed_state(step),
                                 *deadline_missed + "; the plugin did not stop within " +
                                     std::to_string(s.stop_grace.count()) + " s")};
    fire(Trigger::StepFailed);  // Finishing saves `finish` and sends it; maybe_done() exits
    if (!exited)
      abandon_timer = set_timer(TimerPurpose::Abandon, s.update_resend);
  }

  void exit_for_stuck_work() {
    if (exited)
      return;
    exited = true;
    status("a plugin step did not stop: exiting");
    out.push_back(Exit{ExitReason::PluginStuck});
  }

  void gate_open() { fire(s.install_from_url ? Trigger::GateOpenStream : Trigger::GateOpen); }

  // ---------------------------------------------------------------- download

  void enter_download() {
    status("job " + job->id + ": downloading");
    step = Step::Download;
    // Resuming an install downloads again first (quick: the file is complete); that is not
    // an attempt of the install.
    save_step_start(SavedStep::Download);
    out.push_back(CleanDownloads{job->id});
    update("IN_PROGRESS", "download_start", "none",
           to_minutes(s.step_deadline[index(Step::Download)] +
                      duration_cast<seconds>(s.step_timeout_margin)));
    deadline_timer = set_timer(TimerPurpose::StepDeadline, s.step_deadline[index(Step::Download)]);
    progress.start_download(now());
    attempt_starts();
    Work w{next_id++, true, Step::Download};
    work = w;
    download::Request req;
    req.job_id = job->id;
    req.url = job->doc.file;
    req.sha256 = job->doc.sha256;
    if (job->doc.size)
      req.size = static_cast<std::uint64_t>(*job->doc.size);
    out.push_back(RunDownload{w.id, std::move(req), durable->resume});
  }

  void on_download_progress(const download::Progress& p) {
    if (!progress.download_due(p.percent(), now()))
      return;
    update("IN_PROGRESS", "download_progress",
           "{\"downloaded_bytes\": " + std::to_string(p.bytes) + "}", {}, true);
  }

  void on_download_finished(const download::DownloadResult& r) {
    attempt_ended();
    switch (r.outcome) {
      case download::Outcome::Complete:
        job->file = r.file;
        return fire(Trigger::Downloaded);
      case download::Outcome::UrlExpired:
        return on_url_expired(r);
      case download::Outcome::Cancelled:
        // Only after StopWork, which is followed by a transition away from Download.
        spdlog::warn("job {}: download cancelled", job->id);
        return;
      case download::Outcome::Failed:
        return step_failed(r.reason.empty() ? "download failed" : r.reason);
    }
  }

  // A forged or permanently broken URL is refused (403) every time, fresh URL or not: back
  // off between the describes and give up after max_url_refusals refusals in a row that
  // transferred nothing. A URL that expired mid-download (bytes > 0) resets the count.
  void on_url_expired(const download::DownloadResult& r) {
    url_refusals = r.bytes_transferred > 0 ? 0 : url_refusals + 1;
    if (url_refusals >= std::max(s.max_url_refusals, 1)) {
      spdlog::error("job {}: the download URL was refused {} times in a row ({})", job->id,
                    url_refusals, r.reason);
      return step_failed("the download URL was refused (HTTP 403) " + std::to_string(url_refusals) +
                         " times in a row with a fresh URL each time");
    }
    update("IN_PROGRESS", "download_interrupt", r.reason.empty() ? "none" : r.reason);
    selected = job->id;
    selected_execution = job->execution;
    if (url_refusals < 2) {
      spdlog::warn("job {}: the download URL expired: describing the job again", job->id);
      return fire(Trigger::UrlExpired);
    }
    auto delay = s.url_refused_backoff_base;
    for (int i = 2; i < url_refusals && delay < s.url_refused_backoff_cap; ++i)
      delay *= 2;
    delay = std::min(delay, s.url_refused_backoff_cap);
    spdlog::warn(
        "job {}: the download URL was refused {} times in a row: describing the job "
        "again in {} s",
        job->id, url_refusals, duration_cast<seconds>(delay).count());
    // Stays in `download` without work until the timer fires; a cancel, the deadline or a
    // shutdown meanwhile leave the phase and cancel the timer.
    retry_timer = set_timer(TimerPurpose::UrlRetry, delay);
  }

  // ---------------------------------------------------------------- install and reboot

  void enter_install() {
    status("job " + job->id + ": installing");
    step = Step::Install;
    if (durable->step != SavedStep::Install) {
      durable->step = SavedStep::Install;
      durable->unfinished_starts = 0;
      durable->retry_count = 0;
      durable->step_elapsed_seconds = 0;
    }
    persist();
    if (!configured(Step::Install)) {
      final_updates = {make_update("SUCCEEDED", "no_installation_hook_provided", "none")};
      return fire(Trigger::NoInstaller);
    }
    // No install before an IN_PROGRESS update was accepted: a cancel that landed since the
    // job was picked must still stop it.
    awaited_token = update("IN_PROGRESS", "installation_start", "none",
                           to_minutes(s.step_deadline[index(Step::Install)] +
                                      duration_cast<seconds>(s.step_timeout_margin)));
    progress.start_install();
  }

  void on_install_accepted() {
    awaited_token.clear();
    begin_step(Step::Install, SavedStep::Install);
  }

  void on_install_progress(const StepProgress& p) {
    pending_line = p.line;
    if (progress.line_due(p.percent, now()))
      return send_line();
    if (progress_timer == 0)
      progress_timer = set_timer(TimerPurpose::Progress,
                                 duration_cast<milliseconds>(progress.line_due_at() - now()));
  }

  // The waiting line's time came.
  void flush_line() {
    if (pending_line)
      progress.sent(-1, now());
    send_line();
  }

  void send_line() {
    cancel_timer(progress_timer);
    if (!pending_line)
      return;
    update("IN_PROGRESS", "installation_progress", *pending_line, {}, true);
    pending_line.reset();
  }

  void enter_reboot_ack() {
    if (!configured(Step::Restart)) {
      final_updates = {make_update("SUCCEEDED", "no_restart_hook_provided", "none")};
      return fire(Trigger::NoRestarter);
    }
    status("job " + job->id + ": reboot starts");
    durable->step = SavedStep::Reboot;
    durable->unfinished_starts = 0;
    if (auto saved = persist(); !saved) {
      // Restarting now would resume the install after the reboot (the saved step is still
      // `install`): on a full disk, an install-and-reboot loop. Announce nothing; fail.
      final_updates = {
          make_update("FAILED", failed_state(Step::Restart),
                      "cannot save the job state before the restart: " + saved.error().message())};
      return fire(Trigger::StepFailed);
    }
    const auto budget =
        s.step_deadline[index(Step::Restart)] + s.step_deadline[index(Step::Version)] +
        s.step_deadline[index(Step::Ready)] + duration_cast<seconds>(s.step_timeout_margin);
    awaited_token = update("IN_PROGRESS", "reboot_start", "none", to_minutes(budget));
  }

  // ---------------------------------------------------------------- ending

  void enter_finishing() {
    final_tokens.clear();
    if (job && durable && final_updates.size() == 1) {
      durable->step = SavedStep::Finish;
      durable->final_status = final_updates.front().status;
      durable->final_state = final_updates.front().state;
      durable->final_message = final_updates.front().message;
      persist();
    }
    for (auto& u : final_updates)
      final_tokens.insert(enqueue(u));
    final_updates.clear();
    status(job ? "job " + job->id + ": reporting the result" : "reporting");
    maybe_done();
  }

  void maybe_done() {
    if (phase != Phase::Finishing || !final_tokens.empty())
      return;
    if (!work)
      return fire(Trigger::Done);
    if (work_abandoned)
      exit_for_stuck_work();
  }

  void job_gone(const std::string& job_id) {
    spdlog::warn("job {} was cancelled or deleted: stopping", job_id);
    updates.drop_job(job_id);
    if (!job)
      job = Job{job_id, 0, "", {}, "", std::make_shared<plugin::KeyValueStore>(), {}};
    final_tokens.clear();
    fire(Trigger::Gone);
  }

  void enter_stopping() {
    if (work_abandoned)
      return exit_for_stuck_work();  // the job is gone: nothing to report
    stop_work();
    status(job ? "job " + job->id + ": stopping" : "stopping");
    if (!work)
      fire(Trigger::WorkEnded);
  }

  // Called when leaving Finishing / Stopping for FetchJobs.
  void end_job() {
    if (job)
      out.push_back(RemoveDownload{job->id});
    // The saved state may still name another job (its describe never came back): its file
    // goes too.
    if (durable && (!job || durable->job_id != job->id))
      out.push_back(RemoveDownload{durable->job_id});
    forget_durable();
    url_refusals = 0;
    final_minimal.reset();
    job.reset();
    selected.reset();
    selected_execution = 0;
    if (cancel_check) {
      cancel_timer(cancel_check->timer);
      cancel_check.reset();
    }
  }

  // ---------------------------------------------------------------- refused final updates

  // The final update was refused for good (InvalidRequest, for example). The job is never
  // worked on again: once more with minimal statusDetails, then it ends locally.
  void on_final_refused(const jobs::UpdateOutcome& o) {
    if (!job || o.update.job_id != job->id || phase != Phase::Finishing) {
      refetch_later = true;  // error_multiple_in_progress: the next get shows what is left
      return;
    }
    if (!final_minimal) {
      final_minimal = make_update(o.update.status, o.update.state, "none");
      spdlog::error(
          "job {}: the final update {} {} was refused ({}: {}): sending it again with "
          "minimal status details",
          job->id, o.update.status, o.update.state, o.code, o.message);
      if (durable && durable->step == SavedStep::Finish) {
        durable->final_message = "none";
        (void)persist();
      }
      if (job->status == "QUEUED") {
        jobs::Update start = *final_minimal;
        start.status = "IN_PROGRESS";
        final_tokens.insert(enqueue(start));
      }
      final_tokens.insert(enqueue(*final_minimal));
      return;
    }
    // The rest of this try (the terminal update after a refused IN_PROGRESS) goes too.
    final_tokens.clear();
    updates.drop_job(job->id);
    const jobs::Update minimal = *final_minimal;
    spdlog::critical(
        "job {} (execution {}): the cloud refuses its final update {} {} even with minimal "
        "status details ({}: {}). The job is ended on this device and never run again; the "
        "update is retried with back-off up to every hour. Check the job in the AWS IoT "
        "console.",
        job->id, job->execution, minimal.status, minimal.state, o.code, o.message);
    EndedExecution e{job->id, job->execution, minimal.status, minimal.state,
                     job->status == "QUEUED"};
    Ended record;
    record.execution = e;
    record.tries = 1;
    record.timer = set_timer(TimerPurpose::Ended, ended_delay(record.tries));
    ended[job->id] = std::move(record);
    save_ended();
  }

  // 1 min, 2, 4, ... capped at 1 h.
  milliseconds ended_delay(int tries) const {
    milliseconds delay = s.ended_retry_base;
    for (int i = 0; i < tries && delay < s.ended_retry_cap; ++i)
      delay *= 2;
    return std::min(delay, s.ended_retry_cap);
  }

  void save_ended() {
    std::vector<EndedExecution> list;
    for (const auto& [id, e] : ended)
      list.push_back(e.execution);
    if (auto saved = store.save_ended(list); !saved)
      spdlog::error("cannot save the ended executions: {}", saved.error().message());
  }

  bool is_ended(const jobs::JobSummary& j) const {
    auto it = ended.find(j.job_id);
    return it != ended.end() && it->second.execution.execution_number == j.execution_number;
  }

  // An ended execution that the cloud no longer lists as pending is over there too.
  void forget_ended_not_listed(const jobs::PendingJobs& pending) {
    bool changed = false;
    for (auto it = ended.begin(); it != ended.end();) {
      const jobs::JobSummary* listed = nullptr;
      for (const auto* list : {&pending.in_progress, &pending.queued})
        for (const auto& j : *list)
          if (j.job_id == it->first && j.execution_number == it->second.execution.execution_number)
            listed = &j;
      if (listed) {
        updates.set_version(listed->job_id, listed->execution_number, listed->version_number);
        ++it;
        continue;
      }
      spdlog::info("job {}: no longer pending in the cloud, no longer retried", it->first);
      cancel_timer(it->second.timer);
      updates.drop_job(it->first);
      it = ended.erase(it);
      changed = true;
    }
    if (changed)
      save_ended();
  }

  void retry_ended(std::uint64_t timer) {
    for (auto& [id, e] : ended) {
      if (e.timer != timer)
        continue;
      e.timer = 0;
      ++e.tries;
      jobs::Update u;
      u.job_id = id;
      u.execution_number = e.execution.execution_number;
      u.state = e.execution.state;
      u.message = "none";
      if (e.execution.queued) {
        u.status = "IN_PROGRESS";
        e.tokens.insert(enqueue(u));
      }
      u.status = e.execution.status;
      e.tokens.insert(enqueue(u));
      return;
    }
  }

  // True when `o` answers a try of an ended execution.
  bool on_ended_outcome(const jobs::UpdateOutcome& o) {
    auto it = ended.find(o.update.job_id);
    if (it == ended.end() || it->second.tokens.erase(o.client_token) == 0)
      return false;
    Ended& e = it->second;
    const bool terminal = o.update.status != "IN_PROGRESS";
    if (o.result == jobs::UpdateResult::Gone ||
        (o.result == jobs::UpdateResult::Accepted && terminal)) {
      spdlog::warn(
          "job {}: the final update {} {} was {} at last", it->first, o.update.status,
          o.update.state,
          o.result == jobs::UpdateResult::Gone ? "overtaken (the job is gone)" : "accepted");
      updates.drop_job(it->first);
      cancel_timer(e.timer);
      ended.erase(it);
      save_ended();
      return true;
    }
    if (o.result == jobs::UpdateResult::Rejected) {
      e.tokens.clear();
      updates.drop_job(it->first);
      const auto delay = ended_delay(e.tries);
      spdlog::error("job {}: the final update {} {} is still refused ({}); next try in {} s",
                    it->first, o.update.status, o.update.state, o.code,
                    duration_cast<seconds>(delay).count());
      e.timer = set_timer(TimerPurpose::Ended, delay);
    }
    return true;
  }

  // ---------------------------------------------------------------- events

  void on(const Started&) {
    auto loaded = store.load();
    if (!loaded) {
      spdlog::error("ignoring the saved job state: {}", loaded.error().message());
      forget_durable();
    } else if (*loaded) {
      durable = **loaded;
      spdlog::info("saved state: job {} (execution {}) at step {}", durable->job_id,
                   durable->execution_number, to_string(durable->step));
    }
    if (auto saved = store.load_ended(); !saved) {
      spdlog::error("ignoring the saved ended executions: {}", saved.error().message());
    } else {
      for (auto& e : *saved) {
        spdlog::error(
            "job {} (execution {}) ended locally: its final update {} {} is still "
            "refused; retrying it",
            e.job_id, e.execution_number, e.status, e.state);
        Ended record;
        record.execution = e;
        record.timer = set_timer(TimerPurpose::Ended, ended_delay(0));
        ended[e.job_id] = std::move(record);
      }
    }
    out.push_back(CleanDownloads{durable ? durable->job_id : ""});
    status("connecting");
  }

  void on(const Connected&) {
    connected = true;
    if (!ever_connected) {
      ever_connected = true;
      if (phase == Phase::Idle)
        return fire(Trigger::Connect);
    }
    updates.resend_all();
    resend(request, TimerPurpose::Request);
    resend(cancel_check, TimerPurpose::CancelCheck);
    if (phase == Phase::Monitor)
      fire(Trigger::JobsNotified);  // notify messages may have been missed while offline
  }

  void on(const Disconnected&) { connected = false; }

  void on(const MqttMessage& m) {
    const auto topic = jobs::parse_topic(s.thing_name, m.topic);
    if (!topic) {
      spdlog::debug("ignoring a message on {}", m.topic);
      return;
    }
    switch (topic->kind) {
      case jobs::TopicKind::Notify:
        return on_notify(m.payload);
      case jobs::TopicKind::GetAccepted: {
        auto answer = jobs::parse_get_accepted(m.payload);
        if (!answer)
          return spdlog::warn("{}", answer.error().message());
        if (phase != Phase::FetchJobs || !request || answer->client_token != request->token)
          return spdlog::debug("ignoring a stale get answer");
        return on_get_accepted(*answer);
      }
      case jobs::TopicKind::GetRejected: {
        auto answer = jobs::parse_rejected(m.payload);
        if (!answer || !request || phase != Phase::FetchJobs ||
            answer->client_token != request->token)
          return;
        spdlog::warn("get rejected with {}: {}", answer->code, answer->message);
        return;  // the request timer asks again
      }
      case jobs::TopicKind::DescribeAccepted: {
        auto answer = jobs::parse_describe_accepted(m.payload);
        if (!answer)
          return spdlog::warn("{}", answer.error().message());
        return on_describe_accepted(topic->job_id, *answer);
      }
      case jobs::TopicKind::DescribeRejected: {
        auto answer = jobs::parse_rejected(m.payload);
        if (!answer)
          return spdlog::warn("{}", answer.error().message());
        return on_describe_rejected(topic->job_id, *answer);
      }
      case jobs::TopicKind::UpdateAccepted: {
        auto answer = jobs::parse_update_accepted(m.payload);
        if (!answer)
          return spdlog::warn("{}", answer.error().message());
        if (auto outcome = updates.on_accepted(topic->job_id, *answer))
          on_update_outcome(*outcome);
        return;
      }
      case jobs::TopicKind::UpdateRejected: {
        auto answer = jobs::parse_rejected(m.payload);
        if (!answer)
          return spdlog::warn("{}", answer.error().message());
        if (auto outcome = updates.on_rejected(topic->job_id, *answer, now()))
          on_update_outcome(*outcome);
        return;
      }
    }
  }

  void on_notify(const std::string& payload) {
    auto pending = jobs::parse_notify(payload);
    if (!pending)
      return spdlog::warn("{}", pending.error().message());
    // A notify lists at most 15 executions (10 in older documentation): when other agents'
    // jobs fill it, one of ours may be left out, so a full-looking list is worth a get too.
    const bool any = std::any_of(pending->in_progress.begin(), pending->in_progress.end(),
                                 [&](const auto& j) { return ours(j.job_id); }) ||
                     std::any_of(pending->queued.begin(), pending->queued.end(),
                                 [&](const auto& j) { return ours(j.job_id); }) ||
                     pending->in_progress.size() + pending->queued.size() >= kNotifyMayBeTruncated;
    if (phase == Phase::Monitor) {
      if (any)
        fire(Trigger::JobsNotified);
      return;
    }
    if (phase == Phase::FetchJobs && any) {
      notified_during_get = true;
      return;
    }
    if (!job || !has_job(phase) || phase == Phase::Finishing)
      return;
    // Listed with another execution number: a retry queued a new execution after ours timed
    // out or failed. That one is not ours to report on; the describe below decides.
    auto listed = [&](const std::vector<jobs::JobSummary>& list) {
      return std::any_of(list.begin(), list.end(), [&](const auto& j) {
        return j.job_id == job->id && (j.execution_number == 0 || job->execution == 0 ||
                                       j.execution_number == job->execution);
      });
    };
    if (listed(pending->in_progress) || listed(pending->queued))
      return;
    // Not listed: cancelled, deleted, retried, or just beyond notify's 15 entries. Ask about
    // our execution.
    if (cancel_check)
      return;
    Request r;
    r.purpose = RequestPurpose::Select;
    r.job_id = job->id;
    r.token = new_token();
    r.topic = jobs::describe_topic(s.thing_name, job->id);
    r.payload = jobs::build_describe_request(r.token, known_execution(job->execution));
    publish(r.topic, r.payload);
    r.timer = set_timer(TimerPurpose::CancelCheck, s.request_resend);
    cancel_check = std::move(r);
  }

  void on_describe_accepted(const std::string& job_id, const jobs::DescribeAccepted& a) {
    if (cancel_check && a.client_token == cancel_check->token && job_id == cancel_check->job_id) {
      cancel_timer(cancel_check->timer);
      cancel_check.reset();
      if (!job || job->id != job_id || !has_job(phase))
        return;
      if (jobs::is_terminal_status(a.execution.status) ||
          other_execution(a.execution, job->execution))
        return job_gone(job_id);
      updates.set_version(job_id, a.execution.execution_number, a.execution.version_number);
      return;
    }
    if (!request || a.client_token != request->token || job_id != request->job_id)
      return spdlog::debug("ignoring a stale describe answer for {}", job_id);
    if (request->purpose == RequestPurpose::Select && phase == Phase::DescribeJob)
      return on_select_described(a.execution);
    if (request->purpose == RequestPurpose::Stream && phase == Phase::DescribeForInstall)
      return on_stream_described(a.execution);
  }

  void on_describe_rejected(const std::string& job_id, const jobs::Rejected& r) {
    const bool gone = r.code == "ResourceNotFound" || r.code == "TerminalStateReached";
    if (cancel_check && r.client_token == cancel_check->token && job_id == cancel_check->job_id) {
      cancel_timer(cancel_check->timer);
      cancel_check.reset();
      if (gone && job && job->id == job_id && has_job(phase))
        job_gone(job_id);
      return;
    }
    if (!request || r.client_token != request->token || job_id != request->job_id)
      return;
    spdlog::warn("describe of {} rejected with {}: {}", job_id, r.code, r.message);
    if (gone)
      return job_gone(job_id);
    // else the request timer asks again
  }

  void on_update_outcome(const jobs::UpdateOutcome& o) {
    if (o.result == jobs::UpdateResult::Gone && job && o.update.job_id == job->id && has_job(phase))
      return job_gone(job->id);
    if (on_ended_outcome(o))
      return;
    if (o.result == jobs::UpdateResult::Accepted && job && o.update.job_id == job->id &&
        o.update.status == "IN_PROGRESS")
      job->status = "IN_PROGRESS";
    if (final_tokens.erase(o.client_token) != 0) {
      if (o.result == jobs::UpdateResult::Rejected)
        on_final_refused(o);
      return maybe_done();
    }
    if (!awaited_token.empty() && o.client_token == awaited_token) {
      if (o.result != jobs::UpdateResult::Accepted) {
        // Cannot go on without it: the job is dropped here (download and saved state go) and
        // fetched again after a pause; it then starts over.
        spdlog::error("job {}: {} was rejected ({}): giving the job up for now", job->id,
                      o.update.state, o.code);
        refetch_later = true;
        return fire(Trigger::UpdateRefused);
      }
      if (phase == Phase::Install)
        return on_install_accepted();
      if (phase == Phase::RebootAck) {
        awaited_token.clear();
        return fire(Trigger::RebootAccepted);
      }
    }
  }

  bool current_work(std::uint64_t id) const { return work && work->id == id; }

  void work_finished() {
    work.reset();
    if (phase == Phase::Stopping)
      return fire(Trigger::WorkEnded);
    if (phase == Phase::Finishing)
      return maybe_done();
  }

  bool work_wanted() const {
    return phase != Phase::Stopping && phase != Phase::Finishing && phase != Phase::ShuttingDown;
  }

  void on(const StepFinished& f) {
    if (!current_work(f.work))
      return;
    work_returned();
    const bool wanted = work_wanted();
    if (phase == Phase::ShuttingDown) {
      work.reset();
      return;
    }
    if (!wanted)
      return work_finished();
    const bool stopped = !uninterruptible(*work);
    work.reset();
    if (deadline_missed && stopped) {
      attempt_ended();
      return step_failed(*deadline_missed);
    }
    on_step_finished(f);
  }

  void on(const StepProgress& p) {
    if (!current_work(p.work) || !job)
      return;
    if (phase == Phase::Install)
      return on_install_progress(p);
    spdlog::info("job {}: {}: {}", job->id, to_string(work->step), p.line);
  }

  void on(const DownloadFinished& f) {
    if (!current_work(f.work))
      return;
    work_returned();
    if (phase == Phase::ShuttingDown) {
      work.reset();
      return;
    }
    if (!work_wanted())
      return work_finished();
    work.reset();
    if (deadline_missed) {
      attempt_ended();
      return step_failed(*deadline_missed);
    }
    on_download_finished(f.result);
  }

  void on(const DownloadProgress& p) {
    if (current_work(p.work) && phase == Phase::Download)
      on_download_progress(p.progress);
  }

  void on(const DownloadResumeState& r) {
    if (!current_work(r.work) || !durable)
      return;
    // Bytes synced to disk are progress: earlier deaths during the download (power cuts in
    // the middle of a long download) no longer count, only this unfinished attempt does.
    if (counting && r.resume.synced_bytes > durable->resume.synced_bytes)
      durable->unfinished_starts = attempt_counted ? 1 : 0;
    durable->resume = r.resume;
    persist();
  }

  void on(const TimerFired& t) {
    auto it = timers.find(t.id);
    if (it == timers.end())
      return;  // cancelled
    const TimerPurpose purpose = it->second;
    timers.erase(it);
    switch (purpose) {
      case TimerPurpose::Request:
        if (request && request->timer == t.id) {
          request->timer = 0;
          resend(request, TimerPurpose::Request);
        }
        return;
      case TimerPurpose::CancelCheck:
        if (cancel_check && cancel_check->timer == t.id) {
          cancel_check->timer = 0;
          resend(cancel_check, TimerPurpose::CancelCheck);
        }
        return;
      case TimerPurpose::Updates:
        if (updates_timer == t.id) {
          updates_timer = 0;
          updates_timer_at.reset();
        }
        return;  // pump_updates() runs after every event
      case TimerPurpose::StepRetry:
        if (retry_timer == t.id && job && !work) {
          retry_timer = 0;
          ++retry_count;
          run_step();
        }
        return;
      case TimerPurpose::StepDeadline:
        if (deadline_timer == t.id)
          on_deadline();
        return;
      case TimerPurpose::Progress:
        if (progress_timer == t.id) {
          progress_timer = 0;
          flush_line();
        }
        return;
      case TimerPurpose::Poll:
        if (poll_timer == t.id) {
          poll_timer = 0;
          // Offline: the reconnect fetches the jobs anyway (and re-arms the poll).
          if (phase == Phase::Monitor && connected) {
            spdlog::debug("no notify for {} s: asking for pending jobs", s.poll_interval.count());
            fire(Trigger::JobsNotified);
          }
        }
        return;
      case TimerPurpose::UrlRetry:
        if (retry_timer == t.id && phase == Phase::Download && !work) {
          retry_timer = 0;
          fire(Trigger::UrlExpired);
        }
        return;
      case TimerPurpose::Ended:
        return retry_ended(t.id);
      case TimerPurpose::Refetch:
        if (refetch_timer == t.id && phase == Phase::FetchJobs) {
          refetch_timer = 0;
          send_request(RequestPurpose::Get, "");
        }
        return;
      case TimerPurpose::StopGrace:
        if (stop_grace_timer == t.id)
          on_stop_grace();
        return;
      case TimerPurpose::Abandon:
        if (abandon_timer == t.id) {
          abandon_timer = 0;
          if (work_abandoned) {
            spdlog::warn(
                "job {}: no answer to the final update within {} s: exiting anyway (the "
                "next start sends it again)",
                job ? job->id : "?", s.update_resend.count());
            exit_for_stuck_work();
          }
        }
        return;
    }
  }

  void on(const ShutdownRequested&) {
    if (shutdown)
      return;
    shutdown = true;
    const Phase from = phase;
    spdlog::info("shutting down in phase {}", to_string(from));
    if (from == Phase::Restart) {
      // SIGTERM during restart means the reboot is under way: stop nothing, report nothing.
      work.reset();
    } else if (work) {
      // The runtime bounds the shutdown itself: no grace timer.
      out.push_back(StopWork{work->id});
      cancel_timer(stop_grace_timer);
      if (durable && attempt_counted) {
        // Stopped on purpose: the daemon did not die during this attempt.
        --durable->unfinished_starts;
        attempt_counted = false;
        persist();
      }
    }
    leave(from);
    phase = Phase::ShuttingDown;
    status("stopping");
  }

  void maybe_exit() {
    if (phase == Phase::ShuttingDown && (!work || work_abandoned) && updates.empty())
      out.push_back(Exit{work ? ExitReason::PluginStuck : ExitReason::Shutdown});
  }

  std::vector<Action> handle(const Event& event) {
    out.clear();
    std::visit([this](const auto& e) { on(e); }, event);
    take_transitions();
    pump_updates();
    if (phase == Phase::ShuttingDown && !exited) {
      const std::size_t before = out.size();
      maybe_exit();
      exited = out.size() != before;
    }
    return std::move(out);
  }

  bool exited = false;
};

Machine::Machine(MachineSettings settings, StateStore& store, const MonotonicClock& clock)
    : impl_(std::make_unique<Impl>(std::move(settings), store, clock)) {}

Machine::~Machine() = default;

std::vector<Action> Machine::handle(const Event& event) {
  return impl_->handle(event);
}

Phase Machine::phase() const {
  return impl_->phase;
}

std::string Machine::current_job() const {
  return impl_->job ? impl_->job->id : "";
}

}  // namespace upparat::state
