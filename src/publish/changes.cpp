#include "epc/publish/changes.hpp"

#include <chrono>

#include <spdlog/spdlog.h>

#include "epc/db/columns.hpp"
#include "epc/db/runs.hpp"
#include "epc/db/transaction.hpp"
#include "epc/publish/publish.hpp"

namespace epc {

namespace {

std::string changes_table(CertType type) { return "epc.changes_" + std::string(cert_type_sql(type)); }

// The run production holds now: what the changes were found against.
long long production_run(db::Connection& db, CertType type) {
    return db
        .exec("SELECT coalesce(max(run_id), 0) FROM epc.import_run WHERE cert_type = $1 AND status = $2",
              {cert_type_name(type), db::run_status_name(db::RunStatus::published)})
        .integer(0, 0);
}

bool found_already(db::Connection& db, CertType type, long long run_id, long long base_run, const std::string& table) {
    return db
        .exec("SELECT count(*) = 1 AND to_regclass($4) IS NOT NULL FROM epc.change_set WHERE cert_type = $1 AND "
              "run_id = $2 AND base_run = $3",
              {cert_type_name(type), run_id, base_run, table})
        .boolean(0, 0);
}

// Staging's rows whose key production lacks or whose hash differs, and production's keys that
// staging lacks: one full join, reading each table once and writing only what differs.
void find_changes(db::Session& session, const std::string& table, const std::string& production) {
    db::Connection& db = session.db();
    const ColumnSet staged = session.staging_columns();
    std::string columns;  // staging's, the key taken from production for a gone row
    for (const Column& c : staged.columns())
        columns += (columns.empty() ? "" : ", ") +
                   (c.name == kKeyColumn ? "coalesce(s.cert_key, p.cert_key) AS cert_key" : "s." + std::string(c.name));
    for (const BookkeepingColumn& c : bookkeeping_columns()) columns += ", s." + std::string(c.name);
    db.exec("SET LOCAL work_mem = '256MB'");
    db.exec("SET LOCAL jit = off");
    db.exec("DROP TABLE IF EXISTS " + table);
    db.exec("CREATE TABLE " + table + " AS SELECT " + columns +
            ", CASE WHEN p.cert_key IS NULL THEN 'new' WHEN s.cert_key IS NULL THEN 'gone' ELSE 'changed' END "
            "AS change FROM " +
            session.staging().rows + " s FULL JOIN " + production +
            " p ON p.cert_key = s.cert_key WHERE s.cert_key IS NULL OR p.cert_key IS NULL OR "
            "p.row_hash IS DISTINCT FROM s.row_hash");
    db.exec("CREATE INDEX ON " + table + " (cert_key)");
    db.exec("ANALYZE " + table);
}

}  // namespace

ReleaseChanges release_changes(db::Session& session, long long run_id) {
    db::Connection& db = session.db();
    const CertType type = session.type();
    ReleaseChanges changes{false, changes_table(type)};
    const std::string production = production_table(type);
    if (!db.has_table(production)) {
        changes.first_release = true;
        return changes;
    }
    const long long base_run = production_run(db, type);
    if (found_already(db, type, run_id, base_run, changes.table)) return changes;

    const auto started = std::chrono::steady_clock::now();
    db::Transaction tx(db);
    find_changes(session, changes.table, production);
    db.exec("INSERT INTO epc.change_set (cert_type, run_id, base_run) VALUES ($1, $2, $3) ON CONFLICT (cert_type) "
            "DO UPDATE SET run_id = EXCLUDED.run_id, base_run = EXCLUDED.base_run, found_at = now()",
            {cert_type_name(type), run_id, base_run});
    db::Result counts = db.exec("SELECT count(*) FILTER (WHERE change = 'new'), count(*) FILTER (WHERE change = "
                                "'changed'), count(*) FILTER (WHERE change = 'gone') FROM " +
                                changes.table);
    tx.commit();
    spdlog::info("changes: run {} against {} (run {}): {} new, {} changed, {} gone certificates, found in {:.1f} s",
                 run_id, production, base_run, counts.text(0, 0), counts.text(0, 1), counts.text(0, 2),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    return changes;
}

void forget_changes(db::Connection& db, CertType type) {
    db.exec("DROP TABLE IF EXISTS " + changes_table(type));
    db.exec("DELETE FROM epc.change_set WHERE cert_type = $1", {cert_type_name(type)});
}

}  // namespace epc
