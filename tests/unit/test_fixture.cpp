// Tests of the fixture generator itself: the zips it writes, their names and headers, determinism,
// and that its expectations agree with an independent reading of the bytes it wrote.
#include <gtest/gtest.h>
#include <zip.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "fixture/fixture.hpp"

namespace fx = epc::fixture;
using epc::CertType;
using epc::Layout;

namespace {

std::string temp_path(const std::string& name) { return testing::TempDir() + "fixture_test_" + name; }

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

struct ZipEntry {
    std::string name;
    std::string content;
};

// Reads every entry with libzip (consistency checks on).
std::vector<ZipEntry> read_zip(const std::string& path) {
    int err = 0;
    zip_t* za = zip_open(path.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &err);
    if (!za) throw std::runtime_error("zip_open failed with " + std::to_string(err));
    std::vector<ZipEntry> entries;
    zip_int64_t n = zip_get_num_entries(za, 0);
    for (zip_int64_t i = 0; i < n; ++i) {
        ZipEntry e;
        e.name = zip_get_name(za, static_cast<zip_uint64_t>(i), 0);
        zip_file_t* f = zip_fopen_index(za, static_cast<zip_uint64_t>(i), 0);
        if (!f) throw std::runtime_error("cannot open " + e.name);
        char buf[65536];
        zip_int64_t got;
        while ((got = zip_fread(f, buf, sizeof buf)) > 0) e.content.append(buf, static_cast<std::size_t>(got));
        zip_fclose(f);
        if (got < 0) throw std::runtime_error("cannot read " + e.name);
        entries.push_back(std::move(e));
    }
    zip_close(za);
    return entries;
}

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    std::string cur;
    for (char c : s) {
        if (c == sep) {
            out.push_back(cur);
            cur.clear();
        } else {
            cur.push_back(c);
        }
    }
    out.push_back(cur);
    return out;
}

std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// ---- An independent reading of certificates.csv by the importer's rules (written from the rules,
// not from the generator), to check that the generator's account matches the bytes it wrote.

struct Record {
    std::vector<std::string> fields;
    std::uint64_t line = 0;
};

std::vector<Record> parse_csv(const std::string& data) {
    std::vector<Record> records;
    std::size_t i = 0;
    if (data.compare(0, 3, "\xEF\xBB\xBF") == 0) i = 3;
    std::uint64_t line = 1;
    const std::size_t n = data.size();
    while (i < n) {
        // Blank line (empty after removing \r): skipped.
        std::size_t eol = data.find('\n', i);
        std::size_t end = eol == std::string::npos ? n : eol;
        std::string_view physical(data.data() + i, end - i);
        if (physical.find_first_not_of('\r') == std::string_view::npos) {
            i = eol == std::string::npos ? n : eol + 1;
            ++line;
            continue;
        }
        Record r;
        r.line = line;
        std::string field;
        bool quoted = false, was_quoted = false;
        while (i < n) {
            char c = data[i];
            if (quoted) {
                if (c == '\\' && i + 1 < n && data[i + 1] == '"') {
                    field.push_back('"');
                    i += 2;
                } else if (c == '"' && i + 1 < n && data[i + 1] == '"') {
                    field.push_back('"');
                    i += 2;
                } else if (c == '"') {
                    quoted = false;
                    ++i;
                } else {
                    if (c == '\n') ++line;
                    field.push_back(c);
                    ++i;
                }
                continue;
            }
            if (c == '"' && field.empty() && !was_quoted) {
                quoted = was_quoted = true;
                ++i;
            } else if (c == ',') {
                r.fields.push_back(field);
                field.clear();
                was_quoted = false;
                ++i;
            } else if (c == '\n') {
                ++i;
                ++line;
                break;
            } else {
                field.push_back(c);
                ++i;
            }
        }
        if (!field.empty() && field.back() == '\r' && !quoted) field.pop_back();
        r.fields.push_back(field);
        records.push_back(std::move(r));
    }
    return records;
}

std::string trim(const std::string& s) {
    std::size_t b = s.find_first_not_of(" \t");
    if (b == std::string::npos) return "";
    std::size_t e = s.find_last_not_of(" \t");
    return s.substr(b, e - b + 1);
}

bool is_sentinel(const std::string& t) {
    static const std::set<std::string> s = {"",    "no data!",     "nodata!", "invalid!",
                                            "n/a", "not recorded", "unknown", "dec or 9999"};
    return s.count(lower(t)) != 0;
}

// What a text column drops: empty and the publisher's error markers.
bool is_error_marker(const std::string& t) {
    static const std::set<std::string> s = {"", "no data!", "nodata!", "invalid!"};
    return s.count(lower(t)) != 0;
}

bool valid_date(const std::string& s) {
    static const std::regex re("^(\\d{4})-(\\d{2})-(\\d{2})$");
    std::smatch m;
    if (!std::regex_match(s, m, re)) return false;
    int y = std::stoi(m[1]), mo = std::stoi(m[2]), d = std::stoi(m[3]);
    if (mo < 1 || mo > 12 || d < 1) return false;
    int days[] = {31, (y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)) ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return d <= days[mo - 1];
}

// Replace bytes that are not part of a valid UTF-8 sequence (validated with a decoder written
// differently from the generator's: decode, then check the code point's range and length).
std::string fix_utf8(const std::string& s, bool& replaced) {
    std::string out;
    std::size_t i = 0;
    while (i < s.size()) {
        unsigned char b = static_cast<unsigned char>(s[i]);
        std::size_t len = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
        bool ok = len > 0 && i + len <= s.size();
        std::uint32_t cp = len == 1 ? b : len == 2 ? (b & 0x1F) : len == 3 ? (b & 0x0F) : (b & 0x07);
        for (std::size_t k = 1; ok && k < len; ++k) {
            unsigned char c = static_cast<unsigned char>(s[i + k]);
            if ((c & 0xC0) != 0x80) ok = false;
            cp = (cp << 6) | (c & 0x3F);
        }
        if (ok) {
            static const std::uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
            if (cp < min[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) ok = false;
        }
        if (ok) {
            out.append(s, i, len);
            i += len;
        } else {
            out.append("\xEF\xBF\xBD");
            replaced = true;
            ++i;
        }
    }
    return out;
}

std::string copy_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c == '\\') out += "\\\\";
        else if (c == '\t') out += "\\t";
        else if (c == '\n') out += "\\n";
        else if (c == '\r') out += "\\r";
        else out.push_back(c);
    }
    return out;
}

struct Reading {
    std::vector<fx::FileResult> files;
    std::map<std::string, std::uint64_t> reasons;
    std::vector<fx::RejectedRow> rejected;
    std::uint64_t invalid_utf8 = 0, invalid_area = 0, invalid_uprn = 0;
    std::set<std::string> addresses;
    std::string rows;                                             // COPY text
    std::map<std::string, std::vector<std::string>> loaded_keys;  // by certificates file, in file order
};

void read_certificates(const std::string& name, const std::string& data, Reading& out, std::set<std::string>& seen) {
    fx::FileResult fr;
    fr.name = name;
    std::vector<Record> records = parse_csv(data);
    if (records.empty()) {
        out.files.push_back(fr);
        return;
    }
    std::map<std::string, std::size_t> col;
    for (std::size_t i = 0; i < records[0].fields.size(); ++i) col[lower(records[0].fields[i])] = i;
    auto find = [&](std::initializer_list<const char*> names) -> long {
        for (const char* n : names)
            if (col.count(n)) return static_cast<long>(col[n]);
        return -1;
    };
    const long c_key = find({"lmk_key", "certificate_number"}), c_date = find({"lodgement_date"}),
               c_tt = find({"transaction_type"}), c_area = find({"total_floor_area", "floor_area"}),
               c_addr = find({"address"}), c_pc = find({"postcode"}), c_uprn = find({"uprn"}),
               c_la = find({"local_authority"});
    const std::size_t width = records[0].fields.size();
    for (std::size_t r = 1; r < records.size(); ++r) {
        const Record& rec = records[r];
        fr.rows_read++;
        std::string reason;
        if (rec.fields.size() != width) reason = "field_count";
        std::string key, date;
        if (reason.empty()) {
            key = trim(rec.fields[static_cast<std::size_t>(c_key)]);
            date = trim(rec.fields[static_cast<std::size_t>(c_date)]);
            if (is_sentinel(key)) reason = "missing_key";
            else if (is_sentinel(date)) reason = "missing_date";
            else if (!valid_date(date)) reason = "bad_date";
            else if (seen.count(key)) reason = "duplicate_key";
        }
        if (!reason.empty()) {
            fr.rows_rejected++;
            out.reasons[reason]++;
            out.rejected.push_back({name, rec.line, reason});
        }
        // A duplicate is found after its values were converted: they count like a loaded row's.
        const bool duplicate = reason == "duplicate_key";
        if (!reason.empty() && !duplicate) continue;
        if (!duplicate) {
            seen.insert(key);
            out.loaded_keys[name].push_back(key);
            fr.rows_loaded++;
        }
        std::vector<std::string> cells;
        for (long c : {c_key, c_date, c_tt, c_area, c_addr, c_pc, c_uprn, c_la}) {
            if (c < 0) {
                cells.push_back("\\N");
                continue;
            }
            std::string t = trim(rec.fields[static_cast<std::size_t>(c)]);
            // Numbers: empty is no value, anything else must be a number. Text: answers stay.
            const bool number = c == c_area || c == c_uprn;
            if (c != c_key && (number ? t.empty() : is_error_marker(t))) {
                cells.push_back("\\N");
                continue;
            }
            static const std::regex decimal("^[+-]?(\\d+(\\.\\d+)?|\\.\\d+)$"), digits("^\\d{1,18}$");
            if (c == c_area && !std::regex_match(t, decimal)) {
                out.invalid_area++;
                cells.push_back("\\N");
                continue;
            }
            if (c == c_uprn) {
                if (!std::regex_match(t, digits)) {
                    out.invalid_uprn++;
                    cells.push_back("\\N");
                    continue;
                }
                std::size_t nz = t.find_first_not_of('0');
                t = nz == std::string::npos ? "0" : t.substr(nz);
            }
            bool replaced = false;
            std::string v = fix_utf8(t, replaced);
            if (replaced) out.invalid_utf8++;
            if (c == c_addr && !duplicate) out.addresses.insert(v);
            cells.push_back(copy_escape(v));
        }
        if (duplicate) continue;
        for (std::size_t k = 0; k < cells.size(); ++k) out.rows += (k ? "\t" : "") + cells[k];
        out.rows += "\n";
    }
    out.files.push_back(fr);
}

bool is_certificates(const std::string& name, Layout layout) {
    if (layout == Layout::current) return std::regex_match(name, std::regex("^certificates-\\d{4}\\.csv$"));
    if (layout == Layout::single) return name == "certificates.csv";
    return ends_with(name, "/certificates.csv");
}

// Reads every certificates file of the rendered entries in order, as the importer would.
Reading read_archive(const std::vector<fx::RenderedEntry>& entries, Layout layout) {
    Reading reading;
    std::set<std::string> seen;
    for (const auto& e : entries)
        if (is_certificates(e.name, layout)) read_certificates(e.name, e.content, reading, seen);
    return reading;
}

// ---- The same for the recommendations files: a record is rejected when its field count is not
// the header's (field_count) or its key is empty or a sentinel (missing_key); the rest load.

bool is_recommendations(const std::string& name, Layout layout) {
    if (layout == Layout::current) return std::regex_match(name, std::regex("^recommendations-\\d{4}\\.csv$"));
    if (layout == Layout::single) return name == "recommendations.csv";
    return ends_with(name, "/recommendations.csv");
}

// "<dir>/recommendations.csv" -> "<dir>/certificates.csv", "recommendations-2024.csv" -> "certificates-2024.csv"
std::string paired_certificates(const std::string& recommendations_name) {
    const std::string word = "recommendations";
    std::string name = recommendations_name;
    return name.replace(name.rfind(word), word.size(), "certificates");
}

struct LoadedRecommendation {
    std::string key;
    long item = 0;  // domestic; 0 for the others
};

struct RecReading {
    std::vector<fx::FileResult> files;
    std::map<std::string, std::uint64_t> reasons;
    std::vector<fx::RejectedRow> rejected;
    std::set<std::string> keys;  // distinct keys of loaded rows
    std::uint64_t item_sum = 0, cost_pound_values = 0;
    std::map<std::string, std::vector<LoadedRecommendation>> loaded;  // by recommendations file, in file order
    std::vector<std::size_t> rejected_widths;                         // field counts of field_count rejects
    std::uint64_t values_with_commas = 0;                             // in loaded rows
};

void read_recommendations(const std::string& name, const std::string& data, RecReading& out) {
    fx::FileResult fr;
    fr.name = name;
    std::vector<Record> records = parse_csv(data);
    std::map<std::string, std::size_t> col;
    for (std::size_t i = 0; i < records.at(0).fields.size(); ++i) col[lower(records[0].fields[i])] = i;
    const std::size_t width = records[0].fields.size();
    const std::size_t c_key = col.count("lmk_key") ? col["lmk_key"] : col.at("certificate_number");
    const long c_item = col.count("improvement_item") ? static_cast<long>(col["improvement_item"]) : -1;
    const long c_cost = col.count("indicative_cost") ? static_cast<long>(col["indicative_cost"]) : -1;
    for (std::size_t r = 1; r < records.size(); ++r) {
        const Record& rec = records[r];
        fr.rows_read++;
        std::string reason;
        if (rec.fields.size() != width) reason = "field_count";
        else if (is_sentinel(trim(rec.fields[c_key]))) reason = "missing_key";
        if (!reason.empty()) {
            fr.rows_rejected++;
            out.reasons[reason]++;
            out.rejected.push_back({name, rec.line, reason});
            if (reason == "field_count") out.rejected_widths.push_back(rec.fields.size());
            continue;
        }
        fr.rows_loaded++;
        LoadedRecommendation loaded{trim(rec.fields[c_key]), 0};
        if (c_item >= 0) loaded.item = std::stol(rec.fields[static_cast<std::size_t>(c_item)]);
        if (c_cost >= 0 && rec.fields[static_cast<std::size_t>(c_cost)].rfind("\xC2\xA3", 0) == 0)
            out.cost_pound_values++;
        for (const auto& f : rec.fields) out.values_with_commas += f.find(',') != std::string::npos;
        out.item_sum += static_cast<std::uint64_t>(loaded.item);
        out.keys.insert(loaded.key);
        out.loaded[name].push_back(loaded);
    }
    out.files.push_back(fr);
}

RecReading read_recommendations_of(const std::vector<fx::RenderedEntry>& entries, Layout layout) {
    RecReading reading;
    for (const auto& e : entries)
        if (is_recommendations(e.name, layout)) read_recommendations(e.name, e.content, reading);
    return reading;
}

fx::Options options(CertType type, Layout layout, std::uint64_t rows, unsigned files, std::uint64_t seed) {
    fx::Options o;
    o.cert_type = type;
    o.layout = layout;
    o.rows = rows;
    o.files = files;
    o.seed = seed;
    return o;
}

const std::regex kLegacyDir("^(domestic|non-domestic|display)-(E0[6-9]|W06)[0-9]{6}-[A-Za-z0-9]+(-[A-Za-z0-9]+)*/$");
const std::string kUnknownDir = "-_unknown_local_authority--Unknown-Local-Authority-/";

}  // namespace

// ---------------------------------------------------------------------------------------------

TEST(FixtureHeaders, RealColumnListsAndCounts) {
    auto dom = fx::certificate_columns(CertType::domestic, Layout::legacy);
    ASSERT_EQ(dom.size(), 92u);
    std::vector<std::string> head = {"LMK_KEY",
                                     "ADDRESS1",
                                     "ADDRESS2",
                                     "ADDRESS3",
                                     "POSTCODE",
                                     "BUILDING_REFERENCE_NUMBER",
                                     "CURRENT_ENERGY_RATING"};
    EXPECT_TRUE(std::equal(head.begin(), head.end(), dom.begin()));
    std::vector<std::string> tail = {"LODGEMENT_DATETIME",           "TENURE", "FIXED_LIGHTING_OUTLETS_COUNT",
                                     "LOW_ENERGY_FIXED_LIGHT_COUNT", "UPRN",   "UPRN_SOURCE"};
    EXPECT_TRUE(std::equal(tail.begin(), tail.end(), dom.end() - 6));

    auto nd = fx::certificate_columns(CertType::non_domestic, Layout::legacy);
    EXPECT_EQ(nd.size(), 41u);
    EXPECT_NE(std::find(nd.begin(), nd.end(), "FLOOR_AREA"), nd.end());
    EXPECT_EQ(std::find(nd.begin(), nd.end(), "TOTAL_FLOOR_AREA"), nd.end());

    auto dec = fx::certificate_columns(CertType::display, Layout::legacy);
    EXPECT_EQ(dec.size(), 54u);
    EXPECT_EQ(std::find(dec.begin(), dec.end(), "TRANSACTION_TYPE"), dec.end());
    EXPECT_NE(std::find(dec.begin(), dec.end(), "TOTAL_FLOOR_AREA"), dec.end());

    for (const auto& cols : {dom, nd, dec}) {
        std::set<std::string> unique(cols.begin(), cols.end());
        EXPECT_EQ(unique.size(), cols.size()) << "duplicate column name";
        for (const char* required : {"LMK_KEY", "ADDRESS1", "ADDRESS2", "ADDRESS3", "ADDRESS", "POSTCODE",
                                     "LODGEMENT_DATE", "LOCAL_AUTHORITY", "UPRN"})
            EXPECT_EQ(unique.count(required), 1u) << required;
    }

    auto cur = fx::certificate_columns(CertType::domestic, Layout::current);
    ASSERT_EQ(cur.size(), 92u);
    EXPECT_EQ(cur[0], "certificate_number");
    for (const auto& c : cur) EXPECT_EQ(c, lower(c));

    auto recs = fx::recommendation_columns(CertType::domestic, Layout::legacy);
    EXPECT_EQ(recs, (std::vector<std::string>{"LMK_KEY", "IMPROVEMENT_ITEM", "IMPROVEMENT_SUMMARY_TEXT",
                                              "IMPROVEMENT_DESCR_TEXT", "IMPROVEMENT_ID", "IMPROVEMENT_ID_TEXT",
                                              "INDICATIVE_COST"}));
}

TEST(FixtureNames, HazardAndInvalidNamesRoundTrip) {
    EXPECT_EQ(fx::all_hazards().size(), 18u);
    for (fx::Hazard h : fx::all_hazards()) EXPECT_EQ(fx::parse_hazard(fx::hazard_name(h)), h);
    for (fx::Invalid i : fx::all_invalids()) EXPECT_EQ(fx::parse_invalid(fx::invalid_name(i)), i);
    EXPECT_FALSE(fx::parse_hazard("nonsense").has_value());
    fx::Options o;
    o.with_all_hazards();
    EXPECT_EQ(o.hazards.size(), fx::all_hazards().size());
}

TEST(FixtureZip, LegacyZipIsReadableWithTheRealLayout) {
    const std::string path = temp_path("legacy.zip");
    fx::Options o = options(CertType::domestic, Layout::legacy, 3000, 8, 1);
    std::ostringstream rows;
    fx::Expected e = fx::write_zip(path, o, &rows);
    std::vector<ZipEntry> entries = read_zip(path);

    ASSERT_EQ(entries.size(), e.entries.size());
    for (std::size_t i = 0; i < entries.size(); ++i) EXPECT_EQ(entries[i].name, e.entries[i]);

    std::map<std::string, std::set<std::string>> dirs;
    bool licence = false;
    for (const auto& z : entries) {
        if (z.name == "LICENCE.txt") {
            licence = true;
            EXPECT_FALSE(z.content.empty());
            continue;
        }
        auto slash = z.name.find('/');
        ASSERT_NE(slash, std::string::npos) << z.name;
        std::string dir = z.name.substr(0, slash + 1);
        if (z.name.size() > slash + 1) dirs[dir].insert(z.name.substr(slash + 1));
        else dirs[dir];
    }
    EXPECT_TRUE(licence);
    EXPECT_EQ(dirs.size(), 8u);
    EXPECT_EQ(e.directories, 8u);
    EXPECT_EQ(e.files.size(), 8u);
    std::size_t unknown = 0;
    for (const auto& [dir, files] : dirs) {
        if (dir == "domestic" + kUnknownDir) ++unknown;
        else EXPECT_TRUE(std::regex_match(dir, kLegacyDir)) << dir;
        EXPECT_EQ(files, (std::set<std::string>{"certificates.csv", "recommendations.csv"})) << dir;
    }
    EXPECT_EQ(unknown, 1u);
    EXPECT_EQ(entries.back().name, "LICENCE.txt");

    // The header is the canonical one; every record has the header's width; keys are 31-34 digits.
    std::string header;
    for (const auto& c : fx::certificate_columns(CertType::domestic, Layout::legacy))
        header += (header.empty() ? "" : ",") + c;
    std::uint64_t records = 0, bytes = 0;
    for (const auto& z : entries) {
        if (!ends_with(z.name, "/certificates.csv")) continue;
        EXPECT_EQ(z.content.substr(0, z.content.find('\n')), header);
        auto parsed = parse_csv(z.content);
        for (std::size_t r = 1; r < parsed.size(); ++r) {
            ASSERT_EQ(parsed[r].fields.size(), 92u) << z.name << " line " << parsed[r].line;
            EXPECT_TRUE(std::regex_match(parsed[r].fields[0], std::regex("^[1-9][0-9]{30,33}$")))
                << parsed[r].fields[0];
        }
        records += parsed.size() - 1;
        bytes += z.content.size() - z.content.find('\n');
    }
    EXPECT_EQ(records, 3000u);
    EXPECT_EQ(e.rows_read, 3000u);
    EXPECT_EQ(e.rows_loaded, 3000u);
    EXPECT_EQ(e.rows_rejected, 0u);
    // Realistic width: a domestic row is about 1-1.5 KB of CSV.
    EXPECT_GT(bytes / records, 800u);
    EXPECT_LT(bytes / records, 1600u);
    // Every loaded row is in the COPY text, 8 columns each.
    auto lines = split(rows.str(), '\n');
    ASSERT_EQ(lines.size(), 3001u);
    for (std::size_t i = 0; i + 1 < lines.size(); ++i) ASSERT_EQ(split(lines[i], '\t').size(), 8u) << lines[i];
    std::remove(path.c_str());
}

TEST(FixtureZip, CurrentLayoutIsFlatWithLowerCaseHeaders) {
    const std::string path = temp_path("current.zip");
    fx::Expected e = fx::write_zip(path, options(CertType::domestic, Layout::current, 1500, 4, 2));
    std::vector<ZipEntry> entries = read_zip(path);
    std::vector<std::string> names;
    for (const auto& z : entries) names.push_back(z.name);
    EXPECT_EQ(names,
              (std::vector<std::string>{"certificates-2022.csv", "recommendations-2022.csv", "certificates-2023.csv",
                                        "recommendations-2023.csv", "certificates-2024.csv", "recommendations-2024.csv",
                                        "certificates-2025.csv", "recommendations-2025.csv"}));
    EXPECT_EQ(e.directories, 0u);
    for (const auto& z : entries) {
        if (z.name.rfind("certificates-", 0) != 0) continue;
        std::string year = z.name.substr(13, 4);
        auto parsed = parse_csv(z.content);
        EXPECT_EQ(parsed[0].fields[0], "certificate_number");
        for (const auto& h : parsed[0].fields) EXPECT_EQ(h, lower(h));
        std::size_t date_col = std::find(parsed[0].fields.begin(), parsed[0].fields.end(), "lodgement_date") -
                               parsed[0].fields.begin();
        for (std::size_t r = 1; r < parsed.size(); ++r) {
            EXPECT_TRUE(std::regex_match(parsed[r].fields[0], std::regex("^\\d{4}-\\d{4}-\\d{4}-\\d{4}-\\d{4}$")))
                << parsed[r].fields[0];
            EXPECT_EQ(parsed[r].fields[date_col].substr(0, 4), year);
        }
        auto recs = parse_csv(entries[&z - &entries[0] + 1].content);
        EXPECT_EQ(recs[0].fields[0], "certificate_number");
    }
    std::remove(path.c_str());
}

TEST(FixtureZip, SingleLayoutHasItsFiveRootFiles) {
    std::vector<fx::RenderedEntry> entries = fx::render_entries(options(CertType::domestic, Layout::single, 200, 9, 3));
    std::vector<std::string> names;
    for (const auto& e : entries) names.push_back(e.name);
    EXPECT_EQ(names, (std::vector<std::string>{"certificates.csv", "recommendations.csv", "schema.json", "columns.csv",
                                               "LICENCE.txt"}));
}

TEST(FixtureZip, NonDomesticAndDisplayHaveTheirWidths) {
    for (CertType type : {CertType::non_domestic, CertType::display}) {
        fx::Expected e;
        auto entries = fx::render_entries(options(type, Layout::legacy, 500, 3, 4), &e);
        std::size_t width = fx::certificate_columns(type, Layout::legacy).size();
        for (const auto& z : entries) {
            if (!ends_with(z.name, "/certificates.csv")) continue;
            EXPECT_EQ(z.name.rfind(std::string(epc::cert_type_name(type)) + "-", 0), 0u) << z.name;
            for (const auto& r : parse_csv(z.content)) ASSERT_EQ(r.fields.size(), width);
        }
        EXPECT_EQ(e.rows_loaded, 500u);
    }
}

TEST(FixtureZip, ManyDirectoriesHaveUniqueValidNames) {
    fx::Options o = options(CertType::domestic, Layout::legacy, 2000, 349, 5);
    o.directory_entries = false;
    fx::Expected e = fx::compute_expected(o);
    EXPECT_EQ(e.directories, 349u);
    EXPECT_EQ(e.files.size(), 349u);
    std::set<std::string> codes;
    for (const auto& f : e.files) {
        std::string dir = f.name.substr(0, f.name.find('/') + 1);
        if (dir == "domestic" + kUnknownDir) continue;
        EXPECT_TRUE(std::regex_match(dir, kLegacyDir)) << dir;
        codes.insert(dir.substr(9, 9));
    }
    EXPECT_EQ(codes.size(), 348u);
    EXPECT_EQ(e.rows_read, 2000u);
}

TEST(FixtureDeterminism, SameSeedSameBytesOtherSeedOtherBytes) {
    fx::Options o = options(CertType::domestic, Layout::legacy, 1500, 4, 7);
    o.with_all_hazards();
    const std::string a = temp_path("det_a.zip"), b = temp_path("det_b.zip"), c = temp_path("det_c.zip");
    std::ostringstream ra, rb;
    fx::Expected ea = fx::write_zip(a, o, &ra);
    fx::Expected eb = fx::write_zip(b, o, &rb);
    EXPECT_EQ(read_file(a), read_file(b));
    EXPECT_EQ(ra.str(), rb.str());
    EXPECT_EQ(fx::to_json(ea), fx::to_json(eb));
    std::ostringstream rd;
    EXPECT_EQ(fx::to_json(fx::compute_expected(o, &rd)), fx::to_json(ea));
    EXPECT_EQ(rd.str(), ra.str());
    o.seed = 8;
    fx::write_zip(c, o);
    EXPECT_NE(read_file(a), read_file(c));
    for (const auto& p : {a, b, c}) std::remove(p.c_str());
}

struct TypeLayout {
    CertType type;
    Layout layout;
};

class FixtureExpectations : public testing::TestWithParam<TypeLayout> {};

// The generator's account agrees with an independent reading of what it wrote, with every hazard on.
TEST_P(FixtureExpectations, MatchAnIndependentReadingOfTheBytes) {
    fx::Options o = options(GetParam().type, GetParam().layout, 6000, 5, 11);
    o.with_all_hazards();
    std::ostringstream rows;
    fx::Expected e;
    auto entries = fx::render_entries(o, &e);
    fx::compute_expected(o, &rows);
    Reading got = read_archive(entries, o.layout);

    ASSERT_EQ(got.files.size(), e.files.size());
    for (std::size_t i = 0; i < e.files.size(); ++i) {
        EXPECT_EQ(got.files[i].name, e.files[i].name);
        EXPECT_EQ(got.files[i].rows_read, e.files[i].rows_read) << e.files[i].name;
        EXPECT_EQ(got.files[i].rows_loaded, e.files[i].rows_loaded) << e.files[i].name;
        EXPECT_EQ(got.files[i].rows_rejected, e.files[i].rows_rejected) << e.files[i].name;
    }
    EXPECT_EQ(e.rows_read, 6000u);
    EXPECT_EQ(e.rows_read, e.rows_loaded + e.rows_rejected);
    for (const auto& [reason, n] : e.rejects_by_reason) EXPECT_EQ(got.reasons[reason], n) << reason;
    ASSERT_EQ(got.rejected.size(), e.rejected.size());
    for (std::size_t i = 0; i < e.rejected.size(); ++i) {
        EXPECT_EQ(got.rejected[i].file, e.rejected[i].file);
        EXPECT_EQ(got.rejected[i].line, e.rejected[i].line) << e.rejected[i].file;
        EXPECT_EQ(got.rejected[i].reason, e.rejected[i].reason) << e.rejected[i].file << ":" << e.rejected[i].line;
    }
    EXPECT_EQ(got.invalid_utf8, e.invalid_utf8_values);
    EXPECT_EQ(got.invalid_area, e.invalid_floor_area);
    EXPECT_EQ(got.invalid_uprn, e.invalid_uprn);
    EXPECT_EQ(e.invalid_values, e.invalid_floor_area + e.invalid_uprn);
    EXPECT_EQ(e.invalid_by_column["total_floor_area"], e.invalid_floor_area);
    EXPECT_EQ(e.invalid_by_column["uprn"], e.invalid_uprn);
    EXPECT_GT(e.invalid_by_column.size(), 2u);  // bad_typed_values
    EXPECT_EQ(got.addresses.size(), e.distinct_addresses);
    EXPECT_EQ(got.rows, rows.str());

    // Every reject reason and counted problem occurs, but only in a small fraction of rows.
    for (const auto& reason : fx::reject_reasons()) EXPECT_GT(e.rejects_by_reason[reason], 0u) << reason;
    EXPECT_GT(e.invalid_utf8_values, 0u);
    EXPECT_GT(e.invalid_floor_area, 0u);
    EXPECT_GT(e.invalid_uprn, 0u);
    EXPECT_LT(e.rows_rejected, e.rows_read / 20);
}

INSTANTIATE_TEST_SUITE_P(
    AllTypesAndLayouts, FixtureExpectations,
    testing::Values(TypeLayout{CertType::domestic, Layout::legacy}, TypeLayout{CertType::domestic, Layout::current},
                    TypeLayout{CertType::domestic, Layout::single}, TypeLayout{CertType::non_domestic, Layout::legacy},
                    TypeLayout{CertType::non_domestic, Layout::current}, TypeLayout{CertType::display, Layout::legacy},
                    TypeLayout{CertType::display, Layout::current}));

TEST(FixtureHazards, EachHazardAloneIsAccountedFor) {
    for (fx::Hazard h : fx::all_hazards()) {
        SCOPED_TRACE(std::string(fx::hazard_name(h)));
        fx::Options o = options(CertType::domestic, Layout::legacy, 800, 3, 5);
        o.hazards = {h};
        std::ostringstream rows;
        fx::Expected e;
        auto entries = fx::render_entries(o, &e);
        fx::compute_expected(o, &rows);
        Reading got = read_archive(entries, o.layout);
        EXPECT_EQ(got.rows, rows.str());
        EXPECT_EQ(got.rejected.size(), e.rejected.size());
        EXPECT_EQ(got.invalid_utf8, e.invalid_utf8_values);
        EXPECT_EQ(got.invalid_area + got.invalid_uprn, e.invalid_values);
        const bool rejects = h == fx::Hazard::bad_rows || h == fx::Hazard::duplicate_keys;
        EXPECT_EQ(e.rows_rejected > 0, rejects);
        if (h == fx::Hazard::duplicate_keys) {
            EXPECT_EQ(e.rows_rejected, e.rejects_by_reason["duplicate_key"]);
        }
        if (h != fx::Hazard::invalid_utf8) {
            EXPECT_EQ(e.invalid_utf8_values, 0u);
        }
        // A sentinel such as N/A is an answer in text but no number: it counts in the numbers.
        if (h != fx::Hazard::bad_floor_area && h != fx::Hazard::sentinels) {
            EXPECT_EQ(e.invalid_floor_area, 0u);
        }
        if (h != fx::Hazard::bad_uprn && h != fx::Hazard::sentinels) {
            EXPECT_EQ(e.invalid_uprn, 0u);
        }

        std::string all;
        for (const auto& z : entries)
            if (ends_with(z.name, "certificates.csv")) all += z.content;
        auto has = [&](const std::string& s) { return all.find(s) != std::string::npos; };
        switch (h) {
            case fx::Hazard::crlf: EXPECT_TRUE(has("\r\n")); break;
            case fx::Hazard::bom: EXPECT_TRUE(has("\xEF\xBB\xBF")); break;
            case fx::Hazard::trailing_blank_line: EXPECT_TRUE(has("\n\n")); break;
            case fx::Hazard::doubled_quotes: EXPECT_TRUE(has("\"\"")); break;
            case fx::Hazard::backslash_quotes: EXPECT_TRUE(has("\\\"")); break;
            case fx::Hazard::quoted_commas: EXPECT_TRUE(std::regex_search(all, std::regex(",\"\\d+[a-c]?, "))); break;
            case fx::Hazard::quoted_newlines: EXPECT_NE(rows.str().find("\\n"), std::string::npos); break;
            case fx::Hazard::invalid_utf8: EXPECT_GT(e.invalid_utf8_values, 0u); break;
            case fx::Hazard::bad_floor_area: EXPECT_GT(e.invalid_floor_area, 0u); break;
            case fx::Hazard::bad_uprn: EXPECT_GT(e.invalid_uprn, 0u); break;
            case fx::Hazard::extra_columns: EXPECT_TRUE(has("ASSESSOR_NOTES")); break;
            case fx::Hazard::bad_typed_values:
                EXPECT_FALSE(e.invalid_by_column.empty());
                EXPECT_EQ(e.invalid_values, 0u) << "only columns outside the default set";
                break;
            case fx::Hazard::reordered_columns:
                EXPECT_FALSE(has("\nLMK_KEY,ADDRESS1") && all.rfind("LMK_KEY,ADDRESS1", 0) == 0);
                break;
            default: break;
        }
        if (h != fx::Hazard::crlf) {
            EXPECT_FALSE(has("\r")) << "CR without the crlf hazard";
        }
        if (h != fx::Hazard::bom) {
            EXPECT_FALSE(has("\xEF\xBB\xBF"));
        }
    }
}

TEST(FixtureHazards, NoHazardsMeansEveryRowLoadsCleanly) {
    std::ostringstream rows;
    fx::Expected e = fx::compute_expected(options(CertType::domestic, Layout::current, 2000, 3, 9), &rows);
    EXPECT_EQ(e.rows_loaded, 2000u);
    EXPECT_EQ(e.rows_rejected, 0u);
    EXPECT_EQ(e.invalid_values + e.invalid_utf8_values, 0u);
    // Only the optional fields of the unknown authority may be NULL; here (current layout) none are.
    EXPECT_EQ(rows.str().find("\\N"), std::string::npos);
}

TEST(FixtureHazards, EmptyPostcodeAndUprnOnAboutTenPercent) {
    fx::Options o = options(CertType::domestic, Layout::current, 10000, 2, 13);
    o.hazards = {fx::Hazard::empty_postcode_uprn};
    std::ostringstream rows;
    fx::Expected e = fx::compute_expected(o, &rows);
    std::size_t n = 0, pc = 0, uprn = 0;
    std::istringstream in(rows.str());
    for (std::string line; std::getline(in, line); ++n) {
        auto cells = split(line, '\t');
        pc += cells[5] == "\\N";
        uprn += cells[6] == "\\N";
    }
    EXPECT_EQ(n, e.rows_loaded);
    EXPECT_GT(pc, n * 7 / 100);
    EXPECT_LT(pc, n * 13 / 100);
    EXPECT_GT(uprn, n * 7 / 100);
    EXPECT_LT(uprn, n * 13 / 100);
}

TEST(FixtureAddresses, PropertiesAreReassessed) {
    fx::Expected e = fx::compute_expected(options(CertType::domestic, Layout::legacy, 20000, 10, 17));
    double ratio = static_cast<double>(e.rows_loaded) / static_cast<double>(e.distinct_addresses);
    EXPECT_GT(ratio, 1.3);
    EXPECT_LT(ratio, 1.7);
}

TEST(FixtureInvalid, LegacyInvalidKindsAddTheirEntries) {
    fx::Options o = options(CertType::domestic, Layout::legacy, 300, 3, 19);
    for (fx::Invalid i : fx::all_invalids()) o.invalid.insert(i);
    const std::string path = temp_path("invalid.zip");
    fx::Expected e = fx::write_zip(path, o);
    EXPECT_EQ(e.invalid.size(), 5u);
    std::map<std::string, std::string> content;
    for (const auto& z : read_zip(path)) content[z.name] = z.content;
    EXPECT_TRUE(content.count("domestic-E0600001-Badly-Named/certificates.csv"));
    EXPECT_FALSE(std::regex_match(std::string("domestic-E0600001-Badly-Named/"), kLegacyDir));
    EXPECT_TRUE(content.count("domestic-E06000098-No-Recommendations/certificates.csv"));
    EXPECT_FALSE(content.count("domestic-E06000098-No-Recommendations/recommendations.csv"));
    ASSERT_TRUE(content.count("domestic-E06000097-Empty-Certificates/certificates.csv"));
    EXPECT_TRUE(content["domestic-E06000097-Empty-Certificates/certificates.csv"].empty());
    ASSERT_TRUE(content.count("domestic-E06000096-No-Key-Column/certificates.csv"));
    EXPECT_EQ(content["domestic-E06000096-No-Key-Column/certificates.csv"].find("LMK_KEY"), std::string::npos);
    EXPECT_TRUE(content.count("../../epc-escape.txt"));
    // The extras hold no data rows, so the row expectations are those of the valid archive.
    fx::Options valid = o;
    valid.invalid.clear();
    fx::Expected v = fx::compute_expected(valid);
    EXPECT_EQ(e.rows_read, v.rows_read);
    EXPECT_EQ(e.files.size(), v.files.size());
    EXPECT_EQ(e.directories, v.directories + 4);
    // Nor those of the recommendations: the extras' recommendations files are not data files.
    EXPECT_EQ(fx::to_json(e)["recommendations"], fx::to_json(v)["recommendations"]);
    std::remove(path.c_str());
}

TEST(FixtureInvalid, CurrentInvalidKindsAddTheirEntries) {
    fx::Options o = options(CertType::display, Layout::current, 300, 2, 19);
    for (fx::Invalid i : fx::all_invalids()) o.invalid.insert(i);
    std::set<std::string> names;
    for (const auto& z : fx::render_entries(o)) names.insert(z.name);
    EXPECT_TRUE(names.count("certificates-2O21.csv"));
    EXPECT_TRUE(names.count("certificates-2026.csv"));
    EXPECT_FALSE(names.count("recommendations-2026.csv"));
    EXPECT_TRUE(names.count("certificates-2027.csv"));
    EXPECT_TRUE(names.count("certificates-2028.csv"));
    EXPECT_TRUE(names.count("../../epc-escape.txt"));
}

TEST(FixtureInvalid, SingleWithoutRecommendationsHasNoneToLoad) {
    fx::Options o = options(CertType::domestic, Layout::single, 300, 1, 19);
    o.invalid = {fx::Invalid::missing_recommendations};
    fx::Expected e;
    for (const auto& z : fx::render_entries(o, &e)) EXPECT_NE(z.name, "recommendations.csv");
    EXPECT_TRUE(e.recommendations.files.empty());
    EXPECT_EQ(e.recommendations.rows_read, 0u);
    EXPECT_EQ(e.recommendations.certificates_with_recommendations, 0u);
    EXPECT_EQ(e.rows_loaded, 300u);
}

TEST(FixtureInvalid, TruncatedAndNonZipFilesDoNotOpen) {
    const std::string path = temp_path("cut.zip");
    fx::write_zip(path, options(CertType::domestic, Layout::legacy, 500, 3, 23));
    fx::truncate_file(path, 3000);
    EXPECT_EQ(read_file(path).size(), 3000u);
    int err = 0;
    zip_t* za = zip_open(path.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &err);
    EXPECT_EQ(za, nullptr);
    if (za) zip_discard(za);
    EXPECT_THROW(fx::truncate_file(path, 999999), std::invalid_argument);

    fx::write_not_a_zip(path);
    za = zip_open(path.c_str(), ZIP_RDONLY, &err);
    EXPECT_EQ(za, nullptr);
    EXPECT_EQ(err, ZIP_ER_NOZIP);
    if (za) zip_discard(za);
    std::remove(path.c_str());
}

TEST(FixtureZip, ZeroRowsGivesHeaderOnlyFiles) {
    fx::Expected e;
    auto entries = fx::render_entries(options(CertType::domestic, Layout::legacy, 0, 3, 1), &e);
    EXPECT_EQ(e.rows_read, 0u);
    for (const auto& z : entries)
        if (ends_with(z.name, "certificates.csv")) {
            EXPECT_EQ(std::count(z.content.begin(), z.content.end(), '\n'), 1);
        }
}

// ---------------------------------------------------------------------------------------------
// Recommendations

namespace {

std::string joined_header(const std::vector<std::string>& names) {
    std::string header;
    for (const auto& n : names) header += (header.empty() ? "" : ",") + n;
    return header;
}

const std::string kBom = "\xEF\xBB\xBF";

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

// The hazards a recommendations file meets: its own bad rows, and its certificates file's line
// ends, BOM, blank lines, quoting and rejected or duplicate rows (which get no recommendations).
std::set<fx::Hazard> recommendation_hazards() {
    return {fx::Hazard::bad_rows,
            fx::Hazard::crlf,
            fx::Hazard::bom,
            fx::Hazard::trailing_blank_line,
            fx::Hazard::quoted_commas,
            fx::Hazard::doubled_quotes,
            fx::Hazard::quoted_newlines,
            fx::Hazard::backslash_quotes,
            fx::Hazard::whitespace,
            fx::Hazard::duplicate_keys};
}

struct RecCase {
    CertType type;
    Layout layout;
    bool hazards;
};

}  // namespace

TEST(FixtureRecommendationHeaders, CurrentDomesticPutsTheNumbersAndCostFirst) {
    EXPECT_EQ(fx::recommendation_columns(CertType::domestic, Layout::current),
              (std::vector<std::string>{"certificate_number", "improvement_item", "improvement_id", "indicative_cost",
                                        "improvement_summary_text", "improvement_descr_text", "improvement_id_text"}));
    EXPECT_EQ(fx::recommendation_columns(CertType::domestic, Layout::single),
              fx::recommendation_columns(CertType::domestic, Layout::legacy));
    for (CertType type : {CertType::non_domestic, CertType::display}) {
        EXPECT_EQ(fx::recommendation_columns(type, Layout::legacy),
                  (std::vector<std::string>{"LMK_KEY", "PAYBACK_TYPE", "RECOMMENDATION_CODE", "RECOMMENDATION",
                                            "CO2_IMPACT"}));
        EXPECT_EQ(fx::recommendation_columns(type, Layout::current),
                  (std::vector<std::string>{"certificate_number", "payback_type", "recommendation_code",
                                            "recommendation", "co2_impact"}));
    }
}

class FixtureRecommendationExpectations : public testing::TestWithParam<RecCase> {};

// The generator's account of the recommendations agrees with an independent reading of the bytes.
TEST_P(FixtureRecommendationExpectations, MatchAnIndependentReadingOfTheBytes) {
    const RecCase c = GetParam();
    fx::Options o = options(c.type, c.layout, 3000, 4, 29);
    if (c.hazards) o.hazards = recommendation_hazards();
    fx::Expected e;
    const auto entries = fx::render_entries(o, &e);
    const Reading certs = read_archive(entries, o.layout);
    const RecReading got = read_recommendations_of(entries, o.layout);
    const fx::RecommendationsResult& want = e.recommendations;

    ASSERT_EQ(got.files.size(), want.files.size());
    ASSERT_EQ(want.files.size(), e.files.size()) << "one recommendations file per certificates file";
    for (std::size_t i = 0; i < want.files.size(); ++i) {
        EXPECT_EQ(got.files[i].name, want.files[i].name);
        EXPECT_EQ(paired_certificates(want.files[i].name), e.files[i].name);
        EXPECT_EQ(got.files[i].rows_read, want.files[i].rows_read) << want.files[i].name;
        EXPECT_EQ(got.files[i].rows_loaded, want.files[i].rows_loaded) << want.files[i].name;
        EXPECT_EQ(got.files[i].rows_rejected, want.files[i].rows_rejected) << want.files[i].name;
    }
    std::uint64_t read = 0, loaded = 0, rejected = 0;
    for (const auto& f : got.files) read += f.rows_read, loaded += f.rows_loaded, rejected += f.rows_rejected;
    EXPECT_EQ(want.rows_read, read);
    EXPECT_EQ(want.rows_loaded, loaded);
    EXPECT_EQ(want.rows_rejected, rejected);
    EXPECT_EQ(want.rows_read, want.rows_loaded + want.rows_rejected);
    ASSERT_EQ(want.rejects_by_reason.size(), fx::recommendation_reject_reasons().size());
    for (const auto& reason : fx::recommendation_reject_reasons())
        EXPECT_EQ(want.rejects_by_reason.at(reason), got.reasons.count(reason) ? got.reasons.at(reason) : 0u) << reason;
    ASSERT_EQ(got.rejected.size(), want.rejected.size());
    for (std::size_t i = 0; i < want.rejected.size(); ++i) {
        EXPECT_EQ(got.rejected[i].file, want.rejected[i].file);
        EXPECT_EQ(got.rejected[i].line, want.rejected[i].line) << want.rejected[i].file;
        EXPECT_EQ(got.rejected[i].reason, want.rejected[i].reason)
            << want.rejected[i].file << ":" << want.rejected[i].line;
    }
    EXPECT_EQ(want.certificates_with_recommendations, got.keys.size());
    EXPECT_EQ(want.item_sum, got.item_sum);
    EXPECT_EQ(want.cost_pound_values, got.cost_pound_values);
    if (c.type == CertType::domestic) {
        EXPECT_GT(want.item_sum, want.rows_loaded);
        EXPECT_GT(want.cost_pound_values, want.rows_loaded * 9 / 10);
        EXPECT_LT(want.cost_pound_values, want.rows_loaded) << "a few are lodged without a cost";
    } else {
        EXPECT_EQ(want.item_sum, 0u);
        EXPECT_EQ(want.cost_pound_values, 0u);
    }

    // Every loaded certificate may have some (2.5 on average); their keys are loaded certificates'
    // keys, in the order of the paired certificates file, with items 1..n.
    EXPECT_GT(want.rows_loaded * 10, e.rows_loaded * 22);
    EXPECT_LT(want.rows_loaded * 10, e.rows_loaded * 28);
    EXPECT_GT(want.certificates_with_recommendations * 10, e.rows_loaded * 8);
    EXPECT_LT(want.certificates_with_recommendations, e.rows_loaded);
    for (const auto& [name, recs] : got.loaded) {
        const auto found = certs.loaded_keys.find(paired_certificates(name));
        ASSERT_NE(found, certs.loaded_keys.end()) << name;
        const std::vector<std::string>& cert_keys = found->second;
        std::size_t next_cert = 0;
        for (std::size_t i = 0; i < recs.size(); ++i) {
            const bool same_certificate = i > 0 && recs[i].key == recs[i - 1].key;
            if (!same_certificate) {
                while (next_cert < cert_keys.size() && cert_keys[next_cert] != recs[i].key) ++next_cert;
                ASSERT_LT(next_cert, cert_keys.size()) << name << ": " << recs[i].key << " is no loaded certificate "
                                                       << "of its certificates file (or is out of order)";
                ++next_cert;
            }
            if (c.type == CertType::domestic) {
                EXPECT_EQ(recs[i].item, same_certificate ? recs[i - 1].item + 1 : 1) << name << ": " << recs[i].key;
                EXPECT_LE(recs[i].item, 4);
            }
        }
    }

    // The files: the layout's header, the certificates file's BOM and line ends, quoted commas.
    std::map<std::string, std::string> content;
    for (const auto& z : entries) content[z.name] = z.content;
    const std::string header = joined_header(fx::recommendation_columns(o.cert_type, o.layout));
    std::size_t with_bom = 0, with_crlf = 0;
    for (const auto& f : want.files) {
        const std::string& recs = content.at(f.name);
        const std::string& certs_file = content.at(paired_certificates(f.name));
        const bool bom = starts_with(certs_file, kBom), crlf = certs_file.find("\r\n") != std::string::npos;
        EXPECT_EQ(starts_with(recs, kBom), bom) << f.name;
        EXPECT_EQ(recs.find("\r\n") != std::string::npos, crlf) << f.name;
        if (crlf) {
            EXPECT_EQ(std::count(recs.begin(), recs.end(), '\r'), std::count(recs.begin(), recs.end(), '\n')) << f.name;
        }
        EXPECT_TRUE(starts_with(recs.substr(bom ? kBom.size() : 0), header + (crlf ? "\r\n" : "\n"))) << f.name;
        with_bom += bom;
        with_crlf += crlf;
    }
    EXPECT_GT(got.values_with_commas, 0u);
    if (c.type == CertType::domestic && c.layout == Layout::current) {
        EXPECT_TRUE(starts_with(header, "certificate_number,improvement_item,improvement_id,indicative_cost,"));
    }

    if (c.hazards) {
        EXPECT_GT(with_bom, 0u);
        EXPECT_GT(with_crlf, 0u);
        for (const auto& reason : fx::recommendation_reject_reasons()) EXPECT_GT(want.rejects_by_reason.at(reason), 0u);
        // About 0.5 % of the rows; a wrong field count is one field fewer or one more.
        EXPECT_GT(want.rows_rejected * 1000, want.rows_read * 2);
        EXPECT_LT(want.rows_rejected * 1000, want.rows_read * 12);
        const std::size_t width = fx::recommendation_columns(o.cert_type, o.layout).size();
        for (std::size_t w : got.rejected_widths) EXPECT_TRUE(w == width - 1 || w == width + 1) << w;
    } else {
        EXPECT_EQ(want.rows_rejected, 0u);
        EXPECT_EQ(with_bom + with_crlf, 0u);
    }
}

INSTANTIATE_TEST_SUITE_P(
    AllTypesAndLayouts, FixtureRecommendationExpectations,
    testing::Values(
        RecCase{CertType::domestic, Layout::legacy, false}, RecCase{CertType::domestic, Layout::legacy, true},
        RecCase{CertType::domestic, Layout::current, false}, RecCase{CertType::domestic, Layout::current, true},
        RecCase{CertType::domestic, Layout::single, false}, RecCase{CertType::domestic, Layout::single, true},
        RecCase{CertType::non_domestic, Layout::legacy, true}, RecCase{CertType::non_domestic, Layout::current, false},
        RecCase{CertType::non_domestic, Layout::single, true}, RecCase{CertType::display, Layout::legacy, false},
        RecCase{CertType::display, Layout::current, true}, RecCase{CertType::display, Layout::single, false}),
    [](const testing::TestParamInfo<RecCase>& info) {
        std::string name = std::string(epc::cert_type_name(info.param.type)) + "_" +
                           std::string(epc::layout_name(info.param.layout)) +
                           (info.param.hazards ? "_hazards" : "_clean");
        std::replace(name.begin(), name.end(), '-', '_');
        return name;
    });

TEST(FixtureRecommendations, BothRejectReasonsOccurInASmallFixture) {
    for (CertType type : {CertType::domestic, CertType::non_domestic, CertType::display}) {
        fx::Options o = options(type, Layout::legacy, 40, 2, 31);
        o.hazards = {fx::Hazard::bad_rows};
        const fx::Expected e = fx::compute_expected(o);
        ASSERT_GE(e.recommendations.rows_read, 50u);
        for (const auto& reason : fx::recommendation_reject_reasons())
            EXPECT_GT(e.recommendations.rejects_by_reason.at(reason), 0u) << reason;
    }
}

TEST(FixtureRecommendations, DeterministicAndTheSameWhicheverWayWritten) {
    fx::Options o = options(CertType::domestic, Layout::current, 800, 3, 37);
    o.hazards = recommendation_hazards();
    fx::Expected rendered;
    const auto a = fx::render_entries(o, &rendered);
    const auto b = fx::render_entries(o);
    ASSERT_EQ(a.size(), b.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
        EXPECT_EQ(a[i].name, b[i].name);
        EXPECT_EQ(a[i].content, b[i].content) << a[i].name;
    }
    const std::string path = temp_path("recommendations.zip");
    const fx::Expected written = fx::write_zip(path, o);
    for (const auto& z : read_zip(path)) {
        const auto same = std::find_if(a.begin(), a.end(),
                                       [&](const fx::RenderedEntry& r) { return r.name == z.name; });
        ASSERT_NE(same, a.end()) << z.name;
        EXPECT_EQ(z.content, same->content) << z.name;
    }
    EXPECT_EQ(fx::to_json(written), fx::to_json(rendered));
    EXPECT_EQ(fx::to_json(fx::compute_expected(o)), fx::to_json(rendered));
    EXPECT_GT(rendered.recommendations.rows_rejected, 0u);
    std::remove(path.c_str());
}

TEST(FixtureRecommendations, JsonCarriesEveryField) {
    fx::Options o = options(CertType::domestic, Layout::legacy, 300, 2, 41);
    o.hazards = {fx::Hazard::bad_rows};
    const fx::Expected e = fx::compute_expected(o);
    const nlohmann::json j = fx::to_json(e)["recommendations"];
    EXPECT_EQ(j["rows_read"], e.recommendations.rows_read);
    EXPECT_EQ(j["rows_loaded"], e.recommendations.rows_loaded);
    EXPECT_EQ(j["rows_rejected"], e.recommendations.rows_rejected);
    EXPECT_EQ(j["certificates_with_recommendations"], e.recommendations.certificates_with_recommendations);
    EXPECT_EQ(j["item_sum"], e.recommendations.item_sum);
    EXPECT_EQ(j["cost_pound_values"], e.recommendations.cost_pound_values);
    EXPECT_EQ(j["rejects_by_reason"]["field_count"], e.recommendations.rejects_by_reason.at("field_count"));
    EXPECT_EQ(j["rejects_by_reason"]["missing_key"], e.recommendations.rejects_by_reason.at("missing_key"));
    ASSERT_EQ(j["files"].size(), e.recommendations.files.size());
    EXPECT_EQ(j["files"][0]["name"], e.recommendations.files[0].name);
    EXPECT_EQ(j["files"][0]["rows_read"], e.recommendations.files[0].rows_read);
    ASSERT_EQ(j["rejected"].size(), e.recommendations.rejected.size());
    EXPECT_EQ(j["rejected"][0]["file"], e.recommendations.rejected[0].file);
    EXPECT_EQ(j["rejected"][0]["line"], e.recommendations.rejected[0].line);
    EXPECT_EQ(j["rejected"][0]["reason"], e.recommendations.rejected[0].reason);
}

TEST(FixtureRecommendations, NoLoadedCertificatesMeansHeaderOnlyFiles) {
    fx::Expected e;
    const auto entries = fx::render_entries(options(CertType::domestic, Layout::legacy, 0, 3, 1), &e);
    EXPECT_EQ(e.recommendations.files.size(), 3u);
    EXPECT_EQ(e.recommendations.rows_read, 0u);
    EXPECT_EQ(e.recommendations.certificates_with_recommendations, 0u);
    for (const auto& z : entries)
        if (ends_with(z.name, "recommendations.csv")) {
            EXPECT_EQ(z.content, joined_header(fx::recommendation_columns(CertType::domestic, Layout::legacy)) + "\n");
        }
}
