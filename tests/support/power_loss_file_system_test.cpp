// The power-loss fake itself: what it drops must really be gone after cut_power(), or the
// power-loss tests of the state store and the downloader would pass without testing anything.
#include "support/power_loss_file_system.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "common/safe_fs.hpp"
#include "support/result.hpp"
#include "support/temp_dir.hpp"

namespace upparat::test {
namespace {

namespace fs = std::filesystem;
using Unsynced = PowerLossFileSystem::Unsynced;

class PowerLossFileSystemTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tmp_.emplace(must(TempDir::create("power-loss"), "temp dir"));
    must(write_file(folder() / "a", "old"), "write a");
    fake_ = must(PowerLossFileSystem::create({folder()}), "fake");
    dir_ = UniqueFd(::open(folder().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(dir_.valid());
  }

  fs::path folder() const { return tmp_->path(); }

  // Writes `content` to a new or truncated file `name`, fsynced or not.
  void write(const std::string& name, const std::string& content, bool synced) {
    const int fd =
        must(fake_->open(dir_.get(), folder() / name, O_WRONLY | O_CREAT | O_TRUNC, 0600), "open");
    must(fake_->write_all(fd, content.data(), content.size()), "write");
    if (synced) {
      must(fake_->sync(fd), "fsync");
    }
    fake_->close(fd);
  }

  std::string read(const std::string& name) const {
    return must(read_file(folder() / name), "read " + name);
  }

  std::optional<TempDir> tmp_;
  std::shared_ptr<PowerLossFileSystem> fake_;
  UniqueFd dir_;
};

TEST_F(PowerLossFileSystemTest, AnUnsyncedWriteIsDropped) {
  write("a", "new", false);
  EXPECT_EQ(read("a"), "new");  // in the page cache
  UPPARAT_ASSERT_OK(fake_->cut_power());
  EXPECT_EQ(read("a"), "old");
}

TEST_F(PowerLossFileSystemTest, ASyncedWriteSurvives) {
  write("a", "new", true);
  UPPARAT_ASSERT_OK(fake_->cut_power());
  EXPECT_EQ(read("a"), "new");
}

TEST_F(PowerLossFileSystemTest, AnUnsyncedRenameIsUndone) {
  write("a.tmp", "new", true);
  must(fake_->rename(dir_.get(), folder() / "a.tmp", folder() / "a"), "rename");
  EXPECT_EQ(read("a"), "new");
  UPPARAT_ASSERT_OK(fake_->cut_power());
  EXPECT_EQ(read("a"), "old");
  EXPECT_FALSE(fs::exists(folder() / "a.tmp"));  // created after the folder's last fsync
}

TEST_F(PowerLossFileSystemTest, ARenameFollowedByAFolderFsyncSurvives) {
  write("a.tmp", "new", true);
  must(fake_->rename(dir_.get(), folder() / "a.tmp", folder() / "a"), "rename");
  must(fake_->sync_directory(dir_.get(), folder()), "fsync folder");
  UPPARAT_ASSERT_OK(fake_->cut_power());
  EXPECT_EQ(read("a"), "new");
}

TEST_F(PowerLossFileSystemTest, AnUnsyncedRemovalIsUndone) {
  must(fake_->remove(dir_.get(), folder() / "a"), "remove");
  write("b", "reuses the inode number, perhaps", true);
  UPPARAT_ASSERT_OK(fake_->cut_power());
  EXPECT_EQ(read("a"), "old");
  EXPECT_FALSE(fs::exists(folder() / "b"));
}

TEST_F(PowerLossFileSystemTest, AFileRenamedInPlaceWithoutItsDataIsEmptyOrZeros) {
  for (const auto unsynced : {Unsynced::Dropped, Unsynced::Zeros}) {
    SetUp();
    write("a.tmp", "new", false);
    must(fake_->rename(dir_.get(), folder() / "a.tmp", folder() / "a"), "rename");
    must(fake_->sync_directory(dir_.get(), folder()), "fsync folder");
    UPPARAT_ASSERT_OK(fake_->cut_power(unsynced));
    EXPECT_EQ(read("a"), unsynced == Unsynced::Zeros ? std::string(3, '\0') : std::string());
  }
}

TEST_F(PowerLossFileSystemTest, OperationsAfterTheCutFailWithoutEffect) {
  fake_->cut_after(1);
  const int fd = must(fake_->open(dir_.get(), folder() / "a", O_WRONLY | O_TRUNC, 0600), "open");
  EXPECT_FALSE(fake_->powered_off());
  const std::string text = "new";
  EXPECT_FALSE(fake_->write_all(fd, text.data(), text.size()));
  EXPECT_FALSE(fake_->sync(fd));
  fake_->close(fd);
  EXPECT_TRUE(fake_->powered_off());
  EXPECT_EQ(fake_->operations(), 3);
  EXPECT_EQ(read("a"), "");  // the truncation ran, the write did not
  UPPARAT_ASSERT_OK(fake_->cut_power());
  EXPECT_EQ(read("a"), "old");
}

}  // namespace
}  // namespace upparat::test
