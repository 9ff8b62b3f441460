#include "epc/load/duplicates.hpp"

#include <algorithm>
#include <functional>

#include "epc/db/copy.hpp"
#include "epc/transform/fields.hpp"

namespace epc {

KeySieve::KeySieve(std::uint64_t expected_keys) {
    // ~16 bits per key, between 1 MiB and 64 MiB.
    const std::uint64_t words = std::clamp<std::uint64_t>(expected_keys / 4, 1 << 17, 1 << 23);
    words_ = std::vector<std::atomic<std::uint64_t>>(words);
}

bool KeySieve::seen(std::string_view key) {
    const std::uint64_t h = std::hash<std::string_view>{}(key);
    std::uint64_t bits = 0;
    std::uint64_t g = h * 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < 6; ++i, g >>= 6) bits |= 1ull << (g & 63);
    const std::uint64_t old = words_[h % words_.size()].fetch_or(bits, std::memory_order_relaxed);
    return (old & bits) == bits;
}

void KeySieve::suspect(std::string_view key) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (suspects_.size() < kMaxSuspects) suspects_.emplace_back(key);
    else overflow_ = true;
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
                "SELECT s.ctid AS tid, s.cert_key, s.file_no, s.line_no FROM " + rows + " s WHERE s.cert_key IN "
                "(SELECT cert_key FROM " + rows + " GROUP BY cert_key HAVING count(*) > 1)");
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
            "SELECT s.ctid AS tid, s.cert_key, s.file_no, s.line_no FROM " + rows + " s WHERE s.cert_key = ANY ($1)",
            {keys});
}

}  // namespace

void move_duplicates(db::Session& session, long long run_id, const std::vector<std::string>* suspects) {
    if (suspects && suspects->empty()) return;
    db::Connection& db = session.db();
    const db::StagingTables& t = session.staging();
    find_key_rows(db, t.rows, suspects);
    // The later occurrences leave staging by row id (a TID scan: staging is not read again).
    db.exec("WITH ranked AS ("
            "  SELECT tid, file_no, line_no, row_number() OVER w AS rn, first_value(file_no) OVER w AS first_file,"
            "         first_value(line_no) OVER w AS first_line"
            "  FROM epc_key_rows WINDOW w AS (PARTITION BY cert_key ORDER BY file_no, line_no)),"
            " later AS (SELECT * FROM ranked WHERE rn > 1),"
            " moved AS ("
            "  DELETE FROM " + t.rows + " s WHERE s.ctid = ANY (ARRAY(SELECT tid FROM later))"
            "  RETURNING s.ctid AS tid, s.*)"
            " INSERT INTO " + t.rejects + " (file_no, file_name, line_no, reason, detail, raw)"
            " SELECT m.file_no, f.file_name, m.line_no, $2,"
            "        format('key %s was already loaded from %s line %s', m.cert_key, first.file_name, l.first_line),"
            "        concat_ws(',', m.cert_key, m.lodgement_date, m.transaction_type, m.total_floor_area,"
            "                  m.address, m.postcode, m.uprn, m.local_authority)"
            " FROM moved m JOIN later l ON l.tid = m.tid"
            " JOIN epc.import_file f ON f.run_id = $1 AND f.file_no = m.file_no"
            " JOIN epc.import_file first ON first.run_id = $1 AND first.file_no = l.first_file",
            {run_id, reject_reason_name(RejectReason::duplicate_key)});
    db.exec("UPDATE epc.import_file f SET rows_loaded = f.rows_loaded - d.n, rows_rejected = f.rows_rejected + d.n "
            "FROM (SELECT file_no, count(*) AS n FROM " + t.rejects +
                " WHERE reason = $2 GROUP BY file_no) d "
            "WHERE f.run_id = $1 AND f.file_no = d.file_no",
            {run_id, reject_reason_name(RejectReason::duplicate_key)});
}

}  // namespace epc
