#include "jobs/update_queue.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "jobs/topics.hpp"

namespace upparat::jobs {

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

std::vector<Outgoing> UpdateQueue::poll(TimePoint now) {
  std::vector<Outgoing> out;
  for (auto& [job_id, queue] : jobs_) {
    if (queue.empty())
      continue;
    Entry& head = queue.front();
    const bool due = head.state == EntryState::Queued || now >= head.due;
    if (!due)
      continue;
    head.state = EntryState::InFlight;
    head.due = now + settings_.resend;
    UpdateRequest request;
    request.status = head.update.status;
    request.state = head.update.state;
    request.message = head.update.message;
    request.step_timeout_minutes = head.update.step_timeout_minutes;
    if (head.update.execution_number > 0)
      request.execution_number = head.update.execution_number;
    request.client_token = head.token;
    out.push_back({update_topic(thing_, job_id), build_update_request(request)});
  }
  return out;
}

std::optional<TimePoint> UpdateQueue::next_wakeup() const {
  std::optional<TimePoint> next;
  for (const auto& [job_id, queue] : jobs_) {
    if (queue.empty())
      continue;
    const Entry& head = queue.front();
    const TimePoint t = head.state == EntryState::Queued ? TimePoint::min() : head.due;
    if (!next || t < *next)
      next = t;
  }
  return next;
}

std::optional<UpdateOutcome> UpdateQueue::on_accepted(const std::string& job_id,
                                                      const UpdateAccepted& answer) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end() || it->second.empty() || !answer.client_token)
    return std::nullopt;
  Entry& head = it->second.front();
  if (head.state == EntryState::Queued || head.token != *answer.client_token)
    return std::nullopt;
  UpdateOutcome outcome{head.token, head.update, UpdateResult::Accepted,
                        {},         {},          answer.execution_state};
  it->second.pop_front();
  if (it->second.empty())
    jobs_.erase(it);
  return outcome;
}

std::optional<UpdateOutcome> UpdateQueue::on_rejected(const std::string& job_id,
                                                      const Rejected& answer, TimePoint now) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end() || it->second.empty() || !answer.client_token)
    return std::nullopt;
  Entry& head = it->second.front();
  if (head.state == EntryState::Queued || head.token != *answer.client_token)
    return std::nullopt;
  if (answer.code == "RequestThrottled" || answer.code == "InternalError") {
    const int shift = std::min(head.failures, 20);
    auto delay = settings_.backoff_base * (1LL << shift);
    if (delay > settings_.backoff_cap)
      delay = settings_.backoff_cap;
    ++head.failures;
    head.state = EntryState::Backoff;
    head.due = now + delay;
    spdlog::warn("update of job {} ({}) rejected with {}: retrying in {} ms", job_id,
                 head.update.state, answer.code, delay.count());
    return std::nullopt;
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
    jobs_.erase(it);
    return outcome;
  } else {
    spdlog::error("update of job {} ({} {}) rejected with {}: {}", job_id, head.update.status,
                  head.update.state, answer.code, answer.message);
  }
  it->second.pop_front();
  if (it->second.empty())
    jobs_.erase(it);
  return outcome;
}

void UpdateQueue::resend_all() {
  for (auto& [job_id, queue] : jobs_)
    if (!queue.empty() && queue.front().state == EntryState::InFlight)
      queue.front().state = EntryState::Queued;
}

void UpdateQueue::drop_job(const std::string& job_id) {
  jobs_.erase(job_id);
}

bool UpdateQueue::empty() const {
  return jobs_.empty();
}

bool UpdateQueue::has_pending(const std::string& job_id) const {
  return jobs_.count(job_id) != 0;
}

}  // namespace upparat::jobs
