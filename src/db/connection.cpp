#include "epc/db/connection.hpp"

#include <libpq-fe.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <utility>

#include <spdlog/spdlog.h>

#include "statement_timer.hpp"

namespace epc::db {

namespace {

// Set once from --log-sql before any connection exists; read by every connection's thread.
std::atomic<bool> g_log_statements{false};  // NOLINT(cppcoreguidelines-avoid-non-const-global-variables)

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

// The statement's first line, short: enough to recognise it in an error or the statement log.
std::string first_line(const std::string& sql) {
    std::size_t start = sql.find_first_not_of(" \n");
    if (start == std::string::npos) return "";
    return sql.substr(start, std::min<std::size_t>(sql.find('\n', start) - start, 80));
}

}  // namespace

void log_statements(bool on) { g_log_statements = on; }

bool statements_logged() { return g_log_statements.load(std::memory_order_relaxed); }

void Result::Deleter::operator()(pg_result* r) const { PQclear(r); }

Result::Result(pg_result* r) : r_(r) {}
int Result::rows() const { return PQntuples(r_.get()); }
bool Result::is_null(int row, int col) const { return PQgetisnull(r_.get(), row, col); }
std::string Result::text(int row, int col) const { return PQgetvalue(r_.get(), row, col); }
long long Result::integer(int row, int col) const {
    return is_null(row, col) ? 0 : std::atoll(PQgetvalue(r_.get(), row, col));
}
bool Result::boolean(int row, int col) const { return text(row, col) == "t"; }
std::uint64_t Result::affected() const {
    const char* count = PQcmdTuples(r_.get());
    return *count ? std::stoull(count) : 0;
}

Connection::Connection(const std::string& conninfo, const std::string& application_name)
    : application_name_(application_name) {
    const char* keys[] = {"dbname", "application_name", "client_encoding", nullptr};
    const char* values[] = {conninfo.c_str(), application_name.c_str(), "UTF8", nullptr};
    conn_ = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
    if (!conn_ || PQstatus(conn_) != CONNECTION_OK) {
        std::string why = conn_ ? trim_message(PQerrorMessage(conn_)) : "out of memory";
        PQfinish(conn_);
        conn_ = nullptr;
        throw Error(exit_transient, "cannot connect to PostgreSQL: " + why);
    }
    // Server notices ("table does not exist, skipping") are for the debug log, not the terminal.
    PQsetNoticeProcessor(
        conn_, [](void*, const char* message) { spdlog::debug("postgres: {}", trim_message(message)); }, nullptr);
    const char* encoding = PQparameterStatus(conn_, "server_encoding");
    if (!encoding || std::strcmp(encoding, "UTF8") != 0) {
        const std::string message = "database " + describe() + " uses encoding " + (encoding ? encoding : "?") +
                                    "; epc-import needs a UTF8 database (CREATE DATABASE ... ENCODING 'UTF8')";
        PQfinish(std::exchange(conn_, nullptr));  // a constructor that throws runs no destructor
        throw Error(exit_usage, message);
    }
    // Losing the last few commits in a server crash is harmless here: every file is re-loaded
    // unless its ledger row committed, and waiting for WAL flushes would slow each file's commit.
    exec("SET synchronous_commit = off");
}

Connection::Connection(Connection&& other) noexcept
    : conn_(std::exchange(other.conn_, nullptr)), application_name_(std::move(other.application_name_)) {}

Connection& Connection::operator=(Connection&& other) noexcept {
    if (this != &other) {
        PQfinish(conn_);
        conn_ = std::exchange(other.conn_, nullptr);
        application_name_ = std::move(other.application_name_);
    }
    return *this;
}

Connection::~Connection() { PQfinish(conn_); }

void Connection::fail(const std::string& what, pg_result* result) {
    const char* sqlstate = result ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
    std::string message = trim_message(result ? PQresultErrorMessage(result) : PQerrorMessage(conn_));
    const bool transient = !ok() || is_transient(sqlstate);
    PQclear(result);
    throw Error(transient ? exit_transient : exit_internal, "PostgreSQL error during " + what + ": " + message);
}

Result Connection::exec(const std::string& sql) {
    StatementTimer timer(application_name_, sql, 0);
    // PQexec, unlike PQexecParams, accepts several statements (the schema DDL).
    return check(PQexec(conn_, sql.c_str()), sql);
}

Result Connection::exec(const std::string& sql, const Params& params) {
    StatementTimer timer(application_name_, sql, params.size());
    std::vector<const char*> values;
    values.reserve(params.size());
    for (const Param& p : params) values.push_back(p.c_str());
    return check(
        PQexecParams(conn_, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(), nullptr, nullptr, 0),
        sql);
}

Result Connection::check(pg_result* r, const std::string& sql) {
    ExecStatusType status = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) fail("'" + first_line(sql) + "'", r);
    return Result(r);
}

bool Connection::ok() const { return conn_ && PQstatus(conn_) == CONNECTION_OK; }

bool Connection::has_table(const std::string& name) {
    return exec("SELECT to_regclass($1) IS NOT NULL", {name}).boolean(0, 0);
}

std::string Connection::describe() const {
    std::string host = PQhost(conn_) ? PQhost(conn_) : "";
    if (host.empty() || host[0] == '/') host = "local socket";
    return std::string(PQdb(conn_)) + " on " + host + ":" + PQport(conn_);
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

}  // namespace epc::db
