// epc-inflate ZIP ENTRY...: reads each entry through the importer's own EntrySource (ISA-L for
// deflate, size and CRC-32 checked) and throws the bytes away, as `unzip -p ZIP ENTRY... >/dev/null`
// does with zlib. bench/load-bench times both: the inflate limit of the tool and of the importer.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "epc/extract/archive.hpp"

namespace {

// Reads of the size the importer's line reader asks for.
constexpr int kReadBytes = 256 << 10;

epc::CertFile locate(zip_t* zip, const std::string& name) {
    const zip_int64_t index = zip_name_locate(zip, name.c_str(), 0);
    zip_stat_t st;
    if (index < 0 || zip_stat_index(zip, static_cast<zip_uint64_t>(index), 0, &st) != 0)
        throw epc::Error(epc::exit_usage, "no entry " + name + " in the archive");
    return epc::CertFile{0, static_cast<zip_uint64_t>(index), name, st.size};
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        std::cerr << "usage: epc-inflate ZIP ENTRY...\n";
        return 2;
    }
    try {
        epc::ZipHandle zip = epc::open_zip(argv[1]);
        std::vector<char> buffer(kReadBytes);
        unsigned long long bytes = 0;
        for (int i = 2; i < argc; ++i) {
            epc::EntrySource source(zip.get(), locate(zip.get(), argv[i]));
            for (int n; (n = source.read(buffer.data(), kReadBytes)) > 0;) bytes += static_cast<unsigned long long>(n);
        }
        std::printf("%llu bytes from %d entries\n", bytes, argc - 2);
        return 0;
    } catch (const epc::Error& e) {
        std::cerr << "epc-inflate: " << e.what() << "\n";
        return e.code();
    }
}
