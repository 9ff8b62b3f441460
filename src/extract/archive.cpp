#include "epc/extract/archive.hpp"

#include <algorithm>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <regex>
#include <set>

#include "epc/transform/csv.hpp"
#include "epc/transform/fields.hpp"

namespace epc {

namespace {

std::string zip_error_text(int code) {
    zip_error_t error;
    zip_error_init_with_code(&error, code);
    std::string text = zip_error_strerror(&error);
    zip_error_fini(&error);
    return text;
}

// A fingerprint that changes whenever any entry's name, size or content (CRC-32) changes, without
// reading the data. Used to recognise "the same archive again" when resuming a load.
struct Fingerprint {
    std::uint64_t hash = 14695981039346656037ull;  // FNV-1a 64
    void add(const void* data, std::size_t n) {
        const auto* p = static_cast<const unsigned char*>(data);
        for (std::size_t i = 0; i < n; ++i) hash = (hash ^ p[i]) * 1099511628211ull;
    }
    std::string hex() const {
        char buf[17];
        std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(hash));
        return buf;
    }
};

bool escapes_archive(const std::string& name) {
    if (name.empty() || name[0] == '/' || name.find('\\') != std::string::npos) return true;
    if (name.size() > 1 && name[1] == ':') return true;  // C:...
    std::size_t start = 0;
    while (start <= name.size()) {
        std::size_t slash = name.find('/', start);
        std::string part = name.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
        if (part == "..") return true;
        if (slash == std::string::npos) break;
        start = slash + 1;
    }
    return false;
}

// The first line of an entry, read without inflating the rest.
std::string read_first_line(zip_t* zip, zip_uint64_t index) {
    zip_file_t* f = zip_fopen_index(zip, index, 0);
    if (!f) return {};
    std::string head(std::size_t{64} * 1024, '\0');
    zip_int64_t n = zip_fread(f, head.data(), head.size());
    zip_fclose(f);
    if (n <= 0) return {};
    head.resize(static_cast<std::size_t>(n));
    if (head.compare(0, 3, "\xEF\xBB\xBF") == 0) head.erase(0, 3);
    std::size_t nl = head.find('\n');
    if (nl != std::string::npos) head.resize(nl);
    if (!head.empty() && head.back() == '\r') head.pop_back();
    return head;
}

struct Entry {
    zip_uint64_t index;
    std::string name;
    std::uint64_t size;
    std::uint64_t comp_size;
};

// The current layout's files at the archive root: certificates-YYYY.csv and recommendations-YYYY.csv.
const std::regex& year_file() {
    static const std::regex pattern(R"((certificates|recommendations)-(\d{4})\.csv)");
    return pattern;
}

// The central directory's entries, less those refused outright (a path that escapes the archive,
// a likely zip bomb), which go to info.problems. Every entry goes into info.identity.
std::vector<Entry> read_entries(zip_t* zip, ArchiveInfo& info) {
    std::vector<Entry> entries;
    Fingerprint fingerprint;
    zip_int64_t count = zip_get_num_entries(zip, 0);
    for (zip_int64_t i = 0; i < count; ++i) {
        zip_stat_t st;
        if (zip_stat_index(zip, static_cast<zip_uint64_t>(i), 0, &st) != 0) {
            info.problems.push_back("entry #" + std::to_string(i) + ": " + zip_strerror(zip));
            continue;
        }
        Entry e{static_cast<zip_uint64_t>(i), st.name ? st.name : "", st.size, st.comp_size};
        fingerprint.add(e.name.data(), e.name.size() + 1);
        fingerprint.add(&st.size, sizeof st.size);
        fingerprint.add(&st.crc, sizeof st.crc);
        if (escapes_archive(e.name)) {
            info.problems.push_back("entry '" + e.name + "' has a path that escapes the archive");
            continue;
        }
        if (e.size > (1u << 20) && e.size / std::max<std::uint64_t>(e.comp_size, 1) > kMaxCompressionRatio) {
            info.problems.push_back("entry '" + e.name + "' inflates from " + std::to_string(e.comp_size) + " to " +
                                    std::to_string(e.size) + " bytes, beyond a sane ratio (" +
                                    std::to_string(kMaxCompressionRatio) + ":1): refusing a likely zip bomb");
            continue;
        }
        entries.push_back(std::move(e));
    }
    fingerprint.add(&info.bytes, sizeof info.bytes);
    info.identity = fingerprint.hex();
    return entries;
}

// The entries at the root, and those one directory down by directory (sorted for stable reporting).
struct Tree {
    std::vector<const Entry*> root_files;
    std::map<std::string, std::vector<const Entry*>> dirs;
};

Tree group_by_directory(const std::vector<Entry>& entries, ArchiveInfo& info) {
    Tree tree;
    for (const Entry& e : entries) {
        std::size_t slash = e.name.find('/');
        if (slash == std::string::npos) {
            tree.root_files.push_back(&e);
            continue;
        }
        std::string dir = e.name.substr(0, slash);
        std::string rest = e.name.substr(slash + 1);
        auto& list = tree.dirs[dir];
        if (rest.empty()) continue;  // the directory's own entry
        if (rest.find('/') != std::string::npos && rest.find('/') + 1 != rest.size()) {
            info.problems.push_back("entry '" + e.name + "' is nested deeper than one directory");
            continue;
        }
        list.push_back(&e);
    }
    return tree;
}

// The root files that tell the layout apart.
struct RootFiles {
    std::map<std::string, std::set<std::string>> years;  // year -> which of the pair exist
    const Entry* single = nullptr;                       // certificates.csv
    const Entry* single_recommendations = nullptr;       // recommendations.csv beside it
};

RootFiles classify_root_files(const Tree& tree, ArchiveInfo& info) {
    RootFiles root;
    for (const Entry* e : tree.root_files) {
        std::smatch m;
        if (std::regex_match(e->name, m, year_file())) {
            root.years[m[2]].insert(m[1]);
        } else if (e->name == "certificates.csv") {
            root.single = e;
        } else if (e->name == "recommendations.csv") {
            root.single_recommendations = e;
        } else if (e->name != "LICENCE.txt" && e->name != "schema.json" && e->name != "columns.csv") {
            info.warnings.push_back("unexpected file at the archive root: " + e->name);
        }
    }
    return root;
}

// What the layout says to check further: the certificates files to load, and every CSV that must
// not be empty.
struct Selection {
    std::vector<const Entry*> certificates;
    std::vector<const Entry*> recommendations;
    std::vector<const Entry*> csvs;
};

Selection select_yearly_files(const Tree& tree, const RootFiles& root, ArchiveInfo& info) {
    info.layout = Layout::current;
    if (!tree.dirs.empty())
        info.problems.push_back("archive mixes yearly files with " + std::to_string(tree.dirs.size()) +
                                " directories; cannot tell its layout");
    for (const auto& [year, kinds] : root.years)
        for (const char* kind : {"certificates", "recommendations"})
            if (!kinds.count(kind))
                info.problems.push_back(std::string(kind) + "-" + year + ".csv is missing (its pair " +
                                        (kinds.count("certificates") ? "certificates" : "recommendations") + "-" +
                                        year + ".csv is present)");
    Selection selected;
    for (const Entry* e : tree.root_files)
        if (std::regex_match(e->name, year_file())) {
            selected.csvs.push_back(e);
            if (e->name.rfind("certificates-", 0) == 0) selected.certificates.push_back(e);
            else selected.recommendations.push_back(e);
        }
    return selected;
}

// One <type>-<GSS code>-<name>/ directory of the legacy layout, with its certificates.csv and
// recommendations.csv. False when the directory's name does not fit.
bool select_la_directory(const std::string& dir, const std::vector<const Entry*>& files, const std::string& type_name,
                         Selection& selected, ArchiveInfo& info) {
    static const std::regex kLaDir(
        R"((domestic|non-domestic|display)-((E0[6-9]|W06)\d{6})-([A-Za-z0-9][A-Za-z0-9-]*))");
    static const std::regex kUnknownDir(
        R"((domestic|non-domestic|display)-_unknown_local_authority--Unknown-Local-Authority-)");
    std::smatch m;
    if (!std::regex_match(dir, m, kLaDir) && !std::regex_match(dir, m, kUnknownDir)) {
        info.problems.push_back("directory '" + dir + "/' does not match " + type_name +
                                "-<GSS code E06/E07/E08/E09/W06 + 6 digits>-<name>");
        return false;
    }
    if (m[1] != type_name)
        info.problems.push_back("directory '" + dir + "/' holds " + m[1].str() + " certificates, not " + type_name +
                                " (check --certtype)");
    const Entry* certs = nullptr;
    const Entry* recs = nullptr;
    for (const Entry* e : files) {
        std::string base = e->name.substr(dir.size() + 1);
        if (base == "certificates.csv") certs = e;
        else if (base == "recommendations.csv") recs = e;
        else info.warnings.push_back("unexpected file " + e->name);
    }
    if (!certs) info.problems.push_back("directory '" + dir + "/' has no certificates.csv");
    if (!recs) info.problems.push_back("directory '" + dir + "/' has no recommendations.csv");
    if (certs) selected.certificates.push_back(certs), selected.csvs.push_back(certs);
    if (recs) selected.recommendations.push_back(recs), selected.csvs.push_back(recs);
    return true;
}

Selection select_la_directories(const Tree& tree, const ValidationOptions& options, ArchiveInfo& info) {
    info.layout = Layout::legacy;
    const std::string type_name(cert_type_name(options.type));
    Selection selected;
    for (const auto& [dir, files] : tree.dirs)
        if (select_la_directory(dir, files, type_name, selected, info)) ++info.directories;
    if (options.expect_dirs && static_cast<int>(info.directories) != *options.expect_dirs)
        info.problems.push_back("found " + std::to_string(info.directories) +
                                " Local Authority directories, expected " + std::to_string(*options.expect_dirs) +
                                " (--expect-dirs)");
    return selected;
}

// Tells the layout (docs/data-formats.md §2) and selects its files; what does not fit goes to info.problems.
Selection select_files(const Tree& tree, const ValidationOptions& options, ArchiveInfo& info) {
    RootFiles root = classify_root_files(tree, info);
    if (!root.years.empty()) return select_yearly_files(tree, root, info);
    if (root.single) {
        info.layout = Layout::single;
        Selection selected{{root.single}, {}, {root.single}};
        if (root.single_recommendations)
            selected.recommendations.push_back(root.single_recommendations),
                selected.csvs.push_back(root.single_recommendations);
        return selected;
    }
    if (!tree.dirs.empty()) return select_la_directories(tree, options, info);
    info.problems.emplace_back("no certificates CSV found (neither <type>-<LA>/certificates.csv, "
                               "certificates-YYYY.csv nor certificates.csv)");
    return {};
}

void check_not_empty(const Selection& selected, ArchiveInfo& info) {
    for (const Entry* e : selected.csvs)
        if (e->size == 0) info.problems.push_back(e->name + " is empty");
}

std::vector<std::string> read_header(zip_t* zip, const Entry& e, RecordSplitter& splitter) {
    std::string line = read_first_line(zip, e.index);
    std::vector<Field> header;
    splitter.split(line.data(), line.size(), header);
    std::vector<std::string> names;
    names.reserve(header.size());
    for (const Field& f : header) names.emplace_back(trim(f));
    return names;
}

std::vector<const Entry*> in_archive_order(std::vector<const Entry*> entries) {
    std::sort(entries.begin(), entries.end(), [](const Entry* a, const Entry* b) { return a->index < b->index; });
    return entries;
}

// Each certificates header must name the columns a row cannot be loaded without. The files that
// pass go to info.files, in archive order; the recommendations files to info.recommendations,
// numbered after them (their headers are checked when they are loaded: most runs do not).
void check_headers(zip_t* zip, const Selection& selected, CertType type, ArchiveInfo& info) {
    std::map<std::string, int> missing_optional;  // column -> files lacking it (one warning each)
    RecordSplitter splitter(true);
    for (const Entry* e : in_archive_order(selected.certificates)) {
        if (e->size == 0) continue;
        std::vector<std::string> names = read_header(zip, *e, splitter);
        FieldMap map = map_header(std::vector<Field>(names.begin(), names.end()), type);
        for (const std::string& column : map.missing_required)
            info.problems.push_back(e->name + ": header has no " + column + " column");
        for (const std::string& column : map.missing_optional) ++missing_optional[column];
        info.files.push_back(
            CertFile{static_cast<int>(info.files.size()), e->index, e->name, e->size, std::move(names)});
    }
    for (const auto& [column, files] : missing_optional)
        info.warnings.push_back(std::to_string(files) + " certificates file(s) have no " + column +
                                " column; it will be NULL");
    for (const Entry* e : in_archive_order(selected.recommendations)) {
        if (e->size == 0) continue;
        const int file_no = static_cast<int>(info.files.size() + info.recommendations.size());
        info.recommendations.push_back(
            CertFile{file_no, e->index, e->name, e->size, read_header(zip, *e, splitter), Dataset::recommendations});
    }
}

}  // namespace

ZipHandle open_zip(const std::string& path) {
    int code = 0;
    zip_t* zip = zip_open(path.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &code);
    if (!zip) {
        std::string why;
        switch (code) {
            case ZIP_ER_NOENT: why = "no such file"; break;
            case ZIP_ER_OPEN: why = "cannot open it: " + std::string(std::strerror(errno)); break;
            case ZIP_ER_NOZIP: why = "not a zip archive (truncated download or wrong file?)"; break;
            case ZIP_ER_INCONS: why = "inconsistent zip structure (corrupt or truncated)"; break;
            default: why = zip_error_text(code);
        }
        throw Error(exit_invalid_archive, "archive " + path + ": " + why);
    }
    return ZipHandle(zip);
}

ArchiveInfo inspect_archive(const std::string& path, const ValidationOptions& options) {
    ArchiveInfo info;
    info.path = path;
    std::error_code ec;
    info.bytes = std::filesystem::file_size(path, ec);
    ZipHandle zip = open_zip(path);
    const std::vector<Entry> entries = read_entries(zip.get(), info);
    const Selection selected = select_files(group_by_directory(entries, info), options, info);
    check_not_empty(selected, info);
    check_headers(zip.get(), selected, options.type, info);
    return info;
}

}  // namespace epc
