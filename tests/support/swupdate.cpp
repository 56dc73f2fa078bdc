#include "support/swupdate.hpp"

#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <thread>

#include "support/binaries.hpp"

namespace upparat::test {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

Status run_checked(std::vector<std::string> argv, const std::string& what) {
  auto ran = run_process(std::move(argv), std::chrono::seconds(30));
  if (!ran) {
    return fail(what + ": " + ran.error().message());
  }
  if (!ran->status.success()) {
    return fail(what + ": " + ran->status.describe() + ": " + ran->output);
  }
  return {};
}

/// True when a client can connect to the Unix socket at `path`.
bool socket_accepts(const fs::path& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return false;
  }
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::snprintf(address.sun_path, sizeof(address.sun_path), "%s", path.c_str());
  const bool ok = ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0;
  ::close(fd);
  return ok;
}

std::string image_entries(const std::vector<SwuImage>& images,
                          const std::vector<std::string>& hashes) {
  std::string text = "files: (\n";
  for (std::size_t i = 0; i < images.size(); ++i) {
    text += std::string(i == 0 ? "" : ",\n") + "  {\n    filename = \"" + images[i].name +
            "\";\n    path = \"" + images[i].target.string() + "\";\n    sha256 = \"" + hashes[i] +
            "\";\n    installed-directly = true;\n  }";
  }
  return text + "\n);\n";
}

}  // namespace

Result<SwupdateFixture> SwupdateFixture::create(fs::path work_dir, fs::path socket_dir) {
  SwupdateFixture fixture(std::move(work_dir), std::move(socket_dir));
  const fs::path& dir = fixture.work_dir_;
  if (auto made = run_checked({kOpensslPath, "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                               "-keyout", (dir / "c.key").string(), "-out",
                               (dir / "c.crt").string(), "-subj", "/CN=upparat-test", "-days", "2"},
                              "openssl req");
      !made) {
    return fail(made.error());
  }
  if (auto written =
          write_file(dir / "swupdate.cfg", "globals: {\n  verbose = true;\n  loglevel = 6;\n};\n");
      !written) {
    return fail(written.error());
  }
  return fixture;
}

Result<fs::path> SwupdateFixture::make_swu(const std::string& name,
                                           const std::vector<SwuImage>& images,
                                           const SwuOptions& options) const {
  const fs::path dir = work_dir_ / (name + ".d");
  std::error_code ignored;
  fs::remove_all(dir, ignored);
  fs::create_directories(dir);
  std::vector<std::string> hashes;
  for (std::size_t i = 0; i < images.size(); ++i) {
    hashes.push_back(sha256_hex(images[i].content));
    std::string content = images[i].content;
    if (i == 0 && options.corrupt_first_image && !content.empty()) {
      content[content.size() / 2] = static_cast<char>(content[content.size() / 2] ^ 0x55);
    }
    if (auto written = write_file(dir / images[i].name, content); !written) {
      return fail(written.error());
    }
  }
  std::string description =
      "software = {\n  version = \"1.0.0\";\n  hardware-compatibility = [ \"rev1\" ];\n";
  if (options.software_set.empty()) {
    description += image_entries(images, hashes);
  } else {
    description += options.software_set + ": {\n" + options.running_mode + ": {\n" +
                   image_entries(images, hashes) + "};\n};\n";
  }
  std::vector<std::string> members;
  if (options.postinstall_sleep_seconds > 0) {
    const std::string script = "#!/bin/sh\nif [ \"$1\" = postinst ]; then sleep " +
                               std::to_string(options.postinstall_sleep_seconds) + "; fi\n";
    if (auto written = write_file(dir / "wait.sh", script); !written) {
      return fail(written.error());
    }
    description +=
        "scripts: (\n  {\n    filename = \"wait.sh\";\n    type = \"shellscript\";\n"
        "    sha256 = \"" +
        sha256_hex(script) + "\";\n  }\n);\n";
    members.push_back("wait.sh");
  }
  description += "};\n";
  if (auto written = write_file(dir / "sw-description", description); !written) {
    return fail(written.error());
  }
  if (auto signed_ok = run_checked(
          {kOpensslPath, "cms", "-sign", "-in", (dir / "sw-description").string(), "-out",
           (dir / "sw-description.sig").string(), "-signer", (work_dir_ / "c.crt").string(),
           "-inkey", (work_dir_ / "c.key").string(), "-outform", "DER", "-nosmimecap", "-binary"},
          "openssl cms -sign");
      !signed_ok) {
    return fail(signed_ok.error());
  }
  // cpio reads the member names from stdin: sw-description first, then its signature.
  std::string names = "sw-description\\nsw-description.sig\\n";
  for (const auto& image : images) {
    names += image.name + "\\n";
  }
  for (const auto& member : members) {
    names += member + "\\n";
  }
  const fs::path archive = work_dir_ / name;
  if (auto packed = run_checked({"/bin/sh", "-c",
                                 "cd '" + dir.string() + "' && printf '" + names + "' | " +
                                     kCpioPath + " -o -H crc --quiet > '" + archive.string() + "'"},
                                "cpio");
      !packed) {
    return fail(packed.error());
  }
  if (options.trailing_padding > 0) {
    auto content = read_file(archive);
    if (!content) {
      return fail(content.error());
    }
    content->append(options.trailing_padding, '\0');
    if (auto written = write_file(archive, *content); !written) {
      return fail(written.error());
    }
  }
  return archive;
}

Status SwupdateFixture::start(const std::vector<std::string>& extra_args) {
  stop();
  ProcessOptions options;
  options.argv = {kSwupdatePath, "-f", (work_dir_ / "swupdate.cfg").string(), "-k",
                  (work_dir_ / "c.crt").string(), "-H", "board:rev1",
                  // The software set and running mode a request may select (tests of -e).
                  "-q", "stable,main", "-v"};
  options.argv.insert(options.argv.end(), extra_args.begin(), extra_args.end());
  options.name = "swupdate";
  options.log_path = work_dir_ / "swupdate.log";
  options.env = {{"TMPDIR", socket_dir_.string()}};
  options.stop_grace = milliseconds(2000);
  auto started = ServiceProcess::start(std::move(options));
  if (!started) {
    return fail(started.error());
  }
  daemon_.emplace(std::move(*started));
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!socket_accepts(control_socket()) || !socket_accepts(progress_socket())) {
    if (!daemon_->running()) {
      return fail("swupdate exited at start: " + daemon_->log_tail());
    }
    if (std::chrono::steady_clock::now() > until) {
      return fail("swupdate did not open its sockets in " + socket_dir_.string() + ": " +
                  daemon_->log_tail());
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
  return {};
}

void SwupdateFixture::stop() {
  if (daemon_) {
    // A stopped (SIGSTOP) daemon must run again to receive SIGTERM.
    (void)daemon_->send_signal(SIGCONT);
    (void)daemon_->stop();
    daemon_.reset();
  }
  std::error_code ignored;
  fs::remove(control_socket(), ignored);
  fs::remove(progress_socket(), ignored);
}

}  // namespace upparat::test
