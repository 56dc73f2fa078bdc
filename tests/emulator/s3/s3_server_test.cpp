#include "emulator/s3/s3_server.hpp"
#include "support/binaries.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <thread>

#include <curl/curl.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>

namespace upparat::emulator {
namespace {

using namespace std::chrono_literals;
using Clock_ = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// Helpers

class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "s3test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      std::abort();
    }
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

struct CurlGlobal {
  CurlGlobal() { curl_global_init(CURL_GLOBAL_DEFAULT); }
  ~CurlGlobal() { curl_global_cleanup(); }
};
const CurlGlobal curl_global;

struct Request {
  bool head = false;
  std::string range;  // "0-9" etc.
  std::vector<std::string> headers;
  std::string ca_file;  // empty = curl's default trust store
  long timeout_ms = 20000;
};

struct Response {
  CURLcode code = CURLE_OK;
  long status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string error;
  double seconds = 0;
  long connects = 0;
};

size_t write_body(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

size_t write_header(char* data, size_t size, size_t n, void* user) {
  auto* headers = static_cast<std::map<std::string, std::string>*>(user);
  std::string line(data, size * n);
  const auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    for (auto& c : name) {
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    std::string value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ')) {
      value.erase(0, 1);
    }
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n')) {
      value.pop_back();
    }
    (*headers)[name] = value;
  }
  return size * n;
}

Response perform(CURL* curl, const std::string& url, const Request& req = {}) {
  Response res;
  char error[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_NOBODY, req.head ? 1L : 0L);
  if (!req.head) {
    curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
  }
  curl_easy_setopt(curl, CURLOPT_RANGE, req.range.empty() ? nullptr : req.range.c_str());
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, write_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &res.body);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, write_header);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &res.headers);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, req.timeout_ms);
  curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
  if (!req.ca_file.empty()) {
    curl_easy_setopt(curl, CURLOPT_CAINFO, req.ca_file.c_str());
  }
  curl_slist* list = nullptr;
  for (const auto& h : req.headers) {
    list = curl_slist_append(list, h.c_str());
  }
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
  const auto start = Clock_::now();
  res.code = curl_easy_perform(curl);
  res.seconds = std::chrono::duration<double>(Clock_::now() - start).count();
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &res.status);
  curl_easy_getinfo(curl, CURLINFO_NUM_CONNECTS, &res.connects);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, nullptr);
  curl_slist_free_all(list);
  res.error = error;
  return res;
}

Response fetch(const std::string& url, const Request& req = {}) {
  CURL* curl = curl_easy_init();
  Response res = perform(curl, url, req);
  curl_easy_cleanup(curl);
  return res;
}

std::string md5_hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_md5(), nullptr);
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out.push_back(kDigits[md[i] >> 4]);
    out.push_back(kDigits[md[i] & 15]);
  }
  return out;
}

std::string random_bytes(size_t n, unsigned seed = 42) {
  std::mt19937 gen(seed);
  std::string s(n, '\0');
  for (auto& c : s) {
    c = static_cast<char>(gen() & 0xff);
  }
  return s;
}

/// Replaces the value of one query parameter.
std::string with_param(const std::string& url, const std::string& name, const std::string& value) {
  const auto pos = url.find(name + "=");
  if (pos == std::string::npos) {
    return url;
  }
  const auto start = pos + name.size() + 1;
  const auto end = url.find('&', start);
  return url.substr(0, start) + value + (end == std::string::npos ? "" : url.substr(end));
}

// A raw TCP exchange: sends `data` and EOF, returns everything read until the server closes
// (or 5 s pass).
std::string raw_exchange(uint16_t port, const std::string& data) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return "<connect failed>";
  }
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) {
      break;
    }
    off += static_cast<size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);  // nothing more to come: the server sees EOF
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      break;
    }
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Fixture: a plain-HTTP server on an advanceable clock, with one 100 KiB object.

class S3ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    clock_ = std::make_shared<Clock>();
    S3Options options;
    options.clock = clock_;
    auto server = S3Server::start(options);
    ASSERT_TRUE(server) << server.error().message();
    server_ = std::move(*server);
    body_ = random_bytes(100 * 1024);
    ASSERT_TRUE(server_->put_object("firmware", "v1/image.bin", body_));
  }
  std::string url(std::chrono::seconds expiry = 3600s) const {
    return server_->presign("firmware", "v1/image.bin", expiry);
  }
  Status fault(S3Fault f) { return server_->add_fault("firmware", "v1/image.bin", f); }

  std::shared_ptr<Clock> clock_;
  std::unique_ptr<S3Server> server_;
  std::string body_;
};

// ---------------------------------------------------------------------------------------------
// Signatures

TEST_F(S3ServerTest, SignedUrlServesObjectWithS3Headers) {
  const std::string u = url();
  EXPECT_EQ(
      u.rfind(server_->endpoint() + "/firmware/v1/image.bin?X-Amz-Algorithm=AWS4-HMAC-SHA256", 0),
      0u)
      << u;
  for (const char* p : {"X-Amz-Credential=", "X-Amz-Date=", "X-Amz-Expires=3600",
                        "X-Amz-SignedHeaders=host", "X-Amz-Signature="}) {
    EXPECT_NE(u.find(p), std::string::npos) << p;
  }
  const auto res = fetch(u);
  ASSERT_EQ(res.code, CURLE_OK) << res.error;
  EXPECT_EQ(res.status, 200);
  EXPECT_EQ(res.body, body_);
  EXPECT_EQ(res.headers.at("etag"), "\"" + md5_hex(body_) + "\"");
  EXPECT_EQ(server_->etag("firmware", "v1/image.bin"), res.headers.at("etag"));
  EXPECT_EQ(res.headers.at("content-length"), std::to_string(body_.size()));
  EXPECT_EQ(res.headers.at("accept-ranges"), "bytes");
  EXPECT_NE(res.headers.at("last-modified").find(" GMT"), std::string::npos);
  const auto stats = server_->stats("firmware", "v1/image.bin");
  EXPECT_EQ(stats.requests, 1u);
  EXPECT_EQ(stats.get_requests, 1u);
  // The server counts a chunk once its write returned, which can be after curl has it all.
  const auto deadline = Clock_::now() + 5s;
  while (server_->stats("firmware", "v1/image.bin").body_bytes_sent < body_.size() &&
         Clock_::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(server_->stats("firmware", "v1/image.bin").body_bytes_sent, body_.size());
  EXPECT_EQ(server_->endpoint(), "http://127.0.0.1:" + std::to_string(server_->port()));
}

TEST_F(S3ServerTest, ForgedSignatureIsRefusedWith403) {
  const std::string u = url();
  const auto sig_pos = u.find("X-Amz-Signature=") + 16;
  std::string forged = u;
  forged[sig_pos] = forged[sig_pos] == 'a' ? 'b' : 'a';
  auto res = fetch(forged);
  ASSERT_EQ(res.code, CURLE_OK) << res.error;
  EXPECT_EQ(res.status, 403);
  EXPECT_NE(res.body.find("<Code>SignatureDoesNotMatch</Code>"), std::string::npos) << res.body;
  EXPECT_EQ(res.headers.at("content-type"), "application/xml");

  // Stretching the lifetime breaks the signature too.
  res = fetch(with_param(u, "X-Amz-Expires", "7200"));
  EXPECT_EQ(res.status, 403);
  // So does using one object's signature for another object.
  ASSERT_TRUE(server_->put_object("firmware", "other.bin", "secret"));
  std::string other = u;
  other.replace(other.find("v1/image.bin"), 12, "other.bin");
  res = fetch(other);
  EXPECT_EQ(res.status, 403);
  EXPECT_EQ(res.body.find("secret"), std::string::npos);
  // No signature at all.
  res = fetch(server_->endpoint() + "/firmware/v1/image.bin");
  EXPECT_EQ(res.status, 403);
  EXPECT_NE(res.body.find("<Code>AccessDenied</Code>"), std::string::npos) << res.body;
  // A URL of another server (another secret).
  auto second = S3Server::start({});
  ASSERT_TRUE(second);
  res = fetch(with_param(
      u, "X-Amz-Signature",
      (*second)
          ->presign("firmware", "v1/image.bin", 3600s)
          .substr((*second)->presign("firmware", "v1/image.bin", 3600s).find("X-Amz-Signature=") +
                  16)));
  EXPECT_EQ(res.status, 403);
  // Malformed authentication parameters: 400 as S3.
  res = fetch(with_param(u, "X-Amz-Date", "yesterday"));
  EXPECT_EQ(res.status, 400);
  EXPECT_NE(res.body.find("AuthorizationQueryParametersError"), std::string::npos);
  res = fetch(with_param(u, "X-Amz-Expires", "604801"));
  EXPECT_EQ(res.status, 400);
  EXPECT_EQ(server_->stats("firmware", "v1/image.bin").body_bytes_sent, 0u);
}

TEST_F(S3ServerTest, ExpiredUrlIsRefusedWith403AndANewOneWorks) {
  const std::string u = url(60s);
  EXPECT_NE(u.find("X-Amz-Expires=60&"), std::string::npos);
  EXPECT_EQ(fetch(u).status, 200);
  clock_->advance(59s);
  EXPECT_EQ(fetch(u).status, 200);
  clock_->advance(2s);
  const auto res = fetch(u);
  EXPECT_EQ(res.status, 403);
  EXPECT_NE(res.body.find("<Code>AccessDenied</Code>"), std::string::npos) << res.body;
  EXPECT_NE(res.body.find("<Message>Request has expired</Message>"), std::string::npos);
  const std::string fresh = url(60s);
  EXPECT_NE(fresh, u);
  EXPECT_EQ(fetch(fresh).status, 200);
}

TEST_F(S3ServerTest, UnknownObjectWithValidSignatureIs404) {
  auto res = fetch(server_->presign("firmware", "missing.bin", 60s));
  EXPECT_EQ(res.status, 404);
  EXPECT_NE(res.body.find("<Code>NoSuchKey</Code>"), std::string::npos) << res.body;
  EXPECT_NE(res.body.find("<Key>missing.bin</Key>"), std::string::npos) << res.body;
  res = fetch(server_->presign("nobucket", "x", 60s));
  EXPECT_EQ(res.status, 404);
  EXPECT_NE(res.body.find("<Code>NoSuchBucket</Code>"), std::string::npos) << res.body;
  // Deleted objects disappear; HEAD gets the status without a body.
  EXPECT_TRUE(server_->delete_object("firmware", "v1/image.bin"));
  EXPECT_FALSE(server_->delete_object("firmware", "v1/image.bin"));
  Request head;
  head.head = true;
  EXPECT_EQ(fetch(url(), head).status, 404);
}

TEST_F(S3ServerTest, KeysWithSpecialCharactersAreEncoded) {
  const std::string key = "dir/a file+plus%&=?#\xc3\xa4.bin";
  ASSERT_TRUE(server_->put_object("firmware", key, "payload"));
  const auto res = fetch(server_->presign("firmware", key, 60s));
  EXPECT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(res.body, "payload");
}

// ---------------------------------------------------------------------------------------------
// Ranges, conditions, HEAD

TEST_F(S3ServerTest, RangesGive206WithContentRange) {
  const std::string size = std::to_string(body_.size());
  struct Case {
    std::string range;
    size_t first, last;
  };
  for (const Case& c :
       {Case{"0-9", 0, 9}, Case{"100-", 100, body_.size() - 1},
        Case{"-10", body_.size() - 10, body_.size() - 1}, Case{"-999999", 0, body_.size() - 1},
        Case{"1000-999999", 1000, body_.size() - 1}, Case{"102399-102399", 102399, 102399}}) {
    Request r;
    r.range = c.range;
    const auto res = fetch(url(), r);
    ASSERT_EQ(res.code, CURLE_OK) << c.range << ": " << res.error;
    EXPECT_EQ(res.status, 206) << c.range;
    EXPECT_EQ(res.headers.at("content-range"),
              "bytes " + std::to_string(c.first) + "-" + std::to_string(c.last) + "/" + size)
        << c.range;
    EXPECT_EQ(res.body, body_.substr(c.first, c.last - c.first + 1)) << c.range;
  }
}

TEST_F(S3ServerTest, UnsatisfiableRangeGives416) {
  for (const std::string range : {"102400-", "200000-300000", "-0"}) {
    Request r;
    r.range = range;
    const auto res = fetch(url(), r);
    EXPECT_EQ(res.status, 416) << range;
    EXPECT_EQ(res.headers.at("content-range"), "bytes */102400") << range;
    EXPECT_NE(res.body.find("<Code>InvalidRange</Code>"), std::string::npos) << res.body;
  }
  // Syntactically invalid or multiple ranges are ignored: the whole body.
  for (const std::string range : {"9-1", "x-y", "0-1,5-6"}) {
    Request r;
    r.range = range;
    const auto res = fetch(url(), r);
    EXPECT_EQ(res.status, 200) << range;
    EXPECT_EQ(res.body.size(), body_.size()) << range;
  }
}

TEST_F(S3ServerTest, IfRangeHonoursRangeOnlyForTheCurrentETag) {
  const std::string etag = *server_->etag("firmware", "v1/image.bin");
  Request r;
  r.range = "10-19";
  r.headers = {"If-Range: " + etag};
  auto res = fetch(url(), r);
  EXPECT_EQ(res.status, 206);
  EXPECT_EQ(res.body, body_.substr(10, 10));

  r.headers = {"If-Range: \"0123456789abcdef0123456789abcdef\""};
  res = fetch(url(), r);
  EXPECT_EQ(res.status, 200);
  EXPECT_EQ(res.body, body_);

  // The object changed under the client: its old ETag no longer matches.
  const std::string v2 = random_bytes(5000, 7);
  ASSERT_TRUE(server_->put_object("firmware", "v1/image.bin", v2));
  r.headers = {"If-Range: " + etag};
  res = fetch(url(), r);
  EXPECT_EQ(res.status, 200);
  EXPECT_EQ(res.body, v2);
  // If-Match / If-None-Match.
  Request m;
  m.headers = {"If-Match: " + etag};
  EXPECT_EQ(fetch(url(), m).status, 412);
  m.headers = {"If-None-Match: " + *server_->etag("firmware", "v1/image.bin")};
  EXPECT_EQ(fetch(url(), m).status, 304);
}

TEST_F(S3ServerTest, HeadReturnsHeadersWithoutBody) {
  Request r;
  r.head = true;
  auto res = fetch(url(), r);
  ASSERT_EQ(res.code, CURLE_OK) << res.error;
  EXPECT_EQ(res.status, 200);
  EXPECT_TRUE(res.body.empty());
  EXPECT_EQ(res.headers.at("content-length"), std::to_string(body_.size()));
  EXPECT_EQ(res.headers.at("etag"), "\"" + md5_hex(body_) + "\"");
  r.range = "5-";
  res = fetch(url(), r);
  EXPECT_EQ(res.status, 206);
  EXPECT_EQ(res.headers.at("content-range"), "bytes 5-102399/102400");
  EXPECT_EQ(server_->stats("firmware", "v1/image.bin").body_bytes_sent, 0u);
  EXPECT_EQ(server_->stats("firmware", "v1/image.bin").requests, 2u);
  EXPECT_EQ(server_->stats("firmware", "v1/image.bin").get_requests, 0u);
}

TEST_F(S3ServerTest, KeepAliveReusesTheConnection) {
  CURL* curl = curl_easy_init();
  auto a = perform(curl, url());
  auto b = perform(curl, url());
  Request head;
  head.head = true;
  auto c = perform(curl, url(), head);
  curl_easy_cleanup(curl);
  EXPECT_EQ(a.status, 200);
  EXPECT_EQ(b.status, 200);
  EXPECT_EQ(c.status, 200);
  EXPECT_EQ(a.connects, 1);
  EXPECT_EQ(b.connects, 0);
  EXPECT_EQ(c.connects, 0);
  EXPECT_EQ(b.body, body_);
}

// ---------------------------------------------------------------------------------------------
// Faults

TEST_F(S3ServerTest, CloseAfterBytesEndsWithFinAndAShortBody) {
  S3Fault f;
  f.close_after_bytes = 1000;
  ASSERT_TRUE(fault(f));
  auto res = fetch(url());
  EXPECT_EQ(res.code, CURLE_PARTIAL_FILE) << res.error;
  EXPECT_EQ(res.body, body_.substr(0, 1000));
  // Once only: the next GET is whole.
  res = fetch(url());
  EXPECT_EQ(res.code, CURLE_OK);
  EXPECT_EQ(res.body, body_);
  EXPECT_EQ(server_->stats("firmware", "v1/image.bin").faulted_requests, 1u);
}

TEST_F(S3ServerTest, ResetAfterBytesEndsWithRst) {
  S3Fault f;
  f.reset_after_bytes = 5000;
  f.times = 2;
  ASSERT_TRUE(fault(f));
  for (int i = 0; i < 2; ++i) {
    const auto res = fetch(url());
    EXPECT_EQ(res.code, CURLE_RECV_ERROR) << res.error;
    EXPECT_NE(res.error.find("reset"), std::string::npos) << res.error;
    EXPECT_EQ(res.body, body_.substr(0, 5000));
  }
  EXPECT_EQ(fetch(url()).code, CURLE_OK);
}

TEST_F(S3ServerTest, StallBeforeHeadersDelaysTheResponse) {
  S3Fault f;
  f.stall_ms = 1500;
  ASSERT_TRUE(fault(f));
  const auto res = fetch(url());
  EXPECT_EQ(res.code, CURLE_OK) << res.error;
  EXPECT_EQ(res.body, body_);
  EXPECT_GE(res.seconds, 1.4);
}

TEST_F(S3ServerTest, StallMidBodyTripsAClientTimeout) {
  S3Fault f;
  f.stall_ms = 10000;
  f.stall_after_bytes = 4096;
  ASSERT_TRUE(fault(f));
  Request r;
  r.timeout_ms = 1000;
  const auto res = fetch(url(), r);
  EXPECT_EQ(res.code, CURLE_OPERATION_TIMEDOUT) << res.error;
  EXPECT_EQ(res.status, 200);
  EXPECT_EQ(res.body, body_.substr(0, 4096));
  EXPECT_LT(res.seconds, 5.0);
}

TEST_F(S3ServerTest, ErrorStatusNTimesThenTheObject) {
  S3Fault f;
  f.error_status = 503;
  f.times = 2;
  ASSERT_TRUE(fault(f));
  CURL* curl = curl_easy_init();  // one connection: the 503s keep it alive
  auto a = perform(curl, url());
  auto b = perform(curl, url());
  auto c = perform(curl, url());
  curl_easy_cleanup(curl);
  EXPECT_EQ(a.status, 503);
  EXPECT_NE(a.body.find("<Code>SlowDown</Code>"), std::string::npos) << a.body;
  EXPECT_EQ(b.status, 503);
  EXPECT_EQ(c.status, 200);
  EXPECT_EQ(c.body, body_);
  EXPECT_EQ(c.connects, 0);

  f.error_status = 500;
  f.times = 1;
  ASSERT_TRUE(fault(f));
  const auto d = fetch(url());
  EXPECT_EQ(d.status, 500);
  EXPECT_NE(d.body.find("<Code>InternalError</Code>"), std::string::npos);
}

TEST_F(S3ServerTest, RateLimitPacesTheBody) {
  S3Fault f;
  f.rate_limit_bytes_per_second = 200 * 1024;  // 100 KiB body: about 0.5 s
  ASSERT_TRUE(fault(f));
  const auto res = fetch(url());
  EXPECT_EQ(res.code, CURLE_OK) << res.error;
  EXPECT_EQ(res.body, body_);
  EXPECT_GE(res.seconds, 0.35);  // the last slice goes out at 0.45 s
  EXPECT_LT(res.seconds, 10.0);
}

TEST_F(S3ServerTest, CorruptOffsetFlipsExactlyOneByte) {
  S3Fault f;
  f.corrupt_offset = 50000;
  f.times = 3;
  ASSERT_TRUE(fault(f));
  auto res = fetch(url());
  ASSERT_EQ(res.body.size(), body_.size());
  std::string expected = body_;
  expected[50000] = static_cast<char>(expected[50000] ^ 0xff);
  EXPECT_EQ(res.body, expected);
  EXPECT_NE(res.headers.at("etag"), "\"" + md5_hex(res.body) + "\"");
  // The offset is absolute: a range covering it is corrupt at the right place...
  Request r;
  r.range = "49990-50009";
  res = fetch(url(), r);
  EXPECT_EQ(res.body, expected.substr(49990, 20));
  // ...and a range that does not cover it is intact.
  r.range = "0-99";
  res = fetch(url(), r);
  EXPECT_EQ(res.body, body_.substr(0, 100));
}

TEST_F(S3ServerTest, IgnoreRangeAnswers200WithTheWholeBody) {
  S3Fault f;
  f.ignore_range = true;
  ASSERT_TRUE(fault(f));
  Request r;
  r.range = "100-199";
  auto res = fetch(url(), r);
  EXPECT_EQ(res.status, 200);
  EXPECT_EQ(res.headers.count("content-range"), 0u);
  EXPECT_EQ(res.body, body_);
  res = fetch(url(), r);
  EXPECT_EQ(res.status, 206);
}

TEST_F(S3ServerTest, FaultsQueueInOrderAndAlwaysFaultsUntilCleared) {
  S3Fault first;
  first.error_status = 500;
  S3Fault second;
  second.close_after_bytes = 10;
  S3Fault always;
  always.error_status = 503;
  always.times = -1;
  ASSERT_TRUE(fault(first));
  ASSERT_TRUE(fault(second));
  ASSERT_TRUE(fault(always));
  EXPECT_EQ(fetch(url()).status, 500);
  EXPECT_EQ(fetch(url()).code, CURLE_PARTIAL_FILE);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(fetch(url()).status, 503);
  }
  // HEAD is never faulted and does not use up faults.
  Request head;
  head.head = true;
  EXPECT_EQ(fetch(url(), head).status, 200);
  server_->clear_faults();
  EXPECT_EQ(fetch(url()).status, 200);
}

TEST_F(S3ServerTest, InvalidFaultsAreRefused) {
  S3Fault f;
  f.times = 0;
  EXPECT_FALSE(fault(f));
  f.times = 1;
  f.error_status = 200;
  EXPECT_FALSE(fault(f));
  f.error_status.reset();
  f.stall_ms = -5;
  EXPECT_FALSE(fault(f));
  f.stall_ms.reset();
  f.rate_limit_bytes_per_second = 0;
  EXPECT_FALSE(fault(f));
  EXPECT_EQ(fetch(url()).status, 200);  // nothing was queued
}

// ---------------------------------------------------------------------------------------------
// Robustness

TEST_F(S3ServerTest, MalformedRequestsGet400AndTheServerCarriesOn) {
  for (const std::string& req :
       {std::string("GARBAGE\r\n\r\n"), std::string("GET /firmware/x HTTP/9.Z\r\n\r\n"),
        std::string("\x01\x02\x03\xff\xfe\r\n\r\n", 10),
        "GET /a HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(40000, 'a') + "\r\n\r\n",
        std::string("GET /a HTTP/1.1\r\nBad Header Without Colon\r\n\r\n")}) {
    const std::string answer = raw_exchange(server_->port(), req);
    EXPECT_EQ(answer.rfind("HTTP/1.1 400", 0), 0u) << answer.substr(0, 200);
  }
  // Wrong methods and paths.
  EXPECT_EQ(raw_exchange(server_->port(),
                         "DELETE /firmware/v1/image.bin HTTP/1.1\r\nHost: x\r\nConnection: "
                         "close\r\n\r\n")
                .rfind("HTTP/1.1 405", 0),
            0u);
  EXPECT_EQ(raw_exchange(server_->port(), "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .rfind("HTTP/1.1 400", 0),
            0u);
  EXPECT_EQ(raw_exchange(server_->port(),
                         "GET /firmware/%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .rfind("HTTP/1.1 400", 0),
            0u);
  // A client that connects and goes away, or sends half a request.
  EXPECT_EQ(raw_exchange(server_->port(), ""), "");
  EXPECT_EQ(raw_exchange(server_->port(), "GET /firmware/v1/image.bin HTT"), "");
  EXPECT_EQ(fetch(url()).status, 200);
}

TEST_F(S3ServerTest, DestructorStopsStalledTransfersPromptly) {
  S3Fault f;
  f.stall_ms = 60000;
  f.stall_after_bytes = 100;
  f.times = -1;
  ASSERT_TRUE(fault(f));
  const std::string u = url();
  Response res;
  std::thread client([&] { res = fetch(u); });
  // Wait until the stalled transfer is under way.
  const auto deadline = Clock_::now() + 10s;
  while (server_->stats("firmware", "v1/image.bin").body_bytes_sent < 100 &&
         Clock_::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  // An idle keep-alive connection too.
  const int idle = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(server_->port());
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(idle, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  const auto start = Clock_::now();
  server_.reset();
  EXPECT_LT(Clock_::now() - start, 5s);
  client.join();
  ::close(idle);
  EXPECT_NE(res.code, CURLE_OK);
  EXPECT_EQ(res.body.size(), 100u);
}

TEST(S3ServerStart, RefusesNonLoopbackAndBadTls) {
  for (const char* address : {"0.0.0.0", "192.0.2.1", "::", "example.com", ""}) {
    S3Options o;
    o.bind_address = address;
    auto s = S3Server::start(o);
    if (std::string(address).empty()) {
      EXPECT_TRUE(s) << "empty = default loopback";
    } else {
      EXPECT_FALSE(s) << address;
    }
  }
  S3Options o;
  o.cert_file = "/nonexistent/cert.pem";
  o.key_file = "/nonexistent/key.pem";
  auto s = S3Server::start(o);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message().find("/nonexistent/cert.pem"), std::string::npos);
  o.key_file.clear();
  EXPECT_FALSE(S3Server::start(o));
  // A taken port.
  auto first = S3Server::start({});
  ASSERT_TRUE(first);
  S3Options same;
  same.port = (*first)->port();
  EXPECT_FALSE(S3Server::start(same));
}

TEST(S3ServerStart, ServesIpv6Loopback) {
  S3Options o;
  o.bind_address = "::1";
  auto s = S3Server::start(o);
  if (!s) {
    UPPARAT_SKIP() << "no IPv6 loopback here: " << s.error().message();
  }
  EXPECT_EQ((*s)->endpoint(), "http://[::1]:" + std::to_string((*s)->port()));
  ASSERT_TRUE((*s)->put_object("b", "k", "six"));
  const auto res = fetch((*s)->presign("b", "k", 60s));
  EXPECT_EQ(res.status, 200) << res.error;
  EXPECT_EQ(res.body, "six");
}

TEST(S3ServerFile, LargeFileIsStreamedWithRanges) {
  TempDir dir;
  const auto file = dir.path() / "big.bin";
  const std::string data = random_bytes(8 * 1024 * 1024 + 123, 3);
  {
    std::ofstream out(file, std::ios::binary);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
  }
  auto server = S3Server::start({});
  ASSERT_TRUE(server);
  auto& s = **server;
  ASSERT_TRUE(s.put_object_file("b", "big.bin", file));
  EXPECT_EQ(*s.etag("b", "big.bin"), "\"" + md5_hex(data) + "\"");
  auto res = fetch(s.presign("b", "big.bin", 60s));
  ASSERT_EQ(res.code, CURLE_OK) << res.error;
  EXPECT_TRUE(res.body == data);
  Request r;
  r.range = "4194000-4194999";
  res = fetch(s.presign("b", "big.bin", 60s), r);
  EXPECT_EQ(res.status, 206);
  EXPECT_TRUE(res.body == data.substr(4194000, 1000));
  S3Fault f;
  f.reset_after_bytes = 3 * 1024 * 1024 + 1;
  ASSERT_TRUE(s.add_fault("b", "big.bin", f));
  res = fetch(s.presign("b", "big.bin", 60s));
  EXPECT_EQ(res.code, CURLE_RECV_ERROR);
  EXPECT_EQ(res.body.size(), 3u * 1024 * 1024 + 1);

  EXPECT_FALSE(s.put_object_file("b", "none", dir.path() / "missing"));
  EXPECT_FALSE(s.put_object_file("b", "dir", dir.path()));
  // A file that vanishes: 500, not a crash.
  std::filesystem::remove(file);
  res = fetch(s.presign("b", "big.bin", 60s));
  EXPECT_EQ(res.status, 500);
}

TEST(S3ServerFile, ClientLeavingMidBodyDoesNotRaiseSigpipe) {
  // The default SIGPIPE action kills the process: the server must not let one reach it.
  struct sigaction old_action {};
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ASSERT_EQ(::sigaction(SIGPIPE, &dfl, &old_action), 0);
  TempDir dir;
  const auto file = dir.path() / "big.bin";
  {
    std::ofstream out(file, std::ios::binary);
    const std::string block = random_bytes(1024 * 1024, 5);
    for (int i = 0; i < 32; ++i) {
      out.write(block.data(), static_cast<std::streamsize>(block.size()));
    }
  }
  auto server = S3Server::start({});
  ASSERT_TRUE(server);
  auto& s = **server;
  ASSERT_TRUE(s.put_object_file("b", "big.bin", file));
  ASSERT_TRUE(s.put_object("b", "mem.bin", random_bytes(32 * 1024 * 1024, 6)));
  for (const char* key : {"big.bin", "mem.bin"}) {
    const std::string u = s.presign("b", key, 60s);
    const std::string target = u.substr(u.find('/', 8));
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(s.port());
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    const std::string req = "GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n";
    ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
    char buf[65536];
    ASSERT_GT(::recv(fd, buf, sizeof buf, MSG_WAITALL), 0);
    ::close(fd);  // with unread data: the server's next writes meet RST / EPIPE
    const auto deadline = Clock_::now() + 10s;
    uint64_t before = 0;
    // Wait until the server stopped sending (its write failed), i.e. it noticed.
    for (;;) {
      std::this_thread::sleep_for(100ms);
      const uint64_t now = s.stats("b", key).body_bytes_sent;
      if (now == before || Clock_::now() > deadline) {
        break;
      }
      before = now;
    }
    EXPECT_LT(s.stats("b", key).body_bytes_sent, 32u * 1024 * 1024) << key;
  }
  EXPECT_EQ(fetch(s.presign("b", "mem.bin", 60s), Request{true, "", {}, "", 20000}).status, 200);
  ::sigaction(SIGPIPE, &old_action, nullptr);
}

// ---------------------------------------------------------------------------------------------
// HTTPS

class S3ServerTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto d = dir_.path().string();
    std::ofstream(dir_.path() / "ext.cnf")
        << "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\n"
           "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n";
    const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    const std::string cmd =
        "cd '" + d + "' && openssl req -x509" + ec +
        " -keyout ca.key -out ca.pem -days 2 -subj '/CN=upparat test CA' && openssl req" + ec +
        " -keyout server.key -out server.csr -subj '/CN=127.0.0.1' && openssl x509 -req -in "
        "server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out "
        "server.pem) >'" +
        d + "/openssl.log' 2>&1";
    if (std::system(("(" + cmd).c_str()) != 0) {
      std::ifstream log(dir_.path() / "openssl.log");
      std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
      FAIL() << "openssl failed: " << text;
    }
    S3Options o;
    o.cert_file = d + "/server.pem";
    o.key_file = d + "/server.key";
    auto s = S3Server::start(o);
    ASSERT_TRUE(s) << s.error().message();
    server_ = std::move(*s);
    ASSERT_TRUE(server_->put_object("b", "k.bin", body_));
    ca_ = d + "/ca.pem";
  }
  TempDir dir_;
  std::unique_ptr<S3Server> server_;
  std::string ca_;
  std::string body_ = random_bytes(300 * 1024, 9);
};

TEST_F(S3ServerTlsTest, ServesOverVerifiedHttps) {
  EXPECT_TRUE(server_->https());
  EXPECT_EQ(server_->endpoint(), "https://127.0.0.1:" + std::to_string(server_->port()));
  const std::string u = server_->presign("b", "k.bin", 60s);
  EXPECT_EQ(u.rfind("https://127.0.0.1:", 0), 0u);
  Request r;
  r.ca_file = ca_;
  auto res = fetch(u, r);
  ASSERT_EQ(res.code, CURLE_OK) << res.error;
  EXPECT_EQ(res.status, 200);
  EXPECT_TRUE(res.body == body_);
  r.range = "-100";
  res = fetch(u, r);
  EXPECT_EQ(res.status, 206);
  EXPECT_TRUE(res.body == body_.substr(body_.size() - 100));
  // Without our CA the certificate is not trusted: verification is real.
  res = fetch(u);
  EXPECT_EQ(res.code, CURLE_PEER_FAILED_VERIFICATION) << res.error;
  // Plain HTTP to the HTTPS port fails cleanly.
  res = fetch("http://127.0.0.1:" + std::to_string(server_->port()) + "/b/k.bin", r);
  EXPECT_NE(res.code, CURLE_OK);
  EXPECT_EQ(fetch(u, Request{false, "", {}, ca_, 20000}).status, 200);
}

TEST_F(S3ServerTlsTest, FaultsWorkOverTls) {
  const std::string u = server_->presign("b", "k.bin", 60s);
  Request r;
  r.ca_file = ca_;
  S3Fault close;
  close.close_after_bytes = 70000;
  ASSERT_TRUE(server_->add_fault("b", "k.bin", close));
  auto res = fetch(u, r);
  EXPECT_EQ(res.code, CURLE_PARTIAL_FILE) << res.error;
  EXPECT_EQ(res.body.size(), 70000u);
  S3Fault reset;
  reset.reset_after_bytes = 50000;
  ASSERT_TRUE(server_->add_fault("b", "k.bin", reset));
  res = fetch(u, r);
  EXPECT_EQ(res.code, CURLE_RECV_ERROR) << res.error;
  EXPECT_EQ(res.body.size(), 50000u);
  S3Fault corrupt;
  corrupt.corrupt_offset = 0;
  ASSERT_TRUE(server_->add_fault("b", "k.bin", corrupt));
  res = fetch(u, r);
  ASSERT_EQ(res.body.size(), body_.size());
  EXPECT_EQ(res.body[0], static_cast<char>(body_[0] ^ 0xff));
  EXPECT_EQ(fetch(u, r).body == body_, true);
}

// ---------------------------------------------------------------------------------------------
// Object URL forms of ${aws:iot:s3-presigned-url:...}

TEST(ParseS3ObjectUrl, AcceptsTheDocumentedForms) {
  struct Case {
    std::string url, bucket, key;
  };
  for (const Case& c :
       {Case{"https://s3.us-west-2.amazonaws.com/my-bucket/fw/image.bin", "my-bucket",
             "fw/image.bin"},
        Case{"https://s3.amazonaws.com/my-bucket/image.bin", "my-bucket", "image.bin"},
        Case{"https://my.bucket.s3.eu-central-1.amazonaws.com/a/b%20c.bin", "my.bucket",
             "a/b c.bin"},
        Case{"https://bucket.s3.amazonaws.com/k", "bucket", "k"},
        Case{"https://s3-eu-west-1.amazonaws.com/bkt/k?x=1", "bkt", "k"},
        Case{"s3://bkt/dir/k", "bkt", "dir/k"}}) {
    const auto ref = parse_s3_object_url(c.url);
    ASSERT_TRUE(ref) << c.url << ": " << ref.error().message();
    EXPECT_EQ(ref->bucket, c.bucket) << c.url;
    EXPECT_EQ(ref->key, c.key) << c.url;
  }
  for (const std::string bad :
       {"", "ftp://s3.amazonaws.com/b/k", "https://example.com/b/k", "https://s3.amazonaws.com/b",
        "https://s3.amazonaws.com/b/", "https://s3.amazonaws.com", "s3://bkt/",
        "https://s3.amazonaws.com/b/%zz"}) {
    EXPECT_FALSE(parse_s3_object_url(bad)) << bad;
  }
}

}  // namespace
}  // namespace upparat::emulator
