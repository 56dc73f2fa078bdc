#include "daemon/daemon.hpp"

#include <pthread.h>
#include <signal.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <type_traits>

#include "common/idle_memory.hpp"
#include "common/sanitize.hpp"
#include "daemon/folders.hpp"
#include "daemon/sd_notify.hpp"
#include "daemon/settings.hpp"
#include "download/downloader.hpp"
#include "download/stream.hpp"
#include "mqtt/session.hpp"
#include "plugin/plugin.hpp"
#include "state/lock_file.hpp"
#include "state/machine.hpp"
#include "state/state_store.hpp"

namespace upparat::daemon {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

// The signals the signal thread waits for: SIGTERM and SIGINT stop the daemon, SIGUSR2 wakes
// the thread to end it (signal_quit).
sigset_t daemon_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGUSR2);
  return set;
}

// Stopping on SIGTERM/SIGINT. The whole stop stays below the systemd unit's TimeoutStopSec=60
// (config/upparat.service), after which systemd would SIGKILL the daemon.
/// How long the loop waits for the stopped work and the flush of the status updates.
constexpr seconds kShutdownWait{20};
/// From the signal to the exit at the latest. A running INSTALL_NOT_INTERRUPTIBLE install is
/// waited for until kShutdownBudget - kDisconnectWait.
constexpr seconds kShutdownBudget{55};
/// The disconnect (and the last flush of Paho's buffer) after the loop.
constexpr milliseconds kDisconnectWait{3000};
/// Without a signal (a plugin that did not stop, an error in the loop): how long the worker
/// may take to become idle after the loop ended.
constexpr milliseconds kWorkerWait{10000};
/// How long the worker waits for its next task before it gives back the memory the last ones
/// left (give_back_idle_memory). The tasks of one job follow each other within this, so a job
/// pays for it once, not after each step: the madvise calls and the page faults after them
/// cost CPU.
constexpr milliseconds kGiveBackAfterIdle{1000};

/// `<N>` syslog priority prefix for journald (sd-daemon(3)).
class PriorityFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    static const char* const kPrefix[] = {"<7>", "<7>", "<6>", "<4>", "<3>", "<2>", "<6>"};
    const char* p = kPrefix[static_cast<int>(msg.level) % 7];
    dest.append(p, p + 3);
  }
  [[nodiscard]] std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<PriorityFlag>();
  }
};

/// True when stderr is connected to the journal (systemd sets JOURNAL_STREAM=dev:ino).
bool stderr_is_journal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (!stream) {
    return false;
  }
  struct stat st {};
  if (::fstat(STDERR_FILENO, &st) != 0) {
    return false;
  }
  std::string expected = std::to_string(static_cast<unsigned long long>(st.st_dev)) + ":" +
                         std::to_string(static_cast<unsigned long long>(st.st_ino));
  return expected == stream;
}

Result<std::map<std::string, std::unique_ptr<plugin::LoadedPlugin>>> load_plugins(
    const config::Config& config) {
  std::map<std::string, std::unique_ptr<plugin::LoadedPlugin>> plugins;
  for (const auto& [name, p] : config.plugins) {
    auto loaded = plugin::LoadedPlugin::load(p.path, p.settings);
    if (!loaded) {
      return fail(loaded.error().context(config.file.string() + ": [plugins." + name + "]"));
    }
    const auto& info = (*loaded)->info();
    spdlog::info("plugin {}: {} {} ({}) from {}", name, info.name, info.version, info.license,
                 p.path.string());
    plugins[name] = std::move(*loaded);
  }
  return plugins;
}

}  // namespace

void setup_logging(const std::string& level) {
  auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>(spdlog::color_mode::automatic);
  auto logger = std::make_shared<spdlog::logger>("upparat", sink);
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  if (stderr_is_journal()) {
    // journald adds time, host and unit; the priority prefix sets the entry's PRIORITY.
    formatter->add_flag<PriorityFlag>('*').set_pattern("%*%v");
  } else {
    formatter->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%-5l%$ %v");
  }
  logger->set_formatter(std::move(formatter));
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

namespace {

/// A plugin asked to stream must be able to install from a URL or from the host's stream.
Status check_streaming(
    const config::Config& config,
    const std::map<std::string, std::unique_ptr<plugin::LoadedPlugin>>& plugins) {
  auto install = config.steps.find("install");
  if (install == config.steps.end()) {
    return {};
  }
  const auto& p = config.plugins.at(install->second);
  const auto& loaded = *plugins.at(install->second);
  if (p.stream && !loaded.has_capability(plugin::kCapInstallFromUrl) &&
      !loaded.has_capability(plugin::kCapInstallStream)) {
    return fail(config.file.string() + ": [plugins." + install->second +
                "] stream: the plugin cannot stream (neither INSTALL_STREAM nor "
                "INSTALL_FROM_URL); remove `stream = true` or use a plugin that streams");
  }
  return {};
}

}  // namespace

Status check_plugins(const config::Config& config) {
  auto plugins = load_plugins(config);
  if (!plugins) {
    return fail(plugins.error());
  }
  return check_streaming(config, *plugins);
}

struct Daemon::Impl {
  config::Config config;
  std::optional<state::LockFile> lock;
  // Plugins outlive everything that may call them; destroyed last (see ~Impl).
  std::map<std::string, std::unique_ptr<plugin::LoadedPlugin>> plugins;
  StepPlugins step_plugins{};
  std::unique_ptr<download::Downloader> downloader;
  std::unique_ptr<state::FileStateStore> store;
  state::SteadyClock clock;
  std::unique_ptr<state::Machine> machine;
  std::unique_ptr<mqtt::Session> session;

  // The event queue of the loop.
  std::mutex mutex;
  std::condition_variable wake;
  std::deque<state::Event> events;

  // Timers (loop thread only).
  std::map<std::uint64_t, Clock::time_point> timers;

  // The worker thread and the stop signals of running work.
  std::mutex worker_mutex;
  std::condition_variable worker_wake;
  std::deque<std::function<void()>> worker_tasks;
  bool worker_busy = false;
  bool worker_quit = false;
  std::thread worker;
  // The download of a streamed install, on its own thread beside the install step.
  struct Stream {
    StopSignal stop;  // ends the download (and so the stream)
    std::mutex mutex;
    std::condition_variable wake;
    std::optional<std::string> fresh_url;  // guarded by mutex: from StreamUrl
    bool download_failed = false;          // guarded by mutex: the stream failed on its side
  };
  struct Work {
    std::shared_ptr<StopSignal> stop;
    bool not_interruptible = false;
    /// The restart step: a SIGTERM then means the reboot is under way; let it be.
    bool keep_on_shutdown = false;
    std::shared_ptr<Stream> stream;  // a streamed install only
  };
  std::map<std::uint64_t, Work> work;  // guarded by worker_mutex

  std::thread signal_thread;
  /// Set before the signal thread is woken with SIGUSR2 to end it; a SIGUSR2 from anyone else
  /// finds it false and is ignored.
  std::atomic<bool> signal_quit{false};
  std::atomic<int> signals_received{0};
  bool ready_sent = false;
  bool exit_requested = false;
  int exit_code = kExitOk;
  /// When the first SIGTERM/SIGINT was handled.
  std::optional<Clock::time_point> shutdown_started;
  milliseconds watchdog_interval{0};
  Clock::time_point next_watchdog{};

  ~Impl() {
    // Normally run() has ended both threads. When it did not (an exception on the way), they
    // are ended here on purpose: a joinable std::thread would call std::terminate.
    // Order matters: nothing may call a plugin once it is destroyed.
    session.reset();
    stop_signal_thread();
    if (!stop_worker(milliseconds(0))) {
      // Its plugin cannot be destroyed while it runs, nor can the thread be left behind.
      spdlog::critical("a step is still running while the daemon ends: exiting at once");
      spdlog::default_logger()->flush();
      std::_Exit(kExitFailure);
    }
    machine.reset();
    downloader.reset();
    plugins.clear();
  }

  void post(state::Event event) {
    {
      std::lock_guard lock_guard(mutex);
      events.push_back(std::move(event));
    }
    wake.notify_one();
  }

  // ---- worker ----

  void worker_run() {
    std::unique_lock guard(worker_mutex);
    bool used = false;  // a task ran since the memory was last given back
    while (true) {
      auto ready = [&] { return worker_quit || !worker_tasks.empty(); };
      if (used && !worker_wake.wait_for(guard, kGiveBackAfterIdle, ready)) {
        // Idle: a step or a download freed what it used (transfer buffers, a hook's output),
        // and its deep calls touched this thread's stack; the idle daemon keeps neither.
        guard.unlock();
        give_back_idle_memory();
        guard.lock();
        used = false;
        continue;
      }
      worker_wake.wait(guard, ready);
      if (worker_tasks.empty()) {
        return;
      }
      auto task = std::move(worker_tasks.front());
      worker_tasks.pop_front();
      worker_busy = true;
      guard.unlock();
      task();
      guard.lock();
      used = true;
      worker_busy = false;
      worker_wake.notify_all();
    }
  }

  std::shared_ptr<StopSignal> add_work(std::uint64_t id, bool not_interruptible,
                                       bool keep_on_shutdown = false) {
    auto stop = std::make_shared<StopSignal>();
    std::lock_guard guard(worker_mutex);
    work[id] = Work{stop, not_interruptible, keep_on_shutdown, nullptr};
    return stop;
  }

  void finish_work(std::uint64_t id) {
    std::lock_guard guard(worker_mutex);
    work.erase(id);
  }

  void submit(std::function<void()> task) {
    {
      std::lock_guard guard(worker_mutex);
      worker_tasks.push_back(std::move(task));
    }
    worker_wake.notify_all();
  }

  /// Stops every running work and waits up to `grace` for the worker to become idle. False
  /// when it is still busy (a step that does not stop).
  bool stop_worker(milliseconds grace) {
    std::unique_lock guard(worker_mutex);
    for (auto& [id, w] : work) {
      if (!w.not_interruptible && !w.keep_on_shutdown) {
        w.stop->request();
        if (w.stream) {
          w.stream->stop.request();
        }
      }
    }
    worker_tasks.clear();
    bool idle =
        worker_wake.wait_for(guard, grace, [&] { return !worker_busy && worker_tasks.empty(); });
    if (!idle) {
      return false;
    }
    worker_quit = true;
    guard.unlock();
    worker_wake.notify_all();
    if (worker.joinable()) {
      worker.join();
    }
    return true;
  }

  // ---- actions ----

  void execute(const state::Action& action) {
    std::visit([this](const auto& a) { do_action(a); }, action);
  }

  void do_action(const state::Publish& a) {
    spdlog::debug("publish {}: {}", a.topic, a.payload);
    session->publish(a.topic, a.payload);
  }

  // The stream download of a streamed install: into `pipe` until it is complete, failed or
  // stopped; after a 403 it asks the machine for a fresh URL and waits for it.
  void stream_download(std::uint64_t id, download::Request request, Stream& stream,
                       download::StreamPipe& pipe) {
    download::ResumeState resume;  // in memory: a daemon restart streams from byte 0
    for (;;) {
      auto result = downloader->stream(request, resume, pipe, stream.stop);
      switch (result.outcome) {
        case download::Outcome::Complete:
          if (auto ok = pipe.complete(); !ok) {
            spdlog::error("job {}: {}", request.job_id, ok.error().message());
            std::lock_guard guard(stream.mutex);
            stream.download_failed = true;
          } else if (request.signature) {
            spdlog::info(
                "job {}: the streamed file's {} signature verified with the signing "
                "certificate {}",
                request.job_id, to_string(request.signature->algorithm), pipe.signer());
          }
          return;
        case download::Outcome::UrlExpired: {
          post(state::StreamUrlExpired{id, result});
          std::unique_lock guard(stream.mutex);
          while (!stream.fresh_url && !stream.stop.requested()) {
            stream.wake.wait_for(guard, milliseconds(200));
          }
          if (!stream.fresh_url) {
            guard.unlock();
            pipe.fail("stopped while waiting for a fresh download URL");
            return;
          }
          request.url = std::move(*stream.fresh_url);
          stream.fresh_url.reset();
          continue;
        }
        case download::Outcome::Cancelled:
          pipe.fail("the download was stopped");
          return;
        case download::Outcome::Failed: {
          if (!stream.stop.requested()) {
            // A failure of its own, not the end of a download whose install had returned.
            std::lock_guard guard(stream.mutex);
            stream.download_failed = true;
          }
          pipe.fail(result.reason.empty() ? std::string("the download failed") : result.reason);
          return;
        }
      }
    }
  }

  // Runs a streamed install: the download on a second thread, the plugin reading its bytes.
  plugin::StepResult run_streamed(const state::RunStep& a, plugin::LoadedPlugin& p,
                                  plugin::StepServices services, Stream& stream) {
    const download::Request& request = *a.stream;
    auto pipe =
        download::StreamPipe::create(request.sha256, request.size, stream.stop, request.signature,
                                     downloader->settings().signing_certificates);
    if (!pipe) {
      return {plugin::Outcome::Failed, sanitize_status_detail(pipe.error().message()),
              std::nullopt};
    }
    download::StreamPipe& stream_pipe = **pipe;
    std::thread download_thread([this, &a, &request, &stream, &stream_pipe] {
      stream_download(a.work, request, stream, stream_pipe);
    });
    services.stream_fd = stream_pipe.reader_fd();
    services.stream_end = [&stream_pipe] {
      switch (stream_pipe.state()) {
        case download::StreamState::Running:
          return plugin::StreamEnd{plugin::StreamState::Running, ""};
        case download::StreamState::Complete:
          return plugin::StreamEnd{plugin::StreamState::Complete, ""};
        case download::StreamState::Failed:
          break;
      }
      return plugin::StreamEnd{plugin::StreamState::Failed,
                               sanitize_status_detail(stream_pipe.reason())};
    };
    auto result = p.run(a.step, a.job, services);
    // The install has returned: a download still going has nobody to read its bytes.
    stream.stop.request();
    stream.wake.notify_all();
    download_thread.join();
    stream_pipe.fail("the install step returned before the end of the stream");
    const bool complete = stream_pipe.state() == download::StreamState::Complete;
    bool download_failed = false;
    {
      std::lock_guard guard(stream.mutex);
      download_failed = stream.download_failed;
    }
    if (result.outcome == plugin::Outcome::Ok && !complete) {
      return {plugin::Outcome::Failed,
              sanitize_status_detail("the install step reported success, but its stream did not "
                                     "end complete: " +
                                     stream_pipe.reason()),
              std::nullopt};
    }
    if (result.outcome != plugin::Outcome::Ok && download_failed) {
      // The download's reason is why the install failed: first, unless the plugin's text
      // already quotes it (from stream_end()).
      if (result.text.find(stream_pipe.reason()) == std::string::npos) {
        result.text = sanitize_status_detail(stream_pipe.reason() +
                                             " (the install step said: " + result.text + ")");
      }
      if (result.outcome == plugin::Outcome::RetryLater ||
          result.outcome == plugin::Outcome::NotSupported) {
        result.outcome = plugin::Outcome::Failed;
      }
    }
    return result;
  }

  void do_action(const state::StreamUrl& a) {
    std::shared_ptr<Stream> stream;
    {
      std::lock_guard guard(worker_mutex);
      auto it = work.find(a.work);
      if (it == work.end() || !it->second.stream) {
        return;
      }
      stream = it->second.stream;
    }
    {
      std::lock_guard guard(stream->mutex);
      stream->fresh_url = a.url;
    }
    stream->wake.notify_all();
  }

  void do_action(const state::RunStep& a) {
    plugin::LoadedPlugin* p = step_plugins[index(a.step)];
    auto stop = add_work(a.work, a.stop_policy == state::StopPolicy::NotInterruptible,
                         a.stop_policy == state::StopPolicy::RunsOnAtShutdown);
    std::shared_ptr<Stream> stream;
    if (a.stream) {
      stream = std::make_shared<Stream>();
      std::lock_guard guard(worker_mutex);
      work[a.work].stream = stream;
    }
    spdlog::info("job {}: {} step{}", a.job.job_id, to_string(a.step),
                 a.job.retry_count > 0 ? " (retry " + std::to_string(a.job.retry_count) + ")"
                                       : std::string());
    submit([this, a, p, stop, stream] {
      plugin::StepResult result;
      if (!p) {
        result.outcome = plugin::Outcome::NotSupported;
      } else {
        plugin::StepServices services;
        services.stop = stop.get();
        services.store = a.store.get();
        std::uint64_t id = a.work;
        services.progress = [this, id](std::string_view line, int percent) {
          post(state::StepProgress{id, std::string(line), percent});
        };
        result = stream ? run_streamed(a, *p, services, *stream) : p->run(a.step, a.job, services);
      }
      finish_work(a.work);
      post(state::StepFinished{a.work, a.step, std::move(result)});
    });
  }

  void do_action(const state::RunDownload& a) {
    auto stop = add_work(a.work, false);
    spdlog::info("job {}: downloading", a.request.job_id);
    submit([this, a, stop] {
      download::ResumeState resume = a.resume;
      std::uint64_t id = a.work;
      auto result = downloader->run(
          a.request, resume, *stop,
          [this, id](const download::Progress& progress) {
            post(state::DownloadProgress{id, progress});
          },
          [this, id](const download::ResumeState& r) {
            post(state::DownloadResumeState{id, r});
          });
      finish_work(a.work);
      post(state::DownloadFinished{a.work, std::move(result)});
    });
  }

  void do_action(const state::StopWork& a) {
    std::lock_guard guard(worker_mutex);
    auto it = work.find(a.work);
    if (it == work.end()) {
      return;
    }
    if (it->second.stream) {
      // The stream's download stops in any case; its plugin then sees the stream fail.
      it->second.stream->stop.request();
      it->second.stream->wake.notify_all();
    }
    if (it->second.not_interruptible) {
      spdlog::info("the install step cannot be interrupted: waiting for it to end");
      return;
    }
    it->second.stop->request();
  }

  void do_action(const state::SetTimer& a) { timers[a.id] = Clock::now() + a.delay; }
  void do_action(const state::CancelTimer& a) { timers.erase(a.id); }

  void do_action(const state::CleanDownloads& a) {
    if (auto ok = downloader->clean(a.keep_job_id); !ok) {
      spdlog::warn("cleaning the download directory: {}", ok.error().message());
    }
  }

  void do_action(const state::RemoveDownload& a) {
    if (auto ok = downloader->remove(a.job_id); !ok) {
      spdlog::warn("removing the download of {}: {}", a.job_id, ok.error().message());
    }
  }

  void do_action(const state::SystemdStatus& a) {
    spdlog::debug("status: {}", a.text);
    sd_notify_state("STATUS=" + a.text);
  }

  void do_action(const state::Exit& a) {
    exit_requested = true;
    if (a.reason == state::ExitReason::PluginStuck) {
      exit_code = kExitPluginStuck;
    }
  }

  void handle(const state::Event& event) {
#ifdef UPPARAT_DAEMON_TEST_SEAMS
    if (before_event) {
      before_event();
    }
#endif
    if (std::holds_alternative<state::Connected>(event) && !ready_sent) {
      ready_sent = true;
      sd_notify_state("READY=1");
      spdlog::info("ready: subscribed as thing {}", config.broker.thing_name);
    }
    if (std::holds_alternative<state::ShutdownRequested>(event)) {
      if (shutdown_started) {
        return;
      }
      sd_notify_state("STOPPING=1");
      spdlog::info("stopping (signal received)");
      shutdown_started = Clock::now();
    }
    for (const auto& action : machine->handle(event)) {
      execute(action);
    }
  }

  // ---- signals ----

  void signal_run() {
    const sigset_t set = daemon_signals();
    while (true) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) {
        continue;
      }
      if (sig == SIGUSR2) {
        if (signal_quit.load()) {
          return;
        }
        spdlog::debug("received SIGUSR2: ignored");
        continue;
      }
      int n = ++signals_received;
      spdlog::info("received {}", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      if (n >= 3) {
        spdlog::warn("third signal: exiting at once");
        std::_Exit(kExitFailure);
      }
      post(state::ShutdownRequested{});
    }
  }

  void stop_signal_thread() {
    if (!signal_thread.joinable()) {
      return;
    }
    signal_quit = true;
    pthread_kill(signal_thread.native_handle(), SIGUSR2);
    signal_thread.join();
  }

  // ---- the loop ----

  /// True while an INSTALL_NOT_INTERRUPTIBLE install runs.
  bool uninterruptible_running() {
    std::lock_guard guard(worker_mutex);
    return std::any_of(work.begin(), work.end(),
                       [](const auto& w) { return w.second.not_interruptible; });
  }

  /// After a signal: when the loop gives up waiting for the machine's Exit. A running
  /// not-interruptible install is waited for as long as the stop budget allows.
  Clock::time_point shutdown_deadline() {
    if (uninterruptible_running()) {
      return *shutdown_started + kShutdownBudget - kDisconnectWait;
    }
    return *shutdown_started + kShutdownWait;
  }

  int loop() {
    if (const auto period = sd_watchdog_period()) {
      watchdog_interval = std::chrono::duration_cast<milliseconds>(*period / 2);
      next_watchdog = Clock::now();
    }
    handle(state::Started{});
    if (auto ok = session->start(); !ok) {
      spdlog::error("{}", ok.error().message());
      return kExitConfig;
    }
    while (!exit_requested) {
      auto now = Clock::now();
      auto next = now + seconds(60);
      for (const auto& [id, when] : timers) {
        next = std::min(next, when);
      }
      if (watchdog_interval.count() > 0) {
        next = std::min(next, next_watchdog);
      }
      if (shutdown_started) {
        next = std::min(next, shutdown_deadline());
      }

      std::deque<state::Event> batch;
      {
        std::unique_lock guard(mutex);
        wake.wait_until(guard, next, [&] { return !events.empty(); });
        batch.swap(events);
      }
      for (auto& event : batch) {
        handle(event);
        if (exit_requested) {
          break;
        }
      }
      now = Clock::now();
      while (!exit_requested) {
        auto due = std::find_if(timers.begin(), timers.end(),
                                [&](const auto& t) { return t.second <= now; });
        if (due == timers.end()) {
          break;
        }
        auto id = due->first;
        timers.erase(due);
        handle(state::TimerFired{id});
      }
      if (watchdog_interval.count() > 0 && now >= next_watchdog) {
        sd_notify_state("WATCHDOG=1");
        next_watchdog = now + watchdog_interval;
      }
      if (shutdown_started && !exit_requested && now >= shutdown_deadline()) {
        spdlog::warn("the job did not come to a stop in time: exiting anyway");
        break;
      }
    }
    return exit_code;
  }

  /// After the loop: disconnects, ends the worker and the signal thread, unloads the plugins.
  /// Exits the process at once when a step still runs (its plugin cannot be unloaded).
  int finish(int code) {
    spdlog::info("disconnecting");
    session->stop(kDisconnectWait);
    milliseconds wait = kWorkerWait;
    if (code == kExitPluginStuck) {
      wait = milliseconds(0);  // it was given its grace already
    } else if (shutdown_started) {
      // Never beyond the stop budget; all of it for a not-interruptible install.
      const auto left =
          std::max(milliseconds(0), std::chrono::duration_cast<milliseconds>(
                                        *shutdown_started + kShutdownBudget - Clock::now()));
      wait = uninterruptible_running() ? left : std::min(kWorkerWait, left);
    }
    if (!stop_worker(wait)) {
      // A step that ignores the stop (or the restart step rebooting the machine): its plugin
      // cannot be destroyed while it runs.
      spdlog::error(
          "a step is still running after the stop: exiting (status {}) without unloading plugins",
          code);
      spdlog::default_logger()->flush();
      std::_Exit(code);
    }
    stop_signal_thread();
    session.reset();
    machine.reset();
    downloader.reset();
    plugins.clear();
    spdlog::info("stopped");
    return code;
  }

#ifdef UPPARAT_DAEMON_TEST_SEAMS
  std::function<void()> before_event;
#endif
};

Daemon::Daemon(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Daemon::~Daemon() = default;

#ifdef UPPARAT_DAEMON_TEST_SEAMS
void Daemon::set_before_event(std::function<void()> hook) {
  impl_->before_event = std::move(hook);
}
#endif

Result<std::unique_ptr<Daemon>> Daemon::create(const config::Config& config) {
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  const auto& state_dir = config.service.state_directory;
  if (auto ok = prepare_folders(config, ::geteuid()); !ok) {
    return fail(ok.error());
  }
  auto lock = state::LockFile::acquire(state_dir / "upparat.lock");
  if (!lock) {
    return fail(lock.error());
  }
  impl->lock.emplace(std::move(*lock));

  auto plugins = load_plugins(config);
  if (!plugins) {
    return fail(plugins.error());
  }
  if (auto ok = check_streaming(config, *plugins); !ok) {
    return fail(ok.error());
  }
  impl->plugins = std::move(*plugins);
  impl->step_plugins = step_plugins(config, impl->plugins);

  impl->downloader = std::make_unique<download::Downloader>(download_settings(config));
  impl->store = std::make_unique<state::FileStateStore>(state_dir);
  impl->machine = std::make_unique<state::Machine>(machine_settings(config, impl->step_plugins),
                                                   *impl->store, impl->clock);

  Impl* raw = impl.get();
  mqtt::Callbacks callbacks;
  callbacks.on_message = [raw](std::string topic, std::string payload) {
    // Never log a payload here: describe answers hold pre-signed URLs.
    spdlog::debug("message on {} ({} bytes)", topic, payload.size());
    raw->post(state::MqttMessage{std::move(topic), std::move(payload)});
  };
  callbacks.on_subscribed = [raw] { raw->post(state::Connected{}); };
  callbacks.on_disconnected = [raw](std::string) { raw->post(state::Disconnected{}); };
  impl->session = std::make_unique<mqtt::Session>(mqtt_settings(config), std::move(callbacks));
  return std::unique_ptr<Daemon>(new Daemon(std::move(impl)));
}

void block_daemon_signals() {
  const sigset_t set = daemon_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int Daemon::run() {
  auto& impl = *impl_;
  // SIGTERM/SIGINT are blocked in every thread (main() blocks them before any thread starts)
  // and taken by sigwait() on the signal thread.
  block_daemon_signals();
  impl.signal_thread = std::thread([&impl] { impl.signal_run(); });
  impl.worker = std::thread([&impl] { impl.worker_run(); });

  int code = kExitFailure;
  try {
    code = impl.loop();
  } catch (const std::exception& e) {
    // A bug or an exhausted resource (std::bad_alloc): stop in order and let systemd restart
    // the daemon; the saved state lets the next one continue the job.
    spdlog::critical("unexpected error in the event loop: {}; stopping", e.what());
  } catch (...) {
    spdlog::critical("unexpected error in the event loop (not a std::exception); stopping");
  }
  return impl.finish(code);
}

}  // namespace upparat::daemon
