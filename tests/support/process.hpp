#pragma once

// Starting real processes (brokers, servers, the daemon, the emulator) from tests.

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/error.hpp"
#include "support/temp_dir.hpp"

namespace upparat::test {

/// How a process ended: exactly one of exit_code / signal is meaningful.
struct ExitStatus {
  bool signaled = false;  ///< killed by a signal
  int exit_code = -1;     ///< when !signaled
  int signal = 0;         ///< when signaled

  [[nodiscard]] bool success() const { return !signaled && exit_code == 0; }
  [[nodiscard]] std::string describe() const;  ///< "exit code 3" / "signal 9 (Killed)"
};

struct ProcessOptions {
  /// argv[0] is the program: an absolute path, or a name looked up in $PATH. No shell.
  std::vector<std::string> argv;
  /// Shown in messages and log dumps; default: the file name of argv[0].
  std::string name;
  /// stdout and stderr both go (appended) to this file. Default: "<name>.log" in a private
  /// TempDir that the ServiceProcess owns.
  std::filesystem::path log_path;
  /// Working directory of the child; default: the caller's.
  std::filesystem::path working_dir;
  /// Environment: the caller's, plus these (overriding), minus unset_env.
  std::vector<std::pair<std::string, std::string>> env;
  std::vector<std::string> unset_env;
  /// stop(): time between SIGTERM and SIGKILL.
  std::chrono::milliseconds stop_grace{5000};
  /// Print the tail of the log to stderr at destruction if the current test has failed.
  bool dump_log_on_failure = true;
};

/// A child process in its own process group, started with posix_spawn (no shell): empty
/// signal mask, default signal handlers, stdin from /dev/null, stdout+stderr to a log file,
/// every other file descriptor closed. The destructor stops it (SIGTERM to the group, then
/// SIGKILL after stop_grace) and reaps it, so no process outlives the test.
///
/// Output is read from the log file, so a child that should be waited on with
/// wait_for_line() must flush its lines (stdout to a file is block-buffered by stdio:
/// call fflush / use std::endl / setvbuf(stdout, nullptr, _IOLBF, 0)).
///
/// Not thread-safe: use one ServiceProcess from one thread at a time.
class ServiceProcess {
 public:
  static Result<ServiceProcess> start(ProcessOptions options);

  ServiceProcess(ServiceProcess&& other) noexcept;
  ServiceProcess& operator=(ServiceProcess&& other) noexcept;
  ServiceProcess(const ServiceProcess&) = delete;
  ServiceProcess& operator=(const ServiceProcess&) = delete;
  ~ServiceProcess();

  /// Pid of the child (also its process group id); -1 for a moved-from object.
  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] const std::string& name() const { return options_.name; }

  /// True until the child has exited (reaps it when it has).
  bool running();
  /// How it ended, once it has (after running() returned false, stop(), wait_exit()).
  [[nodiscard]] std::optional<ExitStatus> exit_status() const { return exit_status_; }

  /// Waits for a complete line of output (stdout or stderr) that matches, scanning the
  /// output of this process from byte `from_offset` (see log_offset()) on. Returns the line
  /// (without '\n'). Fails at the timeout, or as soon as the process has exited without
  /// printing such a line; the error quotes the end of the log.
  Result<std::string> wait_for_line(const std::regex& pattern, std::chrono::milliseconds timeout,
                                    std::size_t from_offset = 0);
  Result<std::string> wait_for_line(const std::function<bool(const std::string&)>& predicate,
                                    std::chrono::milliseconds timeout, std::size_t from_offset = 0);
  /// A line that contains `substring`.
  Result<std::string> wait_for_line(std::string_view substring, std::chrono::milliseconds timeout,
                                    std::size_t from_offset = 0);

  /// Waits until 127.0.0.1:port accepts TCP connections; fails early if the process exits.
  Status wait_for_port(std::uint16_t port, std::chrono::milliseconds timeout);

  /// Waits for the child to exit by itself.
  Result<ExitStatus> wait_exit(std::chrono::milliseconds timeout);

  /// SIGTERM to the process group, SIGKILL to the group after stop_grace; reaps the child.
  /// Idempotent: returns the recorded status when already stopped.
  Result<ExitStatus> stop();
  /// SIGKILL to the process group (a crash, a power cut), and reaps the child.
  ExitStatus kill9();
  /// Sends `signal` to the child only (e.g. SIGHUP, SIGUSR1).
  Status send_signal(int signal);

  /// Output of this process so far (stdout and stderr interleaved).
  [[nodiscard]] std::string log_text() const;
  /// The last `lines` lines of log_text().
  [[nodiscard]] std::string log_tail(std::size_t lines = 40) const;
  /// Current size of this process's output; pass to wait_for_line() to only see newer lines.
  [[nodiscard]] std::size_t log_offset() const;
  [[nodiscard]] const std::filesystem::path& log_path() const { return options_.log_path; }

 private:
  ServiceProcess() = default;
  void reap_blocking();
  bool try_reap();
  void kill_group(int signal) const;
  void release();

  ProcessOptions options_;
  std::optional<TempDir> log_dir_;
  pid_t pid_ = -1;
  std::size_t log_start_ = 0;  // size of the log file when this process started
  std::optional<ExitStatus> exit_status_;
  bool group_cleaned_ = false;  // stragglers SIGKILLed once; never again (the id may be reused)
};

/// True if a process with this pid exists and is not a zombie (a killed grandchild stays a
/// zombie until its new parent reaps it). Use to check that nothing was left running.
bool process_alive(pid_t pid);

/// Waits up to `timeout` for process_alive(pid) to become false; returns true if it did.
bool wait_process_gone(pid_t pid, std::chrono::milliseconds timeout = std::chrono::seconds(5));

/// Result of run_process().
struct ProcessOutput {
  ExitStatus status;
  std::string output;  ///< stdout and stderr interleaved
};

/// Runs a short command to completion (killing it at the timeout, which is an error).
Result<ProcessOutput> run_process(std::vector<std::string> argv,
                                  std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace upparat::test
