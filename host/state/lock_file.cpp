#include "state/lock_file.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

namespace upparat::state {

std::optional<pid_t> lock_holder(const std::filesystem::path& path) {
  std::ifstream in(path);
  long long pid = 0;
  if (in >> pid && pid > 0)
    return static_cast<pid_t>(pid);
  return std::nullopt;
}

Result<LockFile> LockFile::acquire(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return fail("cannot open lock file " + path.string() + ": " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) {
      const auto pid = lock_holder(path);
      return fail("another upparat (PID " + (pid ? std::to_string(*pid) : std::string("unknown")) +
                  ") holds " + path.string());
    }
    return fail("cannot lock " + path.string() + ": " + std::strerror(err));
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    const int err = errno;
    ::close(fd);
    return fail("cannot write lock file " + path.string() + ": " + std::strerror(err));
  }
  return LockFile(path, fd);
}

LockFile::LockFile(LockFile&& other) noexcept
    : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)) {}

LockFile& LockFile::operator=(LockFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0)
      ::close(fd_);
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

LockFile::~LockFile() {
  if (fd_ >= 0)
    ::close(fd_);  // releases the flock; the file stays (removing it would race a new owner)
}

}  // namespace upparat::state
