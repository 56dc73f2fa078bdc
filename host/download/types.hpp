#pragma once

// The values a download takes and gives: what the state machine and the durable state need,
// without the downloader itself (libcurl).

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "common/signature.hpp"

namespace upparat::download {

struct Request {
  /// Becomes the file name: must match [A-Za-z0-9_-]{1,64} (AWS IoT job id rules).
  std::string job_id;
  std::string url;
  /// Expected SHA-256 (64 hex digits, any case) and size from the job document, if given.
  std::optional<std::string> sha256;
  std::optional<std::uint64_t> size;
  /// The job's code-signing signature over the file's SHA-256, if it has one: verified with
  /// Settings::signing_certificates before the file gets its final name.
  std::optional<Signature> signature;
};

struct Progress {
  std::uint64_t bytes = 0;             ///< bytes of the file on disk so far
  std::optional<std::uint64_t> total;  ///< file size once known
  [[nodiscard]] std::optional<int> percent() const {
    if (!total || *total == 0) {
      return std::nullopt;
    }
    return static_cast<int>(bytes * 100 / *total);
  }
};

/// What the daemon saves with its job state so that a restart resumes the download: the
/// length of the partial file that is known to be on disk (fsynced) and the ETag it came
/// with. Pass a default-constructed one for a new job.
struct ResumeState {
  std::uint64_t synced_bytes = 0;
  std::string etag;
  /// The kernel's boot id (/proc/sys/kernel/random/boot_id) when the state was saved; empty
  /// when unknown or after an fsync failed. In the same boot, a crash of the daemon (SIGKILL,
  /// OOM kill, abort) kept the page cache, so every byte in the partial file is good; after a
  /// reboot (a power cut may have lost what was not fsynced) only synced_bytes count.
  std::string boot_id = {};  // a default: {synced, etag} is a state of no known boot
  bool operator==(const ResumeState& o) const {
    return synced_bytes == o.synced_bytes && etag == o.etag && boot_id == o.boot_id;
  }
};

/// This boot's id (/proc/sys/kernel/random/boot_id), or "" when it cannot be read.
[[nodiscard]] std::string current_boot_id();

enum class Outcome {
  Complete,    ///< `file` holds the verified download
  UrlExpired,  ///< HTTP 403 (or S3 ExpiredToken): get a fresh URL and call run() again
  Cancelled,   ///< the stop signal was raised; the partial file is kept
  Failed,      ///< give up on the job: `reason` says why (partial file removed if useless)
};

[[nodiscard]] const char* to_string(Outcome outcome);

struct DownloadResult {
  Outcome outcome = Outcome::Failed;
  std::filesystem::path file;           ///< the final file (Complete only)
  std::string reason;                   ///< for humans; URLs in it are redacted
  std::uint64_t bytes_transferred = 0;  ///< body bytes received from the network in this run
  /// Complete with a signed job: the subject of the signing certificate that verified it.
  std::string signer;
};

}  // namespace upparat::download
