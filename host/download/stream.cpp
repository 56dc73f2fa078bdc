#include "download/stream.hpp"

#include <openssl/evp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "common/text.hpp"

namespace upparat::download {

struct StreamPipe::Impl {
  const StopSignal* stop = nullptr;
  std::optional<std::string> sha256;
  std::optional<std::uint64_t> size;
  std::optional<Signature> signature;
  SigningCertificates certificates;
  UniqueFd reader;
  UniqueFd writer;
  EVP_MD_CTX* hash = nullptr;
  std::vector<char> tail;  // the last bytes received, not yet passed on (writer thread only)
  std::uint64_t received = 0;

  mutable std::mutex mutex;  // guards state and reason
  StreamState state = StreamState::Running;
  std::string reason;
  std::string signer;

  ~Impl() { EVP_MD_CTX_free(hash); }

  // Ends the stream (first end wins); the plugin sees its end of file after the state is set.
  void end(StreamState how, const std::string& why) {
    {
      const std::lock_guard<std::mutex> lock(mutex);
      if (state != StreamState::Running) {
        return;
      }
      state = how;
      reason = why;
    }
    ::shutdown(writer.get(), SHUT_WR);
  }

  bool running() const {
    const std::lock_guard<std::mutex> lock(mutex);
    return state == StreamState::Running;
  }

  // Sends all of `data` to the plugin, waiting while it does not read; fails once the stream
  // ended or the step is stopped.
  Status send_all(const char* data, std::size_t length) {
    while (length > 0) {
      if (!running()) {
        return upparat::fail("the stream has ended");
      }
      const auto sent = ::send(writer.get(), data, length, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (sent > 0) {
        data += sent;
        length -= static_cast<std::size_t>(sent);
        continue;
      }
      if (sent < 0 && errno == EINTR) {
        continue;
      }
      if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        pollfd fds[2] = {{writer.get(), POLLOUT, 0}, {stop->fd(), POLLIN, 0}};
        if (stop->requested()) {
          return upparat::fail("the install step was stopped");
        }
        (void)::poll(fds, 2, 1000);
        continue;
      }
      return upparat::fail("writing the stream to the install step: " +
                           std::string(std::strerror(sent < 0 ? errno : EIO)));
    }
    return {};
  }

  // Ends the hash: the raw digest (for the signature) and its hex text.
  std::string finish_digest(std::vector<std::uint8_t>& raw) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_DigestFinal_ex(hash, digest, &length);
    raw.assign(digest, digest + length);
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < length; ++i) {
      out += digits[digest[i] >> 4];
      out += digits[digest[i] & 15];
    }
    return out;
  }
};

Result<std::unique_ptr<StreamPipe>> StreamPipe::create(std::optional<std::string> sha256,
                                                       std::optional<std::uint64_t> size,
                                                       const StopSignal& stop,
                                                       std::optional<Signature> signature,
                                                       SigningCertificates certificates) {
  auto impl = std::make_unique<Impl>();
  impl->stop = &stop;
  impl->sha256 = std::move(sha256);
  impl->size = size;
  impl->signature = std::move(signature);
  impl->certificates = std::move(certificates);
  int fds[2] = {-1, -1};
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return upparat::fail("cannot create the stream for the install step: " +
                         std::string(std::strerror(errno)));
  }
  impl->reader.reset(fds[0]);
  impl->writer.reset(fds[1]);
  // Only the host reads from the writer's side: nothing; only the plugin writes to the
  // reader's side: nothing. Shut the unused directions so a misbehaving plugin cannot block.
  ::shutdown(impl->reader.get(), SHUT_WR);
  impl->hash = EVP_MD_CTX_new();
  if (impl->hash == nullptr || EVP_DigestInit_ex(impl->hash, EVP_sha256(), nullptr) != 1) {
    return upparat::fail("cannot create the stream for the install step: no SHA-256");
  }
  impl->tail.reserve(2 * kStreamTail);
  return std::unique_ptr<StreamPipe>(new StreamPipe(std::move(impl)));
}

StreamPipe::StreamPipe(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

StreamPipe::~StreamPipe() = default;

int StreamPipe::reader_fd() const {
  return impl_->reader.get();
}

Status StreamPipe::write(const char* data, std::size_t size) {
  Impl& s = *impl_;
  if (!s.running()) {
    return upparat::fail("the stream to the install step has ended: " + reason());
  }
  EVP_DigestUpdate(s.hash, data, size);
  s.received += size;
  // Pass on everything but the last kStreamTail bytes of what arrived so far.
  const std::size_t total = s.tail.size() + size;
  if (total <= kStreamTail) {
    s.tail.insert(s.tail.end(), data, data + size);
    return {};
  }
  std::size_t release = total - kStreamTail;
  const std::size_t from_tail = std::min(release, s.tail.size());
  if (from_tail > 0) {
    if (auto st = s.send_all(s.tail.data(), from_tail); !st) {
      return st;
    }
    s.tail.erase(s.tail.begin(), s.tail.begin() + static_cast<std::ptrdiff_t>(from_tail));
    release -= from_tail;
  }
  if (release > 0) {
    if (auto st = s.send_all(data, release); !st) {
      return st;
    }
  }
  s.tail.insert(s.tail.end(), data + release, data + size);
  return {};
}

Status StreamPipe::complete() {
  Impl& s = *impl_;
  if (!s.running()) {
    return upparat::fail("the stream to the install step has ended: " + reason());
  }
  std::string mismatch;
  std::vector<std::uint8_t> digest;
  const std::string got = s.finish_digest(digest);
  std::string signer;
  if (s.size && s.received != *s.size) {
    mismatch =
        "size: expected " + std::to_string(*s.size) + " bytes, got " + std::to_string(s.received);
  } else {
    if (s.sha256 && lower(*s.sha256) != got) {
      mismatch = "sha256: expected " + lower(*s.sha256) + ", got " + got;
    }
    if (s.signature) {
      auto verified = verify_signature(s.certificates, *s.signature, digest.data(), digest.size());
      if (verified) {
        signer = *verified;
      } else {
        mismatch += (mismatch.empty() ? "" : "; ") + std::string("signature: ") +
                    verified.error().message();
      }
    }
  }
  if (!mismatch.empty()) {
    const std::string why = "the download does not match the job document (" + mismatch +
                            "); its last " + std::to_string(kStreamTail) + " bytes were held back";
    s.end(StreamState::Failed, why);
    return upparat::fail(why);
  }
  if (auto st = s.send_all(s.tail.data(), s.tail.size()); !st) {
    s.end(StreamState::Failed, st.error().message());
    return st;
  }
  s.tail.clear();
  {
    const std::lock_guard<std::mutex> lock(s.mutex);
    s.signer = signer;
  }
  s.end(StreamState::Complete, "");
  return {};
}

void StreamPipe::fail(const std::string& why) {
  impl_->end(StreamState::Failed, why.empty() ? std::string("the stream failed") : why);
}

StreamState StreamPipe::state() const {
  const std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->state;
}

std::string StreamPipe::reason() const {
  const std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->reason;
}

std::string StreamPipe::signer() const {
  const std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->signer;
}

std::uint64_t StreamPipe::received() const {
  return impl_->received;
}

}  // namespace upparat::download
