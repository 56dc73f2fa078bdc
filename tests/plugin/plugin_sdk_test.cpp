// The header-only C++ helper (upparat/plugin.hpp), in process: its C thunks called the way
// the host calls them. The loader tests run it again inside real .so files.

#include <upparat/plugin.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using upparat::sdk::Config;
using upparat::sdk::Job;
using upparat::sdk::Logger;
using upparat::sdk::StepContext;
using upparat::sdk::StepResult;

std::vector<std::string> g_logs;
std::vector<std::string> g_progress;
std::map<std::string, std::string> g_store;

class SdkPlugin : public upparat::sdk::Plugin {
 public:
  SdkPlugin(const Config& config, const Logger& logger) : config_(config), logger_(logger) {
    if (config.count("refuse") != 0) {
      throw std::invalid_argument("refused: " + config.at("refuse"));
    }
    logger_.warn("created");
  }
  StepResult version(const Job& job, StepContext&) override {
    return StepResult::ok(config_.count("v") ? config_.at("v") : job.version);
  }
  StepResult install(const Job& job, StepContext& ctx) override {
    ctx.progress("writing", 50);
    ctx.set("slot", std::string("B"));
    if (ctx.get("slot") != std::optional<std::string>("B")) {
      throw std::runtime_error("store lost slot");
    }
    return StepResult::retry_later("file " + job.file.value_or("none"), 9);
  }

 private:
  Config config_;
  Logger logger_;
};

}  // namespace

UPPARAT_PLUGIN(SdkPlugin, "sdk-test", "0.0.1", "Apache-2.0", "in-process", 0)

namespace {

void log_fn(void*, int32_t level, const char* message) {
  g_logs.push_back(std::to_string(level) + " " + message);
}
void progress_fn(void*, const char* line, int32_t percent) {
  g_progress.push_back(std::string(line ? line : "(null)") + " " + std::to_string(percent));
}
int32_t should_stop_fn(void*) {
  return 0;
}
const char* store_get_fn(void*, const char* key) {
  const auto it = g_store.find(key);
  return it == g_store.end() ? nullptr : it->second.c_str();
}
int32_t store_set_fn(void*, const char* key, const char* value) {
  if (value == nullptr) {
    g_store.erase(key);
  } else {
    g_store[key] = value;
  }
  return 0;
}

struct Call {
  std::vector<char> text = std::vector<char>(64, 'X');
  upparat_result result{sizeof(upparat_result), UPPARAT_FAILED, -1, nullptr, 64, 0};
  Call() {
    text[0] = '\0';
    result.text = text.data();
  }
  std::string str() const { return result.text; }
};

TEST(PluginSdk, EntryDescribesThePlugin) {
  const upparat_plugin_descriptor* d = upparat_plugin_entry(UPPARAT_ABI_MAJOR, UPPARAT_ABI_MINOR);
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->struct_size, sizeof(upparat_plugin_descriptor));
  EXPECT_EQ(d->abi_major, UPPARAT_ABI_MAJOR);
  EXPECT_EQ(d->abi_minor, UPPARAT_ABI_MINOR);
  EXPECT_STREQ(d->name, "sdk-test");
  EXPECT_STREQ(d->version, "0.0.1");
  EXPECT_STREQ(d->license, "Apache-2.0");
  EXPECT_EQ(d->capabilities, 0u);
  ASSERT_NE(d->functions, nullptr);
  EXPECT_EQ(d->functions->struct_size, sizeof(upparat_plugin_functions));
  EXPECT_NE(d->functions->create, nullptr);
  EXPECT_NE(d->functions->destroy, nullptr);
  EXPECT_NE(d->functions->restart, nullptr);
  EXPECT_NE(d->functions->steps, nullptr);
}

// ---- Which steps a C++ plugin serves -------------------------------------------------------

// Overrides install and restart, and narrows them per instance with steps().
class NarrowingPlugin : public upparat::sdk::Plugin {
 public:
  explicit NarrowingPlugin(const Config& config) : config_(config) {}
  std::uint32_t steps() const {
    if (config_.count("throw") != 0) {
      throw std::runtime_error("cannot tell");
    }
    return static_cast<std::uint32_t>(std::stoul(config_.at("steps"), nullptr, 0));
  }
  StepResult install(const Job&, StepContext&) override { return StepResult::ok(); }
  StepResult restart(const Job&, StepContext&) override { return StepResult::ok(); }

 private:
  Config config_;
};

// Overrides ready through an intermediate class, version itself.
class Intermediate : public upparat::sdk::Plugin {
 public:
  StepResult ready(const Job&, StepContext&) override { return StepResult::ok(); }
};
class DerivedPlugin : public Intermediate {
 public:
  explicit DerivedPlugin(const Config&) {}
  StepResult version(const Job&, StepContext&) override { return StepResult::ok("1"); }
};

static_assert(upparat::sdk::detail::overridden_steps<SdkPlugin>() ==
              (UPPARAT_STEP_VERSION | UPPARAT_STEP_INSTALL));
static_assert(upparat::sdk::detail::overridden_steps<DerivedPlugin>() ==
              (UPPARAT_STEP_VERSION | UPPARAT_STEP_READY));
static_assert(!upparat::sdk::detail::declares_steps<SdkPlugin>::value);
static_assert(upparat::sdk::detail::declares_steps<NarrowingPlugin>::value);

/// Creates an instance through the C table, asks its steps, destroys it.
std::uint32_t served_steps(const upparat_plugin_functions* f,
                           std::vector<upparat_config_entry> entries) {
  const upparat_host host{sizeof(upparat_host), 0, nullptr, &log_fn};
  const upparat_config config{sizeof(upparat_config), static_cast<std::uint32_t>(entries.size()),
                              entries.data()};
  upparat_instance* instance = nullptr;
  std::vector<char> text(64, '\0');
  upparat_result result{sizeof(upparat_result), UPPARAT_FAILED, -1, text.data(), 64, 0};
  f->create(&host, &config, &instance, &result);
  EXPECT_EQ(result.code, UPPARAT_OK) << text.data();
  if (instance == nullptr) {
    return 0xDEAD;
  }
  const std::uint32_t steps = f->steps(instance);
  f->destroy(instance);
  return steps;
}

TEST(PluginSdk, ServesTheStepsTheClassOverrides) {
  EXPECT_EQ(served_steps(upparat_plugin_entry(1, 1)->functions, {}),
            UPPARAT_STEP_VERSION | UPPARAT_STEP_INSTALL);
  EXPECT_EQ(served_steps(upparat::sdk::detail::functions<DerivedPlugin>(), {}),
            UPPARAT_STEP_VERSION | UPPARAT_STEP_READY);
}

TEST(PluginSdk, AStepsMemberNarrowsTheServedStepsToOverriddenOnes) {
  const upparat_plugin_functions* f = upparat::sdk::detail::functions<NarrowingPlugin>();
  EXPECT_EQ(served_steps(f, {{"steps", "0x8"}}), UPPARAT_STEP_RESTART);
  EXPECT_EQ(served_steps(f, {{"steps", "0"}}), 0u);
  // ready is not overridden: asking for it (or for unknown bits) does not make it served.
  EXPECT_EQ(served_steps(f, {{"steps", "0xffffffff"}}),
            UPPARAT_STEP_INSTALL | UPPARAT_STEP_RESTART);
}

TEST(PluginSdk, AStepsMemberThatThrowsServesTheOverriddenStepsAndLogs) {
  g_logs.clear();
  const upparat_plugin_functions* f = upparat::sdk::detail::functions<NarrowingPlugin>();
  EXPECT_EQ(served_steps(f, {{"throw", "1"}}), UPPARAT_STEP_INSTALL | UPPARAT_STEP_RESTART);
  EXPECT_THAT(g_logs,
              ::testing::Contains(
                  "4 steps() threw: cannot tell; serving every step the plugin implements"));
}

TEST(PluginSdk, CreateRunDestroy) {
  g_logs.clear();
  g_progress.clear();
  g_store.clear();
  const upparat_plugin_functions* f = upparat_plugin_entry(1, 0)->functions;
  const upparat_host host{sizeof(upparat_host), 0, nullptr, &log_fn};
  const upparat_config_entry entries[] = {{"v", "3.1"}};
  const upparat_config config{sizeof(upparat_config), 1, entries};
  upparat_instance* instance = nullptr;
  Call create;
  f->create(&host, &config, &instance, &create.result);
  ASSERT_EQ(create.result.code, UPPARAT_OK) << create.str();
  ASSERT_NE(instance, nullptr);
  EXPECT_THAT(g_logs, ::testing::ElementsAre("3 created"));

  const upparat_step_services services{sizeof(upparat_step_services),
                                       0,
                                       nullptr,
                                       &progress_fn,
                                       &should_stop_fn,
                                       -1,
                                       0,
                                       &store_get_fn,
                                       &store_set_fn,
                                       -1,
                                       0,
                                       nullptr};
  upparat_job_context job{};
  job.struct_size = sizeof job;
  job.job_id = "j";
  job.version = "9.9";
  job.meta = "";
  job.url = "";
  job.document_json = "{}";
  job.size = -1;
  job.file_path = "/tmp/file";

  Call version;
  f->version(instance, &job, &services, &version.result);
  EXPECT_EQ(version.result.code, UPPARAT_OK);
  EXPECT_EQ(version.str(), "3.1");

  Call install;
  f->install(instance, &job, &services, &install.result);
  EXPECT_EQ(install.result.code, UPPARAT_RETRY_LATER);
  EXPECT_EQ(install.result.retry_after_seconds, 9);
  EXPECT_EQ(install.str(), "file /tmp/file");
  EXPECT_THAT(g_progress, ::testing::ElementsAre("writing 50"));
  EXPECT_EQ(g_store["slot"], "B");

  Call ready;  // not overridden
  f->ready(instance, &job, &services, &ready.result);
  EXPECT_EQ(ready.result.code, UPPARAT_NOT_SUPPORTED);
  EXPECT_EQ(ready.str(), "");

  f->destroy(instance);
}

TEST(PluginSdk, ConstructorExceptionIsCreateFailure) {
  const upparat_plugin_functions* f = upparat_plugin_entry(1, 0)->functions;
  const upparat_host host{sizeof(upparat_host), 0, nullptr, &log_fn};
  const upparat_config_entry entries[] = {{"refuse", "bad device"}};
  const upparat_config config{sizeof(upparat_config), 1, entries};
  upparat_instance* instance = reinterpret_cast<upparat_instance*>(&g_logs);  // garbage in
  Call create;
  f->create(&host, &config, &instance, &create.result);
  EXPECT_EQ(create.result.code, UPPARAT_FAILED);
  EXPECT_EQ(create.str(), "refused: bad device");
  EXPECT_EQ(instance, nullptr);
}

TEST(PluginSdk, ResultTextIsCutWithoutSplittingACharacter) {
  std::vector<char> buffer(6, 'X');
  upparat_result result{sizeof(upparat_result), UPPARAT_FAILED, -1, buffer.data(), 6, 0};
  // "ab" + U+20AC (3 bytes) + "c": 5 bytes fit, the euro sign would be split at byte 5.
  upparat::sdk::detail::write_result(&result, UPPARAT_FAILED, "abc\xE2\x82\xAC", -1);
  EXPECT_STREQ(result.text, "abc");
  upparat::sdk::detail::write_result(&result, UPPARAT_FAILED, "abcdefgh", -1);
  EXPECT_STREQ(result.text, "abcde");
  upparat::sdk::detail::write_result(&result, UPPARAT_OK, "ab", -1);
  EXPECT_STREQ(result.text, "ab");
  EXPECT_EQ(result.code, UPPARAT_OK);
}

TEST(PluginSdk, JobFromContext) {
  upparat_job_context c{};
  c.struct_size = sizeof c;
  c.job_id = "upparat_1";
  c.execution_number = 4;
  c.version = "1.0";
  c.meta = "m";
  c.url = "https://x.invalid/f";
  c.sha256 = "ab";
  c.size = 0;
  c.document_json = "{}";
  c.file_path = nullptr;
  c.force = 1;
  c.seconds_since_first = 5;
  c.retry_count = 6;
  const Job job = upparat::sdk::detail::make_job(&c);
  EXPECT_EQ(job.id, "upparat_1");
  EXPECT_EQ(job.execution_number, 4);
  EXPECT_EQ(job.sha256, std::optional<std::string>("ab"));
  EXPECT_EQ(job.size, std::optional<int64_t>(0));
  EXPECT_FALSE(job.file);
  EXPECT_TRUE(job.force);
  EXPECT_EQ(job.seconds_since_first, 5);
  EXPECT_EQ(job.retry_count, 6);
  EXPECT_EQ(job.signer, "");
  c.signer = "CN=Firmware 2026";
  EXPECT_EQ(upparat::sdk::detail::make_job(&c).signer, "CN=Firmware 2026");
  // A host of ABI 1.2 has no signer in its context: not read.
  c.struct_size = offsetof(upparat_job_context, signer);
  EXPECT_EQ(upparat::sdk::detail::make_job(&c).signer, "");
  c.struct_size = sizeof c;
  c.signer = nullptr;
  c.sha256 = nullptr;
  c.size = -1;
  const Job bare = upparat::sdk::detail::make_job(&c);
  EXPECT_FALSE(bare.sha256);
  EXPECT_FALSE(bare.size);
}

}  // namespace
