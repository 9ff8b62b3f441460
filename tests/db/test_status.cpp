// `epc-import status`, the real binary against a real PostgreSQL and the stand-in publisher: what
// it reports must be what the database and the publisher hold, and it must change nothing.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "epc/db/locks.hpp"
#include "fixture/fixture.hpp"
#include "support/epc_service.hpp"
#include "support/geocoder_stand_ins.hpp"
#include "support/pg_test.hpp"
#include "support/process.hpp"

using namespace epc;
using epc::test::Outcome;
using epc::test::TestDatabase;
using nlohmann::json;

namespace {

// Runs epc-import with `args`; EPC_TOKEN is cleared so the publisher is asked only with the
// credentials a test gives (--credentials-file).
Outcome run(const std::vector<std::string>& args) {
    static int n = 0;
    std::vector<std::string> argv = {EPC_IMPORT_BIN};
    argv.insert(argv.end(), args.begin(), args.end());
    const std::vector<std::string> env = epc::test::environment_with({"EPC_TOKEN="});
    epc::test::Process p(argv, testing::TempDir() + "status-" + std::to_string(getpid()) + "-" + std::to_string(n++),
                         &env);
    return p.wait();
}

// status with JSON output: the document it printed on stdout.
json status_json(std::vector<std::string> args) {
    args.insert(args.begin(), {"status", "--log-format", "json"});
    Outcome o = run(args);
    EXPECT_EQ(o.exit_code, 0) << o.err;
    return json::parse(o.out);  // throws (fails the test) unless stdout is one JSON document
}

const json& type_of(const json& status, const std::string& type) {
    for (const json& t : status.at("types"))
        if (t.at("cert_type") == type) return t;
    throw std::runtime_error("status has no type " + type);
}

// 2961 as the table shows it: 2,961.
std::string grouped(std::uint64_t n) {
    std::string digits = std::to_string(n);
    for (std::size_t i = digits.size(); i > 3; i -= 3) digits.insert(i - 3, ",");
    return digits;
}

bool has(const std::string& haystack, const std::string& needle) { return haystack.find(needle) != std::string::npos; }

std::string make_zip(fixture::Options o, const std::string& name, fixture::Expected* expected = nullptr) {
    const std::string path = testing::TempDir() + name + ".zip";
    fixture::Expected e = fixture::write_zip(path, o);
    if (expected) *expected = e;
    return path;
}

}  // namespace

TEST(Status, EmptyDatabaseSaysNeverPreparedAndCreatesNothing) {
    TestDatabase db;
    const json s = status_json({"--db", db.conninfo()});
    EXPECT_EQ(s["database"]["prepared"], false);
    EXPECT_EQ(s["database"]["schema_version"], 0);
    ASSERT_EQ(s["types"].size(), 3u);
    std::vector<std::string> names;
    for (const json& t : s["types"]) {
        names.push_back(t["cert_type"]);
        EXPECT_EQ(t["imported"], false);
        EXPECT_TRUE(t["published"].is_null());
        EXPECT_TRUE(t["production"].is_null());
        // No token: the publisher is not asked, and the reason says why.
        EXPECT_EQ(t["publisher"]["state"], "unknown");
        EXPECT_TRUE(has(t["publisher"]["reason"].get<std::string>(), "EPC_TOKEN")) << t["publisher"];
    }
    EXPECT_EQ(names, (std::vector<std::string>{"domestic", "non-domestic", "display"}));

    Outcome text = run({"status", "--db", db.conninfo(), "--log-format", "text"});
    EXPECT_EQ(text.exit_code, 0) << text.err;
    EXPECT_TRUE(has(text.out, "never prepared by epc-import")) << text.out;
    EXPECT_TRUE(has(text.out, "non-domestic  (epc.non_domestic_certificates)")) << text.out;
    EXPECT_TRUE(has(text.out, "imported        never")) << text.out;
    // Read-only: no schema appeared.
    EXPECT_EQ(db.count("SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'epc'"), 0);
}

TEST(Status, UnreachableDatabaseIsTheTransientExitCode) {
    Outcome o = run({"status", "--db", "postgresql://epc@127.0.0.1:1/epc", "--log-format", "json"});
    EXPECT_EQ(o.exit_code, 5) << o.err;
    EXPECT_TRUE(has(o.err, "cannot connect to PostgreSQL")) << o.err;
}

TEST(Status, AfterAPublishReportsProductionCountsRejectsAndLocatedShares) {
    fixture::Options fo;
    fo.rows = 3000;
    fo.seed = 5;
    fo.with_all_hazards();
    fixture::Expected e;
    const std::string zip = make_zip(fo, "status-publish", &e);
    TestDatabase db;
    ASSERT_EQ(run({"load", "--zip", zip, "--db", db.conninfo()}).exit_code, 0);
    // The stand-in knows every other postcode: production gets located and not located rows.
    epc::test::GeocoderStandIn postcodes(epc::test::GeocoderStandIn::Kind::postcodes_io);
    db::Connection c = db.connect();
    db::Result pcs = c.exec("SELECT DISTINCT split_part(address_key, '|', 2) FROM epc.stage_domestic "
                            "WHERE split_part(address_key, '|', 2) <> '' ORDER BY 1");
    ASSERT_GT(pcs.rows(), 10);
    for (int i = 0; i < pcs.rows(); i += 2) postcodes.add(pcs.text(i, 0), 52.5, -1.25);
    Outcome published = run({"publish", "--db", db.conninfo(), "--geocoder", "postcodes-io=" + postcodes.base_url()});
    ASSERT_EQ(published.exit_code, 0) << published.err;

    const std::string report = testing::TempDir() + "status-publish.json";
    const json s = status_json({"--db", db.conninfo(), "--certtype", "domestic", "--report", report});
    ASSERT_EQ(s["types"].size(), 1u);
    const json& t = s["types"][0];
    EXPECT_EQ(t["cert_type"], "domestic");
    EXPECT_EQ(t["imported"], true);
    EXPECT_EQ(s["database"]["prepared"], true);

    const json& p = t["published"];
    EXPECT_EQ(p["run_id"], db.count("SELECT run_id FROM epc.import_run WHERE status = 'published'"));
    EXPECT_EQ(p["source"], "file");
    EXPECT_EQ(p["rows_published"].get<std::uint64_t>(), e.rows_loaded);
    EXPECT_EQ(p["added"].get<std::uint64_t>(), e.rows_loaded);  // the first release adds every row
    EXPECT_EQ(p["changed"], 0);
    EXPECT_EQ(p["disappeared"], 0);
    EXPECT_FALSE(p["published_at"].get<std::string>().empty());
    EXPECT_EQ(p["rejects"]["total"].get<std::uint64_t>(), e.rows_rejected);
    ASSERT_GT(e.rows_rejected, 0u);
    std::map<std::string, std::uint64_t> expected_reasons;
    for (const auto& [reason, n] : e.rejects_by_reason)
        if (n > 0) expected_reasons[reason] = n;
    EXPECT_EQ(p["rejects"]["by_reason"].get<decltype(expected_reasons)>(), expected_reasons);

    const json& prod = t["production"];
    EXPECT_EQ(prod["rows"].get<long long>(), db.count("SELECT count(*) FROM epc.domestic_certificates"));
    EXPECT_EQ(prod["rows"].get<std::uint64_t>(), e.rows_loaded);
    const json& located = prod["located"];
    const long long by_postcode = db.count(
        "SELECT count(*) FROM epc.domestic_certificates WHERE geocode_precision = 'postcode' AND latitude IS NOT NULL");
    const long long not_located = db.count("SELECT count(*) FROM epc.domestic_certificates WHERE latitude IS NULL");
    ASSERT_GT(by_postcode, 0);
    ASSERT_GT(not_located, 0);
    EXPECT_EQ(located["postcode"]["rows"], by_postcode);
    EXPECT_EQ(located["not_located"]["rows"], not_located);
    EXPECT_EQ(located["property"]["rows"], 0);
    EXPECT_EQ(located["street"]["rows"], 0);
    EXPECT_EQ(located["other"]["rows"], 0);
    EXPECT_DOUBLE_EQ(located["postcode"]["share"].get<double>(),
                     static_cast<double>(by_postcode) / static_cast<double>(e.rows_loaded));
    EXPECT_TRUE(t["newest_run"].is_null());  // the newest run is the published one

    // --report holds the same document, with the run's usual fields.
    const json r = json::parse(epc::test::read_file(report));
    EXPECT_EQ(r["command"], "status");
    EXPECT_EQ(r["status"], "ok");
    EXPECT_EQ(r["exit_code"], 0);
    EXPECT_EQ(r["types"], s["types"]);

    Outcome text = run({"status", "--db", db.conninfo(), "--log-format", "text"});
    ASSERT_EQ(text.exit_code, 0) << text.err;
    EXPECT_TRUE(has(text.out, "rows published  " + grouped(e.rows_loaded) + ": " + grouped(e.rows_loaded) +
                                  " added, 0 changed, 0 disappeared"))
        << text.out;
    EXPECT_TRUE(has(text.out, "postcode " + grouped(by_postcode) + " (")) << text.out;
    EXPECT_TRUE(has(text.out, "rejects         " + grouped(e.rows_rejected) + ": ")) << text.out;
    EXPECT_TRUE(has(text.out, "imported        never")) << text.out;  // non-domestic and display
    // The overview above the detail: one row per type.
    EXPECT_TRUE(has(text.out, "type          published run   release")) << text.out;
    EXPECT_TRUE(has(text.out, "non-domestic  never imported  -")) << text.out;
}

TEST(Status, CerttypeShowsThatTypeOnly) {
    TestDatabase db;
    const json s = status_json({"--db", db.conninfo(), "--certtype", "display"});
    ASSERT_EQ(s["types"].size(), 1u);
    EXPECT_EQ(s["types"][0]["cert_type"], "display");
    EXPECT_EQ(s["types"][0]["table"], "epc.display_certificates");
}

TEST(Status, ALoadedButUnpublishedRunIsShownBesideThePublishedOne) {
    fixture::Options fo;
    fo.rows = 800;
    const std::string first = make_zip(fo, "status-first");
    fo.seed = 77;
    fixture::Expected second_expected;
    const std::string second = make_zip(fo, "status-second", &second_expected);
    TestDatabase db;
    ASSERT_EQ(run({"--zip", first, "--db", db.conninfo()}).exit_code, 0);
    ASSERT_EQ(run({"load", "--zip", second, "--db", db.conninfo()}).exit_code, 0);

    const json t = type_of(status_json({"--db", db.conninfo()}), "domestic");
    EXPECT_EQ(t["published"]["run_id"], 1);
    ASSERT_FALSE(t["newest_run"].is_null());
    EXPECT_EQ(t["newest_run"]["run_id"], 2);
    EXPECT_EQ(t["newest_run"]["status"], "loaded");
    EXPECT_EQ(t["newest_run"]["rows_loaded"].get<std::uint64_t>(), second_expected.rows_loaded);
    // Staging now holds run 2: run 1's rejects by reason are gone, its total is kept.
    EXPECT_TRUE(t["published"]["rejects"]["by_reason"].is_null());
    EXPECT_FALSE(t["published"]["rejects"]["total"].is_null());

    Outcome text = run({"status", "--db", db.conninfo(), "--log-format", "text", "--certtype", "domestic"});
    ASSERT_EQ(text.exit_code, 0) << text.err;
    EXPECT_TRUE(has(text.out, "newest run      2: loaded, not published")) << text.out;

    // Published, then reverted: production holds run 1's release again, and status says so.
    ASSERT_EQ(run({"publish", "--db", db.conninfo()}).exit_code, 0);
    ASSERT_EQ(run({"revert", "--db", db.conninfo()}).exit_code, 0);
    const json reverted = type_of(status_json({"--db", db.conninfo()}), "domestic");
    EXPECT_EQ(reverted["published"]["run_id"], 1);
    EXPECT_EQ(reverted["newest_run"]["run_id"], 2);
    EXPECT_EQ(reverted["newest_run"]["status"], "reverted");
    EXPECT_EQ(reverted["production"]["rows"], reverted["published"]["rows_published"]);
}

TEST(Status, AFailedRunIsShownWithItsError) {
    // Damage in the middle of the one certificates file: only inflating it finds out, and the run fails.
    fixture::Options fo;
    fo.layout = Layout::single;
    fo.rows = 20000;
    const std::string zip = make_zip(fo, "status-failed");
    std::string bytes = epc::test::read_file(zip);
    for (std::size_t i = bytes.size() / 2; i < bytes.size() / 2 + 64; ++i)
        bytes[i] = static_cast<char>(bytes[i] ^ 0x5A);
    std::ofstream(zip, std::ios::binary) << bytes;
    TestDatabase db;
    ASSERT_EQ(run({"load", "--zip", zip, "--db", db.conninfo(), "--failed-to", testing::TempDir() + "status-failed"})
                  .exit_code,
              3);

    const json t = type_of(status_json({"--db", db.conninfo()}), "domestic");
    EXPECT_EQ(t["imported"], true);
    EXPECT_TRUE(t["published"].is_null());
    EXPECT_TRUE(t["production"].is_null());  // no release was ever built
    EXPECT_EQ(t["newest_run"]["status"], "failed");
    EXPECT_EQ(t["newest_run"]["error"], db.scalar("SELECT error FROM epc.import_run"));
    Outcome text = run({"status", "--db", db.conninfo(), "--log-format", "text", "--certtype", "domestic"});
    EXPECT_TRUE(has(text.out, "published       nothing published yet")) << text.out;
    EXPECT_TRUE(has(text.out, "newest run      1: failed (started ")) << text.out;
    EXPECT_TRUE(has(text.out, "archive entry certificates.csv")) << text.out;
}

TEST(Status, TellsWhetherThePublisherHasANewerRelease) {
    fixture::Options fo;
    fo.rows = 1000;
    fo.layout = Layout::current;
    const std::string zip = make_zip(fo, "status-release");
    epc::test::EpcService svc(epc::test::read_file(zip));
    TestDatabase db;
    const std::string credentials = epc::test::credentials_file(svc, testing::TempDir() + "status-release.env");
    const std::vector<std::string> publisher = {"--base-url", svc.base_url(), "--credentials-file",
                                                credentials,  "--db",         db.conninfo()};
    auto with = [&](std::vector<std::string> args) {
        args.insert(args.end(), publisher.begin(), publisher.end());
        return args;
    };
    // Nothing imported yet: what the publisher offers is new.
    EXPECT_EQ(type_of(status_json(with({})), "domestic")["publisher"]["state"], "newer");
    Outcome imported = run(with({"--work-dir", testing::TempDir() + "status-release-work"}));
    ASSERT_EQ(imported.exit_code, 0) << imported.err;

    const json now = status_json(with({}));
    const json& domestic = type_of(now, "domestic");
    EXPECT_EQ(domestic["publisher"]["state"], "up_to_date");
    EXPECT_EQ(domestic["publisher"]["offered"]["last_updated"], svc.last_updated);
    EXPECT_EQ(domestic["published"]["release_last_updated"], svc.last_updated);
    EXPECT_EQ(domestic["published"]["source"], "current");
    // The stand-in publishes domestic only: asking about another type is answered 404.
    EXPECT_EQ(type_of(now, "display")["publisher"]["state"], "unknown");
    EXPECT_TRUE(type_of(now, "display")["publisher"]["reason"].is_string());

    svc.last_updated = "2026-12-01T03:04:05Z";  // the monthly rebuild
    const json later = status_json(with({"--certtype", "domestic"}));
    EXPECT_EQ(later["types"][0]["publisher"]["state"], "newer");
    EXPECT_EQ(later["types"][0]["publisher"]["offered"]["last_updated"], "2026-12-01T03:04:05Z");
    Outcome text = run(with({"status", "--certtype", "domestic", "--log-format", "text"}));
    EXPECT_TRUE(has(text.out, "newer release 2026-12-01T03:04:05Z")) << text.out;

    // A publisher that cannot be reached: unknown, with the reason, and status still succeeds.
    const auto started = std::chrono::steady_clock::now();
    Outcome unreachable = run({"status", "--log-format", "json", "--certtype", "domestic", "--base-url",
                               "http://127.0.0.1:1", "--credentials-file", credentials, "--db", db.conninfo()});
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(20));
    ASSERT_EQ(unreachable.exit_code, 0) << unreachable.err;
    const json u = json::parse(unreachable.out)["types"][0]["publisher"];
    EXPECT_EQ(u["state"], "unknown");
    EXPECT_FALSE(u["reason"].get<std::string>().empty());
    EXPECT_TRUE(u["offered"].is_null());
    EXPECT_FALSE(has(unreachable.out + unreachable.err, svc.token));
}

TEST(Status, NeitherWaitsForARunningImportNorTakesItsLock) {
    fixture::Options fo;
    fo.rows = 300;
    const std::string zip = make_zip(fo, "status-locks");
    TestDatabase db;
    ASSERT_EQ(run({"--zip", zip, "--db", db.conninfo()}).exit_code, 0);

    // A run of the type holds its advisory lock, and a publish's DDL holds production.
    db::Connection importer = db.connect();
    importer.exec("SELECT pg_advisory_lock(" + std::to_string(db::kLockNamespace) + ", " +
                  std::to_string(db::lock_object(CertType::domestic)) + ")");
    importer.exec("BEGIN");
    importer.exec("LOCK TABLE epc.domestic_certificates IN ACCESS EXCLUSIVE MODE");
    const auto started = std::chrono::steady_clock::now();
    const json t = type_of(status_json({"--db", db.conninfo()}), "domestic");
    EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(15));
    EXPECT_EQ(t["published"]["run_id"], 1);  // the bookkeeping is still read
    EXPECT_TRUE(has(t["production"]["error"].get<std::string>(), "lock timeout")) << t["production"];
    importer.exec("ROLLBACK");

    // With the table free again the counts come back; the advisory lock, still held, was never in the way.
    const json free = type_of(status_json({"--db", db.conninfo()}), "domestic");
    EXPECT_EQ(free["production"]["rows"].get<long long>(), db.count("SELECT count(*) FROM epc.domestic_certificates"));
}
