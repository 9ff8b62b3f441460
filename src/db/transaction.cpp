#include "epc/db/transaction.hpp"

#include <spdlog/spdlog.h>

namespace epc::db {

Transaction::Transaction(Connection& db) : db_(db) { db_.exec("BEGIN"); }

Transaction::~Transaction() {
    if (!open_ || !db_.ok()) return;  // a lost connection has rolled back with its backend
    try {
        db_.exec("ROLLBACK");
    } catch (const std::exception& e) {
        spdlog::debug("rollback: {}", e.what());
    }
}

void Transaction::commit() {
    open_ = false;
    db_.exec("COMMIT");
}

}  // namespace epc::db
