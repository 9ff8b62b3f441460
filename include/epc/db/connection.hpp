// The only code that talks to libpq: connections with the session settings a bulk loader wants,
// results, typed statement parameters, and errors that carry the right exit code (a lost server
// is transient, bad SQL is not). COPY lives in copy.hpp, transactions in transaction.hpp.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "epc/common/types.hpp"

struct pg_conn;
struct pg_result;

namespace epc::db {

class Result {
public:
    explicit Result(pg_result* r);
    int rows() const;
    bool is_null(int row, int col) const;
    std::string text(int row, int col) const;
    long long integer(int row, int col) const;  // NULL reads as 0
    bool boolean(int row, int col) const;       // 't'
    std::uint64_t affected() const;             // rows the command touched (0 for commands that count none)

private:
    struct Deleter {
        void operator()(pg_result* r) const;
    };
    std::unique_ptr<pg_result, Deleter> r_;
};

// One statement parameter in PostgreSQL's text form, or NULL: callers pass numbers and strings
// as they are, and the conversion is written once, here.
class Param {
public:
    Param(std::nullopt_t) {}
    Param(const char* s) : value_(s) {}
    Param(std::string s) : value_(std::move(s)) {}
    Param(std::string_view s) : value_(std::string(s)) {}
    template <typename T, typename = std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>>>
    Param(T n) : value_(std::to_string(n)) {}
    Param(bool b) : value_(b ? "true" : "false") {}
    template <typename T>
    Param(const std::optional<T>& v) {
        if (v) value_ = Param(*v).value_;
    }
    const char* c_str() const { return value_ ? value_->c_str() : nullptr; }

private:
    std::optional<std::string> value_;
};
using Params = std::vector<Param>;

class Connection {
public:
    // conninfo: libpq conninfo or URI; empty means libpq's defaults (PG* variables).
    // application_name shows up in pg_stat_activity, so an operator can see which stage/worker.
    // Throws Error(exit_transient) when the server cannot be reached.
    Connection(const std::string& conninfo, const std::string& application_name);
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;
    Connection(Connection&&) noexcept;
    Connection& operator=(Connection&&) noexcept;
    ~Connection();

    // Without parameters the text may hold several statements (schema DDL, migrations).
    Result exec(const std::string& sql);
    Result exec(const std::string& sql, const Params& params);

    // Whether the server is still there: cleanup (ROLLBACK, unlocking) is pointless otherwise.
    bool ok() const;
    // Which server this is, for logs: host, port and database, never the password.
    std::string describe() const;
    // Whether a table (or view) of that name, schema-qualified or on the search path, exists.
    bool has_table(const std::string& name);

private:
    friend class CopyIn;
    friend class CopyOut;
    Result check(pg_result* result, const std::string& sql);
    [[noreturn]] void fail(const std::string& what, pg_result* result = nullptr);

    pg_conn* conn_ = nullptr;
    std::string application_name_;
};

// Logs every statement with its duration (`--log-sql`), for a person who wants to see what the
// importer asks of the database. Parameter values are not logged.
void log_statements(bool on);

// The conninfo to use when --db is not given: libpq's defaults, unless no PG* connection variable
// is set and DATABASE_URL is (docs/cli.md).
std::string default_conninfo();

// Checks a conninfo/URI's syntax without connecting; the message never repeats the input, which
// may hold a password.
std::optional<std::string> conninfo_error(const std::string& conninfo);

}  // namespace epc::db
