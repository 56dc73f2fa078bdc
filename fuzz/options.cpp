// Sanitizer options of every fuzz target, so that running a target by hand behaves as in
// fuzz/fuzz.sh: a finding stops the run with a stack trace, and the known findings in
// third-party headers (ubsan.supp) are ignored.

extern "C" const char* __ubsan_default_options() {
  return "halt_on_error=1:print_stacktrace=1:suppressions=" UPPARAT_FUZZ_DIR "/ubsan.supp";
}
