#pragma once

// Running an external program (a hook) to completion: no shell, its own process group, output
// read line by line with bounded memory, and a stop that terminates the whole group.
//
// This library is linked into plugin shared objects: it must not log (no spdlog) and must not
// keep global state.

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.hpp"

namespace upparat::process {

/// What to run and how to watch it.
struct RunOptions {
  /// argv[0] is the path of the executable (not searched in $PATH); the rest are its
  /// arguments, passed as they are (no shell, no word splitting, no globbing).
  std::vector<std::string> argv;
  /// "NAME=value" entries for the program's environment: the caller's environment with these
  /// added (an entry replaces a variable of the same name).
  std::vector<std::string> environment;

  /// A file descriptor that becomes readable when the run must stop (StopSignal::fd(), the
  /// plugin's stop_fd), or -1. It is only polled, never read or closed.
  int stop_fd = -1;
  /// Polled about every 100 ms when set; returning true stops the run like stop_fd.
  std::function<bool()> should_stop;
  /// When the run has not ended by then, it is stopped like on stop_fd (timed_out is set).
  std::optional<std::chrono::steady_clock::time_point> deadline;
  /// On stop: time between SIGTERM to the process group and SIGKILL to it.
  std::chrono::milliseconds kill_grace{10000};
  /// After the program exited normally, how long to go on reading output that processes it
  /// left behind (holding its stdout/stderr open) may still write. Then reading ends and the
  /// pipes are closed; such processes are not killed.
  std::chrono::milliseconds exit_linger{1000};

  /// Called for every line of stdout, without its '\n' (and without a trailing '\r'). A line
  /// longer than max_line_bytes is delivered in pieces of max_line_bytes. Called on the thread
  /// that called run().
  std::function<void(std::string_view line)> on_stdout_line;
  /// The same for stderr.
  std::function<void(std::string_view line)> on_stderr_line;
  /// Longest line delivered at once (at least 1).
  std::size_t max_line_bytes = 64 * 1024;
  /// How many bytes at the end of stderr RunResult::stderr_tail keeps.
  std::size_t stderr_tail_bytes = 4 * 1024;
};

/// How a run ended.
struct RunResult {
  /// True when the program exited (exit_code is valid), false when a signal ended it.
  bool exited = false;
  int exit_code = -1;  ///< Exit status when exited.
  int signal = 0;      ///< Terminating signal when !exited.
  /// The run was stopped (stop_fd, should_stop) or timed out (deadline): the process group
  /// received SIGTERM and, after the grace period, SIGKILL.
  bool stopped = false;
  bool timed_out = false;  ///< The deadline passed (implies stopped).
  /// The last stdout line that is not blank (at most max_line_bytes), or "".
  std::string last_stdout_line;
  /// The last stderr_tail_bytes bytes of stderr (may begin inside a line).
  std::string stderr_tail;

  /// "exit code N" or "killed by signal SIGXXX".
  [[nodiscard]] std::string describe() const;
};

/// Runs argv[0] with argv and waits until it ends or the run is stopped.
///
/// The child starts in its own process group (so a stop reaches its children too), with an
/// empty signal mask and default signal handlers, stdin from /dev/null, stdout and stderr to
/// pipes read by this function, every other file descriptor closed, and the caller's
/// environment and working directory.
///
/// On stop, deadline: SIGTERM to the whole group; SIGKILL to the group once kill_grace has
/// passed, or as soon as the program has exited and the pipes are closed (so nothing that
/// ignored SIGTERM is left behind); the program is reaped. A child that exited while a
/// grandchild keeps the pipes open never makes this function hang.
///
/// Fails (error value) when the program cannot be started: missing, not executable, not a
/// valid executable (for example a script without a #! line), or a system error. If stop is
/// already requested, nothing is started and the result says stopped.
[[nodiscard]] Result<RunResult> run(const RunOptions& options);

/// "SIGTERM" for SIGTERM, "signal 42" for a number without a name.
[[nodiscard]] std::string signal_name(int signal);

}  // namespace upparat::process
