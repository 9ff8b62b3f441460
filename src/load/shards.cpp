#include "epc/load/shards.hpp"

#include <algorithm>
#include <cstdint>

namespace epc {

std::vector<int> assign_shards(const std::vector<CertFile>& files, int count) {
    std::vector<std::size_t> order(files.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return files[a].size > files[b].size; });
    std::vector<std::uint64_t> bytes(static_cast<std::size_t>(std::max(count, 1)), 0);
    std::vector<int> shard(files.size(), 0);
    for (std::size_t i : order) {
        auto least = std::min_element(bytes.begin(), bytes.end());  // the first of equals: lowest index
        shard[i] = static_cast<int>(least - bytes.begin());
        *least += files[i].size + 1;  // +1: empty files still spread out
    }
    return shard;
}

}  // namespace epc
