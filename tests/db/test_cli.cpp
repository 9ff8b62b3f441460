// The real binary, run the way operators run it: exit codes, messages, logs, report, kill -9.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "epc/db/locks.hpp"
#include "fixture/fixture.hpp"
#include "support/epc_service.hpp"
#include "support/geocoder_stand_ins.hpp"
#include "support/pg_test.hpp"
#include "support/zip_writer.hpp"

extern char** environ;

using namespace epc;
using epc::test::TestDatabase;

namespace {

struct Outcome {
    int exit_code = -1;
    std::string out;
    std::string err;
};

// Starts epc-import with stdout/stderr captured to files; returns its pid.
pid_t start(const std::vector<std::string>& args, const std::string& tag) {
    std::vector<std::string> argv_s = {EPC_IMPORT_BIN};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    std::string out = testing::TempDir() + tag + ".out", err = testing::TempDir() + tag + ".err";
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid = 0;
    int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) throw std::runtime_error("cannot start " + argv_s[0]);
    return pid;
}

Outcome finish(pid_t pid, const std::string& tag) {
    int status = 0;
    waitpid(pid, &status, 0);
    Outcome o;
    o.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    o.out = epc::test::read_file(testing::TempDir() + tag + ".out");
    o.err = epc::test::read_file(testing::TempDir() + tag + ".err");
    return o;
}

Outcome run(const std::vector<std::string>& args) {
    static int n = 0;
    std::string tag = "cli-" + std::to_string(getpid()) + "-" + std::to_string(n++);
    return finish(start(args, tag), tag);
}

std::string make_zip(fixture::Options o, const std::string& name, fixture::Expected* expected = nullptr,
                     std::string* rows = nullptr) {
    std::string path = testing::TempDir() + name + ".zip";
    std::ostringstream out;
    fixture::Expected e = fixture::write_zip(path, o, &out);
    if (expected) *expected = e;
    if (rows) *rows = out.str();
    return path;
}

bool has(const std::string& haystack, const std::string& needle) { return haystack.find(needle) != std::string::npos; }

}  // namespace

TEST(Cli, HelpDocumentsCommandsOptionsAndExitCodes) {
    Outcome o = run({"--help"});
    EXPECT_EQ(o.exit_code, 0);
    for (const char* s : {"--certtype", "--zip", "--db", "--jobs", "--max-rejects", "--expect-dirs", "--report",
                          "--log-format", "load", "extract", "Exit codes", "DATABASE_URL"})
        EXPECT_TRUE(has(o.out, s)) << s;
    Outcome v = run({"--version"});
    EXPECT_EQ(v.exit_code, 0);
    EXPECT_TRUE(has(v.out, "epc-import "));
}

TEST(Cli, UsageErrorsExitTwo) {
    EXPECT_EQ(run({"--certtype", "commercial"}).exit_code, 2);
    Outcome no_credentials = run({"load", "--work-dir", testing::TempDir() + "cli-usage"});  // downloads: needs a token
    EXPECT_EQ(no_credentials.exit_code, 2);
    EXPECT_TRUE(has(no_credentials.err, "EPC_TOKEN")) << no_credentials.err;
    Outcome missing = run({"load", "--zip", "/nonexistent.zip"});
    EXPECT_EQ(missing.exit_code, 2);
    EXPECT_TRUE(has(missing.err, "/nonexistent.zip: no such file")) << missing.err;
}

TEST(Cli, LoadSucceedsWithJsonLogsAndReport) {
    fixture::Options fo;
    fo.rows = 5000;
    fo.with_all_hazards();
    fixture::Expected e;
    std::string zip = make_zip(fo, "cli-ok", &e);
    TestDatabase db;
    std::string report = testing::TempDir() + "cli-report.json";
    Outcome o = run({"load", "--zip", zip, "--db", db.conninfo(), "--log-format", "json", "--report", report});
    ASSERT_EQ(o.exit_code, 0) << o.err;
    std::istringstream lines(o.err);
    std::string line;
    int n = 0;
    while (std::getline(lines, line)) {
        nlohmann::json j = nlohmann::json::parse(line);  // throws if a line is not one JSON object
        EXPECT_TRUE(j.contains("time") && j.contains("level") && j.contains("message"));
        ++n;
    }
    EXPECT_GT(n, 3);
    nlohmann::json r = nlohmann::json::parse(epc::test::read_file(report));
    EXPECT_EQ(r["status"], "ok");
    EXPECT_EQ(r["exit_code"], 0);
    EXPECT_EQ(r["load"]["rows_read"].get<std::uint64_t>(), e.rows_read);
    EXPECT_EQ(r["load"]["rows_loaded"].get<std::uint64_t>(), e.rows_loaded);
    EXPECT_EQ(r["load"]["rows_rejected"].get<std::uint64_t>(), e.rows_rejected);
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.stage_domestic"), static_cast<long long>(e.rows_loaded));
}

TEST(Cli, InvalidArchiveExitsThreeListsEveryProblemAndTouchesNoTable) {
    fixture::Options fo;
    fo.rows = 200;
    fo.invalid = {fixture::Invalid::bad_dir_name, fixture::Invalid::missing_recommendations,
                  fixture::Invalid::empty_certificates, fixture::Invalid::missing_key_column,
                  fixture::Invalid::path_traversal};
    std::string zip = make_zip(fo, "cli-invalid");
    TestDatabase db;
    const std::string failed = testing::TempDir() + "cli-invalid-failed";
    std::filesystem::remove_all(failed);
    Outcome o = run({"load", "--zip", zip, "--db", db.conninfo(), "--log-format", "text", "--failed-to", failed});
    EXPECT_EQ(o.exit_code, 3) << o.err;
    // The operator's own file stays where it was; a copy and the reasons go to quarantine.
    EXPECT_TRUE(std::filesystem::exists(zip));
    EXPECT_EQ(std::distance(std::filesystem::directory_iterator(failed), std::filesystem::directory_iterator()), 2);
    for (const char* s : {"does not match", "has no recommendations.csv", "is empty", "header has no LMK_KEY",
                          "escapes the archive", "failed validation with"})
        EXPECT_TRUE(has(o.err, s)) << s << "\n" << o.err;
    EXPECT_EQ(db.count("SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'epc'"), 0);

    std::string junk = testing::TempDir() + "cli-junk.zip";
    fixture::write_not_a_zip(junk);
    Outcome j = run({"load", "--zip", junk, "--db", db.conninfo(), "--failed-to", failed});
    EXPECT_EQ(j.exit_code, 3);
    EXPECT_TRUE(has(j.err, "not a zip archive")) << j.err;

    std::string cut = make_zip(fo, "cli-cut");
    fixture::truncate_file(cut, 3000);
    EXPECT_EQ(run({"extract", "--zip", cut, "--failed-to", failed}).exit_code, 3);

    fixture::Options two;
    two.rows = 100;
    two.files = 2;
    std::string ok = make_zip(two, "cli-dirs");
    EXPECT_EQ(run({"extract", "--zip", ok, "--expect-dirs", "2"}).exit_code, 0);  // 1 LA + unknown
    Outcome wrong = run({"extract", "--zip", ok, "--expect-dirs", "349", "--failed-to", failed});
    EXPECT_EQ(wrong.exit_code, 3);
    EXPECT_TRUE(has(wrong.err, "expected 349")) << wrong.err;
}

TEST(Cli, DatabaseUnavailableIsTransientAndPasswordNeverShown) {
    fixture::Options fo;
    fo.rows = 50;
    std::string zip = make_zip(fo, "cli-nodb");
    const std::string secret = "hunter2-very-secret";
    std::string report = testing::TempDir() + "cli-nodb.json";
    Outcome o = run(
        {"load", "--zip", zip, "--db", "postgresql://epc:" + secret + "@127.0.0.1:1/epc", "--report", report});
    EXPECT_EQ(o.exit_code, 5) << o.err;
    EXPECT_TRUE(has(o.err, "cannot connect to PostgreSQL")) << o.err;
    EXPECT_FALSE(has(o.err + o.out, secret));
    EXPECT_FALSE(has(epc::test::read_file(report), secret));
}

TEST(Cli, LockHeldExitsFourAndTooManyRejectsExitsSix) {
    fixture::Options fo;
    fo.rows = 2000;
    fo.hazards = {fixture::Hazard::bad_rows};
    fixture::Expected e;
    std::string zip = make_zip(fo, "cli-codes", &e);
    TestDatabase db;
    Outcome budget = run({"load", "--zip", zip, "--db", db.conninfo(), "--max-rejects", "0"});
    EXPECT_EQ(budget.exit_code, 6) << budget.err;
    EXPECT_TRUE(has(budget.err, "--max-rejects")) << budget.err;

    db::Connection holder = db.connect();
    holder.exec("SELECT pg_advisory_lock(" + std::to_string(db::kLockNamespace) + ", " +
                std::to_string(db::lock_object(CertType::domestic)) + ")");
    Outcome locked = run({"load", "--zip", zip, "--db", db.conninfo()});
    EXPECT_EQ(locked.exit_code, 4) << locked.err;
    EXPECT_TRUE(has(locked.err, "holds the lock")) << locked.err;
}

TEST(Cli, KilledRunStartedAgainFinishesWithExactlyTheRightRows) {
    fixture::Options fo;
    fo.rows = 150000;
    fo.files = 40;
    fo.seed = 21;
    fo.with_all_hazards();
    fixture::Expected e;
    std::string rows;
    std::string zip = make_zip(fo, "cli-kill", &e, &rows);
    TestDatabase db;
    pid_t pid = start({"load", "--zip", zip, "--db", db.conninfo(), "--jobs", "2"}, "cli-kill");
    db::Connection c = db.connect();
    bool killed = epc::test::wait_for_count(c, "SELECT count(*) FROM epc.import_file", 3, std::chrono::seconds(60));
    if (killed) kill(pid, SIGKILL);
    Outcome first = finish(pid, "cli-kill");
    ASSERT_TRUE(killed) << first.err;
    EXPECT_EQ(first.exit_code, 128 + SIGKILL);

    std::string report = testing::TempDir() + "cli-kill.json";
    Outcome second = run({"load", "--zip", zip, "--db", db.conninfo(), "--report", report});
    ASSERT_EQ(second.exit_code, 0) << second.err;
    nlohmann::json r = nlohmann::json::parse(epc::test::read_file(report));
    EXPECT_TRUE(r["load"]["resumed"].get<bool>());
    EXPECT_EQ(r["load"]["rows_loaded"].get<std::uint64_t>(), e.rows_loaded);
    EXPECT_EQ(r["load"]["rows_rejected"].get<std::uint64_t>(), e.rows_rejected);

    epc::test::load_expected(c, "expected_rows", rows);
    EXPECT_EQ(epc::test::rows_missing(c, "expected_rows", "epc.stage_domestic"), 0);
    EXPECT_EQ(epc::test::rows_missing(c, "epc.stage_domestic", "expected_rows"), 0);
    EXPECT_EQ(c.exec("SELECT count(*) FROM epc.reject_domestic").integer(0, 0),
              static_cast<long long>(e.rows_rejected));
}

TEST(Cli, CorruptDataFoundWhileInflatingFailsTheRunAsInvalidArchive) {
    // The central directory is intact, so validation passes; only inflating (CRC check) can tell.
    fixture::Options fo;
    fo.layout = Layout::single;
    fo.rows = 20000;
    std::string zip = make_zip(fo, "cli-corrupt");
    std::string bytes = epc::test::read_file(zip);
    for (std::size_t i = bytes.size() / 2; i < bytes.size() / 2 + 64; ++i)
        bytes[i] = static_cast<char>(bytes[i] ^ 0x5A);
    std::ofstream(zip, std::ios::binary) << bytes;
    TestDatabase db;
    Outcome o = run({"load", "--zip", zip, "--db", db.conninfo()});
    EXPECT_EQ(o.exit_code, 3) << o.err;
    // Depending on where the damage lands: an inflate or CRC error, or more bytes than declared.
    EXPECT_TRUE(has(o.err, "archive entry certificates.csv")) << o.err;
    EXPECT_EQ(db.scalar("SELECT status FROM epc.import_run"), "failed");
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.stage_domestic"), 0);  // the file's rows rolled back
}

TEST(Cli, CrcMismatchOfValidDeflateDataFailsTheRunAsInvalidArchive) {
    // The deflate stream is sound and only the CRC-32 in the headers is wrong: nothing but the
    // CRC check can tell, and it must before the file commits.
    fixture::Options fo;
    fo.layout = Layout::single;
    fo.rows = 20000;
    std::string zip = make_zip(fo, "cli-crc");
    std::vector<epc::test::RawEntry> entries;
    for (auto& [name, content] : epc::test::read_zip(zip)) {
        epc::test::RawEntry e;
        e.name = name;
        e.content = std::move(content);
        e.zip64 = true;
        if (name == "certificates.csv") e.crc = 0x12345678;
        entries.push_back(std::move(e));
    }
    epc::test::write_raw_zip(zip, entries);
    TestDatabase db;
    const std::string failed = testing::TempDir() + "cli-crc-failed";
    std::filesystem::remove_all(failed);
    Outcome o = run({"load", "--zip", zip, "--db", db.conninfo(), "--failed-to", failed});
    EXPECT_EQ(o.exit_code, 3) << o.err;
    EXPECT_TRUE(has(o.err, "archive entry certificates.csv is corrupt: CRC-32")) << o.err;
    EXPECT_TRUE(has(o.err, "its directory says 12345678")) << o.err;
    EXPECT_EQ(db.scalar("SELECT status FROM epc.import_run"), "failed");
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.stage_domestic"), 0);  // the file's rows rolled back
    // Quarantined like an archive that fails validation: a copy of the operator's --zip, and why.
    std::vector<std::string> quarantined;
    for (const auto& entry : std::filesystem::directory_iterator(failed))
        quarantined.push_back(entry.path().filename().string());
    ASSERT_EQ(quarantined.size(), 2u) << o.err;
    std::sort(quarantined.begin(), quarantined.end());  // <name>-<time>.json, <name>-<time>.zip
    EXPECT_EQ(quarantined[1].rfind("cli-crc", 0), 0u) << quarantined[1];
    EXPECT_NE(epc::test::read_file(failed + "/" + quarantined[0]).find("CRC-32"), std::string::npos) << quarantined[0];
    EXPECT_TRUE(std::filesystem::exists(zip));  // the operator's own file stays where it was
}

TEST(Cli, LogSqlShowsEachStatementWithItsDurationButNotItsValues) {
    fixture::Options fo;
    fo.rows = 500;
    std::string zip = make_zip(fo, "cli-log-sql");
    TestDatabase db;
    Outcome o = run({"load", "--zip", zip, "--db", db.conninfo(), "--log-format", "text", "--log-sql"});
    ASSERT_EQ(o.exit_code, 0) << o.err;
    EXPECT_TRUE(has(o.err, "sql [epc-import domestic load] ")) << o.err;
    EXPECT_TRUE(has(o.err, " ms (10 parameters): INSERT INTO epc.import_file")) << o.err;
    // The run's archive fingerprint is a parameter of the import_run row: it must not be logged.
    const std::string identity = db.scalar("SELECT archive_identity FROM epc.import_run");
    ASSERT_FALSE(identity.empty());
    EXPECT_FALSE(has(o.err, identity)) << o.err;
    Outcome quiet = run({"load", "--zip", zip, "--db", db.conninfo(), "--log-format", "text"});
    ASSERT_EQ(quiet.exit_code, 0) << quiet.err;
    EXPECT_FALSE(has(quiet.err, "sql [")) << quiet.err;
}

TEST(Cli, RunValidatesLoadsAndPublishes) {
    fixture::Options fo;
    fo.rows = 3000;
    fo.with_all_hazards();
    fixture::Expected e;
    std::string zip = make_zip(fo, "cli-run", &e);
    TestDatabase db;
    std::string report = testing::TempDir() + "cli-run.json";
    Outcome o = run({"--zip", zip, "--db", db.conninfo(), "--report", report});  // `run` is the default
    ASSERT_EQ(o.exit_code, 0) << o.err;
    nlohmann::json r = nlohmann::json::parse(epc::test::read_file(report));
    EXPECT_EQ(r["command"], "run");
    EXPECT_EQ(r["publish"]["rows"].get<std::uint64_t>(), e.rows_loaded);
    EXPECT_EQ(r["publish"]["table"], "epc.domestic_certificates");
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.domestic_certificates"), static_cast<long long>(e.rows_loaded));

    Outcome again = run({"publish", "--db", db.conninfo()});
    EXPECT_EQ(again.exit_code, 0) << again.err;
    EXPECT_TRUE(has(again.err, "already")) << again.err;
    EXPECT_EQ(run({"publish", "--zip", zip, "--db", db.conninfo()}).exit_code, 2);
}

TEST(Cli, RunDownloadsTheReleaseAndCheckReleaseTellsWhenThereIsANewOne) {
    fixture::Options fo;
    fo.rows = 2000;
    fo.layout = Layout::current;
    fixture::Expected e;
    std::string zip = make_zip(fo, "cli-download", &e);
    epc::test::EpcService svc(epc::test::read_file(zip));
    TestDatabase db;
    const std::string work = testing::TempDir() + "cli-download-work";
    const std::string kept = testing::TempDir() + "cli-download-kept";
    const std::vector<std::string> common = {"--base-url",
                                             svc.base_url(),
                                             "--work-dir",
                                             work,
                                             "--db",
                                             db.conninfo(),
                                             "--credentials-file",
                                             epc::test::credentials_file(svc, testing::TempDir() + "cli-download.env")};
    auto with = [&](std::vector<std::string> args) {
        args.insert(args.end(), common.begin(), common.end());
        return run(args);
    };
    EXPECT_EQ(with({"check-release"}).exit_code, 0);  // nothing imported yet: new

    Outcome first = with({"--archive-to", kept});
    ASSERT_EQ(first.exit_code, 0) << first.err;
    EXPECT_FALSE(has(first.err, svc.token));
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.domestic_certificates"), static_cast<long long>(e.rows_loaded));
    db::Connection c = db.connect();
    db::Result r = c.exec("SELECT source, release_last_updated, archive_sha256, archive_bytes FROM epc.import_run");
    EXPECT_EQ(r.text(0, 0), "current");
    EXPECT_EQ(r.text(0, 1), svc.last_updated);
    EXPECT_EQ(r.text(0, 2).size(), 64u);
    EXPECT_EQ(r.integer(0, 3), static_cast<long long>(std::filesystem::file_size(zip)));
    EXPECT_EQ(epc::test::read_file(kept + "/domestic-current-2026-11-01.zip"), epc::test::read_file(zip));

    // The same release again: nothing to do, and check-release says so with exit 10.
    Outcome check = with({"check-release"});
    EXPECT_EQ(check.exit_code, 10) << check.err;
    Outcome again = with({});
    EXPECT_EQ(again.exit_code, 0) << again.err;
    EXPECT_TRUE(has(again.err, "nothing to do")) << again.err;
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.import_run"), 1);

    svc.last_updated = "2026-12-01T03:04:05Z";  // the monthly rebuild
    EXPECT_EQ(with({"check-release"}).exit_code, 0);
    EXPECT_EQ(with({}).exit_code, 0);
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.import_run WHERE status = 'published'"), 2);
}

TEST(Cli, DownloadedArchiveThatFailsValidationIsQuarantinedWithItsReasons) {
    fixture::Options fo;
    fo.rows = 300;
    fo.invalid = {fixture::Invalid::bad_dir_name, fixture::Invalid::empty_certificates};
    std::string zip = make_zip(fo, "cli-quarantine");
    epc::test::EpcService svc(epc::test::read_file(zip));
    TestDatabase db;
    const std::string work = testing::TempDir() + "cli-quarantine-work";
    const std::string failed = testing::TempDir() + "cli-quarantine-failed";
    std::filesystem::remove_all(failed);
    Outcome o = run({"--base-url", svc.base_url(), "--work-dir", work, "--failed-to", failed, "--db", db.conninfo(),
                     "--credentials-file",
                     epc::test::credentials_file(svc, testing::TempDir() + "cli-quarantine.env")});
    EXPECT_EQ(o.exit_code, 3) << o.err;
    EXPECT_TRUE(has(o.err, "quarantined")) << o.err;
    std::vector<std::filesystem::path> files;
    for (const auto& entry : std::filesystem::directory_iterator(failed)) files.push_back(entry.path());
    ASSERT_EQ(files.size(), 2u);
    std::sort(files.begin(), files.end());
    EXPECT_EQ(files[0].extension(), ".json");
    EXPECT_EQ(epc::test::read_file(files[1].string()), epc::test::read_file(zip));
    nlohmann::json why = nlohmann::json::parse(epc::test::read_file(files[0].string()));
    EXPECT_GE(why["problems"].size(), 2u);
    EXPECT_FALSE(std::filesystem::exists(work + "/domestic-current.zip"));  // moved, not left behind
    EXPECT_EQ(db.count("SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'epc'"), 0);
}

TEST(Cli, GeocodeKilledMidwayThenRerunAsksOnlyForTheRest) {
    fixture::Options fo;
    fo.rows = 6000;
    fo.seed = 9;
    std::string zip = make_zip(fo, "cli-geo-kill");
    TestDatabase db;
    ASSERT_EQ(run({"load", "--zip", zip, "--db", db.conninfo()}).exit_code, 0);
    epc::test::GeocoderStandIn postcodes(epc::test::GeocoderStandIn::Kind::postcodes_io);
    db::Connection c = db.connect();
    db::Result pcs = c.exec("SELECT DISTINCT split_part(address_key, '|', 2) FROM epc.stage_domestic "
                            "WHERE split_part(address_key, '|', 2) <> ''");
    for (int i = 0; i < pcs.rows(); ++i) postcodes.add(pcs.text(i, 0), 52.5, -1.25);
    postcodes.set_latency(std::chrono::milliseconds(40));
    const std::vector<std::string> args = {
        "geocode", "--db", db.conninfo(), "--geocoder", "postcodes-io=" + postcodes.base_url(), "--geocode-rate", "10"};
    pid_t pid = start(args, "cli-geo-kill");
    // postcodes.io is asked by postcode; its answers reach epc.postcode_cache in batches of 1000.
    bool killed = epc::test::wait_for_count(c, "SELECT count(*) FROM epc.postcode_cache", 1000,
                                            std::chrono::seconds(120));
    if (killed) kill(pid, SIGKILL);
    Outcome first = finish(pid, "cli-geo-kill");
    ASSERT_TRUE(killed) << "geocoding finished before it could be killed: " << first.err;
    const long long cached = c.exec("SELECT count(*) FROM epc.postcode_cache").integer(0, 0);
    const long long keys = c.exec("SELECT count(DISTINCT address_key) FROM epc.stage_domestic").integer(0, 0);
    ASSERT_LT(cached, pcs.rows());

    // The re-run asks only about the postcodes not answered yet, each once.
    std::set<std::string> allowed;
    db::Result open = c.exec("SELECT DISTINCT split_part(address_key, '|', 2) FROM epc.stage_domestic s WHERE NOT "
                             "EXISTS (SELECT 1 FROM epc.postcode_cache p WHERE p.postcode = "
                             "split_part(s.address_key, '|', 2))");
    for (int i = 0; i < open.rows(); ++i) allowed.insert(open.text(i, 0));
    const std::size_t asked_before = postcodes.records().size();
    std::string report = testing::TempDir() + "cli-geo-kill.json";
    std::vector<std::string> again = args;
    again.insert(again.end(), {"--report", report});
    Outcome second = run(again);
    ASSERT_EQ(second.exit_code, 0) << second.err;
    nlohmann::json r = nlohmann::json::parse(epc::test::read_file(report));
    EXPECT_EQ(r["geocode"]["to_locate"].get<long long>(), keys);  // no address was located when it was killed
    EXPECT_EQ(r["geocode"]["postcodes_asked"].get<long long>(), pcs.rows() - cached);
    const auto records = postcodes.records();
    std::set<std::string> asked_again;
    for (std::size_t i = asked_before; i < records.size(); ++i) {
        const nlohmann::json body = nlohmann::json::parse(records[i].body);
        for (const auto& pc : body["postcodes"]) {
            EXPECT_TRUE(allowed.count(pc.get<std::string>())) << pc << " was already answered";
            EXPECT_TRUE(asked_again.insert(pc.get<std::string>()).second) << pc << " was asked twice";
        }
    }
    EXPECT_EQ(static_cast<long long>(asked_again.size()), pcs.rows() - cached);
    EXPECT_EQ(c.exec("SELECT count(*) FROM epc.geocode_cache").integer(0, 0), keys);
}

TEST(Cli, TruncatedZipFromTheServiceIsQuarantinedNotLoaded) {
    fixture::Options fo;
    fo.rows = 3000;
    fo.layout = Layout::current;
    std::string zip = make_zip(fo, "cli-truncated-download");
    std::string bytes = epc::test::read_file(zip);
    epc::test::EpcService svc(bytes.substr(0, bytes.size() * 2 / 3));  // the service's file is cut short
    TestDatabase db;
    const std::string failed = testing::TempDir() + "cli-truncated-failed";
    std::filesystem::remove_all(failed);
    Outcome o = run({"--base-url", svc.base_url(), "--work-dir", testing::TempDir() + "cli-truncated-work",
                     "--failed-to", failed, "--db", db.conninfo(), "--credentials-file",
                     epc::test::credentials_file(svc, testing::TempDir() + "cli-truncated.env")});
    EXPECT_EQ(o.exit_code, 3) << o.err;
    EXPECT_TRUE(has(o.err, "not a zip archive")) << o.err;
    EXPECT_EQ(std::distance(std::filesystem::directory_iterator(failed), std::filesystem::directory_iterator()), 2);
    EXPECT_EQ(db.count("SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'epc'"), 0);
}
