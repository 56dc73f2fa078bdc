#include "common/idle_memory.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace upparat {
namespace {

/// The resident KiB of the mapping of this process that holds `address` (/proc/self/smaps).
long resident_kib_of_mapping(const void* address) {
  auto at = reinterpret_cast<std::uintptr_t>(address);
  std::ifstream in("/proc/self/smaps");
  bool inside = false;
  for (std::string line; std::getline(in, line);) {
    std::uintptr_t low = 0;
    std::uintptr_t high = 0;
    char dash = 0;
    std::istringstream range(line);
    if (range >> std::hex >> low >> dash >> high && dash == '-') {
      inside = low <= at && at < high;
      continue;
    }
    if (inside && line.rfind("Rss:", 0) == 0) {
      return std::atol(line.c_str() + 4);
    }
  }
  return -1;
}

/// Touches `levels` × 64 KiB of this thread's stack, as a deep call would.
__attribute__((noinline)) int touch_stack(int levels) {
  volatile char block[64 * 1024];
  for (std::size_t i = 0; i < sizeof block; i += 512) {
    block[i] = static_cast<char>(i);
  }
  int below = levels > 1 ? touch_stack(levels - 1) : 0;
  return below + 1 + (block[0] & 0);
}

TEST(IdleMemory, GivesBackTheStackADeepCallTouchedAndKeepsTheCallersFrame) {
  long touched = 0;
  long after = 0;
  bool frame_intact = true;
  std::thread worker([&] {
    // Lives in this frame, above the range given back.
    volatile char frame[4096];
    for (std::size_t i = 0; i < sizeof frame; ++i) {
      frame[i] = static_cast<char>(i * 7);
    }
    EXPECT_EQ(touch_stack(16), 16);  // 1 MiB
    touched = resident_kib_of_mapping(const_cast<char*>(&frame[0]));
    give_back_idle_memory();
    after = resident_kib_of_mapping(const_cast<char*>(&frame[0]));
    for (std::size_t i = 0; i < sizeof frame; ++i) {
      frame_intact = frame_intact && frame[i] == static_cast<char>(i * 7);
    }
  });
  worker.join();
  EXPECT_GE(touched, 1024) << "the deep call did not touch 1 MiB of its stack";
  EXPECT_LT(after, 128) << "the pages below the caller were kept (" << touched << " KiB before)";
  EXPECT_TRUE(frame_intact) << "the caller's own frame was wiped";
}

#if !defined(__SANITIZE_ADDRESS__)  // ASan has its own allocator: malloc_trim does not apply
/// The process's anonymous memory in KiB (/proc/self/smaps_rollup).
long anonymous_kib() {
  std::ifstream in("/proc/self/smaps_rollup");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("Anonymous:", 0) == 0) {
      return std::atol(line.c_str() + 10);
    }
  }
  return -1;
}

TEST(IdleMemory, GivesBackTheFreePagesOfTheHeap) {
  // 8 MiB in blocks below malloc's mmap threshold, freed except one block at the end, so the
  // free memory lies inside the heap and free() alone does not shrink it.
  std::vector<void*> blocks;
  for (int i = 0; i < 2048; ++i) {
    blocks.push_back(std::malloc(4000));
    std::memset(blocks.back(), 1, 4000);
  }
  void* last = std::malloc(64);
  for (void* b : blocks) {
    std::free(b);
  }
  long before = anonymous_kib();
  give_back_idle_memory();
  long after = anonymous_kib();
  std::free(last);
  EXPECT_GT(before - after, 2 * 1024) << before << " KiB before, " << after << " KiB after";
}
#endif

}  // namespace
}  // namespace upparat
