#include "state/lock_file.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/safe_fs.hpp"

namespace upparat::state {

namespace {

std::optional<pid_t> read_pid(int fd) {
  char text[32] = {};
  const auto n = ::pread(fd, text, sizeof text - 1, 0);
  if (n <= 0) {
    return std::nullopt;
  }
  const long long pid = std::atoll(text);
  if (pid > 0) {
    return static_cast<pid_t>(pid);
  }
  return std::nullopt;
}

}  // namespace

std::optional<pid_t> lock_holder(const std::filesystem::path& path) {
  const UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!fd.valid()) {
    return std::nullopt;
  }
  return read_pid(fd.get());
}

Result<LockFile> LockFile::acquire(const std::filesystem::path& path) {
  OwnedDirectoryOptions options;
  options.uid = ::geteuid();
  auto dir = open_owned_directory(path.parent_path(), options);
  if (!dir) {
    return fail(dir.error().context("cannot open lock file " + path.string()));
  }
  auto opened = open_file_in(dir->get(), path, O_RDWR | O_CREAT, 0644);
  if (!opened) {
    return fail("cannot open lock file: " + opened.error().message());
  }
  UniqueFd fd = std::move(*opened);
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err == EWOULDBLOCK) {
      const auto pid = read_pid(fd.get());
      return fail("another upparat (PID " + (pid ? std::to_string(*pid) : std::string("unknown")) +
                  ") holds " + path.string());
    }
    return fail("cannot lock " + path.string() + ": " + std::strerror(err));
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd.get(), 0) != 0 || ::pwrite(fd.get(), pid.data(), pid.size(), 0) < 0) {
    const int err = errno;
    return fail("cannot write lock file " + path.string() + ": " + std::strerror(err));
  }
  return LockFile(path, fd.release());
}

LockFile::LockFile(LockFile&& other) noexcept
    : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)) {}

LockFile& LockFile::operator=(LockFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) {
      ::close(fd_);
    }
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

LockFile::~LockFile() {
  if (fd_ >= 0) {
    ::close(fd_);  // releases the flock; the file stays (removing it would race a new owner)
  }
}

}  // namespace upparat::state
