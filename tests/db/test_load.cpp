// The load stage against a real PostgreSQL: staging content equals what the fixture generator says
// a correct importer must produce, for every type and layout, with every CSV hazard; counts balance;
// re-runs, interruptions, the error budget and the lock behave.
#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <sstream>
#include <thread>

#include "epc/db/locks.hpp"
#include "epc/extract/archive.hpp"
#include "epc/load/loader.hpp"
#include "fixture/fixture.hpp"
#include "support/pg_test.hpp"
#include "support/zip_writer.hpp"

using namespace epc;
using epc::test::TestDatabase;

namespace {

struct Generated {
    std::string zip;
    fixture::Expected expected;
    std::string expected_rows;  // COPY text of every row that must end up in staging
};

Generated generate(fixture::Options options, const std::string& name) {
    Generated g;
    g.zip = testing::TempDir() + name + ".zip";
    std::ostringstream rows;
    g.expected = fixture::write_zip(g.zip, options, &rows);
    g.expected_rows = rows.str();
    return g;
}

LoadSummary load(const Generated& g, TestDatabase& db, CertType type, unsigned jobs = 2,
                 std::optional<std::uint64_t> max_rejects = std::nullopt, const std::atomic<bool>* stop = nullptr) {
    ArchiveInfo archive = inspect_archive(g.zip, {type, std::nullopt});
    EXPECT_TRUE(archive.problems.empty()) << archive.problems.front();
    LoadOptions o;
    o.jobs = jobs;
    o.max_rejects = max_rejects;
    o.interrupted = stop;
    db::Session session = db.session(type);
    return load_archive(session, archive, o);
}

// Everything a load must get right, checked against the generator's account.
void expect_matches_fixture(TestDatabase& db, CertType type, const Generated& g, const LoadSummary& s) {
    const fixture::Expected& e = g.expected;
    const db::StagingTables t = db::staging_tables(type);
    EXPECT_EQ(s.rows_read, e.rows_read);
    EXPECT_EQ(s.rows_loaded, e.rows_loaded);
    EXPECT_EQ(s.rows_rejected, e.rows_rejected);
    EXPECT_EQ(s.rows_read, s.rows_loaded + s.rows_rejected);
    EXPECT_EQ(s.invalid_utf8_values, e.invalid_utf8_values);
    EXPECT_EQ(s.invalid_values, e.invalid_values);
    for (const auto& [reason, n] : e.rejects_by_reason)
        EXPECT_EQ(s.rejects_by_reason.count(reason) ? s.rejects_by_reason.at(reason) : 0, n) << reason;

    // Per file, in the database ledger.
    db::Connection c = db.connect();
    ASSERT_EQ(s.files.size(), e.files.size());
    for (std::size_t i = 0; i < e.files.size(); ++i) {
        db::Result f = c.exec("SELECT rows_read, rows_loaded, rows_rejected FROM epc.import_file "
                              "WHERE run_id = $1 AND file_name = $2",
                              {std::to_string(s.run_id), e.files[i].name});
        ASSERT_EQ(f.rows(), 1) << e.files[i].name;
        EXPECT_EQ(f.integer(0, 0), static_cast<long long>(e.files[i].rows_read)) << e.files[i].name;
        EXPECT_EQ(f.integer(0, 1), static_cast<long long>(e.files[i].rows_loaded)) << e.files[i].name;
        EXPECT_EQ(f.integer(0, 2), static_cast<long long>(e.files[i].rows_rejected)) << e.files[i].name;
    }
    db::Result run = c.exec(
        "SELECT status, rows_read, rows_loaded, rows_rejected FROM epc.import_run WHERE run_id = $1",
        {std::to_string(s.run_id)});
    EXPECT_EQ(run.text(0, 0), "loaded");
    EXPECT_EQ(run.integer(0, 1), static_cast<long long>(e.rows_read));
    EXPECT_EQ(run.integer(0, 2), static_cast<long long>(e.rows_loaded));
    EXPECT_EQ(run.integer(0, 3), static_cast<long long>(e.rows_rejected));

    // Staging holds exactly the expected rows, values included.
    epc::test::load_expected(c, "expected_rows", g.expected_rows);
    EXPECT_EQ(c.exec("SELECT count(*) FROM " + t.rows).integer(0, 0), static_cast<long long>(e.rows_loaded));
    EXPECT_EQ(epc::test::rows_missing(c, "expected_rows", t.rows), 0) << "expected rows missing from staging";
    EXPECT_EQ(epc::test::rows_missing(c, t.rows, "expected_rows"), 0) << "staging rows the fixture did not expect";

    // Rejects: the same file, line and reason for each.
    c.exec("CREATE TEMP TABLE expected_rejects (file_name text, line_no bigint, reason text)");
    std::string rejects;
    for (const auto& r : e.rejected) rejects += r.file + "\t" + std::to_string(r.line) + "\t" + r.reason + "\n";
    db::CopyIn copy(c, "expected_rejects", "file_name, line_no, reason", db::CopyFormat::text);
    copy.put(rejects);
    copy.finish();
    const std::string got = "(SELECT file_name, line_no, reason FROM " + t.rejects + ") g";
    EXPECT_EQ(c.exec("SELECT count(*) FROM (SELECT * FROM expected_rejects EXCEPT ALL SELECT * FROM " + got + ") d")
                  .integer(0, 0),
              0);
    EXPECT_EQ(c.exec("SELECT count(*) FROM (SELECT * FROM " + got + " EXCEPT ALL SELECT * FROM expected_rejects) d")
                  .integer(0, 0),
              0);
    EXPECT_EQ(c.exec("SELECT count(*) FROM " + t.rejects + " WHERE raw IS NULL OR raw = ''").integer(0, 0), 0);
}

struct Case {
    CertType type;
    Layout layout;
};

class LoadEveryTypeAndLayout : public testing::TestWithParam<Case> {};

}  // namespace

TEST_P(LoadEveryTypeAndLayout, StagingEqualsFixtureWithAllHazards) {
    fixture::Options o;
    o.cert_type = GetParam().type;
    o.layout = GetParam().layout;
    o.rows = 6000;
    o.files = 6;
    o.seed = 11;
    o.with_all_hazards();
    std::string name = std::string("all-hazards-") + std::string(cert_type_sql(o.cert_type)) + "-" +
                       std::string(layout_name(o.layout));
    Generated g = generate(o, name);
    ASSERT_GT(g.expected.rows_rejected, 0u);
    ASSERT_GT(g.expected.invalid_utf8_values, 0u);
    TestDatabase db;
    LoadSummary s = load(g, db, o.cert_type);
    expect_matches_fixture(db, o.cert_type, g, s);
}

INSTANTIATE_TEST_SUITE_P(
    Types, LoadEveryTypeAndLayout,
    testing::Values(Case{CertType::domestic, Layout::legacy}, Case{CertType::domestic, Layout::current},
                    Case{CertType::non_domestic, Layout::legacy}, Case{CertType::non_domestic, Layout::current},
                    Case{CertType::display, Layout::legacy}, Case{CertType::display, Layout::current},
                    Case{CertType::domestic, Layout::single}),
    [](const testing::TestParamInfo<Case>& info) {
        return std::string(cert_type_sql(info.param.type)) + "_" + std::string(layout_name(info.param.layout));
    });

TEST(Load, EachHazardAloneLoadsCorrectly) {
    for (fixture::Hazard h : fixture::all_hazards()) {
        SCOPED_TRACE(std::string(fixture::hazard_name(h)));
        fixture::Options o;
        o.rows = 800;
        o.files = 3;
        o.seed = 5;
        o.hazards = {h};
        Generated g = generate(o, "hazard");
        TestDatabase db;
        LoadSummary s = load(g, db, CertType::domestic);
        expect_matches_fixture(db, CertType::domestic, g, s);
    }
}

TEST(Load, FilesLargerThanTheReaderBuffersLoadCompletely) {
    // One certificates.csv of ~45 MB: beyond fccp's first 32 MiB read, where a byte source that
    // returned short reads would silently end the file.
    fixture::Options o;
    o.layout = Layout::single;
    o.rows = 50000;
    o.seed = 4;
    o.with_all_hazards();
    Generated g = generate(o, "large-file");
    TestDatabase db;
    LoadSummary s = load(g, db, CertType::domestic);
    ASSERT_EQ(s.files.size(), 1u);
    expect_matches_fixture(db, CertType::domestic, g, s);
}

TEST(Load, Zip64ArchiveWithStoredAndDeflatedEntriesLoadsExactly) {
    fixture::Options o;
    o.rows = 4000;
    o.files = 4;
    o.seed = 17;
    o.with_all_hazards();
    Generated g = generate(o, "zip64-stored");
    // Written again by hand: every entry with Zip64 records, the certificates files stored and
    // deflated in turn.
    std::vector<epc::test::RawEntry> entries;
    int certificates = 0;
    for (auto& [name, content] : epc::test::read_zip(g.zip)) {
        epc::test::RawEntry e;
        e.name = name;
        e.content = std::move(content);
        e.zip64 = true;
        if (name.find("certificates") != std::string::npos) e.deflate = certificates++ % 2 == 0;
        entries.push_back(std::move(e));
    }
    epc::test::write_raw_zip(g.zip, entries);
    ArchiveInfo archive = inspect_archive(g.zip, {});
    ZipHandle zip = open_zip(g.zip);
    std::set<EntryDecoder> decoders;
    for (const CertFile& f : archive.files) decoders.insert(EntrySource(zip.get(), f).decoder());
    EXPECT_EQ(decoders, (std::set<EntryDecoder>{EntryDecoder::isal_inflate, EntryDecoder::stored}));

    TestDatabase db;
    LoadSummary s = load(g, db, CertType::domestic);
    expect_matches_fixture(db, CertType::domestic, g, s);
}

TEST(Load, ParallelismDoesNotChangeTheResult) {
    fixture::Options o;
    o.rows = 20000;
    o.files = 25;
    o.seed = 3;
    o.with_all_hazards();
    Generated g = generate(o, "parallel");
    for (unsigned jobs : {1u, 4u}) {
        SCOPED_TRACE(jobs);
        TestDatabase db;
        LoadSummary s = load(g, db, CertType::domestic, jobs);
        expect_matches_fixture(db, CertType::domestic, g, s);
    }
}

TEST(Load, RerunningTheSameArchiveRebuildsStagingIdentically) {
    fixture::Options o;
    o.rows = 3000;
    o.with_all_hazards();
    Generated g = generate(o, "rerun");
    TestDatabase db;
    LoadSummary first = load(g, db, CertType::domestic);
    std::string digest_sql = "SELECT md5(string_agg(t::text, '|' ORDER BY file_no, line_no)) FROM epc.stage_domestic t";
    std::string digest = db.scalar(digest_sql);
    LoadSummary second = load(g, db, CertType::domestic);
    EXPECT_NE(second.run_id, first.run_id);
    EXPECT_FALSE(second.resumed);
    EXPECT_EQ(db.scalar(digest_sql), digest);
    expect_matches_fixture(db, CertType::domestic, g, second);
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.import_run WHERE status = 'loaded'"), 2);
}

TEST(Load, InterruptedRunResumesAndEndsWithExactlyTheRightRows) {
    fixture::Options o;
    o.rows = 60000;
    o.files = 60;
    o.seed = 8;
    o.with_all_hazards();
    Generated g = generate(o, "interrupt");
    TestDatabase db;
    std::atomic<bool> stop{false};
    std::thread watcher([&] {
        db::Connection c = db.connect();
        if (epc::test::wait_for_count(c, "SELECT count(*) FROM epc.import_file", 2, std::chrono::seconds(40), &stop))
            stop = true;
    });
    try {
        load(g, db, CertType::domestic, 1, std::nullopt, &stop);
        stop = true;
        watcher.join();
        FAIL() << "the load finished before it could be interrupted";
    } catch (const Error& e) {
        stop = true;
        watcher.join();
        EXPECT_EQ(e.code(), exit_transient);
    }
    EXPECT_EQ(db.scalar("SELECT status FROM epc.import_run"), "failed");
    long long files_done = db.count("SELECT count(*) FROM epc.import_file");
    EXPECT_GE(files_done, 2);
    EXPECT_LT(files_done, 60);
    // No half-written file: staging holds exactly the rows of the committed files.
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.stage_domestic"),
              db.count("SELECT sum(rows_loaded) FROM epc.import_file"));

    LoadSummary resumed = load(g, db, CertType::domestic);
    EXPECT_TRUE(resumed.resumed);
    long long earlier = 0;
    for (const FileStats& f : resumed.files) earlier += f.from_earlier_attempt;
    EXPECT_EQ(earlier, files_done);
    expect_matches_fixture(db, CertType::domestic, g, resumed);
}

TEST(Load, ErrorBudgetFailsTheRunPastTheThreshold) {
    fixture::Options o;
    o.rows = 4000;
    o.hazards = {fixture::Hazard::bad_rows, fixture::Hazard::duplicate_keys};
    Generated g = generate(o, "budget");
    const std::uint64_t rejected = g.expected.rows_rejected;
    ASSERT_GT(rejected, 2u);
    TestDatabase db;
    EXPECT_NO_THROW(load(g, db, CertType::domestic, 2, rejected));
    try {
        load(g, db, CertType::domestic, 2, rejected - 1);
        FAIL() << "budget not enforced";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), exit_too_many_rejects);
        EXPECT_NE(std::string(e.what()).find("--max-rejects"), std::string::npos);
    }
    EXPECT_EQ(db.scalar("SELECT status FROM epc.import_run ORDER BY run_id DESC LIMIT 1"), "failed");
}

TEST(Load, AnotherRunHoldingTheLockIsRefused) {
    fixture::Options o;
    o.rows = 100;
    Generated g = generate(o, "lock");
    TestDatabase db;
    load(g, db, CertType::domestic);  // creates the schema
    db::Connection holder = db.connect();
    holder.exec("SELECT pg_advisory_lock(" + std::to_string(db::kLockNamespace) + ", " +
                std::to_string(db::lock_object(CertType::domestic)) + ")");
    try {
        load(g, db, CertType::domestic);
        FAIL() << "lock ignored";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), exit_locked);
        EXPECT_NE(std::string(e.what()).find("holds the lock"), std::string::npos) << e.what();
    }
    // Another certificate type is not blocked.
    fixture::Options d = o;
    d.cert_type = CertType::display;
    Generated gd = generate(d, "lock-display");
    EXPECT_NO_THROW(load(gd, db, CertType::display));
}
