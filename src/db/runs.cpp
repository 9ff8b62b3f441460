#include "epc/db/runs.hpp"

namespace epc::db {

std::string_view run_status_name(RunStatus status) {
    switch (status) {
        case RunStatus::loading: return "loading";
        case RunStatus::loaded: return "loaded";
        case RunStatus::published: return "published";
        case RunStatus::failed: return "failed";
        case RunStatus::abandoned: return "abandoned";
        case RunStatus::reverted: return "reverted";
    }
    return "?";
}

std::optional<RunStatus> parse_run_status(std::string_view name) {
    for (RunStatus s : kRunStatuses)
        if (run_status_name(s) == name) return s;
    return std::nullopt;
}

}  // namespace epc::db
