// One importer process's hold on the database for one certificate type: the control connection,
// the schema, the type's locks, and the bookkeeping every stage shares (runs, which run owns
// staging). The app makes one and hands it to each stage; a lock taken is held until the session
// ends, and released explicitly then (see ~Session).
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "epc/common/types.hpp"
#include "epc/db/columns.hpp"
#include "epc/db/connection.hpp"
#include "epc/db/runs.hpp"

namespace epc::db {

struct StagingTables {
    std::string rows;     // epc.stage_<type>: the loaded fields, UNLOGGED, no indexes
    std::string rejects;  // epc.reject_<type>: rows that could not be loaded, with why and where
    // epc.stage_<type>_recommendations: every column of the recommendations files, UNLOGGED; only
    // while the run in staging loads them (--recommendations).
    std::string recommendations;
};
StagingTables staging_tables(CertType type);

// The archive a run loads, as its import_run row records it.
struct RunArchive {
    std::string path;
    std::string identity;  // fingerprint of the entries: the same archive, whatever its name
    std::uint64_t bytes = 0;
    Layout layout = Layout::legacy;
    std::size_t files = 0;        // certificates files
    std::string source = "file";  // current | legacy | file (--zip)
    std::string release_last_updated;
    std::string sha256;
};

// Where a load starts from: a new run, or an interrupted run of the same archive.
struct RunStart {
    long long run_id = 0;
    bool resumed = false;
    std::set<int> done_files;  // file_no of files whose ledger row committed
};

// The run whose rows are in staging.
struct StagingOwner {
    long long run_id = 0;
    RunStatus status = RunStatus::loading;
    long long rows_loaded = 0;
};

// What the last published import of a type came from, to tell whether a release is new.
struct ImportedRelease {
    long long run_id = 0;
    std::string source;        // current | legacy | file
    std::string last_updated;  // current service: lastUpdated
    std::uint64_t size = 0;    // bytes of the zip
};

// The latest release of a type published (or published and then reverted); nullopt when nothing was
// published yet or there is no epc schema at all. Only reads.
std::optional<ImportedRelease> last_published_release(Connection& db, CertType type);

class Session {
public:
    // Connects as "epc-import <type> <role>" (pg_stat_activity). The schema is not touched until
    // prepare_schema(): check-release only reads.
    Session(std::string conninfo, CertType type, const std::string& role);
    // Releases every lock taken, newest first, before the connection closes: a closed
    // connection's backend lets go of its locks only once it has exited, which can be after the
    // next stage or process (`load && publish`) asked for the same lock and was refused.
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    Connection& db() { return db_; }
    CertType type() const { return type_; }
    const StagingTables& staging() const { return staging_; }
    // Another connection to the same database, e.g. for a loader pipeline: "epc-import <type> <role>".
    Connection connect(const std::string& role) const;
    // Runs each list of statements on a connection of its own ("epc-import <type> <role>"), the
    // lists at once, each list in order, every statement with `params`; returns when all have
    // ended, rethrowing the first failure; otherwise the rows all the statements touched.
    // For bulk work on tables no reader sees yet: a statement runs in one backend, on one core.
    std::uint64_t exec_at_once(const std::vector<std::vector<std::string>>& lists, const Params& params,
                               const std::string& role) const;
    // How many connections a step of a stage may work on at once (--jobs): the comparison of a
    // release with production and the first release's build use two when allowed, else one.
    void set_jobs(unsigned jobs) { jobs_ = jobs > 0 ? jobs : 1; }
    unsigned jobs() const { return jobs_; }

    // Creates or upgrades the schema (once per session).
    void prepare_schema();
    // Takes this type's lock exclusively, unless this session holds it already; throws
    // Error(exit_locked) naming the holder.
    void lock();
    // For one shard of a split load: the type's lock shared, and the shard's own exclusively.
    void lock_shard(const Shard& shard);

    // Resumes the latest run of this type when it was interrupted while loading this same archive
    // and its staging rows are intact (for a shard: joins the run its sibling shards started);
    // otherwise starts a new run and rebuilds staging. Serialised between processes, so that of
    // shards starting together exactly one creates the run and the others join it. A shard never
    // replaces a run that sibling shards are still loading from another archive.
    // Staging is built for `columns` and, when given, `recommendations`; a run whose staging holds
    // other columns (or that did or did not load recommendations) is not resumed.
    RunStart begin_load(const RunArchive& archive, const std::optional<Shard>& shard, const ColumnSet& columns,
                        const std::optional<ColumnSet>& recommendations = std::nullopt);
    // The certificate columns staging holds: the one record of what the load kept, which the
    // duplicate check and publish (a stage of its own, maybe another process) read back.
    ColumnSet staging_columns();
    // The certificate columns a staging or production table has (none when it does not exist).
    ColumnSet columns_of(const std::string& table);
    // Every column of a table, bookkeeping included, in table order (none when it does not exist).
    std::vector<std::string> table_columns(const std::string& table);
    // Whether the run in staging loads recommendations: staging has their table.
    bool staging_has_recommendations();
    // Serialises the decisions of concurrent loads of this type until the transaction ends.
    void serialise_in_transaction();
    void mark_failed(long long run_id, const std::string& error);
    std::optional<StagingOwner> staging_owner();
    // db::last_published_release() of this session's type.
    std::optional<ImportedRelease> last_published_release() { return db::last_published_release(db_, type_); }

private:
    std::optional<RunStart> resume_load(const RunArchive& archive, const std::optional<Shard>& shard,
                                        const ColumnSet& columns, const std::optional<ColumnSet>& recommendations);
    bool staging_intact(long long run_id);
    void refuse_foreign_archive(long long run_id, const RunArchive& archive, const Shard& shard);
    long long start_run(const RunArchive& archive);
    void rebuild_staging(long long run_id, const ColumnSet& columns, const std::optional<ColumnSet>& recommendations);
    // Takes an advisory lock without waiting; remembers how to release it.
    bool try_lock(bool shared, int ns, int object);

    std::string conninfo_;
    CertType type_;
    StagingTables staging_;
    Connection db_;
    bool schema_ready_ = false;
    unsigned jobs_ = 2;
    bool type_locked_ = false;
    struct HeldLock {
        std::string function;  // what releases it: pg_advisory_unlock or pg_advisory_unlock_shared
        int ns;
        int object;
    };
    std::vector<HeldLock> held_;  // newest last
};

}  // namespace epc::db
