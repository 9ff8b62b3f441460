// From a CSV record to one staging row: which columns hold the fields we keep, how each field is
// cleaned and typed into a binary COPY tuple, and how a reject is written in COPY text format.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "epc/common/types.hpp"
#include "epc/db/columns.hpp"
#include "epc/transform/csv.hpp"

namespace epc {

// Where one file's header has the certificate columns (see epc/db/columns.hpp).
struct FieldMap {
    struct Slot {
        const Column* column = nullptr;
        int position = -1;       // the first of the column's header names found; -1 = none
        std::vector<int> parts;  // positions of column->joined_parts (-1 = absent), used when position < 0
    };
    std::vector<Slot> slots;  // one per column of the run's ColumnSet, in staging order
    int key = -1;             // position of the certificate key (kKeyColumn)
    Dataset dataset = Dataset::certificates;
    // Certificates: the slots the address key is derived from (recommendations have none).
    std::size_t address_slot = SIZE_MAX;
    std::size_t postcode_slot = SIZE_MAX;
    std::uint16_t tuple_fields = 0;  // fields in a COPY tuple: the slots, then the bookkeeping columns
    std::size_t columns = 0;
    std::vector<std::string> missing_required;  // e.g. key / lodgement date: the file cannot be loaded
    std::vector<std::string> missing_optional;  // loaded as NULL, worth a warning

    // Where the named column is in the header (-1 = absent). For a column that joins parts, where
    // its own header name is (-1 when the parts are joined instead).
    int position(std::string_view column) const;
};

// Maps header names case-insensitively, as the catalogue names them for the certificate type:
// e.g. LMK_KEY or certificate_number; TOTAL_FLOOR_AREA or FLOOR_AREA (non-domestic first);
// TRANSACTION_TYPE is optional and not even expected in display files. The map points into
// `columns`, which must outlive it.
FieldMap map_header(const std::vector<Field>& header, CertType type, const ColumnSet& columns = ColumnSet::defaults());

// Rows go in PostgreSQL's binary COPY format (epc/db/copy_binary.hpp), in the order of
// staging_column_list().

struct RowCounters {
    std::uint64_t invalid_utf8_values = 0;  // loaded values that had bytes replaced by U+FFFD
    std::uint64_t invalid_values = 0;       // not valid for their column's kind (floor area text, ...): NULL
    // invalid_values by slot of the map (sized on the first one): which columns they were in.
    std::vector<std::uint64_t> invalid_by_slot;
};

struct Rejection {
    RejectReason reason;
    std::string detail;
};

// Appends the row as a binary COPY tuple to `out`, or leaves `out` untouched and returns why not.
std::optional<Rejection> format_row(const FieldMap& map, const std::vector<Field>& fields, int file_no,
                                    std::uint64_t line, std::string& out, RowCounters& counters);

// Appends a COPY rejects line: file_no, file_name, line_no, reason, detail, raw.
void format_reject(int file_no, std::string_view file_name, std::uint64_t line, const Rejection& rejection,
                   std::string_view raw, std::string& out);

// Building blocks, exposed for tests.
std::string_view trim(std::string_view s);
bool is_sentinel(std::string_view trimmed);      // every "no value" spelling: for the key and lodgement date
bool is_error_marker(std::string_view trimmed);  // empty, NO DATA!, NODATA!, INVALID!: what text drops
bool is_valid_date(std::string_view s);          // exactly YYYY-MM-DD and a real calendar date
bool is_decimal(std::string_view s);             // [+-]?digits[.digits] | [+-]?.digits
bool is_uprn(std::string_view s);                // 1-18 digits
bool is_integer(std::string_view s);             // [+-]?digits within a 32-bit integer
// YYYY-MM-DD HH:MM:SS (or T between), optional .fraction of 1-6 digits: a real date and time.
bool is_timestamp(std::string_view s);
// Microseconds from 2000-01-01 00:00:00 of a valid timestamp (PostgreSQL's binary timestamp).
std::int64_t timestamp_microseconds(std::string_view s);
// Appends s escaped for COPY text, replacing each byte that is not part of valid UTF-8 by
// U+FFFD. Returns true when something was replaced.
bool append_copy_text(std::string& out, std::string_view s);
// "ab12cd" / "AB1  2CD" -> "AB1 2CD": upper-case letters and digits, a space before the inward code.
std::string canonical_postcode(std::string_view postcode);
// The key an address is geocoded under (once, ever): the address upper-cased with every run of
// anything but ASCII letters and digits turned into one space, then '|', then the canonical
// postcode. Pure ASCII whatever the input. Empty when both parts are empty (nothing to locate).
std::string address_key(std::string_view address, std::string_view postcode);

}  // namespace epc
