#include "state/machine_impl.hpp"

#include <algorithm>
#include <random>
#include <utility>

#include <spdlog/spdlog.h>

namespace upparat::state {

using namespace machine_detail;

// ---------------------------------------------------------------- requests

void Machine::Impl::send_request(RequestPurpose purpose, const std::string& job_id) {
  drop_request(RequestSlot::Flow);
  if (purpose == RequestPurpose::Get) {
    notified_during_get = false;
    requests.get();
  } else {
    // Pinned to the execution: a retry's new execution is not this one.
    const std::int64_t execution =
        purpose == RequestPurpose::Select ? selected_execution : job->execution;
    requests.describe(RequestSlot::Flow, purpose, job_id, execution);
  }
  send_again(RequestSlot::Flow);
}

void Machine::Impl::send_cancel_check() {
  if (requests.find(RequestSlot::CancelCheck) != nullptr) {
    return;
  }
  requests.describe(RequestSlot::CancelCheck, RequestPurpose::Select, job->id, job->execution);
  send_again(RequestSlot::CancelCheck);
}

void Machine::Impl::send_again(RequestSlot slot) {
  const Request* r = requests.find(slot);
  if (r == nullptr) {
    return;
  }
  publish(r->topic, r->payload);
  std::uint64_t timer = r->timer;
  cancel_timer(timer);
  requests.set_timer(slot, set_timer(TimerPurpose::Request, s.request_resend));
}

void Machine::Impl::drop_request(RequestSlot slot) {
  if (auto r = requests.take(slot)) {
    cancel_timer(r->timer);
  }
}

void Machine::Impl::enter_fetch_jobs() {
  status("fetching jobs");
  auto listed = std::exchange(notified_list, std::nullopt);
  if (refetch_later) {
    // The last job ended with a rejected update: do not loop on it at full speed.
    refetch_later = false;
    refetch_timer = set_timer(TimerPurpose::Refetch, s.request_resend);
    return;
  }
  if (listed) {
    // Woken by a notify whose list is complete: it says what a get would answer.
    return on_get_accepted(*listed);
  }
  send_request(RequestPurpose::Get, "");
}

void Machine::Impl::arm_poll() {
  if (s.poll_interval.count() <= 0) {
    return;
  }
  const auto base = duration_cast<milliseconds>(s.poll_interval);
  std::random_device rd;
  const auto jitter = milliseconds(base.count() / 10 > 0 ? rd() % (base.count() / 10 + 1) : 0);
  poll_timer = set_timer(TimerPurpose::Poll, base + jitter);
}

bool Machine::Impl::ours(const std::string& job_id) const {
  return job_id.compare(0, s.job_prefix.size(), s.job_prefix) == 0;
}

void Machine::Impl::on_get_accepted(const jobs::PendingJobs& pending) {
  forget_ended_not_listed(pending);
  const Selection selection = select_job(pending, [&](const jobs::JobSummary& j) {
    return ours(j.job_id) && jobs::valid_job_id(j.job_id) && !is_ended(j);
  });
  const auto& in_progress = selection.multiple_in_progress;
  if (!in_progress.empty()) {
    final_updates.clear();
    std::string ids;
    for (const auto& j : in_progress) {
      ids += (ids.empty() ? "" : ", ") + j.job_id;
    }
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
    for (const auto& j : in_progress) {
      out.push_back(RemoveDownload{j.job_id});
    }
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

void Machine::Impl::on_select_described(const jobs::Execution& e) {
  if (e.job_id != *selected) {
    return;
  }
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
  if (job && job->id == j.id) {
    j.kv = job->kv;
  } else if (local) {
    j.kv = std::make_shared<plugin::KeyValueStore>(durable->store);
  }
  job = std::move(j);
  // The starting point of expectedVersion (also after a reboot or a re-describe).
  updates.set_version(e.job_id, e.execution_number, e.version_number);
  auto doc = jobs::parse_job_document(e.document_json, s.allow_http, s.require_signature);
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
    if (durable->step == SavedStep::Finish) {
      final_updates = {
          make_update(durable->final_status, durable->final_state, durable->final_message)};
    }
    if (rule.trigger) {
      if (s.install_stream) {
        return fire(rule.host_streaming);
      }
      return fire(s.install_from_url ? rule.streaming : *rule.trigger);
    }
    // verify_job: start over as if new, keeping the saved counts
  } else {
    durable = JobState{};
    saved_past_download = false;
    durable->job_id = job->id;
    durable->execution_number = job->execution;
  }
  durable->version = job->doc.version;
  durable->force = job->doc.force;
  if (e.status == "IN_PROGRESS") {
    auto state = e.status_details.find("state");
    if (!local && state != e.status_details.end() && state->second == "reboot_start") {
      return fire(Trigger::AlreadyRebooted);
    }
    return fire(Trigger::Redo);
  }
  if (job->doc.force) {
    return fire(Trigger::Redo);
  }
  fire(Trigger::CheckVersion);
}

jobs::Update Machine::Impl::make_update(const std::string& status, const std::string& state,
                                        const std::string& message) {
  jobs::Update u;
  u.job_id = job ? job->id : *selected;
  u.execution_number = job ? job->execution : selected_execution;
  u.status = status;
  u.state = state;
  u.message = sanitize_status_detail(message);
  return u;
}

bool Machine::Impl::other_execution(const jobs::Execution& e, std::int64_t execution) {
  return execution > 0 && e.execution_number > 0 && e.execution_number != execution;
}

void Machine::Impl::on_stream_described(const jobs::Execution& e) {
  if (jobs::is_terminal_status(e.status) || other_execution(e, job->execution)) {
    return job_gone(e.job_id);
  }
  updates.set_version(e.job_id, e.execution_number, e.version_number);
  auto doc = jobs::parse_job_document(e.document_json, s.allow_http, s.require_signature);
  if (doc) {
    job->doc.file = doc->file;
  } else {
    spdlog::warn("job {}: describe for a fresh URL: {}", job->id, doc.error().message());
  }
  if (phase == Phase::Install) {
    // A streamed install waits for its download to go on: no transition.
    drop_request(RequestSlot::Flow);
    if (work) {
      out.push_back(StreamUrl{work->id, job->doc.file});
    }
    return;
  }
  fire(Trigger::FreshUrl);
}

}  // namespace upparat::state
