// What happens to the raw archive after validation: kept for backfills (--archive-to), or
// quarantined when it fails validation (--failed-to), in a local directory or in S3.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace epc {

// Where --archive-to / --failed-to put archives: a local directory, or `s3://BUCKET/PREFIX`, which
// goes through the AWS CLI (`aws s3 cp`: multipart uploads, the usual credential chain) so that no
// S3 client is written here. `s3_endpoint_url` (--s3-endpoint-url) is passed to it as
// --endpoint-url, for S3-compatible stores; empty means AWS itself.
struct ArchiveTarget {
    std::string location;         // directory or s3:// URL
    std::string s3_endpoint_url;  // only for s3:// locations
};

bool is_s3_url(const std::string& location);

// For an s3:// location: checks its form and that the AWS CLI can be found on PATH, before any
// download or load, so a misconfigured job stops at once. Throws Error(exit_usage) naming `option`.
// Does nothing for a local directory.
void check_archive_target(const std::string& option, const std::string& location);

// Puts a rejected archive in the failed location with `<name>.json` beside it saying why; moves
// it when we downloaded it (in S3: removes the local file only once both objects are uploaded),
// copies it when it is the operator's own --zip. Returns the quarantined path or s3:// URL.
std::string quarantine_archive(const std::string& zip, const ArchiveTarget& failed, bool move,
                               const nlohmann::json& report);
// Copies a valid archive to the archive location (for later backfills) as `name`; returns the
// copy's path or s3:// URL.
std::string keep_archive(const std::string& zip, const ArchiveTarget& archive, const std::string& name);

}  // namespace epc
