#include "epc/extract/release.hpp"

#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "epc/load/pg.hpp"

namespace epc {

namespace fs = std::filesystem;

std::optional<ImportedRelease> last_published_release(const std::string& conninfo, CertType type) {
    pg::Connection db(conninfo, "epc-import " + std::string(cert_type_name(type)) + " check-release");
    if (db.exec("SELECT to_regclass('epc.import_run') IS NOT NULL").text(0, 0) != "t") return std::nullopt;
    pg::Result r = db.exec("SELECT run_id, coalesce(source, 'file'), coalesce(release_last_updated, ''), "
                           "coalesce(archive_bytes, 0) FROM epc.import_run WHERE cert_type = $1 AND status = 'published' "
                           "ORDER BY run_id DESC LIMIT 1",
                           {std::string(cert_type_name(type))});
    if (r.rows() == 0) return std::nullopt;
    return ImportedRelease{r.integer(0, 0), r.text(0, 1), r.text(0, 2), static_cast<std::uint64_t>(r.integer(0, 3))};
}

bool is_new_release(const ReleaseInfo& offered, Source source, const std::optional<ImportedRelease>& imported) {
    if (!imported || imported->source != source_name(source)) return true;
    // A legacy listing without the file gives size 0: unknown, so import.
    if (offered.size == 0) return true;
    if (source == Source::current && offered.last_updated != imported->last_updated) return true;
    return offered.size != imported->size;
}

namespace {

std::string stamp() {
    std::time_t now = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&now, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
    return buf;
}

// Copies to a temporary name and renames, so the destination never holds half an archive.
void copy_atomically(const fs::path& from, const fs::path& to) {
    fs::path tmp = to;
    tmp += ".tmp";
    fs::copy_file(from, tmp, fs::copy_options::overwrite_existing);
    fs::rename(tmp, to);
}

}  // namespace

std::string quarantine_archive(const std::string& zip, const std::string& failed_dir, bool move,
                               const nlohmann::json& report) {
    try {
        fs::create_directories(failed_dir);
        fs::path target = fs::path(failed_dir) / (fs::path(zip).stem().string() + "-" + stamp() + ".zip");
        if (move) {
            std::error_code ec;
            fs::rename(zip, target, ec);  // across file systems rename fails: copy, then remove
            if (ec) {
                copy_atomically(zip, target);
                fs::remove(zip);
            }
        } else {
            copy_atomically(zip, target);
        }
        fs::path json = target;
        json.replace_extension(".json");
        std::ofstream(json) << report.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
        return target.string();
    } catch (const fs::filesystem_error& e) {
        throw Error(exit_internal, "cannot quarantine " + zip + " in " + failed_dir + ": " + e.what());
    }
}

std::string keep_archive(const std::string& zip, const std::string& archive_dir, const std::string& name) {
    try {
        fs::create_directories(archive_dir);
        fs::path target = fs::path(archive_dir) / name;
        copy_atomically(zip, target);
        return target.string();
    } catch (const fs::filesystem_error& e) {
        throw Error(exit_internal, "cannot keep the archive in " + archive_dir + ": " + e.what());
    }
}

}  // namespace epc
