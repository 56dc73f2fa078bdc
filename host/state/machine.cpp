#include "state/machine.hpp"

#include <algorithm>
#include <map>
#include <random>
#include <set>

#include <spdlog/spdlog.h>

#include "common/sanitize.hpp"
#include "common/url.hpp"
#include "jobs/document.hpp"
#include "jobs/messages.hpp"
#include "jobs/topics.hpp"
#include "jobs/update_queue.hpp"

namespace upparat::state {
namespace {

using plugin::Outcome;
using plugin::Step;
using std::chrono::duration_cast;
using std::chrono::milliseconds;
using std::chrono::seconds;

// What happened, as far as the flow is concerned. The handlers of raw events (answers,
// step results, timers) only decide which trigger fires; kTransitions decides where it leads.
enum class Trigger {
  Connect,             // the first connection
  NoJobs,              // get: no job of ours pending
  JobSelected,         // get: one job picked
  MultipleInProgress,  // get: more than one IN_PROGRESS job of ours
  JobsNotified,        // notify lists jobs of ours
  InvalidDocument,     // describe: REJECTED invalid_job_document
  CheckVersion,        // describe: QUEUED, not forced
  Redo,                // describe: redo the whole process (IN_PROGRESS, or force)
  ResumeDownload,      // local state: the install step was under way
  ResumeStream,        // local state: install (streaming from the URL) was under way
  ResumeReboot,        // local state: reboot_start saved, maybe not acknowledged
  AlreadyRebooted,     // reboot_start (local or cloud): the install and restart happened
  ResumeFinish,        // local state: a final update was being sent
  DaemonDied,          // local state: a step was started too often without finishing
  VersionInstalled,    // verify_job: SUCCEEDED version_already_installed
  VersionDiffers,      // verify_job: go on
  GateOpen,            // download step allowed the download (or is not supported / forced)
  GateOpenStream,      // ... and the install plugin streams from the URL
  Downloaded,          // the download is complete
  UrlExpired,          // download_interrupt: describe again for a fresh URL
  FreshUrl,            // describe before a streaming install answered
  Installed,           // install OK
  NoInstaller,         // SUCCEEDED no_installation_hook_provided
  RebootAccepted,      // reboot_start accepted by the cloud
  SoftRestart,         // SUCCEEDED complete_soft_restart
  NoRestarter,         // SUCCEEDED no_restart_hook_provided
  VersionMatches,      // verify_installation: version equal
  VersionMismatch,     // FAILED version_mismatch
  NoVersionCheck,      // SUCCEEDED complete_no_version_check
  Healthy,             // SUCCEEDED complete_ready
  NoReadyCheck,        // SUCCEEDED complete_no_ready_check
  StepFailed,          // FAILED <step>_hook_failed (failure, timeout, retries exhausted)
  Done,                // the final update(s) answered and no work left
  Gone,                // the job was cancelled or deleted
  WorkEnded,           // the stopped work reported back
};

struct Transition {
  Phase from;
  Trigger trigger;
  Phase to;
};

// ALL transitions, with kAnyJob below. One more, outside the table because it must also stop
// work and keep state: ShutdownRequested leads from any phase to ShuttingDown, which nothing
// leaves (see on(const ShutdownRequested&)).
constexpr Transition kTransitions[] = {
    {Phase::Idle, Trigger::Connect, Phase::FetchJobs},
    {Phase::FetchJobs, Trigger::NoJobs, Phase::Monitor},
    {Phase::FetchJobs, Trigger::JobSelected, Phase::DescribeJob},
    {Phase::FetchJobs, Trigger::MultipleInProgress, Phase::Finishing},
    {Phase::Monitor, Trigger::JobsNotified, Phase::FetchJobs},
    {Phase::DescribeJob, Trigger::InvalidDocument, Phase::Finishing},
    {Phase::DescribeJob, Trigger::CheckVersion, Phase::VerifyJob},
    {Phase::DescribeJob, Trigger::Redo, Phase::DownloadGate},
    {Phase::DescribeJob, Trigger::ResumeDownload, Phase::Download},
    {Phase::DescribeJob, Trigger::ResumeStream, Phase::DescribeForInstall},
    {Phase::DescribeJob, Trigger::ResumeReboot, Phase::RebootAck},
    {Phase::DescribeJob, Trigger::AlreadyRebooted, Phase::VerifyInstallation},
    {Phase::DescribeJob, Trigger::ResumeFinish, Phase::Finishing},
    {Phase::DescribeJob, Trigger::DaemonDied, Phase::Finishing},
    {Phase::VerifyJob, Trigger::VersionInstalled, Phase::Finishing},
    {Phase::VerifyJob, Trigger::VersionDiffers, Phase::DownloadGate},
    {Phase::DownloadGate, Trigger::GateOpen, Phase::Download},
    {Phase::DownloadGate, Trigger::GateOpenStream, Phase::DescribeForInstall},
    {Phase::Download, Trigger::Downloaded, Phase::Install},
    {Phase::Download, Trigger::UrlExpired, Phase::DescribeJob},
    {Phase::DescribeForInstall, Trigger::FreshUrl, Phase::Install},
    {Phase::Install, Trigger::Installed, Phase::RebootAck},
    {Phase::Install, Trigger::NoInstaller, Phase::Finishing},
    {Phase::RebootAck, Trigger::RebootAccepted, Phase::Restart},
    {Phase::RebootAck, Trigger::NoRestarter, Phase::Finishing},
    {Phase::Restart, Trigger::SoftRestart, Phase::Finishing},
    {Phase::Restart, Trigger::NoRestarter, Phase::Finishing},
    {Phase::VerifyInstallation, Trigger::VersionMatches, Phase::Ready},
    {Phase::VerifyInstallation, Trigger::VersionMismatch, Phase::Finishing},
    {Phase::VerifyInstallation, Trigger::NoVersionCheck, Phase::Finishing},
    {Phase::Ready, Trigger::Healthy, Phase::Finishing},
    {Phase::Ready, Trigger::NoReadyCheck, Phase::Finishing},
    {Phase::Finishing, Trigger::Done, Phase::FetchJobs},
    {Phase::Stopping, Trigger::WorkEnded, Phase::FetchJobs},
};

// From every phase that works on a job (has_job(): DescribeJob .. Finishing); `from` unused.
constexpr Transition kAnyJob[] = {
    {Phase::Idle, Trigger::StepFailed, Phase::Finishing},
    {Phase::Idle, Trigger::Gone, Phase::Stopping},
};

bool has_job(Phase p) {
  switch (p) {
    case Phase::DescribeJob:
    case Phase::VerifyJob:
    case Phase::DownloadGate:
    case Phase::Download:
    case Phase::DescribeForInstall:
    case Phase::Install:
    case Phase::RebootAck:
    case Phase::Restart:
    case Phase::VerifyInstallation:
    case Phase::Ready:
    case Phase::Finishing:
      return true;
    default:
      return false;
  }
}

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

int to_minutes(seconds s) {
  const auto minutes = (s.count() + 59) / 60;
  return static_cast<int>(std::clamp<long long>(minutes, 1, 10080));
}

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
};

enum class RequestPurpose { Get, Select, Stream };

}  // namespace

const char* to_string(Phase phase) {
  switch (phase) {
    case Phase::Idle:
      return "idle";
    case Phase::FetchJobs:
      return "fetch_jobs";
    case Phase::Monitor:
      return "monitor";
    case Phase::DescribeJob:
      return "describe_job";
    case Phase::VerifyJob:
      return "verify_job";
    case Phase::DownloadGate:
      return "download_gate";
    case Phase::Download:
      return "download";
    case Phase::DescribeForInstall:
      return "describe_for_install";
    case Phase::Install:
      return "install";
    case Phase::RebootAck:
      return "reboot_ack";
    case Phase::Restart:
      return "restart";
    case Phase::VerifyInstallation:
      return "verify_installation";
    case Phase::Ready:
      return "ready";
    case Phase::Finishing:
      return "finishing";
    case Phase::Stopping:
      return "stopping";
    case Phase::ShuttingDown:
      return "shutting_down";
  }
  return "?";
}

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
  std::optional<std::string> selected;  // job id picked from get, before its describe
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

  bool download_counts = true;

  // Progress budget.
  std::optional<TimePoint> last_progress;
  int last_percent = -1;
  std::optional<std::string> pending_line;
  std::uint64_t progress_timer = 0;

  std::map<std::uint64_t, TimerPurpose> timers;

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

  void persist() {
    if (!durable)
      return;
    if (job)
      durable->store = job->kv->snapshot();
    if (auto saved = store.save(*durable); !saved)
      spdlog::error("cannot save the job state: {}", saved.error().message());
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
    u.status = status;
    u.state = state;
    u.message = sanitize_status_detail(message);
    u.step_timeout_minutes = timeout;
    u.progress = progress;
    return enqueue(std::move(u));
  }

  // ---------------------------------------------------------------- the table

  void fire(Trigger trigger) {
    const Phase from = phase;
    const Transition* found = nullptr;
    for (const auto& t : kTransitions)
      if (t.from == from && t.trigger == trigger)
        found = &t;
    if (!found && has_job(from))
      for (const auto& t : kAnyJob)
        if (t.trigger == trigger)
          found = &t;
    if (!found) {
      // A bug, not bad input: every trigger is fired from a phase that expects it.
      spdlog::error("state machine: no transition from {} on trigger {}", to_string(from),
                    static_cast<int>(trigger));
      return;
    }
    leave(from);
    phase = found->to;
    spdlog::debug("state machine: {} -> {}", to_string(from), to_string(phase));
    enter(phase);
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
        return begin_step(Step::Version, "verify_job");
      case Phase::DownloadGate:
        status("job " + job->id + ": waiting for the download to be allowed");
        if (job->doc.force)
          return gate_open();
        return begin_step(Step::Download, "download");
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
        return begin_step(Step::Restart, "restart");
      case Phase::VerifyInstallation:
        status("job " + job->id + ": verifying the installation");
        return begin_step(Step::Version, "verify_installation");
      case Phase::Ready:
        status("job " + job->id + ": checking readiness");
        return begin_step(Step::Ready, "ready");
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
      r.topic = jobs::describe_topic(s.thing_name, job_id);
      r.payload = jobs::build_describe_request(r.token);
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
    std::vector<jobs::JobSummary> in_progress;
    std::vector<jobs::JobSummary> queued;
    for (const auto& j : pending.in_progress)
      if (ours(j.job_id) && jobs::valid_job_id(j.job_id))
        in_progress.push_back(j);
    for (const auto& j : pending.queued)
      if (ours(j.job_id) && jobs::valid_job_id(j.job_id))
        queued.push_back(j);
    if (in_progress.size() > 1) {
      final_updates.clear();
      std::string ids;
      for (const auto& j : in_progress)
        ids += (ids.empty() ? "" : ", ") + j.job_id;
      for (const auto& j : in_progress) {
        jobs::Update u;
        u.job_id = j.job_id;
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
    if (in_progress.size() == 1) {
      selected = in_progress.front().job_id;
    } else if (!queued.empty()) {
      // Oldest queuedAt first; ties keep AWS's queue order.
      std::stable_sort(queued.begin(), queued.end(),
                       [](const auto& a, const auto& b) { return a.queued_at < b.queued_at; });
      selected = queued.front().job_id;
    } else {
      if (notified_during_get) {
        // Stale: a notify listed jobs after this get was sent. Wait for them as if that
        // notify came now, which fetches again.
        spdlog::debug("get answered nothing pending, but a notify listed jobs since: again");
        fire(Trigger::NoJobs);
        return fire(Trigger::JobsNotified);
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
    if (jobs::is_terminal_status(e.status)) {
      spdlog::info("job {} is {}: nothing to do", e.job_id, e.status);
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
      const std::string& step_name = durable->step;
      if (step_name == "finish") {
        final_updates = {
            make_update(durable->final_status, durable->final_state, durable->final_message)};
        return fire(Trigger::ResumeFinish);
      }
      if (step_name != "restart" && step_name != "reboot" &&
          durable->unfinished_starts >= s.max_unfinished_starts) {
        const Step st = step_name == "verify_job" || step_name == "verify_installation"
                            ? Step::Version
                        : step_name == "download" ? Step::Download
                        : step_name == "install"  ? Step::Install
                                                  : Step::Ready;
        final_updates = {make_update("FAILED", failed_state(st),
                                     "daemon died " + std::to_string(durable->unfinished_starts) +
                                         " times during " + std::string(plugin::step_name(st)))};
        return fire(Trigger::DaemonDied);
      }
      spdlog::info("job {}: continuing from the saved step {}", job->id, step_name);
      if (step_name == "reboot")
        return fire(Trigger::ResumeReboot);
      if (step_name == "restart" || step_name == "verify_installation" || step_name == "ready")
        return fire(Trigger::AlreadyRebooted);
      if (step_name == "install")
        return fire(s.install_from_url ? Trigger::ResumeStream : Trigger::ResumeDownload);
      if (step_name == "download")
        return fire(Trigger::Redo);
      // verify_job: start over as if new
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
    u.status = status;
    u.state = state;
    u.message = sanitize_status_detail(message);
    return u;
  }

  void on_stream_described(const jobs::Execution& e) {
    if (jobs::is_terminal_status(e.status))
      return job_gone(e.job_id);
    auto doc = jobs::parse_job_document(e.document_json, s.allow_http);
    if (doc)
      job->doc.file = doc->file;
    else
      spdlog::warn("job {}: describe for a fresh URL: {}", job->id, doc.error().message());
    fire(Trigger::FreshUrl);
  }

  // ---------------------------------------------------------------- steps

  // Starts the step of the current phase (first attempt).
  void begin_step(Step st, const std::string& durable_step) {
    step = st;
    retry_count = 0;
    step_first_start = now();
    step_elapsed_base = 0;
    if (durable) {
      if (durable->step == durable_step) {
        retry_count = durable->retry_count;
        step_elapsed_base = durable->step_elapsed_seconds;
      } else {
        durable->unfinished_starts = 0;
        durable->retry_count = 0;
        durable->step_elapsed_seconds = 0;
      }
      durable->step = durable_step;
    }
    const seconds deadline = s.step_deadline[static_cast<int>(st)] - seconds(step_elapsed_base);
    if (!configured(st)) {
      // The classic missing hook: not run at all.
      return on_step_finished(StepFinished{0, st, {Outcome::NotSupported, "", std::nullopt}});
    }
    deadline_timer =
        set_timer(TimerPurpose::StepDeadline, std::max<milliseconds>(deadline, milliseconds(0)));
    run_step();
  }

  bool configured(Step st) const { return s.step_configured[static_cast<int>(st)]; }

  std::int64_t step_elapsed() const {
    return step_elapsed_base + duration_cast<seconds>(now() - step_first_start).count();
  }

  // Saves that an attempt starts (counted until it finishes).
  void attempt_starts() {
    if (!durable)
      return;
    ++durable->unfinished_starts;
    durable->retry_count = retry_count;
    durable->step_elapsed_seconds = step_elapsed();
    persist();
  }

  void attempt_ended() {
    if (!durable)
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
      spdlog::info("job {}: {} step asks to retry in {} s ({}){}", job->id, plugin::step_name(step),
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
    spdlog::error("job {}: {} step failed: {}", job->id, plugin::step_name(step), reason);
    final_updates = {make_update("FAILED", failed_state(step), reason)};
    fire(Trigger::StepFailed);
  }

  void on_deadline() {
    deadline_timer = 0;
    const auto limit = s.step_deadline[static_cast<int>(step)].count();
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
                  plugin::step_name(step), limit);
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
                   work->download ? "download" : plugin::step_name(work->step));
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
    const std::string what(work->download ? "download" : plugin::step_name(work->step));
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
    retry_count = 0;
    step_first_start = now();
    step_elapsed_base = 0;
    // Resuming an install downloads again first (quick: the file is complete); that must not
    // count as an attempt of the install.
    download_counts = durable->step != "install";
    if (download_counts && durable->step != "download") {
      durable->step = "download";
      durable->unfinished_starts = 0;
      durable->retry_count = 0;
      durable->step_elapsed_seconds = 0;
    }
    out.push_back(CleanDownloads{job->id});
    update("IN_PROGRESS", "download_start", "none",
           to_minutes(s.step_deadline[static_cast<int>(Step::Download)] +
                      duration_cast<seconds>(s.step_timeout_margin)));
    deadline_timer =
        set_timer(TimerPurpose::StepDeadline, s.step_deadline[static_cast<int>(Step::Download)]);
    last_progress = now();
    last_percent = 0;
    if (download_counts)
      attempt_starts();
    else
      persist();
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
    const auto percent = p.percent();
    bool due = false;
    if (percent)
      due = *percent - last_percent >= s.progress_percent;
    else
      due = !last_progress || now() - *last_progress >= s.progress_interval;
    if (!due)
      return;
    last_progress = now();
    if (percent)
      last_percent = *percent;
    update("IN_PROGRESS", "download_progress",
           "{\"downloaded_bytes\": " + std::to_string(p.bytes) + "}", {}, true);
  }

  void on_download_finished(const download::DownloadResult& r) {
    if (download_counts)
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
    if (durable->step != "install") {
      durable->step = "install";
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
                           to_minutes(s.step_deadline[static_cast<int>(Step::Install)] +
                                      duration_cast<seconds>(s.step_timeout_margin)));
    last_progress.reset();
    last_percent = -1;
  }

  void on_install_accepted() {
    awaited_token.clear();
    begin_step(Step::Install, "install");
  }

  void on_install_progress(const StepProgress& p) {
    pending_line = p.line;
    const bool percent_due = p.percent >= 0 && p.percent - last_percent >= s.progress_percent;
    const bool time_due = !last_progress || now() - *last_progress >= s.progress_interval;
    if (percent_due || time_due)
      return flush_line(p.percent);
    if (progress_timer == 0)
      progress_timer =
          set_timer(TimerPurpose::Progress,
                    duration_cast<milliseconds>(*last_progress + s.progress_interval - now()));
  }

  void flush_line(int percent = -1) {
    cancel_timer(progress_timer);
    if (!pending_line)
      return;
    last_progress = now();
    if (percent >= 0)
      last_percent = percent;
    update("IN_PROGRESS", "installation_progress", *pending_line, {}, true);
    pending_line.reset();
  }

  void enter_reboot_ack() {
    if (!configured(Step::Restart)) {
      final_updates = {make_update("SUCCEEDED", "no_restart_hook_provided", "none")};
      return fire(Trigger::NoRestarter);
    }
    status("job " + job->id + ": reboot starts");
    durable->step = "reboot";
    durable->unfinished_starts = 0;
    persist();
    const auto budget = s.step_deadline[static_cast<int>(Step::Restart)] +
                        s.step_deadline[static_cast<int>(Step::Version)] +
                        s.step_deadline[static_cast<int>(Step::Ready)] +
                        duration_cast<seconds>(s.step_timeout_margin);
    awaited_token = update("IN_PROGRESS", "reboot_start", "none", to_minutes(budget));
  }

  // ---------------------------------------------------------------- ending

  void enter_finishing() {
    final_tokens.clear();
    if (job && durable && final_updates.size() == 1) {
      durable->step = "finish";
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
    job.reset();
    selected.reset();
    if (cancel_check) {
      cancel_timer(cancel_check->timer);
      cancel_check.reset();
    }
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
                   durable->execution_number, durable->step);
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
    const bool any = std::any_of(pending->in_progress.begin(), pending->in_progress.end(),
                                 [&](const auto& j) { return ours(j.job_id); }) ||
                     std::any_of(pending->queued.begin(), pending->queued.end(),
                                 [&](const auto& j) { return ours(j.job_id); });
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
    auto listed = [&](const std::vector<jobs::JobSummary>& list) {
      return std::any_of(list.begin(), list.end(),
                         [&](const auto& j) { return j.job_id == job->id; });
    };
    if (listed(pending->in_progress) || listed(pending->queued))
      return;
    // Not listed: cancelled, deleted, or just beyond notify's 15 entries. Ask.
    if (cancel_check)
      return;
    Request r;
    r.purpose = RequestPurpose::Select;
    r.job_id = job->id;
    r.token = new_token();
    r.topic = jobs::describe_topic(s.thing_name, job->id);
    r.payload = jobs::build_describe_request(r.token);
    publish(r.topic, r.payload);
    r.timer = set_timer(TimerPurpose::CancelCheck, s.request_resend);
    cancel_check = std::move(r);
  }

  void on_describe_accepted(const std::string& job_id, const jobs::DescribeAccepted& a) {
    if (cancel_check && a.client_token == cancel_check->token && job_id == cancel_check->job_id) {
      cancel_timer(cancel_check->timer);
      cancel_check.reset();
      if (job && job->id == job_id && jobs::is_terminal_status(a.execution.status) &&
          has_job(phase))
        job_gone(job_id);
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
    if (final_tokens.erase(o.client_token) != 0) {
      if (o.result == jobs::UpdateResult::Rejected)
        refetch_later = true;
      return maybe_done();
    }
    if (!awaited_token.empty() && o.client_token == awaited_token) {
      if (o.result != jobs::UpdateResult::Accepted) {
        // Cannot go on without it: the job is dropped here (download and saved state go) and
        // fetched again after a pause; it then starts over.
        spdlog::error("job {}: {} was rejected ({}): giving the job up for now", job->id,
                      o.update.state, o.code);
        refetch_later = true;
        return fire(Trigger::Gone);
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
    spdlog::info("job {}: {}: {}", job->id, plugin::step_name(work->step), p.line);
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
      if (download_counts)
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
      if (durable && durable->unfinished_starts > 0) {
        // Stopped on purpose: the daemon did not die during this attempt.
        --durable->unfinished_starts;
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
    // Leaving Finishing / Stopping for FetchJobs ends the job.
    if (phase == Phase::FetchJobs && job)
      end_job();
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
