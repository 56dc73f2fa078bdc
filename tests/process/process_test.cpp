// Unit tests of plugins/process: real child processes (/bin/sh and coreutils), no mocks.

#include "process/process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/stop_signal.hpp"
#include "script_test_util.hpp"

namespace upparat::process {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;
using test_util::process_gone;
using test_util::ScratchDir;

RunOptions shell(const std::string& script) {
  RunOptions options;
  options.argv = {"/bin/sh", "-c", script};
  return options;
}

struct Collected {
  std::vector<std::string> out;
  std::vector<std::string> err;
};

void collect(RunOptions& options, Collected& collected) {
  options.on_stdout_line = [&collected](std::string_view line) {
    collected.out.emplace_back(line);
  };
  options.on_stderr_line = [&collected](std::string_view line) {
    collected.err.emplace_back(line);
  };
}

TEST(ProcessTest, ReportsExitCodeAndLines) {
  RunOptions options = shell("echo one; echo two; echo; echo oops >&2; exit 7");
  Collected c;
  collect(options, c);
  auto result = run(options);
  ASSERT_TRUE(result) << result.error().message();
  EXPECT_TRUE(result->exited);
  EXPECT_EQ(result->exit_code, 7);
  EXPECT_FALSE(result->stopped);
  EXPECT_EQ(result->describe(), "exit code 7");
  EXPECT_EQ(c.out, (std::vector<std::string>{"one", "two", ""}));
  EXPECT_EQ(c.err, (std::vector<std::string>{"oops"}));
  EXPECT_EQ(result->last_stdout_line, "two");
  EXPECT_EQ(result->stderr_tail, "oops\n");
}

TEST(ProcessTest, PassesArgumentsWithoutShell) {
  RunOptions options;
  options.argv = {"/usr/bin/printf", "[%s]\\n", "a b", "$HOME", "*", "", "x;y"};
  Collected c;
  collect(options, c);
  auto result = run(options);
  ASSERT_TRUE(result) << result.error().message();
  EXPECT_EQ(c.out, (std::vector<std::string>{"[a b]", "[$HOME]", "[*]", "[]", "[x;y]"}));
}

TEST(ProcessTest, AddsToTheEnvironment) {
  ::setenv("UPPARAT_PROCESS_TEST_KEPT", "kept", 1);
  ::setenv("UPPARAT_PROCESS_TEST_REPLACED", "old", 1);
  ::setenv("UPPARAT_PROCESS_TEST_REPLACED_LONGER", "other", 1);
  RunOptions options = shell(
      "echo \"$UPPARAT_PROCESS_TEST_KEPT\"; echo \"$UPPARAT_PROCESS_TEST_REPLACED\"; "
      "echo \"$UPPARAT_PROCESS_TEST_REPLACED_LONGER\"; echo \"$UPPARAT_PROCESS_TEST_NEW\"; "
      "env | grep -c '^UPPARAT_PROCESS_TEST_REPLACED='");
  options.environment = {"UPPARAT_PROCESS_TEST_REPLACED=new", "UPPARAT_PROCESS_TEST_NEW=a b=c"};
  Collected c;
  collect(options, c);
  auto result = run(options);
  ::unsetenv("UPPARAT_PROCESS_TEST_KEPT");
  ::unsetenv("UPPARAT_PROCESS_TEST_REPLACED");
  ::unsetenv("UPPARAT_PROCESS_TEST_REPLACED_LONGER");
  ASSERT_TRUE(result) << result.error().message();
  EXPECT_EQ(c.out, (std::vector<std::string>{"kept", "new", "other", "a b=c", "1"}));
}

TEST(ProcessTest, ReportsTerminatingSignal) {
  auto result = run(shell("kill -KILL $$"));
  ASSERT_TRUE(result) << result.error().message();
  EXPECT_FALSE(result->exited);
  EXPECT_EQ(result->signal, SIGKILL);
  EXPECT_EQ(result->describe(), "killed by signal SIGKILL");
}

TEST(ProcessTest, MissingProgramIsAnError) {
  RunOptions options;
  options.argv = {"/nonexistent/hook.sh"};
  auto result = run(options);
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message().find("/nonexistent/hook.sh"), std::string::npos);
  EXPECT_NE(result.error().message().find("No such file"), std::string::npos)
      << result.error().message();
}

TEST(ProcessTest, NonExecutableAndShebanglessFilesAreErrors) {
  ScratchDir dir;
  const auto plain = dir.write("plain.sh", "#!/bin/sh\necho hi\n", 0644);
  RunOptions options;
  options.argv = {plain};
  auto result = run(options);
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message().find("Permission denied"), std::string::npos)
      << result.error().message();

  const auto no_shebang = dir.write("noshebang.sh", "echo hi\n", 0755);
  options.argv = {no_shebang};
  result = run(options);
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message().find("#!"), std::string::npos) << result.error().message();

  const auto bad_interpreter = dir.write("python.sh", "#!/nonexistent/python3\n", 0755);
  options.argv = {bad_interpreter};
  result = run(options);
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message().find("interpreter"), std::string::npos)
      << result.error().message();

  options.argv = {};
  EXPECT_FALSE(run(options));
}

TEST(ProcessTest, ChildRunsInItsOwnProcessGroupWithStdinFromDevNull) {
  RunOptions options = shell("echo $$; cut -d' ' -f5 /proc/$$/stat; readlink /proc/$$/fd/0");
  Collected c;
  collect(options, c);
  auto result = run(options);
  ASSERT_TRUE(result) << result.error().message();
  ASSERT_EQ(c.out.size(), 3u);
  EXPECT_EQ(c.out[0], c.out[1]) << "pid and process group differ";
  EXPECT_NE(c.out[1], std::to_string(::getpgrp()));
  EXPECT_EQ(c.out[2], "/dev/null");
}

TEST(ProcessTest, ChildGetsNoOtherFileDescriptors) {
  const int fd = ::open("/dev/null", O_RDONLY);  // deliberately without O_CLOEXEC
  ASSERT_GE(fd, 0);
  const int high = ::fcntl(fd, F_DUPFD, 100);  // also without FD_CLOEXEC
  ASSERT_GE(high, 100);
  RunOptions options = shell("for f in " + std::to_string(fd) + " " + std::to_string(high) +
                             "; do if [ -e /proc/$$/fd/$f ]; then echo open; else echo closed; "
                             "fi; done");
  Collected c;
  collect(options, c);
  auto result = run(options);
  ::close(fd);
  ::close(high);
  ASSERT_TRUE(result) << result.error().message();
  EXPECT_EQ(c.out, (std::vector<std::string>{"closed", "closed"}));
}

TEST(ProcessTest, ChildStartsWithEmptySignalMaskAndDefaultHandlers) {
  sigset_t block;
  sigset_t old_mask;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR1);
  sigaddset(&block, SIGTERM);
  ASSERT_EQ(::pthread_sigmask(SIG_BLOCK, &block, &old_mask), 0);
  struct sigaction ignore {};
  struct sigaction old_usr2 {};
  struct sigaction old_pipe {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  ::sigaction(SIGUSR2, &ignore, &old_usr2);
  ::sigaction(SIGPIPE, &ignore, &old_pipe);

  RunOptions options;
  options.argv = {"/bin/grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"};
  Collected c;
  collect(options, c);
  auto result = run(options);

  ::sigaction(SIGUSR2, &old_usr2, nullptr);
  ::sigaction(SIGPIPE, &old_pipe, nullptr);
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ASSERT_TRUE(result) << result.error().message();
  ASSERT_EQ(c.out.size(), 2u);
  EXPECT_EQ(c.out[0], "SigBlk:\t0000000000000000");
  EXPECT_EQ(c.out[1], "SigIgn:\t0000000000000000");
}

TEST(ProcessTest, LongLinesAreSplitAtTheCap) {
  RunOptions options = shell("printf 'abcdefghijklmnopqrstuvwxyz\\nshort\\r\\nexactly10c\\ntail'");
  options.max_line_bytes = 10;
  Collected c;
  collect(options, c);
  auto result = run(options);
  ASSERT_TRUE(result) << result.error().message();
  EXPECT_EQ(c.out, (std::vector<std::string>{"abcdefghij", "klmnopqrst", "uvwxyz", "short",
                                             "exactly10c", "tail"}));
  EXPECT_EQ(result->last_stdout_line, "tail");
}

TEST(ProcessTest, MegabytesOfOutputStayBounded) {
  // 20 MB of short lines on stdout, 8 MB without any newline on stderr, as fast as possible.
  RunOptions options = shell(
      "yes 0123456789 | head -c 20000000; head -c 8000000 /dev/zero | tr '\\0' e >&2; "
      "echo END >&2");
  options.stderr_tail_bytes = 100;
  std::size_t lines = 0;
  std::size_t bytes = 0;
  std::size_t longest_err = 0;
  options.on_stdout_line = [&](std::string_view line) {
    ++lines;
    bytes += line.size() + 1;
  };
  options.on_stderr_line = [&](std::string_view line) {
    longest_err = std::max(longest_err, line.size());
  };
  const auto start = Clock::now();
  auto result = run(options);
  ASSERT_TRUE(result) << result.error().message();
  EXPECT_LT(Clock::now() - start, seconds(60));
  EXPECT_EQ(result->exit_code, 0);
  EXPECT_EQ(lines, 20000000u / 11u + 1u);  // the last line is cut by head -c
  EXPECT_LE(longest_err, options.max_line_bytes);
  EXPECT_LE(result->stderr_tail.size(), 100u);
  ASSERT_GE(result->stderr_tail.size(), 4u);
  EXPECT_EQ(result->stderr_tail.substr(result->stderr_tail.size() - 4), "END\n");
}

TEST(ProcessTest, StopFdTerminatesTheGroup) {
  StopSignal stop;
  RunOptions options = shell("echo ready; sleep 300");
  options.stop_fd = stop.fd();
  options.on_stdout_line = [&stop](std::string_view) { stop.request(); };
  const auto start = Clock::now();
  auto result = run(options);
  ASSERT_TRUE(result) << result.error().message();
  EXPECT_LT(Clock::now() - start, seconds(8)) << "SIGTERM should end it, not the 10 s grace";
  EXPECT_TRUE(result->stopped);
  EXPECT_FALSE(result->timed_out);
  EXPECT_FALSE(result->exited);
  EXPECT_EQ(result->signal, SIGTERM);
}

TEST(ProcessTest, ShouldStopCallbackTerminatesTheGroup) {
  bool seen = false;
  RunOptions options = shell("echo ready; sleep 300");
  options.on_stdout_line = [&seen](std::string_view) { seen = true; };
  options.should_stop = [&seen] { return seen; };
  const auto start = Clock::now();
  auto result = run(options);
  ASSERT_TRUE(result) << result.error().message();
  EXPECT_LT(Clock::now() - start, seconds(8));
  EXPECT_TRUE(result->stopped);
  EXPECT_EQ(result->signal, SIGTERM);
}

TEST(ProcessTest, IgnoredSigtermIsFollowedBySigkillAfterTheGrace) {
  StopSignal stop;
  RunOptions options = shell("trap '' TERM; echo ready; while :; do sleep 1; done");
  options.stop_fd = stop.fd();
  options.kill_grace = milliseconds(500);
  options.on_stdout_line = [&stop](std::string_view) { stop.request(); };
  const auto start = Clock::now();
  auto result = run(options);
  const auto elapsed = Clock::now() - start;
  ASSERT_TRUE(result) << result.error().message();
  EXPECT_GE(elapsed, milliseconds(450)) << "SIGKILL came before the grace period";
  EXPECT_LT(elapsed, seconds(10));
  EXPECT_TRUE(result->stopped);
  EXPECT_EQ(result->signal, SIGKILL);
}

TEST(ProcessTest, DeadlineStopsTheRun) {
  RunOptions options = shell("sleep 300");
  options.deadline = Clock::now() + milliseconds(300);
  const auto start = Clock::now();
  auto result = run(options);
  ASSERT_TRUE(result) << result.error().message();
  EXPECT_LT(Clock::now() - start, seconds(8));
  EXPECT_TRUE(result->stopped);
  EXPECT_TRUE(result->timed_out);
}

TEST(ProcessTest, AlreadyStoppedRunStartsNothing) {
  ScratchDir dir;
  StopSignal stop;
  stop.request();
  const auto marker = dir.path() / "ran";
  RunOptions options = shell("touch '" + marker.string() + "'");
  options.stop_fd = stop.fd();
  auto result = run(options);
  ASSERT_TRUE(result) << result.error().message();
  EXPECT_TRUE(result->stopped);
  EXPECT_EQ(result->describe(), "not started");
  EXPECT_FALSE(std::filesystem::exists(marker));
}

TEST(ProcessTest, GrandchildHoldingThePipeDoesNotBlockANormalExit) {
  // The child exits at once; the grandchild keeps stdout open for 30 s.
  RunOptions options = shell("sleep 30 & echo $!; exit 0");
  options.exit_linger = milliseconds(300);
  Collected c;
  collect(options, c);
  const auto start = Clock::now();
  auto result = run(options);
  const auto elapsed = Clock::now() - start;
  ASSERT_TRUE(result) << result.error().message();
  ASSERT_EQ(c.out.size(), 1u);
  const pid_t grandchild = std::atoi(c.out[0].c_str());
  if (grandchild > 0) {
    ::kill(grandchild, SIGKILL);  // a normal exit leaves it alone; the test cleans up
  }
  EXPECT_LT(elapsed, seconds(10));
  EXPECT_TRUE(result->exited);
  EXPECT_EQ(result->exit_code, 0);
}

TEST(ProcessTest, StopKillsGrandchildThatIgnoresSigtermAndHoldsThePipe) {
  StopSignal stop;
  // The child dies on SIGTERM; its grandchild ignores SIGTERM and keeps the pipes open.
  // The grandchild prints its pid once it ignores SIGTERM; the stop follows that line.
  RunOptions options = shell("sh -c 'trap \"\" TERM; echo $$; while :; do sleep 1; done' & wait");
  options.stop_fd = stop.fd();
  options.kill_grace = milliseconds(500);
  pid_t grandchild = -1;
  options.on_stdout_line = [&](std::string_view line) {
    grandchild = std::atoi(std::string(line).c_str());
    stop.request();
  };
  const auto start = Clock::now();
  auto result = run(options);
  ASSERT_TRUE(result) << result.error().message();
  const auto elapsed = Clock::now() - start;
  EXPECT_GE(elapsed, milliseconds(450)) << "the grandchild should get the grace period";
  EXPECT_LT(elapsed, seconds(10));
  EXPECT_TRUE(result->stopped);
  EXPECT_EQ(result->signal, SIGTERM);
  ASSERT_GT(grandchild, 0);
  EXPECT_TRUE(process_gone(grandchild, seconds(10)))
      << "grandchild " << grandchild << " survived the stop";
}

extern "C" void on_alarm(int) {}

TEST(ProcessTest, SurvivesSignalsInterruptingItsSystemCalls) {
  struct sigaction action {};
  struct sigaction old_action {};
  action.sa_handler = on_alarm;
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;  // no SA_RESTART: poll, read and waitid see EINTR
  ASSERT_EQ(::sigaction(SIGALRM, &action, &old_action), 0);
  itimerval timer{};
  timer.it_interval.tv_usec = 2000;
  timer.it_value.tv_usec = 2000;
  ASSERT_EQ(::setitimer(ITIMER_REAL, &timer, nullptr), 0);

  RunOptions options = shell("for i in 1 2 3 4 5; do echo line $i; sleep 0.1; done; exit 4");
  Collected c;
  collect(options, c);
  auto result = run(options);

  itimerval off{};
  ::setitimer(ITIMER_REAL, &off, nullptr);
  ::sigaction(SIGALRM, &old_action, nullptr);
  ASSERT_TRUE(result) << result.error().message();
  EXPECT_EQ(result->exit_code, 4);
  EXPECT_EQ(c.out.size(), 5u);
}

TEST(ProcessTest, IgnoredSigchldGivesAClearErrorInsteadOfHanging) {
  struct sigaction ignore {};
  struct sigaction old_action {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  ASSERT_EQ(::sigaction(SIGCHLD, &ignore, &old_action), 0);  // children reap themselves
  const auto start = Clock::now();
  auto result = run(shell("echo hi"));
  ::sigaction(SIGCHLD, &old_action, nullptr);
  EXPECT_LT(Clock::now() - start, seconds(10));
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message().find("SIGCHLD"), std::string::npos)
      << result.error().message();
}

TEST(ProcessTest, SignalNames) {
  EXPECT_EQ(signal_name(SIGTERM), "SIGTERM");
  EXPECT_EQ(signal_name(SIGSEGV), "SIGSEGV");
}

}  // namespace
}  // namespace upparat::process
