// --recommendations against a real PostgreSQL: every recommendations file of the three types in
// each layout streamed into staging with its rejects and the fixture's exact counts, published
// with the certificates, resumed after an interruption, changed by a later release and reverted.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include <nlohmann/json.hpp>

#include "epc/extract/archive.hpp"
#include "epc/load/loader.hpp"
#include "epc/publish/publish.hpp"
#include "fixture/fixture.hpp"
#include "support/pg_test.hpp"
#include "support/process.hpp"
#include "support/zip_writer.hpp"

using namespace epc;
using epc::test::TestDatabase;

namespace {

struct Generated {
    std::string zip;
    fixture::Expected expected;
};

Generated generate(const fixture::Options& options, const std::string& name) {
    Generated g;
    g.zip = testing::TempDir() + "recs-" + name + "-" + std::to_string(getpid()) + ".zip";
    g.expected = fixture::write_zip(g.zip, options);
    return g;
}

LoadSummary load(const std::string& zip, TestDatabase& db, CertType type, bool recommendations = true,
                 const std::atomic<bool>* interrupted = nullptr, unsigned jobs = 2) {
    ArchiveInfo archive = inspect_archive(zip, {type, std::nullopt});
    EXPECT_TRUE(archive.problems.empty()) << archive.problems.front();
    LoadOptions o;
    o.jobs = jobs;
    o.recommendations = recommendations;
    o.interrupted = interrupted;
    db::Session session = db.session(type);
    return load_archive(session, archive, o);
}

PublishSummary publish_type(TestDatabase& db, CertType type) {
    db::Session session = db.session(type);
    return publish(session);
}

std::string sql_name(CertType type) { return std::string(cert_type_sql(type)); }

// Every recommendation in a table as one digest: what a revert must bring back exactly.
std::string digest(TestDatabase& db, const std::string& table) {
    return db.scalar(
        "SELECT md5(coalesce(string_agg(x, '|' ORDER BY x), '')) FROM (SELECT (t.cert_key, t.row_hash)::text "
        "|| (SELECT string_agg(v, ',') FROM jsonb_each_text(to_jsonb(t) - 'run_id') j(k, v)) x FROM " +
        table + " t) s");
}

// Staging, the ledger and the rejects hold exactly what the fixture says a correct importer loads.
void expect_matches_fixture(TestDatabase& db, CertType type, const fixture::Expected& e, const LoadSummary& s) {
    const fixture::RecommendationsResult& r = e.recommendations;
    const std::string t = sql_name(type);
    EXPECT_TRUE(s.recommendations.loaded);
    EXPECT_EQ(s.recommendations.rows_read, r.rows_read);
    EXPECT_EQ(s.recommendations.rows_loaded, r.rows_loaded);
    EXPECT_EQ(s.recommendations.rows_rejected, r.rows_rejected);
    EXPECT_EQ(s.recommendations.rows_read, s.recommendations.rows_loaded + s.recommendations.rows_rejected);
    EXPECT_EQ(s.recommendations.files.size(), r.files.size());
    for (const auto& [reason, n] : r.rejects_by_reason) {
        const auto found = s.recommendations.rejects_by_reason.find(reason);
        EXPECT_EQ(found == s.recommendations.rejects_by_reason.end() ? 0 : found->second, n) << reason;
    }
    // The certificates' counts are the certificates' alone.
    EXPECT_EQ(s.rows_read, e.rows_read);
    EXPECT_EQ(s.rows_loaded, e.rows_loaded);
    EXPECT_EQ(db.count("SELECT rows_loaded FROM epc.import_run WHERE run_id = " + std::to_string(s.run_id)),
              static_cast<long long>(e.rows_loaded));

    EXPECT_EQ(db.count("SELECT count(*) FROM epc.stage_" + t + "_recommendations"),
              static_cast<long long>(r.rows_loaded));
    EXPECT_EQ(db.count("SELECT count(DISTINCT cert_key) FROM epc.stage_" + t + "_recommendations"),
              static_cast<long long>(r.certificates_with_recommendations));
    for (const fixture::FileResult& f : r.files)
        EXPECT_EQ(db.scalar("SELECT rows_read || '/' || rows_loaded || '/' || rows_rejected FROM epc.import_file "
                            "WHERE dataset = 'recommendations' AND file_name = '" +
                            f.name + "'"),
                  std::to_string(f.rows_read) + "/" + std::to_string(f.rows_loaded) + "/" +
                      std::to_string(f.rows_rejected))
            << f.name;
    // Each reject where the fixture put it, with why.
    std::string expected_rejects, loaded_rejects;
    for (const fixture::RejectedRow& row : r.rejected)
        expected_rejects += row.file + ":" + std::to_string(row.line) + ":" + row.reason + "\n";
    db::Connection c = db.connect();
    db::Result rejects = c.exec("SELECT j.file_name, j.line_no, j.reason FROM epc.reject_" + t +
                                    " j JOIN epc.import_file f ON f.run_id = $1 AND f.file_no = j.file_no "
                                    "WHERE f.dataset = 'recommendations' ORDER BY j.file_no, j.line_no",
                                {s.run_id});
    for (int i = 0; i < rejects.rows(); ++i)
        loaded_rejects += rejects.text(i, 0) + ":" + rejects.text(i, 1) + ":" + rejects.text(i, 2) + "\n";
    EXPECT_EQ(loaded_rejects, expected_rejects);
}

// A record of the fixture's recommendations (one line, the last field an unquoted or a quoted cost
// such as "£500 - £1,500") without its last field.
std::string without_last_field(const std::string& line) {
    const std::size_t at = line.back() == '"' ? line.rfind(",\"") : line.rfind(',');
    return line.substr(0, at);
}

struct Case {
    CertType type;
    Layout layout;
};

class RecommendationsEveryTypeAndLayout : public testing::TestWithParam<Case> {};

}  // namespace

// Every column of every recommendations file, typed where the data dictionary says, rejects where
// the rows are bad, then published with the certificates: each published recommendation belongs
// to a published certificate.
TEST_P(RecommendationsEveryTypeAndLayout, LoadedExactlyAndPublishedWithTheCertificates) {
    fixture::Options o;
    o.cert_type = GetParam().type;
    o.layout = GetParam().layout;
    o.rows = 3000;
    o.files = 4;
    o.seed = 31;
    o.with_all_hazards();
    const Generated g = generate(o, sql_name(o.cert_type) + "-" + std::string(layout_name(o.layout)));
    const fixture::RecommendationsResult& r = g.expected.recommendations;
    ASSERT_GT(r.rows_loaded, 1000u);
    ASSERT_GT(r.rows_rejected, 0u);
    TestDatabase db;
    const LoadSummary s = load(g.zip, db, o.cert_type);
    expect_matches_fixture(db, o.cert_type, g.expected, s);

    const std::string t = sql_name(o.cert_type);
    db::Connection c = db.connect();
    auto type_of = [&](const std::string& column) {
        db::Result x = c.exec("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = $1::regclass "
                              "AND attname = $2",
                              {"epc.stage_" + t + "_recommendations", column});
        return x.rows() ? x.text(0, 0) : std::string("(none)");
    };
    const std::vector<std::string> header = fixture::recommendation_columns(o.cert_type, o.layout);
    EXPECT_EQ(s.recommendations.columns.size(), header.size());  // the key, then every other column
    EXPECT_EQ(s.recommendations.columns.front(), "cert_key");
    if (o.cert_type == CertType::domestic) {
        EXPECT_EQ(type_of("improvement_item"), "integer");
        EXPECT_EQ(type_of("improvement_id"), "integer");
        EXPECT_EQ(type_of("indicative_cost"), "text");
        EXPECT_EQ(db.count("SELECT sum(improvement_item) FROM epc.stage_" + t + "_recommendations"),
                  static_cast<long long>(r.item_sum));
        EXPECT_EQ(db.count("SELECT count(*) FROM epc.stage_" + t + "_recommendations WHERE indicative_cost LIKE '£%'"),
                  static_cast<long long>(r.cost_pound_values));
    } else {
        EXPECT_EQ(type_of("recommendation_code"), "text");
        EXPECT_EQ(type_of("co2_impact"), "text");
    }

    const PublishSummary p = publish_type(db, o.cert_type);
    EXPECT_TRUE(p.recommendations.published);
    EXPECT_TRUE(p.recommendations.created);
    EXPECT_EQ(p.recommendations.rows, r.rows_loaded);
    EXPECT_EQ(db.count("SELECT count(*) FROM epc." + t + "_recommendations"), static_cast<long long>(r.rows_loaded));
    EXPECT_EQ(db.count("SELECT count(*) FROM epc." + t + "_recommendations x WHERE NOT EXISTS (SELECT 1 FROM epc." + t +
                       "_certificates p WHERE p.cert_key = x.cert_key)"),
              0);
    EXPECT_EQ(
        db.count("SELECT recommendations_published FROM epc.import_run WHERE run_id = " + std::to_string(p.run_id)),
        static_cast<long long>(r.rows_loaded));
}

INSTANTIATE_TEST_SUITE_P(
    Recommendations, RecommendationsEveryTypeAndLayout,
    testing::Values(Case{CertType::domestic, Layout::legacy}, Case{CertType::domestic, Layout::current},
                    Case{CertType::domestic, Layout::single}, Case{CertType::non_domestic, Layout::legacy},
                    Case{CertType::non_domestic, Layout::current}, Case{CertType::display, Layout::legacy},
                    Case{CertType::display, Layout::current}),
    [](const testing::TestParamInfo<Case>& info) {
        return sql_name(info.param.type) + "_" + std::string(layout_name(info.param.layout));
    });

// A load interrupted after some files keeps exactly the committed files' recommendations; the next
// run resumes after them and ends with the fixture's counts.
TEST(Recommendations, InterruptedLoadResumesWithExactlyTheRightRows) {
    fixture::Options o;
    o.rows = 40000;
    o.files = 40;
    o.seed = 12;
    o.with_all_hazards();
    const Generated g = generate(o, "interrupt");
    TestDatabase db;
    std::atomic<bool> stop{false};
    std::thread watcher([&] {
        db::Connection c = db.connect();
        if (epc::test::wait_for_count(c, "SELECT count(*) FROM epc.import_file", 3, std::chrono::seconds(40), &stop))
            stop = true;
    });
    try {
        load(g.zip, db, CertType::domestic, true, &stop, 1);
        stop = true;
        watcher.join();
        FAIL() << "the load finished before it could be interrupted";
    } catch (const Error& e) {
        stop = true;
        watcher.join();
        EXPECT_EQ(e.code(), exit_transient);
    }
    const long long files_done = db.count("SELECT count(*) FROM epc.import_file");
    EXPECT_GE(files_done, 3);
    EXPECT_LT(files_done, 80);
    // No half-written file of either kind.
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.stage_domestic_recommendations"),
              db.count("SELECT coalesce(sum(rows_loaded), 0) FROM epc.import_file WHERE dataset = 'recommendations'"));
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.stage_domestic"),
              db.count("SELECT coalesce(sum(rows_loaded), 0) FROM epc.import_file WHERE dataset = 'certificates'"));

    const LoadSummary resumed = load(g.zip, db, CertType::domestic);
    EXPECT_TRUE(resumed.resumed);
    long long earlier = 0;
    for (const FileStats& f : resumed.files) earlier += f.from_earlier_attempt;
    for (const FileStats& f : resumed.recommendations.files) earlier += f.from_earlier_attempt;
    EXPECT_EQ(earlier, files_done);
    expect_matches_fixture(db, CertType::domestic, g.expected, resumed);
}

// A load without --recommendations does not resume one with them (and the reverse): its staging
// would not hold what it loads.
TEST(Recommendations, ARunWithoutThemNeitherResumesNorPublishesThem) {
    fixture::Options o;
    o.rows = 2000;
    o.seed = 5;
    const Generated g = generate(o, "without");
    TestDatabase db;
    load(g.zip, db, CertType::domestic, true);
    const PublishSummary first = publish_type(db, CertType::domestic);
    const std::string before = digest(db, "epc.domestic_recommendations");
    EXPECT_EQ(first.recommendations.rows, g.expected.recommendations.rows_loaded);

    const LoadSummary without = load(g.zip, db, CertType::domestic, false);
    EXPECT_FALSE(without.recommendations.loaded);
    EXPECT_EQ(db.scalar("SELECT to_regclass('epc.stage_domestic_recommendations') IS NULL"), "t");
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.import_file WHERE run_id = " + std::to_string(without.run_id) +
                       " AND dataset = 'recommendations'"),
              0);
    // The same archive again is "nothing new" for publish's purposes only with --force; here the
    // load made a new run, and its publish leaves the recommendations as they were.
    const PublishSummary second = publish_type(db, CertType::domestic);
    EXPECT_FALSE(second.recommendations.published);
    EXPECT_EQ(digest(db, "epc.domestic_recommendations"), before);
}

// A later release whose recommendations differ: removed, added and changed rows applied in place
// (the table keeps its identity: a view on it survives), counted exactly; revert brings back
// exactly the previous rows.
TEST(Recommendations, ALaterReleaseChangesThemInPlaceAndRevertBringsThemBack) {
    fixture::Options o;
    o.rows = 1500;
    o.files = 3;
    o.seed = 9;
    fixture::Expected e;
    const std::vector<fixture::RenderedEntry> entries = fixture::render_entries(o, &e);
    test::Entries first, second;
    std::size_t removed = 0, added = 0;
    for (const fixture::RenderedEntry& entry : entries) {
        first.emplace_back(entry.name, entry.content);
        std::string content = entry.content;
        if (entry.name.find("recommendations") != std::string::npos) {
            // Next month: the file's second recommendation is gone, its third changed its cost (a
            // row removed and one added), and the first certificate gains an item.
            std::vector<std::string> lines;
            std::size_t start = 0;
            while (start < content.size()) {
                const std::size_t end = content.find('\n', start);
                lines.push_back(content.substr(start, end - start));
                start = end == std::string::npos ? content.size() : end + 1;
            }
            ASSERT_GE(lines.size(), 4u) << entry.name;
            const std::string key = lines[1].substr(0, lines[1].find(','));
            lines.erase(lines.begin() + 2);
            ++removed;
            lines[2] = without_last_field(lines[2]) + ",\"£1 - £2\"";
            ++removed, ++added;
            lines.push_back(key + ",9,Draught proofing,Draught proofing of doors and windows.,10,Draught proofing,£80");
            ++added;
            content.clear();
            for (const std::string& line : lines) content += line + "\n";
        }
        second.emplace_back(entry.name, content);
    }
    const std::string zip1 = testing::TempDir() + "recs-month1-" + std::to_string(getpid()) + ".zip";
    const std::string zip2 = testing::TempDir() + "recs-month2-" + std::to_string(getpid()) + ".zip";
    test::write_zip(zip1, first);
    test::write_zip(zip2, second);

    TestDatabase db;
    load(zip1, db, CertType::domestic);
    publish_type(db, CertType::domestic);
    const std::string month1 = digest(db, "epc.domestic_recommendations");
    const long long rows1 = db.count("SELECT count(*) FROM epc.domestic_recommendations");
    EXPECT_EQ(rows1, static_cast<long long>(e.recommendations.rows_loaded));
    db.scalar("CREATE VIEW public.costly AS SELECT cert_key, indicative_cost FROM epc.domestic_recommendations");

    load(zip2, db, CertType::domestic);
    const PublishSummary p = publish_type(db, CertType::domestic);
    EXPECT_FALSE(p.recommendations.created);
    EXPECT_EQ(p.recommendations.removed, removed);
    EXPECT_EQ(p.recommendations.added, added);
    EXPECT_EQ(p.recommendations.rows, static_cast<std::uint64_t>(rows1) - removed + added);
    EXPECT_EQ(p.changed + p.added + p.disappeared, 0u);  // the certificates did not change
    EXPECT_EQ(db.count("SELECT count(*) FROM public.costly WHERE indicative_cost = '£1 - £2'"), 3);
    EXPECT_EQ(db.count("SELECT count(*) FROM public.costly"),
              rows1 - static_cast<long long>(removed) + static_cast<long long>(added));
    EXPECT_NE(digest(db, "epc.domestic_recommendations"), month1);

    db::Session session = db.session(CertType::domestic);
    const RevertSummary r = revert(session);
    ASSERT_TRUE(r.recommendations.has_value());
    EXPECT_EQ(*r.recommendations, static_cast<std::uint64_t>(rows1));
    EXPECT_EQ(digest(db, "epc.domestic_recommendations"), month1);
    EXPECT_EQ(db.count("SELECT count(*) FROM public.costly WHERE indicative_cost = '£1 - £2'"), 0);
}

// The command line: --recommendations in --help, the counts in the report.
TEST(Recommendations, CommandLineReportsThem) {
    fixture::Options o;
    o.rows = 800;
    o.hazards = {fixture::Hazard::bad_rows};
    const Generated g = generate(o, "cli");
    TestDatabase db;
    const std::string report = testing::TempDir() + "recs-cli-" + std::to_string(getpid()) + ".json";
    const auto run = [&](const std::vector<std::string>& args, const std::string& name) {
        std::vector<std::string> argv = {EPC_IMPORT_BIN};
        argv.insert(argv.end(), args.begin(), args.end());
        return test::Process(argv, testing::TempDir() + "recs-" + name + "-" + std::to_string(getpid())).wait();
    };
    const test::Outcome help = run({"--help"}, "help");
    EXPECT_NE(help.out.find("--recommendations"), std::string::npos);
    const test::Outcome loaded = run(
        {"run", "--zip", g.zip, "--db", db.conninfo(), "--recommendations", "--report", report}, "run");
    ASSERT_EQ(loaded.exit_code, 0) << loaded.err;
    const nlohmann::json j = nlohmann::json::parse(test::read_file(report));
    EXPECT_EQ(j["load"]["recommendations"]["rows_loaded"].get<std::uint64_t>(), g.expected.recommendations.rows_loaded);
    EXPECT_EQ(j["load"]["recommendations"]["rows_rejected"].get<std::uint64_t>(),
              g.expected.recommendations.rows_rejected);
    EXPECT_EQ(j["publish"]["recommendations"]["rows"].get<std::uint64_t>(), g.expected.recommendations.rows_loaded);
    EXPECT_EQ(j["publish"]["recommendations"]["table"], "epc.domestic_recommendations");

    // status: the published recommendations per type, as JSON and as text.
    const test::Outcome json_status = run(
        {"status", "--db", db.conninfo(), "--certtype", "domestic", "--log-format", "json"}, "status-json");
    ASSERT_EQ(json_status.exit_code, 0) << json_status.err;
    const nlohmann::json st = nlohmann::json::parse(json_status.out);
    EXPECT_EQ(st["types"][0]["recommendations"]["rows"].get<std::uint64_t>(), g.expected.recommendations.rows_loaded);
    const test::Outcome text_status = run(
        {"status", "--db", db.conninfo(), "--certtype", "domestic", "--log-format", "text"}, "status-text");
    EXPECT_NE(text_status.out.find(" rows (epc.domestic_recommendations)"), std::string::npos) << text_status.out;
}

// Recommendations loaded for the first time by a later release make the table in that publish;
// reverting it empties the table again (the release before had none) and keeps the object.
TEST(Recommendations, FirstLoadedByALaterReleaseAndReverted) {
    fixture::Options o;
    o.rows = 1200;
    o.seed = 14;
    const Generated g = generate(o, "later");
    TestDatabase db;
    load(g.zip, db, CertType::domestic, false);
    publish_type(db, CertType::domestic);
    EXPECT_EQ(db.scalar("SELECT to_regclass('epc.domestic_recommendations') IS NULL"), "t");

    load(g.zip, db, CertType::domestic, true);
    const PublishSummary p = publish_type(db, CertType::domestic);
    EXPECT_TRUE(p.recommendations.created);
    EXPECT_EQ(p.recommendations.rows, g.expected.recommendations.rows_loaded);
    const std::string oid = db.scalar("SELECT 'epc.domestic_recommendations'::regclass::oid");

    db::Session session = db.session(CertType::domestic);
    const RevertSummary r = revert(session);
    ASSERT_TRUE(r.recommendations.has_value());
    EXPECT_EQ(*r.recommendations, 0u);
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.domestic_recommendations"), 0);
    EXPECT_EQ(db.scalar("SELECT 'epc.domestic_recommendations'::regclass::oid"), oid);
    EXPECT_EQ(db.count("SELECT count(*) FROM epc.domestic_certificates"),
              static_cast<long long>(g.expected.rows_loaded));
}

// A recommendations file whose header has no key column cannot be loaded: exit 3 naming the file,
// before anything is written; without --recommendations the same archive loads.
TEST(Recommendations, AFileWithoutTheKeyColumnIsRefusedBeforeAnythingIsWritten) {
    fixture::Options o;
    o.rows = 600;
    o.files = 3;
    test::Entries entries;
    std::string broken;
    for (const fixture::RenderedEntry& e : fixture::render_entries(o)) {
        std::string content = e.content;
        if (broken.empty() && e.name.find("recommendations.csv") != std::string::npos) {
            ASSERT_EQ(content.compare(0, 8, "LMK_KEY,"), 0) << e.name;
            content.replace(0, 7, "LMK_REF");
            broken = e.name;
        }
        entries.emplace_back(e.name, content);
    }
    const std::string zip = testing::TempDir() + "recs-nokey-" + std::to_string(getpid()) + ".zip";
    test::write_zip(zip, entries);
    TestDatabase db;
    const auto run = [&](const std::vector<std::string>& extra) {
        std::vector<std::string> argv = {EPC_IMPORT_BIN, "load", "--zip", zip, "--db", db.conninfo()};
        argv.insert(argv.end(), extra.begin(), extra.end());
        return test::Process(argv, testing::TempDir() + "recs-nokey-run-" + std::to_string(getpid())).wait();
    };
    const test::Outcome refused = run({"--recommendations"});
    EXPECT_EQ(refused.exit_code, exit_invalid_archive) << refused.err;
    EXPECT_NE(refused.err.find(broken + ": header has no LMK_KEY"), std::string::npos) << refused.err;
    EXPECT_EQ(db.scalar("SELECT to_regclass('epc.import_run') IS NULL"), "t");  // nothing written

    const test::Outcome loaded = run({});
    EXPECT_EQ(loaded.exit_code, 0) << loaded.err;
}
