#include "tools/read_only_root.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace upparat::tools {

namespace {

namespace fs = std::filesystem;

std::string errno_text(int error) {
  return std::strerror(error);
}

// Writes `text` to a /proc file (uid_map, gid_map, setgroups).
bool write_proc(const char* path, const std::string& text) {
  const int fd = ::open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    return false;
  }
  const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return written;
}

Result<std::string> unshare_mounts() {
  if (::geteuid() == 0 && ::unshare(CLONE_NEWNS) == 0) {
    return std::string("a mount namespace");
  }
  const uid_t uid = ::geteuid();
  const gid_t gid = ::getegid();
  if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) {
    return fail("cannot make a mount namespace: unshare(CLONE_NEWUSER | CLONE_NEWNS) failed: " +
                errno_text(errno) +
                " (the kernel or the container forbids unprivileged user namespaces, e.g. "
                "sysctl user.max_user_namespaces=0 or kernel.unprivileged_userns_clone=0; run "
                "the kit as root to use a plain mount namespace)");
  }
  // Map the caller's own ids, so files keep their owners and permissions mean what they did.
  if (!write_proc("/proc/self/setgroups", "deny") ||
      !write_proc("/proc/self/uid_map", std::to_string(uid) + " " + std::to_string(uid) + " 1") ||
      !write_proc("/proc/self/gid_map", std::to_string(gid) + " " + std::to_string(gid) + " 1")) {
    return fail("cannot map the user's ids in the new user namespace: " + errno_text(errno));
  }
  return std::string("a user and mount namespace");
}

// The mount points of this namespace (/proc/self/mountinfo's fifth field, octal escapes
// undone), in mount order.
std::vector<std::string> mount_points() {
  std::vector<std::string> points;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id;
    std::string parent;
    std::string device;
    std::string root;
    std::string escaped;
    if (!(fields >> id >> parent >> device >> root >> escaped)) {
      continue;
    }
    std::string point;
    for (std::size_t i = 0; i < escaped.size(); ++i) {
      if (escaped[i] == '\\' && i + 3 < escaped.size()) {
        point += static_cast<char>(std::stoi(escaped.substr(i + 1, 3), nullptr, 8));
        i += 3;
      } else {
        point += escaped[i];
      }
    }
    points.push_back(point);
  }
  return points;
}

// True when `path` is `folder` or lies below it (both absolute and lexically normal).
bool is_within(const std::string& path, const std::string& folder) {
  if (folder == "/") {
    return true;
  }
  return path == folder ||
         (path.size() > folder.size() && path.compare(0, folder.size(), folder) == 0 &&
          path[folder.size()] == '/');
}

}  // namespace

Result<std::string> enter_read_only_root(const std::vector<fs::path>& writable) {
  // Canonical paths, as mountinfo names mount points.
  std::vector<std::string> kept = {"/dev", "/proc", "/sys"};
  std::vector<std::string> binds;
  for (const auto& path : writable) {
    std::error_code ec;
    const fs::path real = fs::canonical(path, ec);
    if (ec) {
      return fail("cannot resolve " + path.string() + ": " + ec.message());
    }
    kept.push_back(real.string());
    binds.push_back(real.string());
  }

  auto how = unshare_mounts();
  if (!how) {
    return how;
  }
  // Private: nothing done here may propagate to the namespace the kit was started in.
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    return fail("cannot make the mounts of the new namespace private: " + errno_text(errno));
  }
  // Each writable path becomes a mount of its own, which keeps its flags when the mount that
  // holds it turns read-only.
  for (const auto& path : binds) {
    if (::mount(path.c_str(), path.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
      return fail("cannot bind " + path + " onto itself: " + errno_text(errno));
    }
  }
  struct mount_attr read_only {};
  read_only.attr_set = MOUNT_ATTR_RDONLY;
  for (const auto& point : mount_points()) {
    bool keep = false;
    for (const auto& folder : kept) {
      keep = keep || is_within(point, folder);
    }
    if (keep) {
      continue;
    }
    if (::mount_setattr(AT_FDCWD, point.c_str(), 0, &read_only, sizeof read_only) != 0) {
      const int error = errno;
      if (error == ENOENT || error == EACCES) {
        continue;  // hidden under a later mount, or not reachable: nothing can write there
      }
      return fail("cannot make " + point + " read-only: mount_setattr failed: " +
                  errno_text(error) + (error == ENOSYS ? " (it needs Linux 5.12 or later)" : ""));
    }
  }
  return how;
}

}  // namespace upparat::tools
