// The raw archive: open it, work out its layout, validate it, and stream its CSV entries.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <zip.h>

#include <libfccp/csv.h>

#include "epc/common/types.hpp"

namespace epc {

struct ZipCloser {
    void operator()(zip_t* zip) const { zip_discard(zip); }
};
using ZipHandle = std::unique_ptr<zip_t, ZipCloser>;

// Opens a zip read-only with libzip's consistency checks. A missing, non-zip, truncated or
// corrupt file throws Error(exit_invalid_archive) naming the file and what is wrong.
ZipHandle open_zip(const std::string& path);

// A certificates CSV to load.
struct CertFile {
    int file_no = 0;          // position among the archive's certificates files, in archive order
    zip_uint64_t index = 0;   // libzip entry index
    std::string name;         // entry name, e.g. domestic-E06000001-Hartlepool/certificates.csv
    std::uint64_t size = 0;   // uncompressed bytes
};

struct ArchiveInfo {
    std::string path;
    std::uint64_t bytes = 0;             // size of the zip file
    Layout layout = Layout::legacy;
    std::vector<CertFile> files;         // certificates CSVs in archive order
    std::size_t directories = 0;         // legacy layout: Local Authority directories found
    std::string identity;                // fingerprint of the entries (names, sizes, CRC-32s)
    std::vector<std::string> problems;   // every validation failure found; empty = valid
    std::vector<std::string> warnings;   // worth telling the operator, not worth refusing the archive
    // Where it came from, recorded with the run (set by the caller after a download).
    std::string source = "file";         // current | legacy | file (--zip)
    std::string release_last_updated;    // current service: the release's lastUpdated
    std::string sha256;                  // of the downloaded zip
};

struct ValidationOptions {
    CertType type = CertType::domestic;
    std::optional<int> expect_dirs;   // legacy layout: require exactly this many directories
};

// An entry that inflates to more than this many times its compressed size is refused as a
// likely zip bomb. EPC CSVs compress about 8:1; even near-empty columns stay far below this.
constexpr std::uint64_t kMaxCompressionRatio = 200;

// Reads the central directory and each certificates header (not the data) and checks the layout
// rules of docs/data-formats.md §2. Throws only when the file is not a readable zip at all; validation
// failures are collected in ArchiveInfo::problems.
ArchiveInfo inspect_archive(const std::string& path, const ValidationOptions& options);

// Streams one entry out of the zip (no temporary files). Refuses to inflate beyond the size the
// central directory declares, and reports CRC or inflate errors as an invalid archive.
class EntrySource : public io::ByteSourceBase {
public:
    EntrySource(zip_t* zip, const CertFile& file);
    ~EntrySource() override;
    int read(char* buffer, int size) override;

private:
    zip_file_t* file_ = nullptr;
    std::string name_;
    std::uint64_t declared_ = 0;
    std::uint64_t seen_ = 0;
};

}  // namespace epc
