#include "epc/extract/batch_submit.hpp"

#include <spdlog/spdlog.h>

#include "epc/extract/aws_cli.hpp"

namespace epc {

namespace {

// The CLI prints the new job's id only (--query jobId --output text), on the last line.
bool looks_like_job_id(const std::string& id) {
    static const char allowed[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_:";
    return !id.empty() && id.size() <= 128 && id.find_first_not_of(allowed) == std::string::npos;
}

SubmittedJob submit_job(const SubmitOptions& submit, CertType type, const std::string& job_name,
                        const std::string& definition, const std::vector<std::string>& extra) {
    std::vector<std::string> args;
    if (!submit.endpoint_url.empty()) args.insert(args.end(), {"--endpoint-url", submit.endpoint_url});
    args.insert(args.end(),
                {"batch", "submit-job", "--job-name", job_name, "--job-queue", submit.queue, "--job-definition",
                 definition, "--parameters", "certtype=" + std::string(cert_type_name(type))});
    args.insert(args.end(), extra.begin(), extra.end());
    args.insert(args.end(), {"--query", "jobId", "--output", "text"});
    std::string output;
    int code = run_aws(args, "--submit-queue", submit.queue, output);
    std::size_t last_line = output.find_last_of('\n');
    std::string id = output.substr(last_line == std::string::npos ? 0 : last_line + 1);
    if (code != 0 || !looks_like_job_id(id))
        throw Error(exit_transient, "cannot submit " + job_name + " to AWS Batch queue " + submit.queue +
                                        ": aws batch submit-job exited with " + std::to_string(code) +
                                        (output.empty() ? "" : ": " + output));
    spdlog::info("check-release: submitted {} ({}) as job {}", job_name, definition, id);
    return {job_name, id, definition};
}

}  // namespace

std::vector<SubmittedJob> submit_import(const SubmitOptions& submit, CertType type) {
    const std::string name = "epc-import-" + std::string(cert_type_name(type)) + "-" + utc_stamp();
    if (submit.shards <= 1) return {submit_job(submit, type, name, submit.run_definition, {})};
    const std::string size = std::to_string(submit.shards);
    // Batch numbers the children (AWS_BATCH_JOB_ARRAY_INDEX) but does not tell them the size.
    const std::string overrides = R"({"environment":[{"name":"AWS_BATCH_JOB_ARRAY_SIZE","value":")" + size + R"("}]})";
    SubmittedJob array = submit_job(submit, type, name + "-load", submit.load_definition,
                                    {"--array-properties", "size=" + size, "--container-overrides", overrides});
    // Depending on the array job's id waits for every child.
    SubmittedJob publish = submit_job(submit, type, name + "-publish", submit.publish_definition,
                                      {"--depends-on", "jobId=" + array.id});
    return {array, publish};
}

}  // namespace epc
