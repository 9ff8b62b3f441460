// The load stage: stream every certificates CSV of a validated archive into the staging table
// through N parallel pipelines (parse thread → bounded queue → COPY thread with its own connection),
// one transaction per file together with its ledger row, then move duplicate keys to the rejects.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "epc/db/columns.hpp"
#include "epc/db/session.hpp"
#include "epc/extract/archive.hpp"

namespace epc {

struct LoadOptions {
    unsigned jobs = 2;                               // parallel pipelines, each with its own connection
    std::optional<std::uint64_t> max_rejects;        // fail the run when more rows than this are rejected
    bool backslash_escapes = true;                   // \" inside quotes is a quote (pre-2026-04-29 files)
    const std::atomic<bool>* interrupted = nullptr;  // set by SIGINT/SIGTERM: stop cleanly
    std::optional<Shard> shard;                      // load only this share of the files (--shard)
    ColumnChoice columns;                            // --columns: which certificate columns staging keeps
    bool recommendations = false;                    // --recommendations: also every recommendations file
};

// invalid_* count values in rows that passed the per-row checks, duplicate-key rejects included
// (duplicates are found after parsing): text replaced for invalid UTF-8, and floor areas or UPRNs
// that were not numbers and were loaded as NULL.
struct FileStats {
    int file_no = 0;
    std::string name;
    Dataset dataset = Dataset::certificates;
    std::uint64_t rows_read = 0;
    std::uint64_t rows_loaded = 0;
    std::uint64_t rows_rejected = 0;
    std::uint64_t invalid_utf8_values = 0;
    std::uint64_t invalid_values = 0;
    std::map<std::string, std::uint64_t> invalid_by_column;  // invalid_values by column (those with any)
    bool from_earlier_attempt = false;                       // loaded by an interrupted run that this one resumed
};

// What a set of files loaded (this process's share of them: a shard's): each file's ledger row
// and their totals.
struct LoadedFiles {
    std::vector<FileStats> files;  // in archive order
    std::uint64_t rows_read = 0;
    std::uint64_t rows_loaded = 0;
    std::uint64_t rows_rejected = 0;
    std::uint64_t invalid_utf8_values = 0;
    std::uint64_t invalid_values = 0;
    std::map<std::string, std::uint64_t> invalid_by_column;
    std::map<std::string, std::uint64_t> rejects_by_reason;
    std::vector<std::string> columns;  // staging's columns for them, in order

    void add(FileStats&& file);  // a file and its counts
};

// The recommendations files of a load with --recommendations.
struct RecommendationsLoad : LoadedFiles {
    bool loaded = false;  // the run loads them
};

// The certificates files' counts, and the run's.
struct LoadSummary : LoadedFiles {
    long long run_id = 0;
    bool resumed = false;
    // A shard's summary covers its own files; `complete` says whether the whole load is done
    // (always, unsharded; for a shard, when it was the last to finish and completed the load).
    bool complete = true;
    std::size_t run_files_loaded = 0;          // files of the run in the ledger, all shards together
    std::vector<std::string> unknown_columns;  // header names the catalogue lacks (header drift)
    bool unknown_columns_loaded = false;       // as text columns: with --columns all
    RecommendationsLoad recommendations;
    double seconds = 0;
};

// Resolves options.columns against the archive's headers (a named column no file has: exit_usage,
// before anything is written), then loads into the session's staging, taking the session's lock for the type (or, with
// a shard, its shard lock) unless it holds it already. Throws Error: exit_locked (another run), exit_transient
// (database), exit_invalid_archive (corrupt entry found while inflating), exit_too_many_rejects, exit_internal.
LoadSummary load_archive(db::Session& session, const ArchiveInfo& archive, const LoadOptions& options);

}  // namespace epc
