#include "plugin/key_value_store.hpp"

#include <algorithm>

#include "common/sanitize.hpp"

namespace upparat::plugin {

bool is_valid_store_key(std::string_view key) {
  if (key.empty() || key.size() > kStoreMaxKeyLength) {
    return false;
  }
  return std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

std::optional<std::string> KeyValueStore::get(const std::string& key) const {
  const std::lock_guard<std::mutex> lock(mutex_);
  const auto it = values_.find(key);
  if (it == values_.end()) {
    return std::nullopt;
  }
  return it->second;
}

bool KeyValueStore::set(const std::string& key, std::optional<std::string> value) {
  if (!is_valid_store_key(key)) {
    return false;
  }
  if (value && (value->size() > kStoreMaxValueBytes || !is_valid_utf8(*value))) {
    return false;
  }
  const std::lock_guard<std::mutex> lock(mutex_);
  if (!value) {
    values_.erase(key);
    return true;
  }
  const auto it = values_.find(key);
  if (it != values_.end()) {
    it->second = std::move(*value);
    return true;
  }
  if (values_.size() >= kStoreMaxEntries) {
    return false;
  }
  values_.emplace(key, std::move(*value));
  return true;
}

std::map<std::string, std::string> KeyValueStore::snapshot() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return values_;
}

}  // namespace upparat::plugin
