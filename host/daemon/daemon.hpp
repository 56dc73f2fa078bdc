#pragma once

// The runtime around the state machine (host/state/machine.hpp): one event-loop thread owns the
// Machine; Paho callbacks, the worker thread (plugin steps, downloads), timers and signals post
// events to it; the loop executes the machine's actions. systemd: READY=1 once subscribed,
// STATUS= the current step, WATCHDOG=1 from the loop.

#include <functional>
#include <memory>
#include <string>

#include "common/error.hpp"
#include "config/config.hpp"

namespace upparat::daemon {

/// Exit codes of `upparat`.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitConfig = 78;  ///< EX_CONFIG: systemd's unit does not restart on it
/// EX_TEMPFAIL: a plugin step asked to stop did not return within [jobs] stop_grace. The job
/// was reported FAILED (or was gone) and the daemon left without waiting for the step or
/// unloading its plugin; a restart (the unit's Restart=on-failure) gives a clean daemon.
inline constexpr int kExitPluginStuck = 75;

/// Blocks SIGTERM, SIGINT and SIGUSR2 in the calling thread and the threads it starts later.
/// The daemon's signal thread takes them with sigwait() (SIGUSR2 wakes it to end it); call this
/// before any thread exists so that no other thread receives them.
void block_daemon_signals();

/// Sets up spdlog on stderr: colours only on a terminal, a `<N>` syslog priority prefix and no
/// time stamp when stderr is the journal (JOURNAL_STREAM), `level` as in the configuration.
void setup_logging(const std::string& level);

/// Loads every configured plugin (creating its instance, which validates its own settings,
/// e.g. that hooks are executable), then destroys them. For --check-config.
[[nodiscard]] Status check_plugins(const config::Config& config);

class Daemon {
 public:
  /// Takes the lock file in the state directory (a second instance fails here, naming the
  /// holder's PID) and loads the plugins. Nothing connects yet.
  [[nodiscard]] static Result<std::unique_ptr<Daemon>> create(const config::Config& config);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  /// Runs until SIGTERM/SIGINT (and the machine's orderly Exit), or until the machine gives
  /// up on a plugin that does not stop. Returns the exit code (kExitPluginStuck for the
  /// latter; kExitFailure after an unexpected error in the event loop, which is logged).
  int run();

#ifdef UPPARAT_DAEMON_TEST_SEAMS
  /// Tests only (compiled with UPPARAT_DAEMON_TEST_SEAMS, never into the daemon): runs on the
  /// event loop before each event is handled, so that a test can make the loop throw.
  void set_before_event(std::function<void()> hook);
#endif

 private:
  struct Impl;
  explicit Daemon(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace upparat::daemon
