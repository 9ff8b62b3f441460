#include "epc/load/pg.hpp"

#include <cstdlib>
#include <cstring>

#include <spdlog/spdlog.h>

namespace epc::pg {

namespace {

// SQLSTATE classes worth retrying the whole job for: connection trouble, server shutting down,
// out of resources, serialization failures and deadlocks.
bool is_transient(const char* sqlstate) {
    if (!sqlstate) return false;
    return std::strncmp(sqlstate, "08", 2) == 0 || std::strncmp(sqlstate, "53", 2) == 0 ||
           std::strncmp(sqlstate, "57P", 3) == 0 || std::strcmp(sqlstate, "40001") == 0 ||
           std::strcmp(sqlstate, "40P01") == 0;
}

std::string trim_message(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
}

}  // namespace

long long Result::integer(int row, int col) const {
    return is_null(row, col) ? 0 : std::atoll(PQgetvalue(r_.get(), row, col));
}

Connection::Connection(const std::string& conninfo, const std::string& application_name) {
    const char* keys[] = {"dbname", "application_name", "client_encoding", nullptr};
    const char* values[] = {conninfo.c_str(), application_name.c_str(), "UTF8", nullptr};
    conn_.reset(PQconnectdbParams(keys, values, /*expand_dbname=*/1));
    if (!conn_ || PQstatus(conn_.get()) != CONNECTION_OK) {
        std::string why = conn_ ? trim_message(PQerrorMessage(conn_.get())) : "out of memory";
        throw Error(exit_transient, "cannot connect to PostgreSQL: " + why);
    }
    // Server notices ("table does not exist, skipping") are for the debug log, not the terminal.
    PQsetNoticeProcessor(
        conn_.get(), [](void*, const char* message) { spdlog::debug("postgres: {}", trim_message(message)); }, nullptr);
    const char* encoding = PQparameterStatus(conn_.get(), "server_encoding");
    if (!encoding || std::strcmp(encoding, "UTF8") != 0)
        throw Error(exit_usage, "database " + describe() + " uses encoding " + (encoding ? encoding : "?") +
                                    "; epc-import needs a UTF8 database (CREATE DATABASE ... ENCODING 'UTF8')");
    // Losing the last few commits in a server crash is harmless here: every file is re-loaded
    // unless its ledger row committed, and waiting for WAL flushes would slow each file's commit.
    exec("SET synchronous_commit = off");
}

void Connection::fail(const std::string& what, PGresult* result) {
    const char* sqlstate = result ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
    std::string message = trim_message(result ? PQresultErrorMessage(result) : PQerrorMessage(conn_.get()));
    if (result) PQclear(result);
    bool lost = PQstatus(conn_.get()) != CONNECTION_OK;
    throw Error(lost || is_transient(sqlstate) ? exit_transient : exit_internal,
                "PostgreSQL error during " + what + ": " + message);
}

Result Connection::exec(const std::string& sql) {
    // PQexec, unlike PQexecParams, accepts several statements (the schema DDL).
    return check(PQexec(conn_.get(), sql.c_str()), sql);
}

Result Connection::exec(const std::string& sql, const Params& params) {
    std::vector<const char*> values;
    values.reserve(params.size());
    for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
    return check(PQexecParams(conn_.get(), sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(),
                              nullptr, nullptr, 0),
                 sql);
}

Result Connection::check(PGresult* r, const std::string& sql) {
    ExecStatusType status = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
        std::size_t start = sql.find_first_not_of(" \n");
        std::string first_line = sql.substr(start, sql.find('\n', start) - start);
        fail("'" + first_line.substr(0, 80) + "'", r);
    }
    return Result(r);
}

void Connection::copy_start(const std::string& sql) {
    PGresult* r = PQexec(conn_.get(), sql.c_str());
    if (!r || PQresultStatus(r) != PGRES_COPY_IN) fail(sql.substr(0, 80), r);
    PQclear(r);
}

void Connection::copy_put(const char* data, std::size_t size) {
    // PQputCopyData takes an int length; buffers are far smaller, but stay safe.
    while (size > 0) {
        int chunk = static_cast<int>(std::min<std::size_t>(size, 1u << 30));
        if (PQputCopyData(conn_.get(), data, chunk) != 1) fail("COPY");
        data += chunk;
        size -= static_cast<std::size_t>(chunk);
    }
}

void Connection::copy_end() {
    if (PQputCopyEnd(conn_.get(), nullptr) != 1) fail("COPY end");
    PGresult* r;
    while ((r = PQgetResult(conn_.get())) != nullptr) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK) fail("COPY", r);
        PQclear(r);
    }
}

std::string Connection::describe() {
    std::string host = PQhost(conn_.get()) ? PQhost(conn_.get()) : "";
    if (host.empty() || host[0] == '/') host = "local socket";
    return std::string(PQdb(conn_.get())) + " on " + host + ":" + PQport(conn_.get());
}

std::string default_conninfo() {
    for (const char* var : {"PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE"})
        if (std::getenv(var)) return "";
    const char* url = std::getenv("DATABASE_URL");
    return url ? url : "";
}

std::optional<std::string> conninfo_error(const std::string& conninfo) {
    if (conninfo.empty()) return std::nullopt;
    char* err = nullptr;
    PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
    PQfreemem(err);  // libpq quotes pieces of the input in it, and the input may hold a password
    if (opts) {
        PQconninfoFree(opts);
        return std::nullopt;
    }
    return "not a valid libpq conninfo ('host=... dbname=...') or postgresql:// URI";
}

}  // namespace epc::pg
