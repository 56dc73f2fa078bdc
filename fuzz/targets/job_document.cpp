// The job document parser (host/jobs/document.cpp) on any bytes, with and without http.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/sanitize.hpp"
#include "fuzz.hpp"
#include "jobs/document.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view json = upparat::fuzz::text(data, size);
  for (const bool allow_http : {false, true}) {
    auto document = upparat::jobs::parse_job_document(json, allow_http);
    if (document) {
      // A valid document has what the contract requires.
      UPPARAT_FUZZ_ASSERT(!document->version.empty() && !document->file.empty());
      UPPARAT_FUZZ_ASSERT(!document->size || *document->size >= 0);
      UPPARAT_FUZZ_ASSERT(!document->sha256 || document->sha256->size() == 64);
    } else {
      // The reason goes to the cloud with REJECTED: it must survive the sanitiser.
      UPPARAT_FUZZ_ASSERT(upparat::is_valid_status_detail(
          upparat::sanitize_status_detail(document.error().message())));
    }
  }
  return 0;
}
