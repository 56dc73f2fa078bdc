#include "process/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <optional>
#include <utility>

extern char** environ;

namespace upparat::process {
namespace {

using Clock = std::chrono::steady_clock;

std::string errno_text(int error) {
  return std::strerror(error);
}

/// An owned file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  [[nodiscard]] int get() const { return fd_; }
  [[nodiscard]] bool valid() const { return fd_ >= 0; }
  void reset(int fd = -1) {
    if (fd_ >= 0) {
      ::close(fd_);  // never retried: on Linux the descriptor is gone even after EINTR
    }
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

/// Splits a byte stream into lines of at most max_bytes, calling on_line for each.
class LineSplitter {
 public:
  template <class F>
  LineSplitter(std::size_t max_bytes, F on_line)
      : max_(std::max<std::size_t>(max_bytes, 1)), on_line_(std::move(on_line)) {}

  void feed(std::string_view data) {
    while (!data.empty()) {
      const std::size_t newline = data.find('\n');
      const std::string_view piece =
          newline == std::string_view::npos ? data : data.substr(0, newline);
      const std::size_t room = max_ - partial_.size();
      if (piece.size() > room) {
        // The line reaches the cap without a newline: deliver this much and go on.
        partial_.append(piece.data(), room);
        emit();
        data.remove_prefix(room);
        continue;
      }
      partial_.append(piece.data(), piece.size());
      if (newline == std::string_view::npos) {
        return;
      }
      emit();
      data.remove_prefix(newline + 1);
    }
  }

  void finish() {
    if (!partial_.empty()) {
      emit();
    }
  }

 private:
  void emit() {
    std::string_view line(partial_);
    if (!line.empty() && line.back() == '\r') {
      line.remove_suffix(1);
    }
    on_line_(line);
    partial_.clear();
  }

  std::size_t max_;
  std::function<void(std::string_view)> on_line_;
  std::string partial_;
};

bool is_blank(std::string_view line) {
  return std::all_of(line.begin(), line.end(), [](char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
  });
}

/// Kills and reaps the child if run() leaves early (an error, an exception from a callback),
/// so no process outlives the call.
class ChildGuard {
 public:
  explicit ChildGuard(pid_t pid) : pid_(pid) {}
  ChildGuard(const ChildGuard&) = delete;
  ChildGuard& operator=(const ChildGuard&) = delete;
  ~ChildGuard() {
    if (pid_ > 0) {
      ::kill(-pid_, SIGKILL);
      int status = 0;
      while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
    }
  }
  /// Reaps the (exited) child and returns its wait status, or nothing when it was already
  /// reaped elsewhere (SIGCHLD set to SIG_IGN, or a waitpid(-1) in another thread).
  std::optional<int> reap() {
    int status = 0;
    pid_t rc;
    do {
      rc = ::waitpid(pid_, &status, 0);
    } while (rc < 0 && errno == EINTR);
    pid_ = -1;
    return rc < 0 ? std::nullopt : std::optional<int>(status);
  }

 private:
  pid_t pid_;
};

bool readable_now(int fd) {
  pollfd p{fd, POLLIN, 0};
  int rc;
  do {
    rc = ::poll(&p, 1, 0);
  } while (rc < 0 && errno == EINTR);
  return rc > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR)) != 0;
}

/// True once the child has exited; leaves it a zombie (WNOWAIT), so its pid, which is also its
/// process group id, cannot be reused while we may still signal the group.
bool has_exited(pid_t pid) {
  siginfo_t info;
  std::memset(&info, 0, sizeof info);
  int rc;
  do {
    rc = ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT);
  } while (rc < 0 && errno == EINTR);
  // ECHILD: someone else reaped it (see ChildGuard::reap); it is gone all the same.
  return (rc == 0 && info.si_pid == pid) || (rc < 0 && errno == ECHILD);
}

/// Moves a descriptor that landed on 0, 1 or 2 (the caller runs with closed standard streams)
/// above them, so the child's dup2 onto 0-2 cannot clobber it.
int above_stdio(int fd) {
  if (fd > 2) {
    return fd;
  }
  const int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  ::close(fd);
  return moved;
}

int to_poll_timeout(Clock::time_point now, Clock::time_point until) {
  if (until <= now) {
    return 0;
  }
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(until - now).count();
  return static_cast<int>(std::min<long long>(ms, 60'000));
}

}  // namespace

std::string signal_name(int signal) {
  const char* abbrev = ::sigabbrev_np(signal);
  if (abbrev != nullptr) {
    return std::string("SIG") + abbrev;
  }
  return "signal " + std::to_string(signal);
}

std::string RunResult::describe() const {
  if (exited) {
    return "exit code " + std::to_string(exit_code);
  }
  if (signal == 0) {
    return "not started";
  }
  return "killed by signal " + signal_name(signal);
}

Result<RunResult> run(const RunOptions& options) {
  if (options.argv.empty() || options.argv.front().empty()) {
    return fail("no program to run");
  }
  const std::string& program = options.argv.front();

  RunResult result;
  if ((options.stop_fd >= 0 && readable_now(options.stop_fd)) ||
      (options.should_stop && options.should_stop())) {
    result.stopped = true;
    return result;
  }

  std::array<int, 2> out_pipe{-1, -1};
  std::array<int, 2> err_pipe{-1, -1};
  if (::pipe2(out_pipe.data(), O_CLOEXEC) != 0) {
    return fail(program + ": cannot create a pipe: " + errno_text(errno));
  }
  Fd out_read(above_stdio(out_pipe[0]));
  Fd out_write(above_stdio(out_pipe[1]));
  if (::pipe2(err_pipe.data(), O_CLOEXEC) != 0) {
    return fail(program + ": cannot create a pipe: " + errno_text(errno));
  }
  Fd err_read(above_stdio(err_pipe[0]));
  Fd err_write(above_stdio(err_pipe[1]));
  if (!out_read.valid() || !out_write.valid() || !err_read.valid() || !err_write.valid()) {
    return fail(program + ": cannot create a pipe: " + errno_text(errno));
  }

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attributes;
  if (::posix_spawn_file_actions_init(&actions) != 0) {
    return fail(program + ": posix_spawn_file_actions_init failed");
  }
  if (::posix_spawnattr_init(&attributes) != 0) {
    ::posix_spawn_file_actions_destroy(&actions);
    return fail(program + ": posix_spawnattr_init failed");
  }
  sigset_t empty_mask;
  sigset_t all_signals;
  sigemptyset(&empty_mask);
  sigfillset(&all_signals);
#if defined(__GLIBC__) && defined(__linux__)
  // glibc's sigfillset leaves out its two internal signals (32 and 33), and its posix_spawn
  // then sets them to SIG_IGN in the child, which survives exec. Add them by hand so the
  // child really starts with default handlers for every signal (bit n-1 is signal n).
  static_assert(sizeof(all_signals.__val[0]) * 8 >= 64, "unexpected sigset_t layout");
  all_signals.__val[0] |= (1UL << 31) | (1UL << 32);
#endif
  int rc = 0;
  // The pipes are O_CLOEXEC; dup2 onto 1 and 2 clears that flag for the child's copies.
  rc = rc ? rc : ::posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  rc = rc ? rc : ::posix_spawn_file_actions_adddup2(&actions, out_write.get(), 1);
  rc = rc ? rc : ::posix_spawn_file_actions_adddup2(&actions, err_write.get(), 2);
  rc = rc ? rc : ::posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  rc = rc ? rc
          : ::posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                                        POSIX_SPAWN_SETSIGDEF);
  rc = rc ? rc : ::posix_spawnattr_setpgroup(&attributes, 0);
  rc = rc ? rc : ::posix_spawnattr_setsigmask(&attributes, &empty_mask);
  rc = rc ? rc : ::posix_spawnattr_setsigdefault(&attributes, &all_signals);

  std::vector<char*> argv;
  argv.reserve(options.argv.size() + 1);
  for (const std::string& arg : options.argv) {
    argv.push_back(const_cast<char*>(arg.c_str()));
  }
  argv.push_back(nullptr);

  // The caller's environment, without the variables options.environment sets, then those.
  std::vector<char*> envp;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view entry(*e);
    const bool replaced = std::any_of(options.environment.begin(), options.environment.end(),
                                      [&](const std::string& add) {
                                        const auto name = add.substr(0, add.find('=') + 1);
                                        return entry.substr(0, name.size()) == name;
                                      });
    if (!replaced) {
      envp.push_back(*e);
    }
  }
  for (const auto& add : options.environment) {
    envp.push_back(const_cast<char*>(add.c_str()));
  }
  envp.push_back(nullptr);

  pid_t pid = -1;
  if (rc == 0) {
    // glibc's posix_spawn runs the child with CLONE_VFORK and reports a failed exec here.
    rc = ::posix_spawn(&pid, program.c_str(), &actions, &attributes, argv.data(), envp.data());
  }
  ::posix_spawn_file_actions_destroy(&actions);
  ::posix_spawnattr_destroy(&attributes);
  if (rc != 0) {
    std::string reason = errno_text(rc);
    if (rc == ENOEXEC) {
      reason += " (a script needs a #! line)";
    } else if (rc == ENOENT && ::access(program.c_str(), F_OK) == 0) {
      reason += " (the file exists: is the interpreter of its #! line missing?)";
    }
    return fail(program + ": cannot execute: " + reason);
  }
  ChildGuard guard(pid);
  out_write.reset();
  err_write.reset();
  ::fcntl(out_read.get(), F_SETFL, ::fcntl(out_read.get(), F_GETFL) | O_NONBLOCK);
  ::fcntl(err_read.get(), F_SETFL, ::fcntl(err_read.get(), F_GETFL) | O_NONBLOCK);

  // A pidfd wakes poll() when the child exits; without one (old kernels), poll in ticks.
  Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));

  LineSplitter out_lines(options.max_line_bytes, [&](std::string_view line) {
    if (!is_blank(line)) {
      result.last_stdout_line.assign(line.data(), line.size());
    }
    if (options.on_stdout_line) {
      options.on_stdout_line(line);
    }
  });
  LineSplitter err_lines(options.max_line_bytes, [&](std::string_view line) {
    if (options.on_stderr_line) {
      options.on_stderr_line(line);
    }
  });
  const std::size_t tail_cap = options.stderr_tail_bytes;
  auto keep_tail = [&](std::string_view data) {
    if (tail_cap == 0) {
      return;
    }
    if (data.size() >= tail_cap) {
      result.stderr_tail.assign(data.substr(data.size() - tail_cap));
      return;
    }
    result.stderr_tail.append(data.data(), data.size());
    if (result.stderr_tail.size() > 2 * tail_cap) {
      result.stderr_tail.erase(0, result.stderr_tail.size() - tail_cap);
    }
  };

  std::array<char, 64 * 1024> buffer{};
  // Reads what is available now; false at end of file (or a read error).
  auto drain = [&](Fd& fd, bool is_stderr) {
    for (int chunk = 0; chunk < 16; ++chunk) {
      const ssize_t n = ::read(fd.get(), buffer.data(), buffer.size());
      if (n > 0) {
        const std::string_view data(buffer.data(), static_cast<std::size_t>(n));
        if (is_stderr) {
          keep_tail(data);
          err_lines.feed(data);
        } else {
          out_lines.feed(data);
        }
        continue;
      }
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return;
      }
      fd.reset();  // end of file, or an error we cannot recover from
      return;
    }
  };

  bool exited = false;
  bool stopping = false;
  bool killed = false;
  Clock::time_point kill_at{};
  Clock::time_point drain_until{};
  constexpr auto kTick = std::chrono::milliseconds(100);

  for (;;) {
    const auto now = Clock::now();
    if (!exited && has_exited(pid)) {
      exited = true;
      drain_until = now + options.exit_linger;
      pidfd.reset();
    }
    if (!stopping) {
      const bool deadline_passed = options.deadline && now >= *options.deadline;
      if (deadline_passed || (options.stop_fd >= 0 && readable_now(options.stop_fd)) ||
          (options.should_stop && options.should_stop())) {
        stopping = true;
        result.stopped = true;
        result.timed_out = deadline_passed;
        ::kill(-pid, SIGTERM);
        kill_at = now + options.kill_grace;
      }
    }
    const bool pipes_closed = !out_read.valid() && !err_read.valid();
    if (stopping && !killed && (now >= kill_at || (exited && pipes_closed))) {
      // The group id stays ours while the child is an unreaped zombie, so this can only hit
      // what the hook started (and what ignored SIGTERM or lingered after it).
      ::kill(-pid, SIGKILL);
      killed = true;
      if (exited) {
        drain_until = std::max(drain_until, now + options.exit_linger);
      }
    }
    if (exited && (!stopping || killed) && (pipes_closed || now >= drain_until)) {
      break;
    }

    std::array<pollfd, 4> fds{};
    std::size_t count = 0;
    int out_index = -1;
    int err_index = -1;
    if (out_read.valid()) {
      out_index = static_cast<int>(count);
      fds[count++] = pollfd{out_read.get(), POLLIN, 0};
    }
    if (err_read.valid()) {
      err_index = static_cast<int>(count);
      fds[count++] = pollfd{err_read.get(), POLLIN, 0};
    }
    if (!stopping && options.stop_fd >= 0) {
      fds[count++] = pollfd{options.stop_fd, POLLIN, 0};
    }
    if (!exited && pidfd.valid()) {
      fds[count++] = pollfd{pidfd.get(), POLLIN, 0};
    }

    Clock::time_point wake = now + std::chrono::seconds(60);
    if (!exited && !pidfd.valid()) {
      wake = std::min(wake, now + kTick);
    }
    if (!stopping && options.should_stop) {
      wake = std::min(wake, now + kTick);
    }
    if (!stopping && options.deadline) {
      wake = std::min(wake, *options.deadline);
    }
    if (stopping && !killed) {
      wake = std::min(wake, kill_at);
    }
    if (exited) {
      wake = std::min(wake, drain_until);
    }

    const int ready = ::poll(fds.data(), count, to_poll_timeout(now, wake));
    if (ready < 0) {
      if (errno == EINTR) {
        continue;
      }
      return fail(program + ": poll failed: " + errno_text(errno));
    }
    if (out_index >= 0 && fds[static_cast<std::size_t>(out_index)].revents != 0) {
      drain(out_read, false);
    }
    if (err_index >= 0 && fds[static_cast<std::size_t>(err_index)].revents != 0) {
      drain(err_read, true);
    }
  }

  out_lines.finish();
  err_lines.finish();
  if (result.stderr_tail.size() > tail_cap) {
    result.stderr_tail.erase(0, result.stderr_tail.size() - tail_cap);
  }
  const std::optional<int> status = guard.reap();
  if (!status) {
    return fail(program +
                ": its exit status was lost (the process was reaped elsewhere: is "
                "SIGCHLD ignored?)");
  }
  if (WIFEXITED(*status)) {
    result.exited = true;
    result.exit_code = WEXITSTATUS(*status);
  } else if (WIFSIGNALED(*status)) {
    result.signal = WTERMSIG(*status);
  }
  return result;
}

}  // namespace upparat::process
