// The code-signing signature field (host/common/signature.cpp): any text, for both
// algorithms. An accepted ECDSA signature is a DER SEQUENCE that fits a P-256 signature; an
// accepted RSA signature has the length of a 1024- to 8192-bit key; a refusal's reason
// survives the statusDetails sanitiser unchanged (it never repeats the input).

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/sanitize.hpp"
#include "common/signature.hpp"
#include "fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = upparat::fuzz::text(data, size);
  for (auto algorithm :
       {upparat::SignatureAlgorithm::EcdsaP256Sha256, upparat::SignatureAlgorithm::RsaSha256}) {
    auto signature = upparat::parse_signature(algorithm, text);
    if (!signature) {
      const auto& reason = signature.error().message();
      UPPARAT_FUZZ_ASSERT(upparat::sanitize_status_detail(reason) == reason);
      continue;
    }
    UPPARAT_FUZZ_ASSERT(signature->algorithm == algorithm);
    const auto& bytes = signature->bytes;
    if (algorithm == upparat::SignatureAlgorithm::EcdsaP256Sha256) {
      // SEQUENCE { INTEGER r, INTEGER s }, each at most 33 bytes (a leading 0 for the sign).
      UPPARAT_FUZZ_ASSERT(bytes.size() >= 8 && bytes.size() <= 72 && bytes[0] == 0x30);
    } else {
      UPPARAT_FUZZ_ASSERT(bytes.size() >= 128 && bytes.size() <= 1024);
    }
  }
  return 0;
}
