#include "state/machine_impl.hpp"

#include <algorithm>
#include <random>

#include <spdlog/spdlog.h>

namespace upparat::state {

using namespace machine_detail;

// ---------------------------------------------------------------- events

void Machine::Impl::on(const Started&) {
  auto loaded = store.load();
  if (!loaded) {
    spdlog::error("ignoring the saved job state: {}", loaded.error().message());
    forget_durable();
  } else if (*loaded) {
    durable = **loaded;
    saved_past_download = !up_to_download(durable->step);
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

void Machine::Impl::on(const Connected&) {
  connected = true;
  if (!ever_connected) {
    ever_connected = true;
    if (phase == Phase::Idle) {
      return fire(Trigger::Connect);
    }
  }
  updates.resend_all();
  send_again(RequestSlot::Flow);
  send_again(RequestSlot::CancelCheck);
  if (phase == Phase::Monitor) {
    fire(Trigger::JobsNotified);  // notify messages may have been missed while offline
  }
}

void Machine::Impl::on(const MqttMessage& m) {
  const auto topic = jobs::parse_topic(s.thing_name, m.topic);
  if (!topic) {
    spdlog::debug("ignoring a message on {}", m.topic);
    return;
  }
  if (m.payload.size() > jobs::kMaxAwsPayload) {
    // A notify is trusted to name our jobs (its list may stand in for a get's answer).
    spdlog::warn("ignoring a message of {} bytes on {}: AWS IoT carries at most 128 KiB",
                 m.payload.size(), m.topic);
    return;
  }
  switch (topic->kind) {
    case jobs::TopicKind::Notify:
      return on_notify(m.payload);
    case jobs::TopicKind::GetAccepted: {
      auto answer = jobs::parse_get_accepted(m.payload);
      if (!answer) {
        return spdlog::warn("{}", answer.error().message());
      }
      if (phase != Phase::FetchJobs ||
          !requests.answers(RequestSlot::Flow, answer->client_token, "")) {
        return spdlog::debug("ignoring a stale get answer");
      }
      return on_get_accepted(*answer);
    }
    case jobs::TopicKind::GetRejected: {
      auto answer = jobs::parse_rejected(m.payload);
      if (!answer || phase != Phase::FetchJobs ||
          !requests.answers(RequestSlot::Flow, answer->client_token, "")) {
        return;
      }
      spdlog::warn("get rejected with {}: {}", answer->code, answer->message);
      return;  // the request timer asks again
    }
    case jobs::TopicKind::DescribeAccepted: {
      auto answer = jobs::parse_describe_accepted(m.payload);
      if (!answer) {
        return spdlog::warn("{}", answer.error().message());
      }
      return on_describe_accepted(topic->job_id, *answer);
    }
    case jobs::TopicKind::DescribeRejected: {
      auto answer = jobs::parse_rejected(m.payload);
      if (!answer) {
        return spdlog::warn("{}", answer.error().message());
      }
      return on_describe_rejected(topic->job_id, *answer);
    }
    case jobs::TopicKind::UpdateAccepted: {
      auto answer = jobs::parse_update_accepted(m.payload);
      if (!answer) {
        return spdlog::warn("{}", answer.error().message());
      }
      if (auto outcome = updates.on_accepted(topic->job_id, *answer)) {
        on_update_outcome(*outcome);
      }
      return;
    }
    case jobs::TopicKind::UpdateRejected: {
      auto answer = jobs::parse_rejected(m.payload);
      if (!answer) {
        return spdlog::warn("{}", answer.error().message());
      }
      if (auto outcome = updates.on_rejected(topic->job_id, *answer, now())) {
        on_update_outcome(*outcome);
      }
      return;
    }
  }
}

void Machine::Impl::on_notify(const std::string& payload) {
  auto pending = jobs::parse_notify(payload);
  if (!pending) {
    return spdlog::warn("{}", pending.error().message());
  }
  // A notify lists at most 15 executions (10 in older documentation): when other agents'
  // jobs fill it, one of ours may be left out, so a full-looking list is worth a get too.
  const bool lists_ours = std::any_of(pending->in_progress.begin(), pending->in_progress.end(),
                                      [&](const auto& j) { return ours(j.job_id); }) ||
                          std::any_of(pending->queued.begin(), pending->queued.end(),
                                      [&](const auto& j) { return ours(j.job_id); });
  const bool complete =
      pending->in_progress.size() + pending->queued.size() < kNotifyMayBeTruncated;
  const bool any = lists_ours || !complete;
  if (phase == Phase::Monitor) {
    if (any) {
      if (lists_ours && complete) {
        notified_list = std::move(*pending);
      }
      fire(Trigger::JobsNotified);
    }
    return;
  }
  if (phase == Phase::FetchJobs && any) {
    notified_during_get = true;
    return;
  }
  if (!job || !has_job(phase) || phase == Phase::Finishing) {
    return;
  }
  // Listed with another execution number: a retry queued a new execution after ours timed
  // out or failed. That one is not ours to report on; the describe below decides.
  auto listed = [&](const std::vector<jobs::JobSummary>& list) {
    return std::any_of(list.begin(), list.end(), [&](const auto& j) {
      return j.job_id == job->id && (j.execution_number == 0 || job->execution == 0 ||
                                     j.execution_number == job->execution);
    });
  };
  if (listed(pending->in_progress) || listed(pending->queued)) {
    return;
  }
  // Not listed: cancelled, deleted, retried, or just beyond notify's 15 entries. Ask about
  // our execution.
  send_cancel_check();
}

void Machine::Impl::on_describe_accepted(const std::string& job_id,
                                         const jobs::DescribeAccepted& a) {
  if (requests.answers(RequestSlot::CancelCheck, a.client_token, job_id)) {
    drop_request(RequestSlot::CancelCheck);
    if (!job || job->id != job_id || !has_job(phase)) {
      return;
    }
    if (jobs::is_terminal_status(a.execution.status) ||
        other_execution(a.execution, job->execution)) {
      return job_gone(job_id);
    }
    updates.set_version(job_id, a.execution.execution_number, a.execution.version_number);
    return;
  }
  if (!requests.answers(RequestSlot::Flow, a.client_token, job_id)) {
    return spdlog::debug("ignoring a stale describe answer for {}", job_id);
  }
  const RequestPurpose purpose = requests.find(RequestSlot::Flow)->purpose;
  if (purpose == RequestPurpose::Select && phase == Phase::DescribeJob) {
    return on_select_described(a.execution);
  }
  if (purpose == RequestPurpose::Stream &&
      (phase == Phase::DescribeForInstall || phase == Phase::Install)) {
    return on_stream_described(a.execution);
  }
}

void Machine::Impl::on_describe_rejected(const std::string& job_id, const jobs::Rejected& r) {
  const bool gone = r.code == "ResourceNotFound" || r.code == "TerminalStateReached";
  if (requests.answers(RequestSlot::CancelCheck, r.client_token, job_id)) {
    drop_request(RequestSlot::CancelCheck);
    if (gone && job && job->id == job_id && has_job(phase)) {
      job_gone(job_id);
    }
    return;
  }
  if (!requests.answers(RequestSlot::Flow, r.client_token, job_id)) {
    return;
  }
  spdlog::warn("describe of {} rejected with {}: {}", job_id, r.code, r.message);
  if (gone) {
    return job_gone(job_id);
  }
  // else the request timer asks again
}

void Machine::Impl::on_update_outcome(const jobs::UpdateOutcome& o) {
  if (o.result == jobs::UpdateResult::Gone && job && o.update.job_id == job->id && has_job(phase)) {
    return job_gone(job->id);
  }
  if (on_ended_outcome(o)) {
    return;
  }
  if (o.result == jobs::UpdateResult::Accepted && job && o.update.job_id == job->id &&
      o.update.status == "IN_PROGRESS") {
    job->status = "IN_PROGRESS";
  }
  if (final_tokens.erase(o.client_token) != 0) {
    if (o.result == jobs::UpdateResult::Rejected) {
      on_final_refused(o);
    }
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
    if (phase == Phase::Install) {
      return on_install_accepted();
    }
    if (phase == Phase::RebootAck) {
      awaited_token.clear();
      return fire(Trigger::RebootAccepted);
    }
  }
}

void Machine::Impl::work_finished() {
  work.reset();
  if (phase == Phase::Stopping) {
    return fire(Trigger::WorkEnded);
  }
  if (phase == Phase::Finishing) {
    return maybe_done();
  }
}

bool Machine::Impl::work_wanted() const {
  return phase != Phase::Stopping && phase != Phase::Finishing && phase != Phase::ShuttingDown;
}

void Machine::Impl::on(const StepFinished& f) {
  if (!current_work(f.work)) {
    return;
  }
  work_returned();
  const bool wanted = work_wanted();
  if (phase == Phase::ShuttingDown) {
    work.reset();
    return;
  }
  if (!wanted) {
    return work_finished();
  }
  const bool stopped = !uninterruptible(*work);
  work.reset();
  if (deadline_missed && stopped) {
    attempt_ended();
    return step_failed(*deadline_missed);
  }
  on_step_finished(f);
}

void Machine::Impl::on(const StepProgress& p) {
  if (!current_work(p.work) || !job) {
    return;
  }
  if (phase == Phase::Install) {
    return on_install_progress(p);
  }
  spdlog::info("job {}: {}: {}", job->id, to_string(work->step), p.line);
}

void Machine::Impl::on(const DownloadFinished& f) {
  if (!current_work(f.work)) {
    return;
  }
  work_returned();
  if (phase == Phase::ShuttingDown) {
    work.reset();
    return;
  }
  if (!work_wanted()) {
    return work_finished();
  }
  work.reset();
  if (deadline_missed) {
    attempt_ended();
    return step_failed(*deadline_missed);
  }
  on_download_finished(f.result);
}

void Machine::Impl::on(const StreamUrlExpired& e) {
  if (current_work(e.work) && phase == Phase::Install && work_wanted() && !deadline_missed) {
    on_url_expired(e.result);
  }
}

void Machine::Impl::on(const DownloadProgress& p) {
  if (current_work(p.work) && phase == Phase::Download) {
    on_download_progress(p.progress);
  }
}

void Machine::Impl::on(const DownloadResumeState& r) {
  if (!current_work(r.work) || !durable) {
    return;
  }
  // Bytes synced to disk are progress: earlier deaths during the download (power cuts in
  // the middle of a long download) no longer count, only this unfinished attempt does.
  attempts.progressed(saved(), r.resume.synced_bytes);
  durable->resume = r.resume;
  // The synced length of the file: durable, like the bytes it counts (off the request path,
  // the download goes on meanwhile).
  persist(Durability::Synced);
}

void Machine::Impl::on(const TimerFired& t) {
  auto it = timers.find(t.id);
  if (it == timers.end()) {
    return;  // cancelled
  }
  const TimerPurpose purpose = it->second;
  timers.erase(it);
  switch (purpose) {
    case TimerPurpose::Request:
      if (auto slot = requests.slot_of_timer(t.id)) {
        requests.set_timer(*slot, 0);  // fired: nothing to cancel
        send_again(*slot);
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
        attempts.retried();
        run_step();
      }
      return;
    case TimerPurpose::StepDeadline:
      if (deadline_timer == t.id) {
        on_deadline();
      }
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
      if (retry_timer == t.id && phase == Phase::Install && work) {
        retry_timer = 0;
        send_request(RequestPurpose::Stream, job->id);
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
      if (stop_grace_timer == t.id) {
        on_stop_grace();
      }
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

void Machine::Impl::on(const ShutdownRequested&) {
  if (shutdown) {
    return;
  }
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
    // Stopped on purpose: the daemon did not die during this attempt.
    if (attempts.stopped_on_purpose(saved())) {
      persist();
    }
  }
  status("stopping");
  fire(Trigger::Shutdown);
}

void Machine::Impl::maybe_exit() {
  if (phase == Phase::ShuttingDown && (!work || work_abandoned) && updates.empty()) {
    out.push_back(Exit{work ? ExitReason::PluginStuck : ExitReason::Shutdown});
  }
}

std::vector<Action> Machine::Impl::handle(const Event& event) {
  out.clear();
  std::visit([this](const auto& e) { on(e); }, event);
  take_transitions();
  pump_updates();
  if (phase == Phase::ShuttingDown && !exited) {
    const std::size_t before = out.size();
    maybe_exit();
    exited = out.size() != before;
  }
  // Before the daemon carries out any of this event's actions.
  (void)save_now();
  return std::move(out);
}

}  // namespace upparat::state
