#include "epc/transform/fields.hpp"

#include <strings.h>
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "epc/common/hash.hpp"
#include "epc/db/copy_binary.hpp"

namespace epc {

namespace binary = db::binary;

namespace {

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

int find_column(const std::vector<Field>& header, const std::vector<std::string_view>& names) {
    for (std::string_view name : names)
        for (std::size_t i = 0; i < header.size(); ++i)
            if (iequals(trim(header[i]), name)) return static_cast<int>(i);
    return -1;
}

// Bytes that stop the fast path of append_copy_text: COPY's specials and anything non-ASCII.
constexpr std::array<bool, 256> make_special_table() {
    std::array<bool, 256> t{};
    for (int c = 0x80; c < 256; ++c) t[c] = true;
    t['\\'] = t['\t'] = t['\n'] = t['\r'] = true;
    return t;
}
constexpr auto kSpecial = make_special_table();

constexpr std::array<bool, 256> make_non_ascii_table() {
    std::array<bool, 256> t{};
    for (int c = 0x80; c < 256; ++c) t[c] = true;
    return t;
}
constexpr auto kNonAscii = make_non_ascii_table();

// Length of the valid UTF-8 sequence starting at s[i], or 0 if the byte there starts none.
std::size_t utf8_sequence(const unsigned char* s, std::size_t i, std::size_t n) {
    unsigned char c = s[i];
    auto cont = [&](std::size_t k, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
        return i + k < n && s[i + k] >= lo && s[i + k] <= hi;
    };
    if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
    if (c == 0xE0) return cont(1, 0xA0) && cont(2) ? 3 : 0;
    if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) return cont(1) && cont(2) ? 3 : 0;
    if (c == 0xED) return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;
    if (c == 0xF0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
    if (c >= 0xF1 && c <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
    if (c == 0xF4) return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
    return 0;
}

std::string_view field_at(const std::vector<Field>& fields, int index) {
    return index < 0 ? std::string_view() : trim(fields[static_cast<std::size_t>(index)]);
}

}  // namespace

std::string_view trim(std::string_view s) {
    std::size_t b = 0, e = s.size();
    while (b < e && (s[b] == ' ' || s[b] == '\t')) ++b;
    while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) --e;
    return s.substr(b, e - b);
}

bool is_sentinel(std::string_view trimmed) {
    const std::string_view s = trimmed;
    // The publisher's ways of saying "no value" (docs/data-formats.md §4).
    static constexpr std::string_view kSentinels[] = {"NO DATA!",     "NODATA!", "INVALID!",   "N/A",
                                                      "Not recorded", "Unknown", "DEC OR 9999"};
    if (s.empty()) return true;
    if (s.size() > 12) return false;
    return std::any_of(std::begin(kSentinels), std::end(kSentinels),
                       [&](std::string_view sentinel) { return iequals(s, sentinel); });
}

bool is_error_marker(std::string_view trimmed) {
    static constexpr std::string_view kMarkers[] = {"NO DATA!", "NODATA!", "INVALID!"};
    if (trimmed.empty()) return true;
    if (trimmed.size() > 8 || trimmed.back() != '!') return false;
    return std::any_of(std::begin(kMarkers), std::end(kMarkers),
                       [&](std::string_view marker) { return iequals(trimmed, marker); });
}

bool is_valid_date(std::string_view s) {
    if (s.size() != 10 || s[4] != '-' || s[7] != '-') return false;
    for (int i : {0, 1, 2, 3, 5, 6, 8, 9})
        if (s[i] < '0' || s[i] > '9') return false;
    int year = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
    int month = (s[5] - '0') * 10 + (s[6] - '0');
    int day = (s[8] - '0') * 10 + (s[9] - '0');
    if (year < 1 || month < 1 || month > 12 || day < 1) return false;
    static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    int max_day = kDays[month - 1] + (month == 2 && leap ? 1 : 0);
    return day <= max_day;
}

bool is_decimal(std::string_view s) {
    // Far beyond any floor area, and within PostgreSQL's numeric limits (16383 fraction digits).
    if (s.size() > 1000) return false;
    std::size_t i = 0;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    std::size_t int_digits = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++int_digits;
    if (i == s.size()) return int_digits > 0;
    if (s[i] != '.') return false;
    ++i;
    std::size_t frac_digits = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++frac_digits;
    return i == s.size() && frac_digits > 0;
}

bool is_uprn(std::string_view s) {
    return !s.empty() && s.size() <= 18 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

namespace {

bool all_digits(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

int two_digits(std::string_view s, std::size_t at) { return (s[at] - '0') * 10 + (s[at + 1] - '0'); }

std::int64_t parse_integer(std::string_view s) {
    const bool negative = s.front() == '-';
    if (s.front() == '+' || s.front() == '-') s.remove_prefix(1);
    std::int64_t v = 0;
    for (char c : s) v = v * 10 + (c - '0');
    return negative ? -v : v;
}

}  // namespace

bool is_integer(std::string_view s) {
    std::string_view digits = s;
    if (!digits.empty() && (digits.front() == '+' || digits.front() == '-')) digits.remove_prefix(1);
    while (digits.size() > 1 && digits.front() == '0') digits.remove_prefix(1);
    if (!all_digits(digits) || digits.size() > 10) return false;
    const std::int64_t v = parse_integer(s);
    return v >= INT32_MIN && v <= INT32_MAX;
}

bool is_timestamp(std::string_view s) {
    if (s.size() < 19 || !is_valid_date(s.substr(0, 10)) || (s[10] != ' ' && s[10] != 'T') || s[13] != ':' ||
        s[16] != ':')
        return false;
    if (!all_digits(s.substr(11, 2)) || !all_digits(s.substr(14, 2)) || !all_digits(s.substr(17, 2))) return false;
    if (two_digits(s, 11) > 23 || two_digits(s, 14) > 59 || two_digits(s, 17) > 59) return false;
    if (s.size() == 19) return true;
    return s[19] == '.' && s.size() <= 26 && all_digits(s.substr(20));
}

std::int64_t timestamp_microseconds(std::string_view s) {
    constexpr std::int64_t kSecond = 1000000;
    std::int64_t micros = 0;
    if (s.size() > 20) {
        const std::string_view fraction = s.substr(20);
        micros = parse_integer(fraction);
        for (std::size_t i = fraction.size(); i < 6; ++i) micros *= 10;
    }
    const std::int64_t seconds = two_digits(s, 11) * 3600 + two_digits(s, 14) * 60 + two_digits(s, 17);
    return static_cast<std::int64_t>(binary::days_since_2000(s.substr(0, 10))) * 86400 * kSecond + seconds * kSecond +
           micros;
}

namespace {

// Copies s to out, replacing each byte that is not part of valid UTF-8 by U+FFFD and, for COPY
// text, escaping COPY's specials. Returns true when something was replaced.
template <bool kEscape>
bool append_sanitized(std::string& out, std::string_view s) {
    const auto& stop = kEscape ? kSpecial : kNonAscii;
    const auto* u = reinterpret_cast<const unsigned char*>(s.data());
    const std::size_t n = s.size();
    bool replaced = false;
    std::size_t run = 0;  // start of the pending run of plain bytes
    std::size_t i = 0;
    while (i < n) {
        if (!stop[u[i]]) {
            ++i;
            continue;
        }
        out.append(s.data() + run, i - run);
        unsigned char c = u[i];
        if (c < 0x80) {
            out += c == '\\' ? "\\\\" : c == '\t' ? "\\t" : c == '\n' ? "\\n" : "\\r";
            ++i;
        } else if (std::size_t len = utf8_sequence(u, i, n)) {
            out.append(s.data() + i, len);
            i += len;
        } else {
            out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER
            replaced = true;
            ++i;
        }
        run = i;
    }
    out.append(s.data() + run, n - run);
    return replaced;
}

// A text field: length, then the (repaired) UTF-8. Returns true when bytes were replaced.
bool put_text(std::string& out, std::string_view value) {
    const std::size_t at = binary::begin_field(out);
    const bool replaced = append_sanitized<false>(out, value);
    binary::end_field(out, at);
    return replaced;
}

}  // namespace

bool append_copy_text(std::string& out, std::string_view s) { return append_sanitized<true>(out, s); }

namespace {

// Each byte as it appears in a key: ASCII letters upper-cased, digits kept, anything else 0.
constexpr std::array<char, 256> make_key_char_table() {
    std::array<char, 256> t{};
    for (int c = '0'; c <= '9'; ++c) t[c] = static_cast<char>(c);
    for (int c = 'A'; c <= 'Z'; ++c) t[c] = t[c + ('a' - 'A')] = static_cast<char>(c);
    return t;
}
constexpr auto kKeyChar = make_key_char_table();
char key_char(char c) { return kKeyChar[static_cast<unsigned char>(c)]; }

void append_canonical_postcode(std::string& out, std::string_view postcode) {
    const std::size_t start = out.size();
    for (char c : postcode)
        if (char k = key_char(c)) out += k;
    const std::size_t len = out.size() - start;
    if (len >= 5 && len <= 7) out.insert(out.end() - 3, ' ');  // outward code, space, inward code
}

// Appends the address key; returns false (and appends nothing) when there is nothing to key.
bool append_address_key(std::string& out, std::string_view address, std::string_view postcode) {
    const std::size_t start = out.size();
    bool gap = false;
    for (char c : address) {
        if (char k = key_char(c)) {
            if (gap && out.size() > start) out += ' ';
            gap = false;
            out += k;
        } else {
            gap = true;
        }
    }
    const std::size_t address_end = out.size();
    out += '|';
    append_canonical_postcode(out, postcode);
    if (address_end == start && out.size() == address_end + 1) {
        out.resize(start);
        return false;
    }
    return true;
}

}  // namespace

std::string canonical_postcode(std::string_view postcode) {
    std::string out;
    append_canonical_postcode(out, postcode);
    return out;
}

std::string address_key(std::string_view address, std::string_view postcode) {
    std::string out;
    append_address_key(out, address, postcode);
    return out;
}

int FieldMap::position(std::string_view column) const {
    for (const Slot& slot : slots)
        if (slot.column->name == column) return slot.position;
    return -1;
}

namespace {

// Where the header has the column, and the parts it can be joined from.
FieldMap::Slot find_slot(const std::vector<Field>& header, const Column& column, CertType type) {
    FieldMap::Slot slot;
    slot.column = &column;
    slot.position = find_column(header, header_match_order(column, type));
    for (std::string_view part : column.joined_parts) slot.parts.push_back(find_column(header, {part}));
    return slot;
}

std::size_t slot_of(const FieldMap& map, std::string_view column) {
    for (std::size_t i = 0; i < map.slots.size(); ++i)
        if (map.slots[i].column->name == column) return i;
    throw std::logic_error("the certificate columns have no " + std::string(column));
}

}  // namespace

FieldMap map_header(const std::vector<Field>& header, CertType type, const ColumnSet& columns) {
    FieldMap m;
    m.columns = header.size();
    for (const Column& column : columns.columns()) {
        FieldMap::Slot slot = find_slot(header, column, type);
        const bool present = slot.position >= 0 || (!slot.parts.empty() && slot.parts.front() >= 0);
        if (!present && column.absence == Absence::error) m.missing_required.push_back(header_label(column));
        else if (!present && expected_in(column, type)) m.missing_optional.push_back(header_label(column));
        m.slots.push_back(std::move(slot));
    }
    m.key = m.position(kKeyColumn);
    m.dataset = columns.dataset();
    if (m.dataset == Dataset::certificates) {
        m.address_slot = slot_of(m, kAddressColumn);
        m.postcode_slot = slot_of(m, kPostcodeColumn);
    }
    m.tuple_fields = static_cast<std::uint16_t>(m.slots.size() + bookkeeping_columns(m.dataset).size());
    return m;
}

namespace {

// A column's value in a record, trimmed. A column without a field of its own but with parts is
// the parts that hold a value, joined with ", " into `joined` (as the publisher builds ADDRESS).
std::string_view slot_value(const FieldMap::Slot& slot, const std::vector<Field>& fields, std::string& joined) {
    if (slot.position >= 0 || slot.parts.empty()) return field_at(fields, slot.position);
    joined.clear();
    for (int part : slot.parts) {
        std::string_view v = field_at(fields, part);
        if (is_sentinel(v)) continue;
        if (!joined.empty()) joined += ", ";
        joined.append(v);
    }
    return joined;
}

// Appends a value (not a sentinel) as a binary COPY field of its kind. Returns false, having
// appended nothing, when it is not a valid value of that kind.
bool put_value(std::string& out, ValueKind kind, std::string_view value, RowCounters& row) {
    switch (kind) {
        case ValueKind::text:
            if (put_text(out, value)) ++row.invalid_utf8_values;
            return true;
        case ValueKind::date:
            if (!is_valid_date(value)) return false;
            binary::put_date(out, binary::days_since_2000(value));
            return true;
        case ValueKind::timestamp:
            if (!is_timestamp(value)) return false;
            binary::put_int8(out, static_cast<std::uint64_t>(timestamp_microseconds(value)));
            return true;
        case ValueKind::integer:
            if (!is_integer(value)) return false;
            binary::put_int4(out, static_cast<std::int32_t>(parse_integer(value)));
            return true;
        case ValueKind::decimal:
            if (!is_decimal(value)) return false;
            binary::put_numeric(out, value);
            return true;
        case ValueKind::uprn: {
            if (!is_uprn(value)) return false;
            std::uint64_t v = 0;
            for (char c : value) v = v * 10 + static_cast<std::uint64_t>(c - '0');
            binary::put_int8(out, v);
            return true;
        }
    }
    return false;
}

// Why a required column's value (a sentinel when `missing`, else invalid for its kind) rejects the row.
Rejection reject_value(const Column& column, std::string_view value, bool missing) {
    const Requirement& required = *column.required;
    if (missing) return Rejection{required.missing, std::string(required.missing_detail)};
    std::string detail(required.described_as);
    detail.append(" '").append(value.substr(0, 40)).append("' is not ").append(value_kind_expectation(column.kind));
    return Rejection{required.invalid.value_or(required.missing), std::move(detail)};
}

// The bookkeeping columns: where the row came from, the address key (ASCII only, so no UTF-8
// repair needed; NULL when there is nothing to key), and the hash of the certificate values as
// they go to PostgreSQL (`values`: their binary COPY fields), which publish compares.
void put_address_key(std::string& out, std::string_view address, std::string_view postcode) {
    const std::size_t at = binary::begin_field(out);
    if (append_address_key(out, is_sentinel(address) ? std::string_view() : address,
                           is_sentinel(postcode) ? std::string_view() : postcode)) {
        binary::end_field(out, at);
    } else {
        out.resize(at);
        binary::put_null(out);
    }
}

// bookkeeping_columns(dataset), in order.
void put_bookkeeping(std::string& out, Dataset dataset, int file_no, std::uint64_t line, std::string_view address,
                     std::string_view postcode, std::uint64_t row_hash) {
    binary::put_int4(out, file_no);
    binary::put_int8(out, line);
    if (dataset == Dataset::certificates) put_address_key(out, address, postcode);
    binary::put_int8(out, row_hash);
}

}  // namespace

std::optional<Rejection> format_row(const FieldMap& map, const std::vector<Field>& fields, int file_no,
                                    std::uint64_t line, std::string& out, RowCounters& counters) {
    if (fields.size() != map.columns)
        return Rejection{RejectReason::field_count,
                         "expected " + std::to_string(map.columns) + " fields, found " + std::to_string(fields.size())};
    const std::size_t start = out.size();
    RowCounters row;
    std::string joined;
    std::string_view address, postcode;
    binary::begin_tuple(out, map.tuple_fields);
    const std::size_t values_start = out.size();
    // Locals: the compiler cannot tell that appending to `out` leaves the map alone.
    const FieldMap::Slot* const slots = map.slots.data();
    const std::size_t count = map.slots.size(), address_slot = map.address_slot, postcode_slot = map.postcode_slot;
    for (std::size_t i = 0; i < count; ++i) {
        const FieldMap::Slot& slot = slots[i];
        const std::string_view value = slot_value(slot, fields, joined);
        if (i == address_slot) address = value;
        else if (i == postcode_slot) postcode = value;
        const Column& column = *slot.column;
        if (column.required) {
            // The key and the date: every "no value" spelling is missing, and the row goes.
            const bool missing = is_sentinel(value);
            if (!missing && put_value(out, column.kind, value, row)) continue;
            out.resize(start);
            return reject_value(column, value, missing);
        }
        // Text keeps its answers ('unknown', 'N/A'): only empty and the error markers are NULL.
        // Any other kind is NULL when empty, and NULL and counted when not of its kind. The
        // required columns come first in every set, so a row counted here is never rejected.
        if (column.kind == ValueKind::text ? is_error_marker(value) : value.empty()) {
            binary::put_null(out);
            continue;
        }
        if (put_value(out, column.kind, value, row)) continue;
        binary::put_null(out);
        ++row.invalid_values;
        if (counters.invalid_by_slot.size() < count) counters.invalid_by_slot.resize(count);
        ++counters.invalid_by_slot[i];
    }
    const std::uint64_t row_hash = hash64(std::string_view(out).substr(values_start));
    put_bookkeeping(out, map.dataset, file_no, line, address, postcode, row_hash);
    counters.invalid_utf8_values += row.invalid_utf8_values;
    counters.invalid_values += row.invalid_values;
    return std::nullopt;
}

void format_reject(int file_no, std::string_view file_name, std::uint64_t line, const Rejection& rejection,
                   std::string_view raw, std::string& out) {
    out += std::to_string(file_no);
    out += '\t';
    append_copy_text(out, file_name);
    out += '\t';
    out += std::to_string(line);
    out += '\t';
    out.append(reject_reason_name(rejection.reason));
    out += '\t';
    append_copy_text(out, rejection.detail);
    out += '\t';
    append_copy_text(out, restore_raw(raw));
    out += '\n';
}

}  // namespace epc
