#include "plugin/key_value_store.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

namespace upparat::plugin {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;

TEST(KeyValueStore, SetGetRemove) {
  KeyValueStore store;
  EXPECT_FALSE(store.get("slot"));
  EXPECT_TRUE(store.set("slot", std::string("B")));
  EXPECT_EQ(store.get("slot"), "B");
  EXPECT_TRUE(store.set("slot", std::string("A")));
  EXPECT_EQ(store.get("slot"), "A");
  EXPECT_TRUE(store.set("slot", std::nullopt));
  EXPECT_FALSE(store.get("slot"));
  EXPECT_TRUE(store.set("never-set", std::nullopt));  // removing nothing succeeds
  EXPECT_TRUE(store.set("empty", std::string()));     // an empty value is a value
  EXPECT_EQ(store.get("empty"), "");
}

TEST(KeyValueStore, RestoresASavedSnapshot) {
  KeyValueStore saved;
  saved.set("b", std::string("2"));
  saved.set("a", std::string("1"));
  KeyValueStore restored(saved.snapshot());
  EXPECT_THAT(restored.snapshot(), ElementsAre(Pair("a", "1"), Pair("b", "2")));
}

TEST(KeyValueStore, KeyRules) {
  KeyValueStore store;
  EXPECT_TRUE(store.set("rauc.slot-B_1", std::string("x")));
  EXPECT_TRUE(store.set(std::string(128, 'k'), std::string("x")));
  EXPECT_FALSE(store.set(std::string(129, 'k'), std::string("x")));
  EXPECT_FALSE(store.set("", std::string("x")));
  for (const char* bad : {"with space", "slash/key", "colon:key", "t\xC3\xA4st", "tab\tkey"}) {
    EXPECT_FALSE(store.set(bad, std::string("x"))) << bad;
    EXPECT_FALSE(store.set(bad, std::nullopt)) << bad;
  }
  EXPECT_FALSE(is_valid_store_key(std::string("nul\0key", 7)));
  EXPECT_TRUE(is_valid_store_key("A-Za-z0-9._"));
}

TEST(KeyValueStore, ValueRules) {
  KeyValueStore store;
  EXPECT_TRUE(store.set("max", std::string(kStoreMaxValueBytes, 'v')));
  EXPECT_FALSE(store.set("big", std::string(kStoreMaxValueBytes + 1, 'v')));
  EXPECT_TRUE(store.set("utf8", std::string("gr\xC3\xBC\xC3\x9F\n")));
  EXPECT_FALSE(store.set("latin1", std::string("gr\xFC\xDF")));
  EXPECT_FALSE(store.set("overlong", std::string("\xC0\xAF")));
  // A refused value leaves the old one in place.
  EXPECT_TRUE(store.set("keep", std::string("old")));
  EXPECT_FALSE(store.set("keep", std::string(kStoreMaxValueBytes + 1, 'v')));
  EXPECT_EQ(store.get("keep"), "old");
}

TEST(KeyValueStore, EntryLimit) {
  KeyValueStore store;
  for (std::size_t i = 0; i < kStoreMaxEntries; ++i) {
    ASSERT_TRUE(store.set("k" + std::to_string(i), std::string("v"))) << i;
  }
  EXPECT_FALSE(store.set("one-too-many", std::string("v")));
  EXPECT_TRUE(store.set("k0", std::string("replaced")));  // replacing is always possible
  EXPECT_TRUE(store.set("k1", std::nullopt));
  EXPECT_TRUE(store.set("one-too-many", std::string("v")));  // room again
  EXPECT_EQ(store.snapshot().size(), kStoreMaxEntries);
}

TEST(KeyValueStore, ConcurrentWriters) {
  KeyValueStore store;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&store, t] {
      for (int i = 0; i < 1000; ++i) {
        store.set("t" + std::to_string(t), std::to_string(i));
        (void)store.get("t" + std::to_string((t + 1) % 4));
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  EXPECT_THAT(store.snapshot(), ElementsAre(Pair("t0", "999"), Pair("t1", "999"), Pair("t2", "999"),
                                            Pair("t3", "999")));
}

}  // namespace
}  // namespace upparat::plugin
