#include "jobs/topics.hpp"

namespace upparat::jobs {

std::string topic_prefix(std::string_view thing) {
  return "$aws/things/" + std::string(thing) + "/jobs";
}

std::string get_topic(std::string_view thing) {
  return topic_prefix(thing) + "/get";
}

std::string describe_topic(std::string_view thing, std::string_view job_id) {
  return topic_prefix(thing) + "/" + std::string(job_id) + "/get";
}

std::string update_topic(std::string_view thing, std::string_view job_id) {
  return topic_prefix(thing) + "/" + std::string(job_id) + "/update";
}

std::vector<std::string> subscription_topics(std::string_view thing) {
  const std::string t = topic_prefix(thing);
  return {t + "/notify",           t + "/get/accepted",   t + "/get/rejected",
          t + "/+/get/accepted",   t + "/+/get/rejected", t + "/+/update/accepted",
          t + "/+/update/rejected"};
}

std::optional<ParsedTopic> parse_topic(std::string_view thing, std::string_view topic) {
  const std::string prefix = topic_prefix(thing) + "/";
  if (thing.empty() || topic.substr(0, prefix.size()) != prefix) {
    return std::nullopt;
  }
  std::string_view rest = topic.substr(prefix.size());
  if (rest == "notify") {
    return ParsedTopic{TopicKind::Notify, {}};
  }
  if (rest == "get/accepted") {
    return ParsedTopic{TopicKind::GetAccepted, {}};
  }
  if (rest == "get/rejected") {
    return ParsedTopic{TopicKind::GetRejected, {}};
  }
  const auto slash = rest.find('/');
  if (slash == std::string_view::npos) {
    return std::nullopt;
  }
  const std::string_view job_id = rest.substr(0, slash);
  const std::string_view tail = rest.substr(slash + 1);
  if (!valid_job_id(job_id)) {
    return std::nullopt;  // also refuses "$next"
  }
  ParsedTopic parsed{TopicKind::Notify, std::string(job_id)};
  if (tail == "get/accepted") {
    parsed.kind = TopicKind::DescribeAccepted;
  } else if (tail == "get/rejected") {
    parsed.kind = TopicKind::DescribeRejected;
  } else if (tail == "update/accepted") {
    parsed.kind = TopicKind::UpdateAccepted;
  } else if (tail == "update/rejected") {
    parsed.kind = TopicKind::UpdateRejected;
  } else {
    return std::nullopt;
  }
  return parsed;
}

}  // namespace upparat::jobs
