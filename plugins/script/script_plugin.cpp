// The script plugin: the classic Upparat hooks. Each step runs a configured executable with
// the classic arguments and maps its exit status to a step result (see docs/script-plugin.md).

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <upparat/plugin.hpp>
#include <upparat/step.hpp>

#include "common/text.hpp"
#include "process/process.hpp"

namespace upparat::script {
namespace {

using sdk::Config;
using sdk::Job;
using sdk::Logger;
using sdk::StepContext;
using sdk::StepResult;

constexpr int kRetryLaterExitCode = 3;
/// Longest reason handed to the host (which cuts at 1024 characters anyway).
constexpr std::size_t kMaxReasonBytes = 1000;
/// How many of the last stderr lines a failure reports.
constexpr std::size_t kStderrLinesInReason = 3;
constexpr double kMaxKillGraceSeconds = 3600;

/// Checks that a configured hook can run: an absolute path to an executable regular file.
std::string check_hook(const std::string& name, const std::string& path) {
  const std::string what = "hook '" + name + "' (" + path + ")";
  if (path.front() != '/') {
    throw std::invalid_argument(what + ": the path must be absolute");
  }
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) {
    const int error = errno;
    if (error == ENOENT || error == ENOTDIR) {
      throw std::invalid_argument(what + ": no such file");
    }
    throw std::invalid_argument(what + ": " + std::strerror(error));
  }
  if (!S_ISREG(info.st_mode)) {
    throw std::invalid_argument(what + ": not a regular file");
  }
  if (::access(path.c_str(), X_OK) != 0) {
    throw std::invalid_argument(what + ": not executable (chmod +x " + path + ")");
  }
  return path;
}

double parse_grace(const std::string& text) {
  const std::string what = "kill_grace_seconds = '" + text + "'";
  // Plain decimal only: strtod alone would also take " 5", "0x10" or "inf".
  if (text.empty() || text.find_first_not_of("0123456789.") != std::string::npos) {
    throw std::invalid_argument(what + ": expected a number of seconds, e.g. 10 or 2.5");
  }
  errno = 0;
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (errno != 0 || end != text.c_str() + text.size() || !std::isfinite(value)) {
    throw std::invalid_argument(what + ": expected a number of seconds, e.g. 10 or 2.5");
  }
  if (value > kMaxKillGraceSeconds) {
    throw std::invalid_argument(what + ": must be at most 3600");
  }
  return value;
}

/// The last non-blank lines of a stderr tail, oldest first, joined with " | ".
std::string last_lines(std::string_view tail, std::size_t count) {
  std::vector<std::string_view> lines;
  while (!tail.empty() && lines.size() < count) {
    const std::size_t newline = tail.rfind('\n');
    const std::string_view line =
        newline == std::string_view::npos ? tail : tail.substr(newline + 1);
    if (!trim(line).empty()) {
      lines.push_back(trim(line));
    }
    tail = newline == std::string_view::npos ? std::string_view() : tail.substr(0, newline);
  }
  std::string joined;
  for (auto it = lines.rbegin(); it != lines.rend(); ++it) {
    if (!joined.empty()) {
      joined += " | ";
    }
    joined.append(it->data(), it->size());
  }
  return joined;
}

/// Keeps the end of `text` (the most recent output), at most `max` bytes, never starting
/// inside a UTF-8 sequence.
std::string keep_end(std::string text, std::size_t max) {
  if (text.size() <= max) {
    return text;
  }
  if (max < 4) {
    return {};
  }
  std::size_t start = text.size() - max + 3;
  while (start < text.size() && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) {
    ++start;
  }
  return "..." + text.substr(start);
}

class ScriptPlugin : public sdk::Plugin {
 public:
  ScriptPlugin(const Config& config, const Logger& logger) : logger_(logger) {
    for (const auto& [key, value] : config) {
      if (key == "kill_grace_seconds") {
        kill_grace_ = std::chrono::milliseconds(
            static_cast<long long>(std::llround(parse_grace(value) * 1000.0)));
      } else if (auto* hook = hook_slot(key)) {
        // An empty value is no hook, like an empty entry in the Python version's [hooks].
        if (!value.empty()) {
          *hook = check_hook(key, value);
        }
      } else if (key == "retry_interval" || key == "max_retries") {
        throw std::invalid_argument("unknown key '" + key +
                                    "': retries are a daemon setting, put it under [retry]");
      } else {
        throw std::invalid_argument(
            "unknown key '" + key +
            "' (the script plugin knows version, download, install, restart, ready, "
            "kill_grace_seconds)");
      }
    }
  }

  /// The steps with a hook: a step without one is a missing hook, which the daemon neither
  /// announces nor runs (the classic contract: no install hook, no installation_start).
  std::uint32_t steps() const {
    std::uint32_t mask = 0;
    for (Step step : kSteps) {
      if (hooks_[index(step)]) {
        mask |= step_bit(step);
      }
    }
    return mask;
  }

  StepResult version(const Job& job, StepContext& ctx) override {
    StepResult result = run_hook(Step::Version, job, {}, ctx, false);
    if (result.code() == UPPARAT_OK && result.text().empty()) {
      return StepResult::failed("version hook exited with 0 but printed no version");
    }
    return result;
  }
  StepResult download(const Job& job, StepContext& ctx) override {
    return run_hook(Step::Download, job, {}, ctx, false);
  }
  StepResult install(const Job& job, StepContext& ctx) override {
    if (hooks_[index(Step::Install)] && !job.file) {
      return StepResult::failed("install hook needs a downloaded file (no file given)");
    }
    return run_hook(Step::Install, job, job.file.value_or(""), ctx, true);
  }
  StepResult restart(const Job& job, StepContext& ctx) override {
    return run_hook(Step::Restart, job, job.force ? "True" : "False", ctx, false);
  }
  StepResult ready(const Job& job, StepContext& ctx) override {
    return run_hook(Step::Ready, job, {}, ctx, false);
  }

 private:
  // The classic hooks are named like the steps.
  std::optional<std::string>* hook_slot(const std::string& key) {
    const auto step = parse_step(key);
    return step ? &hooks_[index(*step)] : nullptr;
  }

  StepResult run_hook(Step step, const Job& job, std::optional<std::string> fourth,
                      StepContext& ctx, bool progress) {
    const std::string name(to_string(step));
    const std::optional<std::string>& path = hooks_[index(step)];
    if (!path) {
      return StepResult::not_supported();
    }
    process::RunOptions options;
    options.argv = {*path, std::to_string(job.seconds_since_first), std::to_string(job.retry_count),
                    job.meta};
    if (fourth) {
      options.argv.push_back(std::move(*fourth));
    }
    // The signing certificate that verified a signed job's file; "" when unsigned.
    options.environment = {"UPPARAT_SIGNER=" + job.signer};
    options.stop_fd = ctx.stop_fd();
    options.should_stop = [&ctx] { return ctx.should_stop(); };
    options.kill_grace = kill_grace_;
    if (progress) {
      options.on_stdout_line = [&ctx](std::string_view line) {
        // Like the Python version: surrounding whitespace is dropped, blank lines skipped.
        const std::string_view text = trim(line);
        if (!text.empty()) {
          ctx.progress(std::string(text), -1);
        }
      };
    }
    logger_.debug(std::string("running ") + name + " hook " + *path);

    const auto ran = process::run(options);
    if (!ran) {
      logger_.error(std::string(name) + " hook: " + ran.error().message());
      return StepResult::failed(keep_end(ran.error().message(), kMaxReasonBytes));
    }
    const process::RunResult& r = *ran;
    if (r.stopped) {
      logger_.info(std::string(name) + " hook stopped (" + r.describe() + ")");
      return StepResult::failed("stopped");
    }
    if (r.exited && r.exit_code == 0) {
      return StepResult::ok(std::string(trim(r.last_stdout_line)));
    }
    std::string reason = r.describe();
    std::string detail = last_lines(r.stderr_tail, kStderrLinesInReason);
    if (detail.empty()) {
      detail = std::string(trim(r.last_stdout_line));
    }
    if (r.exited && r.exit_code == kRetryLaterExitCode) {
      logger_.info(std::string(name) + " hook asks to retry later");
      return StepResult::retry_later(detail.empty() ? "retry later"
                                                    : keep_end(detail, kMaxReasonBytes));
    }
    if (!detail.empty()) {
      reason += ": " + keep_end(detail, kMaxReasonBytes - reason.size() - 2);
    }
    logger_.warn(std::string(name) + " hook failed: " + reason);
    return StepResult::failed(reason);
  }

  Logger logger_;
  PerStep<std::optional<std::string>> hooks_;
  std::chrono::milliseconds kill_grace_{10'000};
};

}  // namespace
}  // namespace upparat::script

UPPARAT_PLUGIN(upparat::script::ScriptPlugin, "script", UPPARAT_SCRIPT_PLUGIN_VERSION, "Apache-2.0",
               "Runs the classic Upparat hook executables", 0)
