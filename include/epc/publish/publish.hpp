// The publish stage: the loaded staging table becomes the release readers see in the production
// table of its certificate type, all at once; and `revert`, which brings back the release before.
//
// Production (epc.<type>_certificates) is one object for good: users' views, grants, comments,
// foreign keys and policies on it keep working across releases. The first release is built bare,
// then indexed (several times faster than filling an indexed table) and renamed into place. Later
// ones change it in place, in one transaction, by what differs: a monthly release differs from the
// last by a few percent. Each row carries a hash of its values; staging (with the coordinates the
// geocode cache has for it) is compared with production by key and hash, and the removed, changed
// and new rows are deleted, updated and inserted. Readers see the previous release or the new one,
// never a mix, and are never blocked (row-level changes take no lock a SELECT waits for).
//
// The rows a publish replaces or removes are kept in epc.undo_<type> (only those: a few percent of
// the table), so `revert` can apply the inverse, again in one transaction. One step back only.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "epc/common/types.hpp"
#include "epc/db/session.hpp"
#include "epc/publish/recommendations.hpp"

namespace epc {

struct PublishSummary {
    long long run_id = 0;
    bool already_published = false;  // nothing done: that run's staging is already in production
    bool first_release = false;      // production did not exist: built whole
    std::uint64_t rows = 0;          // certificates now in production
    std::uint64_t added = 0;         // keys not in the previous release
    std::uint64_t disappeared = 0;   // keys of the previous release not in this one
    std::uint64_t changed = 0;       // keys in both whose values (or coordinates) differ
    RecommendationsPublished recommendations;
    double seconds = 0;
};

// The production table of a type, e.g. epc.domestic_certificates.
std::string production_table(CertType type);

// Publishes the run that owns the session's staging tables, taking the type's lock unless the
// session holds it already. Refuses (exit_usage) when there is nothing to publish: no loaded run,
// a run whose load failed or never finished, a reverted run, or an empty staging table.
PublishSummary publish(db::Session& session);

struct RevertSummary {
    long long run_id = 0;          // the publish undone, now 'reverted'
    long long back_to_run = 0;     // the latest run still 'published': its release is in production again
    std::uint64_t rows = 0;        // certificates now in production
    std::uint64_t removed = 0;     // keys that publish added, removed again
    std::uint64_t restored = 0;    // rows it changed, back to their previous values
    std::uint64_t reinserted = 0;  // rows it removed, back in production
    // Recommendations in production after the revert; nullopt when that publish left them alone.
    std::optional<std::uint64_t> recommendations;
    double seconds = 0;
};

// Brings back the release that was in production before the last publish of the session's type,
// under the type's lock, in one transaction. Refuses (exit_usage) when there is nothing to revert:
// nothing published, the last publish was the first release, or it was reverted already.
RevertSummary revert(db::Session& session);

}  // namespace epc
