#pragma once

// The durable state of the job being worked on, and where it is kept. Saved atomically before
// each step that can be interrupted, so that a SIGKILL or a power loss at any point resumes
// correctly.

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "common/error.hpp"
#include "download/downloader.hpp"

namespace upparat::state {

/// What survives a restart of the daemon. Times are saved as elapsed seconds (the monotonic
/// clock does not survive a reboot).
struct JobState {
  std::string job_id;
  std::int64_t execution_number = 0;
  /// The step being done: "verify_job", "download", "install", "reboot" (reboot_start saved,
  /// maybe not yet acknowledged), "restart", "verify_installation", "ready", or "finish" (the
  /// final update below is being sent).
  std::string step;
  /// How often the current step's attempt was started without finishing (daemon died).
  int unfinished_starts = 0;
  /// RETRY_LATER retries of the current step so far, and its elapsed time before the restart.
  int retry_count = 0;
  std::int64_t step_elapsed_seconds = 0;
  /// The job's version and force flag (from its document) for the log and the continuation.
  std::string version;
  bool force = false;
  download::ResumeState resume;
  /// For step "finish": the terminal update to (re)send.
  std::string final_status;
  std::string final_state;
  std::string final_message;
  /// The plugins' key/value store of this job.
  std::map<std::string, std::string> store;

  bool operator==(const JobState& o) const;
};

/// JSON text of a JobState, and back (fails on malformed or incomplete text).
[[nodiscard]] std::string to_json(const JobState& state);
[[nodiscard]] Result<JobState> job_state_from_json(const std::string& text);

/// Where the machine keeps its JobState.
class StateStore {
 public:
  virtual ~StateStore() = default;
  /// The saved state, or nullopt when there is none. A corrupt file is an Error.
  [[nodiscard]] virtual Result<std::optional<JobState>> load() = 0;
  /// Replaces the saved state atomically.
  [[nodiscard]] virtual Status save(const JobState& state) = 0;
  /// Removes the saved state (no job in progress).
  [[nodiscard]] virtual Status clear() = 0;
};

/// `<directory>/state.json`, written to a temp file, fsynced, renamed over the old one, and
/// the directory fsynced. Every access opens the folder with open_owned_directory() (owned by
/// root or the daemon's user from / down) and its files with openat(O_NOFOLLOW): a symbolic
/// link at `state.json` or `state.json.tmp` is refused, never followed.
class FileStateStore final : public StateStore {
 public:
  explicit FileStateStore(std::filesystem::path directory);
  [[nodiscard]] Result<std::optional<JobState>> load() override;
  [[nodiscard]] Status save(const JobState& state) override;
  [[nodiscard]] Status clear() override;
  [[nodiscard]] std::filesystem::path path() const;

 private:
  std::filesystem::path directory_;
};

/// For tests and dry runs: keeps the state in memory, counts saves.
class MemoryStateStore final : public StateStore {
 public:
  [[nodiscard]] Result<std::optional<JobState>> load() override { return state_; }
  [[nodiscard]] Status save(const JobState& state) override {
    state_ = state;
    ++saves_;
    return {};
  }
  [[nodiscard]] Status clear() override {
    state_.reset();
    return {};
  }
  std::optional<JobState> state_;
  int saves_ = 0;
};

}  // namespace upparat::state
