/**
 * @file upparat/plugin.hpp
 * @brief Header-only C++ helper to write an Upparat plugin as a class.
 *
 * Derive from upparat::sdk::Plugin, override the steps you support, and write one macro:
 * @code
 * #include <upparat/plugin.hpp>
 *
 * class MyPlugin : public upparat::sdk::Plugin {
 *  public:
 *   explicit MyPlugin(const upparat::sdk::Config& config) { ... throw on bad config ... }
 *   upparat::sdk::StepResult version(const upparat::sdk::Job& job,
 *                                    upparat::sdk::StepContext& ctx) override {
 *     return upparat::sdk::StepResult::ok("1.2.3");
 *   }
 * };
 * UPPARAT_PLUGIN(MyPlugin, "my-plugin", "1.0.0", "Apache-2.0", "Installs with my tool", 0)
 * @endcode
 *
 * The plugin serves the steps its class overrides (here: version). When the configuration
 * decides which steps exist, declare them with a const member function `steps()` returning
 * UPPARAT_STEP_* bits; the macro finds it and the host asks it once, right after the
 * constructor:
 * @code
 *   std::uint32_t steps() const {
 *     return UPPARAT_STEP_VERSION | (restart_command_ ? UPPARAT_STEP_RESTART : 0);
 *   }
 * @endcode
 * A step the plugin does not serve is a missing hook: the host neither announces nor runs it.
 *
 * The macro defines the C entry point of upparat/plugin.h. Every exception thrown by the
 * constructor or a step is caught at the boundary and becomes UPPARAT_FAILED with the
 * exception's message, so no exception ever reaches the daemon. Only plain C types cross the
 * boundary, so the plugin may be built with another compiler or standard library version.
 */
#pragma once

#include <upparat/plugin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace upparat::sdk {

/// A plugin instance's configuration: its `[plugins.NAME]` table, keys dotted for nested tables.
using Config = std::map<std::string, std::string>;

/// A step's outcome: see UPPARAT_OK, UPPARAT_RETRY_LATER, UPPARAT_FAILED, UPPARAT_NOT_SUPPORTED.
class StepResult {
 public:
  /// Success. For `version`, @p text is the installed version.
  static StepResult ok(std::string text = {}) { return {UPPARAT_OK, std::move(text), -1}; }
  /// Run the step again later: after @p seconds (the host waits at most 86400), or the
  /// configured retry_interval when < 0.
  static StepResult retry_later(std::string reason = {}, int64_t seconds = -1) {
    return {UPPARAT_RETRY_LATER, std::move(reason), seconds};
  }
  /// The step failed; @p reason is reported to the cloud (sanitised by the host).
  static StepResult failed(std::string reason) { return {UPPARAT_FAILED, std::move(reason), -1}; }
  /// This plugin does not do this step.
  static StepResult not_supported() { return {UPPARAT_NOT_SUPPORTED, {}, -1}; }

  int32_t code() const { return code_; }
  const std::string& text() const { return text_; }
  int64_t retry_after_seconds() const { return retry_after_seconds_; }

 private:
  StepResult(int32_t code, std::string text, int64_t retry_after)
      : code_(code), text_(std::move(text)), retry_after_seconds_(retry_after) {}
  int32_t code_;
  std::string text_;
  int64_t retry_after_seconds_;
};

/// The job a step works on (a copy of upparat_job_context; safe to keep).
struct Job {
  std::string id;                     ///< Job id.
  int64_t execution_number = 0;       ///< Execution number.
  std::string version;                ///< The version to install.
  std::string meta;                   ///< The document's `meta`, "" when absent.
  std::string url;                    ///< Download URL: never log its query string.
  std::optional<std::string> sha256;  ///< Expected SHA-256 (hex), when the document has it.
  std::optional<int64_t> size;        ///< Expected size in bytes, when the document has it.
  std::string document_json;          ///< The whole job document.
  std::optional<std::string> file;    ///< Downloaded file (install from file only).
  bool force = false;                 ///< The document's `force`.
  int64_t seconds_since_first = 0;    ///< Seconds since this step was first tried.
  int32_t retry_count = 0;            ///< 0, then 1, 2, ... after RETRY_LATER.
  /// ABI 1.3: the signing certificate that verified a signed job's file, "" when unsigned
  /// (or the host is older than 1.3).
  std::string signer;
};

/// Host services during one step (valid until the step returns; usable from any thread).
class StepContext {
 public:
  explicit StepContext(const upparat_step_services* services) : services_(services) {}

  /// Reports a progress line and/or a percentage (0..100, or -1 when unknown).
  void progress(const std::string& line, int32_t percent = -1) const {
    services_->progress(services_->step_data, line.empty() ? nullptr : line.c_str(), percent);
  }
  /// True once the host wants the step to end (cancel, deadline, shutdown).
  bool should_stop() const { return services_->should_stop(services_->step_data) != 0; }
  /// A descriptor that becomes readable on stop, for poll(). Do not read or close it.
  int stop_fd() const { return services_->stop_fd; }
  /// Reads the durable per-job store.
  std::optional<std::string> get(const std::string& key) const {
    const char* value = services_->store_get(services_->step_data, key.c_str());
    return value ? std::optional<std::string>(value) : std::nullopt;
  }
  /// Writes (or, with std::nullopt, removes) a key of the durable per-job store.
  bool set(const std::string& key, const std::optional<std::string>& value) const {
    return services_->store_set(services_->step_data, key.c_str(),
                                value ? value->c_str() : nullptr) == 0;
  }
  /// ABI 1.2: the stream of a streamed install (UPPARAT_CAP_INSTALL_STREAM), or -1 when the
  /// step has none (or the host is older). Read it to its end of file, then ask stream_end().
  int stream_fd() const { return has_stream_services() ? services_->stream_fd : -1; }
  /// ABI 1.2: UPPARAT_STREAM_RUNNING, UPPARAT_STREAM_COMPLETE or UPPARAT_STREAM_FAILED (then
  /// with the host's reason in `*reason` when given). FAILED when the step has no stream.
  int32_t stream_end(std::string* reason = nullptr) const {
    char text[1024] = {0};
    int32_t end = UPPARAT_STREAM_FAILED;
    if (has_stream_services() && services_->stream_end != nullptr) {
      end = services_->stream_end(services_->step_data, text, sizeof text);
    } else {
      std::snprintf(text, sizeof text, "%s", "this step has no stream");
    }
    if (reason != nullptr) {
      *reason = text;
    }
    return end;
  }

 private:
  bool has_stream_services() const {
    return services_->struct_size >=
           offsetof(upparat_step_services, stream_end) + sizeof(services_->stream_end);
  }
  const upparat_step_services* services_;
};

/// Logging to the daemon's log, valid for the instance's whole life, from any thread.
class Logger {
 public:
  explicit Logger(const upparat_host* host) : host_(host) {}
  void log(int32_t level, const std::string& message) const {
    if (host_ != nullptr && host_->log != nullptr) {
      host_->log(host_->host_data, level, message.c_str());
    }
  }
  void debug(const std::string& message) const { log(UPPARAT_LOG_DEBUG, message); }
  void info(const std::string& message) const { log(UPPARAT_LOG_INFO, message); }
  void warn(const std::string& message) const { log(UPPARAT_LOG_WARN, message); }
  void error(const std::string& message) const { log(UPPARAT_LOG_ERROR, message); }

 private:
  const upparat_host* host_;
};

/// Base class of a C++ plugin. Steps not overridden are not served (and answer NOT_SUPPORTED).
/// The derived class's constructor takes `(const Config&)` or `(const Config&, const Logger&)`
/// and throws to refuse a configuration. Override the steps publicly. An optional
/// `std::uint32_t steps() const` (UPPARAT_STEP_* bits) narrows the served steps per instance.
/// The destructor must join every thread the plugin started.
class Plugin {
 public:
  virtual ~Plugin() = default;
  virtual StepResult version(const Job&, StepContext&) { return StepResult::not_supported(); }
  virtual StepResult download(const Job&, StepContext&) { return StepResult::not_supported(); }
  virtual StepResult install(const Job&, StepContext&) { return StepResult::not_supported(); }
  virtual StepResult restart(const Job&, StepContext&) { return StepResult::not_supported(); }
  virtual StepResult ready(const Job&, StepContext&) { return StepResult::not_supported(); }
};

namespace detail {

inline void write_result(upparat_result* result, int32_t code, std::string_view text,
                         int64_t retry_after) {
  result->code = code;
  result->retry_after_seconds = retry_after;
  if (result->text != nullptr && result->text_capacity > 0) {
    std::size_t length = std::min<std::size_t>(text.size(), result->text_capacity - 1);
    // Never cut inside a UTF-8 sequence.
    while (length > 0 && length < text.size() &&
           (static_cast<unsigned char>(text[length]) & 0xC0) == 0x80) {
      --length;
    }
    std::memcpy(result->text, text.data(), length);
    result->text[length] = '\0';
  }
}

inline Job make_job(const upparat_job_context* c) {
  Job job;
  job.id = c->job_id ? c->job_id : "";
  job.execution_number = c->execution_number;
  job.version = c->version ? c->version : "";
  job.meta = c->meta ? c->meta : "";
  job.url = c->url ? c->url : "";
  if (c->sha256 != nullptr) {
    job.sha256 = c->sha256;
  }
  if (c->size >= 0) {
    job.size = c->size;
  }
  job.document_json = c->document_json ? c->document_json : "{}";
  if (c->file_path != nullptr) {
    job.file = c->file_path;
  }
  job.force = c->force != 0;
  job.seconds_since_first = c->seconds_since_first;
  job.retry_count = c->retry_count;
  if (c->struct_size >= offsetof(upparat_job_context, signer) + sizeof(c->signer) &&
      c->signer != nullptr) {
    job.signer = c->signer;
  }
  return job;
}

struct Instance {
  Logger logger;
  Plugin* plugin;
};

using StepMember = StepResult (Plugin::*)(const Job&, StepContext&);

/// True when `member` is Plugin's own (not overridden): `&T::install` names the override's
/// class, or Plugin when no class between overrides it.
template <class C>
constexpr bool is_base_step(StepResult (C::*)(const Job&, StepContext&)) {
  return std::is_same_v<C, Plugin>;
}

/// The steps class T overrides, as UPPARAT_STEP_* bits.
template <class T>
constexpr std::uint32_t overridden_steps() {
  return (is_base_step(&T::version) ? 0u : UPPARAT_STEP_VERSION) |
         (is_base_step(&T::download) ? 0u : UPPARAT_STEP_DOWNLOAD) |
         (is_base_step(&T::install) ? 0u : UPPARAT_STEP_INSTALL) |
         (is_base_step(&T::restart) ? 0u : UPPARAT_STEP_RESTART) |
         (is_base_step(&T::ready) ? 0u : UPPARAT_STEP_READY);
}

/// Whether class T declares `steps() const`.
template <class T, class = void>
struct declares_steps : std::false_type {};
template <class T>
struct declares_steps<T, std::void_t<decltype(std::declval<const T&>().steps())>> : std::true_type {
};

template <class T>
T* construct(const Config& config, const Logger& logger) {
  if constexpr (std::is_constructible_v<T, const Config&, const Logger&>) {
    return new T(config, logger);
  } else {
    return new T(config);
  }
}

template <class T>
void create(const upparat_host* host, const upparat_config* config, upparat_instance** out,
            upparat_result* result) {
  *out = nullptr;
  try {
    Config values;
    for (uint32_t i = 0; config != nullptr && i < config->count; ++i) {
      values[config->entries[i].key] = config->entries[i].value ? config->entries[i].value : "";
    }
    auto* instance = new Instance{Logger(host), nullptr};
    try {
      instance->plugin = construct<T>(values, instance->logger);
    } catch (...) {
      delete instance;
      throw;
    }
    *out = reinterpret_cast<upparat_instance*>(instance);
    write_result(result, UPPARAT_OK, "", -1);
  } catch (const std::exception& e) {
    write_result(result, UPPARAT_FAILED, e.what(), -1);
  } catch (...) {
    write_result(result, UPPARAT_FAILED, "unknown exception in plugin constructor", -1);
  }
}

inline void destroy(upparat_instance* instance) {
  auto* self = reinterpret_cast<Instance*>(instance);
  try {
    delete self->plugin;
  } catch (...) {
    // A destructor that throws would terminate the daemon: swallow it at the boundary.
  }
  delete self;
}

template <class T>
std::uint32_t steps(upparat_instance* instance) {
  if constexpr (declares_steps<T>::value) {
    auto* self = reinterpret_cast<Instance*>(instance);
    try {
      // A step the class does not override cannot be served, whatever steps() says.
      return static_cast<std::uint32_t>(static_cast<const T&>(*self->plugin).steps()) &
             overridden_steps<T>();
    } catch (const std::exception& e) {
      self->logger.error(std::string("steps() threw: ") + e.what() +
                         "; serving every step the plugin implements");
    } catch (...) {
      self->logger.error("steps() threw; serving every step the plugin implements");
    }
  } else {
    (void)instance;
  }
  return overridden_steps<T>();
}

template <StepMember Step>
void step(upparat_instance* instance, const upparat_job_context* job,
          const upparat_step_services* services, upparat_result* result) {
  try {
    StepContext context(services);
    const StepResult r =
        (reinterpret_cast<Instance*>(instance)->plugin->*Step)(make_job(job), context);
    write_result(result, r.code(), r.text(), r.retry_after_seconds());
  } catch (const std::exception& e) {
    write_result(result, UPPARAT_FAILED, e.what(), -1);
  } catch (...) {
    write_result(result, UPPARAT_FAILED, "unknown exception in plugin step", -1);
  }
}

template <class T>
const upparat_plugin_functions* functions() {
  static_assert(std::is_base_of_v<Plugin, T>, "a plugin class derives from upparat::sdk::Plugin");
  static const upparat_plugin_functions table = {
      sizeof(upparat_plugin_functions),
      0,
      &create<T>,
      &destroy,
      &step<&Plugin::version>,
      &step<&Plugin::download>,
      &step<&Plugin::install>,
      &step<&Plugin::restart>,
      &step<&Plugin::ready>,
      &steps<T>,
  };
  return &table;
}

}  // namespace detail
}  // namespace upparat::sdk

/**
 * Defines the plugin's C entry point for class @p CLASS.
 * @param CLASS        A class derived from upparat::sdk::Plugin.
 * @param NAME         Short plugin name (string literal).
 * @param VERSION      Plugin version (string literal).
 * @param LICENSE      SPDX license expression (string literal).
 * @param DESCRIPTION  One line for humans (string literal).
 * @param CAPABILITIES UPPARAT_CAP_* bits, or 0.
 */
#define UPPARAT_PLUGIN(CLASS, NAME, VERSION, LICENSE, DESCRIPTION, CAPABILITIES)          \
  extern "C" UPPARAT_PLUGIN_EXPORT const upparat_plugin_descriptor* upparat_plugin_entry( \
      uint32_t /*host_abi_major*/, uint32_t /*host_abi_minor*/) {                         \
    static const upparat_plugin_descriptor descriptor = {                                 \
        sizeof(upparat_plugin_descriptor),                                                \
        UPPARAT_ABI_MAJOR,                                                                \
        UPPARAT_ABI_MINOR,                                                                \
        NAME,                                                                             \
        VERSION,                                                                          \
        LICENSE,                                                                          \
        DESCRIPTION,                                                                      \
        (CAPABILITIES),                                                                   \
        ::upparat::sdk::detail::functions<CLASS>(),                                       \
    };                                                                                    \
    return &descriptor;                                                                   \
  }
