// The command line (shared/cli.md is the contract): parsed into one plain struct, validated in two
// layers (CLI11 validators for form, check_options() for meaning) with messages an operator can act on.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "epc/common/types.hpp"

namespace epc {

enum class LogFormat { automatic, text, json };

struct Options {
    std::string command = "run";              // run | extract | load | publish
    CertType type = CertType::domestic;       // --certtype
    std::optional<std::string> zip;           // --zip: local archive instead of a download
    std::string db;                           // --db conninfo/URI; empty = libpq defaults / DATABASE_URL
    std::optional<int> expect_dirs;           // --expect-dirs: legacy layout must have exactly N dirs
    unsigned jobs = 0;                        // --jobs: parallel loader connections (0 = core count)
    std::optional<std::uint64_t> max_rejects;  // --max-rejects: error budget
    bool backslash_escapes = true;            // --csv-escapes: \" inside quotes is a quote
    LogFormat log_format = LogFormat::automatic;  // --log-format
    bool verbose = false;                     // --verbose: per-file detail
    std::optional<std::string> report;        // --report: run summary as JSON
};

// What parse_options() found: options to run with, or an exit code (help, version, usage error)
// with the text already printed.
struct ParseResult {
    std::optional<Options> options;
    int exit_code = 0;
};

ParseResult parse_options(const std::vector<std::string>& args);

// Meaning-level checks (files exist, combinations make sense). Throws Error(exit_usage).
void check_options(const Options& options);

}  // namespace epc
