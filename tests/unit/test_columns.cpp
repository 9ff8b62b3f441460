#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "epc/db/columns.hpp"
#include "epc/transform/fields.hpp"
#include "fixture/fixture.hpp"

using namespace epc;

namespace {

std::vector<Field> views(const std::vector<std::string>& v) { return {v.begin(), v.end()}; }

std::vector<std::string> split_list(const std::string& list) {
    std::vector<std::string> names;
    std::size_t start = 0;
    while (start <= list.size()) {
        std::size_t comma = list.find(", ", start);
        if (comma == std::string::npos) comma = list.size();
        names.push_back(list.substr(start, comma - start));
        start = comma + 2;
    }
    return names;
}

// The column names of a DDL block, in order: the first word of each line.
std::vector<std::string> ddl_names(const std::string& ddl) {
    std::vector<std::string> names;
    std::size_t pos = 0;
    while ((pos = ddl.find("\n    ", pos)) != std::string::npos) {
        pos += 5;
        names.push_back(ddl.substr(pos, ddl.find(' ', pos) - pos));
    }
    return names;
}

const std::vector<CertType> kTypes = {CertType::domestic, CertType::non_domestic, CertType::display};
const std::vector<Layout> kLayouts = {Layout::legacy, Layout::current, Layout::single};

}  // namespace

TEST(Columns, TodaysColumnsAndTypes) {
    EXPECT_EQ(certificate_column_list(),
              "cert_key, lodgement_date, transaction_type, total_floor_area, address, postcode, uprn, local_authority");
    EXPECT_EQ(certificate_columns_ddl(), "\n    cert_key         text NOT NULL,"
                                         "\n    lodgement_date   date NOT NULL,"
                                         "\n    transaction_type text,"
                                         "\n    total_floor_area numeric,"
                                         "\n    address          text,"
                                         "\n    postcode         text,"
                                         "\n    uprn             bigint,"
                                         "\n    local_authority  text");
    EXPECT_EQ(staging_column_list(), certificate_column_list() + ", file_no, line_no, address_key, row_hash");
    EXPECT_EQ(staging_column_count(), 12u);
}

TEST(Columns, ProductionComparesItsIdentifiersByteByByte) {
    const std::string ddl = production_columns_ddl(ColumnSet::defaults());
    EXPECT_EQ(ddl.rfind("\n    cert_key         text COLLATE \"C\" NOT NULL,\n    lodgement_date   date NOT NULL,", 0),
              0u)
        << ddl;
    EXPECT_NE(ddl.find("\n    postcode         text COLLATE \"C\",\n"), std::string::npos) << ddl;
    EXPECT_NE(ddl.find("\n    address          text,\n"), std::string::npos) << ddl;
    EXPECT_NE(ddl.find("\n    address_key       text COLLATE \"C\""), std::string::npos) << ddl;
    std::vector<std::string> names = ColumnSet::defaults().names();
    for (std::string_view extra : production_extra_columns()) names.emplace_back(extra);
    EXPECT_EQ(ddl_names(ddl), names);
}

TEST(Columns, GeneratedListsAgreeWithEachOther) {
    std::vector<std::string> names;
    for (const Column& c : ColumnSet::defaults().columns()) names.push_back(c.name);
    std::vector<std::string> staging = names;
    for (const BookkeepingColumn& c : bookkeeping_columns()) staging.push_back(std::string(c.name));

    EXPECT_EQ(split_list(certificate_column_list()), names);
    EXPECT_EQ(ddl_names(certificate_columns_ddl()), names);
    EXPECT_EQ(split_list(staging_column_list()), staging);
    EXPECT_EQ(ddl_names(staging_columns_ddl()), staging);
    EXPECT_EQ(staging_column_count(), staging.size());
    EXPECT_EQ(staging_columns_ddl().rfind(certificate_columns_ddl() + ",", 0), 0u);

    std::vector<std::string> aliased = split_list(certificate_column_list("s"));
    ASSERT_EQ(aliased.size(), names.size());
    for (std::size_t i = 0; i < names.size(); ++i) EXPECT_EQ(aliased[i], "s." + names[i]);
    EXPECT_EQ(concat_ws_expression("m"), "concat_ws(',', " + certificate_column_list("m") + ")");
}

TEST(Columns, DdlDeclaresRequiredColumnsNotNull) {
    const ColumnSet all = ColumnSet::of({}, {});
    std::vector<const Column*> every;
    for (const Column& c : certificate_columns()) every.push_back(&c);
    const ColumnSet catalogue = ColumnSet::of(every);
    ASSERT_EQ(catalogue.size(), certificate_columns().size());
    EXPECT_EQ(all, ColumnSet::defaults());
    const std::string ddl = certificate_columns_ddl(catalogue);
    for (const Column& c : certificate_columns()) {
        std::size_t at = ddl.find("\n    " + c.name + " ");
        ASSERT_NE(at, std::string::npos) << c.name;
        std::string line = ddl.substr(at + 1, ddl.find('\n', at + 1) - at - 1);
        EXPECT_NE(line.find(std::string(sql_type(c.kind))), std::string::npos) << line;
        EXPECT_EQ(line.find("NOT NULL") != std::string::npos, c.required.has_value()) << line;
    }
    // The staging DDL is complete SQL once wrapped: one comma between columns, none after the last.
    const std::string staging = staging_columns_ddl();
    EXPECT_EQ(std::count(staging.begin(), staging.end(), ','), static_cast<long>(staging_column_count() - 1));
    EXPECT_EQ(staging.substr(staging.rfind('\n')).find(','), std::string::npos);
}

TEST(Columns, CatalogueIsConsistent) {
    std::set<std::string_view> names;
    int joined = 0;
    bool past_defaults = false, past_required = false;
    for (const Column& c : certificate_columns()) {
        EXPECT_TRUE(names.insert(c.name).second) << "duplicate " << c.name;
        EXPECT_TRUE(std::none_of(c.name.begin(), c.name.end(), [](char ch) { return ch >= 'A' && ch <= 'Z'; }));
        EXPECT_FALSE(c.header.empty()) << c.name;
        // The default columns come first (their staging order), the required ones before them all:
        // format_row counts a row's invalid values only once its required columns passed.
        if (c.in_default) {
            EXPECT_FALSE(past_defaults) << c.name;
        }
        past_defaults = past_defaults || !c.in_default;
        if (c.required) {
            EXPECT_FALSE(past_required) << c.name;
        }
        past_required = past_required || !c.required;
        EXPECT_TRUE(c.known);
        // A kind whose values can be invalid needs a reason to reject a row for it.
        if (c.required && c.kind != ValueKind::text) {
            EXPECT_TRUE(c.required->invalid.has_value()) << c.name;
        }
        if (!c.joined_parts.empty()) ++joined;
    }
    for (const BookkeepingColumn& c : bookkeeping_columns()) EXPECT_TRUE(names.insert(c.name).second) << c.name;
    EXPECT_LE(joined, 1) << "format_row keeps one joined value per row";
    for (std::string_view name : {kKeyColumn, kAddressColumn, kPostcodeColumn})
        EXPECT_NO_THROW(certificate_column(name)) << name;
    EXPECT_THROW(certificate_column("no_such_column"), std::out_of_range);
}

TEST(Columns, RequiredColumns) {
    std::vector<std::string_view> required, header_required;
    for (const Column& c : certificate_columns()) {
        if (c.required) required.push_back(c.name);
        if (c.absence == Absence::error) header_required.push_back(c.name);
    }
    EXPECT_EQ(required, (std::vector<std::string_view>{"cert_key", "lodgement_date"}));
    EXPECT_EQ(header_required, required);
    EXPECT_EQ(certificate_column("cert_key").required->missing, RejectReason::missing_key);
    EXPECT_EQ(certificate_column("lodgement_date").required->missing, RejectReason::missing_date);
    EXPECT_EQ(certificate_column("lodgement_date").required->invalid, RejectReason::bad_date);

    FieldMap m = map_header(views({"ADDRESS", "POSTCODE"}), CertType::domestic);
    EXPECT_EQ(m.missing_required, (std::vector<std::string>{"LMK_KEY/certificate_number", "LODGEMENT_DATE"}));
    EXPECT_EQ(m.key, -1);
}

TEST(Columns, HeaderNamesPerTypeAndLayout) {
    using Names = std::vector<std::string>;
    const Column& key = certificate_column("cert_key");
    const Column& area = certificate_column("total_floor_area");
    const Column& transaction = certificate_column("transaction_type");
    for (CertType type : kTypes) {
        EXPECT_EQ(header_names(key, type, Layout::legacy), Names{"LMK_KEY"});
        EXPECT_EQ(header_names(key, type, Layout::single), Names{"LMK_KEY"});
        EXPECT_EQ(header_names(key, type, Layout::current), Names{"certificate_number"});
        EXPECT_EQ(header_names(certificate_column("lodgement_date"), type, Layout::current), Names{"lodgement_date"});
    }
    EXPECT_EQ(header_names(area, CertType::domestic, Layout::legacy), Names{"TOTAL_FLOOR_AREA"});
    EXPECT_EQ(header_names(area, CertType::display, Layout::legacy), Names{"TOTAL_FLOOR_AREA"});
    EXPECT_EQ(header_names(area, CertType::non_domestic, Layout::legacy), Names{"FLOOR_AREA"});
    EXPECT_EQ(header_names(area, CertType::non_domestic, Layout::current), Names{"floor_area"});
    EXPECT_EQ(header_match_order(area, CertType::non_domestic),
              (std::vector<std::string_view>{"FLOOR_AREA", "TOTAL_FLOOR_AREA"}));
    EXPECT_EQ(header_match_order(area, CertType::domestic),
              (std::vector<std::string_view>{"TOTAL_FLOOR_AREA", "FLOOR_AREA"}));
    EXPECT_TRUE(header_names(transaction, CertType::display, Layout::legacy).empty());
    EXPECT_TRUE(header_names(transaction, CertType::display, Layout::current).empty());
    EXPECT_FALSE(expected_in(transaction, CertType::display));
    EXPECT_TRUE(expected_in(transaction, CertType::non_domestic));
    EXPECT_EQ(header_label(key), "LMK_KEY/certificate_number");
    EXPECT_EQ(header_label(area), "TOTAL_FLOOR_AREA/FLOOR_AREA");
}

// Every header the fixture writes (its model of the publisher's files) maps every column the
// certificate type has, at the name the catalogue gives for that type and layout.
TEST(Columns, FixtureHeadersMapPerTypeAndLayout) {
    for (CertType type : kTypes) {
        for (Layout layout : kLayouts) {
            const std::vector<std::string> header = fixture::certificate_columns(type, layout);
            const std::string where = std::string(cert_type_name(type)) + "/" + std::string(layout_name(layout));
            std::vector<const Column*> every;
            for (const Column& c : certificate_columns()) every.push_back(&c);
            const ColumnSet catalogue = ColumnSet::of(every);
            FieldMap m = map_header(views(header), type, catalogue);
            EXPECT_TRUE(m.missing_required.empty()) << where;
            ASSERT_EQ(m.slots.size(), certificate_columns().size());
            // Every column of the file is one of the catalogue's.
            for (const std::string& name : header)
                EXPECT_NE(find_certificate_column(name), nullptr) << where << " " << name;
            for (const FieldMap::Slot& slot : m.slots) {
                const std::vector<std::string> names = header_names(*slot.column, type, layout);
                if (names.empty()) {
                    EXPECT_EQ(slot.position, -1) << where << " " << slot.column->name;
                    continue;
                }
                ASSERT_GE(slot.position, 0) << where << " " << slot.column->name;
                EXPECT_EQ(header[static_cast<std::size_t>(slot.position)], names.front()) << where;
            }
            EXPECT_EQ(m.key, m.position(kKeyColumn));
            EXPECT_EQ(m.tuple_fields, staging_column_count(catalogue));
            EXPECT_TRUE(map_header(views(header), type).missing_optional.empty()) << where;
        }
    }
}

TEST(Columns, AddressFromPartsWhenNoAddressColumn) {
    FieldMap parts = map_header(views({"LMK_KEY", "LODGEMENT_DATE", "ADDRESS1", "ADDRESS2", "ADDRESS3"}),
                                CertType::domestic);
    const FieldMap::Slot& slot = parts.slots[parts.address_slot];
    EXPECT_EQ(slot.column->name, "address");
    EXPECT_EQ(slot.position, -1);
    EXPECT_EQ(slot.parts, (std::vector<int>{2, 3, 4}));
    EXPECT_EQ(std::count(parts.missing_optional.begin(), parts.missing_optional.end(), "ADDRESS"), 0);

    // ADDRESS wins over the parts; without ADDRESS1 the address counts as missing.
    FieldMap both = map_header(views({"LMK_KEY", "LODGEMENT_DATE", "address1", "address"}), CertType::display);
    EXPECT_EQ(both.position("address"), 3);
    FieldMap neither = map_header(views({"LMK_KEY", "LODGEMENT_DATE", "ADDRESS2"}), CertType::domestic);
    EXPECT_EQ(std::count(neither.missing_optional.begin(), neither.missing_optional.end(), "ADDRESS"), 1);
}

TEST(Columns, DisplayFilesNeedNoTransactionType) {
    const std::vector<std::string> header = {"LMK_KEY",  "LODGEMENT_DATE", "TOTAL_FLOOR_AREA", "ADDRESS",
                                             "POSTCODE", "UPRN",           "LOCAL_AUTHORITY"};
    EXPECT_TRUE(map_header(views(header), CertType::display).missing_optional.empty());
    EXPECT_EQ(map_header(views(header), CertType::domestic).missing_optional,
              (std::vector<std::string>{"TRANSACTION_TYPE"}));
}

TEST(Columns, OneTableColumnPerMeaning) {
    EXPECT_EQ(find_certificate_column("FLOOR_AREA")->name, "total_floor_area");
    EXPECT_EQ(find_certificate_column("floor_area")->name, "total_floor_area");
    EXPECT_EQ(find_certificate_column("certificate_number")->name, "cert_key");
    EXPECT_EQ(find_certificate_column("LMK_KEY")->name, "cert_key");
    EXPECT_EQ(find_certificate_column("low_energy_fixed_lighting_outlets_count")->name, "low_energy_fixed_light_count");
    EXPECT_EQ(find_certificate_column("Low_Energy_Fixed_Light_Count")->name, "low_energy_fixed_light_count");
    EXPECT_EQ(find_certificate_column("total_floor_area")->name, "total_floor_area");
    EXPECT_EQ(find_certificate_column("ASSESSOR_NOTES"), nullptr);
    EXPECT_EQ(certificate_column("lodgement_datetime").kind, ValueKind::timestamp);
    EXPECT_EQ(certificate_column("current_energy_efficiency").kind, ValueKind::integer);
    EXPECT_EQ(certificate_column("co2_emissions_current").kind, ValueKind::decimal);
    EXPECT_EQ(certificate_column("inspection_date").kind, ValueKind::date);
    EXPECT_EQ(certificate_column("mains_gas_flag").kind, ValueKind::text);
    EXPECT_EQ(sql_type(ValueKind::integer), "integer");
    EXPECT_EQ(sql_type(ValueKind::timestamp), "timestamp");
}

TEST(Columns, ParseChoice) {
    EXPECT_EQ(parse_column_choice("all").mode, ColumnChoice::all);
    EXPECT_EQ(parse_column_choice(" ALL ").mode, ColumnChoice::all);
    ColumnChoice add = parse_column_choice("+tenure, MAIN_FUEL");
    EXPECT_EQ(add.mode, ColumnChoice::add);
    EXPECT_EQ(add.names, (std::vector<std::string>{"tenure", "MAIN_FUEL"}));
    EXPECT_EQ(describe(add), "+tenure,MAIN_FUEL");
    EXPECT_EQ(parse_column_choice("TENURE").mode, ColumnChoice::only);
    EXPECT_EQ(describe(ColumnChoice{}), "default");
    for (const char* bad : {"", " ", "+", "a,,b", "a,", "all,TENURE"}) {
        try {
            parse_column_choice(bad);
            ADD_FAILURE() << "accepted '" << bad << "'";
        } catch (const Error& e) {
            EXPECT_EQ(e.code(), exit_usage) << bad;
        }
    }
}

TEST(Columns, ResolveAgainstTheFilesHeaders) {
    const std::vector<std::vector<std::string>> headers = {
        {"LMK_KEY", "LODGEMENT_DATE", "TENURE", "MAIN_FUEL", "ADDRESS"},
        {"LMK_KEY", "LODGEMENT_DATE", "TENURE", "Assessor Notes", "ADDRESS"}};
    // The set's order is the catalogue's, whatever the list's.
    ResolvedColumns r = resolve_columns(parse_column_choice("+main_fuel,Tenure"), CertType::domestic, headers);
    std::vector<std::string> want = ColumnSet::defaults().names();
    want.insert(want.end(), {"main_fuel", "tenure"});  // the catalogue has MAIN_FUEL first
    EXPECT_EQ(r.set.names(), want);
    EXPECT_EQ(r.warnings.size(), 1u);                                    // MAIN_FUEL is in one file of two
    EXPECT_EQ(r.unknown, (std::vector<std::string>{"Assessor Notes"}));  // named, not loaded
    EXPECT_FALSE(r.unknown_loaded);
    EXPECT_EQ(r.set.find("assessor_notes"), nullptr);
    EXPECT_EQ(resolve_columns(parse_column_choice("TENURE,MAIN_FUEL"), CertType::domestic, headers).set, r.set);

    ResolvedColumns all = resolve_columns(parse_column_choice("all"), CertType::domestic, headers);
    EXPECT_EQ(all.unknown, (std::vector<std::string>{"Assessor Notes"}));
    EXPECT_TRUE(all.unknown_loaded);
    ASSERT_NE(all.set.find("assessor_notes"), nullptr);
    EXPECT_EQ(all.set.find("assessor_notes")->kind, ValueKind::text);
    EXPECT_FALSE(all.set.find("assessor_notes")->known);
    EXPECT_EQ(all.set.columns().back().name, "assessor_notes");
    EXPECT_EQ(all.set.size(), ColumnSet::defaults().size() + 3);

    try {
        resolve_columns(parse_column_choice("+TENURE,NO_SUCH,ASSET_RATING"), CertType::domestic, headers);
        ADD_FAILURE() << "accepted columns no file has";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), exit_usage);
        const std::string what = e.what();
        EXPECT_NE(what.find("NO_SUCH, ASSET_RATING"), std::string::npos) << what;
        EXPECT_NE(what.find("the files have: LMK_KEY, LODGEMENT_DATE, TENURE, MAIN_FUEL, ADDRESS, Assessor Notes"),
                  std::string::npos)
            << what;
    }
}

TEST(Columns, UnknownColumnNames) {
    EXPECT_EQ(unknown_column_name("Assessor Notes"), "assessor_notes");
    EXPECT_EQ(unknown_column_name("HEAT-PUMP (kW)"), "heat_pump__kw_");
    EXPECT_EQ(unknown_column_name("2nd_fuel"), "x_2nd_fuel");
    EXPECT_EQ(unknown_column_name("row_hash"), "x_row_hash");
    EXPECT_EQ(unknown_column_name("file_no"), "x_file_no");
    EXPECT_EQ(unknown_column_name(std::string(80, 'a')).size(), 63u);
}

TEST(Columns, SetFromTableColumns) {
    const ColumnSet set = ColumnSet::from_table(
        {"cert_key", "lodgement_date", "transaction_type", "total_floor_area", "address", "postcode", "uprn",
         "local_authority", "tenure", "assessor_notes", "file_no", "line_no", "address_key", "latitude", "row_hash"});
    std::vector<std::string> want = ColumnSet::defaults().names();
    want.push_back("tenure");
    want.push_back("assessor_notes");
    EXPECT_EQ(set.names(), want);
    EXPECT_EQ(set.find("tenure")->kind, ValueKind::text);
    EXPECT_FALSE(set.find("assessor_notes")->known);
    EXPECT_EQ(certificate_column_list(set), certificate_column_list() + ", tenure, assessor_notes");
}
