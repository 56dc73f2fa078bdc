#pragma once

// The durable state of the job being worked on, and where it is kept. Saved atomically before
// each step that can be interrupted, so that a SIGKILL or a power loss at any point resumes
// correctly.

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/error.hpp"
#include "download/types.hpp"

namespace upparat {
class FileSystem;  // common/file_system.hpp
}  // namespace upparat

namespace upparat::state {

/// The step being done, as saved. On disk: "verify_job", "download_gate", "download",
/// "install", "reboot" (reboot_start saved, maybe not yet acknowledged), "restart",
/// "verify_installation", "ready", "finish" (the final update is being sent). A saved state
/// with another step is refused as a whole.
enum class SavedStep {
  VerifyJob,
  DownloadGate,
  Download,
  Install,
  Reboot,
  Restart,
  VerifyInstallation,
  Ready,
  Finish,
};

/// The on-disk name of a saved step (for the log, too).
[[nodiscard]] const char* to_string(SavedStep step);

/// What survives a restart of the daemon. Times are saved as elapsed seconds (the monotonic
/// clock does not survive a reboot).
struct JobState {
  std::string job_id;
  std::int64_t execution_number = 0;
  SavedStep step = SavedStep::VerifyJob;
  /// How often the current step's attempt was started without finishing (daemon died).
  int unfinished_starts = 0;
  /// RETRY_LATER retries of the current step so far, and its elapsed time before the restart.
  int retry_count = 0;
  std::int64_t step_elapsed_seconds = 0;
  /// The job's version and force flag (from its document) for the log and the continuation.
  std::string version;
  bool force = false;
  download::ResumeState resume;
  /// For SavedStep::Finish: the terminal update to (re)send.
  std::string final_status;
  std::string final_state;
  std::string final_message;
  /// The plugins' key/value store of this job.
  std::map<std::string, std::string> store;

  bool operator==(const JobState& o) const;
};

/// An execution whose terminal update the cloud refused for good, even with minimal
/// statusDetails. It is never worked on again; its minimal update is retried with back-off.
struct EndedExecution {
  std::string job_id;
  std::int64_t execution_number = 0;
  /// The minimal terminal update to retry.
  std::string status;
  std::string state;
  /// The cloud still had it QUEUED: an IN_PROGRESS update goes first.
  bool queued = false;

  bool operator==(const EndedExecution& o) const;
};

/// JSON text of a JobState, and back (fails on malformed or incomplete text).
[[nodiscard]] std::string to_json(const JobState& state);
[[nodiscard]] Result<JobState> job_state_from_json(const std::string& text);
/// JSON text of the ended executions, and back.
[[nodiscard]] std::string to_json(const std::vector<EndedExecution>& ended);
[[nodiscard]] Result<std::vector<EndedExecution>> ended_from_json(const std::string& text);

/// How soon a saved state must survive a power cut.
enum class Durability {
  /// On disk (file and folder fsynced) before save() returns.
  Synced,
  /// In place (written and renamed) before save() returns, so a crash of the daemon keeps it;
  /// on disk with the next Synced save, or when the kernel writes it back. A power cut before
  /// that may lose it or tear it: load() detects a torn state (length and checksum) and reads
  /// it as no state. Only for a state that repeats what the cloud already knows.
  Deferred,
};

/// Where the machine keeps its JobState.
class StateStore {
 public:
  virtual ~StateStore() = default;
  /// The saved state, or nullopt when there is none (or only a torn one, see
  /// Durability::Deferred). Any other corrupt file is an Error.
  [[nodiscard]] virtual Result<std::optional<JobState>> load() = 0;
  /// Replaces the saved state atomically, durable as asked.
  [[nodiscard]] virtual Status save(const JobState& state, Durability durability) = 0;
  [[nodiscard]] Status save(const JobState& state) { return save(state, Durability::Synced); }
  /// Removes the saved state (no job in progress).
  [[nodiscard]] virtual Status clear() = 0;
  /// The executions ended locally (empty when none were saved). Kept apart from the job
  /// state: they outlive the job being worked on.
  [[nodiscard]] virtual Result<std::vector<EndedExecution>> load_ended() = 0;
  /// Replaces the saved list atomically (an empty list removes it).
  [[nodiscard]] virtual Status save_ended(const std::vector<EndedExecution>& ended) = 0;
};

/// `<directory>/state.json` and `<directory>/ended.json`, each written to a temp file,
/// fsynced, renamed over the old one, and the directory fsynced (a Deferred state.json skips
/// both fsyncs; the next Synced save does them). state.json starts with a check member,
/// `{"check":"fnv1a64:<16 hex>:<length>",...}`, over the JSON text without it: a state torn by
/// a power cut fails it (or is empty) and is discarded; a file without it (an older daemon's)
/// is read as before. Every access opens the folder
/// with open_owned_directory() (owned by root or the daemon's user from / down) and its files
/// with openat(O_NOFOLLOW): a symbolic link at a state file or its temp file is refused, never
/// followed. Every write, fsync, rename and removal goes through `fs` (plain POSIX when null;
/// tests cut the power between any two of them), reads go to the files directly.
class FileStateStore final : public StateStore {
 public:
  explicit FileStateStore(std::filesystem::path directory,
                          std::shared_ptr<FileSystem> fs = nullptr);
  using StateStore::save;
  [[nodiscard]] Result<std::optional<JobState>> load() override;
  [[nodiscard]] Status save(const JobState& state, Durability durability) override;
  [[nodiscard]] Status clear() override;
  [[nodiscard]] Result<std::vector<EndedExecution>> load_ended() override;
  [[nodiscard]] Status save_ended(const std::vector<EndedExecution>& ended) override;
  [[nodiscard]] std::filesystem::path path() const;
  /// fsync calls made so far (files and folder), for tests.
  [[nodiscard]] int fsyncs() const { return fsyncs_; }

 private:
  /// The text of `<directory>/<name>`, or nullopt when it does not exist.
  [[nodiscard]] Result<std::optional<std::string>> read_file(const std::string& name) const;
  [[nodiscard]] Status write_file(const std::string& name, const std::string& data,
                                  Durability durability = Durability::Synced);
  [[nodiscard]] Status remove_file(const std::string& name);
  /// Removes `<directory>/<name>`, the temporary file of a save a daemon that died did not
  /// finish (no fsync: the file only takes space).
  void remove_leftover(const std::string& name);
  std::filesystem::path directory_;
  std::shared_ptr<FileSystem> fs_;
  int fsyncs_ = 0;
};

/// state.json's text of a JobState: to_json() with its check member first.
[[nodiscard]] std::string to_checked_json(const JobState& state);
/// The state in a state.json text: nullopt when the text carries a check member it fails, is
/// empty, or starts with a NUL byte (a state torn by a power cut); an Error when it is
/// otherwise malformed.
[[nodiscard]] Result<std::optional<JobState>> job_state_from_checked_json(const std::string& text);

/// For tests and dry runs: keeps the state in memory, counts saves.
class MemoryStateStore final : public StateStore {
 public:
  using StateStore::save;
  [[nodiscard]] Result<std::optional<JobState>> load() override { return state_; }
  [[nodiscard]] Status save(const JobState& state, Durability durability) override {
    if (fail_saves_with) {
      return fail(*fail_saves_with);
    }
    state_ = state;
    ++saves_;
    durabilities_.push_back({state.step, durability});
    return {};
  }
  [[nodiscard]] Status clear() override {
    state_.reset();
    return {};
  }
  [[nodiscard]] Result<std::vector<EndedExecution>> load_ended() override { return ended_; }
  [[nodiscard]] Status save_ended(const std::vector<EndedExecution>& ended) override {
    if (fail_saves_with) {
      return fail(*fail_saves_with);
    }
    ended_ = ended;
    return {};
  }
  std::optional<JobState> state_;
  std::vector<EndedExecution> ended_;
  int saves_ = 0;
  /// The step and durability of each save, in order.
  std::vector<std::pair<SavedStep, Durability>> durabilities_;
  /// When set, save() fails with this message (a full disk, for example).
  std::optional<std::string> fail_saves_with;
};

}  // namespace upparat::state
