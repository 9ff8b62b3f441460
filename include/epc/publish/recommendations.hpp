// Publishing the recommendations (--recommendations): epc.<type>_recommendations holds every
// column of the recommendations files of the published release, several rows per certificate,
// keyed by cert_key (indexed with the row's hash). It is published in the certificates' publish
// transaction and reverted in theirs, with the same manners: built bare and renamed into place the
// first time, then changed in place by what differs, so a user's views and grants on it survive.
//
// A recommendation has no key of its own (a certificate's items can be renumbered), so a row is
// its values: the loader's hash of them, with cert_key, is what publish compares. A row of
// production whose (cert_key, hash) staging lacks is removed; a staging row production lacks is
// added. Rows repeated exactly within a certificate count as one when compared.
//
// A run that did not load recommendations leaves the table as it was.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "epc/db/session.hpp"

namespace epc {

struct RecommendationsPublished {
    bool published = false;  // the run loaded recommendations, and they are production's now
    bool created = false;    // the table did not exist: this publish made it
    std::uint64_t rows = 0;  // recommendations now in production
    std::uint64_t added = 0;
    std::uint64_t removed = 0;
};

// The table names of a type's recommendations; `run` names the table a first build fills.
struct RecommendationTables {
    std::string production;  // epc.<type>_recommendations
    std::string bare;        // <type>_recommendations, for RENAME TO
    std::string fresh;       // epc.<type>_recommendations_r<run>
    std::string undo;        // epc.undo_<type>_recommendations: the rows the last publish removed
    std::string undo_added;  // epc.undo_<type>_recommendations_added: (cert_key, row_hash) it added
};
RecommendationTables recommendation_tables(CertType type, long long run_id = 0);

// Before the publish transaction, for a run that loaded recommendations: builds the table beside
// production when there is none yet (bare, then indexed), or adds to production the columns
// staging has and it lacks (each in a short transaction of its own: ALTER TABLE takes a lock
// readers wait for). Returns whether the run has recommendations to publish.
bool prepare_recommendations(db::Session& session, long long run_id);

// In the publish transaction, after prepare_recommendations() returned true: puts the built table
// in place, or applies what differs. With `keep_undo`, saves what revert needs and records it in
// epc.release_undo (whose row for the type the caller wrote in this transaction).
RecommendationsPublished publish_recommendations(db::Session& session, long long run_id, bool keep_undo);

// In the revert transaction: undoes what the publish recorded in epc.release_undo did to the
// recommendations. Returns the recommendations production holds afterwards (nullopt: untouched).
std::optional<std::uint64_t> revert_recommendations(db::Connection& db, CertType type);

// Drops the undo of the recommendations (with the certificates' undo).
void forget_recommendations_undo(db::Connection& db, CertType type);

}  // namespace epc
