#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "common/error.hpp"
#include "common/job_id.hpp"
#include "common/stop_signal.hpp"
#include "download/signing.hpp"
#include "download/types.hpp"

namespace upparat {
class FileSystem;  // common/file_system.hpp: the seam for disk writes (tests inject ENOSPC)
}  // namespace upparat

namespace upparat::download {

using upparat::FileSystem;
class StreamSink;  // download/stream.hpp: where a streamed download's bytes go

/// How downloads are made. The defaults suit a device in the field.
struct Settings {
  /// Where `<jobId>.part` and the finished `<jobId>` live. Not /tmp: it may be RAM, or
  /// private to the daemon's unit and unreadable by the installer's service. Opened with
  /// open_owned_directory() (common/safe_fs.hpp) on every run(), clean() and remove(): every
  /// folder from / down must be owned by root or the daemon's user and not group/other
  /// writable; its files are opened with openat(O_NOFOLLOW) and never through a link.
  std::filesystem::path directory = "/var/lib/upparat/downloads";
  /// CA bundle for HTTPS verification ("" = libcurl's default store). Verification is
  /// always on.
  std::string ca_file;
  /// Proxy URL ("" = libcurl's default: the https_proxy/http_proxy/no_proxy environment).
  std::string proxy;
  /// Also accept plain http URLs (an imported Python INI configuration allows it).
  bool allow_http = false;
  /// Bandwidth limit in bytes per second, 0 = none.
  std::uint64_t max_bytes_per_second = 0;
  std::chrono::seconds connect_timeout{30};
  /// A transfer slower than low_speed_limit bytes/s for low_speed_time is abandoned (retried).
  std::chrono::seconds low_speed_time{60};
  std::uint64_t low_speed_limit = 1;
  /// Flush and fsync the partial file after this many bytes or this much time, whichever
  /// comes first (and always at the end). Each fsync yields a new ResumeState.
  std::uint64_t fsync_every_bytes = 16 * 1024 * 1024;
  std::chrono::milliseconds fsync_every{5000};
  /// This boot's id, saved with each ResumeState; empty: read once from
  /// /proc/sys/kernel/random/boot_id when the Downloader is made (tests set another boot).
  std::string boot_id;
  /// Retry delays: full jitter, uniformly random in [0, min(cap, base * 2^attempt)].
  std::chrono::milliseconds backoff_base{1000};
  std::chrono::milliseconds backoff_cap{64000};
  /// Free space the download must leave on its filesystem (it usually shares it with the
  /// daemon's state, which must still be saved before the restart).
  std::uint64_t reserve_bytes = 16 * 1024 * 1024;
  /// Attempts per run() before giving up with Failed; 0 = until stopped.
  int max_attempts = 0;
  /// Minimum time between two progress callbacks (the last one is always delivered).
  std::chrono::milliseconds progress_interval{200};
  /// Permissions of the download directory and files; `group` (if set) owns both, so an
  /// installer running as another user of that group can read them (use 0750 / 0640 then).
  mode_t directory_mode = 0700;
  mode_t file_mode = 0600;
  std::optional<gid_t> group;
  std::string user_agent = "upparat";
  /// The certificates a signed job's signature (Request::signature) is verified with, in
  /// order; the first that verifies wins. A signed job with none configured fails.
  SigningCertificates signing_certificates;
};

/// Downloads one job's file at a time (not thread-safe; one run() at a time).
class Downloader {
 public:
  explicit Downloader(Settings settings);
  /// For tests: route the disk writes through `fs` (e.g. to inject ENOSPC).
  Downloader(Settings settings, std::shared_ptr<FileSystem> fs);
  ~Downloader();
  Downloader(const Downloader&) = delete;
  Downloader& operator=(const Downloader&) = delete;

  /// Downloads `request.url` to final_path(request.job_id), resuming from `resume` (the
  /// partial file is first cut to resume.synced_bytes). Retries transient failures with
  /// back-off until done, stopped, or Settings::max_attempts. Returns within about a second
  /// of `stop` being raised. Both callbacks are called from this thread:
  /// `on_progress` at most every Settings::progress_interval, `on_resume_state` after each
  /// fsync (and `resume` is updated alike) so the daemon can persist it.
  DownloadResult run(const Request& request, ResumeState& resume, const StopSignal& stop,
                     const std::function<void(const Progress&)>& on_progress = {},
                     const std::function<void(const ResumeState&)>& on_resume_state = {});

  /// A streamed download (a streamed install): like run(), with everything it does (proxy, CA,
  /// bandwidth limit, retries with Range from where the sink stopped), but the bytes go to
  /// `sink` in order and never to a file. `resume` is in memory only: synced_bytes counts the
  /// bytes the sink took, etag the object they came from; pass the same one to the next call
  /// after UrlExpired (with a fresh URL) to go on. What the sink took cannot be taken back, so
  /// an answer that would start the file again (200 to a resumed request, another ETag, a
  /// 416 or a Content-Range that does not fit) ends it as Failed: two files are never spliced.
  /// Complete means the server sent the whole file; the sink verifies size and SHA-256.
  DownloadResult stream(const Request& request, ResumeState& resume, StreamSink& sink,
                        const StopSignal& stop,
                        const std::function<void(const Progress&)>& on_progress = {});

  /// Removes every file in the download directory that does not belong to `keep_job_id`
  /// (empty = remove all). Call at start with the recorded job.
  Status clean(const std::string& keep_job_id);
  /// Removes the job's partial and final file (after install, cancel, or any terminal state).
  Status remove(const std::string& job_id);

  /// `<directory>/<jobId>`: where a complete download is.
  [[nodiscard]] std::filesystem::path final_path(const std::string& job_id) const;
  /// `<directory>/<jobId>.part`
  [[nodiscard]] std::filesystem::path part_path(const std::string& job_id) const;

  [[nodiscard]] const Settings& settings() const;

  struct Impl;  // implementation detail

 private:
  std::unique_ptr<Impl> impl_;
};

/// True when `job_id` may become a file name: [A-Za-z0-9_-]{1,64}.
using upparat::valid_job_id;

}  // namespace upparat::download
