#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.hpp"
#include "emulator/clock.hpp"

namespace upparat::emulator {

/// How to run an S3Server.
struct S3Options {
  /// Loopback only: "127.0.0.1" (or any 127.x.y.z), "::1" or "localhost". Anything else is
  /// refused, so the emulator can never be reached from the network.
  std::string bind_address = "127.0.0.1";
  /// 0 = let the kernel pick a free port (read it back with S3Server::port()).
  uint16_t port = 0;
  /// Both empty = plain HTTP. Both set = HTTPS with this PEM certificate (chain) and key.
  std::string cert_file;
  std::string key_file;
  /// HMAC key for URL signatures. Empty = a random one per server.
  std::string secret;
  /// Time for X-Amz-Date / expiry checks and Last-Modified. Null = a private real clock.
  std::shared_ptr<const Clock> clock;
};

/// A fault injected into GETs of one object (bucket + key). Knobs combine: e.g. a rate limit
/// with close_after_bytes. Faults apply only to GETs that would otherwise succeed (valid
/// signature, existing object); HEADs are never faulted. Byte counts are body bytes of the
/// response, excluding headers.
struct S3Fault {
  /// Send the headers and this many body bytes, then close cleanly (TLS close_notify + FIN).
  /// A client sees a short body (curl: CURLE_PARTIAL_FILE).
  std::optional<uint64_t> close_after_bytes;
  /// Send the headers and this many body bytes (waits until the peer has acknowledged them),
  /// then reset the connection (SO_LINGER 0 + close = RST). curl: CURLE_RECV_ERROR.
  std::optional<uint64_t> reset_after_bytes;
  /// Stop sending for this many milliseconds: before the headers, or after
  /// stall_after_bytes body bytes when that is set. Then carry on normally.
  std::optional<int> stall_ms;
  std::optional<uint64_t> stall_after_bytes;
  /// Answer this status (400..599, typically 500 or 503) with an S3-style XML error body
  /// instead of the object. The connection stays usable (keep-alive).
  std::optional<int> error_status;
  /// Pace the body to about this many bytes per second.
  std::optional<uint64_t> rate_limit_bytes_per_second;
  /// Flip (XOR 0xFF) the byte at this absolute object offset, if the response covers it.
  std::optional<uint64_t> corrupt_offset;
  /// Answer a Range request with 200 and the whole body, as a server without range support.
  bool ignore_range = false;
  /// How many GETs this fault applies to; -1 = every GET from now on (until clear_faults()).
  int times = 1;
};

/// Counters per object (bucket + key), for every request that named it, whatever the answer.
struct S3ObjectStats {
  uint64_t requests = 0;          ///< GET + HEAD requests, including refused ones
  uint64_t get_requests = 0;      ///< GET requests only
  uint64_t faulted_requests = 0;  ///< GETs to which a fault was applied
  uint64_t body_bytes_sent = 0;   ///< response body bytes of the object written to sockets
};

/// Bucket and key of an S3 object URL.
struct S3ObjectRef {
  std::string bucket;
  std::string key;  ///< percent-decoded
};

/// Parses the S3 object URL forms a job document's `${aws:iot:s3-presigned-url:URL}` may hold:
/// `https://s3.<region>.amazonaws.com/<bucket>/<key>`, `https://s3.amazonaws.com/<bucket>/<key>`,
/// `https://<bucket>.s3.<region>.amazonaws.com/<key>` and
/// `https://<bucket>.s3.amazonaws.com/<key>`. Also `s3://<bucket>/<key>`. Any query string is
/// ignored.
[[nodiscard]] Result<S3ObjectRef> parse_s3_object_url(std::string_view url);

/// An in-process S3 look-alike on loopback that serves stored objects by pre-signed, expiring
/// URLs (GET and HEAD), with Range/If-Range, ETag and fault injection. Runs on its own threads;
/// the destructor stops it, closes every connection and joins. All members are thread-safe.
class S3Server {
 public:
  /// Binds, listens and starts serving. Fails on a non-loopback address, a busy port or an
  /// unreadable certificate/key.
  [[nodiscard]] static Result<std::unique_ptr<S3Server>> start(S3Options options);
  ~S3Server();
  S3Server(const S3Server&) = delete;
  S3Server& operator=(const S3Server&) = delete;

  [[nodiscard]] uint16_t port() const;
  /// "https://127.0.0.1:PORT" or "http://127.0.0.1:PORT" ("[::1]" for IPv6).
  [[nodiscard]] std::string endpoint() const;
  [[nodiscard]] bool https() const;

  /// Stores (or replaces) an object held in memory.
  [[nodiscard]] Status put_object(const std::string& bucket, const std::string& key,
                                  std::string data);
  /// Stores (or replaces) an object served from `file` (by path, not copied; streamed with a
  /// bounded buffer, so objects of any size work). The file must stay unchanged while served.
  /// Its MD5 (the ETag) is computed here, which reads the whole file once.
  [[nodiscard]] Status put_object_file(const std::string& bucket, const std::string& key,
                                       const std::filesystem::path& file);
  /// Removes an object; false if there was none.
  bool delete_object(const std::string& bucket, const std::string& key);
  /// Quoted lowercase MD5 hex of the object, as its ETag header; nullopt if absent.
  [[nodiscard]] std::optional<std::string> etag(const std::string& bucket,
                                                const std::string& key) const;

  /// A pre-signed URL, valid for `expiry` (clamped to 1 s..7 days, as S3) from now on the
  /// server's clock, for GET and HEAD:
  /// {endpoint}/{bucket}/{key}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=...
  /// &X-Amz-Date=YYYYMMDDTHHMMSSZ&X-Amz-Expires=N&X-Amz-SignedHeaders=host&X-Amz-Signature=<hex>
  /// The object need not exist yet. Each call at a different second gives a different URL.
  [[nodiscard]] std::string presign(const std::string& bucket, const std::string& key,
                                    std::chrono::seconds expiry) const;

  /// Queues a fault for GETs of bucket/key. Faults apply in the order added; each one is used
  /// `times` times, then the next. Fails (and queues nothing) on invalid knobs.
  Status add_fault(const std::string& bucket, const std::string& key, S3Fault fault);
  /// Drops every queued fault of every object.
  void clear_faults();

  [[nodiscard]] S3ObjectStats stats(const std::string& bucket, const std::string& key) const;

  struct Impl;

 private:
  explicit S3Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace upparat::emulator
