#pragma once

// A real SWUpdate daemon for tests, and signed .swu archives it accepts.
//
// Debian builds SWUpdate to require signed images and hardware compatibility: the fixture makes
// a key and a self-signed certificate with openssl, writes sw-description (libconfig syntax)
// with hardware-compatibility and a sha256 per image, signs it with CMS and packs the archive
// with cpio -H crc (sw-description first, then its signature). The daemon runs as
// `swupdate -f <cfg> -k <cert> -H board:rev1 -q stable,main` with TMPDIR pointing at a private
// folder, where its sockets are created.

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "support/digest.hpp"
#include "support/process.hpp"
#include "support/temp_dir.hpp"

namespace upparat::test {

inline constexpr const char* kSwupdatePath = "/usr/bin/swupdate";
inline constexpr const char* kCpioPath = "/usr/bin/cpio";

/// One image of an archive: written by SWUpdate's rawfile handler to `target`.
struct SwuImage {
  std::string name;     ///< File name inside the archive.
  std::string content;  ///< Its bytes.
  std::filesystem::path target;
};

struct SwuOptions {
  /// Corrupt the first image after its sha256 was computed (SWUpdate: HASH mismatch).
  bool corrupt_first_image = false;
  /// Zero bytes appended after the archive's end.
  std::size_t trailing_padding = 0;
  /// When set, the images sit under `software_set: { running_mode: { ... } }`.
  std::string software_set;
  std::string running_mode;
  /// When above 0, a shell script in the archive sleeps this long after the images are
  /// installed (SWUpdate reports the result only then).
  int postinstall_sleep_seconds = 0;
};

class SwupdateFixture {
 public:
  /// Makes the key, certificate and configuration in `work_dir`; the daemon's sockets go to
  /// `socket_dir` (which must exist).
  static Result<SwupdateFixture> create(std::filesystem::path work_dir,
                                        std::filesystem::path socket_dir);

  /// Builds a signed archive `name` in the work folder; returns its path.
  Result<std::filesystem::path> make_swu(const std::string& name,
                                         const std::vector<SwuImage>& images,
                                         const SwuOptions& options = {}) const;

  /// Starts the daemon (stopping one that runs) with these extra arguments, and waits until its
  /// sockets accept.
  Status start(const std::vector<std::string>& extra_args = {});
  /// Stops the daemon (SIGTERM, then SIGKILL) and removes its sockets.
  void stop();
  [[nodiscard]] ServiceProcess* daemon() { return daemon_ ? &*daemon_ : nullptr; }

  [[nodiscard]] const std::filesystem::path& socket_dir() const { return socket_dir_; }
  [[nodiscard]] std::filesystem::path control_socket() const {
    return socket_dir_ / "sockinstctrl";
  }
  [[nodiscard]] std::filesystem::path progress_socket() const {
    return socket_dir_ / "swupdateprog";
  }

 private:
  SwupdateFixture(std::filesystem::path work_dir, std::filesystem::path socket_dir)
      : work_dir_(std::move(work_dir)), socket_dir_(std::move(socket_dir)) {}
  std::filesystem::path work_dir_;
  std::filesystem::path socket_dir_;
  std::optional<ServiceProcess> daemon_;
};

}  // namespace upparat::test
