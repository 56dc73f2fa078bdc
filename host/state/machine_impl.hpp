#pragma once

// Private to host/state: the state of the Machine and the parts of its flow, defined by concern
// in machine.cpp (plumbing and the table), machine_jobs.cpp (fetching and picking jobs),
// machine_steps.cpp (steps, download, install, reboot), machine_ending.cpp (ending a job, and
// final updates the cloud refuses) and machine_events.cpp (the runtime's events).

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>
#include <algorithm>
#include <deque>
#include <map>
#include <random>
#include <set>
#include "common/invariant.hpp"
#include "common/sanitize.hpp"
#include "common/text.hpp"
#include "common/url.hpp"
#include "jobs/document.hpp"
#include "jobs/messages.hpp"
#include "jobs/topics.hpp"
#include "jobs/update_queue.hpp"
#include "state/job_selection.hpp"
#include "state/machine.hpp"
#include "state/progress_budget.hpp"
#include "state/request_tracker.hpp"
#include "state/step_attempts.hpp"
#include "state/transitions.hpp"

namespace upparat::state {
// The private namespace of the machine's parts: each machine*.cpp uses all of it.
namespace machine_detail {

using plugin::Outcome;
using std::chrono::duration_cast;
using std::chrono::milliseconds;
using std::chrono::seconds;

// The statusDetails state of a failed step.
inline const char* failed_state(plugin::Step step) {
  switch (step) {
    case plugin::Step::Version:
      return "version_hook_failed";
    case plugin::Step::Download:
      return "download_hook_failed";
    case plugin::Step::Install:
      return "installation_hook_failed";
    case plugin::Step::Restart:
      return "restart_hook_failed";
    case plugin::Step::Ready:
      return "ready_hook_failed";
  }
  return "error";
}

// An execution number to send (0: not known, left out).
inline std::optional<std::int64_t> known_execution(std::int64_t execution_number) {
  if (execution_number > 0) {
    return execution_number;
  }
  return std::nullopt;
}

inline int to_minutes(std::chrono::seconds s) {
  const auto minutes = (s.count() + 59) / 60;
  return static_cast<int>(std::clamp<long long>(minutes, 1, 10080));
}

// A notify with this many entries may have left jobs out.
constexpr std::size_t kNotifyMayBeTruncated = 10;

enum class TimerPurpose {
  Request,  // the resend of a request of the RequestTracker (either slot)
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

}  // namespace machine_detail

struct Machine::Impl {
  using Outcome = plugin::Outcome;
  using TimerPurpose = machine_detail::TimerPurpose;
  using milliseconds = std::chrono::milliseconds;
  using seconds = std::chrono::seconds;

  Impl(MachineSettings settings, StateStore& store, const MonotonicClock& clock)
      : s(std::move(settings)),
        store(store),
        clock(clock),
        updates(s.thing_name,
                jobs::UpdateQueueSettings{std::chrono::duration_cast<milliseconds>(s.update_resend),
                                          s.update_backoff_base, s.update_backoff_cap},
                random_prefix()),
        requests(s.thing_name, random_prefix()) {}

  static std::string random_prefix();

  MachineSettings s;
  StateStore& store;
  const MonotonicClock& clock;
  jobs::UpdateQueue updates;
  // The flow's get/describe and the cancellation check.
  RequestTracker requests;
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
    std::string signer = {};  // the signing certificate that verified the file, if signed
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
  bool saved_past_download = false;     // a step after the download was saved for this job

  // The running work (one at a time).
  struct Work {
    std::uint64_t id = 0;
    bool download = false;
    Step step = Step::Version;
  };
  std::optional<Work> work;

  // The step of the current phase: retries and deadline.
  Step step = Step::Version;
  StepAttempts attempts;
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
  // The complete list of a notify that woke the machine in monitor: fetch_jobs picks from it
  // instead of sending a get (one round trip less, as the Python version did).
  std::optional<jobs::PendingJobs> notified_list;
  std::optional<TimePoint> updates_timer_at;
  std::uint64_t updates_timer = 0;
  std::uint64_t refetch_timer = 0;
  std::uint64_t poll_timer = 0;

  // Consecutive downloads of the job refused as UrlExpired without transferring a byte.
  int url_refusals = 0;

  // Progress budget.
  ProgressBudget progress{s.progress_percent, s.progress_interval};
  std::optional<std::string> pending_line;
  std::uint64_t progress_timer = 0;

  std::map<std::uint64_t, TimerPurpose> timers;
  std::deque<Trigger> triggers;  // fired, not yet taken (see take_transitions)

  TimePoint now() const { return clock.now(); }

  std::uint64_t set_timer(TimerPurpose purpose, milliseconds delay);

  void cancel_timer(std::uint64_t& id);

  void publish(std::string topic, std::string payload);

  void status(const std::string& text) { out.push_back(SystemdStatus{text}); }

  // Saves the job state once the event is handled, before any of its actions (a request, a
  // plugin step) runs: the saves of one event (a step ended, the next one entered, its attempt
  // started) make one write, of the strongest durability asked for. A failure is logged then.
  // Without an argument: Deferred while the state only repeats what the cloud knows (the steps
  // up to the download, before any later step of this job was saved), so no fsync delays the
  // requests of those steps; Synced from the install on (its attempt counts are on disk before
  // the plugin runs).
  void persist();
  void persist(Durability durability);
  // Saves now what persist() asked for; its result decides the flow (see enter_reboot_ack).
  Status save_now();
  std::optional<Durability> save_pending;
  static bool up_to_download(SavedStep st) {
    return st == SavedStep::VerifyJob || st == SavedStep::DownloadGate || st == SavedStep::Download;
  }

  void forget_durable();

  void pump_updates();

  std::string enqueue(jobs::Update update);

  std::string update(const std::string& status, const std::string& state,
                     const std::string& message = "none", std::optional<int> timeout = {},
                     bool progress = false);

  // Queues a trigger; handle() takes the transitions one after the other, so that entering a
  // phase never runs inside the transition that led there (Mender's PostEvent).
  void fire(Trigger trigger) { triggers.push_back(trigger); }

  void take_transitions();

  // After a broken invariant (logged by UPPARAT_CHECK in release builds): the job fails.
  void bug(const std::string& what);

  void leave(Phase);

  void enter(Phase p);

  // Starts the flow's get (job_id empty) or describe, replacing the one outstanding.
  void send_request(RequestPurpose purpose, const std::string& job_id);
  // Asks about the job being worked on, unless a cancellation check is outstanding.
  void send_cancel_check();
  // Publishes the request in `slot` (if any) again and re-arms its resend timer.
  void send_again(RequestSlot slot);
  // Forgets the request in `slot` (if any): its answer is stale from now on.
  void drop_request(RequestSlot slot);

  void enter_fetch_jobs();

  // The safety net for a lost notify (QoS 1 messages are lost when the persistent session
  // expired): a slow `get` while nothing else is going on.
  void arm_poll();

  bool ours(const std::string& job_id) const;

  void on_get_accepted(const jobs::PendingJobs& pending);

  void on_select_described(const jobs::Execution& e);

  jobs::Update make_update(const std::string& status, const std::string& state,
                           const std::string& message);

  // A describe pinned to `execution` answered another one (a cloud that ignored the field).
  static bool other_execution(const jobs::Execution& e, std::int64_t execution);

  void on_stream_described(const jobs::Execution& e);

  // Starts the step of the current phase (first attempt).
  void begin_step(Step st, SavedStep durable_step);

  bool configured(Step st) const { return s.step_configured[index(st)]; }

  // The saved job state, or null.
  JobState* saved() { return durable ? &*durable : nullptr; }

  // Saves that an attempt starts (counted until it finishes).
  void attempt_starts();

  void attempt_ended();

  plugin::JobContext context() const;

  void run_step();

  void on_step_finished(const StepFinished& f);

  void step_failed(const std::string& reason);

  void on_deadline();

  bool uninterruptible(const Work& w) const;

  // Asks the running work to stop. Work that can be stopped has stop_grace to return.
  void stop_work();

  // The running work reported back (before `work` is reset).
  void work_returned();

  // The work asked to stop did not return within stop_grace: it is abandoned. The job's
  // result is reported and saved, then the runtime is asked to exit, since the plugin cannot
  // be unloaded while it runs and this daemon could not run another step meanwhile.
  void on_stop_grace();

  void exit_for_stuck_work();

  void gate_open() {
    if (s.install_stream && configured(Step::Install)) {
      return fire(Trigger::GateOpenHostStream);
    }
    fire(s.install_from_url ? Trigger::GateOpenStream : Trigger::GateOpen);
  }

  void enter_download();

  void on_download_progress(const download::Progress& p);

  void on_download_finished(const download::DownloadResult& r);

  // A forged or permanently broken URL is refused (403) every time, fresh URL or not: back
  // off between the describes and give up after max_url_refusals refusals in a row that
  // transferred nothing. A URL that expired mid-download (bytes > 0) resets the count.
  void on_url_expired(const download::DownloadResult& r);

  void enter_install();

  void on_install_accepted();

  void on_install_progress(const StepProgress& p);

  // The waiting line's time came.
  void flush_line();

  void send_line();

  void enter_reboot_ack();

  void enter_finishing();

  void maybe_done();

  void job_gone(const std::string& job_id);

  void enter_stopping();

  // Called when leaving Finishing / Stopping for FetchJobs.
  void end_job();

  // The final update was refused for good (InvalidRequest, for example). The job is never
  // worked on again: once more with minimal statusDetails, then it ends locally.
  void on_final_refused(const jobs::UpdateOutcome& o);

  // 1 min, 2, 4, ... capped at 1 h.
  milliseconds ended_delay(int tries) const;

  void save_ended();

  bool is_ended(const jobs::JobSummary& j) const;

  // An ended execution that the cloud no longer lists as pending is over there too.
  void forget_ended_not_listed(const jobs::PendingJobs& pending);

  void retry_ended(std::uint64_t timer);

  // True when `o` answers a try of an ended execution.
  bool on_ended_outcome(const jobs::UpdateOutcome& o);

  void on(const Started&);

  void on(const Connected&);

  void on(const Disconnected&) { connected = false; }

  void on(const MqttMessage& m);

  void on_notify(const std::string& payload);

  void on_describe_accepted(const std::string& job_id, const jobs::DescribeAccepted& a);

  void on_describe_rejected(const std::string& job_id, const jobs::Rejected& r);

  void on_update_outcome(const jobs::UpdateOutcome& o);

  bool current_work(std::uint64_t id) const { return work && work->id == id; }

  void work_finished();

  bool work_wanted() const;

  void on(const StepFinished& f);

  void on(const StepProgress& p);

  void on(const DownloadFinished& f);

  void on(const DownloadProgress& p);

  void on(const DownloadResumeState& r);

  void on(const StreamUrlExpired& e);

  void on(const TimerFired& t);

  void on(const ShutdownRequested&);

  void maybe_exit();

  std::vector<Action> handle(const Event& event);

  bool exited = false;
};

}  // namespace upparat::state
