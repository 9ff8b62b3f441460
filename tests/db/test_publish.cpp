// The publish stage against a real PostgreSQL: production holds exactly the staged release,
// indexed; a new release replaces the old one atomically and says what appeared and disappeared;
// publishing refuses when there is nothing sound to publish.
#include <gtest/gtest.h>

#include <atomic>
#include <sstream>
#include <thread>
#include <vector>

#include "epc/db/columns.hpp"
#include "epc/extract/archive.hpp"
#include "epc/load/loader.hpp"
#include "epc/publish/publish.hpp"
#include "fixture/fixture.hpp"
#include "support/pg_test.hpp"
#include "support/zip_writer.hpp"

using namespace epc;
using epc::test::TestDatabase;

namespace {

LoadSummary load_zip(const std::string& zip, TestDatabase& db, std::optional<std::uint64_t> max_rejects = {}) {
    ArchiveInfo archive = inspect_archive(zip, {CertType::domestic, std::nullopt});
    EXPECT_TRUE(archive.problems.empty());
    LoadOptions o;
    o.max_rejects = max_rejects;
    db::Session session = db.session();
    return load_archive(session, archive, o);
}

PublishSummary publish_to(TestDatabase& db) {
    db::Session session = db.session();
    return publish(session);
}

// A one-directory legacy archive holding exactly these keys.
std::string release(const std::string& name, std::initializer_list<int> keys) {
    std::string csv =
        "LMK_KEY,ADDRESS,POSTCODE,LODGEMENT_DATE,TRANSACTION_TYPE,TOTAL_FLOOR_AREA,UPRN,LOCAL_AUTHORITY\n";
    for (int k : keys)
        csv += std::to_string(k) + ",\"" + std::to_string(k) + ", High Street\",AB1 2CD,2021-03-0" +
               std::to_string(1 + k % 9) + ",marketed sale," + std::to_string(50 + k) + "," + std::to_string(1000 + k) +
               ",E06000001\n";
    std::string path = testing::TempDir() + name + ".zip";
    epc::test::write_zip(path, {{"domestic-E06000001-Hartlepool/certificates.csv", csv},
                                {"domestic-E06000001-Hartlepool/recommendations.csv", "LMK_KEY\n"}});
    return path;
}

}  // namespace

TEST(Publish, ProductionHoldsExactlyTheStagedReleaseWithItsIndexes) {
    fixture::Options fo;
    fo.rows = 8000;
    fo.seed = 2;
    fo.with_all_hazards();
    std::string zip = testing::TempDir() + "publish-exact.zip";
    std::ostringstream rows;
    fixture::Expected e = fixture::write_zip(zip, fo, &rows);
    TestDatabase db;
    LoadSummary loaded = load_zip(zip, db);
    PublishSummary p = publish_to(db);
    EXPECT_EQ(p.run_id, loaded.run_id);
    EXPECT_EQ(p.rows, e.rows_loaded);
    EXPECT_EQ(p.added, e.rows_loaded);
    EXPECT_EQ(p.disappeared, 0u);

    db::Connection c = db.connect();
    epc::test::load_expected(c, "expected_rows", rows.str());
    EXPECT_EQ(epc::test::rows_missing(c, "expected_rows", "epc.domestic_certificates"), 0);
    EXPECT_EQ(epc::test::rows_missing(c, "epc.domestic_certificates", "expected_rows"), 0);
    EXPECT_EQ(
        c.exec("SELECT count(*) FROM epc.domestic_certificates WHERE run_id <> $1", {std::to_string(loaded.run_id)})
            .integer(0, 0),
        0);
    db::Result idx = c.exec("SELECT string_agg(indexdef, '; ' ORDER BY indexdef) FROM pg_indexes "
                            "WHERE schemaname = 'epc' AND tablename = 'domestic_certificates'");
    std::string defs = idx.text(0, 0);
    EXPECT_NE(defs.find("UNIQUE INDEX"), std::string::npos) << defs;
    EXPECT_NE(defs.find("(cert_key)"), std::string::npos) << defs;
    EXPECT_NE(defs.find("(postcode)"), std::string::npos) << defs;
    EXPECT_NE(defs.find("(lodgement_date)"), std::string::npos) << defs;
    EXPECT_EQ(c.exec("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = "
                     "'epc.domestic_certificates'::regclass AND contype = 'p'")
                  .text(0, 0),
              "PRIMARY KEY (cert_key)");
    // The identifiers compare byte by byte; the rest of the text in the database's collation.
    EXPECT_EQ(c.exec("SELECT string_agg(column_name, ',' ORDER BY column_name) FROM information_schema.columns "
                     "WHERE table_schema = 'epc' AND table_name = 'domestic_certificates' AND collation_name = 'C'")
                  .text(0, 0),
              "address_key,cert_key,postcode");
    EXPECT_EQ(c.exec("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'epc' AND table_name = "
                     "'domestic_certificates' AND data_type = 'text' AND collation_name IS NULL AND column_name IN "
                     "('address', 'local_authority', 'transaction_type')")
                  .integer(0, 0),
              3);
    // Its pages keep room for changed rows' new versions (monthly updates beside the old row).
    EXPECT_EQ(
        c.exec("SELECT reloptions::text FROM pg_class WHERE oid = 'epc.domestic_certificates'::regclass").text(0, 0),
        "{fillfactor=" + std::to_string(kProductionFillfactor) + "}");
    db::Result run = c.exec("SELECT status, rows_published, rows_added, rows_disappeared FROM epc.import_run "
                            "WHERE run_id = $1",
                            {std::to_string(loaded.run_id)});
    EXPECT_EQ(run.text(0, 0), "published");
    EXPECT_EQ(run.integer(0, 1), static_cast<long long>(e.rows_loaded));

    // Publishing again changes nothing.
    PublishSummary again = publish_to(db);
    EXPECT_TRUE(again.already_published);
    EXPECT_EQ(c.exec("SELECT count(*) FROM epc.domestic_certificates").integer(0, 0),
              static_cast<long long>(e.rows_loaded));
}

// The first release is built by statements on connections of their own: a failure of one is the
// publish's failure, reported as the server said it, once the others have ended.
TEST(Publish, StatementsRunAtOnceReportTheirFailure) {
    TestDatabase db;
    db::Session session = db.session();
    try {
        session.exec_at_once(
            {{"CREATE TABLE at_once_a (n int)", "SELECT pg_sleep(0.3)", "INSERT INTO at_once_a VALUES (7)"},
             {"SELECT count(*) FROM at_once_missing"}},
            {}, "test");
        FAIL() << "a failed statement went unreported";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("at_once_missing"), std::string::npos) << e.what();
    }
    EXPECT_EQ(db.count("SELECT sum(n) FROM at_once_a"), 7) << "the other list ran to its end";
    // Every statement gets the parameters.
    session.exec_at_once({{"INSERT INTO at_once_a SELECT $1::int"}, {"INSERT INTO at_once_a SELECT $1::int + 1"}}, {10},
                         "test");
    EXPECT_EQ(db.count("SELECT sum(n) FROM at_once_a"), 28);
}

TEST(Publish, NewReleaseReplacesTheOldAndCountsWhatCameAndWent) {
    TestDatabase db;
    load_zip(release("publish-a", {1, 2, 3, 4, 5}), db);
    publish_to(db);
    LoadSummary b = load_zip(release("publish-b", {3, 4, 5, 6, 7, 8}), db);
    PublishSummary p = publish_to(db);
    EXPECT_EQ(p.rows, 6u);
    EXPECT_EQ(p.added, 3u);        // 6, 7, 8
    EXPECT_EQ(p.disappeared, 2u);  // 1, 2: opted out or cancelled
    EXPECT_EQ(db.scalar("SELECT string_agg(cert_key, ',' ORDER BY cert_key::int) FROM epc.domestic_certificates"),
              "3,4,5,6,7,8");
    EXPECT_EQ(p.changed, 0u);  // 3, 4, 5 are the same certificates
    // run_id is the run that last added or changed a row: the unchanged ones keep the first run's.
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.domestic_certificates WHERE run_id = " + std::to_string(b.run_id)), 3);
    // No copy of production is left behind.
    EXPECT_EQ(db.count("SELECT count(*) FROM pg_tables WHERE schemaname = 'epc' AND tablename LIKE "
                       "'domestic_certificates_%'"),
              0);
}

TEST(Publish, RefusesWhenThereIsNothingSoundToPublish) {
    TestDatabase db;
    try {
        publish_to(db);
        FAIL() << "published nothing";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), exit_usage);
        EXPECT_NE(std::string(e.what()).find("nothing to publish"), std::string::npos) << e.what();
    }
    load_zip(release("publish-good", {1, 2, 3}), db);
    publish_to(db);
    // A load that fails (error budget) must not reach production.
    std::string bad = testing::TempDir() + "publish-bad.zip";
    epc::test::write_zip(bad, {{"domestic-E06000001-Hartlepool/certificates.csv",
                                "LMK_KEY,LODGEMENT_DATE\n7,2021-01-01\n8,not a date\n"},
                               {"domestic-E06000001-Hartlepool/recommendations.csv", "LMK_KEY\n"}});
    EXPECT_THROW(load_zip(bad, db, 0), Error);
    try {
        publish_to(db);
        FAIL() << "published a failed load";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), exit_usage);
        EXPECT_NE(std::string(e.what()).find("not complete"), std::string::npos) << e.what();
    }
    EXPECT_EQ(db.scalar("SELECT string_agg(cert_key, ',' ORDER BY cert_key) FROM epc.domestic_certificates"), "1,2,3");
}

// Staging is checked against what its run loaded as publishing reads it: rows removed (or added)
// since the load stop the publish, the first release and a later one, and nothing reaches
// production, nor is any half-built table left.
TEST(Publish, RefusesAStagingChangedSinceItsLoad) {
    TestDatabase db;
    const auto refused = [&](const std::string& why) {
        try {
            publish_to(db);
            ADD_FAILURE() << "published a staging changed since its load";
        } catch (const Error& e) {
            EXPECT_EQ(e.code(), exit_usage);
            EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
        }
    };
    const LoadSummary first = load_zip(release("changed-first", {1, 2, 3, 4, 5}), db);
    db.scalar("DELETE FROM epc.stage_domestic WHERE cert_key = '5'");
    refused("staging holds 4 rows but run " + std::to_string(first.run_id) + " loaded 5 (changed since the load?)");
    EXPECT_EQ(db.count("SELECT count(*) FROM pg_tables WHERE schemaname = 'epc' AND tablename LIKE "
                       "'domestic_certificates%'"),
              0);
    EXPECT_EQ(db.scalar("SELECT status FROM epc.import_run WHERE run_id = " + std::to_string(first.run_id)), "loaded");

    load_zip(release("changed-first-again", {1, 2, 3, 4, 5}), db);
    publish_to(db);
    const LoadSummary next = load_zip(release("changed-next", {3, 4, 5, 6, 7, 8}), db);
    db.scalar("INSERT INTO epc.stage_domestic SELECT * FROM epc.stage_domestic WHERE cert_key = '8'");
    refused("staging holds 7 rows but run " + std::to_string(next.run_id) + " loaded 6");
    const LoadSummary emptied = load_zip(release("changed-emptied", {3, 4, 5, 6, 7, 8}), db);
    db.scalar("DELETE FROM epc.stage_domestic");
    refused("staging of run " + std::to_string(emptied.run_id) +
            " holds no certificates; an empty release would empty production");
    EXPECT_EQ(db.scalar("SELECT string_agg(cert_key, ',' ORDER BY cert_key) FROM epc.domestic_certificates"),
              "1,2,3,4,5");
    EXPECT_EQ(db.scalar("SELECT status FROM epc.import_run WHERE run_id = " + std::to_string(emptied.run_id)),
              "loaded");
}

TEST(Publish, ReadersSeeTheOldReleaseOrTheNewNeverAMix) {
    TestDatabase db;
    fixture::Options fo;
    fo.rows = 30000;
    fo.seed = 1;
    std::string a = testing::TempDir() + "publish-reader-a.zip";
    fixture::write_zip(a, fo);
    fo.seed = 2;
    fo.rows = 40000;
    std::string b = testing::TempDir() + "publish-reader-b.zip";
    fixture::write_zip(b, fo);
    load_zip(a, db);
    publish_to(db);
    // A release as a reader sees it: how many rows, and a digest of every key and row hash.
    const std::string look = "SELECT count(*), md5(string_agg(cert_key || ':' || row_hash, ',' ORDER BY cert_key)) "
                             "FROM epc.domestic_certificates";
    db::Connection c = db.connect();
    const std::string old_release = c.exec(look).text(0, 1);
    load_zip(b, db);

    std::atomic<bool> stop{false};
    std::vector<std::pair<long long, std::string>> seen;
    std::thread reader([&] {
        db::Connection r = db.connect();
        while (!stop) {
            db::Result now = r.exec(look);
            seen.emplace_back(now.integer(0, 0), now.text(0, 1));
        }
    });
    PublishSummary pb = publish_to(db);
    const std::string new_release = c.exec(look).text(0, 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    // Reverting is as atomic: the readers go on watching it.
    db::Session session = db.session();
    revert(session);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // a whole look after the revert
    stop = true;
    reader.join();

    ASSERT_GT(seen.size(), 10u);
    bool saw_new = false;
    for (const auto& [rows, digest] : seen) {
        ASSERT_TRUE(digest == old_release || digest == new_release) << rows << " rows, digest " << digest;
        saw_new = saw_new || digest == new_release;
        if (digest == new_release) {
            EXPECT_EQ(rows, static_cast<long long>(pb.rows));
        }
    }
    EXPECT_TRUE(saw_new);
    EXPECT_EQ(seen.back().second, old_release);  // reverted
    EXPECT_NE(old_release, new_release);
}

namespace {

// Certificates as "key,address,postcode,lodgement date,uprn" lines, in one directory.
std::string certificates(const std::string& name, const std::vector<std::string>& rows) {
    std::string csv =
        "LMK_KEY,ADDRESS,POSTCODE,LODGEMENT_DATE,TRANSACTION_TYPE,TOTAL_FLOOR_AREA,UPRN,LOCAL_AUTHORITY\n";
    for (const std::string& row : rows) {
        std::vector<std::string> f;
        std::stringstream in(row);
        for (std::string part; std::getline(in, part, ',');) f.push_back(part);
        f.resize(5);
        csv += f[0] + ",\"" + f[1] + "\"," + f[2] + "," + f[3] + ",marketed sale,70," + f[4] + ",E06000001\n";
    }
    std::string path = testing::TempDir() + name + ".zip";
    epc::test::write_zip(path, {{"domestic-E06000001-Hartlepool/certificates.csv", csv},
                                {"domestic-E06000001-Hartlepool/recommendations.csv", "LMK_KEY\n"}});
    return path;
}

}  // namespace

// epc.domestic_latest: one row per property (the UPRN, else the address), the latest lodgement
// (then the greater key), certificates without a UPRN kept; it changes with production, also
// when a publish is reverted.
TEST(Publish, LatestCertificatePerPropertyChangesWithProduction) {
    TestDatabase db;
    load_zip(certificates("latest-a", {"1,1 Mill Lane,AB1 2CD,2019-05-01,500", "2,1 Mill Lane,AB1 2CD,2021-05-01,500",
                                       "3,Flat 1 Mill Lane,AB1 2CD,2021-05-01,500",  // same day: key 3 wins
                                       "4,7 Mill Lane,AB1 2CD,2018-01-01,", "5,7 Mill Lane,AB1 2CD,2020-01-01,",
                                       "6,9 Mill Lane,AB1 2CD,2020-01-01,", "7,,,2020-02-02,"}),
             db);
    publish_to(db);
    const auto latest = [&] {
        return db.scalar("SELECT string_agg(cert_key, ',' ORDER BY cert_key) FROM epc.domestic_latest");
    };
    EXPECT_EQ(latest(), "3,5,6,7");
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.domestic_latest WHERE property_key = 'uprn 500'"), 1);
    EXPECT_EQ(db.scalar("SELECT latitude IS NULL AND uprn = 500 FROM epc.domestic_latest WHERE cert_key = '3'"), "t");

    // Next month: a newer certificate for the UPRN, and key 6 gone.
    load_zip(certificates("latest-b", {"1,1 Mill Lane,AB1 2CD,2019-05-01,500", "2,1 Mill Lane,AB1 2CD,2021-05-01,500",
                                       "3,Flat 1 Mill Lane,AB1 2CD,2021-05-01,500", "4,7 Mill Lane,AB1 2CD,2018-01-01,",
                                       "5,7 Mill Lane,AB1 2CD,2020-01-01,", "7,,,2020-02-02,",
                                       "8,1 Mill Lane,AB1 2CD,2024-07-01,500"}),
             db);
    publish_to(db);
    EXPECT_EQ(latest(), "5,7,8");
    {
        db::Session session = db.session();
        revert(session);
    }
    EXPECT_EQ(latest(), "3,5,6,7");
}
