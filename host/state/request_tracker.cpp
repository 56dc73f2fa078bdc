#include "state/request_tracker.hpp"

#include <utility>

#include "jobs/messages.hpp"
#include "jobs/topics.hpp"

namespace upparat::state {

namespace {

std::size_t index(RequestSlot slot) {
  return static_cast<std::size_t>(slot);
}

}  // namespace

RequestTracker::RequestTracker(std::string thing_name, std::string token_prefix)
    : thing_name_(std::move(thing_name)), token_prefix_(std::move(token_prefix)) {}

std::string RequestTracker::new_token() {
  return token_prefix_ + "-" + std::to_string(next_token_++);
}

const Request& RequestTracker::start(RequestSlot slot, Request request) {
  auto& held = slots_[index(slot)];
  held = std::move(request);
  return *held;
}

const Request& RequestTracker::get() {
  Request r;
  r.purpose = RequestPurpose::Get;
  r.token = new_token();
  r.topic = jobs::get_topic(thing_name_);
  r.payload = jobs::build_get_request(r.token);
  return start(RequestSlot::Flow, std::move(r));
}

const Request& RequestTracker::describe(RequestSlot slot, RequestPurpose purpose,
                                        const std::string& job_id, std::int64_t execution) {
  Request r;
  r.purpose = purpose;
  r.job_id = job_id;
  r.token = new_token();
  r.topic = jobs::describe_topic(thing_name_, job_id);
  std::optional<std::int64_t> pinned;
  if (execution > 0) {
    pinned = execution;
  }
  r.payload = jobs::build_describe_request(r.token, pinned);
  return start(slot, std::move(r));
}

const Request* RequestTracker::find(RequestSlot slot) const {
  const auto& held = slots_[index(slot)];
  return held ? &*held : nullptr;
}

bool RequestTracker::answers(RequestSlot slot, const std::optional<std::string>& token,
                             const std::string& job_id) const {
  const Request* r = find(slot);
  return r != nullptr && token == r->token && r->job_id == job_id;
}

std::optional<Request> RequestTracker::take(RequestSlot slot) {
  return std::exchange(slots_[index(slot)], std::nullopt);
}

void RequestTracker::set_timer(RequestSlot slot, std::uint64_t timer) {
  if (auto& held = slots_[index(slot)]) {
    held->timer = timer;
  }
}

std::optional<RequestSlot> RequestTracker::slot_of_timer(std::uint64_t timer) const {
  for (RequestSlot slot : {RequestSlot::Flow, RequestSlot::CancelCheck}) {
    const Request* r = find(slot);
    if (timer != 0 && r != nullptr && r->timer == timer) {
      return slot;
    }
  }
  return std::nullopt;
}

}  // namespace upparat::state
