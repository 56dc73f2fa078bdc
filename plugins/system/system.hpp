#pragma once

// What plugins that update the operating system share: rebooting through systemd-logind,
// running a health command with a deadline, and reading a key of an os-release-style file.
//
// This library is linked into plugin shared objects: it must not log (no spdlog) and must not
// keep global state. Every function is bounded in time and reports failure as an Error whose
// message says what to do.

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "common/error.hpp"

namespace upparat::plugin_system {

/// Checks, before sdbus-c++ is asked to connect to `bus_address`, that a `unix:path=` socket
/// exists (sdbus-c++ 1.2 leaks its bus object when a connection to an address fails). Other
/// addresses, and "" for the system bus, pass. The error names the socket.
[[nodiscard]] Status check_bus_socket(const std::string& bus_address);

/// Asks systemd-logind to reboot: org.freedesktop.login1.Manager.Reboot(false) on
/// /org/freedesktop/login1 of org.freedesktop.login1. `bus_address` is a D-Bus address
/// ("unix:path=/run/dbus/system_bus_socket"), or "" for the system bus. Returns once logind
/// accepted the request (the shutdown then runs on its own), or fails after `timeout` or with
/// logind's answer (for example "Interactive authentication required": a polkit rule must
/// allow the caller, see config/50-upparat-reboot.rules).
[[nodiscard]] Status reboot_via_logind(const std::string& bus_address,
                                       std::chrono::milliseconds timeout);

/// After a reboot was requested: waits up to `wait` for the system to go down (which ends the
/// caller's process). Returns only when it did not: the failure text, "stopped while waiting
/// for the reboot" when `stop_fd` became readable or `should_stop` returned true first, else
/// "the reboot was requested, but the system still runs after N s".
[[nodiscard]] std::string wait_for_reboot(int stop_fd, const std::function<bool()>& should_stop,
                                          std::chrono::milliseconds wait);

/// A boolean value of a plugin's configuration: "true" or "false". Anything else throws
/// std::invalid_argument naming the key (plugins turn it into their create error).
[[nodiscard]] bool parse_bool(const std::string& key, const std::string& value);

/// A health command: run without a shell, with a deadline, stopped early on request.
struct HealthCommand {
  /// argv[0] is an absolute path; the rest are its arguments.
  std::vector<std::string> argv;
  /// The command fails when it has not ended by then (it is killed).
  std::chrono::milliseconds timeout{60000};
  /// A descriptor that becomes readable when the caller must stop (a plugin's stop_fd), or -1.
  int stop_fd = -1;
  /// Polled about every 100 ms when set; true stops the command like stop_fd.
  std::function<bool()> should_stop;
  /// What errors call it ("health command /usr/libexec/healthy failed: ...").
  std::string name = "health command";
};

/// Runs `command` and succeeds when it exits with 0. Otherwise the error says how it ended
/// ("exit code 1", "timed out after 60 s", "stopped") with the last lines of its stderr.
[[nodiscard]] Status run_health_command(const HealthCommand& command);

/// Reads `key` from an os-release-style file (KEY=value lines, `#` comments, values
/// optionally in single or double quotes with backslash escapes inside double quotes).
/// Fails when the file cannot be read, the key is absent or its value is empty.
[[nodiscard]] Result<std::string> read_release_key(const std::string& path, const std::string& key);

}  // namespace upparat::plugin_system
