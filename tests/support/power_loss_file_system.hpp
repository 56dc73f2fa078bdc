#pragma once

// A FileSystem that knows what a power cut would leave: the operations go to the real files,
// and the fake records, at each persistence point only, what has reached the disk. cut_power()
// then rewrites the tracked folders to that image. A SIGKILL cannot imitate this: the page
// cache survives a process.

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/error.hpp"
#include "common/file_system.hpp"

namespace upparat::test {

/// The model (stricter than ext4's data=ordered, as POSIX allows):
/// - a file's content reaches the disk only at sync(fd): every write or truncation not
///   followed by an fsync of that file is lost;
/// - a folder's entries reach the disk only at sync_directory(): every file created, renamed
///   or removed in it since its last fsync is undone (a new file not named in the folder's
///   image is lost even when its content was fsynced);
/// - the files of a tracked folder when the fake is made count as on the disk.
/// Contents are kept per file (not per inode number: a file created after another was removed
/// may get its inode number), so an old name keeps the content it had on the disk.
/// Only the folders given to create() are tracked; the others pass through. No real fsync is
/// made: the record is what survives.
class PowerLossFileSystem final : public FileSystem {
 public:
  /// What cut_power() leaves of a file whose last changes were not fsynced.
  enum class Unsynced {
    /// Its last fsynced content (empty when never fsynced).
    Dropped,
    /// Its size reached the disk, its data did not: the fsynced content cut or padded with
    /// zeros to the last size it had (XFS and ext4 data=writeback can leave this).
    Zeros,
  };

  /// Tracks `folders` (each must exist; their regular files count as on the disk).
  [[nodiscard]] static Result<std::shared_ptr<PowerLossFileSystem>> create(
      const std::vector<std::filesystem::path>& folders);

  /// The power goes off after `operations` operations: every later one fails (EIO) without
  /// any effect. Counted: every operation but close().
  void cut_after(int operations);
  /// Operations attempted so far (a full run's count gives the cut points 0..N).
  [[nodiscard]] int operations() const;
  /// True once an operation was refused because the power was off.
  [[nodiscard]] bool powered_off() const;
  /// Rewrites every tracked folder to what the disk holds: the entries of its last fsync,
  /// each with its file's content as `unsynced` says. The fake refuses everything afterwards.
  [[nodiscard]] Status cut_power(Unsynced unsynced = Unsynced::Dropped);

  Result<int> open(int directory, const std::filesystem::path& path, int flags,
                   mode_t mode) override;
  void close(int fd) override;
  Status write_all(int fd, const char* data, std::size_t size) override;
  Status sync(int fd) override;
  Status truncate(int fd, std::uint64_t length) override;
  Status chmod(int fd, mode_t mode) override;
  Result<std::uint64_t> size(int fd) override;
  Status rename(int directory, const std::filesystem::path& from,
                const std::filesystem::path& to) override;
  Status remove(int directory, const std::filesystem::path& path) override;
  Status sync_directory(int directory, const std::filesystem::path& path) override;
  Result<std::uint64_t> available_bytes(const std::filesystem::path& directory) override;

 private:
  PowerLossFileSystem() = default;
  using FileKey = std::pair<dev_t, ino_t>;
  struct File {
    /// The content at its last fsync; nullopt when never fsynced.
    std::optional<std::string> synced;
    /// Its size after the last write or truncation.
    std::uint64_t size = 0;
  };
  /// Counts an operation; an error when the power is off.
  [[nodiscard]] Status step(const char* what);
  /// The file a descriptor is (a new one when the fake has not seen it).
  [[nodiscard]] Result<std::uint64_t> file_of(int fd);
  void note_size(int fd);
  /// The regular files of a folder: name -> file.
  [[nodiscard]] Result<std::map<std::string, std::uint64_t>> entries_of(int directory);

  mutable std::mutex mutex_;
  int operations_ = 0;
  std::optional<int> cut_after_;
  bool off_ = false;
  /// The file each live inode is now.
  std::map<FileKey, std::uint64_t> live_;
  std::map<std::uint64_t, File> files_;
  std::uint64_t next_file_ = 1;
  struct Folder {
    std::filesystem::path path;
    /// Its entries on the disk: name -> file.
    std::map<std::string, std::uint64_t> entries;
  };
  /// The tracked folders, by device and inode.
  std::map<FileKey, Folder> tracked_;
};

}  // namespace upparat::test
