#pragma once

#include <chrono>
#include <cstdint>

#include "common/error.hpp"

namespace upparat::test {

/// Every service a test starts listens on this address only.
inline constexpr const char* kLoopback = "127.0.0.1";

/// A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read it, close).
/// Never 80, 443, 1883 or 8883, and never the same port twice in one test process.
/// Another process may still take it before the service binds it: the fixtures retry with a
/// new port when a service fails to start.
Result<std::uint16_t> free_port();

/// Waits until a TCP connection to 127.0.0.1:port is accepted (then closes it).
Status wait_for_port(std::uint16_t port, std::chrono::milliseconds timeout);

/// True if a TCP connection to 127.0.0.1:port is accepted right now.
bool port_accepts(std::uint16_t port);

}  // namespace upparat::test
