// Production keeps its identity across releases, publishing applies what changed, and `revert`
// brings back the release before: against a real PostgreSQL, with users' objects on production,
// mutated releases, and the real binary killed at several points of a publish and of a revert.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <set>
#include <thread>
#include <vector>

#include "epc/db/columns.hpp"
#include "epc/extract/archive.hpp"
#include "epc/load/loader.hpp"
#include "epc/publish/changes.hpp"
#include "epc/publish/publish.hpp"
#include "support/pg_test.hpp"
#include "support/process.hpp"
#include "support/zip_writer.hpp"

using namespace epc;
using epc::test::TestDatabase;

namespace {

// A one-directory legacy archive holding exactly these keys; the keys in `changed` get another
// floor area than in a release where they are not.
std::string release(const std::string& name, const std::vector<int>& keys, const std::set<int>& changed = {}) {
    std::string csv =
        "LMK_KEY,ADDRESS,POSTCODE,LODGEMENT_DATE,TRANSACTION_TYPE,TOTAL_FLOOR_AREA,UPRN,LOCAL_AUTHORITY\n";
    for (int k : keys)
        csv += std::to_string(k) + ",\"" + std::to_string(k) + ", Mill Lane\",AB1 2CD,2021-03-0" +
               std::to_string(1 + k % 9) + ",marketed sale," + std::to_string(changed.count(k) ? 500 + k : 50 + k) +
               "," + std::to_string(1000 + k) + ",E06000001\n";
    std::string path = testing::TempDir() + name + ".zip";
    epc::test::write_zip(path, {{"domestic-E06000001-Hartlepool/certificates.csv", csv},
                                {"domestic-E06000001-Hartlepool/recommendations.csv", "LMK_KEY\n"}});
    return path;
}

std::vector<int> keys(int from, int to) {
    std::vector<int> k;
    for (int i = from; i <= to; ++i) k.push_back(i);
    return k;
}

LoadSummary load_zip(const std::string& zip, TestDatabase& db) {
    ArchiveInfo archive = inspect_archive(zip, {CertType::domestic, std::nullopt});
    EXPECT_TRUE(archive.problems.empty());
    db::Session session = db.session();
    return load_archive(session, archive, LoadOptions{});
}

PublishSummary publish_to(TestDatabase& db) {
    db::Session session = db.session();
    return publish(session);
}

RevertSummary revert_in(TestDatabase& db) {
    db::Session session = db.session();
    return revert(session);
}

// A copy of production as it is now, every column, to compare with later.
void snapshot(db::Connection& c, const std::string& name) {
    c.exec("DROP TABLE IF EXISTS " + name);
    c.exec("CREATE TABLE " + name + " AS SELECT " + production_column_list() + " FROM epc.domestic_certificates");
}

// Rows that differ between production and a snapshot, both ways, as multisets of every column.
long long differences(db::Connection& c, const std::string& snap) {
    const std::string cols = production_column_list();
    const std::string prod = "SELECT " + cols + " FROM epc.domestic_certificates";
    const std::string other = "SELECT " + cols + " FROM " + snap;
    return c
        .exec("SELECT (SELECT count(*) FROM (" + prod + " EXCEPT ALL " + other + ") a) + (SELECT count(*) FROM (" +
              other + " EXCEPT ALL " + prod + ") b)")
        .integer(0, 0);
}

// Production's certificate values equal the staged release's (a publish of it is complete).
long long differences_from_staging(db::Connection& c) {
    return epc::test::rows_missing(c, "epc.domestic_certificates", "epc.stage_domestic") +
           epc::test::rows_missing(c, "epc.stage_domestic", "epc.domestic_certificates");
}

epc::test::Outcome import(const std::vector<std::string>& args, const std::string& tag) {
    std::vector<std::string> argv = {EPC_IMPORT_BIN};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--log-format", "text"});
    return epc::test::Process(argv, testing::TempDir() + tag).wait();
}

}  // namespace

TEST(Revert, UsersObjectsOnProductionSurviveTwoPublishesAndARevert) {
    TestDatabase db;
    load_zip(release("keep-a", keys(1, 10)), db);
    publish_to(db);
    db::Connection c = db.connect();
    const std::string role = db.name() + "_reader";
    const long long oid = c.exec("SELECT 'epc.domestic_certificates'::regclass::oid").integer(0, 0);
    c.exec("CREATE ROLE " + role);
    c.exec("GRANT USAGE ON SCHEMA epc TO " + role + "; GRANT SELECT ON epc.domestic_certificates TO " + role +
           "; CREATE VIEW public.big_homes AS SELECT cert_key, total_floor_area FROM epc.domestic_certificates "
           "WHERE total_floor_area > 55; GRANT SELECT ON public.big_homes TO " +
           role +
           "; COMMENT ON TABLE epc.domestic_certificates IS 'EPC register, domestic';"
           "CREATE TABLE public.my_notes (cert_key text REFERENCES epc.domestic_certificates (cert_key), note text);"
           "INSERT INTO public.my_notes VALUES ('3', 'visited');"
           "ALTER TABLE epc.domestic_certificates ENABLE ROW LEVEL SECURITY;"
           "CREATE POLICY below_100 ON epc.domestic_certificates FOR SELECT TO " +
           role + " USING (cert_key::int < 100)");

    auto users_objects_work = [&](long long rows, const std::string& view_keys) {
        EXPECT_EQ(c.exec("SELECT 'epc.domestic_certificates'::regclass::oid").integer(0, 0), oid);
        EXPECT_EQ(c.exec("SELECT string_agg(cert_key, ',' ORDER BY cert_key::int) FROM public.big_homes").text(0, 0),
                  view_keys);
        EXPECT_EQ(c.exec("SELECT obj_description('epc.domestic_certificates'::regclass)").text(0, 0),
                  "EPC register, domestic");
        EXPECT_EQ(c.exec("SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.my_notes'::regclass "
                         "AND confrelid = 'epc.domestic_certificates'::regclass")
                      .integer(0, 0),
                  1);
        c.exec("SET ROLE " + role);
        EXPECT_EQ(c.exec("SELECT count(*) FROM epc.domestic_certificates").integer(0, 0), rows);
        EXPECT_EQ(c.exec("SELECT count(*) FROM public.big_homes").integer(0, 0),
                  static_cast<long long>(std::count(view_keys.begin(), view_keys.end(), ',') + 1));
        c.exec("RESET ROLE");
        EXPECT_EQ(c.exec("SELECT count(*) FROM pg_policies WHERE tablename = 'domestic_certificates'").integer(0, 0),
                  1);
    };

    // B: 1 and 2 gone, 4 and 5 changed (floor area 504, 505), 11 and 12 new.
    load_zip(release("keep-b", {3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {4, 5}), db);
    PublishSummary b = publish_to(db);
    EXPECT_EQ(b.added, 2u);
    EXPECT_EQ(b.changed, 2u);
    EXPECT_EQ(b.disappeared, 2u);
    users_objects_work(10, "4,5,6,7,8,9,10,11,12");
    snapshot(c, "public.release_b");

    // C: 12 gone, 6 changed, 13 new; then reverted to B.
    load_zip(release("keep-c", {3, 4, 5, 6, 7, 8, 9, 10, 11, 13}, {4, 5, 6}), db);
    PublishSummary pc = publish_to(db);
    EXPECT_EQ(pc.added + pc.changed + pc.disappeared, 3u);
    users_objects_work(10, "4,5,6,7,8,9,10,11,13");
    RevertSummary r = revert_in(db);
    EXPECT_EQ(r.run_id, pc.run_id);
    EXPECT_EQ(r.back_to_run, b.run_id);
    EXPECT_EQ(differences(c, "public.release_b"), 0);
    users_objects_work(10, "4,5,6,7,8,9,10,11,12");

    // A foreign key to a certificate a release drops stops that publish, which changes nothing.
    load_zip(release("keep-d", {4, 5, 6}), db);
    EXPECT_THROW(publish_to(db), Error);
    EXPECT_EQ(differences(c, "public.release_b"), 0);
    c.exec("DROP OWNED BY " + role);
    c.exec("DROP ROLE " + role);
}

TEST(Revert, PublishCountsAreExactOnAMutatedReleaseAndRevertRestoresTheOneBefore) {
    TestDatabase db;
    LoadSummary a = load_zip(release("mutate-a", keys(1, 300)), db);
    PublishSummary pa = publish_to(db);
    EXPECT_TRUE(pa.first_release);
    db::Connection c = db.connect();
    snapshot(c, "public.release_a");

    // B: every 10th key gone, every 7th (not gone) changed, 301..330 new, and one unchanged
    // certificate located by a later geocode: new coordinates count as a change.
    std::vector<int> b_keys;
    std::set<int> changed;
    std::uint64_t gone = 0;
    for (int k = 1; k <= 300; ++k) {
        if (k % 10 == 0) {
            ++gone;
            continue;
        }
        b_keys.push_back(k);
        if (k % 7 == 0) changed.insert(k);
    }
    for (int k = 301; k <= 330; ++k) b_keys.push_back(k);
    LoadSummary b = load_zip(release("mutate-b", b_keys, changed), db);
    c.exec("INSERT INTO epc.geocode_cache (address_key, status, latitude, longitude, provider, precision, checked_at) "
           "SELECT address_key, 'found', 54.68, -1.21, 'uprn', 'property', now() FROM epc.stage_domestic "
           "WHERE cert_key = '1'");
    PublishSummary pb = publish_to(db);
    EXPECT_FALSE(pb.first_release);
    EXPECT_EQ(pb.rows, b_keys.size());
    EXPECT_EQ(pb.added, 30u);
    EXPECT_EQ(pb.disappeared, gone);
    EXPECT_EQ(pb.changed, changed.size() + 1);
    EXPECT_EQ(differences_from_staging(c), 0);
    EXPECT_EQ(db.scalar("SELECT latitude || ',' || geocode_provider FROM epc.domestic_certificates "
                        "WHERE cert_key = '1'"),
              "54.68,uprn");
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.domestic_certificates WHERE run_id = " + std::to_string(b.run_id)),
              static_cast<long long>(pb.added + pb.changed));
    EXPECT_EQ(db.scalar("SELECT rows_published || ',' || rows_added || ',' || rows_changed || ',' || rows_disappeared "
                        "FROM epc.import_run WHERE run_id = " +
                        std::to_string(b.run_id)),
              std::to_string(b_keys.size()) + ",30," + std::to_string(changed.size() + 1) + "," + std::to_string(gone));
    // Only what this publish replaced or removed is kept for revert.
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.undo_domestic"), static_cast<long long>(pb.changed + pb.disappeared));

    RevertSummary r = revert_in(db);
    EXPECT_EQ(r.run_id, b.run_id);
    EXPECT_EQ(r.back_to_run, a.run_id);
    EXPECT_EQ(r.removed, pb.added);
    EXPECT_EQ(r.restored, pb.changed);
    EXPECT_EQ(r.reinserted, pb.disappeared);
    EXPECT_EQ(r.rows, 300u);
    EXPECT_EQ(differences(c, "public.release_a"), 0);
    EXPECT_EQ(db.scalar("SELECT string_agg(run_id || ':' || status, ',' ORDER BY run_id) FROM epc.import_run"),
              std::to_string(a.run_id) + ":published," + std::to_string(b.run_id) + ":reverted");
    EXPECT_EQ(db.count("SELECT count(*) FROM pg_tables WHERE schemaname = 'epc' AND tablename = 'undo_domestic'"), 0);

    // One step back only; the reverted run is not published again; the next release compares with A.
    try {
        revert_in(db);
        FAIL() << "reverted twice";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), exit_usage);
        EXPECT_NE(std::string(e.what()).find("reverted already"), std::string::npos) << e.what();
    }
    try {
        publish_to(db);
        FAIL() << "published a reverted run";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), exit_usage);
        EXPECT_NE(std::string(e.what()).find("reverted"), std::string::npos) << e.what();
    }
    load_zip(release("mutate-c", keys(2, 301)), db);
    PublishSummary pc = publish_to(db);
    EXPECT_EQ(pc.added, 1u);
    EXPECT_EQ(pc.disappeared, 1u);
    EXPECT_EQ(pc.changed, 0u);
    EXPECT_EQ(differences_from_staging(c), 0);
}

TEST(Revert, CommandExitsTwoWhenThereIsNothingToRevert) {
    TestDatabase db;
    epc::test::Outcome empty = import({"revert", "--db", db.conninfo()}, "revert-empty");
    EXPECT_EQ(empty.exit_code, 2) << empty.err;
    EXPECT_NE(empty.err.find("nothing has been published yet"), std::string::npos) << empty.err;

    load_zip(release("revert-first", keys(1, 5)), db);
    publish_to(db);
    epc::test::Outcome first = import({"revert", "--db", db.conninfo()}, "revert-first");
    EXPECT_EQ(first.exit_code, 2) << first.err;
    EXPECT_NE(first.err.find("first release"), std::string::npos) << first.err;
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.domestic_certificates"), 5);

    load_zip(release("revert-second", keys(2, 7)), db);
    publish_to(db);
    const std::string report = testing::TempDir() + "revert-report.json";
    epc::test::Outcome done = import({"revert", "--db", db.conninfo(), "--report", report}, "revert-done");
    ASSERT_EQ(done.exit_code, 0) << done.err;
    EXPECT_NE(epc::test::read_file(report).find("\"removed\": 2"), std::string::npos) << epc::test::read_file(report);
    EXPECT_EQ(db.scalar("SELECT string_agg(cert_key, ',' ORDER BY cert_key) FROM epc.domestic_certificates"),
              "1,2,3,4,5");
    EXPECT_EQ(import({"revert", "--db", db.conninfo()}, "revert-again").exit_code, 2);
}

namespace {

// A lock the test holds in an open transaction, so that the stage waits at one statement (whose
// text starts with `statement`) and can be killed there.
struct KillPoint {
    std::string statement;
    std::string blocker;  // SQL; "$RUN" is replaced by the run being published or reverted
};

// Holds the blocker, starts `epc-import <command>`, waits until it waits at the point, kills it
// with SIGKILL, lets go of the blocker and waits until its backend has gone.
void kill_at(TestDatabase& db, const std::string& command, const KillPoint& point, long long run_id) {
    db::Connection blocker = db.connect();
    std::string sql = point.blocker;
    if (auto at = sql.find("$RUN"); at != std::string::npos) sql.replace(at, 4, std::to_string(run_id));
    blocker.exec("BEGIN");
    blocker.exec(sql);
    const std::string log = testing::TempDir() + "revert-kill-" + command;
    epc::test::Process process({EPC_IMPORT_BIN, command, "--db", db.conninfo(), "--log-format", "text"}, log);
    db::Connection watch = db.connect();
    const std::string app = "epc-import domestic " + command;
    bool waiting = false;
    for (int i = 0; i < 3000 && !waiting; ++i) {
        db::Result r = watch.exec("SELECT query FROM pg_stat_activity WHERE application_name = $1 "
                                  "AND wait_event_type = 'Lock'",
                                  {app});
        waiting = r.rows() > 0 && r.text(0, 0).rfind(point.statement, 0) == 0;
        if (!waiting) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    process.stop(SIGKILL);
    blocker.exec("ROLLBACK");
    ASSERT_TRUE(waiting) << command << " never waited at " << point.statement << ": "
                         << epc::test::read_file(log + ".err");
    for (int i = 0; i < 3000; ++i) {
        if (watch.exec("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", {app}).integer(0, 0) == 0)
            return;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL() << "the killed " << command << "'s backend did not go";
}

const char* const kRelease = "epc.domestic_certificates";

// A row the stage deletes or updates, locked; a key it inserts, inserted and not committed (the
// stage's insert waits to see whether it commits); the run's row, which only the last statement
// before COMMIT updates (NO KEY: the undo bookkeeping's foreign key to it may still share it).
std::string lock_row(const std::string& key) {
    return "SELECT 1 FROM epc.domestic_certificates WHERE cert_key = '" + key + "' FOR UPDATE";
}
std::string insert_row(const std::string& key) {
    return "INSERT INTO epc.domestic_certificates (cert_key, lodgement_date, run_id) VALUES ('" + key +
           "', '2021-01-01', 0)";
}
const char* const kLockRun = "SELECT 1 FROM epc.import_run WHERE run_id = $RUN FOR NO KEY UPDATE";

// A: keys 1..10. B: 1, 2 gone; 4, 5 changed; 11, 12 new. A blocker per statement that writes.
std::vector<KillPoint> publish_points() {
    return {{"DELETE FROM epc.domestic_certificates", lock_row("1")},
            {"UPDATE epc.domestic_certificates", lock_row("4")},
            {"INSERT INTO epc.domestic_certificates", insert_row("11")},
            {"UPDATE epc.import_run", kLockRun}};
}

std::vector<KillPoint> revert_points() {
    return {{"DELETE FROM epc.domestic_certificates", lock_row("11")},
            {"UPDATE epc.domestic_certificates", lock_row("4")},
            {"INSERT INTO epc.domestic_certificates", insert_row("1")},
            {"UPDATE epc.import_run", kLockRun}};
}

}  // namespace

TEST(Revert, AKilledPublishLeavesTheOldReleaseAndTheNextRunPublishes) {
    for (const KillPoint& point : publish_points()) {
        SCOPED_TRACE(point.statement);
        TestDatabase db;
        load_zip(release("kill-pub-a", keys(1, 10)), db);
        publish_to(db);
        db::Connection c = db.connect();
        snapshot(c, "public.release_a");
        LoadSummary b = load_zip(release("kill-pub-b", {3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {4, 5}), db);

        kill_at(db, "publish", point, b.run_id);
        EXPECT_EQ(differences(c, "public.release_a"), 0) << kRelease << " is not release A";
        EXPECT_EQ(db.scalar("SELECT status FROM epc.import_run WHERE run_id = " + std::to_string(b.run_id)), "loaded");

        epc::test::Outcome again = import({"publish", "--db", db.conninfo()}, "kill-pub-again");
        ASSERT_EQ(again.exit_code, 0) << again.err;
        EXPECT_EQ(differences_from_staging(c), 0);
        EXPECT_EQ(db.scalar("SELECT status || ':' || rows_added || ',' || rows_changed || ',' || rows_disappeared "
                            "FROM epc.import_run WHERE run_id = " +
                            std::to_string(b.run_id)),
                  "published:2,2,2");
    }
}

TEST(Revert, AKilledRevertLeavesTheNewReleaseAndTheNextRunReverts) {
    for (const KillPoint& point : revert_points()) {
        SCOPED_TRACE(point.statement);
        TestDatabase db;
        load_zip(release("kill-rev-a", keys(1, 10)), db);
        publish_to(db);
        db::Connection c = db.connect();
        snapshot(c, "public.release_a");
        LoadSummary b = load_zip(release("kill-rev-b", {3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {4, 5}), db);
        publish_to(db);
        snapshot(c, "public.release_b");

        kill_at(db, "revert", point, b.run_id);
        EXPECT_EQ(differences(c, "public.release_b"), 0) << kRelease << " is not release B";
        EXPECT_EQ(db.scalar("SELECT status FROM epc.import_run WHERE run_id = " + std::to_string(b.run_id)),
                  "published");

        epc::test::Outcome again = import({"revert", "--db", db.conninfo()}, "kill-rev-again");
        ASSERT_EQ(again.exit_code, 0) << again.err;
        EXPECT_EQ(differences(c, "public.release_a"), 0);
        EXPECT_EQ(db.scalar("SELECT status FROM epc.import_run WHERE run_id = " + std::to_string(b.run_id)),
                  "reverted");
    }
}

// The changes of a loaded run are found once (by the geocode stage, here called directly) and
// reused by publish; a revert in between changes production, so publish finds them again against
// the release revert brought back.
TEST(Revert, ChangesFoundBeforeARevertAreFoundAgainByPublish) {
    TestDatabase db;
    load_zip(release("again-a", keys(1, 100)), db);
    publish_to(db);
    load_zip(release("again-b", keys(11, 120)), db);  // 1..10 gone, 101..120 new
    publish_to(db);
    const LoadSummary c_run = load_zip(release("again-c", keys(1, 105), {50}), db);
    {
        db::Session session = db.session();
        const ReleaseChanges found = release_changes(session, c_run.run_id);  // against B
        ASSERT_FALSE(found.first_release);
        EXPECT_EQ(db.count("SELECT count(*) FROM " + found.table + " WHERE change = 'gone'"), 15);  // 106..120
    }
    revert_in(db);  // production holds A again
    PublishSummary pc = publish_to(db);
    EXPECT_EQ(pc.added, 5u);        // 101..105, new against A
    EXPECT_EQ(pc.disappeared, 0u);  // A had nothing beyond 100
    EXPECT_EQ(pc.changed, 1u);      // 50
    db::Connection c = db.connect();
    EXPECT_EQ(differences_from_staging(c), 0);
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.change_set"), 0);
    EXPECT_EQ(db.count("SELECT count(*) FROM pg_tables WHERE schemaname = 'epc' AND tablename = 'changes_domestic'"),
              0);
}

// Changes found by an importer that did not keep where production's rows were (before
// production_tid) are found again by publish, not applied without it.
TEST(Revert, ChangesFoundWithoutProductionsPlacesAreFoundAgain) {
    TestDatabase db;
    load_zip(release("places-a", keys(1, 100)), db);
    publish_to(db);
    const LoadSummary b = load_zip(release("places-b", keys(11, 120), {50}), db);
    {
        db::Session session = db.session();
        const ReleaseChanges found = release_changes(session, b.run_id);
        db::Connection c = db.connect();
        c.exec("ALTER TABLE " + found.table + " DROP COLUMN " + std::string(kProductionTid));
        c.exec("ALTER TABLE " + found.was + " DROP COLUMN " + std::string(kProductionTid));
    }
    PublishSummary pb = publish_to(db);
    EXPECT_EQ(pb.added, 20u);
    EXPECT_EQ(pb.disappeared, 10u);
    EXPECT_EQ(pb.changed, 1u);
    db::Connection c = db.connect();
    EXPECT_EQ(differences_from_staging(c), 0);
}

// Publish reaches the changed and gone rows where the changes found them in production; rows that
// have moved since (here by a write that changes no value; VACUUM FULL or CLUSTER would do the
// same) are reached by key instead, with the same counts, the same undo, and a warning.
TEST(Revert, RowsMovedInProductionSinceTheChangesWereFoundArePublishedByKey) {
    TestDatabase db;
    load_zip(release("moved-a", keys(1, 300)), db);
    publish_to(db);
    db::Connection c = db.connect();
    const std::string moved = "no longer where the changes found them";

    // B: 1..20 gone, every 7th changed, 301..310 new; found, then published where they were found.
    const LoadSummary b = load_zip(release("moved-b", keys(21, 310), {49, 70, 140}), db);
    {
        db::Session session = db.session();
        ASSERT_FALSE(release_changes(session, b.run_id).first_release);
    }
    epc::test::Outcome pb = import({"publish", "--db", db.conninfo()}, "moved-publish-b");
    ASSERT_EQ(pb.exit_code, 0) << pb.err;
    EXPECT_EQ(pb.err.find(moved), std::string::npos) << pb.err;
    EXPECT_EQ(differences_from_staging(c), 0);
    snapshot(c, "public.moved_b");

    // C: 21..40 gone, 60 and 90 changed, 311..315 new; every production row moves after the
    // changes are found.
    std::vector<int> c_keys = keys(41, 315);
    const LoadSummary c_run = load_zip(release("moved-c", c_keys, {60, 90}), db);
    {
        db::Session session = db.session();
        ASSERT_FALSE(release_changes(session, c_run.run_id).first_release);
    }
    c.exec("UPDATE epc.domestic_certificates SET run_id = run_id");
    epc::test::Outcome pc = import({"publish", "--db", db.conninfo()}, "moved-publish-c");
    ASSERT_EQ(pc.exit_code, 0) << pc.err;
    EXPECT_NE(pc.err.find("20 of 20 rows were " + moved), std::string::npos) << pc.err;
    // 60 and 90, and B's changed rows 49, 70 and 140, whose values C has as A had them.
    EXPECT_NE(pc.err.find("5 of 5 rows were " + moved), std::string::npos) << pc.err;
    EXPECT_EQ(differences_from_staging(c), 0);
    EXPECT_EQ(db.scalar("SELECT rows_added || ',' || rows_changed || ',' || rows_disappeared FROM epc.import_run "
                        "WHERE run_id = " +
                        std::to_string(c_run.run_id)),
              "5,5,20");
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.undo_domestic"), 25);
    revert_in(db);
    EXPECT_EQ(differences(c, "public.moved_b"), 0);
}

// `--jobs 1` keeps publish to one connection (the first release's build and the comparison with
// production otherwise use two at once): a role allowed a single connection can publish with it,
// and cannot without it. Each importer process logs in as a login role of its own, all acting as
// the database's owner (a plain role, not a superuser), so no backend of an earlier process still
// exiting counts against the limit.
TEST(Publish, JobsOneKeepsPublishToOneConnection) {
    TestDatabase db;
    db::Connection c = db.connect();
    const std::string owner = db.name() + "_owner";
    c.exec("CREATE ROLE " + owner + " NOLOGIN");
    c.exec("ALTER DATABASE " + db.name() + " OWNER TO " + owner);
    int logins = 0;
    // A new login role acting as the owner, allowed `limit` connections (-1: any).
    const auto as_new_login = [&](int limit) {
        const std::string login = db.name() + "_login" + std::to_string(++logins);
        c.exec("CREATE ROLE " + login + " LOGIN PASSWORD 'secret' IN ROLE " + owner + " CONNECTION LIMIT " +
               std::to_string(limit));
        return "dbname=" + db.name() + " user=" + login + " password=secret options='-c role=" + owner + "'";
    };
    const auto run = [&](const std::vector<std::string>& args, const std::string& conninfo, const std::string& tag) {
        std::vector<std::string> argv = args;
        argv.insert(argv.end(), {"--db", conninfo});
        return import(argv, tag);
    };

    epc::test::Outcome load_a = run({"load", "--zip", release("one-a", keys(1, 300))}, as_new_login(-1), "one-load-a");
    ASSERT_EQ(load_a.exit_code, 0) << load_a.err;
    epc::test::Outcome two = run({"publish", "--jobs", "2"}, as_new_login(1), "one-publish-two");
    EXPECT_EQ(two.exit_code, 5) << two.err;
    EXPECT_NE(two.err.find("too many connections for role"), std::string::npos) << two.err;
    EXPECT_EQ(db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'domestic_certificates'"), 0);
    epc::test::Outcome one = run({"publish", "--jobs", "1"}, as_new_login(1), "one-publish-a");
    ASSERT_EQ(one.exit_code, 0) << one.err;
    EXPECT_EQ(differences_from_staging(c), 0);
    EXPECT_EQ(db.scalar("SELECT tableowner FROM pg_tables WHERE tablename = 'domestic_certificates'"), owner);

    // The next month, compared with production in one stream: 1..10 gone, 20 and 40 changed, 301..305 new.
    epc::test::Outcome load_b = run({"load", "--zip", release("one-b", keys(11, 305), {20, 40})}, as_new_login(-1),
                                    "one-load-b");
    ASSERT_EQ(load_b.exit_code, 0) << load_b.err;
    epc::test::Outcome next = run({"publish", "--jobs", "1"}, as_new_login(1), "one-publish-b");
    ASSERT_EQ(next.exit_code, 0) << next.err;
    EXPECT_EQ(differences_from_staging(c), 0);
    EXPECT_EQ(db.scalar("SELECT rows_added || ',' || rows_changed || ',' || rows_disappeared FROM epc.import_run "
                        "WHERE status = 'published' ORDER BY run_id DESC LIMIT 1"),
              "5,2,10");
}
