#include "swupdate/swupdate_client.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <deque>
#include <utility>
#include <vector>

extern "C" {
#include <network_ipc.h>
#include <progress_ipc.h>
}

namespace upparat::swupdate {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

/// One status request waits at most this long for SWUpdate's answer. libswupdate 2022.12 puts
/// the timeout into a timeval's microseconds only, so it must stay below one second.
constexpr unsigned kStatusAnswerMs = 500;
/// Status texts kept for a failure's reason (the most recent ones).
constexpr std::size_t kKeptErrorMessages = 6;
/// At most this many queued status texts are drained before an install starts.
constexpr int kMaxDrainedMessages = 512;
constexpr std::size_t kChunkBytes = 64 * 1024;

std::string seconds_text(milliseconds duration) {
  return std::to_string((duration.count() + 999) / 1000) + " s";
}

/// A file descriptor closed on scope exit.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset() {
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }

 private:
  int fd_;
};

bool set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  return flags >= 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

bool readable_now(int fd) {
  if (fd < 0) {
    return false;
  }
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0;
}

/// Reads SWUpdate's progress socket without ever blocking: whole progress_msg records are
/// cut from what arrived, so a message split over two reads is still read correctly.
class ProgressReader {
 public:
  ProgressReader(const std::string& path, std::function<void(const Progress&)> sink)
      : sink_(std::move(sink)) {
    // Without reconnecting: libswupdate would otherwise retry every 10 ms for ever.
    fd_ = ::progress_ipc_connect_with_path(path.c_str(), false);
    if (fd_ >= 0 && !set_nonblocking(fd_)) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ProgressReader(const ProgressReader&) = delete;
  ProgressReader& operator=(const ProgressReader&) = delete;
  ~ProgressReader() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }
  int fd() const { return fd_; }
  bool connected() const { return fd_ >= 0; }

  /// Reads what is there. SWUpdate blocks its progress writes when a client does not read, so
  /// this is called whenever the socket is readable.
  void drain() {
    while (fd_ >= 0) {
      std::array<char, 8192> chunk{};
      const ssize_t n = ::read(fd_, chunk.data(), chunk.size());
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        return;
      }
      if (n <= 0) {
        ::close(fd_);
        fd_ = -1;
        return;
      }
      pending_.insert(pending_.end(), chunk.data(), chunk.data() + n);
      while (pending_.size() >= sizeof(progress_msg)) {
        progress_msg msg{};
        std::memcpy(&msg, pending_.data(), sizeof(msg));
        pending_.erase(pending_.begin(), pending_.begin() + sizeof(msg));
        deliver(msg);
      }
    }
  }

 private:
  void deliver(const progress_msg& msg) {
    if (!sink_ || msg.nsteps == 0 || msg.cur_step == 0) {
      return;
    }
    Progress p;
    p.step = msg.cur_step;
    p.steps = msg.nsteps;
    p.step_percent = std::min(msg.cur_percent, 100U);
    p.image.assign(msg.cur_image, ::strnlen(msg.cur_image, sizeof(msg.cur_image)));
    const unsigned step = std::min(p.step, p.steps);
    p.percent = static_cast<int>(((step - 1) * 100U + p.step_percent) / p.steps);
    if (p.step == last_.step && p.steps == last_.steps && p.step_percent == last_.step_percent &&
        p.image == last_.image) {
      return;
    }
    p.line = "step " + std::to_string(p.step) + " of " + std::to_string(p.steps) + ": " +
             (p.image.empty() ? std::string("(no image)") : p.image) + " " +
             std::to_string(p.step_percent) + "%";
    last_ = p;
    sink_(p);
  }

  int fd_ = -1;
  std::vector<char> pending_;
  std::function<void(const Progress&)> sink_;
  Progress last_;
};

enum class StatusAnswer { Answered, NoAnswer, Unreachable };

struct Status {
  StatusAnswer answer = StatusAnswer::Unreachable;
  int current = IDLE;
  int last_result = IDLE;
  int error = 0;
  std::string desc;
  int connect_errno = 0;
};

/// One GET_STATUS request, bounded by kStatusAnswerMs once connected.
Status get_status() {
  Status status;
  ipc_message msg{};
  errno = 0;
  const int ret = ::ipc_get_status_timeout(&msg, kStatusAnswerMs);
  if (ret < 0) {
    status.connect_errno = errno;
    return status;
  }
  if (ret == 0 || msg.magic != IPC_MAGIC) {
    status.answer = StatusAnswer::NoAnswer;
    return status;
  }
  status.answer = StatusAnswer::Answered;
  status.current = msg.data.status.current;
  status.last_result = msg.data.status.last_result;
  status.error = msg.data.status.error;
  status.desc.assign(msg.data.status.desc,
                     ::strnlen(msg.data.status.desc, sizeof(msg.data.status.desc)));
  return status;
}

std::string unreachable_reason(int error) {
  const std::string path = control_socket_path();
  if (error == ENOENT || error == ECONNREFUSED) {
    return "SWUpdate is not running: nothing listens on " + path + " (" + std::strerror(error) +
           "); start swupdate, or point TMPDIR of the daemon at the folder of its sockets";
  }
  if (error == EACCES || error == EPERM) {
    return "no permission to connect to SWUpdate's socket " + path +
           " (add the daemon's user to SWUpdate's group: config/upparat-swupdate.conf)";
  }
  return "cannot reach SWUpdate on " + path +
         (error != 0 ? std::string(": ") + std::strerror(error) : std::string());
}

bool is_error_message(const Status& status) {
  return status.current == FAILURE || status.error != 0 ||
         status.desc.find("ERROR") != std::string::npos;
}

/// Waits until SWUpdate answers and is idle, draining status texts of earlier installs so that
/// they are not taken for this one's.
InstallResult wait_idle(const InstallOptions& options, const InstallIo& io) {
  const auto deadline = Clock::now() + options.answer_timeout;
  int drained = 0;
  for (;;) {
    if (readable_now(io.stop_fd)) {
      return {Outcome::Stopped, "stopped before the install began"};
    }
    const Status status = get_status();
    if (status.answer == StatusAnswer::Unreachable) {
      const bool retry = status.connect_errno != EACCES && status.connect_errno != EPERM;
      return {retry ? Outcome::RetryLater : Outcome::Failed,
              unreachable_reason(status.connect_errno)};
    }
    if (status.answer == StatusAnswer::Answered) {
      if (!status.desc.empty() && ++drained < kMaxDrainedMessages) {
        continue;
      }
      if (status.current != IDLE) {
        return {Outcome::RetryLater, "SWUpdate is busy with another update"};
      }
      return {Outcome::Succeeded, {}};
    }
    if (Clock::now() >= deadline) {
      return {Outcome::Failed, "SWUpdate on " + control_socket_path() + " does not answer within " +
                                   seconds_text(options.answer_timeout) +
                                   " (stopped or hung? check the swupdate service)"};
    }
  }
}

/// Joins the kept error texts of SWUpdate into one reason.
std::string failure_reason(const std::deque<std::string>& errors, const std::string& fallback) {
  if (errors.empty()) {
    return fallback;
  }
  std::string joined = "SWUpdate: ";
  for (std::size_t i = 0; i < errors.size(); ++i) {
    joined += (i == 0 ? "" : " | ") + errors[i];
  }
  return joined;
}

/// Why send_archive stopped before SWUpdate had the whole archive.
struct SendFailure {
  InstallResult result;
  /// The source said it is not whole (InstallIo::source_end): SWUpdate is to be given time to
  /// fail the install it can no longer finish.
  bool source_failed = false;
};

/// Writes the archive to the install socket. Returns nullopt when every byte was written or
/// SWUpdate closed its side (its final status then tells the result); a source with
/// io.source_end was then read to its end and is complete.
std::optional<SendFailure> send_archive(int socket, const InstallOptions& options,
                                        const InstallIo& io, ProgressReader& progress,
                                        bool& closed_early) {
  std::vector<char> buffer(kChunkBytes);
  std::size_t have = 0;
  std::size_t offset = 0;
  bool eof = false;
  auto last_write = Clock::now();
  while (!eof || offset < have) {
    const bool writing = offset < have;
    std::array<pollfd, 3> fds{};
    fds[0] = {io.stop_fd, POLLIN, 0};
    fds[1] = {progress.fd(), POLLIN, 0};
    fds[2] = {writing ? socket : io.source_fd, static_cast<short>(writing ? POLLOUT : POLLIN), 0};
    const auto stall_left =
        std::chrono::duration_cast<milliseconds>(last_write + options.stall_timeout - Clock::now());
    const int wait_ms = static_cast<int>(std::clamp<long long>(stall_left.count(), 0, 1000));
    if (::poll(fds.data(), fds.size(), wait_ms) < 0 && errno != EINTR) {
      return SendFailure{{Outcome::Failed, std::string("poll: ") + std::strerror(errno)}};
    }
    if (fds[0].revents != 0) {
      return SendFailure{{Outcome::Stopped,
                          "stopped before the whole archive reached SWUpdate (it aborts the "
                          "install)"}};
    }
    if (fds[1].revents != 0) {
      progress.drain();
    }
    if (fds[2].revents != 0) {
      if (writing) {
        const ssize_t n =
            ::send(socket, buffer.data() + offset, have - offset, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
          offset += static_cast<std::size_t>(n);
          last_write = Clock::now();
        } else if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
          closed_early = true;
          if (!io.source_end) {
            return std::nullopt;
          }
          // The rest of the source is read and dropped: only its end tells whether it was
          // whole.
          have = 0;
          offset = 0;
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
          return SendFailure{
              {Outcome::Failed, std::string("writing to SWUpdate: ") + std::strerror(errno)}};
        }
      } else {
        const ssize_t n = ::read(io.source_fd, buffer.data(), buffer.size());
        if (n > 0) {
          have = closed_early ? 0 : static_cast<std::size_t>(n);
          offset = 0;
        } else if (n == 0) {
          eof = true;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
          return SendFailure{
              {Outcome::Failed, std::string("reading the archive: ") + std::strerror(errno)}};
        }
        // Waiting for the source is not SWUpdate stalling.
        last_write = Clock::now();
      }
    }
    if (writing && Clock::now() - last_write >= options.stall_timeout) {
      return SendFailure{{Outcome::Failed, "SWUpdate took no data for " +
                                               seconds_text(options.stall_timeout) +
                                               " (stopped or hung? check the swupdate service)"}};
    }
  }
  if (io.source_end) {
    std::string reason;
    if (!io.source_end(reason)) {
      return SendFailure{{Outcome::Failed, reason.empty() ? "the archive's source failed" : reason},
                         true};
    }
  }
  return std::nullopt;
}

/// After the last byte: polls SWUpdate's status until it is idle again and takes the result
/// from there, collecting its error texts.
InstallResult wait_result(const InstallOptions& options, const InstallIo& io,
                          ProgressReader& progress, bool closed_early) {
  const auto sent = Clock::now();
  auto deadline = sent + options.result_timeout;
  bool stop_seen = false;
  // SWUpdate acknowledges the request before its installer thread has taken it: until that
  // thread reports something, an idle status is the one from before this install.
  bool started = false;
  std::deque<std::string> errors;
  for (;;) {
    progress.drain();
    const Status status = get_status();
    if (status.answer == StatusAnswer::Unreachable) {
      return {Outcome::Failed, failure_reason(errors,
                                              "SWUpdate went away before it reported "
                                              "the result (" +
                                                  unreachable_reason(status.connect_errno) + ")")};
    }
    if (status.answer == StatusAnswer::Answered) {
      started = started || status.current != IDLE || !status.desc.empty();
      if (!status.desc.empty()) {
        if (io.on_message) {
          io.on_message(status.desc);
        }
        if (is_error_message(status)) {
          errors.push_back(status.desc);
          if (errors.size() > kKeptErrorMessages) {
            errors.pop_front();
          }
        }
        continue;  // More texts may be queued: read them all before deciding.
      }
      if (status.current == IDLE && started) {
        if (status.last_result == SUCCESS) {
          return {Outcome::Succeeded, {}};
        }
        return {Outcome::Failed,
                failure_reason(errors, closed_early
                                           ? "SWUpdate closed the connection and failed the "
                                             "install (no reason given; see its log)"
                                           : "SWUpdate failed the install (no reason given; see "
                                             "its log)")};
      }
    }
    const auto now = Clock::now();
    if (!started && now - sent >= options.answer_timeout) {
      // SWUpdate 2022.12 wakes its installer without waiting for it to listen: a request that
      // arrives just as the previous install ends is acknowledged and then never taken.
      return {Outcome::RetryLater,
              "SWUpdate acknowledged the install request but did not start it within " +
                  seconds_text(options.answer_timeout) +
                  " (it can lose a request that arrives as the previous install ends)"};
    }
    if (now >= deadline) {
      return {Outcome::Failed,
              failure_reason(errors, std::string(stop_seen ? "stopped; " : "") +
                                         "SWUpdate did not report a result within " +
                                         seconds_text(stop_seen ? options.stop_wait
                                                                : options.result_timeout))};
    }
    std::array<pollfd, 2> fds{};
    fds[0] = {stop_seen ? -1 : io.stop_fd, POLLIN, 0};
    fds[1] = {progress.fd(), POLLIN, 0};
    if (::poll(fds.data(), fds.size(), 100) > 0 && fds[0].revents != 0) {
      // SWUpdate has every byte and cannot be aborted any more: wait a bounded while longer.
      stop_seen = true;
      deadline = std::min(deadline, now + options.stop_wait);
    }
  }
}

/// After the install socket was closed because the source was not whole: waits a bounded
/// while for SWUpdate to fail the install and be idle again (ready for the next one), and notes
/// in `result` when it did not.
void settle_after_abort(const InstallOptions& options, const InstallIo& io,
                        ProgressReader& progress, InstallResult& result) {
  InstallOptions settle = options;
  settle.result_timeout = options.answer_timeout;
  settle.stop_wait = options.answer_timeout;
  const InstallResult swupdate = wait_result(settle, io, progress, false);
  if (io.on_message) {
    io.on_message(
        "after the source failed, SWUpdate ended the install: " +
        (swupdate.outcome == Outcome::Succeeded ? std::string("succeeded") : swupdate.reason));
  }
  if (swupdate.outcome == Outcome::Succeeded) {
    result.reason += "; SWUpdate nevertheless reported success (check the device)";
  }
}

}  // namespace

InstallResult post_update(std::chrono::milliseconds timeout, int stop_fd) {
  const auto deadline = Clock::now() + timeout;
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) {
    return {Outcome::Failed, std::string("socket: ") + std::strerror(errno)};
  }
  const std::string path = control_socket_path();
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof(address.sun_path)) {
    return {Outcome::Failed, "SWUpdate's control socket path is too long: " + path};
  }
  std::memcpy(address.sun_path, path.c_str(), path.size());
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    const int error = errno;
    const bool retry = error != EACCES && error != EPERM;
    return {retry ? Outcome::RetryLater : Outcome::Failed, unreachable_reason(error)};
  }
  ipc_message msg{};
  msg.magic = IPC_MAGIC;
  msg.type = POST_UPDATE;
  // Sends the request, then reads the whole answer, each under poll() with the stop descriptor.
  const auto transfer = [&](bool sending) -> std::optional<InstallResult> {
    auto* bytes = reinterpret_cast<char*>(&msg);
    std::size_t done = 0;
    while (done < sizeof(msg)) {
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) {
        return InstallResult{Outcome::Failed,
                             "SWUpdate did not answer the post-update request "
                             "within " +
                                 seconds_text(timeout) + " (its post-update command still runs?)"};
      }
      std::array<pollfd, 2> fds{};
      fds[0] = {stop_fd, POLLIN, 0};
      fds[1] = {fd.get(), static_cast<short>(sending ? POLLOUT : POLLIN), 0};
      const int wait_ms = static_cast<int>(std::min<long long>(left.count(), 1000));
      if (::poll(fds.data(), fds.size(), wait_ms) < 0 && errno != EINTR) {
        return InstallResult{Outcome::Failed, std::string("poll: ") + std::strerror(errno)};
      }
      if (fds[0].revents != 0) {
        return InstallResult{Outcome::Stopped,
                             "stopped while SWUpdate ran its post-update command"};
      }
      if (fds[1].revents == 0) {
        continue;
      }
      const ssize_t n = sending ? ::send(fd.get(), bytes + done, sizeof(msg) - done, MSG_NOSIGNAL)
                                : ::read(fd.get(), bytes + done, sizeof(msg) - done);
      if (n > 0) {
        done += static_cast<std::size_t>(n);
      } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        return InstallResult{Outcome::Failed,
                             std::string("SWUpdate closed the connection before it answered the "
                                         "post-update request") +
                                 (n < 0 ? std::string(": ") + std::strerror(errno) : "")};
      }
    }
    return std::nullopt;
  };
  if (auto failed = transfer(true)) {
    return *failed;
  }
  msg = ipc_message{};
  if (auto failed = transfer(false)) {
    return *failed;
  }
  const std::string text(msg.data.msg, ::strnlen(msg.data.msg, sizeof(msg.data.msg)));
  if (msg.magic == IPC_MAGIC && msg.type == ACK) {
    return {Outcome::Succeeded, text};
  }
  return {Outcome::Failed, "SWUpdate's post-update command failed" +
                               (text.empty() ? std::string() : " (" + text + ")") +
                               "; see SWUpdate's log"};
}

std::string control_socket_path() {
  return ::get_ctrl_socket();
}

std::string default_progress_socket_path() {
  return ::get_prog_socket();
}

InstallResult install(const InstallOptions& options, const InstallIo& io) {
  InstallResult idle = wait_idle(options, io);
  if (idle.outcome != Outcome::Succeeded) {
    return idle;
  }
  ProgressReader progress(
      options.progress_socket.empty() ? default_progress_socket_path() : options.progress_socket,
      io.on_progress);
  if (!progress.connected() && io.on_message) {
    io.on_message("no progress from SWUpdate: cannot connect to its progress socket");
  }

  swupdate_request request{};
  ::swupdate_prepare_req(&request);
  request.source = SOURCE_LOCAL;
  request.dry_run = options.dry_run ? RUN_DRYRUN : RUN_DEFAULT;
  std::strncpy(request.info, options.info.c_str(), sizeof(request.info) - 1);
  std::strncpy(request.software_set, options.software_set.c_str(),
               sizeof(request.software_set) - 1);
  std::strncpy(request.running_mode, options.running_mode.c_str(),
               sizeof(request.running_mode) - 1);
  request.len =
      options.info.size() < sizeof(request.info) ? options.info.size() : sizeof(request.info) - 1;

  // SWUpdate answered a status request just now, so this request's answer comes promptly.
  Fd socket(::ipc_inst_start_ext(&request, sizeof(request)));
  if (socket.get() < 0) {
    return {Outcome::RetryLater,
            "SWUpdate refused the install request (busy with another update?)"};
  }
  if (!set_nonblocking(socket.get())) {
    return {Outcome::Failed, std::string("fcntl: ") + std::strerror(errno)};
  }

  bool closed_early = false;
  if (auto failed = send_archive(socket.get(), options, io, progress, closed_early)) {
    // Closing before the last byte makes SWUpdate abort the install.
    socket.reset();
    if (failed->source_failed) {
      settle_after_abort(options, io, progress, failed->result);
    }
    return failed->result;
  }
  if (closed_early && io.on_message) {
    io.on_message(
        "SWUpdate closed its socket before the end of the archive; taking the result "
        "from its status");
  }
  ::ipc_end(socket.release());
  return wait_result(options, io, progress, closed_early);
}

}  // namespace upparat::swupdate
