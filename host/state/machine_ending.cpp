#include "state/machine_impl.hpp"

#include <algorithm>
#include <random>

#include <spdlog/spdlog.h>

namespace upparat::state {

using namespace machine_detail;

// ---------------------------------------------------------------- ending

void Machine::Impl::enter_finishing() {
  final_tokens.clear();
  if (job && durable && final_updates.size() == 1) {
    durable->step = SavedStep::Finish;
    durable->final_status = final_updates.front().status;
    durable->final_state = final_updates.front().state;
    durable->final_message = final_updates.front().message;
    persist();
  }
  for (auto& u : final_updates) {
    final_tokens.insert(enqueue(u));
  }
  final_updates.clear();
  status(job ? "job " + job->id + ": reporting the result" : "reporting");
  maybe_done();
}

void Machine::Impl::maybe_done() {
  if (phase != Phase::Finishing || !final_tokens.empty()) {
    return;
  }
  if (!work) {
    return fire(Trigger::Done);
  }
  if (work_abandoned) {
    exit_for_stuck_work();
  }
}

void Machine::Impl::job_gone(const std::string& job_id) {
  spdlog::warn("job {} was cancelled or deleted: stopping", job_id);
  updates.drop_job(job_id);
  if (!job) {
    job = Job{job_id, 0, "", {}, "", std::make_shared<plugin::KeyValueStore>(), {}};
  }
  final_tokens.clear();
  fire(Trigger::Gone);
}

void Machine::Impl::enter_stopping() {
  if (work_abandoned) {
    return exit_for_stuck_work();  // the job is gone: nothing to report
  }
  stop_work();
  status(job ? "job " + job->id + ": stopping" : "stopping");
  if (!work) {
    fire(Trigger::WorkEnded);
  }
}

void Machine::Impl::end_job() {
  if (job) {
    out.push_back(RemoveDownload{job->id});
  }
  // The saved state may still name another job (its describe never came back): its file
  // goes too.
  if (durable && (!job || durable->job_id != job->id)) {
    out.push_back(RemoveDownload{durable->job_id});
  }
  forget_durable();
  url_refusals = 0;
  final_minimal.reset();
  job.reset();
  selected.reset();
  selected_execution = 0;
  drop_request(RequestSlot::CancelCheck);
}

// ---------------------------------------------------------------- refused final updates

void Machine::Impl::on_final_refused(const jobs::UpdateOutcome& o) {
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
      persist();
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
  EndedExecution e{job->id, job->execution, minimal.status, minimal.state, job->status == "QUEUED"};
  Ended record;
  record.execution = e;
  record.tries = 1;
  record.timer = set_timer(TimerPurpose::Ended, ended_delay(record.tries));
  ended[job->id] = std::move(record);
  save_ended();
}

milliseconds Machine::Impl::ended_delay(int tries) const {
  milliseconds delay = s.ended_retry_base;
  for (int i = 0; i < tries && delay < s.ended_retry_cap; ++i) {
    delay *= 2;
  }
  return std::min(delay, s.ended_retry_cap);
}

void Machine::Impl::save_ended() {
  std::vector<EndedExecution> list;
  for (const auto& [id, e] : ended) {
    list.push_back(e.execution);
  }
  if (auto saved = store.save_ended(list); !saved) {
    spdlog::error("cannot save the ended executions: {}", saved.error().message());
  }
}

bool Machine::Impl::is_ended(const jobs::JobSummary& j) const {
  auto it = ended.find(j.job_id);
  return it != ended.end() && it->second.execution.execution_number == j.execution_number;
}

void Machine::Impl::forget_ended_not_listed(const jobs::PendingJobs& pending) {
  bool changed = false;
  for (auto it = ended.begin(); it != ended.end();) {
    const jobs::JobSummary* listed = nullptr;
    for (const auto* list : {&pending.in_progress, &pending.queued}) {
      for (const auto& j : *list) {
        if (j.job_id == it->first && j.execution_number == it->second.execution.execution_number) {
          listed = &j;
        }
      }
    }
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
  if (changed) {
    save_ended();
  }
}

void Machine::Impl::retry_ended(std::uint64_t timer) {
  for (auto& [id, e] : ended) {
    if (e.timer != timer) {
      continue;
    }
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

bool Machine::Impl::on_ended_outcome(const jobs::UpdateOutcome& o) {
  auto it = ended.find(o.update.job_id);
  if (it == ended.end() || it->second.tokens.erase(o.client_token) == 0) {
    return false;
  }
  Ended& e = it->second;
  const bool terminal = o.update.status != "IN_PROGRESS";
  if (o.result == jobs::UpdateResult::Gone ||
      (o.result == jobs::UpdateResult::Accepted && terminal)) {
    spdlog::warn("job {}: the final update {} {} was {} at last", it->first, o.update.status,
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

}  // namespace upparat::state
