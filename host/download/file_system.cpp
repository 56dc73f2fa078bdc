#include "download/file_system.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace upparat::download {
namespace {

std::string errno_text() {
  return std::strerror(errno);
}

}  // namespace

Result<int> FileSystem::open(const std::filesystem::path& path, int flags, mode_t mode) {
  int fd = -1;
  do {
    fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0)
    return fail("open " + path.string() + ": " + errno_text());
  return fd;
}

void FileSystem::close(int fd) {
  ::close(fd);
}

Status FileSystem::write_all(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    const auto written = ::write(fd, data, size);
    if (written < 0) {
      if (errno == EINTR)
        continue;
      return fail("write: " + errno_text());
    }
    if (written == 0)
      return fail("write: no progress");
    data += written;
    size -= static_cast<std::size_t>(written);
  }
  return {};
}

Status FileSystem::sync(int fd) {
  if (::fsync(fd) != 0)
    return fail("fsync: " + errno_text());
  return {};
}

Status FileSystem::truncate(int fd, std::uint64_t length) {
  if (::ftruncate(fd, static_cast<off_t>(length)) != 0)
    return fail("truncate: " + errno_text());
  return {};
}

Result<std::uint64_t> FileSystem::size(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    return fail("fstat: " + errno_text());
  return static_cast<std::uint64_t>(st.st_size);
}

Status FileSystem::rename(const std::filesystem::path& from, const std::filesystem::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return fail("rename " + from.string() + " to " + to.string() + ": " + errno_text());
  }
  return {};
}

Status FileSystem::sync_directory(const std::filesystem::path& directory) {
  const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return fail("open " + directory.string() + ": " + errno_text());
  const int rc = ::fsync(fd);
  const auto saved = errno;
  ::close(fd);
  if (rc != 0)
    return fail("fsync " + directory.string() + ": " + std::strerror(saved));
  return {};
}

Result<std::uint64_t> FileSystem::available_bytes(const std::filesystem::path& directory) {
  struct statvfs st {};
  if (::statvfs(directory.c_str(), &st) != 0) {
    return fail("statvfs " + directory.string() + ": " + errno_text());
  }
  return static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
}

}  // namespace upparat::download
