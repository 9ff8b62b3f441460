// Downloads against a stand-in EPC service and S3 host (tests/support/epc_service.hpp): both
// sources, resume after a cut, retries and their waits, refused credentials, size checks, and
// that no secret reaches a log line or an error message. SHA-256 against the FIPS test vectors.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "epc/extract/credentials.hpp"
#include "epc/extract/download.hpp"
#include "epc/extract/sha256.hpp"
#include "support/epc_service.hpp"

using namespace epc;
using epc::test::EpcService;
using epc::test::Faults;
namespace fs = std::filesystem;

namespace {

std::string repeat(const std::string& s, std::size_t n) {
    std::string out;
    for (std::size_t i = 0; i < n; ++i) out += s;
    return out;
}

std::string random_bytes(std::size_t n, unsigned seed = 42) {
    std::mt19937 rng(seed);
    std::string s(n, '\0');
    for (char& c : s) c = static_cast<char>(rng() & 0xff);
    return s;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// ctest runs each test as its own process, in parallel: every path carries the test's name.
std::string tmp(const std::string& name) {
    return testing::TempDir() + testing::UnitTest::GetInstance()->current_test_info()->name() + "-" + name;
}

double seconds_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
}

// Captures everything logged through spdlog's default logger during a test.
class Download : public testing::Test {
protected:
    void SetUp() override {
        // The stand-in is on 127.0.0.1: a proxy from the environment must not get in between.
        for (const char* var : {"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"})
            unsetenv(var);
        previous_ = spdlog::default_logger();
        auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(log_);
        auto logger = std::make_shared<spdlog::logger>("capture", sink);
        logger->set_level(spdlog::level::trace);
        spdlog::set_default_logger(logger);
        fs::remove_all(tmp("work"));
    }
    void TearDown() override { spdlog::set_default_logger(previous_); }

    DownloadOptions options(const EpcService& service, Source source = Source::current) {
        DownloadOptions o;
        o.source = source;
        o.type = CertType::domestic;
        o.base_url = service.base_url();
        o.work_dir = tmp("work");
        o.creds = {service.token, service.email, service.api_key, ""};
        o.max_attempts = 4;
        o.initial_backoff_s = 0.05;
        o.max_backoff_s = 0.2;
        o.progress_interval_s = 0;  // a progress line for every chunk
        o.connect_timeout_s = 5;
        o.low_speed_time_s = 5;
        return o;
    }

    // Runs a download that must fail; returns its error.
    Error failed(const DownloadOptions& o) {
        try {
            download_release(o);
        } catch (const Error& e) {
            errors_ += e.what();
            errors_ += '\n';
            return e;
        }
        ADD_FAILURE() << "the download succeeded";
        return Error(exit_ok, "");
    }

    std::string logs() {
        spdlog::default_logger()->flush();
        return log_.str();
    }

    const std::string body_ = random_bytes(300 * 1024);
    std::ostringstream log_;
    std::string errors_;
    std::shared_ptr<spdlog::logger> previous_;
};

std::vector<test::SeenRequest> file_requests(const EpcService& service) {
    std::vector<test::SeenRequest> out;
    for (const auto& r : service.requests("service"))
        if (r.path.find("/info") == std::string::npos && r.path != "/api/v1/files") out.push_back(r);
    return out;
}

}  // namespace

// --- SHA-256 -------------------------------------------------------------------------------------

TEST(Sha256, StandardVectors) {
    // FIPS 180-4 examples and the NIST "one million a" long message.
    EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    EXPECT_EQ(
        sha256_hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
                   "mnopqrstnopqrstu"),
        "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
    EXPECT_EQ(sha256_hex(std::string(1000000, 'a')),
              "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, PaddingBoundariesAndSplitUpdates) {
    // Lengths around the 55/56/64-byte padding edges, fed whole and in two pieces at every split.
    for (std::size_t n : {55u, 56u, 63u, 64u, 65u, 119u, 120u, 200u}) {
        std::string message = random_bytes(n, static_cast<unsigned>(n));
        std::string whole = sha256_hex(message);
        for (std::size_t cut = 0; cut <= n; ++cut) {
            Sha256 h;
            h.update(message.substr(0, cut));
            h.update(message.substr(cut));
            ASSERT_EQ(h.hex(), whole) << "length " << n << " split at " << cut;
        }
    }
    EXPECT_EQ(sha256_hex(repeat("a", 64)), "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
}

TEST(Sha256, File) {
    std::string path = tmp("file.bin");
    std::string data = random_bytes(3 * 1024 * 1024 + 17);
    std::ofstream(path, std::ios::binary) << data;
    EXPECT_EQ(sha256_file(path), sha256_hex(data));
    try {
        sha256_file(tmp("missing"));
        FAIL();
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), exit_internal);
    }
}

// --- Clean downloads -----------------------------------------------------------------------------

TEST_F(Download, CurrentServiceClean) {
    EpcService service(body_);
    DownloadResult r = download_release(options(service));
    EXPECT_EQ(r.path, tmp("work") + "/domestic-current.zip");
    EXPECT_EQ(read_file(r.path), body_);
    EXPECT_EQ(r.bytes, body_.size());
    EXPECT_EQ(r.sha256, sha256_hex(body_));
    EXPECT_EQ(read_file(r.path + ".sha256"), r.sha256 + "  domestic-current.zip\n");
    EXPECT_EQ(r.attempts, 1);
    EXPECT_FALSE(r.resumed);
    EXPECT_EQ(r.info.size, body_.size());
    EXPECT_EQ(r.info.last_updated, service.last_updated);
    EXPECT_EQ(r.info.file_name, "domestic-csv.zip");
    EXPECT_FALSE(fs::exists(r.path + ".part"));
    EXPECT_FALSE(fs::exists(r.path + ".part.json"));

    auto to_service = service.requests("service");
    ASSERT_EQ(to_service.size(), 2u);  // info, then the file
    EXPECT_EQ(to_service[0].path, "/api/files/domestic/csv/info");
    EXPECT_EQ(to_service[1].path, "/api/files/domestic/csv");
    for (const auto& req : to_service) EXPECT_EQ(req.header("Authorization"), "Bearer " + service.token);
    auto to_s3 = service.requests("s3");
    ASSERT_EQ(to_s3.size(), 1u);
    EXPECT_FALSE(to_s3[0].has("Authorization"));
    EXPECT_FALSE(to_s3[0].has("Range"));

    std::string log = logs();
    EXPECT_NE(log.find("%"), std::string::npos) << log;  // progress: percentage, rate, ETA
    EXPECT_NE(log.find("ETA"), std::string::npos) << log;
    EXPECT_NE(log.find("complete"), std::string::npos) << log;
}

TEST_F(Download, LegacyServiceClean) {
    EpcService service(body_);
    DownloadOptions o = options(service, Source::legacy);
    o.progress_interval_s = 60;
    DownloadResult r = download_release(o);
    EXPECT_EQ(r.path, tmp("work") + "/domestic-legacy.zip");
    EXPECT_EQ(read_file(r.path), body_);
    EXPECT_EQ(r.sha256, sha256_hex(body_));
    EXPECT_EQ(r.info.file_name, "all-domestic-certificates.zip");
    EXPECT_EQ(r.info.size, body_.size());
    auto to_service = service.requests("service");
    ASSERT_EQ(to_service.size(), 2u);
    EXPECT_EQ(to_service[0].path, "/api/v1/files");
    EXPECT_EQ(to_service[1].path, "/api/v1/files/all-domestic-certificates.zip");
    for (const auto& req : to_service)
        EXPECT_EQ(req.header("Authorization"), "Basic " + test::base64(service.email + ":" + service.api_key));
    auto to_s3 = service.requests("s3");
    ASSERT_EQ(to_s3.size(), 1u);
    EXPECT_FALSE(to_s3[0].has("Authorization"));
    EXPECT_EQ(logs().find("ETA"), std::string::npos);  // no progress line within the interval
}

TEST_F(Download, ReleaseInfoOfBothSources) {
    EpcService service(body_);
    ReleaseInfo current = fetch_release_info(options(service));
    EXPECT_EQ(current.size, body_.size());
    EXPECT_EQ(current.last_updated, "2026-11-01T03:04:05Z");
    ReleaseInfo legacy = fetch_release_info(options(service, Source::legacy));
    EXPECT_EQ(legacy.size, body_.size());
    EXPECT_EQ(legacy.last_updated, "");
    EXPECT_TRUE(service.requests("s3").empty());
}

// --- Resume --------------------------------------------------------------------------------------

TEST_F(Download, ResumesAfterACutOnAFreshUrl) {
    EpcService service(body_);
    Faults f;
    f.cuts = 1;
    f.cut_after = 100000;
    service.set_faults(f);
    DownloadResult r = download_release(options(service));
    EXPECT_EQ(read_file(r.path), body_);
    EXPECT_EQ(r.sha256, sha256_hex(body_));
    EXPECT_TRUE(r.resumed);
    EXPECT_EQ(r.attempts, 2);
    auto to_s3 = service.requests("s3");
    ASSERT_EQ(to_s3.size(), 2u);
    EXPECT_FALSE(to_s3[0].has("Range"));
    EXPECT_EQ(to_s3[1].header("Range"), "bytes=100000-");
    // A new presigned URL for the resume: the first was single-use.
    EXPECT_NE(to_s3[0].params.at("X-Amz-Signature"), to_s3[1].params.at("X-Amz-Signature"));
    EXPECT_EQ(file_requests(service).size(), 2u);
}

TEST_F(Download, ResumesAPartFileLeftByAnEarlierRun) {
    EpcService service(body_);
    Faults f;
    f.cuts = 1;
    f.cut_after = 50000;
    service.set_faults(f);
    DownloadOptions o = options(service);
    o.max_attempts = 1;
    Error e = failed(o);
    EXPECT_EQ(e.code(), exit_transient);
    EXPECT_EQ(fs::file_size(download_path(o) + ".part"), 50000u);

    DownloadResult r = download_release(options(service));
    EXPECT_EQ(read_file(r.path), body_);
    EXPECT_EQ(r.sha256, sha256_hex(body_));  // the hash covers the bytes of the first run too
    EXPECT_TRUE(r.resumed);
    EXPECT_EQ(service.requests("s3").back().header("Range"), "bytes=50000-");
}

TEST_F(Download, PartFileOfAnotherReleaseIsNotContinued) {
    EpcService service(body_);
    DownloadOptions o = options(service);
    fs::create_directories(o.work_dir);
    std::ofstream(download_path(o) + ".part", std::ios::binary) << "stale bytes of another release";
    DownloadResult r = download_release(o);
    EXPECT_EQ(read_file(r.path), body_);
    EXPECT_FALSE(r.resumed);
    EXPECT_FALSE(service.requests("s3")[0].has("Range"));
}

TEST_F(Download, FinishedDownloadOfTheSameReleaseIsUsedAgain) {
    EpcService service(body_);
    DownloadOptions o = options(service);
    DownloadResult first = download_release(o);
    ASSERT_EQ(service.requests("s3").size(), 1u);

    DownloadResult again = download_release(o);  // another shard on this host, or a re-run
    EXPECT_EQ(service.requests("s3").size(), 1u) << "downloaded a second time";
    EXPECT_EQ(again.path, first.path);
    EXPECT_EQ(again.sha256, first.sha256);
    EXPECT_EQ(again.bytes, body_.size());
    EXPECT_EQ(again.attempts, 0);
    EXPECT_NE(logs().find("not downloading it again"), std::string::npos);

    // A damaged file (wrong size) or a new release is downloaded afresh.
    std::filesystem::resize_file(first.path, 1000);
    DownloadResult repaired = download_release(o);
    EXPECT_EQ(service.requests("s3").size(), 2u);
    EXPECT_EQ(read_file(repaired.path), body_);
    service.last_updated = "2026-12-01T03:04:05Z";
    DownloadResult fresh = download_release(o);
    EXPECT_EQ(service.requests("s3").size(), 3u);
    EXPECT_EQ(fresh.info.last_updated, "2026-12-01T03:04:05Z");
}

TEST_F(Download, CompletePartFileAnswered416IsComplete) {
    EpcService service(body_);
    DownloadOptions o = options(service);
    DownloadResult first = download_release(o);
    // As if the earlier run had stopped between the last byte and the rename.
    fs::rename(first.path, first.path + ".part");
    std::ofstream(first.path + ".part.json") << nlohmann::json{
        {"file", "domestic-csv.zip"},
        {"size", body_.size()},
        {"last_updated", service.last_updated}}.dump();
    DownloadResult r = download_release(o);
    EXPECT_EQ(read_file(r.path), body_);
    EXPECT_EQ(r.sha256, sha256_hex(body_));
    EXPECT_TRUE(r.resumed) << logs();
    EXPECT_EQ(service.requests("s3").back().header("Range"), "bytes=" + std::to_string(body_.size()) + "-");
}

TEST_F(Download, RangeIgnoredMeansStartingAgain) {
    EpcService service(body_);
    Faults f;
    f.cuts = 1;
    f.ignore_range = true;
    service.set_faults(f);
    DownloadResult r = download_release(options(service));
    EXPECT_EQ(read_file(r.path), body_);
    EXPECT_EQ(r.sha256, sha256_hex(body_));
    EXPECT_FALSE(r.resumed);
    EXPECT_EQ(service.requests("s3").back().header("Range"), "bytes=" + std::to_string(body_.size() / 2) + "-");
}

TEST_F(Download, StalledTransferTimesOutAndResumes) {
    EpcService service(body_);
    Faults f;
    f.cuts = 1;
    f.cut_after = 70000;
    f.stall_ms = 1800;
    service.set_faults(f);
    DownloadOptions o = options(service);
    o.low_speed_bytes = 1000;
    o.low_speed_time_s = 1;
    DownloadResult r = download_release(o);
    EXPECT_EQ(read_file(r.path), body_);
    EXPECT_TRUE(r.resumed);
    EXPECT_EQ(service.requests("s3").back().header("Range"), "bytes=70000-");
}

// --- Retries -------------------------------------------------------------------------------------

TEST_F(Download, RetryAfterIsHonoured) {
    EpcService service(body_);
    Faults f;
    f.service_429 = 1;
    f.retry_after = "1";
    service.set_faults(f);
    DownloadOptions o = options(service);
    o.initial_backoff_s = 0.01;  // the wait must come from Retry-After, not the backoff
    DownloadResult r = download_release(o);
    EXPECT_EQ(read_file(r.path), body_);
    auto files = file_requests(service);
    ASSERT_EQ(files.size(), 2u);
    double gap = seconds_between(files[0].at, files[1].at);
    EXPECT_GE(gap, 0.95);
    EXPECT_LT(gap, 3.0);
    EXPECT_NE(logs().find("HTTP 429"), std::string::npos);
}

TEST_F(Download, ServerErrorsThenSuccessWithBackoff) {
    EpcService service(body_);
    Faults f;
    f.service_500 = 2;
    f.s3_500 = 1;
    service.set_faults(f);
    DownloadResult r = download_release(options(service));
    EXPECT_EQ(read_file(r.path), body_);
    EXPECT_EQ(r.attempts, 4);
    EXPECT_EQ(file_requests(service).size(), 4u);
    std::string log = logs();
    EXPECT_NE(log.find("HTTP 500"), std::string::npos) << log;
    EXPECT_NE(log.find("retrying in"), std::string::npos) << log;
}

TEST_F(Download, ServerErrorsExhaustTheAttempts) {
    EpcService service(body_);
    Faults f;
    f.service_503 = 10;
    f.retry_after = "0";
    service.set_faults(f);
    DownloadOptions o = options(service);
    o.max_attempts = 3;
    Error e = failed(o);
    EXPECT_EQ(e.code(), exit_transient);
    EXPECT_NE(std::string(e.what()).find("after 3 attempts"), std::string::npos) << e.what();
    EXPECT_EQ(file_requests(service).size(), 3u);
    EXPECT_FALSE(fs::exists(download_path(o)));
}

TEST_F(Download, ExpiredUrlIsReplacedByAFreshOne) {
    EpcService service(body_);
    Faults f;
    f.expired = 1;
    service.set_faults(f);
    DownloadResult r = download_release(options(service));
    EXPECT_EQ(read_file(r.path), body_);
    auto to_s3 = service.requests("s3");
    ASSERT_EQ(to_s3.size(), 2u);
    EXPECT_NE(to_s3[0].params.at("X-Amz-Signature"), to_s3[1].params.at("X-Amz-Signature"));
}

TEST_F(Download, UnreachableServiceIsTransient) {
    DownloadOptions o;
    o.base_url = "http://127.0.0.1:1";  // nothing listens on port 1
    o.work_dir = tmp("work");
    o.creds.token = "a-token-that-must-not-leak";
    o.max_attempts = 2;
    o.initial_backoff_s = 0.01;
    Error e = failed(o);
    EXPECT_EQ(e.code(), exit_transient);
    EXPECT_EQ(std::string(e.what()).find("a-token-that-must-not-leak"), std::string::npos);
}

// --- Failures that must not be retried -----------------------------------------------------------

TEST_F(Download, RefusedTokenFailsAtOnceWithExit7) {
    EpcService service(body_);
    DownloadOptions o = options(service);
    o.creds.token = "wrong-token-0123456789";
    auto start = std::chrono::steady_clock::now();
    Error e = failed(o);
    EXPECT_LT(seconds_between(start, std::chrono::steady_clock::now()), 1.0);
    EXPECT_EQ(e.code(), exit_credentials);
    EXPECT_EQ(int(e.code()), 7);
    EXPECT_NE(std::string(e.what()).find("refused"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("EPC_TOKEN"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("wrong-token-0123456789"), std::string::npos) << e.what();
    EXPECT_EQ(service.requests().size(), 1u);  // no retry
}

TEST_F(Download, RefusedLegacyKeyFailsAtOnceWithExit7) {
    EpcService service(body_);
    DownloadOptions o = options(service, Source::legacy);
    o.creds.api_key = "wrong-key-0123456789";
    Error e = failed(o);
    EXPECT_EQ(e.code(), exit_credentials);
    EXPECT_NE(std::string(e.what()).find("EPC_API_KEY"), std::string::npos) << e.what();
    EXPECT_EQ(service.requests().size(), 1u);
}

TEST_F(Download, LegacyLoginTokenSignsInOnceWithASessionCookie) {
    EpcService service(body_);
    DownloadOptions o = options(service, Source::legacy);
    o.creds.api_key.clear();
    o.creds.login_token = service.login_token;
    DownloadResult r = download_release(o);
    EXPECT_EQ(read_file(r.path), body_);
    auto to_service = service.requests("service");
    ASSERT_EQ(to_service.size(), 3u);  // sign in, listing, file
    EXPECT_EQ(to_service[0].path, "/login-with-token");
    for (std::size_t i = 1; i < to_service.size(); ++i) {
        EXPECT_FALSE(to_service[i].has("Authorization")) << to_service[i].path;
        EXPECT_NE(to_service[i].header("Cookie").find(service.session), std::string::npos) << to_service[i].path;
    }
    for (const auto& req : service.requests("s3")) {
        EXPECT_FALSE(req.has("Cookie"));  // the session is the service's, never S3's
        EXPECT_FALSE(req.has("Authorization"));
    }
    const std::string seen = logs() + errors_;
    EXPECT_EQ(seen.find(service.login_token), std::string::npos);
    EXPECT_EQ(seen.find(service.session), std::string::npos);
}

TEST_F(Download, RefusedLoginTokenIsACredentialsError) {
    EpcService service(body_);
    DownloadOptions o = options(service, Source::legacy);
    o.creds.api_key.clear();
    o.creds.login_token = "lt-wrong-0123456789";
    Error e = failed(o);
    EXPECT_EQ(e.code(), exit_credentials);
    EXPECT_NE(std::string(e.what()).find("EPC_LOGIN_TOKEN"), std::string::npos) << e.what();
    EXPECT_EQ((std::string(e.what()) + logs()).find("lt-wrong-0123456789"), std::string::npos);
    EXPECT_EQ(service.requests().size(), 1u);  // no retry of a refused sign-in
}

TEST_F(Download, TerminalGetsOneRedrawnProgressBar) {
    EpcService service(std::string(4 << 20, 'x'));
    DownloadOptions o = options(service);
    o.progress_bar = true;
    testing::internal::CaptureStderr();
    download_release(o);
    std::string drawn = testing::internal::GetCapturedStderr();
    EXPECT_NE(drawn.find("\rdownload ["), std::string::npos) << drawn;
    EXPECT_NE(drawn.find("100.0%"), std::string::npos) << drawn;
    EXPECT_EQ(drawn.back(), '\n');
    EXPECT_EQ(logs().find("ETA"), std::string::npos);  // the bar replaces the log lines
}

TEST_F(Download, MissingCredentialsAreAUsageError) {
    EpcService service(body_);
    DownloadOptions o = options(service);
    o.creds.token.clear();
    Error e = failed(o);
    EXPECT_EQ(e.code(), exit_usage);
    EXPECT_NE(std::string(e.what()).find("EPC_TOKEN"), std::string::npos);
    o = options(service, Source::legacy);
    o.creds.email.clear();
    EXPECT_EQ(failed(o).code(), exit_usage);
    EXPECT_TRUE(service.requests().empty());
}

TEST_F(Download, NoSuchFile) {
    EpcService service(body_);
    DownloadOptions o = options(service);
    o.type = CertType::non_domestic;  // the stand-in only has domestic
    Error e = failed(o);
    EXPECT_EQ(e.code(), exit_usage);
    EXPECT_NE(std::string(e.what()).find("no such file"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("non-domestic"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("404"), std::string::npos) << e.what();
    EXPECT_EQ(service.requests().size(), 1u);

    Faults f;
    f.missing = true;
    service.set_faults(f);
    EXPECT_EQ(failed(options(service)).code(), exit_usage);
}

TEST_F(Download, WrongAdvertisedSizeFails) {
    for (long long delta : {10LL, -10LL}) {
        EpcService service(body_);
        Faults f;
        f.size_delta = delta;
        service.set_faults(f);
        DownloadOptions o = options(service);
        o.max_attempts = 2;
        Error e = failed(o);
        EXPECT_EQ(e.code(), exit_transient);
        EXPECT_NE(std::string(e.what()).find("advertised"), std::string::npos) << e.what();
        EXPECT_FALSE(fs::exists(download_path(o))) << delta;
        EXPECT_EQ(file_requests(service).size(), 2u);
    }
}

// --- Secrets -------------------------------------------------------------------------------------

TEST_F(Download, SecretsNeverReachLogsOrErrors) {
    EpcService service(body_);
    Faults f;
    f.cuts = 1;
    f.service_429 = 1;
    f.retry_after = "0";
    f.expired = 1;
    f.s3_500 = 1;
    service.set_faults(f);
    download_release(options(service));
    download_release(options(service, Source::legacy));
    Faults wrong_size;
    wrong_size.size_delta = 1;
    service.set_faults(wrong_size);
    failed(options(service));
    service.set_faults(Faults{});
    DownloadOptions wrong = options(service);
    wrong.creds.token += "x";
    failed(wrong);
    wrong = options(service, Source::legacy);
    wrong.creds.api_key += "x";
    failed(wrong);

    std::string log = logs();
    std::string everything = log + errors_;
    ASSERT_NE(log.find("127.0.0.1"), std::string::npos);  // the logs were captured
    ASSERT_FALSE(service.signatures().empty());
    for (const std::string& secret :
         {service.token, service.api_key, test::base64(service.email + ":" + service.api_key),
          std::string("X-Amz-Signature"), std::string("X-Amz-Credential")})
        EXPECT_EQ(everything.find(secret), std::string::npos) << secret << " in:\n" << everything;
    for (const std::string& signature : service.signatures())
        EXPECT_EQ(everything.find(signature), std::string::npos) << signature;
}

// --- Pieces --------------------------------------------------------------------------------------

TEST(DownloadDetail, LegacyListingShapes) {
    using nlohmann::json;
    const std::string name = "all-domestic-certificates.zip";
    EXPECT_EQ(detail::legacy_listed_size(json{{name, 123}}, name), 123u);
    EXPECT_EQ(detail::legacy_listed_size(json{{name, "456"}}, name), 456u);
    EXPECT_EQ(detail::legacy_listed_size(json{{"files", {{name, {{"size", 789}}}}}}, name), 789u);
    EXPECT_EQ(detail::legacy_listed_size(json{{"files", json::array({{{"name", name}, {"size", 5}}})}}, name), 5u);
    EXPECT_FALSE(detail::legacy_listed_size(json{{"other.zip", 1}}, name));
    EXPECT_FALSE(detail::legacy_listed_size(json{{name, "big"}}, name));
    EXPECT_FALSE(detail::legacy_listed_size(json::array(), name));
}

TEST(DownloadCredentials, FromFileAndEnvironment) {
    std::string path = tmp("credentials");
    std::ofstream(path) << "# EPC credentials\n\nEPC_TOKEN = \"abc def\"\nexport EPC_API_EMAIL=me@example.org\n"
                           "EPC_API_KEY='k=1'\nOTHER=ignored\n";
    Credentials c = credentials_from_file(path);
    EXPECT_EQ(c.token, "abc def");
    EXPECT_EQ(c.email, "me@example.org");
    EXPECT_EQ(c.api_key, "k=1");

    std::ofstream(path) << "EPC_TOKEN=ok\nsecret-without-equals\n";
    try {
        credentials_from_file(path);
        FAIL();
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), exit_usage);
        EXPECT_NE(std::string(e.what()).find("line 2"), std::string::npos) << e.what();
        EXPECT_EQ(std::string(e.what()).find("secret-without-equals"), std::string::npos) << e.what();
    }
    EXPECT_THROW(credentials_from_file(tmp("missing")), Error);

    setenv("EPC_TOKEN", "env-token", 1);
    unsetenv("EPC_API_EMAIL");
    setenv("EPC_API_KEY", "env-key", 1);
    Credentials env = credentials_from_env();
    EXPECT_EQ(env.token, "env-token");
    EXPECT_EQ(env.email, "");
    Credentials merged = merge_credentials(env, Credentials{"", "file@example.org", "file-key", ""});
    EXPECT_EQ(merged.token, "env-token");
    EXPECT_EQ(merged.email, "file@example.org");
    EXPECT_EQ(merged.api_key, "file-key");
    EXPECT_EQ(parse_source("legacy"), Source::legacy);
    EXPECT_FALSE(parse_source("old"));
}
