// Logging: readable lines on a terminal, one JSON object per line elsewhere (CloudWatch Logs
// Insights reads those). spdlog 1.10 has no JSON output and does not escape, hence our formatter.
#pragma once

#include <memory>

#include <spdlog/formatter.h>

namespace epc {

// automatic: text on a terminal, json otherwise.
enum class LogFormat { automatic, text, json };

class JsonFormatter : public spdlog::formatter {
public:
    void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override;
    std::unique_ptr<spdlog::formatter> clone() const override;
};

// Routes spdlog's default logger to stderr in the chosen format.
void setup_logging(LogFormat format, bool verbose);

}  // namespace epc
