#include "epc/extract/release.hpp"

namespace epc {

bool is_new_release(const ReleaseInfo& offered, Source source, const std::optional<db::ImportedRelease>& imported) {
    if (!imported || imported->source != source_name(source)) return true;
    // A legacy listing without the file gives size 0: unknown, so import.
    if (offered.size == 0) return true;
    if (source == Source::current && offered.last_updated != imported->last_updated) return true;
    return offered.size != imported->size;
}

}  // namespace epc
