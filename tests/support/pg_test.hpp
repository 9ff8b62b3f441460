// A real PostgreSQL for tests: the server comes from the PG* variables (bin/test starts a
// throw-away cluster); every TestDatabase is a fresh database with a unique name, dropped after
// (unless EPC_KEEP_FAILED_DB=1 and its test failed: see keep_for_inspection).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "epc/db/columns.hpp"
#include "epc/db/connection.hpp"
#include "epc/db/copy.hpp"
#include "epc/db/session.hpp"

namespace epc::test {

class TestDatabase {
public:
    TestDatabase() {
        static std::atomic<int> counter{0};
        name_ = "epc_test_" + std::to_string(getpid()) + "_" + std::to_string(counter++);
        db::Connection admin("", "epc-import tests");
        admin.exec("DROP DATABASE IF EXISTS " + name_);
        admin.exec("CREATE DATABASE " + name_ + " ENCODING 'UTF8' TEMPLATE template0");
        conninfo_ = "dbname=" + name_;
    }
    ~TestDatabase() {
        if (keep_for_inspection()) return;
        try {
            db::Connection admin("", "epc-import tests");
            admin.exec("DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
        } catch (...) {
        }
    }
    TestDatabase(const TestDatabase&) = delete;
    TestDatabase& operator=(const TestDatabase&) = delete;

    const std::string& conninfo() const { return conninfo_; }
    const std::string& name() const { return name_; }
    db::Connection connect() { return db::Connection(conninfo_, "epc-import tests"); }
    // A session as the app makes one per command; stages take the type's lock through it.
    db::Session session(CertType type = CertType::domestic) const { return db::Session(conninfo_, type, "tests"); }

    std::string scalar(const std::string& sql) {
        db::Connection c = connect();
        db::Result r = c.exec(sql);
        return r.rows() ? r.text(0, 0) : std::string();
    }
    long long count(const std::string& sql) { return std::stoll(scalar(sql)); }

private:
    // EPC_KEEP_FAILED_DB=1: when the current test has failed (or is being left by an exception),
    // keep the database and say how to reach it. bin/with-postgres keeps its throw-away cluster
    // running after a failure under the same variable, until Enter is pressed.
    bool keep_for_inspection() const {
        const char* keep = std::getenv("EPC_KEEP_FAILED_DB");
        if (!keep || std::string(keep) != "1") return false;
        if (!testing::Test::HasFailure() && std::uncaught_exceptions() == 0) return false;
        const testing::TestInfo* test = testing::UnitTest::GetInstance()->current_test_info();
        const std::string test_name = test ? std::string(test->test_suite_name()) + "." + test->name()
                                           : std::string("(no test)");
        std::string psql = "psql";
        const char* const flags[][2] = {{"-h", "PGHOST"}, {"-p", "PGPORT"}, {"-U", "PGUSER"}};
        for (const auto& flag : flags)
            if (const char* value = std::getenv(flag[1])) psql += std::string(" ") + flag[0] + " " + value;
        std::fprintf(stderr, "pg_test: EPC_KEEP_FAILED_DB=1: %s failed; kept its database %s:\n  %s -d %s\n",
                     test_name.c_str(), name_.c_str(), psql.c_str(), name_.c_str());
        return true;
    }

    std::string name_;
    std::string conninfo_;
};

// Loads `copy_text` (COPY text format) into a new temporary table on `db` shaped like staging's
// loaded columns, so it can be compared with EXCEPT ALL.
inline void load_expected(db::Connection& db, const std::string& table, const std::string& copy_text) {
    db.exec("CREATE TEMP TABLE " + table + " (" + certificate_columns_ddl() + ")");
    db::CopyIn copy(db, table, certificate_column_list(), db::CopyFormat::text);
    copy.put(copy_text);
    copy.finish();
}

// Rows in `a` but not in `b`, as multisets.
inline long long rows_missing(db::Connection& db, const std::string& a, const std::string& b) {
    const std::string cols = certificate_column_list();
    db::Result r = db.exec("SELECT count(*) FROM (SELECT " + cols + " FROM " + a + " EXCEPT ALL SELECT " + cols +
                           " FROM " + b + ") d");
    return r.integer(0, 0);
}

// Polls `count_sql` (its table may not exist yet) until the count reaches `at_least`; gives up
// after `timeout` or once `give_up` is set. Returns whether the count was reached.
inline bool wait_for_count(db::Connection& c, const std::string& count_sql, long long at_least,
                           std::chrono::milliseconds timeout, const std::atomic<bool>* give_up = nullptr) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline && !(give_up && *give_up)) {
        try {
            if (c.exec(count_sql).integer(0, 0) >= at_least) return true;
        } catch (const Error&) {  // the table does not exist yet
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
}

inline std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

}  // namespace epc::test
