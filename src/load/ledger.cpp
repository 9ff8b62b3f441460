#include "epc/load/ledger.hpp"

#include <spdlog/spdlog.h>

#include "epc/db/columns.hpp"
#include "epc/transform/fields.hpp"

namespace epc {

namespace {

// Transaction-level advisory locks in kLockNamespace, above the per-type objects.
constexpr int kDdlLock = 100;
inline int load_decision_lock(CertType type) { return 200 + lock_object(type); }

}  // namespace

StagingTables staging_tables(CertType type) {
    std::string t(cert_type_sql(type));
    return {"epc.stage_" + t, "epc.reject_" + t};
}

Ledger::Ledger(pg::Connection& control, CertType type)
    : db_(control), type_(type), tables_(staging_tables(type)) {}

void Ledger::ensure_schema() {
    db_.exec("BEGIN");
    // CREATE ... IF NOT EXISTS still races when two runs (of different types) start together.
    db_.exec("SELECT pg_advisory_xact_lock(" + std::to_string(kLockNamespace) + ", " + std::to_string(kDdlLock) + ")");
    db_.exec(R"(
CREATE SCHEMA IF NOT EXISTS epc;
CREATE TABLE IF NOT EXISTS epc.import_run (
    run_id              bigserial PRIMARY KEY,
    cert_type           text NOT NULL,
    archive_path        text,
    archive_identity    text NOT NULL,
    archive_bytes       bigint,
    source              text,             -- current | legacy | file
    release_last_updated text,            -- current service: lastUpdated of the release
    archive_sha256      text,
    layout              text,
    status              text NOT NULL,    -- loading | loaded | published | failed | abandoned
    started_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    files               int,
    rows_read           bigint,
    rows_loaded         bigint,
    rows_rejected       bigint,
    invalid_utf8_values bigint,
    invalid_values      bigint,
    error               text,
    published_at        timestamptz,
    rows_published      bigint,
    rows_added          bigint,       -- keys not in the previous release
    rows_disappeared    bigint,       -- keys of the previous release not in this one
    geocode             jsonb         -- the geocode stage's counters
);
CREATE TABLE IF NOT EXISTS epc.import_file (
    run_id              bigint NOT NULL REFERENCES epc.import_run ON DELETE CASCADE,
    file_no             int NOT NULL,
    file_name           text NOT NULL,
    rows_read           bigint NOT NULL,
    rows_loaded         bigint NOT NULL,
    rows_rejected       bigint NOT NULL,
    invalid_utf8_values bigint NOT NULL,
    invalid_values      bigint NOT NULL,
    loaded_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, file_no)
);
-- Every address located so far, by address key, shared by all types and kept across releases:
-- an address is sent to a geocoder once, ever. Transient failures are never stored.
CREATE TABLE IF NOT EXISTS epc.geocode_cache (
    address_key text PRIMARY KEY,
    status      text NOT NULL,        -- found | not_found (asked again after --geocode-retry-days)
    latitude    double precision,
    longitude   double precision,
    provider    text,
    precision   text,                 -- property | street | postcode
    checked_at  timestamptz NOT NULL
);
-- Which file each offline reference table (epc.ref_uprn, epc.ref_postcode) was loaded from.
CREATE TABLE IF NOT EXISTS epc.reference_file (
    provider      text PRIMARY KEY,
    file_identity text NOT NULL,      -- name:size:mtime
    rows          bigint NOT NULL,
    loaded_at     timestamptz NOT NULL
);
-- Which run the staging tables of each type belong to.
CREATE TABLE IF NOT EXISTS epc.staging_owner (
    cert_type text PRIMARY KEY,
    run_id    bigint NOT NULL REFERENCES epc.import_run
);
)");
    db_.exec("COMMIT");
}

namespace {

// Who holds an advisory lock, for the error message: an operator wants to find that process.
std::string lock_holder(pg::Connection& db, int ns, int object) {
    pg::Result holder = db.exec(
        "SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.client_addr::text, 'local'), "
        "       to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS TZ') "
        "FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = " + std::to_string(ns) +
        " AND l.objid = " + std::to_string(object) + " LIMIT 1");
    return holder.rows() > 0 ? " (PostgreSQL backend pid " + holder.text(0, 0) + ", '" + holder.text(0, 1) + "' from " +
                                   holder.text(0, 2) + ", since " + holder.text(0, 3) + ")"
                             : "";
}

}  // namespace

void Ledger::lock() {
    const std::string key = std::to_string(kLockNamespace) + ", " + std::to_string(lock_object(type_));
    pg::Result r = db_.exec("SELECT pg_try_advisory_lock(" + key + ")");
    if (r.text(0, 0) == "t") return;
    throw Error(exit_locked, "another epc-import run for " + std::string(cert_type_name(type_)) +
                                 " certificates holds the lock" + lock_holder(db_, kLockNamespace, lock_object(type_)) +
                                 "; try again when it has finished");
}

void Ledger::lock_shard(const Shard& shard) {
    const std::string type(cert_type_name(type_));
    pg::Result r = db_.exec("SELECT pg_try_advisory_lock_shared(" + std::to_string(kLockNamespace) + ", " +
                            std::to_string(lock_object(type_)) + ")");
    if (r.text(0, 0) != "t")
        throw Error(exit_locked, "an epc-import run for " + type + " certificates that is not a shard holds the lock" +
                                     lock_holder(db_, kLockNamespace, lock_object(type_)) +
                                     "; try again when it has finished");
    const int object = shard_lock_object(type_, shard.index);
    r = db_.exec("SELECT pg_try_advisory_lock(" + std::to_string(kShardLockNamespace) + ", " + std::to_string(object) + ")");
    if (r.text(0, 0) != "t")
        throw Error(exit_locked, "shard " + std::to_string(shard.index) + " of the " + type +
                                     " load is already being loaded by another process" +
                                     lock_holder(db_, kShardLockNamespace, object));
}

void Ledger::serialise_in_transaction() {
    db_.exec("SELECT pg_advisory_xact_lock(" + std::to_string(kLockNamespace) + ", " +
             std::to_string(load_decision_lock(type_)) + ")");
}

RunStart Ledger::begin_load(const ArchiveInfo& archive, const std::optional<Shard>& shard) {
    const std::string type(cert_type_name(type_));
    RunStart start;
    db_.exec("BEGIN");
    serialise_in_transaction();
    pg::Result last = db_.exec(
        "SELECT r.run_id, r.status, r.archive_identity, (o.run_id IS NOT NULL) "
        "FROM epc.import_run r LEFT JOIN epc.staging_owner o ON o.cert_type = r.cert_type AND o.run_id = r.run_id "
        "WHERE r.cert_type = $1 ORDER BY r.run_id DESC LIMIT 1",
        {type});
    if (last.rows() == 1) {
        long long run_id = last.integer(0, 0);
        std::string status = last.text(0, 1);
        bool same_archive = last.text(0, 2) == archive.identity;
        bool owns_staging = last.text(0, 3) == "t";
        // A shard also joins a load its siblings completed but nobody published yet: it is a late
        // or retried array child with nothing left to do, not a new import.
        const bool joinable = status == "loading" || status == "failed" || (shard && status == "loaded");
        if (joinable && same_archive && owns_staging) {
            // UNLOGGED staging is emptied if the server crashed: resume only if the rows the ledger
            // says were committed are all still there.
            pg::Result counts = db_.exec(
                "SELECT (SELECT count(*) FROM " + tables_.rows + "), "
                "(SELECT coalesce(sum(rows_loaded), 0) FROM epc.import_file WHERE run_id = $1)",
                {std::to_string(run_id)});
            if (counts.integer(0, 0) == counts.integer(0, 1)) {
                pg::Result done = db_.exec("SELECT file_no FROM epc.import_file WHERE run_id = $1 ORDER BY file_no",
                                           {std::to_string(run_id)});
                for (int i = 0; i < done.rows(); ++i) start.done_files.insert(static_cast<int>(done.integer(i, 0)));
                if (status != "loaded")
                    db_.exec("UPDATE epc.import_run SET status = 'loading', error = NULL WHERE run_id = $1",
                             {std::to_string(run_id)});
                db_.exec("COMMIT");
                start.run_id = run_id;
                start.resumed = true;
                return start;
            }
            spdlog::warn("staging of run {} lost rows (server restart?); starting the load again", run_id);
        }
        if (shard && status == "loading" && !same_archive) {
            // Other shards of this type hold their shard locks while they load.
            pg::Result siblings = db_.exec(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid() "
                "AND classid = " + std::to_string(kShardLockNamespace) + " AND objid::bigint / " + std::to_string(kShardsPerType) + " = " +
                std::to_string(lock_object(type_)));
            if (siblings.integer(0, 0) > 0)
                throw Error(exit_usage, "shard " + std::to_string(shard->index) + "/" + std::to_string(shard->count) +
                                            " got a different archive (" + archive.identity.substr(0, 16) +
                                            "...) from the one its sibling shards are loading in run " +
                                            std::to_string(run_id) +
                                            " (did the publisher release mid-job?); every shard must load the same "
                                            "archive: give them the same --zip, or run the split load again");
        }
    }

    db_.exec("UPDATE epc.import_run SET status = 'abandoned', finished_at = now() "
             "WHERE cert_type = $1 AND status = 'loading'",
             {type});
    pg::Result run = db_.exec(
        "INSERT INTO epc.import_run (cert_type, archive_path, archive_identity, archive_bytes, layout, status, files, "
        "source, release_last_updated, archive_sha256) "
        "VALUES ($1, $2, $3, $4, $5, 'loading', $6, $7, NULLIF($8, ''), NULLIF($9, '')) RETURNING run_id",
        {type, archive.path, archive.identity, std::to_string(archive.bytes), std::string(layout_name(archive.layout)),
         std::to_string(archive.files.size()), archive.source, archive.release_last_updated, archive.sha256});
    start.run_id = run.integer(0, 0);
    // A new run starts from empty staging: no indexes, UNLOGGED (a crash is covered by the
    // row-count check above), rebuilt rather than truncated so column changes take effect.
    db_.exec("DROP TABLE IF EXISTS " + tables_.rows + ", " + tables_.rejects);
    db_.exec("CREATE UNLOGGED TABLE " + tables_.rows + " (" + staging_columns_ddl() + R"(
) WITH (autovacuum_enabled = off))");  // the loader ANALYZEs it; autovacuum would only compete
    db_.exec("CREATE TABLE " + tables_.rejects + R"( (
    file_no   int NOT NULL,
    file_name text NOT NULL,
    line_no   bigint NOT NULL,
    reason    text NOT NULL,   -- field_count | missing_key | missing_date | bad_date | duplicate_key
    detail    text,
    raw       text             -- the record as in the file (invalid UTF-8 replaced)
))");
    db_.exec("INSERT INTO epc.staging_owner (cert_type, run_id) VALUES ($1, $2) "
             "ON CONFLICT (cert_type) DO UPDATE SET run_id = EXCLUDED.run_id",
             {type, std::to_string(start.run_id)});
    db_.exec("COMMIT");
    return start;
}

void Ledger::mark_failed(long long run_id, const std::string& error) {
    db_.exec("UPDATE epc.import_run SET status = 'failed', finished_at = now(), error = $2 WHERE run_id = $1",
             {std::to_string(run_id), error});
}

}  // namespace epc
