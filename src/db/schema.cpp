#include "epc/db/schema.hpp"

#include <spdlog/spdlog.h>

#include "epc/db/columns.hpp"
#include "epc/db/locks.hpp"
#include "epc/db/runs.hpp"
#include "epc/db/transaction.hpp"

namespace epc::db {

namespace {

struct Migration {
    int version;
    const char* summary;
    std::string sql;
};

// Version 1: the schema of epc-import 0.1, which recorded no version. Kept verbatim (IF NOT
// EXISTS included) so that a new database goes through the same steps as an old one did.
const char* const kVersion1 = R"(
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
    status              text NOT NULL,    -- see epc::db::RunStatus
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
-- an address is sent to a geocoder once, ever. Transient failures are not answers: they are kept
-- in epc.geocode_retry (version 8) instead.
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
)";

std::string run_status_list() {
    std::string list;
    for (RunStatus s : kRunStatuses) list += (list.empty() ? "'" : ", '") + std::string(run_status_name(s)) + "'";
    return list;
}

// Version 2: the version is recorded; a run's status can only be one the importer knows; the
// "latest run of a type" lookup every stage makes is indexed.
std::string version2() {
    return R"(
CREATE TABLE epc.schema_version (
    version    int PRIMARY KEY,
    summary    text NOT NULL,
    applied_by text NOT NULL,          -- the epc-import version that applied it
    applied_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE epc.import_run ADD CONSTRAINT import_run_status_check CHECK (status IN ()" +
           run_status_list() + R"());
CREATE INDEX import_run_type_run ON epc.import_run (cert_type, run_id);
)";
}

// Version 3: publishing changes production in place instead of replacing the table (src/publish),
// so users' views, grants and keys on it survive. The rows the last publish replaced or removed
// are kept in epc.undo_<type> for `revert`, which release_undo ties to that publish; a run can be
// 'reverted' and counts its changed rows. (Version 3 also gave production an md5 row hash, which
// version 5 replaced; the tables it left are upgraded there.)
std::string version3() {
    return R"(
ALTER TABLE epc.import_run ADD COLUMN rows_changed bigint,  -- keys of the previous release whose values changed
                           ADD COLUMN reverted_at timestamptz;
ALTER TABLE epc.import_run DROP CONSTRAINT import_run_status_check,
    ADD CONSTRAINT import_run_status_check CHECK (status IN ()" +
           run_status_list() + R"());
-- Per type, the publish that `revert` can undo; the rows it replaced or removed are in epc.undo_<type>.
CREATE TABLE epc.release_undo (
    cert_type text PRIMARY KEY,
    run_id    bigint NOT NULL REFERENCES epc.import_run ON DELETE CASCADE,
    saved_at  timestamptz NOT NULL DEFAULT now()
);
)";
}

// Version 4: postcode-level web geocoders (postcodes.io) are asked per distinct postcode, once,
// ever; their answers are kept by postcode, beside the answers by address.
const char* const kVersion4 = R"(
CREATE TABLE epc.postcode_cache (
    provider   text NOT NULL,
    postcode   text NOT NULL,           -- canonical form "AB1 2CD"
    status     text NOT NULL,           -- found | not_found (asked again after --geocode-retry-days)
    latitude   double precision,
    longitude  double precision,
    checked_at timestamptz NOT NULL,
    PRIMARY KEY (provider, postcode)
);
)";

// Version 5: the loader hashes each row's certificate values (staging.row_hash) and production
// keeps that hash and the address key, so what a release changes is found by comparing 8-byte
// hashes, and the geocode stage looks only at the addresses of new, changed or unlocated
// certificates (an index on production's unlocated rows). What a release changes is kept in
// epc.changes_<type> between the geocode stage and publish; epc.change_set says for which run and
// which production state. Production and undo tables of earlier versions get the new columns
// empty: their next publish compares every row as changed, once. An unpublished staging table of
// an earlier version gets a hash of 0, which no production row has. A kept undo gets the list of
// the keys its publish added (epc.undo_<type>_added), which revert now deletes by.
std::string version5() {
    std::string sql = R"(
CREATE TABLE epc.change_set (
    cert_type text PRIMARY KEY,
    run_id    bigint NOT NULL REFERENCES epc.import_run ON DELETE CASCADE,  -- the run in staging
    base_run  bigint NOT NULL,   -- the published run production held when it was found (0: none)
    found_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE epc.geocode_cache ALTER COLUMN address_key TYPE text COLLATE "C";
)";
    // Each table only where it exists (a type never imported has none).
    const auto if_exists = [](const std::string& table, const std::string& statements) {
        return "DO $$ BEGIN IF to_regclass('" + table + "') IS NOT NULL THEN\n" + statements + "\nEND IF; END $$;\n";
    };
    for (CertType type : {CertType::domestic, CertType::non_domestic, CertType::display}) {
        const std::string name(cert_type_sql(type));
        const std::string production = "epc." + name + "_certificates", undo = "epc.undo_" + name,
                          staging = "epc.stage_" + name;
        for (const std::string& table : {production, undo})
            sql += if_exists(table, "ALTER TABLE " + table +
                                        " DROP COLUMN IF EXISTS row_hash, ADD COLUMN row_hash bigint, "
                                        "ADD COLUMN address_key text;");
        sql += if_exists(production, "CREATE INDEX " + name + "_certificates_unlocated ON " + production +
                                         " (address_key) WHERE latitude IS NULL;");
        // Revert now deletes the keys a publish added by their list instead of by run_id.
        sql += if_exists(undo, "CREATE TABLE " + undo + "_added AS SELECT p.cert_key FROM " + production +
                                   " p JOIN epc.release_undo r ON r.cert_type = '" + std::string(cert_type_name(type)) +
                                   "' AND r.run_id = p.run_id WHERE NOT EXISTS (SELECT 1 FROM " + undo +
                                   " u WHERE u.cert_key = p.cert_key);");
        sql += if_exists(staging, "ALTER TABLE " + staging + " ADD COLUMN row_hash bigint NOT NULL DEFAULT 0;\n" +
                                      "ALTER TABLE " + staging + " ALTER COLUMN row_hash DROP DEFAULT;");
    }
    return sql;
}

// Version 6: which columns held values that were not of their type (NULL in staging), per file.
const char* const kVersion6 = R"(
ALTER TABLE epc.import_file ADD COLUMN invalid_by_column jsonb;  -- {"column": count}; NULL = none
)";

// Version 7: --recommendations. The ledger says which files were recommendations (their rows are
// not certificates: the run's row counts are the certificates'); a run counts the recommendations
// it published; a publish's undo says what it did to epc.<type>_recommendations.
const char* const kVersion7 = R"(
ALTER TABLE epc.import_file ADD COLUMN dataset text NOT NULL DEFAULT 'certificates'
    CONSTRAINT import_file_dataset_check CHECK (dataset IN ('certificates', 'recommendations'));
ALTER TABLE epc.import_run ADD COLUMN recommendations_published bigint,  -- NULL: the run loaded none
                           ADD COLUMN recommendations_added bigint,
                           ADD COLUMN recommendations_removed bigint;
-- NULL: the publish left epc.<type>_recommendations alone; 'created': it made the table;
-- 'changed': epc.undo_<type>_recommendations(_added) hold what it removed and added.
ALTER TABLE epc.release_undo ADD COLUMN recommendations text;
)";

// Version 8: the addresses a geocoder failed on (transient: down, timed out, over its limits) are
// kept until a later run answers them, so a monthly run asks about them again without reading
// every published certificate that is not located.
const char* const kVersion8 = R"(
CREATE TABLE epc.geocode_retry (
    address_key text COLLATE "C" PRIMARY KEY,
    failed_at   timestamptz NOT NULL DEFAULT now()
);
)";

// Version 9: the cache's not-founds (a small share of it) indexed on their own, so a monthly run
// finds those due to be asked again, and the ones its todo list holds, without reading the whole
// cache (18.7 M rows, 2.2 GB at the 28 M-row benchmark: 4 s each time).
const char* const kVersion9 = R"(
CREATE INDEX geocode_cache_not_found ON epc.geocode_cache (address_key) WHERE status <> 'found';
)";

// Version 10: the rows a run compared with production are counted then (publish checks staging
// still holds what the run loaded without counting it again); existing production tables leave
// room on their pages for changed rows (only pages written from now on: nothing is rewritten).
std::string version10() {
    std::string sql =
        "ALTER TABLE epc.change_set ADD COLUMN staged_rows bigint;  -- NULL: found by an older importer\n";
    for (CertType type : {CertType::domestic, CertType::non_domestic, CertType::display})
        sql += "ALTER TABLE IF EXISTS epc." + std::string(cert_type_sql(type)) +
               "_certificates SET (fillfactor = " + std::to_string(kProductionFillfactor) + ");\n";
    return sql;
}

const std::vector<Migration>& migrations() {
    static const std::vector<Migration> list = {
        {1, "bookkeeping tables of epc-import 0.1", kVersion1},
        {2, "schema_version, run status check, index on import_run (cert_type, run_id)", version2()},
        {3, "production changed in place: row_hash, undo of the last publish (revert), rows_changed, 'reverted'",
         version3()},
        {4, "postcode_cache: postcode-level geocoders asked once per postcode", kVersion4},
        {5, "row hashes from the loader, production's address keys, epc.change_set", version5()},
        {6, "import_file.invalid_by_column: values not of their column's type, per column", kVersion6},
        {7, "recommendations: import_file.dataset, the run's recommendation counts, their undo", kVersion7},
        {8, "geocode_retry: addresses a geocoder failed on, asked again by the next run", kVersion8},
        {9, "geocode_cache_not_found: the cache's not-founds indexed on their own", kVersion9},
        {10, "change_set.staged_rows; production pages keep room for changed rows (fillfactor)", version10()},
    };
    return list;
}

void record_versions(Connection& db, int found) {
    for (const Migration& m : migrations()) {
        if (m.version > found)
            db.exec("INSERT INTO epc.schema_version (version, summary, applied_by) VALUES ($1, $2, $3)",
                    {m.version, m.summary, "epc-import " EPC_VERSION});
        else if (found < 2)  // the versions an unversioned database already had
            db.exec("INSERT INTO epc.schema_version (version, summary, applied_by) VALUES ($1, $2, $3)",
                    {m.version, m.summary, "found in the database (an epc-import before 0.2)"});
    }
}

Error newer_database(int found) {
    return Error(exit_usage, "the epc schema in this database is version " + std::to_string(found) +
                                 ", newer than this epc-import " EPC_VERSION " knows (version " +
                                 std::to_string(current_schema_version()) +
                                 "); run a newer epc-import, or a database of its own; nothing was changed");
}

}  // namespace

int current_schema_version() { return migrations().back().version; }

int database_schema_version(Connection& db) {
    // A plain query of pg_class, not to_regclass(): the latter reads the session's catalog cache,
    // which an advisory lock does not refresh, so after waiting for another importer's upgrade it
    // could still miss the tables that upgrade created.
    Result tables = db.exec(
        "SELECT bool_or(c.relname = 'schema_version'), bool_or(c.relname = 'import_run') FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'epc' AND c.relkind = 'r'");
    if (tables.boolean(0, 0))
        return static_cast<int>(db.exec("SELECT max(version) FROM epc.schema_version").integer(0, 0));
    return tables.boolean(0, 1) ? 1 : 0;
}

void migrate_schema(Connection& db) {
    const int current = current_schema_version();
    int found = database_schema_version(db);
    if (found == current) return;  // the common case: no lock needed
    if (found > current) throw newer_database(found);

    Transaction tx(db);
    // Two importers (of different types, or of two releases) can start together: one upgrades,
    // the other then finds the work done.
    db.exec("SELECT pg_advisory_xact_lock($1, $2)", {kLockNamespace, kSchemaLock});
    found = database_schema_version(db);
    if (found > current) throw newer_database(found);
    for (const Migration& m : migrations()) {
        if (m.version <= found) continue;
        spdlog::info("database: upgrading the epc schema to version {}: {}", m.version, m.summary);
        db.exec(m.sql);
    }
    if (found < current) record_versions(db, found);
    tx.commit();
}

}  // namespace epc::db
