#include "daemon/folders.hpp"

#include <string>

#include "common/safe_fs.hpp"

namespace upparat::daemon {
namespace {

// Adds what to do to an error about a folder of the Python INI import, whose folders are
// derived from [service] download_location (default /tmp), not configured one by one.
Error explain(const config::Config& config, const std::string& what, const Error& error) {
  Error out = error.context(what);
  if (config.format != config::Format::Ini) {
    return out;
  }
  return Error(out.message() + " (the Python INI import " + config.file.string() +
               " keeps the state and downloads under <[service] download_location>/upparat, "
               "/tmp/upparat by default: remove that folder if another user made it, or set "
               "download_location to a folder of the daemon's user)");
}

Status for_each_folder(const config::Config& config, uid_t uid, Missing missing) {
  const std::pair<const char*, const std::filesystem::path*> folders[] = {
      {"state folder ", &config.service.state_directory},
      {"download folder ", &config.download.directory}};
  for (const auto& [what, path] : folders) {
    if (path->empty()) {
      continue;
    }
    OwnedDirectoryOptions options;
    options.uid = uid;
    options.missing = missing;
    options.mode = folder_mode(config);
    auto fd = open_owned_directory(*path, options);
    if (!fd) {
      return fail(explain(config, what + path->string(), fd.error()));
    }
  }
  return {};
}

}  // namespace

mode_t folder_mode(const config::Config& config) {
  return config.download.group_readable ? 0750 : 0700;
}

Status prepare_folders(const config::Config& config, uid_t uid) {
  return for_each_folder(config, uid, Missing::Create);
}

Status check_folders(const config::Config& config, uid_t uid) {
  return for_each_folder(config, uid, Missing::Ignore);
}

}  // namespace upparat::daemon
