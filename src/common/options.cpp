#include "epc/common/options.hpp"

#include <filesystem>
#include <iostream>
#include <thread>

#include <CLI/CLI.hpp>

#include "epc/geocode/geocode.hpp"
#include "epc/load/pg.hpp"

namespace epc {

namespace {

const char* kExitCodes = R"(
Exit codes:
  0   success
  1   unexpected internal error
  2   usage error (bad option or combination)
  3   archive invalid (not a zip, corrupt, or failed validation): quarantined, nothing loaded
  4   another run of this certificate type holds the lock (retry later)
  5   transient failure (network, service 5xx/429, database unavailable, interrupted): retry
  6   too many rejected rows (--max-rejects)
  7   the publisher refused the credentials (401/403): fix them, do not retry
  10  check-release only: nothing new since the last published import

Environment:
  EPC_TOKEN                    current service Bearer token
  EPC_API_EMAIL, EPC_API_KEY   legacy service credentials
  EPC_LOGIN_TOKEN              legacy service, older accounts: the login-with-token link's token
  GOOGLE_API_KEY, OS_PLACES_API_KEY   for those geocoders
  PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD, ...   as libpq reads them
  DATABASE_URL   used when --db and the PG* connection variables are absent
)";

void add_common_options(CLI::App& app, Options& o, std::string& certtype, std::string& log_format,
                        std::string& csv_escapes) {
    app.add_option("--certtype", certtype, "certificate type: domestic | non-domestic | display")
        ->check(CLI::IsMember({"domestic", "non-domestic", "display"}))
        ->capture_default_str();
    app.add_option("--zip", o.zip, "use this local archive instead of downloading one");
    app.add_option("--source", o.source, "which publisher service to download from: current | legacy")
        ->check(CLI::IsMember({"current", "legacy"}))
        ->capture_default_str();
    app.add_option("--base-url", o.base_url, "the service's base URL (mirrors, tests; default: the real one)");
    app.add_option("--work-dir", o.work_dir, "directory for downloads")->capture_default_str();
    app.add_option("--credentials-file", o.credentials_file,
                   "file of KEY=VALUE lines (EPC_TOKEN, or EPC_API_EMAIL with EPC_API_KEY or EPC_LOGIN_TOKEN); "
                   "overrides the variables");
    app.add_option("--archive-to", o.archive_to,
                   "keep each valid archive in this directory or s3://BUCKET/PREFIX (S3 needs the AWS CLI; "
                   "default: not kept)");
    app.add_option("--failed-to", o.failed_to,
                   "quarantine an archive that fails validation in this directory or s3://BUCKET/PREFIX, with a "
                   "JSON report (default: <work-dir>/failed)");
    app.add_option("--s3-endpoint-url", o.s3_endpoint_url,
                   "S3-compatible store for s3:// locations, passed to the AWS CLI as --endpoint-url "
                   "(default: AWS S3)");
    app.add_flag("--force", o.force, "import even if the release is the one imported last time");
    app.add_option("--db", o.db,
                   "libpq conninfo or postgresql:// URI (default: libpq's PG* variables, then DATABASE_URL)");
    app.add_option("--expect-dirs", o.expect_dirs,
                   "legacy layout: require exactly N Local Authority directories (default: report the count)")
        ->check(CLI::Range(1, 100000));
    app.add_option("--jobs", o.jobs, "parallel loader connections (default: number of cores)")
        ->check(CLI::Range(1, 64));
    app.add_option("--max-rejects", o.max_rejects, "fail the run when more rows than this are rejected (default: no limit)");
    app.add_option("--csv-escapes", csv_escapes,
                   "backslash: \\\" inside a quoted field is a quote (files built before 29 April 2026); "
                   "rfc: only \"\" is")
        ->check(CLI::IsMember({"backslash", "rfc"}))
        ->capture_default_str();
    app.add_option("--geocoder", o.geocoder,
                   "providers tried in order, comma-separated: uprn:FILE (OS Open UPRN), onspd:FILE (ONS Postcode "
                   "Directory), postcodes-io, google, nominatim, os-places; HTTP ones take =URL to override the "
                   "endpoint (default: no geocoding)");
    app.add_option("--geocode-rate", o.geocode_rate,
                   "requests per second per HTTP geocoder (default: the provider's documented limit)")
        ->check(CLI::Range(0.01, 10000.0));
    app.add_option("--geocode-retry-days", o.geocode_retry_days,
                   "ask again about addresses cached as not found after this many days")
        ->check(CLI::Range(0, 100000))
        ->capture_default_str();
    app.add_option("--log-format", log_format, "text | json (default: text on a terminal, json otherwise)")
        ->check(CLI::IsMember({"text", "json"}));
    app.add_flag("-v,--verbose", o.verbose, "log per-file detail");
    app.add_option("--report", o.report, "write the run summary as JSON to this file");
}

}  // namespace

ParseResult parse_options(const std::vector<std::string>& args) {
    Options o;
    std::string certtype = "domestic";
    std::string log_format;
    std::string csv_escapes = "backslash";

    CLI::App app("epc-import: import the EPC open data of England and Wales into PostgreSQL", "epc-import");
    app.set_version_flag("--version", std::string("epc-import ") + EPC_VERSION);
    app.footer(kExitCodes);
    add_common_options(app, o, certtype, log_format, csv_escapes);

    CLI::App* run = app.add_subcommand(
        "run", "full pipeline (the default): validate the archive, load it into staging, publish to production");
    CLI::App* extract = app.add_subcommand("extract", "validate the archive's layout and headers; touches no table");
    CLI::App* load = app.add_subcommand("load", "validate the archive, then stream its certificates into staging");
    CLI::App* geocode = app.add_subcommand(
        "geocode", "locate the distinct addresses of staging not yet in the geocode cache (--geocoder)");
    CLI::App* publish = app.add_subcommand(
        "publish", "swap the loaded staging table in as the production table epc.<type>_certificates");
    CLI::App* check = app.add_subcommand(
        "check-release", "exit 0 when the publisher has a release newer than the last published import, 10 if not");
    for (CLI::App* sub : {run, extract, load, geocode, publish, check}) sub->fallthrough();
    app.require_subcommand(0, 1);

    std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes them back to front
    try {
        app.parse(reversed);
    } catch (const CLI::ParseError& e) {
        return {std::nullopt, app.exit(e) == 0 ? exit_ok : exit_usage};
    }
    for (CLI::App* sub : {run, extract, load, geocode, publish, check})
        if (sub->parsed()) o.command = sub->get_name();
    o.type = *parse_cert_type(certtype);
    o.log_format = log_format == "json" ? LogFormat::json : log_format == "text" ? LogFormat::text : LogFormat::automatic;
    o.backslash_escapes = csv_escapes == "backslash";
    if (o.jobs == 0) o.jobs = std::max(1u, std::thread::hardware_concurrency());
    return {o, exit_ok};
}

void check_options(const Options& o) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (o.command == "publish" || o.command == "geocode" || o.command == "check-release") {
        if (o.zip) throw Error(exit_usage, o.command + " takes no --zip");
        if (o.command == "geocode" && o.geocoder.empty())
            throw Error(exit_usage, "geocode needs --geocoder, e.g. --geocoder uprn:OS_OPEN_UPRN.csv,postcodes-io");
    } else if (o.zip) {
        if (!fs::exists(*o.zip, ec)) throw Error(exit_usage, "--zip " + *o.zip + ": no such file");
        if (fs::is_directory(*o.zip, ec))
            throw Error(exit_usage, "--zip " + *o.zip + " is a directory; give the .zip file itself");
    }
    if (auto problem = pg::conninfo_error(o.db)) throw Error(exit_usage, "--db is " + *problem);
    if (!o.geocoder.empty()) parse_chain(o.geocoder);  // throws what is wrong with it
    if (o.report) {
        fs::path parent = fs::path(*o.report).parent_path();
        if (!parent.empty() && !fs::is_directory(parent, ec))
            throw Error(exit_usage, "--report " + *o.report + ": directory " + parent.string() + " does not exist");
    }
}

}  // namespace epc
