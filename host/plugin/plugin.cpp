#include "plugin/plugin.hpp"

#include <sys/stat.h>
#include <unistd.h>
#include <upparat/plugin.h>

#include <spdlog/spdlog.h>
#include <boost/dll/shared_library.hpp>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <set>
#include <system_error>
#include <utility>

#include "common/safe_fs.hpp"
#include "common/sanitize.hpp"
#include "common/text.hpp"

namespace upparat::plugin {

const std::uint16_t kHostAbiMajor = UPPARAT_ABI_MAJOR;
const std::uint16_t kHostAbiMinor = UPPARAT_ABI_MINOR;

static_assert(kCapInstallFromUrl == UPPARAT_CAP_INSTALL_FROM_URL);
static_assert(kCapInstallNotInterruptible == UPPARAT_CAP_INSTALL_NOT_INTERRUPTIBLE);
static_assert(kCapInstallStream == UPPARAT_CAP_INSTALL_STREAM);

namespace {

namespace fs = std::filesystem;

// Sizes of the structs a plugin hands us, as each ABI minor laid them out. They never shrink: a
// plugin built against 1.N has at least the 1.N sizes, so every field of 1.N read below exists.
// (sizeof() would grow with later minors and wrongly refuse plugins built against older ones.)
constexpr std::uint32_t kDescriptorSizeV1_0 =
    offsetof(upparat_plugin_descriptor, functions) + sizeof(upparat_plugin_descriptor::functions);
constexpr std::uint32_t kFunctionsSizeV1_0 =
    offsetof(upparat_plugin_functions, ready) + sizeof(upparat_plugin_functions::ready);
// 1.1 appended upparat_plugin_functions::steps.
constexpr std::uint32_t kFunctionsSizeV1_1 =
    offsetof(upparat_plugin_functions, steps) + sizeof(upparat_plugin_functions::steps);

// struct_size, abi_major and abi_minor: the prefix every ABI major keeps (see plugin.h).
constexpr std::uint32_t kDescriptorPrefixSize =
    offsetof(upparat_plugin_descriptor, abi_minor) + sizeof(upparat_plugin_descriptor::abi_minor);

// Size of the text buffer of upparat_result (plugin.h promises at least 1024).
constexpr std::uint32_t kResultTextCapacity = 4096;

// The longest delay a plugin may ask for with RETRY_LATER (one day). A longer one is cut to
// this: the daemon's timers convert it to milliseconds and past the steady clock's now, which
// overflows (undefined behaviour) for values near INT64_MAX.
constexpr std::int64_t kMaxRetryAfterSeconds = 86400;

std::string abi_string(unsigned major, unsigned minor) {
  return std::to_string(major) + "." + std::to_string(minor);
}

const std::string& host_abi() {
  static const std::string text = abi_string(UPPARAT_ABI_MAJOR, UPPARAT_ABI_MINOR);
  return text;
}

// Boost.DLL reports a failed dlopen() as "<what> (dlerror system message: <reason>): <errc>".
// The reason is what a human needs ("invalid ELF header", "undefined symbol: foo").
std::string dlerror_reason(const std::string& what) {
  static constexpr std::string_view kMarker = "(dlerror system message: ";
  const auto begin = what.find(kMarker);
  if (begin == std::string::npos) {
    return what;
  }
  const auto start = begin + kMarker.size();
  const auto end = what.rfind(')');
  if (end == std::string::npos || end < start) {
    return what.substr(start);
  }
  return what.substr(start, end - start);
}

// The NUL-terminated text a plugin wrote into a result buffer, never past the buffer.
std::string_view written_text(const std::vector<char>& buffer) {
  return std::string_view(buffer.data(), ::strnlen(buffer.data(), buffer.size() - 1));
}

// What breaks plugin.h's rules in the raw text of a result buffer, or "" when nothing does.
std::string raw_text_defect(const std::vector<char>& buffer) {
  std::string defect;
  if (std::memchr(buffer.data(), '\0', buffer.size()) == nullptr) {
    defect = "the text fills its " + std::to_string(buffer.size()) +
             "-byte buffer without a terminating NUL (the host cut it)";
  }
  if (!is_valid_utf8(written_text(buffer))) {
    defect += std::string(defect.empty() ? "" : "; ") + "the text is not valid UTF-8";
  }
  return defect;
}

bool has_elf_magic(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, sizeof magic) && std::memcmp(magic,
                                                     "\x7F"
                                                     "ELF",
                                                     4) == 0;
}

// A library that passed every check of the descriptor.
struct Library {
  boost::dll::shared_library library;
  const upparat_plugin_descriptor* descriptor = nullptr;
  PluginInfo info;
};

// A plugin runs inside the daemon with the daemon's rights, so whoever can replace its file, or
// any folder on its way, can run code as the daemon. The rule of the daemon's own folders holds
// for the folder of the configured path and of the file it resolves to (through links): every
// folder from / owned by root or the daemon's user and writable by neither its group nor others
// (a root-owned sticky folder such as /tmp only on the way). The file itself: owned by root or
// the daemon's user, writable by neither its group nor others.
Status check_not_writable_by_others(const fs::path& path) {
  const uid_t uid = ::geteuid();
  std::error_code ec;
  const fs::path real = fs::canonical(path, ec);
  if (ec) {
    return fail("cannot resolve it: " + ec.message());
  }
  for (const fs::path& folder : {path.parent_path(), real.parent_path()}) {
    if (auto ok = check_owned_directory(folder, uid); !ok) {
      return ok;
    }
  }
  struct stat st {};
  if (::stat(real.c_str(), &st) != 0) {
    return fail(real.string() + ": " + std::strerror(errno));
  }
  if (st.st_uid != 0 && st.st_uid != uid) {
    return fail(real.string() + " belongs to uid " + std::to_string(st.st_uid) +
                ", not to root or to the daemon's user (uid " + std::to_string(uid) +
                "), so that user could change what the daemon runs: give it to root (chown)");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return fail(real.string() + " is writable by its group or others (mode " + mode +
                "), so another user could change what the daemon runs: run chmod go-w " +
                real.string());
  }
  return {};
}

Result<Library> open_library(const fs::path& configured) {
  const std::string where = "plugin " + configured.string();
  const auto error = [&](const std::string& what) { return fail(where + ": " + what); };

  if (configured.empty()) {
    return fail("plugin: no path configured");
  }
  std::error_code ec;
  // dlopen() searches the library path for a name without a slash: always pass a full path.
  const fs::path path = fs::absolute(configured, ec);
  if (ec) {
    return error(ec.message());
  }
  const auto status = fs::status(path, ec);
  if (status.type() == fs::file_type::not_found) {
    return error("file not found; check the plugin's path in the configuration");
  }
  if (ec) {
    return error("cannot access it: " + ec.message());
  }
  if (status.type() != fs::file_type::regular) {
    return error("not a regular file; the path must name the plugin's .so file");
  }
  if (auto ok = check_not_writable_by_others(path); !ok) {
    return error("refused: " + ok.error().message());
  }

  Library lib;
  try {
    // RTLD_NOW: an unresolved symbol fails here, not in the middle of a job. RTLD_LOCAL: the
    // plugin's symbols never bind to another plugin's. Never RTLD_DEEPBIND (sanitizers refuse).
    lib.library = boost::dll::shared_library(
        path, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
  } catch (const std::exception& e) {
    const std::string reason = dlerror_reason(e.what());
    if (!has_elf_magic(path)) {
      return error("not a shared object (the dynamic loader says: " + reason +
                   "); the path must name the plugin's .so file");
    }
    return error("the dynamic loader refused it: " + reason +
                 "; check that it is a shared object built for this system and that every "
                 "library and symbol it needs resolves (ldd -r " +
                 path.string() + ")");
  }

  upparat_plugin_entry_fn entry = nullptr;
  try {
    if (lib.library.has(UPPARAT_PLUGIN_ENTRY_SYMBOL)) {
      entry = &lib.library.get<const upparat_plugin_descriptor*(std::uint32_t, std::uint32_t)>(
          UPPARAT_PLUGIN_ENTRY_SYMBOL);
    }
  } catch (const std::exception& e) {
    return error(std::string("cannot look up " UPPARAT_PLUGIN_ENTRY_SYMBOL ": ") + e.what());
  }
  if (entry == nullptr) {
    return error("it does not export " UPPARAT_PLUGIN_ENTRY_SYMBOL
                 ", so it is not an Upparat plugin (a plugin defines it with the UPPARAT_PLUGIN "
                 "macro of upparat/plugin.hpp, or in C with UPPARAT_PLUGIN_EXPORT)");
  }

  const upparat_plugin_descriptor* d = nullptr;
  try {
    d = entry(UPPARAT_ABI_MAJOR, UPPARAT_ABI_MINOR);
  } catch (...) {
    return error("its entry point threw an exception (a bug in the plugin)");
  }
  if (d == nullptr) {
    return error("it refused to load into this daemon, which speaks ABI " + host_abi() +
                 " (its entry point returned no descriptor): rebuild the plugin against "
                 "Upparat SDK " +
                 std::to_string(UPPARAT_ABI_MAJOR) + ".x");
  }
  if (d->struct_size < kDescriptorPrefixSize) {
    return error("its descriptor is " + std::to_string(d->struct_size) +
                 " bytes, too small to hold an ABI version (a bug in the plugin)");
  }
  const std::string plugin_abi = abi_string(d->abi_major, d->abi_minor);
  if (d->abi_major != UPPARAT_ABI_MAJOR) {
    return error("built for ABI " + plugin_abi + ", this daemon speaks ABI " + host_abi() +
                 ": rebuild the plugin against Upparat SDK " + std::to_string(UPPARAT_ABI_MAJOR) +
                 ".x");
  }
  if (d->abi_minor > UPPARAT_ABI_MINOR) {
    return error("built for ABI " + plugin_abi + ", this daemon speaks ABI " + host_abi() +
                 ", which is older: rebuild the plugin against an Upparat SDK " +
                 std::to_string(UPPARAT_ABI_MAJOR) + ".x that speaks ABI " + host_abi() +
                 " or older, or update the daemon");
  }
  if (d->struct_size < kDescriptorSizeV1_0) {
    return error("its descriptor is " + std::to_string(d->struct_size) + " bytes, ABI " +
                 plugin_abi + " needs at least " + std::to_string(kDescriptorSizeV1_0) +
                 " (a bug in the plugin: set struct_size to sizeof(upparat_plugin_descriptor))");
  }
  if (d->name == nullptr || d->name[0] == '\0') {
    return error("its descriptor has no name (a bug in the plugin)");
  }
  if (d->version == nullptr) {
    return error("its descriptor has no version (a bug in the plugin)");
  }
  if (d->functions == nullptr) {
    return error("its descriptor has no function table (a bug in the plugin)");
  }
  const upparat_plugin_functions* f = d->functions;
  const std::uint32_t functions_size = d->abi_minor >= 1 ? kFunctionsSizeV1_1 : kFunctionsSizeV1_0;
  if (f->struct_size < functions_size) {
    return error("its function table is " + std::to_string(f->struct_size) + " bytes, ABI " +
                 plugin_abi + " needs at least " + std::to_string(functions_size) +
                 " (a bug in the plugin: set struct_size to sizeof(upparat_plugin_functions))");
  }
  if (f->create == nullptr || f->destroy == nullptr) {
    return error(std::string("its function table has no ") +
                 (f->create == nullptr ? "create" : "destroy") + " function (a bug in the plugin)");
  }

  lib.descriptor = d;
  PluginInfo& info = lib.info;
  info.path = path;
  info.name = d->name;
  info.version = d->version;
  info.license = d->license != nullptr ? d->license : "";
  info.description = d->description != nullptr ? d->description : "";
  info.abi_major = d->abi_major;
  info.abi_minor = d->abi_minor;
  info.capabilities = d->capabilities;
  if (d->abi_minor < 2) {
    // The bit did not exist in the plugin's ABI: a stray bit must not make the host stream.
    info.capabilities &= ~UPPARAT_CAP_INSTALL_STREAM;
  }
  const PerStep<upparat_step_fn> steps = {f->version, f->download, f->install, f->restart,
                                          f->ready};
  for (Step step : kSteps) {
    info.provides[index(step)] = steps[index(step)] != nullptr;
  }
  return lib;
}

// The instance's own list of the steps it serves (ABI 1.1), or nullptr: a plugin built for ABI
// 1.0 has no such field, and a NULL one means "every step with a function".
using StepsFunction = std::uint32_t (*)(upparat_instance*);

StepsFunction steps_function(const Library& library) {
  if (library.descriptor->abi_minor < 1) {
    return nullptr;
  }
  return library.descriptor->functions->steps;
}

std::uint32_t provided_steps(const PluginInfo& info) {
  std::uint32_t mask = 0;
  for (Step step : kSteps) {
    if (info.provides[index(step)]) {
      mask |= step_bit(step);
    }
  }
  return mask;
}

spdlog::level::level_enum to_spdlog_level(std::int32_t level) {
  switch (level) {
    case UPPARAT_LOG_TRACE:
      return spdlog::level::trace;
    case UPPARAT_LOG_DEBUG:
      return spdlog::level::debug;
    case UPPARAT_LOG_INFO:
      return spdlog::level::info;
    case UPPARAT_LOG_WARN:
      return spdlog::level::warn;
    default:
      return level < UPPARAT_LOG_TRACE ? spdlog::level::trace : spdlog::level::err;
  }
}

// True when a progress line holds nothing to show (only spaces and control characters).
bool is_blank(std::string_view line) {
  return std::all_of(line.begin(), line.end(), [](char c) {
    const auto byte = static_cast<unsigned char>(c);
    return byte <= 0x20 || byte == 0x7F;
  });
}

// The StepResult of what a step returned in `result`, its text being `written`.
StepResult answer_of(const upparat_result& result, std::string_view written, Step step,
                     const std::string& plugin_name) {
  switch (result.code) {
    case UPPARAT_OK:
      return {Outcome::Ok, std::string(trim(written)), std::nullopt};
    case UPPARAT_RETRY_LATER: {
      // Any negative delay (not only -1) means the configured retry_interval: treating it as 0
      // would let a buggy plugin spend all its retries at once.
      std::optional<std::chrono::seconds> delay;
      if (result.retry_after_seconds > kMaxRetryAfterSeconds) {
        spdlog::warn(
            "plugin {} asked to retry its {} step after {} s: waiting {} s, the longest "
            "delay a plugin may ask for",
            plugin_name, to_string(step), result.retry_after_seconds, kMaxRetryAfterSeconds);
        delay = std::chrono::seconds(kMaxRetryAfterSeconds);
      } else if (result.retry_after_seconds >= 0) {
        delay = std::chrono::seconds(result.retry_after_seconds);
      }
      return {Outcome::RetryLater, sanitize_status_detail(written), delay};
    }
    case UPPARAT_FAILED:
      return {Outcome::Failed, sanitize_status_detail(written), std::nullopt};
    case UPPARAT_NOT_SUPPORTED:
      return {Outcome::NotSupported, sanitize_status_detail(written), std::nullopt};
    default:
      return {Outcome::Failed, "plugin returned invalid result code " + std::to_string(result.code),
              std::nullopt};
  }
}

}  // namespace

std::vector<std::string> capability_names(std::uint64_t capabilities) {
  std::vector<std::string> names;
  for (unsigned bit = 0; bit < 64; ++bit) {
    const std::uint64_t mask = std::uint64_t{1} << bit;
    if ((capabilities & mask) == 0) {
      continue;
    }
    if (mask == UPPARAT_CAP_INSTALL_FROM_URL) {
      names.emplace_back("INSTALL_FROM_URL");
    } else if (mask == UPPARAT_CAP_INSTALL_NOT_INTERRUPTIBLE) {
      names.emplace_back("INSTALL_NOT_INTERRUPTIBLE");
    } else if (mask == UPPARAT_CAP_INSTALL_STREAM) {
      names.emplace_back("INSTALL_STREAM");
    } else {
      char hex[24];
      std::snprintf(hex, sizeof hex, "0x%llx", static_cast<unsigned long long>(mask));
      names.emplace_back(hex);
    }
  }
  return names;
}

// The bridge between the C services of upparat_step_services and the StepServices of the step
// that runs. It lives as long as the instance, so a plugin thread that calls a service after
// its step returned finds `services` null and is ignored instead of touching freed memory.
struct StepBridge {
  std::mutex mutex;
  const StepServices* services = nullptr;  // guarded by mutex; set while a step runs
  std::set<std::string> arena;             // guarded by mutex; strings returned by store_get

  static StepBridge& from(void* data) { return *static_cast<StepBridge*>(data); }

  static void progress(void* data, const char* line, std::int32_t percent) {
    try {
      StepBridge& self = from(data);
      const std::string text =
          line == nullptr || is_blank(line) ? std::string() : sanitize_status_detail(line);
      const int clamped = percent < 0 ? -1 : std::min<int>(percent, 100);
      if (text.empty() && clamped < 0) {
        return;
      }
      const std::lock_guard<std::mutex> lock(self.mutex);
      if (self.services != nullptr && self.services->progress) {
        self.services->progress(text, clamped);
      }
    } catch (const std::exception& e) {
      spdlog::error("plugin progress report failed: {}", e.what());
    } catch (...) {
      spdlog::error("plugin progress report failed");
    }
  }

  static std::int32_t should_stop(void* data) {
    StepBridge& self = from(data);
    const std::lock_guard<std::mutex> lock(self.mutex);
    return self.services == nullptr || self.services->stop->requested() ? 1 : 0;
  }

  static const char* store_get(void* data, const char* key) {
    if (key == nullptr) {
      return nullptr;
    }
    try {
      StepBridge& self = from(data);
      const std::lock_guard<std::mutex> lock(self.mutex);
      if (self.services == nullptr) {
        return nullptr;
      }
      auto value = self.services->store->get(key);
      if (!value) {
        return nullptr;
      }
      // A set keeps its strings in place, and one copy of each distinct value is enough.
      return self.arena.insert(std::move(*value)).first->c_str();
    } catch (...) {
      return nullptr;
    }
  }

  static std::int32_t store_set(void* data, const char* key, const char* value) {
    if (key == nullptr) {
      return -1;
    }
    try {
      StepBridge& self = from(data);
      const std::lock_guard<std::mutex> lock(self.mutex);
      if (self.services == nullptr) {
        return -1;
      }
      std::optional<std::string> copy;
      if (value != nullptr) {
        copy.emplace(value);
      }
      return self.services->store->set(key, std::move(copy)) ? 0 : -1;
    } catch (...) {
      return -1;
    }
  }

  static std::int32_t stream_end(void* data, char* reason, std::uint32_t capacity) {
    StreamEnd end;
    end.state = StreamState::Failed;
    end.reason = "the step has no stream";
    try {
      StepBridge& self = from(data);
      const std::lock_guard<std::mutex> lock(self.mutex);
      if (self.services != nullptr && self.services->stream_end) {
        end = self.services->stream_end();
      }
    } catch (...) {
      end = StreamEnd{StreamState::Failed, "internal error of the host"};
    }
    if (reason != nullptr && capacity > 0) {
      const std::string text = end.state == StreamState::Failed ? end.reason : std::string();
      std::snprintf(reason, capacity, "%s", text.c_str());
    }
    switch (end.state) {
      case StreamState::Running:
        return UPPARAT_STREAM_RUNNING;
      case StreamState::Complete:
        return UPPARAT_STREAM_COMPLETE;
      case StreamState::Failed:
        break;
    }
    return UPPARAT_STREAM_FAILED;
  }
};

struct LoadedPlugin::Impl {
  // Declared first, so destroyed last: the library outlives everything that points into it.
  Library library;
  std::string log_name;
  upparat_host host{};
  upparat_instance* instance = nullptr;
  std::uint32_t served = 0;  // kStep* bits: the steps the instance serves, fixed after create
  std::mutex step_mutex;     // steps of one instance never run concurrently
  StepBridge bridge;

  ~Impl() {
    if (instance != nullptr) {
      // The instance must be gone before its code is unmapped (when `library` is destroyed).
      library.descriptor->functions->destroy(instance);
    }
  }

  static void log(void* data, std::int32_t level, const char* message) {
    if (message == nullptr) {
      return;
    }
    try {
      const auto& self = *static_cast<const Impl*>(data);
      spdlog::log(to_spdlog_level(level), "[plugin {}] {}", self.log_name, message);
    } catch (...) {
      // Logging must never take the plugin down.
    }
  }
};

LoadedPlugin::LoadedPlugin(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

LoadedPlugin::~LoadedPlugin() = default;

Result<PluginInfo> LoadedPlugin::inspect(const fs::path& path) {
  auto library = open_library(path);
  if (!library) {
    return fail(library.error());
  }
  return library->info;
}

Result<std::unique_ptr<LoadedPlugin>> LoadedPlugin::load(
    const fs::path& path, const std::map<std::string, std::string>& config) {
  auto library = open_library(path);
  if (!library) {
    return fail(library.error());
  }
  auto impl = std::make_unique<Impl>();
  impl->library = std::move(*library);
  const PluginInfo& info = impl->library.info;
  impl->log_name = info.name;
  const std::string where = "plugin " + path.string() + " (" + info.name + " " + info.version + ")";

  // std::map iterates in key order: the entries reach the plugin sorted, as plugin.h promises.
  std::vector<upparat_config_entry> entries;
  entries.reserve(config.size());
  for (const auto& [key, value] : config) {
    if (key.empty() || key.find('\0') != std::string::npos ||
        value.find('\0') != std::string::npos) {
      return fail(where + ": configuration key '" + sanitize_status_detail(key) +
                  "' is empty or contains a NUL character");
    }
    entries.push_back(upparat_config_entry{key.c_str(), value.c_str()});
  }
  const upparat_config plugin_config{sizeof(upparat_config),
                                     static_cast<std::uint32_t>(entries.size()), entries.data()};
  impl->host = upparat_host{sizeof(upparat_host), 0, impl.get(), &Impl::log};

  std::vector<char> text(kResultTextCapacity, '\0');
  upparat_result result{
      sizeof(upparat_result), UPPARAT_FAILED, -1, text.data(), kResultTextCapacity, 0};
  upparat_instance* instance = nullptr;
  try {
    impl->library.descriptor->functions->create(&impl->host, &plugin_config, &instance, &result);
  } catch (...) {
    return fail(where +
                ": create failed: an exception crossed the plugin boundary (a bug in "
                "the plugin)");
  }
  if (result.code == UPPARAT_OK && instance != nullptr) {
    impl->instance = instance;  // from here on ~Impl destroys it
    impl->served = provided_steps(info);
    if (auto steps = steps_function(impl->library); steps != nullptr) {
      try {
        impl->served &= steps(instance);
      } catch (...) {
        return fail(where +
                    ": its steps function threw an exception (a bug in the plugin: it must not "
                    "throw)");
      }
    }
    spdlog::debug("loaded {} with ABI {}.{}", where, info.abi_major, info.abi_minor);
    return std::unique_ptr<LoadedPlugin>(new LoadedPlugin(std::move(impl)));
  }
  // On failure the plugin owns nothing we could destroy (plugin.h: *instance stays NULL).
  if (result.code == UPPARAT_OK) {
    return fail(where +
                ": create failed: it returned OK without an instance (a bug in the plugin)");
  }
  const std::string_view reason = written_text(text);
  if (result.code != UPPARAT_FAILED) {
    return fail(where + ": create failed with result code " + std::to_string(result.code) +
                (reason.empty() ? std::string() : ": " + sanitize_status_detail(reason)));
  }
  return fail(
      where + ": create failed: " +
      (reason.empty() ? std::string("the plugin gave no reason") : sanitize_status_detail(reason)));
}

const PluginInfo& LoadedPlugin::info() const {
  return impl_->library.info;
}

bool LoadedPlugin::has_capability(std::uint64_t bit) const {
  return (impl_->library.info.capabilities & bit) == bit;
}

bool LoadedPlugin::serves(Step step) const {
  return (impl_->served & step_bit(step)) != 0;
}

StepResult LoadedPlugin::run(Step step, const JobContext& job, const StepServices& services) {
  const std::lock_guard<std::mutex> step_lock(impl_->step_mutex);
  if (services.stop == nullptr || services.store == nullptr) {
    return {Outcome::Failed, "host bug: a step needs a stop signal and a store", std::nullopt};
  }
  const upparat_plugin_functions* f = impl_->library.descriptor->functions;
  upparat_step_fn function = nullptr;
  switch (step) {
    case Step::Version:
      function = f->version;
      break;
    case Step::Download:
      function = f->download;
      break;
    case Step::Install:
      function = f->install;
      break;
    case Step::Restart:
      function = f->restart;
      break;
    case Step::Ready:
      function = f->ready;
      break;
  }
  if (function == nullptr) {
    return {Outcome::NotSupported,
            sanitize_status_detail("plugin " + impl_->library.info.name + " does not provide the " +
                                   std::string(to_string(step)) + " step"),
            std::nullopt};
  }
  if (!serves(step)) {
    // plugin.h promises that a step the instance does not serve is never called.
    return {Outcome::NotSupported,
            sanitize_status_detail("plugin " + impl_->library.info.name + " does not serve the " +
                                   std::string(to_string(step)) + " step"),
            std::nullopt};
  }

  const std::string file_path = job.file_path ? job.file_path->string() : std::string();
  upparat_job_context context{};
  context.struct_size = sizeof(upparat_job_context);
  context.force = job.force ? 1 : 0;
  context.job_id = job.job_id.c_str();
  context.execution_number = job.execution_number;
  context.version = job.version.c_str();
  context.meta = job.meta.c_str();
  context.url = job.url.c_str();
  context.sha256 = job.sha256 ? job.sha256->c_str() : nullptr;
  context.size = job.size ? *job.size : -1;
  context.document_json = job.document_json.c_str();
  context.file_path = job.file_path ? file_path.c_str() : nullptr;
  context.seconds_since_first = job.seconds_since_first;
  context.retry_count = job.retry_count;
  context.signer = job.signer.c_str();

  StepBridge& bridge = impl_->bridge;
  const upparat_step_services c_services{sizeof(upparat_step_services),
                                         0,
                                         &bridge,
                                         &StepBridge::progress,
                                         &StepBridge::should_stop,
                                         services.stop->fd(),
                                         0,
                                         &StepBridge::store_get,
                                         &StepBridge::store_set,
                                         services.stream_fd,
                                         0,
                                         services.stream_end ? &StepBridge::stream_end : nullptr};
  std::vector<char> text(kResultTextCapacity, '\0');
  upparat_result result{
      sizeof(upparat_result), UPPARAT_FAILED, -1, text.data(), kResultTextCapacity, 0};

  {
    const std::lock_guard<std::mutex> lock(bridge.mutex);
    bridge.services = &services;
  }
  bool threw = false;
  try {
    function(impl_->instance, &context, &c_services, &result);
  } catch (...) {
    threw = true;
  }
  {
    // Waits for service calls still running on plugin threads; later ones are ignored.
    const std::lock_guard<std::mutex> lock(bridge.mutex);
    bridge.services = nullptr;
    bridge.arena.clear();
  }

  if (threw) {
    return {Outcome::Failed,
            "plugin " + sanitize_status_detail(impl_->library.info.name) +
                " let an exception escape its " + std::string(to_string(step)) + " step",
            std::nullopt};
  }
  if (services.text_defect != nullptr) {
    *services.text_defect = raw_text_defect(text);
  }
  return answer_of(result, written_text(text), step, impl_->library.info.name);
}

}  // namespace upparat::plugin
