#pragma once

// The job document of the Upparat contract:
//   {"action":"update","version":"1.6.4","file":"https://...","force":false,"meta":"...",
//    "sha256":"<64 hex>","size":123}

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.hpp"

namespace upparat::jobs {

struct JobDocument {
  std::string version;                ///< required, non-empty string
  std::string file;                   ///< required: an https URL (http where allowed)
  bool force = false;                 ///< optional boolean
  std::string meta;                   ///< optional string, passed to the steps as is
  std::optional<std::string> sha256;  ///< optional, 64 hex digits, lower-cased here
  std::optional<std::int64_t> size;   ///< optional integer >= 0
};

/// Validates a job document. The error message is the reason sent with REJECTED
/// invalid_job_document: it names the field and never repeats a URL's query.
[[nodiscard]] Result<JobDocument> parse_job_document(std::string_view json, bool allow_http);

}  // namespace upparat::jobs
