// `epc-import status`: how each certificate type stands, for an operator. Reads the bookkeeping
// (epc.import_run, epc.staging_owner), the staging rejects and the production tables, and asks the
// publisher whether it offers a newer release than the one published.
//
// Read-only by construction: one connection whose transactions are read-only, no schema created or
// upgraded, no advisory lock taken, and a short lock_timeout, so a running import neither waits for
// status nor makes it wait for long (its DDL can hold a table briefly; that type's figures then say
// so instead of the command failing).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "epc/common/types.hpp"
#include "epc/extract/download.hpp"

namespace epc {

struct StatusRequest {
    std::vector<CertType> types;  // in the order shown
    Source source = Source::current;
    // What the publisher offers for a type (fetch_release_info); throws Error when it cannot be
    // asked (no credentials, network, refused): the freshness is then "unknown" with that reason.
    std::function<ReleaseInfo(CertType)> ask_publisher;
};

// The status document, as printed with --log-format json and written to --report:
//   database: {describe, schema_version, known_schema_version, prepared}
//   types: [{cert_type, imported, table,
//            published: null | {run_id, source, release_last_updated, archive_bytes, archive_sha256,
//                                archive_path, published_at, rows_published, added, changed,
//                                disappeared, rejects: {total, by_reason: null | {reason: n}}},
//            production: null | {rows, located: {property, street, postcode, not_located, other:
//                                {rows, share}}} | {error},
//            recommendations: null | {table, rows} | {error},  (--recommendations published)
//            newest_run: null | {run_id, status, started_at, finished_at, rows_loaded, rows_rejected,
//                                 error},  (only when it is not the published run)
//            publisher: {source, state: newer | up_to_date | unknown, offered: null |
//                        {last_updated, size}, reason: null | text}}]
// Throws Error(exit_transient) when the database cannot be reached.
nlohmann::json read_status(const std::string& conninfo, const StatusRequest& request);

// The same document as a table for a person at a terminal.
std::string status_text(const nlohmann::json& status);

}  // namespace epc
