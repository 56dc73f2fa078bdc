#pragma once

// The value types of a plugin step: what a step works on (JobContext), what it returns
// (Outcome, StepResult) and the capability bits. Header-only and free of the loader, so that
// the state machine can use them without linking Boost.DLL.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include <upparat/step.hpp>

namespace upparat::plugin {

/// The steps (upparat/step.hpp): one vocabulary for the daemon and the plugins.
using ::upparat::Step;

enum class Outcome { Ok, RetryLater, Failed, NotSupported };

struct StepResult {
  Outcome outcome = Outcome::Failed;
  /// What the plugin wrote (at most 4095 bytes). For Ok as written, without leading and
  /// trailing whitespace (the version step's installed version). For any other outcome the
  /// reason, passed through sanitize_status_detail(): safe to report to the cloud.
  std::string text;
  /// For RetryLater: the plugin's own delay, when it gave one (0..86400 s: a longer one is cut
  /// to 86400 s; a negative one is none, so the configured retry_interval applies).
  std::optional<std::chrono::seconds> retry_after;
};

/// Capability bits (UPPARAT_CAP_*), mirrored so callers need not include the C header.
inline constexpr std::uint64_t kCapInstallFromUrl = 1u << 0;
inline constexpr std::uint64_t kCapInstallNotInterruptible = 1u << 1;
inline constexpr std::uint64_t kCapInstallStream = 1u << 2;

/// How the stream of a streamed install ended (UPPARAT_STREAM_*).
enum class StreamState { Running, Complete, Failed };
struct StreamEnd {
  StreamState state = StreamState::Running;
  std::string reason;  ///< for Failed
};

/// What a step works on.
struct JobContext {
  std::string job_id;
  std::int64_t execution_number = 0;
  std::string version;
  std::string meta;
  std::string url;
  std::optional<std::string> sha256;
  std::optional<std::int64_t> size;
  std::string document_json;
  std::optional<std::filesystem::path> file_path;
  bool force = false;
  std::int64_t seconds_since_first = 0;
  std::int32_t retry_count = 0;
  /// The subject of the signing certificate that verified a signed job's file ("" if unsigned).
  std::string signer;
};

}  // namespace upparat::plugin
