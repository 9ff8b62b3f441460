// The certificate columns, defined once: what each loaded column is called in the tables and in
// the publisher's files, how its values are typed, and whether a row or a file can do without it.
// Everything that lists the columns (staging and production DDL, the COPY column list, publish's
// INSERT ... SELECT, the duplicate rejects' raw text, the loader's header mapping and conversion,
// the tests) is generated from this catalogue: adding a column is adding one entry to it.
// Pure data and strings: no database access here.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "epc/common/types.hpp"

namespace epc {

// Why a row could not be loaded. The names are stored in the rejects table.
enum class RejectReason { field_count, missing_key, missing_date, bad_date, duplicate_key };
std::string_view reject_reason_name(RejectReason reason);

// How a CSV value is converted for its column. Empty values and the publisher's sentinels
// ("NO DATA!", "N/A", ...) are NULL whatever the kind.
enum class ValueKind {
    text,     // UTF-8 text, invalid bytes replaced by U+FFFD
    date,     // YYYY-MM-DD, a real calendar date
    decimal,  // [+-]digits[.digits]: numeric
    uprn,     // 1-18 digits: bigint
};
// What a valid value of the kind looks like, for reject details: "a YYYY-MM-DD date".
std::string_view value_kind_expectation(ValueKind kind);

// Sets of certificate types and of archive layouts, as bits.
using CertTypes = unsigned;
using Layouts = unsigned;
constexpr CertTypes type_bit(CertType type) { return 1u << static_cast<unsigned>(type); }
constexpr Layouts layout_bit(Layout layout) { return 1u << static_cast<unsigned>(layout); }
inline constexpr CertTypes kAllTypes = type_bit(CertType::domestic) | type_bit(CertType::non_domestic) |
                                       type_bit(CertType::display);
inline constexpr Layouts kLegacyService = layout_bit(Layout::legacy) | layout_bit(Layout::single);
inline constexpr Layouts kCurrentService = layout_bit(Layout::current);
inline constexpr Layouts kAllLayouts = kLegacyService | kCurrentService;

// A header name a column has in the publisher's files, and the files that use it. Spelled as
// the legacy service writes it; the current service writes every name in lower case. Header
// names are matched case-insensitively, and a file may use any name of the column: `types` and
// `layouts` decide the order names are tried in and whether a missing column is worth a warning.
struct HeaderName {
    std::string_view name;
    CertTypes types = kAllTypes;
    Layouts layouts = kAllLayouts;
};

// What a required column's value must be: a row without it is rejected.
struct Requirement {
    RejectReason missing;             // the value is empty or a sentinel
    std::string_view missing_detail;  // "no certificate key"
    // The value is not a valid value of the column's kind (kinds that can be invalid only): the
    // detail reads "<described_as> '<value>' is not <value_kind_expectation(kind)>".
    std::optional<RejectReason> invalid = std::nullopt;
    std::string_view described_as = {};
};

// A header without the column: the file cannot be loaded (error), or the column is NULL in
// every row (warning; only where the certificate type's files normally have the column).
enum class Absence { error, warning };

struct Column {
    std::string_view name;      // in staging and production tables: lower case, as the publisher names it
    std::string_view sql_type;  // NOT NULL is added for required columns
    ValueKind kind;
    std::vector<HeaderName> header;  // in order of preference
    std::optional<Requirement> required = std::nullopt;
    Absence absence = Absence::warning;
    // When the header has none of `header`: these columns' values, those that are not empty or a
    // sentinel, joined with ", " (legacy files split the address into ADDRESS1..3). The column
    // counts as present in a header that has the first of them.
    std::vector<std::string_view> joined_parts = {};
};

// The loaded certificate columns, in staging (COPY) order.
const std::vector<Column>& certificate_columns();
// The column of the certificate key: unique in a release, production's primary key.
inline constexpr std::string_view kKeyColumn = "cert_key";
// The columns the address key (what the geocode stage locates) is derived from.
inline constexpr std::string_view kAddressColumn = "address";
inline constexpr std::string_view kPostcodeColumn = "postcode";
// The catalogue entry of that name; throws std::out_of_range for an unknown name.
const Column& certificate_column(std::string_view name);

// Staging-only columns the loader writes after the certificate columns, in this order.
struct BookkeepingColumn {
    std::string_view name;
    std::string_view sql_type;  // with NOT NULL where it applies
    std::string_view note;      // a comment in the DDL
};
const std::vector<BookkeepingColumn>& bookkeeping_columns();

// --- Header mapping ---

// The names to look for in a header of a file of `type`, in order: the names that type's files
// use, then the column's other names.
std::vector<std::string_view> header_match_order(const Column& column, CertType type);
// The names the publisher writes for the column in files of that type and layout, spelled as
// they are there (lower case in the current service's files). Empty: such files lack the column.
std::vector<std::string> header_names(const Column& column, CertType type, Layout layout);
// Whether files of that type normally have the column (its absence is then worth a warning).
bool expected_in(const Column& column, CertType type);
// How a missing column is named in errors and warnings: its legacy names joined by '/'.
std::string header_label(const Column& column);

// --- SQL generated from the catalogue ---

// The certificate columns' DDL, one "name type [NOT NULL]" line each, separated by commas, with
// no comma after the last: for CREATE TABLE, before any further columns.
std::string certificate_columns_ddl();
// The staging table's columns: the certificate columns, then the bookkeeping columns.
std::string staging_columns_ddl();
// "cert_key, lodgement_date, ..."; with an alias: "s.cert_key, s.lodgement_date, ...".
std::string certificate_column_list(std::string_view alias = {});
// The columns a staging COPY writes, in format_row's order, and how many there are.
std::string staging_column_list();
std::size_t staging_column_count();
// A row's certificate values as one comma-separated text: "concat_ws(',', m.cert_key, ...)".
std::string concat_ws_expression(std::string_view alias);

// --- Production: epc.<type>_certificates ---

// Production's columns after the certificate columns (coordinates, the run that wrote the row,
// its hash), as DDL lines to follow certificate_columns_ddl() after a comma.
std::string production_extra_columns_ddl();
// Every production column: the certificate columns, then the extra ones; with an alias on each.
std::string production_column_list(std::string_view alias = {});

}  // namespace epc
