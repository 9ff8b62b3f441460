#include "epc/publish/changes.hpp"

#include <malloc.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "epc/db/columns.hpp"
#include "epc/db/copy.hpp"
#include "epc/db/runs.hpp"
#include "epc/db/transaction.hpp"
#include "epc/publish/publish.hpp"

namespace epc {

namespace {

std::string changes_table(CertType type) { return "epc.changes_" + std::string(cert_type_sql(type)); }
std::string was_table(CertType type) { return changes_table(type) + "_was"; }

// The run production holds now: what the changes were found against.
long long production_run(db::Connection& db, CertType type) {
    return db
        .exec("SELECT coalesce(max(run_id), 0) FROM epc.import_run WHERE cert_type = $1 AND status = $2",
              {cert_type_name(type), db::run_status_name(db::RunStatus::published)})
        .integer(0, 0);
}

// The rows staging held when the changes of this run against this production state were found,
// if they were (by an importer that counted them and kept where production's rows were).
std::optional<std::uint64_t> found_already(db::Connection& db, CertType type, long long run_id, long long base_run,
                                           const ReleaseChanges& changes) {
    db::Result found = db.exec(
        "SELECT staged_rows FROM epc.change_set WHERE cert_type = $1 AND run_id = $2 AND base_run = $3 AND "
        "staged_rows IS NOT NULL AND to_regclass($5) IS NOT NULL AND EXISTS (SELECT 1 FROM pg_attribute WHERE "
        "attrelid = to_regclass($4) AND attname = $6 AND NOT attisdropped)",
        {cert_type_name(type), run_id, base_run, changes.table, changes.was, std::string(kProductionTid)});
    if (found.rows() == 0) return std::nullopt;
    return static_cast<std::uint64_t>(found.integer(0, 0));
}

// Rows of a table streamed (binary COPY) in two halves at once, split by block (TID Range Scans):
// one on `db`, the other on a connection of its own that shares db's snapshot. A stream is one
// backend, one core: production's 28 M hashes took 9.7 s as one stream, 5.9 s as two halves.
// (Staging's rows, read for the first time since the load, stream no faster so: that first read
// writes every page again, with its rows' commit hint bits.) Before PostgreSQL 14 (no TID Range
// Scan, so each half would read the whole table), or with --jobs 1, in one stream.
class TwoHalves {
public:
    // `db` is in a REPEATABLE READ transaction that has run a statement (its snapshot is taken).
    TwoHalves(db::Session& session, db::Connection& db) : db_(db) {
        if (session.jobs() >= 2 &&
            db.exec("SELECT current_setting('server_version_num')::int >= 140000").boolean(0, 0)) {
            const std::string snapshot = db.exec("SELECT pg_export_snapshot()").text(0, 0);
            helper_.emplace(session.connect("changes"));
            helper_->exec("BEGIN ISOLATION LEVEL REPEATABLE READ");
            helper_->exec("SET TRANSACTION SNAPSHOT '" + snapshot + "'");
        }
    }

    // `columns` of every row of `table` to `row(half, fields)`, the halves 0 and 1 from two
    // threads at once.
    template <class Row>
    void stream(const std::string& columns, const std::string& table, Row&& row) {
        const std::string select = "SELECT " + columns + " FROM " + table;
        if (!helper_) {
            copy_out(db_, select, 0, row);
            return;
        }
        const std::string middle =
            "'(" +
            std::to_string(
                db_.exec("SELECT pg_relation_size($1::regclass) / current_setting('block_size')::int / 2", {table})
                    .integer(0, 0)) +
            ",0)'::tid";
        std::exception_ptr failed;
        std::thread second([&] {
            try {
                copy_out(*helper_, select + " WHERE ctid >= " + middle, 1, row);
            } catch (...) {
                failed = std::current_exception();
            }
        });
        try {
            copy_out(db_, select + " WHERE ctid < " + middle, 0, row);
        } catch (...) {
            second.join();
            throw;
        }
        second.join();
        if (failed) std::rethrow_exception(failed);
    }

private:
    template <class Row>
    static void copy_out(db::Connection& db, const std::string& query, int half, Row& row) {
        db::CopyOut rows(db, query);
        for (std::vector<std::string_view> f; rows.next(f);) row(half, f);
    }

    db::Connection& db_;
    std::optional<db::Connection> helper_;
};

// Production's row hashes, sorted, found by a directory of their top bits, each with a bit for
// "staging has it". 8 bytes a certificate (224 MB for 28 M) and nothing per staged row: the
// staged rows stream past it, from two threads at once.
class ProductionHashes {
public:
    ProductionHashes(db::Connection& db, TwoHalves& halves, const std::string& production) {
        // What the load freed stays with the process otherwise (~100 MB at 28 M rows, in the
        // arenas of its pipelines' threads): the peak would be that plus this array.
        malloc_trim(0);
        // Reserved up front from the planner's count (production is analysed by every publish, and
        // changes only then): a vector doubling its way to 28 M would pass through twice the
        // memory, as would shrinking a generous reserve to fit.
        const long long estimate =
            db.exec("SELECT reltuples::bigint FROM pg_class WHERE oid = $1::regclass", {production}).integer(0, 0);
        hashes_.reserve(static_cast<std::size_t>(std::max(0LL, estimate) + estimate / 1000 + 1024));
        read(halves, production);
        std::sort(hashes_.begin(), hashes_.end());
        directory_.assign(kBuckets + 1, 0);
        std::size_t at = 0;
        for (std::size_t b = 0; b <= kBuckets; ++b) {
            while (at < hashes_.size() && bucket(hashes_[at]) < b) ++at;
            directory_[b] = static_cast<std::uint32_t>(at);
        }
        seen_ = std::make_unique<std::atomic<std::uint64_t>[]>((hashes_.size() + 63) / 64);
    }

    std::size_t size() const { return hashes_.size(); }
    // Production's rows without a hash (published before hashes existed): never unchanged.
    std::uint64_t unhashed() const { return unhashed_; }

    // Marks `hash` as staged; false when production has no row with it (a new or changed row).
    bool mark_staged(std::uint64_t hash) {
        const std::uint64_t b = bucket(hash);
        const auto first = hashes_.begin() + directory_[b], last = hashes_.begin() + directory_[b + 1];
        const auto it = std::lower_bound(first, last, hash);
        if (it == last || *it != hash) return false;
        const auto i = static_cast<std::size_t>(it - hashes_.begin());
        seen_[i / 64].fetch_or(1ULL << (i % 64), std::memory_order_relaxed);
        return true;
    }

    // The hashes no staged row has: production's changed and gone rows, as SQL's bigints, a line each.
    std::string unstaged() const {
        std::string lines;
        for (std::size_t i = 0; i < hashes_.size(); ++i)
            if (!(seen_[i / 64].load(std::memory_order_relaxed) >> (i % 64) & 1))
                lines.append(std::to_string(static_cast<std::int64_t>(hashes_[i]))).push_back('\n');
        return lines;
    }

private:
    static constexpr int kBucketBits = 20;  // ~27 hashes a bucket at 28 M: a few cache lines to search
    static constexpr std::size_t kBuckets = std::size_t{1} << kBucketBits;
    static std::uint64_t bucket(std::uint64_t hash) { return hash >> (64 - kBucketBits); }

    // Each half gathers a block of hashes, then appends it under the lock.
    void read(TwoHalves& halves, const std::string& production) {
        std::mutex appending;
        const auto append = [&](const std::vector<std::uint64_t>& block) {
            const std::lock_guard<std::mutex> lock(appending);
            hashes_.insert(hashes_.end(), block.begin(), block.end());
        };
        constexpr std::size_t kBlock = 1 << 16;
        std::array<std::vector<std::uint64_t>, 2> blocks;
        std::array<std::uint64_t, 2> unhashed{};
        halves.stream("row_hash", production, [&](int half, const std::vector<std::string_view>& f) {
            const auto h = static_cast<std::size_t>(half);
            if (f[0].data()) blocks[h].push_back(static_cast<std::uint64_t>(db::CopyOut::int8(f[0])));
            else ++unhashed[h];
            if (blocks[h].size() == kBlock) {
                append(blocks[h]);
                blocks[h].clear();
            }
        });
        for (const std::vector<std::uint64_t>& block : blocks) append(block);
        unhashed_ = unhashed[0] + unhashed[1];
    }

    std::vector<std::uint64_t> hashes_;
    std::vector<std::uint32_t> directory_;  // bucket b: hashes_[directory_[b], directory_[b + 1])
    std::unique_ptr<std::atomic<std::uint64_t>[]> seen_;
    std::uint64_t unhashed_ = 0;
};

// What differs between staging and production. The row hash covers every loaded value, the key
// too, so a row whose hash production has is unchanged; the rest are few. The comparison of the
// hashes runs here, as the two tables stream past (a full join of 28 M rows with 28 M in
// PostgreSQL spilled its hash table to disk and took a minute); only the rows that differ are
// then looked up, by their ctid in staging and by their hash in production, whose rows are kept as
// they are (`changes.was`): publish's undo, without looking each up again by key.
//
// Two rows of different values could share a hash: with 64 bits, at 28 M rows and a few percent
// changed, about once in a million years of monthly releases.
// Returns the number of staged rows.
std::uint64_t find_changes(db::Session& session, const ReleaseChanges& changes, const std::string& production) {
    db::Connection& db = session.db();
    // One snapshot for the whole comparison: the ctids and hashes read stay the rows looked up.
    db.exec("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ");
    const auto started = std::chrono::steady_clock::now();
    TwoHalves halves(session, db);
    ProductionHashes known(db, halves, production);
    const auto read = std::chrono::steady_clock::now();

    // Staging's rows production does not have, by half: their ctids, as elements of a tid[].
    std::array<std::string, 2> differing;
    std::array<std::uint64_t, 2> counted{};
    halves.stream("ctid, row_hash", session.staging().rows, [&](int half, const std::vector<std::string_view>& f) {
        const auto h = static_cast<std::size_t>(half);
        ++counted[h];
        if (known.mark_staged(static_cast<std::uint64_t>(db::CopyOut::int8(f[1])))) return;
        differing[h].append(differing[h].empty() ? "\"" : ",\"").append(db::CopyOut::tid(f[0])).push_back('"');
    });
    const std::uint64_t staged = counted[0] + counted[1];
    std::string staged_tids = "{" + differing[0];
    if (!differing[0].empty() && !differing[1].empty()) staged_tids += ',';
    staged_tids.append(differing[1]).push_back('}');
    spdlog::info("changes: {} published row hashes read and sorted in {:.1f} s, {} staged rows compared with them "
                 "in {:.1f} s",
                 known.size(), std::chrono::duration<double>(read - started).count(), staged,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - read).count());

    // The hashes no staged row has, in a table of the transaction's own: a regular one, since a
    // temporary table keeps the statement below from parallel workers, and without production's
    // rows that have no hash the statement is a semi join, which the planner estimates right and
    // runs in parallel (a filter, estimated to keep half of production, it ran serially: 28 M rows,
    // 11.8 s).
    const std::string unstaged = changes.table + "_unstaged";
    db.exec("CREATE UNLOGGED TABLE " + unstaged + " (row_hash bigint)");
    {
        db::CopyIn copy(db, unstaged, "row_hash", db::CopyFormat::text);
        copy.put(known.unstaged());
        copy.finish();
    }
    db.exec("ANALYZE " + unstaged);  // small: production is read once, against its hash table
    // The staged rows that differ are a few percent, read by their ctids: priced as random reads
    // of a spinning disk (4), the planner read all of staging instead (28 M rows: 3.8 s against 1.4).
    db.exec("SET LOCAL random_page_cost = 1.1");
    db.exec("SET LOCAL work_mem = '256MB'");
    db.exec("SET LOCAL jit = off");
    db.exec("DROP TABLE IF EXISTS " + changes.was);
    const std::string tid(kProductionTid);
    db.exec("CREATE TABLE " + changes.was + " AS SELECT p.ctid AS " + tid + ", * FROM " + production +
            " p WHERE p.row_hash IN (SELECT row_hash FROM " + unstaged + ")" +
            (known.unhashed() > 0 ? " OR p.row_hash IS NULL" : ""));
    db.exec("DROP TABLE " + unstaged);

    const ColumnSet columns = session.staging_columns();
    std::string list;  // staging's, the key taken from production for a gone row
    for (const Column& c : columns.columns())
        list += (list.empty() ? "" : ", ") +
                (c.name == kKeyColumn ? "coalesce(s.cert_key, p.cert_key) AS cert_key" : "s." + std::string(c.name));
    for (const BookkeepingColumn& c : bookkeeping_columns()) list += ", s." + std::string(c.name);
    list += ", p." + tid;
    db.exec("DROP TABLE IF EXISTS " + changes.table);
    db.exec("CREATE TABLE " + changes.table + " AS SELECT " + list +
                ", CASE WHEN p.cert_key IS NULL THEN 'new' WHEN s.cert_key IS NULL THEN 'gone' ELSE 'changed' END "
                "AS change FROM (SELECT * FROM " +
                session.staging().rows + " WHERE ctid = ANY($1::tid[])) s FULL JOIN " + changes.was +
                " p ON p.cert_key = s.cert_key",
            {staged_tids});
    db.exec("CREATE INDEX ON " + changes.table + " (cert_key)");
    db.exec("ANALYZE " + changes.table + ", " + changes.was);
    return staged;
}

}  // namespace

ReleaseChanges release_changes(db::Session& session, long long run_id) {
    db::Connection& db = session.db();
    const CertType type = session.type();
    ReleaseChanges changes{false, changes_table(type), was_table(type)};
    const std::string production = production_table(type);
    if (!db.has_table(production)) {
        changes.first_release = true;
        return changes;
    }
    const long long base_run = production_run(db, type);
    if (const std::optional<std::uint64_t> staged = found_already(db, type, run_id, base_run, changes)) {
        changes.staged_rows = *staged;
        return changes;
    }

    const auto started = std::chrono::steady_clock::now();
    db::Transaction tx(db);
    changes.staged_rows = find_changes(session, changes, production);
    db.exec("INSERT INTO epc.change_set (cert_type, run_id, base_run, staged_rows) VALUES ($1, $2, $3, $4) ON "
            "CONFLICT (cert_type) DO UPDATE SET run_id = EXCLUDED.run_id, base_run = EXCLUDED.base_run, "
            "staged_rows = EXCLUDED.staged_rows, found_at = now()",
            {cert_type_name(type), run_id, base_run, changes.staged_rows});
    db::Result counts = db.exec("SELECT count(*) FILTER (WHERE change = 'new'), count(*) FILTER (WHERE change = "
                                "'changed'), count(*) FILTER (WHERE change = 'gone') FROM " +
                                changes.table);
    tx.commit();
    spdlog::info("changes: run {} against {} (run {}): {} new, {} changed, {} gone certificates, found in {:.1f} s",
                 run_id, production, base_run, counts.text(0, 0), counts.text(0, 1), counts.text(0, 2),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    return changes;
}

ColumnSet was_columns(db::Session& session, const ReleaseChanges& changes) {
    std::vector<std::string> names = session.table_columns(changes.was);
    names.erase(std::remove(names.begin(), names.end(), kProductionTid), names.end());
    return ColumnSet::from_table(names);
}

void forget_changes(db::Connection& db, CertType type) {
    db.exec("DROP TABLE IF EXISTS " + changes_table(type) + ", " + was_table(type));
    db.exec("DELETE FROM epc.change_set WHERE cert_type = $1", {cert_type_name(type)});
}

}  // namespace epc
