#include "epc/extract/archive_store.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "epc/common/types.hpp"
#include "epc/extract/aws_cli.hpp"

namespace epc {

namespace fs = std::filesystem;

namespace {

// Copies to a temporary name and renames, so the destination never holds half an archive.
void copy_atomically(const fs::path& from, const fs::path& to) {
    fs::path tmp = to;
    tmp += ".tmp";
    fs::copy_file(from, tmp, fs::copy_options::overwrite_existing);
    fs::rename(tmp, to);
}

void write_report(const fs::path& path, const nlohmann::json& report) {
    std::ofstream(path) << report.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
}

// A file of our own in the temporary directory, removed however the scope is left.
class TempFile {
public:
    explicit TempFile(const std::string& stem) : path_((fs::temp_directory_path() / (stem + ".XXXXXX")).string()) {
        int fd = mkostemp(path_.data(), O_CLOEXEC);
        if (fd < 0)
            throw Error(exit_internal, "cannot create a temporary file in " + fs::temp_directory_path().string());
        close(fd);
    }
    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;
    ~TempFile() { unlink(path_.c_str()); }
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

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
    const std::string name = fs::path(zip).stem().string() + "-" + utc_stamp();
    TempFile json("epc-import-quarantine");
    write_report(json.path(), report);

    std::string url = s3_upload(zip, failed, where, name + ".zip", "--failed-to");
    s3_upload(json.path(), failed, where, name + ".json", "--failed-to");
    if (move) {  // only now that both objects are there
        std::error_code ec;
        fs::remove(zip, ec);
    }
    return url;
}

// Across file systems rename fails: copy, then remove.
void move_file(const fs::path& from, const fs::path& to) {
    std::error_code ec;
    fs::rename(from, to, ec);
    if (!ec) return;
    copy_atomically(from, to);
    fs::remove(from);
}

}  // namespace

bool is_s3_url(const std::string& location) { return location.rfind("s3://", 0) == 0; }

void check_archive_target(const std::string& option, const std::string& location) {
    if (!is_s3_url(location)) return;
    if (parse_s3(location).bucket.empty())
        throw Error(exit_usage, option + " " + location + ": no bucket; the form is s3://BUCKET/PREFIX");
    if (!aws_on_path()) throw Error(exit_usage, aws_cli_missing(option, location));
}

std::string quarantine_archive(const std::string& zip, const ArchiveTarget& failed, bool move,
                               const nlohmann::json& report) {
    if (is_s3_url(failed.location)) return quarantine_in_s3(zip, failed, move, report);
    const std::string& failed_dir = failed.location;
    try {
        fs::create_directories(failed_dir);
        fs::path target = fs::path(failed_dir) / (fs::path(zip).stem().string() + "-" + utc_stamp() + ".zip");
        if (move) move_file(zip, target);
        else copy_atomically(zip, target);
        fs::path json = target;
        json.replace_extension(".json");
        write_report(json, report);
        return target.string();
    } catch (const fs::filesystem_error& e) {
        throw Error(exit_internal, "cannot quarantine " + zip + " in " + failed_dir + ": " + e.what());
    }
}

std::string keep_archive(const std::string& zip, const ArchiveTarget& archive, const std::string& name) {
    if (is_s3_url(archive.location)) return s3_upload(zip, archive, parse_s3(archive.location), name, "--archive-to");
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

}  // namespace epc
