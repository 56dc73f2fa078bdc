// An example Upparat plugin: installs the job's file by copying it to a target file (a stand-in
// for an A/B slot), and keeps the installed version in a version file. Replace the bodies with
// your update mechanism; keep the meaning of each step and of each result.
//
// Configuration ([plugins.example] in the daemon's TOML file):
//   version_file = "/var/lib/example/version"   the installed version, one line
//   target       = "/var/lib/example/slot.img"  where install writes the image

#include <upparat/plugin.hpp>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>

namespace {

using upparat::sdk::Config;
using upparat::sdk::Job;
using upparat::sdk::Logger;
using upparat::sdk::StepContext;
using upparat::sdk::StepResult;

std::string required(const Config& config, const std::string& key) {
  const auto it = config.find(key);
  if (it == config.end() || it->second.empty()) {
    throw std::invalid_argument("'" + key + "' is required");
  }
  return it->second;
}

class ExamplePlugin : public upparat::sdk::Plugin {
 public:
  // The constructor checks the configuration; an exception refuses it with its message (the
  // daemon does not start, and `upparat-plugin-check` shows why).
  ExamplePlugin(const Config& config, const Logger& logger) : logger_(logger) {
    for (const auto& entry : config) {
      if (entry.first != "version_file" && entry.first != "target") {
        throw std::invalid_argument("unknown configuration key '" + entry.first + "'");
      }
    }
    version_file_ = required(config, "version_file");
    target_ = required(config, "target");
  }

  // version: the version installed now. The daemon compares it with the job's version before
  // downloading (equal: the job succeeds at once) and after the restart (it must then equal
  // the job's version). Return ok(version), or failed(reason).
  StepResult version(const Job&, StepContext&) override {
    std::ifstream in(version_file_);
    std::string line;
    if (!in || !std::getline(in, line) || line.empty()) {
      return StepResult::failed("cannot read the installed version from " + version_file_);
    }
    return StepResult::ok(line);
  }

  // download: asked before the daemon downloads the file. ok() lets it download now;
  // retry_later(reason, seconds) postpones it (for example on a metered link); failed() ends
  // the job. The daemon downloads, resumes and verifies the file itself.
  StepResult download(const Job&, StepContext&) override { return StepResult::ok(); }

  // install: job.file is the downloaded, verified file. Report progress; check should_stop()
  // (or poll stop_fd()) and return promptly when asked. Write what ready needs into the job's
  // key/value store: it survives the reboot.
  StepResult install(const Job& job, StepContext& ctx) override {
    if (!job.file) {
      return StepResult::failed("no file to install");
    }
    std::ifstream in(*job.file, std::ios::binary);
    std::ofstream out(target_, std::ios::binary | std::ios::trunc);
    if (!in || !out) {
      return StepResult::failed("cannot copy " + *job.file + " to " + target_ + ": " +
                                std::strerror(errno));
    }
    char buffer[64 * 1024];
    std::uint64_t copied = 0;
    const std::uint64_t total = job.size ? static_cast<std::uint64_t>(*job.size) : 0;
    while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
      if (ctx.should_stop()) {
        return StepResult::failed("stopped");
      }
      out.write(buffer, in.gcount());
      copied += static_cast<std::uint64_t>(in.gcount());
      ctx.progress("", total > 0 ? static_cast<int32_t>(copied * 100 / total) : -1);
    }
    out.close();
    if (!out) {
      return StepResult::failed("writing " + target_ + " failed");
    }
    ctx.set("installed_version", job.version);
    logger_.info("installed " + job.version + " to " + target_);
    return StepResult::ok();
  }

  // restart: reboot into the new system. A real plugin asks the system to reboot and returns
  // ok(); the daemon is then stopped by the reboot and runs ready after it. This example
  // "boots" the new version by writing it to the version file and returns: the daemon goes on
  // with ready at once (a soft restart).
  StepResult restart(const Job&, StepContext& ctx) override {
    const auto installed = ctx.get("installed_version");
    if (!installed) {
      return StepResult::failed("nothing was installed");
    }
    std::ofstream out(version_file_, std::ios::trunc);
    out << *installed << "\n";
    out.close();
    return out ? StepResult::ok() : StepResult::failed("cannot write " + version_file_);
  }

  // ready: is the new system healthy? ok() ends the job SUCCEEDED; retry_later() asks again
  // later (for example while services still start); failed() ends it FAILED.
  StepResult ready(const Job& job, StepContext&) override {
    std::ifstream in(version_file_);
    std::string line;
    std::getline(in, line);
    if (line != job.version) {
      return StepResult::failed("running " + line + ", expected " + job.version);
    }
    return StepResult::ok();
  }

 private:
  Logger logger_;
  std::string version_file_;
  std::string target_;
};

}  // namespace

#ifndef EXAMPLE_PLUGIN_VERSION
#define EXAMPLE_PLUGIN_VERSION "0.0.0"
#endif

// The entry point: class, name, version, licence (SPDX), description, capabilities.
UPPARAT_PLUGIN(ExamplePlugin, "example", EXAMPLE_PLUGIN_VERSION, "Apache-2.0",
               "Copies the image to a target file (SDK template)", 0)
