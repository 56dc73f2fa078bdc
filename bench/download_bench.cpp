// Benchmark of the downloader against `curl -o f && sync -f f` (the same durability).
//
//   upparat-download-bench compare --url U --small-url S --dir D [--runs N]
//                                  [--sha256 H --small-sha256 H2]
//     Alternates curl and our downloader (each in its own process, measured with wait4):
//     wall time, CPU time (user+sys) and peak-RSS growth (peak RSS on U minus peak RSS on the
//     tiny file S, so the executable's own footprint cancels out). Prints medians and ratios.
//   upparat-download-bench fetch --url U --dir D --job J [--state F] [--kill-at-percent P]
//     One download (resuming from --state), then prints
//     "result outcome=... transferred=... callbacks=... published=...". With --kill-at-percent
//     it SIGKILLs itself once that share is on disk, as a power cut would.
//
// bench/download_bench.sh sets up nginx and the files and runs both.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "download/downloader.hpp"

namespace {

using Args = std::map<std::string, std::string>;
using Clock = std::chrono::steady_clock;

Args parse(int argc, char** argv, int first) {
  Args args;
  for (int i = first; i + 1 < argc; i += 2) {
    args[argv[i]] = argv[i + 1];
  }
  return args;
}

std::string get(const Args& args, const std::string& key, const std::string& fallback = "") {
  const auto it = args.find(key);
  return it == args.end() ? fallback : it->second;
}

// The progress budget of the daemon (about 30 messages per download at most): an
// update is published when 5 % more is on disk than at the last one, or 30 s have passed.
struct Budget {
  std::uint64_t last_bytes = 0;
  Clock::time_point last_time = Clock::now();
  int published = 0;
  void offer(const upparat::download::Progress& p) {
    const auto now = Clock::now();
    const bool by_share = p.total && *p.total > 0 && (p.bytes - last_bytes) * 20 >= *p.total;
    const bool by_time = now - last_time >= std::chrono::seconds(30) && p.bytes != last_bytes;
    const bool last = p.total && p.bytes == *p.total && p.bytes != last_bytes;
    if (by_share || by_time || last) {
      ++published;
      last_bytes = p.bytes;
      last_time = now;
    }
  }
};

int fetch(const Args& args) {
  using namespace upparat::download;
  Settings settings;
  settings.directory = get(args, "--dir");
  settings.allow_http = true;
  settings.ca_file = get(args, "--ca");
  Request request;
  request.job_id = get(args, "--job", "upparat_bench");
  request.url = get(args, "--url");
  if (!get(args, "--sha256").empty()) {
    request.sha256 = get(args, "--sha256");
  }
  const auto state_path = get(args, "--state");
  const int kill_at = std::stoi(get(args, "--kill-at-percent", "0"));
  // To stop at the given share, see every step of the progress (the default is 200 ms).
  if (kill_at > 0) {
    settings.progress_interval = std::chrono::milliseconds(0);
  }
  ResumeState resume;
  if (!state_path.empty()) {
    std::ifstream in(state_path);
    if (in) {
      in >> resume.synced_bytes;
      in.ignore();
      std::getline(in, resume.etag);
    }
  }
  upparat::StopSignal stop;
  Downloader downloader(settings);
  int callbacks = 0;
  Budget budget;
  const auto result = downloader.run(
      request, resume, stop,
      [&](const Progress& p) {
        ++callbacks;
        budget.offer(p);
        if (kill_at > 0 && p.total && p.bytes * 100 >= *p.total * static_cast<unsigned>(kill_at)) {
          ::kill(::getpid(), SIGKILL);  // a power cut: no cleanup, no last fsync
        }
      },
      [&](const ResumeState& s) {
        if (!state_path.empty()) {
          const auto tmp = state_path + ".tmp";
          {
            std::ofstream out(tmp, std::ios::trunc);
            out << s.synced_bytes << "\n" << s.etag << "\n";
          }
          const int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
          if (fd >= 0) {
            ::fsync(fd);
            ::close(fd);
          }
          std::rename(tmp.c_str(), state_path.c_str());
        }
      });
  std::printf("result outcome=%s transferred=%llu callbacks=%d published=%d reason=%s\n",
              to_string(result.outcome), static_cast<unsigned long long>(result.bytes_transferred),
              callbacks, budget.published, result.reason.c_str());
  return result.outcome == Outcome::Complete ? 0 : 1;
}

struct Measure {
  double wall = 0, cpu = 0;
  long max_rss_kib = 0;
  bool ok = false;
};

// Runs argv in a child and measures it (and its children) with wait4.
Measure run_measured(const std::vector<std::string>& argv) {
  Measure m;
  const auto start = Clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int devnull = ::open("/dev/null", O_WRONLY);
    if (devnull >= 0) {
      ::dup2(devnull, 1);
    }
    std::vector<char*> cargv;
    for (const auto& a : argv) {
      cargv.push_back(const_cast<char*>(a.c_str()));
    }
    cargv.push_back(nullptr);
    ::execvp(cargv[0], cargv.data());
    _exit(127);
  }
  int status = 0;
  struct rusage ru {};
  ::wait4(pid, &status, 0, &ru);
  m.wall = std::chrono::duration<double>(Clock::now() - start).count();
  m.cpu = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
          static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  m.max_rss_kib = ru.ru_maxrss;
  m.ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  return m;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

int compare(const Args& args, const std::string& self) {
  const auto url = get(args, "--url");
  const auto small_url = get(args, "--small-url");
  const std::filesystem::path dir = get(args, "--dir");
  const int runs = std::stoi(get(args, "--runs", "3"));
  const auto sha = get(args, "--sha256");
  // With verification, the baseline verifies too, so that loading the hash code is not
  // counted as growth.
  const auto small_sha = get(args, "--small-sha256");
  const auto curl_file = (dir / "curl.out").string();
  const auto ours_dir = (dir / "ours").string();
  auto curl_cmd = [&](const std::string& u) {
    std::string script =
        "curl -sS -o '" + curl_file + "' '" + u + "' && sync -f '" + curl_file + "'";
    if (!sha.empty()) {
      script += " && sha256sum '" + curl_file + "' >/dev/null";
    }
    return std::vector<std::string>{"sh", "-c", script};
  };
  auto ours_cmd = [&](const std::string& u) {
    std::vector<std::string> argv = {self,    "fetch",  "--url", u,
                                     "--dir", ours_dir, "--job", "upparat_bench"};
    const auto& digest = u == url ? sha : small_sha;
    if (!digest.empty()) {
      argv.push_back("--sha256");
      argv.push_back(digest);
    }
    return argv;
  };
  auto clean = [&] {
    std::error_code ec;
    std::filesystem::remove(curl_file, ec);
    std::filesystem::remove_all(ours_dir, ec);
  };
  // Baselines: the peak RSS of each on a tiny file (median of a few runs; RSS is noisy).
  std::vector<double> curl_base, ours_base;
  for (int i = 0; i < std::max(3, runs); ++i) {
    clean();
    const auto c = run_measured(curl_cmd(small_url));
    clean();
    const auto o = run_measured(ours_cmd(small_url));
    if (!c.ok || !o.ok) {
      std::fprintf(stderr, "baseline download failed (curl %d, ours %d)\n", c.ok, o.ok);
      return 1;
    }
    curl_base.push_back(static_cast<double>(c.max_rss_kib));
    ours_base.push_back(static_cast<double>(o.max_rss_kib));
  }
  const double curl_small = median(curl_base);
  const double ours_small = median(ours_base);
  std::printf("baseline peak rss (tiny file): curl %.0f KiB, ours %.0f KiB\n", curl_small,
              ours_small);
  std::vector<double> cw, cc, cr, ow, oc, orss;
  for (int i = 0; i < runs; ++i) {
    for (int which = 0; which < 2; ++which) {
      // Alternate the order, so page-cache and writeback effects hit both alike.
      const bool ours = (which == 0) == (i % 2 == 1);
      clean();
      ::sync();
      const auto m = ours ? run_measured(ours_cmd(url)) : run_measured(curl_cmd(url));
      if (!m.ok) {
        std::fprintf(stderr, "%s download failed\n", ours ? "our" : "curl");
        return 1;
      }
      const double growth = static_cast<double>(m.max_rss_kib) - (ours ? ours_small : curl_small);
      std::printf("run %d %-5s wall %7.3f s  cpu %7.3f s  peak rss %6ld KiB  growth %7.0f KiB\n",
                  i + 1, ours ? "ours" : "curl", m.wall, m.cpu, m.max_rss_kib, growth);
      std::fflush(stdout);
      (ours ? ow : cw).push_back(m.wall);
      (ours ? oc : cc).push_back(m.cpu);
      (ours ? orss : cr).push_back(growth);
    }
  }
  clean();
  const double wall_ratio = median(ow) / median(cw);
  const double cpu_ratio = median(oc) / median(cc);
  std::printf("median curl: wall %.3f s, cpu %.3f s, rss growth %.0f KiB\n", median(cw), median(cc),
              median(cr));
  std::printf("median ours: wall %.3f s, cpu %.3f s, rss growth %.0f KiB\n", median(ow), median(oc),
              median(orss));
  std::printf("ratio ours/curl: wall %.3f (target <= 1.05), cpu %.3f (target <= 1.2)\n", wall_ratio,
              cpu_ratio);
  // Peak RSS varies by a few hundred KiB from run to run: below that, a ratio means nothing.
  constexpr double kNoise = 512;
  if (median(cr) < kNoise && median(orss) < kNoise) {
    std::printf(
        "rss growth: both below the %.0f KiB noise of the measurement (target: ours "
        "<= 1.5 x curl's)\n",
        kNoise);
  } else {
    std::printf("rss growth ratio: %.3f (target <= 1.5)\n",
                median(orss) / std::max(1.0, median(cr)));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s compare|fetch ...\n", argv[0]);
    return 64;
  }
  const std::string mode = argv[1];
  const auto args = parse(argc, argv, 2);
  if (mode == "fetch") {
    return fetch(args);
  }
  if (mode == "compare") {
    char self[4096];
    const auto n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
      return 1;
    }
    self[n] = '\0';
    return compare(args, self);
  }
  std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
  return 64;
}
