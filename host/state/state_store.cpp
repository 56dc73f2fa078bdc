#include "state/state_store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "common/safe_fs.hpp"

namespace upparat::state {
namespace {

constexpr int kFormatVersion = 1;
// A state file is a few KiB; anything much larger is not ours.
constexpr std::size_t kMaxStateBytes = 16 * 1024 * 1024;

std::string errno_text() {
  return std::strerror(errno);
}

// The state folder, checked from / down (see open_owned_directory); an empty descriptor when
// it does not exist and `missing` is Ignore.
Result<UniqueFd> open_state_directory(const std::filesystem::path& directory, Missing missing) {
  OwnedDirectoryOptions options;
  options.uid = ::geteuid();
  options.missing = missing;
  auto fd = open_owned_directory(directory, options);
  if (!fd)
    return fail(fd.error().context("state folder " + directory.string()));
  return fd;
}

}  // namespace

bool JobState::operator==(const JobState& o) const {
  return job_id == o.job_id && execution_number == o.execution_number && step == o.step &&
         unfinished_starts == o.unfinished_starts && retry_count == o.retry_count &&
         step_elapsed_seconds == o.step_elapsed_seconds && version == o.version &&
         force == o.force && resume == o.resume && final_status == o.final_status &&
         final_state == o.final_state && final_message == o.final_message && store == o.store;
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
  str("step", s.step);
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
  w.EndObject();
  str("final_status", s.final_status);
  str("final_state", s.final_state);
  str("final_message", s.final_message);
  w.Key("store");
  w.StartObject();
  for (const auto& [key, value] : s.store)
    str(key.c_str(), value);
  w.EndObject();
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

Result<JobState> job_state_from_json(const std::string& text) {
  rapidjson::Document d;
  d.Parse(text.data(), text.size());
  if (d.HasParseError() || !d.IsObject())
    return fail("not a JSON object");
  auto get = [&](const char* key) -> const rapidjson::Value* {
    auto it = d.FindMember(key);
    return it == d.MemberEnd() ? nullptr : &it->value;
  };
  const auto* format = get("format");
  if (!format || !format->IsInt() || format->GetInt() != kFormatVersion)
    return fail("unknown format (expected \"format\": " + std::to_string(kFormatVersion) + ")");
  JobState s;
  const auto* job_id = get("job_id");
  const auto* exec = get("execution_number");
  const auto* step = get("step");
  if (!job_id || !job_id->IsString() || job_id->GetStringLength() == 0 || !exec ||
      !exec->IsInt64() || !step || !step->IsString())
    return fail("job_id, execution_number or step missing");
  s.job_id = job_id->GetString();
  s.execution_number = exec->GetInt64();
  s.step = step->GetString();
  if (const auto* v = get("unfinished_starts"); v && v->IsInt())
    s.unfinished_starts = v->GetInt();
  if (const auto* v = get("retry_count"); v && v->IsInt())
    s.retry_count = v->GetInt();
  if (const auto* v = get("step_elapsed_seconds"); v && v->IsInt64())
    s.step_elapsed_seconds = v->GetInt64();
  if (const auto* v = get("version"); v && v->IsString())
    s.version = v->GetString();
  if (const auto* v = get("force"); v && v->IsBool())
    s.force = v->GetBool();
  if (const auto* v = get("final_status"); v && v->IsString())
    s.final_status = v->GetString();
  if (const auto* v = get("final_state"); v && v->IsString())
    s.final_state = v->GetString();
  if (const auto* v = get("final_message"); v && v->IsString())
    s.final_message = v->GetString();
  if (const auto* v = get("download"); v && v->IsObject()) {
    auto b = v->FindMember("synced_bytes");
    if (b != v->MemberEnd() && b->value.IsUint64())
      s.resume.synced_bytes = b->value.GetUint64();
    auto e = v->FindMember("etag");
    if (e != v->MemberEnd() && e->value.IsString())
      s.resume.etag = e->value.GetString();
  }
  if (const auto* v = get("store"); v && v->IsObject()) {
    for (auto m = v->MemberBegin(); m != v->MemberEnd(); ++m)
      if (m->value.IsString())
        s.store[m->name.GetString()] =
            std::string(m->value.GetString(), m->value.GetStringLength());
  }
  return s;
}

FileStateStore::FileStateStore(std::filesystem::path directory)
    : directory_(std::move(directory)) {}

std::filesystem::path FileStateStore::path() const {
  return directory_ / "state.json";
}

Result<std::optional<JobState>> FileStateStore::load() {
  auto dir = open_state_directory(directory_, Missing::Ignore);
  if (!dir)
    return fail(dir.error());
  struct stat st {};
  if (!dir->valid() ||
      (::fstatat(dir->get(), "state.json", &st, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT))
    return std::optional<JobState>{};
  auto fd = open_file_in(dir->get(), path(), O_RDONLY);
  if (!fd)
    return fail("cannot read the job state: " + fd.error().message());
  std::string text;
  char chunk[16384];
  for (;;) {
    const auto n = ::read(fd->get(), chunk, sizeof chunk);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return fail("cannot read " + path().string() + ": " + errno_text());
    if (n == 0)
      break;
    text.append(chunk, static_cast<std::size_t>(n));
    if (text.size() > kMaxStateBytes)
      return fail(path().string() + ": larger than " + std::to_string(kMaxStateBytes) + " bytes");
  }
  auto state = job_state_from_json(text);
  if (!state)
    return fail(state.error().context(path().string()));
  return std::optional<JobState>(std::move(*state));
}

Status FileStateStore::save(const JobState& state) {
  const std::filesystem::path target = path();
  const std::filesystem::path temp = directory_ / "state.json.tmp";
  const std::string data = to_json(state);
  auto dir = open_state_directory(directory_, Missing::Fail);
  if (!dir)
    return fail(dir.error().context("cannot save the job state"));
  auto fd = open_file_in(dir->get(), temp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (!fd)
    return fail("cannot save the job state: " + fd.error().message());
  // A temp file left by an older daemon may have another mode.
  if (::fchmod(fd->get(), 0600) != 0) {
    const std::string err = errno_text();
    (void)remove_in(dir->get(), temp);
    return fail("cannot chmod " + temp.string() + ": " + err);
  }
  if (auto written = write_all(fd->get(), data.data(), data.size()); !written) {
    (void)remove_in(dir->get(), temp);
    return fail(written.error().context("cannot write " + temp.string()));
  }
  if (::fsync(fd->get()) != 0) {
    const std::string err = errno_text();
    (void)remove_in(dir->get(), temp);
    return fail("cannot fsync " + temp.string() + ": " + err);
  }
  fd->reset();
  if (auto renamed = rename_in(dir->get(), temp, target); !renamed) {
    (void)remove_in(dir->get(), temp);
    return fail(renamed.error());
  }
  if (::fsync(dir->get()) != 0)
    return fail("cannot fsync " + directory_.string() + ": " + errno_text());
  return {};
}

Status FileStateStore::clear() {
  auto dir = open_state_directory(directory_, Missing::Ignore);
  if (!dir)
    return fail(dir.error());
  if (!dir->valid())
    return {};
  if (auto removed = remove_in(dir->get(), path()); !removed)
    return removed;
  (void)::fsync(dir->get());
  return {};
}

}  // namespace upparat::state
