#include "common/safe_fs.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace upparat {
namespace fs = std::filesystem;

namespace {

// Symbolic links followed in one walk at most (as Linux's MAXSYMLINKS).
constexpr int kMaxLinks = 40;

std::string errno_text(int error) {
  return std::strerror(error);
}

std::string mode_text(mode_t mode) {
  char text[8];
  std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
  return text;
}

int open_retrying(int directory, const char* name, int flags, mode_t mode = 0) {
  int fd = -1;
  do {
    fd = ::openat(directory, name, flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

// The folders walked so far, for messages: {"tmp", "upparat"} is "/tmp/upparat".
std::string shown(const std::vector<std::string>& names) {
  if (names.empty()) {
    return "/";
  }
  std::string out;
  for (const auto& name : names) {
    out += "/" + name;
  }
  return out;
}

// Pushes the components of `path` onto `todo` so that the first is popped first ("" and "."
// are dropped; ".." stays and goes up).
void push_components(const std::string& path, std::vector<std::string>& todo) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (start <= path.size()) {
    const auto slash = path.find('/', start);
    const auto end = slash == std::string::npos ? path.size() : slash;
    std::string part = path.substr(start, end - start);
    if (!part.empty() && part != ".") {
      parts.push_back(std::move(part));
    }
    start = end + 1;
  }
  todo.insert(todo.end(), parts.rbegin(), parts.rend());
}

Status check_owner(const struct stat& st, const std::string& where, uid_t uid) {
  if (st.st_uid != 0 && st.st_uid != uid) {
    return fail(where + " belongs to uid " + std::to_string(st.st_uid) +
                ", not to root or to the daemon's user (uid " + std::to_string(uid) +
                "), so that user could replace the daemon's files: remove it, give it to the "
                "daemon's user (chown), or configure another folder");
  }
  return {};
}

// The rule for every folder on the way (`last` = the folder asked for).
Status check_folder(const struct stat& st, const std::string& where, uid_t uid, bool last) {
  if (!S_ISDIR(st.st_mode)) {
    return fail(where + " is not a folder");
  }
  if (auto ok = check_owner(st, where, uid); !ok) {
    return ok;
  }
  const bool shared = (st.st_mode & (S_IWGRP | S_IWOTH)) != 0;
  const bool sticky_root = (st.st_mode & S_ISVTX) != 0 && st.st_uid == 0;
  if (shared && (last || !sticky_root)) {
    return fail(where + " is writable by its group or others (mode " + mode_text(st.st_mode) +
                "), so another user could replace the daemon's files: run chmod go-w " + where +
                ", or configure another folder");
  }
  return {};
}

}  // namespace

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) {
    ::close(fd_);
  }
  fd_ = fd;
}

Result<UniqueFd> open_owned_directory(const fs::path& path, const OwnedDirectoryOptions& options) {
  std::error_code ec;
  const fs::path absolute = fs::absolute(path, ec);
  if (ec) {
    return fail("cannot make " + path.string() + " absolute: " + ec.message());
  }

  // stack[i] is the folder names[0..i) ("/" first); todo holds what is left, next at the back.
  std::vector<UniqueFd> stack;
  std::vector<std::string> names;
  std::vector<std::string> todo;
  push_components(absolute.string(), todo);

  auto open_root = [&]() -> Status {
    stack.clear();
    names.clear();
    UniqueFd root(open_retrying(AT_FDCWD, "/", O_PATH | O_DIRECTORY));
    struct stat st {};
    if (!root.valid() || ::fstat(root.get(), &st) != 0) {
      return fail("cannot open /: " + errno_text(errno));
    }
    if (auto ok = check_folder(st, "/", options.uid, false); !ok) {
      return ok;
    }
    stack.push_back(std::move(root));
    return {};
  };
  if (auto ok = open_root(); !ok) {
    return fail(ok.error());
  }

  int links = 0;
  int creations = 0;
  while (!todo.empty()) {
    const std::string name = todo.back();
    todo.pop_back();
    if (name == "..") {
      if (stack.size() > 1) {
        stack.pop_back();
        names.pop_back();
      }
      continue;
    }
    const int parent = stack.back().get();
    names.push_back(name);
    const std::string where = shown(names);

    struct stat st {};
    if (::fstatat(parent, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      const int error = errno;
      if (error != ENOENT) {
        return fail("cannot look at " + where + ": " + errno_text(error));
      }
      if (options.missing == Missing::Ignore) {
        return UniqueFd();
      }
      if (options.missing == Missing::Fail) {
        return fail(where + " does not exist");
      }
      if (++creations > 100) {
        return fail(where + " keeps disappearing while it is created");
      }
      if (::mkdirat(parent, name.c_str(), options.mode & 07777) == 0) {
        // Only a folder made here gets the mode (mkdir applied the umask) and the group.
        UniqueFd created(open_retrying(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
        if (!created.valid()) {
          return fail("cannot open the folder " + where + ": " + errno_text(errno));
        }
        if (::fchmod(created.get(), options.mode & 07777) != 0) {
          return fail("cannot chmod " + where + ": " + errno_text(errno));
        }
        if (options.group && ::fchown(created.get(), static_cast<uid_t>(-1), *options.group) != 0) {
          return fail("cannot give " + where + " to group " + std::to_string(*options.group) +
                      ": " + errno_text(errno));
        }
      } else if (errno != EEXIST) {
        return fail("cannot create the folder " + where + ": " + errno_text(errno));
      }
      // Walked and checked like any existing folder (another process may have made something
      // else there first).
      names.pop_back();
      todo.push_back(name);
      continue;
    }

    if (S_ISLNK(st.st_mode)) {
      if (st.st_uid != 0 && st.st_uid != options.uid) {
        return fail(where + " is a symbolic link owned by uid " + std::to_string(st.st_uid) +
                    ", not by root or the daemon's user (uid " + std::to_string(options.uid) +
                    "): not following it; remove it or configure the real folder");
      }
      if (++links > kMaxLinks) {
        return fail(where + ": too many symbolic links");
      }
      std::string target(4096, '\0');
      const auto length = ::readlinkat(parent, name.c_str(), target.data(), target.size());
      if (length <= 0 || static_cast<std::size_t>(length) >= target.size()) {
        return fail("cannot read the symbolic link " + where);
      }
      target.resize(static_cast<std::size_t>(length));
      names.pop_back();
      push_components(target, todo);
      if (target.front() == '/') {
        if (auto ok = open_root(); !ok) {
          return fail(ok.error());
        }
      }
      continue;
    }
    if (!S_ISDIR(st.st_mode)) {
      return fail(where + " is not a folder");
    }
    UniqueFd next(open_retrying(parent, name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW));
    if (!next.valid()) {
      return fail("cannot open the folder " + where + ": " + errno_text(errno));
    }
    // The check is on what was opened: a folder swapped in after fstatat() is checked itself.
    if (::fstat(next.get(), &st) != 0) {
      return fail("cannot look at " + where + ": " + errno_text(errno));
    }
    if (auto ok = check_folder(st, where, options.uid, false); !ok) {
      return fail(ok.error());
    }
    stack.push_back(std::move(next));
  }

  // The folder asked for: no sticky exception, and a descriptor that can be read and fsynced.
  const std::string where = shown(names);
  UniqueFd result(open_retrying(stack.back().get(), ".", O_RDONLY | O_DIRECTORY));
  struct stat st {};
  if (!result.valid() || ::fstat(result.get(), &st) != 0) {
    return fail("cannot open the folder " + where + ": " + errno_text(errno));
  }
  if (auto ok = check_folder(st, where, options.uid, true); !ok) {
    return fail(ok.error());
  }
  return result;
}

Status check_owned_directory(const fs::path& path, uid_t uid) {
  OwnedDirectoryOptions options;
  options.uid = uid;
  options.missing = Missing::Ignore;
  auto fd = open_owned_directory(path, options);
  if (!fd) {
    return fail(fd.error());
  }
  return {};
}

Result<UniqueFd> open_file_in(int directory, const fs::path& path, int flags, mode_t mode) {
  const std::string name = path.filename().string();
  if (name.empty() || name == "." || name == "..") {
    return fail(path.string() + ": not a file name");
  }
  // O_NONBLOCK: opening a FIFO planted there must not block; cleared below.
  UniqueFd fd(open_retrying(directory, name.c_str(),
                            (flags & ~O_TRUNC) | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY, mode));
  if (!fd.valid()) {
    const int error = errno;
    if (error == ELOOP) {
      return fail(path.string() +
                  " is a symbolic link: not following it (remove it if it should not be there)");
    }
    return fail(path.string() + ": " + errno_text(error));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return fail(path.string() + ": " + errno_text(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    return fail(path.string() + " is not a regular file: remove it");
  }
  if (st.st_nlink > 1) {
    return fail(path.string() + " has " + std::to_string(st.st_nlink) +
                " hard links, so it may be another file of the system: remove it");
  }
  const int status = ::fcntl(fd.get(), F_GETFL);
  if (status < 0 || ::fcntl(fd.get(), F_SETFL, status & ~O_NONBLOCK) != 0) {
    return fail(path.string() + ": " + errno_text(errno));
  }
  if ((flags & O_TRUNC) != 0 && ::ftruncate(fd.get(), 0) != 0) {
    return fail(path.string() + ": truncate: " + errno_text(errno));
  }
  return fd;
}

Status write_all(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    const auto written = ::write(fd, data, size);
    if (written < 0) {
      if (errno == EINTR) {
        continue;
      }
      return fail(errno_text(errno));
    }
    if (written == 0) {
      return fail("no progress");
    }
    data += written;
    size -= static_cast<std::size_t>(written);
  }
  return {};
}

Status rename_in(int directory, const fs::path& from, const fs::path& to) {
  if (::renameat(directory, from.filename().c_str(), directory, to.filename().c_str()) != 0) {
    return fail("cannot rename " + from.string() + " to " + to.string() + ": " + errno_text(errno));
  }
  return {};
}

Status remove_in(int directory, const fs::path& path) {
  if (::unlinkat(directory, path.filename().c_str(), 0) != 0 && errno != ENOENT) {
    return fail("cannot remove " + path.string() + ": " + errno_text(errno));
  }
  return {};
}

}  // namespace upparat
