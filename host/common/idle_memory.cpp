#include "common/idle_memory.hpp"

#include <malloc.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>

namespace upparat {
namespace {

/// Kept above the range given back: this function's own frame and that of madvise().
constexpr std::uintptr_t kMargin = 16 * 1024;

// Not inlined: `here` must lie in a frame below the caller's.
__attribute__((noinline)) void give_back_stack_below_caller() {
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) != 0) {
    return;
  }
  void* base = nullptr;
  std::size_t size = 0;
  int got = pthread_attr_getstack(&attr, &base, &size);
  pthread_attr_destroy(&attr);
  if (got != 0 || base == nullptr) {
    return;
  }
  volatile char marker = 0;
  auto here = reinterpret_cast<std::uintptr_t>(&marker);
  auto low = reinterpret_cast<std::uintptr_t>(base);
  auto page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
  if (here < low + kMargin) {
    return;
  }
  // The stack grows down: [low, here - margin) holds no live frame.
  std::uintptr_t end = (here - kMargin) & ~(page - 1);
  if (end > low) {
    madvise(reinterpret_cast<void*>(low), end - low, MADV_DONTNEED);
  }
}

}  // namespace

void give_back_idle_memory() {
  malloc_trim(0);
  give_back_stack_below_caller();
}

}  // namespace upparat
