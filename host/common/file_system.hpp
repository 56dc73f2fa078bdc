#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>

#include "common/error.hpp"

namespace upparat {

/// The disk writes of the downloader and the state store, behind a narrow seam so unit tests
/// can make any of them fail (ENOSPC after N bytes, a failing fsync) without a full disk, or
/// cut the power between any two of them (tests/support/power_loss_file_system.hpp). Reads
/// stay direct. The default implementation is plain POSIX; each error message carries
/// strerror(errno).
class FileSystem {
 public:
  virtual ~FileSystem() = default;

  /// Opens the regular file `path.filename()` in the folder `directory` (a descriptor of
  /// `path.parent_path()`) without following a symbolic link (upparat::open_file_in); returns
  /// the descriptor.
  virtual Result<int> open(int directory, const std::filesystem::path& path, int flags,
                           mode_t mode);
  virtual void close(int fd);
  /// Writes all of `data` (retrying short writes and EINTR).
  virtual Status write_all(int fd, const char* data, std::size_t size);
  virtual Status sync(int fd);
  virtual Status truncate(int fd, std::uint64_t length);
  /// fchmod (open() applies the umask and keeps the mode of an existing file).
  virtual Status chmod(int fd, mode_t mode);
  virtual Result<std::uint64_t> size(int fd);
  /// Renames `from` to `to`, both in the folder `directory` (renameat).
  virtual Status rename(int directory, const std::filesystem::path& from,
                        const std::filesystem::path& to);
  /// Removes `path.filename()` from the folder `directory` (unlinkat); a missing file is no
  /// error.
  virtual Status remove(int directory, const std::filesystem::path& path);
  /// fsyncs the folder `directory` (shown as `path`) so a rename or a new file in it survives
  /// a power cut.
  virtual Status sync_directory(int directory, const std::filesystem::path& path);
  /// Bytes an unprivileged writer may still use on the file system holding `directory`.
  virtual Result<std::uint64_t> available_bytes(const std::filesystem::path& directory);
};

}  // namespace upparat
