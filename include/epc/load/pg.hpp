// Thin RAII layer over libpq: connections with the session settings a bulk loader wants, results,
// COPY, and errors that carry the right exit code (a lost server is transient, bad SQL is not).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <libpq-fe.h>

#include "epc/common/types.hpp"

namespace epc::pg {

struct ResultDeleter {
    void operator()(PGresult* r) const { PQclear(r); }
};

class Result {
public:
    explicit Result(PGresult* r) : r_(r) {}
    int rows() const { return PQntuples(r_.get()); }
    bool is_null(int row, int col) const { return PQgetisnull(r_.get(), row, col); }
    std::string text(int row, int col) const { return PQgetvalue(r_.get(), row, col); }
    long long integer(int row, int col) const;
    std::string affected() const { return PQcmdTuples(r_.get()); }

private:
    std::unique_ptr<PGresult, ResultDeleter> r_;
};

using Params = std::vector<std::optional<std::string>>;

class Connection {
public:
    // conninfo: libpq conninfo or URI; empty means libpq's defaults (PG* variables).
    // application_name shows up in pg_stat_activity, so an operator can see which stage/worker.
    // Throws Error(exit_transient) when the server cannot be reached.
    Connection(const std::string& conninfo, const std::string& application_name);
    Connection(Connection&&) = default;
    Connection& operator=(Connection&&) = default;

    Result exec(const std::string& sql);
    Result exec(const std::string& sql, const Params& params);

    // COPY ... FROM STDIN: start, put data (any chunking), end. Errors throw.
    void copy_start(const std::string& sql);
    void copy_put(const char* data, std::size_t size);
    void copy_end();

    PGconn* raw() { return conn_.get(); }
    // Which server this is, for logs: host, port and database, never the password.
    std::string describe();

private:
    Result check(PGresult* result, const std::string& sql);
    [[noreturn]] void fail(const std::string& what, PGresult* result = nullptr);

    struct ConnDeleter {
        void operator()(PGconn* c) const { PQfinish(c); }
    };
    std::unique_ptr<PGconn, ConnDeleter> conn_;
};

// The conninfo to use when --db is not given: libpq's defaults, unless no PG* connection variable
// is set and DATABASE_URL is (shared/cli.md).
std::string default_conninfo();

// Checks a conninfo/URI's syntax without connecting; the message never repeats the input, which
// may hold a password.
std::optional<std::string> conninfo_error(const std::string& conninfo);

}  // namespace epc::pg
