#include "epc/app.hpp"

#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "epc/common/log.hpp"
#include "epc/common/options.hpp"
#include "epc/extract/archive.hpp"
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

ArchiveInfo validate_archive(const Options& o, nlohmann::json& report) {
    spdlog::info("extract: inspecting {}", *o.zip);
    ArchiveInfo info = inspect_archive(*o.zip, {o.type, o.expect_dirs});
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
        std::signal(SIGINT, on_stop_signal);
        std::signal(SIGTERM, on_stop_signal);
        const std::string conninfo = o.db.empty() ? pg::default_conninfo() : o.db;
        if (o.command != "publish") {
            ArchiveInfo archive = validate_archive(o, report);
            if (o.command == "load" || o.command == "run") {
                LoadOptions lo;
                lo.type = o.type;
                lo.conninfo = conninfo;
                lo.jobs = o.jobs;
                lo.max_rejects = o.max_rejects;
                lo.backslash_escapes = o.backslash_escapes;
                lo.interrupted = &g_interrupted;
                report["load"] = load_json(load_archive(archive, lo));
            }
        }
        if ((o.command == "publish" || o.command == "run") && !g_interrupted) {
            PublishSummary p = publish({o.type, conninfo});
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
