#pragma once

#include <sys/types.h>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>

#include "common/error.hpp"

namespace upparat::state {

/// An exclusive flock() on a file in the state directory, holding the owner's PID. A second
/// instance fails at once with "another upparat (PID N) holds <path>". Released by the
/// destructor (and by the kernel when the process dies, so a stale file never blocks). The
/// folder must pass open_owned_directory(); a symbolic link at the file's name is refused.
class LockFile {
 public:
  [[nodiscard]] static Result<LockFile> acquire(const std::filesystem::path& path);
  LockFile(LockFile&& other) noexcept;
  LockFile& operator=(LockFile&& other) noexcept;
  LockFile(const LockFile&) = delete;
  LockFile& operator=(const LockFile&) = delete;
  ~LockFile();

  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  LockFile(std::filesystem::path path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::filesystem::path path_;
  int fd_ = -1;
};

/// The PID written in a lock file, if any (for messages).
[[nodiscard]] std::optional<pid_t> lock_holder(const std::filesystem::path& path);

}  // namespace upparat::state
