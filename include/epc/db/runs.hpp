// The life of an import run (epc.import_run.status), written once: the loader, geocode and
// publish stages, the schema's CHECK constraint and the tests all use these names.
#pragma once

#include <optional>
#include <string_view>

namespace epc::db {

enum class RunStatus {
    loading,    // files are being loaded into staging
    loaded,     // every file is in staging, duplicates checked: ready to publish
    published,  // staging is in production
    failed,     // the load stopped with an error; a re-run of the same archive resumes it
    abandoned,  // superseded by a newer run before it finished
    reverted,   // was published, then `revert` brought back the release before it
};
inline constexpr RunStatus kRunStatuses[] = {RunStatus::loading, RunStatus::loaded,    RunStatus::published,
                                             RunStatus::failed,  RunStatus::abandoned, RunStatus::reverted};

std::string_view run_status_name(RunStatus status);
std::optional<RunStatus> parse_run_status(std::string_view name);

}  // namespace epc::db
