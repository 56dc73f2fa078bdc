#pragma once

// TCP_NODELAY for the broker connection. The daemon subscribes with QoS 1, so it sends a PUBACK
// for every message it receives; a request it publishes right after would wait in the kernel
// (Nagle's algorithm) for the broker's delayed ACK of that PUBACK, about 40 ms per request.
// Paho C offers no socket option, so after each connect the session finds its socket among the
// process's descriptors by the peer's port.

#include <cstdint>

namespace upparat::mqtt {

/// Sets TCP_NODELAY on every connected TCP socket (IPv4 or IPv6) of this process whose peer
/// port is `peer_port`; returns how many it found. A socket of another client that talks to
/// the same port gets it too, which costs nothing for request/response traffic (libcurl sets it
/// on its own connections anyway).
int set_nodelay_to_peer_port(std::uint16_t peer_port);

/// TCP_NODELAY of `fd`: 1 set, 0 not set, -1 not a TCP socket.
[[nodiscard]] int tcp_nodelay(int fd);

}  // namespace upparat::mqtt
