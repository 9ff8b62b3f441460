#include "epc/publish/publish.hpp"

#include <chrono>

#include <spdlog/spdlog.h>

#include "epc/db/columns.hpp"
#include "epc/db/transaction.hpp"
#include "epc/transform/fields.hpp"

namespace epc {

namespace {

// The names one publish works with: production, the new release built beside it, and the retired one.
struct ReleaseTables {
    std::string production;  // epc.<type>_certificates
    std::string bare;        // <type>_certificates, for RENAME TO
    std::string fresh_name;  // <type>_certificates_r<run>
    std::string fresh;       // epc.<type>_certificates_r<run>
    std::string retired_name;
};

ReleaseTables release_tables(CertType type, long long run_id) {
    const std::string bare = std::string(cert_type_sql(type)) + "_certificates";
    const std::string run = std::to_string(run_id);
    return {"epc." + bare, bare, bare + "_r" + run, "epc." + bare + "_r" + run, bare + "_retired_r" + run};
}

// The run in staging, if it can be published; nullopt when it already is. Refuses (exit_usage)
// a run whose load is not complete and a staging table that does not hold what the run loaded.
std::optional<db::StagingOwner> publishable_run(db::Session& session, PublishSummary& summary) {
    const std::string type(cert_type_name(session.type()));
    const std::optional<db::StagingOwner> owner = session.staging_owner();
    if (!owner)
        throw Error(exit_usage, "nothing to publish for " + type + ": no run has loaded staging yet (run 'load' first)");
    summary.run_id = owner->run_id;
    const std::string run = std::to_string(owner->run_id);
    if (owner->status == db::RunStatus::published) {
        spdlog::info("publish: run {} is already in {}; nothing to do", run, production_table(session.type()));
        summary.already_published = true;
        summary.rows = static_cast<std::uint64_t>(owner->rows_loaded);
        return std::nullopt;
    }
    if (owner->status != db::RunStatus::loaded)
        throw Error(exit_usage, "refusing to publish " + type + ": staging belongs to run " + run + ", whose load is '" +
                                    std::string(db::run_status_name(owner->status)) + "', not complete; re-run 'load' first");
    const long long staged = session.db().exec("SELECT count(*) FROM " + session.staging().rows).integer(0, 0);
    if (staged == 0)
        throw Error(exit_usage, "refusing to publish " + type + ": staging of run " + run +
                                    " holds no certificates; an empty release would empty production");
    if (staged != owner->rows_loaded)
        throw Error(exit_usage, "refusing to publish " + type + ": staging holds " + std::to_string(staged) +
                                    " rows but run " + run + " loaded " + std::to_string(owner->rows_loaded) +
                                    " (changed since the load?); re-run 'load'");
    return owner;
}

// Builds the new release beside the current one: filled bare, then indexed and analysed, which
// is several times faster than inserting into an indexed table. A leftover from an interrupted
// publish of this run is dropped first.
void build_release(db::Session& session, const ReleaseTables& t, long long run_id) {
    db::Connection& db = session.db();
    db.exec("DROP TABLE IF EXISTS " + t.fresh);
    spdlog::info("publish: building {} from {}", t.fresh, session.staging().rows);
    db.exec("CREATE TABLE " + t.fresh + " (" + certificate_columns_ddl() + R"(,
    latitude          double precision,  -- from epc.geocode_cache: NULL when not located
    longitude         double precision,
    geocode_provider  text,
    geocode_precision text,              -- property | street | postcode
    run_id            bigint NOT NULL    -- the import_run that published the row
))");
    // The two staging sides meet here: certificates, and the coordinates found for their addresses.
    db.exec("INSERT INTO " + t.fresh + " (" + certificate_column_list() +
                ", latitude, longitude, geocode_provider, geocode_precision, run_id) SELECT " +
                certificate_column_list("s") + ", g.latitude, g.longitude, g.provider, g.precision, $1 FROM " +
                session.staging().rows +
                " s LEFT JOIN epc.geocode_cache g ON g.address_key = s.address_key AND g.status = 'found'",
            {run_id});
    db.exec("SET maintenance_work_mem = '512MB'");
    db.exec("ALTER TABLE " + t.fresh + " ADD CONSTRAINT " + t.fresh_name + "_pkey PRIMARY KEY (cert_key)");
    db.exec("CREATE INDEX " + t.fresh_name + "_postcode ON " + t.fresh + " (postcode)");
    db.exec("CREATE INDEX " + t.fresh_name + "_lodgement_date ON " + t.fresh + " (lodgement_date)");
    db.exec("RESET maintenance_work_mem");
    db.exec("ANALYZE " + t.fresh);
}

// What appeared and disappeared since the release readers see now.
void compare_with_production(db::Connection& db, const ReleaseTables& t, bool exists, PublishSummary& summary) {
    if (!exists) {
        summary.added = summary.rows;
        return;
    }
    summary.added = static_cast<std::uint64_t>(
        db.exec("SELECT count(*) FROM " + t.fresh + " n WHERE NOT EXISTS (SELECT 1 FROM " + t.production +
                " o WHERE o.cert_key = n.cert_key)")
            .integer(0, 0));
    summary.disappeared = static_cast<std::uint64_t>(
        db.exec("SELECT count(*) FROM " + t.production + " o WHERE NOT EXISTS (SELECT 1 FROM " + t.fresh +
                " n WHERE n.cert_key = o.cert_key)")
            .integer(0, 0));
}

// One transaction: readers see the previous release or the new one, never a mix.
void swap_in(db::Connection& db, const ReleaseTables& t, bool exists, const PublishSummary& summary) {
    db::Transaction tx(db);
    if (exists) db.exec("ALTER TABLE " + t.production + " RENAME TO " + t.retired_name);
    db.exec("ALTER TABLE " + t.fresh + " RENAME TO " + t.bare);
    db.exec("UPDATE epc.import_run SET status = $2, published_at = now(), rows_published = $3, "
            "rows_added = $4, rows_disappeared = $5 WHERE run_id = $1",
            {summary.run_id, db::run_status_name(db::RunStatus::published), summary.rows, summary.added,
             summary.disappeared});
    tx.commit();
}

void drop_retired(db::Connection& db, const ReleaseTables& t) {
    try {
        db.exec("DROP TABLE epc." + t.retired_name);
    } catch (const Error& e) {
        // Typically a user's view still points at the old table; leave it rather than CASCADE.
        spdlog::warn("publish: kept the previous release as epc.{}: {}", t.retired_name, e.what());
    }
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

    const ReleaseTables t = release_tables(session.type(), run->run_id);
    db::Connection& db = session.db();
    build_release(session, t, run->run_id);
    const bool exists = db.exec("SELECT to_regclass($1) IS NOT NULL", {t.production}).boolean(0, 0);
    compare_with_production(db, t, exists, summary);
    swap_in(db, t, exists, summary);
    if (exists) drop_retired(db, t);

    summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    spdlog::info("publish: {} now holds run {}: {} certificates, {} new, {} gone since the previous release, in "
                 "{:.1f} s ({:.0f} rows/s)",
                 t.production, run->run_id, summary.rows, summary.added, summary.disappeared, summary.seconds,
                 summary.seconds > 0 ? static_cast<double>(summary.rows) / summary.seconds : 0.0);
    return summary;
}

}  // namespace epc
