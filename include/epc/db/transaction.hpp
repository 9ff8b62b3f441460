// A transaction as a scope: BEGIN when made, ROLLBACK when left without commit() (an exception,
// an early return), so no code path leaves a connection inside a transaction it abandoned.
#pragma once

#include "epc/db/connection.hpp"

namespace epc::db {

class Transaction {
public:
    explicit Transaction(Connection& db);
    ~Transaction();
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;

    void commit();

private:
    Connection& db_;
    bool open_ = true;
};

}  // namespace epc::db
