// Releases: has the publisher released anything new since the last import. What happens to the
// raw archive afterwards is archive_store.hpp; handing an import to AWS Batch is batch_submit.hpp.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "epc/common/types.hpp"
#include "epc/db/session.hpp"
#include "epc/extract/download.hpp"

namespace epc {

// The current service is identified by lastUpdated (it rebuilds its zips monthly) and size; the
// legacy one only lists sizes.
bool is_new_release(const ReleaseInfo& offered, Source source, const std::optional<db::ImportedRelease>& imported);

}  // namespace epc
