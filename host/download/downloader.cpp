#include "download/downloader.hpp"

#include <curl/curl.h>
#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>
#include <random>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "common/file_system.hpp"
#include "common/safe_fs.hpp"
#include "common/text.hpp"
#include "common/url.hpp"
#include "download/stream.hpp"

namespace upparat::download {
namespace {

using Clock = std::chrono::steady_clock;

// Bytes gathered before one write(2): fewer system calls than one per received chunk, and
// small enough not to matter for memory.
constexpr std::size_t kWriteBuffer = 128 * 1024;
constexpr long kCurlBuffer = 128 * 1024;
// Error bodies (S3's XML) are kept up to this size for the reason text.
constexpr std::size_t kMaxErrorBody = 4096;

// HTTP's optional whitespace before a header line or value; whitespace or the line end after.
std::string_view trim_header(std::string_view s) {
  return trim_back(trim_front(s, " \t"), " \t\r\n");
}

std::optional<std::uint64_t> parse_u64(std::string_view s) {
  if (s.empty() || s.size() > 19) {
    return std::nullopt;
  }
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') {
      return std::nullopt;
    }
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return v;
}

struct ContentRange {
  std::optional<std::uint64_t> first, last;  // absent for "bytes */N"
  std::optional<std::uint64_t> total;        // absent for "/*"
};

// "bytes 100-199/1000", "bytes 100-199/*" or "bytes */1000".
std::optional<ContentRange> parse_content_range(std::string_view v) {
  v = trim_header(v);
  if (v.size() < 6 || !iequals(v.substr(0, 6), "bytes ")) {
    return std::nullopt;
  }
  v = trim_header(v.substr(6));
  const auto slash = v.find('/');
  if (slash == std::string_view::npos) {
    return std::nullopt;
  }
  ContentRange out;
  const auto range = v.substr(0, slash);
  const auto total = v.substr(slash + 1);
  if (total != "*") {
    out.total = parse_u64(total);
    if (!out.total) {
      return std::nullopt;
    }
  }
  if (range != "*") {
    const auto dash = range.find('-');
    if (dash == std::string_view::npos) {
      return std::nullopt;
    }
    out.first = parse_u64(range.substr(0, dash));
    out.last = parse_u64(range.substr(dash + 1));
    if (!out.first || !out.last || *out.last < *out.first) {
      return std::nullopt;
    }
    if (out.total && *out.last >= *out.total) {
      return std::nullopt;
    }
  } else if (!out.total) {
    return std::nullopt;
  }
  return out;
}

// The text between <Tag> and </Tag> in S3's XML error body.
std::string xml_field(const std::string& body, const std::string& tag) {
  const auto open = body.find("<" + tag + ">");
  if (open == std::string::npos) {
    return {};
  }
  const auto start = open + tag.size() + 2;
  const auto close = body.find("</" + tag + ">", start);
  if (close == std::string::npos || close - start > 200) {
    return {};
  }
  std::string out = body.substr(start, close - start);
  for (auto& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      c = ' ';
    }
  }
  return out;
}

std::string error_detail(const std::string& body) {
  const auto code = xml_field(body, "Code");
  const auto message = xml_field(body, "Message");
  if (code.empty()) {
    return {};
  }
  return message.empty() ? code : code + ": " + message;
}

std::string human_bytes(std::uint64_t n) {
  return std::to_string(n) + " bytes";
}

bool valid_sha256(const std::string& hex) {
  return hex.size() == 64 && std::all_of(hex.begin(), hex.end(), [](char c) {
           return std::isxdigit(static_cast<unsigned char>(c)) != 0;
         });
}

// SHA-256 that can be copied (to keep the state of a prefix between runs).
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) {
    if (ctx_ == nullptr || EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1) {
      throw std::bad_alloc();
    }
  }
  Sha256(const Sha256& other) : ctx_(EVP_MD_CTX_new()) {
    if (ctx_ == nullptr || EVP_MD_CTX_copy_ex(ctx_, other.ctx_) != 1) {
      throw std::bad_alloc();
    }
  }
  Sha256& operator=(const Sha256& other) {
    if (this != &other && EVP_MD_CTX_copy_ex(ctx_, other.ctx_) != 1) {
      throw std::bad_alloc();
    }
    return *this;
  }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }

  void reset() { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  void update(const char* data, std::size_t size) { EVP_DigestUpdate(ctx_, data, size); }
  // The digest of what was hashed so far; the state itself is left as it is.
  [[nodiscard]] std::array<std::uint8_t, 32> digest() const {
    Sha256 copy(*this);
    std::array<std::uint8_t, 32> out{};
    unsigned int length = 0;
    EVP_DigestFinal_ex(copy.ctx_, out.data(), &length);
    return out;
  }
  [[nodiscard]] std::string hex() const {
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (const auto byte : digest()) {
      out += digits[byte >> 4];
      out += digits[byte & 15];
    }
    return out;
  }

 private:
  EVP_MD_CTX* ctx_;
};

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// How one HTTP attempt ended.
enum class End {
  Done,           // the whole body is on disk (to be verified)
  RangeComplete,  // 416 on a resumed request: we may have it all (to be verified)
  Restart,        // inconsistent answer: start again from zero, at once
  Expired,        // 403 / ExpiredToken
  Stopped,
  Retry,  // transient: back off and try again
  Fatal,  // give up
};

struct CurlMulti {
  CURLM* multi = curl_multi_init();
  CURL* easy = curl_easy_init();
  curl_slist* headers = nullptr;
  ~CurlMulti() {
    curl_slist_free_all(headers);
    if (easy != nullptr) {
      curl_easy_cleanup(easy);
    }
    if (multi != nullptr) {
      curl_multi_cleanup(multi);
    }
  }
};

}  // namespace

std::string current_boot_id() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(in, id);
  return std::string(trim(id));
}

const char* to_string(Outcome outcome) {
  switch (outcome) {
    case Outcome::Complete:
      return "complete";
    case Outcome::UrlExpired:
      return "url expired";
    case Outcome::Cancelled:
      return "cancelled";
    case Outcome::Failed:
      return "failed";
  }
  return "unknown";
}

struct Downloader::Impl {
  Settings settings;
  std::shared_ptr<FileSystem> fs;
  // The hash of a partial file as a previous run() left it, so a URL refresh does not rehash.
  struct HashCache {
    std::string job_id;
    std::uint64_t length = 0;
    dev_t dev = 0;
    ino_t ino = 0;
    Sha256 hash;
  };
  std::optional<HashCache> cache;
};

namespace {

// One call of Downloader::run(): the partial file, the hash and the HTTP attempts.
class Run {
 public:
  Run(Downloader::Impl& impl, const Downloader& owner, const Request& request, ResumeState& resume,
      const StopSignal& stop, std::function<void(const Progress&)> on_progress,
      std::function<void(const ResumeState&)> on_resume_state, StreamSink* sink = nullptr)
      : impl_(impl),
        settings_(impl.settings),
        fs_(*impl.fs),
        request_(request),
        resume_(resume),
        stop_(stop),
        on_progress_(std::move(on_progress)),
        on_resume_state_(std::move(on_resume_state)),
        part_(owner.part_path(request.job_id)),
        final_(owner.final_path(request.job_id)),
        shown_url_(redact_url(request.url)),
        sink_(sink),
        boot_id_(impl.settings.boot_id) {
    buffer_.reserve(kWriteBuffer);  // once: no reallocation while bytes flow
  }

  ~Run() {
    if (fd_ >= 0) {
      fs_.close(fd_);
    }
  }

  DownloadResult execute();

 private:
  // Writes out received bytes: to the partial file, or to the sink of a stream.
  Status write_out(const char* data, std::size_t size);
  DownloadResult finish(Outcome outcome, std::string reason);
  DownloadResult failed(std::string reason) { return finish(Outcome::Failed, std::move(reason)); }
  Status prepare_directory();
  Status open_part();
  Status hash_prefix();
  std::optional<DownloadResult> use_existing_final();
  Status setup_curl();
  End attempt();
  std::optional<DownloadResult> verify_and_commit(bool& retried_after_mismatch);
  Result<std::string> verify_signature_of(const Sha256& hash) const;
  Status restart_from_zero();
  Status flush_buffer();
  Status sync();
  // fsyncs the download folder, once per run(), before a ResumeState counts bytes of the
  // partial file: an fsync of a new file does not make its name durable, and a power cut
  // would take the file while the saved state claims its bytes. Not at open_part() for a new
  // file: no fsync lies between the notify and the first request.
  Status sync_part_name();
  void maybe_sync_and_report();
  void report_progress(bool force);
  void report_resume_state();
  Status check_space(std::uint64_t total);
  std::chrono::milliseconds backoff(int attempt);
  void delete_part();

  // libcurl callbacks (never let an exception out).
  static std::size_t header_cb(char* data, std::size_t size, std::size_t n, void* self);
  static std::size_t write_cb(char* data, std::size_t size, std::size_t n, void* self);
  static int xferinfo_cb(void* self, curl_off_t, curl_off_t, curl_off_t, curl_off_t);
  std::size_t on_header(std::string_view line);
  std::size_t on_body(const char* data, std::size_t size);
  bool decide_response();

  [[nodiscard]] std::uint64_t have() const { return file_bytes_ + buffer_.size(); }

  Downloader::Impl& impl_;
  const Settings& settings_;
  FileSystem& fs_;
  const Request& request_;
  ResumeState& resume_;
  const StopSignal& stop_;
  const std::function<void(const Progress&)> on_progress_;
  const std::function<void(const ResumeState&)> on_resume_state_;
  const std::filesystem::path part_;
  const std::filesystem::path final_;
  const std::string shown_url_;
  // A streamed download: bytes go here, never to a file. What went out cannot be taken back,
  // so anything that would start the file again from zero fails the stream instead.
  StreamSink* const sink_;
  std::string boot_id_;  // saved with the state; cleared when an fsync fails

  UniqueFd dir_;  // the download folder (prepare_directory)
  int fd_ = -1;
  std::uint64_t file_bytes_ = 0;   // written to fd_
  std::uint64_t synced_ = 0;       // of which fsynced
  bool part_name_synced_ = false;  // sync_part_name() done
  Clock::time_point last_sync_ = Clock::now();
  std::vector<char> buffer_;
  std::optional<Sha256> hash_;  // only when the job gives a sha256 or a signature
  std::string signer_;          // the certificate that verified the signature
  std::string etag_;
  std::optional<std::uint64_t> total_;
  std::uint64_t transferred_ = 0;
  Clock::time_point last_progress_{};
  std::optional<std::uint64_t> last_progress_bytes_;

  char curl_error_[CURL_ERROR_SIZE] = {};  // declared first: outlives the handle
  CurlMulti curl_;

  // The current attempt.
  int status_ = 0;
  std::string resp_etag_;
  std::optional<std::string> resp_content_range_;
  std::optional<std::uint64_t> resp_content_length_;
  bool resp_location_ = false;
  bool accepting_ = false;  // body bytes go to the file
  bool decided_ = false;
  std::optional<End> end_;  // set when the headers already decided
  std::string end_reason_;
  std::string error_body_;
  std::string fatal_write_;  // a disk error inside a callback
  bool progressed_ = false;
  std::optional<std::uint64_t> range_total_;  // from a 416's Content-Range
};

void Run::report_resume_state() {
  resume_.synced_bytes = synced_;
  resume_.etag = etag_;
  resume_.boot_id = boot_id_;
  if (!on_resume_state_) {
    return;
  }
  try {
    on_resume_state_(resume_);
  } catch (const std::exception& e) {
    spdlog::error("download {}: saving the resume state failed: {}", request_.job_id, e.what());
  }
}

void Run::report_progress(bool force) {
  if (!on_progress_) {
    return;
  }
  const auto now = Clock::now();
  const auto bytes = have();
  if (last_progress_bytes_ && *last_progress_bytes_ == bytes && !force) {
    return;
  }
  if (!force && last_progress_bytes_ && now - last_progress_ < settings_.progress_interval) {
    return;
  }
  if (force && last_progress_bytes_ && *last_progress_bytes_ == bytes) {
    return;
  }
  last_progress_ = now;
  last_progress_bytes_ = bytes;
  try {
    on_progress_(Progress{bytes, total_ ? total_ : request_.size});
  } catch (const std::exception& e) {
    spdlog::error("download {}: progress callback failed: {}", request_.job_id, e.what());
  }
}

Status Run::flush_buffer() {
  if (buffer_.empty()) {
    return {};
  }
  if (auto st = write_out(buffer_.data(), buffer_.size()); !st) {
    return st;
  }
  buffer_.clear();
  return {};
}

Status Run::write_out(const char* data, std::size_t size) {
  if (sink_ != nullptr) {
    if (auto st = sink_->write(data, size); !st) {
      return st;
    }
  } else {
    if (auto st = fs_.write_all(fd_, data, size); !st) {
      return fail(st.error().context("writing " + part_.string()));
    }
    if (hash_) {
      hash_->update(data, size);
    }
  }
  file_bytes_ += size;
  return {};
}

Status Run::sync() {
  if (auto st = flush_buffer(); !st) {
    return st;
  }
  if (sink_ == nullptr) {
    if (auto st = fs_.sync(fd_); !st) {
      // The kernel may have dropped the pages it could not write: from now on only what the
      // state says was synced counts, even in this boot.
      boot_id_.clear();
      report_resume_state();
      return fail(st.error().context(part_.string()));
    }
    if (auto st = sync_part_name(); !st) {
      return st;
    }
  }
  last_sync_ = Clock::now();
  if (synced_ != file_bytes_ || resume_.etag != etag_ || resume_.synced_bytes != file_bytes_) {
    synced_ = file_bytes_;
    report_resume_state();
  }
  return {};
}

Status Run::sync_part_name() {
  if (part_name_synced_) {
    return {};
  }
  if (auto st = fs_.sync_directory(dir_.get(), settings_.directory); !st) {
    return fail(st.error().context("the name of " + part_.string()));
  }
  part_name_synced_ = true;
  return {};
}

void Run::maybe_sync_and_report() {
  if (fatal_write_.empty() && (fd_ >= 0 || sink_ != nullptr)) {
    const auto unsynced = have() - synced_;
    if (unsynced > 0 && (unsynced >= settings_.fsync_every_bytes ||
                         Clock::now() - last_sync_ >= settings_.fsync_every)) {
      if (auto st = sync(); !st) {
        fatal_write_ = st.error().message();
      }
    }
  }
  report_progress(false);
}

Status Run::restart_from_zero() {
  if (sink_ != nullptr) {
    if (file_bytes_ > 0) {
      return fail(
          "cannot continue the stream: the server would send the file again from its "
          "start, and " +
          human_bytes(file_bytes_) +
          " of it already went to the install step (two files are never spliced)");
    }
    buffer_.clear();
    etag_.clear();
    return {};
  }
  buffer_.clear();
  if (auto st = fs_.truncate(fd_, 0); !st) {
    return fail(st.error().context(part_.string()));
  }
  if (::lseek(fd_, 0, SEEK_SET) < 0) {
    return fail("lseek: " + std::string(std::strerror(errno)));
  }
  file_bytes_ = 0;
  if (hash_) {
    hash_->reset();
  }
  etag_.clear();
  // The file is empty now: the saved state must not claim more (fsync the truncation first).
  if (auto st = fs_.sync(fd_); !st) {
    return fail(st.error().context(part_.string()));
  }
  synced_ = 0;
  report_resume_state();
  return {};
}

void Run::delete_part() {
  if (fd_ >= 0) {
    fs_.close(fd_);
    fd_ = -1;
  }
  if (dir_.valid()) {
    if (auto st = remove_in(dir_.get(), part_); !st) {
      spdlog::warn("download {}: {}", request_.job_id, st.error().message());
    }
  }
  file_bytes_ = synced_ = 0;
  buffer_.clear();
  etag_.clear();
  report_resume_state();
}

Status Run::check_space(std::uint64_t total) {
  if (sink_ != nullptr || total <= have()) {
    return {};
  }
  const auto needed = total - have();
  auto available = fs_.available_bytes(settings_.directory);
  if (!available) {
    spdlog::warn("download {}: cannot check free space: {}", request_.job_id,
                 available.error().message());
    return {};
  }
  if (*available < needed || *available - needed < settings_.reserve_bytes) {
    return fail("not enough free space in " + settings_.directory.string() + ": " +
                human_bytes(needed) + " needed and " + human_bytes(settings_.reserve_bytes) +
                " kept free (reserve_bytes), " + human_bytes(*available) + " available");
  }
  return {};
}

std::chrono::milliseconds Run::backoff(int attempt) {
  // Full jitter (AWS architecture blog): uniform in [0, min(cap, base * 2^attempt)].
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  const auto base = std::max<long long>(settings_.backoff_base.count(), 0);
  const auto cap = std::max<long long>(settings_.backoff_cap.count(), 0);
  long long ceiling = base;
  for (int i = 0; i < attempt && ceiling < cap; ++i) {
    ceiling *= 2;
  }
  ceiling = std::min(ceiling, cap);
  std::uniform_int_distribution<long long> pick(0, std::max<long long>(ceiling, 0));
  return std::chrono::milliseconds(pick(rng));
}

DownloadResult Run::finish(Outcome outcome, std::string reason) {
  DownloadResult result;
  result.outcome = outcome;
  result.reason = std::move(reason);
  result.bytes_transferred = transferred_;
  if (outcome == Outcome::Complete) {
    result.file = final_;
    result.signer = signer_;
  }
  // Keep the hash of what is on disk for the next run() (URL refresh without rehashing).
  impl_.cache.reset();
  if (outcome != Outcome::Complete && hash_ && fd_ >= 0 && buffer_.empty() &&
      synced_ == file_bytes_) {
    struct stat st {};
    if (::fstat(fd_, &st) == 0) {
      impl_.cache =
          Downloader::Impl::HashCache{request_.job_id, file_bytes_, st.st_dev, st.st_ino, *hash_};
    }
  }
  const auto level = outcome == Outcome::Complete ? spdlog::level::info : spdlog::level::warn;
  spdlog::log(level, "download {}: {}{}{} ({} bytes received)", request_.job_id, to_string(outcome),
              result.reason.empty() ? "" : ": ", result.reason, transferred_);
  return result;
}

Status Run::prepare_directory() {
  // Checked from / down; a missing folder is created with our mode (a configured existing one
  // is left as it is).
  OwnedDirectoryOptions options;
  options.uid = ::geteuid();
  options.missing = Missing::Create;
  options.mode = settings_.directory_mode;
  options.group = settings_.group;
  auto dir = open_owned_directory(settings_.directory, options);
  if (!dir) {
    return fail(dir.error().context("download folder " + settings_.directory.string()));
  }
  dir_ = std::move(*dir);
  return {};
}

Status Run::open_part() {
  auto fd = fs_.open(dir_.get(), part_, O_RDWR | O_CREAT, settings_.file_mode);
  if (!fd) {
    return fail(fd.error());
  }
  fd_ = *fd;
  // open() applies the umask and keeps the mode of an existing file: set it explicitly.
  if (::fchmod(fd_, settings_.file_mode) != 0) {
    return fail("chmod " + part_.string() + ": " + std::strerror(errno));
  }
  if (settings_.group && ::fchown(fd_, static_cast<uid_t>(-1), *settings_.group) != 0) {
    return fail("chown " + part_.string() + ": " + std::strerror(errno));
  }
  auto size = fs_.size(fd_);
  if (!size) {
    return fail(size.error());
  }
  std::uint64_t keep = std::min(*size, resume_.synced_bytes);
  // In the boot that wrote them, every byte in the file is good: a crash of the daemon keeps
  // the page cache. Only a reboot (a power cut) may have lost what was not fsynced.
  const bool same_boot = !boot_id_.empty() && resume_.boot_id == boot_id_ && !resume_.etag.empty();
  if (same_boot) {
    keep = *size;
  }
  // A file longer than the job says cannot be a prefix of it.
  if (request_.size && keep > *request_.size) {
    keep = 0;
  }
  if (keep == 0) {
    etag_.clear();
  } else {
    etag_ = resume_.etag;
  }
  if (*size != keep) {
    // Bytes after the last fsync may be garbage after a power cut.
    spdlog::info("download {}: keeping {} of {} bytes of {}", request_.job_id, keep, *size,
                 part_.string());
    if (auto st = fs_.truncate(fd_, keep); !st) {
      return fail(st.error().context(part_.string()));
    }
    if (auto st = fs_.sync(fd_); !st) {
      return fail(st.error().context(part_.string()));
    }
  } else if (keep > resume_.synced_bytes) {
    // Kept from the page cache: on disk before the state says so.
    spdlog::info(
        "download {}: keeping all {} bytes of {} (the daemon stopped in this boot; {} "
        "were synced)",
        request_.job_id, keep, part_.string(), resume_.synced_bytes);
    if (auto st = fs_.sync(fd_); !st) {
      return fail(st.error().context(part_.string()));
    }
  }
  if (::lseek(fd_, static_cast<off_t>(keep), SEEK_SET) < 0) {
    return fail("lseek: " + std::string(std::strerror(errno)));
  }
  file_bytes_ = synced_ = keep;
  if (keep > 0) {
    if (auto st = sync_part_name(); !st) {
      return st;
    }
  }
  if (resume_.synced_bytes != keep || resume_.etag != etag_) {
    report_resume_state();
  }
  return {};
}

Status Run::hash_prefix() {
  if (!request_.sha256 && !request_.signature) {
    return {};
  }
  hash_.emplace();
  if (file_bytes_ == 0) {
    return {};
  }
  struct stat st {};
  if (impl_.cache && ::fstat(fd_, &st) == 0 && impl_.cache->job_id == request_.job_id &&
      impl_.cache->length == file_bytes_ && impl_.cache->dev == st.st_dev &&
      impl_.cache->ino == st.st_ino) {
    *hash_ = impl_.cache->hash;
    return {};
  }
  std::vector<char> chunk(1024 * 1024);
  std::uint64_t offset = 0;
  while (offset < file_bytes_) {
    if (stop_.requested()) {
      return {};
    }
    const auto want =
        static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), file_bytes_ - offset));
    const auto got = ::pread(fd_, chunk.data(), want, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) {
      continue;
    }
    if (got <= 0) {
      return fail("reading " + part_.string() + ": " +
                  (got < 0 ? std::string(std::strerror(errno)) : "unexpected end of file"));
    }
    hash_->update(chunk.data(), static_cast<std::size_t>(got));
    offset += static_cast<std::uint64_t>(got);
  }
  return {};
}

std::optional<DownloadResult> Run::use_existing_final() {
  struct stat st {};
  const auto name = final_.filename();
  if (::fstatat(dir_.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) {
    return std::nullopt;  // nothing there; anything but a file is replaced by the rename
  }
  auto file = open_file_in(dir_.get(), final_, O_RDONLY);
  std::uint64_t size = 0;
  bool ok = file && ::fstat(file->get(), &st) == 0;
  if (ok) {
    size = static_cast<std::uint64_t>(st.st_size);
    ok = !request_.size || size == *request_.size;
  }
  if (ok && (request_.sha256 || request_.signature)) {
    Sha256 hash;
    std::vector<char> chunk(1024 * 1024);
    for (;;) {
      if (stop_.requested()) {
        return finish(Outcome::Cancelled, "stopped");
      }
      const auto got = ::read(file->get(), chunk.data(), chunk.size());
      if (got < 0 && errno == EINTR) {
        continue;
      }
      if (got < 0) {
        ok = false;
      }
      if (got <= 0) {
        break;
      }
      hash.update(chunk.data(), static_cast<std::size_t>(got));
    }
    ok = ok && (!request_.sha256 || hash.hex() == lower(*request_.sha256));
    if (ok && request_.signature) {
      auto verified = verify_signature_of(hash);
      ok = verified.has_value();
      signer_ = ok ? *verified : std::string();
    }
  }
  if (!ok) {
    spdlog::warn(
        "download {}: removing {}: {}", request_.job_id, final_.string(),
        file ? "it does not match the job document or its signature" : file.error().message());
    if (auto st = remove_in(dir_.get(), final_); !st) {
      spdlog::warn("download {}: {}", request_.job_id, st.error().message());
    }
    return std::nullopt;
  }
  spdlog::info("download {}: {} is already complete", request_.job_id, final_.string());
  last_progress_bytes_.reset();
  total_ = size;
  file_bytes_ = size;
  report_progress(true);
  file_bytes_ = 0;
  return finish(Outcome::Complete, "");
}

Status Run::setup_curl() {
  if (curl_.multi == nullptr || curl_.easy == nullptr) {
    return fail("libcurl initialisation failed");
  }
  CURL* e = curl_.easy;
  const char* protocols = settings_.allow_http ? "https,http" : "https";
  curl_easy_setopt(e, CURLOPT_URL, request_.url.c_str());
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, protocols);
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, protocols);
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(e, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
  if (!settings_.ca_file.empty()) {
    curl_easy_setopt(e, CURLOPT_CAINFO, settings_.ca_file.c_str());
  }
  if (!settings_.proxy.empty()) {
    curl_easy_setopt(e, CURLOPT_PROXY, settings_.proxy.c_str());
  }
  curl_easy_setopt(e, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_USERAGENT, settings_.user_agent.c_str());
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(std::chrono::milliseconds(settings_.connect_timeout).count()));
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT,
                   static_cast<long>(std::max<std::uint64_t>(settings_.low_speed_limit, 1)));
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME,
                   static_cast<long>(std::max<long long>(settings_.low_speed_time.count(), 1)));
  if (settings_.max_bytes_per_second > 0) {
    curl_easy_setopt(e, CURLOPT_MAX_RECV_SPEED_LARGE,
                     static_cast<curl_off_t>(settings_.max_bytes_per_second));
  }
  curl_easy_setopt(e, CURLOPT_BUFFERSIZE, kCurlBuffer);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, curl_error_);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &Run::header_cb);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, this);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &Run::write_cb);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, this);
  curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, &Run::xferinfo_cb);
  curl_easy_setopt(e, CURLOPT_XFERINFODATA, this);
  curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
  return {};
}

std::size_t Run::header_cb(char* data, std::size_t size, std::size_t n, void* self) {
  try {
    return static_cast<Run*>(self)->on_header(std::string_view(data, size * n));
  } catch (...) {
    return 0;
  }
}

std::size_t Run::write_cb(char* data, std::size_t size, std::size_t n, void* self) {
  try {
    return static_cast<Run*>(self)->on_body(data, size * n);
  } catch (...) {
    return 0;
  }
}

int Run::xferinfo_cb(void* self, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<Run*>(self)->stop_.requested() ? 1 : 0;
}

std::size_t Run::on_header(std::string_view raw) {
  const auto line = trim_header(raw);
  if (line.size() >= 5 && line.substr(0, 5) == "HTTP/") {
    // A new response (after a redirect or a 100 Continue): forget the previous headers.
    const auto space = line.find(' ');
    status_ = 0;
    if (space != std::string_view::npos) {
      status_ = static_cast<int>(parse_u64(line.substr(space + 1, 3)).value_or(0));
    }
    resp_etag_.clear();
    resp_content_range_.reset();
    resp_content_length_.reset();
    resp_location_ = false;
    return raw.size();
  }
  if (line.empty()) {
    if (status_ >= 100 && status_ < 200) {
      return raw.size();
    }
    if (status_ >= 300 && status_ < 400 && resp_location_) {
      return raw.size();  // curl follows
    }
    return decide_response() ? raw.size() : 0;
  }
  const auto colon = line.find(':');
  if (colon == std::string_view::npos) {
    return raw.size();
  }
  const auto name = trim_header(line.substr(0, colon));
  const auto value = trim_header(line.substr(colon + 1));
  if (iequals(name, "etag")) {
    resp_etag_ = std::string(value);
  } else if (iequals(name, "content-range")) {
    resp_content_range_ = std::string(value);
  } else if (iequals(name, "content-length")) {
    resp_content_length_ = parse_u64(value);
  } else if (iequals(name, "location")) {
    resp_location_ = true;
  }
  return raw.size();
}

// Called at the end of the final response's headers. Returns false to abort the transfer.
bool Run::decide_response() {
  decided_ = true;
  const auto status_text = "HTTP " + std::to_string(status_) + " from " + shown_url_;
  auto stop_with = [&](End end, std::string reason) {
    end_ = end;
    end_reason_ = std::move(reason);
  };
  if (status_ == 200) {
    if (have() > 0) {
      spdlog::info("download {}: the server sent the whole file (200): starting from zero",
                   request_.job_id);
      if (auto st = restart_from_zero(); !st) {
        fatal_write_ = st.error().message();
        return false;
      }
    }
    total_ = resp_content_length_;
  } else if (status_ == 206) {
    const auto range =
        resp_content_range_ ? parse_content_range(*resp_content_range_) : std::nullopt;
    if (!range || !range->first || *range->first != have()) {
      stop_with(End::Restart, "206 with an unexpected Content-Range \"" +
                                  resp_content_range_.value_or("") + "\" for a request from " +
                                  std::to_string(have()));
      return false;
    }
    if (!etag_.empty() && !resp_etag_.empty() && resp_etag_ != etag_) {
      stop_with(End::Restart,
                "the file changed on the server (ETag " + resp_etag_ + ", had " + etag_ + ")");
      return false;
    }
    total_ = range->total;
  } else if (status_ == 416 && have() > 0) {
    const auto range =
        resp_content_range_ ? parse_content_range(*resp_content_range_) : std::nullopt;
    if (range) {
      range_total_ = range->total;
    }
    stop_with(End::RangeComplete, status_text);
    return true;  // read the (small) body, then decide
  } else if (status_ == 403) {
    stop_with(End::Expired, status_text);
    return true;
  } else if (status_ == 408 || status_ == 429 || status_ >= 500 || status_ == 400) {
    // 400 may be S3's ExpiredToken: the body decides.
    stop_with(status_ == 400 ? End::Fatal : End::Retry, status_text);
    return true;
  } else {
    stop_with(End::Fatal, status_text);
    return true;
  }
  // 200 or 206: the body is the file (from have()).
  if (!resp_etag_.empty()) {
    if (etag_ != resp_etag_) {
      etag_ = resp_etag_;
      // Saved at once: after a crash of the daemon in this boot, the bytes written from here
      // on are known to be of this object (see open_part). A stream has no file to resume.
      if (sink_ == nullptr) {
        report_resume_state();
      }
    }
  }
  if (total_ && request_.size && *total_ != *request_.size) {
    stop_with(End::Fatal, "the server's file has " + human_bytes(*total_) +
                              ", the job document says " + human_bytes(*request_.size));
    return false;
  }
  const auto expected_total = total_ ? total_ : request_.size;
  if (expected_total) {
    if (auto st = check_space(*expected_total); !st) {
      stop_with(End::Fatal, st.error().message());
      return false;
    }
  }
  accepting_ = true;
  return true;
}

std::size_t Run::on_body(const char* data, std::size_t size) {
  if (!decided_) {
    // A body without a final status line (should not happen): treat as an answer.
    if (!decide_response()) {
      return 0;
    }
  }
  if (!accepting_) {
    const auto room = kMaxErrorBody - std::min(kMaxErrorBody, error_body_.size());
    error_body_.append(data, std::min(room, size));
    return size;
  }
  if (total_ && have() + size > *total_) {
    end_ = End::Restart;
    end_reason_ = "the server sent more than the " + human_bytes(*total_) + " it announced";
    return 0;
  }
  transferred_ += size;
  progressed_ = true;
  if (buffer_.size() + size > kWriteBuffer && !buffer_.empty()) {
    if (auto st = flush_buffer(); !st) {
      fatal_write_ = st.error().message();
      return 0;
    }
  }
  if (size >= kWriteBuffer) {
    // A chunk as big as the buffer: write it as it is (the buffer is empty here).
    if (auto st = write_out(data, size); !st) {
      fatal_write_ = st.error().message();
      return 0;
    }
  } else {
    buffer_.insert(buffer_.end(), data, data + size);
  }
  // The byte interval is kept here, however much one curl_multi_perform() call delivers.
  if (file_bytes_ - synced_ >= settings_.fsync_every_bytes) {
    if (auto st = sync(); !st) {
      fatal_write_ = st.error().message();
      return 0;
    }
  }
  return size;
}

End Run::attempt() {
  status_ = 0;
  accepting_ = decided_ = false;
  end_.reset();
  end_reason_.clear();
  error_body_.clear();
  progressed_ = false;
  range_total_.reset();
  curl_error_[0] = '\0';

  CURL* e = curl_.easy;
  curl_slist_free_all(curl_.headers);
  curl_.headers = nullptr;
  const std::string range = have() > 0 ? std::to_string(have()) + "-" : std::string();
  curl_easy_setopt(e, CURLOPT_RANGE, range.empty() ? nullptr : range.c_str());
  // If-Range with a strong ETag only (RFC 9110 13.1.5): the server answers 200 with the whole
  // file when the object changed, instead of the rest of a different one.
  if (!range.empty() && !etag_.empty() && etag_.rfind("W/", 0) != 0) {
    curl_.headers = curl_slist_append(curl_.headers, ("If-Range: " + etag_).c_str());
  }
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, curl_.headers);

  if (curl_multi_add_handle(curl_.multi, e) != CURLM_OK) {
    end_reason_ = "libcurl refused the transfer";
    return End::Fatal;
  }
  CURLcode rc = CURLE_OK;
  bool stopped = false;
  for (;;) {
    int running = 0;
    const auto mc = curl_multi_perform(curl_.multi, &running);
    maybe_sync_and_report();
    if (mc != CURLM_OK) {
      rc = CURLE_FAILED_INIT;
      std::snprintf(curl_error_, sizeof curl_error_, "%s", curl_multi_strerror(mc));
      break;
    }
    if (running == 0) {
      int left = 0;
      while (CURLMsg* msg = curl_multi_info_read(curl_.multi, &left)) {
        if (msg->msg == CURLMSG_DONE) {
          rc = msg->data.result;
        }
      }
      break;
    }
    if (stop_.requested()) {
      stopped = true;
      break;
    }
    curl_waitfd extra{stop_.fd(), CURL_WAIT_POLLIN, 0};
    curl_multi_poll(curl_.multi, &extra, 1, 1000, nullptr);
    if (stop_.requested()) {
      stopped = true;
      break;
    }
  }
  curl_multi_remove_handle(curl_.multi, e);

  if (!fatal_write_.empty()) {
    end_reason_ = fatal_write_;
    return End::Fatal;
  }
  if (stopped || rc == CURLE_ABORTED_BY_CALLBACK || stop_.requested()) {
    return End::Stopped;
  }
  if (end_) {
    if (*end_ == End::Expired || *end_ == End::Fatal || *end_ == End::Retry) {
      const auto detail = error_detail(error_body_);
      if (status_ == 400 && detail.rfind("ExpiredToken", 0) == 0) {
        end_ = End::Expired;
      }
      if (!detail.empty()) {
        end_reason_ += " (" + detail + ")";
      }
    }
    return *end_;
  }
  const std::string curl_text = std::string(curl_easy_strerror(rc)) +
                                (curl_error_[0] != '\0' ? std::string(": ") + curl_error_ : "");
  if (rc != CURLE_OK) {
    end_reason_ = curl_text + " (" + shown_url_ + ")";
    switch (rc) {
      case CURLE_UNSUPPORTED_PROTOCOL:
      case CURLE_TOO_MANY_REDIRECTS:
      case CURLE_URL_MALFORMAT:
      case CURLE_NOT_BUILT_IN:
        return End::Fatal;
      default:
        return End::Retry;
    }
  }
  if (!accepting_) {
    end_reason_ = "no answer from " + shown_url_;
    return End::Retry;
  }
  if (total_ && have() != *total_) {
    // Never take a short body as complete.
    end_reason_ = "the body ended after " + human_bytes(have()) + " of " + human_bytes(*total_);
    return End::Retry;
  }
  return End::Done;
}

// Checks the job's signature over the SHA-256 of what was hashed; logs the certificate.
Result<std::string> Run::verify_signature_of(const Sha256& hash) const {
  const auto digest = hash.digest();
  auto verified = verify_signature(settings_.signing_certificates, *request_.signature,
                                   digest.data(), digest.size());
  if (verified) {
    spdlog::info("download {}: the {} signature verified with the signing certificate {}",
                 request_.job_id, to_string(request_.signature->algorithm), *verified);
  }
  return verified;
}

// Verifies the complete file; renames it into place. Returns nullopt to download again.
std::optional<DownloadResult> Run::verify_and_commit(bool& retried_after_mismatch) {
  if (auto st = sync(); !st) {
    delete_part();
    return failed(st.error().message());
  }
  report_progress(true);
  if (sink_ != nullptr) {
    // The sink verifies size and SHA-256 itself: the bytes are gone from here.
    return finish(Outcome::Complete, "");
  }
  std::string mismatch;
  if (request_.size && file_bytes_ != *request_.size) {
    mismatch =
        "size: expected " + human_bytes(*request_.size) + ", got " + human_bytes(file_bytes_);
  } else if (hash_) {
    if (request_.sha256) {
      const auto got = hash_->hex();
      const auto want = lower(*request_.sha256);
      if (got != want) {
        mismatch = "sha256: expected " + want + ", got " + got;
      }
    }
    if (request_.signature) {
      auto verified = verify_signature_of(*hash_);
      if (!verified && mismatch.empty() && request_.sha256) {
        // The file is the one the job document names: downloading it again cannot help.
        delete_part();
        return failed("signature: " + verified.error().message());
      }
      if (!verified) {
        mismatch += (mismatch.empty() ? "" : "; ") + std::string("signature: ") +
                    verified.error().message();
      } else {
        signer_ = *verified;
      }
    }
  }
  if (!mismatch.empty()) {
    if (!retried_after_mismatch) {
      spdlog::warn("download {}: {} does not match the job document ({}): downloading it again",
                   request_.job_id, part_.string(), mismatch);
      retried_after_mismatch = true;
      if (auto st = restart_from_zero(); !st) {
        delete_part();
        return failed(st.error().message());
      }
      return std::nullopt;
    }
    delete_part();
    return failed("the download does not match the job document twice: " + mismatch);
  }
  if (auto st = fs_.rename(dir_.get(), part_, final_); !st) {
    delete_part();
    return failed(st.error().message());
  }
  if (auto st = fs_.sync_directory(dir_.get(), settings_.directory); !st) {
    spdlog::warn("download {}: {}", request_.job_id, st.error().message());
  }
  return finish(Outcome::Complete, "");
}

DownloadResult Run::execute() {
  if (!valid_job_id(request_.job_id)) {
    return failed("invalid job id for a file name (want [A-Za-z0-9_-]{1,64})");
  }
  const auto url = parse_url(request_.url);
  if (!url) {
    return failed("bad URL " + redact_url(request_.url) + ": " + url.error().message());
  }
  if (url->scheme != "https" && !(url->scheme == "http" && settings_.allow_http)) {
    return failed("URL scheme \"" + url->scheme + "\" refused (" +
                  (settings_.allow_http ? "https or http" : "https only") + "): " + shown_url_);
  }
  if (url->scheme == "http") {
    spdlog::warn("download {}: plain http (allowed by the configuration): {}", request_.job_id,
                 shown_url_);
  }
  if (request_.sha256 && !valid_sha256(*request_.sha256)) {
    return failed("the job's sha256 is not 64 hexadecimal digits");
  }
  if (request_.signature && settings_.signing_certificates.empty()) {
    // Nothing could verify it: fail before downloading.
    return failed(std::string("the job is signed (") + to_string(request_.signature->algorithm) +
                  ") but no [download] signing_certificates are configured to verify it");
  }
  if (sink_ != nullptr) {
    // The sink took resume.synced_bytes bytes already: ask for the rest, of the same object.
    file_bytes_ = synced_ = resume_.synced_bytes;
    etag_ = file_bytes_ > 0 ? resume_.etag : std::string();
  } else {
    if (auto st = prepare_directory(); !st) {
      return failed(st.error().message());
    }
    if (auto done = use_existing_final()) {
      return *done;
    }
    if (auto st = open_part(); !st) {
      return failed(st.error().message());
    }
    if (auto st = hash_prefix(); !st) {
      delete_part();
      return failed(st.error().message());
    }
  }
  if (stop_.requested()) {
    hash_.reset();  // possibly a partial hash of the prefix: not to be cached
    return finish(Outcome::Cancelled, "stopped");
  }
  if (request_.size) {
    if (auto st = check_space(*request_.size); !st) {
      return failed(st.error().message());
    }
  }
  if (auto st = setup_curl(); !st) {
    return failed(st.error().message());
  }
  spdlog::info("download {}: {} to {}{}", request_.job_id, shown_url_,
               sink_ != nullptr ? std::string("the install step") : final_.string(),
               file_bytes_ > 0 ? " from byte " + std::to_string(file_bytes_) : "");
  report_progress(true);

  bool retried_after_mismatch = false;
  int failures = 0;
  for (;;) {
    // Everything on disk: verify without asking the server.
    const bool have_all = request_.size && have() == *request_.size && have() > 0;
    const End end = have_all ? End::Done : attempt();
    switch (end) {
      case End::Done:
        if (auto result = verify_and_commit(retried_after_mismatch)) {
          return *result;
        }
        failures = 0;
        continue;
      case End::RangeComplete:
        if (range_total_ && *range_total_ != have()) {
          spdlog::warn("download {}: 416 for {} bytes of {}: starting from zero", request_.job_id,
                       have(), *range_total_);
          if (auto st = restart_from_zero(); !st) {
            delete_part();
            return failed(st.error().message());
          }
          continue;
        }
        total_ = have();
        if (auto result = verify_and_commit(retried_after_mismatch)) {
          return *result;
        }
        continue;
      case End::Restart:
        spdlog::warn("download {}: {}: starting from zero", request_.job_id, end_reason_);
        if (auto st = restart_from_zero(); !st) {
          delete_part();
          return failed(st.error().message());
        }
        if (++failures > 3) {
          // An inconsistent server again and again: back off like any failure.
          if (stop_.wait_for(backoff(failures))) {
            return finish(Outcome::Cancelled, "stopped");
          }
        }
        continue;
      case End::Expired:
        if (auto st = sync(); !st) {
          delete_part();
          return failed(st.error().message());
        }
        return finish(Outcome::UrlExpired, end_reason_);
      case End::Stopped:
        if (auto st = sync(); !st) {
          delete_part();
          return failed(st.error().message());
        }
        return finish(Outcome::Cancelled, "stopped");
      case End::Fatal:
        if (!fatal_write_.empty()) {
          delete_part();  // a disk error: free the space, leave nothing half-written
          return failed(end_reason_);
        }
        (void)sync();
        return failed(end_reason_);
      case End::Retry: {
        if (progressed_) {
          failures = 0;  // a broken connection after progress starts afresh
        }
        ++failures;
        if (settings_.max_attempts > 0 && failures >= settings_.max_attempts) {
          (void)sync();
          return failed(end_reason_ + " (gave up after " + std::to_string(failures) + " attempts)");
        }
        const auto delay = backoff(failures - 1);
        spdlog::warn("download {}: {}; retrying in {} ms (at {} bytes)", request_.job_id,
                     end_reason_, delay.count(), have());
        if (auto st = sync(); !st) {
          delete_part();
          return failed(st.error().message());
        }
        report_progress(true);
        if (stop_.wait_for(delay)) {
          return finish(Outcome::Cancelled, "stopped");
        }
        continue;
      }
    }
  }
}

}  // namespace

Downloader::Downloader(Settings settings)
    : Downloader(std::move(settings), std::make_shared<FileSystem>()) {}

Downloader::Downloader(Settings settings, std::shared_ptr<FileSystem> fs)
    : impl_(std::make_unique<Impl>()) {
  global_init();
  impl_->settings = std::move(settings);
  impl_->fs = fs ? std::move(fs) : std::make_shared<FileSystem>();
  if (impl_->settings.boot_id.empty()) {
    impl_->settings.boot_id = current_boot_id();
  }
}

Downloader::~Downloader() = default;

const Settings& Downloader::settings() const {
  return impl_->settings;
}

std::filesystem::path Downloader::final_path(const std::string& job_id) const {
  return impl_->settings.directory / job_id;
}

std::filesystem::path Downloader::part_path(const std::string& job_id) const {
  return impl_->settings.directory / (job_id + ".part");
}

DownloadResult Downloader::stream(const Request& request, ResumeState& resume, StreamSink& sink,
                                  const StopSignal& stop,
                                  const std::function<void(const Progress&)>& on_progress) {
  try {
    // A stream saves no resume state (it starts again from byte 0).
    Run run(*impl_, *this, request, resume, stop, on_progress, {}, &sink);
    return run.execute();
  } catch (const std::exception& e) {
    DownloadResult result;
    result.reason = std::string("internal error: ") + e.what();
    return result;
  }
}

DownloadResult Downloader::run(const Request& request, ResumeState& resume, const StopSignal& stop,
                               const std::function<void(const Progress&)>& on_progress,
                               const std::function<void(const ResumeState&)>& on_resume_state) {
  try {
    Run run(*impl_, *this, request, resume, stop, on_progress, on_resume_state);
    return run.execute();
  } catch (const std::exception& e) {
    // Only allocation failures land here.
    DownloadResult result;
    result.reason = std::string("internal error: ") + e.what();
    return result;
  }
}

namespace {

// The download folder for clean() and remove(): an empty descriptor when it does not exist.
Result<UniqueFd> open_existing_directory(const std::filesystem::path& directory) {
  OwnedDirectoryOptions options;
  options.uid = ::geteuid();
  options.missing = Missing::Ignore;
  auto dir = open_owned_directory(directory, options);
  if (!dir) {
    return fail(dir.error().context("download folder " + directory.string()));
  }
  return dir;
}

}  // namespace

Status Downloader::remove(const std::string& job_id) {
  if (!valid_job_id(job_id)) {
    return fail("invalid job id");
  }
  impl_->cache.reset();
  auto dir = open_existing_directory(impl_->settings.directory);
  if (!dir) {
    return fail(dir.error());
  }
  if (!dir->valid()) {
    return {};
  }
  for (const auto& path : {final_path(job_id), part_path(job_id)}) {
    if (auto st = remove_in(dir->get(), path); !st) {
      return st;
    }
  }
  return {};
}

Status Downloader::clean(const std::string& keep_job_id) {
  const auto& directory = impl_->settings.directory;
  auto dir = open_existing_directory(directory);
  if (!dir) {
    return fail(dir.error());
  }
  if (!dir->valid()) {
    return {};
  }
  // fdopendir() takes its own descriptor: the listing is of the folder that was checked.
  const int listing_fd = ::dup(dir->get());
  DIR* listing = listing_fd < 0 ? nullptr : ::fdopendir(listing_fd);
  if (listing == nullptr) {
    const std::string err = std::strerror(errno);
    if (listing_fd >= 0) {
      ::close(listing_fd);
    }
    return fail("listing " + directory.string() + ": " + err);
  }
  ::rewinddir(listing);
  std::string errors;
  while (const dirent* entry = ::readdir(listing)) {
    const std::string name = entry->d_name;
    std::string job = name;
    if (job.size() > 5 && job.compare(job.size() - 5, 5, ".part") == 0) {
      job.resize(job.size() - 5);
    }
    // Only our own files: anything else in the directory (folders, links) is left alone.
    if (!valid_job_id(job) || (!keep_job_id.empty() && job == keep_job_id)) {
      continue;
    }
    struct stat st {};
    if (::fstatat(dir->get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISREG(st.st_mode)) {
      continue;
    }
    spdlog::info("download: removing {} (not the current job's)", (directory / name).string());
    if (auto st = remove_in(dir->get(), directory / name); !st) {
      errors += (errors.empty() ? "" : "; ") + st.error().message();
    }
  }
  ::closedir(listing);
  if (keep_job_id.empty() || keep_job_id != (impl_->cache ? impl_->cache->job_id : "")) {
    impl_->cache.reset();
  }
  if (!errors.empty()) {
    return fail(errors);
  }
  return {};
}

}  // namespace upparat::download
