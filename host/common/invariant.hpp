#pragma once

// Invariants: a broken one is a bug, not bad input, and is said as such. Debug builds abort
// at once (so tests catch it); release builds log "this is a bug" and let the caller recover
// (the state machine fails the job rather than the whole daemon).

#include <cstdlib>

#include <spdlog/spdlog.h>

namespace upparat::detail {

[[nodiscard]] inline bool invariant_broken(const char* condition, const std::string& what,
                                           const char* file, int line) {
  spdlog::critical("this is a bug: {} ({} is false at {}:{})", what, condition, file, line);
#ifndef NDEBUG
  spdlog::default_logger()->flush();
  std::abort();
#endif
  return false;
}

}  // namespace upparat::detail

/// True when `condition` holds. Otherwise a bug: aborts in debug builds; in release builds
/// logs "this is a bug: <what>" and is false. Use as `if (!UPPARAT_CHECK(c, "...")) recover;`.
#define UPPARAT_CHECK(condition, what) \
  (static_cast<bool>(condition) ||     \
   ::upparat::detail::invariant_broken(#condition, (what), __FILE__, __LINE__))
