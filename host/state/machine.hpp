#pragma once

// The update state machine: a pure, single-threaded functional core. It does no I/O of its own
// except through StateStore (durable state) and reads time only through MonotonicClock.
//
// HOW THE RUNTIME DRIVES IT (the contract with host/daemon):
//  - One event-loop thread owns the Machine and is the only caller of handle(). Everything
//    else (Paho callbacks, the worker thread, timers, signals) posts Events to that loop.
//  - Fill MachineSettings from the configuration (step_configured: which steps have a
//    plugin; install_from_url: the install plugin streams). Create the Machine with a
//    FileStateStore on the state directory (after taking its LockFile) and a SteadyClock.
//  - Call handle(Started{}) once, before connecting. It loads the durable state.
//  - Subscribe to jobs::subscription_topics(thing) (QoS 1) in EVERY connected handler; once
//    the subscriptions are acknowledged post Connected{}. Post Disconnected{} on connection
//    loss. Post every message on those topics as MqttMessage{topic, payload}.
//  - Execute the returned actions IN ORDER:
//      Publish          -> publish QoS 1 (Paho buffers while offline; never block on a token).
//      RunStep          -> on the worker thread, run the plugin configured for `step` with a
//                          fresh StopSignal and services.store = action.store.get(); post
//                          StepProgress for each progress callback, then StepFinished. A step
//                          with no plugin configured finishes at once with NotSupported.
//                          `stop_policy` says how StopWork and a shutdown may stop it.
//                          A RunStep with `stream` (a streamed install) also runs
//                          Downloader::stream(*stream, ...) on a second thread into a
//                          download::StreamPipe whose reader is the plugin's stream_fd:
//                          on Complete StreamPipe::complete(), on Failed/Cancelled fail();
//                          on UrlExpired post StreamUrlExpired and wait (the install goes
//                          on) for a StreamUrl to resume with. The download ends before
//                          StepFinished is posted; an OK install whose stream did not end
//                          Complete is posted as Failed.
//      RunDownload      -> on the worker thread, Downloader::run(request, resume, stop, ...)
//                          posting DownloadProgress / DownloadResumeState, then DownloadFinished.
//      StreamUrl        -> hand the fresh URL to the waiting stream download of that work.
//      StopWork         -> raise the StopSignal of the work with that id (if still running),
//                          unless its stop_policy is NotInterruptible: the machine then simply
//                          waits for its StepFinished (set MachineSettings::
//                          install_not_interruptible from the install plugin's capability).
//                          The download of a streamed install stops in any case.
//                          The machine never starts new work before the stopped work's
//                          *Finished event arrived, so one worker thread is enough. Work that
//                          has not returned MachineSettings::stop_grace after its StopWork is
//                          abandoned (Exit{PluginStuck} below).
//      SetTimer         -> after `delay` post TimerFired{id}. Ids are never reused.
//      CancelTimer      -> forget the timer (a TimerFired that raced with it is ignored).
//      CleanDownloads   -> Downloader::clean(keep_job_id).
//      RemoveDownload   -> Downloader::remove(job_id).
//      SystemdStatus    -> sd_notify("STATUS=...").
//      Exit             -> reason Shutdown: after ShutdownRequested, nothing is running and
//                          no update is pending any more; disconnect and exit. (The runtime
//                          bounds the flush with its own timeout too, and waits longer for a
//                          running not-interruptible install.)
//                          reason PluginStuck (in any phase, also without a signal): a step
//                          asked to stop did not return within stop_grace. Its FAILED update
//                          was answered (or waited for update_resend) and `finish` is saved,
//                          or its job is gone. Disconnect and exit with a status of its own
//                          WITHOUT waiting for the step or unloading its plugin; the service
//                          manager then starts a clean daemon, which resends the saved result.
//  - Every *Finished / *Progress event echoes the `work` id of its action; the machine ignores
//    events of work it no longer waits for.
//  - On SIGTERM/SIGINT post ShutdownRequested{}, and stop the running work unless its
//    stop_policy says otherwise. During `restart` (RunsOnAtShutdown) the machine stops nothing
//    and reports nothing (SIGTERM then means the reboot is under way).

#include <array>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "download/types.hpp"
#include "plugin/key_value_store.hpp"
#include "plugin/types.hpp"
#include "state/state_store.hpp"

namespace upparat::state {

using TimePoint = std::chrono::steady_clock::time_point;

/// The monotonic "now" of the machine (tests advance a fake one).
class MonotonicClock {
 public:
  virtual ~MonotonicClock() = default;
  [[nodiscard]] virtual TimePoint now() const = 0;
};

/// std::chrono::steady_clock.
class SteadyClock final : public MonotonicClock {
 public:
  [[nodiscard]] TimePoint now() const override { return std::chrono::steady_clock::now(); }
};

/// Settings of the machine, filled by the runtime from the configuration.
struct MachineSettings {
  std::string thing_name;
  /// Only jobs whose id starts with this are handled.
  std::string job_prefix = "upparat_";
  /// The install plugin streams from the URL (INSTALL_FROM_URL configured): no download step,
  /// the job is described again right before install, JobContext::file_path stays empty.
  bool install_from_url = false;
  /// The install plugin reads the file from the host's download while it runs
  /// (INSTALL_STREAM with `stream = true`; preferred over install_from_url): no download
  /// phase; download_start and installation_start are sent, and once installation_start
  /// was accepted the install runs with RunStep::stream. Nothing of the stream is saved: after
  /// a daemon restart it starts again from byte 0. The install deadline covers the download.
  bool install_stream = false;
  /// Which steps have a plugin (a hook) configured, one per step. A step without
  /// one is not run and behaves as NOT_SUPPORTED (the classic "missing hook"), so that no
  /// installation_start / reboot_start is sent for a step that does not exist. A configured
  /// plugin may still answer NOT_SUPPORTED at run time.
  PerStep<bool> step_configured{true, true, true, true, true};
  /// Also accept plain http URLs in job documents.
  bool allow_http = false;
  /// REJECT a job document without a code-signing signature ("unsigned job").
  bool require_signature = false;
  /// RETRY_LATER without a delay of the plugin's own waits this long; after max_retries
  /// retries the step fails ("timed out").
  std::chrono::seconds retry_interval{60};
  int max_retries = 60;
  /// Local deadline of each step, retries included, one per step. When it passes
  /// the running step (or download) is asked to stop, and once it returned the job FAILS
  /// `<step>_hook_failed` "timed out after N s" (see stop_grace for one that does not
  /// return). A not-interruptible install is not asked to stop: it is waited for, and its
  /// result counts as it is (RETRY_LATER then fails with "timed out").
  /// Defaults: version 10 min, download 24 h, install 2 h, restart 30 min, ready 30 min.
  PerStep<std::chrono::seconds> step_deadline{
      std::chrono::seconds(600), std::chrono::seconds(86400), std::chrono::seconds(7200),
      std::chrono::seconds(1800), std::chrono::seconds(1800)};
  /// stepTimeoutInMinutes sent at each step start = deadline + this margin (restart: restart +
  /// version + ready deadlines + margin). Clamped to AWS's 1..10080.
  std::chrono::minutes step_timeout_margin{10};
  /// Progress budget: download_progress when the percentage advanced by progress_percent
  /// (size known) or else every progress_interval; installation_progress at most every
  /// progress_interval (the latest line wins). Default: at most ~25 messages per download.
  int progress_percent = 4;
  std::chrono::seconds progress_interval{30};
  /// An update without answer is sent again (same clientToken) after this long.
  std::chrono::seconds update_resend{30};
  /// Back-off of RequestThrottled / InternalError rejections: base * 2^n, capped.
  std::chrono::milliseconds update_backoff_base{1000};
  std::chrono::milliseconds update_backoff_cap{60000};
  /// A get / describe without answer is sent again after this long.
  std::chrono::seconds request_resend{30};
  /// Safety net for a lost notify: while waiting in `monitor` with nothing to do, a `get` is
  /// sent after this long (plus up to 10 % random jitter). 0 = off.
  std::chrono::seconds poll_interval{600};
  /// A download refused as UrlExpired (HTTP 403) without transferring a byte, this many times
  /// in a row (a fresh URL described each time), FAILS the job download_hook_failed. Bytes
  /// transferred reset the count. Before the 2nd, 3rd, ... describe the machine waits
  /// url_refused_backoff_base * 2^(n-2), capped at url_refused_backoff_cap.
  int max_url_refusals = 5;
  std::chrono::milliseconds url_refused_backoff_base{30000};
  std::chrono::milliseconds url_refused_backoff_cap{600000};
  /// An execution whose final update is refused even with minimal statusDetails ends on the
  /// device; the minimal update is retried after base * 2^n, capped.
  std::chrono::milliseconds ended_retry_base{60000};
  std::chrono::milliseconds ended_retry_cap{3600000};
  /// A step whose attempt was started this many times without finishing fails the job
  /// ("daemon died N times during <step>"); restart excepted.
  int max_unfinished_starts = 3;
  /// The install plugin has INSTALL_NOT_INTERRUPTIBLE: its install is never asked to stop,
  /// and its deadline does not fail the job while it runs.
  bool install_not_interruptible = false;
  /// Work asked to stop (its deadline passed, or its job is gone) that has not returned after
  /// this long is abandoned. After a deadline the job FAILS `<step>_hook_failed` "timed out
  /// after N s; the plugin did not stop within M s", `finish` is saved, and once that update
  /// was answered (or after update_resend without answer) the machine emits
  /// Exit{PluginStuck}. A gone job has nothing to report: Exit{PluginStuck} at once.
  std::chrono::seconds stop_grace{30};
};

// ---- Events (runtime -> machine) ----

struct Started {};
struct Connected {};
struct Disconnected {};
struct MqttMessage {
  std::string topic;
  std::string payload;
};
struct StepFinished {
  std::uint64_t work = 0;
  plugin::Step step = plugin::Step::Version;
  plugin::StepResult result;
};
struct StepProgress {
  std::uint64_t work = 0;
  std::string line;
  int percent = -1;  ///< -1 = unknown
};
struct DownloadFinished {
  std::uint64_t work = 0;
  download::DownloadResult result;
};
struct DownloadProgress {
  std::uint64_t work = 0;
  download::Progress progress;
};
struct DownloadResumeState {
  std::uint64_t work = 0;
  download::ResumeState resume;
};
/// The stream download of a streamed install (RunStep::stream) was refused (HTTP 403): it
/// waits for a StreamUrl while the install waits for bytes.
struct StreamUrlExpired {
  std::uint64_t work = 0;
  download::DownloadResult result;
};
struct TimerFired {
  std::uint64_t id = 0;
};
struct ShutdownRequested {};

using Event = std::variant<Started, Connected, Disconnected, MqttMessage, StepFinished,
                           StepProgress, DownloadFinished, DownloadProgress, DownloadResumeState,
                           TimerFired, ShutdownRequested, StreamUrlExpired>;

// ---- Actions (machine -> runtime) ----

struct Publish {
  std::string topic;
  std::string payload;
  int qos = 1;
};
/// How the runtime may stop a step, chosen by the machine.
enum class StopPolicy {
  Interruptible,     ///< StopWork and a shutdown raise its stop signal
  NotInterruptible,  ///< an INSTALL_NOT_INTERRUPTIBLE install: never stopped; a shutdown
                     ///< waits for it (within the unit's stop timeout)
  RunsOnAtShutdown,  ///< restart: StopWork stops it, but a shutdown means the reboot is
                     ///< under way, so it is left alone
};

struct RunStep {
  std::uint64_t work = 0;
  plugin::Step step = plugin::Step::Version;
  plugin::JobContext job;
  /// The job's key/value store; pass it as StepServices::store. Thread-safe.
  std::shared_ptr<plugin::KeyValueStore> store;
  StopPolicy stop_policy = StopPolicy::Interruptible;
  /// A streamed install: what the host downloads into the plugin's stream_fd, from byte 0.
  std::optional<download::Request> stream;
};
/// A fresh URL for the stream download of `work` (after StreamUrlExpired).
struct StreamUrl {
  std::uint64_t work = 0;
  std::string url;
};
struct RunDownload {
  std::uint64_t work = 0;
  download::Request request;
  download::ResumeState resume;
};
struct StopWork {
  std::uint64_t work = 0;
};
struct SetTimer {
  std::uint64_t id = 0;
  std::chrono::milliseconds delay{0};
};
struct CancelTimer {
  std::uint64_t id = 0;
};
struct CleanDownloads {
  std::string keep_job_id;  ///< "" = remove everything
};
struct RemoveDownload {
  std::string job_id;
};
struct SystemdStatus {
  std::string text;
};
/// Why the runtime is asked to exit.
enum class ExitReason {
  Shutdown,     ///< after ShutdownRequested: nothing runs, no update is pending
  PluginStuck,  ///< a step asked to stop did not return within stop_grace
};
struct Exit {
  ExitReason reason = ExitReason::Shutdown;
};

using Action = std::variant<Publish, RunStep, RunDownload, StopWork, SetTimer, CancelTimer,
                            CleanDownloads, RemoveDownload, SystemdStatus, Exit, StreamUrl>;

/// Where the machine is (the states of the Python version, plus the waits between them).
enum class Phase {
  Idle,                ///< before Started / while disconnected at start
  FetchJobs,           ///< `get` sent, waiting for its answer
  Monitor,             ///< nothing pending: waiting for notify
  DescribeJob,         ///< `{jobId}/get` of the selected job sent
  VerifyJob,           ///< version step of a QUEUED job
  DownloadGate,        ///< download step (the plugin says whether downloading is allowed now)
  Download,            ///< downloading
  DescribeForInstall,  ///< INSTALL_FROM_URL: describing again for a fresh URL
  Install,             ///< install step
  RebootAck,           ///< reboot_start saved, waiting for the cloud to accept it
  Restart,             ///< restart step
  VerifyInstallation,  ///< version step after the reboot
  Ready,               ///< ready step
  Finishing,           ///< terminal update sent, waiting for its answer
  Stopping,            ///< cancelled: waiting for the running work to end
  ShuttingDown,        ///< ShutdownRequested: flushing
};

[[nodiscard]] const char* to_string(Phase phase);

class Machine {
 public:
  /// `store` and `clock` must outlive the machine.
  Machine(MachineSettings settings, StateStore& store, const MonotonicClock& clock);
  ~Machine();
  Machine(const Machine&) = delete;
  Machine& operator=(const Machine&) = delete;

  /// Handles one event; returns what the runtime must do, in order. Never throws for bad
  /// input (malformed messages are logged and ignored).
  std::vector<Action> handle(const Event& event);

  [[nodiscard]] Phase phase() const;
  /// The job being worked on ("" when none).
  [[nodiscard]] std::string current_job() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace upparat::state
