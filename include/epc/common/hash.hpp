// A fast 64-bit hash of bytes, for telling changed rows from unchanged ones (not for security:
// nobody gains by making two certificates collide, and 2^-64 per changed row is never seen).
// Its values are stored in production (row_hash): changing the function makes every row of the
// next publish look changed, once.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

namespace epc {

// splitmix64's finaliser: every input bit reaches every output bit.
constexpr std::uint64_t mix64(std::uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

inline std::uint64_t hash64(std::string_view bytes) {
    constexpr std::uint64_t k = 0x9E3779B97F4A7C15ULL;
    std::uint64_t h = k ^ bytes.size();
    const char* p = bytes.data();
    std::size_t n = bytes.size();
    for (; n >= 8; p += 8, n -= 8) {
        std::uint64_t word = 0;
        std::memcpy(&word, p, 8);
        h = (h ^ mix64(word + k)) * k;
    }
    std::uint64_t tail = 0;
    std::memcpy(&tail, p, n);
    return mix64(h ^ mix64(tail + n));
}

}  // namespace epc
