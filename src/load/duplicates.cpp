#include "epc/load/duplicates.hpp"

#include <algorithm>
#include <functional>

#include "epc/db/columns.hpp"
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

// epc_duplicate_keys: the keys that occur more than once in staging.
void find_duplicate_keys(db::Connection& db, const std::string& rows, const std::vector<std::string>* suspects) {
    if (!suspects) {
        db.exec("CREATE TEMP TABLE epc_duplicate_keys ON COMMIT DROP AS "
                "SELECT cert_key FROM " + rows + " GROUP BY cert_key HAVING count(*) > 1");
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
    db.exec("CREATE TEMP TABLE epc_duplicate_keys ON COMMIT DROP AS "
            "SELECT cert_key FROM " + rows + " WHERE cert_key IN (SELECT cert_key FROM epc_suspect_keys) "
            "GROUP BY cert_key HAVING count(*) > 1");
}

}  // namespace

void move_duplicates(db::Session& session, long long run_id, const std::vector<std::string>* suspects) {
    if (suspects && suspects->empty()) return;
    db::Connection& db = session.db();
    const db::StagingTables& t = session.staging();
    find_duplicate_keys(db, t.rows, suspects);
    db.exec("WITH ranked AS ("
            "  SELECT s.ctid AS tid, row_number() OVER w AS rn, first_value(s.file_no) OVER w AS first_file,"
            "         first_value(s.line_no) OVER w AS first_line"
            "  FROM " + t.rows + " s JOIN epc_duplicate_keys USING (cert_key)"
            "  WINDOW w AS (PARTITION BY s.cert_key ORDER BY s.file_no, s.line_no)),"
            " moved AS ("
            "  DELETE FROM " + t.rows + " s USING ranked r WHERE s.ctid = r.tid AND r.rn > 1"
            "  RETURNING s.*, r.first_file, r.first_line)"
            " INSERT INTO " + t.rejects + " (file_no, file_name, line_no, reason, detail, raw)"
            " SELECT m.file_no, f.file_name, m.line_no, $2,"
            "        format('key %s was already loaded from %s line %s', m.cert_key, first.file_name, m.first_line),"
            "        " + concat_ws_expression("m") +
            " FROM moved m"
            " JOIN epc.import_file f ON f.run_id = $1 AND f.file_no = m.file_no"
            " JOIN epc.import_file first ON first.run_id = $1 AND first.file_no = m.first_file",
            {run_id, reject_reason_name(RejectReason::duplicate_key)});
    db.exec("UPDATE epc.import_file f SET rows_loaded = f.rows_loaded - d.n, rows_rejected = f.rows_rejected + d.n "
            "FROM (SELECT file_no, count(*) AS n FROM " + t.rejects +
                " WHERE reason = $2 GROUP BY file_no) d "
            "WHERE f.run_id = $1 AND f.file_no = d.file_no",
            {run_id, reject_reason_name(RejectReason::duplicate_key)});
}

}  // namespace epc
