#pragma once

// A real RAUC 1.8 system for tests: a private D-Bus daemon, `rauc service` on it with two
// file-backed raw slots (bootnames A and B), a custom bootloader backend script that keeps its
// state in files, and a CA and signing key made with openssl. Bundles are built with
// `rauc bundle` in the plain format. Everything lives in one TempDir; the processes are
// stopped when the object is destroyed.

#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "support/binaries.hpp"
#include "support/process.hpp"
#include "support/temp_dir.hpp"

namespace upparat::test::rauc {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

inline constexpr const char* kRaucPath = "/usr/bin/rauc";
inline constexpr const char* kDbusDaemonPath = "/usr/bin/dbus-daemon";
inline constexpr const char* kBusctlPath = "/usr/bin/busctl";
inline constexpr const char* kCompatible = "upparat-test";
/// Size of the slot images and of the image in a bundle (a squashfs must exceed 4 KiB).
inline constexpr std::size_t kSlotBytes = 1024 * 1024;
inline constexpr std::size_t kImageBytes = 64 * 1024;

/// Why RAUC cannot run here, or "" when it can: it needs root (it mounts the bundle through a
/// loop device), loop devices, and the programs.
inline std::string missing_requirement() {
  for (const char* program : {kRaucPath, kDbusDaemonPath, kBusctlPath, kOpensslPath}) {
    if (!is_executable(program)) {
      return std::string(program) + " is not installed (scripts/install-deps.sh installs it)";
    }
  }
  if (::geteuid() != 0) {
    return "RAUC mounts bundles through loop devices, which needs root";
  }
  if (!fs::exists("/dev/loop-control")) {
    return "no loop devices (/dev/loop-control is missing)";
  }
  return {};
}

inline std::string read_all(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

class RaucSystem {
 public:
  /// Creates the files and starts the bus (not yet the RAUC service).
  static Result<RaucSystem> create() {
    auto dir = TempDir::create("rauc");
    if (!dir) {
      return fail(dir.error());
    }
    RaucSystem s(std::move(*dir));
    if (auto made = s.make_files(); !made) {
      return fail(made.error());
    }
    if (auto bus = s.start_bus(); !bus) {
      return fail(bus.error());
    }
    return s;
  }

  [[nodiscard]] fs::path path(const std::string& name) const { return dir_->path() / name; }
  /// The private bus's address, for the plugin's bus_address.
  [[nodiscard]] std::string bus_address() const { return "unix:path=" + path("bus").string(); }

  /// Starts `rauc service` as if `boot_slot` (A or B) had booted; waits until it owns its name.
  Status start_service(const std::string& boot_slot = "A") {
    ProcessOptions o;
    o.argv = {kRaucPath, "service", "--conf=" + path("system.conf").string(),
              "--override-boot-slot=" + boot_slot};
    o.name = "rauc-service";
    o.log_path = path("rauc-service.log");
    o.env = {{"DBUS_STARTER_BUS_TYPE", "session"},
             {"DBUS_SESSION_BUS_ADDRESS", bus_address()},
             {"DBUS_STARTER_ADDRESS", bus_address()}};
    auto p = ServiceProcess::start(o);
    if (!p) {
      return fail(p.error());
    }
    service_.emplace(std::move(*p));
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (!service_->running()) {
        return fail("rauc service exited: " + service_->log_tail());
      }
      auto owned = busctl({"call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                           "org.freedesktop.DBus", "NameHasOwner", "s", "de.pengutronix.rauc"});
      if (owned && owned->find("true") != std::string::npos) {
        return {};
      }
      std::this_thread::sleep_for(50ms);
    }
    return fail("rauc service did not take its bus name within 20 s: " + service_->log_tail());
  }

  /// The running service (to stop, SIGSTOP or kill it).
  std::optional<ServiceProcess>& service() { return service_; }

  /// Stops the service and starts it again as if `boot_slot` had booted (a simulated reboot).
  Status reboot_into(const std::string& boot_slot) {
    if (service_) {
      (void)service_->stop();
      service_.reset();
    }
    return start_service(boot_slot);
  }

  /// Runs busctl on the private bus; returns its output.
  Result<std::string> busctl(std::vector<std::string> args) const {
    std::vector<std::string> argv = {kBusctlPath, "--address=" + bus_address()};
    argv.insert(argv.end(), args.begin(), args.end());
    auto ran = run_process(argv, 30s);
    if (!ran) {
      return fail(ran.error());
    }
    if (!ran->status.success()) {
      return fail("busctl " + args.front() + ": " + ran->status.describe() + ": " + ran->output);
    }
    return ran->output;
  }

  /// Builds a signed plain bundle `name` holding a slot image for the rootfs class; returns
  /// its path and keeps the image's bytes in image(name).
  Result<fs::path> bundle(const std::string& name, const std::string& version,
                          const std::string& compatible = kCompatible) {
    const fs::path content = path("bundle-" + name);
    fs::create_directories(content);
    std::string image(kImageBytes, '\0');
    std::mt19937 random(static_cast<unsigned>(std::hash<std::string>()(name + version)));
    for (auto& c : image) {
      c = static_cast<char>(random());
    }
    std::ofstream(content / "rootfs.img", std::ios::binary) << image;
    std::ofstream(content / "manifest.raucm")
        << "[update]\ncompatible=" << compatible << "\nversion=" << version
        << "\n[bundle]\nformat=plain\n[image.rootfs]\nfilename=rootfs.img\n";
    const fs::path out = path(name + ".raucb");
    auto ran = run_process({kRaucPath, "bundle", "--cert=" + path("cert.pem").string(),
                            "--key=" + path("key.pem").string(), content.string(), out.string()},
                           60s);
    if (!ran) {
      return fail(ran.error());
    }
    if (!ran->status.success()) {
      return fail("rauc bundle: " + ran->output);
    }
    images_[name] = image;
    return out;
  }

  [[nodiscard]] std::string image(const std::string& name) const {
    auto it = images_.find(name);
    return it == images_.end() ? std::string() : it->second;
  }

  /// The first `bytes` bytes of slot image A or B.
  [[nodiscard]] std::string slot_content(const std::string& bootname, std::size_t bytes) const {
    return read_all(path("slot" + bootname + ".img")).substr(0, bytes);
  }

  /// Whether slot image A or B begins with the image of bundle `name` (compared here, so that
  /// a failure does not print 64 KiB of bytes).
  [[nodiscard]] bool slot_holds(const std::string& bootname, const std::string& name) const {
    const std::string wanted = image(name);
    return !wanted.empty() && slot_content(bootname, wanted.size()) == wanted;
  }

  /// Each call of the bootloader backend, one line each ("set-primary B").
  [[nodiscard]] std::string bootloader_log() const { return read_all(path("bootloader.log")); }
  /// The backend's state of `bootname` ("good" or "bad").
  [[nodiscard]] std::string boot_state(const std::string& bootname) const {
    std::string s = read_all(path("bootloader/state." + bootname));
    return s.empty() ? "good" : s.substr(0, s.find('\n'));
  }
  /// From now on the backend's set-primary waits `seconds` (an install that keeps RAUC busy).
  void slow_backend(int seconds) const {
    std::ofstream(path("bootloader/delay")) << seconds << "\n";
  }

 private:
  explicit RaucSystem(TempDir dir) : dir_(std::move(dir)) {}

  Status make_files() {
    fs::create_directories(path("bootloader"));
    fs::create_directories(path("data"));
    fs::create_directories(path("mnt"));
    auto key = run_process(
        {kOpensslPath, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", path("key.pem").string(), "-out", path("cert.pem").string(), "-days",
         "3650", "-subj", "/CN=upparat test signer"},
        30s);
    if (!key || !key->status.success()) {
      return fail("openssl req failed: " + (key ? key->output : key.error().message()));
    }
    for (const char* slot : {"A", "B"}) {
      std::ofstream(path(std::string("slot") + slot + ".img"), std::ios::binary)
          << std::string(kSlotBytes, '\0');
    }
    const std::string state = path("bootloader").string();
    const fs::path backend = path("bootloader.sh");
    std::ofstream(backend) << "#!/bin/sh\n"
                           << "d='" << state << "'\n"
                           << "echo \"$*\" >> '" << path("bootloader.log").string() << "'\n"
                           << "case \"$1\" in\n"
                           << "get-primary) cat \"$d/primary\" 2>/dev/null || echo A ;;\n"
                           << "set-primary)\n"
                           << "  if [ -s \"$d/delay\" ]; then sleep \"$(cat \"$d/delay\")\"; fi\n"
                           << "  echo \"$2\" > \"$d/primary\" ;;\n"
                           << "get-state) cat \"$d/state.$2\" 2>/dev/null || echo good ;;\n"
                           << "set-state) echo \"$3\" > \"$d/state.$2\" ;;\n"
                           << "*) exit 1 ;;\nesac\n";
    fs::permissions(backend, fs::perms::owner_all);
    std::ofstream(path("system.conf"))
        << "[system]\ncompatible=" << kCompatible
        << "\nbootloader=custom\nbundle-formats=plain\ndata-directory=" << path("data").string()
        << "\nmountprefix=" << path("mnt").string()
        << "\n[handlers]\nbootloader-custom-backend=" << backend.string()
        << "\n[keyring]\npath=" << path("cert.pem").string()
        << "\n[slot.rootfs.0]\ndevice=" << path("slotA.img").string()
        << "\ntype=raw\nbootname=A\n[slot.rootfs.1]\ndevice=" << path("slotB.img").string()
        << "\ntype=raw\nbootname=B\n";
    return {};
  }

  Status start_bus() {
    ProcessOptions o;
    o.argv = {kDbusDaemonPath, "--session", "--address=" + bus_address(), "--nofork",
              "--nopidfile"};
    o.name = "dbus-daemon";
    o.log_path = path("dbus-daemon.log");
    auto p = ServiceProcess::start(o);
    if (!p) {
      return fail(p.error());
    }
    bus_.emplace(std::move(*p));
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (fs::exists(path("bus")) && busctl({"list"})) {
        return {};
      }
      if (!bus_->running()) {
        return fail("dbus-daemon exited: " + bus_->log_tail());
      }
      std::this_thread::sleep_for(20ms);
    }
    return fail("dbus-daemon did not listen on " + bus_address() + " within 10 s");
  }

  std::optional<TempDir> dir_;
  std::optional<ServiceProcess> bus_;
  std::optional<ServiceProcess> service_;
  std::map<std::string, std::string> images_;

 public:
  RaucSystem(RaucSystem&&) noexcept = default;
  RaucSystem& operator=(RaucSystem&&) noexcept = default;
  ~RaucSystem() {
    // The service first: it must not outlive its bus, nor the bus the files.
    service_.reset();
    bus_.reset();
    // A service killed during an install leaves the bundle mounted (its loop device is
    // released with the mount): unmount it, or the folder cannot be removed.
    if (dir_) {
      const fs::path bundle = path("mnt/bundle");
      for (int i = 0; i < 4 && ::umount2(bundle.c_str(), MNT_DETACH) == 0; ++i) {
      }
    }
  }
};

}  // namespace upparat::test::rauc
