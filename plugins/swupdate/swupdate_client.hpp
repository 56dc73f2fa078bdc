#pragma once

// Installing a .swu through a running SWUpdate daemon over its IPC (libswupdate), bounded in
// time everywhere: the bytes come from a file descriptor and go to SWUpdate's install socket
// under poll() together with a stop descriptor, and the result is read from SWUpdate's status
// in a loop of short status requests.
//
// Linked into a plugin shared object: it must not log through spdlog nor keep global state.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace upparat::swupdate {

/// What to install and how.
struct InstallOptions {
  /// Ask SWUpdate for a dry run: it checks and parses the archive but writes nothing. False
  /// leaves it to SWUpdate's own setting (its -n).
  bool dry_run = false;
  /// SWUpdate's software set and running mode (swupdate -e set,mode); both or neither.
  std::string software_set;
  std::string running_mode;
  /// Path of SWUpdate's progress socket; empty: libswupdate's default ($TMPDIR/swupdateprog).
  std::string progress_socket;
  /// How long SWUpdate may take to answer a request before it is taken as hung.
  std::chrono::milliseconds answer_timeout{5000};
  /// How long a write to SWUpdate may make no progress before the install fails.
  std::chrono::milliseconds stall_timeout{60000};
  /// After the last byte: how long to wait for SWUpdate's final result.
  std::chrono::milliseconds result_timeout{600000};
  /// After the last byte a stop cannot abort SWUpdate any more: wait this much longer for its
  /// result before giving up. Below the daemon's [jobs] stop_grace (30 s), which abandons a
  /// step that does not return.
  std::chrono::milliseconds stop_wait{20000};
  /// Text SWUpdate keeps with the request (its "info"), for example the job id.
  std::string info;
};

/// One progress report from SWUpdate's progress socket.
struct Progress {
  unsigned step = 0;   ///< Current step, 1-based (0 before the first image).
  unsigned steps = 0;  ///< Number of steps.
  unsigned step_percent = 0;
  std::string image;  ///< Image being installed.
  int percent = -1;   ///< Overall percentage, or -1 when unknown.
  std::string line;   ///< "step 1 of 2: rootfs.ext4 40%".
};

/// Where the bytes come from and what to tell the caller.
struct InstallIo {
  /// The .swu's bytes, read until end of file. Polled for POLLIN, so a pipe or a socket works
  /// as well as a plain file. Not closed.
  int source_fd = -1;
  /// Readable when the install must stop (the step's stop_fd), or -1. Only polled.
  int stop_fd = -1;
  /// Called with every progress message (on the calling thread).
  std::function<void(const Progress&)> on_progress;
  /// Called with every status text SWUpdate reports (on the calling thread).
  std::function<void(const std::string&)> on_message;
  /// For a source whose end of file alone does not say that it is whole (a streamed
  /// download): called once the source reached its end of file; true when it is complete,
  /// false with the reason in its argument when not. When not set, the end of file is the
  /// archive's end. When it says false, the install socket is closed so that SWUpdate aborts
  /// the install (it has not seen the archive's end), and the install fails with that reason.
  /// When SWUpdate closes its socket early, the source is still read to its end (and the
  /// bytes dropped) before this is asked.
  std::function<bool(std::string&)> source_end;
};

/// How an install ended.
enum class Outcome {
  Succeeded,
  Failed,      ///< SWUpdate failed the install, or it could not be done.
  RetryLater,  ///< SWUpdate is not running, refused the connection, or is busy.
  Stopped,     ///< Stopped before the last byte: the socket was closed, SWUpdate aborts.
};

struct InstallResult {
  Outcome outcome = Outcome::Failed;
  std::string reason;  ///< Why, for anything but Succeeded.
};

/// Installs the archive read from io.source_fd through the SWUpdate daemon that listens on
/// libswupdate's control socket. Never blocks longer than the timeouts of `options`.
[[nodiscard]] InstallResult install(const InstallOptions& options, const InstallIo& io);

/// Asks SWUpdate to run its post-update command (`swupdate -p <command>`; often a reboot) with
/// the POST_UPDATE request of its IPC, as ipc_postupdate() does, but bounded: the answer is
/// awaited for at most `timeout`, and a readable `stop_fd` gives up at once. Succeeded when
/// SWUpdate acknowledged (the command exited with 0, or none is configured); Failed with the
/// reason otherwise; RetryLater when SWUpdate is not running.
[[nodiscard]] InstallResult post_update(std::chrono::milliseconds timeout, int stop_fd);

/// Where libswupdate connects: its control socket ($TMPDIR/sockinstctrl, read once per
/// process) and its default progress socket.
[[nodiscard]] std::string control_socket_path();
[[nodiscard]] std::string default_progress_socket_path();

}  // namespace upparat::swupdate
