// --archive-to and --failed-to with s3:// locations, end to end: the real binary, the real AWS CLI,
// and s3rver (a small S3-compatible server from npm, installed by bin/install-deps) as the store,
// on 127.0.0.1 only. Also: without the AWS CLI an s3:// target stops the run at once, while local
// directories need no AWS tool at all.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "fixture/fixture.hpp"
#include "support/epc_service.hpp"
#include "support/pg_test.hpp"
#include "support/process.hpp"

using namespace epc;
using epc::test::Outcome;
using epc::test::Process;
using epc::test::TestDatabase;
namespace fs = std::filesystem;

namespace {

bool has(const std::string& haystack, const std::string& needle) { return haystack.find(needle) != std::string::npos; }

bool on_path(const std::string& program) {
    const char* path = std::getenv("PATH");
    std::istringstream dirs(path ? path : "");
    std::string dir;
    while (std::getline(dirs, dir, ':'))
        if (!dir.empty() && access((fs::path(dir) / program).c_str(), X_OK) == 0) return true;
    return false;
}

// This process's environment without any AWS_* variable (a developer's own profile or keys must
// not reach the tests), plus `extra`.
std::vector<std::string> environment(const std::vector<std::string>& extra) {
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) {
        std::string kv = *e;
        bool replaced = std::any_of(extra.begin(), extra.end(), [&](const std::string& x) {
            return kv.compare(0, x.find('=') + 1, x, 0, x.find('=') + 1) == 0;
        });
        if (kv.rfind("AWS_", 0) != 0 && !replaced) env.push_back(kv);
    }
    env.insert(env.end(), extra.begin(), extra.end());
    return env;
}

// The credentials s3rver accepts, and nothing from files in $HOME.
std::vector<std::string> s3rver_environment() {
    const std::string none = testing::TempDir() + "s3-no-aws-config";
    return environment({"AWS_ACCESS_KEY_ID=S3RVER", "AWS_SECRET_ACCESS_KEY=S3RVER", "AWS_DEFAULT_REGION=us-east-1",
                        "AWS_CONFIG_FILE=" + none, "AWS_SHARED_CREDENTIALS_FILE=" + none,
                        "AWS_EC2_METADATA_DISABLED=true"});
}

// `program` (looked up on PATH) with `env`; stdout and stderr together in Outcome::out.
Outcome run(const std::string& program, const std::vector<std::string>& args, const std::vector<std::string>& env) {
    static int n = 0;
    std::vector<std::string> argv = {program};
    argv.insert(argv.end(), args.begin(), args.end());
    return Process(argv, testing::TempDir() + "s3-" + std::to_string(getpid()) + "-" + std::to_string(n++), &env,
                   Process::merged)
        .wait();
}

std::string make_zip(fixture::Options o, const std::string& name, fixture::Expected* expected = nullptr) {
    std::string path = testing::TempDir() + name + ".zip";
    std::ostringstream rows;
    fixture::Expected e = fixture::write_zip(path, o, &rows);
    if (expected) *expected = e;
    return path;
}

fixture::Options invalid_archive() {
    fixture::Options fo;
    fo.rows = 200;
    fo.invalid = {fixture::Invalid::bad_dir_name, fixture::Invalid::empty_certificates};
    return fo;
}

std::string s3rver_path() {
    const char* home = std::getenv("HOME");
    return std::string(home ? home : "") + "/.cache/epc-import/s3rver/node_modules/.bin/s3rver";
}

// s3rver on 127.0.0.1 (port chosen by the system, read from its log) with one bucket, "bucket",
// in a fresh directory; stopped when the test ends.
class S3rver {
public:
    explicit S3rver(const std::string& name) : dir_(testing::TempDir() + name + "-s3rver") {
        fs::remove_all(dir_);
        fs::create_directories(dir_);
        const std::vector<std::string> env = environment({});
        server_ = std::make_unique<Process>(std::vector<std::string>{s3rver_path(), "-d", dir_, "-a", "127.0.0.1", "-p",
                                                                     "0", "--configure-bucket", "bucket"},
                                            dir_, &env, Process::merged);
        const std::string log = server_->out_path();
        const std::regex listening("listening on 127\\.0\\.0\\.1:([0-9]+)");
        for (int i = 0; i < 300 && port_ == 0; ++i) {
            std::smatch m;
            std::string text = epc::test::read_file(log);
            if (std::regex_search(text, m, listening)) port_ = std::stoi(m[1]);
            else std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        if (port_ == 0) {
            stop();
            throw std::runtime_error("s3rver did not start within 15 s: " + epc::test::read_file(log));
        }
    }
    ~S3rver() { stop(); }
    S3rver(const S3rver&) = delete;
    S3rver& operator=(const S3rver&) = delete;

    std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }

    // `aws --endpoint-url ... s3 ARGS...`, as a person would check the bucket.
    Outcome aws(std::vector<std::string> args) const {
        args.insert(args.begin(), {"--endpoint-url", endpoint(), "s3"});
        return run("aws", args, s3rver_environment());
    }
    // The object's bytes, fetched back with `aws s3 cp`.
    std::string get(const std::string& url) const {
        const std::string local = dir_ + "-download";
        fs::remove(local);
        Outcome o = aws({"cp", "--only-show-errors", url, local});
        EXPECT_EQ(o.exit_code, 0) << o.out;
        return epc::test::read_file(local);
    }
    // Object names under s3://bucket/PREFIX/, from `aws s3 ls`.
    std::vector<std::string> list(const std::string& prefix) const {
        Outcome o = aws({"ls", "s3://bucket/" + prefix + "/"});
        std::vector<std::string> names;
        std::istringstream lines(o.out);
        std::string date, time, size, name;
        while (lines >> date >> time >> size >> name) names.push_back(name);
        std::sort(names.begin(), names.end());
        return names;
    }

private:
    void stop() {
        if (server_) server_->stop(SIGTERM);
    }
    std::string dir_;
    std::unique_ptr<Process> server_;
    int port_ = 0;
};

// s3rver comes from npm (bin/install-deps installs it); a machine without npm cannot have it.
#define REQUIRE_S3_TOOLS()                                                                                     \
    do {                                                                                                       \
        if (!fs::exists(s3rver_path())) {                                                                      \
            if (!on_path("npm"))                                                                               \
                GTEST_SKIP() << "npm is not available, so s3rver (the S3 stand-in, an npm package) cannot be " \
                                "installed; S3 uploads are not tested here";                                   \
            FAIL() << "s3rver is not installed at " << s3rver_path() << ": run bin/install-deps";              \
        }                                                                                                      \
        if (!on_path("aws")) FAIL() << "the AWS CLI is not installed: run bin/install-deps";                   \
    } while (0)

}  // namespace

TEST(S3, WithoutTheAwsCliAnS3TargetStopsTheRunAtOnceAndLocalDirectoriesNeedNoAwsTool) {
    fixture::Options fo;
    fo.rows = 300;
    std::string zip = make_zip(fo, "s3-noaws");
    TestDatabase db;
    const std::string empty_bin = testing::TempDir() + "s3-empty-bin";
    fs::create_directories(empty_bin);
    const std::vector<std::string> no_aws = environment({"PATH=" + empty_bin});

    Outcome o = run(EPC_IMPORT_BIN, {"--zip", zip, "--db", db.conninfo(), "--archive-to", "s3://bucket/raw"}, no_aws);
    EXPECT_EQ(o.exit_code, 2) << o.out;
    EXPECT_TRUE(has(o.out, "--archive-to s3://bucket/raw needs the AWS CLI")) << o.out;
    EXPECT_TRUE(has(o.out, "apt-get install awscli")) << o.out;
    EXPECT_FALSE(has(o.out, "inspecting")) << o.out;  // stopped before the archive was even opened
    EXPECT_EQ(db.count("SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'epc'"), 0);

    Outcome f = run(EPC_IMPORT_BIN, {"extract", "--zip", zip, "--failed-to", "s3://bucket/failed"}, no_aws);
    EXPECT_EQ(f.exit_code, 2) << f.out;
    EXPECT_TRUE(has(f.out, "--failed-to s3://bucket/failed needs the AWS CLI")) << f.out;
    Outcome no_bucket = run(EPC_IMPORT_BIN, {"extract", "--zip", zip, "--archive-to", "s3:///raw"}, no_aws);
    EXPECT_EQ(no_bucket.exit_code, 2) << no_bucket.out;
    EXPECT_TRUE(has(no_bucket.out, "no bucket")) << no_bucket.out;

    // Local directories: no AWS tool involved.
    const std::string kept = testing::TempDir() + "s3-noaws-kept", failed = testing::TempDir() + "s3-noaws-failed";
    fs::remove_all(kept);
    fs::remove_all(failed);
    Outcome local = run(EPC_IMPORT_BIN, {"--zip", zip, "--db", db.conninfo(), "--archive-to", kept}, no_aws);
    EXPECT_EQ(local.exit_code, 0) << local.out;
    EXPECT_EQ(epc::test::read_file(kept + "/s3-noaws.zip"), epc::test::read_file(zip));
    std::string bad = make_zip(invalid_archive(), "s3-noaws-invalid");
    EXPECT_EQ(run(EPC_IMPORT_BIN, {"extract", "--zip", bad, "--failed-to", failed}, no_aws).exit_code, 3);
    EXPECT_EQ(std::distance(fs::directory_iterator(failed), fs::directory_iterator()), 2);

    Outcome help = run(EPC_IMPORT_BIN, {"--help"}, no_aws);
    EXPECT_TRUE(has(help.out, "--s3-endpoint-url")) << help.out;
    EXPECT_TRUE(has(help.out, "s3://BUCKET/PREFIX")) << help.out;
}

TEST(S3, ValidArchiveIsKeptInS3AndAnInvalidOneQuarantinedThereWithItsReasons) {
    REQUIRE_S3_TOOLS();
    S3rver s3("s3-keep");
    fixture::Options fo;
    fo.rows = 2000;
    fixture::Expected e;
    std::string zip = make_zip(fo, "s3-valid", &e);
    TestDatabase db;
    const std::string secret = "S3RVER";  // the secret key: never in a log line

    Outcome o = run(EPC_IMPORT_BIN,
                    {"--zip", zip, "--db", db.conninfo(), "--log-format", "text", "--archive-to", "s3://bucket/raw",
                     "--s3-endpoint-url", s3.endpoint()},
                    s3rver_environment());
    ASSERT_EQ(o.exit_code, 0) << o.out;
    EXPECT_TRUE(has(o.out, "archive kept as s3://bucket/raw/s3-valid.zip")) << o.out;
    EXPECT_FALSE(has(o.out, secret)) << o.out;
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.domestic_certificates"), static_cast<long long>(e.rows_loaded));
    EXPECT_EQ(s3.get("s3://bucket/raw/s3-valid.zip"), epc::test::read_file(zip));

    std::string bad = make_zip(invalid_archive(), "s3-invalid");
    Outcome q = run(EPC_IMPORT_BIN,
                    {"--zip", bad, "--db", db.conninfo(), "--log-format", "text", "--failed-to", "s3://bucket/failed",
                     "--s3-endpoint-url", s3.endpoint()},
                    s3rver_environment());
    EXPECT_EQ(q.exit_code, 3) << q.out;
    EXPECT_TRUE(has(q.out, "quarantined as s3://bucket/failed/s3-invalid-")) << q.out;
    EXPECT_TRUE(fs::exists(bad));  // the operator's own file stays where it was
    std::vector<std::string> names = s3.list("failed");
    ASSERT_EQ(names.size(), 2u) << q.out;
    EXPECT_EQ(names[0].substr(names[0].size() - 5), ".json");
    EXPECT_EQ(names[1].substr(names[1].size() - 4), ".zip");
    EXPECT_EQ(names[0].substr(0, names[0].size() - 5), names[1].substr(0, names[1].size() - 4));
    EXPECT_EQ(s3.get("s3://bucket/failed/" + names[1]), epc::test::read_file(bad));
    nlohmann::json why = nlohmann::json::parse(s3.get("s3://bucket/failed/" + names[0]));
    EXPECT_GE(why["problems"].size(), 2u);
    EXPECT_EQ(s3.list("raw").size(), 1u);  // nothing else was archived
}

TEST(S3, DownloadedArchiveLeavesTheWorkDirectoryOnlyOnceItIsInTheBucket) {
    REQUIRE_S3_TOOLS();
    S3rver s3("s3-move");
    std::string zip = make_zip(invalid_archive(), "s3-download-invalid");
    epc::test::EpcService svc(epc::test::read_file(zip));
    const std::string work = testing::TempDir() + "s3-move-work";
    fs::remove_all(work);
    const std::string creds = testing::TempDir() + "s3-move.env";
    std::ofstream(creds) << "EPC_TOKEN=" << svc.token << "\n";
    auto quarantine_to = [&](const std::string& failed) {
        return run(EPC_IMPORT_BIN,
                   {"extract", "--base-url", svc.base_url(), "--work-dir", work, "--credentials-file", creds,
                    "--log-format", "text", "--failed-to", failed, "--s3-endpoint-url", s3.endpoint()},
                   s3rver_environment());
    };
    // The upload fails (no such bucket): transient, and the download is still here.
    Outcome failed = quarantine_to("s3://no-such-bucket/failed");
    EXPECT_EQ(failed.exit_code, 5) << failed.out;
    EXPECT_TRUE(has(failed.out, "cannot upload")) << failed.out;
    EXPECT_TRUE(has(failed.out, "NoSuchBucket")) << failed.out;  // the AWS CLI's own words
    EXPECT_FALSE(has(failed.out, svc.token));
    EXPECT_TRUE(fs::exists(work + "/domestic-current.zip"));

    Outcome moved = quarantine_to("s3://bucket/failed/");
    EXPECT_EQ(moved.exit_code, 3) << moved.out;
    std::vector<std::string> names = s3.list("failed");
    ASSERT_EQ(names.size(), 2u) << moved.out;
    EXPECT_EQ(s3.get("s3://bucket/failed/" + names[1]), epc::test::read_file(zip));
    EXPECT_FALSE(fs::exists(work + "/domestic-current.zip"));  // moved, not left behind
}
