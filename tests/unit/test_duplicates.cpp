// The key sieve: it may flag keys that never repeat (a Bloom filter's false positives), the hash log
// weeds those out, and no key that truly repeats is ever lost on the way.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "epc/load/duplicates.hpp"

using namespace epc;

namespace {

std::string key(int i) { return std::to_string(100000000000000000LL + i) + "1234567890123"; }

// Feeds keys through a Writer as a parse thread does.
void feed(KeySieve& sieve, const std::vector<std::string>& keys) {
    KeySieve::Writer writer(sieve);
    for (const std::string& k : keys) writer.add(k, false);
}

}  // namespace

TEST(KeySieve, FalsePositivesAreDroppedAndTrueRepeatsKept) {
    // 1.5 M keys in the smallest sieve (1 MiB): it flags thousands of keys that never repeat.
    KeySieve sieve(0);
    std::vector<std::string> first, second;
    for (int i = 0; i < 750000; ++i) first.push_back(key(i));
    for (int i = 750000; i < 1500000; ++i) second.push_back(key(i));
    const std::set<std::string> repeated = {key(17), key(123456), key(749999)};
    for (const std::string& k : repeated) second.push_back(k);  // a later file repeats three keys
    std::thread other([&] { feed(sieve, second); });
    feed(sieve, first);
    other.join();
    const std::vector<std::string>* suspects = sieve.suspects();
    ASSERT_NE(suspects, nullptr);
    EXPECT_EQ(std::set<std::string>(suspects->begin(), suspects->end()), repeated);
}

TEST(KeySieve, KeysWithNonAsciiBytesAlwaysStay) {
    // "\xE9" and "\xEA" both become U+FFFD in PostgreSQL: only the database can tell they are one key.
    KeySieve sieve(1000);
    {
        KeySieve::Writer writer(sieve);
        for (std::string k : {std::string("A\xE9"), std::string("A\xEA"), std::string("plain")})
            writer.add(k, k != "plain");
    }
    const std::vector<std::string>* suspects = sieve.suspects();
    ASSERT_NE(suspects, nullptr);
    EXPECT_EQ(*suspects, (std::vector<std::string>{"A\xE9", "A\xEA"}));
}

TEST(KeySieve, AKeyRepeatedWithinOneWriterIsKept) {
    KeySieve sieve(100);
    feed(sieve, {"a", "b", "a", "c", "a"});
    const std::vector<std::string>* suspects = sieve.suspects();
    ASSERT_NE(suspects, nullptr);
    EXPECT_EQ(*suspects, (std::vector<std::string>{"a", "a"}));
}
