#include "epc/extract/download_progress.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <spdlog/spdlog.h>

namespace epc {

std::string human_bytes(double bytes) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024 && u < 4) {
        bytes /= 1024;
        ++u;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
    return buf;
}

DownloadProgress::~DownloadProgress() {
    if (!bar_ || !started_) return;
    report(Clock::now());
    std::fputc('\n', stderr);
}

void DownloadProgress::start(std::uint64_t bytes, std::uint64_t expected) {
    start_ = last_report_ = Clock::now();
    start_bytes_ = bytes_ = bytes;
    expected_ = expected;
    started_ = true;
}

void DownloadProgress::update(std::uint64_t bytes) {
    bytes_ = bytes;
    auto now = Clock::now();
    if (std::chrono::duration<double>(now - last_report_).count() < interval_s_) return;
    last_report_ = now;
    report(now);
}

void DownloadProgress::report(Clock::time_point now) const {
    double seconds = std::chrono::duration<double>(now - start_).count();
    double rate = seconds > 0 ? double(bytes_ - start_bytes_) / seconds : 0;
    if (expected_ == 0) {
        spdlog::info("download: {} ({}/s)", human_bytes(double(bytes_)), human_bytes(rate));
        return;
    }
    double pct = 100.0 * double(bytes_) / double(expected_);
    std::string eta = rate > 0 ? std::to_string(std::llround(double(expected_ - bytes_) / rate)) + " s" : "?";
    if (bar_) {
        draw_bar(pct, rate, eta);
        return;
    }
    spdlog::info("download: {} of {} ({:.1f}%), {}/s, ETA {}", human_bytes(double(bytes_)),
                 human_bytes(double(expected_)), pct, human_bytes(rate), eta);
}

void DownloadProgress::draw_bar(double pct, double rate, const std::string& eta) const {
    constexpr int kWidth = 30;
    int filled = static_cast<int>(pct / 100.0 * kWidth);
    std::fprintf(stderr, "\rdownload [%-*s] %5.1f%%  %s of %s  %s/s  ETA %s   ", kWidth,
                 std::string(static_cast<std::size_t>(std::clamp(filled, 0, kWidth)), '#').c_str(), pct,
                 human_bytes(double(bytes_)).c_str(), human_bytes(double(expected_)).c_str(), human_bytes(rate).c_str(),
                 eta.c_str());
    std::fflush(stderr);
}

}  // namespace epc
