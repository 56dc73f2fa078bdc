#include "support/process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <thread>

#include <gtest/gtest.h>

#include "support/net.hpp"

extern char** environ;

namespace upparat::test {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

namespace {

constexpr milliseconds kPollInterval{20};

std::string errno_text(int error) {
  return std::strerror(error);
}

ExitStatus decode(int status) {
  ExitStatus result;
  if (WIFSIGNALED(status)) {
    result.signaled = true;
    result.signal = WTERMSIG(status);
  } else if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  }
  return result;
}

std::size_t size_of(const fs::path& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) {
    return 0;
  }
  return static_cast<std::size_t>(info.st_size);
}

std::string read_from(const fs::path& path, std::size_t offset) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return {};
  }
  in.seekg(static_cast<std::streamoff>(offset));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text;
}

std::string tail_lines(const std::string& text, std::size_t lines) {
  std::size_t position = text.size();
  if (position > 0 && text[position - 1] == '\n') {
    --position;
  }
  std::size_t count = 0;
  while (position > 0) {
    std::size_t newline = text.rfind('\n', position - 1);
    if (newline == std::string::npos) {
      return text;
    }
    if (++count == lines) {
      return text.substr(newline + 1);
    }
    position = newline;
  }
  return text;
}

// Owns a posix_spawn_file_actions_t / posix_spawnattr_t.
struct SpawnSetup {
  posix_spawn_file_actions_t actions{};
  posix_spawnattr_t attributes{};
  SpawnSetup() {
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attributes);
  }
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
  }
  SpawnSetup(const SpawnSetup&) = delete;
  SpawnSetup& operator=(const SpawnSetup&) = delete;
};

std::vector<std::string> build_environment(const ProcessOptions& options) {
  std::map<std::string, std::string> variables;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    std::string text(*entry);
    auto equals = text.find('=');
    if (equals != std::string::npos) {
      variables[text.substr(0, equals)] = text.substr(equals + 1);
    }
  }
  for (const auto& name : options.unset_env) {
    variables.erase(name);
  }
  for (const auto& [name, value] : options.env) {
    variables[name] = value;
  }
  std::vector<std::string> result;
  result.reserve(variables.size());
  for (const auto& [name, value] : variables) {
    result.push_back(name + "=" + value);
  }
  return result;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> result;
  result.reserve(strings.size() + 1);
  for (auto& text : strings) {
    result.push_back(text.data());
  }
  result.push_back(nullptr);
  return result;
}

}  // namespace

std::string ExitStatus::describe() const {
  if (signaled) {
    return "signal " + std::to_string(signal) + " (" + ::strsignal(signal) + ")";
  }
  return "exit code " + std::to_string(exit_code);
}

Result<ServiceProcess> ServiceProcess::start(ProcessOptions options) {
  if (options.argv.empty() || options.argv[0].empty()) {
    return fail("ServiceProcess: empty argv");
  }
  ServiceProcess process;
  if (options.name.empty()) {
    options.name = fs::path(options.argv[0]).filename().string();
  }
  if (options.log_path.empty()) {
    auto dir = TempDir::create("log-" + options.name);
    if (!dir) {
      return fail(dir.error().context("start " + options.name));
    }
    options.log_path = dir->path() / (options.name + ".log");
    process.log_dir_ = std::move(*dir);
  }
  process.options_ = std::move(options);
  const ProcessOptions& opts = process.options_;

  int log_fd = ::open(opts.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (log_fd < 0) {
    return fail("start " + opts.name + ": cannot open log " + opts.log_path.string() + ": " +
                errno_text(errno));
  }
  struct stat info {};
  ::fstat(log_fd, &info);
  process.log_start_ = static_cast<std::size_t>(info.st_size);

  SpawnSetup setup;
  posix_spawn_file_actions_addopen(&setup.actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&setup.actions, log_fd, 1);
  posix_spawn_file_actions_adddup2(&setup.actions, log_fd, 2);
  posix_spawn_file_actions_addclosefrom_np(&setup.actions, 3);
  if (!opts.working_dir.empty()) {
    posix_spawn_file_actions_addchdir_np(&setup.actions, opts.working_dir.c_str());
  }
  sigset_t empty_mask;
  sigemptyset(&empty_mask);
  sigset_t all_signals;
  sigfillset(&all_signals);
  sigdelset(&all_signals, SIGKILL);
  sigdelset(&all_signals, SIGSTOP);
  posix_spawnattr_setflags(&setup.attributes,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&setup.attributes, 0);
  posix_spawnattr_setsigmask(&setup.attributes, &empty_mask);
  posix_spawnattr_setsigdefault(&setup.attributes, &all_signals);

  std::vector<std::string> argv_strings = opts.argv;
  std::vector<char*> argv = pointers(argv_strings);
  std::vector<std::string> env_strings = build_environment(opts);
  std::vector<char*> envp = pointers(env_strings);

  pid_t pid = -1;
  const bool search_path = opts.argv[0].find('/') == std::string::npos;
  int error = search_path ? ::posix_spawnp(&pid, argv[0], &setup.actions, &setup.attributes,
                                           argv.data(), envp.data())
                          : ::posix_spawn(&pid, argv[0], &setup.actions, &setup.attributes,
                                          argv.data(), envp.data());
  ::close(log_fd);
  if (error != 0) {
    return fail("start " + opts.name + ": cannot run " + opts.argv[0] + ": " + errno_text(error));
  }
  process.pid_ = pid;
  return process;
}

ServiceProcess::ServiceProcess(ServiceProcess&& other) noexcept
    : options_(std::move(other.options_)),
      log_dir_(std::move(other.log_dir_)),
      pid_(other.pid_),
      log_start_(other.log_start_),
      exit_status_(other.exit_status_),
      group_cleaned_(other.group_cleaned_) {
  other.pid_ = -1;
  other.log_dir_.reset();
}

ServiceProcess& ServiceProcess::operator=(ServiceProcess&& other) noexcept {
  if (this != &other) {
    release();
    options_ = std::move(other.options_);
    log_dir_ = std::move(other.log_dir_);
    pid_ = other.pid_;
    log_start_ = other.log_start_;
    exit_status_ = other.exit_status_;
    group_cleaned_ = other.group_cleaned_;
    other.pid_ = -1;
    other.log_dir_.reset();
  }
  return *this;
}

ServiceProcess::~ServiceProcess() {
  release();
}

void ServiceProcess::release() {
  if (pid_ <= 0) {
    return;
  }
  (void)stop();
  if (options_.dump_log_on_failure && ::testing::Test::HasFailure()) {
    std::cerr << "----- last lines of " << options_.name << " (pid " << pid_ << ", "
              << (exit_status_ ? exit_status_->describe() : std::string("status unknown"))
              << ", log " << options_.log_path.string() << ") -----\n"
              << log_tail(40) << "\n----- end of " << options_.name << " -----" << std::endl;
  }
  pid_ = -1;
  log_dir_.reset();
}

bool ServiceProcess::try_reap() {
  if (exit_status_) {
    return true;
  }
  if (pid_ <= 0) {
    return true;
  }
  int status = 0;
  pid_t result = ::waitpid(pid_, &status, WNOHANG);
  if (result == pid_) {
    exit_status_ = decode(status);
    return true;
  }
  if (result < 0 && errno != EINTR) {
    // ECHILD: reaped elsewhere (SIGCHLD ignored?); the status is lost.
    exit_status_ = ExitStatus{};
    return true;
  }
  return false;
}

void ServiceProcess::reap_blocking() {
  if (exit_status_ || pid_ <= 0) {
    return;
  }
  int status = 0;
  pid_t result;
  do {
    result = ::waitpid(pid_, &status, 0);
  } while (result < 0 && errno == EINTR);
  exit_status_ = result == pid_ ? decode(status) : ExitStatus{};
}

void ServiceProcess::kill_group(int signal) const {
  if (pid_ > 0) {
    ::kill(-pid_, signal);  // ESRCH when the group is gone: fine
  }
}

bool ServiceProcess::running() {
  return pid_ > 0 && !try_reap();
}

Result<ExitStatus> ServiceProcess::wait_exit(milliseconds timeout) {
  if (pid_ <= 0) {
    return fail("wait_exit: no process");
  }
  const auto deadline = Clock::now() + timeout;
  while (!try_reap()) {
    if (Clock::now() >= deadline) {
      return fail(options_.name + " (pid " + std::to_string(pid_) + ") still runs after " +
                  std::to_string(timeout.count()) + " ms");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return *exit_status_;
}

Result<ExitStatus> ServiceProcess::stop() {
  if (pid_ <= 0) {
    return fail("stop: no process");
  }
  if (!try_reap()) {
    kill_group(SIGTERM);
    const auto deadline = Clock::now() + options_.stop_grace;
    while (!try_reap() && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!exit_status_) {
      kill_group(SIGKILL);
      reap_blocking();
    }
  }
  if (!group_cleaned_) {
    kill_group(SIGKILL);  // whatever the leader left behind in its group
    group_cleaned_ = true;
  }
  return *exit_status_;
}

ExitStatus ServiceProcess::kill9() {
  if (pid_ <= 0) {
    return ExitStatus{};
  }
  if (!group_cleaned_) {
    kill_group(SIGKILL);
    group_cleaned_ = true;
  }
  reap_blocking();
  return *exit_status_;
}

Status ServiceProcess::send_signal(int signal) {
  if (pid_ <= 0 || try_reap()) {
    return fail(options_.name + " is not running");
  }
  if (::kill(pid_, signal) != 0) {
    return fail("kill " + std::to_string(pid_) + ": " + errno_text(errno));
  }
  return {};
}

std::string ServiceProcess::log_text() const {
  if (options_.log_path.empty()) {
    return {};
  }
  return read_from(options_.log_path, log_start_);
}

std::string ServiceProcess::log_tail(std::size_t lines) const {
  return tail_lines(log_text(), lines);
}

std::size_t ServiceProcess::log_offset() const {
  std::size_t size = size_of(options_.log_path);
  return size > log_start_ ? size - log_start_ : 0;
}

namespace {

Result<std::string> wait_for_line_impl(ServiceProcess& process,
                                       const std::function<bool(const std::string&)>& matches,
                                       const std::string& description, milliseconds timeout,
                                       std::size_t from_offset, std::size_t log_start) {
  const auto deadline = Clock::now() + timeout;
  std::size_t scanned = from_offset;  // relative to log_start: start of the first unread line
  while (true) {
    const bool exited = !process.running();  // before reading: then the read sees all output
    std::string text = read_from(process.log_path(), log_start + scanned);
    std::size_t line_start = 0;
    while (true) {
      std::size_t newline = text.find('\n', line_start);
      if (newline == std::string::npos) {
        break;
      }
      std::string line = text.substr(line_start, newline - line_start);
      if (matches(line)) {
        return line;
      }
      line_start = newline + 1;
    }
    if (exited) {
      std::string partial = text.substr(line_start);
      if (!partial.empty() && matches(partial)) {
        return partial;
      }
      return fail(process.name() + " exited (" + process.exit_status()->describe() +
                  ") without printing a line " + description + "; its last lines:\n" +
                  process.log_tail(20));
    }
    scanned += line_start;
    if (Clock::now() >= deadline) {
      return fail(process.name() + " printed no line " + description + " within " +
                  std::to_string(timeout.count()) + " ms; its last lines:\n" +
                  process.log_tail(20));
    }
    std::this_thread::sleep_for(kPollInterval);
  }
}

}  // namespace

Result<std::string> ServiceProcess::wait_for_line(const std::regex& pattern, milliseconds timeout,
                                                  std::size_t from_offset) {
  return wait_for_line_impl(
      *this, [&pattern](const std::string& line) { return std::regex_search(line, pattern); },
      "matching the pattern", timeout, from_offset, log_start_);
}

Result<std::string> ServiceProcess::wait_for_line(
    const std::function<bool(const std::string&)>& predicate, milliseconds timeout,
    std::size_t from_offset) {
  return wait_for_line_impl(*this, predicate, "accepted by the predicate", timeout, from_offset,
                            log_start_);
}

Result<std::string> ServiceProcess::wait_for_line(std::string_view substring, milliseconds timeout,
                                                  std::size_t from_offset) {
  return wait_for_line_impl(
      *this,
      [substring](const std::string& line) { return line.find(substring) != std::string::npos; },
      "containing \"" + std::string(substring) + "\"", timeout, from_offset, log_start_);
}

Status ServiceProcess::wait_for_port(std::uint16_t port, milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    if (!running()) {
      return fail(options_.name + " exited (" + exit_status_->describe() +
                  ") before listening on 127.0.0.1:" + std::to_string(port) +
                  "; its last lines:\n" + log_tail(20));
    }
    if (port_accepts(port)) {
      return {};
    }
    if (Clock::now() >= deadline) {
      return fail(options_.name + " did not listen on 127.0.0.1:" + std::to_string(port) +
                  " within " + std::to_string(timeout.count()) + " ms; its last lines:\n" +
                  log_tail(20));
    }
    std::this_thread::sleep_for(kPollInterval);
  }
}

bool process_alive(pid_t pid) {
  if (pid <= 0) {
    return false;
  }
  if (::kill(pid, 0) != 0 && errno == ESRCH) {
    return false;
  }
  // "<pid> (<comm>) <state> ...": comm may contain spaces and parentheses.
  auto stat = read_from("/proc/" + std::to_string(pid) + "/stat", 0);
  auto paren = stat.rfind(')');
  if (stat.empty() || paren == std::string::npos || paren + 2 >= stat.size()) {
    return ::kill(pid, 0) == 0;
  }
  const char state = stat[paren + 2];
  return state != 'Z' && state != 'X';
}

bool wait_process_gone(pid_t pid, milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (process_alive(pid)) {
    if (Clock::now() >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

Result<ProcessOutput> run_process(std::vector<std::string> argv, milliseconds timeout) {
  ProcessOptions options;
  options.argv = std::move(argv);
  options.dump_log_on_failure = false;
  auto process = ServiceProcess::start(std::move(options));
  if (!process) {
    return fail(process.error());
  }
  auto status = process->wait_exit(timeout);
  if (!status) {
    process->kill9();
    return fail(status.error().context("run_process").message() + "; output:\n" +
                process->log_tail(20));
  }
  return ProcessOutput{*status, process->log_text()};
}

}  // namespace upparat::test
