#pragma once

// A streamed install's byte stream: the downloader writes the file into a StreamSink, the
// install plugin reads it from a socket. StreamPipe holds back the file's tail until the
// whole file matched the job document, so a plugin never sees the end of a file that turns
// out to be wrong (for a .swu: cpio's TRAILER!!!, before which SWUpdate installs nothing).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "common/safe_fs.hpp"
#include "common/stop_signal.hpp"
#include "download/signing.hpp"

namespace upparat::download {

/// Where a streamed download's bytes go (Downloader::run with a sink), in order, each once.
class StreamSink {
 public:
  virtual ~StreamSink() = default;
  /// Takes the next `size` bytes. An error ends the download as Failed with its message.
  [[nodiscard]] virtual Status write(const char* data, std::size_t size) = 0;
};

/// How a stream ended (mirrors UPPARAT_STREAM_* of upparat/plugin.h).
enum class StreamState { Running, Complete, Failed };

/// The host's end of a streamed install: an AF_UNIX stream socket pair. The plugin reads
/// reader_fd(); write() passes bytes on, keeping the last kStreamTail bytes back; complete()
/// checks size, SHA-256 and the signature, then sends the tail and ends the stream; fail()
/// ends it without the tail. Thread-safe: the downloader writes on one thread while the install
/// step runs on another and asks state().
class StreamPipe final : public StreamSink {
 public:
  /// The bytes held back until the file is verified.
  static constexpr std::size_t kStreamTail = 4096;

  /// `sha256` (64 hex digits, any case), `size` and `signature` as the job document gives
  /// them; a signature is verified with `certificates`. `stop` interrupts a write blocked on
  /// a plugin that does not read (the write then fails).
  [[nodiscard]] static Result<std::unique_ptr<StreamPipe>> create(
      std::optional<std::string> sha256, std::optional<std::uint64_t> size, const StopSignal& stop,
      std::optional<Signature> signature = std::nullopt, SigningCertificates certificates = {});
  ~StreamPipe() override;
  StreamPipe(const StreamPipe&) = delete;
  StreamPipe& operator=(const StreamPipe&) = delete;

  /// The plugin's end (upparat_step_services::stream_fd). Stays open until destruction.
  [[nodiscard]] int reader_fd() const;

  Status write(const char* data, std::size_t size) override;
  /// The download ended complete: on a size or SHA-256 mismatch, or a signature that does
  /// not verify, the stream fails, else the tail is sent and the stream ends Complete.
  /// Returns the failure, if any.
  Status complete();
  /// Ends the stream as failed with `reason` (no effect once it ended).
  void fail(const std::string& reason);

  [[nodiscard]] StreamState state() const;
  /// The reason of a Failed stream.
  [[nodiscard]] std::string reason() const;
  /// The subject of the signing certificate that verified a signed stream (once Complete).
  [[nodiscard]] std::string signer() const;
  /// Bytes received from the downloader so far.
  [[nodiscard]] std::uint64_t received() const;

  struct Impl;

 private:
  explicit StreamPipe(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace upparat::download
