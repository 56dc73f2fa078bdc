// Power cuts at every operation of the state store (tests/support/power_loss_file_system.hpp):
// a sequence of saves like the daemon's, cut after each of its writes, fsyncs, renames and
// removals; the next start, with the plain file system, must read a state the sequence had on
// the disk, never a torn one taken for good and never an error.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "state/state_store.hpp"
#include "support/power_loss_file_system.hpp"
#include "support/result.hpp"
#include "support/temp_dir.hpp"

namespace upparat::state {
namespace {

namespace fs = std::filesystem;
using test::must;
using test::PowerLossFileSystem;
using Unsynced = PowerLossFileSystem::Unsynced;

JobState job(const std::string& id, SavedStep step, std::uint64_t synced_bytes = 0) {
  JobState s;
  s.job_id = id;
  s.execution_number = 1;
  s.step = step;
  s.version = "2.0";
  s.resume = {synced_bytes, synced_bytes ? "\"etag\"" : "", synced_bytes ? "boot-1" : ""};
  s.store = {{"slot", "B"}};
  if (step == SavedStep::Finish) {
    s.final_status = "SUCCEEDED";
    s.final_state = "installed";
  }
  return s;
}

// The same state after a failed attempt of its step (the download is retried).
JobState retried(JobState state) {
  ++state.retry_count;
  return state;
}

EndedExecution ended(const std::string& id) {
  return {id, 1, "FAILED", "update_refused", false};
}

// One operation of the sequence, and what it leaves when it completes.
struct Step {
  enum Kind { Save, Clear, SaveEnded } kind;
  JobState state;  // Save
  Durability durability = Durability::Synced;
  std::vector<EndedExecution> ended;  // SaveEnded
};

Step save(JobState state, Durability durability) {
  return {Step::Save, std::move(state), durability, {}};
}
Step clear() {
  return {Step::Clear, {}, Durability::Synced, {}};
}
Step save_ended(std::vector<EndedExecution> list) {
  return {Step::SaveEnded, {}, Durability::Synced, std::move(list)};
}

// What the daemon does for a job, the end of the one before and the start of the next: the
// states up to the download Deferred (a retry of the download too), the download's synced
// lengths and everything after Synced, an execution the cloud refused for good, the state
// cleared when a job ended.
std::vector<Step> daemon_like_sequence() {
  using D = Durability;
  return {
      clear(),
      save(job("job2", SavedStep::VerifyJob), D::Deferred),
      save(job("job2", SavedStep::DownloadGate), D::Deferred),
      save(job("job2", SavedStep::Download), D::Deferred),
      save(job("job2", SavedStep::Download, 65536), D::Synced),
      save(job("job2", SavedStep::Download, 131072), D::Synced),
      save(job("job2", SavedStep::Install, 131072), D::Synced),
      save(job("job2", SavedStep::Finish, 131072), D::Synced),
      save_ended({ended("job0"), ended("job2")}),
      clear(),
      save(job("job3", SavedStep::VerifyJob), D::Deferred),
      save(job("job3", SavedStep::Download), D::Deferred),
      save(job("job3", SavedStep::Download, 65536), D::Synced),
      save(retried(job("job3", SavedStep::Download, 65536)), D::Deferred),
      // Its folder fsync makes the Deferred rename above durable, not that state's data.
      save_ended({ended("job2")}),
      save(job("job3", SavedStep::Download, 131072), D::Synced),
      save_ended({}),
  };
}

std::string show(const std::optional<JobState>& state) {
  return state ? to_json(*state) : "no state";
}

std::string show(const std::vector<EndedExecution>& list) {
  return to_json(list);
}

// The states a power cut may leave, by the guarantees of docs/daemon.md ("Durability of the
// state"): a Synced save or a clear leaves exactly the state before it or the one after it;
// a Deferred save since the last Synced one may be read, or lost (the state before it), or
// torn, which load() discards (no state). ended.json is always synced: the list before the
// interrupted save or after it.
struct Expected {
  std::vector<std::optional<JobState>> states;
  bool torn_possible = false;
  std::vector<std::vector<EndedExecution>> ended;

  bool allows(const std::optional<JobState>& state) const {
    return (torn_possible && !state) ||
           std::find(states.begin(), states.end(), state) != states.end();
  }
  bool allows(const std::vector<EndedExecution>& list) const {
    return std::find(ended.begin(), ended.end(), list) != ended.end();
  }
};

struct Tally {
  int cuts = 0;
  int old_state = 0;  // the state before an interrupted save, after its rename ran
  int new_state = 0;  // the state of a Synced save the cut came right after
  int torn = 0;       // a Deferred state discarded as torn
};

class StateStorePowerLoss : public ::testing::TestWithParam<Unsynced> {
 protected:
  // Runs the sequence, the power going off after `cut` operations (none: never); cuts it,
  // then loads as the next start does and checks what it reads.
  void run(std::optional<int> cut, int* operations, Tally& outcome) {
    auto tmp = must(test::TempDir::create("state-power"), "temp dir");
    const fs::path dir = tmp.path() / "state";
    fs::create_directory(dir);
    fs::permissions(dir, fs::perms::owner_all);
    const JobState before = job("job1", SavedStep::Finish, 4096);
    const std::vector<EndedExecution> ended_before{ended("job0")};
    must(test::write_file(dir / "state.json", to_checked_json(before)), "state.json");
    must(test::write_file(dir / "ended.json", to_json(ended_before)), "ended.json");
    auto fake = must(PowerLossFileSystem::create({dir}), "fake");
    if (cut) {
      fake->cut_after(*cut);
    }
    FileStateStore store(dir, fake);
    Expected expected{{before}, false, {ended_before}};
    bool interrupted_save = false;  // a Synced save
    std::optional<JobState> interrupted_state;
    std::optional<JobState> just_saved;  // by the last step completed, a Synced save
    for (const auto& step : daemon_like_sequence()) {
      Status done;
      switch (step.kind) {
        case Step::Save:
          done = store.save(step.state, step.durability);
          break;
        case Step::Clear:
          done = store.clear();
          break;
        case Step::SaveEnded:
          done = store.save_ended(step.ended);
          break;
      }
      // A step completed when its every operation ran (clear() ignores a failed folder
      // fsync, so its Status alone does not say).
      const bool completed = done && !fake->powered_off();
      if (step.kind == Step::SaveEnded) {
        if (completed) {
          expected.ended = {step.ended};
        } else {
          expected.ended.push_back(step.ended);
        }
      } else {
        std::optional<JobState> after;
        if (step.kind == Step::Save) {
          after = step.state;
        }
        const bool deferred = step.kind == Step::Save && step.durability == Durability::Deferred;
        just_saved.reset();
        if (completed && step.kind == Step::Save && !deferred) {
          just_saved = after;
        }
        if (completed && !deferred) {
          expected.states = {after};
          expected.torn_possible = false;
        } else {
          expected.states.push_back(after);
          expected.torn_possible = expected.torn_possible || deferred;
        }
        if (!completed) {
          interrupted_state = after;
          interrupted_save = step.kind == Step::Save && !deferred;
        }
      }
      if (!completed) {
        break;
      }
    }
    if (!cut) {
      *operations = fake->operations();
    }
    // Whether the interrupted save's rename ran (its state is in place until the cut).
    const bool renamed =
        interrupted_save && must(test::read_file(dir / "state.json"), "state.json") ==
                                to_checked_json(*interrupted_state);
    UPPARAT_ASSERT_OK(fake->cut_power(GetParam()));
    ++outcome.cuts;

    FileStateStore next(dir);
    const std::string where = "cut after " + (cut ? std::to_string(*cut) : "all") + " operations";
    auto loaded = next.load();
    ASSERT_TRUE(loaded) << where << ": " << loaded.error().message();
    EXPECT_TRUE(expected.allows(*loaded)) << where << ": read " << show(*loaded);
    if (renamed && !(*loaded == interrupted_state)) {
      ++outcome.old_state;
    }
    if (just_saved && *loaded == just_saved) {
      ++outcome.new_state;
    }
    if (!*loaded && expected.torn_possible &&
        std::find(expected.states.begin(), expected.states.end(), std::nullopt) ==
            expected.states.end()) {
      ++outcome.torn;
    }
    auto loaded_ended = next.load_ended();
    ASSERT_TRUE(loaded_ended) << where << ": " << loaded_ended.error().message();
    EXPECT_TRUE(expected.allows(*loaded_ended)) << where << ": read " << show(*loaded_ended);
    EXPECT_FALSE(fs::exists(dir / "state.json.tmp")) << where;
    EXPECT_FALSE(fs::exists(dir / "ended.json.tmp")) << where;
    // The next start saves again as usual.
    UPPARAT_EXPECT_OK(next.save(job("job4", SavedStep::Install)));
  }
};

TEST_P(StateStorePowerLoss, EveryCutLeavesTheOldOrTheNewState) {
  int operations = 0;
  Tally outcome;
  run(std::nullopt, &operations, outcome);
  ASSERT_GT(operations, 40);
  for (int cut = 0; cut <= operations; ++cut) {
    run(cut, nullptr, outcome);
    if (HasFatalFailure()) {
      return;
    }
  }
  // Not vacuous: some cuts came after a Synced save's rename and still left the old state
  // (the folder was not fsynced yet), some left the new one, some tore a Deferred state.
  EXPECT_GT(outcome.old_state, 0);
  EXPECT_GT(outcome.new_state, 0);
  EXPECT_GT(outcome.torn, 0);
}

INSTANTIATE_TEST_SUITE_P(Unsynced, StateStorePowerLoss,
                         ::testing::Values(Unsynced::Dropped, Unsynced::Zeros),
                         [](const auto& info) {
                           return info.param == Unsynced::Dropped ? "DataDropped" : "SizeKept";
                         });

}  // namespace
}  // namespace upparat::state
