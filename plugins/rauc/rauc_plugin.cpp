// The RAUC plugin: installs bundles through the RAUC service's D-Bus API
// (de.pengutronix.rauc.Installer), reads the installed version from RAUC's slot status, checks
// after the reboot that the slot the install made primary is the one that booted, marks it
// good, and reboots through systemd-logind (see docs/rauc-plugin.md).

#include <poll.h>
#include <time.h>

#include <sdbus-c++/sdbus-c++.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <ctime>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <upparat/plugin.hpp>

#include "system/system.hpp"

namespace upparat::rauc {
namespace {

using sdk::Config;
using sdk::Job;
using sdk::Logger;
using sdk::StepContext;
using sdk::StepResult;
using namespace std::chrono_literals;

constexpr const char* kService = "de.pengutronix.rauc";
constexpr const char* kObject = "/";
constexpr const char* kInstaller = "de.pengutronix.rauc.Installer";
constexpr const char* kProperties = "org.freedesktop.DBus.Properties";

// Keys of the job's key/value store.
constexpr const char* kKeyPrimarySlot = "rauc.primary_slot";
constexpr const char* kKeyPrimaryBootname = "rauc.primary_bootname";
constexpr const char* kKeyBusySince = "rauc.busy_since";

/// How often the install loop checks that the service is still there.
constexpr auto kLivenessInterval = 500ms;

/// A slot as GetSlotStatus describes it: its name ("rootfs.1") and its values as text.
struct Slot {
  std::string name;
  std::map<std::string, std::string> values;

  [[nodiscard]] std::string value(const std::string& key) const {
    auto it = values.find(key);
    return it == values.end() ? std::string() : it->second;
  }
  /// "rootfs.1 (bootname B)".
  [[nodiscard]] std::string describe() const {
    const std::string bootname = value("bootname");
    return bootname.empty() ? name : name + " (bootname " + bootname + ")";
  }
};

std::string variant_text(const sdbus::Variant& v) {
  if (v.containsValueOfType<std::string>()) {
    return v.get<std::string>();
  }
  if (v.containsValueOfType<std::uint32_t>()) {
    return std::to_string(v.get<std::uint32_t>());
  }
  if (v.containsValueOfType<std::uint64_t>()) {
    return std::to_string(v.get<std::uint64_t>());
  }
  if (v.containsValueOfType<std::int32_t>()) {
    return std::to_string(v.get<std::int32_t>());
  }
  if (v.containsValueOfType<std::int64_t>()) {
    return std::to_string(v.get<std::int64_t>());
  }
  if (v.containsValueOfType<bool>()) {
    return v.get<bool>() ? "true" : "false";
  }
  return {};
}

/// A D-Bus failure, classified for the step result.
struct BusError {
  enum class Kind { NotRunning, NoAnswer, Refused, NoBus } kind;
  std::string message;
};

/// The RAUC service on one bus connection. The connection has its own event-loop thread
/// (for the Completed and PropertiesChanged signals), joined by the destructor.
class Rauc {
 public:
  Rauc(const std::string& bus_address, std::chrono::milliseconds timeout) : timeout_(timeout) {
    where_ = bus_address.empty() ? "the system bus" : bus_address;
    if (auto socket = plugin_system::check_bus_socket(bus_address); !socket) {
      throw BusError{BusError::Kind::NoBus,
                     "cannot connect to D-Bus at " + where_ + ": " + socket.error().message()};
    }
    try {
      auto connection = bus_address.empty()
                            ? sdbus::createSystemBusConnection()
                            : sdbus::createSessionBusConnectionWithAddress(bus_address);
      proxy_ = sdbus::createProxy(std::move(connection), kService, kObject);
    } catch (const sdbus::Error& e) {
      throw BusError{BusError::Kind::NoBus,
                     "cannot connect to D-Bus at " + where_ + ": " + e.getMessage()};
    }
  }

  /// Subscribes to Completed and to changes of Progress. Call once, before install().
  void subscribe(std::function<void(std::int32_t)> on_completed,
                 std::function<void(std::int32_t, const std::string&, std::int32_t)> on_progress) {
    proxy_->uponSignal("Completed").onInterface(kInstaller).call(std::move(on_completed));
    proxy_->uponSignal("PropertiesChanged")
        .onInterface(kProperties)
        .call([on_progress = std::move(on_progress)](
                  const std::string& interface,
                  const std::map<std::string, sdbus::Variant>& changed,
                  const std::vector<std::string>&) {
          auto it = changed.find("Progress");
          if (interface != kInstaller || it == changed.end()) {
            return;
          }
          try {
            auto p = it->second.get<sdbus::Struct<std::int32_t, std::string, std::int32_t>>();
            on_progress(std::get<0>(p), std::get<1>(p), std::get<2>(p));
          } catch (const sdbus::Error&) {
            // A Progress of another type than (isi): not RAUC's; ignored.
          }
        });
    proxy_->finishRegistration();
  }

  sdbus::Variant property(const std::string& name) {
    return call("reading " + name, [&] {
      sdbus::Variant value;
      proxy_->callMethod("Get")
          .onInterface(kProperties)
          .withTimeout(timeout_)
          .withArguments(std::string(kInstaller), name)
          .storeResultsTo(value);
      return value;
    });
  }
  std::string string_property(const std::string& name) { return variant_text(property(name)); }

  std::vector<Slot> slot_status() {
    return call("GetSlotStatus", [&] {
      std::vector<sdbus::Struct<std::string, std::map<std::string, sdbus::Variant>>> raw;
      proxy_->callMethod("GetSlotStatus")
          .onInterface(kInstaller)
          .withTimeout(timeout_)
          .storeResultsTo(raw);
      std::vector<Slot> slots;
      for (const auto& entry : raw) {
        Slot slot{std::get<0>(entry), {}};
        for (const auto& [key, value] : std::get<1>(entry)) {
          slot.values[key] = variant_text(value);
        }
        slots.push_back(std::move(slot));
      }
      return slots;
    });
  }

  std::string primary() {
    return call("GetPrimary", [&] {
      std::string slot;
      proxy_->callMethod("GetPrimary")
          .onInterface(kInstaller)
          .withTimeout(timeout_)
          .storeResultsTo(slot);
      return slot;
    });
  }

  void install(const std::string& source) {
    call("InstallBundle", [&] {
      proxy_->callMethod("InstallBundle")
          .onInterface(kInstaller)
          .withTimeout(timeout_)
          .withArguments(source, std::map<std::string, sdbus::Variant>{});
      return 0;
    });
  }

  /// Mark(state, "booted"); returns RAUC's message.
  std::string mark(const std::string& state) {
    return call("Mark", [&] {
      std::string slot;
      std::string message;
      proxy_->callMethod("Mark")
          .onInterface(kInstaller)
          .withTimeout(timeout_)
          .withArguments(state, std::string("booted"))
          .storeResultsTo(slot, message);
      return message;
    });
  }

  [[nodiscard]] const std::string& where() const { return where_; }

 private:
  template <class F>
  auto call(const std::string& what, F&& f) -> decltype(f()) {
    try {
      return f();
    } catch (const sdbus::Error& e) {
      const std::string& name = e.getName();
      if (name == "org.freedesktop.DBus.Error.ServiceUnknown" ||
          name == "org.freedesktop.DBus.Error.NameHasNoOwner") {
        throw BusError{BusError::Kind::NotRunning, "the RAUC service (" + std::string(kService) +
                                                       ") is not running on " + where_ +
                                                       ": start it (systemctl start rauc)"};
      }
      if (name == "org.freedesktop.DBus.Error.NoReply" ||
          name == "org.freedesktop.DBus.Error.Timeout" ||
          e.getMessage().find("imed out") != std::string::npos) {
        throw BusError{BusError::Kind::NoAnswer,
                       "the RAUC service did not answer " + what + " within " +
                           std::to_string(timeout_.count() / 1000) + " s"};
      }
      throw BusError{BusError::Kind::Refused,
                     "RAUC " + what + ": " + (e.getMessage().empty() ? name : e.getMessage())};
    }
  }

  std::chrono::milliseconds timeout_;
  std::string where_;
  std::unique_ptr<sdbus::IProxy> proxy_;
};

const Slot* booted_slot(const std::vector<Slot>& slots) {
  for (const auto& slot : slots) {
    if (slot.value("state") == "booted") {
      return &slot;
    }
  }
  return nullptr;
}

const Slot* slot_named(const std::vector<Slot>& slots, const std::string& name) {
  for (const auto& slot : slots) {
    if (slot.name == name) {
      return &slot;
    }
  }
  return nullptr;
}

/// Seconds since the epoch of RAUC's "2026-11-29T14:16:36Z", or -1.
std::int64_t parse_timestamp(const std::string& text) {
  std::tm tm{};
  const char* end = ::strptime(text.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (end == nullptr || *end != '\0') {
    return -1;
  }
  return static_cast<std::int64_t>(::timegm(&tm));
}

std::int64_t now_epoch() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::chrono::milliseconds key_seconds(const std::string& key, const std::string& value,
                                      std::int64_t min, std::int64_t max) {
  const std::string what = key + " = '" + value + "'";
  if (value.empty() || value.size() > 9 ||
      value.find_first_not_of("0123456789") != std::string::npos) {
    throw std::invalid_argument(what + ": expected a whole number of seconds");
  }
  const std::int64_t seconds = std::stoll(value);
  if (seconds < min || seconds > max) {
    throw std::invalid_argument(what + ": must be between " + std::to_string(min) + " and " +
                                std::to_string(max));
  }
  return std::chrono::seconds(seconds);
}

std::string check_absolute(const std::string& key, const std::string& value) {
  if (value.empty() || value.front() != '/') {
    throw std::invalid_argument(key + " = '" + value + "': expected an absolute path");
  }
  return value;
}

enum class VersionSource { Slot, File };
enum class RestartMethod { Logind, Command, Soft };

class RaucPlugin : public sdk::Plugin {
 public:
  RaucPlugin(const Config& config, const Logger& logger) : logger_(logger) {
    for (const auto& [key, value] : config) {
      if (key == "bus_address") {
        bus_address_ = value;
      } else if (key == "call_timeout_seconds") {
        call_timeout_ = key_seconds(key, value, 1, 600);
      } else if (key == "busy_wait_seconds") {
        busy_wait_ = key_seconds(key, value, 0, 3600);
      } else if (key == "version_source") {
        if (value == "slot") {
          version_source_ = VersionSource::Slot;
        } else if (value == "file") {
          version_source_ = VersionSource::File;
        } else {
          throw std::invalid_argument("version_source = '" + value + "': expected slot or file");
        }
      } else if (key == "version_file") {
        version_file_ = check_absolute(key, value);
      } else if (key == "version_key") {
        if (value.empty()) {
          throw std::invalid_argument("version_key must not be empty");
        }
        version_key_ = value;
      } else if (key == "mark_good") {
        mark_good_ = plugin_system::parse_bool(key, value);
      } else if (key == "health_command") {
        if (!value.empty()) {
          health_command_ = check_absolute(key, value);
        }
      } else if (key == "health_timeout_seconds") {
        health_timeout_ = key_seconds(key, value, 1, 3600);
      } else if (key == "restart") {
        if (value == "logind") {
          restart_ = RestartMethod::Logind;
        } else if (value == "command") {
          restart_ = RestartMethod::Command;
        } else if (value == "soft") {
          restart_ = RestartMethod::Soft;
        } else {
          throw std::invalid_argument("restart = '" + value +
                                      "': expected logind, command or soft");
        }
      } else if (key == "restart_command") {
        restart_command_ = check_absolute(key, value);
      } else if (key == "logind_bus_address") {
        logind_bus_address_ = value;
      } else if (key == "reboot_wait_seconds") {
        reboot_wait_ = key_seconds(key, value, 1, 3600);
      } else {
        throw std::invalid_argument(
            "unknown key '" + key +
            "' (the rauc plugin knows bus_address, call_timeout_seconds, busy_wait_seconds, "
            "version_source, "
            "version_file, version_key, mark_good, health_command, health_timeout_seconds, "
            "restart, restart_command, logind_bus_address, reboot_wait_seconds)");
      }
    }
    if (restart_ == RestartMethod::Command && restart_command_.empty()) {
      throw std::invalid_argument("restart = 'command' needs restart_command");
    }
  }

  StepResult version(const Job& /*job*/, StepContext& ctx) override {
    if (version_source_ == VersionSource::File) {
      return version_from_file();
    }
    return with_rauc(false, [&](Rauc& rauc) {
      const auto slots = rauc.slot_status();
      const Slot* booted = booted_slot(slots);
      if (booted == nullptr) {
        return StepResult::failed(
            "RAUC reports no booted slot (check the bootloader setup and "
            "the root= or rauc.slot= kernel argument)");
      }
      // After the install's reboot, a boot into another slot than the new primary one is the
      // bootloader falling back: say so instead of comparing versions.
      if (auto rollback = check_rollback(*booted, ctx)) {
        return StepResult::failed(*rollback);
      }
      const std::string version = booted->value("bundle.version");
      if (!version.empty()) {
        return StepResult::ok(version);
      }
      // A slot written by the factory, not by RAUC, has no bundle version.
      auto from_file = version_from_file();
      if (from_file.code() != UPPARAT_OK) {
        return StepResult::failed("the booted slot " + booted->describe() +
                                  " has no bundle version in RAUC's status, and " +
                                  from_file.text());
      }
      return from_file;
    });
  }

  StepResult install(const Job& job, StepContext& ctx) override {
    const std::string source = job.file ? *job.file : job.url;
    if (source.empty()) {
      return StepResult::failed("no bundle to install (neither a file nor a URL)");
    }
    return with_rauc(false, [&](Rauc& rauc) { return install_with(rauc, source, job, ctx); });
  }

  StepResult restart(const Job& job, StepContext& ctx) override {
    (void)job;
    switch (restart_) {
      case RestartMethod::Soft:
        return StepResult::ok();
      case RestartMethod::Command: {
        plugin_system::HealthCommand command;
        command.argv = {restart_command_};
        command.timeout = reboot_wait_;
        command.stop_fd = ctx.stop_fd();
        command.name = "restart command";
        if (auto ran = plugin_system::run_health_command(command); !ran) {
          return StepResult::failed(ran.error().message());
        }
        break;
      }
      case RestartMethod::Logind:
        if (auto rebooted = plugin_system::reboot_via_logind(logind_bus_address_, call_timeout_);
            !rebooted) {
          return StepResult::failed(rebooted.error().message());
        }
        break;
    }
    logger_.info("reboot requested; waiting for the system to go down");
    return StepResult::failed(plugin_system::wait_for_reboot(
        ctx.stop_fd(), [&ctx] { return ctx.should_stop(); }, reboot_wait_));
  }

  StepResult ready(const Job& job, StepContext& ctx) override {
    // Right after a boot the RAUC service may not run yet: a missing service is a retry.
    return with_rauc(true, [&](Rauc& rauc) {
      const auto slots = rauc.slot_status();
      const Slot* booted = booted_slot(slots);
      if (booted == nullptr) {
        return StepResult::failed("RAUC reports no booted slot (check the bootloader setup)");
      }
      if (auto rollback = check_rollback(*booted, ctx)) {
        return StepResult::failed(*rollback);
      }
      if (!ctx.get(kKeyPrimaryBootname)) {
        // No record of the install (the state folder was on the other slot): the booted slot
        // must hold the job's version.
        const std::string version = booted->value("bundle.version");
        if (version != job.version) {
          return StepResult::failed(
              "booted slot " + booted->describe() + " holds bundle version '" + version +
              "', not the job's version '" + job.version +
              "': the bootloader went back to the old slot, or the bundle was not installed");
        }
      }
      if (!health_command_.empty()) {
        plugin_system::HealthCommand command;
        command.argv = {health_command_};
        command.timeout = health_timeout_;
        command.stop_fd = ctx.stop_fd();
        command.should_stop = [&ctx] { return ctx.should_stop(); };
        if (auto healthy = plugin_system::run_health_command(command); !healthy) {
          return StepResult::failed(healthy.error().message());
        }
      }
      if (mark_good_) {
        const std::string message = rauc.mark("good");
        logger_.info("RAUC: " + message);
        return StepResult::ok();
      }
      if (booted->value("boot-status") == "good") {
        return StepResult::ok();
      }
      return StepResult::retry_later("waiting until the booted slot " + booted->describe() +
                                     " is marked good");
    });
  }

 private:
  /// Runs `body` against the RAUC service, turning D-Bus failures into step results. With
  /// `retry_when_absent`, a service that is not running or does not answer is a RETRY_LATER.
  template <class F>
  StepResult with_rauc(bool retry_when_absent, F&& body) {
    try {
      Rauc rauc(bus_address_, call_timeout_);
      return body(rauc);
    } catch (const sdbus::Error& e) {
      logger_.warn("D-Bus: " + e.getMessage());
      return StepResult::failed("D-Bus error talking to RAUC: " + e.getName() + ": " +
                                e.getMessage());
    } catch (const BusError& e) {
      logger_.warn(e.message);
      if (e.kind == BusError::Kind::NoAnswer ||
          (retry_when_absent && e.kind == BusError::Kind::NotRunning)) {
        return StepResult::retry_later(e.message);
      }
      return StepResult::failed(e.message);
    }
  }

  StepResult version_from_file() const {
    auto version = plugin_system::read_release_key(version_file_, version_key_);
    if (!version) {
      return StepResult::failed(version.error().message());
    }
    return StepResult::ok(*version);
  }

  /// The reason to fail when the install of this job recorded another primary slot than the
  /// one that booted.
  static std::optional<std::string> check_rollback(const Slot& booted, const StepContext& ctx) {
    auto bootname = ctx.get(kKeyPrimaryBootname);
    if (!bootname || booted.value("bootname") == *bootname) {
      return std::nullopt;
    }
    return "booted slot " + booted.describe() + ", but the install made " +
           ctx.get(kKeyPrimarySlot).value_or("?") + " (bootname " + *bootname +
           ") primary: the bootloader went back to the old slot";
  }

  /// After Completed(0): records the new primary slot and its bootname in the job's store.
  StepResult record_primary(Rauc& rauc, StepContext& ctx, const std::string& what) {
    const std::string primary = rauc.primary();
    const auto slots = rauc.slot_status();
    const Slot* slot = slot_named(slots, primary);
    const std::string bootname = slot != nullptr ? slot->value("bootname") : std::string();
    if (!ctx.set(kKeyPrimarySlot, primary) ||
        (!bootname.empty() && !ctx.set(kKeyPrimaryBootname, bootname))) {
      logger_.warn("cannot record the new primary slot in the job's store");
    }
    logger_.info(what + "; primary slot now " + primary + " (bootname " + bootname + ")");
    return StepResult::ok();
  }

  StepResult install_with(Rauc& rauc, const std::string& source, const Job& job, StepContext& ctx) {
    std::string operation = rauc.string_property("Operation");
    if (operation != "idle") {
      // Another install runs, maybe the one this job started before the daemon restarted.
      // Remember since when, to recognise it once it has finished, and wait a while for it.
      if (!ctx.get(kKeyBusySince)) {
        (void)ctx.set(kKeyBusySince, std::to_string(now_epoch()));
      }
      const auto until = std::chrono::steady_clock::now() + busy_wait_;
      while (operation != "idle" && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(kLivenessInterval);
        operation = rauc.string_property("Operation");
      }
      if (operation != "idle") {
        // The daemon's retry_interval and max_retries bound the wait from here on.
        return StepResult::retry_later("RAUC is busy (operation '" + operation +
                                       "'): waiting for its install to finish");
      }
    }
    if (auto busy_since = ctx.get(kKeyBusySince)) {
      (void)ctx.set(kKeyBusySince, std::nullopt);
      // The install that kept RAUC busy wrote this job's version into the primary slot after
      // we first saw it: it was this job's, started before the daemon restarted.
      const std::string primary = rauc.primary();
      const auto slots = rauc.slot_status();
      const Slot* slot = slot_named(slots, primary);
      if (slot != nullptr && !job.version.empty() && slot->value("bundle.version") == job.version &&
          parse_timestamp(slot->value("installed.timestamp")) + 1 >= std::stoll(*busy_since)) {
        return record_primary(rauc, ctx,
                              "RAUC's running install of version " + job.version +
                                  " finished; not installing it again");
      }
    }

    // Shared with the signal handlers, which run on the connection's thread until `rauc` is
    // destroyed (after this function returned).
    struct Completion {
      std::mutex mutex;
      std::condition_variable changed;
      std::optional<std::int32_t> result;
    };
    auto completion = std::make_shared<Completion>();
    rauc.subscribe(
        [completion](std::int32_t result) {
          std::lock_guard lock(completion->mutex);
          completion->result = result;
          completion->changed.notify_all();
        },
        [&ctx](std::int32_t percent, const std::string& message, std::int32_t depth) {
          (void)depth;
          ctx.progress(message, percent);
        });
    logger_.info("RAUC: installing bundle");
    rauc.install(source);

    // RAUC cannot cancel an install: wait for Completed, checking that the service lives.
    std::optional<std::chrono::steady_clock::time_point> silent_since;
    bool seen_busy = false;
    int idle_polls = 0;
    while (true) {
      {
        std::unique_lock lock(completion->mutex);
        if (completion->changed.wait_for(lock, kLivenessInterval,
                                         [&] { return completion->result.has_value(); })) {
          break;
        }
      }
      try {
        const std::string now_operation = rauc.string_property("Operation");
        silent_since.reset();
        // A Completed signal lost on the way: idle again after it was busy (or idle for long,
        // for an install too short to be seen busy) means the install ended.
        seen_busy = seen_busy || now_operation != "idle";
        idle_polls = now_operation == "idle" ? idle_polls + 1 : 0;
        if (idle_polls >= (seen_busy ? 2 : 10)) {
          const std::int32_t guessed = rauc.string_property("LastError").empty() ? 0 : 1;
          std::lock_guard lock(completion->mutex);
          if (!completion->result) {
            completion->result = guessed;
          }
          break;
        }
      } catch (const BusError& e) {
        if (e.kind == BusError::Kind::NotRunning) {
          return StepResult::failed("the RAUC service stopped during the install: " + e.message);
        }
        if (!silent_since) {
          silent_since = std::chrono::steady_clock::now();
        } else if (std::chrono::steady_clock::now() - *silent_since > call_timeout_) {
          return StepResult::failed("the RAUC service stopped answering during the install: " +
                                    e.message);
        }
      }
    }
    std::int32_t result = 0;
    {
      std::lock_guard lock(completion->mutex);
      result = *completion->result;
    }
    if (result != 0) {
      std::string error = rauc.string_property("LastError");
      if (error.empty()) {
        error = "no reason given (result " + std::to_string(result) + ")";
      }
      logger_.warn("RAUC install failed: " + error);
      return StepResult::failed("RAUC install failed: " + error);
    }
    return record_primary(rauc, ctx, "RAUC install succeeded");
  }

  Logger logger_;
  std::string bus_address_;
  std::chrono::milliseconds call_timeout_{10s};
  std::chrono::milliseconds busy_wait_{60s};
  VersionSource version_source_ = VersionSource::Slot;
  std::string version_file_ = "/etc/os-release";
  std::string version_key_ = "VERSION_ID";
  bool mark_good_ = true;
  std::string health_command_;
  std::chrono::milliseconds health_timeout_{60s};
  RestartMethod restart_ = RestartMethod::Logind;
  std::string restart_command_;
  std::string logind_bus_address_;
  std::chrono::milliseconds reboot_wait_{300s};
};

}  // namespace
}  // namespace upparat::rauc

UPPARAT_PLUGIN(upparat::rauc::RaucPlugin, "rauc", UPPARAT_RAUC_PLUGIN_VERSION, "Apache-2.0",
               "Installs RAUC bundles through the RAUC service's D-Bus API",
               UPPARAT_CAP_INSTALL_FROM_URL | UPPARAT_CAP_INSTALL_NOT_INTERRUPTIBLE)
