#pragma once

#include <cstddef>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace upparat::plugin {

/// Limits of the job's key/value store (also documented in upparat/plugin.h, store_set).
inline constexpr std::size_t kStoreMaxKeyLength = 128;
inline constexpr std::size_t kStoreMaxValueBytes = 4096;
inline constexpr std::size_t kStoreMaxEntries = 64;

/// True for 1-128 characters of [A-Za-z0-9._-].
[[nodiscard]] bool is_valid_store_key(std::string_view key);

/// The job's durable key/value store (saved by the daemon with its job state). Thread-safe:
/// plugins may write from their own threads while a step runs.
class KeyValueStore {
 public:
  KeyValueStore() = default;
  /// Restores a saved store. The values are trusted (they passed set() before being saved).
  explicit KeyValueStore(std::map<std::string, std::string> values) : values_(std::move(values)) {}

  [[nodiscard]] std::optional<std::string> get(const std::string& key) const;
  /// Sets or (with std::nullopt) removes a key. False, and the store unchanged, when the key
  /// (1-128 of [A-Za-z0-9._-]) or the value (valid UTF-8, <= 4096 bytes) is refused, or when a
  /// new key would exceed 64 entries. Removing a key that is not set succeeds.
  bool set(const std::string& key, std::optional<std::string> value);
  [[nodiscard]] std::map<std::string, std::string> snapshot() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::string> values_;
};

}  // namespace upparat::plugin
