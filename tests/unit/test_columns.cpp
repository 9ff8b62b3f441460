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

TEST(Columns, GeneratedListsAgreeWithEachOther) {
    std::vector<std::string> names;
    for (const Column& c : certificate_columns()) names.push_back(std::string(c.name));
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
    const std::string ddl = certificate_columns_ddl();
    for (const Column& c : certificate_columns()) {
        std::size_t at = ddl.find("\n    " + std::string(c.name) + " ");
        ASSERT_NE(at, std::string::npos) << c.name;
        std::string line = ddl.substr(at + 1, ddl.find('\n', at + 1) - at - 1);
        EXPECT_NE(line.find(std::string(c.sql_type)), std::string::npos) << line;
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
    for (const Column& c : certificate_columns()) {
        EXPECT_TRUE(names.insert(c.name).second) << "duplicate " << c.name;
        EXPECT_TRUE(std::none_of(c.name.begin(), c.name.end(), [](char ch) { return ch >= 'A' && ch <= 'Z'; }));
        EXPECT_FALSE(c.header.empty()) << c.name;
        EXPECT_FALSE(c.sql_type.empty()) << c.name;
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
            FieldMap m = map_header(views(header), type);
            EXPECT_TRUE(m.missing_required.empty()) << where;
            EXPECT_TRUE(m.missing_optional.empty()) << where;
            ASSERT_EQ(m.slots.size(), certificate_columns().size());
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
            EXPECT_EQ(m.tuple_fields, staging_column_count());
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
