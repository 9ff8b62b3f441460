// How a download shows its progress: a log line at most once per interval, or, on a terminal
// (--progress), one bar redrawn in place on stderr.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace epc {

// "512 B", "1.5 MiB", "3.2 GiB".
std::string human_bytes(double bytes);

class DownloadProgress {
public:
    DownloadProgress(double interval_s, bool bar) : interval_s_(interval_s), bar_(bar) {}
    // A bar that was started shows its final state, however short the transfer was, and is left
    // on a line of its own.
    ~DownloadProgress();
    DownloadProgress(const DownloadProgress&) = delete;
    DownloadProgress& operator=(const DownloadProgress&) = delete;

    // The body starts arriving with `bytes` already on disk (a resume), out of `expected` (0: unknown).
    void start(std::uint64_t bytes, std::uint64_t expected);
    // `bytes` on disk now; reported when the interval since the last report has passed.
    void update(std::uint64_t bytes);

private:
    using Clock = std::chrono::steady_clock;
    void report(Clock::time_point now) const;
    void draw_bar(double pct, double rate, const std::string& eta) const;

    double interval_s_;
    bool bar_;
    bool started_ = false;
    Clock::time_point start_{}, last_report_{};
    std::uint64_t start_bytes_ = 0, bytes_ = 0, expected_ = 0;
};

}  // namespace epc
