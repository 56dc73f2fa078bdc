#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "state/lock_file.hpp"
#include "state/machine.hpp"
#include "state/state_store.hpp"

namespace upparat::state {
namespace {

class Dir {
 public:
  Dir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "upparat-state-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~Dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

JobState sample() {
  JobState s;
  s.job_id = "upparat_1";
  s.execution_number = 3;
  s.step = SavedStep::Install;
  s.unfinished_starts = 2;
  s.retry_count = 1;
  s.step_elapsed_seconds = 77;
  s.version = "2.0";
  s.force = true;
  s.resume = {123456789012ull, "\"etag\"", "2d1a3c4e-0000-4000-8000-000000000001"};
  s.final_status = "FAILED";
  s.final_state = "x";
  s.final_message = "m\"q";
  s.store = {{"slot", "B"}, {"k.2", "\xc3\xa4"}};
  return s;
}

TEST(StateStore, JsonRoundTrip) {
  auto back = job_state_from_json(to_json(sample()));
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(*back, sample());
}

TEST(StateStore, EverySavedStepHasItsName) {
  for (auto step : {SavedStep::VerifyJob, SavedStep::DownloadGate, SavedStep::Download,
                    SavedStep::Install, SavedStep::Reboot, SavedStep::Restart,
                    SavedStep::VerifyInstallation, SavedStep::Ready, SavedStep::Finish}) {
    JobState s = sample();
    s.step = step;
    auto back = job_state_from_json(to_json(s));
    ASSERT_TRUE(back) << to_string(step) << ": " << back.error().message();
    EXPECT_EQ(back->step, step) << to_string(step);
  }
  EXPECT_STREQ(to_string(SavedStep::DownloadGate), "download_gate");
}

// A saved step this daemon does not know (written by a newer version, or damaged) makes the
// whole saved state unusable: the daemon discards it rather than guess where to continue.
TEST(StateStore, UnknownSavedStepIsRefused) {
  auto state = job_state_from_json(
      R"({"format":1,"job_id":"upparat_1","execution_number":1,"step":"flash_bootloader"})");
  ASSERT_FALSE(state);
  EXPECT_EQ(state.error().message(), "unknown step 'flash_bootloader'");
}

TEST(FileStateStore, DaemonDiscardsASavedStateWithAnUnknownStep) {
  Dir dir;
  std::ofstream(dir.path() / "state.json")
      << R"({"format":1,"job_id":"upparat_1","execution_number":1,"step":"flash_bootloader"})";
  FileStateStore store(dir.path());
  SteadyClock clock;
  MachineSettings settings;
  settings.thing_name = "thing-1";
  Machine machine(settings, store, clock);
  const auto actions = machine.handle(Started{});
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "state.json"));
  // Without a saved job, every earlier download goes.
  bool clean_all = false;
  for (const auto& a : actions) {
    if (const auto* c = std::get_if<CleanDownloads>(&a)) {
      clean_all = c->keep_job_id.empty();
    }
  }
  EXPECT_TRUE(clean_all);
}

TEST(StateStore, RefusesMalformed) {
  EXPECT_FALSE(job_state_from_json(""));
  EXPECT_FALSE(job_state_from_json("{}"));
  EXPECT_FALSE(job_state_from_json(R"({"format":2,"job_id":"a","execution_number":1,"step":"x"})"));
  EXPECT_FALSE(
      job_state_from_json(R"({"format":1,"job_id":"","execution_number":1,"step":"install"})"));
  EXPECT_TRUE(
      job_state_from_json(R"({"format":1,"job_id":"a","execution_number":1,"step":"install"})"));
}

TEST(FileStateStore, EndedExecutionsApartFromTheJobState) {
  Dir dir;
  FileStateStore store(dir.path());
  auto none = store.load_ended();
  ASSERT_TRUE(none) << none.error().message();
  EXPECT_TRUE(none->empty());
  const std::vector<EndedExecution> ended{{"upparat_1", 2, "FAILED", "version_mismatch", true},
                                          {"upparat_2", 1, "SUCCEEDED", "complete_ready", false}};
  ASSERT_TRUE(store.save_ended(ended));
  ASSERT_TRUE(store.save(sample()));
  ASSERT_TRUE(store.clear());  // the job state goes, the ended executions stay
  auto loaded = store.load_ended();
  ASSERT_TRUE(loaded) << loaded.error().message();
  EXPECT_EQ(*loaded, ended);
  ASSERT_TRUE(store.save_ended({}));
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "ended.json"));
  std::ofstream(dir.path() / "ended.json") << R"({"format":1,"ended":[{"job_id":"a"}]})";
  auto bad = store.load_ended();
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("ended.json"), std::string::npos);
}

TEST(FileStateStore, SaveLoadClear) {
  Dir dir;
  FileStateStore store(dir.path());
  auto empty = store.load();
  ASSERT_TRUE(empty);
  EXPECT_FALSE(*empty);
  ASSERT_TRUE(store.save(sample()));
  JobState second = sample();
  second.step = SavedStep::Reboot;
  ASSERT_TRUE(store.save(second));
  auto loaded = store.load();
  ASSERT_TRUE(loaded && *loaded);
  EXPECT_EQ(**loaded, second);
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "state.json.tmp"));
  EXPECT_EQ(std::filesystem::status(store.path()).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  ASSERT_TRUE(store.clear());
  ASSERT_TRUE(store.clear());
  loaded = store.load();
  ASSERT_TRUE(loaded);
  EXPECT_FALSE(*loaded);
}

// A daemon killed between writing a save's temporary file and renaming it leaves the file
// behind; the next daemon's load removes it, with or without a state.json beside it (found by
// the chaos runs: a stray state.json.tmp after a SIGKILL).
TEST(FileStateStore, LoadRemovesATemporaryFileADeadDaemonLeft) {
  for (const bool with_state : {false, true}) {
    Dir dir;
    FileStateStore store(dir.path());
    if (with_state) {
      ASSERT_TRUE(store.save(sample()));
    }
    std::ofstream(dir.path() / "state.json.tmp") << "{\"format\":1,\"job";
    std::ofstream(dir.path() / "ended.json.tmp") << "[";
    auto loaded = store.load();
    ASSERT_TRUE(loaded) << loaded.error().message();
    EXPECT_EQ(loaded->has_value(), with_state);
    ASSERT_TRUE(store.load_ended());
    EXPECT_FALSE(std::filesystem::exists(dir.path() / "state.json.tmp")) << with_state;
    EXPECT_FALSE(std::filesystem::exists(dir.path() / "ended.json.tmp")) << with_state;
  }
}

TEST(FileStateStore, CorruptFileIsAnError) {
  Dir dir;
  std::ofstream(dir.path() / "state.json") << "{\"format\":1,";
  FileStateStore store(dir.path());
  auto loaded = store.load();
  ASSERT_FALSE(loaded);
  EXPECT_NE(loaded.error().message().find("state.json"), std::string::npos);
}

TEST(FileStateStore, DeferredSaveSkipsTheFsyncsASyncedSaveDoes) {
  Dir dir;
  FileStateStore store(dir.path());
  JobState state = sample();
  state.step = SavedStep::Download;
  ASSERT_TRUE(store.save(state, Durability::Deferred));
  EXPECT_EQ(store.fsyncs(), 0);
  // In place at once: a crash of the daemon (not a power cut) keeps it.
  auto loaded = store.load();
  ASSERT_TRUE(loaded && *loaded);
  EXPECT_EQ(**loaded, state);
  state.step = SavedStep::Install;
  ASSERT_TRUE(store.save(state, Durability::Synced));
  EXPECT_EQ(store.fsyncs(), 2);  // the file, then the folder (with the earlier rename)
  ASSERT_TRUE(store.save(state));
  EXPECT_EQ(store.fsyncs(), 4);
}

TEST(FileStateStore, TornStateIsDiscarded) {
  // What a power cut can leave of a state renamed into place before its data reached the
  // disk: nothing, a prefix, or zeros; or (another file system) old blocks under the new name.
  const std::string whole = to_checked_json(sample());
  ASSERT_EQ(whole.rfind("{\"check\":\"fnv1a64:", 0), 0u) << whole;
  std::string flipped = whole;
  flipped[flipped.size() / 2] ^= 0x01;
  const std::vector<std::pair<const char*, std::string>> torn{
      {"empty", ""},
      {"a prefix", whole.substr(0, whole.size() / 2)},
      {"all but the last byte", whole.substr(0, whole.size() - 1)},
      {"zeros", std::string(whole.size(), '\0')},
      {"a flipped bit", flipped},
      {"a byte more", whole + " "},
  };
  for (const auto& [what, text] : torn) {
    Dir dir;
    std::ofstream(dir.path() / "state.json", std::ios::binary) << text;
    FileStateStore store(dir.path());
    auto loaded = store.load();
    ASSERT_TRUE(loaded) << what << ": " << loaded.error().message();
    EXPECT_FALSE(*loaded) << what << ": read as a state";
  }
  Dir dir;
  std::ofstream(dir.path() / "state.json", std::ios::binary) << whole;
  FileStateStore store(dir.path());
  auto loaded = store.load();
  ASSERT_TRUE(loaded && *loaded) << (loaded ? "none" : loaded.error().message());
  EXPECT_EQ(**loaded, sample());
}

TEST(FileStateStore, OlderDaemonsFileWithoutACheckIsRead) {
  Dir dir;
  std::ofstream(dir.path() / "state.json") << to_json(sample());
  FileStateStore store(dir.path());
  auto loaded = store.load();
  ASSERT_TRUE(loaded && *loaded) << (loaded ? "none" : loaded.error().message());
  EXPECT_EQ(**loaded, sample());
}

TEST(FileStateStore, MissingDirectoryFailsToSave) {
  FileStateStore store("/nonexistent/upparat");
  auto saved = store.save(sample());
  ASSERT_FALSE(saved);
  EXPECT_NE(saved.error().message().find("/nonexistent/upparat"), std::string::npos);
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::filesystem::perms perms_of(const std::filesystem::path& path) {
  return std::filesystem::status(path).permissions() & std::filesystem::perms::all;
}

// A file outside the state folder that a symbolic link planted in it points at.
class Victim {
 public:
  Victim() : path_(dir_.path() / "victim") {
    std::ofstream(path_) << "precious";
    std::filesystem::permissions(path_, std::filesystem::perms(0644));
  }
  const std::filesystem::path& path() const { return path_; }
  void expect_unchanged() const {
    EXPECT_EQ(read_file(path_), "precious");
    EXPECT_EQ(perms_of(path_), std::filesystem::perms(0644));
  }

 private:
  Dir dir_;
  std::filesystem::path path_;
};

TEST(FileStateStore, SymlinkAtTheTempFileIsRefusedAndItsTargetUntouched) {
  Dir dir;
  Victim victim;
  std::filesystem::create_symlink(victim.path(), dir.path() / "state.json.tmp");
  FileStateStore store(dir.path());
  auto saved = store.save(sample());
  ASSERT_FALSE(saved);
  EXPECT_NE(saved.error().message().find("state.json.tmp is a symbolic link"), std::string::npos)
      << saved.error().message();
  victim.expect_unchanged();
  EXPECT_FALSE(std::filesystem::exists(store.path()));
}

TEST(FileStateStore, SymlinkAtTheStateFileIsNotFollowed) {
  Dir dir;
  Victim victim;
  std::filesystem::create_symlink(victim.path(), dir.path() / "state.json");
  FileStateStore store(dir.path());
  auto loaded = store.load();
  ASSERT_FALSE(loaded);
  EXPECT_NE(loaded.error().message().find("state.json is a symbolic link"), std::string::npos)
      << loaded.error().message();
  // Saving replaces the link itself; clearing removes the new file.
  ASSERT_TRUE(store.save(sample()));
  EXPECT_FALSE(std::filesystem::is_symlink(store.path()));
  victim.expect_unchanged();
  ASSERT_TRUE(store.clear());
  victim.expect_unchanged();
}

TEST(FileStateStore, GroupWritableStateFolderIsRefused) {
  Dir dir;
  std::filesystem::permissions(dir.path(), std::filesystem::perms(0770));
  FileStateStore store(dir.path());
  auto saved = store.save(sample());
  ASSERT_FALSE(saved);
  EXPECT_NE(saved.error().message().find(dir.path().string() + " is writable by its group"),
            std::string::npos)
      << saved.error().message();
  EXPECT_FALSE(std::filesystem::exists(store.path()));
  EXPECT_FALSE(store.load());
}

TEST(LockFile, SymlinkIsRefusedAndItsTargetUntouched) {
  Dir dir;
  Victim victim;
  const auto path = dir.path() / "upparat.lock";
  std::filesystem::create_symlink(victim.path(), path);
  auto lock = LockFile::acquire(path);
  ASSERT_FALSE(lock);
  EXPECT_NE(lock.error().message().find("upparat.lock is a symbolic link"), std::string::npos)
      << lock.error().message();
  victim.expect_unchanged();
}

TEST(LockFile, SecondHolderIsRefusedWithThePid) {
  Dir dir;
  const auto path = dir.path() / "upparat.lock";
  auto first = LockFile::acquire(path);
  ASSERT_TRUE(first) << first.error().message();
  EXPECT_EQ(lock_holder(path), ::getpid());
  // Another process (flock is per open file; a child makes the test honest).
  const pid_t child = ::fork();
  if (child == 0) {
    auto second = LockFile::acquire(path);
    const bool ok = !second && second.error().message().find(
                                   "PID " + std::to_string(::getppid())) != std::string::npos;
    ::_exit(ok ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(LockFile, ReleasedOnDestruction) {
  Dir dir;
  const auto path = dir.path() / "upparat.lock";
  {
    auto first = LockFile::acquire(path);
    ASSERT_TRUE(first);
  }
  auto again = LockFile::acquire(path);
  EXPECT_TRUE(again);
}

TEST(LockFile, UnwritableDirectory) {
  auto lock = LockFile::acquire("/nonexistent/dir/upparat.lock");
  ASSERT_FALSE(lock);
  EXPECT_NE(lock.error().message().find("/nonexistent/dir/upparat.lock"), std::string::npos);
}

}  // namespace
}  // namespace upparat::state
