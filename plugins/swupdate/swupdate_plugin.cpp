// The SWUpdate plugin: installs a .swu through a running SWUpdate daemon over its IPC
// (libswupdate), from the downloaded file or streamed from the host's download, reads the
// installed version from a file or a command, runs a health command for ready, and restarts
// with a command, through systemd-logind, or with SWUpdate's post-update command (see
// docs/swupdate-plugin.md).

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include <upparat/plugin.hpp>

#include "process/process.hpp"
#include "swupdate/swupdate_client.hpp"
#include "system/system.hpp"

namespace upparat::swupdate {
namespace {

using sdk::Config;
using sdk::Job;
using sdk::Logger;
using sdk::StepContext;
using sdk::StepResult;

/// Longest reason handed to the host (which cuts at 1024 characters anyway).
constexpr std::size_t kMaxReasonBytes = 1000;
constexpr double kMaxTimeoutSeconds = 86400;
constexpr int kRetryLaterExitCode = 3;
/// How long systemd-logind may take to answer the reboot request (polkit included).
constexpr std::chrono::seconds kLogindCallTimeout{25};

/// How the restart step restarts the device.
enum class RestartMethod {
  None,      ///< The step is not served.
  Command,   ///< restart_command.
  Logind,    ///< Reboot(false) through systemd-logind.
  Swupdate,  ///< SWUpdate's post-update command (swupdate -p), over its IPC.
};

const char* const kKnownKeys =
    "dry_run, software_set, running_mode, progress_socket, control_socket_dir, "
    "answer_timeout_seconds, stall_timeout_seconds, result_timeout_seconds, stop_wait_seconds, "
    "version_file, version_name, version_key, version_command, ready_command, "
    "ready_timeout_seconds, restart, restart_command, logind_bus_address, reboot_wait_seconds, "
    "post_update_reboots";

std::string_view trim(std::string_view text) {
  const auto space = [](char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
  };
  while (!text.empty() && space(text.front())) {
    text.remove_prefix(1);
  }
  while (!text.empty() && space(text.back())) {
    text.remove_suffix(1);
  }
  return text;
}

/// Keeps the end of `text` (the most recent messages), at most `max` bytes, never starting
/// inside a UTF-8 sequence.
std::string keep_end(const std::string& text, std::size_t max) {
  if (text.size() <= max) {
    return text;
  }
  std::size_t start = text.size() - max + 3;
  while (start < text.size() && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) {
    ++start;
  }
  return "..." + text.substr(start);
}

std::chrono::milliseconds parse_seconds(const std::string& key, const std::string& text) {
  const std::string what = key + " = '" + text + "'";
  // Plain decimal only: strtod alone would also take " 5", "0x10" or "inf".
  if (text.empty() || text.find_first_not_of("0123456789.") != std::string::npos) {
    throw std::invalid_argument(what + ": expected a number of seconds, e.g. 10 or 2.5");
  }
  errno = 0;
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (errno != 0 || end != text.c_str() + text.size() || !std::isfinite(value) || value <= 0) {
    throw std::invalid_argument(what + ": expected a number of seconds above 0, e.g. 10 or 2.5");
  }
  if (value > kMaxTimeoutSeconds) {
    throw std::invalid_argument(what + ": must be at most 86400");
  }
  return std::chrono::milliseconds(static_cast<long long>(std::llround(value * 1000.0)));
}

/// A configured command: an absolute path to an executable regular file (run without a shell).
std::string check_command(const std::string& key, const std::string& path) {
  const std::string what = key + " (" + path + ")";
  if (path.empty() || path.front() != '/') {
    throw std::invalid_argument(what + ": the path must be absolute");
  }
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0 || !S_ISREG(info.st_mode)) {
    throw std::invalid_argument(what + ": no such file");
  }
  if (::access(path.c_str(), X_OK) != 0) {
    throw std::invalid_argument(what + ": not executable (chmod +x " + path + ")");
  }
  return path;
}

/// The version of `name` in an sw-versions file ("name version" per line, '#' comments).
std::optional<std::string> sw_versions_lookup(std::istream& in, const std::string& name) {
  std::string line;
  while (std::getline(in, line)) {
    const std::string_view text = trim(line);
    if (text.empty() || text.front() == '#') {
      continue;
    }
    const std::size_t gap = text.find_first_of(" \t");
    if (gap == std::string_view::npos || text.substr(0, gap) != name) {
      continue;
    }
    const std::string_view version = trim(text.substr(gap));
    if (!version.empty()) {
      return std::string(version);
    }
  }
  return std::nullopt;
}

/// The value of `key` in a KEY=value file (like /etc/os-release; quotes removed).
std::optional<std::string> key_file_lookup(std::istream& in, const std::string& key) {
  std::string line;
  while (std::getline(in, line)) {
    const std::string_view text = trim(line);
    const std::size_t equals = text.find('=');
    if (text.empty() || text.front() == '#' || equals == std::string_view::npos ||
        trim(text.substr(0, equals)) != key) {
      continue;
    }
    std::string_view value = trim(text.substr(equals + 1));
    if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') &&
        value.back() == value.front()) {
      value = value.substr(1, value.size() - 2);
    }
    if (!value.empty()) {
      return std::string(value);
    }
  }
  return std::nullopt;
}

class SwupdatePlugin : public sdk::Plugin {
 public:
  SwupdatePlugin(const Config& config, const Logger& logger) : logger_(logger) {
    for (const auto& [key, value] : config) {
      if (key == "dry_run") {
        options_.dry_run = plugin_system::parse_bool(key, value);
      } else if (key == "software_set") {
        options_.software_set = value;
      } else if (key == "running_mode") {
        options_.running_mode = value;
      } else if (key == "progress_socket") {
        options_.progress_socket = value;
      } else if (key == "control_socket_dir") {
        control_socket_dir_ = value;
      } else if (key == "answer_timeout_seconds") {
        options_.answer_timeout = parse_seconds(key, value);
      } else if (key == "stall_timeout_seconds") {
        options_.stall_timeout = parse_seconds(key, value);
      } else if (key == "result_timeout_seconds") {
        options_.result_timeout = parse_seconds(key, value);
      } else if (key == "stop_wait_seconds") {
        options_.stop_wait = parse_seconds(key, value);
      } else if (key == "version_file") {
        version_file_ = value;
      } else if (key == "version_name") {
        version_name_ = value;
      } else if (key == "version_key") {
        version_key_ = value;
      } else if (key == "version_command") {
        version_command_ = check_command(key, value);
      } else if (key == "ready_command") {
        ready_command_ = check_command(key, value);
      } else if (key == "ready_timeout_seconds") {
        ready_timeout_ = parse_seconds(key, value);
      } else if (key == "restart") {
        restart_ = parse_restart(value);
      } else if (key == "restart_command") {
        restart_command_ = check_command(key, value);
      } else if (key == "logind_bus_address") {
        logind_bus_address_ = value;
      } else if (key == "reboot_wait_seconds") {
        reboot_wait_ = parse_seconds(key, value);
      } else if (key == "post_update_reboots") {
        post_update_reboots_ = plugin_system::parse_bool(key, value);
      } else {
        throw std::invalid_argument("unknown key '" + key + "' (the swupdate plugin knows " +
                                    kKnownKeys + ")");
      }
    }
    check_combinations();
  }

  std::uint32_t steps() const {
    return UPPARAT_STEP_INSTALL | (version_file_ || version_command_ ? UPPARAT_STEP_VERSION : 0U) |
           (ready_command_ ? UPPARAT_STEP_READY : 0U) |
           (restart_ != RestartMethod::None ? UPPARAT_STEP_RESTART : 0U);
  }

  StepResult version(const Job& job, StepContext& ctx) override {
    if (version_command_) {
      StepResult result = run_command("version_command", *version_command_, job, ctx);
      if (result.code() == UPPARAT_OK && result.text().empty()) {
        return StepResult::failed("version_command exited with 0 but printed no version");
      }
      return result;
    }
    std::ifstream in(*version_file_);
    if (!in) {
      return StepResult::failed("version_file " + *version_file_ + ": " + std::strerror(errno));
    }
    const auto found =
        version_name_ ? sw_versions_lookup(in, *version_name_) : key_file_lookup(in, *version_key_);
    if (!found) {
      return StepResult::failed(
          "version_file " + *version_file_ + " has no " +
          (version_name_ ? "line for '" + *version_name_ + "'" : "key '" + *version_key_ + "'"));
    }
    return StepResult::ok(*found);
  }

  StepResult install(const Job& job, StepContext& ctx) override {
    if (ctx.stream_fd() >= 0) {
      // A streamed install (`stream = true`): the bytes come while the host downloads them,
      // and only the host knows at their end whether the file is whole.
      return install_from(ctx.stream_fd(), job, ctx, [&ctx](std::string& reason) {
        std::string why;
        if (ctx.stream_end(&why) == UPPARAT_STREAM_COMPLETE) {
          return true;
        }
        reason =
            "the stream failed, so SWUpdate was not given the archive's end and aborted "
            "the install: " +
            why;
        return false;
      });
    }
    if (!job.file) {
      return StepResult::failed(
          "the swupdate plugin installs a downloaded file or a stream (`stream = true`); the host "
          "gave neither");
    }
    // The daemon owns the downloaded file; never follow a link put in its place.
    const int fd = ::open(job.file->c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
      return StepResult::failed("cannot open " + *job.file + ": " + std::strerror(errno));
    }
    StepResult result = install_from(fd, job, ctx);
    ::close(fd);
    return result;
  }

  StepResult ready(const Job& job, StepContext& ctx) override {
    return run_command("ready_command", *ready_command_, job, ctx);
  }

  StepResult restart(const Job& job, StepContext& ctx) override {
    switch (restart_) {
      case RestartMethod::None:
        break;
      case RestartMethod::Command:
        return run_command("restart_command", *restart_command_, job, ctx);
      case RestartMethod::Logind:
        if (auto rebooted =
                plugin_system::reboot_via_logind(logind_bus_address_, kLogindCallTimeout);
            !rebooted) {
          return StepResult::failed(keep_end(rebooted.error().message(), kMaxReasonBytes));
        }
        return wait_for_reboot(ctx);
      case RestartMethod::Swupdate: {
        logger_.info("asking SWUpdate to run its post-update command");
        const InstallResult ran = post_update(reboot_wait_, ctx.stop_fd());
        if (ran.outcome == Outcome::RetryLater) {
          return StepResult::retry_later(keep_end(ran.reason, kMaxReasonBytes));
        }
        if (ran.outcome != Outcome::Succeeded) {
          return StepResult::failed(keep_end(ran.reason, kMaxReasonBytes));
        }
        logger_.info("SWUpdate: " +
                     (ran.reason.empty() ? std::string("post-update done") : ran.reason));
        if (!post_update_reboots_) {
          return StepResult::ok();
        }
        return wait_for_reboot(ctx);
      }
    }
    return StepResult::not_supported();
  }

 private:
  static RestartMethod parse_restart(const std::string& value) {
    if (value == "command") {
      return RestartMethod::Command;
    }
    if (value == "logind") {
      return RestartMethod::Logind;
    }
    if (value == "swupdate") {
      return RestartMethod::Swupdate;
    }
    throw std::invalid_argument("restart = '" + value +
                                "': expected command (restart_command), logind (reboot through "
                                "systemd-logind) or swupdate (SWUpdate's post-update command)");
  }

  /// After a reboot was requested: the system goes down and the step never returns. Returning
  /// means that it still runs after reboot_wait_seconds, or that the step was stopped.
  StepResult wait_for_reboot(StepContext& ctx) {
    logger_.info("reboot requested; waiting for the system to go down");
    return StepResult::failed(plugin_system::wait_for_reboot(
        ctx.stop_fd(), [&ctx] { return ctx.should_stop(); }, reboot_wait_));
  }

  void check_combinations() {
    if (options_.software_set.empty() != options_.running_mode.empty()) {
      throw std::invalid_argument(
          "software_set and running_mode go together (swupdate -e set,mode): set both or "
          "neither");
    }
    if (version_name_ && version_key_) {
      throw std::invalid_argument(
          "version_name (sw-versions file) and version_key (KEY=value "
          "file) exclude each other: set one");
    }
    if (version_file_ && version_command_) {
      throw std::invalid_argument("version_file and version_command exclude each other: set one");
    }
    if (version_file_ && !version_name_ && !version_key_) {
      throw std::invalid_argument(
          "version_file needs version_name (an sw-versions file: name "
          "and version per line) or version_key (KEY=value lines)");
    }
    if (!version_file_ && (version_name_ || version_key_)) {
      throw std::invalid_argument("version_name and version_key need version_file");
    }
    if (restart_ == RestartMethod::None && restart_command_) {
      restart_ = RestartMethod::Command;
    }
    if (restart_ == RestartMethod::Command && !restart_command_) {
      throw std::invalid_argument("restart = 'command' needs restart_command");
    }
    if (restart_ != RestartMethod::Command && restart_command_) {
      throw std::invalid_argument(
          "restart_command is used only with restart = 'command' (remove one of them)");
    }
    if (control_socket_dir_) {
      // libswupdate builds its control socket's path from $TMPDIR once per process and offers
      // no way to set it: the setting can only be checked.
      const std::string expected = *control_socket_dir_ + "/sockinstctrl";
      const std::string actual = control_socket_path();
      if (actual != expected) {
        throw std::invalid_argument(
            "control_socket_dir = '" + *control_socket_dir_ + "', but libswupdate connects to " +
            actual + " (it takes the folder from $TMPDIR): set TMPDIR=" + *control_socket_dir_ +
            " in the daemon's environment (config/upparat-swupdate.conf)");
      }
    }
  }

  /// Installs the archive read from `fd`: the downloaded file, or the host's stream with
  /// `source_end` telling whether it ended whole.
  StepResult install_from(int fd, const Job& job, StepContext& ctx,
                          std::function<bool(std::string&)> source_end = {}) {
    InstallOptions options = options_;
    options.info = "upparat " + job.id;
    InstallIo io;
    io.source_fd = fd;
    io.stop_fd = ctx.stop_fd();
    io.on_progress = [&ctx](const Progress& p) { ctx.progress(p.line, p.percent); };
    io.on_message = [this](const std::string& message) { logger_.debug("swupdate: " + message); };
    io.source_end = std::move(source_end);
    logger_.info("installing " + job.id + " through SWUpdate on " + control_socket_path() +
                 (io.source_end ? " (streamed)" : "") + (options.dry_run ? " (dry run)" : ""));
    const InstallResult result = swupdate::install(options, io);
    switch (result.outcome) {
      case Outcome::Succeeded:
        logger_.info("SWUpdate installed " + job.id);
        return StepResult::ok();
      case Outcome::RetryLater:
        logger_.warn(result.reason);
        return StepResult::retry_later(keep_end(result.reason, kMaxReasonBytes));
      case Outcome::Stopped:
        logger_.info(result.reason);
        return StepResult::failed("stopped: " + result.reason);
      case Outcome::Failed:
        break;
    }
    logger_.warn("install failed: " + result.reason);
    return StepResult::failed(keep_end(result.reason, kMaxReasonBytes));
  }

  /// Runs a configured command: exit 0 is OK (its last output line the text), 3 RETRY_LATER,
  /// anything else FAILED with the end of its stderr.
  StepResult run_command(const std::string& what, const std::string& path, const Job& job,
                         StepContext& ctx) {
    (void)job;
    process::RunOptions run;
    run.argv = {path};
    run.stop_fd = ctx.stop_fd();
    if (what == "ready_command") {
      run.deadline = std::chrono::steady_clock::now() + ready_timeout_;
    }
    run.should_stop = [&ctx] { return ctx.should_stop(); };
    const auto ran = process::run(run);
    if (!ran) {
      return StepResult::failed(what + ": " + ran.error().message());
    }
    const process::RunResult& r = *ran;
    if (r.timed_out) {
      return StepResult::failed(what + " did not end within " +
                                std::to_string((ready_timeout_.count() + 999) / 1000) +
                                " s and was killed");
    }
    if (r.stopped) {
      return StepResult::failed(what + " stopped");
    }
    if (r.exited && r.exit_code == 0) {
      return StepResult::ok(std::string(trim(r.last_stdout_line)));
    }
    const std::string detail(trim(r.stderr_tail));
    if (r.exited && r.exit_code == kRetryLaterExitCode) {
      return StepResult::retry_later(
          keep_end(detail.empty() ? what + " asks to retry later" : detail, kMaxReasonBytes));
    }
    return StepResult::failed(
        keep_end(what + " failed (" + r.describe() + ")" + (detail.empty() ? "" : ": " + detail),
                 kMaxReasonBytes));
  }

  Logger logger_;
  InstallOptions options_;
  std::optional<std::string> control_socket_dir_;
  std::optional<std::string> version_file_;
  std::optional<std::string> version_name_;
  std::optional<std::string> version_key_;
  std::optional<std::string> version_command_;
  std::optional<std::string> ready_command_;
  std::optional<std::string> restart_command_;
  std::chrono::milliseconds ready_timeout_{60000};
  RestartMethod restart_ = RestartMethod::None;
  std::string logind_bus_address_;
  std::chrono::milliseconds reboot_wait_{300000};
  bool post_update_reboots_ = true;
};

}  // namespace
}  // namespace upparat::swupdate

UPPARAT_PLUGIN(upparat::swupdate::SwupdatePlugin, "swupdate", UPPARAT_SWUPDATE_PLUGIN_VERSION,
               "Apache-2.0", "Installs .swu archives through a running SWUpdate daemon",
               UPPARAT_CAP_INSTALL_STREAM)
