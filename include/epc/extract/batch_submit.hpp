// check-release --submit-queue: hands the import of a new release to AWS Batch through the AWS CLI
// (`aws batch submit-job`, the usual credential chain).
#pragma once

#include <string>
#include <vector>

#include "epc/common/types.hpp"

namespace epc {

// check-release --submit-queue: what to submit to AWS Batch when there is a new release.
struct SubmitOptions {
    std::string queue;               // --submit-queue: job queue name or ARN
    std::string run_definition;      // --submit-run-definition: one full run (shards == 1)
    std::string load_definition;     // --submit-load-definition: the array job's children (load)
    std::string publish_definition;  // --submit-publish-definition: after all children (publish)
    int shards = 1;                  // --submit-shards
    std::string endpoint_url;        // --batch-endpoint-url: aws --endpoint-url (tests)
};

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
