#include "common/stop_signal.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace upparat {

StopSignal::StopSignal() : fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (fd_ < 0) {
    // Only fails when the process is out of file descriptors or memory: nothing can work then.
    throw std::runtime_error(std::string("eventfd: ") + std::strerror(errno));
  }
}

StopSignal::~StopSignal() {
  ::close(fd_);
}

void StopSignal::request() {
  if (!requested_.exchange(true, std::memory_order_acq_rel)) {
    const std::uint64_t one = 1;
    // The counter cannot overflow with a single write; EAGAIN is impossible here.
    [[maybe_unused]] const auto written = ::write(fd_, &one, sizeof one);
  }
}

bool StopSignal::wait_for(std::chrono::milliseconds duration) const {
  const auto deadline = std::chrono::steady_clock::now() + duration;
  while (!requested()) {
    // Round up: truncating would return up to 1 ms before the deadline.
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return false;
    }
    pollfd pfd{fd_, POLLIN, 0};
    ::poll(&pfd, 1, static_cast<int>(std::min<long long>(left.count(), 1000 * 60)));
  }
  return true;
}

}  // namespace upparat
