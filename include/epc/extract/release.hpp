// Releases: has the publisher released anything new since the last import, and what happens to
// the raw archive afterwards (kept for backfills, or quarantined when it fails validation).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "epc/app/options.hpp"
#include "epc/common/types.hpp"
#include "epc/db/session.hpp"
#include "epc/extract/download.hpp"

namespace epc {

// The current service is identified by lastUpdated (it rebuilds its zips monthly) and size; the
// legacy one only lists sizes.
bool is_new_release(const ReleaseInfo& offered, Source source, const std::optional<db::ImportedRelease>& imported);

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

// check-release --submit-queue: hands the import of a new release to AWS Batch through the AWS CLI
// (`aws batch submit-job`, the usual credential chain): one full-run job, or an array job of
// `shards` loads plus a publish job that depends on the whole array. Throws Error(exit_transient)
// when a submission fails, Error(exit_usage) without the AWS CLI.
struct SubmittedJob {
    std::string name;
    std::string id;
    std::string definition;
};
std::vector<SubmittedJob> submit_import(const SubmitOptions& submit, CertType type);

}  // namespace epc
