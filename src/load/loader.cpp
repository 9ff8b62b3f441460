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
#include "epc/db/copy.hpp"
#include "epc/db/transaction.hpp"
#include "epc/load/duplicates.hpp"
#include "epc/load/shards.hpp"
#include "epc/transform/csv.hpp"
#include "epc/transform/fields.hpp"

namespace epc {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// COPY data is handed over in chunks of about this size. The chunk size made no measurable
// difference between 8 KiB and 10 MiB; 1 MiB keeps the queue's memory small.
constexpr std::size_t kChunkBytes = 1 << 20;
// Rejects are rare; flush them in smaller chunks so a file full of bad rows stays flat in memory.
constexpr std::size_t kRejectChunkBytes = 256 << 10;
// Chunks waiting per pipeline: enough to ride out a slow COPY round trip, small enough that a
// full queue stops the parser (back-pressure) long before memory matters.
constexpr std::size_t kQueueChunks = 8;

struct Chunk {
    enum Kind { begin_file, rows, rejects, end_file } kind = begin_file;
    std::string data;
    FileStats stats;  // begin_file: which file (its dataset decides the table); end_file: its counts
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

// The columns staging keeps: the certificates', and the recommendations' with --recommendations.
struct StagingColumns {
    ColumnSet certificates;
    std::optional<ColumnSet> recommendations;
};

// State shared by all pipelines of one load.
class LoadJob {
public:
    LoadJob(const LoadOptions& options, const db::Session& session, const StagingColumns& columns, long long run_id,
            std::vector<const CertFile*> todo, std::uint64_t rejects_so_far, std::uint64_t expected_keys)
        : options_(options), type_(session.type()), tables_(session.staging()), columns_(columns), run_id_(run_id),
          todo_(std::move(todo)), rejects_(rejects_so_far), sieve_(expected_keys) {}

    // Where a file's rows go: its dataset's staging table and columns.
    const ColumnSet& columns_of(Dataset dataset) const {
        return dataset == Dataset::certificates ? columns_.certificates : *columns_.recommendations;
    }
    const std::string& table_of(Dataset dataset) const {
        return dataset == Dataset::certificates ? tables_.rows : tables_.recommendations;
    }

    const CertFile* next_file() {
        std::lock_guard<std::mutex> lock(mutex_);
        if (stopping() || next_ >= todo_.size()) return nullptr;
        return todo_[next_++];
    }
    bool stopping() const { return failed_.load() || interrupted(); }
    bool interrupted() const { return options_.interrupted && options_.interrupted->load(); }
    void fail(std::exception_ptr error) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::move(error);
        failed_ = true;
        done_cv_.notify_all();
    }
    std::exception_ptr error() {
        std::lock_guard<std::mutex> lock(mutex_);
        return error_;
    }
    void count_reject() {
        std::uint64_t total = ++rejects_;
        if (options_.max_rejects && total > *options_.max_rejects && !failed_.load())
            fail(std::make_exception_ptr(
                Error(exit_too_many_rejects, "more than " + std::to_string(*options_.max_rejects) +
                                                 " rows rejected (--max-rejects); see " + tables_.rejects)));
    }
    void file_done(const FileStats& stats) {
        std::lock_guard<std::mutex> lock(mutex_);
        ++files_done_;
        spdlog::debug("loaded {}: {} rows read, {} loaded, {} rejected", stats.name, stats.rows_read, stats.rows_loaded,
                      stats.rows_rejected);
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
        return files_done_;
    }

    // The pipelines' shared state, read by every thread: constants, atomics and the sieve (itself
    // thread-safe). What a mutex guards stays private below.
    // NOLINTBEGIN(cppcoreguidelines-non-private-member-variables-in-classes)
    const LoadOptions& options_;
    const CertType type_;
    const db::StagingTables& tables_;
    const StagingColumns& columns_;
    const long long run_id_;
    const std::vector<const CertFile*> todo_;
    std::atomic<std::uint64_t> rows_read_{0};
    std::atomic<std::uint64_t> rejects_;
    KeySieve sieve_;
    // NOLINTEND(cppcoreguidelines-non-private-member-variables-in-classes)

private:
    std::mutex mutex_;
    std::condition_variable done_cv_;
    std::exception_ptr error_;
    std::size_t next_ = 0;
    std::size_t files_done_ = 0;
    std::atomic<bool> failed_{false};
    unsigned workers_finished_ = 0;
};

void sieve_key(KeySieve::Writer& keys, std::string_view key) {
    // A key with non-ASCII bytes may equal another once invalid UTF-8 is replaced: always check it.
    const bool ascii = std::all_of(key.begin(), key.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
    keys.add(key, !ascii);
}

// Opens a file's CSV and maps its header to its dataset's columns.
FieldMap read_header(LoadJob& job, CsvReader& reader, const CertFile& file, Record& record) {
    if (!reader.next(record)) throw Error(exit_invalid_archive, file.name + " has no header line");
    FieldMap map = map_header(record.fields, job.type_, job.columns_of(file.dataset));
    if (!map.missing_required.empty())
        throw Error(exit_invalid_archive, file.name + ": header has no " + map.missing_required.front() + " column");
    return map;
}

void count_invalid_by_column(const FieldMap& map, const RowCounters& counters, FileStats& stats) {
    stats.invalid_utf8_values = counters.invalid_utf8_values;
    stats.invalid_values = counters.invalid_values;
    for (std::size_t i = 0; i < counters.invalid_by_slot.size(); ++i)
        if (counters.invalid_by_slot[i])
            stats.invalid_by_column[map.slots[i].column->name] = counters.invalid_by_slot[i];
}

// Parses one file into COPY chunks between its begin_file and end_file. False: the load is
// stopping (an error elsewhere, an interruption), and the file is left unfinished.
bool parse_file(LoadJob& job, zip_t* zip, const CertFile& file, ChunkQueue& queue, KeySieve::Writer& keys,
                Record& record) {
    FileStats stats;
    stats.file_no = file.file_no;
    stats.name = file.name;
    stats.dataset = file.dataset;
    // Recommendations repeat their certificate's key by design: only certificates keys are sieved.
    const bool certificates = file.dataset == Dataset::certificates;
    if (!queue.push(Chunk{Chunk::begin_file, {}, stats})) return false;
    CsvReader reader(file.name, std::make_unique<EntrySource>(zip, file), job.options_.backslash_escapes);
    const FieldMap map = read_header(job, reader, file, record);

    RowCounters counters;
    std::string rows, rejects;
    rows.reserve(kChunkBytes + (64 << 10));
    std::uint64_t since_check = 0;
    while (reader.next(record)) {
        ++stats.rows_read;
        if (auto rejection = format_row(map, record.fields, file.file_no, record.line, rows, counters)) {
            ++stats.rows_rejected;
            format_reject(file.file_no, file.name, record.line, *rejection, record.raw, rejects);
            job.count_reject();
            if (rejects.size() >= kRejectChunkBytes) {
                if (!queue.push(Chunk{Chunk::rejects, std::move(rejects), {}})) return false;
                rejects.clear();
            }
        } else {
            ++stats.rows_loaded;
            if (certificates) sieve_key(keys, trim(record.fields[static_cast<std::size_t>(map.key)]));
        }
        if (rows.size() >= kChunkBytes) {
            if (!queue.push(Chunk{Chunk::rows, std::move(rows), {}})) return false;
            rows = std::string();
            rows.reserve(kChunkBytes + (64 << 10));
        }
        if (++since_check == 4096) {
            job.rows_read_ += since_check;
            since_check = 0;
            if (job.stopping()) return false;
        }
    }
    job.rows_read_ += since_check;
    if (!rows.empty() && !queue.push(Chunk{Chunk::rows, std::move(rows), {}})) return false;
    if (!rejects.empty() && !queue.push(Chunk{Chunk::rejects, std::move(rejects), {}})) return false;
    count_invalid_by_column(map, counters, stats);
    return queue.push(Chunk{Chunk::end_file, {}, stats});
}

// Parses files into COPY chunks; runs on its own thread (inflating included).
void parse_files(LoadJob& job, zip_t* zip, ChunkQueue& queue) {
    KeySieve::Writer keys(job.sieve_);
    Record record;
    while (const CertFile* file = job.next_file())
        if (!parse_file(job, zip, *file, queue, keys, record)) return;
}

// {"column": count, ...}, or "" for none. Column names are [a-z0-9_] (catalogue names and
// unknown_column_name()), so nothing needs escaping.
std::string counts_json(const std::map<std::string, std::uint64_t>& counts) {
    std::string json;
    for (const auto& [name, n] : counts) json += (json.empty() ? "{\"" : ", \"") + name + "\": " + std::to_string(n);
    return json.empty() ? json : json + "}";
}

// Writes one pipeline's chunks with COPY: one transaction per file, committed with its ledger row,
// so a file is either entirely in staging and the ledger, or not at all. Leaving early (an error,
// an interruption) abandons the half-written file: its rows and rejects vanish with the transaction.
class FileWriter {
public:
    FileWriter(LoadJob& job, db::Connection& db) : job_(job), db_(db) {}
    FileWriter(const FileWriter&) = delete;
    FileWriter& operator=(const FileWriter&) = delete;

    void write(Chunk& chunk) {
        switch (chunk.kind) {
            case Chunk::begin_file:
                tx_.emplace(db_);
                dataset_ = chunk.stats.dataset;
                break;
            case Chunk::rows: copy_to(Target::rows).put(chunk.data); break;
            case Chunk::rejects: copy_to(Target::rejects).put(chunk.data); break;
            case Chunk::end_file: commit_file(chunk.stats); break;
        }
    }
    ~FileWriter() {
        if (copy_) copy_->abort("load stopped");
    }

private:
    enum class Target { none, rows, rejects };

    db::CopyIn& copy_to(Target wanted) {
        if (target_ != wanted) {
            end_copy();
            if (wanted == Target::rows)
                copy_.emplace(db_, job_.table_of(dataset_), staging_column_list(job_.columns_of(dataset_)),
                              db::CopyFormat::binary);
            else
                copy_.emplace(db_, job_.tables_.rejects, "file_no, file_name, line_no, reason, detail, raw",
                              db::CopyFormat::text);
            target_ = wanted;
        }
        return *copy_;
    }
    void end_copy() {
        if (copy_) copy_->finish();
        copy_.reset();
        target_ = Target::none;
    }
    void commit_file(const FileStats& s) {
        end_copy();
        db_.exec("INSERT INTO epc.import_file (run_id, file_no, file_name, dataset, rows_read, rows_loaded, "
                 "rows_rejected, invalid_utf8_values, invalid_values, invalid_by_column) "
                 "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,NULLIF($10, '')::jsonb)",
                 {job_.run_id_, s.file_no, s.name, dataset_name(s.dataset), s.rows_read, s.rows_loaded, s.rows_rejected,
                  s.invalid_utf8_values, s.invalid_values, counts_json(s.invalid_by_column)});
        tx_->commit();
        tx_.reset();
        job_.file_done(s);
    }

    LoadJob& job_;
    db::Connection& db_;
    // Declared before copy_: a COPY in flight is aborted before its transaction rolls back.
    std::optional<db::Transaction> tx_;
    std::optional<db::CopyIn> copy_;
    Target target_ = Target::none;
    Dataset dataset_ = Dataset::certificates;  // of the file being written
};

void write_chunks(LoadJob& job, db::Connection& db, ChunkQueue& queue) {
    try {
        FileWriter writer(job, db);
        Chunk chunk;
        while (!job.stopping() && queue.pop(chunk)) writer.write(chunk);
    } catch (...) {
        job.fail(std::current_exception());
    }
    queue.close();  // unblocks the parser if it is waiting for room
}

std::string format_rate(double rows, double seconds) {
    double rate = seconds > 0 ? rows / seconds : 0;
    char buf[32];
    std::snprintf(buf, sizeof buf, rate >= 1000 ? "%.1fk" : "%.0f", rate >= 1000 ? rate / 1000 : rate);
    return buf;
}

// Which files this process loads: all of them, or its shard's share, less those already in the
// ledger; largest first, so the pipelines finish together instead of one trailing on a big file.
struct FilePlan {
    std::set<int> mine;                 // file_no of this process's files
    std::vector<const CertFile*> todo;  // still to load
};

FilePlan plan_files(const std::vector<CertFile>& files, const db::RunStart& start, const std::optional<Shard>& shard) {
    FilePlan plan;
    const std::vector<int> shard_of = shard ? assign_shards(files, shard->count) : std::vector<int>();
    for (std::size_t i = 0; i < files.size(); ++i)
        if (!shard || shard_of[i] == shard->index) plan.mine.insert(files[i].file_no);
    for (const CertFile& f : files)
        if (plan.mine.count(f.file_no) && !start.done_files.count(f.file_no)) plan.todo.push_back(&f);
    std::stable_sort(plan.todo.begin(), plan.todo.end(),
                     [](const CertFile* a, const CertFile* b) { return a->size > b->size; });
    return plan;
}

void log_plan(const std::vector<CertFile>& files, const db::RunStart& start, const FilePlan& plan,
              const std::optional<Shard>& shard, const std::string& table) {
    if (shard)
        spdlog::info("load: shard {}/{} of run {}: {} of the {} files are this shard's, {} to go ({})", shard->index,
                     shard->count, start.run_id, plan.mine.size(), files.size(), plan.todo.size(),
                     start.resumed ? "joined the run" : "started the run");
    else if (start.resumed)
        spdlog::info("load: resuming run {}: {} of {} files already loaded, {} to go", start.run_id,
                     start.done_files.size(), files.size(), plan.todo.size());
    else spdlog::info("load: run {}: {} files into {}", start.run_id, files.size(), table);
}

db::RunArchive run_archive(const ArchiveInfo& a) {
    return {a.path, a.identity, a.bytes, a.layout, a.files.size(), a.source, a.release_last_updated, a.sha256};
}

// The pipelines: per worker a parse thread and a COPY thread with its own connection, joined by
// a bounded queue. Returns when every worker has finished (or stopped on an error).
void stream_files(db::Session& session, const ArchiveInfo& archive, LoadJob& job, Clock::time_point started) {
    const unsigned workers = std::max(1u,
                                      std::min<unsigned>(job.options_.jobs, static_cast<unsigned>(job.todo_.size())));
    // libzip 1.7.3 races when archives are opened concurrently: open every handle here first.
    std::vector<ZipHandle> zips;
    std::vector<db::Connection> conns;
    std::vector<std::unique_ptr<ChunkQueue>> queues;
    for (unsigned i = 0; i < workers; ++i) {
        zips.push_back(open_zip(archive.path));
        conns.push_back(session.connect("load " + std::to_string(i + 1)));
        queues.push_back(std::make_unique<ChunkQueue>());
    }
    std::vector<std::thread> threads;
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
        const auto rows = static_cast<double>(job.rows_read_.load());
        spdlog::info("load: {:.0f} rows read, {} rows/s, {}/{} files", rows, format_rate(rows, seconds_since(started)),
                     job.files_done(), job.todo_.size());
    }
    for (auto& t : threads) t.join();
}

// An error or an interruption ends the load here: the run is marked failed (a re-run resumes it)
// and the error goes on.
void stop_on_error(db::Session& session, long long run_id, LoadJob& job) {
    std::exception_ptr error = job.error();
    if (!error && job.interrupted())
        error = std::make_exception_ptr(
            Error(exit_transient, "interrupted; files already committed are kept and a re-run resumes after them"));
    if (!error) return;
    try {
        std::rethrow_exception(error);
    } catch (const std::exception& e) {
        session.mark_failed(run_id, e.what());
    }
    std::rethrow_exception(error);
}

// ANALYZE of staging on a connection of its own, while the duplicate check runs on the session's:
// its sampling and the check's scan share the cores instead of following each other. The sample
// may still hold the few duplicates about to leave; no statistic moves for so few.
class BackgroundAnalyze {
public:
    explicit BackgroundAnalyze(const db::Session& session)
        : db_(session.connect("analyze")), table_(session.staging().rows), thread_([this] { run(); }) {}
    ~BackgroundAnalyze() {
        if (thread_.joinable()) thread_.join();
    }
    BackgroundAnalyze(const BackgroundAnalyze&) = delete;
    BackgroundAnalyze& operator=(const BackgroundAnalyze&) = delete;
    void wait() {
        thread_.join();
        if (error_) std::rethrow_exception(error_);
    }

private:
    void run() {
        try {
            db_.exec("ANALYZE " + table_);
        } catch (...) {
            error_ = std::current_exception();
        }
    }

    db::Connection db_;
    const std::string table_;
    std::exception_ptr error_;
    std::thread thread_;  // last: starts once the members it uses exist
};

// Shards finish in any order: the one that finds every file in the ledger completes the load (the
// duplicate-key check over every key, the run's totals, status loaded); the others leave it to that
// one. Serialised, so exactly one completes it. Returns how many of the run's files are loaded and
// whether this process completed the load.
std::pair<std::size_t, bool> complete_load(db::Session& session, std::size_t run_files, const db::RunStart& start,
                                           LoadJob& job, Clock::time_point started) {
    db::Connection& db = session.db();
    const auto streamed = Clock::now();
    db::Transaction tx(db);
    session.serialise_in_transaction();
    db::Result state = db.exec(
        "SELECT status, (SELECT count(*) FROM epc.import_file WHERE run_id = $1) FROM epc.import_run WHERE run_id = $1",
        {start.run_id});
    const auto files_loaded = static_cast<std::size_t>(state.integer(0, 1));
    const auto status = db::parse_run_status(state.text(0, 0));
    const bool complete = files_loaded == run_files &&
                          (status == db::RunStatus::loading || status == db::RunStatus::failed);
    if (!complete) {
        tx.commit();
        return {files_loaded, false};
    }
    BackgroundAnalyze analyze(session);
    // Earlier attempts and sibling shards never went through this process's sieve: then every key
    // is checked.
    const std::vector<std::string>* suspects = start.resumed || job.options_.shard ? nullptr : job.sieve_.suspects();
    spdlog::info("load: {} files streamed in {:.1f} s; checking {} keys for duplicates", job.todo_.size(),
                 seconds_since(started), suspects ? std::to_string(suspects->size()) + " candidate" : "all");
    // Finding repeated keys hashes every key once; give it room to do that in memory.
    db.exec("SET LOCAL work_mem = '256MB'");
    db.exec("SET LOCAL jit = off");  // compiling the plan costs more than it saves here
    move_duplicates(session, start.run_id, suspects);
    db.exec("UPDATE epc.import_run r SET status = $2, finished_at = now(), error = NULL, rows_read = f.rr, "
            "rows_loaded = f.rl, rows_rejected = f.rj, invalid_utf8_values = f.iu, invalid_values = f.iv "
            "FROM (SELECT sum(rows_read) rr, sum(rows_loaded) rl, sum(rows_rejected) rj, "
            "             sum(invalid_utf8_values) iu, sum(invalid_values) iv "
            "      FROM epc.import_file WHERE run_id = $1 AND dataset = 'certificates') f WHERE r.run_id = $1",
            {start.run_id, db::run_status_name(db::RunStatus::loaded)});
    tx.commit();
    analyze.wait();
    spdlog::info("load: duplicate check and ANALYZE took {:.1f} s", seconds_since(streamed));
    return {files_loaded, true};
}

// The summary covers this process's files (a shard's share), read back from the ledger: the
// certificates files' counts, and the recommendations files' apart.
LoadSummary summarise(db::Session& session, const db::RunStart& start, const FilePlan& plan) {
    LoadSummary summary;
    summary.run_id = start.run_id;
    summary.resumed = start.resumed;
    db::Result files = session.db().exec(
        "SELECT file_no, file_name, rows_read, rows_loaded, rows_rejected, invalid_utf8_values, invalid_values, "
        "dataset = 'recommendations' FROM epc.import_file WHERE run_id = $1 ORDER BY file_no",
        {start.run_id});
    std::set<int> recommendation_files;
    for (int i = 0; i < files.rows(); ++i) {
        FileStats s;
        s.file_no = static_cast<int>(files.integer(i, 0));
        if (!plan.mine.count(s.file_no)) continue;  // another shard's
        s.name = files.text(i, 1);
        s.rows_read = files.integer(i, 2);
        s.rows_loaded = files.integer(i, 3);
        s.rows_rejected = files.integer(i, 4);
        s.invalid_utf8_values = files.integer(i, 5);
        s.invalid_values = files.integer(i, 6);
        s.from_earlier_attempt = start.done_files.count(s.file_no) > 0;
        if (files.boolean(i, 7)) {
            s.dataset = Dataset::recommendations;
            recommendation_files.insert(s.file_no);
            summary.recommendations.add(std::move(s));
        } else {
            summary.add(std::move(s));
        }
    }
    db::Result by_column = session.db().exec(
        "SELECT f.file_no, c.key, c.value::bigint FROM epc.import_file f, jsonb_each_text(f.invalid_by_column) c "
        "WHERE f.run_id = $1",
        {start.run_id});
    for (int i = 0; i < by_column.rows(); ++i) {
        const int file_no = static_cast<int>(by_column.integer(i, 0));
        if (!plan.mine.count(file_no)) continue;
        const auto n = static_cast<std::uint64_t>(by_column.integer(i, 2));
        const bool recommendations = recommendation_files.count(file_no) > 0;
        (recommendations ? summary.recommendations.invalid_by_column
                         : summary.invalid_by_column)[by_column.text(i, 1)] += n;
        for (FileStats& s : recommendations ? summary.recommendations.files : summary.files)
            if (s.file_no == file_no) s.invalid_by_column[by_column.text(i, 1)] = n;
    }
    db::Result reasons = session.db().exec("SELECT file_no, reason, count(*) FROM " + session.staging().rejects +
                                           " GROUP BY 1, 2 ORDER BY 1, 2");
    for (int i = 0; i < reasons.rows(); ++i) {
        const int file_no = static_cast<int>(reasons.integer(i, 0));
        if (!plan.mine.count(file_no)) continue;
        auto& by_reason = recommendation_files.count(file_no) ? summary.recommendations.rejects_by_reason
                                                              : summary.rejects_by_reason;
        by_reason[reasons.text(i, 1)] += reasons.integer(i, 2);
    }
    return summary;
}

void log_summary(const LoadSummary& summary) {
    spdlog::info("load: {} rows read, {} loaded, {} rejected, in {:.1f} s ({} rows/s); {} values had invalid UTF-8, "
                 "{} numbers were not numbers",
                 summary.rows_read, summary.rows_loaded, summary.rows_rejected, summary.seconds,
                 format_rate(static_cast<double>(summary.rows_read), summary.seconds), summary.invalid_utf8_values,
                 summary.invalid_values);
    for (const auto& [reason, n] : summary.rejects_by_reason) spdlog::info("load: rejected {}: {}", reason, n);
    for (const auto& [column, n] : summary.invalid_by_column)
        spdlog::info("load: {} values of {} were not of its type and are NULL", n, column);
    const RecommendationsLoad& recs = summary.recommendations;
    if (!recs.loaded) return;
    spdlog::info("load: recommendations: {} files, {} rows read, {} loaded, {} rejected", recs.files.size(),
                 recs.rows_read, recs.rows_loaded, recs.rows_rejected);
    for (const auto& [reason, n] : recs.rejects_by_reason)
        spdlog::info("load: recommendations rejected {}: {}", reason, n);
}

// The recommendations' columns: every column of their files. A file without the key column
// cannot be loaded; refused before anything is written.
ColumnSet choose_recommendation_columns(const ArchiveInfo& archive, CertType type) {
    std::vector<std::vector<std::string>> headers;
    for (const CertFile& f : archive.recommendations) headers.push_back(f.header);
    ColumnSet set = ColumnSet::recommendations(headers);
    for (const CertFile& f : archive.recommendations) {
        const FieldMap map = map_header(std::vector<Field>(f.header.begin(), f.header.end()), type, set);
        if (!map.missing_required.empty())
            throw Error(exit_invalid_archive,
                        f.name + ": header has no " + map.missing_required.front() + " column; cannot load it");
    }
    if (archive.recommendations.empty())
        spdlog::warn("load: --recommendations: the archive has no recommendations files");
    spdlog::info("load: {} recommendations files, {} columns: {}", archive.recommendations.size(), set.size(),
                 staging_column_list(set));
    return set;
}

// What --columns means for this archive, told before anything is loaded.
ResolvedColumns choose_columns(const ArchiveInfo& archive, const LoadOptions& options, CertType type) {
    std::vector<std::vector<std::string>> headers;
    for (const CertFile& f : archive.files) headers.push_back(f.header);
    ResolvedColumns resolved = resolve_columns(options.columns, type, headers);
    spdlog::info("load: {} certificate columns (--columns {})", resolved.set.size(), describe(options.columns));
    for (const std::string& name : resolved.unknown) {
        if (resolved.unknown_loaded)
            spdlog::warn("load: column {} is not in the catalogue (header drift?); loaded as text column {}", name,
                         unknown_column_name(name));
        else
            spdlog::warn("load: column {} is not in the catalogue (header drift?); not loaded (--columns all would "
                         "load it as text)",
                         name);
    }
    for (const std::string& warning : resolved.warnings) spdlog::warn("load: {}", warning);
    return resolved;
}

std::uint64_t run_rejects(db::Session& session, long long run_id) {
    return static_cast<std::uint64_t>(
        session.db()
            .exec("SELECT coalesce(sum(rows_rejected), 0) FROM epc.import_file WHERE run_id = $1", {run_id})
            .integer(0, 0));
}

// The budget is the run's: a completed shard load counts every shard's rejects.
void enforce_reject_budget(db::Session& session, const LoadOptions& options, const LoadSummary& summary) {
    if (!summary.complete || !options.max_rejects) return;
    const std::uint64_t rejected = run_rejects(session, summary.run_id);
    if (rejected <= *options.max_rejects) return;
    const std::string message = std::to_string(rejected) + " rows rejected, more than --max-rejects " +
                                std::to_string(*options.max_rejects) + "; see " + session.staging().rejects;
    session.mark_failed(summary.run_id, message);
    throw Error(exit_too_many_rejects, message);
}

}  // namespace

void LoadedFiles::add(FileStats&& file) {
    rows_read += file.rows_read;
    rows_loaded += file.rows_loaded;
    rows_rejected += file.rows_rejected;
    invalid_utf8_values += file.invalid_utf8_values;
    invalid_values += file.invalid_values;
    files.push_back(std::move(file));
}

LoadSummary load_archive(db::Session& session, const ArchiveInfo& archive, const LoadOptions& options) {
    const auto started = Clock::now();
    const ResolvedColumns columns = choose_columns(archive, options, session.type());
    StagingColumns staging{columns.set, std::nullopt};
    std::vector<CertFile> files = archive.files;
    if (options.recommendations) {
        staging.recommendations = choose_recommendation_columns(archive, session.type());
        files.insert(files.end(), archive.recommendations.begin(), archive.recommendations.end());
    }
    spdlog::info("load: database {}", session.db().describe());
    if (options.shard) session.lock_shard(*options.shard);
    else session.lock();
    const db::RunStart start = session.begin_load(run_archive(archive), options.shard, staging.certificates,
                                                  staging.recommendations);
    const FilePlan plan = plan_files(files, start, options.shard);
    log_plan(files, start, plan, options.shard, session.staging().rows);

    // A generous guess of the row count (real rows are ~1 KB; 300 bytes errs towards a roomier sieve).
    std::uint64_t bytes = 0;
    for (const CertFile* f : plan.todo)
        if (f->dataset == Dataset::certificates) bytes += f->size;
    LoadJob job(options, session, staging, start.run_id, plan.todo, run_rejects(session, start.run_id), bytes / 300);
    if (!plan.todo.empty()) {
        try {
            stream_files(session, archive, job, started);
        } catch (const Error& e) {  // a worker's connection or zip handle could not be opened
            session.mark_failed(start.run_id, e.what());
            throw;
        }
    }
    stop_on_error(session, start.run_id, job);

    const auto [files_loaded, complete] = complete_load(session, files.size(), start, job, started);
    if (!complete && !options.shard)  // an unsharded load has loaded every file by now
        throw Error(exit_internal, "run " + std::to_string(start.run_id) + " has " + std::to_string(files_loaded) +
                                       " of " + std::to_string(files.size()) + " files after its load");
    if (!complete)
        spdlog::info("load: shard {}/{} done: {} of the run's {} files are loaded; the last shard to finish completes "
                     "the load, then `epc-import publish` publishes it",
                     options.shard->index, options.shard->count, files_loaded, files.size());

    LoadSummary summary = summarise(session, start, plan);
    summary.complete = complete;
    summary.run_files_loaded = files_loaded;
    summary.seconds = seconds_since(started);
    summary.columns = columns.set.names();
    summary.unknown_columns = columns.unknown;
    summary.unknown_columns_loaded = columns.unknown_loaded;
    summary.recommendations.loaded = options.recommendations;
    if (staging.recommendations) summary.recommendations.columns = staging.recommendations->names();
    log_summary(summary);
    enforce_reject_budget(session, options, summary);
    return summary;
}

}  // namespace epc
