#include "state/transitions.hpp"

#include <iterator>

namespace upparat::state {
namespace {

using plugin::Step;

// ALL transitions, with kAnyJob and kShutdown below.
constexpr Transition kTransitions[] = {
    {Phase::Idle, Trigger::Connect, Phase::FetchJobs},
    {Phase::FetchJobs, Trigger::NoJobs, Phase::Monitor},
    {Phase::FetchJobs, Trigger::JobSelected, Phase::DescribeJob},
    {Phase::FetchJobs, Trigger::MultipleInProgress, Phase::Finishing},
    {Phase::FetchJobs, Trigger::GetStale, Phase::FetchJobs},
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
    {Phase::DownloadGate, Trigger::GateOpenHostStream, Phase::Install},
    {Phase::DescribeJob, Trigger::ResumeHostStream, Phase::Install},
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
    {Phase::Finishing, Trigger::Done, Phase::FetchJobs, OnTransition::EndJob},
    {Phase::Stopping, Trigger::WorkEnded, Phase::FetchJobs, OnTransition::EndJob},
};

// How a job continues from its saved step after a restart of the daemon (the same job and
// execution). `step`: the step whose attempts count towards "daemon died N times" (none for
// the steps whose purpose is to end the process, and for finish). No trigger: start over as
// a new job, keeping the saved counts. `streaming`: the trigger when the install plugin
// installs from the URL; `host_streaming`: when it reads the host's download (from byte 0).

constexpr ResumeRule kResume[] = {
    {SavedStep::VerifyJob, std::nullopt, Step::Version, Trigger::Redo, Trigger::Redo},
    {SavedStep::DownloadGate, Trigger::Redo, Step::Download, Trigger::Redo, Trigger::Redo},
    {SavedStep::Download, Trigger::Redo, Step::Download, Trigger::Redo, Trigger::Redo},
    {SavedStep::Install, Trigger::ResumeDownload, Step::Install, Trigger::ResumeStream,
     Trigger::ResumeHostStream},
    {SavedStep::Reboot, Trigger::ResumeReboot, std::nullopt, Trigger::ResumeReboot,
     Trigger::ResumeReboot},
    {SavedStep::Restart, Trigger::AlreadyRebooted, std::nullopt, Trigger::AlreadyRebooted,
     Trigger::AlreadyRebooted},
    {SavedStep::VerifyInstallation, Trigger::AlreadyRebooted, Step::Version,
     Trigger::AlreadyRebooted, Trigger::AlreadyRebooted},
    {SavedStep::Ready, Trigger::AlreadyRebooted, Step::Ready, Trigger::AlreadyRebooted,
     Trigger::AlreadyRebooted},
    {SavedStep::Finish, Trigger::ResumeFinish, std::nullopt, Trigger::ResumeFinish,
     Trigger::ResumeFinish},
};

constexpr bool resume_rows_in_order() {
  for (std::size_t i = 0; i < std::size(kResume); ++i) {
    if (static_cast<std::size_t>(kResume[i].saved) != i) {
      return false;
    }
  }
  return std::size(kResume) == static_cast<std::size_t>(SavedStep::Finish) + 1;
}
static_assert(resume_rows_in_order(), "kResume has one row per SavedStep, in enum order");

// From every phase that works on a job (has_job(): DescribeJob .. Finishing); `from` unused.
constexpr Transition kAnyJob[] = {
    {Phase::Idle, Trigger::StepFailed, Phase::Finishing},
    {Phase::Idle, Trigger::Bug, Phase::Finishing},
    {Phase::Idle, Trigger::Gone, Phase::Stopping},
    {Phase::Idle, Trigger::UpdateRefused, Phase::Stopping},
};

}  // namespace

const ResumeRule& resume_rule(SavedStep saved) {
  return kResume[static_cast<std::size_t>(saved)];
}

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

const char* to_string(Trigger t) {
  switch (t) {
    case Trigger::Connect:
      return "connect";
    case Trigger::NoJobs:
      return "no_jobs";
    case Trigger::JobSelected:
      return "job_selected";
    case Trigger::MultipleInProgress:
      return "multiple_in_progress";
    case Trigger::JobsNotified:
      return "jobs_notified";
    case Trigger::InvalidDocument:
      return "invalid_document";
    case Trigger::CheckVersion:
      return "check_version";
    case Trigger::Redo:
      return "redo";
    case Trigger::ResumeDownload:
      return "resume_download";
    case Trigger::ResumeStream:
      return "resume_stream";
    case Trigger::ResumeReboot:
      return "resume_reboot";
    case Trigger::AlreadyRebooted:
      return "already_rebooted";
    case Trigger::ResumeFinish:
      return "resume_finish";
    case Trigger::DaemonDied:
      return "daemon_died";
    case Trigger::VersionInstalled:
      return "version_installed";
    case Trigger::VersionDiffers:
      return "version_differs";
    case Trigger::GateOpen:
      return "gate_open";
    case Trigger::GateOpenStream:
      return "gate_open_stream";
    case Trigger::GateOpenHostStream:
      return "gate_open_host_stream";
    case Trigger::ResumeHostStream:
      return "resume_host_stream";
    case Trigger::Downloaded:
      return "downloaded";
    case Trigger::UrlExpired:
      return "url_expired";
    case Trigger::FreshUrl:
      return "fresh_url";
    case Trigger::Installed:
      return "installed";
    case Trigger::NoInstaller:
      return "no_installer";
    case Trigger::RebootAccepted:
      return "reboot_accepted";
    case Trigger::SoftRestart:
      return "soft_restart";
    case Trigger::NoRestarter:
      return "no_restarter";
    case Trigger::VersionMatches:
      return "version_matches";
    case Trigger::VersionMismatch:
      return "version_mismatch";
    case Trigger::NoVersionCheck:
      return "no_version_check";
    case Trigger::Healthy:
      return "healthy";
    case Trigger::NoReadyCheck:
      return "no_ready_check";
    case Trigger::StepFailed:
      return "step_failed";
    case Trigger::Done:
      return "done";
    case Trigger::Gone:
      return "gone";
    case Trigger::UpdateRefused:
      return "update_refused";
    case Trigger::GetStale:
      return "get_stale";
    case Trigger::Bug:
      return "bug";
    case Trigger::WorkEnded:
      return "work_ended";
    case Trigger::Shutdown:
      return "shutdown";
  }
  return "?";
}

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

// From every phase but ShuttingDown, which nothing leaves; `from` unused. Running work is
// stopped, except during restart (the reboot is under way), and nothing more is reported.
constexpr Transition kShutdown = {Phase::Idle, Trigger::Shutdown, Phase::ShuttingDown};

const Transition* find_transition(Phase from, Trigger trigger) {
  if (trigger == Trigger::Shutdown) {
    return from == Phase::ShuttingDown ? nullptr : &kShutdown;
  }
  for (const auto& t : kTransitions) {
    if (t.from == from && t.trigger == trigger) {
      return &t;
    }
  }
  if (has_job(from)) {
    for (const auto& t : kAnyJob) {
      if (t.trigger == trigger) {
        return &t;
      }
    }
  }
  return nullptr;
}

}  // namespace upparat::state
