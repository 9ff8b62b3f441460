#include "epc/db/copy_binary.hpp"

#include <algorithm>
#include <array>
#include <stdexcept>

namespace epc::db::binary {

std::int32_t days_since_2000(std::string_view date) {
    int y = (date[0] - '0') * 1000 + (date[1] - '0') * 100 + (date[2] - '0') * 10 + (date[3] - '0');
    int m = (date[5] - '0') * 10 + (date[6] - '0');
    int d = (date[8] - '0') * 10 + (date[9] - '0');
    // Days from the civil date (proleptic Gregorian), counted from 1970-01-01, then shifted to
    // PostgreSQL's epoch 2000-01-01 (10957 days later).
    y -= m <= 2;
    const int era = (y >= 0 ? y : y - 399) / 400;
    const int yoe = y - era * 400;
    const int doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468 - 10957;
}

void put_numeric(std::string& out, std::string_view decimal) {
    std::string_view s = decimal;
    // PostgreSQL's numeric wire form: ndigits, weight, sign, dscale, then base-10000 digits, the
    // first of weight `weight` (value = sum digit[i] * 10000^(weight - i)).
    bool negative = !s.empty() && s[0] == '-';
    if (!s.empty() && (s[0] == '-' || s[0] == '+')) s.remove_prefix(1);
    std::size_t dot = s.find('.');
    std::string_view int_part = s.substr(0, dot);
    std::string_view frac_part = dot == std::string_view::npos ? std::string_view() : s.substr(dot + 1);
    while (!int_part.empty() && int_part[0] == '0') int_part.remove_prefix(1);
    // On the stack: a valid decimal (at most 1000 characters) has at most 251 base-10000 digits.
    if (int_part.size() + frac_part.size() > 1000) throw std::invalid_argument("decimal too long");
    // Filled before it is read; zeroing 504 bytes for every value would cost in the loader's hot path.
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init)
    std::array<std::uint16_t, 252> digits;
    std::size_t count = 0;
    const std::size_t int_groups = (int_part.size() + 3) / 4;
    std::size_t first = int_part.size() - (int_groups ? (int_groups - 1) * 4 : 0);  // digits in the first group
    std::size_t pos = 0;
    for (std::size_t g = 0; g < int_groups; ++g) {
        std::size_t len = g == 0 ? first : 4;
        std::uint16_t v = 0;
        for (std::size_t k = 0; k < len; ++k) v = static_cast<std::uint16_t>(v * 10 + (int_part[pos++] - '0'));
        digits[count++] = v;
    }
    for (std::size_t f = 0; f < frac_part.size(); f += 4) {
        std::uint16_t v = 0;
        for (std::size_t k = 0; k < 4; ++k)
            v = static_cast<std::uint16_t>(v * 10 + (f + k < frac_part.size() ? frac_part[f + k] - '0' : 0));
        digits[count++] = v;
    }
    int weight = static_cast<int>(int_groups) - 1;
    std::size_t lead = 0;
    while (lead < count && digits[lead] == 0) ++lead, --weight;
    while (count > lead && digits[count - 1] == 0) --count;
    const std::size_t ndigits = count - lead;
    if (ndigits == 0) weight = 0, negative = false;
    put32(out, static_cast<std::uint32_t>(8 + 2 * ndigits));
    put16(out, static_cast<std::uint16_t>(ndigits));
    put16(out, static_cast<std::uint16_t>(static_cast<std::int16_t>(weight)));
    put16(out, negative ? 0x4000 : 0x0000);
    put16(out, static_cast<std::uint16_t>(frac_part.size()));
    for (std::size_t i = lead; i < lead + ndigits; ++i) put16(out, digits[i]);
}

}  // namespace epc::db::binary
