#include "epc/load/duplicates.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <new>

#include <spdlog/spdlog.h>

#include "epc/db/columns.hpp"
#include "epc/db/copy.hpp"
#include "epc/transform/fields.hpp"

namespace epc {

namespace {

// Hashes logged per Writer before they are written out: 64 KiB.
constexpr std::size_t kLogBlock = 8192;

std::uint64_t key_hash(std::string_view key) { return std::hash<std::string_view>{}(key); }

// A full avalanche of the key's hash (splitmix64's finaliser), for the bits within a word. Taking
// them straight from the hash made them depend on the same low bits as the word's index (a power of
// two at the 64 MiB cap): keys sharing a word then shared half their bits, and 28 M keys left
// 335,526 false suspects instead of the ~0.05 % a 64-bit block of 6 bits should.
std::uint64_t mix(std::uint64_t x) {
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// The filter's words, zeroed, asked to sit on 2 MiB pages before any is touched: with 4 KiB
// pages nearly every lookup in 16-64 MiB also missed the TLB.
std::atomic<std::uint64_t>* allocate_on_huge_pages(std::uint64_t words) {
    constexpr std::size_t kHugePage = 2 << 20;
    const std::size_t bytes = (words * sizeof(std::uint64_t) + kHugePage - 1) / kHugePage * kHugePage;
    void* memory = std::aligned_alloc(kHugePage, bytes);
    if (!memory) throw std::bad_alloc();
    madvise(memory, bytes, MADV_HUGEPAGE);  // only advice: without it the filter works the same
    auto* first = static_cast<std::atomic<std::uint64_t>*>(memory);
    for (std::uint64_t i = 0; i < words; ++i) new (first + i) std::atomic<std::uint64_t>(0);
    return first;
}

bool ascii(std::string_view key) {
    return std::all_of(key.begin(), key.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

// The log's file: in $TMPDIR (else /tmp), unlinked at once so that nothing is left behind.
int open_log() {
    const char* dir = std::getenv("TMPDIR");
    std::string path = std::string(dir && *dir ? dir : "/tmp") + "/epc-import-keys.XXXXXX";
    const int fd = mkstemp(path.data());
    if (fd >= 0) unlink(path.c_str());
    return fd;
}

bool write_all(int fd, const void* data, std::size_t bytes) {
    const auto* p = static_cast<const char*>(data);
    while (bytes > 0) {
        const ssize_t n = ::write(fd, p, bytes);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        p += n;
        bytes -= static_cast<std::size_t>(n);
    }
    return true;
}

// How often each suspect's hash occurs in the log: open addressing, 0 marks a free slot (a hash
// of 0 is counted as 1, in the log and here alike).
class HashCounts {
public:
    explicit HashCounts(std::size_t keys) {
        std::size_t size = 16;
        while (size < 2 * keys) size *= 2;
        slots_.assign(size, Slot{});
    }
    void add_key(std::uint64_t hash) { find(hash).hash = nonzero(hash); }
    void count(std::uint64_t hash) {
        Slot& slot = find(hash);
        if (slot.hash && slot.seen < 2) ++slot.seen;
    }
    bool repeated(std::uint64_t hash) { return find(hash).seen >= 2; }

private:
    struct Slot {
        std::uint64_t hash = 0;
        std::uint32_t seen = 0;
    };
    static std::uint64_t nonzero(std::uint64_t hash) { return hash ? hash : 1; }
    Slot& find(std::uint64_t hash) {
        hash = nonzero(hash);
        std::size_t i = mix(hash) & (slots_.size() - 1);
        while (slots_[i].hash && slots_[i].hash != hash) i = (i + 1) & (slots_.size() - 1);
        return slots_[i];
    }
    std::vector<Slot> slots_;
};

}  // namespace

KeySieve::KeySieve(std::uint64_t expected_keys) {
    // ~16 bits per key or more (a power of two of words, for a mask instead of a division),
    // between 1 MiB and 64 MiB.
    std::uint64_t words = 1 << 17;
    while (words < expected_keys / 4 && words < (1 << 23)) words *= 2;
    words_.reset(allocate_on_huge_pages(words));
    mask_ = words - 1;
}

// The sieve's memory comes from aligned_alloc (huge-page aligned), so free() gives it back.
// NOLINTNEXTLINE(cppcoreguidelines-no-malloc)
void KeySieve::Free::operator()(std::atomic<std::uint64_t>* p) const { std::free(p); }

KeySieve::~KeySieve() {
    if (log_fd_ >= 0) close(log_fd_);
}

bool KeySieve::test_and_set(std::uint64_t hash) {
    std::uint64_t bits = 0;
    std::uint64_t g = mix(hash);
    for (int i = 0; i < 6; ++i, g >>= 6) bits |= 1ull << (g & 63);
    const std::uint64_t old = words_[hash & mask_].fetch_or(bits, std::memory_order_relaxed);
    return (old & bits) == bits;
}

void KeySieve::log(const std::uint64_t* hashes, std::size_t count) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (log_failed_) return;
    if (log_fd_ < 0) log_fd_ = open_log();
    if (log_fd_ < 0 || !write_all(log_fd_, hashes, count * sizeof *hashes)) {
        log_failed_ = true;
        spdlog::warn("load: cannot write the log of key hashes to {}: {}; every duplicate-key candidate will be "
                     "checked in the database",
                     std::getenv("TMPDIR") ? "$TMPDIR" : "/tmp", std::strerror(errno));
    }
}

KeySieve::Writer::~Writer() {
    if (pending_) settle();
    if (!hashes_.empty()) sieve_.log(hashes_.data(), hashes_.size());
}

void KeySieve::Writer::add(std::string_view key, bool always_suspect) {
    const std::uint64_t hash = key_hash(key);
    __builtin_prefetch(&sieve_.words_[hash & sieve_.mask_], 1);
    if (pending_) settle();
    pending_key_.assign(key);
    pending_hash_ = hash;
    pending_always_ = always_suspect;
    pending_ = true;
    if (hashes_.capacity() < kLogBlock) hashes_.reserve(kLogBlock);
    hashes_.push_back(hash);
    if (hashes_.size() == kLogBlock) {
        sieve_.log(hashes_.data(), hashes_.size());
        hashes_.clear();
    }
}

void KeySieve::Writer::settle() {
    if (sieve_.test_and_set(pending_hash_) || pending_always_) sieve_.suspect(pending_key_);
    pending_ = false;
}

void KeySieve::suspect(std::string_view key) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (suspects_.size() < kMaxSuspects) suspects_.emplace_back(key);
    else overflow_ = true;
}

// Reads the log once and keeps the suspects whose hash occurs at least twice (or that hold
// non-ASCII bytes). A key that truly repeats always does: nothing that matters is dropped.
void KeySieve::drop_single_occurrences() {
    if (log_failed_ || log_fd_ < 0 || suspects_.empty()) return;
    HashCounts counts(suspects_.size());
    for (const std::string& key : suspects_) counts.add_key(key_hash(key));
    std::vector<std::uint64_t> block(1 << 17);
    off_t offset = 0;
    for (;;) {
        const ssize_t n = pread(log_fd_, block.data(), block.size() * sizeof(std::uint64_t), offset);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return;  // unreadable: keep every suspect
        if (n == 0) break;
        offset += n;
        for (std::size_t i = 0; i < static_cast<std::size_t>(n) / sizeof(std::uint64_t); ++i) counts.count(block[i]);
    }
    const std::size_t flagged = suspects_.size();
    const auto seen_once = [&](const std::string& key) { return ascii(key) && !counts.repeated(key_hash(key)); };
    suspects_.erase(std::remove_if(suspects_.begin(), suspects_.end(), seen_once), suspects_.end());
    spdlog::info("load: the key sieve flagged {} keys; the hash log shows {} of them to occur once", flagged,
                 flagged - suspects_.size());
}

const std::vector<std::string>* KeySieve::suspects() {
    if (overflow_) return nullptr;
    if (!checked_) {
        drop_single_occurrences();
        checked_ = true;
    }
    return &suspects_;
}

namespace {

// epc_key_rows: where every key that may repeat occurs (row id, file, line), from one scan of
// staging; everything after works on this small table. A scan of the 2 M-row staging took
// 0.35-0.4 s here (28 M rows: 14 times that), and the check used to make three: the candidate keys,
// their rows, and a hash join of the rows to delete back onto staging. The candidates reach the
// scan as one array value, not a join: PostgreSQL then hashes them into the filter itself (the
// scan ran 354 ms instead of 688 ms through a hash join) and can split the scan among parallel
// workers (261 ms), which a join with a temporary table rules out.
void find_key_rows(db::Connection& db, const std::string& rows, const std::vector<std::string>* suspects) {
    if (!suspects) {
        db.exec("CREATE TEMP TABLE epc_key_rows ON COMMIT DROP AS "
                "SELECT s.ctid AS tid, s.cert_key, s.file_no, s.line_no FROM " +
                rows +
                " s WHERE s.cert_key IN "
                "(SELECT cert_key FROM " +
                rows + " GROUP BY cert_key HAVING count(*) > 1)");
        return;
    }
    db.exec("CREATE TEMP TABLE epc_suspect_keys (cert_key text) ON COMMIT DROP");
    std::string copy;
    for (const std::string& key : *suspects) {
        append_copy_text(copy, key);
        copy += '\n';
    }
    db::CopyIn in(db, "epc_suspect_keys", "cert_key", db::CopyFormat::text);
    in.put(copy);
    in.finish();
    // Through the temporary table, so that keys are sanitised exactly as the load wrote them.
    const std::string keys = db.exec("SELECT array_agg(cert_key)::text FROM epc_suspect_keys").text(0, 0);
    db.exec("CREATE TEMP TABLE epc_key_rows ON COMMIT DROP AS "
            "SELECT s.ctid AS tid, s.cert_key, s.file_no, s.line_no FROM " +
                rows + " s WHERE s.cert_key = ANY ($1)",
            {keys});
}

}  // namespace

void move_duplicates(db::Session& session, long long run_id, const std::vector<std::string>* suspects) {
    if (suspects && suspects->empty()) return;
    db::Connection& db = session.db();
    const db::StagingTables& t = session.staging();
    find_key_rows(db, t.rows, suspects);
    // The later occurrences leave staging by row id (a TID scan: staging is not read again).
    db.exec(
        "WITH ranked AS ("
        "  SELECT tid, file_no, line_no, row_number() OVER w AS rn, first_value(file_no) OVER w AS first_file,"
        "         first_value(line_no) OVER w AS first_line"
        "  FROM epc_key_rows WINDOW w AS (PARTITION BY cert_key ORDER BY file_no, line_no)),"
        " later AS (SELECT * FROM ranked WHERE rn > 1),"
        " moved AS ("
        "  DELETE FROM " +
            t.rows +
            " s WHERE s.ctid = ANY (ARRAY(SELECT tid FROM later))"
            "  RETURNING s.ctid AS tid, s.*)"
            " INSERT INTO " +
            t.rejects +
            " (file_no, file_name, line_no, reason, detail, raw)"
            " SELECT m.file_no, f.file_name, m.line_no, $2,"
            "        format('key %s was already loaded from %s line %s', m.cert_key, first.file_name, l.first_line),"
            "        " +
            concat_ws_expression(session.staging_columns(), "m") +
            " FROM moved m JOIN later l ON l.tid = m.tid"
            " JOIN epc.import_file f ON f.run_id = $1 AND f.file_no = m.file_no"
            " JOIN epc.import_file first ON first.run_id = $1 AND first.file_no = l.first_file",
        {run_id, reject_reason_name(RejectReason::duplicate_key)});
    db.exec("UPDATE epc.import_file f SET rows_loaded = f.rows_loaded - d.n, rows_rejected = f.rows_rejected + d.n "
            "FROM (SELECT file_no, count(*) AS n FROM " +
                t.rejects +
                " WHERE reason = $2 GROUP BY file_no) d "
                "WHERE f.run_id = $1 AND f.file_no = d.file_no",
            {run_id, reject_reason_name(RejectReason::duplicate_key)});
}

}  // namespace epc
