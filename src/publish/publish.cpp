#include "epc/publish/publish.hpp"

#include <chrono>
#include <set>

#include <spdlog/spdlog.h>

#include "epc/db/columns.hpp"
#include "epc/db/transaction.hpp"
#include "epc/publish/changes.hpp"

namespace epc {

namespace {

// The tables a publish or a revert works with.
struct ReleaseTables {
    std::string production;  // epc.<type>_certificates
    std::string bare;        // <type>_certificates, for RENAME TO
    std::string fresh_name;  // <type>_certificates_r<run>: a first release, built beside
    std::string fresh;       // epc.<type>_certificates_r<run>
    std::string undo;        // epc.undo_<type>: the rows the last publish replaced or removed
    std::string undo_added;  // epc.undo_<type>_added: the keys it added
    std::string latest;      // epc.<type>_latest: the latest certificate of each property
    // The certificate columns published: staging's (what the load kept), or for a revert production's.
    ColumnSet columns;
};

ReleaseTables release_tables(CertType type, long long run_id) {
    const std::string sql(cert_type_sql(type));
    const std::string bare = sql + "_certificates";
    const std::string run = std::to_string(run_id);
    return {"epc." + bare,
            bare,
            bare + "_r" + run,
            "epc." + bare + "_r" + run,
            "epc.undo_" + sql,
            "epc.undo_" + sql + "_added",
            "epc." + sql + "_latest",
            {}};
}

// The run in staging, if it can be published; nullopt when it already is. Refuses (exit_usage)
// a run whose load is not complete, a run reverted after its publish, and recommendations in
// staging that are not what the run loaded (its certificates are counted as publishing reads them:
// staging_not_as_loaded).
std::optional<db::StagingOwner> publishable_run(db::Session& session, PublishSummary& summary) {
    const std::string type(cert_type_name(session.type()));
    const std::optional<db::StagingOwner> owner = session.staging_owner();
    if (!owner)
        throw Error(exit_usage,
                    "nothing to publish for " + type + ": no run has loaded staging yet (run 'load' first)");
    summary.run_id = owner->run_id;
    const std::string run = std::to_string(owner->run_id);
    if (owner->status == db::RunStatus::published) {
        spdlog::info("publish: run {} is already in {}; nothing to do", run, production_table(session.type()));
        summary.already_published = true;
        summary.rows = static_cast<std::uint64_t>(owner->rows_loaded);
        return std::nullopt;
    }
    if (owner->status == db::RunStatus::reverted)
        throw Error(exit_usage, "refusing to publish " + type + ": staging holds run " + run +
                                    ", which was published and then reverted; load a release first (--force "
                                    "imports the same release again)");
    if (owner->status != db::RunStatus::loaded)
        throw Error(exit_usage, "refusing to publish " + type + ": staging belongs to run " + run +
                                    ", whose load is '" + std::string(db::run_status_name(owner->status)) +
                                    "', not complete; re-run 'load' first");
    if (session.staging_has_recommendations()) {
        db::Result recs = session.db().exec(
            "SELECT (SELECT count(*) FROM " + session.staging().recommendations +
                "), (SELECT coalesce(sum(rows_loaded), 0) FROM epc.import_file WHERE run_id = $1 AND dataset = "
                "'recommendations')",
            {owner->run_id});
        if (recs.integer(0, 0) != recs.integer(0, 1))
            throw Error(exit_usage, "refusing to publish " + type + ": staging holds " + recs.text(0, 0) +
                                        " recommendations but run " + run + " loaded " + recs.text(0, 1) +
                                        " (changed since the load?); re-run 'load'");
    }
    return owner;
}

// Staging no longer holds what its run loaded (`staged` rows instead of `loaded`): changed since
// the load. Found from the rows publishing read anyway (the first release's build, the comparison
// with production), not by a count of its own (1.7-3.4 s at 28 M rows).
Error staging_not_as_loaded(CertType type, long long run_id, std::uint64_t loaded, std::uint64_t staged) {
    const std::string refusing = "refusing to publish " + std::string(cert_type_name(type)) + ": staging";
    const std::string run = std::to_string(run_id);
    if (staged == 0)
        return Error(exit_usage,
                     refusing + " of run " + run + " holds no certificates; an empty release would empty production");
    return Error(exit_usage, refusing + " holds " + std::to_string(staged) + " rows but run " + run + " loaded " +
                                 std::to_string(loaded) + " (changed since the load?); re-run 'load'");
}

// The coordinates found for an address key, from `located` (epc.geocode_cache, or a table of its
// columns): a join onto rows aliased `r`.
const char* const kCoordinates = "g.latitude, g.longitude, g.provider, g.precision";
std::string coordinates_join(const std::string& located) {
    return " LEFT JOIN " + located + " g ON g.address_key = r.address_key AND g.status = 'found'";
}

// Rows `r` of staging (or of epc.changes_<type>, which has staging's columns) as production rows,
// in production_column_list(columns) order: the certificate, its coordinates from `located`, the
// run ($1), its hash and address key; then `more`.
std::string as_production_rows(const ColumnSet& columns, const std::string& table, const std::string& located,
                               const std::string& more = "") {
    return "SELECT " + certificate_column_list(columns, "r") + ", " + kCoordinates +
           ", $1::bigint, r.row_hash, r.address_key" + more + " FROM " + table + " r" + coordinates_join(located);
}

void mark_published(db::Connection& db, const PublishSummary& s) {
    db.exec("UPDATE epc.import_run SET status = $2, published_at = now(), rows_published = $3, rows_added = $4, "
            "rows_disappeared = $5, rows_changed = $6 WHERE run_id = $1",
            {s.run_id, db::run_status_name(db::RunStatus::published), s.rows, s.added, s.disappeared, s.changed});
    const RecommendationsPublished& r = s.recommendations;
    if (r.published)
        db.exec("UPDATE epc.import_run SET recommendations_published = $2, recommendations_added = $3, "
                "recommendations_removed = $4 WHERE run_id = $1",
                {s.run_id, r.rows, r.added, r.removed});
}

// --- The first release: there is no production table yet, so no user object to keep ---

// Every certificate of staging with its coordinates, in two halves at once, each on a connection
// of its own: a statement runs in one backend, on one core (at 28 M rows 82 s as one statement,
// 60 s as two halves). The halves split by the address key's hash, so each joins half the cache.
// With --jobs 1, one statement on the session's connection. Returns the rows it wrote.
std::uint64_t fill_first_release(db::Session& session, const ReleaseTables& t, long long run_id) {
    const std::string insert = "INSERT INTO " + t.fresh + " (" + production_column_list(t.columns) + ") ";
    if (session.jobs() < 2)
        return session.db()
            .exec(insert + as_production_rows(t.columns, session.staging().rows, "epc.geocode_cache"), {run_id})
            .affected();
    std::vector<std::vector<std::string>> halves;
    for (const char* half : {"0", "1"}) {
        const std::string located = std::string("(SELECT * FROM epc.geocode_cache WHERE hashtext(address_key) & 1 = ") +
                                    half + ")";
        halves.push_back({insert + as_production_rows(t.columns, session.staging().rows, located) +
                          " WHERE coalesce(hashtext(r.address_key) & 1, 0) = " + half});
    }
    return session.exec_at_once(halves, {run_id}, "publish");
}

// Filled bare, then indexed and analysed: several times faster than inserting into an indexed
// table. A leftover from an interrupted first publish of this run is dropped first, and so is a
// table of a staging that no longer holds what the run loaded.
void build_first_release(db::Session& session, const ReleaseTables& t, const PublishSummary& summary) {
    db::Connection& db = session.db();
    db.exec("DROP TABLE IF EXISTS " + t.fresh);
    spdlog::info("publish: building {} from {}", t.fresh, session.staging().rows);
    db.exec("CREATE TABLE " + t.fresh + " (" + production_columns_ddl(t.columns) +
            "\n) WITH (fillfactor = " + std::to_string(kProductionFillfactor) + ")");
    const std::uint64_t built = fill_first_release(session, t, summary.run_id);
    if (built != summary.rows) {
        db.exec("DROP TABLE " + t.fresh);
        throw staging_not_as_loaded(session.type(), summary.run_id, summary.rows, built);
    }
    // Built two at a time, on two connections, the indexes took as long (45 s at 28 M rows): each
    // build sorts with parallel workers already.
    db.exec("SET maintenance_work_mem = '512MB'");
    db.exec("ALTER TABLE " + t.fresh + " ADD CONSTRAINT " + t.fresh_name + "_pkey PRIMARY KEY (cert_key)");
    db.exec("CREATE INDEX " + t.fresh_name + "_postcode ON " + t.fresh + " (postcode)");
    db.exec("CREATE INDEX " + t.fresh_name + "_lodgement_date ON " + t.fresh + " (lodgement_date)");
    // The geocode stage's way to the certificates it has not located yet (a few percent).
    db.exec("CREATE INDEX " + t.fresh_name + "_unlocated ON " + t.fresh + " (address_key) WHERE latitude IS NULL");
    db.exec("RESET maintenance_work_mem");
    db.exec("ANALYZE " + t.fresh);
}

// An undo left from a production table someone dropped belongs to no release readers see.
void forget_undo(db::Connection& db, CertType type, const ReleaseTables& t) {
    db.exec("DELETE FROM epc.release_undo WHERE cert_type = $1", {cert_type_name(type)});
    db.exec("DROP TABLE IF EXISTS " + t.undo + ", " + t.undo_added);
    forget_recommendations_undo(db, type);
}

// epc.<type>_latest: the latest certificate of each property (its UPRN, else its address key; a
// certificate with neither is a property of its own) by lodgement date, then lodgement datetime
// where it was loaded, then key, with every production column. A view of production: it changes
// with production, in the same transaction, stores nothing, and keeps its identity for users'
// grants. Made again by each publish, in its transaction, to take in columns production gained.
void provide_latest(db::Session& session, const ReleaseTables& t) {
    const std::string property =
        "coalesce('uprn ' || p.uprn, 'address ' || p.address_key, 'certificate ' || p.cert_key)";
    const bool has_datetime = session.columns_of(t.production).find("lodgement_datetime") != nullptr;
    session.db().exec("CREATE OR REPLACE VIEW " + t.latest + " AS SELECT DISTINCT ON (" + property + ") " + property +
                      " AS property_key, p.* FROM " + t.production + " p ORDER BY " + property +
                      ", p.lodgement_date DESC" + (has_datetime ? ", p.lodgement_datetime DESC NULLS LAST" : "") +
                      ", p.cert_key DESC");
}

void publish_first_release(db::Session& session, const ReleaseTables& t, PublishSummary& summary) {
    build_first_release(session, t, summary);
    const bool recommendations = prepare_recommendations(session, summary.run_id);
    summary.first_release = true;
    summary.added = summary.rows;
    db::Connection& db = session.db();
    db::Transaction tx(db);  // the tables and the run's status appear together
    db.exec("ALTER TABLE " + t.fresh + " RENAME TO " + t.bare);
    if (recommendations) summary.recommendations = publish_recommendations(session, summary.run_id, false);
    provide_latest(session, t);
    forget_undo(db, session.type(), t);
    mark_published(db, summary);
    tx.commit();
}

// --- Later releases: production is changed in place by what differs ---

// Production outlives releases, so a column staging has (the catalogue gained it, or --columns
// chose it) that production lacks is added here
// (metadata only: NULL until published; the rows' hashes then differ, so this publish rewrites
// every row, once). In a short transaction of its own: ALTER TABLE takes a lock readers wait for,
// which must not last through the comparison.
void add_missing_columns(db::Connection& db, const ReleaseTables& t) {
    db::Result have = db.exec("SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 "
                              "AND NOT attisdropped",
                              {t.production});
    std::set<std::string> names;
    for (int i = 0; i < have.rows(); ++i) names.insert(have.text(i, 0));
    for (const Column& c : t.columns.columns()) {
        if (names.count(c.name)) continue;
        spdlog::warn("publish: {} has no column {} yet; adding it", t.production, c.name);
        db.exec("ALTER TABLE " + t.production + " ADD COLUMN " + c.name + " " + std::string(sql_type(c.kind)));
    }
}

// What to apply, in two temporary tables gone at commit: the incoming rows (new or changed
// certificates, from the changes found against production, and unchanged ones located since
// they were published) with their values and coordinates, and the keys that are gone; each
// changed and gone one with where its row was in production (kProductionTid).
void stage_changes(db::Session& session, const ReleaseTables& t, const ReleaseChanges& changes, long long run_id) {
    db::Connection& db = session.db();
    const std::string columns = production_column_list(t.columns);
    // The cache's answers for the incoming addresses, looked up in the cache's order, so its pages
    // are read forward (at 28 M rows the cache outgrows memory: in the changes' order the same
    // lookups read random pages, 11 s instead of about 5); the rows keep the changes' order,
    // which is production's, for the UPDATE below.
    db.exec("CREATE TEMP TABLE publish_located ON COMMIT DROP AS SELECT g.* FROM (SELECT DISTINCT address_key "
            "COLLATE \"C\" AS address_key FROM " +
            changes.table +
            " WHERE change <> 'gone' AND address_key IS NOT NULL ORDER BY 1) k JOIN epc.geocode_cache g ON "
            "g.address_key = k.address_key AND g.status = 'found'");
    db.exec("ANALYZE publish_located");
    const std::string tid(kProductionTid);
    db.exec("CREATE TEMP TABLE publish_incoming (LIKE " + t.production + ", is_new boolean NOT NULL, " + tid +
            " tid) ON COMMIT DROP");
    const std::string incoming = "INSERT INTO publish_incoming (" + columns + ", is_new, " + tid + ") ";
    db.exec(incoming + as_production_rows(t.columns, changes.table, "publish_located", ", r.change = 'new', r." + tid) +
                " WHERE r.change <> 'gone'",
            {run_id});
    db.exec(incoming + "SELECT " + certificate_column_list(t.columns, "r") + ", " + kCoordinates +
                ", $1::bigint, r.row_hash, r.address_key, false, r.ctid FROM " + t.production +
                " r JOIN epc.geocode_cache g ON g.address_key = r.address_key AND g.status = 'found' "
                "WHERE r.latitude IS NULL AND NOT EXISTS (SELECT 1 FROM " +
                changes.table + " c WHERE c.cert_key = r.cert_key)",
            {run_id});
    db.exec("CREATE TEMP TABLE publish_gone ON COMMIT DROP AS SELECT cert_key, " + tid + " FROM " + changes.table +
            " WHERE change = 'gone'");
    db.exec("ANALYZE publish_incoming, publish_gone");  // small: the joins below should use production's key
}

// Keeps the rows about to be replaced or removed, as they are, and the keys about to be added, for
// `revert`: only those, so its space is the changed and removed rows of this publish. The previous
// publish's undo goes: revert is one step back. Rebuilt from production's shape, so it follows
// columns added to production, and keeps every column production has (also those no longer
// chosen). The changed and gone rows come from `changes.was`, kept as the changes were found
// (production has not changed since: the changes are found again otherwise); only the rows
// located since they were published are read from production, by key (looking up the others
// too took 31 s at 28 M rows).
void save_undo(db::Session& session, const ReleaseTables& t, const ReleaseChanges& changes, long long run_id) {
    db::Connection& db = session.db();
    forget_undo(db, session.type(), t);
    db.exec("CREATE TABLE " + t.undo + " (LIKE " + t.production + ")");
    const ColumnSet was = was_columns(session, changes);
    db.exec("INSERT INTO " + t.undo + " (" + production_column_list(was) + ") SELECT " + production_column_list(was) +
            " FROM " + changes.was);
    const ColumnSet kept = session.columns_of(t.production);
    db.exec("INSERT INTO " + t.undo + " (" + production_column_list(kept) + ") SELECT " +
            production_column_list(kept, "p") + " FROM " + t.production +
            " p JOIN publish_incoming i ON i.cert_key = p.cert_key WHERE NOT i.is_new AND NOT EXISTS (SELECT 1 FROM " +
            changes.was + " w WHERE w.cert_key = i.cert_key)");
    db.exec("ALTER TABLE " + t.undo + " ADD PRIMARY KEY (cert_key)");
    db.exec("CREATE TABLE " + t.undo_added + " AS SELECT cert_key FROM publish_incoming WHERE is_new");
    db.exec("INSERT INTO epc.release_undo (cert_type, run_id) VALUES ($1, $2) ON CONFLICT (cert_type) "
            "DO UPDATE SET run_id = EXCLUDED.run_id, saved_at = now()",
            {cert_type_name(session.type()), run_id});
}

// A DELETE or UPDATE of production's rows `p` listed in `f` (publish_gone, or publish_incoming's
// changed rows: `rows` of them) that reaches each where the changes found it, by its ctid, in
// production's block order (one page read, changed and written out in turn), checking the key;
// and, if fewer were there (production rewritten since, by VACUUM FULL or CLUSTER, or a row
// changed by someone else), does it again by key instead. By key, each of 279 K rows of a 28 M-row
// table first reads a cold leaf of the key's index: the DELETE took 22-23 s by key, 9-11 s by ctid.
// `statement` ends where the join condition goes: "... WHERE ".
std::uint64_t at_found_rows(db::Connection& db, const std::string& statement, std::uint64_t rows,
                            const std::string& production) {
    const std::string tid(kProductionTid);
    db.exec("SAVEPOINT at_found_rows");
    const std::uint64_t found = db.exec(statement + "p.ctid = f." + tid + " AND p.cert_key = f.cert_key").affected();
    if (found == rows) {
        db.exec("RELEASE SAVEPOINT at_found_rows");
        return found;
    }
    spdlog::warn("publish: {} of {} rows were no longer where the changes found them in {} (rewritten since?); "
                 "reaching them by key",
                 rows - found, rows, production);
    db.exec("ROLLBACK TO SAVEPOINT at_found_rows");
    return db.exec(statement + "p.cert_key = f.cert_key").affected();
}

// Row-level changes only: they lock the rows they touch, and no SELECT waits for them. A user's
// foreign key to a removed certificate stops the publish here (the transaction rolls back whole).
void apply_changes(db::Connection& db, const ReleaseTables& t, PublishSummary& s) {
    const std::string columns = production_column_list(t.columns);
    const std::string tid(kProductionTid);
    db::Result expected = db.exec(
        "SELECT (SELECT count(*) FROM publish_gone), (SELECT count(*) FROM publish_incoming WHERE NOT is_new)");
    // Room to sort the changed rows in production's order in memory (at 28 M rows, 90 MB), for
    // these two statements only: given to the statements before, it changed their plans for the
    // worse (the incoming rows' coordinates by a parallel hash join over the whole cache: 6.6 s, not 3).
    db.exec("SET LOCAL work_mem = '256MB'");
    s.disappeared = at_found_rows(
        db, "DELETE FROM " + t.production + " p USING (SELECT * FROM publish_gone ORDER BY " + tid + ") f WHERE ",
        static_cast<std::uint64_t>(expected.integer(0, 0)), t.production);
    s.changed = at_found_rows(
        db,
        "UPDATE " + t.production + " p SET (" + columns + ") = (" + production_column_list(t.columns, "f") +
            ") FROM (SELECT * FROM publish_incoming WHERE NOT is_new ORDER BY " + tid + ") f WHERE ",
        static_cast<std::uint64_t>(expected.integer(0, 1)), t.production);
    db.exec("SET LOCAL work_mem TO DEFAULT");
    s.added = db.exec("INSERT INTO " + t.production + " (" + columns + ") SELECT " +
                      production_column_list(t.columns, "i") + " FROM publish_incoming i WHERE i.is_new")
                  .affected();
}

// One transaction from comparison to the run's status: readers see the previous release or the
// new one, never a mix; a publish killed anywhere leaves the previous release and the run 'loaded'.
void publish_changes(db::Session& session, const ReleaseTables& t, PublishSummary& summary) {
    db::Connection& db = session.db();
    add_missing_columns(db, t);
    const bool recommendations = prepare_recommendations(session, summary.run_id);
    const ReleaseChanges changes = release_changes(session, summary.run_id);
    if (changes.staged_rows != summary.rows)
        throw staging_not_as_loaded(session.type(), summary.run_id, summary.rows, changes.staged_rows);
    db::Transaction tx(db);
    // The changes are a few percent of production: each of them is best found by production's
    // key. PostgreSQL's default cost of a random page (4, for spinning disks) would rather read
    // all of production for every join; its pages are in memory or on SSD.
    db.exec("SET LOCAL random_page_cost = 1.1");
    stage_changes(session, t, changes, summary.run_id);
    save_undo(session, t, changes, summary.run_id);
    apply_changes(db, t, summary);
    if (recommendations) summary.recommendations = publish_recommendations(session, summary.run_id, true);
    provide_latest(session, t);
    mark_published(db, summary);
    forget_changes(db, session.type());
    tx.commit();
}

// --- Revert ---

// Why there is nothing to revert, for the error: what the type's latest publish was.
Error nothing_to_revert(db::Connection& db, CertType type) {
    const std::string name(cert_type_name(type));
    db::Result last = db.exec(
        "SELECT run_id, status FROM epc.import_run WHERE cert_type = $1 AND status IN ($2, $3) "
        "ORDER BY run_id DESC LIMIT 1",
        {name, db::run_status_name(db::RunStatus::published), db::run_status_name(db::RunStatus::reverted)});
    std::string why = "nothing has been published yet";
    if (last.rows() > 0 && last.text(0, 1) == db::run_status_name(db::RunStatus::reverted))
        why = "the last publish (run " + last.text(0, 0) +
              ") was reverted already, and revert goes back one publish only";
    else if (last.rows() > 0)
        why = "run " + last.text(0, 0) +
              " was the first release published (or was published before revert "
              "existed): no release before it was kept";
    return Error(exit_usage, "nothing to revert for " + name + ": " + why + "; production is unchanged");
}

// The publish to undo: the one release_undo names, if it is still 'published'. Its row stays
// locked until the revert commits.
long long revertible_run(db::Connection& db, CertType type, const ReleaseTables& t) {
    db::Result r = db.exec(
        "SELECT u.run_id FROM epc.release_undo u JOIN epc.import_run r USING (run_id) "
        "WHERE u.cert_type = $1 AND r.status = $2 AND to_regclass($3) IS NOT NULL "
        "AND to_regclass($4) IS NOT NULL AND to_regclass($5) IS NOT NULL FOR UPDATE OF u",
        {cert_type_name(type), db::run_status_name(db::RunStatus::published), t.production, t.undo, t.undo_added});
    if (r.rows() == 0) throw nothing_to_revert(db, type);
    return r.integer(0, 0);
}

// The inverse of apply_changes from what save_undo kept: keys the publish added go, rows it
// changed get their previous values back, rows it removed come back; each by production's key.
void undo_changes(db::Connection& db, const ReleaseTables& t, RevertSummary& s) {
    const std::string columns = production_column_list(t.columns);
    s.removed = db.exec("DELETE FROM " + t.production + " p USING " + t.undo_added + " a WHERE p.cert_key = a.cert_key")
                    .affected();
    s.restored = db.exec("UPDATE " + t.production + " p SET (" + columns + ") = (" +
                         production_column_list(t.columns, "u") + ") FROM " + t.undo +
                         " u WHERE p.cert_key = u.cert_key")
                     .affected();
    s.reinserted = db.exec("INSERT INTO " + t.production + " (" + columns + ") SELECT " +
                           production_column_list(t.columns, "u") + " FROM " + t.undo +
                           " u WHERE NOT EXISTS (SELECT 1 FROM " + t.production + " p WHERE p.cert_key = u.cert_key)")
                       .affected();
}

void mark_reverted(db::Connection& db, CertType type, const ReleaseTables& t, RevertSummary& s) {
    const std::string name(cert_type_name(type));
    db::Result run = db.exec("UPDATE epc.import_run SET status = $2, reverted_at = now() WHERE run_id = $1 "
                             "RETURNING coalesce(rows_published, 0)",
                             {s.run_id, db::run_status_name(db::RunStatus::reverted)});
    s.rows = static_cast<std::uint64_t>(run.integer(0, 0)) - s.removed + s.reinserted;
    forget_undo(db, type, t);
    s.back_to_run = db.exec("SELECT coalesce(max(run_id), 0) FROM epc.import_run WHERE cert_type = $1 AND status = $2",
                            {name, db::run_status_name(db::RunStatus::published)})
                        .integer(0, 0);
}

}  // namespace

std::string production_table(CertType type) { return "epc." + std::string(cert_type_sql(type)) + "_certificates"; }

PublishSummary publish(db::Session& session) {
    const auto started = std::chrono::steady_clock::now();
    spdlog::info("publish: database {}", session.db().describe());
    session.prepare_schema();
    session.lock();
    PublishSummary summary;
    const std::optional<db::StagingOwner> run = publishable_run(session, summary);
    if (!run) return summary;
    summary.rows = static_cast<std::uint64_t>(run->rows_loaded);

    ReleaseTables t = release_tables(session.type(), run->run_id);
    t.columns = session.staging_columns();
    db::Connection& db = session.db();
    if (db.has_table(t.production)) publish_changes(session, t, summary);
    else publish_first_release(session, t, summary);

    summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    spdlog::info("publish: {} now holds run {}: {} certificates, {} new, {} changed, {} gone since the previous "
                 "release, in {:.1f} s ({:.0f} rows/s)",
                 t.production, run->run_id, summary.rows, summary.added, summary.changed, summary.disappeared,
                 summary.seconds, summary.seconds > 0 ? static_cast<double>(summary.rows) / summary.seconds : 0.0);
    const RecommendationsPublished& recs = summary.recommendations;
    if (recs.published)
        spdlog::info("publish: {} now holds run {}'s {} recommendations: {} added, {} removed{}",
                     recommendation_tables(session.type()).production, run->run_id, recs.rows, recs.added, recs.removed,
                     recs.created ? " (table created)" : "");
    else if (db.has_table(recommendation_tables(session.type()).production))
        spdlog::warn("publish: run {} did not load recommendations (--recommendations); {} is left as it was",
                     run->run_id, recommendation_tables(session.type()).production);
    return summary;
}

RevertSummary revert(db::Session& session) {
    const auto started = std::chrono::steady_clock::now();
    spdlog::info("revert: database {}", session.db().describe());
    session.prepare_schema();
    session.lock();
    db::Connection& db = session.db();
    RevertSummary summary;
    db::Transaction tx(db);  // readers see the bad release or the one before, never a mix
    ReleaseTables names = release_tables(session.type(), 0);
    names.columns = session.columns_of(names.production);
    summary.run_id = revertible_run(db, session.type(), names);
    undo_changes(db, names, summary);
    summary.recommendations = revert_recommendations(db, session.type());
    mark_reverted(db, session.type(), names, summary);
    tx.commit();

    summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    spdlog::info("revert: {} holds the release of run {} again: {} certificates; run {} is reverted ({} of its keys "
                 "removed, {} changed rows restored, {} removed rows back), in {:.1f} s",
                 names.production, summary.back_to_run, summary.rows, summary.run_id, summary.removed, summary.restored,
                 summary.reinserted, summary.seconds);
    if (summary.recommendations)
        spdlog::info("revert: {} holds {} recommendations again", recommendation_tables(session.type()).production,
                     *summary.recommendations);
    return summary;
}

}  // namespace epc
