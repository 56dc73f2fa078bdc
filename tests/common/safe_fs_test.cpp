// The folder ownership rule and the no-symlink file helpers of common/safe_fs.hpp, on real
// folders. "Another user" is uid 65534 (nobody): those tests chown and need root (CI runs as
// root); without it they are skipped with the reason.
#include "common/safe_fs.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "support/binaries.hpp"
#include "support/temp_dir.hpp"

namespace upparat {
namespace {

namespace fs = std::filesystem;

constexpr uid_t kNobody = 65534;

#define SKIP_UNLESS_ROOT()                                                              \
  do {                                                                                  \
    if (::geteuid() != 0) {                                                             \
      UPPARAT_SKIP() << "needs root to give a folder to another user (uid 65534) with " \
                        "chown; CI runs the tests as root";                             \
    }                                                                                   \
  } while (false)

mode_t mode_of(const fs::path& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

std::string read(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class SafeFsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = test::TempDir::create("safe-fs");
    ASSERT_TRUE(dir) << dir.error().message();
    dir_.emplace(std::move(*dir));
    // The temp folder itself must pass: it is ours (mkdtemp gives 0700) under a sticky /tmp.
    ASSERT_TRUE(check_owned_directory(root(), ::geteuid()))
        << check_owned_directory(root(), ::geteuid()).error().message()
        << " (the test's temp folder fails the rule; set TMPDIR to a folder that passes)";
  }

  fs::path root() const { return dir_->path(); }

  fs::path folder(const std::string& name, mode_t mode = 0700) {
    const auto path = root() / name;
    fs::create_directories(path);
    EXPECT_EQ(::chmod(path.c_str(), mode), 0);
    return path;
  }

  Result<UniqueFd> open(const fs::path& path, Missing missing = Missing::Fail, mode_t mode = 0700) {
    OwnedDirectoryOptions options;
    options.uid = ::geteuid();
    options.missing = missing;
    options.mode = mode;
    return open_owned_directory(path, options);
  }

  /// Expects open() of `path` to fail with a message holding every one of `parts`.
  void expect_refused(const fs::path& path, std::initializer_list<std::string> parts,
                      Missing missing = Missing::Fail) {
    auto fd = open(path, missing);
    ASSERT_FALSE(fd) << path << " was accepted";
    for (const auto& part : parts) {
      EXPECT_NE(fd.error().message().find(part), std::string::npos)
          << "'" << part << "' not in: " << fd.error().message();
    }
    // The check alone says the same.
    auto checked = check_owned_directory(path, ::geteuid());
    ASSERT_FALSE(checked);
    EXPECT_EQ(checked.error().message(), fd.error().message());
  }

  std::optional<test::TempDir> dir_;
};

TEST_F(SafeFsTest, OpensAFolderThatPasses) {
  auto fd = open(folder("state"));
  ASSERT_TRUE(fd) << fd.error().message();
  ASSERT_TRUE(fd->valid());
  // A descriptor of that very folder, usable with openat and fsync.
  struct stat a {
  }, b{};
  ASSERT_EQ(::fstat(fd->get(), &a), 0);
  ASSERT_EQ(::stat((root() / "state").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(::fsync(fd->get()), 0);
  // "." and ".." in the path are walked as folders.
  EXPECT_TRUE(open(root() / "state" / "." / ".." / "state"));
}

TEST_F(SafeFsTest, CreatesMissingFoldersOneLevelAtATimeWithTheExactMode) {
  const mode_t old_umask = ::umask(0077);
  auto fd = open(root() / "a" / "b" / "c", Missing::Create, 0750);
  ::umask(old_umask);
  ASSERT_TRUE(fd) << fd.error().message();
  EXPECT_EQ(mode_of(root() / "a"), 0750u);
  EXPECT_EQ(mode_of(root() / "a" / "b"), 0750u);
  EXPECT_EQ(mode_of(root() / "a" / "b" / "c"), 0750u);
  // An existing folder keeps its mode.
  folder("kept", 0755);
  ASSERT_TRUE(open(root() / "kept" / "new", Missing::Create));
  EXPECT_EQ(mode_of(root() / "kept"), 0755u);
  EXPECT_EQ(mode_of(root() / "kept" / "new"), 0700u);
}

TEST_F(SafeFsTest, MissingFolderFailsOrIsIgnored) {
  auto missing = open(root() / "none" / "state");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().message(), (root() / "none").string() + " does not exist");
  auto ignored = open(root() / "none" / "state", Missing::Ignore);
  ASSERT_TRUE(ignored) << ignored.error().message();
  EXPECT_FALSE(ignored->valid());
  EXPECT_TRUE(check_owned_directory(root() / "none" / "state", ::geteuid()));
  EXPECT_FALSE(fs::exists(root() / "none"));
}

TEST_F(SafeFsTest, GroupWritableFolderOnTheWayIsRefusedNamingIt) {
  const auto shared = folder("shared", 0770);
  folder("shared/state");
  expect_refused(shared / "state", {shared.string() + " is writable by its group or others",
                                    "mode 0770", "chmod go-w " + shared.string()});
  // Creating below it is refused too, and nothing is created.
  expect_refused(shared / "new", {shared.string() + " is writable"}, Missing::Create);
  EXPECT_FALSE(fs::exists(shared / "new"));
}

TEST_F(SafeFsTest, WorldWritableFolderIsRefused) {
  const auto open_folder = folder("open", 0757);
  expect_refused(open_folder, {open_folder.string() + " is writable", "mode 0757"});
}

TEST_F(SafeFsTest, FolderOfAnotherUserIsRefused) {
  SKIP_UNLESS_ROOT();
  const auto theirs = folder("theirs", 0755);
  folder("theirs/state");
  ASSERT_EQ(::chown(theirs.c_str(), kNobody, kNobody), 0);
  expect_refused(theirs / "state", {theirs.string() + " belongs to uid 65534",
                                    "not to root or to the daemon's user (uid 0)"});
  // As the folder asked for, too.
  expect_refused(theirs, {theirs.string() + " belongs to uid 65534"});
}

TEST_F(SafeFsTest, RootOwnedStickyFolderIsAcceptedOnTheWayOnly) {
  SKIP_UNLESS_ROOT();
  const auto sticky = folder("tmp", 01777);  // like /tmp
  auto fd = open(sticky / "upparat" / "state", Missing::Create);
  ASSERT_TRUE(fd) << fd.error().message();
  EXPECT_TRUE(fs::is_directory(sticky / "upparat" / "state"));
  // Not as the folder asked for: anyone can create files in it.
  expect_refused(sticky, {sticky.string() + " is writable", "mode 1777"});
  // A sticky folder of another user is not trusted.
  ASSERT_EQ(::chown(sticky.c_str(), kNobody, kNobody), 0);
  expect_refused(sticky / "upparat" / "state", {sticky.string() + " belongs to uid 65534"});
}

TEST_F(SafeFsTest, FolderOfAnotherUserInAStickyFolderIsRefused) {
  SKIP_UNLESS_ROOT();
  // Another user made /tmp/upparat first (the INI import's folder).
  const auto sticky = folder("tmp", 01777);
  const auto squatted = folder("tmp/upparat", 0700);
  ASSERT_EQ(::chown(squatted.c_str(), kNobody, kNobody), 0);
  expect_refused(squatted / "state", {squatted.string() + " belongs to uid 65534"},
                 Missing::Create);
  EXPECT_FALSE(fs::exists(squatted / "state"));
}

TEST_F(SafeFsTest, SymbolicLinkOfAnotherUserIsRefused) {
  SKIP_UNLESS_ROOT();
  folder("real/state");
  const auto link = root() / "link";
  fs::create_directory_symlink(root() / "real", link);
  ASSERT_EQ(::lchown(link.c_str(), kNobody, kNobody), 0);
  expect_refused(link / "state",
                 {link.string() + " is a symbolic link owned by uid 65534", "not following it"});
  // The last component too.
  const auto last = root() / "last";
  fs::create_directory_symlink(root() / "real" / "state", last);
  ASSERT_EQ(::lchown(last.c_str(), kNobody, kNobody), 0);
  expect_refused(last, {last.string() + " is a symbolic link owned by uid 65534"});
}

TEST_F(SafeFsTest, SymbolicLinkOfRootOrTheDaemonIsFollowedAndItsTargetChecked) {
  // /var/lib/upparat -> /data/upparat on a read-only root file system: put there by root.
  folder("data/upparat");
  fs::create_directory_symlink("data/upparat", root() / "relative");
  fs::create_directory_symlink(root() / "data", root() / "absolute");
  auto relative = open(root() / "relative");
  ASSERT_TRUE(relative) << relative.error().message();
  auto absolute = open(root() / "absolute" / "upparat");
  ASSERT_TRUE(absolute) << absolute.error().message();
  struct stat a {
  }, b{};
  ASSERT_EQ(::fstat(relative->get(), &a), 0);
  ASSERT_EQ(::fstat(absolute->get(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  // The target's folders must pass as well: the message names the real folder at fault.
  const auto shared = folder("shared", 0777);
  folder("shared/state");
  fs::create_directory_symlink(shared / "state", root() / "to-shared");
  expect_refused(root() / "to-shared", {shared.string() + " is writable"});
  // A loop ends.
  fs::create_directory_symlink(root() / "loop", root() / "loop");
  expect_refused(root() / "loop", {"too many symbolic links"});
}

TEST_F(SafeFsTest, FileInsteadOfAFolderIsRefused) {
  std::ofstream(root() / "file") << "x";
  expect_refused(root() / "file" / "state", {"file is not a folder"}, Missing::Create);
}

class SafeFileTest : public SafeFsTest {
 protected:
  void SetUp() override {
    SafeFsTest::SetUp();
    if (HasFatalFailure()) {
      return;
    }
    auto fd = open(folder("state"));
    ASSERT_TRUE(fd) << fd.error().message();
    dir_fd_ = std::move(*fd);
    victim_ = root() / "victim";
    std::ofstream(victim_) << "precious";
    ASSERT_EQ(::chmod(victim_.c_str(), 0644), 0);
  }

  void expect_victim_unchanged() {
    EXPECT_EQ(read(victim_), "precious");
    EXPECT_EQ(mode_of(victim_), 0644u);
  }

  fs::path state() const { return root() / "state"; }

  UniqueFd dir_fd_;
  fs::path victim_;
};

TEST_F(SafeFileTest, CreatesWritesRenamesAndRemoves) {
  auto fd = open_file_in(dir_fd_.get(), state() / "a.tmp", O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT_TRUE(fd) << fd.error().message();
  ASSERT_TRUE(write_all(fd->get(), "hello", 5));
  fd->reset();
  EXPECT_EQ(mode_of(state() / "a.tmp") & 0777, 0600u);
  ASSERT_TRUE(rename_in(dir_fd_.get(), state() / "a.tmp", state() / "a"));
  EXPECT_EQ(read(state() / "a"), "hello");
  // O_TRUNC empties an existing file.
  fd = open_file_in(dir_fd_.get(), state() / "a", O_WRONLY | O_TRUNC);
  ASSERT_TRUE(fd) << fd.error().message();
  fd->reset();
  EXPECT_EQ(read(state() / "a"), "");
  ASSERT_TRUE(remove_in(dir_fd_.get(), state() / "a"));
  EXPECT_FALSE(fs::exists(state() / "a"));
  EXPECT_TRUE(remove_in(dir_fd_.get(), state() / "a"));  // already gone: fine
}

TEST_F(SafeFileTest, SymbolicLinkIsRefusedAndItsTargetUntouched) {
  fs::create_symlink(victim_, state() / "a.tmp");
  auto fd = open_file_in(dir_fd_.get(), state() / "a.tmp", O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT_FALSE(fd);
  EXPECT_NE(fd.error().message().find((state() / "a.tmp").string() + " is a symbolic link"),
            std::string::npos)
      << fd.error().message();
  expect_victim_unchanged();
  EXPECT_TRUE(fs::is_symlink(state() / "a.tmp"));
  // Reading does not follow it either.
  EXPECT_FALSE(open_file_in(dir_fd_.get(), state() / "a.tmp", O_RDONLY));
  // A rename over it replaces the link, not its target.
  std::ofstream(state() / "b") << "new";
  ASSERT_TRUE(rename_in(dir_fd_.get(), state() / "b", state() / "a.tmp"));
  EXPECT_FALSE(fs::is_symlink(state() / "a.tmp"));
  expect_victim_unchanged();
}

TEST_F(SafeFileTest, HardLinkIsRefusedAndItsOtherNameUntouched) {
  ASSERT_EQ(::link(victim_.c_str(), (state() / "a.part").c_str()), 0);
  auto fd = open_file_in(dir_fd_.get(), state() / "a.part", O_RDWR | O_CREAT | O_TRUNC, 0600);
  ASSERT_FALSE(fd);
  EXPECT_NE(fd.error().message().find("2 hard links"), std::string::npos) << fd.error().message();
  expect_victim_unchanged();
}

TEST_F(SafeFileTest, FifoIsRefusedWithoutBlocking) {
  ASSERT_EQ(::mkfifo((state() / "state.json.tmp").c_str(), 0600), 0);
  for (int flags : {O_WRONLY | O_CREAT | O_TRUNC, O_RDONLY, O_RDWR}) {
    auto fd = open_file_in(dir_fd_.get(), state() / "state.json.tmp", flags, 0600);
    EXPECT_FALSE(fd) << "flags " << flags;
  }
}

TEST_F(SafeFileTest, FolderIsRefused) {
  fs::create_directory(state() / "sub");
  auto fd = open_file_in(dir_fd_.get(), state() / "sub", O_RDONLY);
  ASSERT_FALSE(fd);
  EXPECT_NE(fd.error().message().find("not a regular file"), std::string::npos)
      << fd.error().message();
}

}  // namespace
}  // namespace upparat
