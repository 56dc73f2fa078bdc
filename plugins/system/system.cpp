#include "system/system.hpp"

#include <poll.h>
#include <sdbus-c++/sdbus-c++.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string_view>

#include "process/process.hpp"

namespace upparat::plugin_system {
namespace {

/// Longest part of a command's stderr a failure quotes.
constexpr std::size_t kMaxStderrInError = 600;

std::string_view trim(std::string_view text) {
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!text.empty() && space(text.front())) {
    text.remove_prefix(1);
  }
  while (!text.empty() && space(text.back())) {
    text.remove_suffix(1);
  }
  return text;
}

/// The value of an os-release line: quotes removed, backslash escapes in double quotes.
std::string unquote(std::string_view value) {
  value = trim(value);
  if (value.size() >= 2 && value.front() == '\'' && value.back() == '\'') {
    return std::string(value.substr(1, value.size() - 2));
  }
  if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
    std::string out;
    value = value.substr(1, value.size() - 2);
    for (std::size_t i = 0; i < value.size(); ++i) {
      if (value[i] == '\\' && i + 1 < value.size()) {
        ++i;
      }
      out += value[i];
    }
    return out;
  }
  return std::string(value);
}

// The socket of a `unix:path=...` bus address, or "" for any other kind of address.
std::string unix_socket_path(const std::string& address) {
  constexpr std::string_view kPrefix = "unix:path=";
  if (address.compare(0, kPrefix.size(), kPrefix) != 0) {
    return {};
  }
  const auto end = address.find(',', kPrefix.size());
  return address.substr(kPrefix.size(), end == std::string::npos ? end : end - kPrefix.size());
}

}  // namespace

Status check_bus_socket(const std::string& bus_address) {
  if (const auto socket = unix_socket_path(bus_address);
      !socket.empty() && ::access(socket.c_str(), F_OK) != 0) {
    return fail("no D-Bus socket at " + socket + ": " + std::strerror(errno));
  }
  return {};
}

std::string wait_for_reboot(int stop_fd, const std::function<bool()>& should_stop,
                            std::chrono::milliseconds wait) {
  pollfd fd{stop_fd, POLLIN, 0};
  const int ready = ::poll(&fd, 1, static_cast<int>(wait.count()));
  if (ready > 0 || (should_stop && should_stop())) {
    return "stopped while waiting for the reboot";
  }
  return "the reboot was requested, but the system still runs after " +
         std::to_string((wait.count() + 999) / 1000) + " s";
}

bool parse_bool(const std::string& key, const std::string& value) {
  if (value == "true") {
    return true;
  }
  if (value == "false") {
    return false;
  }
  throw std::invalid_argument(key + " = '" + value + "': expected true or false");
}

Status reboot_via_logind(const std::string& bus_address, std::chrono::milliseconds timeout) {
  const std::string where = bus_address.empty() ? "the system bus" : bus_address;
  if (auto socket = check_bus_socket(bus_address); !socket) {
    return fail("cannot ask systemd-logind on " + where +
                " to reboot: " + socket.error().message());
  }
  try {
    auto connection = bus_address.empty()
                          ? sdbus::createSystemBusConnection()
                          : sdbus::createSessionBusConnectionWithAddress(bus_address);
    auto proxy =
        sdbus::createProxy(*connection, "org.freedesktop.login1", "/org/freedesktop/login1");
    proxy->callMethod("Reboot")
        .onInterface("org.freedesktop.login1.Manager")
        .withTimeout(timeout)
        .withArguments(false);
    return {};
  } catch (const sdbus::Error& e) {
    std::string message = "systemd-logind on " + where + " refused the reboot: " + e.getName() +
                          ": " + e.getMessage();
    if (e.getName() == "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired" ||
        e.getName() == "org.freedesktop.DBus.Error.AccessDenied") {
      message += " (install the polkit rule config/50-upparat-reboot.rules for the daemon's user)";
    }
    return fail(message);
  } catch (const std::exception& e) {
    return fail("cannot ask systemd-logind on " + where + " to reboot: " + e.what());
  }
}

Status run_health_command(const HealthCommand& command) {
  if (command.argv.empty() || command.argv.front().empty()) {
    return fail("no health command given");
  }
  process::RunOptions options;
  options.argv = command.argv;
  options.stop_fd = command.stop_fd;
  options.should_stop = command.should_stop;
  options.deadline = std::chrono::steady_clock::now() + command.timeout;
  options.kill_grace = std::chrono::milliseconds(2000);
  const std::string what = command.name + " " + command.argv.front();
  auto ran = process::run(options);
  if (!ran) {
    return fail(ran.error().context(what));
  }
  if (ran->timed_out) {
    return fail(
        what + " timed out after " +
        std::to_string(std::chrono::duration_cast<std::chrono::seconds>(command.timeout).count()) +
        " s");
  }
  if (ran->stopped) {
    return fail(what + " stopped");
  }
  if (ran->exited && ran->exit_code == 0) {
    return {};
  }
  std::string message = what + " failed: " + ran->describe();
  std::string tail(trim(ran->stderr_tail));
  if (tail.empty()) {
    tail = std::string(trim(ran->last_stdout_line));
  }
  if (tail.size() > kMaxStderrInError) {
    tail = "..." + tail.substr(tail.size() - kMaxStderrInError);
  }
  if (!tail.empty()) {
    message += ": " + tail;
  }
  return fail(message);
}

Result<std::string> read_release_key(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  if (!in) {
    return fail("cannot read " + path + ": " + std::strerror(errno));
  }
  for (std::string line; std::getline(in, line);) {
    std::string_view text = trim(line);
    if (text.empty() || text.front() == '#') {
      continue;
    }
    const auto equals = text.find('=');
    if (equals == std::string_view::npos || trim(text.substr(0, equals)) != key) {
      continue;
    }
    std::string value = unquote(text.substr(equals + 1));
    if (value.empty()) {
      return fail(path + ": " + key + " is empty");
    }
    return value;
  }
  return fail(path + " has no " + key + "=... line");
}

}  // namespace upparat::plugin_system
