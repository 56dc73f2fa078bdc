#include "state/progress_budget.hpp"

#include <gtest/gtest.h>

namespace upparat::state {
namespace {

using namespace std::chrono_literals;
using TimePoint = ProgressBudget::TimePoint;

const TimePoint t0{std::chrono::hours(1)};

TEST(ProgressBudget, DownloadWithAKnownSizeReportsEveryPercentStep) {
  ProgressBudget b(4, 30s);
  b.start_download(t0);
  EXPECT_FALSE(b.download_due(3, t0 + 1h));  // time alone does not make it due
  EXPECT_TRUE(b.download_due(4, t0 + 1s));
  EXPECT_FALSE(b.download_due(7, t0 + 2s));
  EXPECT_TRUE(b.download_due(8, t0 + 3s));
  EXPECT_TRUE(b.download_due(100, t0 + 4s));
}

TEST(ProgressBudget, DownloadOfUnknownSizeReportsEveryInterval) {
  ProgressBudget b(4, 30s);
  b.start_download(t0);
  EXPECT_FALSE(b.download_due(std::nullopt, t0 + 29s));
  EXPECT_TRUE(b.download_due(std::nullopt, t0 + 30s));
  EXPECT_FALSE(b.download_due(std::nullopt, t0 + 59s));
  EXPECT_TRUE(b.download_due(std::nullopt, t0 + 60s));
}

TEST(ProgressBudget, FirstInstallLineAtOnceThenEveryIntervalOrPercentStep) {
  ProgressBudget b(10, 30s);
  b.start_install();
  EXPECT_TRUE(b.line_due(-1, t0));
  EXPECT_FALSE(b.line_due(-1, t0 + 10s));
  EXPECT_EQ(b.line_due_at(), t0 + 30s);
  EXPECT_TRUE(b.line_due(-1, t0 + 30s));
  EXPECT_TRUE(b.line_due(10, t0 + 31s));  // the percentage advanced by a step
  EXPECT_FALSE(b.line_due(15, t0 + 32s));
  b.sent(15, t0 + 62s);  // the waiting line went out when its timer fired
  EXPECT_FALSE(b.line_due(20, t0 + 63s));
  EXPECT_TRUE(b.line_due(25, t0 + 64s));
}

}  // namespace
}  // namespace upparat::state
