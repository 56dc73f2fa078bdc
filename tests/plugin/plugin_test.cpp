// The plugin loader against real .so fixtures (tests/plugin/fixtures), built by this build.

#include "plugin/plugin.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace upparat::plugin {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;
using namespace std::chrono_literals;

namespace fs = std::filesystem;

// Captures everything logged through spdlog's default logger while it lives.
class LogCapture {
 public:
  LogCapture()
      : sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(1000)),
        previous_(spdlog::default_logger()) {
    sink_->set_pattern("%l %v");
    auto logger = std::make_shared<spdlog::logger>("capture", sink_);
    logger->set_level(spdlog::level::trace);
    spdlog::set_default_logger(logger);
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }

  std::vector<std::string> lines() const { return sink_->last_formatted(); }
  bool contains(const std::string& line) const {
    for (const auto& l : lines()) {
      if (l.find(line) != std::string::npos) {
        return true;
      }
    }
    return false;
  }

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
  std::shared_ptr<spdlog::logger> previous_;
};

// The daemon's side of a step: a stop signal, a store, and the progress it receives.
struct Harness {
  StopSignal stop;
  KeyValueStore store;
  std::mutex mutex;
  std::vector<std::pair<std::string, int>> progress;

  StepServices services() {
    StepServices s;
    s.stop = &stop;
    s.store = &store;
    s.progress = [this](std::string_view line, int percent) {
      const std::lock_guard<std::mutex> lock(mutex);
      progress.emplace_back(std::string(line), percent);
    };
    return s;
  }
};

// A private directory removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "upparat-plugin-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw std::runtime_error("mkdtemp failed");
    }
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

JobContext job(std::string meta = {}) {
  JobContext j;
  j.job_id = "upparat_42";
  j.execution_number = 3;
  j.version = "2.0.0";
  j.meta = std::move(meta);
  j.url = "https://example.invalid/firmware.bin";
  j.document_json = R"({"action":"upparat_update","version":"2.0.0"})";
  return j;
}

std::unique_ptr<LoadedPlugin> must_load(const fs::path& path,
                                        const std::map<std::string, std::string>& config = {}) {
  auto plugin = LoadedPlugin::load(path, config);
  if (!plugin) {
    throw std::runtime_error("load failed: " + plugin.error().message());
  }
  return std::move(*plugin);
}

std::string load_error(const fs::path& path,
                       const std::map<std::string, std::string>& config = {}) {
  auto plugin = LoadedPlugin::load(path, config);
  if (plugin) {
    return "(loaded)";
  }
  return plugin.error().message();
}

// --- Loading and the ABI check -------------------------------------------------------------

TEST(PluginLoad, InspectsTheGoodCppPlugin) {
  LogCapture log;
  auto info = LoadedPlugin::inspect(UPPARAT_FIXTURE_GOOD);
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->path, fs::path(UPPARAT_FIXTURE_GOOD));
  EXPECT_EQ(info->name, "fixture-good");
  EXPECT_EQ(info->version, "2.1.0");
  EXPECT_EQ(info->license, "Apache-2.0");
  EXPECT_EQ(info->description, "Test fixture: a well-behaved C++ plugin");
  EXPECT_EQ(info->abi_major, kHostAbiMajor);
  EXPECT_EQ(info->abi_minor, kHostAbiMinor);
  EXPECT_EQ(info->capabilities, kCapInstallFromUrl);
  for (bool provided : info->provides) {
    EXPECT_TRUE(provided);  // the C++ helper fills every slot; unsupported ones answer so
  }
  // inspect() creates no instance.
  EXPECT_FALSE(log.contains("configured with"));
}

TEST(PluginLoad, InspectsTheGoodCPlugin) {
  auto info = LoadedPlugin::inspect(UPPARAT_FIXTURE_GOOD_C);
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->name, "fixture-c");
  EXPECT_EQ(info->version, "0.3.0");
  EXPECT_EQ(info->license, "MIT");
  EXPECT_EQ(info->capabilities, kCapInstallNotInterruptible);
  EXPECT_EQ(info->abi_minor, 0) << "built for ABI 1.0";
  EXPECT_TRUE(info->provides[0]);
  EXPECT_TRUE(info->provides[1]);
  EXPECT_TRUE(info->provides[2]);
  EXPECT_FALSE(info->provides[3]);  // restart is NULL
  EXPECT_TRUE(info->provides[4]);
}

TEST(PluginLoad, MissingFile) {
  const std::string path = "/nonexistent/upparat/plugin.so";
  EXPECT_EQ(load_error(path),
            "plugin " + path + ": file not found; check the plugin's path in the configuration");
  auto info = LoadedPlugin::inspect(path);
  ASSERT_FALSE(info);
  EXPECT_THAT(info.error().message(), HasSubstr("file not found"));
}

TEST(PluginLoad, EmptyPath) {
  EXPECT_EQ(load_error(""), "plugin: no path configured");
}

TEST(PluginLoad, Directory) {
  TempDir dir;
  EXPECT_THAT(load_error(dir.path()), HasSubstr("not a regular file"));
}

TEST(PluginLoad, NotASharedObject) {
  TempDir dir;
  const fs::path path = dir.path() / "plugin.so";
  std::ofstream(path) << "#!/bin/sh\n# A text file that is long enough to hold an ELF header, "
                         "but is none.\necho this is not a plugin\n";
  // The dynamic loader's own reason is quoted.
  EXPECT_EQ(load_error(path),
            "plugin " + path.string() +
                ": not a shared object (the dynamic loader says: " + path.string() +
                ": invalid ELF header); the path must name the plugin's .so "
                "file");
}

TEST(PluginLoad, EmptyFile) {
  TempDir dir;
  const fs::path path = dir.path() / "empty.so";
  std::ofstream{path};
  EXPECT_THAT(load_error(path), HasSubstr("not a shared object (the dynamic loader says: " +
                                          path.string() + ": file too short)"));
}

TEST(PluginLoad, ElfThatIsNoSharedObject) {
  // A relocatable object file (.o) has an ELF header but cannot be loaded.
  TempDir dir;
  const fs::path path = dir.path() / "plugin.o";
  {
    std::ifstream in(UPPARAT_FIXTURE_GOOD, std::ios::binary);
    std::ofstream out(path, std::ios::binary);
    std::string header(64, '\0');
    in.read(header.data(), 64);
    header[16] = 1;  // e_type = ET_REL
    header[17] = 0;
    out << header;
  }
  const std::string message = load_error(path);
  EXPECT_THAT(message, HasSubstr("plugin " + path.string() + ": the dynamic loader refused it: "));
  EXPECT_THAT(message, HasSubstr("ldd -r " + path.string()));
}

// A copy of the good C plugin at `path` with the file's `mode`, its folder with `folder_mode`.
fs::path copy_good_plugin(const fs::path& folder, fs::perms folder_mode, fs::perms mode) {
  fs::create_directories(folder);
  const fs::path path = folder / "plugin.so";
  fs::copy_file(UPPARAT_FIXTURE_GOOD_C, path, fs::copy_options::overwrite_existing);
  fs::permissions(path, mode);
  fs::permissions(folder, folder_mode);
  return path;
}

constexpr fs::perms k755 = fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                           fs::perms::others_read | fs::perms::others_exec;

TEST(PluginPermissions, APluginOnlyRootOrTheDaemonCanChangeLoads) {
  TempDir dir;
  EXPECT_EQ(load_error(copy_good_plugin(dir.path() / "plugins", k755, k755)), "(loaded)");
  // Read-only for everybody is fine too.
  EXPECT_EQ(
      load_error(copy_good_plugin(dir.path() / "ro", fs::perms::owner_read | fs::perms::owner_exec,
                                  fs::perms::owner_read)),
      "(loaded)");
}

TEST(PluginPermissions, AFileWritableByOthersOrItsGroupIsRefused) {
  TempDir dir;
  for (auto [extra, shown] :
       {std::pair{fs::perms::others_write, "0757"}, std::pair{fs::perms::group_write, "0775"}}) {
    const fs::path path = copy_good_plugin(dir.path() / "p", k755, k755 | extra);
    EXPECT_EQ(load_error(path), "plugin " + path.string() + ": refused: " + path.string() +
                                    " is writable by its group or others (mode " + shown +
                                    "), so another user could change what the daemon runs: "
                                    "run chmod go-w " +
                                    path.string())
        << shown;
    EXPECT_FALSE(LoadedPlugin::inspect(path)) << "inspect follows the same rule";
  }
}

TEST(PluginPermissions, AFolderWritableByOthersOrItsGroupIsRefused) {
  TempDir dir;
  for (auto [extra, shown] :
       {std::pair{fs::perms::others_write, "0757"}, std::pair{fs::perms::group_write, "0775"},
        std::pair{fs::perms::all | fs::perms::sticky_bit, "1777"}}) {
    const fs::path folder = dir.path() / "plugins";
    const fs::path path = copy_good_plugin(folder, k755 | extra, k755);
    const std::string message = load_error(path);
    EXPECT_THAT(message, HasSubstr("plugin " + path.string() + ": refused: "));
    EXPECT_THAT(message, HasSubstr(folder.string() + " is writable by its group or others (mode " +
                                   shown + ")"));
    EXPECT_THAT(message, HasSubstr("chmod go-w " + folder.string()));
    fs::permissions(folder, k755);
  }
}

TEST(PluginPermissions, ALinkIntoAWritableFolderIsRefused) {
  // The configured folder is safe, the file it links to is in a folder anyone can write.
  TempDir dir;
  const fs::path shared = dir.path() / "shared";
  const fs::path target = copy_good_plugin(shared, fs::perms::all, k755);
  fs::create_directories(dir.path() / "plugins");
  const fs::path link = dir.path() / "plugins" / "plugin.so";
  fs::create_symlink(target, link);
  EXPECT_THAT(load_error(link), HasSubstr(shared.string() + " is writable by its group or others"));
  fs::permissions(shared, k755);
  EXPECT_EQ(load_error(link), "(loaded)");
}

TEST(PluginLoad, UnresolvedSymbolFailsAtLoad) {
  const std::string message = load_error(UPPARAT_FIXTURE_UNRESOLVED_SYMBOL);
  EXPECT_THAT(message, HasSubstr("the dynamic loader refused it: "));
  EXPECT_THAT(message, HasSubstr("undefined symbol: upparat_fixture_function_that_exists_nowhere"));
  auto info = LoadedPlugin::inspect(UPPARAT_FIXTURE_UNRESOLVED_SYMBOL);
  EXPECT_FALSE(info);
}

TEST(PluginLoad, NoEntrySymbol) {
  EXPECT_EQ(load_error(UPPARAT_FIXTURE_NO_ENTRY),
            std::string("plugin ") + UPPARAT_FIXTURE_NO_ENTRY +
                ": it does not export upparat_plugin_entry, so it is not an Upparat plugin (a "
                "plugin defines it with the UPPARAT_PLUGIN macro of upparat/plugin.hpp, or in C "
                "with UPPARAT_PLUGIN_EXPORT)");
}

TEST(PluginLoad, WrongAbiMajor) {
  EXPECT_EQ(load_error(UPPARAT_FIXTURE_ABI_MAJOR2),
            std::string("plugin ") + UPPARAT_FIXTURE_ABI_MAJOR2 +
                ": built for ABI 2.0, this daemon speaks ABI 1.3: rebuild the plugin against "
                "Upparat SDK 1.x");
  EXPECT_FALSE(LoadedPlugin::inspect(UPPARAT_FIXTURE_ABI_MAJOR2));
}

TEST(PluginLoad, NewerAbiMinor) {
  EXPECT_EQ(load_error(UPPARAT_FIXTURE_NEWER_MINOR),
            std::string("plugin ") + UPPARAT_FIXTURE_NEWER_MINOR +
                ": built for ABI 1.99, this daemon speaks ABI 1.3, which is older: rebuild the "
                "plugin against an Upparat SDK 1.x that speaks ABI 1.3 or older, or update the "
                "daemon");
}

TEST(PluginLoad, CreateFailsWithThePluginsMessage) {
  EXPECT_EQ(load_error(UPPARAT_FIXTURE_CREATE_FAILS),
            std::string("plugin ") + UPPARAT_FIXTURE_CREATE_FAILS +
                " (fixture-create-fails 1.0.0): create failed: cannot open "
                "/dev/upparat-fixture: No such file or directory");
  // inspect() does not create, so it succeeds.
  EXPECT_TRUE(LoadedPlugin::inspect(UPPARAT_FIXTURE_CREATE_FAILS));
}

TEST(PluginLoad, CppConstructorExceptionBecomesCreateFailure) {
  EXPECT_EQ(load_error(UPPARAT_FIXTURE_GOOD, {{"bogus", "1"}}),
            std::string("plugin ") + UPPARAT_FIXTURE_GOOD +
                " (fixture-good 2.1.0): create failed: unknown configuration key 'bogus'");
}

TEST(PluginLoad, RelativePathIsNotSearchedInSystemFolders) {
  const fs::path relative = fs::relative(UPPARAT_FIXTURE_GOOD);
  auto plugin = LoadedPlugin::load(relative, {});
  ASSERT_TRUE(plugin) << plugin.error().message();
  EXPECT_TRUE((*plugin)->info().path.is_absolute());
  // A bare name is taken relative to the working directory, never looked up in the library
  // path (dlopen would search /usr/lib for "libc.so.6").
  EXPECT_THAT(load_error("libc.so.6"), HasSubstr("file not found"));
}

struct DefectCase {
  const char* defect;
  const char* message;
};

void PrintTo(const DefectCase& c, std::ostream* os) {
  *os << c.defect;
}

class PluginDescriptorDefect : public ::testing::TestWithParam<DefectCase> {
 protected:
  void SetUp() override { ::setenv("UPPARAT_FIXTURE_DEFECT", GetParam().defect, 1); }
  void TearDown() override { ::unsetenv("UPPARAT_FIXTURE_DEFECT"); }
};

TEST_P(PluginDescriptorDefect, IsRefusedWithAClearMessage) {
  const std::string message = load_error(UPPARAT_FIXTURE_MISBEHAVING);
  EXPECT_THAT(message, HasSubstr(std::string("plugin ") + UPPARAT_FIXTURE_MISBEHAVING + ": "));
  EXPECT_THAT(message, HasSubstr(GetParam().message));
  EXPECT_FALSE(LoadedPlugin::inspect(UPPARAT_FIXTURE_MISBEHAVING));
}

INSTANTIATE_TEST_SUITE_P(
    Defects, PluginDescriptorDefect,
    ::testing::Values(
        DefectCase{"refuse",
                   "it refused to load into this daemon, which speaks ABI 1.3 (its entry point "
                   "returned no descriptor): rebuild the plugin against Upparat SDK 1.x"},
        DefectCase{"null-name", "its descriptor has no name (a bug in the plugin)"},
        DefectCase{"empty-name", "its descriptor has no name"},
        DefectCase{"null-version", "its descriptor has no version"},
        DefectCase{"null-functions", "its descriptor has no function table"},
        DefectCase{"tiny-descriptor", "its descriptor is 4 bytes, too small"},
        DefectCase{"small-descriptor", "its descriptor is 16 bytes, ABI 1.3 needs at least"},
        DefectCase{"small-functions", "its function table is 8 bytes, ABI 1.3 needs at least"},
        // 1.0's table: two 32-bit fields and seven pointers; 1.1 appended one pointer.
        DefectCase{"functions-of-1.0",
                   sizeof(void*) == 8
                       ? "its function table is 64 bytes, ABI 1.3 needs at least 72"
                       : "its function table is 36 bytes, ABI 1.3 needs at least 40"},
        DefectCase{"null-create", "its function table has no create function"},
        DefectCase{"null-destroy", "its function table has no destroy function"}),
    [](const auto& info) {
      std::string name = info.param.defect;
      std::replace(name.begin(), name.end(), '-', '_');
      std::replace(name.begin(), name.end(), '.', '_');
      return name;
    });

TEST(PluginLoad, TwoInstancesOfOnePluginAreIndependent) {
  auto first = must_load(UPPARAT_FIXTURE_GOOD, {{"version", "1.1"}});
  auto second = must_load(UPPARAT_FIXTURE_GOOD, {{"version", "2.2"}});
  Harness h1;
  Harness h2;
  EXPECT_EQ(first->run(Step::Version, job(), h1.services()).text, "1.1");
  EXPECT_EQ(second->run(Step::Version, job(), h2.services()).text, "2.2");
  first.reset();  // unloading one must leave the other working
  EXPECT_EQ(second->run(Step::Version, job(), h2.services()).text, "2.2");
}

TEST(PluginLoad, StepNamesAndCapabilityNames) {
  EXPECT_EQ(to_string(Step::Version), "version");
  EXPECT_EQ(to_string(Step::Download), "download");
  EXPECT_EQ(to_string(Step::Install), "install");
  EXPECT_EQ(to_string(Step::Restart), "restart");
  EXPECT_EQ(to_string(Step::Ready), "ready");
  for (Step step : kSteps) {
    EXPECT_EQ(parse_step(to_string(step)), step);
  }
  EXPECT_FALSE(parse_step("instal"));
  EXPECT_TRUE(capability_names(0).empty());
  EXPECT_THAT(capability_names(kCapInstallFromUrl | kCapInstallNotInterruptible | (1u << 7)),
              ElementsAre("INSTALL_FROM_URL", "INSTALL_NOT_INTERRUPTIBLE", "0x80"));
}

// --- Which steps an instance serves (ABI 1.1) -----------------------------------------------

std::vector<Step> served(const LoadedPlugin& plugin) {
  std::vector<Step> steps;
  for (Step step : {Step::Version, Step::Download, Step::Install, Step::Restart, Step::Ready}) {
    if (plugin.serves(step)) {
      steps.push_back(step);
    }
  }
  return steps;
}

TEST(StepsServed, APluginBuiltForAbi10ServesEveryStepWithAFunction) {
  // good_c is an ABI 1.0 plugin; after its 1.0 table lies a `steps` that serves nothing, which
  // the host must not read.
  auto plugin = must_load(UPPARAT_FIXTURE_GOOD_C);
  EXPECT_EQ(plugin->info().abi_minor, 0);
  EXPECT_THAT(served(*plugin), ElementsAre(Step::Version, Step::Download, Step::Install,
                                           Step::Ready));  // restart is NULL
  Harness h;
  EXPECT_EQ(plugin->run(Step::Version, job(), h.services()).outcome, Outcome::Ok);
}

TEST(StepsServed, AnAbi11PluginServesTheStepsItsInstanceNames) {
  LogCapture log;
  auto plugin = must_load(UPPARAT_FIXTURE_STEPS_MASK, {{"steps", "0x5"}});  // version, install
  EXPECT_EQ(plugin->info().abi_minor, kHostAbiMinor);
  EXPECT_THAT(served(*plugin), ElementsAre(Step::Version, Step::Install));

  Harness h;
  StepResult r = plugin->run(Step::Install, job(), h.services());
  EXPECT_EQ(r.outcome, Outcome::Ok);
  EXPECT_EQ(r.text, "install");
  EXPECT_TRUE(log.contains("[plugin fixture-steps-mask] called install"));
  // A step it does not serve is never called.
  r = plugin->run(Step::Download, job(), h.services());
  EXPECT_EQ(r.outcome, Outcome::NotSupported);
  EXPECT_EQ(r.text, "plugin fixture-steps-mask does not serve the download step");
  EXPECT_FALSE(log.contains("called download"));

  // Each instance has its own answer.
  auto other = must_load(UPPARAT_FIXTURE_STEPS_MASK, {{"steps", "16"}});
  EXPECT_THAT(served(*other), ElementsAre(Step::Ready));
  EXPECT_THAT(served(*plugin), ElementsAre(Step::Version, Step::Install));
  auto none = must_load(UPPARAT_FIXTURE_STEPS_MASK, {{"steps", "0"}});
  EXPECT_THAT(served(*none), ElementsAre());
}

TEST(StepsServed, BitsOfMissingFunctionsAndUnknownBitsAreIgnored) {
  auto plugin = must_load(UPPARAT_FIXTURE_STEPS_MASK, {{"steps", "0xffffffff"}});
  EXPECT_THAT(served(*plugin), ElementsAre(Step::Version, Step::Download, Step::Install,
                                           Step::Ready));  // restart is NULL
  Harness h;
  const StepResult r = plugin->run(Step::Restart, job(), h.services());
  EXPECT_EQ(r.outcome, Outcome::NotSupported);
  EXPECT_EQ(r.text, "plugin fixture-steps-mask does not provide the restart step");
}

TEST(StepsServed, AnAbi11PluginWithoutAStepsFunctionServesEveryStepWithAFunction) {
  auto plugin = must_load(UPPARAT_FIXTURE_MISBEHAVING);  // `steps` is NULL
  EXPECT_THAT(served(*plugin), ElementsAre(Step::Version, Step::Download, Step::Install,
                                           Step::Restart, Step::Ready));
}

TEST(StepsServed, ACppPluginServesTheStepsItOverridesOrThatItsStepsMemberNames) {
  auto plugin = must_load(UPPARAT_FIXTURE_GOOD);
  EXPECT_TRUE(plugin->info().provides[static_cast<int>(Step::Restart)]) << "the helper fills all";
  EXPECT_THAT(served(*plugin), ElementsAre(Step::Version, Step::Download, Step::Install,
                                           Step::Ready));  // restart is not overridden
  // steps() narrows it; a step the class does not override stays unserved.
  auto narrowed = must_load(UPPARAT_FIXTURE_GOOD, {{"steps", "install,restart"}});
  EXPECT_THAT(served(*narrowed), ElementsAre(Step::Install));
}

TEST(StepsServed, AStepsFunctionThatThrowsFailsTheLoad) {
  EXPECT_EQ(load_error(UPPARAT_FIXTURE_RAW_THROWING, {{"throw_in_steps", "1"}}),
            std::string("plugin ") + UPPARAT_FIXTURE_RAW_THROWING +
                " (fixture-raw-throwing 1.0.0): its steps function threw an exception (a bug in "
                "the plugin: it must not throw)");
}

TEST(RawThrowingPlugin, ExceptionsCrossingTheBoundaryAreErrors) {
  EXPECT_EQ(load_error(UPPARAT_FIXTURE_RAW_THROWING, {{"throw_in_create", "1"}}),
            std::string("plugin ") + UPPARAT_FIXTURE_RAW_THROWING +
                " (fixture-raw-throwing 1.0.0): create failed: an exception crossed the plugin "
                "boundary (a bug in the plugin)");
  auto plugin = must_load(UPPARAT_FIXTURE_RAW_THROWING);
  EXPECT_THAT(served(*plugin), ElementsAre(Step::Install));
  Harness h;
  const StepResult r = plugin->run(Step::Install, job(), h.services());
  EXPECT_EQ(r.outcome, Outcome::Failed);
  EXPECT_EQ(r.text, "plugin fixture-raw-throwing let an exception escape its install step");
}

// --- The good C++ plugin (helper) ----------------------------------------------------------

TEST(GoodCppPlugin, LogsThroughTheHostWithItsName) {
  LogCapture log;
  {
    auto plugin = must_load(UPPARAT_FIXTURE_GOOD, {{"dbus.bus", "system"}, {"version", "1.4"}});
    EXPECT_TRUE(log.contains("info [plugin fixture-good] configured with 2 entries"));
    EXPECT_TRUE(plugin->has_capability(kCapInstallFromUrl));
    EXPECT_FALSE(plugin->has_capability(kCapInstallNotInterruptible));
    Harness h;
    const StepResult r = plugin->run(Step::Version, job(), h.services());
    EXPECT_EQ(r.outcome, Outcome::Ok);
    EXPECT_EQ(r.text, "1.4");
    EXPECT_FALSE(log.contains("destroyed"));
  }
  // The destructor ran (and joined its thread) before the library was unloaded.
  EXPECT_TRUE(log.contains("info [plugin fixture-good] destroyed"));
}

TEST(GoodCppPlugin, DownloadRetriesWithItsOwnDelay) {
  auto plugin = must_load(UPPARAT_FIXTURE_GOOD);
  Harness h;
  JobContext j = job();
  StepResult r = plugin->run(Step::Download, j, h.services());
  EXPECT_EQ(r.outcome, Outcome::RetryLater);
  EXPECT_EQ(r.text, "server busy");
  EXPECT_EQ(r.retry_after, std::optional<std::chrono::seconds>(7s));
  j.retry_count = 1;
  r = plugin->run(Step::Download, j, h.services());
  EXPECT_EQ(r.outcome, Outcome::Ok);
  EXPECT_EQ(r.text, "");
}

TEST(GoodCppPlugin, InstallReportsProgressAndWritesTheStore) {
  auto plugin = must_load(UPPARAT_FIXTURE_GOOD);
  Harness h;
  EXPECT_EQ(plugin->run(Step::Ready, job(), h.services()).text, "slot is not set");

  JobContext j = job();
  j.file_path = "/var/lib/upparat/firmware.bin";
  const StepResult r = plugin->run(Step::Install, j, h.services());
  EXPECT_EQ(r.outcome, Outcome::Ok) << r.text;
  EXPECT_EQ(r.text, "installed /var/lib/upparat/firmware.bin");
  EXPECT_THAT(h.progress, ElementsAre(Pair("unpacking", 0), Pair("", 50), Pair("done", 100)));
  EXPECT_THAT(h.store.snapshot(),
              ElementsAre(Pair("installed_version", "2.0.0"), Pair("slot", "B")));

  // As after a reboot: a new instance, the store restored from the durable state.
  plugin.reset();
  auto after_reboot = must_load(UPPARAT_FIXTURE_GOOD);
  Harness h2;
  for (const auto& [key, value] : h.store.snapshot()) {
    h2.store.set(key, value);
  }
  EXPECT_EQ(after_reboot->run(Step::Version, job(), h2.services()).text, "2.0.0");
  EXPECT_EQ(after_reboot->run(Step::Ready, job(), h2.services()).outcome, Outcome::Ok);
}

TEST(GoodCppPlugin, UnimplementedStepIsNotSupported) {
  auto plugin = must_load(UPPARAT_FIXTURE_GOOD);
  Harness h;
  EXPECT_EQ(plugin->run(Step::Restart, job(), h.services()).outcome, Outcome::NotSupported);
}

TEST(GoodCppPlugin, ReceivesTheWholeJobContext) {
  auto plugin = must_load(UPPARAT_FIXTURE_GOOD);
  Harness h;
  JobContext j = job("echo");
  j.sha256 = "ab12";
  j.size = 1234;
  j.file_path = "/tmp/f.bin";
  j.force = true;
  j.seconds_since_first = 17;
  j.retry_count = 2;
  j.signer = "CN=Firmware 2026,O=Example";
  StepResult r = plugin->run(Step::Install, j, h.services());
  EXPECT_EQ(r.outcome, Outcome::Ok);
  EXPECT_EQ(r.text,
            "id=upparat_42 exec=3 version=2.0.0 meta=echo url=https://example.invalid/firmware.bin"
            " sha256=ab12 size=1234 file=/tmp/f.bin force=1 since=17 retry=2"
            " signer=CN=Firmware 2026,O=Example "
            "doc={\"action\":\"upparat_update\",\"version\":\"2.0.0\"}");

  r = plugin->run(Step::Install, job("echo"), h.services());
  EXPECT_THAT(r.text, HasSubstr(" sha256=(none) size=(none) file=(none) force=0 since=0 retry=0"
                                " signer=(none)"));
}

TEST(GoodCppPlugin, BlockedInPollOnStopFdWakesOnStop) {
  auto plugin = must_load(UPPARAT_FIXTURE_GOOD);
  Harness h;
  auto stopper = std::async(std::launch::async, [&h] {
    std::this_thread::sleep_for(200ms);
    h.stop.request();
  });
  const auto start = std::chrono::steady_clock::now();
  const StepResult r = plugin->run(Step::Install, job("block"), h.services());
  EXPECT_LT(std::chrono::steady_clock::now() - start, 30s);
  stopper.get();
  EXPECT_EQ(r.outcome, Outcome::Failed);
  EXPECT_EQ(r.text, "install stopped by the host");
}

TEST(GoodCppPlugin, PollingShouldStopSeesTheStop) {
  auto plugin = must_load(UPPARAT_FIXTURE_GOOD);
  Harness h;
  auto stopper = std::async(std::launch::async, [&h] {
    std::this_thread::sleep_for(100ms);
    h.stop.request();
  });
  const StepResult r = plugin->run(Step::Install, job("poll"), h.services());
  stopper.get();
  EXPECT_EQ(r.text, "install stopped by the host (polled)");
}

TEST(GoodCppPlugin, ServicesWorkFromThePluginsThreads) {
  auto plugin = must_load(UPPARAT_FIXTURE_GOOD);
  Harness h;
  const StepResult r = plugin->run(Step::Install, job("thread-progress"), h.services());
  EXPECT_EQ(r.outcome, Outcome::Ok) << r.text;
  ASSERT_EQ(h.progress.size(), 10u);
  EXPECT_EQ(h.progress.front(), std::make_pair(std::string("chunk 1"), 10));
  EXPECT_EQ(h.progress.back(), std::make_pair(std::string("chunk 10"), 100));
  EXPECT_EQ(h.store.get("chunk"), "10");
}

TEST(GoodCppPlugin, ProgressPercentIsClampedAndBlankReportsDropped) {
  auto plugin = must_load(UPPARAT_FIXTURE_GOOD);
  Harness h;
  EXPECT_EQ(plugin->run(Step::Install, job("progress-only-percent"), h.services()).outcome,
            Outcome::Ok);
  EXPECT_THAT(h.progress, ElementsAre(Pair("", 33), Pair("", 100)));
}

TEST(GoodCppPlugin, StepsOfOneInstanceNeverRunConcurrently) {
  auto plugin = must_load(UPPARAT_FIXTURE_GOOD);
  std::vector<std::future<StepResult>> runs;
  std::vector<std::unique_ptr<Harness>> harnesses;
  for (int i = 0; i < 4; ++i) {
    harnesses.push_back(std::make_unique<Harness>());
    Harness* h = harnesses.back().get();
    runs.push_back(std::async(std::launch::async, [&plugin, h] {
      return plugin->run(Step::Install, job("concurrency"), h->services());
    }));
  }
  for (auto& run : runs) {
    EXPECT_EQ(run.get().text, "alone");
  }
}

TEST(GoodCppPlugin, StoreLimitsReachThePlugin) {
  auto plugin = must_load(UPPARAT_FIXTURE_GOOD);
  Harness h;
  const StepResult r = plugin->run(Step::Install, job("store-limits"), h.services());
  EXPECT_EQ(r.text, "bad-key:refused big:refused max:accepted remove:ok gone:yes");
  EXPECT_TRUE(h.store.snapshot().empty());
}

TEST(GoodCppPlugin, FailureTextIsSanitised) {
  auto plugin = must_load(UPPARAT_FIXTURE_GOOD);
  Harness h;
  StepResult r = plugin->run(Step::Install, job("control"), h.services());
  EXPECT_EQ(r.outcome, Outcome::Failed);
  EXPECT_EQ(r.text, "line one line two  \xEF\xBF\xBD\xEF\xBF\xBD end");

  r = plugin->run(Step::Install, job("long"), h.services());
  EXPECT_EQ(r.text, std::string(1024, 'x'));
}

// --- The good C plugin ---------------------------------------------------------------------

TEST(GoodCPlugin, RunsEveryStep) {
  LogCapture log;
  {
    auto plugin =
        must_load(UPPARAT_FIXTURE_GOOD_C, {{"z.last", "1"}, {"version", "7.7"}, {"a.first", ""}});
    EXPECT_TRUE(log.contains("info [plugin fixture-c] C plugin created with 3 entries"));
    EXPECT_TRUE(plugin->has_capability(kCapInstallNotInterruptible));
    Harness h;
    EXPECT_EQ(plugin->run(Step::Version, job(), h.services()).text, "7.7");

    JobContext j = job();
    StepResult r = plugin->run(Step::Download, j, h.services());
    EXPECT_EQ(r.outcome, Outcome::Failed);
    EXPECT_EQ(r.text, "the job has no sha256 or size");
    j.sha256 = "00ff";
    j.size = 10;
    EXPECT_EQ(plugin->run(Step::Download, j, h.services()).outcome, Outcome::Ok);

    j.file_path = "/tmp/update.raucb";
    r = plugin->run(Step::Install, j, h.services());
    EXPECT_EQ(r.outcome, Outcome::Ok) << r.text;
    EXPECT_EQ(r.text, "installed");
    EXPECT_THAT(h.progress, ElementsAre(Pair("C install", 42)));
    EXPECT_EQ(h.store.get("slot"), "A");

    r = plugin->run(Step::Restart, j, h.services());
    EXPECT_EQ(r.outcome, Outcome::NotSupported);
    EXPECT_EQ(r.text, "plugin fixture-c does not provide the restart step");

    r = plugin->run(Step::Ready, j, h.services());
    EXPECT_EQ(r.outcome, Outcome::Ok) << r.text;
    EXPECT_EQ(h.store.get("slot"), "ready");
  }
  EXPECT_TRUE(log.contains("warning [plugin fixture-c] C plugin destroyed"));
}

TEST(GoodCPlugin, SeesAStopRequestedBeforeTheStep) {
  auto plugin = must_load(UPPARAT_FIXTURE_GOOD_C);
  Harness h;
  h.stop.request();
  JobContext j = job();
  j.file_path = "/tmp/update.raucb";
  const StepResult r = plugin->run(Step::Install, j, h.services());
  EXPECT_EQ(r.outcome, Outcome::RetryLater);
  EXPECT_EQ(r.text, "asked to stop");
  EXPECT_EQ(r.retry_after, std::optional<std::chrono::seconds>(30s));
}

// --- Plugins that throw or misbehave -------------------------------------------------------

TEST(ThrowingPlugin, ExceptionsBecomeFailedWithTheirText) {
  auto plugin = must_load(UPPARAT_FIXTURE_THROWING);
  Harness h;
  StepResult r = plugin->run(Step::Install, job(), h.services());
  EXPECT_EQ(r.outcome, Outcome::Failed);
  EXPECT_EQ(r.text, "flash write failed: device busy");
  r = plugin->run(Step::Download, job(), h.services());
  EXPECT_EQ(r.outcome, Outcome::Failed);
  EXPECT_EQ(r.text, "unknown exception in plugin step");
  // The instance is still usable after an exception.
  EXPECT_EQ(plugin->run(Step::Version, job(), h.services()).text, "1.0");
}

TEST(MisbehavingPlugin, InvalidResultCodeIsFailed) {
  auto plugin = must_load(UPPARAT_FIXTURE_MISBEHAVING);
  Harness h;
  const StepResult r = plugin->run(Step::Version, job(), h.services());
  EXPECT_EQ(r.outcome, Outcome::Failed);
  EXPECT_EQ(r.text, "plugin returned invalid result code 42");
}

TEST(MisbehavingPlugin, UnterminatedTextIsBounded) {
  auto plugin = must_load(UPPARAT_FIXTURE_MISBEHAVING);
  Harness h;
  const StepResult r = plugin->run(Step::Download, job(), h.services());
  EXPECT_EQ(r.outcome, Outcome::Failed);
  EXPECT_EQ(r.text, std::string(1024, 'a'));
}

TEST(MisbehavingPlugin, ServiceCallsAfterTheStepReturnedAreIgnored) {
  LogCapture log;
  Harness h;
  h.store.set("slot", std::string("A"));
  {
    auto plugin = must_load(UPPARAT_FIXTURE_MISBEHAVING);
    const StepResult r = plugin->run(Step::Install, job(), h.services());
    EXPECT_EQ(r.outcome, Outcome::Ok);
  }  // destroy joins the plugin's thread, which called the services after install returned
  EXPECT_TRUE(log.contains("[plugin fixture-misbehaving] late calls: stop=1 set=-1 get=null"));
  EXPECT_THAT(h.progress, ElementsAre(Pair("in time", 10)));
  EXPECT_FALSE(h.store.get("late"));
}

TEST(MisbehavingPlugin, NegativeDelayMeansTheConfiguredInterval) {
  auto plugin = must_load(UPPARAT_FIXTURE_MISBEHAVING);
  Harness h;
  const StepResult r = plugin->run(Step::Restart, job(), h.services());  // -5
  EXPECT_EQ(r.outcome, Outcome::RetryLater);
  EXPECT_EQ(r.text, "later");
  EXPECT_FALSE(r.retry_after);
  for (const char* delay : {"-1", "-2", "-86401", "-9223372036854775808"}) {
    const StepResult n = plugin->run(Step::Restart, job(delay), h.services());
    EXPECT_EQ(n.outcome, Outcome::RetryLater) << delay;
    EXPECT_FALSE(n.retry_after) << delay << " gave " << n.retry_after->count() << " s";
  }
}

TEST(MisbehavingPlugin, DelayIsClampedToOneDay) {
  LogCapture log;
  auto plugin = must_load(UPPARAT_FIXTURE_MISBEHAVING);
  Harness h;
  const std::pair<const char*, std::chrono::seconds> cases[] = {
      {"0", 0s},
      {"86400", 86400s},
      {"86401", 86400s},
      {"9223372036854775807", 86400s},  // INT64_MAX: overflows any conversion to milliseconds
  };
  for (const auto& [delay, expected] : cases) {
    const StepResult r = plugin->run(Step::Restart, job(delay), h.services());
    EXPECT_EQ(r.outcome, Outcome::RetryLater) << delay;
    ASSERT_TRUE(r.retry_after) << delay;
    EXPECT_EQ(*r.retry_after, expected) << delay << " gave " << r.retry_after->count() << " s";
  }
  EXPECT_TRUE(
      log.contains("plugin fixture-misbehaving asked to retry its restart step after "
                   "9223372036854775807 s: waiting 86400 s"));
}

TEST(MisbehavingPlugin, OkTextIsTrimmed) {
  auto plugin = must_load(UPPARAT_FIXTURE_MISBEHAVING);
  Harness h;
  EXPECT_EQ(plugin->run(Step::Ready, job(), h.services()).text, "ready-text");
  EXPECT_EQ(plugin->info().license, "");
  EXPECT_EQ(plugin->info().description, "");
}

TEST(MisbehavingPlugin, ATextPointerReplacedByThePluginIsNeverRead) {
  // The host reads its own buffer: a NULL or foreign result->text is an empty text.
  auto plugin = must_load(UPPARAT_FIXTURE_MISBEHAVING);
  Harness h;
  for (const char* meta : {"null-text", "own-text"}) {
    const StepResult r = plugin->run(Step::Ready, job(meta), h.services());
    EXPECT_EQ(r.outcome, Outcome::Failed) << meta;
    EXPECT_EQ(r.text, "none") << meta;
  }
  EXPECT_EQ(plugin->run(Step::Ready, job(), h.services()).text, "ready-text");
}

TEST(PluginRun, MissingServicesAreAHostBugNotACrash) {
  auto plugin = must_load(UPPARAT_FIXTURE_GOOD);
  StepServices none;
  const StepResult r = plugin->run(Step::Version, job(), none);
  EXPECT_EQ(r.outcome, Outcome::Failed);
  EXPECT_THAT(r.text, HasSubstr("host bug"));
}

}  // namespace
}  // namespace upparat::plugin

// --- ABI 1.0 and the stream services of ABI 1.2 --------------------------------------------

namespace upparat::plugin {
namespace {

// Built against the frozen ABI 1.0 header: this host loads and runs it unchanged, and the bit
// it sets that 1.0 did not define (INSTALL_STREAM's) does not make the host stream.
TEST(Abi10Plugin, LoadsAndRunsInThisHost) {
  TempDir dir;
  const fs::path input = dir.path() / "update.bin";
  const fs::path output = dir.path() / "installed.bin";
  std::ofstream(input, std::ios::binary) << std::string(10000, 'u');
  auto plugin = must_load(UPPARAT_FIXTURE_ABI10, {{"output", output.string()}, {"version", "1.5"}});
  EXPECT_EQ(plugin->info().abi_minor, 0);
  EXPECT_TRUE(plugin->has_capability(kCapInstallNotInterruptible));
  EXPECT_FALSE(plugin->has_capability(kCapInstallStream));
  EXPECT_TRUE(plugin->serves(Step::Version));
  EXPECT_TRUE(plugin->serves(Step::Install));
  EXPECT_FALSE(plugin->serves(Step::Restart));
  Harness h;
  EXPECT_EQ(plugin->run(Step::Version, job(), h.services()).text, "1.5");
  JobContext j = job();
  j.file_path = input;
  StepServices services = h.services();
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
  services.stream_fd = pair[0];  // a 1.0 plugin never sees it
  services.stream_end = [] { return StreamEnd{StreamState::Failed, "never asked"}; };
  const StepResult r = plugin->run(Step::Install, j, services);
  ::close(pair[0]);
  ::close(pair[1]);
  EXPECT_EQ(r.outcome, Outcome::Ok) << r.text;
  EXPECT_EQ(r.text, "installed");
  std::ifstream in(output, std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), std::string(10000, 'u'));
  EXPECT_THAT(h.progress, ElementsAre(Pair("copied by an ABI 1.0 plugin", 100)));
  EXPECT_EQ(h.store.get("abi"), "1.0");
}

// The stream services reach a 1.2 plugin: it reads stream_fd to its end and asks stream_end.
class StreamPluginTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, pair_), 0);
    plugin_ = must_load(UPPARAT_FIXTURE_STREAM, {{"output", output().string()},
                                                 {"record", (dir_.path() / "record").string()}});
  }
  void TearDown() override {
    ::close(pair_[0]);
    if (pair_[1] >= 0) {
      ::close(pair_[1]);
    }
  }
  fs::path output() const { return dir_.path() / "out.bin"; }
  std::string record() const {
    std::ifstream in(dir_.path() / "record");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  // Writes `data` into the stream, then ends it as `end`, from another thread.
  StepResult run(const std::string& data, StreamEnd end) {
    std::atomic<bool> ended{false};
    Harness h;
    StepServices services = h.services();
    services.stream_fd = pair_[0];
    services.stream_end = [&] { return ended ? end : StreamEnd{StreamState::Running, ""}; };
    std::thread writer([&] {
      EXPECT_EQ(::write(pair_[1], data.data(), data.size()), static_cast<ssize_t>(data.size()));
      ended = true;
      ::close(std::exchange(pair_[1], -1));
    });
    StepResult r = plugin_->run(Step::Install, job(), services);
    writer.join();
    return r;
  }

  TempDir dir_;
  int pair_[2] = {-1, -1};
  std::unique_ptr<LoadedPlugin> plugin_;
};

TEST_F(StreamPluginTest, DeclaresTheCapabilityAndReadsACompleteStream) {
  EXPECT_EQ(plugin_->info().abi_minor, 3);
  EXPECT_TRUE(plugin_->has_capability(kCapInstallStream));
  EXPECT_THAT(capability_names(plugin_->info().capabilities), ElementsAre("INSTALL_STREAM"));
  const std::string data(100000, 's');
  const StepResult r = run(data, StreamEnd{StreamState::Complete, ""});
  EXPECT_EQ(r.outcome, Outcome::Ok) << r.text;
  std::ifstream in(output(), std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), data);
  EXPECT_THAT(record(), HasSubstr("complete 100000"));
}

TEST_F(StreamPluginTest, AFailedEndReachesThePluginWithItsReason) {
  const StepResult r = run("partial", StreamEnd{StreamState::Failed, "sha256: expected a, got b"});
  EXPECT_EQ(r.outcome, Outcome::Failed);
  EXPECT_THAT(r.text, HasSubstr("sha256: expected a, got b"));
  EXPECT_THAT(record(), HasSubstr("failed sha256: expected a, got b"));
  EXPECT_FALSE(fs::exists(output()));
}

TEST_F(StreamPluginTest, WithoutAStreamTheStepHasNone) {
  Harness h;
  const StepResult r = plugin_->run(Step::Install, job(), h.services());
  EXPECT_EQ(r.outcome, Outcome::Failed);
  EXPECT_THAT(r.text, HasSubstr("no stream_fd"));
}

}  // namespace
}  // namespace upparat::plugin
