#include "state/machine_impl.hpp"

#include <algorithm>
#include <random>

#include <spdlog/spdlog.h>

namespace upparat::state {

using namespace machine_detail;

// ---------------------------------------------------------------- steps

void Machine::Impl::begin_step(Step st, SavedStep durable_step) {
  step = st;
  attempts.begin(saved(), durable_step, now());
  const seconds deadline = s.step_deadline[index(st)] - seconds(attempts.elapsed_before());
  if (!configured(st)) {
    // The classic missing hook: not run at all.
    return on_step_finished(StepFinished{0, st, {Outcome::NotSupported, "", std::nullopt}});
  }
  deadline_timer =
      set_timer(TimerPurpose::StepDeadline, std::max<milliseconds>(deadline, milliseconds(0)));
  run_step();
}

void Machine::Impl::attempt_starts() {
  attempts.started(saved(), now());
  persist();
}

void Machine::Impl::attempt_ended() {
  attempts.ended(saved(), now());
  persist();
}

plugin::JobContext Machine::Impl::context() const {
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
  c.signer = job->signer;
  c.force = job->doc.force;
  c.seconds_since_first = attempts.elapsed_seconds(now());
  c.retry_count = attempts.retry_count();
  return c;
}

void Machine::Impl::run_step() {
  attempt_starts();
  Work w{next_id++, false, step};
  work = w;
  StopPolicy policy = StopPolicy::Interruptible;
  if (step == Step::Install && s.install_not_interruptible) {
    policy = StopPolicy::NotInterruptible;
  } else if (step == Step::Restart) {
    policy = StopPolicy::RunsOnAtShutdown;
  }
  RunStep run{w.id, step, context(), job->kv, policy, std::nullopt};
  if (step == Step::Install && s.install_stream) {
    // Every attempt streams the whole file again from byte 0.
    download::Request req;
    req.job_id = job->id;
    req.url = job->doc.file;
    req.sha256 = job->doc.sha256;
    req.signature = job->doc.signature;
    if (job->doc.size) {
      req.size = static_cast<std::uint64_t>(*job->doc.size);
    }
    run.stream = std::move(req);
  }
  out.push_back(std::move(run));
}

void Machine::Impl::on_step_finished(const StepFinished& f) {
  attempt_ended();
  const auto& r = f.result;
  if (r.outcome == Outcome::RetryLater) {
    if (deadline_missed) {
      return step_failed(*deadline_missed);
    }
    if (attempts.retry_count() >= s.max_retries) {
      return step_failed("timed out after " + std::to_string(s.max_retries) + " retries");
    }
    const auto delay = r.retry_after.value_or(s.retry_interval);
    spdlog::info("job {}: {} step asks to retry in {} s ({}){}", job->id, to_string(step),
                 delay.count(), attempts.retry_count() + 1, r.text.empty() ? "" : ": " + r.text);
    retry_timer = set_timer(TimerPurpose::StepRetry, delay);
    return;
  }
  if (r.outcome == Outcome::Failed) {
    return step_failed(r.text.empty() ? "failed" : r.text);
  }
  const bool ok = r.outcome == Outcome::Ok;
  switch (phase) {
    case Phase::VerifyJob: {
      if (ok && trim(r.text) == job->doc.version) {
        spdlog::info("job {}: version {} is already installed", job->id, job->doc.version);
        final_updates = {make_update("SUCCEEDED", "version_already_installed", "none")};
        return fire(Trigger::VersionInstalled);
      }
      if (ok) {
        spdlog::info("job {}: running {}, installing {}", job->id, trim(r.text), job->doc.version);
      }
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
      const std::string installed(trim(r.text));
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

void Machine::Impl::step_failed(const std::string& reason) {
  spdlog::error("job {}: {} step failed: {}", job->id, to_string(step), reason);
  final_updates = {make_update("FAILED", failed_state(step), reason)};
  fire(Trigger::StepFailed);
}

void Machine::Impl::on_deadline() {
  deadline_timer = 0;
  const auto limit = s.step_deadline[index(step)].count();
  const std::string reason = "timed out after " + std::to_string(limit) + " s";
  if (!work) {
    return step_failed(reason);
  }
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

bool Machine::Impl::uninterruptible(const Work& w) const {
  return !w.download && w.step == Step::Install && s.install_not_interruptible;
}

void Machine::Impl::stop_work() {
  if (!work) {
    return;
  }
  out.push_back(StopWork{work->id});
  if (!uninterruptible(*work) && !work_abandoned && stop_grace_timer == 0) {
    stop_grace_timer = set_timer(TimerPurpose::StopGrace, s.stop_grace);
  }
}

void Machine::Impl::work_returned() {
  cancel_timer(stop_grace_timer);
  cancel_timer(abandon_timer);
  if (work_abandoned) {
    spdlog::warn("job {}: the abandoned {} ended after all", job ? job->id : "?",
                 work->download ? "download" : to_string(work->step));
  }
  work_abandoned = false;
}

void Machine::Impl::on_stop_grace() {
  stop_grace_timer = 0;
  if (!work || phase == Phase::ShuttingDown) {
    return;
  }
  work_abandoned = true;
  const std::string what(work->download ? "download" : to_string(work->step));
  spdlog::critical(
      "job {}: the {} did not return within {} s of the request to stop: abandoning it; "
      "the daemon exits once the job's result is reported, for a clean daemon to take over",
      job ? job->id : "?", what, s.stop_grace.count());
  if (!deadline_missed) {
    return exit_for_stuck_work();  // Stopping: the job is gone, nothing to report
  }
  final_updates = {make_update("FAILED", failed_state(step),
                               *deadline_missed + "; the plugin did not stop within " +
                                   std::to_string(s.stop_grace.count()) + " s")};
  fire(Trigger::StepFailed);  // Finishing saves `finish` and sends it; maybe_done() exits
  if (!exited) {
    abandon_timer = set_timer(TimerPurpose::Abandon, s.update_resend);
  }
}

void Machine::Impl::exit_for_stuck_work() {
  if (exited) {
    return;
  }
  exited = true;
  status("a plugin step did not stop: exiting");
  out.push_back(Exit{ExitReason::PluginStuck});
}

// ---------------------------------------------------------------- download

void Machine::Impl::enter_download() {
  status("job " + job->id + ": downloading");
  step = Step::Download;
  // Resuming an install downloads again first (quick: the file is complete); that is not
  // an attempt of the install.
  attempts.begin(saved(), SavedStep::Download, now());
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
  req.signature = job->doc.signature;
  if (job->doc.size) {
    req.size = static_cast<std::uint64_t>(*job->doc.size);
  }
  out.push_back(RunDownload{w.id, std::move(req), durable->resume});
}

void Machine::Impl::on_download_progress(const download::Progress& p) {
  // Every byte is in: the update after the download (installation_start, or the job's end)
  // says so, and a report now would only hold it back (one update in flight at a time).
  if (p.total && p.bytes >= *p.total) {
    return;
  }
  if (!progress.download_due(p.percent(), now())) {
    return;
  }
  update("IN_PROGRESS", "download_progress",
         "{\"downloaded_bytes\": " + std::to_string(p.bytes) + "}", {}, true);
}

void Machine::Impl::on_download_finished(const download::DownloadResult& r) {
  attempt_ended();
  switch (r.outcome) {
    case download::Outcome::Complete:
      job->file = r.file;
      job->signer = r.signer;
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

void Machine::Impl::on_url_expired(const download::DownloadResult& r) {
  url_refusals = r.bytes_transferred > 0 ? 0 : url_refusals + 1;
  if (url_refusals >= std::max(s.max_url_refusals, 1)) {
    spdlog::error("job {}: the download URL was refused {} times in a row ({})", job->id,
                  url_refusals, r.reason);
    const std::string reason = "the download URL was refused (HTTP 403) " +
                               std::to_string(url_refusals) +
                               " times in a row with a fresh URL each time";
    if (phase == Phase::Install && work) {
      // A streamed install still runs: no FAILED before it returned (as after a deadline).
      deadline_missed = reason;
      return stop_work();
    }
    return step_failed(reason);
  }
  update("IN_PROGRESS", "download_interrupt", r.reason.empty() ? "none" : r.reason);
  // A streamed install stays in `install` (its plugin waits for bytes): only the URL is
  // described again, and StreamUrl hands it to the waiting download.
  const bool streamed = phase == Phase::Install;
  selected = job->id;
  selected_execution = job->execution;
  if (url_refusals < 2) {
    spdlog::warn("job {}: the download URL expired: describing the job again", job->id);
    if (streamed) {
      return send_request(RequestPurpose::Stream, job->id);
    }
    return fire(Trigger::UrlExpired);
  }
  auto delay = s.url_refused_backoff_base;
  for (int i = 2; i < url_refusals && delay < s.url_refused_backoff_cap; ++i) {
    delay *= 2;
  }
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

void Machine::Impl::enter_install() {
  status("job " + job->id + ": installing");
  step = Step::Install;
  attempts.begin(saved(), SavedStep::Install, now());
  persist();
  if (!configured(Step::Install)) {
    final_updates = {make_update("SUCCEEDED", "no_installation_hook_provided", "none")};
    return fire(Trigger::NoInstaller);
  }
  if (s.install_stream) {
    // The download runs inside the install: announced first, with the install's deadline.
    update("IN_PROGRESS", "download_start", "none",
           to_minutes(s.step_deadline[index(Step::Install)] +
                      duration_cast<seconds>(s.step_timeout_margin)));
  }
  // No install before an IN_PROGRESS update was accepted: a cancel that landed since the
  // job was picked must still stop it.
  awaited_token = update("IN_PROGRESS", "installation_start", "none",
                         to_minutes(s.step_deadline[index(Step::Install)] +
                                    duration_cast<seconds>(s.step_timeout_margin)));
  progress.start_install();
}

void Machine::Impl::on_install_accepted() {
  awaited_token.clear();
  begin_step(Step::Install, SavedStep::Install);
}

void Machine::Impl::on_install_progress(const StepProgress& p) {
  pending_line = p.line;
  if (progress.line_due(p.percent, now())) {
    return send_line();
  }
  if (progress_timer == 0) {
    progress_timer = set_timer(TimerPurpose::Progress,
                               duration_cast<milliseconds>(progress.line_due_at() - now()));
  }
}

void Machine::Impl::flush_line() {
  if (pending_line) {
    progress.sent(-1, now());
  }
  send_line();
}

void Machine::Impl::send_line() {
  cancel_timer(progress_timer);
  if (!pending_line) {
    return;
  }
  update("IN_PROGRESS", "installation_progress", *pending_line, {}, true);
  pending_line.reset();
}

void Machine::Impl::enter_reboot_ack() {
  if (!configured(Step::Restart)) {
    final_updates = {make_update("SUCCEEDED", "no_restart_hook_provided", "none")};
    return fire(Trigger::NoRestarter);
  }
  status("job " + job->id + ": reboot starts");
  attempts.begin(saved(), SavedStep::Reboot, now());
  persist();
  if (auto saved = save_now(); !saved) {
    // Restarting now would resume the install after the reboot (the saved step is still
    // `install`): on a full disk, an install-and-reboot loop. Announce nothing; fail.
    final_updates = {
        make_update("FAILED", failed_state(Step::Restart),
                    "cannot save the job state before the restart: " + saved.error().message())};
    return fire(Trigger::StepFailed);
  }
  const auto budget = s.step_deadline[index(Step::Restart)] +
                      s.step_deadline[index(Step::Version)] + s.step_deadline[index(Step::Ready)] +
                      duration_cast<seconds>(s.step_timeout_margin);
  awaited_token = update("IN_PROGRESS", "reboot_start", "none", to_minutes(budget));
}

}  // namespace upparat::state
