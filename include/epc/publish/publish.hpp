// The publish stage: the loaded staging table becomes the production table of its certificate
// type, all at once. A release is a full snapshot, so a new table is built beside the old one
// (filled bare, then indexed and analysed, which is several times faster than inserting into an
// indexed table) and swapped in by rename in one transaction: readers see the previous release or
// the new one, never a mix.
#pragma once

#include <cstdint>
#include <string>

#include "epc/common/types.hpp"
#include "epc/db/session.hpp"

namespace epc {

struct PublishSummary {
    long long run_id = 0;
    bool already_published = false;  // nothing done: that run's staging is already in production
    std::uint64_t rows = 0;          // certificates now in production
    std::uint64_t added = 0;         // keys not in the previous release
    std::uint64_t disappeared = 0;   // keys of the previous release not in this one
    double seconds = 0;
};

// The production table of a type, e.g. epc.domestic_certificates.
std::string production_table(CertType type);

// Publishes the run that owns the session's staging tables, taking the type's lock unless the
// session holds it already. Refuses (exit_usage) when there is nothing to publish: no loaded run,
// a run whose load failed or never finished, or an empty staging table.
PublishSummary publish(db::Session& session);

}  // namespace epc
