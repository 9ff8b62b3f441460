#include "epc/load/loader.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <set>
#include <thread>

#include <spdlog/spdlog.h>

#include "epc/db/columns.hpp"
#include "epc/load/ledger.hpp"
#include "epc/load/pg.hpp"
#include "epc/transform/csv.hpp"
#include "epc/transform/fields.hpp"

namespace epc {

namespace {

// COPY data is handed over in chunks of about this size. The chunk size made no measurable
// difference between 8 KiB and 10 MiB (design.md); 1 MiB keeps the queue's memory small.
constexpr std::size_t kChunkBytes = 1 << 20;
// Rejects are rare; flush them in smaller chunks so a file full of bad rows stays flat in memory.
constexpr std::size_t kRejectChunkBytes = 256 << 10;
// Chunks waiting per pipeline: enough to ride out a slow COPY round trip, small enough that a
// full queue stops the parser (back-pressure) long before memory matters.
constexpr std::size_t kQueueChunks = 8;

struct Chunk {
    enum Kind { begin_file, rows, rejects, end_file } kind;
    std::string data;
    FileStats stats;  // end_file
};

// A bounded FIFO between one parser and one COPY writer. close() wakes both sides.
class ChunkQueue {
public:
    bool push(Chunk&& chunk) {
        std::unique_lock<std::mutex> lock(mutex_);
        not_full_.wait(lock, [&] { return closed_ || items_.size() < kQueueChunks; });
        if (closed_) return false;
        items_.push_back(std::move(chunk));
        not_empty_.notify_one();
        return true;
    }
    bool pop(Chunk& chunk) {
        std::unique_lock<std::mutex> lock(mutex_);
        not_empty_.wait(lock, [&] { return closed_ || !items_.empty(); });
        if (items_.empty()) return false;
        chunk = std::move(items_.front());
        items_.pop_front();
        not_full_.notify_one();
        return true;
    }
    void close() {
        std::lock_guard<std::mutex> lock(mutex_);
        closed_ = true;
        not_full_.notify_all();
        not_empty_.notify_all();
    }

private:
    std::mutex mutex_;
    std::condition_variable not_full_, not_empty_;
    std::deque<Chunk> items_;
    bool closed_ = false;
};

// Finds candidate duplicate keys while parsing, so the exact check in PostgreSQL only has to look
// at those instead of hashing every key (a 2 M-group hash aggregate took 2.5-5 s per 2 M rows here).
// A Bloom filter whose bits for a key all sit in one 64-bit word: one atomic fetch_or both tests
// and sets, so of two pipelines inserting the same key at once exactly one sees it as present.
// Its size is fixed up front, so memory stays flat; false positives only cost a little SQL.
class KeySieve {
public:
    explicit KeySieve(std::uint64_t expected_keys) {
        // ~16 bits per key, between 1 MiB and 64 MiB.
        std::uint64_t words = std::clamp<std::uint64_t>(expected_keys / 4, 1 << 17, 1 << 23);
        words_ = std::vector<std::atomic<std::uint64_t>>(words);
    }
    // Records the key; true when it may have been seen before.
    bool seen(std::string_view key) {
        std::uint64_t h = std::hash<std::string_view>{}(key);
        std::uint64_t bits = 0;
        std::uint64_t g = h * 0x9E3779B97F4A7C15ull;
        for (int i = 0; i < 6; ++i, g >>= 6) bits |= 1ull << (g & 63);
        std::uint64_t old = words_[h % words_.size()].fetch_or(bits, std::memory_order_relaxed);
        return (old & bits) == bits;
    }
    void suspect(std::string_view key) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (suspects_.size() < kMaxSuspects) suspects_.emplace_back(key);
        else overflow_ = true;
    }
    // Past this many suspects the filter is too full to help: check every key instead.
    static constexpr std::size_t kMaxSuspects = 1 << 20;
    std::vector<std::string> suspects_;
    bool overflow_ = false;

private:
    std::vector<std::atomic<std::uint64_t>> words_;
    std::mutex mutex_;
};

// State shared by all pipelines of one load.
class LoadJob {
public:
    LoadJob(const ArchiveInfo& archive, const LoadOptions& options, long long run_id, std::vector<const CertFile*> todo,
            std::uint64_t rejects_so_far, std::uint64_t expected_keys)
        : archive_(archive), options_(options), run_id_(run_id), todo_(std::move(todo)),
          tables_(staging_tables(options.type)), rejects_(rejects_so_far), sieve_(expected_keys) {}

    const CertFile* next_file() {
        std::lock_guard<std::mutex> lock(mutex_);
        if (stopping() || next_ >= todo_.size()) return nullptr;
        return todo_[next_++];
    }
    bool stopping() const {
        return failed_.load() || (options_.interrupted && options_.interrupted->load());
    }
    void fail(std::exception_ptr error) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = error;
        failed_ = true;
        done_cv_.notify_all();
    }
    void count_reject() {
        std::uint64_t total = ++rejects_;
        if (options_.max_rejects && total > *options_.max_rejects && !failed_.load())
            fail(std::make_exception_ptr(Error(
                exit_too_many_rejects, "more than " + std::to_string(*options_.max_rejects) +
                                           " rows rejected (--max-rejects); see " + tables_.rejects)));
    }
    void file_done(const FileStats& stats) {
        std::lock_guard<std::mutex> lock(mutex_);
        done_.push_back(stats);
        spdlog::debug("loaded {}: {} rows read, {} loaded, {} rejected", stats.name, stats.rows_read,
                      stats.rows_loaded, stats.rows_rejected);
    }
    void worker_finished() {
        std::lock_guard<std::mutex> lock(mutex_);
        ++workers_finished_;
        done_cv_.notify_all();
    }
    // Waits up to `period` for all workers to finish; true when they have.
    bool wait_workers(unsigned workers, std::chrono::milliseconds period) {
        std::unique_lock<std::mutex> lock(mutex_);
        return done_cv_.wait_for(lock, period, [&] { return workers_finished_ == workers; });
    }
    std::size_t files_done() {
        std::lock_guard<std::mutex> lock(mutex_);
        return done_.size();
    }

    const ArchiveInfo& archive_;
    const LoadOptions& options_;
    const long long run_id_;
    std::vector<const CertFile*> todo_;
    const StagingTables tables_;
    std::atomic<std::uint64_t> rows_read_{0};
    std::atomic<std::uint64_t> rejects_;
    KeySieve sieve_;
    std::vector<FileStats> done_;
    std::exception_ptr error_;

private:
    std::mutex mutex_;
    std::condition_variable done_cv_;
    std::size_t next_ = 0;
    std::atomic<bool> failed_{false};
    unsigned workers_finished_ = 0;
};

// Parses files into COPY chunks; runs on its own thread (fccp adds one more for inflating).
void parse_files(LoadJob& job, zip_t* zip, ChunkQueue& queue) {
    std::vector<Field> header;
    Record record;
    while (const CertFile* file = job.next_file()) {
        if (!queue.push(Chunk{Chunk::begin_file, {}, {}})) return;
        CsvReader reader(file->name, std::make_unique<EntrySource>(zip, *file), job.options_.backslash_escapes);
        if (!reader.next(record)) throw Error(exit_invalid_archive, file->name + " has no header line");
        FieldMap map = map_header(record.fields, job.options_.type);
        if (!map.missing_required.empty())
            throw Error(exit_invalid_archive, file->name + ": header has no " + map.missing_required.front() + " column");

        FileStats stats;
        stats.file_no = file->file_no;
        stats.name = file->name;
        RowCounters counters;
        std::string rows, rejects;
        rows.reserve(kChunkBytes + (64 << 10));
        std::uint64_t since_check = 0;
        while (reader.next(record)) {
            ++stats.rows_read;
            if (auto rejection = format_row(map, record.fields, file->file_no, record.line, rows, counters)) {
                ++stats.rows_rejected;
                format_reject(file->file_no, file->name, record.line, *rejection, record.raw, rejects);
                job.count_reject();
                if (rejects.size() >= kRejectChunkBytes) {
                    if (!queue.push(Chunk{Chunk::rejects, std::move(rejects), {}})) return;
                    rejects.clear();
                }
            } else {
                ++stats.rows_loaded;
                std::string_view key = trim(record.fields[static_cast<std::size_t>(map.key)]);
                // A key with non-ASCII bytes may equal another once invalid UTF-8 is replaced: always check it.
                bool ascii = std::all_of(key.begin(), key.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
                if (job.sieve_.seen(key) || !ascii) job.sieve_.suspect(key);
            }
            if (rows.size() >= kChunkBytes) {
                if (!queue.push(Chunk{Chunk::rows, std::move(rows), {}})) return;
                rows = std::string();
                rows.reserve(kChunkBytes + (64 << 10));
            }
            if (++since_check == 4096) {
                job.rows_read_ += since_check;
                since_check = 0;
                if (job.stopping()) return;
            }
        }
        job.rows_read_ += since_check;
        if (!rows.empty() && !queue.push(Chunk{Chunk::rows, std::move(rows), {}})) return;
        if (!rejects.empty() && !queue.push(Chunk{Chunk::rejects, std::move(rejects), {}})) return;
        stats.invalid_utf8_values = counters.invalid_utf8_values;
        stats.invalid_values = counters.invalid_values;
        if (!queue.push(Chunk{Chunk::end_file, {}, stats})) return;
    }
}

// Writes one pipeline's chunks with COPY: one transaction per file, committed with its ledger row,
// so a file is either entirely in staging and the ledger, or not at all.
void write_chunks(LoadJob& job, pg::Connection& db, ChunkQueue& queue) {
    enum class Target { none, rows, rejects } target = Target::none;
    bool in_transaction = false;
    const std::string copy_rows =
        "COPY " + job.tables_.rows + " (" + staging_column_list() + ") FROM STDIN (FORMAT binary)";
    const std::string copy_rejects =
        "COPY " + job.tables_.rejects + " (file_no, file_name, line_no, reason, detail, raw) FROM STDIN";
    auto end_copy = [&] {
        if (target == Target::rows) db.copy_put(kCopyBinaryTrailer.data(), kCopyBinaryTrailer.size());
        if (target != Target::none) db.copy_end();
        target = Target::none;
    };
    auto switch_to = [&](Target wanted) {
        if (target == wanted) return;
        end_copy();
        db.copy_start(wanted == Target::rows ? copy_rows : copy_rejects);
        if (wanted == Target::rows) db.copy_put(kCopyBinaryHeader.data(), kCopyBinaryHeader.size());
        target = wanted;
    };
    try {
        Chunk chunk;
        while (!job.stopping() && queue.pop(chunk)) {
            switch (chunk.kind) {
                case Chunk::begin_file:
                    db.exec("BEGIN");
                    in_transaction = true;
                    break;
                case Chunk::rows:
                    switch_to(Target::rows);
                    db.copy_put(chunk.data.data(), chunk.data.size());
                    break;
                case Chunk::rejects:
                    switch_to(Target::rejects);
                    db.copy_put(chunk.data.data(), chunk.data.size());
                    break;
                case Chunk::end_file: {
                    end_copy();
                    const FileStats& s = chunk.stats;
                    db.exec("INSERT INTO epc.import_file (run_id, file_no, file_name, rows_read, rows_loaded, "
                            "rows_rejected, invalid_utf8_values, invalid_values) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
                            {std::to_string(job.run_id_), std::to_string(s.file_no), s.name, std::to_string(s.rows_read),
                             std::to_string(s.rows_loaded), std::to_string(s.rows_rejected),
                             std::to_string(s.invalid_utf8_values), std::to_string(s.invalid_values)});
                    db.exec("COMMIT");
                    in_transaction = false;
                    job.file_done(s);
                    break;
                }
            }
        }
    } catch (...) {
        job.fail(std::current_exception());
    }
    queue.close();  // unblocks the parser if it is waiting for room
    if (in_transaction && PQstatus(db.raw()) == CONNECTION_OK) {
        // Abandon the half-written file: its rows and rejects vanish with the transaction.
        if (target != Target::none) PQputCopyEnd(db.raw(), "load stopped");
        while (PGresult* r = PQgetResult(db.raw())) PQclear(r);
        PQclear(PQexec(db.raw(), "ROLLBACK"));
    }
}

// Later occurrences of a key (in archive order: file, then line) leave staging for the rejects;
// the first stays. Counts in the ledger move with them, so read = loaded + rejected still holds.
// `suspects`: the only keys that can repeat, or nullptr to check every key (a resumed run, whose
// earlier files never went through this process's sieve).
void move_duplicates(pg::Connection& db, const StagingTables& t, long long run_id,
                     const std::vector<std::string>* suspects) {
    const std::string run = std::to_string(run_id);
    if (suspects && suspects->empty()) return;
    if (suspects) {
        db.exec("CREATE TEMP TABLE epc_suspect_keys (cert_key text) ON COMMIT DROP");
        std::string copy;
        for (const std::string& key : *suspects) {
            append_copy_text(copy, key);
            copy += '\n';
        }
        db.copy_start("COPY epc_suspect_keys FROM STDIN");
        db.copy_put(copy.data(), copy.size());
        db.copy_end();
        db.exec("CREATE TEMP TABLE epc_duplicate_keys ON COMMIT DROP AS "
                "SELECT cert_key FROM " + t.rows + " WHERE cert_key IN (SELECT cert_key FROM epc_suspect_keys) "
                "GROUP BY cert_key HAVING count(*) > 1");
    } else {
        db.exec("CREATE TEMP TABLE epc_duplicate_keys ON COMMIT DROP AS "
                "SELECT cert_key FROM " + t.rows + " GROUP BY cert_key HAVING count(*) > 1");
    }
    db.exec("WITH ranked AS ("
            "  SELECT s.ctid AS tid, row_number() OVER w AS rn, first_value(s.file_no) OVER w AS first_file,"
            "         first_value(s.line_no) OVER w AS first_line"
            "  FROM " + t.rows + " s JOIN epc_duplicate_keys USING (cert_key)"
            "  WINDOW w AS (PARTITION BY s.cert_key ORDER BY s.file_no, s.line_no)),"
            " moved AS ("
            "  DELETE FROM " + t.rows + " s USING ranked r WHERE s.ctid = r.tid AND r.rn > 1"
            "  RETURNING s.*, r.first_file, r.first_line)"
            " INSERT INTO " + t.rejects + " (file_no, file_name, line_no, reason, detail, raw)"
            " SELECT m.file_no, f.file_name, m.line_no, 'duplicate_key',"
            "        format('key %s was already loaded from %s line %s', m.cert_key, first.file_name, m.first_line),"
            "        " + concat_ws_expression("m") +
            " FROM moved m"
            " JOIN epc.import_file f ON f.run_id = $1 AND f.file_no = m.file_no"
            " JOIN epc.import_file first ON first.run_id = $1 AND first.file_no = m.first_file",
            {run});
    db.exec("UPDATE epc.import_file f SET rows_loaded = f.rows_loaded - d.n, rows_rejected = f.rows_rejected + d.n "
            "FROM (SELECT file_no, count(*) AS n FROM " + t.rejects +
                " WHERE reason = 'duplicate_key' GROUP BY file_no) d "
            "WHERE f.run_id = $1 AND f.file_no = d.file_no",
            {run});
}

std::string format_rate(double rows, double seconds) {
    double rate = seconds > 0 ? rows / seconds : 0;
    char buf[32];
    std::snprintf(buf, sizeof buf, rate >= 1000 ? "%.1fk" : "%.0f", rate >= 1000 ? rate / 1000 : rate);
    return buf;
}

}  // namespace

LoadSummary load_archive(const ArchiveInfo& archive, const LoadOptions& options) {
    const auto started = std::chrono::steady_clock::now();
    const std::string type(cert_type_name(options.type));
    pg::Connection control(options.conninfo, "epc-import " + type + " control");
    spdlog::info("load: database {}", control.describe());
    Ledger ledger(control, options.type);
    ledger.ensure_schema();
    if (options.shard) ledger.lock_shard(*options.shard);
    else if (!options.locked_by_caller) ledger.lock();
    RunStart start = ledger.begin_load(archive, options.shard);
    const StagingTables tables = staging_tables(options.type);

    std::set<int> mine;  // file_no of this process's files: all of them, or this shard's share
    const std::vector<int> shard_of = options.shard ? assign_shards(archive.files, options.shard->count) : std::vector<int>();
    for (std::size_t i = 0; i < archive.files.size(); ++i)
        if (!options.shard || shard_of[i] == options.shard->index) mine.insert(archive.files[i].file_no);
    std::vector<const CertFile*> todo;
    for (const CertFile& f : archive.files)
        if (mine.count(f.file_no) && !start.done_files.count(f.file_no)) todo.push_back(&f);
    // Largest files first, so the pipelines finish together instead of one trailing on a big file.
    std::stable_sort(todo.begin(), todo.end(), [](const CertFile* a, const CertFile* b) { return a->size > b->size; });
    if (options.shard)
        spdlog::info("load: shard {}/{} of run {}: {} of the {} files are this shard's, {} to go ({})",
                     options.shard->index, options.shard->count, start.run_id, mine.size(), archive.files.size(),
                     todo.size(), start.resumed ? "joined the run" : "started the run");
    else if (start.resumed)
        spdlog::info("load: resuming run {}: {} of {} files already loaded, {} to go", start.run_id,
                     start.done_files.size(), archive.files.size(), todo.size());
    else
        spdlog::info("load: run {}: {} files into {}", start.run_id, archive.files.size(), tables.rows);

    pg::Result earlier = control.exec("SELECT coalesce(sum(rows_rejected), 0) FROM epc.import_file WHERE run_id = $1",
                                      {std::to_string(start.run_id)});
    // A generous guess of the row count (real rows are ~1 KB; 300 bytes errs towards a roomier sieve).
    std::uint64_t bytes = 0;
    for (const CertFile* f : todo) bytes += f->size;
    LoadJob job(archive, options, start.run_id, todo, static_cast<std::uint64_t>(earlier.integer(0, 0)), bytes / 300);

    const unsigned workers = std::max(1u, std::min<unsigned>(options.jobs, static_cast<unsigned>(todo.size())));
    std::vector<std::thread> threads;
    if (!todo.empty()) {
        // libzip 1.7.3 races when archives are opened concurrently: open every handle here first.
        std::vector<ZipHandle> zips;
        std::vector<pg::Connection> conns;
        std::vector<std::unique_ptr<ChunkQueue>> queues;
        try {
            for (unsigned i = 0; i < workers; ++i) {
                zips.push_back(open_zip(archive.path));
                conns.emplace_back(options.conninfo, "epc-import " + type + " load " + std::to_string(i + 1));
                queues.push_back(std::make_unique<ChunkQueue>());
            }
        } catch (const Error& e) {
            ledger.mark_failed(start.run_id, e.what());
            throw;
        }
        for (unsigned i = 0; i < workers; ++i) {
            threads.emplace_back([&, i] {
                try {
                    parse_files(job, zips[i].get(), *queues[i]);
                } catch (...) {
                    job.fail(std::current_exception());
                }
                queues[i]->close();
            });
            threads.emplace_back([&, i] {
                write_chunks(job, conns[i], *queues[i]);
                job.worker_finished();
            });
        }
        // Progress: at most once a second on a terminal, every 10 s in logs.
        const auto period = std::chrono::milliseconds(isatty(STDERR_FILENO) ? 1000 : 10000);
        while (!job.wait_workers(workers, period)) {
            double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
            double rows = static_cast<double>(job.rows_read_.load());
            spdlog::info("load: {:.0f} rows read, {} rows/s, {}/{} files", rows, format_rate(rows, secs),
                         job.files_done(), todo.size());
        }
        for (auto& t : threads) t.join();
    }

    if (!job.error_ && options.interrupted && options.interrupted->load())
        job.error_ = std::make_exception_ptr(
            Error(exit_transient, "interrupted; files already committed are kept and a re-run resumes after them"));
    if (job.error_) {
        try {
            std::rethrow_exception(job.error_);
        } catch (const std::exception& e) {
            ledger.mark_failed(start.run_id, e.what());
        }
        std::rethrow_exception(job.error_);
    }

    const auto files_loaded = std::chrono::steady_clock::now();
    const std::string run = std::to_string(start.run_id);
    control.exec("BEGIN");
    // Shards finish in any order: the one that finds every file in the ledger completes the load,
    // the others leave it to that one. Serialised, so exactly one completes it.
    ledger.serialise_in_transaction();
    pg::Result state = control.exec(
        "SELECT status, (SELECT count(*) FROM epc.import_file WHERE run_id = $1) FROM epc.import_run WHERE run_id = $1",
        {run});
    const std::size_t run_files_loaded = static_cast<std::size_t>(state.integer(0, 1));
    const bool complete = run_files_loaded == archive.files.size() &&
                          (state.text(0, 0) == "loading" || state.text(0, 0) == "failed");
    if (complete) {
        // Earlier attempts and sibling shards never went through this process's sieve: then
        // every key is checked.
        const bool check_all = start.resumed || options.shard || job.sieve_.overflow_;
        spdlog::info("load: {} files streamed in {:.1f} s; checking {} keys for duplicates", todo.size(),
                     std::chrono::duration<double>(files_loaded - started).count(),
                     check_all ? std::string("all") : std::to_string(job.sieve_.suspects_.size()) + " candidate");
        // Finding repeated keys hashes every key once; give it room to do that in memory.
        control.exec("SET LOCAL work_mem = '256MB'");
        control.exec("SET LOCAL jit = off");  // compiling the plan costs more than it saves here
        move_duplicates(control, tables, start.run_id, check_all ? nullptr : &job.sieve_.suspects_);
        control.exec("UPDATE epc.import_run r SET status = 'loaded', finished_at = now(), error = NULL, rows_read = f.rr, "
                     "rows_loaded = f.rl, rows_rejected = f.rj, invalid_utf8_values = f.iu, invalid_values = f.iv "
                     "FROM (SELECT sum(rows_read) rr, sum(rows_loaded) rl, sum(rows_rejected) rj, "
                     "             sum(invalid_utf8_values) iu, sum(invalid_values) iv "
                     "      FROM epc.import_file WHERE run_id = $1) f WHERE r.run_id = $1",
                     {run});
        control.exec("COMMIT");
        control.exec("ANALYZE " + tables.rows);
        spdlog::info("load: duplicate check and ANALYZE took {:.1f} s",
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - files_loaded).count());
    } else {
        control.exec("COMMIT");
        if (!options.shard)  // an unsharded load has loaded every file by now
            throw Error(exit_internal, "run " + run + " has " + std::to_string(run_files_loaded) + " of " +
                                           std::to_string(archive.files.size()) + " files after its load");
        spdlog::info("load: shard {}/{} done: {} of the run's {} files are loaded; the last shard to finish completes "
                     "the load, then `epc-import publish` publishes it",
                     options.shard->index, options.shard->count, run_files_loaded, archive.files.size());
    }

    LoadSummary summary;
    summary.run_id = start.run_id;
    summary.resumed = start.resumed;
    summary.complete = complete;
    summary.run_files_loaded = run_files_loaded;
    pg::Result files = control.exec(
        "SELECT file_no, file_name, rows_read, rows_loaded, rows_rejected, invalid_utf8_values, invalid_values "
        "FROM epc.import_file WHERE run_id = $1 ORDER BY file_no",
        {run});
    for (int i = 0; i < files.rows(); ++i) {
        FileStats s;
        s.file_no = static_cast<int>(files.integer(i, 0));
        s.name = files.text(i, 1);
        s.rows_read = files.integer(i, 2);
        s.rows_loaded = files.integer(i, 3);
        s.rows_rejected = files.integer(i, 4);
        s.invalid_utf8_values = files.integer(i, 5);
        s.invalid_values = files.integer(i, 6);
        s.from_earlier_attempt = start.done_files.count(s.file_no) > 0;
        if (!mine.count(s.file_no)) continue;  // another shard's
        summary.rows_read += s.rows_read;
        summary.rows_loaded += s.rows_loaded;
        summary.rows_rejected += s.rows_rejected;
        summary.invalid_utf8_values += s.invalid_utf8_values;
        summary.invalid_values += s.invalid_values;
        summary.files.push_back(std::move(s));
    }
    pg::Result reasons =
        control.exec("SELECT file_no, reason, count(*) FROM " + tables.rejects + " GROUP BY 1, 2 ORDER BY 1, 2");
    for (int i = 0; i < reasons.rows(); ++i)
        if (mine.count(static_cast<int>(reasons.integer(i, 0))))
            summary.rejects_by_reason[reasons.text(i, 1)] += reasons.integer(i, 2);
    summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

    spdlog::info("load: {} rows read, {} loaded, {} rejected, in {:.1f} s ({} rows/s); {} values had invalid UTF-8, "
                 "{} numbers were not numbers",
                 summary.rows_read, summary.rows_loaded, summary.rows_rejected, summary.seconds,
                 format_rate(static_cast<double>(summary.rows_read), summary.seconds), summary.invalid_utf8_values,
                 summary.invalid_values);
    for (const auto& [reason, n] : summary.rejects_by_reason) spdlog::info("load: rejected {}: {}", reason, n);

    // The budget is the run's: a completed shard load counts every shard's rejects.
    pg::Result run_rejects = control.exec("SELECT coalesce(sum(rows_rejected), 0) FROM epc.import_file WHERE run_id = $1", {run});
    const std::uint64_t rejected = static_cast<std::uint64_t>(run_rejects.integer(0, 0));
    if (complete && options.max_rejects && rejected > *options.max_rejects) {
        std::string message = std::to_string(rejected) + " rows rejected, more than --max-rejects " +
                              std::to_string(*options.max_rejects) + "; see " + tables.rejects;
        ledger.mark_failed(start.run_id, message);
        throw Error(exit_too_many_rejects, message);
    }
    return summary;
}

}  // namespace epc
