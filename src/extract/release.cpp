#include "epc/extract/release.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <vector>

#include <spdlog/spdlog.h>


extern char** environ;

namespace epc {

namespace fs = std::filesystem;

bool is_new_release(const ReleaseInfo& offered, Source source, const std::optional<db::ImportedRelease>& imported) {
    if (!imported || imported->source != source_name(source)) return true;
    // A legacy listing without the file gives size 0: unknown, so import.
    if (offered.size == 0) return true;
    if (source == Source::current && offered.last_updated != imported->last_updated) return true;
    return offered.size != imported->size;
}

namespace {

std::string stamp() {
    std::time_t now = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&now, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
    return buf;
}

// Copies to a temporary name and renames, so the destination never holds half an archive.
void copy_atomically(const fs::path& from, const fs::path& to) {
    fs::path tmp = to;
    tmp += ".tmp";
    fs::copy_file(from, tmp, fs::copy_options::overwrite_existing);
    fs::rename(tmp, to);
}

// ---- S3, through the AWS CLI ----

struct S3Location {
    std::string bucket;
    std::string prefix;  // without leading or trailing '/'; may be empty

    std::string url(const std::string& name) const {
        return "s3://" + bucket + "/" + (prefix.empty() ? name : prefix + "/" + name);
    }
};

S3Location parse_s3(const std::string& location) {
    std::string rest = location.substr(5);  // after "s3://"
    std::size_t slash = rest.find('/');
    S3Location s{rest.substr(0, slash), slash == std::string::npos ? "" : rest.substr(slash + 1)};
    while (!s.prefix.empty() && s.prefix.back() == '/') s.prefix.pop_back();
    while (!s.prefix.empty() && s.prefix.front() == '/') s.prefix.erase(0, 1);
    return s;
}

bool aws_on_path() {
    const char* path = std::getenv("PATH");
    std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
    std::size_t from = 0;
    while (true) {
        std::size_t colon = dirs.find(':', from);
        std::string dir = dirs.substr(from, colon == std::string::npos ? std::string::npos : colon - from);
        fs::path candidate = fs::path(dir.empty() ? "." : dir) / "aws";
        std::error_code ec;
        if (fs::is_regular_file(candidate, ec) && access(candidate.c_str(), X_OK) == 0) return true;
        if (colon == std::string::npos) return false;
        from = colon + 1;
    }
}

std::string needs_aws_cli(const std::string& option, const std::string& location) {
    return option + " " + location + " needs the AWS CLI (no `aws` on PATH; apt-get install awscli)";
}

// A file descriptor that is closed however the scope is left.
struct Fd {
    int fd = -1;
    ~Fd() {
        if (fd >= 0) close(fd);
    }
};

// Runs `aws ARGS...` without a shell (argv as given, so no quoting can go wrong), stdin from
// /dev/null, stdout and stderr into an unlinked temporary file. Returns the exit status (128 + the
// signal when killed) and what it printed, cut to its last 2,000 bytes. The child inherits the
// environment, so the CLI finds its credentials the way it always does; nothing here reads them.
int run_aws(const std::vector<std::string>& args, const std::string& option, const std::string& location,
            std::string& output) {
    std::string tmpl = (fs::temp_directory_path() / "epc-import-aws.XXXXXX").string();
    Fd out{mkostemp(tmpl.data(), O_CLOEXEC)};
    if (out.fd < 0) throw Error(exit_internal, "cannot create a temporary file in " + fs::temp_directory_path().string());
    unlink(tmpl.c_str());

    std::vector<std::string> argv_s = {"aws"};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, out.fd, 1);
    posix_spawn_file_actions_adddup2(&actions, out.fd, 2);
    pid_t pid = 0;
    int rc = posix_spawnp(&pid, "aws", &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc == ENOENT) throw Error(exit_usage, needs_aws_cli(option, location));
    if (rc != 0) throw Error(exit_internal, std::string("cannot start the AWS CLI: ") + std::strerror(rc));

    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) throw Error(exit_internal, std::string("waiting for the AWS CLI: ") + std::strerror(errno));
    }
    off_t size = lseek(out.fd, 0, SEEK_END);
    off_t from = size > 2000 ? size - 2000 : 0;
    output.assign(static_cast<std::size_t>(size - from), '\0');
    ssize_t got = size > from ? pread(out.fd, output.data(), output.size(), from) : 0;
    output.resize(got > 0 ? static_cast<std::size_t>(got) : 0);
    while (!output.empty() && (output.back() == '\n' || output.back() == '\r' || output.back() == ' ')) output.pop_back();
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// `aws s3 cp FILE s3://BUCKET/PREFIX/NAME`: the CLI splits big files into a multipart upload.
// A failure is reported as transient (network, throttling): a retried job uploads again.
std::string s3_upload(const std::string& file, const ArchiveTarget& target, const S3Location& where,
                      const std::string& name, const std::string& option) {
    std::string url = where.url(name);
    std::vector<std::string> args;
    if (!target.s3_endpoint_url.empty()) args.insert(args.end(), {"--endpoint-url", target.s3_endpoint_url});
    // An absolute path, so that a file name starting with '-' is never read as an option.
    args.insert(args.end(), {"s3", "cp", "--only-show-errors", fs::absolute(file).string(), url});
    std::string output;
    int code = run_aws(args, option, target.location, output);
    if (code != 0)
        throw Error(exit_transient, "cannot upload " + file + " to " + url + ": aws s3 cp exited with " +
                                        std::to_string(code) + (output.empty() ? "" : ": " + output));
    return url;
}

std::string quarantine_in_s3(const std::string& zip, const ArchiveTarget& failed, bool move,
                             const nlohmann::json& report) {
    const S3Location where = parse_s3(failed.location);
    const std::string name = fs::path(zip).stem().string() + "-" + stamp();
    std::string tmpl = (fs::temp_directory_path() / "epc-import-quarantine.XXXXXX").string();
    Fd json{mkostemp(tmpl.data(), O_CLOEXEC)};
    if (json.fd < 0) throw Error(exit_internal, "cannot create a temporary file in " + fs::temp_directory_path().string());
    struct Remove {
        std::string path;
        ~Remove() { unlink(path.c_str()); }
    } remove_json{tmpl};
    std::ofstream(tmpl) << report.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';

    std::string url = s3_upload(zip, failed, where, name + ".zip", "--failed-to");
    s3_upload(tmpl, failed, where, name + ".json", "--failed-to");
    if (move) {  // only now that both objects are there
        std::error_code ec;
        fs::remove(zip, ec);
    }
    return url;
}

}  // namespace

bool is_s3_url(const std::string& location) { return location.rfind("s3://", 0) == 0; }

void check_archive_target(const std::string& option, const std::string& location) {
    if (!is_s3_url(location)) return;
    if (parse_s3(location).bucket.empty())
        throw Error(exit_usage, option + " " + location + ": no bucket; the form is s3://BUCKET/PREFIX");
    if (!aws_on_path()) throw Error(exit_usage, needs_aws_cli(option, location));
}

std::string quarantine_archive(const std::string& zip, const ArchiveTarget& failed, bool move,
                               const nlohmann::json& report) {
    if (is_s3_url(failed.location)) return quarantine_in_s3(zip, failed, move, report);
    const std::string& failed_dir = failed.location;
    try {
        fs::create_directories(failed_dir);
        fs::path target = fs::path(failed_dir) / (fs::path(zip).stem().string() + "-" + stamp() + ".zip");
        if (move) {
            std::error_code ec;
            fs::rename(zip, target, ec);  // across file systems rename fails: copy, then remove
            if (ec) {
                copy_atomically(zip, target);
                fs::remove(zip);
            }
        } else {
            copy_atomically(zip, target);
        }
        fs::path json = target;
        json.replace_extension(".json");
        std::ofstream(json) << report.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
        return target.string();
    } catch (const fs::filesystem_error& e) {
        throw Error(exit_internal, "cannot quarantine " + zip + " in " + failed_dir + ": " + e.what());
    }
}

std::string keep_archive(const std::string& zip, const ArchiveTarget& archive, const std::string& name) {
    if (is_s3_url(archive.location))
        return s3_upload(zip, archive, parse_s3(archive.location), name, "--archive-to");
    const std::string& archive_dir = archive.location;
    try {
        fs::create_directories(archive_dir);
        fs::path target = fs::path(archive_dir) / name;
        copy_atomically(zip, target);
        return target.string();
    } catch (const fs::filesystem_error& e) {
        throw Error(exit_internal, "cannot keep the archive in " + archive_dir + ": " + e.what());
    }
}

std::vector<SubmittedJob> submit_import(const SubmitOptions& submit, CertType type) {
    const std::string name = "epc-import-" + std::string(cert_type_name(type)) + "-" + stamp();
    std::vector<SubmittedJob> jobs;
    // Prints the new job's id only (--query jobId --output text), on the last line of the output.
    auto submit_job = [&](const std::string& job_name, const std::string& definition,
                          const std::vector<std::string>& extra) {
        std::vector<std::string> args;
        if (!submit.endpoint_url.empty()) args.insert(args.end(), {"--endpoint-url", submit.endpoint_url});
        args.insert(args.end(), {"batch", "submit-job", "--job-name", job_name, "--job-queue", submit.queue,
                                 "--job-definition", definition, "--parameters",
                                 "certtype=" + std::string(cert_type_name(type))});
        args.insert(args.end(), extra.begin(), extra.end());
        args.insert(args.end(), {"--query", "jobId", "--output", "text"});
        std::string output;
        int code = run_aws(args, "--submit-queue", submit.queue, output);
        std::string id = output.substr(output.find_last_of('\n') == std::string::npos ? 0 : output.find_last_of('\n') + 1);
        bool looks_like_id = !id.empty() && id.size() <= 128 && id.find_first_not_of(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_:") == std::string::npos;
        if (code != 0 || !looks_like_id)
            throw Error(exit_transient, "cannot submit " + job_name + " to AWS Batch queue " + submit.queue +
                                            ": aws batch submit-job exited with " + std::to_string(code) +
                                            (output.empty() ? "" : ": " + output));
        spdlog::info("check-release: submitted {} ({}) as job {}", job_name, definition, id);
        jobs.push_back({job_name, id, definition});
        return id;
    };
    if (submit.shards <= 1) {
        submit_job(name, submit.run_definition, {});
    } else {
        const std::string size = std::to_string(submit.shards);
        // Batch numbers the children (AWS_BATCH_JOB_ARRAY_INDEX) but does not tell them the size.
        const std::string overrides =
            R"({"environment":[{"name":"AWS_BATCH_JOB_ARRAY_SIZE","value":")" + size + R"("}]})";
        std::string array = submit_job(name + "-load", submit.load_definition,
                                       {"--array-properties", "size=" + size, "--container-overrides", overrides});
        // Depending on the array job's id waits for every child.
        submit_job(name + "-publish", submit.publish_definition, {"--depends-on", "jobId=" + array});
    }
    return jobs;
}

}  // namespace epc
