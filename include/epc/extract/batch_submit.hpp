// check-release --submit-queue: hands the import of a new release to AWS Batch through the AWS CLI
// (`aws batch submit-job`, the usual credential chain).
#pragma once

#include <string>
#include <vector>

#include "epc/common/options.hpp"
#include "epc/common/types.hpp"

namespace epc {

struct SubmittedJob {
    std::string name;
    std::string id;
    std::string definition;
};

// Submits one full-run job, or an array job of `shards` loads plus a publish job that depends on
// the whole array. Throws Error(exit_transient) when a submission fails, Error(exit_usage) without
// the AWS CLI.
std::vector<SubmittedJob> submit_import(const SubmitOptions& submit, CertType type);

}  // namespace epc
