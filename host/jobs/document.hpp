#pragma once

// The job document of the Upparat contract:
//   {"action":"update","version":"1.6.4","file":"https://...","force":false,"meta":"...",
//    "sha256":"<64 hex>","size":123}
// and optionally one code-signing signature over the file's SHA-256 (base64, as AWS Signer
// gives it): "sig-sha256-ecdsa":"MEUCIQ..." or "sig-sha256-rsa":"..."

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.hpp"
#include "common/signature.hpp"

namespace upparat::jobs {

struct JobDocument {
  std::string version;                ///< required, non-empty string
  std::string file;                   ///< required: an https URL (http where allowed)
  bool force = false;                 ///< optional boolean
  std::string meta;                   ///< optional string, passed to the steps as is
  std::optional<std::string> sha256;  ///< optional, 64 hex digits, lower-cased here
  std::optional<std::int64_t> size;   ///< optional integer >= 0
  /// Optional: `sig-sha256-ecdsa` or `sig-sha256-rsa` (at most one), decoded and checked.
  std::optional<Signature> signature;
};

/// Validates a job document. The error message is the reason sent with REJECTED
/// invalid_job_document: it names the field and never repeats a URL's query. With
/// `require_signature`, a document without a signature field is refused ("unsigned job").
[[nodiscard]] Result<JobDocument> parse_job_document(std::string_view json, bool allow_http,
                                                     bool require_signature = false);

}  // namespace upparat::jobs
