#include "jobs/update_queue.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "jobs/topics.hpp"

namespace upparat::jobs {
namespace {

UpdateRequest request_of(const Update& u) {
  UpdateRequest request;
  request.status = u.status;
  request.state = u.state;
  request.message = u.message;
  return request;
}

}  // namespace

UpdateQueue::UpdateQueue(std::string thing, UpdateQueueSettings settings, std::string token_prefix)
    : thing_(std::move(thing)), settings_(settings), token_prefix_(std::move(token_prefix)) {}

std::string UpdateQueue::enqueue(Update update) {
  auto& queue = jobs_[update.job_id];
  // A progress update not sent yet is superseded by whatever comes next.
  queue.erase(std::remove_if(queue.begin(), queue.end(),
                             [](const Entry& e) {
                               return e.update.progress && e.state == EntryState::Queued;
                             }),
              queue.end());
  Entry entry;
  entry.token = token_prefix_ + "-" + std::to_string(next_token_++);
  entry.update = std::move(update);
  queue.push_back(std::move(entry));
  return queue.back().token;
}

std::optional<std::int64_t> UpdateQueue::expected_version(const Update& update) const {
  auto it = versions_.find(update.job_id);
  if (it == versions_.end() || it->second.execution != update.execution_number) {
    return std::nullopt;
  }
  return it->second.version;
}

std::vector<Outgoing> UpdateQueue::poll(TimePoint now) {
  std::vector<Outgoing> out;
  for (auto& [job_id, queue] : jobs_) {
    if (queue.empty()) {
      continue;
    }
    Entry& head = queue.front();
    const bool due = head.state == EntryState::Queued || now >= head.due;
    if (!due) {
      continue;
    }
    head.state = EntryState::InFlight;
    head.due = now + settings_.resend;
    if (!head.versioned) {
      head.versioned = true;
      head.expected = expected_version(head.update);
    }
    UpdateRequest request = request_of(head.update);
    request.step_timeout_minutes = head.update.step_timeout_minutes;
    request.expected_version = head.expected;
    if (head.update.execution_number > 0) {
      request.execution_number = head.update.execution_number;
    }
    request.include_execution_state = true;
    request.client_token = head.token;
    out.push_back({update_topic(thing_, job_id), build_update_request(request)});
  }
  return out;
}

std::optional<TimePoint> UpdateQueue::next_wakeup() const {
  std::optional<TimePoint> next;
  for (const auto& [job_id, queue] : jobs_) {
    if (queue.empty()) {
      continue;
    }
    const Entry& head = queue.front();
    const TimePoint t = head.state == EntryState::Queued ? TimePoint::min() : head.due;
    if (!next || t < *next) {
      next = t;
    }
  }
  return next;
}

void UpdateQueue::pop_head(Jobs::iterator it, UpdateResult result) {
  const bool ended =
      result == UpdateResult::Accepted && is_terminal_status(it->second.front().update.status);
  it->second.pop_front();
  if (!it->second.empty()) {
    return;
  }
  // Nothing can change the execution after its terminal update: its version is of no use.
  if (ended) {
    versions_.erase(it->first);
  }
  jobs_.erase(it);
}

std::optional<UpdateOutcome> UpdateQueue::on_accepted(const std::string& job_id,
                                                      const UpdateAccepted& answer) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end() || it->second.empty() || !answer.client_token) {
    return std::nullopt;
  }
  Entry& head = it->second.front();
  if (head.state == EntryState::Queued || head.token != *answer.client_token) {
    return std::nullopt;
  }
  if (answer.execution_state && answer.execution_state->version_number > 0) {
    set_version(job_id, head.update.execution_number, answer.execution_state->version_number);
  } else if (head.expected) {
    set_version(job_id, head.update.execution_number, *head.expected + 1);  // +1 per update
  }
  UpdateOutcome outcome{head.token, head.update, UpdateResult::Accepted,
                        {},         {},          answer.execution_state};
  pop_head(it, outcome.result);
  return outcome;
}

std::chrono::milliseconds UpdateQueue::backoff(int failures) const {
  const int shift = std::min(failures, 20);
  auto delay = settings_.backoff_base * (1LL << shift);
  if (delay > settings_.backoff_cap) {
    delay = settings_.backoff_cap;
  }
  return delay;
}

std::optional<UpdateOutcome> UpdateQueue::on_version_mismatch(Jobs::iterator it,
                                                              const Rejected& answer,
                                                              TimePoint now) {
  const std::string& job_id = it->first;
  Entry& head = it->second.front();
  const ExecutionState& state = *answer.execution_state;
  set_version(job_id, head.update.execution_number, state.version_number);
  UpdateOutcome outcome{head.token,  head.update,    UpdateResult::Accepted,
                        answer.code, answer.message, answer.execution_state};
  const bool our_status = state.status == head.update.status;
  if (is_terminal_status(state.status)) {
    if (our_status) {
      // Our own terminal update was applied and its answer lost.
      spdlog::info("update of job {} ({} {}): VersionMismatch, already {}: applied", job_id,
                   head.update.status, head.update.state, state.status);
      pop_head(it, outcome.result);
      return outcome;
    }
    outcome.result = UpdateResult::Gone;
    spdlog::info("update of job {} rejected with VersionMismatch: the execution is {}", job_id,
                 state.status);
    versions_.erase(job_id);
    jobs_.erase(it);
    return outcome;
  }
  if (our_status && state.status_details == status_details_of(request_of(head.update))) {
    // A copy of this update was applied (a resend or a duplicate): its answer was lost.
    spdlog::debug("update of job {} ({}): VersionMismatch, the cloud shows it: applied", job_id,
                  head.update.state);
    pop_head(it, outcome.result);
    return outcome;
  }
  if (head.update.progress && it->second.size() > 1) {
    spdlog::debug("update of job {} ({}): VersionMismatch, superseded by a newer update", job_id,
                  head.update.state);
    it->second.pop_front();
    return std::nullopt;
  }
  // Someone else changed the execution: send ours again on top of it.
  head.versioned = false;
  if (head.mismatches++ == 0) {
    head.state = EntryState::Queued;
  } else {
    const auto delay = backoff(head.mismatches - 2);
    head.state = EntryState::Backoff;
    head.due = now + delay;
  }
  spdlog::info(
      "update of job {} ({} {}): VersionMismatch, the cloud shows {} {} version {}: "
      "sending it again",
      job_id, head.update.status, head.update.state, state.status,
      state.status_details.count("state") ? state.status_details.at("state") : "",
      state.version_number);
  return std::nullopt;
}

std::optional<UpdateOutcome> UpdateQueue::on_rejected(const std::string& job_id,
                                                      const Rejected& answer, TimePoint now) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end() || it->second.empty() || !answer.client_token) {
    return std::nullopt;
  }
  Entry& head = it->second.front();
  if (head.state == EntryState::Queued || head.token != *answer.client_token) {
    return std::nullopt;
  }
  if (answer.code == "RequestThrottled" || answer.code == "InternalError") {
    const auto delay = backoff(head.failures);
    ++head.failures;
    head.state = EntryState::Backoff;
    head.due = now + delay;
    spdlog::warn("update of job {} ({}) rejected with {}: retrying in {} ms", job_id,
                 head.update.state, answer.code, delay.count());
    return std::nullopt;
  }
  if (answer.code == "VersionMismatch" && answer.execution_state) {
    return on_version_mismatch(it, answer, now);
  }
  UpdateOutcome outcome{head.token,  head.update,    UpdateResult::Rejected,
                        answer.code, answer.message, answer.execution_state};
  const bool terminal_state =
      answer.execution_state && is_terminal_status(answer.execution_state->status);
  if (answer.code == "InvalidStateTransition" && terminal_state &&
      answer.execution_state->status == head.update.status) {
    // Our own terminal update was applied and its answer lost: a resend is refused.
    outcome.result = UpdateResult::Accepted;
  } else if (answer.code == "ResourceNotFound" || answer.code == "TerminalStateReached" ||
             (answer.code == "InvalidStateTransition" && terminal_state)) {
    outcome.result = UpdateResult::Gone;
    spdlog::info("update of job {} rejected with {}: the job was cancelled or deleted", job_id,
                 answer.code);
    versions_.erase(job_id);
    jobs_.erase(it);
    return outcome;
  } else {
    spdlog::error("update of job {} ({} {}) rejected with {}: {}", job_id, head.update.status,
                  head.update.state, answer.code, answer.message);
  }
  pop_head(it, outcome.result);
  return outcome;
}

void UpdateQueue::resend_all() {
  for (auto& [job_id, queue] : jobs_) {
    if (!queue.empty() && queue.front().state == EntryState::InFlight) {
      queue.front().state = EntryState::Queued;
    }
  }
}

void UpdateQueue::drop_job(const std::string& job_id) {
  jobs_.erase(job_id);
  versions_.erase(job_id);
}

void UpdateQueue::set_version(const std::string& job_id, std::int64_t execution_number,
                              std::int64_t version) {
  if (version <= 0) {
    return;
  }
  auto [it, inserted] = versions_.try_emplace(job_id, KnownVersion{execution_number, version});
  if (inserted) {
    return;
  }
  KnownVersion& known = it->second;
  if (known.execution != execution_number || version > known.version) {
    known = KnownVersion{execution_number, version};
  }
}

std::optional<std::int64_t> UpdateQueue::version(const std::string& job_id) const {
  auto it = versions_.find(job_id);
  if (it == versions_.end()) {
    return std::nullopt;
  }
  return it->second.version;
}

bool UpdateQueue::empty() const {
  return jobs_.empty();
}

bool UpdateQueue::has_pending(const std::string& job_id) const {
  return jobs_.count(job_id) != 0;
}

}  // namespace upparat::jobs
