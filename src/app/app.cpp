#include "epc/app/app.hpp"

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

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "epc/app/options.hpp"
#include "epc/common/log.hpp"
#include "epc/db/session.hpp"
#include "epc/extract/archive.hpp"
#include "epc/extract/archive_store.hpp"
#include "epc/extract/batch_submit.hpp"
#include "epc/extract/credentials.hpp"
#include "epc/extract/download.hpp"
#include "epc/extract/release.hpp"
#include "epc/geocode/geocode.hpp"
#include "epc/load/loader.hpp"
#include "epc/publish/publish.hpp"
#include "epc/status/status.hpp"

namespace epc {

namespace {

// A signal handler can only reach a global.
std::atomic<bool> g_interrupted{false};  // NOLINT(cppcoreguidelines-avoid-non-const-global-variables)

// AWS Batch stops a job with SIGTERM; a person with Ctrl-C. Either way: stop at the next row
// boundary, roll back the files in flight, keep the committed ones, and exit as "transient".
extern "C" void on_stop_signal(int) { g_interrupted = true; }

// The stages of the pipeline, and which of them each command runs (check-release and status run
// none: they only ask the publisher and the database). Revert is a stage of its own: it works on production
// only, never on staging.
enum Stage : unsigned { extract_stage = 1, load_stage = 2, geocode_stage = 4, publish_stage = 8, revert_stage = 16 };

struct CommandPlan {
    Command command;
    unsigned stages;
    bool geocode_only_with_chain;  // geocode runs only when --geocoder is given
    bool locks_whole_run;          // holds the type's lock from before the download to after the publish
};

// A full run holds its type's lock throughout, so a second run started meanwhile (cron, a retried
// job) stops at once with exit 4 instead of slipping in between two stages. A stage run alone
// takes the lock itself. publish geocodes first when given a --geocoder: it is the job that
// follows a split load.
constexpr CommandPlan kPlans[] = {
    {Command::run, extract_stage | load_stage | geocode_stage | publish_stage, true, true},
    {Command::extract, extract_stage, false, false},
    {Command::load, extract_stage | load_stage, false, false},
    {Command::geocode, geocode_stage, false, false},
    {Command::publish, geocode_stage | publish_stage, true, false},
    {Command::check_release, 0, false, false},
    {Command::revert, revert_stage, false, false},
    {Command::status, 0, false, false},
};

const CommandPlan& plan_for(Command command) {
    for (const CommandPlan& plan : kPlans)
        if (plan.command == command) return plan;
    throw Error(exit_internal, "no plan for command " + std::string(command_name(command)));
}

nlohmann::json archive_json(const ArchiveInfo& a) {
    nlohmann::json files = nlohmann::json::array();
    for (const CertFile& f : a.files) files.push_back({{"file_no", f.file_no}, {"name", f.name}, {"bytes", f.size}});
    nlohmann::json recommendations = nlohmann::json::array();
    for (const CertFile& f : a.recommendations)
        recommendations.push_back({{"file_no", f.file_no}, {"name", f.name}, {"bytes", f.size}});
    return {{"path", a.path},
            {"bytes", a.bytes},
            {"layout", layout_name(a.layout)},
            {"identity", a.identity},
            {"directories", a.directories},
            {"certificate_files", files},
            {"recommendation_files", recommendations},
            {"problems", a.problems},
            {"warnings", a.warnings}};
}

// The counts of a set of loaded files (certificates or recommendations), with each file's.
nlohmann::json loaded_files_json(const LoadedFiles& l) {
    nlohmann::json files = nlohmann::json::array();
    for (const FileStats& f : l.files)
        files.push_back({{"file_no", f.file_no},
                         {"name", f.name},
                         {"rows_read", f.rows_read},
                         {"rows_loaded", f.rows_loaded},
                         {"rows_rejected", f.rows_rejected},
                         {"invalid_utf8_values", f.invalid_utf8_values},
                         {"invalid_values", f.invalid_values},
                         {"invalid_by_column", f.invalid_by_column},
                         {"from_earlier_attempt", f.from_earlier_attempt}});
    return {{"rows_read", l.rows_read},
            {"rows_loaded", l.rows_loaded},
            {"rows_rejected", l.rows_rejected},
            {"invalid_utf8_values", l.invalid_utf8_values},
            {"invalid_values", l.invalid_values},
            {"invalid_by_column", l.invalid_by_column},
            {"rejects_by_reason", l.rejects_by_reason},
            {"columns", l.columns},
            {"files", files}};
}

nlohmann::json recommendations_json(const RecommendationsPublished& r, CertType type) {
    if (!r.published) return nullptr;
    return {{"rows", r.rows},
            {"added", r.added},
            {"removed", r.removed},
            {"created", r.created},
            {"table", recommendation_tables(type).production}};
}

nlohmann::json load_json(const LoadSummary& s) {
    nlohmann::json j = loaded_files_json(s);
    j.update({{"run_id", s.run_id},
              {"resumed", s.resumed},
              {"complete", s.complete},
              {"run_files_loaded", s.run_files_loaded},
              {"unknown_columns", s.unknown_columns},
              {"unknown_columns_loaded", s.unknown_columns_loaded},
              {"seconds", s.seconds},
              {"rows_per_second", s.seconds > 0 ? static_cast<double>(s.rows_read) / s.seconds : 0.0},
              {"recommendations", s.recommendations.loaded ? loaded_files_json(s.recommendations) : nullptr}});
    return j;
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
    else spdlog::info("extract: {} layout", layout_name(info.layout));
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

// A signal that arrived during a stage stops the run before the next one: the job did not finish.
void stop_if_interrupted(const char* next_stage) {
    if (g_interrupted)
        throw Error(exit_transient, std::string("interrupted before ") + next_stage +
                                        "; what is done is kept and a re-run carries on from there");
}

// The file lock that keeps two downloads of one type and source out of one work dir. Shards
// sharing a host (and its work dir) take turns: the first downloads, the others then find the
// finished download and use it.
class DownloadLock {
public:
    explicit DownloadLock(const Options& o)
        : path_(o.work_dir + "/" + std::string(cert_type_name(o.type)) + "-" + o.source + ".lock"),
          fd_(open_lock_file(o.work_dir, path_)) {
        if (fd_ < 0) throw Error(exit_internal, "cannot open " + path_ + ": " + std::strerror(errno));
        if (flock(fd_, LOCK_EX | LOCK_NB) == 0) return;
        if (!o.shard) {
            close(fd_);
            throw Error(exit_locked, "another epc-import run is downloading into " + o.work_dir + " (" + path_ + ")");
        }
        spdlog::info("extract: another shard is downloading into {}; waiting for it", o.work_dir);
        if (flock(fd_, LOCK_EX) != 0) {
            close(fd_);
            throw Error(exit_internal, "cannot lock " + path_ + ": " + std::strerror(errno));
        }
    }
    ~DownloadLock() { close(fd_); }  // closing releases the flock
    DownloadLock(const DownloadLock&) = delete;
    DownloadLock& operator=(const DownloadLock&) = delete;

private:
    static int open_lock_file(const std::string& work_dir, const std::string& path) {
        std::filesystem::create_directories(work_dir);
        return open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    }

    std::string path_;
    int fd_ = -1;
};

// One command's work: the stages its plan names, on one database session made when first needed
// (extract alone never connects).
class Pipeline {
public:
    Pipeline(const Options& o, nlohmann::json& report)
        : o_(o), report_(report), conninfo_(o.db.empty() ? db::default_conninfo() : o.db) {}

    int run() {
        if (o_.command == Command::check_release) return check_release();
        if (o_.command == Command::status) return show_status();
        const CommandPlan& plan = plan_for(o_.command);
        if (plan.locks_whole_run) session().lock();
        std::optional<ArchiveInfo> archive;
        if (plan.stages & extract_stage) {
            archive = obtain_archive();
            if (!archive) return exit_ok;  // nothing new to import
        }
        if (plan.stages & load_stage) load_or_quarantine(*archive);
        if ((plan.stages & geocode_stage) && (!plan.geocode_only_with_chain || !o_.geocoder.empty())) {
            stop_if_interrupted("geocoding");
            geocode_staging();
        }
        if (plan.stages & publish_stage) {
            stop_if_interrupted("publishing");
            publish_staging();
        }
        if (plan.stages & revert_stage) revert_last_publish();
        return exit_ok;
    }

private:
    db::Session& session() {
        if (!session_) {
            session_.emplace(conninfo_, o_.type, std::string(command_name(o_.command)));
            session_->set_jobs(o_.jobs);
        }
        return *session_;
    }

    // check-release: exit 0 when the publisher offers a release the last published import did
    // not have, exit 10 when not, so that `epc-import check-release && epc-import` works in cron.
    int check_release() {
        DownloadOptions d = download_options(o_);
        ReleaseInfo offered = fetch_release_info(d);
        std::optional<db::ImportedRelease> last = session().last_published_release();
        bool fresh = is_new_release(offered, d.source, last);
        report_["release"] = {{"source", o_.source},
                              {"size", offered.size},
                              {"last_updated", offered.last_updated},
                              {"new", fresh},
                              {"last_published_run", last ? last->run_id : 0}};
        if (fresh)
            spdlog::info("check-release: {} {} release {} ({} bytes) is new", o_.source, cert_type_name(o_.type),
                         offered.last_updated.empty() ? "(undated)" : offered.last_updated, offered.size);
        else spdlog::info("check-release: nothing new: run {} already published this release", last->run_id);
        if (!o_.submit) return fresh ? exit_ok : exit_nothing_new;
        // A scheduled check that found nothing new has succeeded: exit 0 either way.
        nlohmann::json jobs = nlohmann::json::array();
        if (fresh)
            for (const SubmittedJob& job : submit_import(*o_.submit, o_.type))
                jobs.push_back({{"name", job.name}, {"id", job.id}, {"definition", job.definition}});
        report_["submitted"] = jobs;
        return exit_ok;
    }

    // status: every type, or the --certtype one; a table on a terminal, JSON otherwise. The
    // publisher is asked briefly: a status that waits minutes for a retry is no use to an operator.
    int show_status() {
        StatusRequest request;
        request.types = o_.type_given
                            ? std::vector<CertType>{o_.type}
                            : std::vector<CertType>{CertType::domestic, CertType::non_domestic, CertType::display};
        request.source = *parse_source(o_.source);
        request.ask_publisher = [this](CertType type) {
            DownloadOptions d = download_options(o_);
            d.type = type;
            d.max_attempts = 2;
            d.initial_backoff_s = 0.5;
            d.max_backoff_s = 2;
            d.max_retry_after_s = 5;
            d.connect_timeout_s = 10;
            d.low_speed_time_s = 15;
            return fetch_release_info(d);
        };
        const nlohmann::json status = read_status(conninfo_, request);
        if (!o_.type_given) report_["cert_type"] = "all";
        report_.update(status);
        const bool text = o_.log_format == LogFormat::text ||
                          (o_.log_format == LogFormat::automatic && isatty(STDOUT_FILENO));
        if (text) std::cout << status_text(status) << std::flush;
        else std::cout << status.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
        return exit_ok;
    }

    // The archive to work on: --zip, or a download (unless the release is the one published last
    // time, then nullopt: nothing to do). A failed validation quarantines it before the error goes on.
    std::optional<ArchiveInfo> obtain_archive() {
        // An s3:// target without the AWS CLI stops the run before anything is downloaded or loaded.
        const ArchiveTarget failed_to{o_.failed_to ? *o_.failed_to : o_.work_dir + "/failed", o_.s3_endpoint_url};
        check_archive_target("--failed-to", failed_to.location);
        if (o_.archive_to) check_archive_target("--archive-to", *o_.archive_to);
        std::optional<DownloadResult> fetched;
        if (!o_.zip) {
            if (o_.command == Command::run && !o_.force && !release_is_new()) return std::nullopt;
            fetched = download();
        }
        const std::string path = fetched ? fetched->path : *o_.zip;
        obtained_ = Obtained{path, failed_to, fetched.has_value()};
        ArchiveInfo info = validate_or_quarantine();
        if (fetched) {
            info.source = o_.source;
            info.release_last_updated = fetched->info.last_updated;
            info.sha256 = fetched->sha256;
        }
        keep(path, fetched);
        return info;
    }

    bool release_is_new() {
        DownloadOptions d = download_options(o_);
        ReleaseInfo offered = fetch_release_info(d);
        std::optional<db::ImportedRelease> last = session().last_published_release();
        if (is_new_release(offered, d.source, last)) return true;
        spdlog::info("extract: the {} release {} was already published by run {}; nothing to do "
                     "(--force imports it again)",
                     o_.source,
                     offered.last_updated.empty() ? std::to_string(offered.size) + " bytes" : offered.last_updated,
                     last->run_id);
        report_["nothing_new"] = true;
        return false;
    }

    DownloadResult download() {
        DownloadLock lock(o_);  // two runs of one type would write the same .part file
        DownloadResult fetched = download_release(download_options(o_));
        report_["download"] = {{"path", fetched.path},         {"bytes", fetched.bytes},
                               {"sha256", fetched.sha256},     {"last_updated", fetched.info.last_updated},
                               {"attempts", fetched.attempts}, {"resumed", fetched.resumed}};
        return fetched;
    }

    ArchiveInfo validate_or_quarantine() {
        try {
            return validate_archive(o_, obtained_->path, report_);
        } catch (const Error& e) {
            if (e.code() == exit_invalid_archive) quarantine(e);
            throw;
        }
    }

    // A corrupt entry that only inflating reveals (a CRC-32 or size that does not match, a broken
    // deflate stream) fails the load like a failed validation: the archive goes to quarantine.
    void load_or_quarantine(const ArchiveInfo& archive) {
        try {
            load(archive);
        } catch (const Error& e) {
            if (e.code() == exit_invalid_archive) quarantine(e);
            throw;
        }
    }

    // Moves a download (copies the operator's --zip) to --failed-to, with the reasons beside it.
    void quarantine(const Error& e) {
        const nlohmann::json why = {
            {"archive", obtained_->path},
            {"cert_type", cert_type_name(o_.type)},
            {"error", e.what()},
            {"problems", report_.contains("archive") ? report_["archive"]["problems"] : nlohmann::json::array()}};
        const std::string where = quarantine_archive(obtained_->path, obtained_->failed_to, obtained_->downloaded, why);
        spdlog::error("extract: archive quarantined as {} (reasons in the .json beside it)", where);
        report_["quarantined_to"] = where;
    }

    // --archive-to: a download is kept under a name that says which release it was.
    void keep(const std::string& path, const std::optional<DownloadResult>& fetched) {
        if (!o_.archive_to) return;
        if (o_.shard && o_.shard->index != 0) {
            spdlog::info("extract: shard {} keeps no copy of the archive; shard 0 keeps it in {}", o_.shard->index,
                         *o_.archive_to);
            return;
        }
        namespace fs = std::filesystem;
        const std::string name = fetched ? fs::path(path).stem().string() + "-" +
                                               (fetched->info.last_updated.empty()
                                                    ? fetched->sha256.substr(0, 12)
                                                    : fetched->info.last_updated.substr(0, 10)) +
                                               ".zip"
                                         : fs::path(path).filename().string();
        std::string kept = keep_archive(path, {*o_.archive_to, o_.s3_endpoint_url}, name);
        spdlog::info("extract: archive kept as {}", kept);
        report_["archived_to"] = kept;
    }

    void load(const ArchiveInfo& archive) {
        LoadOptions lo;
        lo.jobs = o_.jobs;
        lo.max_rejects = o_.max_rejects;
        lo.backslash_escapes = o_.backslash_escapes;
        lo.interrupted = &g_interrupted;
        lo.shard = o_.shard;
        lo.columns = o_.columns;
        lo.recommendations = o_.recommendations;
        LoadSummary loaded = load_archive(session(), archive, lo);
        report_["load"] = load_json(loaded);
        if (o_.shard) report_["load"]["shard"] = {{"index", o_.shard->index}, {"count", o_.shard->count}};
    }

    void geocode_staging() {
        GeocodeOptions go;
        go.chain = parse_chain(o_.geocoder);
        go.rate = o_.geocode_rate;
        go.retry_not_found_days = o_.geocode_retry_days;
        GeocodeSummary g = geocode(session(), go);
        report_["geocode"] = {
            {"to_locate", g.to_locate},
            {"sent", g.sent},
            {"found", g.found},
            {"not_found", g.not_found},
            {"failed", g.failed},
            {"postcodes_asked", g.postcodes_asked},
            {"found_by_provider", g.found_by_provider},
            {"http_requests", g.http_requests},
            {"http_429", g.http_429},
            {"requests_per_second", g.seconds > 0 ? static_cast<double>(g.http_requests) / g.seconds : 0.0},
            {"seconds", g.seconds}};
    }

    void publish_staging() {
        PublishSummary p = publish(session());
        report_["publish"] = {{"run_id", p.run_id},
                              {"already_published", p.already_published},
                              {"rows", p.rows},
                              {"added", p.added},
                              {"disappeared", p.disappeared},
                              {"changed", p.changed},
                              {"first_release", p.first_release},
                              {"recommendations", recommendations_json(p.recommendations, o_.type)},
                              {"seconds", p.seconds},
                              {"table", production_table(o_.type)}};
    }

    void revert_last_publish() {
        RevertSummary r = revert(session());
        report_["revert"] = {{"run_id", r.run_id},     {"back_to_run", r.back_to_run},
                             {"rows", r.rows},         {"removed", r.removed},
                             {"restored", r.restored}, {"reinserted", r.reinserted},
                             {"seconds", r.seconds},   {"table", production_table(o_.type)}};
        if (r.recommendations)
            report_["revert"]["recommendations"] = {{"rows", *r.recommendations},
                                                    {"table", recommendation_tables(o_.type).production}};
    }

    // The archive this command works on, and where it goes if it turns out to be invalid.
    struct Obtained {
        std::string path;
        ArchiveTarget failed_to;
        bool downloaded = false;
    };

    const Options& o_;
    nlohmann::json& report_;
    const std::string conninfo_;
    std::optional<db::Session> session_;
    std::optional<Obtained> obtained_;
};

void fail_report(nlohmann::json& report, const std::string& error) {
    report["status"] = "failed";
    report["error"] = error;
}

// Runs the command; failures become their exit codes, logged and in the report.
int run_command(const Options& o, nlohmann::json& report) {
    try {
        check_options(o);
        if (o.dry_run) {
            std::cout << describe_options(o) << std::endl;
            return exit_ok;
        }
        std::signal(SIGINT, on_stop_signal);
        std::signal(SIGTERM, on_stop_signal);
        const int code = Pipeline(o, report).run();
        report["status"] = "ok";
        return code;
    } catch (const Error& e) {
        spdlog::error("{}", e.what());
        fail_report(report, e.what());
        return e.code();
    } catch (const std::exception& e) {
        spdlog::error("internal error: {}", e.what());
        fail_report(report, e.what());
        return exit_internal;
    }
}

}  // namespace

int run_app(const std::vector<std::string>& args) {
    ParseResult parsed = parse_options(args);
    if (!parsed.options) return parsed.exit_code;
    const Options o = *parsed.options;
    setup_logging(o.log_format, o.verbose);
    db::log_statements(o.log_sql);

    nlohmann::json report = {{"command", command_name(o.command)}, {"cert_type", cert_type_name(o.type)}};
    int code = run_command(o, report);
    if (o.dry_run && code == exit_ok) return code;  // the configuration was the output
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
