#pragma once

// The sd_notify(3) protocol of systemd, without libsystemd: a datagram to the socket named by
// $NOTIFY_SOCKET. libsystemd and the libraries it pulls in (lz4, lzma, zstd, gcrypt, cap)
// would cost the idle daemon about 140 KiB of private memory for these few lines.

#include <chrono>
#include <optional>
#include <string_view>

namespace upparat::daemon {

/// Sends `state` (e.g. "READY=1", "STATUS=...", "WATCHDOG=1") to the service manager when
/// $NOTIFY_SOCKET names one (a path, or an abstract socket written "@name"). Returns false
/// when there is none or the datagram could not be sent (nothing else is to be done then).
bool sd_notify_state(std::string_view state);

/// The watchdog period systemd expects a "WATCHDOG=1" within: $WATCHDOG_USEC, when it is a
/// positive number and $WATCHDOG_PID is unset or this process. nullopt: no watchdog.
[[nodiscard]] std::optional<std::chrono::microseconds> sd_watchdog_period();

}  // namespace upparat::daemon
