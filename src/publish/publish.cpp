#include "epc/publish/publish.hpp"

#include <chrono>

#include <spdlog/spdlog.h>

#include "epc/db/columns.hpp"
#include "epc/load/ledger.hpp"
#include "epc/load/pg.hpp"
#include "epc/transform/fields.hpp"

namespace epc {

std::string production_table(CertType type) { return "epc." + std::string(cert_type_sql(type)) + "_certificates"; }

PublishSummary publish(const PublishOptions& options) {
    const auto started = std::chrono::steady_clock::now();
    const std::string type(cert_type_name(options.type));
    const StagingTables staging = staging_tables(options.type);
    const std::string table = production_table(options.type);
    const std::string bare = std::string(cert_type_sql(options.type)) + "_certificates";

    pg::Connection db(options.conninfo, "epc-import " + type + " publish");
    spdlog::info("publish: database {}", db.describe());
    Ledger ledger(db, options.type);
    ledger.ensure_schema();
    if (!options.locked_by_caller) ledger.lock();

    // Which run owns staging, and is it complete?
    pg::Result owner = db.exec(
        "SELECT r.run_id, r.status, r.rows_loaded FROM epc.staging_owner o JOIN epc.import_run r USING (run_id) "
        "WHERE o.cert_type = $1",
        {type});
    if (owner.rows() == 0)
        throw Error(exit_usage, "nothing to publish for " + type + ": no run has loaded staging yet (run 'load' first)");
    PublishSummary summary;
    summary.run_id = owner.integer(0, 0);
    const std::string status = owner.text(0, 1);
    const std::string run = std::to_string(summary.run_id);
    if (status == "published") {
        spdlog::info("publish: run {} is already in {}; nothing to do", run, table);
        summary.already_published = true;
        summary.rows = static_cast<std::uint64_t>(owner.integer(0, 2));
        return summary;
    }
    if (status != "loaded")
        throw Error(exit_usage, "refusing to publish " + type + ": staging belongs to run " + run + ", whose load is '" +
                                    status + "', not complete; re-run 'load' first");
    const long long staged = db.exec("SELECT count(*) FROM " + staging.rows).integer(0, 0);
    if (staged == 0)
        throw Error(exit_usage, "refusing to publish " + type + ": staging of run " + run +
                                    " holds no certificates; an empty release would empty production");
    if (staged != owner.integer(0, 2))
        throw Error(exit_usage, "refusing to publish " + type + ": staging holds " + std::to_string(staged) +
                                    " rows but run " + run + " loaded " + std::to_string(owner.integer(0, 2)) +
                                    " (changed since the load?); re-run 'load'");

    // Build the new release beside the current one. A leftover from an interrupted publish of
    // this run is dropped first.
    const std::string fresh_name = bare + "_r" + run;
    const std::string fresh = "epc." + fresh_name;
    db.exec("DROP TABLE IF EXISTS " + fresh);
    spdlog::info("publish: building {} from {} ({} rows)", fresh, staging.rows, staged);
    db.exec("CREATE TABLE " + fresh + " (" + certificate_columns_ddl() + R"(,
    latitude          double precision,  -- from epc.geocode_cache: NULL when not located
    longitude         double precision,
    geocode_provider  text,
    geocode_precision text,              -- property | street | postcode
    run_id            bigint NOT NULL    -- the import_run that published the row
))");
    // The two staging sides meet here: certificates, and the coordinates found for their addresses.
    db.exec("INSERT INTO " + fresh +
            " (" + certificate_column_list() + ", latitude, longitude, geocode_provider, geocode_precision, run_id) "
            "SELECT " + certificate_column_list("s") + ", g.latitude, g.longitude, g.provider, g.precision, $1 "
            "FROM " + staging.rows +
                " s LEFT JOIN epc.geocode_cache g ON g.address_key = s.address_key AND g.status = 'found'",
            {run});
    // Index after filling: several times faster than inserting into an indexed table (design.md).
    db.exec("SET maintenance_work_mem = '512MB'");
    db.exec("ALTER TABLE " + fresh + " ADD CONSTRAINT " + fresh_name + "_pkey PRIMARY KEY (cert_key)");
    db.exec("CREATE INDEX " + fresh_name + "_postcode ON " + fresh + " (postcode)");
    db.exec("CREATE INDEX " + fresh_name + "_lodgement_date ON " + fresh + " (lodgement_date)");
    db.exec("RESET maintenance_work_mem");
    db.exec("ANALYZE " + fresh);

    // Compare with the release readers see now, then swap in one transaction.
    const bool exists = db.exec("SELECT to_regclass($1) IS NOT NULL", {table}).text(0, 0) == "t";
    summary.rows = static_cast<std::uint64_t>(staged);
    if (exists) {
        summary.added = db.exec("SELECT count(*) FROM " + fresh + " n WHERE NOT EXISTS (SELECT 1 FROM " + table +
                                " o WHERE o.cert_key = n.cert_key)")
                            .integer(0, 0);
        summary.disappeared = db.exec("SELECT count(*) FROM " + table + " o WHERE NOT EXISTS (SELECT 1 FROM " + fresh +
                                      " n WHERE n.cert_key = o.cert_key)")
                                  .integer(0, 0);
    } else {
        summary.added = summary.rows;
    }
    const std::string retired_name = bare + "_retired_r" + run;
    db.exec("BEGIN");
    if (exists) db.exec("ALTER TABLE " + table + " RENAME TO " + retired_name);
    db.exec("ALTER TABLE " + fresh + " RENAME TO " + bare);
    db.exec("UPDATE epc.import_run SET status = 'published', published_at = now(), rows_published = $2, "
            "rows_added = $3, rows_disappeared = $4 WHERE run_id = $1",
            {run, std::to_string(summary.rows), std::to_string(summary.added), std::to_string(summary.disappeared)});
    db.exec("COMMIT");
    if (exists) {
        try {
            db.exec("DROP TABLE epc." + retired_name);
        } catch (const Error& e) {
            // Typically a user's view still points at the old table; leave it rather than CASCADE.
            spdlog::warn("publish: kept the previous release as epc.{}: {}", retired_name, e.what());
        }
    }
    summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    spdlog::info("publish: {} now holds run {}: {} certificates, {} new, {} gone since the previous release, in "
                 "{:.1f} s ({:.0f} rows/s)",
                 table, run, summary.rows, summary.added, summary.disappeared, summary.seconds,
                 summary.seconds > 0 ? static_cast<double>(summary.rows) / summary.seconds : 0.0);
    return summary;
}

}  // namespace epc
