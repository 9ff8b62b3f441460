#include "epc/app.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "epc/common/log.hpp"
#include "epc/common/options.hpp"
#include "epc/extract/archive.hpp"
#include "epc/extract/archive_store.hpp"
#include "epc/extract/batch_submit.hpp"
#include "epc/extract/credentials.hpp"
#include "epc/extract/download.hpp"
#include "epc/extract/release.hpp"
#include "epc/geocode/geocode.hpp"
#include "epc/load/ledger.hpp"
#include "epc/load/loader.hpp"
#include "epc/load/pg.hpp"
#include "epc/publish/publish.hpp"

namespace epc {

namespace {

std::atomic<bool> g_interrupted{false};

// AWS Batch stops a job with SIGTERM; a person with Ctrl-C. Either way: stop at the next row
// boundary, roll back the files in flight, keep the committed ones, and exit as "transient".
extern "C" void on_stop_signal(int) { g_interrupted = true; }

nlohmann::json archive_json(const ArchiveInfo& a) {
    nlohmann::json files = nlohmann::json::array();
    for (const CertFile& f : a.files) files.push_back({{"file_no", f.file_no}, {"name", f.name}, {"bytes", f.size}});
    return {{"path", a.path},         {"bytes", a.bytes},       {"layout", layout_name(a.layout)},
            {"identity", a.identity}, {"directories", a.directories}, {"certificate_files", files},
            {"problems", a.problems}, {"warnings", a.warnings}};
}

nlohmann::json load_json(const LoadSummary& s) {
    nlohmann::json files = nlohmann::json::array();
    for (const FileStats& f : s.files)
        files.push_back({{"file_no", f.file_no},
                         {"name", f.name},
                         {"rows_read", f.rows_read},
                         {"rows_loaded", f.rows_loaded},
                         {"rows_rejected", f.rows_rejected},
                         {"invalid_utf8_values", f.invalid_utf8_values},
                         {"invalid_values", f.invalid_values},
                         {"from_earlier_attempt", f.from_earlier_attempt}});
    return {{"run_id", s.run_id},
            {"resumed", s.resumed},
            {"complete", s.complete},
            {"run_files_loaded", s.run_files_loaded},
            {"rows_read", s.rows_read},
            {"rows_loaded", s.rows_loaded},
            {"rows_rejected", s.rows_rejected},
            {"invalid_utf8_values", s.invalid_utf8_values},
            {"invalid_values", s.invalid_values},
            {"rejects_by_reason", s.rejects_by_reason},
            {"seconds", s.seconds},
            {"rows_per_second", s.seconds > 0 ? static_cast<double>(s.rows_read) / s.seconds : 0.0},
            {"files", files}};
}

// Written to a temporary name and renamed, so a dashboard never reads half a report.
void write_report(const std::string& path, const nlohmann::json& report) {
    std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp);
        out << report.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
        if (!out) throw Error(exit_internal, "cannot write report " + tmp);
    }
    std::filesystem::rename(tmp, path);
}

ArchiveInfo validate_archive(const Options& o, const std::string& path, nlohmann::json& report) {
    spdlog::info("extract: inspecting {}", path);
    ArchiveInfo info = inspect_archive(path, {o.type, o.expect_dirs});
    report["archive"] = archive_json(info);
    for (const std::string& w : info.warnings) spdlog::warn("extract: {}", w);
    if (info.layout == Layout::legacy)
        spdlog::info("extract: legacy layout, {} Local Authority directories{}", info.directories,
                     o.expect_dirs ? " (expected " + std::to_string(*o.expect_dirs) + ")" : "");
    else
        spdlog::info("extract: {} layout", layout_name(info.layout));
    spdlog::info("extract: {} certificates files, {} bytes", info.files.size(), info.bytes);
    if (!info.problems.empty()) {
        for (const std::string& p : info.problems) spdlog::error("extract: {}", p);
        throw Error(exit_invalid_archive, "archive " + info.path + " failed validation with " +
                                              std::to_string(info.problems.size()) +
                                              " problem(s), listed above; nothing was loaded");
    }
    spdlog::info("extract: archive is valid");
    return info;
}

DownloadOptions download_options(const Options& o) {
    DownloadOptions d;
    d.source = *parse_source(o.source);
    d.type = o.type;
    d.base_url = o.base_url;
    d.work_dir = o.work_dir;
    // A bar that redraws itself suits a person at a terminal; logs get periodic lines instead.
    d.progress_bar = isatty(STDERR_FILENO) && o.log_format != LogFormat::json;
    d.creds = credentials_from_env();
    if (o.credentials_file) d.creds = merge_credentials(d.creds, credentials_from_file(*o.credentials_file));
    return d;
}

// check-release: exit 0 when the publisher offers a release the last published import did not
// have, exit 10 when not, so that `epc-import check-release && epc-import` works in cron.
int check_release(const Options& o, const std::string& conninfo, nlohmann::json& report) {
    DownloadOptions d = download_options(o);
    ReleaseInfo offered = fetch_release_info(d);
    std::optional<ImportedRelease> last = last_published_release(conninfo, o.type);
    bool fresh = is_new_release(offered, d.source, last);
    report["release"] = {{"source", o.source},           {"size", offered.size},
                         {"last_updated", offered.last_updated}, {"new", fresh},
                         {"last_published_run", last ? last->run_id : 0}};
    if (fresh)
        spdlog::info("check-release: {} {} release {} ({} bytes) is new", o.source, cert_type_name(o.type),
                     offered.last_updated.empty() ? "(undated)" : offered.last_updated, offered.size);
    else
        spdlog::info("check-release: nothing new: run {} already published this release", last->run_id);
    if (!o.submit) return fresh ? exit_ok : exit_nothing_new;
    // A scheduled check that found nothing new has succeeded: exit 0 either way.
    nlohmann::json jobs = nlohmann::json::array();
    if (fresh)
        for (const SubmittedJob& job : submit_import(*o.submit, o.type))
            jobs.push_back({{"name", job.name}, {"id", job.id}, {"definition", job.definition}});
    report["submitted"] = jobs;
    return exit_ok;
}

// The archive to work on: --zip, or a download (unless the release is the one published last
// time, then nullopt: nothing to do). A failed validation quarantines it before the error goes on.
std::optional<ArchiveInfo> obtain_archive(const Options& o, const std::string& conninfo, nlohmann::json& report) {
    // An s3:// target without the AWS CLI stops the run before anything is downloaded or loaded.
    const ArchiveTarget failed_to{o.failed_to ? *o.failed_to : o.work_dir + "/failed", o.s3_endpoint_url};
    check_archive_target("--failed-to", failed_to.location);
    if (o.archive_to) check_archive_target("--archive-to", *o.archive_to);
    std::string path;
    bool downloaded = false;
    DownloadResult fetched;
    if (o.zip) {
        path = *o.zip;
    } else {
        DownloadOptions d = download_options(o);
        if (o.command == "run" && !o.force) {
            ReleaseInfo offered = fetch_release_info(d);
            std::optional<ImportedRelease> last = last_published_release(conninfo, o.type);
            if (!is_new_release(offered, d.source, last)) {
                spdlog::info("extract: the {} release {} was already published by run {}; nothing to do "
                             "(--force imports it again)",
                             o.source, offered.last_updated.empty() ? std::to_string(offered.size) + " bytes"
                                                                    : offered.last_updated,
                             last->run_id);
                report["nothing_new"] = true;
                return std::nullopt;
            }
        }
        // Two runs of one type would write the same .part file: the second one stops at once.
        std::filesystem::create_directories(o.work_dir);
        const std::string lock_path = o.work_dir + "/" + std::string(cert_type_name(o.type)) + "-" + o.source + ".lock";
        struct FileLock {
            int fd;
            ~FileLock() {
                if (fd >= 0) close(fd);  // closing releases the flock
            }
        } lock{open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644)};
        if (lock.fd < 0) throw Error(exit_internal, "cannot open " + lock_path + ": " + std::strerror(errno));
        if (flock(lock.fd, LOCK_EX | LOCK_NB) != 0) {
            // Shards sharing a host (and its work dir) take turns: the first downloads, the
            // others then find the finished download and use it.
            if (!o.shard)
                throw Error(exit_locked, "another epc-import run is downloading into " + o.work_dir + " (" + lock_path + ")");
            spdlog::info("extract: another shard is downloading into {}; waiting for it", o.work_dir);
            if (flock(lock.fd, LOCK_EX) != 0) throw Error(exit_internal, "cannot lock " + lock_path + ": " + std::strerror(errno));
        }
        fetched = download_release(d);
        path = fetched.path;
        downloaded = true;
        report["download"] = {{"path", fetched.path},       {"bytes", fetched.bytes},
                              {"sha256", fetched.sha256},   {"last_updated", fetched.info.last_updated},
                              {"attempts", fetched.attempts}, {"resumed", fetched.resumed}};
    }
    ArchiveInfo info;
    try {
        info = validate_archive(o, path, report);
    } catch (const Error& e) {
        if (e.code() != exit_invalid_archive) throw;
        nlohmann::json why = {{"archive", path},
                              {"cert_type", cert_type_name(o.type)},
                              {"error", e.what()},
                              {"problems", report.contains("archive") ? report["archive"]["problems"] : nlohmann::json::array()}};
        std::string where = quarantine_archive(path, failed_to, downloaded, why);
        spdlog::error("extract: archive quarantined as {} (reasons in the .json beside it)", where);
        report["quarantined_to"] = where;
        throw;
    }
    if (downloaded) {
        info.source = o.source;
        info.release_last_updated = fetched.info.last_updated;
        info.sha256 = fetched.sha256;
    }
    if (o.archive_to && o.shard && o.shard->index != 0) {
        spdlog::info("extract: shard {} keeps no copy of the archive; shard 0 keeps it in {}", o.shard->index, *o.archive_to);
    } else if (o.archive_to) {
        std::string name = downloaded ? std::filesystem::path(path).stem().string() + "-" +
                                            (fetched.info.last_updated.empty() ? fetched.sha256.substr(0, 12)
                                                                               : fetched.info.last_updated.substr(0, 10)) +
                                            ".zip"
                                      : std::filesystem::path(path).filename().string();
        std::string kept = keep_archive(path, {*o.archive_to, o.s3_endpoint_url}, name);
        spdlog::info("extract: archive kept as {}", kept);
        report["archived_to"] = kept;
    }
    return info;
}

}  // namespace

int run_app(const std::vector<std::string>& args) {
    ParseResult parsed = parse_options(args);
    if (!parsed.options) return parsed.exit_code;
    const Options o = *parsed.options;
    setup_logging(o.log_format, o.verbose);

    nlohmann::json report = {{"command", o.command}, {"cert_type", cert_type_name(o.type)}};
    int code = exit_ok;
    try {
        check_options(o);
        if (o.dry_run) {
            std::cout << describe_options(o) << std::endl;
            return exit_ok;
        }
        std::signal(SIGINT, on_stop_signal);
        std::signal(SIGTERM, on_stop_signal);
        const std::string conninfo = o.db.empty() ? pg::default_conninfo() : o.db;
        // A full run holds its type's lock from before the download until after the publish, so a
        // second run started meanwhile (cron, a retried job) stops at once with exit 4 instead of
        // slipping in between two stages.
        std::optional<pg::Connection> run_lock;
        if (o.command == "run") {
            run_lock.emplace(conninfo, "epc-import " + std::string(cert_type_name(o.type)) + " run");
            Ledger(*run_lock, o.type).lock();
        }
        const bool locked = run_lock.has_value();
        bool nothing_new = false;
        if (o.command == "check-release") {
            code = check_release(o, conninfo, report);
            nothing_new = true;  // no stage follows
        } else if (o.command == "run" || o.command == "extract" || o.command == "load") {
            std::optional<ArchiveInfo> obtained = obtain_archive(o, conninfo, report);
            nothing_new = !obtained;
            if (obtained && (o.command == "load" || o.command == "run")) {
                const ArchiveInfo& archive = *obtained;
                LoadOptions lo;
                lo.type = o.type;
                lo.conninfo = conninfo;
                lo.jobs = o.jobs;
                lo.max_rejects = o.max_rejects;
                lo.backslash_escapes = o.backslash_escapes;
                lo.interrupted = &g_interrupted;
                lo.shard = o.shard;
                lo.locked_by_caller = locked;
                LoadSummary loaded = load_archive(archive, lo);
                report["load"] = load_json(loaded);
                if (o.shard) report["load"]["shard"] = {{"index", o.shard->index}, {"count", o.shard->count}};
            }
        }
        // run and publish geocode first when given a --geocoder (publish: the job that follows a split load).
        if ((o.command == "geocode" || ((o.command == "run" || o.command == "publish") && !o.geocoder.empty())) &&
            !g_interrupted && !nothing_new) {
            GeocodeOptions go;
            go.type = o.type;
            go.conninfo = conninfo;
            go.chain = parse_chain(o.geocoder);
            go.rate = o.geocode_rate;
            go.retry_not_found_days = o.geocode_retry_days;
            go.locked_by_caller = locked;
            GeocodeSummary g = geocode(go);
            report["geocode"] = {{"distinct_addresses", g.distinct_addresses},
                                 {"cache_hits", g.cache_hits},
                                 {"sent", g.sent},
                                 {"found", g.found},
                                 {"not_found", g.not_found},
                                 {"failed", g.failed},
                                 {"found_by_provider", g.found_by_provider},
                                 {"http_requests", g.http_requests},
                                 {"http_429", g.http_429},
                                 {"requests_per_second", g.seconds > 0 ? g.http_requests / g.seconds : 0.0},
                                 {"seconds", g.seconds}};
        }
        if ((o.command == "publish" || o.command == "run") && !g_interrupted && !nothing_new) {
            PublishSummary p = publish({o.type, conninfo, locked});
            report["publish"] = {{"run_id", p.run_id},           {"already_published", p.already_published},
                                 {"rows", p.rows},               {"added", p.added},
                                 {"disappeared", p.disappeared}, {"seconds", p.seconds},
                                 {"table", production_table(o.type)}};
        }
        report["status"] = "ok";
    } catch (const Error& e) {
        spdlog::error("{}", e.what());
        code = e.code();
        report["status"] = "failed";
        report["error"] = e.what();
    } catch (const std::exception& e) {
        spdlog::error("internal error: {}", e.what());
        code = exit_internal;
        report["status"] = "failed";
        report["error"] = e.what();
    }
    report["exit_code"] = code;
    if (o.report) {
        try {
            write_report(*o.report, report);
        } catch (const std::exception& e) {
            spdlog::error("cannot write --report {}: {}", *o.report, e.what());
            if (code == exit_ok) code = exit_internal;
        }
    }
    return code;
}

}  // namespace epc
