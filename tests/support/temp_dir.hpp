#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "common/error.hpp"

namespace upparat::test {

/// A fresh private directory (mode 0700) under $TMPDIR (or /tmp), removed recursively when
/// the object is destroyed. Move-only; a moved-from TempDir owns nothing.
/// Debugging: with UPPARAT_KEEP_TEST_DIRS=1 in the environment, directories (configs, logs,
/// certificates of every fixture) are kept and their paths printed instead.
class TempDir {
 public:
  /// Creates "<tmp>/upparat-<prefix>-XXXXXX".
  static Result<TempDir> create(std::string_view prefix = "test");

  TempDir(TempDir&& other) noexcept;
  TempDir& operator=(TempDir&& other) noexcept;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();

  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

  /// path() / name (no check that it exists).
  [[nodiscard]] std::filesystem::path operator/(const std::filesystem::path& name) const {
    return path_ / name;
  }

  /// Writes `content` to path()/name (creating parent directories); returns the full path.
  Result<std::filesystem::path> write_file(const std::filesystem::path& name,
                                           std::string_view content) const;

  /// Removes the directory now (also done by the destructor).
  void remove();

 private:
  explicit TempDir(std::filesystem::path path) : path_(std::move(path)) {}
  std::filesystem::path path_;
};

/// Reads a whole file; an error names the path.
Result<std::string> read_file(const std::filesystem::path& path);

/// Writes a whole file (truncating), with the given permission bits.
Status write_file(const std::filesystem::path& path, std::string_view content,
                  std::filesystem::perms perms = std::filesystem::perms::owner_read |
                                                 std::filesystem::perms::owner_write);

}  // namespace upparat::test
