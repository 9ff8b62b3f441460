#include "epc/publish/recommendations.hpp"

#include <algorithm>
#include <set>

#include <spdlog/spdlog.h>

#include "epc/db/columns.hpp"
#include "epc/db/transaction.hpp"

namespace epc {

namespace {

// What revert has to undo, as epc.release_undo.recommendations records it.
constexpr const char* kCreated = "created";
constexpr const char* kChanged = "changed";

// The columns production takes from staging: the recommendation's values and their hash (what
// publish compares); not where in the files the row was.
std::vector<std::string> published_columns(db::Session& session) {
    std::vector<std::string> columns;
    for (const std::string& name : session.table_columns(session.staging().recommendations)) {
        const auto& bookkeeping = bookkeeping_columns(Dataset::recommendations);
        const bool where_from = std::any_of(bookkeeping.begin(), bookkeeping.end(), [&](const BookkeepingColumn& c) {
            return c.name == name && c.name != "row_hash";
        });
        if (!where_from) columns.push_back(name);
    }
    return columns;
}

std::string list(const std::vector<std::string>& names, const std::string& alias = "") {
    std::string text;
    for (const std::string& n : names) text += (text.empty() ? "" : ", ") + (alias.empty() ? "" : alias + ".") + n;
    return text;
}

std::uint64_t count(db::Connection& db, const std::string& table) {
    return static_cast<std::uint64_t>(db.exec("SELECT count(*) FROM " + table).integer(0, 0));
}

// A first build: filled bare, then indexed, as the certificates' first release. A leftover from an
// interrupted publish of this run is dropped first.
void build_table(db::Session& session, const RecommendationTables& t, long long run_id) {
    db::Connection& db = session.db();
    const std::vector<std::string> columns = published_columns(session);
    spdlog::info("publish: building {} from {}", t.fresh, session.staging().recommendations);
    db.exec("DROP TABLE IF EXISTS " + t.fresh);
    db.exec("CREATE TABLE " + t.fresh + " AS SELECT " + list(columns) + ", $1::bigint AS run_id FROM " +
                session.staging().recommendations,
            {run_id});
    db.exec("ALTER TABLE " + t.fresh + " ALTER COLUMN cert_key SET NOT NULL, ALTER COLUMN run_id SET NOT NULL");
    db.exec("SET maintenance_work_mem = '512MB'");
    // By certificate (a reader's join) and by hash (publish's comparison) in one index.
    db.exec("CREATE INDEX ON " + t.fresh + " (cert_key, row_hash)");
    db.exec("RESET maintenance_work_mem");
    db.exec("ANALYZE " + t.fresh);
}

// A column staging has (the files gained it) that production lacks: added, NULL in older rows.
void add_missing_columns(db::Session& session, const RecommendationTables& t) {
    db::Connection& db = session.db();
    const std::vector<std::string> have = session.table_columns(t.production);
    const std::set<std::string> names(have.begin(), have.end());
    db::Result staged = db.exec("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                                "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                                {session.staging().recommendations});
    const std::vector<std::string> wanted = published_columns(session);
    for (int i = 0; i < staged.rows(); ++i) {
        const std::string name = staged.text(i, 0);
        if (names.count(name) || std::find(wanted.begin(), wanted.end(), name) == wanted.end()) continue;
        spdlog::warn("publish: {} has no column {} yet; adding it", t.production, name);
        db::Transaction tx(db);
        db.exec("ALTER TABLE " + t.production + " ADD COLUMN " + name + " " + staged.text(i, 1));
        tx.commit();
    }
}

// Production's rows that staging lacks go, staging's rows that production lacks come in; with
// `keep_undo`, each into the undo tables as they go or come.
void apply_changes(db::Session& session, const RecommendationTables& t, long long run_id, bool keep_undo,
                   RecommendationsPublished& s) {
    db::Connection& db = session.db();
    const std::string& staging = session.staging().recommendations;
    const std::vector<std::string> columns = published_columns(session);
    // Both comparisons read the whole of both tables: hash them. A merge join would sort all of
    // staging (unindexed) for the delete, several times slower (13 s against 2.3 s for 5 M rows).
    db.exec("SET LOCAL enable_mergejoin = off");
    const std::string remove = "DELETE FROM " + t.production + " p WHERE NOT EXISTS (SELECT 1 FROM " + staging +
                               " s WHERE s.cert_key = p.cert_key AND s.row_hash = p.row_hash)";
    const std::string add = "INSERT INTO " + t.production + " (" + list(columns) + ", run_id) SELECT " +
                            list(columns, "s") + ", $1::bigint FROM " + staging +
                            " s WHERE NOT EXISTS (SELECT 1 FROM " + t.production +
                            " p WHERE p.cert_key = s.cert_key AND p.row_hash = s.row_hash)";
    if (!keep_undo) {
        s.removed = db.exec(remove).affected();
        s.added = db.exec(add, {run_id}).affected();
        return;
    }
    db.exec("CREATE TABLE " + t.undo + " (LIKE " + t.production + ")");
    db.exec("CREATE TABLE " + t.undo_added + " (cert_key text NOT NULL, row_hash bigint NOT NULL)");
    s.removed =
        db.exec("WITH gone AS (" + remove + " RETURNING p.*) INSERT INTO " + t.undo + " SELECT * FROM gone").affected();
    s.added = db.exec("WITH came AS (" + add + " RETURNING cert_key, row_hash) INSERT INTO " + t.undo_added +
                          " SELECT * FROM came",
                      {run_id})
                  .affected();
}

void record_undo(db::Connection& db, CertType type, const char* what) {
    db.exec("UPDATE epc.release_undo SET recommendations = $2 WHERE cert_type = $1", {cert_type_name(type), what});
}

}  // namespace

RecommendationTables recommendation_tables(CertType type, long long run_id) {
    const std::string sql(cert_type_sql(type));
    const std::string bare = sql + "_recommendations";
    return {"epc." + bare, bare, "epc." + bare + "_r" + std::to_string(run_id), "epc.undo_" + bare,
            "epc.undo_" + bare + "_added"};
}

bool prepare_recommendations(db::Session& session, long long run_id) {
    if (!session.staging_has_recommendations()) return false;
    const RecommendationTables t = recommendation_tables(session.type(), run_id);
    if (session.db().has_table(t.production)) add_missing_columns(session, t);
    else build_table(session, t, run_id);
    return true;
}

RecommendationsPublished publish_recommendations(db::Session& session, long long run_id, bool keep_undo) {
    db::Connection& db = session.db();
    const RecommendationTables t = recommendation_tables(session.type(), run_id);
    RecommendationsPublished s;
    s.published = true;
    if (db.has_table(t.production)) {
        apply_changes(session, t, run_id, keep_undo, s);
        if (keep_undo) record_undo(db, session.type(), kChanged);
    } else {
        db.exec("ALTER TABLE " + t.fresh + " RENAME TO " + t.bare);
        s.created = true;
        s.added = count(db, t.production);
        if (keep_undo) record_undo(db, session.type(), kCreated);
    }
    s.rows = count(db, t.production);
    return s;
}

std::optional<std::uint64_t> revert_recommendations(db::Connection& db, CertType type) {
    const RecommendationTables t = recommendation_tables(type);
    db::Result undo = db.exec("SELECT coalesce(recommendations, '') FROM epc.release_undo WHERE cert_type = $1",
                              {cert_type_name(type)});
    const std::string what = undo.rows() > 0 ? undo.text(0, 0) : "";
    if (what.empty()) return std::nullopt;
    if (what == kCreated) {
        // The release before had no recommendations. Emptied, not dropped: users' grants stay.
        db.exec("DELETE FROM " + t.production);
    } else {
        if (!db.has_table(t.undo) || !db.has_table(t.undo_added))
            throw Error(exit_internal, "the undo of " + t.production + " is missing (" + t.undo + ", " + t.undo_added +
                                           "); nothing was reverted");
        db.exec("DELETE FROM " + t.production + " p USING " + t.undo_added +
                " a WHERE p.cert_key = a.cert_key AND p.row_hash = a.row_hash");
        db.exec("INSERT INTO " + t.production + " SELECT * FROM " + t.undo);
    }
    return count(db, t.production);
}

void forget_recommendations_undo(db::Connection& db, CertType type) {
    const RecommendationTables t = recommendation_tables(type);
    db.exec("DROP TABLE IF EXISTS " + t.undo + ", " + t.undo_added);
}

}  // namespace epc
