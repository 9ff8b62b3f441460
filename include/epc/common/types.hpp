// Vocabulary shared by every stage: certificate types, archive layouts, exit codes, errors.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace epc {

enum class CertType { domestic, non_domestic, display };

// The spelling operators use on the command line and the publisher uses in file names.
std::string_view cert_type_name(CertType type);
// The spelling used inside SQL identifiers (no hyphen).
std::string_view cert_type_sql(CertType type);
std::optional<CertType> parse_cert_type(std::string_view name);

// How the publisher arranged the CSV files inside the zip.
enum class Layout {
    legacy,   // one directory per Local Authority District, each with certificates.csv
    current,  // flat certificates-YYYY.csv files, one per lodgement year
    single,   // a single-LA / single-file download: certificates.csv at the root
};
std::string_view layout_name(Layout layout);

// What a CSV file of an archive holds: the certificates, or the recommendations made in them
// (several rows per certificate, keyed by its key). Stored in the ledger as its name.
enum class Dataset { certificates, recommendations };
std::string_view dataset_name(Dataset dataset);

// One share of an archive's files, loaded by its own process (AWS Batch array jobs): index counts
// from 0, as AWS_BATCH_JOB_ARRAY_INDEX does.
struct Shard {
    int index = 0;
    int count = 1;
};

// Exit codes are a contract with operators' scripts and AWS Batch (docs/cli.md §4).
enum ExitCode : int {
    exit_ok = 0,
    exit_internal = 1,
    exit_usage = 2,
    exit_invalid_archive = 3,
    exit_locked = 4,
    exit_transient = 5,
    exit_too_many_rejects = 6,
    exit_credentials = 7,  // the publisher refused the credentials (401/403): fix them, do not retry
    exit_nothing_new = 10,
};

// An error the operator can act on; carries the exit code the process should end with.
class Error : public std::runtime_error {
public:
    Error(ExitCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
    ExitCode code() const { return code_; }

private:
    ExitCode code_;
};

}  // namespace epc
