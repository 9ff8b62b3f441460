// Running at scale and on a schedule: a load split across shard processes publishes exactly what
// one process does, shard locks keep runs apart, check-release hands a new release to AWS Batch
// (a stand-in that speaks Batch's REST API, driven by the real AWS CLI), and the README's crontab
// line started twice at once imports once.
#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <regex>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "epc/db/columns.hpp"
#include "epc/db/locks.hpp"
#include "fixture/fixture.hpp"
#include "support/epc_service.hpp"
#include "support/geocoder_stand_ins.hpp"
#include "support/pg_test.hpp"
#include "support/process.hpp"

using namespace epc;
using epc::test::Outcome;
using epc::test::Process;
using epc::test::TestDatabase;

namespace {

std::string scratch(const std::string& name) {
    return testing::TempDir() + "scale-" + std::to_string(getpid()) + "-" + name;
}

Outcome run(const std::vector<std::string>& args, const std::vector<std::string>* env = nullptr) {
    static int n = 0;
    std::vector<std::string> argv = {EPC_IMPORT_BIN};
    argv.insert(argv.end(), args.begin(), args.end());
    return Process(argv, scratch("run-" + std::to_string(n++)), env).wait();
}

std::string make_zip(fixture::Options o, const std::string& name, fixture::Expected* expected = nullptr) {
    std::string path = scratch(name) + ".zip";
    std::ostringstream rows;
    fixture::Expected e = fixture::write_zip(path, o, &rows);
    if (expected) *expected = e;
    return path;
}

// Every row of a query of `columns` columns as text, one line per row, for comparing two databases.
std::string dump(TestDatabase& db, const std::string& sql, int columns) {
    db::Connection c = db.connect();
    db::Result r = c.exec(sql);
    std::string out;
    for (int i = 0; i < r.rows(); ++i) {
        for (int j = 0; j < columns; ++j) out += (r.is_null(i, j) ? "\\N" : r.text(i, j)) + "|";
        out += '\n';
    }
    return out;
}

bool has(const std::string& haystack, const std::string& needle) { return haystack.find(needle) != std::string::npos; }

const std::string kPublished = "SELECT " + certificate_column_list() +
                               " FROM epc.domestic_certificates ORDER BY cert_key";
const char* kRejects = "SELECT file_no, line_no, reason, detail FROM epc.reject_domestic ORDER BY 1, 2, 3";

}  // namespace

TEST(Shards, LoadedTogetherTheyPublishExactlyWhatOneProcessDoes) {
    fixture::Options fo;
    fo.rows = 24000;
    fo.files = 11;
    fo.with_all_hazards();  // duplicate keys among them: the check must see across shards
    fixture::Expected e;
    const std::string zip = make_zip(fo, "shards", &e);

    TestDatabase single, sharded;
    Outcome one = run({"--zip", zip, "--db", single.conninfo()});
    ASSERT_EQ(one.exit_code, 0) << one.err;

    // Three shard processes at once; the third finds its share the way an AWS Batch array child
    // does, from the array variables.
    const int n = 3;
    std::vector<std::unique_ptr<Process>> shards;
    std::vector<std::string> reports;
    for (int i = 0; i < n; ++i) {
        reports.push_back(scratch("shard-report-" + std::to_string(i)) + ".json");
        std::vector<std::string> argv = {EPC_IMPORT_BIN,     "load",   "--zip", zip,        "--db",
                                         sharded.conninfo(), "--jobs", "1",     "--report", reports.back()};
        std::vector<std::string> env;
        if (i == n - 1) {
            env = epc::test::environment_with(
                {"AWS_BATCH_JOB_ARRAY_INDEX=" + std::to_string(i), "AWS_BATCH_JOB_ARRAY_SIZE=" + std::to_string(n)});
        } else {
            argv.insert(argv.end(), {"--shard", std::to_string(i) + "/" + std::to_string(n)});
        }
        shards.push_back(
            std::make_unique<Process>(argv, scratch("shard-" + std::to_string(i)), env.empty() ? nullptr : &env));
    }
    int completed = 0;
    std::set<int> files_seen;
    std::uint64_t rows_read = 0;
    for (int i = 0; i < n; ++i) {
        Outcome o = shards[i]->wait();
        ASSERT_EQ(o.exit_code, 0) << "shard " << i << ": " << o.err;
        nlohmann::json report = nlohmann::json::parse(epc::test::read_file(reports[i]));
        const nlohmann::json& load = report.at("load");
        EXPECT_EQ(load.at("shard").at("index"), i);
        EXPECT_EQ(load.at("shard").at("count"), n);
        completed += load.at("complete").get<bool>() ? 1 : 0;
        EXPECT_FALSE(load.at("files").empty()) << "shard " << i << " had nothing to do";
        for (const auto& f : load.at("files"))
            EXPECT_TRUE(files_seen.insert(f.at("file_no").get<int>()).second) << "file loaded by two shards";
        rows_read += load.at("rows_read").get<std::uint64_t>();
    }
    EXPECT_EQ(completed, 1) << "exactly one shard, the last, completes the load";
    EXPECT_EQ(rows_read, e.rows_read);
    EXPECT_EQ(sharded.count("SELECT count(*) FROM epc.import_run"), 1) << "the shards share one run";
    EXPECT_EQ(sharded.scalar("SELECT status FROM epc.import_run"), "loaded");

    Outcome published = run({"publish", "--db", sharded.conninfo()});
    ASSERT_EQ(published.exit_code, 0) << published.err;

    EXPECT_EQ(sharded.count("SELECT count(*) FROM epc.domestic_certificates"), static_cast<long long>(e.rows_loaded));
    const int columns = static_cast<int>(certificate_columns().size());
    EXPECT_EQ(dump(sharded, kPublished, columns), dump(single, kPublished, columns));
    EXPECT_EQ(dump(sharded, kRejects, 4), dump(single, kRejects, 4));
    const char* counts = "SELECT status, files, rows_read, rows_loaded, rows_rejected, invalid_utf8_values, "
                         "invalid_values, rows_published FROM epc.import_run";
    EXPECT_EQ(dump(sharded, counts, 8), dump(single, counts, 8));
    EXPECT_GT(e.rows_rejected, 0u);
}

TEST(Shards, LocksKeepShardsAndOrdinaryRunsApart) {
    fixture::Options fo;
    fo.rows = 600;
    fo.files = 4;
    const std::string zip = make_zip(fo, "shard-locks");
    TestDatabase db;
    db::Connection holder = db.connect();
    const std::string type_lock = std::to_string(db::kLockNamespace) + ", " +
                                  std::to_string(db::lock_object(CertType::domestic));

    holder.exec("SELECT pg_advisory_lock(" + type_lock + ")");  // an ordinary run is going on
    Outcome shard = run({"load", "--zip", zip, "--db", db.conninfo(), "--shard", "0/2"});
    EXPECT_EQ(shard.exit_code, 4) << shard.err;
    EXPECT_TRUE(has(shard.err, "not a shard holds the lock")) << shard.err;
    holder.exec("SELECT pg_advisory_unlock(" + type_lock + ")");

    holder.exec("SELECT pg_advisory_lock_shared(" + type_lock + ")");  // shards are loading
    Outcome whole = run({"load", "--zip", zip, "--db", db.conninfo()});
    EXPECT_EQ(whole.exit_code, 4) << whole.err;
    EXPECT_TRUE(has(whole.err, "holds the lock")) << whole.err;
    Outcome publish = run({"publish", "--db", db.conninfo()});
    EXPECT_EQ(publish.exit_code, 4) << publish.err;
    holder.exec("SELECT pg_advisory_unlock_shared(" + type_lock + ")");

    const std::string shard_lock = std::to_string(db::kShardLockNamespace) + ", " +
                                   std::to_string(db::shard_lock_object(CertType::domestic, 1));
    holder.exec("SELECT pg_advisory_lock(" + shard_lock + ")");  // shard 1 is being loaded already
    Outcome twice = run({"load", "--zip", zip, "--db", db.conninfo(), "--shard", "1/2"});
    EXPECT_EQ(twice.exit_code, 4) << twice.err;
    EXPECT_TRUE(has(twice.err, "shard 1 of the domestic load is already being loaded")) << twice.err;
    holder.exec("SELECT pg_advisory_unlock(" + shard_lock + ")");

    // Shard 1 alone loads its share and leaves the load incomplete: publish refuses it.
    ASSERT_EQ(run({"load", "--zip", zip, "--db", db.conninfo(), "--shard", "1/2"}).exit_code, 0);
    EXPECT_EQ(db.scalar("SELECT status FROM epc.import_run"), "loading");
    Outcome early = run({"publish", "--db", db.conninfo()});
    EXPECT_EQ(early.exit_code, 2) << early.err;
    EXPECT_FALSE(db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'domestic_certificates'"));
    // Shard 0, retried later, completes it.
    Outcome rest = run({"load", "--zip", zip, "--db", db.conninfo(), "--shard", "0/2"});
    ASSERT_EQ(rest.exit_code, 0) << rest.err;
    EXPECT_EQ(db.scalar("SELECT status FROM epc.import_run"), "loaded");
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.import_file"), 4);
    // A late or retried child of the same array job finds nothing to do and rebuilds nothing.
    const long long staged = db.count("SELECT count(*) FROM epc.stage_domestic");
    Outcome late = run({"load", "--zip", zip, "--db", db.conninfo(), "--shard", "1/2"});
    ASSERT_EQ(late.exit_code, 0) << late.err;
    EXPECT_TRUE(has(late.err, "0 to go")) << late.err;
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.import_run"), 1);
    EXPECT_EQ(db.scalar("SELECT status FROM epc.import_run"), "loaded");
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.stage_domestic"), staged);
    ASSERT_EQ(run({"publish", "--db", db.conninfo()}).exit_code, 0);
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.domestic_certificates"), staged);
}

TEST(Shards, OnOneHostTheyShareOneDownloadAndNeverMixTwoReleases) {
    fixture::Options fo;
    fo.rows = 3000;
    fo.files = 4;
    fo.layout = Layout::current;
    fixture::Expected e;
    const std::string zip = make_zip(fo, "shard-download", &e);
    epc::test::EpcService svc(epc::test::read_file(zip));
    svc.s3_delay_ms = 1000;  // the second shard arrives while the first is downloading
    TestDatabase db;
    const std::string creds = epc::test::credentials_file(svc, scratch("shard-download.env"));
    std::vector<std::unique_ptr<Process>> shards;
    for (int i = 0; i < 2; ++i)
        shards.push_back(std::make_unique<Process>(
            std::vector<std::string>{EPC_IMPORT_BIN, "load", "--shard", std::to_string(i) + "/2", "--base-url",
                                     svc.base_url(), "--work-dir", scratch("shared-work"), "--credentials-file", creds,
                                     "--db", db.conninfo()},
            scratch("shard-download-" + std::to_string(i))));
    std::string logs;
    for (auto& p : shards) {
        Outcome o = p->wait();
        EXPECT_EQ(o.exit_code, 0) << o.err;
        logs += o.err;
    }
    EXPECT_EQ(svc.requests("s3").size(), 1u) << logs;
    EXPECT_TRUE(has(logs, "another shard is downloading")) << logs;
    EXPECT_TRUE(has(logs, "not downloading it again")) << logs;
    EXPECT_EQ(db.scalar("SELECT status FROM epc.import_run"), "loaded");
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.stage_domestic"), static_cast<long long>(e.rows_loaded));

    // A shard that got another release than its running siblings stops and leaves their rows be.
    fo.seed = 77;
    const std::string other = make_zip(fo, "shard-other-release");
    TestDatabase db2;
    ASSERT_EQ(run({"load", "--zip", zip, "--db", db2.conninfo(), "--shard", "0/2"}).exit_code, 0);
    const long long staged = db2.count("SELECT count(*) FROM epc.stage_domestic");
    db::Connection sibling = db2.connect();  // shard 0 is still at work, as far as locks tell
    sibling.exec("SELECT pg_advisory_lock(" + std::to_string(db::kShardLockNamespace) + ", " +
                 std::to_string(db::shard_lock_object(CertType::domestic, 0)) + ")");
    Outcome mixed = run({"load", "--zip", other, "--db", db2.conninfo(), "--shard", "1/2"});
    EXPECT_EQ(mixed.exit_code, 2) << mixed.err;
    EXPECT_TRUE(has(mixed.err, "different archive")) << mixed.err;
    EXPECT_EQ(db2.count("SELECT count(*) FROM epc.stage_domestic"), staged);
    EXPECT_EQ(db2.count("SELECT count(*) FROM epc.import_run"), 1);
    EXPECT_EQ(db2.scalar("SELECT status FROM epc.import_run"), "loading");
}

namespace {

// AWS Batch's SubmitJob (POST /v1/submitjob, JSON in and out), as the AWS CLI calls it.
class BatchStandIn {
public:
    BatchStandIn() {
        server_.Post("/v1/submitjob", [this](const httplib::Request& req, httplib::Response& res) {
            std::lock_guard<std::mutex> lock(mutex_);
            if (refuse) {
                res.status = 400;
                res.set_content(R"({"__type":"ClientException","message":"Job queue does not exist."})",
                                "application/json");
                return;
            }
            nlohmann::json body = nlohmann::json::parse(req.body);
            submitted.push_back(body);
            std::string id = "7f3c2a10-0000-4000-8000-00000000000" + std::to_string(submitted.size());
            res.set_content(nlohmann::json{{"jobArn", "arn:aws:batch:eu-west-2:123456789012:job/" + id},
                                           {"jobName", body.value("jobName", "")},
                                           {"jobId", id}}
                                .dump(),
                            "application/json");
        });
        port_ = server_.bind_to_any_port("127.0.0.1");
        thread_ = std::thread([this] { server_.listen_after_bind(); });
    }
    ~BatchStandIn() {
        server_.stop();
        thread_.join();
    }
    std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

    std::vector<nlohmann::json> submitted;
    bool refuse = false;

private:
    httplib::Server server_;
    int port_ = 0;
    std::thread thread_;
    std::mutex mutex_;
};

// The AWS CLI with made-up keys and nothing from the developer's own configuration.
std::vector<std::string> aws_environment() {
    const std::string none = scratch("no-aws-config");
    std::vector<std::string> env;
    for (const std::string& kv : epc::test::environment_with({}))
        if (kv.rfind("AWS_", 0) != 0) env.push_back(kv);
    env.insert(env.end(),
               {"AWS_ACCESS_KEY_ID=AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY=example", "AWS_DEFAULT_REGION=eu-west-2",
                "AWS_CONFIG_FILE=" + none, "AWS_SHARED_CREDENTIALS_FILE=" + none, "AWS_EC2_METADATA_DISABLED=true",
                "AWS_MAX_ATTEMPTS=1"});
    return env;
}

}  // namespace

TEST(Schedule, CheckReleaseSubmitsTheImportToAwsBatchOnlyWhenThereIsANewRelease) {
    fixture::Options fo;
    fo.rows = 500;
    fo.layout = Layout::current;
    const std::string zip = make_zip(fo, "submit");
    epc::test::EpcService svc(epc::test::read_file(zip));
    BatchStandIn batch;
    TestDatabase db;
    const std::vector<std::string> env = aws_environment();
    const std::vector<std::string> common = {"--base-url",
                                             svc.base_url(),
                                             "--db",
                                             db.conninfo(),
                                             "--credentials-file",
                                             epc::test::credentials_file(svc, scratch("submit.env")),
                                             "--batch-endpoint-url",
                                             batch.url(),
                                             "--submit-queue",
                                             "epc-queue"};
    auto check = [&](std::vector<std::string> args) {
        args.insert(args.begin(), "check-release");
        args.insert(args.end(), common.begin(), common.end());
        return run(args, &env);
    };

    // Split into 3: an array job of loads, then a publish that depends on it.
    const std::string report = scratch("submit-report.json");
    Outcome split = check({"--submit-shards", "3", "--submit-load-definition", "epc-load:4",
                           "--submit-publish-definition", "epc-publish:2", "--report", report});
    ASSERT_EQ(split.exit_code, 0) << split.err;
    ASSERT_EQ(batch.submitted.size(), 2u) << split.err;
    const nlohmann::json& load = batch.submitted[0];
    EXPECT_EQ(load.at("jobQueue"), "epc-queue");
    EXPECT_EQ(load.at("jobDefinition"), "epc-load:4");
    EXPECT_EQ(load.at("parameters").at("certtype"), "domestic");
    EXPECT_EQ(load.at("arrayProperties").at("size"), 3);
    EXPECT_EQ(load.at("containerOverrides").at("environment").at(0),
              (nlohmann::json{{"name", "AWS_BATCH_JOB_ARRAY_SIZE"}, {"value", "3"}}));
    const nlohmann::json& publish = batch.submitted[1];
    EXPECT_EQ(publish.at("jobDefinition"), "epc-publish:2");
    EXPECT_EQ(publish.at("parameters").at("certtype"), "domestic");
    EXPECT_EQ(publish.at("dependsOn").at(0).at("jobId"), "7f3c2a10-0000-4000-8000-000000000001");
    EXPECT_FALSE(publish.contains("arrayProperties"));
    nlohmann::json summary = nlohmann::json::parse(epc::test::read_file(report));
    EXPECT_EQ(summary.at("submitted").size(), 2u);
    EXPECT_EQ(summary.at("submitted").at(1).at("id"), "7f3c2a10-0000-4000-8000-000000000002");
    EXPECT_FALSE(has(split.err, svc.token));

    // One machine: a single full-run job.
    Outcome whole = check({"--submit-run-definition", "epc-run:7"});
    ASSERT_EQ(whole.exit_code, 0) << whole.err;
    ASSERT_EQ(batch.submitted.size(), 3u);
    EXPECT_EQ(batch.submitted[2].at("jobDefinition"), "epc-run:7");
    EXPECT_EQ(batch.submitted[2].at("parameters").at("certtype"), "domestic");
    EXPECT_FALSE(batch.submitted[2].contains("arrayProperties"));

    // A refused submission is an error an operator sees, with what AWS said.
    batch.refuse = true;
    Outcome refused = check({"--submit-run-definition", "epc-run:7"});
    EXPECT_EQ(refused.exit_code, 5) << refused.err;
    EXPECT_TRUE(has(refused.err, "Job queue does not exist")) << refused.err;
    batch.refuse = false;

    // Once the release is published, the scheduled check succeeds and submits nothing.
    ASSERT_EQ(run({"--base-url", svc.base_url(), "--db", db.conninfo(), "--work-dir", scratch("submit-work"),
                   "--credentials-file", epc::test::credentials_file(svc, scratch("submit.env"))})
                  .exit_code,
              0);
    Outcome nothing = check({"--submit-run-definition", "epc-run:7"});
    EXPECT_EQ(nothing.exit_code, 0) << nothing.err;
    EXPECT_TRUE(has(nothing.err, "nothing new")) << nothing.err;
    EXPECT_EQ(batch.submitted.size(), 3u);
}

namespace {

// The crontab line documented in README.md (the line in the ```crontab block that uses
// check-release), without its five schedule fields.
std::string documented_crontab_command() {
    std::ifstream readme(std::string(EPC_SOURCE_DIR) + "/README.md");
    std::string line;
    bool in_block = false;
    while (std::getline(readme, line)) {
        if (line.rfind("```", 0) == 0) {
            in_block = line == "```crontab";
            continue;
        }
        if (in_block && line.find("check-release") != std::string::npos && line[0] != '#') {
            std::istringstream fields(line);
            std::string field;
            for (int i = 0; i < 5; ++i) fields >> field;
            std::string command;
            std::getline(fields, command);
            return command.substr(command.find_first_not_of(' '));
        }
    }
    return "";
}

}  // namespace

TEST(Schedule, DocumentedCrontabLineStartedTwiceAtOnceImportsOnce) {
    std::string command = documented_crontab_command();
    ASSERT_FALSE(command.empty()) << "README.md has no ```crontab block with a check-release line";
    fixture::Options fo;
    fo.rows = 3000;
    fo.layout = Layout::current;
    fixture::Expected e;
    const std::string zip = make_zip(fo, "cron", &e);
    epc::test::EpcService svc(epc::test::read_file(zip));
    svc.s3_delay_ms = 2000;  // the download lasts: the second start overlaps the first
    TestDatabase db;

    // The machine's paths and the real service become this test's.
    const std::string home = scratch("cron-home");
    std::filesystem::create_directories(home);
    command = std::regex_replace(command, std::regex("/var/lib/epc-import"), home);
    command = std::regex_replace(command, std::regex("(^|[ ;&|{(])epc-import "),
                                 "$1" + std::string(EPC_IMPORT_BIN) + " --base-url " + svc.base_url() + " ");
    const std::vector<std::string> env = epc::test::environment_with(
        {"PGDATABASE=" + db.name(), "EPC_TOKEN=" + svc.token});

    Process first({"/bin/sh", "-c", command}, scratch("cron-1"), &env);
    Process second({"/bin/sh", "-c", command}, scratch("cron-2"), &env);
    std::vector<int> codes = {first.wait().exit_code, second.wait().exit_code};
    std::sort(codes.begin(), codes.end());
    const std::string log = epc::test::read_file(home + "/epc-import.log");
    EXPECT_EQ(codes, (std::vector<int>{0, 4})) << command << "\n" << log;
    EXPECT_TRUE(has(log, "holds the lock")) << log;
    EXPECT_FALSE(has(log, svc.token));
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.domestic_certificates"), static_cast<long long>(e.rows_loaded));
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.import_run"), 1);
    EXPECT_EQ(db.scalar("SELECT status FROM epc.import_run"), "published");
    nlohmann::json report = nlohmann::json::parse(epc::test::read_file(home + "/last-run.json"));
    EXPECT_EQ(report.at("status"), "ok");

    // The next tick: nothing new, nothing done.
    svc.s3_delay_ms = 0;
    Outcome again = Process({"/bin/sh", "-c", command}, scratch("cron-3"), &env).wait();
    EXPECT_EQ(again.exit_code, 10) << epc::test::read_file(home + "/epc-import.log");
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.import_run"), 1);
}

TEST(Operability, EveryStageLogsStartEndCountsAndRateAsJsonLines) {
    fixture::Options fo;
    fo.rows = 2000;
    fixture::Expected e;
    const std::string zip = make_zip(fo, "logs", &e);
    TestDatabase db;
    epc::test::GeocoderStandIn postcodes(epc::test::GeocoderStandIn::Kind::postcodes_io);
    std::string logs;
    for (const char* shard : {"0/2", "1/2"}) {
        Outcome o = run({"load", "--zip", zip, "--db", db.conninfo(), "--shard", shard, "--log-format", "json"});
        ASSERT_EQ(o.exit_code, 0) << o.err;
        logs += o.err;
    }
    const std::string report = scratch("logs-report.json");
    // The job that follows a split load: geocode, then publish.
    Outcome publish = run({"publish", "--db", db.conninfo(), "--geocoder", "postcodes-io=" + postcodes.base_url(),
                           "--log-format", "json", "--report", report});
    ASSERT_EQ(publish.exit_code, 0) << publish.err;
    logs += publish.err;

    std::vector<std::string> messages;
    std::istringstream lines(logs);
    for (std::string line; std::getline(lines, line);) {
        nlohmann::json j = nlohmann::json::parse(line);  // throws unless each line is one JSON object
        EXPECT_TRUE(j.contains("time") && j.contains("level")) << line;
        messages.push_back(j.at("message"));
    }
    auto logged = [&](const std::string& pattern) {
        std::regex re(pattern);
        return std::any_of(messages.begin(), messages.end(),
                           [&](const std::string& m) { return std::regex_search(m, re); });
    };
    EXPECT_TRUE(logged("^extract: inspecting "));
    EXPECT_TRUE(logged("^load: shard 0/2 of run 1: [0-9]+ of the [0-9]+ files"));
    EXPECT_TRUE(logged("^load: shard 0/2 done"));
    EXPECT_TRUE(logged("^load: [0-9]+ rows read, [0-9]+ loaded, [0-9]+ rejected, in [0-9.]+ s \\([0-9.k]+ rows/s\\)"));
    EXPECT_TRUE(logged("^geocode: [0-9]+ distinct addresses"));
    EXPECT_TRUE(logged("^geocode: [0-9]+ addresses to locate, .* \\([0-9]+ addresses/s\\)"));
    EXPECT_TRUE(logged("^publish: building "));
    EXPECT_TRUE(logged("^publish: epc.domestic_certificates now holds run 1: " + std::to_string(e.rows_loaded) +
                       " certificates, .* \\([0-9]+ rows/s\\)"));

    nlohmann::json r = nlohmann::json::parse(epc::test::read_file(report));
    EXPECT_EQ(r.at("status"), "ok");
    EXPECT_EQ(r.at("exit_code"), 0);
    EXPECT_GT(r.at("geocode").at("sent").get<long long>(), 0);
    EXPECT_EQ(r.at("publish").at("rows").get<std::uint64_t>(), e.rows_loaded);
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.geocode_cache"), r.at("geocode").at("sent").get<long long>());
}

TEST(Operability, HelpListsTheScaleOutOptionsAndEveryExitCode) {
    Outcome help = run({"--help"});
    ASSERT_EQ(help.exit_code, 0);
    for (const char* text : {"--shard", "--dry-run", "--submit-queue", "--submit-shards", "AWS_BATCH_JOB_ARRAY_INDEX",
                             "AWS_BATCH_JOB_ARRAY_SIZE", "0   success", "2   usage error", "3   archive invalid",
                             "4   another run", "5   transient", "10  check-release only: nothing new"})
        EXPECT_TRUE(has(help.out, text)) << text;
}
