#pragma once

// The state and download folders, checked and created at start (and checked by
// --check-config): see open_owned_directory() in common/safe_fs.hpp for the rule.

#include <sys/types.h>

#include "common/error.hpp"
#include "config/config.hpp"

namespace upparat::daemon {

/// Mode of the folders the daemon creates: 0700, or 0750 with [download] group_readable (so
/// that the group can also pass through the state folder to the default download folder in it).
[[nodiscard]] mode_t folder_mode(const config::Config& config);

/// Opens the state folder and the download folder of `config`, creating the missing ones (one
/// level at a time, folder_mode()), and refuses them unless every folder from / down to them
/// is owned by root or `uid` and writable by neither group nor others (a root-owned sticky
/// folder like /tmp is allowed on the way). The error names the folder at fault and what to do.
[[nodiscard]] Status prepare_folders(const config::Config& config, uid_t uid);

/// The same check for --check-config, creating nothing: folders that do not exist yet pass
/// (the daemon creates them).
[[nodiscard]] Status check_folders(const config::Config& config, uid_t uid);

}  // namespace upparat::daemon
