/* An example Upparat plugin in plain C (C99), built with pkg-config and the two-line Makefile
 * next to it: `make`. It installs the job's file by copying it to a target file and keeps the
 * installed version in a version file, like the C++ template (../sdk-template).
 *
 * Configuration ([plugins.example-c] in the daemon's TOML file):
 *   version_file = "/var/lib/example/version"   the installed version, one line
 *   target       = "/var/lib/example/slot.img"  where install writes the image */

#define _POSIX_C_SOURCE 200809L

#include <upparat/plugin.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct upparat_instance {
  char* version_file;
  char* target;
};

static void say(upparat_result* result, int32_t code, const char* text) {
  result->code = code;
  snprintf(result->text, result->text_capacity, "%s", text);
}

static void plugin_create(const upparat_host* host, const upparat_config* config,
                          upparat_instance** instance, upparat_result* result) {
  (void)host;
  upparat_instance* self = calloc(1, sizeof *self);
  if (self == NULL) {
    say(result, UPPARAT_FAILED, "out of memory");
    return;
  }
  for (uint32_t i = 0; i < config->count; ++i) {
    const upparat_config_entry* e = &config->entries[i];
    if (strcmp(e->key, "version_file") == 0) {
      self->version_file = strdup(e->value);
    } else if (strcmp(e->key, "target") == 0) {
      self->target = strdup(e->value);
    } else {
      snprintf(result->text, result->text_capacity, "unknown configuration key '%s'", e->key);
      free(self->version_file);
      free(self->target);
      free(self);
      return; /* result->code is preset to UPPARAT_FAILED */
    }
  }
  if (self->version_file == NULL || self->target == NULL) {
    say(result, UPPARAT_FAILED, "'version_file' and 'target' are required");
    free(self->version_file);
    free(self->target);
    free(self);
    return;
  }
  *instance = self;
  result->code = UPPARAT_OK;
}

static void plugin_destroy(upparat_instance* self) {
  free(self->version_file);
  free(self->target);
  free(self);
}

/* Reads the first line of `path` into `out` (without the newline); 0 on success. */
static int read_line(const char* path, char* out, size_t size) {
  FILE* f = fopen(path, "r");
  if (f == NULL) {
    return -1;
  }
  const int ok = fgets(out, (int)size, f) != NULL;
  fclose(f);
  out[strcspn(out, "\n")] = '\0';
  return ok && out[0] != '\0' ? 0 : -1;
}

/* version: the installed version. */
static void plugin_version(upparat_instance* self, const upparat_job_context* job,
                           const upparat_step_services* services, upparat_result* result) {
  (void)job;
  (void)services;
  char line[256];
  if (read_line(self->version_file, line, sizeof line) != 0) {
    say(result, UPPARAT_FAILED, "cannot read the installed version");
    return;
  }
  say(result, UPPARAT_OK, line);
}

/* install: copy the downloaded, verified file to the target, reporting progress and stopping
 * when asked; remember the version for restart. */
static void plugin_install(upparat_instance* self, const upparat_job_context* job,
                           const upparat_step_services* services, upparat_result* result) {
  if (job->file_path == NULL) {
    say(result, UPPARAT_FAILED, "no file to install");
    return;
  }
  FILE* in = fopen(job->file_path, "rb");
  FILE* out = fopen(self->target, "wb");
  if (in == NULL || out == NULL) {
    say(result, UPPARAT_FAILED, "cannot open the file or the target");
  } else {
    char buffer[65536];
    size_t n;
    long long copied = 0;
    result->code = UPPARAT_OK;
    while ((n = fread(buffer, 1, sizeof buffer, in)) > 0) {
      if (services->should_stop(services->step_data)) {
        say(result, UPPARAT_FAILED, "stopped");
        break;
      }
      if (fwrite(buffer, 1, n, out) != n) {
        say(result, UPPARAT_FAILED, "writing the target failed");
        break;
      }
      copied += (long long)n;
      if (job->size > 0) {
        services->progress(services->step_data, NULL, (int32_t)(copied * 100 / job->size));
      }
    }
  }
  if (in != NULL) {
    fclose(in);
  }
  if (out != NULL && fclose(out) != 0 && result->code == UPPARAT_OK) {
    say(result, UPPARAT_FAILED, "writing the target failed");
  }
  if (result->code == UPPARAT_OK &&
      services->store_set(services->step_data, "installed_version", job->version) != 0) {
    say(result, UPPARAT_FAILED, "cannot remember the installed version");
  }
}

/* restart: a real plugin reboots here; this one "boots" the new version (a soft restart). */
static void plugin_restart(upparat_instance* self, const upparat_job_context* job,
                           const upparat_step_services* services, upparat_result* result) {
  (void)job;
  const char* installed = services->store_get(services->step_data, "installed_version");
  if (installed == NULL) {
    say(result, UPPARAT_FAILED, "nothing was installed");
    return;
  }
  FILE* f = fopen(self->version_file, "w");
  if (f == NULL || fprintf(f, "%s\n", installed) < 0 || fclose(f) != 0) {
    say(result, UPPARAT_FAILED, "cannot write the version file");
    return;
  }
  result->code = UPPARAT_OK;
}

/* ready: the new version runs. */
static void plugin_ready(upparat_instance* self, const upparat_job_context* job,
                         const upparat_step_services* services, upparat_result* result) {
  (void)services;
  char line[256];
  if (read_line(self->version_file, line, sizeof line) != 0 || strcmp(line, job->version) != 0) {
    say(result, UPPARAT_FAILED, "the new version does not run");
    return;
  }
  result->code = UPPARAT_OK;
}

static const upparat_plugin_functions functions = {
    sizeof(upparat_plugin_functions),
    0,
    plugin_create,
    plugin_destroy,
    plugin_version,
    NULL, /* download: no opinion, the daemon downloads at once */
    plugin_install,
    plugin_restart,
    plugin_ready,
    NULL, /* steps: every step with a function */
};

static const upparat_plugin_descriptor descriptor = {
    sizeof(upparat_plugin_descriptor),
    UPPARAT_ABI_MAJOR,
    UPPARAT_ABI_MINOR,
    "example-c",
    "0.1.0",
    "Apache-2.0",
    "Copies the image to a target file (SDK C template)",
    0,
    &functions,
};

UPPARAT_PLUGIN_EXPORT const upparat_plugin_descriptor* upparat_plugin_entry(
    uint32_t host_abi_major, uint32_t host_abi_minor) {
  (void)host_abi_minor;
  return host_abi_major == UPPARAT_ABI_MAJOR ? &descriptor : NULL;
}
