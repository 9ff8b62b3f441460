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

// A CSV to load: a certificates file, or (with --recommendations) a recommendations file.
struct CertFile {
    // Certificates files are numbered 0.. in archive order, recommendations files after them:
    // unique in a run, so the ledger and the rejects name either kind by it.
    int file_no = 0;
    zip_uint64_t index = 0;                // libzip entry index
    std::string name;                      // entry name, e.g. domestic-E06000001-Hartlepool/certificates.csv
    std::uint64_t size = 0;                // uncompressed bytes
    std::vector<std::string> header = {};  // its header's column names (trimmed): what --columns chooses from
    Dataset dataset = Dataset::certificates;
};

struct ArchiveInfo {
    std::string path;
    std::uint64_t bytes = 0;  // size of the zip file
    Layout layout = Layout::legacy;
    std::vector<CertFile> files;            // certificates CSVs in archive order
    std::vector<CertFile> recommendations;  // recommendations CSVs in archive order (loaded with --recommendations)
    std::size_t directories = 0;            // legacy layout: Local Authority directories found
    std::string identity;                   // fingerprint of the entries (names, sizes, CRC-32s)
    std::vector<std::string> problems;      // every validation failure found; empty = valid
    std::vector<std::string> warnings;      // worth telling the operator, not worth refusing the archive
    // Where it came from, recorded with the run (set by the caller after a download).
    std::string source = "file";       // current | legacy | file (--zip)
    std::string release_last_updated;  // current service: the release's lastUpdated
    std::string sha256;                // of the downloaded zip
};

struct ValidationOptions {
    CertType type = CertType::domestic;
    std::optional<int> expect_dirs;  // legacy layout: require exactly this many directories
};

// An entry that inflates to more than this many times its compressed size is refused as a
// likely zip bomb. EPC CSVs compress about 8:1; even near-empty columns stay far below this.
constexpr std::uint64_t kMaxCompressionRatio = 200;

// Reads the central directory and each certificates header (not the data) and checks the layout
// rules of docs/data-formats.md §2. Throws only when the file is not a readable zip at all; validation
// failures are collected in ArchiveInfo::problems.
ArchiveInfo inspect_archive(const std::string& path, const ValidationOptions& options);

// How an entry's bytes become the CSV text (docs/architecture.md §5).
enum class EntryDecoder {
    isal_inflate,  // deflate, the EPC archives' method: ISA-L inflates the raw bytes libzip hands out
    stored,        // no compression: the raw bytes are the text
    libzip,        // any other method, or an encrypted entry: libzip's own decoder (slower), as before
};

// Streams one entry out of the zip (no temporary files). Every entry's size and CRC-32 are
// checked whichever decoder reads it: more bytes than the central directory declares stop the
// read at once (a lying size), and a CRC, size or inflate error is reported as an invalid archive
// (exit 3) before the last bytes are handed on, so the file's transaction never commits.
class EntrySource : public io::ByteSourceBase {
public:
    EntrySource(zip_t* zip, const CertFile& file);
    ~EntrySource() override;
    EntrySource(const EntrySource&) = delete;
    EntrySource& operator=(const EntrySource&) = delete;
    int read(char* buffer, int size) override;
    EntryDecoder decoder() const;

    struct State;

private:
    std::unique_ptr<State> state_;
};

}  // namespace epc
