// Releases: has the publisher released anything new since the last import, and what happens to
// the raw archive afterwards (kept for backfills, or quarantined when it fails validation).
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "epc/common/types.hpp"
#include "epc/extract/download.hpp"

namespace epc {

// What the last successfully published run of a type imported (from epc.import_run).
struct ImportedRelease {
    long long run_id = 0;
    std::string source;        // current | legacy | file
    std::string last_updated;  // current service: lastUpdated
    std::uint64_t size = 0;    // bytes of the zip
};
// None when nothing was ever published (or the schema does not exist yet).
std::optional<ImportedRelease> last_published_release(const std::string& conninfo, CertType type);

// The current service is identified by lastUpdated (it rebuilds its zips monthly) and size; the
// legacy one only lists sizes.
bool is_new_release(const ReleaseInfo& offered, Source source, const std::optional<ImportedRelease>& imported);

// Puts a rejected archive in the failed location (a directory) with `<name>.json` beside it saying
// why; moves it when we downloaded it, copies it when it is the operator's own --zip. Returns the
// quarantined path.
std::string quarantine_archive(const std::string& zip, const std::string& failed_dir, bool move,
                               const nlohmann::json& report);
// Copies a valid archive to the archive directory (for later backfills); returns the copy's path.
std::string keep_archive(const std::string& zip, const std::string& archive_dir, const std::string& name);

}  // namespace epc
