/**
 * @file upparat/testing.hpp
 * @brief Header-only kit to unit-test an Upparat plugin: loads the plugin's shared object the
 * way the daemon does (dlopen, upparat_plugin_entry, create), runs its steps on a job you
 * build, and records what it reported. Works with any test framework (GoogleTest in the SDK's
 * template); throws std::runtime_error when the plugin cannot be loaded or created.
 *
 * @code
 * upparat::testing::LoadedPlugin plugin(MY_PLUGIN_PATH, {{"target", dir + "/slot"}});
 * upparat::testing::JobSpec job;
 * job.version = "2.0.0";
 * job.file = dir + "/image.bin";
 * auto out = plugin.run(upparat::Step::Install, job);
 * EXPECT_EQ(out.code, UPPARAT_OK) << out.text;
 * @endcode
 *
 * CMake: find_package(UpparatPluginSdk 1 REQUIRED COMPONENTS testing) and link
 * Upparat::plugin-testing.
 */
#pragma once

#include <dlfcn.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "upparat/plugin.h"
#include "upparat/step.hpp"

namespace upparat::testing {

/// The daemon's limits of the job's key/value store (see store_set in upparat/plugin.h).
inline constexpr std::size_t kStoreMaxKeys = 64;
inline constexpr std::size_t kStoreMaxValueBytes = 4096;

/// A key the daemon's store accepts: 1-128 characters of [A-Za-z0-9._-].
inline bool valid_store_key(const std::string& key) {
  if (key.empty() || key.size() > 128) {
    return false;
  }
  for (const char c : key) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      return false;
    }
  }
  return true;
}

/// Well-formed UTF-8 (no overlong forms, surrogates or values above U+10FFFF).
inline bool valid_utf8(const std::string& text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[i + k]); };
    const unsigned char lead = byte(0);
    std::size_t length = 0;
    uint32_t code_point = 0;
    uint32_t min = 0;
    if (lead < 0x80) {
      ++i;
      continue;
    }
    if ((lead & 0xE0) == 0xC0) {
      length = 2, min = 0x80, code_point = lead & 0x1F;
    } else if ((lead & 0xF0) == 0xE0) {
      length = 3, min = 0x800, code_point = lead & 0x0F;
    } else if ((lead & 0xF8) == 0xF0) {
      length = 4, min = 0x10000, code_point = lead & 0x07;
    } else {
      return false;
    }
    if (i + length > text.size()) {
      return false;
    }
    for (std::size_t k = 1; k < length; ++k) {
      if ((byte(k) & 0xC0) != 0x80) {
        return false;
      }
      code_point = (code_point << 6) | (byte(k) & 0x3F);
    }
    if (code_point < min || code_point > 0x10FFFF ||
        (code_point >= 0xD800 && code_point <= 0xDFFF)) {
      return false;
    }
    i += length;
  }
  return true;
}

/// The job a step runs on. Defaults make a valid job; set what your plugin reads.
struct JobSpec {
  std::string id = "upparat_test_1";
  int64_t execution_number = 1;
  std::string version = "1.0.0";
  std::string meta;
  std::string url = "https://example.invalid/image.bin";
  std::optional<std::string> sha256;
  std::optional<int64_t> size;
  std::string document_json = "{}";
  std::optional<std::string> file;  ///< the downloaded file (install)
  bool force = false;
  int64_t seconds_since_first = 0;
  int32_t retry_count = 0;
};

/// What one step answered and reported.
struct StepOutcome {
  int32_t code = UPPARAT_FAILED;  ///< UPPARAT_OK, _RETRY_LATER, _FAILED or _NOT_SUPPORTED
  std::string text;               ///< the version (version step) or the reason
  int64_t retry_after_seconds = -1;
  std::vector<std::pair<std::string, int32_t>> progress;  ///< (line, percent) in order
};

/// A plugin loaded from its shared object, with one instance. Not copyable.
class LoadedPlugin {
 public:
  /// Loads `path` and creates an instance with `config` (key -> value as the daemon passes
  /// them: strings as they are, numbers and booleans in their TOML spelling).
  explicit LoadedPlugin(const std::string& path, std::map<std::string, std::string> config = {})
      : config_(std::move(config)) {
    handle_ = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle_ == nullptr) {
      const char* error = ::dlerror();
      throw std::runtime_error("cannot load " + path + ": " + (error ? error : "?"));
    }
    using Entry = const upparat_plugin_descriptor* (*)(uint16_t, uint16_t);
    auto entry = reinterpret_cast<Entry>(::dlsym(handle_, "upparat_plugin_entry"));
    if (entry == nullptr) {
      close();
      throw std::runtime_error(path + " has no upparat_plugin_entry");
    }
    descriptor_ = entry(UPPARAT_ABI_MAJOR, UPPARAT_ABI_MINOR);
    if (descriptor_ == nullptr || descriptor_->functions == nullptr) {
      close();
      throw std::runtime_error(path + ": upparat_plugin_entry refused this ABI");
    }
    host_.struct_size = sizeof host_;
    host_.host_data = this;
    host_.log = [](void* data, int32_t level, const char* message) {
      auto* self = static_cast<LoadedPlugin*>(data);
      std::lock_guard<std::mutex> lock(self->mutex_);
      self->logs_.emplace_back(level, message ? message : "");
    };
    std::vector<upparat_config_entry> entries;
    for (const auto& [key, value] : config_) {
      entries.push_back({key.c_str(), value.c_str()});
    }
    upparat_config c_config{sizeof(upparat_config), static_cast<uint32_t>(entries.size()),
                            entries.data()};
    std::vector<char> text(4096, '\0');
    upparat_result result{sizeof(upparat_result),
                          UPPARAT_FAILED,
                          -1,
                          text.data(),
                          static_cast<uint32_t>(text.size()),
                          0};
    descriptor_->functions->create(&host_, &c_config, &instance_, &result);
    if (result.code != UPPARAT_OK || instance_ == nullptr) {
      close();
      throw std::runtime_error("create refused the configuration: " + std::string(text.data()));
    }
  }

  ~LoadedPlugin() {
    if (instance_ != nullptr) {
      descriptor_->functions->destroy(instance_);
    }
    close();
  }
  LoadedPlugin(const LoadedPlugin&) = delete;
  LoadedPlugin& operator=(const LoadedPlugin&) = delete;

  /// The plugin's descriptor (name, version, licence, capabilities).
  const upparat_plugin_descriptor& descriptor() const { return *descriptor_; }

  /// True when the instance serves `step` (its function is set and steps() includes it).
  bool serves(Step step) const {
    if (function(step) == nullptr) {
      return false;
    }
    const auto* f = descriptor_->functions;
    if (f->struct_size < sizeof(upparat_plugin_functions) || f->steps == nullptr) {
      return true;
    }
    return (f->steps(instance_) & step_bit(step)) != 0;
  }

  /// Runs `step` on `job` and returns what it answered. With `stop_after`, the stop request
  /// (should_stop() true, stop_fd readable) comes that long after the step started: a step
  /// should then return promptly.
  StepOutcome run(Step step, const JobSpec& job,
                  std::optional<std::chrono::milliseconds> stop_after = std::nullopt) {
    upparat_step_fn fn = function(step);
    if (fn == nullptr) {
      StepOutcome out;
      out.code = UPPARAT_NOT_SUPPORTED;
      return out;
    }
    int stop_pipe[2];
    if (::pipe(stop_pipe) != 0) {
      throw std::runtime_error("pipe() failed");
    }
    StepState state{this, stop_pipe[0], stop_pipe[1], {}};
    upparat_step_services services{};
    services.struct_size = sizeof services;
    services.step_data = &state;
    services.progress = [](void* data, const char* line, int32_t percent) {
      auto* s = static_cast<StepState*>(data);
      std::lock_guard<std::mutex> lock(s->self->mutex_);
      s->progress.emplace_back(line ? line : "", percent);
    };
    services.should_stop = [](void* data) -> int32_t {
      pollfd p{static_cast<StepState*>(data)->read_fd, POLLIN, 0};
      return ::poll(&p, 1, 0) > 0 ? 1 : 0;
    };
    services.stop_fd = stop_pipe[0];
    services.store_get = [](void* data, const char* key) -> const char* {
      auto* self = static_cast<StepState*>(data)->self;
      std::lock_guard<std::mutex> lock(self->mutex_);
      const auto it = self->store_.find(key ? key : "");
      return it == self->store_.end() ? nullptr : it->second.c_str();
    };
    services.store_set = [](void* data, const char* key, const char* value) -> int32_t {
      auto* self = static_cast<StepState*>(data)->self;
      std::lock_guard<std::mutex> lock(self->mutex_);
      if (key == nullptr || !valid_store_key(key)) {
        return -1;
      }
      if (value == nullptr) {
        self->store_.erase(key);
        return 0;
      }
      if (!valid_utf8(value) || std::string(value).size() > kStoreMaxValueBytes ||
          (self->store_.count(key) == 0 && self->store_.size() >= kStoreMaxKeys)) {
        return -1;
      }
      self->store_[key] = value;
      return 0;
    };

    upparat_job_context context{};
    context.struct_size = sizeof context;
    context.force = job.force ? 1 : 0;
    context.job_id = job.id.c_str();
    context.execution_number = job.execution_number;
    context.version = job.version.c_str();
    context.meta = job.meta.c_str();
    context.url = job.url.c_str();
    context.sha256 = job.sha256 ? job.sha256->c_str() : nullptr;
    context.size = job.size.value_or(-1);
    context.document_json = job.document_json.c_str();
    context.file_path = job.file ? job.file->c_str() : nullptr;
    context.seconds_since_first = job.seconds_since_first;
    context.retry_count = job.retry_count;

    std::vector<char> text(4096, '\0');
    upparat_result result{sizeof(upparat_result),
                          UPPARAT_FAILED,
                          -1,
                          text.data(),
                          static_cast<uint32_t>(text.size()),
                          0};
    std::thread stopper;
    if (stop_after) {
      stopper = std::thread([delay = *stop_after, fd = stop_pipe[1]] {
        std::this_thread::sleep_for(delay);
        const char byte = 1;
        (void)!::write(fd, &byte, 1);
      });
    }
    fn(instance_, &context, &services, &result);
    if (stopper.joinable()) {
      stopper.join();
    }
    ::close(stop_pipe[0]);
    ::close(stop_pipe[1]);
    StepOutcome out;
    out.code = result.code;
    text.back() = '\0';
    out.text = text.data();
    out.retry_after_seconds = result.retry_after_seconds;
    std::lock_guard<std::mutex> lock(mutex_);
    out.progress = std::move(state.progress);
    return out;
  }

  /// The job's key/value store, kept across steps (as the daemon keeps it across a reboot).
  std::map<std::string, std::string>& store() { return store_; }

  /// What the plugin logged: (UPPARAT_LOG_* level, message).
  std::vector<std::pair<int32_t, std::string>> logs() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return logs_;
  }

 private:
  struct StepState {
    LoadedPlugin* self;
    int read_fd;
    int write_fd;
    std::vector<std::pair<std::string, int32_t>> progress;
  };

  upparat_step_fn function(Step step) const {
    const auto* f = descriptor_->functions;
    switch (step) {
      case Step::Version:
        return f->version;
      case Step::Download:
        return f->download;
      case Step::Install:
        return f->install;
      case Step::Restart:
        return f->restart;
      case Step::Ready:
        return f->ready;
    }
    return nullptr;
  }

  void close() {
    if (handle_ != nullptr) {
      ::dlclose(handle_);
      handle_ = nullptr;
    }
  }

  std::map<std::string, std::string> config_;
  void* handle_ = nullptr;
  const upparat_plugin_descriptor* descriptor_ = nullptr;
  upparat_host host_{};
  upparat_instance* instance_ = nullptr;
  mutable std::mutex mutex_;
  std::vector<std::pair<int32_t, std::string>> logs_;
  std::map<std::string, std::string> store_;
};

}  // namespace upparat::testing
