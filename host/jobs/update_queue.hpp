#pragma once

// Status updates of a job go out one at a time: the next waits for the accepted/rejected
// answer of the previous, matched by clientToken (resent after a timeout with the same token).
// AWS does not guarantee order, so this is what keeps a late installation_progress from
// overwriting reboot_start. Queued progress messages are merged, the latest winning.
// Pure: time comes in as arguments, messages go out as return values.

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "jobs/messages.hpp"

namespace upparat::jobs {

using TimePoint = std::chrono::steady_clock::time_point;

struct Update {
  std::string job_id;
  std::string status;  ///< IN_PROGRESS, SUCCEEDED, FAILED, REJECTED
  std::string state;
  std::string message = "none";
  std::optional<int> step_timeout_minutes;
  /// The job's execution (sent as executionNumber); 0 = not known, left out.
  std::int64_t execution_number = 0;
  /// download_progress / installation_progress: dropped when anything else is queued after
  /// it before it went out, replaced by a newer progress update.
  bool progress = false;
};

enum class UpdateResult {
  Accepted,
  Rejected,  ///< rejected for good (logged with its code)
  Gone,      ///< the execution was cancelled or deleted: ResourceNotFound, TerminalStateReached,
             ///< InvalidStateTransition with a terminal executionState
};

struct UpdateOutcome {
  std::string client_token;
  Update update;
  UpdateResult result = UpdateResult::Accepted;
  std::string code;     ///< rejection code
  std::string message;  ///< rejection message
  std::optional<ExecutionState> execution_state;
};

struct Outgoing {
  std::string topic;
  std::string payload;
};

struct UpdateQueueSettings {
  std::chrono::milliseconds resend{30000};
  std::chrono::milliseconds backoff_base{1000};
  std::chrono::milliseconds backoff_cap{60000};
};

class UpdateQueue {
 public:
  UpdateQueue(std::string thing, UpdateQueueSettings settings, std::string token_prefix);

  /// Queues an update; returns its clientToken. Queued (not yet sent) progress updates of the
  /// same job are dropped first.
  std::string enqueue(Update update);

  /// What must be published now: heads not yet sent, unanswered past `resend`, or whose
  /// back-off has passed.
  std::vector<Outgoing> poll(TimePoint now);
  /// When poll() next has something to do (nullopt: nothing pending).
  [[nodiscard]] std::optional<TimePoint> next_wakeup() const;

  /// An answer on {jobId}/update/accepted. nullopt when it matches no update in flight
  /// (duplicate, stale, another client's).
  std::optional<UpdateOutcome> on_accepted(const std::string& job_id, const UpdateAccepted& answer);
  /// An answer on {jobId}/update/rejected. nullopt for a duplicate/stale answer and for
  /// RequestThrottled / InternalError (retried with back-off).
  std::optional<UpdateOutcome> on_rejected(const std::string& job_id, const Rejected& answer,
                                           TimePoint now);

  /// After a reconnect: updates in flight go out again at the next poll().
  void resend_all();
  /// Forgets every update of a job (it was cancelled or deleted).
  void drop_job(const std::string& job_id);

  [[nodiscard]] bool empty() const;
  [[nodiscard]] bool has_pending(const std::string& job_id) const;

 private:
  enum class EntryState { Queued, InFlight, Backoff };
  struct Entry {
    Update update;
    std::string token;
    EntryState state = EntryState::Queued;
    TimePoint due{};
    int failures = 0;
  };
  std::string thing_;
  UpdateQueueSettings settings_;
  std::string token_prefix_;
  std::uint64_t next_token_ = 1;
  std::map<std::string, std::deque<Entry>> jobs_;
};

}  // namespace upparat::jobs
