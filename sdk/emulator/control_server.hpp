#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "emulator/jobs_model.hpp"

namespace upparat::emulator {

class S3Server;

/// What the control channel acts on.
struct ControlContext {
  std::shared_ptr<JobsModel> model;
  S3Server* s3 = nullptr;
  /// Publishes messages the model produced for a control operation (notify, notify-next).
  std::function<void(std::vector<Outgoing>)> publish;
  /// Called after each change of the model (saves the state file).
  std::function<void()> after_change;
};

/// The local HTTP+JSON control channel on 127.0.0.1 (see docs/emulator.md for the endpoints).
/// Serves on its own threads until destroyed.
class ControlServer {
 public:
  /// port 0 = a free port.
  [[nodiscard]] static Result<std::unique_ptr<ControlServer>> start(std::uint16_t port,
                                                                    ControlContext context);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  [[nodiscard]] std::uint16_t port() const;

  struct Impl;

 private:
  explicit ControlServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// JSON of a job / an execution (with its status history), as the control channel writes them.
[[nodiscard]] std::string job_to_json(const Job& job, const std::vector<Execution>& executions);
[[nodiscard]] std::string execution_to_json(const Execution& execution);

}  // namespace upparat::emulator
