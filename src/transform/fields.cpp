#include "epc/transform/fields.hpp"

#include <array>
#include <cstring>
#include <strings.h>

namespace epc {

std::string_view reject_reason_name(RejectReason reason) {
    switch (reason) {
        case RejectReason::field_count: return "field_count";
        case RejectReason::missing_key: return "missing_key";
        case RejectReason::missing_date: return "missing_date";
        case RejectReason::bad_date: return "bad_date";
        case RejectReason::duplicate_key: return "duplicate_key";
    }
    return "?";
}

namespace {

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

int find_column(const std::vector<Field>& header, std::initializer_list<std::string_view> names) {
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

constexpr std::string_view kNull = "\\N";

// Appends one text value (NULL when sentinel), counting invalid UTF-8.
void append_text_value(std::string& out, std::string_view value, RowCounters& counters) {
    if (is_sentinel(value)) {
        out += kNull;
    } else if (append_copy_text(out, value)) {
        ++counters.invalid_utf8_values;
    }
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

bool is_sentinel(std::string_view s) {
    // The publisher's ways of saying "no value" (epc-data.md §4).
    static constexpr std::string_view kSentinels[] = {"NO DATA!", "NODATA!",  "INVALID!",   "N/A",
                                                      "Not recorded", "Unknown", "DEC OR 9999"};
    if (s.empty()) return true;
    if (s.size() > 12) return false;
    for (std::string_view sentinel : kSentinels)
        if (iequals(s, sentinel)) return true;
    return false;
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
    if (s.empty() || s.size() > 18) return false;
    for (char c : s)
        if (c < '0' || c > '9') return false;
    return true;
}

bool append_copy_text(std::string& out, std::string_view s) {
    const auto* u = reinterpret_cast<const unsigned char*>(s.data());
    const std::size_t n = s.size();
    bool replaced = false;
    std::size_t run = 0;  // start of the pending run of plain bytes
    std::size_t i = 0;
    while (i < n) {
        if (!kSpecial[u[i]]) {
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

FieldMap map_header(const std::vector<Field>& header, CertType type) {
    FieldMap m;
    m.columns = header.size();
    m.key = find_column(header, {"LMK_KEY", "certificate_number"});
    m.lodgement_date = find_column(header, {"LODGEMENT_DATE"});
    m.transaction_type = find_column(header, {"TRANSACTION_TYPE"});
    // Non-domestic files call it FLOOR_AREA; the others TOTAL_FLOOR_AREA. Accept either anywhere.
    m.floor_area = type == CertType::non_domestic ? find_column(header, {"FLOOR_AREA", "TOTAL_FLOOR_AREA"})
                                                  : find_column(header, {"TOTAL_FLOOR_AREA", "FLOOR_AREA"});
    m.address = find_column(header, {"ADDRESS"});
    m.address_parts[0] = find_column(header, {"ADDRESS1"});
    m.address_parts[1] = find_column(header, {"ADDRESS2"});
    m.address_parts[2] = find_column(header, {"ADDRESS3"});
    m.postcode = find_column(header, {"POSTCODE"});
    m.uprn = find_column(header, {"UPRN"});
    m.local_authority = find_column(header, {"LOCAL_AUTHORITY"});

    if (m.key < 0) m.missing_required.push_back("LMK_KEY/certificate_number");
    if (m.lodgement_date < 0) m.missing_required.push_back("LODGEMENT_DATE");
    if (m.transaction_type < 0 && type != CertType::display) m.missing_optional.push_back("TRANSACTION_TYPE");
    if (m.floor_area < 0) m.missing_optional.push_back("TOTAL_FLOOR_AREA/FLOOR_AREA");
    if (m.address < 0 && m.address_parts[0] < 0) m.missing_optional.push_back("ADDRESS");
    if (m.postcode < 0) m.missing_optional.push_back("POSTCODE");
    if (m.uprn < 0) m.missing_optional.push_back("UPRN");
    if (m.local_authority < 0) m.missing_optional.push_back("LOCAL_AUTHORITY");
    return m;
}

std::optional<Rejection> format_row(const FieldMap& map, const std::vector<Field>& fields, int file_no,
                                    std::uint64_t line, std::string& out, RowCounters& counters) {
    if (fields.size() != map.columns)
        return Rejection{RejectReason::field_count, "expected " + std::to_string(map.columns) + " fields, found " +
                                                        std::to_string(fields.size())};
    std::string_view key = field_at(fields, map.key);
    if (is_sentinel(key)) return Rejection{RejectReason::missing_key, "no certificate key"};
    std::string_view date = field_at(fields, map.lodgement_date);
    if (is_sentinel(date)) return Rejection{RejectReason::missing_date, "no lodgement date"};
    if (!is_valid_date(date)) {
        std::string shown(date.substr(0, 40));
        return Rejection{RejectReason::bad_date, "lodgement date '" + shown + "' is not a YYYY-MM-DD date"};
    }

    RowCounters row;
    if (append_copy_text(out, key)) ++row.invalid_utf8_values;
    out += '\t';
    out.append(date);
    out += '\t';
    if (map.transaction_type >= 0)
        append_text_value(out, field_at(fields, map.transaction_type), row);
    else
        out += kNull;
    out += '\t';

    std::string_view area = field_at(fields, map.floor_area);
    if (is_sentinel(area)) {
        out += kNull;
    } else if (is_decimal(area)) {
        out.append(area);
    } else {
        out += kNull;
        ++row.invalid_values;
    }
    out += '\t';

    if (map.address >= 0) {
        append_text_value(out, field_at(fields, map.address), row);
    } else {
        // No ADDRESS column: join the non-empty ADDRESS1..3 the way the publisher builds ADDRESS.
        std::string joined;
        for (int part : map.address_parts) {
            std::string_view v = field_at(fields, part);
            if (is_sentinel(v)) continue;
            if (!joined.empty()) joined += ", ";
            joined.append(v);
        }
        append_text_value(out, joined, row);
    }
    out += '\t';
    append_text_value(out, field_at(fields, map.postcode), row);
    out += '\t';

    std::string_view uprn = field_at(fields, map.uprn);
    if (is_sentinel(uprn)) {
        out += kNull;
    } else if (is_uprn(uprn)) {
        out.append(uprn);
    } else {
        out += kNull;
        ++row.invalid_values;
    }
    out += '\t';
    append_text_value(out, field_at(fields, map.local_authority), row);
    out += '\t';
    out += std::to_string(file_no);
    out += '\t';
    out += std::to_string(line);
    out += '\n';
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
