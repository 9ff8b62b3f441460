// Schema versions: a database that epc-import 0.1 made (tests/db/fixtures/schema-v1.sql, with its
// history, geocode cache and production tables) is upgraded in place by the first run of this
// binary and goes on working; a database newer than the binary is refused before anything changes.
#include <gtest/gtest.h>

#include "epc/db/columns.hpp"
#include "epc/db/schema.hpp"
#include "fixture/fixture.hpp"
#include "support/pg_test.hpp"
#include "support/process.hpp"

using namespace epc;
using epc::test::TestDatabase;

namespace {

std::string release_zip(const std::string& name, std::uint64_t seed, fixture::Expected* expected = nullptr) {
    fixture::Options fo;
    fo.rows = 400;
    fo.seed = seed;
    std::string zip = testing::TempDir() + name + ".zip";
    fixture::Expected e = fixture::write_zip(zip, fo);
    if (expected) *expected = e;
    return zip;
}

epc::test::Outcome import(const std::vector<std::string>& args, const std::string& tag) {
    std::vector<std::string> argv = {EPC_IMPORT_BIN};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--log-format", "text", "--work-dir", testing::TempDir() + tag + "-work"});
    return epc::test::Process(argv, testing::TempDir() + tag).wait();
}

// A database restored from the dump of one that epc-import 0.1 made.
void restore_release_01(TestDatabase& db) {
    db::Connection c = db.connect();
    c.exec(epc::test::read_file(EPC_SOURCE_DIR "/tests/db/fixtures/schema-v1.sql"));
}

}  // namespace

TEST(Schema, ADatabaseOfRelease01IsUpgradedKeepingItsHistory) {
    TestDatabase db;
    restore_release_01(db);
    {
        db::Connection c = db.connect();
        ASSERT_EQ(db::database_schema_version(c), 1);
    }
    const long long cached = db.count("SELECT count(*) FROM epc.geocode_cache");
    const long long display_rows = db.count("SELECT count(*) FROM epc.display_certificates");
    ASSERT_GT(cached, 0);
    ASSERT_EQ(db.count("SELECT count(*) FROM epc.import_run"), 4);

    // The old release left run 4 loaded but not published: the new binary publishes it.
    epc::test::Outcome carried_on = import({"publish", "--db", db.conninfo()}, "schema-publish");
    ASSERT_EQ(carried_on.exit_code, 0) << carried_on.err;
    EXPECT_NE(carried_on.err.find("upgrading the epc schema to version 2"), std::string::npos) << carried_on.err;
    EXPECT_NE(carried_on.err.find("upgrading the epc schema to version 3"), std::string::npos) << carried_on.err;
    EXPECT_NE(carried_on.err.find("upgrading the epc schema to version 5"), std::string::npos) << carried_on.err;
    EXPECT_EQ(db.scalar("SELECT status FROM epc.import_run WHERE run_id = 4"), "published");
    // 0.1's production table is kept (changed in place, not replaced) and holds run 4's release.
    db::Connection c = db.connect();
    EXPECT_EQ(epc::test::rows_missing(c, "epc.domestic_certificates", "epc.stage_domestic") +
                  epc::test::rows_missing(c, "epc.stage_domestic", "epc.domestic_certificates"),
              0);
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.domestic_certificates"),
              db.count("SELECT rows_loaded FROM epc.import_run WHERE run_id = 4"));
    // Version 5 gave the production tables of 0.1 empty row hashes and address keys (the display
    // table, not published since); the publish of run 4 filled the domestic one's from staging.
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.display_certificates WHERE row_hash IS NULL AND address_key IS NULL"),
              display_rows);
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.domestic_certificates WHERE row_hash IS NULL"), 0);
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.domestic_certificates p JOIN epc.stage_domestic s USING (cert_key) "
                       "WHERE p.address_key IS DISTINCT FROM s.address_key"),
              0);

    // Then a new release loads and publishes on the upgraded schema.
    fixture::Expected e;
    const std::string zip = release_zip("schema-next", 31, &e);
    epc::test::Outcome next = import({"--zip", zip, "--db", db.conninfo()}, "schema-next");
    ASSERT_EQ(next.exit_code, 0) << next.err;
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.domestic_certificates"), static_cast<long long>(e.rows_loaded));
    EXPECT_EQ(epc::test::rows_missing(c, "epc.stage_domestic", "epc.domestic_certificates"), 0);

    // History, cache and the other type's production are as the old release left them.
    EXPECT_EQ(db.scalar("SELECT string_agg(run_id || ':' || cert_type || ':' || status, ',' ORDER BY run_id) "
                        "FROM epc.import_run"),
              "1:domestic:published,2:domestic:published,3:display:published,4:domestic:published,"
              "5:domestic:published");
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.import_file WHERE run_id <= 4"), 20);
    EXPECT_GE(db.count("SELECT count(*) FROM epc.geocode_cache"), cached);
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.display_certificates"), display_rows);

    // The version is recorded, and what version 2 brought is there.
    EXPECT_EQ(
        db.scalar("SELECT string_agg(version || ':' || applied_by, ',' ORDER BY version) FROM epc.schema_version"),
        "1:found in the database (an epc-import before 0.2),2:epc-import " EPC_VERSION ",3:epc-import " EPC_VERSION
        ",4:epc-import " EPC_VERSION ",5:epc-import " EPC_VERSION ",6:epc-import " EPC_VERSION
        ",7:epc-import " EPC_VERSION ",8:epc-import " EPC_VERSION ",9:epc-import " EPC_VERSION
        ",10:epc-import " EPC_VERSION);
    // What version 10 brought: 0.1's production tables leave room on their pages for changed rows
    // (the display one too, not published since), and the changes found record the rows compared.
    EXPECT_EQ(db.count("SELECT count(*) FROM pg_class WHERE oid IN ('epc.domestic_certificates'::regclass, "
                       "'epc.display_certificates'::regclass) AND reloptions = ARRAY['fillfactor=" +
                       std::to_string(kProductionFillfactor) + "']"),
              2);
    EXPECT_EQ(db.count("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'epc' AND table_name = "
                       "'change_set' AND column_name = 'staged_rows'"),
              1);
    // What version 9 brought: the cache's not-founds have an index of their own.
    EXPECT_EQ(db.count("SELECT count(*) FROM pg_indexes WHERE schemaname = 'epc' AND indexname = "
                       "'geocode_cache_not_found' AND indexdef LIKE '%WHERE (status <> ''found''::text)%'"),
              1);
    // What version 8 brought: the list of addresses to ask again, empty (no geocoder failed).
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.geocode_retry"), 0);
    // What version 7 brought: the old ledger's files are certificates files.
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.import_file WHERE dataset = 'certificates'"),
              db.count("SELECT count(*) FROM epc.import_file"));
    // What version 6 brought: per-column invalid counts in the ledger, filled by the new load.
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.import_file WHERE run_id = 5 AND invalid_by_column IS NOT NULL") +
                  db.count("SELECT count(*) FROM epc.import_file WHERE run_id <= 4 AND invalid_by_column IS NULL"),
              db.count("SELECT count(*) FROM epc.import_file WHERE run_id = 5 AND invalid_values > 0") + 20);
    EXPECT_EQ(db.count("SELECT count(*) FROM pg_constraint WHERE conname = 'import_run_status_check'"), 1);
    EXPECT_EQ(
        db.count("SELECT count(*) FROM pg_indexes WHERE schemaname = 'epc' AND indexname = 'import_run_type_run'"), 1);
    // What version 3 brought: the 'reverted' status is allowed, and the undo bookkeeping exists.
    EXPECT_EQ(db.count("SELECT count(*) FROM pg_constraint WHERE conname = 'import_run_status_check' "
                       "AND pg_get_constraintdef(oid) LIKE '%reverted%'"),
              1);
    EXPECT_EQ(db.count("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'epc' AND "
                       "table_name = 'import_run' AND column_name IN ('rows_changed', 'reverted_at')"),
              2);
    EXPECT_EQ(db.scalar("SELECT cert_type || ':' || run_id FROM epc.release_undo"), "domestic:5");
}

TEST(Schema, ANewDatabaseStartsAtTheCurrentVersion) {
    TestDatabase db;
    epc::test::Outcome load = import({"load", "--zip", release_zip("schema-new", 32), "--db", db.conninfo()},
                                     "schema-new");
    ASSERT_EQ(load.exit_code, 0) << load.err;
    db::Connection c = db.connect();
    EXPECT_EQ(db::database_schema_version(c), db::current_schema_version());
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.schema_version"), db::current_schema_version());
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.schema_version WHERE applied_by <> 'epc-import " EPC_VERSION "'"), 0);
}

TEST(Schema, ADatabaseNewerThanTheBinaryIsRefusedAndLeftAlone) {
    TestDatabase db;
    const std::string zip = release_zip("schema-future", 33);
    ASSERT_EQ(import({"--zip", zip, "--db", db.conninfo()}, "schema-future-1").exit_code, 0);
    db.scalar("INSERT INTO epc.schema_version (version, summary, applied_by) VALUES (99, 'from the future', "
              "'epc-import 9.0') RETURNING version");
    const std::string before = db.scalar("SELECT string_agg(run_id || status, ',') FROM epc.import_run");

    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"--zip", zip, "--db", db.conninfo(), "--force"},
          std::vector<std::string>{"publish", "--db", db.conninfo()}}) {
        epc::test::Outcome refused = import(args, "schema-future-2");
        EXPECT_EQ(refused.exit_code, 2) << refused.err;
        EXPECT_NE(refused.err.find("version 99, newer than this epc-import"), std::string::npos) << refused.err;
    }
    EXPECT_EQ(db.scalar("SELECT string_agg(run_id || status, ',') FROM epc.import_run"), before);
    EXPECT_EQ(db.count("SELECT max(version) FROM epc.schema_version"), 99);
}
