#include "download/curl_library.hpp"

#include <dlfcn.h>

#include <chrono>
#include <fstream>
#include <mutex>
#include <string>

#include <spdlog/spdlog.h>

namespace upparat::download {
namespace {

constexpr const char* kSoname = "libcurl.so.4";

std::mutex& load_mutex() {
  static std::mutex mutex;
  return mutex;
}

// The library while someone holds it; weak, so the last holder's release unloads it.
std::weak_ptr<const CurlLibrary>& current() {
  static std::weak_ptr<const CurlLibrary> library;
  return library;
}

template <typename F>
bool resolve(void* handle, const char* name, F& function, std::string& missing) {
  void* symbol = ::dlsym(handle, name);
  if (symbol == nullptr) {
    missing += (missing.empty() ? "" : ", ") + std::string(name);
    return false;
  }
  function = reinterpret_cast<F>(symbol);
  return true;
}

}  // namespace

Result<std::shared_ptr<const CurlLibrary>> CurlLibrary::load() {
  std::lock_guard lock(load_mutex());
  if (auto library = current().lock()) {
    return library;
  }
  const auto start = std::chrono::steady_clock::now();
  void* handle = ::dlopen(kSoname, RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = ::dlerror();
    return fail(std::string("cannot load ") + kSoname + " (" + (why ? why : "unknown") +
                "): install libcurl4");
  }
  auto library = std::make_unique<CurlLibrary>();
  std::string missing;
  resolve(handle, "curl_easy_init", library->easy_init, missing);
  resolve(handle, "curl_easy_setopt", library->easy_setopt, missing);
  resolve(handle, "curl_easy_cleanup", library->easy_cleanup, missing);
  resolve(handle, "curl_easy_strerror", library->easy_strerror, missing);
  resolve(handle, "curl_multi_init", library->multi_init, missing);
  resolve(handle, "curl_multi_add_handle", library->multi_add_handle, missing);
  resolve(handle, "curl_multi_remove_handle", library->multi_remove_handle, missing);
  resolve(handle, "curl_multi_perform", library->multi_perform, missing);
  resolve(handle, "curl_multi_poll", library->multi_poll, missing);
  resolve(handle, "curl_multi_info_read", library->multi_info_read, missing);
  resolve(handle, "curl_multi_cleanup", library->multi_cleanup, missing);
  resolve(handle, "curl_multi_strerror", library->multi_strerror, missing);
  resolve(handle, "curl_slist_append", library->slist_append, missing);
  resolve(handle, "curl_slist_free_all", library->slist_free_all, missing);
  decltype(&::curl_global_init) global_init = nullptr;
  decltype(&::curl_global_cleanup) global_cleanup = nullptr;
  resolve(handle, "curl_global_init", global_init, missing);
  resolve(handle, "curl_global_cleanup", global_cleanup, missing);
  if (!missing.empty()) {
    ::dlclose(handle);
    return fail(std::string(kSoname) + " lacks " + missing + " (libcurl 7.66 or newer is needed)");
  }
  if (const CURLcode rc = global_init(CURL_GLOBAL_DEFAULT); rc != CURLE_OK) {
    ::dlclose(handle);
    return fail("curl_global_init failed (code " + std::to_string(static_cast<int>(rc)) + ")");
  }
  spdlog::debug("loaded {} in {} ms", kSoname,
                std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::steady_clock::now() - start)
                    .count());
  std::shared_ptr<const CurlLibrary> shared(library.release(),
                                            [handle, global_cleanup](const CurlLibrary* unloaded) {
                                              // Under the load mutex, so that a load in another
                                              // thread waits for the dlclose().
                                              std::lock_guard unload_lock(load_mutex());
                                              delete unloaded;
                                              global_cleanup();
                                              ::dlclose(handle);
                                              spdlog::debug("unloaded {}", kSoname);
                                            });
  current() = shared;
  return shared;
}

bool CurlLibrary::mapped() {
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    if (line.find(std::string("/") + kSoname) != std::string::npos) {
      return true;
    }
  }
  return false;
}

}  // namespace upparat::download
