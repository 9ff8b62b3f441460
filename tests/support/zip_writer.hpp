// Writes small zips with exact entry names and bytes, for tests that need one precise hazard
// (the fixture generator makes the realistic, large ones).
#pragma once

#include <zip.h>
#include <zlib.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace epc::test {

using Entries = std::vector<std::pair<std::string, std::string>>;  // name -> content; "dir/" = directory

inline void write_zip(const std::string& path, const Entries& entries) {
    int err = 0;
    zip_t* zip = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
    if (!zip) throw std::runtime_error("cannot create " + path);
    for (const auto& [name, content] : entries) {
        if (!name.empty() && name.back() == '/') {
            zip_dir_add(zip, name.c_str(), ZIP_FL_ENC_UTF_8);
            continue;
        }
        // libzip reads the buffer at zip_close time, so hand it a copy it owns.
        void* copy = malloc(content.size() ? content.size() : 1);
        memcpy(copy, content.data(), content.size());
        zip_source_t* src = zip_source_buffer(zip, copy, content.size(), /*freep=*/1);
        if (zip_file_add(zip, name.c_str(), src, ZIP_FL_ENC_UTF_8 | ZIP_FL_OVERWRITE) < 0) {
            zip_source_free(src);
            zip_discard(zip);
            throw std::runtime_error("cannot add " + name);
        }
    }
    if (zip_close(zip) != 0) throw std::runtime_error("cannot write " + path);
}

// An entry of a zip written byte by byte, for what libzip will not write: Zip64 records on small
// entries, a CRC-32 or size the data does not match, a cut deflate stream, stored entries.
struct RawEntry {
    std::string name;  // "dir/" = a directory
    std::string content;
    bool deflate = true;                // else stored
    bool zip64 = false;                 // sizes and offset in Zip64 extra fields, as in archives over 4 GB
    std::optional<std::uint32_t> crc;   // the CRC-32 the headers declare; default: the content's
    std::optional<std::uint64_t> size;  // the uncompressed size they declare; default: the content's
    std::size_t cut = 0;                // bytes dropped off the end of the compressed data
};

namespace detail {

inline void put(std::string& out, std::uint64_t value, int bytes) {
    for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

// Raw deflate (no zlib header), as zip holds it.
inline std::string deflate_raw(const std::string& data) {
    z_stream z{};
    if (deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) throw std::runtime_error("deflateInit2");
    std::string out(deflateBound(&z, data.size()), '\0');
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    z.avail_in = static_cast<uInt>(data.size());
    z.next_out = reinterpret_cast<Bytef*>(out.data());
    z.avail_out = static_cast<uInt>(out.size());
    const int rc = deflate(&z, Z_FINISH);
    out.resize(z.total_out);
    deflateEnd(&z);
    if (rc != Z_STREAM_END) throw std::runtime_error("deflate");
    return out;
}

struct Written {
    std::uint32_t crc;
    std::uint64_t size, comp_size, offset;
    int method;
};

// A local or central header; Zip64 puts 0xFFFFFFFF in the 32-bit fields and the values in extra
// field 0x0001 (sizes, then, in the central directory, the local header's offset).
inline void put_header(std::string& out, const RawEntry& e, const Written& w, bool central) {
    const int version = e.zip64 ? 45 : 20;
    put(out, central ? 0x02014b50 : 0x04034b50, 4);
    if (central) put(out, (3 << 8) | version, 2);  // made by: Unix
    put(out, version, 2);
    put(out, 0, 2);  // flags
    put(out, w.method, 2);
    put(out, 0, 2);                         // time
    put(out, (45 << 9) | (1 << 5) | 1, 2);  // date: 2025-01-01
    put(out, w.crc, 4);
    put(out, e.zip64 ? 0xFFFFFFFF : w.comp_size, 4);
    put(out, e.zip64 ? 0xFFFFFFFF : w.size, 4);
    put(out, e.name.size(), 2);
    put(out, e.zip64 ? (central ? 28 : 20) : 0, 2);
    if (central) {
        put(out, 0, 2);  // comment
        put(out, 0, 2);  // disk
        put(out, 0, 2);  // internal attributes
        put(out, e.name.back() == '/' ? 0x41ED0010 : 0x81A40000, 4);
        put(out, e.zip64 ? 0xFFFFFFFF : w.offset, 4);
    }
    out += e.name;
    if (e.zip64) {
        put(out, 0x0001, 2);
        put(out, central ? 24 : 16, 2);
        put(out, w.size, 8);
        put(out, w.comp_size, 8);
        if (central) put(out, w.offset, 8);
    }
}

inline void put_end(std::string& out, std::size_t entries, std::uint64_t cd_offset, bool zip64) {
    const std::uint64_t cd_size = out.size() - cd_offset;
    if (zip64) {
        const std::uint64_t record = out.size();
        put(out, 0x06064b50, 4);
        put(out, 44, 8);  // size of the rest of the record
        put(out, (3 << 8) | 45, 2);
        put(out, 45, 2);
        put(out, 0, 4);
        put(out, 0, 4);
        put(out, entries, 8);
        put(out, entries, 8);
        put(out, cd_size, 8);
        put(out, cd_offset, 8);
        put(out, 0x07064b50, 4);  // locator
        put(out, 0, 4);
        put(out, record, 8);
        put(out, 1, 4);
    }
    put(out, 0x06054b50, 4);
    put(out, 0, 2);
    put(out, 0, 2);
    put(out, zip64 ? 0xFFFF : entries, 2);
    put(out, zip64 ? 0xFFFF : entries, 2);
    put(out, zip64 ? 0xFFFFFFFF : cd_size, 4);
    put(out, zip64 ? 0xFFFFFFFF : cd_offset, 4);
    put(out, 0, 2);
}

}  // namespace detail

// Writes the entries in order; the archive has Zip64 end records when any entry is Zip64.
inline void write_raw_zip(const std::string& path, const std::vector<RawEntry>& entries) {
    std::string out;
    std::vector<detail::Written> written;
    bool zip64 = false;
    for (const RawEntry& e : entries) {
        const bool dir = !e.name.empty() && e.name.back() == '/';
        std::string data = dir || !e.deflate ? e.content : detail::deflate_raw(e.content);
        data.resize(data.size() - std::min(e.cut, data.size()));
        const auto crc = static_cast<std::uint32_t>(
            crc32(0, reinterpret_cast<const Bytef*>(e.content.data()), static_cast<uInt>(e.content.size())));
        detail::Written w{e.crc.value_or(crc), e.size.value_or(e.content.size()), data.size(), out.size(),
                          dir || !e.deflate ? 0 : 8};
        detail::put_header(out, e, w, false);
        out += data;
        written.push_back(w);
        zip64 = zip64 || e.zip64;
    }
    const std::uint64_t cd_offset = out.size();
    for (std::size_t i = 0; i < entries.size(); ++i) detail::put_header(out, entries[i], written[i], true);
    detail::put_end(out, entries.size(), cd_offset, zip64);
    std::ofstream file(path, std::ios::binary | std::ios::trunc);
    file.write(out.data(), static_cast<std::streamsize>(out.size()));
    if (!file) throw std::runtime_error("cannot write " + path);
}

// Every entry of a zip, name and content, in archive order (to write them again another way).
inline Entries read_zip(const std::string& path) {
    int err = 0;
    zip_t* zip = zip_open(path.c_str(), ZIP_RDONLY, &err);
    if (!zip) throw std::runtime_error("cannot open " + path);
    Entries entries;
    for (zip_int64_t i = 0; i < zip_get_num_entries(zip, 0); ++i) {
        zip_stat_t st;
        zip_stat_index(zip, static_cast<zip_uint64_t>(i), 0, &st);
        std::string content(st.size, '\0');
        zip_file_t* f = zip_fopen_index(zip, static_cast<zip_uint64_t>(i), 0);
        const zip_int64_t n = f ? zip_fread(f, content.data(), content.size()) : -1;
        if (f) zip_fclose(f);
        if (n != static_cast<zip_int64_t>(st.size)) {
            zip_discard(zip);
            throw std::runtime_error("cannot read " + std::string(st.name) + " in " + path);
        }
        entries.emplace_back(st.name, std::move(content));
    }
    zip_discard(zip);
    return entries;
}

}  // namespace epc::test
