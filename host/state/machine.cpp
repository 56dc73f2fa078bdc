#include "state/machine_impl.hpp"

#include <algorithm>
#include <random>

#include <spdlog/spdlog.h>

namespace upparat::state {

using namespace machine_detail;

// ---------------------------------------------------------------- plumbing

std::string Machine::Impl::random_prefix() {
  std::random_device rd;
  static const char* hex = "0123456789abcdef";
  std::string out = "u";
  for (int i = 0; i < 8; ++i) {
    out += hex[rd() % 16];
  }
  return out;
}

std::uint64_t Machine::Impl::set_timer(TimerPurpose purpose, milliseconds delay) {
  const std::uint64_t id = next_id++;
  timers[id] = purpose;
  out.push_back(SetTimer{id, std::max(delay, milliseconds(0))});
  return id;
}

void Machine::Impl::cancel_timer(std::uint64_t& id) {
  if (id != 0 && timers.erase(id) != 0) {
    out.push_back(CancelTimer{id});
  }
  id = 0;
}

void Machine::Impl::publish(std::string topic, std::string payload) {
  if (connected) {
    out.push_back(Publish{std::move(topic), std::move(payload), 1});
  }
}

void Machine::Impl::persist() {
  if (!durable) {
    return;
  }
  persist(up_to_download(durable->step) && !saved_past_download ? Durability::Deferred
                                                                : Durability::Synced);
}

void Machine::Impl::persist(Durability durability) {
  if (!durable) {
    return;
  }
  if (!up_to_download(durable->step)) {
    saved_past_download = true;
  }
  if (!save_pending || durability == Durability::Synced) {
    save_pending = durability;
  }
}

Status Machine::Impl::save_now() {
  const auto durability = save_pending;
  save_pending.reset();
  if (!durability || !durable) {
    return {};
  }
  if (job) {
    durable->store = job->kv->snapshot();
  }
  auto saved = store.save(*durable, *durability);
  if (!saved) {
    spdlog::error("cannot save the job state: {}", saved.error().message());
  }
  return saved;
}

void Machine::Impl::forget_durable() {
  durable.reset();
  save_pending.reset();
  saved_past_download = false;
  if (auto cleared = store.clear(); !cleared) {
    spdlog::error("cannot remove the job state: {}", cleared.error().message());
  }
}

void Machine::Impl::pump_updates() {
  if (connected) {
    for (auto& o : updates.poll(now())) {
      out.push_back(Publish{std::move(o.topic), std::move(o.payload), 1});
    }
  }
  const auto next = connected ? updates.next_wakeup() : std::nullopt;
  if (next == updates_timer_at) {
    return;
  }
  cancel_timer(updates_timer);
  updates_timer_at = next;
  if (next) {
    const TimePoint t = now();
    const auto delay = *next <= t ? milliseconds(0) : duration_cast<milliseconds>(*next - t);
    updates_timer = set_timer(TimerPurpose::Updates, delay + milliseconds(1));
  }
}

std::string Machine::Impl::enqueue(jobs::Update update) {
  spdlog::info("job {}: {} {} {}", update.job_id, update.status, update.state,
               update.progress ? "" : update.message);
  return updates.enqueue(std::move(update));
}

std::string Machine::Impl::update(const std::string& status, const std::string& state,
                                  const std::string& message, std::optional<int> timeout,
                                  bool progress) {
  jobs::Update u;
  u.job_id = job->id;
  u.execution_number = job->execution;
  u.status = status;
  u.state = state;
  u.message = sanitize_status_detail(message);
  u.step_timeout_minutes = timeout;
  u.progress = progress;
  return enqueue(std::move(u));
}

// ---------------------------------------------------------------- the table

void Machine::Impl::take_transitions() {
  while (!triggers.empty()) {
    const Trigger trigger = triggers.front();
    triggers.pop_front();
    const Phase from = phase;
    const Transition* found = find_transition(from, trigger);
    // Every trigger is fired from a phase that expects it.
    if (!UPPARAT_CHECK(found, std::string("no transition from ") + to_string(from) + " on " +
                                  to_string(trigger))) {
      triggers.clear();
      bug("no transition from " + std::string(to_string(from)) + " on " + to_string(trigger));
      continue;
    }
    leave(from);
    phase = found->to;
    spdlog::debug("state machine: {} -> {} on {}", to_string(from), to_string(phase),
                  to_string(trigger));
    if (found->action == OnTransition::EndJob) {
      end_job();
    }
    enter(phase);
  }
}

void Machine::Impl::bug(const std::string& what) {
  if (job && has_job(phase) && phase != Phase::Finishing) {
    final_updates = {make_update("FAILED", failed_state(step), "internal error: " + what)};
    fire(Trigger::Bug);
  }
}

void Machine::Impl::leave(Phase) {
  cancel_timer(retry_timer);
  cancel_timer(deadline_timer);
  deadline_missed.reset();
  cancel_timer(progress_timer);
  cancel_timer(poll_timer);
  pending_line.reset();
  awaited_token.clear();
  drop_request(RequestSlot::Flow);
}

void Machine::Impl::enter(Phase p) {
  switch (p) {
    case Phase::FetchJobs:
      return enter_fetch_jobs();
    case Phase::Monitor:
      status("waiting for jobs");
      return arm_poll();
    case Phase::DescribeJob:
      return send_request(RequestPurpose::Select, *selected);
    case Phase::VerifyJob:
      status("job " + job->id + ": checking the installed version");
      return begin_step(Step::Version, SavedStep::VerifyJob);
    case Phase::DownloadGate:
      status("job " + job->id + ": waiting for the download to be allowed");
      if (job->doc.force) {
        return gate_open();
      }
      return begin_step(Step::Download, SavedStep::DownloadGate);
    case Phase::Download:
      return enter_download();
    case Phase::DescribeForInstall:
      return send_request(RequestPurpose::Stream, job->id);
    case Phase::Install:
      return enter_install();
    case Phase::RebootAck:
      return enter_reboot_ack();
    case Phase::Restart:
      status("job " + job->id + ": restarting");
      return begin_step(Step::Restart, SavedStep::Restart);
    case Phase::VerifyInstallation:
      status("job " + job->id + ": verifying the installation");
      return begin_step(Step::Version, SavedStep::VerifyInstallation);
    case Phase::Ready:
      status("job " + job->id + ": checking readiness");
      return begin_step(Step::Ready, SavedStep::Ready);
    case Phase::Finishing:
      return enter_finishing();
    case Phase::Stopping:
      return enter_stopping();
    case Phase::Idle:
    case Phase::ShuttingDown:
      return;
  }
}

Machine::Machine(MachineSettings settings, StateStore& store, const MonotonicClock& clock)
    : impl_(std::make_unique<Impl>(std::move(settings), store, clock)) {}

Machine::~Machine() = default;

std::vector<Action> Machine::handle(const Event& event) {
  return impl_->handle(event);
}

Phase Machine::phase() const {
  return impl_->phase;
}

std::string Machine::current_job() const {
  return impl_->job ? impl_->job->id : "";
}

}  // namespace upparat::state
