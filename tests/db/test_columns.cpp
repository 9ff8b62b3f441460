// Choosing columns against a real PostgreSQL: --columns (default, +, all, unknown and missing
// names), --config, each type's conversion and its per-column NULL counts for the three types in
// both layouts, and a publish that carries the columns a later run added.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "epc/extract/archive.hpp"
#include "epc/load/loader.hpp"
#include "epc/publish/publish.hpp"
#include "fixture/fixture.hpp"
#include "support/pg_test.hpp"
#include "support/process.hpp"

using namespace epc;
using epc::test::TestDatabase;

namespace {

using epc::test::Outcome;

// Runs epc-import to the end, its output captured.
Outcome run_cli(const std::vector<std::string>& args) {
    static int n = 0;
    std::vector<std::string> argv = {EPC_IMPORT_BIN};
    argv.insert(argv.end(), args.begin(), args.end());
    return epc::test::Process(argv,
                              testing::TempDir() + "columns-" + std::to_string(getpid()) + "-" + std::to_string(n++))
        .wait();
}

bool has(const std::string& haystack, const std::string& needle) { return haystack.find(needle) != std::string::npos; }

struct Generated {
    std::string zip;
    fixture::Expected expected;
    std::string expected_rows;  // the default columns of every loaded row, COPY text
};

Generated generate(const fixture::Options& options, const std::string& name) {
    Generated g;
    g.zip = testing::TempDir() + name + ".zip";
    std::ostringstream rows;
    g.expected = fixture::write_zip(g.zip, options, &rows);
    g.expected_rows = rows.str();
    return g;
}

LoadSummary load(const Generated& g, TestDatabase& db, CertType type, const std::string& columns) {
    ArchiveInfo archive = inspect_archive(g.zip, {type, std::nullopt});
    EXPECT_TRUE(archive.problems.empty()) << archive.problems.front();
    LoadOptions o;
    o.jobs = 2;
    if (!columns.empty()) o.columns = parse_column_choice(columns);
    db::Session session = db.session(type);
    return load_archive(session, archive, o);
}

std::vector<std::string> table_columns(db::Connection& c, const std::string& table) {
    db::Result r = c.exec("SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 "
                          "AND NOT attisdropped ORDER BY attnum",
                          {table});
    std::vector<std::string> names;
    for (int i = 0; i < r.rows(); ++i) names.push_back(r.text(i, 0));
    return names;
}

std::string column_type(db::Connection& c, const std::string& table, const std::string& column) {
    db::Result r = c.exec("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                          "WHERE attrelid = $1::regclass AND attname = $2",
                          {table, column});
    return r.rows() ? r.text(0, 0) : "(none)";
}

struct Case {
    CertType type;
    Layout layout;
};

class AllColumns : public testing::TestWithParam<Case> {};

// Columns the fixture never leaves empty, per type: their NULLs are exactly the invalid values.
std::vector<std::string> never_empty_typed(CertType type) {
    switch (type) {
        case CertType::domestic:
            return {"current_energy_efficiency", "inspection_date", "lodgement_datetime", "co2_emissions_current",
                    "number_habitable_rooms"};
        case CertType::non_domestic:
            return {"asset_rating", "inspection_date", "lodgement_datetime", "standard_emissions", "report_type"};
        case CertType::display:
            return {"current_operational_rating", "nominated_date", "lodgement_datetime", "electric_co2",
                    "annual_thermal_fuel_usage"};
    }
    return {};
}

}  // namespace

// `all`: every column of the files, typed by the catalogue, with values read back from PostgreSQL;
// values not of their type are NULL and counted per column as the fixture expects.
TEST_P(AllColumns, EveryColumnTypedAndCountedPerColumn) {
    fixture::Options o;
    o.cert_type = GetParam().type;
    o.layout = GetParam().layout;
    o.rows = 4000;
    o.files = 4;
    o.seed = 23;
    o.with_all_hazards();
    o.hazards.erase(fixture::Hazard::duplicate_keys);  // staging then holds every row the counts cover
    const std::string name = "all-columns-" + std::string(cert_type_sql(o.cert_type)) + "-" +
                             std::string(layout_name(o.layout));
    Generated g = generate(o, name);
    const fixture::Expected& e = g.expected;
    TestDatabase db;
    LoadSummary s = load(g, db, o.cert_type, "all");
    db::Connection c = db.connect();
    const std::string stage = db::staging_tables(o.cert_type).rows;

    // Every column of the files is a staging column; ASSESSOR_NOTES (extra_columns) is unknown.
    std::vector<std::string> staged = table_columns(c, stage);
    for (const std::string& header : fixture::certificate_columns(o.cert_type, o.layout)) {
        const Column* column = find_certificate_column(header);
        ASSERT_NE(column, nullptr) << header;
        EXPECT_NE(std::find(staged.begin(), staged.end(), column->name), staged.end()) << header;
    }
    ASSERT_EQ(s.unknown_columns.size(), 1u);  // as the first file spells it
    EXPECT_EQ(unknown_column_name(s.unknown_columns[0]), "assessor_notes");
    EXPECT_EQ(column_type(c, stage, "assessor_notes"), "text");
    EXPECT_GT(c.exec("SELECT count(assessor_notes) FROM " + stage).integer(0, 0), 0);
    EXPECT_EQ(column_type(c, stage, "lodgement_datetime"), "timestamp without time zone");
    EXPECT_EQ(column_type(c, stage, "inspection_date"), "date");
    if (o.layout == Layout::current) {
        EXPECT_EQ(column_type(c, stage, "region"), "text");
        EXPECT_EQ(std::count(staged.begin(), staged.end(), "building_reference_number"), 0);
    }

    // The default columns hold exactly what the default load would.
    EXPECT_EQ(s.rows_loaded, e.rows_loaded);
    epc::test::load_expected(c, "expected_rows", g.expected_rows);
    EXPECT_EQ(epc::test::rows_missing(c, "expected_rows", stage), 0);
    EXPECT_EQ(epc::test::rows_missing(c, stage, "expected_rows"), 0);

    // Per-column counts: in the summary, in the ledger, and as NULLs in staging.
    ASSERT_FALSE(e.invalid_by_column.empty());
    EXPECT_EQ(s.invalid_by_column, e.invalid_by_column);
    db::Result ledger = c.exec("SELECT c.key, sum(c.value::bigint) FROM epc.import_file f, "
                               "jsonb_each_text(f.invalid_by_column) c WHERE f.run_id = $1 GROUP BY 1",
                               {s.run_id});
    std::map<std::string, std::uint64_t> in_ledger;
    for (int i = 0; i < ledger.rows(); ++i)
        in_ledger[ledger.text(i, 0)] = static_cast<std::uint64_t>(ledger.integer(i, 1));
    EXPECT_EQ(in_ledger, e.invalid_by_column);
    std::uint64_t total = 0;
    for (const auto& [column, n] : e.invalid_by_column) total += n;
    EXPECT_EQ(s.invalid_values, total);
    for (const std::string& column : never_empty_typed(o.cert_type)) {
        const auto want = e.invalid_by_column.count(column) ? e.invalid_by_column.at(column) : 0;
        EXPECT_EQ(c.exec("SELECT count(*) FROM " + stage + " WHERE " + column + " IS NULL").integer(0, 0),
                  static_cast<long long>(want))
            << column;
    }

    // Values of their real type, consistent with each other.
    EXPECT_EQ(
        c.exec("SELECT count(*) FROM " + stage + " WHERE lodgement_datetime::date <> lodgement_date").integer(0, 0), 0);
    EXPECT_GT(
        c.exec("SELECT count(*) FROM " + stage + " WHERE lodgement_datetime::date = lodgement_date").integer(0, 0), 0);
    if (o.cert_type == CertType::domestic) {
        EXPECT_EQ(column_type(c, stage, "current_energy_efficiency"), "integer");
        EXPECT_EQ(column_type(c, stage, "low_energy_fixed_light_count"), "integer");
        EXPECT_EQ(c.exec("SELECT count(*) FROM " + stage + " WHERE inspection_date > lodgement_date").integer(0, 0), 0);
        EXPECT_EQ(c.exec("SELECT count(*) FROM " + stage +
                         " WHERE current_energy_rating NOT IN ('A','B','C','D','E','F','G')")
                      .integer(0, 0),
                  0);
        // The renamed lighting count of the 2026 files lands in the same column as the legacy one.
        EXPECT_GT(c.exec("SELECT count(low_energy_fixed_light_count) FROM " + stage).integer(0, 0), 0);
        EXPECT_EQ(c.exec("SELECT count(*) FROM " + stage + " WHERE mains_gas_flag NOT IN ('Y', 'N')").integer(0, 0), 0);
    }
    if (o.cert_type == CertType::non_domestic) {
        EXPECT_EQ(column_type(c, stage, "asset_rating"), "integer");
    }
}

INSTANTIATE_TEST_SUITE_P(
    Types, AllColumns,
    testing::Values(Case{CertType::domestic, Layout::legacy}, Case{CertType::domestic, Layout::current},
                    Case{CertType::non_domestic, Layout::legacy}, Case{CertType::non_domestic, Layout::current},
                    Case{CertType::display, Layout::legacy}, Case{CertType::display, Layout::current}),
    [](const testing::TestParamInfo<Case>& info) {
        return std::string(cert_type_sql(info.param.type)) + "_" + std::string(layout_name(info.param.layout));
    });

// Without --columns staging has today's 8 columns, and text keeps its answers: a transaction type
// 'Unknown' or 'N/A' stays (it used to become NULL).
TEST(Columns, DefaultLoadKeepsTheEightColumnsAndTextAnswers) {
    fixture::Options o;
    o.rows = 3000;
    o.seed = 5;
    o.hazards = {fixture::Hazard::sentinels, fixture::Hazard::bad_typed_values};
    Generated g = generate(o, "columns-default");
    TestDatabase db;
    LoadSummary s = load(g, db, CertType::domestic, "");
    db::Connection c = db.connect();
    const std::string stage = db::staging_tables(CertType::domestic).rows;
    std::vector<std::string> want = ColumnSet::defaults().names();
    for (const BookkeepingColumn& b : bookkeeping_columns()) want.emplace_back(b.name);
    EXPECT_EQ(table_columns(c, stage), want);
    EXPECT_EQ(s.columns, ColumnSet::defaults().names());
    EXPECT_GT(c.exec("SELECT count(*) FROM " + stage +
                     " WHERE transaction_type IN ('Unknown', 'UNKNOWN', 'N/A', "
                     "'n/a', 'Not recorded', 'not recorded')")
                  .integer(0, 0),
              0);
    EXPECT_EQ(c.exec("SELECT count(*) FROM " + stage +
                     " WHERE upper(transaction_type) IN ('NO DATA!', 'NODATA!', "
                     "'INVALID!', '')")
                  .integer(0, 0),
              0);
    epc::test::load_expected(c, "expected_rows", g.expected_rows);
    EXPECT_EQ(epc::test::rows_missing(c, "expected_rows", stage), 0);
    EXPECT_EQ(epc::test::rows_missing(c, stage, "expected_rows"), 0);
    // Only the default columns' invalid values count: the bad typed values are in columns not loaded.
    EXPECT_EQ(s.invalid_values, g.expected.invalid_values);
    for (const auto& [column, n] : s.invalid_by_column)
        EXPECT_TRUE(column == "total_floor_area" || column == "uprn") << column;
}

// `+` adds to the default set, in the catalogue's order whatever the list's; FLOOR_AREA of
// non-domestic is the same column as TOTAL_FLOOR_AREA.
TEST(Columns, PlusAddsToTheDefaults) {
    fixture::Options o;
    o.cert_type = CertType::non_domestic;
    o.rows = 1000;
    Generated g = generate(o, "columns-plus");
    TestDatabase db;
    LoadSummary s = load(g, db, CertType::non_domestic, "+building_emissions, Asset_Rating,FLOOR_AREA");
    db::Connection c = db.connect();
    const std::string stage = db::staging_tables(CertType::non_domestic).rows;
    std::vector<std::string> want = ColumnSet::defaults().names();
    want.insert(want.end(), {"asset_rating", "building_emissions"});
    EXPECT_EQ(s.columns, want);
    EXPECT_EQ(column_type(c, stage, "building_emissions"), "numeric");
    EXPECT_EQ(c.exec("SELECT count(*) FROM " + stage + " WHERE asset_rating BETWEEN 10 AND 250").integer(0, 0),
              static_cast<long long>(g.expected.rows_loaded));
    EXPECT_EQ(c.exec("SELECT count(total_floor_area) FROM " + stage).integer(0, 0),
              static_cast<long long>(g.expected.rows_loaded));
}

// A name no file has is a usage error listing the columns the files do have; nothing is loaded.
TEST(Columns, MissingAndUnknownNamesAreUsageErrors) {
    fixture::Options o;
    o.rows = 200;
    Generated g = generate(o, "columns-missing");
    TestDatabase db;
    for (const char* columns : {"+NO_SUCH_COLUMN", "+ASSET_RATING", "TENURE,nonsense"}) {
        Outcome r = run_cli({"load", "--zip", g.zip, "--db", db.conninfo(), "--columns", columns});
        EXPECT_EQ(r.exit_code, 2) << columns << "\n" << r.err;
        EXPECT_TRUE(has(r.err, "no certificates file of this archive has")) << r.err;
        EXPECT_TRUE(has(r.err, "the files have: LMK_KEY, ADDRESS1, ADDRESS2")) << r.err;
    }
    EXPECT_EQ(db.count("SELECT count(*) FROM pg_tables WHERE schemaname = 'epc' AND tablename = 'stage_domestic'") +
                  db.count("SELECT count(*) FROM pg_namespace WHERE nspname = 'epc'"),
              0)
        << "a usage error must come before anything is written";
    Outcome empty = run_cli({"load", "--zip", g.zip, "--db", db.conninfo(), "--columns", "+TENURE,,MAIN_FUEL"});
    EXPECT_EQ(empty.exit_code, 2);
    EXPECT_TRUE(has(empty.err, "empty name")) << empty.err;
}

// Options from a file: the example in docs/ parses, and a config file's columns reach staging;
// the command line wins over the file.
TEST(Columns, ConfigFile) {
    Outcome example = run_cli({"--config", std::string(EPC_SOURCE_DIR) + "/docs/epc-import.example.toml", "--dry-run"});
    ASSERT_EQ(example.exit_code, 0) << example.err;
    nlohmann::json shown = nlohmann::json::parse(example.out);
    EXPECT_EQ(shown["columns"].get<std::string>().substr(0, 23), "+CURRENT_ENERGY_RATING,");
    EXPECT_EQ(shown["work_dir"], "/var/lib/epc-import");
    EXPECT_EQ(shown["jobs"], 2);
    EXPECT_EQ(shown["max_rejects"], 10000);
    EXPECT_EQ(shown["log_format"], "json");
    EXPECT_EQ(shown["geocoder"], "postcodes-io");
    EXPECT_EQ(shown["recommendations"], true);

    fixture::Options o;
    o.rows = 500;
    Generated g = generate(o, "columns-config");
    TestDatabase db;
    const std::string config = testing::TempDir() + "columns-config.toml";
    std::ofstream(config) << "zip = \"" << g.zip << "\"\ndb = \"" << db.conninfo()
                          << "\"\ncolumns = \"+current_energy_rating,MAIN_FUEL\"\njobs = 1\nlog-format = \"text\"\n";
    Outcome loaded = run_cli({"load", "--config", config});
    ASSERT_EQ(loaded.exit_code, 0) << loaded.err;
    db::Connection c = db.connect();
    const std::string stage = db::staging_tables(CertType::domestic).rows;
    EXPECT_EQ(c.exec("SELECT count(current_energy_rating) FROM " + stage).integer(0, 0),
              static_cast<long long>(g.expected.rows_loaded));
    EXPECT_GT(c.exec("SELECT count(main_fuel) FROM " + stage).integer(0, 0), 0);

    Outcome overridden = run_cli({"load", "--config", config, "--columns", "+BUILT_FORM", "--force"});
    ASSERT_EQ(overridden.exit_code, 0) << overridden.err;
    std::vector<std::string> staged = table_columns(c, stage);
    EXPECT_NE(std::find(staged.begin(), staged.end(), "built_form"), staged.end());
    EXPECT_EQ(std::find(staged.begin(), staged.end(), "current_energy_rating"), staged.end());

    Outcome missing = run_cli({"load", "--config", testing::TempDir() + "no-such-config.toml"});
    EXPECT_EQ(missing.exit_code, 2);
}

// The report names the columns, the unknown ones and the per-column counts.
TEST(Columns, ReportNamesColumnsAndCounts) {
    fixture::Options o;
    o.rows = 2000;
    o.hazards = {fixture::Hazard::extra_columns, fixture::Hazard::bad_typed_values, fixture::Hazard::bad_uprn};
    Generated g = generate(o, "columns-report");
    TestDatabase db;
    const std::string report = testing::TempDir() + "columns-report.json";
    Outcome r = run_cli({"load", "--zip", g.zip, "--db", db.conninfo(), "--columns", "all", "--report", report,
                         "--log-format", "text"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(has(r.err, "column ASSESSOR_NOTES is not in the catalogue")) << r.err;
    nlohmann::json j = nlohmann::json::parse(epc::test::read_file(report));
    EXPECT_EQ(j["load"]["unknown_columns"], nlohmann::json::array({"ASSESSOR_NOTES"}));
    EXPECT_EQ(j["load"]["unknown_columns_loaded"], true);

    // Without `all` the drift is named too, and the column is not loaded.
    Outcome plain = run_cli(
        {"load", "--zip", g.zip, "--db", db.conninfo(), "--force", "--report", report, "--log-format", "text"});
    ASSERT_EQ(plain.exit_code, 0) << plain.err;
    EXPECT_TRUE(has(plain.err, "column ASSESSOR_NOTES is not in the catalogue (header drift?); not loaded"))
        << plain.err;
    nlohmann::json k = nlohmann::json::parse(epc::test::read_file(report));
    EXPECT_EQ(k["load"]["unknown_columns"], nlohmann::json::array({"ASSESSOR_NOTES"}));
    EXPECT_EQ(k["load"]["unknown_columns_loaded"], false);
    EXPECT_EQ(k["load"]["columns"], nlohmann::json(ColumnSet::defaults().names()));
    using Counts = std::map<std::string, std::uint64_t>;
    EXPECT_EQ(j["load"]["invalid_by_column"].get<Counts>(), g.expected.invalid_by_column);
    // The default columns, every column of the files (REPORT_TYPE in some: extra_columns), ASSESSOR_NOTES.
    std::set<std::string> want;
    for (const std::string& name : ColumnSet::defaults().names()) want.insert(name);
    for (const std::string& header : fixture::certificate_columns(CertType::domestic, Layout::legacy))
        want.insert(find_certificate_column(header)->name);
    want.insert({"report_type", "assessor_notes"});
    EXPECT_EQ(j["load"]["columns"].get<std::set<std::string>>(), want);
}

// Changing the set between releases: the next publish adds the new columns to production and
// fills them; revert brings back the release before, columns and all.
TEST(Columns, PublishCarriesColumnsAddedLater) {
    fixture::Options o;
    o.rows = 1500;
    o.seed = 3;
    Generated g = generate(o, "columns-publish");
    TestDatabase db;
    Outcome first = run_cli({"run", "--zip", g.zip, "--db", db.conninfo()});
    ASSERT_EQ(first.exit_code, 0) << first.err;
    db::Connection c = db.connect();
    const std::string production = "epc.domestic_certificates";
    EXPECT_EQ(table_columns(c, production).size(), ColumnSet::defaults().size() + production_extra_columns().size());

    const std::string added = "+TENURE,current_energy_rating,current_energy_efficiency,LODGEMENT_DATETIME";
    Outcome second = run_cli({"run", "--zip", g.zip, "--db", db.conninfo(), "--force", "--columns", added});
    ASSERT_EQ(second.exit_code, 0) << second.err;
    EXPECT_EQ(column_type(c, production, "current_energy_efficiency"), "integer");
    EXPECT_EQ(column_type(c, production, "lodgement_datetime"), "timestamp without time zone");
    const long long rows = static_cast<long long>(g.expected.rows_loaded);
    EXPECT_EQ(c.exec("SELECT count(current_energy_rating) FROM " + production).integer(0, 0), rows);
    EXPECT_EQ(c.exec("SELECT count(*) FROM " + production +
                     " p JOIN epc.stage_domestic s USING (cert_key) "
                     "WHERE p.tenure IS NOT DISTINCT FROM s.tenure AND p.lodgement_datetime = s.lodgement_datetime "
                     "AND p.current_energy_efficiency = s.current_energy_efficiency")
                  .integer(0, 0),
              rows);
    // Text keeps the publisher's answers but not its error markers.
    EXPECT_GT(c.exec("SELECT count(*) FROM " + production + " WHERE tenure = 'unknown'").integer(0, 0), 0);
    EXPECT_EQ(c.exec("SELECT count(*) FROM " + production + " WHERE tenure = 'NO DATA!'").integer(0, 0), 0);
    EXPECT_GT(c.exec("SELECT count(*) FROM " + production + " WHERE tenure IS NULL").integer(0, 0), 0);
    // Every row changed (its new columns), and the hash covers them: another publish of the same
    // release with the same columns changes nothing.
    EXPECT_EQ(c.exec("SELECT rows_changed FROM epc.import_run WHERE status = 'published' ORDER BY run_id DESC "
                     "LIMIT 1")
                  .integer(0, 0),
              rows);
    Outcome third = run_cli({"run", "--zip", g.zip, "--db", db.conninfo(), "--force", "--columns", added});
    ASSERT_EQ(third.exit_code, 0) << third.err;
    EXPECT_EQ(c.exec("SELECT rows_changed FROM epc.import_run ORDER BY run_id DESC LIMIT 1").integer(0, 0), 0);

    // Publish as a stage of its own reads the columns from staging, whatever --columns says.
    Outcome load = run_cli({"load", "--zip", g.zip, "--db", db.conninfo(), "--force", "--columns", "+PROPERTY_TYPE"});
    ASSERT_EQ(load.exit_code, 0) << load.err;
    Outcome publish = run_cli({"publish", "--db", db.conninfo()});
    ASSERT_EQ(publish.exit_code, 0) << publish.err;
    EXPECT_EQ(c.exec("SELECT count(property_type) FROM " + production).integer(0, 0), rows);
    // current_energy_rating is no longer loaded: production keeps the column (and its last values).
    EXPECT_EQ(c.exec("SELECT count(current_energy_rating) FROM " + production).integer(0, 0), rows);

    Outcome revert = run_cli({"revert", "--db", db.conninfo()});
    ASSERT_EQ(revert.exit_code, 0) << revert.err;
    EXPECT_EQ(c.exec("SELECT count(property_type) FROM " + production).integer(0, 0), 0);
    EXPECT_EQ(c.exec("SELECT count(current_energy_rating) FROM " + production).integer(0, 0), rows);
}
