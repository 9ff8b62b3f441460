// The files a download keeps in the work directory, and how a later run recognises them:
//   <type>-<source>.zip.part       the archive while it streams in (resumed by a later run)
//   <type>-<source>.zip.part.json  which release the .part file holds
//   <type>-<source>.zip            the finished archive
//   <type>-<source>.zip.sha256     its digest, in sha256sum format
//   <type>-<source>.zip.json       which release it is, with its digest (reused instead of downloaded again)
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "epc/extract/download.hpp"
#include "epc/extract/sha256.hpp"

namespace epc {

// The .part file and the SHA-256 of what it holds, kept in step.
class PartFile {
public:
    explicit PartFile(std::string path) : path_(std::move(path)) {}

    // Continues the file on disk: hashes what it holds, then appends.
    void resume();
    // Empties the file and the digest.
    void restart();
    // False when the disk refused the bytes (see error()).
    bool write(const char* data, std::size_t n);
    void flush();
    void close();
    std::uint64_t size() const { return size_; }
    const std::string& path() const { return path_; }
    const std::string& error() const { return error_; }
    std::string digest() { return hasher_.hex(); }

private:
    struct FileCloser {
        void operator()(std::FILE* f) const { std::fclose(f); }
    };
    void open(const char* mode);

    std::string path_;
    std::unique_ptr<std::FILE, FileCloser> file_;
    Sha256 hasher_;
    std::uint64_t size_ = 0;
    std::string error_;
};

// The digest of `zip` when its record says it is a finished download of the release `info`
// describes and its size agrees; nullopt otherwise. A release of unknown size is never reused.
std::optional<std::string> finished_download(const std::string& zip, const ReleaseInfo& info);
// Removes the record: from then on the file at `zip` is not a finished download.
void forget_finished_download(const std::string& zip);

// Opens `part`, continuing it only when its record says it holds the same release (same
// advertised size and date), else its bytes would be spliced into another file; starts it afresh
// otherwise. Records `info` for a later run. Returns true when it continued.
bool open_part(PartFile& part, const ReleaseInfo& info);

// Renames the complete `part` to `zip` and writes its digest file and its record; returns the
// digest.
std::string keep_finished_download(PartFile& part, const std::string& zip, const ReleaseInfo& info);

}  // namespace epc
