#pragma once

// MQTT topics of the AWS IoT Jobs device API for one thing. Only get, {jobId}/get,
// {jobId}/update and notify are used: start-next and $next would start other agents' jobs.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/job_id.hpp"

namespace upparat::jobs {

/// The largest MQTT payload AWS IoT's message broker carries (128 KiB): a larger message on a
/// Jobs topic cannot come from AWS.
inline constexpr std::size_t kMaxAwsPayload = 128 * 1024;

/// "$aws/things/{thing}/jobs"
[[nodiscard]] std::string topic_prefix(std::string_view thing);
/// "$aws/things/{thing}/jobs/get" (GetPendingJobExecutions)
[[nodiscard]] std::string get_topic(std::string_view thing);
/// "$aws/things/{thing}/jobs/{jobId}/get" (DescribeJobExecution)
[[nodiscard]] std::string describe_topic(std::string_view thing, std::string_view job_id);
/// "$aws/things/{thing}/jobs/{jobId}/update" (UpdateJobExecution)
[[nodiscard]] std::string update_topic(std::string_view thing, std::string_view job_id);

/// What the daemon subscribes to (QoS 1), in every connected handler: notify,
/// get/accepted|rejected, +/get/accepted|rejected, +/update/accepted|rejected.
[[nodiscard]] std::vector<std::string> subscription_topics(std::string_view thing);

enum class TopicKind {
  Notify,
  GetAccepted,
  GetRejected,
  DescribeAccepted,
  DescribeRejected,
  UpdateAccepted,
  UpdateRejected,
};

struct ParsedTopic {
  TopicKind kind = TopicKind::Notify;
  std::string job_id;  ///< for Describe* and Update*
};

/// Classifies an incoming topic. nullopt when it is not one of ours: another thing's name,
/// another API (notify-next, start-next), a malformed job id, or anything else.
[[nodiscard]] std::optional<ParsedTopic> parse_topic(std::string_view thing,
                                                     std::string_view topic);

/// AWS IoT job id rules: 1-64 characters of [A-Za-z0-9_-].
using upparat::valid_job_id;

}  // namespace upparat::jobs
