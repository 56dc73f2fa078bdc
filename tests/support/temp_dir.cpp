#include "support/temp_dir.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <system_error>
#include <vector>

namespace upparat::test {

namespace fs = std::filesystem;

Result<TempDir> TempDir::create(std::string_view prefix) {
  const char* tmp = std::getenv("TMPDIR");
  fs::path base = (tmp != nullptr && *tmp != '\0') ? fs::path(tmp) : fs::path("/tmp");
  std::string pattern = (base / ("upparat-" + std::string(prefix) + "-XXXXXX")).string();
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (::mkdtemp(buffer.data()) == nullptr) {
    return fail("cannot create a temporary directory " + pattern + ": " + std::strerror(errno));
  }
  return TempDir(fs::path(buffer.data()));
}

TempDir::TempDir(TempDir&& other) noexcept : path_(std::move(other.path_)) {
  other.path_.clear();
}

TempDir& TempDir::operator=(TempDir&& other) noexcept {
  if (this != &other) {
    remove();
    path_ = std::move(other.path_);
    other.path_.clear();
  }
  return *this;
}

TempDir::~TempDir() {
  remove();
}

void TempDir::remove() {
  if (path_.empty()) {
    return;
  }
  const char* keep = std::getenv("UPPARAT_KEEP_TEST_DIRS");
  if (keep != nullptr && std::string_view(keep) == "1") {
    std::cerr << "UPPARAT_KEEP_TEST_DIRS=1: keeping " << path_.string() << std::endl;
  } else {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  path_.clear();
}

Result<fs::path> TempDir::write_file(const fs::path& name, std::string_view content) const {
  fs::path full = path_ / name;
  std::error_code ec;
  fs::create_directories(full.parent_path(), ec);
  if (ec) {
    return fail("cannot create " + full.parent_path().string() + ": " + ec.message());
  }
  if (auto status = test::write_file(full, content); !status) {
    return fail(status.error());
  }
  return full;
}

Result<std::string> read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return fail("cannot open " + path.string() + ": " + std::strerror(errno));
  }
  std::ostringstream out;
  out << in.rdbuf();
  if (in.bad()) {
    return fail("cannot read " + path.string());
  }
  return out.str();
}

Status write_file(const fs::path& path, std::string_view content, fs::perms perms) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) {
      return fail("cannot create " + path.string() + ": " + std::strerror(errno));
    }
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    out.flush();
    if (!out) {
      return fail("cannot write " + path.string());
    }
  }
  std::error_code ec;
  fs::permissions(path, perms, fs::perm_options::replace, ec);
  if (ec) {
    return fail("cannot chmod " + path.string() + ": " + ec.message());
  }
  return {};
}

}  // namespace upparat::test
