#pragma once

// libcurl, loaded with dlopen() while the daemon downloads and unloaded when the job is over.
// Debian's libcurl pulls in some 25 libraries (gnutls, krb5, ldap, ssh2, rtmp, ...) whose
// relocated data and start-up allocations cost about 650 KiB of private memory once loaded:
// more than everything else the idle daemon adds to its MQTT connection. Only the headers are
// used at build time; nothing links libcurl.

#include <curl/curl.h>

#include <memory>

#include "common/error.hpp"

namespace upparat::download {

/// The libcurl functions the downloader calls, resolved from one dlopen() of libcurl.so.4.
/// curl_global_init() ran when it was loaded; the last owner's release runs
/// curl_global_cleanup() and dlclose(), so the libraries leave the process.
struct CurlLibrary {
  decltype(&::curl_easy_init) easy_init = nullptr;
  decltype(&::curl_easy_setopt) easy_setopt = nullptr;
  decltype(&::curl_easy_cleanup) easy_cleanup = nullptr;
  decltype(&::curl_easy_strerror) easy_strerror = nullptr;
  decltype(&::curl_multi_init) multi_init = nullptr;
  decltype(&::curl_multi_add_handle) multi_add_handle = nullptr;
  decltype(&::curl_multi_remove_handle) multi_remove_handle = nullptr;
  decltype(&::curl_multi_perform) multi_perform = nullptr;
  decltype(&::curl_multi_poll) multi_poll = nullptr;
  decltype(&::curl_multi_info_read) multi_info_read = nullptr;
  decltype(&::curl_multi_cleanup) multi_cleanup = nullptr;
  decltype(&::curl_multi_strerror) multi_strerror = nullptr;
  decltype(&::curl_slist_append) slist_append = nullptr;
  decltype(&::curl_slist_free_all) slist_free_all = nullptr;

  /// The loaded library, shared by every caller while any holds it (loads it when none does).
  /// Fails with dlopen()'s reason when libcurl.so.4 or one of its functions is missing.
  [[nodiscard]] static Result<std::shared_ptr<const CurlLibrary>> load();

  /// Whether libcurl.so.4 is mapped into this process now (it may be by other means, e.g. a
  /// program that links it).
  [[nodiscard]] static bool mapped();
};

}  // namespace upparat::download
