#pragma once

// Digests the tests compare files and job documents with.

#include <string>
#include <string_view>

namespace upparat::test {

/// The SHA-256 of `data` as 64 lowercase hex digits (the form of a job document's `sha256`).
std::string sha256_hex(std::string_view data);

}  // namespace upparat::test
