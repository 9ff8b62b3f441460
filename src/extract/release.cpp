#include "epc/extract/release.hpp"

#include "epc/load/pg.hpp"

namespace epc {

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

}  // namespace epc
