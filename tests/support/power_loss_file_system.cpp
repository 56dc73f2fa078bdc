#include "support/power_loss_file_system.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/safe_fs.hpp"

namespace upparat::test {
namespace {

std::string errno_text() {
  return std::strerror(errno);
}

// The whole content of an open file, which may be open for writing only: read through a
// descriptor of its own (the position of `fd` stays where it is).
Result<std::string> read_all(int open_fd) {
  const std::string self = "/proc/self/fd/" + std::to_string(open_fd);
  const UniqueFd reader(::open(self.c_str(), O_RDONLY | O_CLOEXEC));
  if (!reader.valid()) {
    return fail("open " + self + " to read it: " + errno_text());
  }
  const int fd = reader.get();
  std::string text;
  char chunk[65536];
  for (;;) {
    const auto n = ::pread(fd, chunk, sizeof chunk, static_cast<off_t>(text.size()));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return fail("pread: " + errno_text());
    }
    if (n == 0) {
      return text;
    }
    text.append(chunk, static_cast<std::size_t>(n));
  }
}

// The names of the regular files in a folder.
Result<std::vector<std::string>> regular_files(int directory) {
  const int copy = ::openat(directory, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (copy < 0) {
    return fail("open folder: " + errno_text());
  }
  DIR* listing = ::fdopendir(copy);
  if (listing == nullptr) {
    const std::string err = errno_text();
    ::close(copy);
    return fail("fdopendir: " + err);
  }
  std::vector<std::string> names;
  while (const dirent* entry = ::readdir(listing)) {
    const std::string name = entry->d_name;
    struct stat st {};
    if (name != "." && name != ".." &&
        ::fstatat(directory, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode)) {
      names.push_back(name);
    }
  }
  ::closedir(listing);
  return names;
}

}  // namespace

Result<std::shared_ptr<PowerLossFileSystem>> PowerLossFileSystem::create(
    const std::vector<std::filesystem::path>& folders) {
  std::shared_ptr<PowerLossFileSystem> fake(new PowerLossFileSystem());
  for (const auto& folder : folders) {
    UniqueFd dir(::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir.valid()) {
      return fail("open " + folder.string() + ": " + errno_text());
    }
    auto entries = fake->entries_of(dir.get());
    if (!entries) {
      return fail(entries.error().context(folder.string()));
    }
    for (const auto& [name, id] : *entries) {
      UniqueFd fd(::openat(dir.get(), name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
      if (!fd.valid()) {
        return fail("open " + (folder / name).string() + ": " + errno_text());
      }
      auto content = read_all(fd.get());
      if (!content) {
        return fail(content.error().context((folder / name).string()));
      }
      fake->files_[id].size = content->size();
      fake->files_[id].synced = std::move(*content);
    }
    struct stat st {};
    if (::fstat(dir.get(), &st) != 0) {
      return fail("fstat " + folder.string() + ": " + errno_text());
    }
    fake->tracked_[{st.st_dev, st.st_ino}] = Folder{folder, std::move(*entries)};
  }
  return fake;
}

void PowerLossFileSystem::cut_after(int operations) {
  const std::lock_guard lock(mutex_);
  cut_after_ = operations;
}

int PowerLossFileSystem::operations() const {
  const std::lock_guard lock(mutex_);
  return operations_;
}

bool PowerLossFileSystem::powered_off() const {
  const std::lock_guard lock(mutex_);
  return off_;
}

Status PowerLossFileSystem::step(const char* what) {
  ++operations_;
  if (off_ || (cut_after_ && operations_ > *cut_after_)) {
    off_ = true;
    return fail(std::string(what) + ": " + std::strerror(EIO) + " (the power is off)");
  }
  return {};
}

Result<std::uint64_t> PowerLossFileSystem::file_of(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return fail("fstat: " + errno_text());
  }
  const FileKey key{st.st_dev, st.st_ino};
  if (auto it = live_.find(key); it != live_.end()) {
    return it->second;
  }
  const auto id = next_file_++;
  live_[key] = id;
  files_[id].size = static_cast<std::uint64_t>(st.st_size);
  return id;
}

void PowerLossFileSystem::note_size(int fd) {
  struct stat st {};
  if (auto id = file_of(fd); id && ::fstat(fd, &st) == 0) {
    files_[*id].size = static_cast<std::uint64_t>(st.st_size);
  }
}

Result<std::map<std::string, std::uint64_t>> PowerLossFileSystem::entries_of(int directory) {
  auto names = regular_files(directory);
  if (!names) {
    return fail(names.error());
  }
  std::map<std::string, std::uint64_t> entries;
  for (const auto& name : *names) {
    UniqueFd fd(::openat(directory, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd.valid()) {
      return fail("open " + name + ": " + errno_text());
    }
    auto id = file_of(fd.get());
    if (!id) {
      return fail(id.error());
    }
    entries[name] = *id;
  }
  return entries;
}

Result<int> PowerLossFileSystem::open(int directory, const std::filesystem::path& path, int flags,
                                      mode_t mode) {
  const std::lock_guard lock(mutex_);
  if (auto on = step("open"); !on) {
    return fail(on.error());
  }
  struct stat st {};
  const bool existed = ::fstatat(directory, path.filename().c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
  auto fd = FileSystem::open(directory, path, flags, mode);
  if (!fd) {
    return fd;
  }
  if (!existed && ::fstat(*fd, &st) == 0) {
    // A new file, maybe under the inode number of one removed before: its own record.
    live_[{st.st_dev, st.st_ino}] = next_file_++;
  }
  note_size(*fd);
  return fd;
}

void PowerLossFileSystem::close(int fd) {
  FileSystem::close(fd);
}

Status PowerLossFileSystem::write_all(int fd, const char* data, std::size_t size) {
  const std::lock_guard lock(mutex_);
  if (auto on = step("write"); !on) {
    return on;
  }
  auto written = FileSystem::write_all(fd, data, size);
  note_size(fd);
  return written;
}

Status PowerLossFileSystem::sync(int fd) {
  const std::lock_guard lock(mutex_);
  if (auto on = step("fsync"); !on) {
    return on;
  }
  // No real fsync: what survives is the fake's record, and the tests stay fast.
  auto id = file_of(fd);
  if (!id) {
    return fail(id.error());
  }
  auto content = read_all(fd);
  if (!content) {
    return fail(content.error());
  }
  files_[*id].size = content->size();
  files_[*id].synced = std::move(*content);
  return {};
}

Status PowerLossFileSystem::truncate(int fd, std::uint64_t length) {
  const std::lock_guard lock(mutex_);
  if (auto on = step("truncate"); !on) {
    return on;
  }
  auto cut = FileSystem::truncate(fd, length);
  note_size(fd);
  return cut;
}

Status PowerLossFileSystem::chmod(int fd, mode_t mode) {
  const std::lock_guard lock(mutex_);
  if (auto on = step("chmod"); !on) {
    return on;
  }
  return FileSystem::chmod(fd, mode);
}

Result<std::uint64_t> PowerLossFileSystem::size(int fd) {
  const std::lock_guard lock(mutex_);
  if (auto on = step("size"); !on) {
    return fail(on.error());
  }
  return FileSystem::size(fd);
}

Status PowerLossFileSystem::rename(int directory, const std::filesystem::path& from,
                                   const std::filesystem::path& to) {
  const std::lock_guard lock(mutex_);
  if (auto on = step("rename"); !on) {
    return on;
  }
  return FileSystem::rename(directory, from, to);
}

Status PowerLossFileSystem::remove(int directory, const std::filesystem::path& path) {
  const std::lock_guard lock(mutex_);
  if (auto on = step("remove"); !on) {
    return on;
  }
  return FileSystem::remove(directory, path);
}

Status PowerLossFileSystem::sync_directory(int directory, const std::filesystem::path& path) {
  const std::lock_guard lock(mutex_);
  if (auto on = step("fsync folder"); !on) {
    return on;
  }
  struct stat st {};
  if (::fstat(directory, &st) != 0) {
    return fail("fstat " + path.string() + ": " + errno_text());
  }
  auto folder = tracked_.find({st.st_dev, st.st_ino});
  if (folder == tracked_.end()) {
    return {};
  }
  auto entries = entries_of(directory);
  if (!entries) {
    return fail(entries.error().context(path.string()));
  }
  folder->second.entries = std::move(*entries);
  return {};
}

Result<std::uint64_t> PowerLossFileSystem::available_bytes(const std::filesystem::path& directory) {
  const std::lock_guard lock(mutex_);
  if (auto on = step("statvfs"); !on) {
    return fail(on.error());
  }
  return FileSystem::available_bytes(directory);
}

Status PowerLossFileSystem::cut_power(Unsynced unsynced) {
  const std::lock_guard lock(mutex_);
  off_ = true;
  cut_after_ = 0;
  for (const auto& [key, folder] : tracked_) {
    UniqueFd dir(::open(folder.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir.valid()) {
      return fail("open " + folder.path.string() + ": " + errno_text());
    }
    auto names = regular_files(dir.get());
    if (!names) {
      return fail(names.error().context(folder.path.string()));
    }
    for (const auto& name : *names) {
      if (::unlinkat(dir.get(), name.c_str(), 0) != 0) {
        return fail("unlink " + (folder.path / name).string() + ": " + errno_text());
      }
    }
    for (const auto& [name, id] : folder.entries) {
      const File& file = files_[id];
      std::string content = file.synced.value_or("");
      if (unsynced == Unsynced::Zeros) {
        content.resize(file.size, '\0');
      }
      UniqueFd fd(::openat(dir.get(), name.c_str(),
                           O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (!fd.valid()) {
        return fail("create " + (folder.path / name).string() + ": " + errno_text());
      }
      if (auto written = upparat::write_all(fd.get(), content.data(), content.size()); !written) {
        return fail(written.error().context((folder.path / name).string()));
      }
    }
  }
  return {};
}

}  // namespace upparat::test
