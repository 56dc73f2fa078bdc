#include "emulator/s3/s3_server.hpp"

#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <deque>
#include <list>
#include <map>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "common/text.hpp"

namespace upparat::emulator {
namespace {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;
using ErrorCode = boost::system::error_code;

constexpr std::size_t kBodyChunk = 1024 * 1024;
constexpr long long kMaxExpirySeconds = 7 * 24 * 3600;  // S3's limit for SigV4 URLs
constexpr const char* kCredential = "UPPARATEMULATOR";
constexpr const char* kRegion = "us-east-1";

// ---------------------------------------------------------------------------------------------
// Text helpers

std::string to_hex(const unsigned char* data, std::size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (std::size_t i = 0; i < size; ++i) {
    out.push_back(kDigits[data[i] >> 4]);
    out.push_back(kDigits[data[i] & 0x0f]);
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

std::optional<std::string> percent_decode(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) {
      return std::nullopt;
    }
    const int hi = hex_value(in[i + 1]);
    const int lo = hex_value(in[i + 2]);
    if (hi < 0 || lo < 0) {
      return std::nullopt;
    }
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

/// S3's URI encoding: unreserved characters stay, '/' stays in object paths, the rest is %XX.
std::string uri_encode(std::string_view in, bool keep_slash) {
  static constexpr char kDigits[] = "0123456789ABCDEF";
  std::string out;
  for (const char ch : in) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kDigits[c >> 4]);
      out.push_back(kDigits[c & 0x0f]);
    }
  }
  return out;
}

std::string xml_escape(std::string_view in) {
  std::string out;
  for (const char c : in) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        // Control bytes are not allowed in XML 1.0.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n' && c != '\r') {
          out += '?';
        } else {
          out.push_back(c);
        }
    }
  }
  return out;
}

std::tm utc_tm(long long epoch_seconds) {
  const std::time_t t = static_cast<std::time_t>(epoch_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return tm;
}

/// RFC 7231 IMF-fixdate, independent of the process locale.
std::string http_date(long long epoch_seconds) {
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const std::tm tm = utc_tm(epoch_seconds);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[tm.tm_wday % 7],
                tm.tm_mday, kMonths[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                tm.tm_sec);
  return buf;
}

/// ISO 8601 basic format as in X-Amz-Date: 20261126T234727Z.
std::string amz_date(long long epoch_seconds) {
  const std::tm tm = utc_tm(epoch_seconds);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d%02d%02dT%02d%02d%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

std::optional<long long> parse_amz_date(std::string_view s) {
  if (s.size() != 16 || s[8] != 'T' || s[15] != 'Z') {
    return std::nullopt;
  }
  auto number = [&](std::size_t pos, std::size_t len) -> int {
    int v = 0;
    for (std::size_t i = pos; i < pos + len; ++i) {
      if (s[i] < '0' || s[i] > '9') {
        return -1;
      }
      v = v * 10 + (s[i] - '0');
    }
    return v;
  };
  std::tm tm{};
  const int year = number(0, 4), month = number(4, 2), day = number(6, 2);
  const int hour = number(9, 2), minute = number(11, 2), second = number(13, 2);
  if (year < 1970 || month < 1 || month > 12 || day < 1 || day > 31 || hour < 0 || hour > 23 ||
      minute < 0 || minute > 59 || second < 0 || second > 60) {
    return std::nullopt;
  }
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  return static_cast<long long>(timegm(&tm));
}

std::optional<unsigned long long> parse_decimal(std::string_view s) {
  if (s.empty() || s.size() > 19) {
    return std::nullopt;
  }
  unsigned long long v = 0;
  for (const char c : s) {
    if (c < '0' || c > '9') {
      return std::nullopt;
    }
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  return v;
}

// HTTP's optional whitespace around a header value or a list item.
std::string trim_ows(std::string_view s) {
  return std::string(trim(s, " \t"));
}

std::string random_hex(std::size_t bytes) {
  std::vector<unsigned char> buf(bytes);
  if (RAND_bytes(buf.data(), static_cast<int>(buf.size())) != 1) {
    // Not a secret worth failing for (request ids); the secret itself is checked in start().
    for (auto& b : buf) {
      b = static_cast<unsigned char>(std::rand());
    }
  }
  return to_hex(buf.data(), buf.size());
}

std::string hmac_sha256_hex(const std::string& key, const std::string& data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return to_hex(out, len);
}

std::string string_to_sign(const std::string& bucket, const std::string& key,
                           const std::string& date, long long expires) {
  // Not AWS's canonical request (the emulator has no access keys); what matters is that every
  // part an attacker could change is covered: object, date and lifetime.
  return "UPPARAT-S3-EMULATOR\n" + date + "\n" + std::to_string(expires) + "\n/" + bucket + "/" +
         key;
}

Result<std::string> md5_quoted_of_file(const std::filesystem::path& file, uint64_t& size) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return fail(file.string() + ": " + std::strerror(errno));
  }
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_md5(), nullptr);
  std::vector<char> buf(1 << 20);
  size = 0;
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      const int err = errno;
      EVP_MD_CTX_free(ctx);
      ::close(fd);
      return fail(file.string() + ": " + std::strerror(err));
    }
    if (n == 0) {
      break;
    }
    EVP_DigestUpdate(ctx, buf.data(), static_cast<std::size_t>(n));
    size += static_cast<uint64_t>(n);
  }
  ::close(fd);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  EVP_MD_CTX_free(ctx);
  return "\"" + to_hex(md, len) + "\"";
}

std::string md5_quoted(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_md5(), nullptr);
  return "\"" + to_hex(md, len) + "\"";
}

std::map<std::string, std::string> parse_query(std::string_view query) {
  std::map<std::string, std::string> out;
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view part = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (part.empty()) {
      continue;
    }
    const auto eq = part.find('=');
    auto name = percent_decode(part.substr(0, eq));
    auto value =
        percent_decode(eq == std::string_view::npos ? std::string_view() : part.substr(eq + 1));
    if (name && value) {
      out.emplace(std::move(*name), std::move(*value));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Ranges

struct ByteRange {
  enum class Kind { None, Satisfiable, Unsatisfiable } kind = Kind::None;
  uint64_t first = 0;
  uint64_t last = 0;  // inclusive
};

/// RFC 7233 single byte range. An invalid header or several ranges are ignored (whole body),
/// as S3 does.
ByteRange parse_range(std::string_view header, uint64_t size) {
  ByteRange r;
  std::string value = trim_ows(header);
  if (value.rfind("bytes=", 0) != 0) {
    return r;
  }
  std::string_view spec(value);
  spec.remove_prefix(6);
  const std::string s = trim_ows(spec);
  if (s.find(',') != std::string::npos) {
    return r;
  }
  const auto dash = s.find('-');
  if (dash == std::string::npos) {
    return r;
  }
  const std::string a = trim_ows(std::string_view(s).substr(0, dash));
  const std::string b = trim_ows(std::string_view(s).substr(dash + 1));
  if (a.empty()) {  // suffix: last n bytes
    const auto n = parse_decimal(b);
    if (!n) {
      return r;
    }
    if (*n == 0 || size == 0) {
      r.kind = ByteRange::Kind::Unsatisfiable;
      return r;
    }
    r.kind = ByteRange::Kind::Satisfiable;
    r.first = *n >= size ? 0 : size - *n;
    r.last = size - 1;
    return r;
  }
  const auto first = parse_decimal(a);
  if (!first) {
    return r;
  }
  std::optional<unsigned long long> last;
  if (!b.empty()) {
    last = parse_decimal(b);
    if (!last || *last < *first) {
      return r;  // invalid: ignored
    }
  }
  if (*first >= size) {
    r.kind = ByteRange::Kind::Unsatisfiable;
    return r;
  }
  r.kind = ByteRange::Kind::Satisfiable;
  r.first = *first;
  r.last = last ? std::min<uint64_t>(*last, size - 1) : size - 1;
  return r;
}

bool etag_list_matches(std::string_view header, const std::string& etag) {
  std::string_view rest = header;
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    std::string item = trim_ows(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    if (item == "*") {
      return true;
    }
    if (item.rfind("W/", 0) == 0) {
      item.erase(0, 2);  // weak comparison for If-(None-)Match
    }
    if (item == etag) {
      return true;
    }
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Objects

struct Object {
  std::shared_ptr<const std::string> data;  // in memory, or
  std::filesystem::path file;               // served from this file
  uint64_t size = 0;
  std::string etag;           // quoted
  std::string last_modified;  // HTTP-date
};

struct ObjectState {
  std::deque<S3Fault> faults;
  S3ObjectStats stats;
};

using ObjectId = std::pair<std::string, std::string>;

struct Connection {
  std::thread thread;
  int fd = -1;  // guarded by Impl::conn_mutex; -1 once the connection thread closes it
  std::atomic<bool> done{false};
};

enum class Outcome { KeepAlive, Close, Reset, Abort };

struct ErrorReply {
  http::status status;
  std::string code;
  std::string message;
  std::vector<std::pair<std::string, std::string>> extra;  // more XML elements
};

}  // namespace

// ---------------------------------------------------------------------------------------------

struct S3Server::Impl {
  S3Options options;
  std::shared_ptr<const Clock> clock;
  std::string secret;
  std::unique_ptr<ssl::context> tls;
  std::string url_host;
  uint16_t port = 0;

  net::io_context ioc;
  tcp::acceptor acceptor{ioc};
  std::thread accept_thread;

  mutable std::mutex mutex;  // objects and states
  std::map<ObjectId, std::shared_ptr<const Object>> objects;
  std::map<ObjectId, ObjectState> states;

  std::mutex conn_mutex;
  std::condition_variable stop_cv;
  bool stopping = false;
  std::list<std::shared_ptr<Connection>> connections;

  ~Impl() { stop(); }

  void stop();
  void do_accept();
  void start_connection(tcp::socket socket);
  void run_connection(const std::shared_ptr<Connection>& conn, tcp::socket socket);

  /// Sleeps up to `duration`; true when the server is stopping.
  bool sleep_for(std::chrono::nanoseconds duration) {
    std::unique_lock<std::mutex> lock(conn_mutex);
    return stop_cv.wait_for(lock, duration, [&] { return stopping; });
  }
  bool is_stopping() {
    std::lock_guard<std::mutex> lock(conn_mutex);
    return stopping;
  }

  template <class Stream>
  Outcome serve(Stream& stream, tcp::socket& socket);
  template <class Stream>
  Outcome handle(Stream& stream, tcp::socket& socket, const http::request<http::string_body>& req);
  template <class Stream>
  Outcome send_error(Stream& stream, const http::request_header<>& req, bool keep_alive,
                     const ErrorReply& reply, const std::string& request_id);
  template <class Stream>
  Outcome stream_body(Stream& stream, tcp::socket& socket, const Object& object, const ObjectId& id,
                      uint64_t first, uint64_t length, const std::optional<S3Fault>& fault,
                      bool keep_alive);

  /// Sleeps until `sent` bytes are due at `rate` bytes/s since `start`; true when stopping.
  bool pace(std::chrono::steady_clock::time_point start, uint64_t sent, uint64_t rate) {
    const auto due = start + std::chrono::nanoseconds(static_cast<long long>(
                                 static_cast<double>(sent) * 1e9 / static_cast<double>(rate)));
    const auto now = std::chrono::steady_clock::now();
    return due > now && sleep_for(due - now);
  }

  void add_body_bytes(const ObjectId& id, uint64_t n) {
    std::lock_guard<std::mutex> lock(mutex);
    states[id].stats.body_bytes_sent += n;
  }
  void wait_until_acked(int fd);
};

void S3Server::Impl::stop() {
  ioc.stop();
  if (accept_thread.joinable()) {
    accept_thread.join();
  }
  std::list<std::shared_ptr<Connection>> conns;
  {
    std::lock_guard<std::mutex> lock(conn_mutex);
    stopping = true;
    // Wakes every blocked read/write/handshake; the fd stays open until its thread closes it.
    for (const auto& c : connections) {
      if (c->fd >= 0) {
        ::shutdown(c->fd, SHUT_RDWR);
      }
    }
    conns.swap(connections);
  }
  stop_cv.notify_all();
  for (const auto& c : conns) {
    if (c->thread.joinable()) {
      c->thread.join();
    }
  }
}

void S3Server::Impl::do_accept() {
  acceptor.async_accept([this](ErrorCode ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted) {
      return;
    }
    if (!ec) {
      start_connection(std::move(socket));
      do_accept();
      return;
    }
    // E.g. EMFILE: try again a little later instead of spinning.
    auto timer = std::make_shared<net::steady_timer>(ioc, std::chrono::milliseconds(50));
    timer->async_wait([this, timer](ErrorCode) { do_accept(); });
  });
}

void S3Server::Impl::start_connection(tcp::socket socket) {
  std::list<std::shared_ptr<Connection>> finished;
  auto conn = std::make_shared<Connection>();
  {
    std::lock_guard<std::mutex> lock(conn_mutex);
    for (auto it = connections.begin(); it != connections.end();) {
      if ((*it)->done) {
        finished.push_back(*it);
        it = connections.erase(it);
      } else {
        ++it;
      }
    }
    if (stopping) {
      return;  // socket closes as it goes out of scope
    }
    conn->fd = socket.native_handle();
    connections.push_back(conn);
    conn->thread = std::thread(
        [this, conn, s = std::move(socket)]() mutable { run_connection(conn, std::move(s)); });
  }
  for (const auto& c : finished) {
    c->thread.join();
  }
}

void S3Server::Impl::wait_until_acked(int fd) {
  // SIOCOUTQ = bytes not yet acknowledged by the peer. Resetting before they are would throw
  // them away, and "RST after exactly N bytes" would become "after fewer".
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    int pending = 0;
    if (::ioctl(fd, SIOCOUTQ, &pending) != 0 || pending == 0) {
      return;
    }
    if (sleep_for(std::chrono::milliseconds(2))) {
      return;
    }
  }
}

namespace {

/// Closes the connection politely: FIN after our last byte, then drain what the peer still
/// sends (briefly), so unread input does not turn our close into an RST that could destroy
/// the response in flight.
void linger_close_plain(tcp::socket& socket) {
  const int fd = socket.native_handle();
  ::shutdown(fd, SHUT_WR);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  char buf[4096];
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, 100);
    if (r < 0 && errno != EINTR) {
      return;
    }
    if (r <= 0) {
      continue;
    }
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      return;
    }
  }
}

void graceful_close(tcp::socket& socket, tcp::socket& /*same*/) {
  linger_close_plain(socket);
}

void graceful_close(ssl::stream<tcp::socket&>& stream, tcp::socket& socket) {
  // SSL_shutdown sends close_notify and then waits for the peer's. Shutting our read side
  // first makes that wait end at once (EOF) after close_notify went out.
  ::shutdown(socket.native_handle(), SHUT_RD);
  ErrorCode ec;
  stream.shutdown(ec);
  ::shutdown(socket.native_handle(), SHUT_WR);
}

bool is_http_parse_error(const ErrorCode& ec) {
  return ec.category() == http::make_error_code(http::error::bad_target).category() &&
         ec != http::error::end_of_stream && ec != http::error::partial_message;
}

std::string error_xml(const ErrorReply& reply, const std::string& request_id) {
  std::string xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>" +
                    xml_escape(reply.code) + "</Code><Message>" + xml_escape(reply.message) +
                    "</Message>";
  for (const auto& [name, value] : reply.extra) {
    xml += "<" + name + ">" + xml_escape(value) + "</" + name + ">";
  }
  xml += "<RequestId>" + request_id + "</RequestId><HostId>upparat-s3-emulator</HostId></Error>";
  return xml;
}

std::string error_code_for(int status) {
  switch (status) {
    case 500:
      return "InternalError";
    case 501:
      return "NotImplemented";
    case 503:
      return "SlowDown";
    case 400:
      return "InvalidRequest";
    case 403:
      return "AccessDenied";
    case 404:
      return "NoSuchKey";
    case 408:
      return "RequestTimeout";
    case 429:
      return "TooManyRequests";
    default:
      return status >= 500 ? "InternalError" : "InvalidRequest";
  }
}

}  // namespace

void S3Server::Impl::run_connection(const std::shared_ptr<Connection>& conn, tcp::socket socket) {
  // sendfile(2) has no MSG_NOSIGNAL: a peer that went away would raise SIGPIPE and kill the
  // whole process. Blocked in this thread, the signal stays pending and the call gets EPIPE.
  sigset_t pipe_only;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_only, nullptr);

  Outcome outcome = Outcome::Abort;
  if (!is_stopping()) {
    ErrorCode ec;
    socket.set_option(tcp::no_delay(true), ec);
    if (tls) {
      ssl::stream<tcp::socket&> stream(socket, *tls);
      stream.handshake(ssl::stream_base::server, ec);
      if (!ec) {
        outcome = serve(stream, socket);
        if (outcome == Outcome::Close) {
          graceful_close(stream, socket);
        }
      }
    } else {
      outcome = serve(socket, socket);
      if (outcome == Outcome::Close) {
        graceful_close(socket, socket);
      }
    }
  }
  if (outcome == Outcome::Reset) {
    wait_until_acked(socket.native_handle());
  }
  {
    std::lock_guard<std::mutex> lock(conn_mutex);
    conn->fd = -1;
  }
  ErrorCode ignored;
  if (outcome == Outcome::Reset) {
    socket.set_option(net::socket_base::linger(true, 0), ignored);
  }
  socket.close(ignored);
  conn->done = true;
}

template <class Stream>
Outcome S3Server::Impl::serve(Stream& stream, tcp::socket& socket) {
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(16 * 1024);
    parser.body_limit(64 * 1024);
    ErrorCode ec;
    http::read(stream, buffer, parser, ec);
    if (ec) {
      if (!is_http_parse_error(ec) || is_stopping()) {
        return Outcome::Abort;
      }
      // Malformed: 400 as S3 does, then close (the stream position is lost).
      http::request_header<> dummy;
      dummy.version(11);
      return send_error(stream, dummy, false,
                        ErrorReply{http::status::bad_request,
                                   "BadRequest",
                                   "Malformed HTTP request: " + ec.message(),
                                   {}},
                        random_hex(8));
    }
    const Outcome outcome = handle(stream, socket, parser.get());
    if (outcome != Outcome::KeepAlive) {
      return outcome;
    }
  }
}

template <class Stream>
Outcome S3Server::Impl::send_error(Stream& stream, const http::request_header<>& req,
                                   bool keep_alive, const ErrorReply& reply,
                                   const std::string& request_id) {
  http::response<http::string_body> res{reply.status, req.version() == 10 ? 10 : 11};
  res.set(http::field::server, "AmazonS3");
  res.set(http::field::date, http_date(clock->now_seconds()));
  res.set("x-amz-request-id", request_id);
  res.set(http::field::content_type, "application/xml");
  for (const auto& [name, value] : reply.extra) {
    if (name == "Content-Range") {
      res.set(http::field::content_range, value);
    }
  }
  res.body() = error_xml(reply, request_id);
  res.prepare_payload();
  res.keep_alive(keep_alive);
  ErrorCode ec;
  if (req.method() == http::verb::head) {
    http::response_serializer<http::string_body> sr{res};
    http::write_header(stream, sr, ec);
  } else {
    http::write(stream, res, ec);
  }
  if (ec) {
    return Outcome::Abort;
  }
  return keep_alive ? Outcome::KeepAlive : Outcome::Close;
}

template <class Stream>
Outcome S3Server::Impl::handle(Stream& stream, tcp::socket& socket,
                               const http::request<http::string_body>& req) {
  const std::string request_id = random_hex(8);
  const bool keep_alive = req.keep_alive();
  auto error = [&](http::status status, std::string code, std::string message,
                   std::vector<std::pair<std::string, std::string>> extra = {}) {
    return send_error(stream, req.base(), keep_alive,
                      ErrorReply{status, std::move(code), std::move(message), std::move(extra)},
                      request_id);
  };

  const bool is_get = req.method() == http::verb::get;
  if (!is_get && req.method() != http::verb::head) {
    return error(http::status::method_not_allowed, "MethodNotAllowed",
                 "The specified method is not allowed against this resource.");
  }
  const std::string_view target = req.target();
  if (target.empty() || target.front() != '/') {
    return error(http::status::bad_request, "InvalidURI", "Couldn't parse the specified URI.");
  }
  const auto qmark = target.find('?');
  const auto path = percent_decode(target.substr(0, qmark));
  if (!path) {
    return error(http::status::bad_request, "InvalidURI", "Couldn't parse the specified URI.");
  }
  const auto slash = path->find('/', 1);
  if (slash == std::string::npos || slash == 1 || slash + 1 >= path->size()) {
    return error(http::status::bad_request, "InvalidRequest",
                 "This emulator serves objects only: /<bucket>/<key>");
  }
  const ObjectId id{path->substr(1, slash - 1), path->substr(slash + 1)};
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto& stats = states[id].stats;
    ++stats.requests;
    if (is_get) {
      ++stats.get_requests;
    }
  }

  // --- Query-string authentication (pre-signed URL)
  const auto query =
      parse_query(qmark == std::string_view::npos ? std::string_view() : target.substr(qmark + 1));
  auto param = [&](const char* name) -> const std::string* {
    const auto it = query.find(name);
    return it == query.end() ? nullptr : &it->second;
  };
  const std::string* algorithm = param("X-Amz-Algorithm");
  const std::string* credential = param("X-Amz-Credential");
  const std::string* date = param("X-Amz-Date");
  const std::string* expires = param("X-Amz-Expires");
  const std::string* signed_headers = param("X-Amz-SignedHeaders");
  const std::string* signature = param("X-Amz-Signature");
  if (!algorithm && !credential && !date && !expires && !signature) {
    return error(http::status::forbidden, "AccessDenied", "Access Denied");
  }
  if (!algorithm || *algorithm != "AWS4-HMAC-SHA256") {
    return error(http::status::bad_request, "AuthorizationQueryParametersError",
                 "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"");
  }
  if (!credential || !date || !expires || !signed_headers || !signature) {
    return error(http::status::bad_request, "AuthorizationQueryParametersError",
                 "Query-string authentication version 4 requires the X-Amz-Algorithm, "
                 "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and "
                 "X-Amz-Expires parameters.");
  }
  const auto signed_at = parse_amz_date(*date);
  if (!signed_at) {
    return error(http::status::bad_request, "AuthorizationQueryParametersError",
                 "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"");
  }
  const auto lifetime = parse_decimal(*expires);
  if (!lifetime) {
    return error(http::status::bad_request, "AuthorizationQueryParametersError",
                 "X-Amz-Expires should be a number");
  }
  if (*lifetime > static_cast<unsigned long long>(kMaxExpirySeconds)) {
    return error(http::status::bad_request, "AuthorizationQueryParametersError",
                 "X-Amz-Expires must be less than a week (in seconds) that is; the maximum "
                 "expires is 604800 seconds");
  }
  const std::string expected = hmac_sha256_hex(
      secret, string_to_sign(id.first, id.second, *date, static_cast<long long>(*lifetime)));
  if (signature->size() != expected.size() ||
      CRYPTO_memcmp(signature->data(), expected.data(), expected.size()) != 0) {
    return error(http::status::forbidden, "SignatureDoesNotMatch",
                 "The request signature we calculated does not match the signature you "
                 "provided. Check your key and signing method.");
  }
  const long long now = clock->now_seconds();
  const long long expires_at = *signed_at + static_cast<long long>(*lifetime);
  if (now > expires_at) {
    return error(http::status::forbidden, "AccessDenied", "Request has expired",
                 {{"X-Amz-Expires", *expires},
                  {"Expires", amz_date(expires_at)},
                  {"ServerTime", amz_date(now)}});
  }

  // --- The object
  std::shared_ptr<const Object> object;
  bool bucket_exists = false;
  {
    std::lock_guard<std::mutex> lock(mutex);
    const auto it = objects.find(id);
    if (it != objects.end()) {
      object = it->second;
      bucket_exists = true;
    } else {
      const auto lb = objects.lower_bound(ObjectId{id.first, std::string()});
      bucket_exists = lb != objects.end() && lb->first.first == id.first;
    }
  }
  if (!bucket_exists) {
    return error(http::status::not_found, "NoSuchBucket", "The specified bucket does not exist",
                 {{"BucketName", id.first}});
  }
  if (!object) {
    return error(http::status::not_found, "NoSuchKey", "The specified key does not exist.",
                 {{"Key", id.second}});
  }

  auto base_response = [&](http::status status) {
    http::response<http::empty_body> res{status, req.version() == 10 ? 10 : 11};
    res.set(http::field::server, "AmazonS3");
    res.set(http::field::date, http_date(clock->now_seconds()));
    res.set("x-amz-request-id", request_id);
    res.set(http::field::etag, object->etag);
    res.set(http::field::last_modified, object->last_modified);
    res.set(http::field::accept_ranges, "bytes");
    return res;
  };
  auto write_head = [&](http::response<http::empty_body>& res) {
    ErrorCode ec;
    http::response_serializer<http::empty_body> sr{res};
    http::write_header(stream, sr, ec);
    return !ec;
  };

  // --- Conditions (RFC 7232 order: If-Match, then If-None-Match)
  if (const auto it = req.find(http::field::if_match);
      it != req.end() && !etag_list_matches(it->value(), object->etag)) {
    return error(http::status::precondition_failed, "PreconditionFailed",
                 "At least one of the pre-conditions you specified did not hold",
                 {{"Condition", "If-Match"}});
  }
  if (const auto it = req.find(http::field::if_none_match);
      it != req.end() && etag_list_matches(it->value(), object->etag)) {
    auto res = base_response(http::status::not_modified);
    res.keep_alive(keep_alive);
    if (!write_head(res)) {
      return Outcome::Abort;
    }
    return keep_alive ? Outcome::KeepAlive : Outcome::Close;
  }

  // --- Range / If-Range
  ByteRange range;
  if (const auto it = req.find(http::field::range); it != req.end()) {
    bool honour = true;
    if (const auto ir = req.find(http::field::if_range); ir != req.end()) {
      const std::string v = trim_ows(ir->value());
      honour = v == object->etag || v == object->last_modified;  // strong comparison only
    }
    if (honour) {
      range = parse_range(it->value(), object->size);
    }
  }

  // --- Fault for this GET
  std::optional<S3Fault> fault;
  if (is_get) {
    std::lock_guard<std::mutex> lock(mutex);
    auto& state = states[id];
    if (!state.faults.empty()) {
      fault = state.faults.front();
      if (state.faults.front().times > 0 && --state.faults.front().times == 0) {
        state.faults.pop_front();
      }
      ++state.stats.faulted_requests;
    }
  }
  if (fault && fault->stall_ms && !fault->stall_after_bytes) {
    if (sleep_for(std::chrono::milliseconds(*fault->stall_ms))) {
      return Outcome::Abort;
    }
  }
  if (fault && fault->error_status) {
    const int status = *fault->error_status;
    return error(static_cast<http::status>(status), error_code_for(status),
                 status == 503 ? "Please reduce your request rate."
                               : "We encountered an internal error. Please try again.");
  }
  if (fault && fault->ignore_range && range.kind != ByteRange::Kind::None) {
    range = ByteRange{};
  }

  if (range.kind == ByteRange::Kind::Unsatisfiable) {
    return error(http::status::range_not_satisfiable, "InvalidRange",
                 "The requested range is not satisfiable",
                 {{"RangeRequested", std::string(req[http::field::range])},
                  {"ActualObjectSize", std::to_string(object->size)},
                  {"Content-Range", "bytes */" + std::to_string(object->size)}});
  }

  uint64_t first = 0;
  uint64_t length = object->size;
  auto res =
      base_response(range.kind == ByteRange::Kind::Satisfiable ? http::status::partial_content
                                                               : http::status::ok);
  if (range.kind == ByteRange::Kind::Satisfiable) {
    first = range.first;
    length = range.last - range.first + 1;
    res.set(http::field::content_range, "bytes " + std::to_string(range.first) + "-" +
                                            std::to_string(range.last) + "/" +
                                            std::to_string(object->size));
  }
  res.set(http::field::content_type, "binary/octet-stream");
  res.content_length(length);
  const bool closes = fault && (fault->close_after_bytes || fault->reset_after_bytes);
  res.keep_alive(keep_alive && !closes);

  if (!is_get) {
    if (!write_head(res)) {
      return Outcome::Abort;
    }
    return keep_alive ? Outcome::KeepAlive : Outcome::Close;
  }
  // A file object that vanished is the server's fault: 500 before any header went out.
  if (!object->data && ::access(object->file.c_str(), R_OK) != 0) {
    return error(http::status::internal_server_error, "InternalError",
                 "The emulator cannot read the object's file.");
  }
  if (!write_head(res)) {
    return Outcome::Abort;
  }
  return stream_body(stream, socket, *object, id, first, length, fault, keep_alive);
}

template <class Stream>
Outcome S3Server::Impl::stream_body(Stream& stream, tcp::socket& /*socket*/, const Object& object,
                                    const ObjectId& id, uint64_t first, uint64_t length,
                                    const std::optional<S3Fault>& fault, bool keep_alive) {
  // How the response ends.
  uint64_t limit = length;
  Outcome end = keep_alive ? Outcome::KeepAlive : Outcome::Close;
  if (fault && fault->close_after_bytes) {
    limit = std::min(limit, *fault->close_after_bytes);
    end = Outcome::Close;
  }
  if (fault && fault->reset_after_bytes && *fault->reset_after_bytes <= limit) {
    limit = *fault->reset_after_bytes;
    end = Outcome::Reset;
  }
  bool stall_pending = fault && fault->stall_ms && fault->stall_after_bytes;
  const uint64_t stall_at = stall_pending ? *fault->stall_after_bytes : 0;
  const int stall_ms = stall_pending ? *fault->stall_ms : 0;
  const uint64_t rate =
      fault && fault->rate_limit_bytes_per_second ? *fault->rate_limit_bytes_per_second : 0;
  std::size_t chunk = kBodyChunk;
  if (rate > 0) {
    chunk = static_cast<std::size_t>(std::clamp<uint64_t>(rate / 20, 1, kBodyChunk));
  }

  int fd = -1;
  if (!object.data) {
    fd = ::open(object.file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      return Outcome::Abort;  // headers are out: all we can do is cut
    }
  }
  struct FdCloser {
    int fd;
    ~FdCloser() {
      if (fd >= 0) {
        ::close(fd);
      }
    }
  } closer{fd};

  chunk = static_cast<std::size_t>(std::clamp<uint64_t>(limit, 1, chunk));
  std::vector<char> buf(chunk);
  const auto start = std::chrono::steady_clock::now();
  uint64_t sent = 0;
  while (sent < limit) {
    if (stall_pending && sent == stall_at) {
      stall_pending = false;
      if (sleep_for(std::chrono::milliseconds(stall_ms))) {
        return Outcome::Abort;
      }
    }
    uint64_t n = std::min<uint64_t>(chunk, limit - sent);
    if (stall_pending && stall_at > sent) {
      n = std::min<uint64_t>(n, stall_at - sent);
    }
    const uint64_t offset = first + sent;
    if constexpr (std::is_same_v<Stream, tcp::socket>) {
      // Plain HTTP from a file with nothing to alter: let the kernel copy (saturates loopback).
      if (!object.data && !(fault && fault->corrupt_offset)) {
        off_t file_offset = static_cast<off_t>(offset);
        const ssize_t r = ::sendfile(stream.native_handle(), fd, &file_offset, n);
        if (r < 0 && errno == EINTR) {
          continue;
        }
        if (r <= 0) {
          return Outcome::Abort;  // peer gone, stopping, or the file shrank
        }
        sent += static_cast<uint64_t>(r);
        add_body_bytes(id, static_cast<uint64_t>(r));
        if (rate > 0 && pace(start, sent, rate)) {
          return Outcome::Abort;
        }
        continue;
      }
    }
    if (object.data) {
      std::memcpy(buf.data(), object.data->data() + offset, n);
    } else {
      uint64_t got = 0;
      while (got < n) {
        const ssize_t r = ::pread(fd, buf.data() + got, n - got, static_cast<off_t>(offset + got));
        if (r < 0 && errno == EINTR) {
          continue;
        }
        if (r <= 0) {
          return Outcome::Abort;  // file shrank or I/O error
        }
        got += static_cast<uint64_t>(r);
      }
    }
    if (fault && fault->corrupt_offset && *fault->corrupt_offset >= offset &&
        *fault->corrupt_offset < offset + n) {
      buf[*fault->corrupt_offset - offset] ^= static_cast<char>(0xff);
    }
    ErrorCode ec;
    net::write(stream, net::buffer(buf.data(), n), ec);
    if (ec) {
      return Outcome::Abort;
    }
    sent += n;
    add_body_bytes(id, n);
    if (rate > 0 && pace(start, sent, rate)) {
      return Outcome::Abort;
    }
  }
  if (stall_pending && sent == stall_at) {
    // Stall point at the very end of what is sent: still honoured before the response ends.
    if (sleep_for(std::chrono::milliseconds(stall_ms))) {
      return Outcome::Abort;
    }
  }
  return end;
}

// ---------------------------------------------------------------------------------------------

S3Server::S3Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

S3Server::~S3Server() = default;

Result<std::unique_ptr<S3Server>> S3Server::start(S3Options options) {
  auto impl = std::make_unique<Impl>();
  impl->clock = options.clock ? options.clock : std::make_shared<const Clock>();
  impl->secret = options.secret;
  if (impl->secret.empty()) {
    unsigned char key[32];
    if (RAND_bytes(key, sizeof key) != 1) {
      return fail("s3 emulator: no random bytes for a key");
    }
    impl->secret = to_hex(key, sizeof key);
  }

  std::string address = options.bind_address.empty() ? "127.0.0.1" : options.bind_address;
  if (address == "localhost") {
    address = "127.0.0.1";
  }
  if (address.size() > 2 && address.front() == '[' && address.back() == ']') {
    address = address.substr(1, address.size() - 2);
  }
  ErrorCode ec;
  const auto ip = net::ip::make_address(address, ec);
  if (ec) {
    return fail("s3 emulator: bad bind address '" + options.bind_address + "'");
  }
  if (!ip.is_loopback()) {
    return fail("s3 emulator: refusing to bind to " + address +
                ": only loopback addresses (127.0.0.0/8, ::1) are allowed");
  }
  impl->url_host = ip.is_v6() ? "[" + ip.to_string() + "]" : ip.to_string();

  if (options.cert_file.empty() != options.key_file.empty()) {
    return fail("s3 emulator: HTTPS needs both cert_file and key_file");
  }
  if (!options.cert_file.empty()) {
    auto ctx = std::make_unique<ssl::context>(ssl::context::tls_server);
    ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                         ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1,
                     ec);
    ctx->use_certificate_chain_file(options.cert_file, ec);
    if (ec) {
      return fail("s3 emulator: cannot use certificate " + options.cert_file + ": " + ec.message());
    }
    ctx->use_private_key_file(options.key_file, ssl::context::pem, ec);
    if (ec) {
      return fail("s3 emulator: cannot use key " + options.key_file + ": " + ec.message());
    }
    if (SSL_CTX_check_private_key(ctx->native_handle()) != 1) {
      return fail("s3 emulator: key " + options.key_file + " does not match certificate " +
                  options.cert_file);
    }
    impl->tls = std::move(ctx);
  }

  const tcp::endpoint endpoint(ip, options.port);
  impl->acceptor.open(endpoint.protocol(), ec);
  if (!ec) {
    impl->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  }
  if (!ec) {
    impl->acceptor.bind(endpoint, ec);
  }
  if (!ec) {
    impl->acceptor.listen(net::socket_base::max_listen_connections, ec);
  }
  if (ec) {
    return fail("s3 emulator: cannot listen on " + impl->url_host + ":" +
                std::to_string(options.port) + ": " + ec.message());
  }
  impl->port = impl->acceptor.local_endpoint(ec).port();
  impl->options = std::move(options);
  impl->do_accept();
  Impl* raw = impl.get();
  impl->accept_thread = std::thread([raw] { raw->ioc.run(); });
  return std::unique_ptr<S3Server>(new S3Server(std::move(impl)));
}

uint16_t S3Server::port() const {
  return impl_->port;
}

bool S3Server::https() const {
  return impl_->tls != nullptr;
}

std::string S3Server::endpoint() const {
  return std::string(impl_->tls ? "https://" : "http://") + impl_->url_host + ":" +
         std::to_string(impl_->port);
}

namespace {
Status check_names(const std::string& bucket, const std::string& key) {
  if (bucket.empty() || bucket.find('/') != std::string::npos) {
    return fail("s3 emulator: invalid bucket name '" + bucket + "'");
  }
  if (key.empty() || key.size() > 1024) {
    return fail("s3 emulator: invalid key '" + key + "'");
  }
  return {};
}
}  // namespace

Status S3Server::put_object(const std::string& bucket, const std::string& key, std::string data) {
  if (auto ok = check_names(bucket, key); !ok) {
    return ok;
  }
  auto object = std::make_shared<Object>();
  object->etag = md5_quoted(data);
  object->size = data.size();
  object->data = std::make_shared<const std::string>(std::move(data));
  object->last_modified = http_date(impl_->clock->now_seconds());
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->objects[ObjectId{bucket, key}] = std::move(object);
  return {};
}

Status S3Server::put_object_file(const std::string& bucket, const std::string& key,
                                 const std::filesystem::path& file) {
  if (auto ok = check_names(bucket, key); !ok) {
    return ok;
  }
  std::error_code fec;
  if (!std::filesystem::is_regular_file(file, fec)) {
    return fail("s3 emulator: " + file.string() + " is not a regular file");
  }
  auto object = std::make_shared<Object>();
  object->file = std::filesystem::absolute(file, fec);
  auto etag = md5_quoted_of_file(object->file, object->size);
  if (!etag) {
    return fail(etag.error().context("s3 emulator"));
  }
  object->etag = std::move(*etag);
  object->last_modified = http_date(impl_->clock->now_seconds());
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->objects[ObjectId{bucket, key}] = std::move(object);
  return {};
}

bool S3Server::delete_object(const std::string& bucket, const std::string& key) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->objects.erase(ObjectId{bucket, key}) > 0;
}

std::optional<std::string> S3Server::etag(const std::string& bucket, const std::string& key) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  const auto it = impl_->objects.find(ObjectId{bucket, key});
  if (it == impl_->objects.end()) {
    return std::nullopt;
  }
  return it->second->etag;
}

std::string S3Server::presign(const std::string& bucket, const std::string& key,
                              std::chrono::seconds expiry) const {
  const long long expires = std::clamp<long long>(expiry.count(), 1, kMaxExpirySeconds);
  const long long now = impl_->clock->now_seconds();
  const std::string date = amz_date(now);
  const std::string credential =
      std::string(kCredential) + "/" + date.substr(0, 8) + "/" + kRegion + "/s3/aws4_request";
  const std::string signature =
      hmac_sha256_hex(impl_->secret, string_to_sign(bucket, key, date, expires));
  return endpoint() + "/" + uri_encode(bucket, false) + "/" + uri_encode(key, true) +
         "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=" + uri_encode(credential, false) +
         "&X-Amz-Date=" + date + "&X-Amz-Expires=" + std::to_string(expires) +
         "&X-Amz-SignedHeaders=host&X-Amz-Signature=" + signature;
}

Status S3Server::add_fault(const std::string& bucket, const std::string& key, S3Fault fault) {
  if (fault.times == 0 || fault.times < -1) {
    return fail("s3 emulator: fault 'times' must be positive or -1 (always)");
  }
  if (fault.error_status && (*fault.error_status < 400 || *fault.error_status > 599)) {
    return fail("s3 emulator: fault error_status must be 400..599");
  }
  if (fault.stall_ms && (*fault.stall_ms < 0 || *fault.stall_ms > 600000)) {
    return fail("s3 emulator: fault stall_ms must be 0..600000");
  }
  if (fault.stall_after_bytes && !fault.stall_ms) {
    return fail("s3 emulator: fault stall_after_bytes needs stall_ms");
  }
  if (fault.rate_limit_bytes_per_second && *fault.rate_limit_bytes_per_second == 0) {
    return fail("s3 emulator: fault rate_limit_bytes_per_second must be positive");
  }
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->states[ObjectId{bucket, key}].faults.push_back(fault);
  return {};
}

void S3Server::clear_faults() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  for (auto& [id, state] : impl_->states) {
    state.faults.clear();
  }
}

S3ObjectStats S3Server::stats(const std::string& bucket, const std::string& key) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  const auto it = impl_->states.find(ObjectId{bucket, key});
  return it == impl_->states.end() ? S3ObjectStats{} : it->second.stats;
}

// ---------------------------------------------------------------------------------------------

Result<S3ObjectRef> parse_s3_object_url(std::string_view url) {
  const auto bad = [&](const std::string& why) {
    return fail("not an S3 object URL (" + why + ")");
  };
  std::string_view rest;
  bool s3_scheme = false;
  if (url.rfind("https://", 0) == 0) {
    rest = url.substr(8);
  } else if (url.rfind("http://", 0) == 0) {
    rest = url.substr(7);
  } else if (url.rfind("s3://", 0) == 0) {
    rest = url.substr(5);
    s3_scheme = true;
  } else {
    return bad("expected https:// or s3://");
  }
  rest = rest.substr(0, rest.find_first_of("?#"));
  const auto slash = rest.find('/');
  if (slash == std::string_view::npos) {
    return bad("no object path");
  }
  const std::string_view host = rest.substr(0, slash);
  const auto path = percent_decode(rest.substr(slash + 1));
  if (!path) {
    return bad("bad percent-encoding");
  }

  S3ObjectRef ref;
  auto ends_with = [](std::string_view s, std::string_view suffix) {
    return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
  };
  if (s3_scheme) {
    ref.bucket = std::string(host);
    ref.key = *path;
  } else {
    if (!ends_with(host, ".amazonaws.com")) {
      return bad("host is not *.amazonaws.com");
    }
    const std::string_view sub = host.substr(0, host.size() - 14);  // before .amazonaws.com
    if (sub == "s3" || (sub.rfind("s3.", 0) == 0 && sub.find('.', 3) == std::string_view::npos) ||
        (sub.rfind("s3-", 0) == 0 && sub.find('.') == std::string_view::npos)) {
      // Path style: s3[.region|-region].amazonaws.com/<bucket>/<key>
      const auto p = path->find('/');
      if (p == std::string::npos) {
        return bad("no key after the bucket");
      }
      ref.bucket = path->substr(0, p);
      ref.key = path->substr(p + 1);
    } else {
      // Virtual-hosted style: <bucket>.s3[.region].amazonaws.com/<key>
      const auto marker = sub.rfind(".s3");
      if (marker == std::string_view::npos || marker == 0) {
        return bad("unknown host form");
      }
      const std::string_view after = sub.substr(marker + 3);
      if (!after.empty() && after.front() != '.' && after.front() != '-') {
        return bad("unknown host form");
      }
      ref.bucket = std::string(sub.substr(0, marker));
      ref.key = *path;
    }
  }
  if (ref.bucket.empty() || ref.key.empty()) {
    return bad("empty bucket or key");
  }
  return ref;
}

}  // namespace upparat::emulator
