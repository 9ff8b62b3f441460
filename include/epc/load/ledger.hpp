// Bookkeeping in PostgreSQL: the epc schema, one import_run row per run, one import_file ledger
// row per loaded file (committed with that file's rows), and the per-type lock that stops two
// runs of one certificate type from overlapping.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "epc/common/types.hpp"
#include "epc/extract/archive.hpp"
#include "epc/load/pg.hpp"

namespace epc {

// Advisory lock keys: one namespace for epc-import, one object per certificate type. A run holds
// its type's lock exclusively; the shards of a split load hold it shared (so they run together but
// never beside an ordinary run) plus an exclusive lock of their own shard in a second namespace.
constexpr int kLockNamespace = 0x45504331;        // "EPC1"
constexpr int kShardLockNamespace = 0x45504332;   // "EPC2"
inline int lock_object(CertType type) { return static_cast<int>(type) + 1; }
constexpr int kShardsPerType = 100000;  // shard lock objects of a type: lock_object(type) * this + index
inline int shard_lock_object(CertType type, int index) { return lock_object(type) * kShardsPerType + index; }

struct StagingTables {
    std::string rows;     // epc.stage_<type>: the loaded fields, UNLOGGED, no indexes
    std::string rejects;  // epc.reject_<type>: rows that could not be loaded, with why and where
};
StagingTables staging_tables(CertType type);

// Where a load starts from: a new run, or an interrupted run of the same archive.
struct RunStart {
    long long run_id = 0;
    bool resumed = false;
    std::set<int> done_files;  // file_no of files whose ledger row committed
};

class Ledger {
public:
    // `control` stays open for the whole run: it holds the session-level advisory lock.
    Ledger(pg::Connection& control, CertType type);
    // Releases the locks this ledger took, explicitly: a closed connection's backend lets go of
    // its locks only once it has exited, which can be after the next stage (or the next process,
    // `load && publish`) asked for the same lock and was refused.
    ~Ledger();
    Ledger(const Ledger&) = delete;
    Ledger& operator=(const Ledger&) = delete;

    // Creates the schema and bookkeeping tables if missing (safe to run concurrently).
    void ensure_schema();
    // Takes this type's lock or throws Error(exit_locked) naming the holder.
    void lock();
    // For one shard of a split load: the type's lock shared, and the shard's own exclusively.
    void lock_shard(const Shard& shard);
    // Resumes the latest run of this type when it was interrupted while loading this same archive
    // and its staging rows are intact (for a shard: joins the run its sibling shards started);
    // otherwise starts a new run and rebuilds staging. Serialised between processes, so that of
    // shards starting together exactly one creates the run and the others join it.
    // A shard never replaces a run that sibling shards are still loading from another archive.
    RunStart begin_load(const ArchiveInfo& archive, const std::optional<Shard>& shard = std::nullopt);
    // Serialises the decisions of concurrent loads of this type until the transaction ends.
    void serialise_in_transaction();
    void mark_failed(long long run_id, const std::string& error);

private:
    pg::Connection& db_;
    CertType type_;
    StagingTables tables_;
    std::vector<std::string> unlock_sql_;  // what releases each lock taken, newest last
};

}  // namespace epc
