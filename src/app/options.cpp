#include "epc/app/options.hpp"

#include <filesystem>
#include <iostream>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "epc/db/connection.hpp"
#include "epc/geocode/geocode.hpp"

namespace epc {

namespace {

const char* const kExitCodes = R"(
Exit codes:
  0   success
  1   unexpected internal error
  2   usage error (bad option or combination, nothing to publish or revert)
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
  AWS_BATCH_JOB_ARRAY_INDEX, AWS_BATCH_JOB_ARRAY_SIZE   load: the --shard of an AWS Batch array child
  AWS_* (credentials, AWS_REGION, ...)   as the AWS CLI reads them, for s3:// and --submit-queue
)";

struct RawOptions {  // option values that are converted after parsing
    std::string certtype = "domestic";
    std::string log_format;
    std::string csv_escapes = "backslash";
    std::string shard;
    std::string columns;
    SubmitOptions submit;
};

void add_common_options(CLI::App& app, Options& o, RawOptions& raw) {
    app.add_option("--certtype", raw.certtype, "certificate type: domestic | non-domestic | display")
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
    app.add_option("--jobs", o.jobs,
                   "parallel loader connections (default: number of cores); with 1, geocode and publish also "
                   "compare a release with production, and publish builds a first release, on one connection "
                   "instead of two")
        ->check(CLI::Range(1, 64));
    app.add_option("--max-rejects", o.max_rejects,
                   "fail the run when more rows than this are rejected (default: no limit)");
    app.add_option("--csv-escapes", raw.csv_escapes,
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
    app.add_option("--log-format", raw.log_format, "text | json (default: text on a terminal, json otherwise)")
        ->check(CLI::IsMember({"text", "json"}));
    app.add_flag("-v,--verbose", o.verbose, "log per-file detail");
    app.add_flag("--log-sql", o.log_sql,
                 "log every SQL statement the importer sends, with its duration (not its values)");
    app.add_option("--report", o.report, "write the run summary as JSON to this file");
    app.add_option("--shard", raw.shard,
                   "load: load only share I of N of the archive's files (I counts from 0); each share is loaded by "
                   "its own process, the last to finish completes the load, then run `publish` once (default: "
                   "AWS_BATCH_JOB_ARRAY_INDEX/AWS_BATCH_JOB_ARRAY_SIZE when set, else all files)")
        ->check([](const std::string& v) {
            return parse_shard(v) ? std::string() : "expected I/N with 0 <= I < N, e.g. 0/4; got '" + v + "'";
        });
    app.add_option("--columns", raw.columns,
                   "certificate columns to keep, as the publisher names them (any case): NAME,... or +NAME,... "
                   "(added to the 8 default columns, which are always kept), or all (every column of the files)");
    app.add_flag("--recommendations", o.recommendations,
                 "load: also load every recommendations file (all its columns) into staging; publish then "
                 "publishes them to epc.<type>_recommendations with the certificates");
    // CLI11 reads every option above from the file too (TOML, or INI: `name = value` lines).
    app.set_config("--config", "", "read options from this file (TOML/INI: e.g. columns = \"+TENURE\")")
        ->check(CLI::ExistingFile);
    app.add_flag("--dry-run", o.dry_run,
                 "check the options, print the effective configuration as JSON and exit, touching nothing");
    app.add_option("--submit-queue", raw.submit.queue,
                   "check-release: when there is a new release, submit the import to this AWS Batch job queue "
                   "(AWS CLI) and exit 0 either way");
    app.add_option("--submit-run-definition", raw.submit.run_definition,
                   "check-release: job definition of a full run, submitted when --submit-shards is 1");
    app.add_option("--submit-load-definition", raw.submit.load_definition,
                   "check-release: job definition of a shard's load, submitted as an array job of --submit-shards "
                   "children");
    app.add_option("--submit-publish-definition", raw.submit.publish_definition,
                   "check-release: job definition of the publish that runs once every shard has loaded");
    app.add_option("--submit-shards", raw.submit.shards, "check-release: how many shards to split the load into")
        ->check(CLI::Range(1, 10000))
        ->capture_default_str();
    app.add_option("--batch-endpoint-url", raw.submit.endpoint_url,
                   "AWS Batch endpoint for --submit-queue, passed to the AWS CLI as --endpoint-url (default: AWS)");
}

// Only a load is split into shards. An array child's variables make the default, so a job
// definition does not have to spell the index out.
std::optional<Shard> shard_from(const std::string& given, const EnvLookup& env) {
    std::optional<Shard> shard;
    if (!given.empty()) {
        shard = parse_shard(given);
    } else if (const char* index = env("AWS_BATCH_JOB_ARRAY_INDEX"); index && *index) {
        const char* size = env("AWS_BATCH_JOB_ARRAY_SIZE");
        if (!size || !*size)
            throw Error(exit_usage, "AWS_BATCH_JOB_ARRAY_INDEX is " + std::string(index) +
                                        " but AWS_BATCH_JOB_ARRAY_SIZE is not set; set it (the array size) or pass "
                                        "--shard I/N");
        shard = parse_shard(std::string(index) + "/" + size);
        if (!shard)
            throw Error(exit_usage, "AWS_BATCH_JOB_ARRAY_INDEX=" + std::string(index) +
                                        " and AWS_BATCH_JOB_ARRAY_SIZE=" + size +
                                        " do not make a shard I/N with 0 <= I < N");
    }
    if (shard && shard->count == 1) shard.reset();  // one share of one is the whole archive
    return shard;
}

}  // namespace

std::optional<Shard> parse_shard(const std::string& text) {
    std::size_t slash = text.find('/');
    if (slash == std::string::npos || slash == 0 || slash + 1 == text.size()) return std::nullopt;
    auto number = [](const std::string& s) -> std::optional<int> {
        if (s.size() > 6 || s.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
        return std::stoi(s);
    };
    auto index = number(text.substr(0, slash));
    auto count = number(text.substr(slash + 1));
    if (!index || !count || *count < 1 || *index >= *count) return std::nullopt;
    return Shard{*index, *count};
}

std::string_view command_name(Command command) {
    switch (command) {
        case Command::run: return "run";
        case Command::extract: return "extract";
        case Command::load: return "load";
        case Command::geocode: return "geocode";
        case Command::publish: return "publish";
        case Command::check_release: return "check-release";
        case Command::revert: return "revert";
        case Command::status: return "status";
    }
    return "?";
}

namespace {

std::optional<Command> parse_command(std::string_view name) {
    for (Command c : kCommands)
        if (command_name(c) == name) return c;
    return std::nullopt;
}

}  // namespace

ParseResult parse_options(const std::vector<std::string>& args, const EnvLookup& env) {
    Options o;
    RawOptions raw;

    CLI::App app("epc-import: import the EPC open data of England and Wales into PostgreSQL", "epc-import");
    app.set_version_flag("--version", std::string("epc-import ") + EPC_VERSION);
    app.footer(kExitCodes);
    add_common_options(app, o, raw);

    CLI::App* run = app.add_subcommand(
        "run", "full pipeline (the default): validate the archive, load it into staging, publish to production");
    CLI::App* extract = app.add_subcommand("extract", "validate the archive's layout and headers; touches no table");
    CLI::App* load = app.add_subcommand("load", "validate the archive, then stream its certificates into staging");
    CLI::App* geocode = app.add_subcommand(
        "geocode", "locate the distinct addresses of staging not yet in the geocode cache (--geocoder)");
    CLI::App* publish = app.add_subcommand(
        "publish",
        "make the loaded staging table the release in the production table epc.<type>_certificates, applying "
        "what changed since the last one (geocoding first when "
        "--geocoder is given)");
    CLI::App* check = app.add_subcommand(
        "check-release", "exit 0 when the publisher has a release newer than the last published import, 10 if not");
    CLI::App* revert = app.add_subcommand(
        "revert", "bring back the release before the last publish of the type (one step back), in one transaction");
    CLI::App* status = app.add_subcommand(
        "status", "how each certificate type stands (or the --certtype one): last published run and release, "
                  "counts, rejects, located shares, newest run, and whether the publisher has a newer release");
    for (CLI::App* sub : {run, extract, load, geocode, publish, check, revert, status}) sub->fallthrough();
    app.require_subcommand(0, 1);

    std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes them back to front
    try {
        app.parse(reversed);
    } catch (const CLI::ParseError& e) {
        return {std::nullopt, app.exit(e) == 0 ? exit_ok : exit_usage};
    }
    for (CLI::App* sub : {run, extract, load, geocode, publish, check, revert, status})
        if (sub->parsed()) o.command = *parse_command(sub->get_name());
    o.type = *parse_cert_type(raw.certtype);
    o.type_given = app.count("--certtype") > 0;
    o.log_format = raw.log_format == "json"   ? LogFormat::json
                   : raw.log_format == "text" ? LogFormat::text
                                              : LogFormat::automatic;
    o.backslash_escapes = raw.csv_escapes == "backslash";
    if (const CLI::Option* config = app.get_config_ptr(); config && config->count() > 0)
        o.config = config->as<std::string>();
    if (o.jobs == 0) o.jobs = std::max(1u, std::thread::hardware_concurrency());
    try {
        // The array variables only mean something to the commands that load.
        if (!raw.shard.empty() || o.command == Command::load || o.command == Command::run)
            o.shard = shard_from(raw.shard, env);
        if (!raw.columns.empty()) o.columns = parse_column_choice(raw.columns);
    } catch (const Error& e) {
        std::cerr << e.what() << "\n";
        return {std::nullopt, exit_usage};
    }
    const SubmitOptions& sub = raw.submit;
    if (!sub.queue.empty() || !sub.run_definition.empty() || !sub.load_definition.empty() ||
        !sub.publish_definition.empty() || sub.shards != 1 || !sub.endpoint_url.empty())
        o.submit = sub;
    return {o, exit_ok};
}

void check_options(const Options& o) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const std::string command(command_name(o.command));
    if (o.command == Command::publish || o.command == Command::geocode || o.command == Command::check_release ||
        o.command == Command::revert || o.command == Command::status) {
        if (o.zip) throw Error(exit_usage, command + " takes no --zip");
        if (o.command == Command::geocode && o.geocoder.empty())
            throw Error(exit_usage, "geocode needs --geocoder, e.g. --geocoder uprn:OS_OPEN_UPRN.csv,postcodes-io");
    } else if (o.zip) {
        if (!fs::exists(*o.zip, ec)) throw Error(exit_usage, "--zip " + *o.zip + ": no such file");
        if (fs::is_directory(*o.zip, ec))
            throw Error(exit_usage, "--zip " + *o.zip + " is a directory; give the .zip file itself");
    }
    if (o.shard && o.command != Command::load)
        throw Error(exit_usage, "--shard " + std::to_string(o.shard->index) + "/" + std::to_string(o.shard->count) +
                                    " (or AWS_BATCH_JOB_ARRAY_INDEX/_SIZE) splits a load: run `epc-import load` in "
                                    "each shard, then `epc-import publish` once; `" +
                                    command + "` cannot be split");
    if (o.submit) {
        const SubmitOptions& s = *o.submit;
        if (o.command != Command::check_release) throw Error(exit_usage, "--submit-* options belong to check-release");
        if (s.queue.empty()) throw Error(exit_usage, "--submit-* options need --submit-queue, the AWS Batch job queue");
        if (s.shards == 1 && s.run_definition.empty())
            throw Error(exit_usage, "--submit-queue with --submit-shards 1 needs --submit-run-definition");
        if (s.shards > 1 && (s.load_definition.empty() || s.publish_definition.empty()))
            throw Error(exit_usage, "--submit-shards " + std::to_string(s.shards) +
                                        " needs --submit-load-definition (the array job) and "
                                        "--submit-publish-definition (the job that runs after it)");
    }
    if (auto problem = db::conninfo_error(o.db)) throw Error(exit_usage, "--db is " + *problem);
    if (!o.geocoder.empty()) parse_chain(o.geocoder);  // throws what is wrong with it
    if (o.report) {
        fs::path parent = fs::path(*o.report).parent_path();
        if (!parent.empty() && !fs::is_directory(parent, ec))
            throw Error(exit_usage, "--report " + *o.report + ": directory " + parent.string() + " does not exist");
    }
}

std::string describe_options(const Options& o) {
    auto optional = [](const std::optional<std::string>& v) { return v ? nlohmann::json(*v) : nlohmann::json(); };
    nlohmann::json j = {
        {"command", command_name(o.command)},
        {"cert_type", o.command == Command::status && !o.type_given ? "all" : cert_type_name(o.type)},
        {"zip", optional(o.zip)},
        {"source", o.source},
        {"base_url", o.base_url},
        {"work_dir", o.work_dir},
        {"archive_to", optional(o.archive_to)},
        {"failed_to", o.failed_to ? *o.failed_to : o.work_dir + "/failed"},
        {"s3_endpoint_url", o.s3_endpoint_url},
        {"force", o.force},
        {"jobs", o.jobs},
        {"max_rejects", o.max_rejects ? nlohmann::json(*o.max_rejects) : nlohmann::json()},
        {"csv_escapes", o.backslash_escapes ? "backslash" : "rfc"},
        {"geocoder", o.geocoder},
        {"geocode_rate", o.geocode_rate},
        {"geocode_retry_days", o.geocode_retry_days},
        {"log_format", o.log_format == LogFormat::json   ? "json"
                       : o.log_format == LogFormat::text ? "text"
                                                         : "auto"},
        {"report", optional(o.report)},
        {"columns", describe(o.columns)},
        {"recommendations", o.recommendations},
        {"config", optional(o.config)},
        {"shard", o.shard ? nlohmann::json{{"index", o.shard->index}, {"count", o.shard->count}} : nlohmann::json()},
        {"submit", o.submit ? nlohmann::json{{"queue", o.submit->queue},
                                             {"run_definition", o.submit->run_definition},
                                             {"load_definition", o.submit->load_definition},
                                             {"publish_definition", o.submit->publish_definition},
                                             {"shards", o.submit->shards},
                                             {"endpoint_url", o.submit->endpoint_url}}
                            : nlohmann::json()},
    };
    return j.dump(2);
}

}  // namespace epc
