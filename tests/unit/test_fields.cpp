#include <gtest/gtest.h>

#include <optional>

#include "epc/db/copy_binary.hpp"
#include "epc/transform/fields.hpp"

using namespace epc;

namespace {

std::vector<Field> views(const std::vector<std::string>& v) { return {v.begin(), v.end()}; }

const std::vector<std::string> kHeader = {"LMK_KEY",          "ADDRESS1",       "ADDRESS",
                                          "POSTCODE",         "LODGEMENT_DATE", "TRANSACTION_TYPE",
                                          "TOTAL_FLOOR_AREA", "UPRN",           "LOCAL_AUTHORITY"};

}  // namespace

TEST(Fields, SentinelsAreCaseInsensitiveAndExact) {
    for (const char* s : {"", "NO DATA!", "nodata!", "INVALID!", "N/A", "not recorded", "UNKNOWN", "DEC OR 9999"})
        EXPECT_TRUE(is_sentinel(s)) << s;
    for (const char* s : {"NO DATA", "0", "Unknownx", "n/a/"}) EXPECT_FALSE(is_sentinel(s)) << s;
}

TEST(Fields, Dates) {
    EXPECT_TRUE(is_valid_date("2020-02-29"));
    EXPECT_TRUE(is_valid_date("2000-02-29"));
    EXPECT_FALSE(is_valid_date("1900-02-29"));
    EXPECT_FALSE(is_valid_date("2021-02-29"));
    EXPECT_FALSE(is_valid_date("2021-02-30"));
    EXPECT_FALSE(is_valid_date("2021-13-01"));
    EXPECT_FALSE(is_valid_date("2021-1-01"));
    EXPECT_FALSE(is_valid_date("01/02/2021"));
    EXPECT_FALSE(is_valid_date("2021-01-01 10:00"));
    EXPECT_FALSE(is_valid_date("not a date"));
}

TEST(Fields, Numbers) {
    for (const char* s : {"80", "80.5", "-3.25", "+7", ".5", "0.0"}) EXPECT_TRUE(is_decimal(s)) << s;
    for (const char* s : {"", "80.", "about 80", "1e5", "-", ".", "8,0"}) EXPECT_FALSE(is_decimal(s)) << s;
    EXPECT_TRUE(is_uprn("100023336956"));
    EXPECT_FALSE(is_uprn("1000233369.0"));
    EXPECT_FALSE(is_uprn("1234567890123456789"));  // 19 digits: beyond bigint's safe range
}

TEST(Fields, CopyTextEscapesAndReplacesInvalidUtf8) {
    std::string out;
    EXPECT_FALSE(append_copy_text(out, "a\\b\tc\nd\re"));
    EXPECT_EQ(out, "a\\\\b\\tc\\nd\\re");
    out.clear();
    EXPECT_FALSE(append_copy_text(out, "W/m\xC2\xB2K caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x8F\xA0"));
    EXPECT_EQ(out, "W/m\xC2\xB2K caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x8F\xA0");
    out.clear();
    EXPECT_TRUE(append_copy_text(out, "caf\xE9!"));  // Latin-1 é
    EXPECT_EQ(out, "caf\xEF\xBF\xBD!");
    out.clear();
    EXPECT_TRUE(append_copy_text(out, "\xE2\x82"
                                      "A"));  // truncated sequence: each byte replaced
    EXPECT_EQ(out, "\xEF\xBF\xBD\xEF\xBF\xBD"
                   "A");
    out.clear();
    EXPECT_TRUE(append_copy_text(out, "\xED\xA0\x80"));  // UTF-16 surrogate: invalid in UTF-8
    EXPECT_EQ(out, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(Fields, HeaderMappingIsCaseInsensitivePerType) {
    std::vector<std::string> current = {"certificate_number", "address", "postcode",        "lodgement_date",
                                        "floor_area",         "uprn",    "local_authority", "extra"};
    FieldMap m = map_header(views(current), CertType::non_domestic);
    EXPECT_EQ(m.key, 0);
    EXPECT_EQ(m.position("total_floor_area"), 4);
    EXPECT_EQ(m.position("transaction_type"), -1);
    EXPECT_TRUE(m.missing_required.empty());
    EXPECT_EQ(m.missing_optional, (std::vector<std::string>{"TRANSACTION_TYPE"}));

    FieldMap display = map_header(
        views({"LMK_KEY", "LODGEMENT_DATE", "TOTAL_FLOOR_AREA", "ADDRESS", "POSTCODE", "UPRN", "LOCAL_AUTHORITY"}),
        CertType::display);
    EXPECT_TRUE(display.missing_optional.empty());  // no TRANSACTION_TYPE is normal for display

    FieldMap broken = map_header(views({"KEY", "DATE"}), CertType::domestic);
    EXPECT_EQ(broken.missing_required.size(), 2u);
}

namespace {

std::uint64_t be(const std::string& b) {
    std::uint64_t v = 0;
    for (unsigned char c : b) v = v << 8 | c;
    return v;
}

// Splits one binary COPY tuple into its fields (nullopt = NULL).
std::vector<std::optional<std::string>> decode_tuple(const std::string& b) {
    std::size_t p = 0;
    auto take = [&](std::size_t n) {
        std::string s = b.substr(p, n);
        p += n;
        return s;
    };
    std::vector<std::optional<std::string>> fields;
    std::uint64_t count = be(take(2));
    for (std::uint64_t i = 0; i < count; ++i) {
        std::uint64_t len = be(take(4));
        if (len == 0xFFFFFFFFu) fields.push_back(std::nullopt);
        else fields.push_back(take(len));
    }
    EXPECT_EQ(p, b.size());
    return fields;
}

}  // namespace

TEST(Fields, FormatRowTypesAndNulls) {
    FieldMap m = map_header(views(kHeader), CertType::domestic);
    std::string out;
    RowCounters c;
    std::vector<std::string> row = {" 123 ",    "x", "11, Braddon Road", "TS1 1AA", "2020-01-02", "NO DATA!",
                                    "about 80", "",  "E06000001"};
    EXPECT_FALSE(format_row(m, views(row), 3, 17, out, c));
    auto f = decode_tuple(out);
    ASSERT_EQ(f.size(), staging_column_count());
    EXPECT_EQ(*f[0], "123");
    EXPECT_EQ(be(*f[1]), 7306u);  // 2020-01-02 is 7306 days after 2000-01-01
    EXPECT_FALSE(f[2]);           // NO DATA!: an error marker
    EXPECT_FALSE(f[3]);           // "about 80" is no number
    EXPECT_EQ(*f[4], "11, Braddon Road");
    EXPECT_EQ(*f[5], "TS1 1AA");
    EXPECT_FALSE(f[6]);  // empty UPRN
    EXPECT_EQ(*f[7], "E06000001");
    EXPECT_EQ(be(*f[8]), 3u);
    EXPECT_EQ(be(*f[9]), 17u);
    EXPECT_EQ(*f[10], "11 BRADDON ROAD|TS1 1AA");
    EXPECT_EQ(c.invalid_values, 1u);

    out.clear();
    row[6] = "80.5";
    row[7] = "100023336956";
    row[2] = "caf\xE9";
    EXPECT_FALSE(format_row(m, views(row), 0, 2, out, c));
    f = decode_tuple(out);
    EXPECT_EQ(be(*f[6]), 100023336956u);
    EXPECT_EQ(*f[4], "caf\xEF\xBF\xBD");
    EXPECT_EQ(c.invalid_utf8_values, 1u);
}

TEST(Fields, TextKeepsAnswersDropsErrorMarkers) {
    FieldMap m = map_header(views(kHeader), CertType::domestic);
    RowCounters c;
    auto transaction_type = [&](const std::string& value) -> std::optional<std::string> {
        std::string out;
        std::vector<std::string> row = {"1", "", "", "", "2020-01-02", value, "", "", ""};
        EXPECT_FALSE(format_row(m, views(row), 0, 2, out, c));
        return decode_tuple(out)[2];
    };
    for (const char* answer : {"unknown", "Not recorded", "N/A", "none of the above", "DEC OR 9999"})
        EXPECT_EQ(transaction_type(answer), std::optional<std::string>(answer));
    for (const char* marker : {"", "  ", "NO DATA!", "no data!", "NODATA!", "INVALID!"})
        EXPECT_EQ(transaction_type(marker), std::nullopt) << marker;
    EXPECT_EQ(c.invalid_values, 0u);
}

TEST(Fields, TypedValuesNotOfTheirTypeAreNullAndCountedPerColumn) {
    const std::vector<std::string> header = {"LMK_KEY",         "LODGEMENT_DATE",     "TOTAL_FLOOR_AREA",
                                             "INSPECTION_DATE", "LODGEMENT_DATETIME", "CURRENT_ENERGY_EFFICIENCY",
                                             "MAINS_GAS_FLAG"};
    ResolvedColumns r = resolve_columns(parse_column_choice("all"), CertType::domestic, {header});
    FieldMap m = map_header(views(header), CertType::domestic, r.set);
    auto slot = [&](std::string_view name) {
        for (std::size_t i = 0; i < m.slots.size(); ++i)
            if (m.slots[i].column->name == name) return i;
        ADD_FAILURE() << name;
        return std::size_t{0};
    };
    RowCounters c;
    std::string out;
    std::vector<std::string> good = {"1", "2020-01-02", "80", "2019-12-31", "2020-01-02 10:11:12.5", "-7", "N/A"};
    ASSERT_FALSE(format_row(m, views(good), 0, 2, out, c));
    auto f = decode_tuple(out);
    EXPECT_EQ(be(*f[slot("inspection_date")]), 7304u);
    // 2020-01-02 10:11:12.5 in microseconds from 2000-01-01.
    EXPECT_EQ(be(*f[slot("lodgement_datetime")]), (7306ULL * 86400 + 10 * 3600 + 11 * 60 + 12) * 1000000 + 500000);
    EXPECT_EQ(static_cast<std::int32_t>(be(*f[slot("current_energy_efficiency")])), -7);
    EXPECT_EQ(*f[slot("mains_gas_flag")], "N/A");
    EXPECT_EQ(c.invalid_values, 0u);

    for (const std::vector<std::string>& bad :
         {std::vector<std::string>{"2", "2020-01-02", "N/A", "NO DATA!", "2020-01-02", "abc", "Y"},
          std::vector<std::string>{"3", "2020-01-02", "", "2021-02-30", "NODATA!", "99999999999", ""}}) {
        out.clear();
        ASSERT_FALSE(format_row(m, views(bad), 0, 3, out, c));
        f = decode_tuple(out);
        for (const char* name : {"inspection_date", "lodgement_datetime", "current_energy_efficiency"})
            EXPECT_FALSE(f[slot(name)]) << name;
    }
    EXPECT_EQ(c.invalid_values, 7u);  // the empty floor area is no value, not an invalid one
    ASSERT_EQ(c.invalid_by_slot.size(), m.slots.size());
    EXPECT_EQ(c.invalid_by_slot[slot("total_floor_area")], 1u);
    EXPECT_EQ(c.invalid_by_slot[slot("inspection_date")], 2u);
    EXPECT_EQ(c.invalid_by_slot[slot("lodgement_datetime")], 2u);
    EXPECT_EQ(c.invalid_by_slot[slot("current_energy_efficiency")], 2u);
    EXPECT_EQ(c.invalid_by_slot[slot("mains_gas_flag")], 0u);
}

TEST(Fields, IntegersAndTimestamps) {
    for (const char* s : {"0", "-12", "+7", "2147483647", "-2147483648", "0000000000012"})
        EXPECT_TRUE(is_integer(s)) << s;
    for (const char* s : {"", "-", "1.0", "2147483648", "-2147483649", "1e3", "12 ", "abc", "99999999999"})
        EXPECT_FALSE(is_integer(s)) << s;
    for (const char* s : {"2020-01-02 10:11:12", "2020-01-02T00:00:00", "2024-02-29 23:59:59.123456"})
        EXPECT_TRUE(is_timestamp(s)) << s;
    for (const char* s : {"2020-01-02", "2020-02-30 10:00:00", "2020-01-02 24:00:00", "2020-01-02 10:60:00",
                          "2020-01-02 10:00:00.", "2020-01-02 10:00:00.1234567", "2020-01-02 10:00:00Z"})
        EXPECT_FALSE(is_timestamp(s)) << s;
    EXPECT_EQ(timestamp_microseconds("2000-01-01 00:00:01"), 1000000);
    EXPECT_EQ(timestamp_microseconds("1999-12-31 23:59:59.25"), -750000);
}

TEST(Fields, BinaryDatesAndNumerics) {
    EXPECT_EQ(db::binary::days_since_2000("2000-01-01"), 0);
    EXPECT_EQ(db::binary::days_since_2000("1999-12-31"), -1);
    EXPECT_EQ(db::binary::days_since_2000("2024-02-29"), 8825);
    EXPECT_EQ(db::binary::days_since_2000("0001-01-01"), -730119);
    auto numeric = [](const char* text) {
        std::string out;
        db::binary::put_numeric(out, text);
        std::vector<int> words;  // after the length: ndigits, weight, sign, dscale, digits...
        for (std::size_t i = 4; i + 1 < out.size(); i += 2)
            words.push_back(static_cast<std::int16_t>(be(out.substr(i, 2))));
        EXPECT_EQ(be(out.substr(0, 4)), out.size() - 4);
        return words;
    };
    EXPECT_EQ(numeric("80.5"), (std::vector<int>{2, 0, 0, 1, 80, 5000}));
    EXPECT_EQ(numeric("007.50"), (std::vector<int>{2, 0, 0, 2, 7, 5000}));
    EXPECT_EQ(numeric("-0.0012"), (std::vector<int>{1, -1, 0x4000, 4, 12}));
    EXPECT_EQ(numeric("123456789"), (std::vector<int>{3, 2, 0, 0, 1, 2345, 6789}));
    EXPECT_EQ(numeric("+10000"), (std::vector<int>{1, 1, 0, 0, 1}));
    EXPECT_EQ(numeric("-0.0"), (std::vector<int>{0, 0, 0, 1}));
    EXPECT_EQ(numeric(".75"), (std::vector<int>{1, -1, 0, 2, 7500}));
    // As long as is_decimal admits (1000 characters): 10 * 10000^249 + 0.1, 251 base-10000 digits.
    std::string longest = "1" + std::string(997, '0') + ".1";
    ASSERT_TRUE(is_decimal(longest));
    std::vector<int> words = numeric(longest.c_str());
    ASSERT_EQ(words.size(), 4u + 251u);
    EXPECT_EQ(words[0], 251);
    EXPECT_EQ(words[1], 249);
    EXPECT_EQ(words[3], 1);
    EXPECT_EQ(words[4], 10);
    EXPECT_EQ(words.back(), 1000);
    std::string out;
    EXPECT_THROW(db::binary::put_numeric(out, "1" + std::string(1000, '0')), std::invalid_argument);
}

TEST(Fields, FormatRowRejections) {
    FieldMap m = map_header(views(kHeader), CertType::domestic);
    std::string out;
    RowCounters c;
    auto reject = [&](std::vector<std::string> row) {
        auto r = format_row(m, views(row), 0, 2, out, c);
        return r ? std::string(reject_reason_name(r->reason)) : std::string("loaded");
    };
    EXPECT_EQ(reject({"1", "a"}), "field_count");
    EXPECT_EQ(reject({"NO DATA!", "", "", "", "2020-01-01", "", "", "", ""}), "missing_key");
    EXPECT_EQ(reject({"1", "", "", "", "", "", "", "", ""}), "missing_date");
    EXPECT_EQ(reject({"1", "", "", "", "2020-02-30", "", "", "", ""}), "bad_date");
    EXPECT_TRUE(out.empty());
}

TEST(Fields, AddressJoinedWhenNoAddressColumn) {
    FieldMap m = map_header(views({"LMK_KEY", "ADDRESS1", "ADDRESS2", "ADDRESS3", "LODGEMENT_DATE"}),
                            CertType::domestic);
    std::string out;
    RowCounters c;
    EXPECT_FALSE(format_row(m, views({"1", "Flat 2", "", "Mill Lane", "2020-01-01"}), 0, 2, out, c));
    EXPECT_EQ(*decode_tuple(out)[4], "Flat 2, Mill Lane");
}

TEST(Fields, RejectLineKeepsRawText) {
    std::string out;
    format_reject(2, "dir/certificates.csv", 9, {RejectReason::bad_date, "why"},
                  "1,\"a\xFF"
                  "b\"",
                  out);
    EXPECT_EQ(out, "2\tdir/certificates.csv\t9\tbad_date\twhy\t1,\"a\\nb\"\n");
}

TEST(Fields, AddressKeysNormaliseWhatDiffersOnlyInForm) {
    EXPECT_EQ(canonical_postcode(" ts11aa "), "TS1 1AA");
    EXPECT_EQ(canonical_postcode("SW1A 1AA"), "SW1A 1AA");
    EXPECT_EQ(canonical_postcode("ec1a-1bb"), "EC1A 1BB");
    EXPECT_EQ(canonical_postcode("XYZ"), "XYZ");  // not a postcode shape: letters and digits only
    EXPECT_EQ(address_key("11, Braddon Road", "ts1 1aa"), "11 BRADDON ROAD|TS1 1AA");
    EXPECT_EQ(address_key("11 braddon  road.", "TS11AA"), "11 BRADDON ROAD|TS1 1AA");
    EXPECT_EQ(address_key("Flat 2,\nThe \"Old\" Mill", ""), "FLAT 2 THE OLD MILL|");
    EXPECT_EQ(address_key("caf\xC3\xA9 Row", "AB1 2CD"), "CAF ROW|AB1 2CD");  // non-ASCII bytes separate words
    EXPECT_EQ(address_key("", ""), "");
    EXPECT_EQ(address_key(" , ", ""), "");
}
