// Writes small zips with exact entry names and bytes, for tests that need one precise hazard
// (the fixture generator makes the realistic, large ones).
#pragma once

#include <zip.h>

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

}  // namespace epc::test
