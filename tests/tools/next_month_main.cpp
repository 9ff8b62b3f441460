// epc-next-month IN.zip OUT.zip --uprn-file FILE --onspd-file FILE: "next month" for
// bench/release-bench. Copies a fixture archive with about 1 % of certificates removed, 1 %
// changed (a new floor area; a quarter of them also a new address without a UPRN) and 1 % added
// (half at a new address without a UPRN), chosen by a hash of each key so the same input always
// gives the same output. Also writes offline reference files for the first archive's data: an
// OS Open UPRN file knowing about 90 % of its UPRNs and an ONSPD file knowing about 98 % of its
// postcodes, so geocoding has property-level, postcode-level and missing answers, as in real runs.
//
// Works on the generator's own archives without hazards (one record per line: the release
// benchmark generates them so); other entries (recommendations.csv) are copied unchanged.
#include <zip.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include <CLI/CLI.hpp>

#include "epc/extract/archive.hpp"
#include "epc/transform/csv.hpp"

namespace {

std::uint64_t mix(std::uint64_t z) {
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

std::uint64_t hash_text(std::string_view s) {
    std::uint64_t h = 1469598103934665603ULL;
    for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
    return mix(h);
}

// A record's fields as raw slices of its line (quotes kept), so untouched fields are written back
// byte for byte.
std::vector<std::string_view> split_raw(std::string_view line) {
    std::vector<std::string_view> fields;
    std::size_t start = 0;
    bool quoted = false;
    for (std::size_t i = 0; i < line.size(); ++i) {
        if (line[i] == '"') quoted = !quoted;
        else if (line[i] == ',' && !quoted) {
            fields.push_back(line.substr(start, i - start));
            start = i + 1;
        }
    }
    fields.push_back(line.substr(start));
    return fields;
}

std::string_view unquoted(std::string_view field) {
    if (field.size() >= 2 && field.front() == '"' && field.back() == '"') return field.substr(1, field.size() - 2);
    return field;
}

struct Columns {
    std::size_t key, address1, address, postcode, floor_area, uprn;
};

std::size_t column(const std::vector<std::string_view>& header, std::initializer_list<std::string_view> names) {
    for (std::size_t i = 0; i < header.size(); ++i)
        for (std::string_view name : names) {
            std::string_view h = unquoted(header[i]);
            if (h.size() == name.size() &&
                std::equal(h.begin(), h.end(), name.begin(), [](char a, char b) { return std::toupper(a) == b; }))
                return i;
        }
    throw std::runtime_error("the header lacks " + std::string(*names.begin()));
}

struct Counts {
    std::uint64_t kept = 0, removed = 0, changed = 0, added = 0, new_addresses = 0;
};

// What the reference files are made of: the first release's UPRNs and postcodes.
struct Seen {
    std::vector<std::uint64_t> uprns;
    std::unordered_set<std::string> postcodes;
};

// The line with the fields that have a replacement replaced.
std::string rewrite(const std::vector<std::string_view>& fields,
                    const std::vector<std::optional<std::string>>& replaced) {
    std::string out;
    for (std::size_t i = 0; i < fields.size(); ++i) {
        if (i) out += ',';
        out += replaced[i] ? *replaced[i] : std::string(fields[i]);
    }
    return out;
}

// A new address at the same postcode and no UPRN: the full ADDRESS (what the importer reads) and
// ADDRESS1 get a prefix.
void new_address_at(const std::vector<std::string_view>& f, const Columns& c, std::string_view prefix,
                    std::vector<std::optional<std::string>>& replaced) {
    for (std::size_t i : {c.address1, c.address})
        replaced[i] = "\"" + std::string(prefix) + ", " + std::string(unquoted(f[i])) + "\"";
    replaced[c.uprn] = "";
}

void transform_certificates(const std::string& text, std::ostream& out, Counts& counts, Seen& seen) {
    std::size_t pos = 0;
    auto next_line = [&](std::string_view& line) {
        if (pos >= text.size()) return false;
        std::size_t end = text.find('\n', pos);
        if (end == std::string::npos) end = text.size();
        line = std::string_view(text).substr(pos, end - pos);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        pos = end + 1;
        return true;
    };
    std::string_view line;
    if (!next_line(line)) return;
    out << line << '\n';
    const std::vector<std::string_view> header = split_raw(line);
    const Columns c{column(header, {"LMK_KEY", "CERTIFICATE_NUMBER"}),
                    column(header, {"ADDRESS1"}),
                    column(header, {"ADDRESS"}),
                    column(header, {"POSTCODE"}),
                    column(header, {"TOTAL_FLOOR_AREA", "FLOOR_AREA"}),
                    column(header, {"UPRN"})};
    while (next_line(line)) {
        if (line.empty()) continue;
        const std::vector<std::string_view> f = split_raw(line);
        if (f.size() != header.size()) {
            out << line << '\n';
            continue;
        }
        const std::uint64_t uprn = std::strtoull(std::string(unquoted(f[c.uprn])).c_str(), nullptr, 10);
        if (uprn) seen.uprns.push_back(uprn);
        if (!unquoted(f[c.postcode]).empty()) seen.postcodes.emplace(unquoted(f[c.postcode]));

        const std::uint64_t h = hash_text(unquoted(f[c.key]));
        const bool new_address = (h / 100) % 4 == 0;
        std::vector<std::optional<std::string>> replaced(f.size());
        if (h % 100 == 0) {
            ++counts.removed;
            continue;
        }
        if (h % 100 == 1) {
            const double area = std::strtod(std::string(unquoted(f[c.floor_area])).c_str(), nullptr);
            replaced[c.floor_area] = std::to_string(static_cast<long long>(area) + 7);
            if (new_address) {
                new_address_at(f, c, "Annex", replaced);
                ++counts.new_addresses;
            }
            out << rewrite(f, replaced) << '\n';
            ++counts.changed;
            continue;
        }
        out << line << '\n';
        ++counts.kept;
        if (h % 100 == 2) {
            replaced[c.key] = std::string(unquoted(f[c.key])) + "7";
            if (new_address) {
                new_address_at(f, c, "Garden flat", replaced);
                ++counts.new_addresses;
            }
            out << rewrite(f, replaced) << '\n';
            ++counts.added;
        }
    }
}

std::string read_entry(zip_t* zip, zip_uint64_t index) {
    zip_stat_t st;
    zip_stat_index(zip, index, 0, &st);
    std::string text(st.size, '\0');
    zip_file_t* file = zip_fopen_index(zip, index, 0);
    if (!file) throw std::runtime_error(std::string("cannot open entry ") + st.name);
    zip_int64_t n = zip_fread(file, text.data(), st.size);
    zip_fclose(file);
    if (n != static_cast<zip_int64_t>(st.size)) throw std::runtime_error(std::string("cannot read entry ") + st.name);
    return text;
}

bool is_certificates(std::string_view name) {
    const std::string_view base = name.substr(name.rfind('/') == std::string_view::npos ? 0 : name.rfind('/') + 1);
    return base.rfind("certificates", 0) == 0 && base.size() >= 4 && base.substr(base.size() - 4) == ".csv";
}

void write_references(Seen& seen, const std::string& uprn_file, const std::string& onspd_file) {
    std::sort(seen.uprns.begin(), seen.uprns.end());
    seen.uprns.erase(std::unique(seen.uprns.begin(), seen.uprns.end()), seen.uprns.end());
    std::ofstream uprn(uprn_file);
    uprn << "UPRN,X_COORDINATE,Y_COORDINATE,LATITUDE,LONGITUDE\n";
    char line[128];
    for (std::uint64_t u : seen.uprns) {
        const std::uint64_t h = mix(u);
        if (h % 10 == 0) continue;
        std::snprintf(line, sizeof line, "%llu,400000,300000,%.7f,%.7f\n", static_cast<unsigned long long>(u),
                      50.5 + static_cast<double>(h % 3000000) / 1e6, -4.0 + static_cast<double>(h % 5000000) / 1e6);
        uprn << line;
    }
    std::vector<std::string> postcodes(seen.postcodes.begin(), seen.postcodes.end());
    std::sort(postcodes.begin(), postcodes.end());
    std::ofstream onspd(onspd_file);
    onspd << "pcd,pcd2,pcds,doterm,lat,long\n";
    for (const std::string& pc : postcodes) {
        const std::uint64_t h = hash_text(pc);
        if (h % 50 == 0) continue;
        std::snprintf(line, sizeof line, ",%.6f,%.6f\n", 50.5 + static_cast<double>(h % 3000000) / 1e6,
                      -4.0 + static_cast<double>(h % 5000000) / 1e6);
        onspd << pc << ',' << pc << ',' << pc << ',' << line;
    }
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app("epc-next-month: next month's archive and offline reference files, for bench/release-bench");
    std::string in, out, uprn_file, onspd_file;
    app.add_option("in", in, "the first release's archive")->required();
    app.add_option("out", out, "next month's archive (replaced)")->required();
    app.add_option("--uprn-file", uprn_file, "OS Open UPRN-shaped CSV to write")->required();
    app.add_option("--onspd-file", onspd_file, "ONSPD-shaped CSV to write")->required();
    CLI11_PARSE(app, argc, argv);
    try {
        epc::ZipHandle source = epc::open_zip(in);
        const std::filesystem::path scratch = out + ".parts";
        std::filesystem::remove_all(scratch);
        std::filesystem::create_directories(scratch);
        int err = 0;
        zip_t* target = zip_open(out.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
        if (!target) throw std::runtime_error("cannot create " + out);
        Counts counts;
        Seen seen;
        const zip_int64_t entries = zip_get_num_entries(source.get(), 0);
        for (zip_int64_t i = 0; i < entries; ++i) {
            const std::string name = zip_get_name(source.get(), static_cast<zip_uint64_t>(i), 0);
            if (!name.empty() && name.back() == '/') {
                zip_dir_add(target, name.c_str(), ZIP_FL_ENC_UTF_8);
                continue;
            }
            // Each entry goes through a file of its own: libzip reads sources only at zip_close,
            // and a whole release does not fit in memory.
            const std::filesystem::path part = scratch / std::to_string(i);
            {
                const std::string text = read_entry(source.get(), static_cast<zip_uint64_t>(i));
                std::ofstream file(part, std::ios::binary);
                if (is_certificates(name)) transform_certificates(text, file, counts, seen);
                else file << text;
            }
            zip_source_t* src = zip_source_file(target, part.c_str(), 0, -1);
            if (!src || zip_file_add(target, name.c_str(), src, ZIP_FL_ENC_UTF_8) < 0)
                throw std::runtime_error("cannot add " + name);
            zip_set_file_compression(target, static_cast<zip_uint64_t>(i), ZIP_CM_DEFLATE, 1);
        }
        if (zip_close(target) != 0) throw std::runtime_error("cannot write " + out);
        std::filesystem::remove_all(scratch);
        write_references(seen, uprn_file, onspd_file);
        std::printf(
            "{\"kept\": %llu, \"removed\": %llu, \"changed\": %llu, \"added\": %llu, \"new_addresses\": %llu}\n",
            static_cast<unsigned long long>(counts.kept), static_cast<unsigned long long>(counts.removed),
            static_cast<unsigned long long>(counts.changed), static_cast<unsigned long long>(counts.added),
            static_cast<unsigned long long>(counts.new_addresses));
        return 0;
    } catch (const std::exception& e) {
        std::cerr << "epc-next-month: " << e.what() << "\n";
        return 1;
    }
}
