// The statement log (`--log-sql`) inside src/db: each statement timed from its start to its
// last row.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

#include <spdlog/spdlog.h>

namespace epc::db {

bool statements_logged();

// Times one statement for the statement log; costs nothing when the log is off.
class StatementTimer {
public:
    StatementTimer(const std::string& application_name, const std::string& sql, std::size_t params)
        : on_(statements_logged()), application_name_(application_name), sql_(sql), params_(params) {
        if (on_) started_ = std::chrono::steady_clock::now();
    }
    ~StatementTimer() {
        if (!on_) return;
        const double ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started_).count();
        spdlog::info("sql [{}] {:.1f} ms{}: {}", application_name_, ms,
                     params_ ? " (" + std::to_string(params_) + " parameters)" : std::string(), sql_);
    }
    StatementTimer(const StatementTimer&) = delete;
    StatementTimer& operator=(const StatementTimer&) = delete;

private:
    bool on_;
    const std::string& application_name_;
    const std::string& sql_;
    std::size_t params_;
    std::chrono::steady_clock::time_point started_;
};

}  // namespace epc::db
