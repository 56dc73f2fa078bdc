/**
 * @file upparat/plugin.h
 * @brief The binary interface between the Upparat daemon (the host) and its plugins.
 *
 * This C99 header is the whole ABI. A plugin is a shared object that exports exactly one
 * symbol, ::upparat_plugin_entry (see #UPPARAT_PLUGIN_ENTRY_SYMBOL). The host calls it with its
 * own ABI version; the plugin answers with a pointer to its static ::upparat_plugin_descriptor,
 * or NULL to refuse to load.
 *
 * Rules that keep the boundary stable across compilers and standard libraries:
 * - Only C types cross it: fixed-width integers, pointers to NUL-terminated UTF-8 strings,
 *   and the structs below. No C++ types and no exceptions.
 * - Every struct begins with its own @c struct_size and only ever grows at the end. A reader
 *   checks @c struct_size before touching a field added in a later minor version.
 * - Major versions break compatibility; minor versions only add. The host loads a plugin when
 *   the majors are equal and the plugin's minor is not newer than the host's.
 * - Strings passed in either direction are owned by the side that passes them and are valid
 *   only for the duration of the call, unless stated otherwise. The host copies every string it
 *   receives; a plugin that keeps a string must copy it.
 *
 * Threading: the host never runs two calls on the same instance at once. Host services may be
 * called from any thread the plugin starts, but only until the call that received them returns
 * (the log service of ::upparat_host: until @c destroy returns).
 *
 * C++ plugin authors normally use @c upparat/plugin.hpp, which implements this interface from
 * a class with virtual member functions and one macro.
 */
#ifndef UPPARAT_PLUGIN_H
#define UPPARAT_PLUGIN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** @name ABI version
 *  The version of this header. Bump the minor when a field or function is appended, the major
 *  when anything existing changes.
 *  @{ */
#define UPPARAT_ABI_MAJOR 1 /**< Incompatible changes. */
#define UPPARAT_ABI_MINOR 3 /**< Backwards-compatible additions. */
/** @} */

/* ABI history:
 * 1.0  the first version.
 * 1.1  upparat_plugin_functions::steps: which steps an instance serves.
 * 1.2  UPPARAT_CAP_INSTALL_STREAM; upparat_step_services::stream_fd and ::stream_end: an
 *      install that reads the download's bytes while the host downloads them.
 * 1.3  upparat_job_context::signer: the signing certificate that verified a signed job's
 *      file. */

/** Name of the single symbol a plugin exports (see ::upparat_plugin_entry_fn). */
#define UPPARAT_PLUGIN_ENTRY_SYMBOL "upparat_plugin_entry"

/** Marks a symbol as exported from a plugin built with @c -fvisibility=hidden. */
#if defined(__GNUC__)
#define UPPARAT_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define UPPARAT_PLUGIN_EXPORT
#endif

/** @name Step results (::upparat_result::code)
 *  @{ */
/** The step succeeded. For @c version, @c upparat_result::text holds the installed version. */
#define UPPARAT_OK 0
/** Not now: the host runs the step again after @c retry_after_seconds (at most 86400; or its
 *  configured @c retry_interval when that is negative), at most @c max_retries times. */
#define UPPARAT_RETRY_LATER 1
/** The step failed; @c upparat_result::text says why. The job fails. */
#define UPPARAT_FAILED 2
/** This plugin does not perform this step; the host behaves as if no hook were configured,
 *  except that it may already have announced the step to the cloud. A plugin that knows in
 *  advance says so with ::upparat_plugin_functions::steps instead. */
#define UPPARAT_NOT_SUPPORTED 3
/** @} */

/** @name Capabilities (::upparat_plugin_descriptor::capabilities)
 *  @{ */
/** @c install can take the job's URL instead of a downloaded file (streaming install). The
 *  host uses it when the plugin's configuration asks for streaming; it then skips its own
 *  download and passes a freshly fetched URL in ::upparat_job_context::url, with
 *  ::upparat_job_context::file_path set to NULL. */
#define UPPARAT_CAP_INSTALL_FROM_URL (UINT64_C(1) << 0)
/** Once started, @c install must run to its end: the host does not ask it to stop and honours a
 *  cancellation only after it returned. Its deadline does not fail the job while it runs: the
 *  host logs an error, waits, and takes the result as it is (a RETRY_LATER after the deadline
 *  fails the job "timed out"). On SIGTERM the daemon waits for it for up to 52 s (the
 *  example systemd unit allows 60 s). */
#define UPPARAT_CAP_INSTALL_NOT_INTERRUPTIBLE (UINT64_C(1) << 1)
/** ABI 1.2. @c install can read the file from ::upparat_step_services::stream_fd while the host
 *  downloads it (streamed install through the host's downloader, without a local copy). The
 *  host uses it when the plugin's configuration says `stream = true` (it is preferred over
 *  #UPPARAT_CAP_INSTALL_FROM_URL when a plugin has both); @c job->file_path is then NULL and
 *  @c job->url must not be fetched. See ::upparat_step_services::stream_fd. */
#define UPPARAT_CAP_INSTALL_STREAM (UINT64_C(1) << 2)
/** @} */

/** @name How a stream ended (::upparat_step_services::stream_end, ABI 1.2)
 *  @{ */
/** The stream has not ended yet: the host is still downloading. */
#define UPPARAT_STREAM_RUNNING 0
/** Every byte was delivered, and size and SHA-256 match the job document (when it gives them). */
#define UPPARAT_STREAM_COMPLETE 1
/** The stream failed (download failed, file changed on the server, size or SHA-256 mismatch,
 *  step stopped); the reason is written to the caller's buffer. The bytes already read must
 *  not be installed. */
#define UPPARAT_STREAM_FAILED 2
/** @} */

/** @name Steps (::upparat_plugin_functions::steps, ABI 1.1)
 *  One bit per step. Bits not listed here are ignored.
 *  @{ */
#define UPPARAT_STEP_VERSION (UINT32_C(1) << 0)  /**< The @c version step. */
#define UPPARAT_STEP_DOWNLOAD (UINT32_C(1) << 1) /**< The @c download step. */
#define UPPARAT_STEP_INSTALL (UINT32_C(1) << 2)  /**< The @c install step. */
#define UPPARAT_STEP_RESTART (UINT32_C(1) << 3)  /**< The @c restart step. */
#define UPPARAT_STEP_READY (UINT32_C(1) << 4)    /**< The @c ready step. */
/** Every step. */
#define UPPARAT_STEP_ALL                                                                        \
  (UPPARAT_STEP_VERSION | UPPARAT_STEP_DOWNLOAD | UPPARAT_STEP_INSTALL | UPPARAT_STEP_RESTART | \
   UPPARAT_STEP_READY)
/** @} */

/** @name Log levels (::upparat_host::log)
 *  @{ */
#define UPPARAT_LOG_TRACE 0
#define UPPARAT_LOG_DEBUG 1
#define UPPARAT_LOG_INFO 2
#define UPPARAT_LOG_WARN 3
#define UPPARAT_LOG_ERROR 4
/** @} */

/** Opaque plugin instance, created by ::upparat_plugin_functions::create. */
typedef struct upparat_instance upparat_instance;

/** One configuration entry. */
typedef struct upparat_config_entry {
  /** Key; nested TOML tables are joined with dots (`[plugins.x.dbus] bus = ...` gives
   *  `dbus.bus`). */
  const char* key;
  /** Value as text: strings as they are, numbers and booleans (`true`/`false`) in their TOML
   *  spelling, arrays and tables as JSON. */
  const char* value;
} upparat_config_entry;

/** A plugin instance's configuration: the `[plugins.NAME]` table of the daemon's configuration
 *  without the host's own keys (`path`, `stream`). Valid only during @c create. */
typedef struct upparat_config {
  uint32_t struct_size;                /**< sizeof(upparat_config) as the host knows it. */
  uint32_t count;                      /**< Number of entries. */
  const upparat_config_entry* entries; /**< @c count entries, keys unique, sorted by key. */
} upparat_config;

/** Services the host offers for an instance's whole life (from @c create until @c destroy
 *  returns). May be called from any thread. */
typedef struct upparat_host {
  uint32_t struct_size; /**< sizeof(upparat_host) as the host knows it. */
  uint32_t reserved0;   /**< Zero. */
  void* host_data;      /**< Pass as the first argument of every service below. */
  /** Writes @p message (copied) to the daemon's log at @p level (UPPARAT_LOG_*). */
  void (*log)(void* host_data, int32_t level, const char* message);
} upparat_host;

/** Services for one step call, valid until that call returns. May be called from any thread
 *  of the plugin while the call runs. */
typedef struct upparat_step_services {
  uint32_t struct_size; /**< sizeof(upparat_step_services) as the host knows it. */
  uint32_t reserved0;   /**< Zero. */
  void* step_data;      /**< Pass as the first argument of every service below. */
  /**
   * Reports progress. @p line (may be NULL) is one human-readable line, for example a line an
   * installer printed; @p percent is 0..100, or -1 when unknown. The host rate-limits what
   * reaches the cloud, so report as often as is natural.
   */
  void (*progress)(void* step_data, const char* line, int32_t percent);
  /** Returns non-zero once the host wants this step to end (job cancelled, deadline passed,
   *  daemon stopping). A plugin returns promptly, usually with UPPARAT_FAILED. One that has
   *  not returned [jobs] stop_grace (default 30 s) after a deadline or a cancel is abandoned:
   *  the job FAILS "... the plugin did not stop ..." and the daemon exits without unloading
   *  the plugin, for the service manager to start a clean one. */
  int32_t (*should_stop)(void* step_data);
  /** A file descriptor that becomes readable when the host wants the step to end, for plugins
   *  that block in poll(). Owned by the host: never read, write or close it. */
  int32_t stop_fd;
  uint32_t reserved1; /**< Zero. */
  /**
   * Reads a value from the job's key/value store, which is saved with the daemon's durable job
   * state (so @c ready after a reboot can read what @c install wrote). Returns NULL when the
   * key is not set. The returned string is owned by the host and stays valid until the step
   * call returns (also when the key is set again meanwhile); copy it to keep it longer.
   */
  const char* (*store_get)(void* step_data, const char* key);
  /**
   * Writes @p value (copied) under @p key; NULL @p value removes the key. Keys are 1-128
   * characters of [A-Za-z0-9._-], values valid UTF-8 of at most 4096 bytes, and the store holds
   * at most 64 keys. The store is saved durably before the next step begins. Returns 0 on
   * success, -1 when the key or value is refused (the store is then unchanged).
   */
  int32_t (*store_set)(void* step_data, const char* key, const char* value);
  /**
   * ABI 1.2, valid when @c struct_size reaches it. Only in a streamed @c install (the plugin has
   * #UPPARAT_CAP_INSTALL_STREAM and streaming is configured); -1 otherwise.
   *
   * The read end of a stream socket (AF_UNIX, SOCK_STREAM) carrying the job's file in order,
   * from byte 0, while the host downloads it on another thread. It is blocking; poll() it
   * together with @c stop_fd (or set O_NONBLOCK on it). Owned by the host: never close it.
   * The host resumes cut connections and fetches fresh URLs on its own; the plugin only sees
   * the bytes pause. It holds back the last 4096 bytes (or the whole file when smaller) until
   * size and SHA-256 match the job document and a signed job's signature verifies.
   *
   * End of file (read() returns 0) means the host ended the stream: then call @c stream_end
   * to learn whether it is complete. An end of file is never a success by itself: a plugin
   * must treat a stream whose @c stream_end is not UPPARAT_STREAM_COMPLETE as failed and
   * install nothing from it. A plugin that returns UPPARAT_OK from an install whose stream did
   * not end complete has its result turned into UPPARAT_FAILED by the host.
   */
  int32_t stream_fd;
  uint32_t reserved2; /**< Zero. */
  /**
   * ABI 1.2. How the stream of @c stream_fd ended: UPPARAT_STREAM_RUNNING (not ended yet),
   * UPPARAT_STREAM_COMPLETE, or UPPARAT_STREAM_FAILED, then with the reason written
   * NUL-terminated into @p reason (at most @p reason_capacity bytes; @p reason may be NULL).
   * NULL when the step has no stream. The answer is final once it is not RUNNING; it is
   * never RUNNING after @c stream_fd reached its end of file.
   */
  int32_t (*stream_end)(void* step_data, char* reason, uint32_t reason_capacity);
} upparat_step_services;

/** What a step works on: one job execution. Strings are never NULL unless stated. */
typedef struct upparat_job_context {
  uint32_t struct_size;        /**< sizeof(upparat_job_context) as the host knows it. */
  int32_t force;               /**< The document's `force` (0 or 1). */
  const char* job_id;          /**< The job id, for example `upparat_42`. */
  int64_t execution_number;    /**< The execution number of this job on this thing. */
  const char* version;         /**< The document's `version`: the version to install. */
  const char* meta;            /**< The document's `meta`, or "" when absent. */
  const char* url;             /**< The download URL (pre-signed, with credentials: never log
                                    its query string). */
  const char* sha256;          /**< Expected lowercase hex SHA-256, or NULL when absent. */
  int64_t size;                /**< Expected size in bytes, or -1 when absent. */
  const char* document_json;   /**< The whole job document as JSON text. */
  const char* file_path;       /**< The downloaded, verified file for @c install; NULL for
                                    other steps and for an install from the URL. */
  int64_t seconds_since_first; /**< Seconds since this step was first tried for this job. */
  int32_t retry_count;         /**< 0 on the first try, then 1, 2, ... after RETRY_LATER. */
  uint32_t reserved0;          /**< Zero. */
  /**
   * ABI 1.3, valid when @c struct_size reaches it. The subject of the signing certificate
   * (RFC 2253, e.g. "CN=Firmware 2026,O=Example") that verified the signature of a signed
   * job's file (`sig-sha256-ecdsa` / `sig-sha256-rsa`), or "public key <path>" for a bare
   * public key; "" when the job is unsigned, and in a streamed install (whose signature is
   * checked at the end of the stream, see @c stream_fd). An installer may record it.
   */
  const char* signer;
} upparat_job_context;

/** What a step answers. Allocated by the host; the plugin fills it. */
typedef struct upparat_result {
  uint32_t struct_size; /**< sizeof(upparat_result) as the host knows it. */
  int32_t code;         /**< UPPARAT_OK, UPPARAT_RETRY_LATER, UPPARAT_FAILED or
                             UPPARAT_NOT_SUPPORTED. Preset by the host to UPPARAT_FAILED. */
  /** For UPPARAT_RETRY_LATER: seconds to wait, or -1 for the configured retry_interval.
   *  Preset to -1. The host takes a value above 86400 (one day) as 86400, and any negative
   *  value as -1. */
  int64_t retry_after_seconds;
  /** Host buffer of @c text_capacity bytes, preset to "". The plugin writes a NUL-terminated
   *  UTF-8 text: the installed version (for @c version) or the reason (for
   *  UPPARAT_FAILED/UPPARAT_RETRY_LATER). Longer texts must be cut; the host sanitises it. */
  char* text;
  uint32_t text_capacity; /**< Size of @c text in bytes, at least 1024 (the daemon gives 4096). */
  uint32_t reserved0;     /**< Zero. */
} upparat_result;

/**
 * One step: @c version, @c download, @c install, @c restart or @c ready.
 * Meanings (the classic Upparat hook contract):
 * - @c version: put the installed version into @c result->text.
 * - @c download: the gate before the transfer; OK means the host may download now.
 * - @c install: install from @c job->file_path, or from @c job->url when streaming from the
 *   URL, or from @c services->stream_fd when the host streams (ABI 1.2).
 * - @c restart: restart the device; usually does not return. Returning OK means a soft restart
 *   that finished.
 * - @c ready: the new system is healthy.
 * The function must fill @p result and return; it must not throw.
 * A NULL function pointer means UPPARAT_NOT_SUPPORTED, and that the plugin never serves the step.
 * The host never calls a step that the instance does not serve (see
 * ::upparat_plugin_functions::steps).
 */
typedef void (*upparat_step_fn)(upparat_instance* instance, const upparat_job_context* job,
                                const upparat_step_services* services, upparat_result* result);

/** The functions of a plugin. */
typedef struct upparat_plugin_functions {
  /** sizeof(upparat_plugin_functions) as the plugin was built with: the host reads @c steps
   *  only from a plugin built for ABI 1.1 or later, and refuses such a plugin whose table is
   *  too small to hold it. */
  uint32_t struct_size;
  uint32_t reserved0; /**< Zero. */
  /**
   * Creates an instance from its configuration. On success sets @p *instance and sets
   * @c result->code to UPPARAT_OK. On failure leaves @p *instance NULL, sets UPPARAT_FAILED and
   * writes the reason (an unknown or invalid key, a missing file) to @c result->text.
   * @p host stays valid until @c destroy returns; @p config only during this call.
   */
  void (*create)(const upparat_host* host, const upparat_config* config,
                 upparat_instance** instance, upparat_result* result);
  /** Destroys an instance. Must join every thread the instance started. */
  void (*destroy)(upparat_instance* instance);
  upparat_step_fn version;  /**< See ::upparat_step_fn. */
  upparat_step_fn download; /**< See ::upparat_step_fn. */
  upparat_step_fn install;  /**< See ::upparat_step_fn. */
  upparat_step_fn restart;  /**< See ::upparat_step_fn. */
  upparat_step_fn ready;    /**< See ::upparat_step_fn. */
  /**
   * ABI 1.1. Which steps @p instance serves: UPPARAT_STEP_* bits. A step the instance does
   * not serve is a missing hook: the host neither announces it to the cloud (no
   * `installation_start`, no `reboot_start`) nor calls it, and the job ends as without that
   * step (for example SUCCEEDED `no_installation_hook_provided`). Use it when the
   * configuration decides which steps exist, as the script plugin does with its hooks.
   *
   * The host calls it once, right after @c create succeeded and before any step; the answer
   * holds for the instance's whole life. Bits of steps whose function pointer is NULL, and
   * unknown bits, are ignored. It must not throw.
   *
   * NULL, and every plugin built for ABI 1.0 (which has no such field): the instance serves
   * every step whose function pointer is non-NULL.
   */
  uint32_t (*steps)(upparat_instance* instance);
} upparat_plugin_functions;

/** Describes a plugin. Static storage in the plugin; the host copies what it keeps.
 *  The first three fields (@c struct_size, @c abi_major, @c abi_minor) keep their place in
 *  every ABI version, major ones included, so that any host can tell which ABI a plugin was
 *  built for and refuse it with a clear message. */
typedef struct upparat_plugin_descriptor {
  uint32_t struct_size;    /**< sizeof(upparat_plugin_descriptor) as the plugin was built with. */
  uint16_t abi_major;      /**< UPPARAT_ABI_MAJOR the plugin was built with. */
  uint16_t abi_minor;      /**< UPPARAT_ABI_MINOR the plugin was built with. */
  const char* name;        /**< Short name, for example `script`. */
  const char* version;     /**< The plugin's own version. */
  const char* license;     /**< SPDX license expression, for example `Apache-2.0` (NULL: none). */
  const char* description; /**< One line for humans (NULL: none). */
  uint64_t capabilities;   /**< UPPARAT_CAP_* bits. */
  const upparat_plugin_functions* functions; /**< Never NULL. */
} upparat_plugin_descriptor;

/**
 * The entry point every plugin exports under the name #UPPARAT_PLUGIN_ENTRY_SYMBOL.
 * @param host_abi_major UPPARAT_ABI_MAJOR of the host.
 * @param host_abi_minor UPPARAT_ABI_MINOR of the host.
 * @return The plugin's descriptor (static storage), or NULL when the plugin refuses this host.
 *         The host checks compatibility itself too, so a plugin may simply return its
 *         descriptor.
 */
typedef const upparat_plugin_descriptor* (*upparat_plugin_entry_fn)(uint32_t host_abi_major,
                                                                    uint32_t host_abi_minor);

/**
 * The entry point itself, declared here so that a plugin's definition is checked against it.
 * Define it in exactly one source file of the plugin, with #UPPARAT_PLUGIN_EXPORT (C++ plugins
 * get it from the UPPARAT_PLUGIN macro of @c upparat/plugin.hpp):
 * @code
 * UPPARAT_PLUGIN_EXPORT const upparat_plugin_descriptor* upparat_plugin_entry(
 *     uint32_t host_abi_major, uint32_t host_abi_minor) {
 *   (void)host_abi_major;
 *   (void)host_abi_minor;
 *   return &my_descriptor;
 * }
 * @endcode
 */
UPPARAT_PLUGIN_EXPORT const upparat_plugin_descriptor* upparat_plugin_entry(
    uint32_t host_abi_major, uint32_t host_abi_minor);

#ifdef __cplusplus
}
#endif

#endif /* UPPARAT_PLUGIN_H */
