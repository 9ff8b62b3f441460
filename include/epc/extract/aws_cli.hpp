// The AWS CLI as a child process: how archives reach S3 (archive_store.hpp) and imports reach AWS
// Batch (batch_submit.hpp) without an AWS client library written or linked here. The CLI finds its
// credentials the way it always does (environment, profile, instance role); nothing here reads them.
#pragma once

#include <string>
#include <vector>

namespace epc {

// Whether an executable `aws` is on PATH.
bool aws_on_path();

// The usage error for `option` (`--failed-to`, `--submit-queue`, ...) set to `value` without the CLI.
std::string aws_cli_missing(const std::string& option, const std::string& value);

// Runs `aws ARGS...` without a shell (argv as given, so no quoting can go wrong), stdin from
// /dev/null. Returns the exit status (128 + the signal when killed) and, in `output`, what it
// printed on stdout and stderr, cut to its last 2,000 bytes. Throws Error(exit_usage) naming
// `option` and `value` when there is no `aws` to run.
int run_aws(const std::vector<std::string>& args, const std::string& option, const std::string& value,
            std::string& output);

// The current UTC time as 20240131T120000Z: what makes the names of quarantined archives and of
// submitted jobs unique.
std::string utc_stamp();

}  // namespace epc
