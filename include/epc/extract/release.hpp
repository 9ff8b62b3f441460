// Releases: has the publisher released anything new since the last import. What happens to the
// raw archive afterwards is archive_store.hpp; handing an import to AWS Batch is batch_submit.hpp.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "epc/common/types.hpp"
#include "epc/extract/download.hpp"

namespace epc {

// What the last successfully published run of a type imported (from epc.import_run).
struct ImportedRelease {
    long long run_id = 0;
    std::string source;        // current | legacy | file
    std::string last_updated;  // current service: lastUpdated
    std::uint64_t size = 0;    // bytes of the zip
};
// None when nothing was ever published (or the schema does not exist yet).
std::optional<ImportedRelease> last_published_release(const std::string& conninfo, CertType type);

// The current service is identified by lastUpdated (it rebuilds its zips monthly) and size; the
// legacy one only lists sizes.
bool is_new_release(const ReleaseInfo& offered, Source source, const std::optional<ImportedRelease>& imported);

}  // namespace epc
