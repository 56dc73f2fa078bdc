#pragma once

// Puts the calling process into its own mount namespace in which every mount is read-only
// except the given paths (bound onto themselves, writable as before) and /dev, /proc and /sys
// (left as they are): the conformance kit runs a plugin's steps there to see whether they
// write outside the paths the plugin was given.

#include <filesystem>
#include <string>
#include <vector>

#include "common/error.hpp"

namespace upparat::tools {

/// Must run in a single-threaded process (a user namespace requires it), e.g. a fresh child of
/// fork(). As root it makes a mount namespace; otherwise, or when that is refused, a user and
/// mount namespace mapping the caller's own uid and gid. On success returns which of the two it
/// made; on failure (the kernel or a container forbids it) says why, and the process is left as
/// it was or only partly restricted: the caller must then not run anything it wants isolated.
[[nodiscard]] Result<std::string> enter_read_only_root(
    const std::vector<std::filesystem::path>& writable);

}  // namespace upparat::tools
