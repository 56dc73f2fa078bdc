#pragma once

// The flow of the state machine as data: what can happen (triggers), where it leads from each
// phase (kTransitions, kAnyJob), and how a job continues from its saved step (kResume).

#include <optional>

#include "plugin/types.hpp"
#include "state/machine.hpp"
#include "state/state_store.hpp"

namespace upparat::state {

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
  GateOpenHostStream,  // ... and the install plugin reads the host's download (stream_fd)
  ResumeHostStream,    // local state: a streamed install (stream_fd) was under way
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
  UpdateRefused,       // installation_start / reboot_start refused: the job starts over later
  GetStale,            // get: nothing pending, but a notify listed jobs since it was sent
  Bug,                 // a broken invariant: the job fails
  WorkEnded,           // the stopped work reported back
  Shutdown,            // SIGTERM / SIGINT: from any phase to ShuttingDown
};

[[nodiscard]] const char* to_string(Trigger trigger);

// What a transition does besides leaving one phase and entering the next.
enum class OnTransition {
  Nothing,
  EndJob,  // the job is over: its download and saved state go, the job is forgotten
};

struct Transition {
  Phase from;
  Trigger trigger;
  Phase to;
  OnTransition action = OnTransition::Nothing;
};

/// The row for `trigger` in `from`: kTransitions first, then kAnyJob for a phase that works on
/// a job; Shutdown leads from every phase but ShuttingDown. nullptr when there is none (a bug:
/// every trigger is fired where it is expected).
[[nodiscard]] const Transition* find_transition(Phase from, Trigger trigger);

/// True for the phases that work on a job (DescribeJob .. Finishing).
[[nodiscard]] bool has_job(Phase phase);

struct ResumeRule {
  SavedStep saved;
  std::optional<Trigger> trigger;
  std::optional<plugin::Step> step;
  Trigger streaming;
  Trigger host_streaming;  // when the install plugin reads the host's download (stream_fd)
};

/// The rule for a saved step (every step has one).
[[nodiscard]] const ResumeRule& resume_rule(SavedStep saved);

}  // namespace upparat::state
