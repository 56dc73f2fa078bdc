// A command-line front end of the downloader for the tests that need a separate process: a
// restart after SIGKILL (the saved state is picked up) and a full disk inside a private mount
// namespace. Prints one line per event, flushed:
//   state <synced_bytes> <etag>      (after each fsync; also written to --state atomically)
//   progress <bytes> <total or ->
//   outcome <complete|url expired|cancelled|failed> transferred=<n> reason=<text>
// Exit code: 0 complete, 2 URL expired, 3 cancelled, 1 failed, 64 bad usage.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "common/stop_signal.hpp"
#include "download/downloader.hpp"

namespace {

upparat::StopSignal* g_stop = nullptr;

extern "C" void on_signal(int) {
  if (g_stop != nullptr) {
    g_stop->request();
  }
}

// Writes the state file like the daemon does: temp file, fsync, rename.
void save_state(const std::string& path, const upparat::download::ResumeState& state) {
  if (path.empty()) {
    return;
  }
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return;
  }
  const std::string text =
      std::to_string(state.synced_bytes) + "\n" + state.etag + "\n" + state.boot_id + "\n";
  [[maybe_unused]] auto written = ::write(fd, text.data(), text.size());
  ::fsync(fd);
  ::close(fd);
  ::rename(tmp.c_str(), path.c_str());
}

upparat::download::ResumeState load_state(const std::string& path) {
  upparat::download::ResumeState state;
  std::ifstream in(path);
  if (in) {
    in >> state.synced_bytes;
    in.ignore();
    std::getline(in, state.etag);
    std::getline(in, state.boot_id);
  }
  return state;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace upparat::download;
  Settings settings;
  Request request;
  std::string state_path;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i];
    const std::string value = argv[i + 1];
    if (key == "--dir") {
      settings.directory = value;
    } else if (key == "--job") {
      request.job_id = value;
    } else if (key == "--url") {
      request.url = value;
    } else if (key == "--sha256") {
      request.sha256 = value;
    } else if (key == "--size") {
      request.size = std::stoull(value);
    } else if (key == "--state") {
      state_path = value;
    } else if (key == "--ca") {
      settings.ca_file = value;
    } else if (key == "--allow-http") {
      settings.allow_http = value == "1";
    } else if (key == "--reserve-bytes") {
      settings.reserve_bytes = std::stoull(value);
    } else if (key == "--fsync-bytes") {
      settings.fsync_every_bytes = std::stoull(value);
    } else if (key == "--backoff-ms") {
      settings.backoff_base = std::chrono::milliseconds(std::stoll(value));
      settings.backoff_cap = settings.backoff_base * 4;
    } else if (key == "--max-attempts") {
      settings.max_attempts = std::stoi(value);
    } else {
      std::cerr << "unknown option " << key << "\n";
      return 64;
    }
  }
  if (request.job_id.empty() || request.url.empty()) {
    std::cerr << "usage: download_tool --dir D --job J --url U [--sha256 H] [--size N] "
                 "[--state FILE] [--ca FILE] [--allow-http 1] [--fsync-bytes N] "
                 "[--backoff-ms N] [--max-attempts N]\n";
    return 64;
  }
  upparat::StopSignal stop;
  g_stop = &stop;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);

  auto resume = state_path.empty() ? ResumeState{} : load_state(state_path);
  Downloader downloader(settings);
  const auto result = downloader.run(
      request, resume, stop,
      [](const Progress& p) {
        std::printf("progress %llu %s\n", static_cast<unsigned long long>(p.bytes),
                    p.total ? std::to_string(*p.total).c_str() : "-");
        std::fflush(stdout);
      },
      [&](const ResumeState& s) {
        save_state(state_path, s);
        std::printf("state %llu %s\n", static_cast<unsigned long long>(s.synced_bytes),
                    s.etag.c_str());
        std::fflush(stdout);
      });
  std::printf("outcome %s transferred=%llu reason=%s\n", to_string(result.outcome),
              static_cast<unsigned long long>(result.bytes_transferred), result.reason.c_str());
  std::fflush(stdout);
  switch (result.outcome) {
    case Outcome::Complete:
      return 0;
    case Outcome::UrlExpired:
      return 2;
    case Outcome::Cancelled:
      return 3;
    case Outcome::Failed:
      return 1;
  }
  return 1;
}
