#include "jobs/document.hpp"

#include <rapidjson/document.h>

#include "common/url.hpp"

namespace upparat::jobs {
namespace {

bool is_hex64(std::string_view s) {
  if (s.size() != 64) {
    return false;
  }
  for (char c : s) {
    const bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    if (!hex) {
      return false;
    }
  }
  return true;
}

}  // namespace

Result<JobDocument> parse_job_document(std::string_view json, bool allow_http,
                                       bool require_signature) {
  rapidjson::Document doc;
  doc.Parse(json.data(), json.size());
  if (doc.HasParseError() || !doc.IsObject()) {
    return fail("job document is not a JSON object");
  }

  JobDocument out;
  auto version = doc.FindMember("version");
  if (version == doc.MemberEnd()) {
    return fail("job document has no 'version'");
  }
  if (!version->value.IsString() || version->value.GetStringLength() == 0) {
    return fail("'version' must be a non-empty string");
  }
  out.version.assign(version->value.GetString(), version->value.GetStringLength());

  auto file = doc.FindMember("file");
  if (file == doc.MemberEnd()) {
    return fail("job document has no 'file'");
  }
  if (!file->value.IsString() || file->value.GetStringLength() == 0) {
    return fail("'file' must be a non-empty string");
  }
  out.file.assign(file->value.GetString(), file->value.GetStringLength());
  if (out.file.find("${aws:iot:") != std::string::npos) {
    return fail(
        "'file' holds an unreplaced ${aws:iot:...} placeholder: create the job with a "
        "pre-signed URL configuration");
  }
  auto url = parse_url(out.file);
  if (!url) {
    return fail("'file' is not a valid URL: " + url.error().message());
  }
  if (url->scheme == "http") {
    if (!allow_http) {
      return fail("'file' must be an https URL (http is not allowed by the configuration)");
    }
  } else if (url->scheme != "https") {
    return fail("'file' must be an https URL, not " + url->scheme);
  }

  auto force = doc.FindMember("force");
  if (force != doc.MemberEnd() && !force->value.IsNull()) {
    if (!force->value.IsBool()) {
      return fail("'force' must be true or false");
    }
    out.force = force->value.GetBool();
  }

  auto meta = doc.FindMember("meta");
  if (meta != doc.MemberEnd() && !meta->value.IsNull()) {
    if (!meta->value.IsString()) {
      return fail("'meta' must be a string");
    }
    out.meta.assign(meta->value.GetString(), meta->value.GetStringLength());
  }

  auto sha = doc.FindMember("sha256");
  if (sha != doc.MemberEnd() && !sha->value.IsNull()) {
    if (!sha->value.IsString() ||
        !is_hex64(std::string_view(sha->value.GetString(), sha->value.GetStringLength()))) {
      return fail("'sha256' must be 64 hexadecimal digits");
    }
    std::string s(sha->value.GetString(), sha->value.GetStringLength());
    for (char& c : s) {
      if (c >= 'A' && c <= 'F') {
        c = static_cast<char>(c - 'A' + 'a');
      }
    }
    out.sha256 = s;
  }

  auto size = doc.FindMember("size");
  if (size != doc.MemberEnd() && !size->value.IsNull()) {
    if (!size->value.IsInt64() || size->value.GetInt64() < 0) {
      return fail("'size' must be an integer >= 0");
    }
    out.size = size->value.GetInt64();
  }

  for (auto algorithm : {SignatureAlgorithm::EcdsaP256Sha256, SignatureAlgorithm::RsaSha256}) {
    const std::string name = field_name(algorithm);
    auto field = doc.FindMember(rapidjson::StringRef(name.c_str(), name.size()));
    if (field == doc.MemberEnd() || field->value.IsNull()) {
      continue;
    }
    if (out.signature) {
      return fail(
          "the job document has both 'sig-sha256-ecdsa' and 'sig-sha256-rsa': sign "
          "the file once");
    }
    if (!field->value.IsString()) {
      return fail("'" + name + "' must be a string (the base64 signature)");
    }
    auto signature = parse_signature(
        algorithm, std::string_view(field->value.GetString(), field->value.GetStringLength()));
    if (!signature) {
      return fail("'" + name + "' is malformed: " + signature.error().message());
    }
    out.signature = std::move(*signature);
  }
  if (require_signature && !out.signature) {
    return fail(
        "unsigned job: the configuration requires a signature (require_signature) and the job "
        "document has neither 'sig-sha256-ecdsa' nor 'sig-sha256-rsa'");
  }
  return out;
}

}  // namespace upparat::jobs
