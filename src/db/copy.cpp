#include "epc/db/copy.hpp"

#include <libpq-fe.h>

#include <algorithm>

#include "epc/db/copy_binary.hpp"

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

}  // namespace epc::db
