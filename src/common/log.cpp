#include "epc/common/log.hpp"

#include <unistd.h>

#include <ctime>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

namespace epc {

void JsonFormatter::format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) {
    using namespace std::chrono;
    auto t = msg.time;
    std::time_t secs = system_clock::to_time_t(t);
    auto millis = duration_cast<milliseconds>(t.time_since_epoch()).count() % 1000;
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char stamp[40];
    std::size_t n = std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    std::snprintf(stamp + n, sizeof stamp - n, ".%03dZ", static_cast<int>(millis));

    nlohmann::json line;
    line["time"] = stamp;
    auto level = spdlog::level::to_string_view(msg.level);
    line["level"] = std::string(level.data(), level.size());
    line["message"] = std::string(msg.payload.data(), msg.payload.size());
    // Replace rather than throw on invalid UTF-8: a log line must never take the run down.
    std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    text += '\n';
    dest.append(text.data(), text.data() + text.size());
}

std::unique_ptr<spdlog::formatter> JsonFormatter::clone() const { return std::make_unique<JsonFormatter>(); }

void setup_logging(LogFormat format, bool verbose) {
    bool tty = isatty(STDERR_FILENO);
    bool json = format == LogFormat::json || (format == LogFormat::automatic && !tty);
    std::shared_ptr<spdlog::logger> logger;
    if (json) {
        logger = std::make_shared<spdlog::logger>("epc", std::make_shared<spdlog::sinks::stderr_sink_mt>());
        logger->set_formatter(std::make_unique<JsonFormatter>());
    } else {
        logger = std::make_shared<spdlog::logger>("epc", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
        logger->set_pattern("%H:%M:%S %^%-5l%$ %v");
    }
    logger->set_level(verbose ? spdlog::level::debug : spdlog::level::info);
    logger->flush_on(spdlog::level::info);
    spdlog::set_default_logger(logger);
}

}  // namespace epc
