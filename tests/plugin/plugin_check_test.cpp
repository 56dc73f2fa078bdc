// upparat-plugin-check, run as a real process on the fixture plugins.

#include <fcntl.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/binaries.hpp"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

struct CheckRun {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string slurp(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// Runs upparat-plugin-check with `args` (no shell), stdout and stderr captured separately.
CheckRun check(const std::vector<std::string>& args) {
  std::string pattern = (fs::temp_directory_path() / "upparat-plugin-check-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    throw std::runtime_error("mkdtemp failed");
  }
  const fs::path dir(pattern);
  const std::string out_path = (dir / "out").string();
  const std::string err_path = (dir / "err").string();

  std::vector<std::string> argv_storage{UPPARAT_PLUGIN_CHECK};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& arg : argv_storage) {
    argv.push_back(arg.data());
  }
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0600);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0600);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    fs::remove_all(dir);
    throw std::runtime_error("posix_spawn failed");
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  CheckRun run;
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  run.out = slurp(out_path);
  run.err = slurp(err_path);
  fs::remove_all(dir);
  return run;
}

TEST(PluginCheck, PrintsTheDescriptorOfACppPlugin) {
  const CheckRun run = check({UPPARAT_FIXTURE_GOOD});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out, std::string("path:          ") + UPPARAT_FIXTURE_GOOD +
                         "\n"
                         "name:          fixture-good\n"
                         "version:       2.1.0\n"
                         "license:       Apache-2.0\n"
                         "description:   Test fixture: a well-behaved C++ plugin\n"
                         "abi:           1.3 (daemon speaks 1.3)\n"
                         "capabilities:  INSTALL_FROM_URL\n"
                         "steps:         version download install restart ready\n"
                         "without:       none\n"
                         "instance:      not created (pass key=value arguments to create one)\n");
  EXPECT_EQ(run.err, "");
}

TEST(PluginCheck, PrintsTheDescriptorOfACPlugin) {
  const CheckRun run = check({UPPARAT_FIXTURE_GOOD_C});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("name:          fixture-c\n"));
  EXPECT_THAT(run.out, HasSubstr("capabilities:  INSTALL_NOT_INTERRUPTIBLE\n"));
  EXPECT_THAT(run.out, HasSubstr("abi:           1.0 (daemon speaks 1.3)\n"));
  EXPECT_THAT(run.out, HasSubstr("steps:         version download install ready\n"));
  EXPECT_THAT(run.out, HasSubstr("without:       restart\n"));
  EXPECT_THAT(run.out, Not(HasSubstr("serves:"))) << "no instance, no answer";
}

TEST(PluginCheck, CreatesAndDestroysAnInstanceWithConfiguration) {
  const CheckRun run = check({UPPARAT_FIXTURE_GOOD_C, "version=1.2", "dbus.bus=system"});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("serves:        version download install ready\n"
                                 "instance:      created with 2 configuration entries and "
                                 "destroyed\n"));
  // The plugin's log lines go to stderr, with its name.
  EXPECT_THAT(run.err, HasSubstr("[plugin fixture-c] C plugin created with 2 entries"));
  EXPECT_THAT(run.err, HasSubstr("[plugin fixture-c] C plugin destroyed"));
}

TEST(PluginCheck, PrintsTheStepsTheInstanceServes) {
  CheckRun run = check({UPPARAT_FIXTURE_STEPS_MASK, "steps=0x14"});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("steps:         version download install ready\n"));
  EXPECT_THAT(run.out, HasSubstr("serves:        install ready\n"));
  run = check({UPPARAT_FIXTURE_STEPS_MASK, "steps=0"});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("serves:        none\n"));
  run = check({UPPARAT_FIXTURE_GOOD, "greeting=hi"});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("steps:         version download install restart ready\n"
                                 "without:       none\n"));
  EXPECT_THAT(run.out, HasSubstr("serves:        version download install ready\n"));
}

TEST(PluginCheck, ConfigurationRefusedByThePlugin) {
  const CheckRun run = check({UPPARAT_FIXTURE_GOOD, "bogus=1"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.err, HasSubstr("create failed: unknown configuration key 'bogus'"));
}

TEST(PluginCheck, CreateFailure) {
  const CheckRun run = check({UPPARAT_FIXTURE_CREATE_FAILS, "device=/dev/x"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.err, HasSubstr("create failed: cannot open /dev/upparat-fixture: No such file "
                                 "or directory\n"));
}

TEST(PluginCheck, LoadErrorsGoToStderrWithExitCode1) {
  struct Case {
    std::string path;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"/nonexistent/plugin.so", "file not found"},
      {UPPARAT_FIXTURE_ABI_MAJOR2,
       "built for ABI 2.0, this daemon speaks ABI 1.3: rebuild the plugin against Upparat SDK "
       "1.x"},
      {UPPARAT_FIXTURE_NEWER_MINOR, "built for ABI 1.99, this daemon speaks ABI 1.3"},
      {UPPARAT_FIXTURE_NO_ENTRY, "it does not export upparat_plugin_entry"},
      {UPPARAT_FIXTURE_UNRESOLVED_SYMBOL,
       "undefined symbol: upparat_fixture_function_that_exists_nowhere"},
  };
  for (const auto& c : cases) {
    const CheckRun run = check({c.path});
    EXPECT_EQ(run.exit_code, 1) << c.path;
    EXPECT_EQ(run.out, "") << c.path;
    EXPECT_THAT(run.err, HasSubstr("upparat-plugin-check: plugin " + c.path + ": "));
    EXPECT_THAT(run.err, HasSubstr(c.message));
  }
}

TEST(PluginCheck, UsageErrors) {
  CheckRun run = check({});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_THAT(run.err, HasSubstr("usage: upparat-plugin-check <plugin.so> [key=value ...]"));
  run = check({UPPARAT_FIXTURE_GOOD, "novalue"});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_THAT(run.err, HasSubstr("'novalue' is not key=value"));
  run = check({UPPARAT_FIXTURE_GOOD, "a=1", "a=2"});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_THAT(run.err, HasSubstr("key 'a' given twice"));
  run = check({"--help"});
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_THAT(run.out, HasSubstr("usage:"));
  run = check({"--allow-restart", UPPARAT_FIXTURE_GOOD});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_THAT(run.err, HasSubstr("--allow-restart goes with --conformance"));
}

// ---- the conformance kit

TEST(PluginConformance, AWellBehavedPluginPassesEveryCheck) {
  for (const char* plugin : {UPPARAT_FIXTURE_GOOD, UPPARAT_FIXTURE_GOOD_C}) {
    const CheckRun run = check({"--conformance", plugin});
    EXPECT_EQ(run.exit_code, 0) << run.out << run.err;
    EXPECT_THAT(run.out, HasSubstr("result: every check passed"));
    EXPECT_THAT(run.out, HasSubstr("ok    100 create/destroy cycles: heap grew by"));
    EXPECT_THAT(run.out, HasSubstr("skip  restart: not run (it may reboot this machine"));
    EXPECT_THAT(run.out, Not(HasSubstr("  FAIL  ")));
  }
}

TEST(PluginConformance, TheShippedScriptPluginPassesWithHooks) {
  std::string pattern = (fs::temp_directory_path() / "upparat-conformance-hooks-XXXXXX").string();
  ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
  const fs::path dir(pattern);
  std::vector<std::string> args{"--conformance", "--allow-restart", UPPARAT_SCRIPT_PLUGIN};
  for (const char* step : {"version", "download", "install", "restart", "ready"}) {
    const fs::path hook = dir / (std::string(step) + ".sh");
    std::ofstream(hook) << "#!/bin/sh\n"
                        << (std::string(step) == "version" ? "echo 1.0\n" : "") << "exit 0\n";
    fs::permissions(hook, fs::perms::owner_all);
    args.push_back(std::string(step) + "=" + hook.string());
  }
  const CheckRun run = check(args);
  fs::remove_all(dir);
  EXPECT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_THAT(run.out, HasSubstr("ok    version: OK \"1.0\""));
  EXPECT_THAT(run.out, HasSubstr("ok    restart: OK"));
  if (run.out.find("skip  writes: not checked") == std::string::npos) {
    EXPECT_THAT(run.out, HasSubstr("ok    writes: every step answered the same with / read-only "
                                   "except "));
  }
}

TEST(PluginConformance, ABrokenPluginFailsWithReadableReasons) {
  CheckRun run = check({"--conformance", UPPARAT_FIXTURE_MISBEHAVING});
  EXPECT_EQ(run.exit_code, 1) << run.out;
  EXPECT_THAT(run.out, HasSubstr("FAIL  descriptor: licence (none: give an SPDX expression)"));
  EXPECT_THAT(run.out,
              HasSubstr("FAIL  version: FAILED \"plugin returned invalid result code 42\""));
  EXPECT_THAT(run.out, HasSubstr("FAIL  download: the text fills its 4096-byte buffer without a "
                                 "terminating NUL (the host cut it); write a NUL-terminated UTF-8 "
                                 "text of at most text_capacity - 1 bytes"));
  EXPECT_THAT(run.out, HasSubstr("result: 3 check(s) failed"));

  run = check({"--conformance", UPPARAT_FIXTURE_RAW_THROWING});
  EXPECT_EQ(run.exit_code, 1) << run.out;
  EXPECT_THAT(run.out, HasSubstr("let an exception escape"));
}

// The loader sanitises a text that is not UTF-8 before the daemon sees it; the kit still
// reports the raw text's defect.
TEST(PluginConformance, ATextThatIsNotUtf8Fails) {
  const CheckRun run = check({"--conformance", UPPARAT_FIXTURE_CARELESS});
  EXPECT_EQ(run.exit_code, 1) << run.out;
  EXPECT_THAT(run.out, HasSubstr("FAIL  download: the text is not valid UTF-8; write a "
                                 "NUL-terminated UTF-8 text"));
  EXPECT_THAT(run.out, Not(HasSubstr("FAIL  version")));
  EXPECT_THAT(run.out, Not(HasSubstr("FAIL  install")));
}

// The careless fixture's ready step writes into /tmp, outside the sample file's folder.
TEST(PluginConformance, AStepThatWritesOutsideItsPathsFails) {
  const CheckRun run = check({"--conformance", UPPARAT_FIXTURE_CARELESS});
  const auto skipped = run.out.find("skip  writes: not checked: ");
  if (skipped != std::string::npos) {
    UPPARAT_SKIP() << "the kit could not make a read-only root here: "
                   << run.out.substr(skipped, run.out.find('\n', skipped) - skipped);
  }
  EXPECT_EQ(run.exit_code, 1) << run.out;
  EXPECT_THAT(run.out, HasSubstr("FAIL  writes: ready answered FAILED \"cannot write "
                                 "/tmp/upparat-careless-"));
  EXPECT_THAT(run.out, HasSubstr("Read-only file system\" with / read-only except "));
  EXPECT_THAT(run.out, HasSubstr(", but OK outside it: the step writes outside the paths the "
                                 "plugin was given"));
  EXPECT_THAT(run.out, Not(HasSubstr("FAIL  writes: version")));
  EXPECT_THAT(run.out, HasSubstr("result: 2 check(s) failed"));
}

TEST(PluginConformance, AStepThatIgnoresTheStopFails) {
  const CheckRun run = check({"--conformance", UPPARAT_FIXTURE_STUBBORN, "sleep_seconds=3"});
  EXPECT_EQ(run.exit_code, 1) << run.out;
  EXPECT_THAT(run.out, HasSubstr("after the stop request (at most 2000 ms)"));
  EXPECT_THAT(run.out, HasSubstr("FAIL  install: returned"));
}

TEST(PluginConformance, ANotInterruptibleInstallIsNotAskedToStop) {
  const CheckRun run =
      check({"--conformance", UPPARAT_FIXTURE_STUBBORN_NOT_INTERRUPTIBLE, "sleep_seconds=1"});
  EXPECT_EQ(run.exit_code, 0) << run.out;
  EXPECT_THAT(run.out, Not(HasSubstr("install: returned")));
}

}  // namespace
