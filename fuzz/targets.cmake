# The fuzz targets: each NAME is targets/NAME.cpp (one LLVMFuzzerTestOneInput) with its seed
# corpus in corpus/NAME/. Read by fuzz/CMakeLists.txt (the clang build) and by
# tests/fuzz/CMakeLists.txt (the short CI runs), so adding a name here adds both.
set(UPPARAT_FUZZ_TARGETS
  job_document
  notify
  get_accepted
  describe_accepted
  update_accepted
  toml_config
  ini_config
  status_detail
  url
  signature)
