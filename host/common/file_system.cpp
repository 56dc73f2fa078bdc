#include "common/file_system.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "common/safe_fs.hpp"

namespace upparat {
namespace {

std::string errno_text() {
  return std::strerror(errno);
}

}  // namespace

Result<int> FileSystem::open(int directory, const std::filesystem::path& path, int flags,
                             mode_t mode) {
  auto fd = open_file_in(directory, path, flags, mode);
  if (!fd) {
    return fail(fd.error());
  }
  return fd->release();
}

void FileSystem::close(int fd) {
  ::close(fd);
}

Status FileSystem::write_all(int fd, const char* data, std::size_t size) {
  if (auto written = upparat::write_all(fd, data, size); !written) {
    return fail(written.error().context("write"));
  }
  return {};
}

Status FileSystem::sync(int fd) {
  if (::fsync(fd) != 0) {
    return fail("fsync: " + errno_text());
  }
  return {};
}

Status FileSystem::truncate(int fd, std::uint64_t length) {
  if (::ftruncate(fd, static_cast<off_t>(length)) != 0) {
    return fail("truncate: " + errno_text());
  }
  return {};
}

Status FileSystem::chmod(int fd, mode_t mode) {
  if (::fchmod(fd, mode) != 0) {
    return fail("chmod: " + errno_text());
  }
  return {};
}

Result<std::uint64_t> FileSystem::size(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return fail("fstat: " + errno_text());
  }
  return static_cast<std::uint64_t>(st.st_size);
}

Status FileSystem::rename(int directory, const std::filesystem::path& from,
                          const std::filesystem::path& to) {
  return rename_in(directory, from, to);
}

Status FileSystem::remove(int directory, const std::filesystem::path& path) {
  return remove_in(directory, path);
}

Status FileSystem::sync_directory(int directory, const std::filesystem::path& path) {
  if (::fsync(directory) != 0) {
    return fail("fsync " + path.string() + ": " + errno_text());
  }
  return {};
}

Result<std::uint64_t> FileSystem::available_bytes(const std::filesystem::path& directory) {
  struct statvfs st {};
  if (::statvfs(directory.c_str(), &st) != 0) {
    return fail("statvfs " + directory.string() + ": " + errno_text());
  }
  return static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
}

}  // namespace upparat
