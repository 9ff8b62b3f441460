#include "epc/db/session.hpp"

#include <exception>
#include <numeric>
#include <thread>

#include <spdlog/spdlog.h>

#include "epc/db/columns.hpp"
#include "epc/db/locks.hpp"
#include "epc/db/schema.hpp"
#include "epc/db/transaction.hpp"

namespace epc::db {

namespace {

// Who holds an advisory lock, for the error message: an operator wants to find that process.
std::string lock_holder(Connection& db, int ns, int object) {
    Result holder = db.exec("SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.client_addr::text, 'local'), "
                            "       to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS TZ') "
                            "FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 AND l.objid = $2 LIMIT 1",
                            {ns, object});
    return holder.rows() > 0 ? " (PostgreSQL backend pid " + holder.text(0, 0) + ", '" + holder.text(0, 1) + "' from " +
                                   holder.text(0, 2) + ", since " + holder.text(0, 3) + ")"
                             : "";
}

}  // namespace

StagingTables staging_tables(CertType type) {
    std::string t(cert_type_sql(type));
    return {"epc.stage_" + t, "epc.reject_" + t, "epc.stage_" + t + "_recommendations"};
}

Session::Session(std::string conninfo, CertType type, const std::string& role)
    : conninfo_(std::move(conninfo)), type_(type), staging_(staging_tables(type)),
      db_(conninfo_, "epc-import " + std::string(cert_type_name(type)) + " " + role) {}

Session::~Session() {
    for (auto sql = held_.rbegin(); sql != held_.rend(); ++sql) {
        if (!db_.ok()) return;  // a lost connection released its locks with its backend
        try {
            db_.exec("SELECT " + sql->function + "($1, $2)", {sql->ns, sql->object});
        } catch (const std::exception& e) {
            spdlog::debug("releasing a lock: {}", e.what());
        }
    }
}

Connection Session::connect(const std::string& role) const {
    return Connection(conninfo_, "epc-import " + std::string(cert_type_name(type_)) + " " + role);
}

std::uint64_t Session::exec_at_once(const std::vector<std::vector<std::string>>& lists, const Params& params,
                                    const std::string& role) const {
    std::vector<std::exception_ptr> errors(lists.size());
    std::vector<std::uint64_t> touched(lists.size(), 0);
    std::vector<std::thread> threads;
    threads.reserve(lists.size());
    for (std::size_t i = 0; i < lists.size(); ++i)
        threads.emplace_back([&, i] {
            try {
                Connection db = connect(role);
                for (const std::string& sql : lists[i]) touched[i] += db.exec(sql, params).affected();
            } catch (...) {
                errors[i] = std::current_exception();
            }
        });
    for (std::thread& t : threads) t.join();
    for (const std::exception_ptr& e : errors)
        if (e) std::rethrow_exception(e);
    return std::accumulate(touched.begin(), touched.end(), std::uint64_t{0});
}

void Session::prepare_schema() {
    if (schema_ready_) return;
    migrate_schema(db_);
    schema_ready_ = true;
}

bool Session::try_lock(bool shared, int ns, int object) {
    const std::string kind = shared ? "_shared" : "";
    if (!db_.exec("SELECT pg_try_advisory_lock" + kind + "($1, $2)", {ns, object}).boolean(0, 0)) return false;
    held_.push_back({"pg_advisory_unlock" + kind, ns, object});
    return true;
}

void Session::lock() {
    if (type_locked_) return;
    if (!try_lock(false, kLockNamespace, lock_object(type_)))
        throw Error(exit_locked, "another epc-import run for " + std::string(cert_type_name(type_)) +
                                     " certificates holds the lock" +
                                     lock_holder(db_, kLockNamespace, lock_object(type_)) +
                                     "; try again when it has finished");
    type_locked_ = true;
}

void Session::lock_shard(const Shard& shard) {
    if (type_locked_) return;
    const std::string type(cert_type_name(type_));
    if (!try_lock(true, kLockNamespace, lock_object(type_)))
        throw Error(exit_locked, "an epc-import run for " + type + " certificates that is not a shard holds the lock" +
                                     lock_holder(db_, kLockNamespace, lock_object(type_)) +
                                     "; try again when it has finished");
    const int object = shard_lock_object(type_, shard.index);
    if (!try_lock(false, kShardLockNamespace, object))
        throw Error(exit_locked, "shard " + std::to_string(shard.index) + " of the " + type +
                                     " load is already being loaded by another process" +
                                     lock_holder(db_, kShardLockNamespace, object));
    type_locked_ = true;
}

void Session::serialise_in_transaction() {
    db_.exec("SELECT pg_advisory_xact_lock($1, $2)", {kLockNamespace, load_decision_lock(type_)});
}

RunStart Session::begin_load(const RunArchive& archive, const std::optional<Shard>& shard, const ColumnSet& columns,
                             const std::optional<ColumnSet>& recommendations) {
    prepare_schema();
    Transaction tx(db_);
    serialise_in_transaction();
    if (std::optional<RunStart> resumed = resume_load(archive, shard, columns, recommendations)) {
        tx.commit();
        return *resumed;
    }
    RunStart start;
    start.run_id = start_run(archive);
    rebuild_staging(start.run_id, columns, recommendations);
    tx.commit();
    return start;
}

// The latest run of this type, if this load can carry it on: same archive, staging still its own
// and intact. A shard also joins a load its siblings completed but nobody published yet: it is a
// late or retried array child with nothing left to do, not a new import.
std::optional<RunStart> Session::resume_load(const RunArchive& archive, const std::optional<Shard>& shard,
                                             const ColumnSet& columns,
                                             const std::optional<ColumnSet>& recommendations) {
    Result last = db_.exec(
        "SELECT r.run_id, r.status, r.archive_identity = $2, (o.run_id IS NOT NULL) "
        "FROM epc.import_run r LEFT JOIN epc.staging_owner o ON o.cert_type = r.cert_type AND o.run_id = r.run_id "
        "WHERE r.cert_type = $1 ORDER BY r.run_id DESC LIMIT 1",
        {cert_type_name(type_), archive.identity});
    if (last.rows() == 0) return std::nullopt;
    const long long run_id = last.integer(0, 0);
    const RunStatus status = parse_run_status(last.text(0, 1)).value_or(RunStatus::abandoned);
    const bool same_archive = last.boolean(0, 2);
    const bool joinable = status == RunStatus::loading || status == RunStatus::failed ||
                          (shard && status == RunStatus::loaded);
    if (shard && status == RunStatus::loading && !same_archive) refuse_foreign_archive(run_id, archive, *shard);
    if (!joinable || !same_archive || !last.boolean(0, 3)) return std::nullopt;
    if (staging_columns() != columns) {
        spdlog::warn("run {} loaded other columns than --columns asks for now; starting the load again", run_id);
        return std::nullopt;
    }
    const std::vector<std::string> recommendation_columns = recommendations ? staging_column_names(*recommendations)
                                                                            : std::vector<std::string>();
    if (table_columns(staging_.recommendations) != recommendation_columns) {
        spdlog::warn("run {} staged recommendations otherwise than this load asks (--recommendations or their "
                     "columns differ); starting the load again",
                     run_id);
        return std::nullopt;
    }
    if (!staging_intact(run_id)) {
        spdlog::warn("staging of run {} lost rows (server restart?); starting the load again", run_id);
        return std::nullopt;
    }
    RunStart start{run_id, true, {}};
    Result done = db_.exec("SELECT file_no FROM epc.import_file WHERE run_id = $1 ORDER BY file_no", {run_id});
    for (int i = 0; i < done.rows(); ++i) start.done_files.insert(static_cast<int>(done.integer(i, 0)));
    if (status != RunStatus::loaded)
        db_.exec("UPDATE epc.import_run SET status = $2, error = NULL WHERE run_id = $1",
                 {run_id, run_status_name(RunStatus::loading)});
    return start;
}

// UNLOGGED staging is emptied if the server crashed: a run resumes only if the rows the ledger says
// were committed are all still there, certificates and recommendations.
bool Session::staging_intact(long long run_id) {
    const std::string loaded =
        "SELECT coalesce(sum(rows_loaded), 0) FROM epc.import_file WHERE run_id = $1 AND dataset = ";
    std::string sql = "SELECT (SELECT count(*) FROM " + staging_.rows + ") = (" + loaded + "'certificates')";
    if (staging_has_recommendations())
        sql += " AND (SELECT count(*) FROM " + staging_.recommendations + ") = (" + loaded + "'recommendations')";
    return db_.exec(sql, {run_id}).boolean(0, 0);
}

// Other shards of this type hold their shard locks while they load: a shard that got another
// archive (the publisher released mid-job) must leave their rows alone.
void Session::refuse_foreign_archive(long long run_id, const RunArchive& archive, const Shard& shard) {
    Result siblings = db_.exec(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid() "
        "AND classid = $1 AND objid::bigint / $2 = $3",
        {kShardLockNamespace, kShardsPerType, lock_object(type_)});
    if (siblings.integer(0, 0) == 0) return;
    throw Error(exit_usage, "shard " + std::to_string(shard.index) + "/" + std::to_string(shard.count) +
                                " got a different archive (" + archive.identity.substr(0, 16) +
                                "...) from the one its sibling shards are loading in run " + std::to_string(run_id) +
                                " (did the publisher release mid-job?); every shard must load the same "
                                "archive: give them the same --zip, or run the split load again");
}

long long Session::start_run(const RunArchive& archive) {
    db_.exec("UPDATE epc.import_run SET status = $2, finished_at = now() WHERE cert_type = $1 AND status = $3",
             {cert_type_name(type_), run_status_name(RunStatus::abandoned), run_status_name(RunStatus::loading)});
    return db_
        .exec("INSERT INTO epc.import_run (cert_type, archive_path, archive_identity, archive_bytes, layout, status, "
              "files, source, release_last_updated, archive_sha256) "
              "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULLIF($9, ''), NULLIF($10, '')) RETURNING run_id",
              {cert_type_name(type_), archive.path, archive.identity, archive.bytes, layout_name(archive.layout),
               run_status_name(RunStatus::loading), archive.files, archive.source, archive.release_last_updated,
               archive.sha256})
        .integer(0, 0);
}

// A new run starts from empty staging: no indexes, UNLOGGED (a crash is covered by the row-count
// check in resume_load), rebuilt rather than truncated so column changes take effect.
void Session::rebuild_staging(long long run_id, const ColumnSet& columns,
                              const std::optional<ColumnSet>& recommendations) {
    db_.exec("DROP TABLE IF EXISTS " + staging_.rows + ", " + staging_.rejects + ", " + staging_.recommendations);
    db_.exec("CREATE UNLOGGED TABLE " + staging_.rows + " (" + staging_columns_ddl(columns) + R"(
) WITH (autovacuum_enabled = off))");  // the loader ANALYZEs it; autovacuum would only compete
    if (recommendations)
        db_.exec("CREATE UNLOGGED TABLE " + staging_.recommendations + " (" + staging_columns_ddl(*recommendations) +
                 "\n) WITH (autovacuum_enabled = off)");
    db_.exec("CREATE TABLE " + staging_.rejects + R"( (
    file_no   int NOT NULL,
    file_name text NOT NULL,
    line_no   bigint NOT NULL,
    reason    text NOT NULL,   -- field_count | missing_key | missing_date | bad_date | duplicate_key
    detail    text,
    raw       text             -- the record as in the file (invalid UTF-8 replaced)
))");
    db_.exec("INSERT INTO epc.staging_owner (cert_type, run_id) VALUES ($1, $2) "
             "ON CONFLICT (cert_type) DO UPDATE SET run_id = EXCLUDED.run_id",
             {cert_type_name(type_), run_id});
}

ColumnSet Session::staging_columns() { return columns_of(staging_.rows); }

ColumnSet Session::columns_of(const std::string& table) { return ColumnSet::from_table(table_columns(table)); }

std::vector<std::string> Session::table_columns(const std::string& table) {
    Result r = db_.exec("SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 "
                        "AND NOT attisdropped ORDER BY attnum",
                        {table});
    std::vector<std::string> names;
    names.reserve(static_cast<std::size_t>(r.rows()));
    for (int i = 0; i < r.rows(); ++i) names.push_back(r.text(i, 0));
    return names;
}

bool Session::staging_has_recommendations() { return db_.has_table(staging_.recommendations); }

void Session::mark_failed(long long run_id, const std::string& error) {
    db_.exec("UPDATE epc.import_run SET status = $2, finished_at = now(), error = $3 WHERE run_id = $1",
             {run_id, run_status_name(RunStatus::failed), error});
}

std::optional<StagingOwner> Session::staging_owner() {
    Result owner = db_.exec("SELECT r.run_id, r.status, r.rows_loaded FROM epc.staging_owner o "
                            "JOIN epc.import_run r USING (run_id) WHERE o.cert_type = $1",
                            {cert_type_name(type_)});
    if (owner.rows() == 0) return std::nullopt;
    return StagingOwner{owner.integer(0, 0), parse_run_status(owner.text(0, 1)).value_or(RunStatus::abandoned),
                        owner.integer(0, 2)};
}

std::optional<ImportedRelease> last_published_release(Connection& db, CertType type) {
    if (!db.exec("SELECT to_regclass('epc.import_run') IS NOT NULL").boolean(0, 0)) return std::nullopt;
    // A release published and then reverted counts as imported: an operator reverted it as bad, and
    // a scheduled run must not publish it again (--force does).
    Result r = db.exec(
        "SELECT run_id, coalesce(source, 'file'), coalesce(release_last_updated, ''), "
        "coalesce(archive_bytes, 0) FROM epc.import_run WHERE cert_type = $1 AND status IN ($2, $3) "
        "ORDER BY run_id DESC LIMIT 1",
        {cert_type_name(type), run_status_name(RunStatus::published), run_status_name(RunStatus::reverted)});
    if (r.rows() == 0) return std::nullopt;
    return ImportedRelease{r.integer(0, 0), r.text(0, 1), r.text(0, 2), static_cast<std::uint64_t>(r.integer(0, 3))};
}

}  // namespace epc::db
