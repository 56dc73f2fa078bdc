#include <gtest/gtest.h>

#include <string>

#include "jobs/document.hpp"
#include "jobs/messages.hpp"
#include "jobs/topics.hpp"

namespace upparat::jobs {
namespace {

TEST(JobsTopics, BuildsTheThingsTopics) {
  EXPECT_EQ(get_topic("t1"), "$aws/things/t1/jobs/get");
  EXPECT_EQ(describe_topic("t1", "upparat_1"), "$aws/things/t1/jobs/upparat_1/get");
  EXPECT_EQ(update_topic("t1", "upparat_1"), "$aws/things/t1/jobs/upparat_1/update");
  const auto subs = subscription_topics("t1");
  EXPECT_EQ(subs.size(), 7u);
  for (const auto& s : subs) {
    EXPECT_EQ(s.rfind("$aws/things/t1/jobs/", 0), 0u);
    EXPECT_EQ(s.find("next"), std::string::npos);
  }
}

TEST(JobsTopics, ParsesOnlyOurTopics) {
  auto p = parse_topic("t1", "$aws/things/t1/jobs/upparat_1/update/rejected");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->kind, TopicKind::UpdateRejected);
  EXPECT_EQ(p->job_id, "upparat_1");
  EXPECT_EQ(parse_topic("t1", "$aws/things/t1/jobs/notify")->kind, TopicKind::Notify);
  EXPECT_EQ(parse_topic("t1", "$aws/things/t1/jobs/get/accepted")->kind, TopicKind::GetAccepted);
  EXPECT_EQ(parse_topic("t1", "$aws/things/t1/jobs/j/get/accepted")->kind,
            TopicKind::DescribeAccepted);
  EXPECT_FALSE(parse_topic("t1", "$aws/things/t2/jobs/notify"));  // another thing
  EXPECT_FALSE(parse_topic("t1", "$aws/things/t1x/jobs/notify"));
  EXPECT_FALSE(parse_topic("t1", "$aws/things/t1/jobs/notify-next"));
  EXPECT_FALSE(parse_topic("t1", "$aws/things/t1/jobs/$next/get/accepted"));
  EXPECT_FALSE(parse_topic("t1", "$aws/things/t1/jobs/a b/get/accepted"));
  EXPECT_FALSE(parse_topic("t1", "$aws/things/t1/jobs/j/update"));
  EXPECT_FALSE(parse_topic("t1", ""));
  EXPECT_FALSE(parse_topic("", "$aws/things//jobs/notify"));
}

TEST(JobsTopics, ValidJobIds) {
  EXPECT_TRUE(valid_job_id("upparat_1-A"));
  EXPECT_TRUE(valid_job_id(std::string(64, 'a')));
  EXPECT_FALSE(valid_job_id(std::string(65, 'a')));
  EXPECT_FALSE(valid_job_id(""));
  EXPECT_FALSE(valid_job_id("../x"));
}

TEST(JobsMessages, Timestamps) {
  EXPECT_EQ(timestamp_seconds(1700000000), 1700000000);
  EXPECT_EQ(timestamp_seconds(1700000000123), 1700000000);
}

TEST(JobsMessages, GetAccepted) {
  auto p = parse_get_accepted(
      R"({"inProgressJobs":[{"jobId":"a","queuedAt":1700000000000,"executionNumber":2,)"
      R"("versionNumber":3,"lastUpdatedAt":1}],"queuedJobs":[{"jobId":"b","queuedAt":5}],)"
      R"("timestamp":1,"clientToken":"tok"})");
  ASSERT_TRUE(p) << p.error().message();
  ASSERT_EQ(p->in_progress.size(), 1u);
  EXPECT_EQ(p->in_progress[0].queued_at, 1700000000);
  EXPECT_EQ(p->in_progress[0].execution_number, 2);
  EXPECT_EQ(p->queued[0].job_id, "b");
  EXPECT_EQ(p->client_token, "tok");
  EXPECT_TRUE(parse_get_accepted("{}"));
  EXPECT_TRUE(parse_get_accepted(""));
  EXPECT_FALSE(parse_get_accepted("{\"queuedJobs\":{}}"));
  EXPECT_FALSE(parse_get_accepted("{\"queuedJobs\":[{\"queuedAt\":1}]}"));
  EXPECT_FALSE(parse_get_accepted("[]"));
  EXPECT_FALSE(parse_get_accepted("{"));
}

TEST(JobsMessages, Notify) {
  auto p = parse_notify(R"({"timestamp":1,"jobs":{"QUEUED":[{"jobId":"x","queuedAt":1}]}})");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->queued.size(), 1u);
  auto empty = parse_notify(R"({"timestamp":1,"jobs":{}})");
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->queued.empty() && empty->in_progress.empty());
  EXPECT_FALSE(parse_notify(R"({"jobs":[]})"));
}

TEST(JobsMessages, DescribeAccepted) {
  auto d = parse_describe_accepted(
      R"({"execution":{"jobId":"j","status":"IN_PROGRESS","statusDetails":{"state":"reboot_start",)"
      R"("message":"none"},"jobDocument":{"version":"1","file":"https://h/f"},"queuedAt":5,)"
      R"("versionNumber":4,"executionNumber":9},"timestamp":1,"clientToken":"c"})");
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(d->execution.status_details.at("state"), "reboot_start");
  EXPECT_EQ(d->execution.document_json, R"({"version":"1","file":"https://h/f"})");
  EXPECT_EQ(d->execution.execution_number, 9);
  EXPECT_EQ(d->client_token, "c");
  EXPECT_FALSE(parse_describe_accepted(R"({"timestamp":1})"));
  EXPECT_FALSE(parse_describe_accepted(R"({"execution":{"status":"QUEUED"}})"));
  EXPECT_FALSE(parse_describe_accepted(R"({"execution":{"jobId":"j","statusDetails":[]}})"));
}

// Found by fuzz_update_accepted: a number too large for int64 was converted anyway (undefined
// behaviour; INT64_MIN on x86). It counts as absent; a large one within range is kept.
TEST(JobsMessages, NumbersOutsideInt64CountAsAbsent) {
  for (const char* number : {"2.2e124", "-1e300", "9223372036854775808"}) {
    auto u = parse_update_accepted(std::string(R"({"executionState":{"status":"SUCCEEDED",)") +
                                   R"("versionNumber":)" + number + "}}");
    ASSERT_TRUE(u) << number << ": " << u.error().message();
    ASSERT_TRUE(u->execution_state);
    EXPECT_EQ(u->execution_state->version_number, 0) << number;
  }
  auto d = parse_describe_accepted(
      R"({"execution":{"jobId":"j","status":"QUEUED","queuedAt":1e300,"versionNumber":4e18}})");
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(d->execution.queued_at, 0);
  EXPECT_EQ(d->execution.version_number, 4000000000000000000);
}

TEST(JobsMessages, Rejected) {
  auto r = parse_rejected(
      R"({"code":"InvalidStateTransition","message":"m","clientToken":"c","timestamp":1,)"
      R"("executionState":{"status":"CANCELED","statusDetails":{},"versionNumber":3}})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->code, "InvalidStateTransition");
  ASSERT_TRUE(r->execution_state);
  EXPECT_EQ(r->execution_state->status, "CANCELED");
  EXPECT_FALSE(parse_rejected(R"({"message":"no code"})"));
  EXPECT_TRUE(is_terminal_status("CANCELED"));
  EXPECT_TRUE(is_terminal_status("REMOVED"));
  EXPECT_FALSE(is_terminal_status("IN_PROGRESS"));
  EXPECT_FALSE(is_terminal_status("QUEUED"));
}

TEST(JobsMessages, Requests) {
  EXPECT_EQ(build_get_request("t"), R"({"clientToken":"t"})");
  EXPECT_EQ(build_describe_request("t"), R"({"includeJobDocument":true,"clientToken":"t"})");
  UpdateRequest u;
  u.status = "IN_PROGRESS";
  u.state = "installation_progress";
  u.message = "50%\x01\n";
  u.step_timeout_minutes = 20;
  u.client_token = "t";
  EXPECT_EQ(build_update_request(u),
            R"({"status":"IN_PROGRESS","statusDetails":{"state":"installation_progress",)"
            R"("message":"50%"},"stepTimeoutInMinutes":20,"clientToken":"t"})");
  u.message = "";
  u.step_timeout_minutes.reset();
  u.expected_version = 3;
  EXPECT_EQ(build_update_request(u),
            R"({"status":"IN_PROGRESS","statusDetails":{"state":"installation_progress",)"
            R"("message":"none"},"expectedVersion":3,"clientToken":"t"})");
  u.execution_number = 2;
  EXPECT_EQ(build_update_request(u),
            R"({"status":"IN_PROGRESS","statusDetails":{"state":"installation_progress",)"
            R"("message":"none"},"expectedVersion":3,"executionNumber":2,"clientToken":"t"})");
  u.include_execution_state = true;
  EXPECT_EQ(build_update_request(u),
            R"({"status":"IN_PROGRESS","statusDetails":{"state":"installation_progress",)"
            R"("message":"none"},"expectedVersion":3,"executionNumber":2,)"
            R"("includeJobExecutionState":true,"clientToken":"t"})");
  // What a cloud that applied the update shows: the sanitised details as sent.
  u.message = "50%\x01\n";
  EXPECT_EQ(status_details_of(u), (std::map<std::string, std::string>{
                                      {"state", "installation_progress"}, {"message", "50%"}}));
  EXPECT_EQ(build_describe_request("t", 4),
            R"({"executionNumber":4,"includeJobDocument":true,"clientToken":"t"})");
}

// ---- job documents ----

TEST(JobDocument, Valid) {
  auto d = parse_job_document(
      R"({"action":"update","version":"1.6.4-RELEASE","file":"https://b.s3.amazonaws.com/f?X=1",)"
      R"("force":true,"meta":"any","sha256":")" +
          std::string(64, 'F') + R"(","size":0})",
      false);
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(d->version, "1.6.4-RELEASE");
  EXPECT_TRUE(d->force);
  EXPECT_EQ(d->meta, "any");
  EXPECT_EQ(d->sha256, std::string(64, 'f'));
  EXPECT_EQ(d->size, 0);
  auto minimal = parse_job_document(R"({"version":"1","file":"https://h/f"})", false);
  ASSERT_TRUE(minimal);
  EXPECT_FALSE(minimal->force);
  EXPECT_FALSE(minimal->sha256);
}

TEST(JobDocument, MetaHasNoLimitOfItsOwn) {
  const std::string meta(30000, 'm');
  EXPECT_TRUE(
      parse_job_document(R"({"version":"1","file":"https://h/f","meta":")" + meta + "\"}", false));
}

struct Bad {
  std::string json;
  std::string reason;
};

void PrintTo(const Bad& bad, std::ostream* os) {
  *os << bad.reason;
}

class JobDocumentInvalid : public ::testing::TestWithParam<Bad> {};

TEST_P(JobDocumentInvalid, GivesAReason) {
  auto d = parse_job_document(GetParam().json, false);
  ASSERT_FALSE(d);
  EXPECT_NE(d.error().message().find(GetParam().reason), std::string::npos) << d.error().message();
  EXPECT_EQ(d.error().message().find("secret"), std::string::npos) << "no URL query in reasons";
}

INSTANTIATE_TEST_SUITE_P(
    Cases, JobDocumentInvalid,
    ::testing::Values(
        Bad{R"({"version":"1"})", "no 'file'"}, Bad{R"({"file":"https://h/f"})", "no 'version'"},
        Bad{R"({"version":"","file":"https://h/f"})", "'version'"},
        Bad{R"({"version":1.5,"file":"https://h/f"})", "'version'"},
        Bad{R"({"version":"1","file":7})", "'file'"},
        Bad{R"({"version":"1","file":"http://h/f?secret"})", "https"},
        Bad{R"({"version":"1","file":"file:///etc/passwd"})", "URL"},
        Bad{R"({"version":"1","file":"ftp://h/f"})", "https"},
        Bad{R"({"version":"1","file":"${aws:iot:s3-presigned-url:https://s3.amazonaws.com/b/k}"})",
            "placeholder"},
        Bad{R"({"version":"1","file":"https://h/f","force":"false"})", "'force'"},
        Bad{R"({"version":"1","file":"https://h/f","meta":{}})", "'meta'"},
        Bad{R"({"version":"1","file":"https://h/f","sha256":"abc"})", "'sha256'"},
        Bad{R"({"version":"1","file":"https://h/f","size":-1})", "'size'"},
        Bad{R"({"version":"1","file":"https://h/f","size":1.5})", "'size'"},
        Bad{"not json", "not a JSON object"}, Bad{"[]", "not a JSON object"}));

// AWS checks the 32768-character limit on the document as created; the copy a device receives
// is longer once the pre-signed URL (with a session token) replaced the placeholder.
TEST(JobDocument, LongerThanTheCreationLimitOnceTheUrlIsSigned) {
  const std::string meta(32000, 'm');
  const std::string url =
      "https://bucket.s3.amazonaws.com/fw.raucb?X-Amz-Security-Token=" + std::string(1400, 't') +
      "&X-Amz-Signature=abc";
  const std::string json = R"({"version":"1","file":")" + url + R"(","meta":")" + meta + "\"}";
  ASSERT_GT(json.size(), 32768u);
  auto doc = parse_job_document(json, false);
  ASSERT_TRUE(doc) << doc.error().message();
  EXPECT_EQ(doc->meta, meta);
  EXPECT_EQ(doc->file, url);
}

TEST(JobDocument, CodeSigningSignatures) {
  const std::string base = R"({"version":"1","file":"https://h/f")";
  // SEQUENCE { INTEGER 0x11 x 32, INTEGER 0x00 0x80 0x22 x 31 }
  const std::string ecdsa =
      "MEUCIBERERERERERERERERERERERERERERERERERERERERERAiEAgCIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIi"
      "IiI=";
  auto signed_doc = parse_job_document(base + R"(,"sig-sha256-ecdsa":")" + ecdsa + "\"}", false);
  ASSERT_TRUE(signed_doc) << signed_doc.error().message();
  ASSERT_TRUE(signed_doc->signature);
  EXPECT_EQ(signed_doc->signature->algorithm, SignatureAlgorithm::EcdsaP256Sha256);
  EXPECT_EQ(signed_doc->signature->bytes.size(), 71u);

  auto rsa = parse_job_document(base + R"(,"sig-sha256-rsa":")" + std::string(344, 'B') + "\"}",
                                false, true);
  ASSERT_TRUE(rsa) << rsa.error().message();
  EXPECT_EQ(rsa->signature->algorithm, SignatureAlgorithm::RsaSha256);

  auto unsigned_doc = parse_job_document(base + "}", false);
  ASSERT_TRUE(unsigned_doc);
  EXPECT_FALSE(unsigned_doc->signature);
  auto required = parse_job_document(base + "}", false, true);
  ASSERT_FALSE(required);
  EXPECT_NE(required.error().message().find("unsigned job"), std::string::npos);

  auto error = [&](const std::string& fields) {
    auto d = parse_job_document(base + fields + "}", false);
    EXPECT_FALSE(d) << fields;
    return d ? std::string() : d.error().message();
  };
  EXPECT_EQ(error(R"(,"sig-sha256-ecdsa":"not base64!")"),
            "'sig-sha256-ecdsa' is malformed: it is not base64 (character 4)");
  EXPECT_EQ(error(R"(,"sig-sha256-ecdsa":"AAECAwQFBgcI")"),
            "'sig-sha256-ecdsa' is malformed: not an ECDSA signature: it is not a DER SEQUENCE");
  EXPECT_EQ(error(R"(,"sig-sha256-rsa":42)"),
            "'sig-sha256-rsa' must be a string (the base64 "
            "signature)");
  EXPECT_NE(error(R"(,"sig-sha256-ecdsa":")" + ecdsa + R"(","sig-sha256-rsa":")" +
                  std::string(344, 'B') + "\"")
                .find("both"),
            std::string::npos);
  // null is absent, as for the other optional fields.
  auto null_sig = parse_job_document(base + R"(,"sig-sha256-ecdsa":null})", false);
  ASSERT_TRUE(null_sig);
  EXPECT_FALSE(null_sig->signature);
}

TEST(JobDocument, HttpWhenAllowed) {
  EXPECT_TRUE(parse_job_document(R"({"version":"1","file":"http://h/f"})", true));
  EXPECT_FALSE(parse_job_document(R"({"version":"1","file":"ftp://h/f"})", true));
}

}  // namespace
}  // namespace upparat::jobs
