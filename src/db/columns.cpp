#include "epc/db/columns.hpp"

#include <algorithm>
#include <stdexcept>

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

std::string_view value_kind_expectation(ValueKind kind) {
    switch (kind) {
        case ValueKind::text: return "text";
        case ValueKind::date: return "a YYYY-MM-DD date";
        case ValueKind::decimal: return "a decimal number";
        case ValueKind::uprn: return "a UPRN of 1 to 18 digits";
    }
    return "?";
}

const std::vector<Column>& certificate_columns() {
    constexpr CertTypes domestic = type_bit(CertType::domestic);
    constexpr CertTypes non_domestic = type_bit(CertType::non_domestic);
    constexpr CertTypes display = type_bit(CertType::display);
    static const std::vector<Column> columns = {
        // Legacy keys are 31-34 digits, too big for bigint; current ones read 0000-0000-0000-0000-0000.
        {"cert_key",
         "text",
         ValueKind::text,
         {{"LMK_KEY", kAllTypes, kLegacyService}, {"certificate_number", kAllTypes, kCurrentService}},
         Requirement{RejectReason::missing_key, "no certificate key"},
         Absence::error},
        {"lodgement_date",
         "date",
         ValueKind::date,
         {{"LODGEMENT_DATE"}},
         Requirement{RejectReason::missing_date, "no lodgement date", RejectReason::bad_date, "lodgement date"},
         Absence::error},
        // Display certificates have no transaction type.
        {"transaction_type", "text", ValueKind::text, {{"TRANSACTION_TYPE", domestic | non_domestic}}},
        {"total_floor_area",
         "numeric",
         ValueKind::decimal,
         {{"TOTAL_FLOOR_AREA", domestic | display}, {"FLOOR_AREA", non_domestic}}},
        {"address",
         "text",
         ValueKind::text,
         {{"ADDRESS"}},
         std::nullopt,
         Absence::warning,
         {"ADDRESS1", "ADDRESS2", "ADDRESS3"}},
        {"postcode", "text", ValueKind::text, {{"POSTCODE"}}},
        {"uprn", "bigint", ValueKind::uprn, {{"UPRN"}}},
        {"local_authority", "text", ValueKind::text, {{"LOCAL_AUTHORITY"}}},
    };
    return columns;
}

const Column& certificate_column(std::string_view name) {
    for (const Column& column : certificate_columns())
        if (column.name == name) return column;
    throw std::out_of_range("no certificate column " + std::string(name));
}

const std::vector<BookkeepingColumn>& bookkeeping_columns() {
    static const std::vector<BookkeepingColumn> columns = {
        {"file_no", "int NOT NULL", "import_file.file_no of the file the row came from"},
        {"line_no", "bigint NOT NULL", "physical line where the record starts (header = 1)"},
        {"address_key", "text", "what the geocode stage locates (see address_key())"},
        {"row_hash", "bigint NOT NULL", "hash64() of the certificate values as loaded: what publish compares"},
    };
    return columns;
}

std::vector<std::string_view> header_match_order(const Column& column, CertType type) {
    std::vector<std::string_view> names;
    for (const HeaderName& h : column.header)
        if (h.types & type_bit(type)) names.push_back(h.name);
    for (const HeaderName& h : column.header)
        if (!(h.types & type_bit(type))) names.push_back(h.name);
    return names;
}

std::vector<std::string> header_names(const Column& column, CertType type, Layout layout) {
    std::vector<std::string> names;
    for (const HeaderName& h : column.header) {
        if (!(h.types & type_bit(type)) || !(h.layouts & layout_bit(layout))) continue;
        std::string name(h.name);
        if (layout == Layout::current)
            std::transform(name.begin(), name.end(), name.begin(),
                           [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; });
        names.push_back(std::move(name));
    }
    return names;
}

bool expected_in(const Column& column, CertType type) {
    return std::any_of(column.header.begin(), column.header.end(),
                       [&](const HeaderName& h) { return (h.types & type_bit(type)) != 0; });
}

std::string header_label(const Column& column) {
    std::string label;
    for (const HeaderName& h : column.header) {
        if (!label.empty()) label += '/';
        label.append(h.name);
    }
    return label;
}

namespace {

// Wide enough for every column name and one space: the DDL lines up.
std::size_t ddl_name_width() {
    std::size_t width = 0;
    for (const Column& c : certificate_columns()) width = std::max(width, c.name.size());
    for (const BookkeepingColumn& c : bookkeeping_columns()) width = std::max(width, c.name.size());
    return width + 1;
}

void append_padded(std::string& out, std::string_view text, std::size_t width) {
    out.append(text);
    if (text.size() < width) out.append(width - text.size(), ' ');
}

}  // namespace

std::string certificate_columns_ddl() {
    const std::size_t width = ddl_name_width();
    std::string ddl;
    for (const Column& c : certificate_columns()) {
        if (!ddl.empty()) ddl += ',';
        ddl += "\n    ";
        append_padded(ddl, c.name, width);
        ddl.append(c.sql_type);
        if (c.required) ddl += " NOT NULL";
    }
    return ddl;
}

std::string staging_columns_ddl() {
    const std::size_t width = ddl_name_width();
    std::size_t type_width = 0;
    for (const BookkeepingColumn& c : bookkeeping_columns()) type_width = std::max(type_width, c.sql_type.size() + 1);
    std::string ddl = certificate_columns_ddl() + ",";
    const auto& bookkeeping = bookkeeping_columns();
    for (std::size_t i = 0; i < bookkeeping.size(); ++i) {
        const bool last = i + 1 == bookkeeping.size();
        ddl += "\n    ";
        append_padded(ddl, bookkeeping[i].name, width);
        append_padded(ddl, std::string(bookkeeping[i].sql_type) + (last ? "" : ","), type_width + 1);
        ddl += " -- ";
        ddl.append(bookkeeping[i].note);
    }
    return ddl;
}

std::string certificate_column_list(std::string_view alias) {
    std::string list;
    for (const Column& c : certificate_columns()) {
        if (!list.empty()) list += ", ";
        if (!alias.empty()) list.append(alias).append(".");
        list.append(c.name);
    }
    return list;
}

std::string staging_column_list() {
    std::string list = certificate_column_list();
    for (const BookkeepingColumn& c : bookkeeping_columns()) list.append(", ").append(c.name);
    return list;
}

std::size_t staging_column_count() { return certificate_columns().size() + bookkeeping_columns().size(); }

std::string concat_ws_expression(std::string_view alias) {
    return "concat_ws(',', " + certificate_column_list(alias) + ")";
}

std::string production_extra_columns_ddl() {
    return R"(    latitude          double precision,  -- from epc.geocode_cache: NULL when not located
    longitude         double precision,
    geocode_provider  text,
    geocode_precision text,              -- property | street | postcode
    run_id            bigint NOT NULL,   -- the import_run that last added or changed the row
    row_hash          bigint,            -- staging's row_hash: what publish compares
    address_key       text               -- staging's address_key: what the geocode stage located)";
}

std::string production_column_list(std::string_view alias) {
    std::string list = certificate_column_list(alias);
    for (const char* extra :
         {"latitude", "longitude", "geocode_provider", "geocode_precision", "run_id", "row_hash", "address_key"}) {
        list.append(", ");
        if (!alias.empty()) list.append(alias).append(".");
        list.append(extra);
    }
    return list;
}

}  // namespace epc
