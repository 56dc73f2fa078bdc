#include "tools/conformance.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <future>
#include <optional>
#include <ostream>
#include <random>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include "common/stop_signal.hpp"
#include "plugin/key_value_store.hpp"
#include "plugin/plugin.hpp"
#include "tools/read_only_root.hpp"

namespace upparat::tools {

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using plugin::LoadedPlugin;
using plugin::Outcome;

// How long a step may take to return after a stop request.
constexpr auto kStopBound = 2s;
// A step that has not returned by then is abandoned: the kit cannot go on safely.
constexpr auto kAbandonAfter = 30s;
// Heap growth allowed between the 10th and the last create/destroy cycle.
constexpr std::size_t kHeapGrowthBound = 64 * 1024;

class Report {
 public:
  explicit Report(std::ostream& out) : out_(out) {}
  void ok(const std::string& what) { out_ << "  ok    " << what << "\n"; }
  void fail(const std::string& what) {
    out_ << "  FAIL  " << what << "\n";
    ++failed_;
  }
  void skip(const std::string& what) { out_ << "  skip  " << what << "\n"; }
  void check(bool passed, const std::string& what) { passed ? ok(what) : fail(what); }
  [[nodiscard]] int failed() const { return failed_; }

 private:
  std::ostream& out_;
  int failed_ = 0;
};

std::size_t count_entries(const char* folder) {
  std::size_t n = 0;
  if (DIR* dir = ::opendir(folder)) {
    while (const dirent* entry = ::readdir(dir)) {
      if (entry->d_name[0] != '.') {
        ++n;
      }
    }
    ::closedir(dir);
  }
  return n;
}

std::size_t heap_in_use() {
  const struct mallinfo2 info = ::mallinfo2();
  return info.uordblks + info.hblkhd;
}

const char* outcome_name(Outcome outcome) {
  switch (outcome) {
    case Outcome::Ok:
      return "OK";
    case Outcome::RetryLater:
      return "RETRY_LATER";
    case Outcome::Failed:
      return "FAILED";
    case Outcome::NotSupported:
      return "NOT_SUPPORTED";
  }
  return "?";
}

// What the loader says when the plugin broke the ABI's rules in a step.
bool loader_caught_a_bug(const plugin::StepResult& r) {
  return r.text.find("let an exception escape") != std::string::npos ||
         r.text.find("invalid result code") != std::string::npos;
}

// A private folder with a sample file for the install step; removed by the destructor.
class Sandbox {
 public:
  Sandbox() {
    std::string pattern = (fs::temp_directory_path() / "upparat-conformance-XXXXXX").string();
    if (::mkdtemp(pattern.data()) != nullptr) {
      dir_ = pattern;
      std::mt19937 random(42);
      std::string data(1 << 20, '\0');
      for (auto& c : data) {
        c = static_cast<char>(random());
      }
      std::ofstream(dir_ / "image.bin", std::ios::binary) << data;
    }
  }
  ~Sandbox() {
    std::error_code ec;
    if (!dir_.empty()) {
      fs::remove_all(dir_, ec);
    }
  }
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;
  [[nodiscard]] bool ready() const { return !dir_.empty(); }
  [[nodiscard]] fs::path file() const { return dir_ / "image.bin"; }
  [[nodiscard]] const fs::path& dir() const { return dir_; }

 private:
  fs::path dir_;
};

plugin::JobContext sample_job(const Sandbox& sandbox, Step step) {
  plugin::JobContext job;
  job.job_id = "upparat_conformance_1";
  job.execution_number = 1;
  job.version = "conformance-2.0";
  job.meta = "";
  job.url = "https://example.invalid/image.bin";
  job.size = 1 << 20;
  job.document_json =
      R"({"action":"update","version":"conformance-2.0","file":"https://example.invalid/image.bin","size":1048576})";
  if (step == Step::Install) {
    job.file_path = sandbox.file();
  }
  return job;
}

// Runs `step` on its own thread; with `stop_after`, requests the stop then. Returns the result
// and how long the step took after the stop request, or nullopt when it did not return within
// kAbandonAfter (the thread is then left behind: the caller must stop the kit).
struct Timed {
  plugin::StepResult result;
  std::chrono::milliseconds after_stop{0};
  bool returned_before_stop = false;
  std::string text_defect;  // what the loader found wrong with the raw text
};
std::optional<Timed> run_step(LoadedPlugin& loaded, Step step, const plugin::JobContext& job,
                              plugin::KeyValueStore& store,
                              std::optional<std::chrono::milliseconds> stop_after) {
  auto stop = std::make_shared<StopSignal>();
  auto defect = std::make_shared<std::string>();
  auto task = std::make_shared<std::packaged_task<plugin::StepResult()>>(
      [&loaded, step, job, &store, stop, defect] {
        plugin::StepServices services;
        services.stop = stop.get();
        services.store = &store;
        services.text_defect = defect.get();
        return loaded.run(step, job, services);
      });
  auto future = task->get_future();
  std::thread worker([task] { (*task)(); });
  Timed timed;
  if (stop_after) {
    if (future.wait_for(*stop_after) == std::future_status::ready) {
      timed.returned_before_stop = true;
    } else {
      stop->request();
    }
  }
  const auto stopped_at = std::chrono::steady_clock::now();
  if (future.wait_for(kAbandonAfter) != std::future_status::ready) {
    worker.detach();
    return std::nullopt;
  }
  worker.join();
  timed.after_stop = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - stopped_at);
  timed.result = future.get();
  timed.text_defect = *defect;
  return timed;
}

// The result of one step on the sample job, against the rules of upparat/plugin.h.
void check_result(Report& report, Step step, bool serves, const plugin::StepResult& r,
                  const std::string& text_defect) {
  const std::string name(to_string(step));
  const std::string shown = r.text.size() > 100 ? r.text.substr(0, 100) + "..." : r.text;
  const std::string said = name + ": " + outcome_name(r.outcome) +
                           (r.text.empty() ? std::string() : " \"" + shown + "\"");
  if (loader_caught_a_bug(r)) {
    return report.fail(said);
  }
  if (!text_defect.empty()) {
    // The loader cut and sanitised the text; the daemon would still report it, but the plugin
    // breaks plugin.h's rule: a NUL-terminated UTF-8 text within text_capacity bytes.
    report.fail(name + ": " + text_defect +
                "; write a NUL-terminated UTF-8 text of at most text_capacity - 1 bytes");
  }
  if (!serves) {
    return report.check(r.outcome == Outcome::NotSupported,
                        name + ": not served, the daemon answers NOT_SUPPORTED without calling it");
  }
  switch (r.outcome) {
    case Outcome::Ok:
      if (step == Step::Version) {
        return report.check(!r.text.empty(),
                            said + (r.text.empty() ? " (OK needs the installed version)" : ""));
      }
      return report.ok(said);
    case Outcome::RetryLater:
    case Outcome::Failed:
      return report.check(!r.text.empty(), said + (r.text.empty() ? " (give a reason)" : ""));
    case Outcome::NotSupported:
      return report.fail(said +
                         " although the instance serves it: the daemon may already have "
                         "announced the step; declare the steps it serves with steps()");
  }
}

// The paths a plugin is given, where its steps may write: the folder of the sample file, and
// each configuration value that is an absolute path (the folder it names, or the folder that
// holds the file it names).
std::vector<fs::path> given_paths(const Sandbox& sandbox,
                                  const std::map<std::string, std::string>& config) {
  std::vector<fs::path> paths = {sandbox.dir()};
  for (const auto& [key, value] : config) {
    if (value.empty() || value[0] != '/') {
      continue;
    }
    std::error_code ec;
    const fs::path path(value);
    if (fs::is_directory(path, ec)) {
      paths.push_back(path);
    } else if (fs::is_directory(path.parent_path(), ec)) {
      paths.push_back(path.parent_path());
    }
  }
  return paths;
}

// What each step answered in the read-only root, or why that run could not be made.
struct Isolated {
  std::string skipped;  // the reason, when the kit could not make the namespace
  std::string error;    // the run broke (crash, timeout, load failure)
  PerStep<std::optional<plugin::StepResult>> results{};
};

// One line per step on the pipe: "<step index>\t<outcome index>\t<text>", or "skip\t<why>",
// or "error\t<what>".
std::string one_line(std::string text) {
  for (auto& c : text) {
    if (c == '\n' || c == '\t' || c == '\r') {
      c = ' ';
    }
  }
  return text;
}

// Writes `report` to `out`, then ends the child without running the parent's exit handlers.
[[noreturn]] void send_and_exit(int out, const std::string& report) {
  const char* data = report.data();
  std::size_t left = report.size();
  while (left > 0) {
    const ssize_t n = ::write(out, data, left);
    if (n <= 0) {
      break;
    }
    data += n;
    left -= static_cast<std::size_t>(n);
  }
  ::_exit(0);
}

[[noreturn]] void run_isolated_child(const ConformanceOptions& options, const Sandbox& sandbox,
                                     const std::vector<fs::path>& writable, int out) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  std::string report;
  auto entered = enter_read_only_root(writable);
  if (!entered) {
    report = "skip\t" + one_line(entered.error().message()) + "\n";
    send_and_exit(out, report);
  }
  auto loaded = LoadedPlugin::load(options.plugin, options.config);
  if (!loaded) {
    report = "error\t" + one_line(loaded.error().message()) + "\n";
    send_and_exit(out, report);
  }
  plugin::KeyValueStore store;
  for (Step step : kSteps) {
    if ((step == Step::Restart && !options.allow_restart) || !(*loaded)->serves(step)) {
      continue;
    }
    auto answered = run_step(**loaded, step, sample_job(sandbox, step), store, std::nullopt);
    if (!answered) {
      report += "error\t" + std::string(to_string(step)) + " did not return within 30 s\n";
      send_and_exit(out, report);
    }
    report += std::to_string(index(step)) + "\t" +
              std::to_string(static_cast<int>(answered->result.outcome)) + "\t" +
              one_line(answered->result.text) + "\n";
  }
  loaded->reset();
  send_and_exit(out, report);
}

// Runs each step once in a child process whose root is read-only except `writable`. Call it
// while the process has a single thread (fork() copies only the calling one).
Isolated run_isolated(const ConformanceOptions& options, const Sandbox& sandbox,
                      const std::vector<fs::path>& writable) {
  Isolated isolated;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    isolated.error = std::string("cannot make a pipe: ") + std::strerror(errno);
    return isolated;
  }
  const pid_t child = ::fork();
  if (child < 0) {
    isolated.error = std::string("cannot fork: ") + std::strerror(errno);
    ::close(fds[0]);
    ::close(fds[1]);
    return isolated;
  }
  if (child == 0) {
    ::close(fds[0]);
    run_isolated_child(options, sandbox, writable, fds[1]);
  }
  ::close(fds[1]);
  std::string text;
  const auto deadline = std::chrono::steady_clock::now() + kSteps.size() * kAbandonAfter;
  bool timed_out = false;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd wait{fds[0], POLLIN, 0};
    if (::poll(&wait, 1, static_cast<int>(left.count())) < 0 && errno != EINTR) {
      break;
    }
    char buffer[4096];
    const ssize_t n = ::read(fds[0], buffer, sizeof buffer);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
      continue;
    }
    if (n <= 0) {
      break;
    }
    text.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  if (timed_out) {
    ::kill(child, SIGKILL);
  }
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    isolated.error = "the steps did not end in time";
    return isolated;
  }
  if (WIFSIGNALED(status)) {
    isolated.error = "the process running the steps died of signal " +
                     std::to_string(WTERMSIG(status)) + " (" + ::strsignal(WTERMSIG(status)) + ")";
    return isolated;
  }
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    const auto tab = line.find('\t');
    const std::string head = line.substr(0, tab);
    const std::string rest = tab == std::string::npos ? std::string() : line.substr(tab + 1);
    if (head == "skip") {
      isolated.skipped = rest;
    } else if (head == "error") {
      isolated.error = rest;
    } else {
      const auto second = rest.find('\t');
      const std::size_t step = std::stoul(head);
      if (second == std::string::npos || step >= kSteps.size()) {
        continue;
      }
      plugin::StepResult result;
      result.outcome = static_cast<Outcome>(std::stoi(rest.substr(0, second)));
      result.text = rest.substr(second + 1);
      isolated.results[step] = result;
    }
  }
  return isolated;
}

std::string joined(const std::vector<fs::path>& paths) {
  std::string text;
  for (const auto& path : paths) {
    text += (text.empty() ? "" : ", ") + path.string();
  }
  return text;
}

// Compares what each step answered outside and inside the read-only root.
void check_writes(Report& report, const Isolated& isolated,
                  const PerStep<std::optional<plugin::StepResult>>& outside,
                  const std::vector<fs::path>& writable) {
  const std::string where = "with / read-only except " + joined(writable);
  if (!isolated.skipped.empty()) {
    return report.skip("writes: not checked: " + isolated.skipped);
  }
  if (!isolated.error.empty()) {
    return report.fail("writes: running the steps " + where + ": " + isolated.error);
  }
  bool same = true;
  for (Step step : kSteps) {
    const auto& in = isolated.results[index(step)];
    const auto& out = outside[index(step)];
    if (!in || !out || in->outcome == out->outcome) {
      continue;
    }
    same = false;
    report.fail("writes: " + std::string(to_string(step)) + " answered " +
                outcome_name(in->outcome) + (in->text.empty() ? "" : " \"" + in->text + "\"") +
                " " + where + ", but " + outcome_name(out->outcome) +
                " outside it: the step writes outside the paths the plugin was given (write "
                "only below the job's file_path folder, or a folder of your configuration)");
  }
  if (same) {
    report.ok("writes: every step answered the same " + where);
  }
}

}  // namespace

int run_conformance(const ConformanceOptions& options, std::ostream& out) {
  Report report(out);
  out << "conformance of " << options.plugin.string() << "\n";

  auto info = LoadedPlugin::inspect(options.plugin);
  if (!info) {
    report.fail("load: " + info.error().message());
    out << "result: " << report.failed() << " check(s) failed\n";
    return report.failed();
  }
  report.check(!info->name.empty() && !info->version.empty(),
               "descriptor: name \"" + info->name + "\", version \"" + info->version + "\", ABI " +
                   std::to_string(info->abi_major) + "." + std::to_string(info->abi_minor));
  report.check(!info->license.empty(),
               "descriptor: licence " + (info->license.empty() ? std::string("(none: give an "
                                                                             "SPDX expression)")
                                                               : info->license));

  Sandbox sandbox;
  if (!sandbox.ready()) {
    report.fail("cannot make a temporary folder for the sample file");
    return report.failed();
  }
  // First, while the kit has a single thread: the steps in a read-only root, in a child.
  const std::vector<fs::path> writable = given_paths(sandbox, options.config);
  out.flush();
  const Isolated isolated = run_isolated(options, sandbox, writable);

  auto loaded = LoadedPlugin::load(options.plugin, options.config);
  if (!loaded) {
    report.fail("create: " + loaded.error().message());
    out << "result: " << report.failed() << " check(s) failed\n";
    return report.failed();
  }
  report.ok("create with " + std::to_string(options.config.size()) + " configuration entries");
  const bool not_interruptible = (*loaded)->has_capability(plugin::kCapInstallNotInterruptible);
  plugin::KeyValueStore store;
  PerStep<std::optional<plugin::StepResult>> first_answers{};
  for (Step step : kSteps) {
    if (step == Step::Restart && !options.allow_restart) {
      report.skip("restart: not run (it may reboot this machine; --allow-restart runs it)");
      continue;
    }
    const bool serves = (*loaded)->serves(step);
    auto answered = run_step(**loaded, step, sample_job(sandbox, step), store, std::nullopt);
    if (!answered) {
      report.fail(std::string(to_string(step)) + ": did not return within 30 s; stopping here");
      out << "result: " << report.failed() << " check(s) failed\n";
      std::_Exit(1);  // the step still runs: unloading the plugin now would crash
    }
    check_result(report, step, serves, answered->result, answered->text_defect);
    first_answers[index(step)] = answered->result;
    if (!serves || (step == Step::Install && not_interruptible)) {
      continue;
    }
    // The same step again, asked to stop 100 ms after it began.
    auto stopped = run_step(**loaded, step, sample_job(sandbox, step), store, 100ms);
    if (!stopped) {
      report.fail(std::string(to_string(step)) +
                  ": ignored the stop request for 30 s; stopping here");
      out << "result: " << report.failed() << " check(s) failed\n";
      std::_Exit(1);
    }
    if (stopped->returned_before_stop) {
      report.ok(std::string(to_string(step)) + ": returned before a stop request was needed");
    } else {
      const auto ms = stopped->after_stop.count();
      report.check(stopped->after_stop <= kStopBound,
                   std::string(to_string(step)) + ": returned " + std::to_string(ms) +
                       " ms after the stop request (at most 2000 ms)");
    }
  }
  loaded->reset();
  check_writes(report, isolated, first_answers, writable);

  // create/destroy cycles: no descriptor, thread or heap left behind.
  std::size_t fds_before = 0;
  std::size_t threads_before = 0;
  std::size_t heap_at_10 = 0;
  for (int i = 1; i <= options.cycles; ++i) {
    auto cycle = LoadedPlugin::load(options.plugin, options.config);
    if (!cycle) {
      report.fail("create/destroy cycle " + std::to_string(i) + ": " + cycle.error().message());
      break;
    }
    cycle->reset();
    if (i == 1) {
      fds_before = count_entries("/proc/self/fd");
      threads_before = count_entries("/proc/self/task");
    }
    if (i == 10) {
      ::malloc_trim(0);
      heap_at_10 = heap_in_use();
    }
  }
  ::malloc_trim(0);
  const std::size_t fds = count_entries("/proc/self/fd");
  const std::size_t threads = count_entries("/proc/self/task");
  const std::size_t heap = heap_in_use();
  const std::size_t growth = heap > heap_at_10 ? heap - heap_at_10 : 0;
  const std::string cycles = std::to_string(options.cycles) + " create/destroy cycles: ";
  report.check(fds <= fds_before, cycles + std::to_string(fds) + " file descriptors open, " +
                                      std::to_string(fds_before) + " after the first");
  report.check(threads <= threads_before, cycles + std::to_string(threads) + " threads, " +
                                              std::to_string(threads_before) + " after the first");
  report.check(growth < kHeapGrowthBound, cycles + "heap grew by " + std::to_string(growth / 1024) +
                                              " KiB from cycle 10 (less than 64 KiB)");

  out << "result: "
      << (report.failed() == 0 ? std::string("every check passed")
                               : std::to_string(report.failed()) + " check(s) failed")
      << "\n";
  return report.failed();
}

}  // namespace upparat::tools
