// What the release in staging changes in production: found once per run, by comparing each
// certificate's key and row hash (computed by the loader) with production's, and shared by the
// geocode stage, which then locates only the addresses of new and changed certificates, and by
// publish, which applies only the difference. Kept in epc.changes_<type> (the staged rows of new
// and changed certificates, and the keys of those gone) and epc.changes_<type>_was (production's
// rows of the changed and gone ones) until publish commits; epc.change_set
// records for which run and which production state it was found, so a revert or a new load in
// between makes the next stage find it again.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "epc/db/columns.hpp"
#include "epc/db/session.hpp"

namespace epc {

struct ReleaseChanges {
    bool first_release = false;  // no production table yet: every certificate is new (no table is made)
    std::string table;           // epc.changes_<type>: staging's columns and `change` (new | changed | gone)
    std::string was;             // epc.changes_<type>_was: production's rows of the changed and gone ones, as they are
    std::uint64_t staged_rows = 0;  // the rows staging held when compared (not for a first release)
};

// The column of `ReleaseChanges::was` and `ReleaseChanges::table` beside the certificate's: where
// production's row of a changed or gone certificate was when the changes were found (its ctid),
// so publish reaches it without a lookup by key (checking the key all the same).
inline constexpr std::string_view kProductionTid = "production_tid";

// The changes of the run `run_id`, which owns the session's staging and has finished loading.
// Runs in its own transaction(s); the caller holds the type's lock.
ReleaseChanges release_changes(db::Session& session, long long run_id);

// Production's columns that `changes.was` holds (as production had them when the changes were found).
ColumnSet was_columns(db::Session& session, const ReleaseChanges& changes);

// Forgets the changes (in the caller's transaction: publish drops them as it commits).
void forget_changes(db::Connection& db, CertType type);

}  // namespace epc
