// Shard assignment: every file to exactly one shard, bytes balanced, the same split in every process.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "epc/load/shards.hpp"

using namespace epc;

TEST(Shards, EveryFileGoesToExactlyOneShardAndTheBytesAreBalanced) {
    std::vector<CertFile> files;
    // 348 Local Authority files of very different sizes, as in the legacy layout, plus empty ones.
    std::uint64_t total = 0;
    for (int i = 0; i < 352; ++i) {
        std::uint64_t size = i < 348 ? 1000 + static_cast<std::uint64_t>((i * 7919) % 997) * 4000 : 0;
        files.push_back({i + 1, static_cast<zip_uint64_t>(i), "f" + std::to_string(i), size});
        total += size;
    }
    for (int count : {1, 2, 3, 8, 400}) {
        std::vector<int> shard = assign_shards(files, count);
        ASSERT_EQ(shard.size(), files.size());
        std::vector<std::uint64_t> bytes(static_cast<std::size_t>(count), 0);
        std::vector<int> per_shard(static_cast<std::size_t>(count), 0);
        for (std::size_t i = 0; i < files.size(); ++i) {
            ASSERT_GE(shard[i], 0);
            ASSERT_LT(shard[i], count);
            bytes[static_cast<std::size_t>(shard[i])] += files[i].size;
            ++per_shard[static_cast<std::size_t>(shard[i])];
        }
        // Greedy by size: no shard exceeds an even share by more than the largest file.
        const std::uint64_t largest = std::max_element(files.begin(), files.end(), [](auto& a, auto& b) {
                                          return a.size < b.size;
                                      })->size;
        for (int s = 0; s < count && count <= static_cast<int>(files.size()); ++s) {
            EXPECT_LE(bytes[static_cast<std::size_t>(s)], total / static_cast<std::uint64_t>(count) + largest) << count;
            EXPECT_GT(per_shard[static_cast<std::size_t>(s)], 0) << count;
        }
        // Every process computes the same split.
        EXPECT_EQ(assign_shards(files, count), shard);
    }
}
