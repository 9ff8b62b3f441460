// The certificate type's lock passes from one stage to the next at once, every time: a stage
// releases what it locked before it returns, instead of leaving that to its backend's exit (which
// PostgreSQL finishes after the client has moved on, so the next stage could be refused with exit 4).
#include <gtest/gtest.h>

#include "epc/db/locks.hpp"
#include "epc/extract/archive.hpp"
#include "epc/load/loader.hpp"
#include "epc/publish/publish.hpp"
#include "support/pg_test.hpp"
#include "support/process.hpp"
#include "support/zip_writer.hpp"

using namespace epc;
using epc::test::TestDatabase;

namespace {

// Enough hand-overs that a lock left to the backend's exit shows up (it did within 6 before the fix).
constexpr int kInProcessHandOvers = 25;
constexpr int kCrossProcessHandOvers = 8;

std::string small_release(const std::string& name) {
    std::string csv =
        "LMK_KEY,ADDRESS,POSTCODE,LODGEMENT_DATE,TRANSACTION_TYPE,TOTAL_FLOOR_AREA,UPRN,LOCAL_AUTHORITY\n";
    for (int k = 1; k <= 20; ++k)
        csv += std::to_string(k) + "," + std::to_string(k) + " Low Road,AB1 2CD,2022-01-0" + std::to_string(1 + k % 9) +
               ",rental,70,," + "E06000001\n";
    std::string path = testing::TempDir() + name + ".zip";
    epc::test::write_zip(path, {{"domestic-E06000001-Hartlepool/certificates.csv", csv},
                                {"domestic-E06000001-Hartlepool/recommendations.csv", "LMK_KEY\n"}});
    return path;
}

// Whether another session can take the domestic lock right now (and gives it back at once).
bool type_lock_is_free(TestDatabase& db) {
    db::Connection c = db.connect();
    const std::string key = std::to_string(db::kLockNamespace) + ", " +
                            std::to_string(db::lock_object(CertType::domestic));
    const bool got = c.exec("SELECT pg_try_advisory_lock(" + key + ")").text(0, 0) == "t";
    if (got) c.exec("SELECT pg_advisory_unlock(" + key + ")");
    return got;
}

}  // namespace

TEST(Locks, EachStageReleasesTheTypeLockBeforeItReturns) {
    TestDatabase db;
    const std::string zip = small_release("locks-in-process");
    const ArchiveInfo archive = inspect_archive(zip, {CertType::domestic, std::nullopt});
    for (int i = 0; i < kInProcessHandOvers; ++i) {
        // One session per stage, as `epc-import load` and `epc-import publish` each make one.
        const LoadSummary loaded = [&] {
            db::Session session = db.session();
            return load_archive(session, archive, LoadOptions());
        }();
        ASSERT_TRUE(type_lock_is_free(db)) << "after load " << i;
        const PublishSummary published = [&] {
            db::Session session = db.session();
            return publish(session);
        }();
        ASSERT_TRUE(type_lock_is_free(db)) << "after publish " << i;
        ASSERT_EQ(published.run_id, loaded.run_id);
        ASSERT_EQ(published.rows, 20u);
    }
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.import_run WHERE status = 'published'"), kInProcessHandOvers);
}

TEST(Locks, LoadThenPublishAsTwoProcessesNeverFindsTheLockHeld) {
    TestDatabase db;
    const std::string zip = small_release("locks-processes");
    const std::string log = testing::TempDir() + "locks-processes";
    for (int i = 0; i < kCrossProcessHandOvers; ++i) {
        epc::test::Outcome load = epc::test::Process({EPC_IMPORT_BIN, "load", "--zip", zip, "--db", db.conninfo(),
                                                      "--log-format", "json", "--work-dir",
                                                      testing::TempDir() + "locks-work"},
                                                     log + "-load")
                                      .wait();
        ASSERT_EQ(load.exit_code, 0) << load.err;
        ASSERT_TRUE(type_lock_is_free(db)) << "after load process " << i;
        epc::test::Outcome publish = epc::test::Process(
                                         {EPC_IMPORT_BIN, "publish", "--db", db.conninfo(), "--log-format", "json"},
                                         log + "-publish")
                                         .wait();
        ASSERT_EQ(publish.exit_code, 0) << publish.err;
    }
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.import_run WHERE status = 'published'"), kCrossProcessHandOvers);
}
