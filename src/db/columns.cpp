#include "epc/db/columns.hpp"

#include <strings.h>

#include <algorithm>
#include <cctype>
#include <set>
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
        case ValueKind::timestamp: return "a YYYY-MM-DD HH:MM:SS time";
        case ValueKind::integer: return "a whole number";
        case ValueKind::decimal: return "a decimal number";
        case ValueKind::uprn: return "a UPRN of 1 to 18 digits";
    }
    return "?";
}

std::string_view sql_type(ValueKind kind) {
    switch (kind) {
        case ValueKind::text: return "text";
        case ValueKind::date: return "date";
        case ValueKind::timestamp: return "timestamp";
        case ValueKind::integer: return "integer";
        case ValueKind::decimal: return "numeric";
        case ValueKind::uprn: return "bigint";
    }
    return "?";
}

namespace {

constexpr CertTypes kDomestic = type_bit(CertType::domestic);
constexpr CertTypes kNonDomestic = type_bit(CertType::non_domestic);
constexpr CertTypes kDisplay = type_bit(CertType::display);
constexpr CertTypes kBuildings = kNonDomestic | kDisplay;  // the two non-domestic types

std::string lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; });
    return out;
}

// A column named in the tables as its one header name in lower case: nearly all of them.
Column plain(std::string_view header, ValueKind kind, CertTypes types = kAllTypes, Layouts layouts = kAllLayouts) {
    return Column{lower(header), kind, {{std::string(header), types, layouts}}};
}

Column in_default(Column column) {
    column.in_default = true;
    return column;
}

// The catalogue. Types follow what the publisher's data dictionaries and files hold: counts and
// ratings are integers; costs, emissions, energy and lengths are decimals (some are written with
// decimals in some releases); codes, bands, descriptions and Y/N flags are text (a flag also
// holds 'N/A', 'NO DATA!' and blanks, which text keeps or drops by the text rule).
std::vector<Column> build_catalogue() {
    using K = ValueKind;
    std::vector<Column> c = {
        // --- The default set, in its staging order (the order of today's tables and row hashes).
        // Legacy keys are 31-34 digits, too big for bigint; current ones read 0000-0000-0000-0000-0000.
        in_default({"cert_key",
                    K::text,
                    {{"LMK_KEY", kAllTypes, kLegacyService}, {"certificate_number", kAllTypes, kCurrentService}},
                    Requirement{RejectReason::missing_key, "no certificate key"},
                    Absence::error}),
        in_default(
            {"lodgement_date",
             K::date,
             {{"LODGEMENT_DATE"}},
             Requirement{RejectReason::missing_date, "no lodgement date", RejectReason::bad_date, "lodgement date"},
             Absence::error}),
        // Display certificates have no transaction type.
        in_default(plain("TRANSACTION_TYPE", K::text, kDomestic | kNonDomestic)),
        // One meaning, two names: non-domestic files call the floor area FLOOR_AREA.
        in_default({"total_floor_area",
                    K::decimal,
                    {{"TOTAL_FLOOR_AREA", kDomestic | kDisplay}, {"FLOOR_AREA", kNonDomestic}}}),
        in_default(
            {"address", K::text, {{"ADDRESS"}}, std::nullopt, Absence::warning, {"ADDRESS1", "ADDRESS2", "ADDRESS3"}}),
        in_default(plain("POSTCODE", K::text)),
        in_default(plain("UPRN", K::uprn)),
        in_default(plain("LOCAL_AUTHORITY", K::text)),

        // --- Every type.
        plain("ADDRESS1", K::text),
        plain("ADDRESS2", K::text),
        plain("ADDRESS3", K::text),
        plain("POSTTOWN", K::text),
        // Gone from the current service's files in 2026.
        plain("BUILDING_REFERENCE_NUMBER", K::text, kAllTypes, kLegacyService),
        plain("COUNTY", K::text, kAllTypes, kLegacyService),
        // New in the current service's files in 2026.
        plain("COUNTRY", K::text, kAllTypes, kCurrentService),
        plain("REGION", K::text, kAllTypes, kCurrentService),
        plain("PROPERTY_TYPE", K::text),
        plain("INSPECTION_DATE", K::date),
        plain("LODGEMENT_DATETIME", K::timestamp),
        plain("LOCAL_AUTHORITY_LABEL", K::text),
        plain("CONSTITUENCY", K::text),
        plain("CONSTITUENCY_LABEL", K::text),
        plain("UPRN_SOURCE", K::text),
        // In the non-domestic files from the start; appended to the legacy domestic file in later
        // releases (any name is matched in any type's files).
        plain("REPORT_TYPE", K::integer, kBuildings),

        // --- Domestic.
        plain("CURRENT_ENERGY_RATING", K::text, kDomestic),
        plain("POTENTIAL_ENERGY_RATING", K::text, kDomestic),
        plain("CURRENT_ENERGY_EFFICIENCY", K::integer, kDomestic),
        plain("POTENTIAL_ENERGY_EFFICIENCY", K::integer, kDomestic),
        plain("BUILT_FORM", K::text, kDomestic),
        plain("ENVIRONMENT_IMPACT_CURRENT", K::integer, kDomestic),
        plain("ENVIRONMENT_IMPACT_POTENTIAL", K::integer, kDomestic),
        plain("ENERGY_CONSUMPTION_CURRENT", K::decimal, kDomestic),
        plain("ENERGY_CONSUMPTION_POTENTIAL", K::decimal, kDomestic),
        plain("CO2_EMISSIONS_CURRENT", K::decimal, kDomestic),
        plain("CO2_EMISS_CURR_PER_FLOOR_AREA", K::decimal, kDomestic),
        plain("CO2_EMISSIONS_POTENTIAL", K::decimal, kDomestic),
        plain("LIGHTING_COST_CURRENT", K::decimal, kDomestic),
        plain("LIGHTING_COST_POTENTIAL", K::decimal, kDomestic),
        plain("HEATING_COST_CURRENT", K::decimal, kDomestic),
        plain("HEATING_COST_POTENTIAL", K::decimal, kDomestic),
        plain("HOT_WATER_COST_CURRENT", K::decimal, kDomestic),
        plain("HOT_WATER_COST_POTENTIAL", K::decimal, kDomestic),
        plain("ENERGY_TARIFF", K::text, kDomestic),
        plain("MAINS_GAS_FLAG", K::text, kDomestic),
        plain("FLOOR_LEVEL", K::text, kDomestic),
        plain("FLAT_TOP_STOREY", K::text, kDomestic),
        plain("FLAT_STOREY_COUNT", K::integer, kDomestic),
        plain("MAIN_HEATING_CONTROLS", K::text, kDomestic),
        plain("MULTI_GLAZE_PROPORTION", K::integer, kDomestic),
        plain("GLAZED_TYPE", K::text, kDomestic),
        plain("GLAZED_AREA", K::text, kDomestic),
        plain("EXTENSION_COUNT", K::integer, kDomestic),
        plain("NUMBER_HABITABLE_ROOMS", K::integer, kDomestic),
        plain("NUMBER_HEATED_ROOMS", K::integer, kDomestic),
        plain("LOW_ENERGY_LIGHTING", K::integer, kDomestic),
        plain("NUMBER_OPEN_FIREPLACES", K::integer, kDomestic),
        plain("HOTWATER_DESCRIPTION", K::text, kDomestic),
        plain("HOT_WATER_ENERGY_EFF", K::text, kDomestic),
        plain("HOT_WATER_ENV_EFF", K::text, kDomestic),
        plain("FLOOR_DESCRIPTION", K::text, kDomestic),
        plain("FLOOR_ENERGY_EFF", K::text, kDomestic),
        plain("FLOOR_ENV_EFF", K::text, kDomestic),
        plain("WINDOWS_DESCRIPTION", K::text, kDomestic),
        plain("WINDOWS_ENERGY_EFF", K::text, kDomestic),
        plain("WINDOWS_ENV_EFF", K::text, kDomestic),
        plain("WALLS_DESCRIPTION", K::text, kDomestic),
        plain("WALLS_ENERGY_EFF", K::text, kDomestic),
        plain("WALLS_ENV_EFF", K::text, kDomestic),
        plain("SECONDHEAT_DESCRIPTION", K::text, kDomestic),
        plain("SHEATING_ENERGY_EFF", K::text, kDomestic),
        plain("SHEATING_ENV_EFF", K::text, kDomestic),
        plain("ROOF_DESCRIPTION", K::text, kDomestic),
        plain("ROOF_ENERGY_EFF", K::text, kDomestic),
        plain("ROOF_ENV_EFF", K::text, kDomestic),
        plain("MAINHEAT_DESCRIPTION", K::text, kDomestic),
        plain("MAINHEAT_ENERGY_EFF", K::text, kDomestic),
        plain("MAINHEAT_ENV_EFF", K::text, kDomestic),
        plain("MAINHEATCONT_DESCRIPTION", K::text, kDomestic),
        plain("MAINHEATC_ENERGY_EFF", K::text, kDomestic),
        plain("MAINHEATC_ENV_EFF", K::text, kDomestic),
        plain("LIGHTING_DESCRIPTION", K::text, kDomestic),
        plain("LIGHTING_ENERGY_EFF", K::text, kDomestic),
        plain("LIGHTING_ENV_EFF", K::text, kDomestic),
        plain("MAIN_FUEL", K::text, kDomestic),
        plain("WIND_TURBINE_COUNT", K::integer, kDomestic),
        plain("HEAT_LOSS_CORRIDOR", K::text, kDomestic),
        plain("UNHEATED_CORRIDOR_LENGTH", K::decimal, kDomestic),
        plain("FLOOR_HEIGHT", K::decimal, kDomestic),
        plain("PHOTO_SUPPLY", K::decimal, kDomestic),
        plain("SOLAR_WATER_HEATING_FLAG", K::text, kDomestic),
        plain("MECHANICAL_VENTILATION", K::text, kDomestic),
        plain("CONSTRUCTION_AGE_BAND", K::text, kDomestic),  // 'England and Wales: 1900-1929', or a bare year
        plain("TENURE", K::text, kDomestic),
        plain("FIXED_LIGHTING_OUTLETS_COUNT", K::integer, kDomestic),
        // One meaning, two names: the current service's export renamed this count in 2026 (its
        // data dictionary still says LOW_ENERGY_FIXED_LIGHT_COUNT).
        {"low_energy_fixed_light_count",
         K::integer,
         {{"LOW_ENERGY_FIXED_LIGHT_COUNT", kDomestic, kLegacyService},
          {"LOW_ENERGY_FIXED_LIGHTING_OUTLETS_COUNT", kDomestic, kCurrentService}}},

        // --- Non-domestic and display.
        plain("MAIN_HEATING_FUEL", K::text, kBuildings),
        plain("SPECIAL_ENERGY_USES", K::text, kBuildings),
        plain("RENEWABLE_SOURCES", K::text, kBuildings),
        plain("AIRCON_PRESENT", K::text, kBuildings),
        plain("AIRCON_KW_RATING", K::decimal, kBuildings),
        plain("ESTIMATED_AIRCON_KW_RATING", K::text, kBuildings),  // a band: 'Under 12 kW'
        plain("AC_INSPECTION_COMMISSIONED", K::text, kBuildings),
        plain("BUILDING_ENVIRONMENT", K::text, kBuildings),

        // --- Non-domestic.
        plain("ASSET_RATING", K::integer, kNonDomestic),
        plain("ASSET_RATING_BAND", K::text, kNonDomestic),
        plain("NEW_BUILD_BENCHMARK", K::integer, kNonDomestic),
        plain("EXISTING_STOCK_BENCHMARK", K::integer, kNonDomestic),
        plain("BUILDING_LEVEL", K::integer, kNonDomestic),
        plain("OTHER_FUEL_DESC", K::text, kNonDomestic),
        plain("STANDARD_EMISSIONS", K::decimal, kNonDomestic),
        plain("TARGET_EMISSIONS", K::decimal, kNonDomestic),
        plain("TYPICAL_EMISSIONS", K::decimal, kNonDomestic),
        plain("BUILDING_EMISSIONS", K::decimal, kNonDomestic),
        plain("PRIMARY_ENERGY_VALUE", K::decimal, kNonDomestic),

        // --- Display.
        plain("CURRENT_OPERATIONAL_RATING", K::integer, kDisplay),
        plain("YR1_OPERATIONAL_RATING", K::integer, kDisplay),
        plain("YR2_OPERATIONAL_RATING", K::integer, kDisplay),
        plain("OPERATIONAL_RATING_BAND", K::text, kDisplay),
        plain("ELECTRIC_CO2", K::decimal, kDisplay),
        plain("HEATING_CO2", K::decimal, kDisplay),
        plain("RENEWABLES_CO2", K::decimal, kDisplay),
        plain("MAIN_BENCHMARK", K::text, kDisplay),
        plain("OTHER_FUEL", K::text, kDisplay),
        plain("OCCUPANCY_LEVEL", K::text, kDisplay),
        plain("ANNUAL_THERMAL_FUEL_USAGE", K::decimal, kDisplay),
        plain("TYPICAL_THERMAL_USE", K::decimal, kDisplay),
        plain("ANNUAL_ELECTRICAL_FUEL_USAGE", K::decimal, kDisplay),
        plain("TYPICAL_ELECTRICAL_FUEL_USAGE", K::decimal, kDisplay),
        plain("RENEWABLES_FUEL_THERMAL", K::decimal, kDisplay),
        plain("RENEWABLES_ELECTRICAL", K::decimal, kDisplay),
        plain("YR1_ELECTRICITY_CO2", K::decimal, kDisplay),
        plain("YR2_ELECTRICITY_CO2", K::decimal, kDisplay),
        plain("YR1_HEATING_CO2", K::decimal, kDisplay),
        plain("YR2_HEATING_CO2", K::decimal, kDisplay),
        plain("YR1_RENEWABLES_CO2", K::decimal, kDisplay),
        plain("YR2_RENEWABLES_CO2", K::decimal, kDisplay),
        plain("BUILDING_CATEGORY", K::text, kDisplay),
        plain("NOMINATED_DATE", K::date, kDisplay),
        plain("OR_ASSESSMENT_END_DATE", K::date, kDisplay),
    };
    return c;
}

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
           });
}

}  // namespace

const std::vector<Column>& certificate_columns() {
    static const std::vector<Column> columns = build_catalogue();
    return columns;
}

const Column& certificate_column(std::string_view name) {
    for (const Column& column : certificate_columns())
        if (column.name == name) return column;
    throw std::out_of_range("no certificate column " + std::string(name));
}

const Column* find_certificate_column(std::string_view name) {
    for (const Column& column : certificate_columns()) {
        if (iequals(column.name, name)) return &column;
        for (const HeaderName& h : column.header)
            if (iequals(h.name, name)) return &column;
    }
    return nullptr;
}

const std::vector<BookkeepingColumn>& bookkeeping_columns(Dataset dataset) {
    static const std::vector<BookkeepingColumn> certificates = {
        {"file_no", "int NOT NULL", "import_file.file_no of the file the row came from"},
        {"line_no", "bigint NOT NULL", "physical line where the record starts (header = 1)"},
        {"address_key", "text", "what the geocode stage locates (see address_key())"},
        {"row_hash", "bigint NOT NULL", "hash64() of the certificate values as loaded: what publish compares"},
    };
    static const std::vector<BookkeepingColumn> recommendations = {
        certificates[0],
        certificates[1],
        {"row_hash", "bigint NOT NULL", "hash64() of the recommendation's values as loaded: what publish compares"},
    };
    return dataset == Dataset::certificates ? certificates : recommendations;
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

// --- The set a run keeps ---

const ColumnSet& ColumnSet::defaults() {
    static const ColumnSet set = [] {
        std::vector<const Column*> chosen;
        for (const Column& c : certificate_columns())
            if (c.in_default) chosen.push_back(&c);
        return of(chosen);
    }();
    return set;
}

ColumnSet ColumnSet::of(const std::vector<const Column*>& known, const std::vector<Column>& unknown) {
    std::set<const Column*> wanted(known.begin(), known.end());
    ColumnSet set;
    // Catalogue order, which puts the default columns first.
    for (const Column& c : certificate_columns())
        if (c.in_default || wanted.count(&c)) set.columns_.push_back(c);
    for (const Column& c : unknown)
        if (!set.find(c.name)) set.columns_.push_back(c);
    return set;
}

ColumnSet ColumnSet::from_table(const std::vector<std::string>& table_columns) {
    std::vector<const Column*> known;
    std::vector<Column> unknown;
    for (const std::string& name : table_columns) {
        const bool bookkeeping = std::any_of(bookkeeping_columns().begin(), bookkeeping_columns().end(),
                                             [&](const BookkeepingColumn& b) { return b.name == name; }) ||
                                 std::any_of(production_extra_columns().begin(), production_extra_columns().end(),
                                             [&](std::string_view extra) { return extra == name; });
        if (bookkeeping) continue;
        const auto known_column = std::find_if(certificate_columns().begin(), certificate_columns().end(),
                                               [&](const Column& c) { return c.name == name; });
        if (known_column != certificate_columns().end()) known.push_back(&*known_column);
        else
            unknown.push_back(
                Column{name, ValueKind::text, {{name}}, std::nullopt, Absence::warning, {}, false, false});
    }
    return of(known, unknown);
}

const Column* ColumnSet::find(std::string_view name) const {
    for (const Column& c : columns_)
        if (c.name == name) return &c;
    return nullptr;
}

std::vector<std::string> ColumnSet::names() const {
    std::vector<std::string> names;
    names.reserve(columns_.size());
    for (const Column& c : columns_) names.push_back(c.name);
    return names;
}

ColumnChoice parse_column_choice(std::string_view list) {
    auto trimmed = [](std::string_view s) {
        while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
        while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
        return s;
    };
    list = trimmed(list);
    ColumnChoice choice;
    if (list.empty()) throw Error(exit_usage, "--columns: empty list (leave the option out for the default columns)");
    if (iequals(list, "all")) {
        choice.mode = ColumnChoice::all;
        return choice;
    }
    choice.mode = ColumnChoice::only;
    if (list.front() == '+') {
        choice.mode = ColumnChoice::add;
        list.remove_prefix(1);
    }
    std::size_t start = 0;
    while (start <= list.size()) {
        std::size_t comma = list.find(',', start);
        if (comma == std::string_view::npos) comma = list.size();
        const std::string_view name = trimmed(list.substr(start, comma - start));
        if (name.empty())
            throw Error(exit_usage, "--columns: an empty name in '" + std::string(list) + "' (a stray comma?)");
        if (iequals(name, "all"))
            throw Error(exit_usage, "--columns: 'all' stands alone; it cannot be combined with other names");
        choice.names.emplace_back(name);
        start = comma + 1;
    }
    return choice;
}

std::string describe(const ColumnChoice& choice) {
    if (choice.mode == ColumnChoice::defaults) return "default";
    if (choice.mode == ColumnChoice::all) return "all";
    std::string text = choice.mode == ColumnChoice::add ? "+" : "";
    for (std::size_t i = 0; i < choice.names.size(); ++i) text += (i ? "," : "") + choice.names[i];
    return text;
}

std::string unknown_column_name(std::string_view header_name) {
    std::string name;
    for (char c : header_name) {
        const char l = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        name += (l >= 'a' && l <= 'z') || (l >= '0' && l <= '9') || l == '_' ? l : '_';
    }
    const bool taken = std::any_of(bookkeeping_columns().begin(), bookkeeping_columns().end(),
                                   [&](const BookkeepingColumn& b) { return b.name == name; }) ||
                       std::any_of(production_extra_columns().begin(), production_extra_columns().end(),
                                   [&](std::string_view extra) { return extra == name; }) ||
                       std::any_of(certificate_columns().begin(), certificate_columns().end(),
                                   [&](const Column& c) { return c.name == name; });
    if (name.empty() || (name.front() >= '0' && name.front() <= '9') || taken) name = "x_" + name;
    if (name.size() > 63) name.resize(63);
    return name;
}

namespace {

// The header columns of a file of `type` that a catalogue column reads.
bool file_has(const std::vector<std::string>& header, const Column& column, CertType type) {
    for (std::string_view name : header_match_order(column, type))
        for (const std::string& h : header)
            if (iequals(h, name)) return true;
    return !column.joined_parts.empty() && std::any_of(header.begin(), header.end(), [&](const std::string& h) {
        return iequals(h, column.joined_parts.front());
    });
}

// Every distinct header name of the files, in first-seen order.
std::vector<std::string> distinct_names(const std::vector<std::vector<std::string>>& headers) {
    std::vector<std::string> names;
    for (const auto& header : headers)
        for (const std::string& h : header)
            if (std::none_of(names.begin(), names.end(), [&](const std::string& n) { return iequals(n, h); }))
                names.push_back(h);
    return names;
}

std::string join(const std::vector<std::string>& names) {
    std::string text;
    for (const std::string& n : names) text += (text.empty() ? "" : ", ") + n;
    return text;
}

}  // namespace

ResolvedColumns resolve_columns(const ColumnChoice& choice, CertType type,
                                const std::vector<std::vector<std::string>>& headers) {
    ResolvedColumns resolved;
    std::vector<const Column*> known;
    std::vector<Column> unknown;
    const std::vector<std::string> in_files = distinct_names(headers);
    for (const std::string& h : in_files) {
        const Column* c = find_certificate_column(h);
        if (c && choice.mode == ColumnChoice::all) known.push_back(c);
        if (c) continue;
        // Header drift: named whatever the choice, loaded (as text, under its own name) with `all`.
        resolved.unknown.push_back(h);
        if (choice.mode == ColumnChoice::all)
            unknown.push_back(Column{
                unknown_column_name(h), ValueKind::text, {{h}}, std::nullopt, Absence::warning, {}, false, false});
    }
    resolved.unknown_loaded = choice.mode == ColumnChoice::all;
    std::vector<std::string> absent;
    for (const std::string& name : choice.names) {
        const Column* c = find_certificate_column(name);
        if (!c) {
            absent.push_back(name);
            continue;
        }
        std::size_t files = 0;
        for (const auto& header : headers) files += file_has(header, *c, type) ? 1 : 0;
        if (files == 0) absent.push_back(name);
        else if (files < headers.size())
            resolved.warnings.push_back(c->name + ": " + std::to_string(headers.size() - files) + " of the " +
                                        std::to_string(headers.size()) + " certificates files lack it; NULL there");
        known.push_back(c);
    }
    if (!absent.empty())
        throw Error(exit_usage, "--columns: no certificates file of this archive has " + join(absent) +
                                    "; the files have: " + join(in_files));
    // The default columns stay whatever the list (ColumnSet::of): the key and lodgement date make
    // a row, geocoding reads the address, and production keeps the columns its readers know.
    resolved.set = ColumnSet::of(known, unknown);
    return resolved;
}

ColumnSet ColumnSet::recommendations(const std::vector<std::vector<std::string>>& headers) {
    // The recommendations' own data dictionary: their numbers. Everything else is text.
    static const std::set<std::string> kIntegers = {"improvement_item", "improvement_id"};
    ColumnSet set;
    set.dataset_ = Dataset::recommendations;
    const Column& key = certificate_column(kKeyColumn);
    set.columns_.push_back(key);
    for (const std::string& header_name : distinct_names(headers)) {
        const bool is_key = std::any_of(key.header.begin(), key.header.end(), [&](const HeaderName& h) {
            return strcasecmp(h.name.c_str(), header_name.c_str()) == 0;
        });
        const std::string name = unknown_column_name(header_name);
        if (is_key || set.find(name)) continue;
        const ValueKind kind = kIntegers.count(name) ? ValueKind::integer : ValueKind::text;
        set.columns_.push_back(Column{name, kind, {{header_name}}, std::nullopt, Absence::warning, {}, false, true});
    }
    return set;
}

// --- SQL generated from the catalogue and a set ---

namespace {

// Wide enough for every column name and one space: the DDL lines up.
std::size_t ddl_name_width(const ColumnSet& set) {
    std::size_t width = 0;
    for (const Column& c : set.columns()) width = std::max(width, c.name.size());
    for (const BookkeepingColumn& c : bookkeeping_columns(set.dataset())) width = std::max(width, c.name.size());
    return width + 1;
}

void append_padded(std::string& out, std::string_view text, std::size_t width) {
    out.append(text);
    if (text.size() < width) out.append(width - text.size(), ' ');
}

}  // namespace

namespace {

// Production's identifiers, the key and the postcode (both indexed there), are compared byte by
// byte (COLLATE "C"): their byte order is their natural order (in en_GB's, "AB1 2CD" would sort
// after "AB12 3EF"), a prefix LIKE can use their indexes, and sorting them, to build those
// indexes, is about twice as fast as in a language's collation (strcoll, no abbreviated keys).
// Staging keeps the database's collation: production tables made before this have it, and a
// join of staging with production compares in production's collation where they differ, so
// production's key index serves either way.
bool identifier(const Column& c) { return c.name == kKeyColumn || c.name == "postcode"; }

std::string columns_ddl(const ColumnSet& set, bool identifiers_in_byte_order) {
    const std::size_t width = ddl_name_width(set);
    std::string ddl;
    for (const Column& c : set.columns()) {
        if (!ddl.empty()) ddl += ',';
        ddl += "\n    ";
        append_padded(ddl, c.name, width);
        ddl.append(sql_type(c.kind));
        if (identifiers_in_byte_order && identifier(c)) ddl += " COLLATE \"C\"";
        if (c.required) ddl += " NOT NULL";
    }
    return ddl;
}

}  // namespace

std::string certificate_columns_ddl(const ColumnSet& set) { return columns_ddl(set, false); }

std::string production_columns_ddl(const ColumnSet& set) {
    return columns_ddl(set, true) + ",\n" +
           R"(    latitude          double precision,  -- from epc.geocode_cache: NULL when not located
    longitude         double precision,
    geocode_provider  text,
    geocode_precision text,              -- property | street | postcode
    run_id            bigint NOT NULL,   -- the import_run that last added or changed the row
    row_hash          bigint,            -- staging's row_hash: what publish compares
    address_key       text COLLATE "C"   -- staging's address_key: what the geocode stage located, as the cache has it)";
}

std::string staging_columns_ddl(const ColumnSet& set) {
    const std::size_t width = ddl_name_width(set);
    std::size_t type_width = 0;
    const auto& bookkeeping = bookkeeping_columns(set.dataset());
    for (const BookkeepingColumn& c : bookkeeping) type_width = std::max(type_width, c.sql_type.size() + 1);
    std::string ddl = certificate_columns_ddl(set) + ",";
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
    return certificate_column_list(ColumnSet::defaults(), alias);
}

std::string certificate_column_list(const ColumnSet& set, std::string_view alias) {
    std::string list;
    for (const Column& c : set.columns()) {
        if (!list.empty()) list += ", ";
        if (!alias.empty()) list.append(alias).append(".");
        list.append(c.name);
    }
    return list;
}

std::string staging_column_list(const ColumnSet& set) { return join(staging_column_names(set)); }

std::vector<std::string> staging_column_names(const ColumnSet& set) {
    std::vector<std::string> names = set.names();
    for (const BookkeepingColumn& c : bookkeeping_columns(set.dataset())) names.emplace_back(c.name);
    return names;
}

std::size_t staging_column_count(const ColumnSet& set) {
    return set.size() + bookkeeping_columns(set.dataset()).size();
}

std::string concat_ws_expression(std::string_view alias) { return concat_ws_expression(ColumnSet::defaults(), alias); }

std::string concat_ws_expression(const ColumnSet& set, std::string_view alias) {
    return "concat_ws(',', " + certificate_column_list(set, alias) + ")";
}

const std::vector<std::string_view>& production_extra_columns() {
    static const std::vector<std::string_view> names = {
        "latitude", "longitude", "geocode_provider", "geocode_precision", "run_id", "row_hash", "address_key"};
    return names;
}

std::string production_column_list(std::string_view alias) {
    return production_column_list(ColumnSet::defaults(), alias);
}

std::string production_column_list(const ColumnSet& set, std::string_view alias) {
    std::string list = certificate_column_list(set, alias);
    for (std::string_view extra : production_extra_columns()) {
        list.append(", ");
        if (!alias.empty()) list.append(alias).append(".");
        list.append(extra);
    }
    return list;
}

}  // namespace epc
