#pragma once

// Small helpers of the process and script plugin tests: a scratch directory, and waiting for
// pid files and for processes to die.

#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>

namespace upparat::test_util {

/// A private directory under $TMPDIR (or /tmp), removed with everything in it.
class ScratchDir {
 public:
  ScratchDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/upparat-script-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw std::runtime_error("mkdtemp failed for " + pattern);
    }
    path_ = pattern;
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }

  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

  /// Writes `content` to path()/name with permission bits `mode`; returns the full path.
  std::string write(const std::string& name, const std::string& content, mode_t mode) const {
    const auto file = path_ / name;
    {
      std::ofstream out(file, std::ios::binary | std::ios::trunc);
      out << content;
      if (!out) {
        throw std::runtime_error("cannot write " + file.string());
      }
    }
    if (::chmod(file.c_str(), mode) != 0) {
      throw std::runtime_error("chmod " + file.string());
    }
    return file.string();
  }

 private:
  std::filesystem::path path_;
};

inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

/// True when `pid` no longer runs (gone, or a zombie nobody reaped yet), waiting up to `timeout`.
inline bool process_gone(pid_t pid, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    if (!stat) {
      return true;
    }
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    const auto paren = text.rfind(')');
    if (paren != std::string::npos && paren + 2 < text.size() &&
        (text[paren + 2] == 'Z' || text[paren + 2] == 'X')) {
      return true;
    }
    if (std::chrono::steady_clock::now() >= until) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

/// Waits until `path` exists and holds a pid; returns it, or -1 at the timeout.
inline pid_t wait_for_pid_file(const std::filesystem::path& path,
                               std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const pid_t pid = static_cast<pid_t>(std::atoi(read_text(path).c_str()));
    if (pid > 0) {
      return pid;
    }
    if (std::chrono::steady_clock::now() >= until) {
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

/// Kills a process the test started, if it is still there (cleanup after a failed assertion).
inline void kill_if_running(pid_t pid) {
  if (pid > 0 && !process_gone(pid, std::chrono::milliseconds(0))) {
    ::kill(pid, SIGKILL);
  }
}

}  // namespace upparat::test_util
