// SHA-256 (FIPS 180-4), computed while a download streams so the archive's checksum costs no
// second pass over a multi-gigabyte file. Written here rather than taken from OpenSSL to keep the
// dependency list to Debian packages the importer already needs.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace epc {

class Sha256 {
public:
    Sha256() { reset(); }
    void reset();
    void update(const void* data, std::size_t size);
    void update(std::string_view data) { update(data.data(), data.size()); }
    // Finishes the digest; the object must be reset() before it is used again.
    std::array<std::uint8_t, 32> finish();
    // finish() as 64 lower-case hex digits.
    std::string hex();

private:
    void block(const std::uint8_t* p);

    std::array<std::uint32_t, 8> h_{};
    std::array<std::uint8_t, 64> buffer_{};
    std::size_t buffered_ = 0;
    std::uint64_t length_ = 0;  // bytes hashed so far
};

std::string sha256_hex(std::string_view data);

// Feeds a whole file to `hasher` and returns its size. Throws Error(exit_internal) when the file
// cannot be read.
std::uint64_t sha256_update_from_file(Sha256& hasher, const std::string& path);

// The hex digest of a whole file.
std::string sha256_file(const std::string& path);

}  // namespace epc
