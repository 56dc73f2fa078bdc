#include "state/state_store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string_view>

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/spdlog.h>

#include "common/file_system.hpp"
#include "common/safe_fs.hpp"

namespace upparat::state {
namespace {

constexpr int kFormatVersion = 1;
// A state file is a few KiB; anything much larger is not ours.
constexpr std::size_t kMaxStateBytes = 16 * 1024 * 1024;

std::string errno_text() {
  return std::strerror(errno);
}

// The check member that starts a state.json: `{"check":"fnv1a64:<16 hex>:<length>",` then the
// rest of the JSON text it covers ("{" + rest). FNV-1a finds a torn write, not an attacker.
constexpr std::string_view kCheckStart = "{\"check\":\"fnv1a64:";

std::uint64_t fnv1a64(std::string_view text) {
  std::uint64_t hash = 14695981039346656037ULL;
  for (const unsigned char c : text) {
    hash ^= c;
    hash *= 1099511628211ULL;
  }
  return hash;
}

std::string check_member(std::string_view json) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fnv1a64(json)));
  return std::string(kCheckStart) + hex + ":" + std::to_string(json.size()) + "\",";
}

// The state folder, checked from / down (see open_owned_directory); an empty descriptor when
// it does not exist and `missing` is Ignore.
Result<UniqueFd> open_state_directory(const std::filesystem::path& directory, Missing missing) {
  OwnedDirectoryOptions options;
  options.uid = ::geteuid();
  options.missing = missing;
  auto fd = open_owned_directory(directory, options);
  if (!fd) {
    return fail(fd.error().context("state folder " + directory.string()));
  }
  return fd;
}

constexpr std::pair<SavedStep, const char*> kSavedStepNames[] = {
    {SavedStep::VerifyJob, "verify_job"},
    {SavedStep::DownloadGate, "download_gate"},
    {SavedStep::Download, "download"},
    {SavedStep::Install, "install"},
    {SavedStep::Reboot, "reboot"},
    {SavedStep::Restart, "restart"},
    {SavedStep::VerifyInstallation, "verify_installation"},
    {SavedStep::Ready, "ready"},
    {SavedStep::Finish, "finish"},
};

std::optional<SavedStep> parse_saved_step(std::string_view name) {
  for (const auto& [step, text] : kSavedStepNames) {
    if (name == text) {
      return step;
    }
  }
  return std::nullopt;
}

}  // namespace

const char* to_string(SavedStep step) {
  for (const auto& [s, text] : kSavedStepNames) {
    if (s == step) {
      return text;
    }
  }
  return "?";
}

bool JobState::operator==(const JobState& o) const {
  return job_id == o.job_id && execution_number == o.execution_number && step == o.step &&
         unfinished_starts == o.unfinished_starts && retry_count == o.retry_count &&
         step_elapsed_seconds == o.step_elapsed_seconds && version == o.version &&
         force == o.force && resume == o.resume && final_status == o.final_status &&
         final_state == o.final_state && final_message == o.final_message && store == o.store;
}

bool EndedExecution::operator==(const EndedExecution& o) const {
  return job_id == o.job_id && execution_number == o.execution_number && status == o.status &&
         state == o.state && queued == o.queued;
}

std::string to_json(const std::vector<EndedExecution>& ended) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  w.StartObject();
  w.Key("format");
  w.Int(kFormatVersion);
  w.Key("ended");
  w.StartArray();
  for (const auto& e : ended) {
    w.StartObject();
    w.Key("job_id");
    w.String(e.job_id.c_str());
    w.Key("execution_number");
    w.Int64(e.execution_number);
    w.Key("status");
    w.String(e.status.c_str());
    w.Key("state");
    w.String(e.state.c_str());
    w.Key("queued");
    w.Bool(e.queued);
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

Result<std::vector<EndedExecution>> ended_from_json(const std::string& text) {
  rapidjson::Document d;
  d.Parse(text.data(), text.size());
  if (d.HasParseError() || !d.IsObject()) {
    return fail("not a JSON object");
  }
  auto format = d.FindMember("format");
  if (format == d.MemberEnd() || !format->value.IsInt() ||
      format->value.GetInt() != kFormatVersion) {
    return fail("unknown format (expected \"format\": " + std::to_string(kFormatVersion) + ")");
  }
  auto list = d.FindMember("ended");
  if (list == d.MemberEnd() || !list->value.IsArray()) {
    return fail("no \"ended\" list");
  }
  std::vector<EndedExecution> out;
  for (const auto& v : list->value.GetArray()) {
    auto text_of = [&](const char* key) -> std::optional<std::string> {
      auto m = v.FindMember(key);
      if (m == v.MemberEnd() || !m->value.IsString() || m->value.GetStringLength() == 0) {
        return std::nullopt;
      }
      return std::string(m->value.GetString(), m->value.GetStringLength());
    };
    if (!v.IsObject()) {
      return fail("an entry of \"ended\" is not an object");
    }
    auto exec = v.FindMember("execution_number");
    auto queued = v.FindMember("queued");
    EndedExecution e;
    auto job_id = text_of("job_id");
    auto status = text_of("status");
    auto state = text_of("state");
    if (!job_id || !status || !state || exec == v.MemberEnd() || !exec->value.IsInt64()) {
      return fail("an entry of \"ended\" lacks job_id, execution_number, status or state");
    }
    e.job_id = *job_id;
    e.execution_number = exec->value.GetInt64();
    e.status = *status;
    e.state = *state;
    e.queued = queued != v.MemberEnd() && queued->value.IsBool() && queued->value.GetBool();
    out.push_back(std::move(e));
  }
  return out;
}

std::string to_json(const JobState& s) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  auto str = [&](const char* key, const std::string& value) {
    w.Key(key);
    w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
  };
  w.StartObject();
  w.Key("format");
  w.Int(kFormatVersion);
  str("job_id", s.job_id);
  w.Key("execution_number");
  w.Int64(s.execution_number);
  str("step", to_string(s.step));
  w.Key("unfinished_starts");
  w.Int(s.unfinished_starts);
  w.Key("retry_count");
  w.Int(s.retry_count);
  w.Key("step_elapsed_seconds");
  w.Int64(s.step_elapsed_seconds);
  str("version", s.version);
  w.Key("force");
  w.Bool(s.force);
  w.Key("download");
  w.StartObject();
  w.Key("synced_bytes");
  w.Uint64(s.resume.synced_bytes);
  str("etag", s.resume.etag);
  str("boot_id", s.resume.boot_id);
  w.EndObject();
  str("final_status", s.final_status);
  str("final_state", s.final_state);
  str("final_message", s.final_message);
  w.Key("store");
  w.StartObject();
  for (const auto& [key, value] : s.store) {
    str(key.c_str(), value);
  }
  w.EndObject();
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string to_checked_json(const JobState& state) {
  const std::string json = to_json(state);
  return check_member(json) + json.substr(1);
}

Result<std::optional<JobState>> job_state_from_checked_json(const std::string& text) {
  if (text.empty() || text.front() == '\0') {
    // Renamed into place, its data never written: nothing, or zeros where the file's size
    // reached the disk and its data did not (XFS, ext4 with data=writeback). No JSON text
    // starts with a NUL byte.
    return std::optional<JobState>{};
  }
  if (text.compare(0, kCheckStart.size(), kCheckStart) != 0) {
    // An older daemon's file (always fsynced before it was renamed into place).
    auto state = job_state_from_json(text);
    if (!state) {
      return fail(state.error());
    }
    return std::optional<JobState>(std::move(*state));
  }
  const auto end = text.find("\",", kCheckStart.size());
  if (end == std::string::npos) {
    return std::optional<JobState>{};
  }
  const std::string json = "{" + text.substr(end + 2);
  if (text.compare(0, end + 2, check_member(json)) != 0) {
    return std::optional<JobState>{};
  }
  auto state = job_state_from_json(json);
  if (!state) {
    return fail(state.error());
  }
  return std::optional<JobState>(std::move(*state));
}

Result<JobState> job_state_from_json(const std::string& text) {
  rapidjson::Document d;
  d.Parse(text.data(), text.size());
  if (d.HasParseError() || !d.IsObject()) {
    return fail("not a JSON object");
  }
  auto get = [&](const char* key) -> const rapidjson::Value* {
    auto it = d.FindMember(key);
    return it == d.MemberEnd() ? nullptr : &it->value;
  };
  const auto* format = get("format");
  if (!format || !format->IsInt() || format->GetInt() != kFormatVersion) {
    return fail("unknown format (expected \"format\": " + std::to_string(kFormatVersion) + ")");
  }
  JobState s;
  const auto* job_id = get("job_id");
  const auto* exec = get("execution_number");
  const auto* step = get("step");
  if (!job_id || !job_id->IsString() || job_id->GetStringLength() == 0 || !exec ||
      !exec->IsInt64() || !step || !step->IsString()) {
    return fail("job_id, execution_number or step missing");
  }
  s.job_id = job_id->GetString();
  s.execution_number = exec->GetInt64();
  const auto parsed = parse_saved_step(step->GetString());
  if (!parsed) {
    return fail(std::string("unknown step '") + step->GetString() + "'");
  }
  s.step = *parsed;
  if (const auto* v = get("unfinished_starts"); v && v->IsInt()) {
    s.unfinished_starts = v->GetInt();
  }
  if (const auto* v = get("retry_count"); v && v->IsInt()) {
    s.retry_count = v->GetInt();
  }
  if (const auto* v = get("step_elapsed_seconds"); v && v->IsInt64()) {
    s.step_elapsed_seconds = v->GetInt64();
  }
  if (const auto* v = get("version"); v && v->IsString()) {
    s.version = v->GetString();
  }
  if (const auto* v = get("force"); v && v->IsBool()) {
    s.force = v->GetBool();
  }
  if (const auto* v = get("final_status"); v && v->IsString()) {
    s.final_status = v->GetString();
  }
  if (const auto* v = get("final_state"); v && v->IsString()) {
    s.final_state = v->GetString();
  }
  if (const auto* v = get("final_message"); v && v->IsString()) {
    s.final_message = v->GetString();
  }
  if (const auto* v = get("download"); v && v->IsObject()) {
    auto b = v->FindMember("synced_bytes");
    if (b != v->MemberEnd() && b->value.IsUint64()) {
      s.resume.synced_bytes = b->value.GetUint64();
    }
    auto e = v->FindMember("etag");
    if (e != v->MemberEnd() && e->value.IsString()) {
      s.resume.etag = e->value.GetString();
    }
    auto boot = v->FindMember("boot_id");
    if (boot != v->MemberEnd() && boot->value.IsString()) {
      s.resume.boot_id = boot->value.GetString();
    }
  }
  if (const auto* v = get("store"); v && v->IsObject()) {
    for (auto m = v->MemberBegin(); m != v->MemberEnd(); ++m) {
      if (m->value.IsString()) {
        s.store[m->name.GetString()] =
            std::string(m->value.GetString(), m->value.GetStringLength());
      }
    }
  }
  return s;
}

FileStateStore::FileStateStore(std::filesystem::path directory, std::shared_ptr<FileSystem> fs)
    : directory_(std::move(directory)), fs_(fs ? std::move(fs) : std::make_shared<FileSystem>()) {}

std::filesystem::path FileStateStore::path() const {
  return directory_ / "state.json";
}

Result<std::optional<std::string>> FileStateStore::read_file(const std::string& name) const {
  const std::filesystem::path file = directory_ / name;
  auto dir = open_state_directory(directory_, Missing::Ignore);
  if (!dir) {
    return fail(dir.error());
  }
  struct stat st {};
  if (!dir->valid() ||
      (::fstatat(dir->get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT)) {
    return std::optional<std::string>{};
  }
  auto fd = open_file_in(dir->get(), file, O_RDONLY);
  if (!fd) {
    return fail("cannot read " + file.string() + ": " + fd.error().message());
  }
  std::string text;
  char chunk[16384];
  for (;;) {
    const auto n = ::read(fd->get(), chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return fail("cannot read " + file.string() + ": " + errno_text());
    }
    if (n == 0) {
      break;
    }
    text.append(chunk, static_cast<std::size_t>(n));
    if (text.size() > kMaxStateBytes) {
      return fail(file.string() + ": larger than " + std::to_string(kMaxStateBytes) + " bytes");
    }
  }
  return std::optional<std::string>(std::move(text));
}

Result<std::optional<JobState>> FileStateStore::load() {
  remove_leftover("state.json.tmp");
  auto text = read_file("state.json");
  if (!text) {
    return fail(text.error().context("cannot read the job state"));
  }
  if (!*text) {
    return std::optional<JobState>{};
  }
  auto state = job_state_from_checked_json(**text);
  if (!state) {
    return fail(state.error().context(path().string()));
  }
  if (!*state) {
    spdlog::warn(
        "{} is torn (a power cut before it reached the disk): discarded; the cloud's view of "
        "the job is used",
        path().string());
  }
  return state;
}

Result<std::vector<EndedExecution>> FileStateStore::load_ended() {
  remove_leftover("ended.json.tmp");
  auto text = read_file("ended.json");
  if (!text) {
    return fail(text.error());
  }
  if (!*text) {
    return std::vector<EndedExecution>{};
  }
  auto ended = ended_from_json(**text);
  if (!ended) {
    return fail(ended.error().context((directory_ / "ended.json").string()));
  }
  return ended;
}

Status FileStateStore::save(const JobState& state, Durability durability) {
  if (auto written = write_file("state.json", to_checked_json(state), durability); !written) {
    return fail(written.error().context("cannot save the job state"));
  }
  return {};
}

Status FileStateStore::save_ended(const std::vector<EndedExecution>& ended) {
  if (ended.empty()) {
    return remove_file("ended.json");
  }
  return write_file("ended.json", to_json(ended));
}

Status FileStateStore::write_file(const std::string& name, const std::string& data,
                                  Durability durability) {
  const std::filesystem::path target = directory_ / name;
  const std::filesystem::path temp = directory_ / (name + ".tmp");
  auto dir = open_state_directory(directory_, Missing::Fail);
  if (!dir) {
    return fail(dir.error());
  }
  auto opened = fs_->open(dir->get(), temp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (!opened) {
    return fail(opened.error());
  }
  const int fd = *opened;
  // Closes the temp file and removes it after a failure.
  auto abandon = [&](const std::string& what, const Error& error) -> Status {
    fs_->close(fd);
    (void)fs_->remove(dir->get(), temp);
    return fail(error.context(what + " " + temp.string()));
  };
  // A temp file left by an older daemon may have another mode.
  if (auto chmod = fs_->chmod(fd, 0600); !chmod) {
    return abandon("cannot chmod", chmod.error());
  }
  if (auto written = fs_->write_all(fd, data.data(), data.size()); !written) {
    return abandon("cannot write", written.error());
  }
  const bool synced = durability == Durability::Synced;
  if (synced) {
    ++fsyncs_;
    if (auto flushed = fs_->sync(fd); !flushed) {
      return abandon("cannot fsync", flushed.error());
    }
  }
  fs_->close(fd);
  if (auto renamed = fs_->rename(dir->get(), temp, target); !renamed) {
    (void)fs_->remove(dir->get(), temp);
    return fail(renamed.error());
  }
  // The folder's fsync also makes the renames of earlier Deferred saves durable.
  if (synced) {
    ++fsyncs_;
    if (auto flushed = fs_->sync_directory(dir->get(), directory_); !flushed) {
      return fail(flushed.error().context("cannot fsync the state folder"));
    }
  }
  return {};
}

Status FileStateStore::clear() {
  return remove_file("state.json");
}

void FileStateStore::remove_leftover(const std::string& name) {
  auto dir = open_state_directory(directory_, Missing::Ignore);
  if (!dir || !dir->valid()) {
    return;  // the load that follows reports the folder
  }
  struct stat st {};
  if (::fstatat(dir->get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return;  // none (or unreadable: the load that follows reports it)
  }
  if (auto removed = fs_->remove(dir->get(), directory_ / name); !removed) {
    spdlog::warn("{}", removed.error().message());
  } else {
    spdlog::info("removed {}: a save a stopped daemon did not finish",
                 (directory_ / name).string());
  }
}

Status FileStateStore::remove_file(const std::string& name) {
  auto dir = open_state_directory(directory_, Missing::Ignore);
  if (!dir) {
    return fail(dir.error());
  }
  if (!dir->valid()) {
    return {};
  }
  if (auto removed = fs_->remove(dir->get(), directory_ / name); !removed) {
    return removed;
  }
  ++fsyncs_;
  (void)fs_->sync_directory(dir->get(), directory_);
  return {};
}

}  // namespace upparat::state
