// The command line (docs/cli.md is the contract): parsed into one plain struct, validated in two
// layers (CLI11 validators for form, check_options() for meaning) with messages an operator can act on.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "epc/common/log.hpp"
#include "epc/common/types.hpp"
#include "epc/db/columns.hpp"
#include "epc/extract/batch_submit.hpp"

namespace epc {

// The subcommands; what each one runs is the app's stage table (src/app/app.cpp).
enum class Command { run, extract, load, geocode, publish, check_release, revert, status };
inline constexpr Command kCommands[] = {Command::run,     Command::extract,       Command::load,   Command::geocode,
                                        Command::publish, Command::check_release, Command::revert, Command::status};
std::string_view command_name(Command command);  // as typed on the command line: check-release

struct Options {
    Command command = Command::run;               // the subcommand (run when none is given)
    CertType type = CertType::domestic;           // --certtype
    bool type_given = false;                      // --certtype was on the command line (status: else all types)
    std::optional<std::string> zip;               // --zip: local archive instead of a download
    std::string source = "current";               // --source: current | legacy publisher service
    std::string base_url;                         // --base-url: the service's URL (empty: the real one)
    std::string work_dir = "./epc-work";          // --work-dir: downloads
    std::optional<std::string> credentials_file;  // --credentials-file: KEY=VALUE lines (EPC_TOKEN, ...)
    std::optional<std::string> archive_to;        // --archive-to DIR|s3://BUCKET/PREFIX: keep valid archives here
    std::optional<std::string> failed_to;  // --failed-to DIR|s3://BUCKET/PREFIX: quarantine (default <work-dir>/failed)
    std::string s3_endpoint_url;           // --s3-endpoint-url: aws --endpoint-url (empty: AWS itself)
    bool force = false;                    // --force: import even an unchanged release
    std::string db;                        // --db conninfo/URI; empty = libpq defaults / DATABASE_URL
    std::optional<int> expect_dirs;        // --expect-dirs: legacy layout must have exactly N dirs
    unsigned jobs = 0;                     // --jobs: parallel loader connections (0 = core count)
    std::optional<std::uint64_t> max_rejects;     // --max-rejects: error budget
    bool backslash_escapes = true;                // --csv-escapes: \" inside quotes is a quote
    std::string geocoder;                         // --geocoder CHAIN: empty = no geocoding
    double geocode_rate = 0;                      // --geocode-rate: requests/s per HTTP provider (0 = documented limit)
    int geocode_retry_days = 90;                  // --geocode-retry-days: ask again about "not found" after this
    LogFormat log_format = LogFormat::automatic;  // --log-format
    bool verbose = false;                         // --verbose: per-file detail
    bool log_sql = false;                         // --log-sql: every SQL statement with its duration
    std::optional<std::string> report;            // --report: run summary as JSON
    std::optional<Shard> shard;                   // --shard I/N, or AWS_BATCH_JOB_ARRAY_INDEX/_SIZE
    std::optional<SubmitOptions> submit;          // check-release --submit-queue ...
    bool dry_run = false;                         // --dry-run: print the configuration and stop
    ColumnChoice columns;                         // --columns LIST: certificate columns to keep (load, run)
    bool recommendations = false;                 // --recommendations: also load and publish the recommendations
    std::optional<std::string> config;            // --config FILE: where options were also read from
};

// What parse_options() found: options to run with, or an exit code (help, version, usage error)
// with the text already printed.
struct ParseResult {
    std::optional<Options> options;
    int exit_code = 0;
};

// `env` looks up environment variables (AWS_BATCH_JOB_ARRAY_INDEX/_SIZE); tests pass their own.
using EnvLookup = std::function<const char*(const char*)>;
ParseResult parse_options(
    const std::vector<std::string>& args,
    const EnvLookup& env = [](const char* name) -> const char* { return std::getenv(name); });

// "I/N" with 0 <= I < N; nullopt when malformed.
std::optional<Shard> parse_shard(const std::string& text);

// The effective configuration as --dry-run prints it (no secrets: --db is not shown).
std::string describe_options(const Options& options);

// Meaning-level checks (files exist, combinations make sense). Throws Error(exit_usage).
void check_options(const Options& options);

}  // namespace epc
