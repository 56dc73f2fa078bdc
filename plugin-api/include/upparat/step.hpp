/**
 * @file upparat/step.hpp
 * @brief The five steps of an update, named once for the daemon and for C++ plugins.
 *
 * Header-only C++17. The order is the order of the UPPARAT_STEP_* bits of upparat/plugin.h
 * and of a job: version, download, install, restart, ready.
 */
#ifndef UPPARAT_STEP_HPP
#define UPPARAT_STEP_HPP

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "upparat/plugin.h"

namespace upparat {

/** A step of an update. */
enum class Step { Version, Download, Install, Restart, Ready };

/** How many steps there are. */
inline constexpr std::size_t kStepCount = 5;

/** Every step, in order. */
inline constexpr std::array<Step, kStepCount> kSteps = {Step::Version, Step::Download,
                                                        Step::Install, Step::Restart, Step::Ready};

/** One value per step, indexed with index(). */
template <class T>
using PerStep = std::array<T, kStepCount>;

/** The position of @p step in kSteps and in a PerStep. */
constexpr std::size_t index(Step step) {
  return static_cast<std::size_t>(step);
}

/** "version", "download", "install", "restart" or "ready": the name in configuration files,
 *  logs and the classic hooks. */
constexpr std::string_view to_string(Step step) {
  constexpr std::array<std::string_view, kStepCount> kNames = {"version", "download", "install",
                                                               "restart", "ready"};
  return kNames[index(step)];
}

/** The step named @p name, or nullopt. */
constexpr std::optional<Step> parse_step(std::string_view name) {
  for (Step step : kSteps) {
    if (to_string(step) == name) {
      return step;
    }
  }
  return std::nullopt;
}

/** The UPPARAT_STEP_* bit of @p step. */
constexpr std::uint32_t step_bit(Step step) {
  return std::uint32_t{1} << index(step);
}

static_assert(step_bit(Step::Version) == UPPARAT_STEP_VERSION &&
                  step_bit(Step::Download) == UPPARAT_STEP_DOWNLOAD &&
                  step_bit(Step::Install) == UPPARAT_STEP_INSTALL &&
                  step_bit(Step::Restart) == UPPARAT_STEP_RESTART &&
                  step_bit(Step::Ready) == UPPARAT_STEP_READY,
              "the steps follow the UPPARAT_STEP_* bits");

}  // namespace upparat

#endif  // UPPARAT_STEP_HPP
