#pragma once

// The machine's outstanding requests to the Jobs API besides updates (those are the update
// queue's): the flow's get or describe, and the cancellation check (a describe of the job being
// worked on, asked when a notify no longer lists it). One request per slot; a new request in a
// slot replaces the old one, whose answer is then stale. An answer belongs to a request only if
// its clientToken and job id are the request's; the tokens are unique for the life of the
// tracker. Pure: the caller publishes the messages and arms the resend timers, whose ids the
// tracker keeps so that a fired timer finds its request.

#include <array>
#include <cstdint>
#include <optional>
#include <string>

namespace upparat::state {

/// Why the flow asked: the request a get or describe answer continues.
enum class RequestPurpose : std::uint8_t {
  Get,     ///< get pending executions (FetchJobs)
  Select,  ///< describe the job picked from the get (DescribeJob); also the cancellation check
  Stream,  ///< describe again for a fresh URL before a streamed install (DescribeForInstall)
};

/// Where a request lives; each slot holds at most one.
enum class RequestSlot : std::uint8_t { Flow, CancelCheck };

struct Request {
  RequestPurpose purpose = RequestPurpose::Get;
  std::string job_id;  ///< empty for a get
  std::string token;   ///< the clientToken sent
  std::string topic;
  std::string payload;
  std::uint64_t timer = 0;  ///< the caller's resend timer (0: none)
};

class RequestTracker {
 public:
  /// Tokens are `<token_prefix>-<n>`: a prefix chosen at random per daemon keeps a restarted
  /// daemon from taking an answer meant for its predecessor.
  RequestTracker(std::string thing_name, std::string token_prefix);

  /// Starts a get in the flow slot; returns the request to publish.
  const Request& get();
  /// Starts a describe of `job_id` in `slot`, pinned to `execution` (0: not known, left out,
  /// so that a retry's new execution is not taken for this one).
  const Request& describe(RequestSlot slot, RequestPurpose purpose, const std::string& job_id,
                          std::int64_t execution);

  /// The request in `slot`, if any.
  [[nodiscard]] const Request* find(RequestSlot slot) const;
  /// True if an answer with `token` about `job_id` (empty for a get) answers the request in
  /// `slot`. An answer without a clientToken answers nothing.
  [[nodiscard]] bool answers(RequestSlot slot, const std::optional<std::string>& token,
                             const std::string& job_id) const;
  /// Removes and returns the request in `slot` (the caller cancels its timer).
  std::optional<Request> take(RequestSlot slot);

  /// Records the resend timer of the request in `slot` (ignored when the slot is empty).
  void set_timer(RequestSlot slot, std::uint64_t timer);
  /// The slot whose request's resend timer is `timer`: the caller sends that request again.
  [[nodiscard]] std::optional<RequestSlot> slot_of_timer(std::uint64_t timer) const;

 private:
  std::string new_token();
  const Request& start(RequestSlot slot, Request request);

  std::string thing_name_;
  std::string token_prefix_;
  std::uint64_t next_token_ = 1;
  std::array<std::optional<Request>, 2> slots_;
};

}  // namespace upparat::state
