#pragma once

// Files and folders the daemon creates, without following symbolic links, in folders that
// nobody but root and the daemon's user can change. Every file the daemon writes is opened with
// openat() on a folder descriptor from open_owned_directory(), with O_NOFOLLOW: a symbolic link
// planted at a file's name is refused, never followed, so it cannot make the daemon overwrite,
// truncate or re-permission another file.

#include <sys/types.h>

#include <cstddef>
#include <filesystem>
#include <optional>
#include <utility>

#include "common/error.hpp"

namespace upparat {

/// Owns a file descriptor and closes it.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
      reset(std::exchange(other.fd_, -1));
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  [[nodiscard]] int get() const { return fd_; }
  [[nodiscard]] bool valid() const { return fd_ >= 0; }
  /// Gives up the descriptor without closing it.
  [[nodiscard]] int release() { return std::exchange(fd_, -1); }
  /// Closes the descriptor held (if any) and holds `fd` instead.
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

/// What open_owned_directory() does with a folder of the path that does not exist.
enum class Missing {
  Fail,    ///< an error
  Create,  ///< created with `mode` (and `group`), one level at a time
  Ignore,  ///< an empty UniqueFd is returned (nothing to read or remove there)
};

struct OwnedDirectoryOptions {
  /// Besides root, the one user that may own the folders: the daemon's (geteuid()).
  uid_t uid = 0;
  Missing missing = Missing::Fail;
  /// Mode (exactly, whatever the umask) and group of the folders created.
  mode_t mode = 0700;
  std::optional<gid_t> group;
};

/// Opens the folder `path` (made absolute against the working directory) by walking from `/`
/// one folder at a time with openat(O_NOFOLLOW), refusing it unless every folder on the way is
/// owned by root or `options.uid` and writable by neither its group nor others. A root-owned
/// folder with the sticky bit (like /tmp, mode 1777) is accepted on the way, not as `path`
/// itself: there only the owner of an entry can rename or remove it. A symbolic link on the way
/// is followed only when it is owned by root or `options.uid` (in a folder that passed the
/// check, only they can have put it there); its target is walked and checked the same way.
/// Missing folders are handled as `options.missing` says; created ones get mkdirat() on the
/// checked parent. The error names the folder at fault and what to do. Returns a descriptor
/// opened O_RDONLY|O_DIRECTORY (for openat, fsync and fdopendir).
[[nodiscard]] Result<UniqueFd> open_owned_directory(const std::filesystem::path& path,
                                                    const OwnedDirectoryOptions& options);

/// open_owned_directory() without creating anything: Ok when the folders that exist pass the
/// check (missing ones would be created by the daemon).
[[nodiscard]] Status check_owned_directory(const std::filesystem::path& path, uid_t uid);

/// Opens the regular file `path.filename()` in the folder `directory` (a descriptor of
/// `path.parent_path()`) with openat(flags | O_NOFOLLOW | O_CLOEXEC, mode). Refused: a
/// symbolic link, anything but a regular file (a FIFO would block), and a file with more than
/// one hard link (it may be another file of the system). O_TRUNC is applied only after these
/// checks. `path` is also what the error messages show.
[[nodiscard]] Result<UniqueFd> open_file_in(int directory, const std::filesystem::path& path,
                                            int flags, mode_t mode = 0600);

/// Writes all of `data` (retrying short writes and EINTR); the error is strerror(errno).
[[nodiscard]] Status write_all(int fd, const char* data, std::size_t size);

/// renameat() of `from.filename()` to `to.filename()` inside `directory` (a symbolic link at
/// `to` is replaced, not followed).
[[nodiscard]] Status rename_in(int directory, const std::filesystem::path& from,
                               const std::filesystem::path& to);

/// unlinkat() of `path.filename()` in `directory`; a missing file is no error.
[[nodiscard]] Status remove_in(int directory, const std::filesystem::path& path);

}  // namespace upparat
