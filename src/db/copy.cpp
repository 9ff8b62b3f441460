#include "epc/db/copy.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <cstring>

#include "epc/db/copy_binary.hpp"
#include "statement_timer.hpp"

namespace epc::db {

CopyIn::CopyIn(Connection& db, const std::string& table, const std::string& columns, CopyFormat format)
    : db_(db), format_(format) {
    const std::string sql = "COPY " + table + " (" + columns + ") FROM STDIN" +
                            (format == CopyFormat::binary ? " (FORMAT binary)" : "");
    PGresult* r = PQexec(db_.conn_, sql.c_str());
    if (!r || PQresultStatus(r) != PGRES_COPY_IN) db_.fail("'" + sql.substr(0, 80) + "'", r);
    PQclear(r);
    open_ = true;
    if (format_ == CopyFormat::binary) put(binary::kHeader);
}

CopyIn::~CopyIn() {
    if (open_) abort("COPY abandoned");
}

void CopyIn::put(std::string_view data) {
    // PQputCopyData takes an int length; buffers are far smaller, but stay safe.
    while (!data.empty()) {
        const int chunk = static_cast<int>(std::min<std::size_t>(data.size(), 1u << 30));
        if (PQputCopyData(db_.conn_, data.data(), chunk) != 1) db_.fail("COPY");
        data.remove_prefix(static_cast<std::size_t>(chunk));
    }
}

void CopyIn::finish() {
    if (format_ == CopyFormat::binary) put(binary::kTrailer);
    open_ = false;
    if (PQputCopyEnd(db_.conn_, nullptr) != 1) db_.fail("COPY end");
    while (PGresult* r = PQgetResult(db_.conn_)) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK) db_.fail("COPY", r);
        PQclear(r);
    }
}

void CopyIn::abort(const std::string& reason) noexcept {
    if (!open_) return;
    open_ = false;
    if (!db_.ok()) return;
    PQputCopyEnd(db_.conn_, reason.c_str());
    while (PGresult* r = PQgetResult(db_.conn_)) PQclear(r);  // the expected "COPY ... failed: reason"
}

namespace {

std::uint32_t big_endian(const char* p, int bytes) {
    std::uint32_t v = 0;
    for (int i = 0; i < bytes; ++i) v = v << 8 | static_cast<unsigned char>(p[i]);
    return v;
}

}  // namespace

CopyOut::CopyOut(Connection& db, const std::string& query)
    : db_(db), sql_("COPY (" + query + ") TO STDOUT (FORMAT binary)"),
      timer_(std::make_unique<StatementTimer>(db.application_name_, sql_, 0)) {
    PGresult* r = PQexec(db_.conn_, sql_.c_str());
    if (!r || PQresultStatus(r) != PGRES_COPY_OUT) db_.fail("'" + sql_.substr(0, 80) + "'", r);
    PQclear(r);
}

CopyOut::~CopyOut() {
    release();
    if (!db_.ok()) return;
    // An unread rest is read and thrown away: libpq has no way to cancel just the COPY.
    for (char* m = nullptr; !done_ && PQgetCopyData(db_.conn_, &m, 0) > 0; m = nullptr) PQfreemem(m);
    while (PGresult* r = PQgetResult(db_.conn_)) PQclear(r);
}

void CopyOut::release() {
    if (message_) PQfreemem(message_);
    message_ = nullptr;
}

// PostgreSQL sends each row as one message, the signature in front of the first, and the
// trailer (a field count of -1) as a message of its own.
bool CopyOut::next(std::vector<std::string_view>& fields) {
    release();
    fields.clear();
    if (done_) return false;
    const int length = PQgetCopyData(db_.conn_, &message_, 0);
    if (length < 0) {
        done_ = true;
        if (length == -2) db_.fail("COPY TO");
        while (PGresult* r = PQgetResult(db_.conn_)) {
            if (PQresultStatus(r) != PGRES_COMMAND_OK) db_.fail("COPY TO", r);
            PQclear(r);
        }
        return false;
    }
    const char* p = message_;
    const char* const end = message_ + length;
    const auto need = [&](std::size_t bytes) {
        if (static_cast<std::size_t>(end - p) < bytes) throw Error(exit_internal, "COPY TO: a truncated binary row");
    };
    if (!header_read_) {
        need(binary::kHeader.size());
        if (std::memcmp(p, binary::kHeader.data(), 11) != 0)
            throw Error(exit_internal, "COPY TO: not a binary COPY stream");
        const std::uint32_t extension = big_endian(p + 15, 4);
        p += binary::kHeader.size();
        need(extension);
        p += extension;
        header_read_ = true;
    }
    need(2);
    const auto count = static_cast<std::int16_t>(big_endian(p, 2));
    p += 2;
    if (count < 0) return next(fields);  // the trailer: the end follows
    for (int i = 0; i < count; ++i) {
        need(4);
        const auto size = static_cast<std::int32_t>(big_endian(p, 4));
        p += 4;
        if (size < 0) {
            fields.emplace_back();
            continue;
        }
        need(static_cast<std::size_t>(size));
        fields.emplace_back(p, static_cast<std::size_t>(size));
        p += size;
    }
    return true;
}

std::int64_t CopyOut::int8(std::string_view field) {
    if (field.size() != 8)
        throw Error(exit_internal, "COPY TO: an int8 field of " + std::to_string(field.size()) + " bytes");
    const std::uint64_t high = big_endian(field.data(), 4), low = big_endian(field.data() + 4, 4);
    return static_cast<std::int64_t>(high << 32 | low);
}

std::string CopyOut::tid(std::string_view field) {
    if (field.size() != 6)
        throw Error(exit_internal, "COPY TO: a tid field of " + std::to_string(field.size()) + " bytes");
    return "(" + std::to_string(big_endian(field.data(), 4)) + "," + std::to_string(big_endian(field.data() + 4, 2)) +
           ")";
}

}  // namespace epc::db
