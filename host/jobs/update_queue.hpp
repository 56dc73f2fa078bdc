#pragma once

// Status updates of a job go out one at a time: the next waits for the accepted/rejected
// answer of the previous, matched by clientToken (resent after a timeout with the same token).
// AWS does not guarantee order, so this is what keeps a late installation_progress from
// overwriting reboot_start. Queued progress messages are merged, the latest winning.
//
// AWS does not deduplicate on clientToken: a resent or duplicated request is applied again,
// and a late copy overwrites newer statusDetails. So each update is sent with expectedVersion,
// the execution's versionNumber as last seen (set_version() from a describe or a get summary,
// then the executionState of each accepted answer, asked for with includeJobExecutionState).
// A copy that arrives after the execution changed is refused with VersionMismatch and changes
// nothing. The answer's executionState then decides:
//  - terminal: our own status (our terminal update was applied) -> Accepted; another -> Gone;
//  - our status and exactly the statusDetails we sent -> Accepted (applied, answer lost);
//  - otherwise a progress update with a newer update queued behind it is dropped (the newer one
//    replaces its statusDetails anyway); any other update is sent again with the new version,
//    at once the first time, then with the back-off of RequestThrottled.
// A resend after a time-out keeps the expectedVersion of the first send, so that a resend of an
// applied update meets VersionMismatch (-> Accepted) instead of being applied twice.
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
  Accepted,  ///< also a VersionMismatch / InvalidStateTransition that shows it was applied
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
  /// Forgets every update of a job and its known version (it was cancelled or deleted).
  void drop_job(const std::string& job_id);

  /// The versionNumber of the job's execution as the cloud showed it (a describe, a get
  /// summary). The next update of the job is sent with it as expectedVersion. An older value
  /// than the known one of the same execution is ignored (versions only grow); another
  /// execution replaces it; 0 (not known) is ignored.
  void set_version(const std::string& job_id, std::int64_t execution_number, std::int64_t version);
  /// The known versionNumber of the job's execution (nullopt: not known).
  [[nodiscard]] std::optional<std::int64_t> version(const std::string& job_id) const;

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
    int mismatches = 0;
    /// expectedVersion is fixed at the first send and kept for resends; a VersionMismatch
    /// that asks for a resend clears `versioned`.
    bool versioned = false;
    std::optional<std::int64_t> expected;
  };
  struct KnownVersion {
    std::int64_t execution = 0;
    std::int64_t version = 0;
  };
  using Jobs = std::map<std::string, std::deque<Entry>>;

  std::chrono::milliseconds backoff(int failures) const;
  std::optional<std::int64_t> expected_version(const Update& update) const;
  /// Removes the answered head; forgets the job's version once its terminal update was
  /// accepted.
  void pop_head(Jobs::iterator it, UpdateResult result);
  std::optional<UpdateOutcome> on_version_mismatch(Jobs::iterator it, const Rejected& answer,
                                                   TimePoint now);

  std::string thing_;
  UpdateQueueSettings settings_;
  std::string token_prefix_;
  std::uint64_t next_token_ = 1;
  Jobs jobs_;
  std::map<std::string, KnownVersion> versions_;
};

}  // namespace upparat::jobs
