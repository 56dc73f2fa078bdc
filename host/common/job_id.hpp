#pragma once

// The rule for a job id that the daemon accepts and uses as a file name.

#include <string_view>

namespace upparat {

/// True when `job_id` is 1-64 characters of [A-Za-z0-9_-], as AWS IoT Jobs allows; such an id
/// is also safe as a file name.
[[nodiscard]] inline bool valid_job_id(std::string_view job_id) {
  if (job_id.empty() || job_id.size() > 64) {
    return false;
  }
  for (char c : job_id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    if (!ok) {
      return false;
    }
  }
  return true;
}

}  // namespace upparat
