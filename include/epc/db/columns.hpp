// The certificate columns, defined once: every column of the publisher's certificates files (three
// types, two services), what it is called in the tables and in the files, how its values are
// typed, and whether a row or a file can do without it. A run keeps a ColumnSet of them (the
// default 8, more with --columns); everything that lists columns (staging and production DDL, the
// COPY column list, publish's INSERT ... SELECT, the duplicate rejects' raw text, the loader's
// header mapping and conversion, the tests) is generated from the catalogue and that set: adding
// a column is adding one entry to the catalogue. Pure data and strings: no database access here.
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

// How a CSV value is converted for its column. An empty value is NULL whatever the kind. Text
// keeps every other value verbatim except the publisher's error markers (NO DATA!, NODATA!,
// INVALID!): 'unknown', 'Not recorded' and 'N/A' are answers. Any other kind turns a value that
// is not of the kind (markers and answers included) into NULL, counted per column.
enum class ValueKind {
    text,       // UTF-8 text, invalid bytes replaced by U+FFFD; flags (Y/N) are text too
    date,       // YYYY-MM-DD, a real calendar date
    timestamp,  // YYYY-MM-DD HH:MM:SS[.ffffff], no time zone (the publisher's local time)
    integer,    // [+-]digits within 32 bits
    decimal,    // [+-]digits[.digits]: numeric
    uprn,       // 1-18 digits: bigint
};
// What a valid value of the kind looks like, for reject details: "a YYYY-MM-DD date".
std::string_view value_kind_expectation(ValueKind kind);
// The SQL type of a column of the kind (NOT NULL is added for required columns).
std::string_view sql_type(ValueKind kind);

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
    std::string name;
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
    std::string name;  // in staging and production tables: lower case, as the publisher names it
    ValueKind kind;
    std::vector<HeaderName> header;  // in order of preference
    std::optional<Requirement> required = std::nullopt;
    Absence absence = Absence::warning;
    // When the header has none of `header`: these columns' values, those that are not empty or a
    // sentinel, joined with ", " (legacy files split the address into ADDRESS1..3). The column
    // counts as present in a header that has the first of them.
    std::vector<std::string_view> joined_parts = {};
    bool in_default = false;  // one of the 8 columns a run keeps without --columns
    bool known = true;        // false: a column the catalogue does not know, found in a file (text)
};

// Every column the catalogue knows: the default ones first, in staging order, then the others.
const std::vector<Column>& certificate_columns();
// The column of the certificate key: unique in a release, production's primary key.
inline constexpr std::string_view kKeyColumn = "cert_key";
// The columns the address key (what the geocode stage locates) is derived from.
inline constexpr std::string_view kAddressColumn = "address";
inline constexpr std::string_view kPostcodeColumn = "postcode";
// The catalogue entry of that name; throws std::out_of_range for an unknown name.
const Column& certificate_column(std::string_view name);
// The catalogue entry a publisher's header name or a table column name means (any case), if any.
const Column* find_certificate_column(std::string_view name);

// The columns one run keeps, in staging order: the default columns, then the other chosen
// catalogue columns in catalogue order, then columns the catalogue does not know in the order
// they were found. The order is fixed by the set, not by how --columns listed them, so the same
// set always makes the same tables and row hashes.
class ColumnSet {
public:
    ColumnSet() = default;
    // The 8 columns of a run without --columns (one shared instance: maps may point into it).
    static const ColumnSet& defaults();
    // Every catalogue column of the set, plus `unknown` columns (text, named as the tables will).
    static ColumnSet of(const std::vector<const Column*>& known, const std::vector<Column>& unknown = {});
    // The set a staging or production table holds, from its column names (bookkeeping and
    // production's extra columns are skipped; names the catalogue does not know are text columns).
    static ColumnSet from_table(const std::vector<std::string>& table_columns);

    // The columns of an archive's recommendations files: cert_key (the certificate's key,
    // required), then every other column any file has, in first-seen order, under its header name
    // made a table name (unknown_column_name), typed where the files' data dictionary is known
    // (domestic IMPROVEMENT_ITEM and IMPROVEMENT_ID are integers) and text otherwise.
    static ColumnSet recommendations(const std::vector<std::vector<std::string>>& headers);

    Dataset dataset() const { return dataset_; }
    const std::vector<Column>& columns() const { return columns_; }
    std::size_t size() const { return columns_.size(); }
    const Column* find(std::string_view name) const;
    std::vector<std::string> names() const;
    bool operator==(const ColumnSet& other) const { return dataset_ == other.dataset_ && names() == other.names(); }
    bool operator!=(const ColumnSet& other) const { return !(*this == other); }

private:
    Dataset dataset_ = Dataset::certificates;
    std::vector<Column> columns_;
};

// --columns: the default set, the default set plus names (`+A,B`), names (`A,B`), or `all`. The
// default columns are kept whatever the list: the key and lodgement date make a row, geocoding
// reads the address, and production keeps the columns its readers know. So `A,B` keeps what
// `+A,B` does; the two spellings exist because operators write both.
struct ColumnChoice {
    enum Mode { defaults, add, only, all } mode = defaults;
    std::vector<std::string> names;  // as given (trimmed), in order
};
// Parses a --columns value. Throws Error(exit_usage) for an empty list or an empty name.
ColumnChoice parse_column_choice(std::string_view list);
std::string describe(const ColumnChoice& choice);  // "default", "all", "+a,b", "a,b"

// The set a choice means for an archive of `type` whose certificates files have these headers.
// Names are matched against the publisher's header names and the table names, any case. `all`
// takes the default columns and every column any file has. A header name the catalogue does not
// know is listed in `unknown` whatever the choice; with `all` it also becomes a text column under
// its sanitised name (see unknown_column_name). A named column that no file has is a usage error
// (exit_usage) listing the columns the files do have.
struct ResolvedColumns {
    ColumnSet set;
    std::vector<std::string> unknown;   // header names the catalogue lacks (header drift), as first seen
    bool unknown_loaded = false;        // they are columns of the set (as text): with `all`
    std::vector<std::string> warnings;  // chosen columns that only some files have
};
ResolvedColumns resolve_columns(const ColumnChoice& choice, CertType type,
                                const std::vector<std::vector<std::string>>& headers);
// A header name as a table column: lower case, anything but [a-z0-9_] as '_', a leading digit or a
// name the tables use already prefixed with "x_", at most 63 bytes (PostgreSQL's limit).
std::string unknown_column_name(std::string_view header_name);

// Staging-only columns the loader writes after a set's columns, in this order. Recommendations
// have no address to locate, so no address_key.
struct BookkeepingColumn {
    std::string_view name;
    std::string_view sql_type;  // with NOT NULL where it applies
    std::string_view note;      // a comment in the DDL
};
const std::vector<BookkeepingColumn>& bookkeeping_columns(Dataset dataset = Dataset::certificates);

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

// Each takes the run's ColumnSet; without one, the default set.

// The certificate columns' DDL, one "name type [NOT NULL]" line each, separated by commas, with
// no comma after the last: for CREATE TABLE, before any further columns.
std::string certificate_columns_ddl(const ColumnSet& set = ColumnSet::defaults());
// The staging table's columns: the certificate columns, then the bookkeeping columns.
std::string staging_columns_ddl(const ColumnSet& set = ColumnSet::defaults());
// "cert_key, lodgement_date, ..."; with an alias: "s.cert_key, s.lodgement_date, ...".
std::string certificate_column_list(std::string_view alias = {});
std::string certificate_column_list(const ColumnSet& set, std::string_view alias = {});
// The columns a staging COPY writes, in format_row's order, and how many there are.
std::string staging_column_list(const ColumnSet& set = ColumnSet::defaults());
std::vector<std::string> staging_column_names(const ColumnSet& set);
std::size_t staging_column_count(const ColumnSet& set = ColumnSet::defaults());
// A row's certificate values as one comma-separated text: "concat_ws(',', m.cert_key, ...)".
std::string concat_ws_expression(std::string_view alias);
std::string concat_ws_expression(const ColumnSet& set, std::string_view alias);

// --- Production: epc.<type>_certificates ---

// How full a production table's pages are filled (percent): the rest of each page is room for
// its changed rows' new versions, so a monthly UPDATE that changes no indexed column writes the
// row beside the old one and touches no index (a HOT update). At 28 M rows: the UPDATE of 279 K
// changed rows (three quarters of them such) took 12-15 s instead of 19-21; the table is 11 %
// bigger.
inline constexpr int kProductionFillfactor = 90;

// A new production table's columns, as DDL lines: the certificate columns (the key and the
// postcode in byte order, COLLATE "C"), then the coordinates, the run that wrote the row, its hash
// and its address key.
std::string production_columns_ddl(const ColumnSet& set);
// The names of those extra columns, in order.
const std::vector<std::string_view>& production_extra_columns();
// Every production column: the certificate columns, then the extra ones; with an alias on each.
std::string production_column_list(std::string_view alias = {});
std::string production_column_list(const ColumnSet& set, std::string_view alias = {});

}  // namespace epc
