// Archive validation: every failure the extract stage must catch, each reported (all of them, not
// just the first), and the layouts it must accept.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include "epc/extract/archive.hpp"
#include "support/zip_writer.hpp"

using namespace epc;
using epc::test::Entries;

namespace {

const std::string kHeader =
    "LMK_KEY,ADDRESS,POSTCODE,LODGEMENT_DATE,TRANSACTION_TYPE,TOTAL_FLOOR_AREA,UPRN,LOCAL_AUTHORITY\n";
const std::string kRow = "1,\"1, A Road\",AB1 2CD,2020-01-01,rental,50,1,E06000001\n";
const std::string kRecs = "LMK_KEY,IMPROVEMENT_ITEM\n1,1\n";

// ctest runs each test as its own process, in parallel: every file name carries the test's name.
std::string tmp(const std::string& name) {
    return testing::TempDir() + testing::UnitTest::GetInstance()->current_test_info()->name() + "-" + name;
}

Entries legacy_dir(const std::string& dir, const std::string& certs = kHeader + kRow) {
    return {{dir + "/", ""}, {dir + "/certificates.csv", certs}, {dir + "/recommendations.csv", kRecs}};
}

Entries concat(std::initializer_list<Entries> parts) {
    Entries all;
    for (const auto& p : parts) all.insert(all.end(), p.begin(), p.end());
    return all;
}

ArchiveInfo inspect(const Entries& entries, ValidationOptions options = {}) {
    std::string path = tmp("archive-test.zip");
    epc::test::write_zip(path, entries);
    return inspect_archive(path, options);
}

bool mentions(const std::vector<std::string>& problems, const std::string& text) {
    return std::any_of(problems.begin(), problems.end(),
                       [&](const std::string& p) { return p.find(text) != std::string::npos; });
}

}  // namespace

TEST(Archive, ValidLegacyLayout) {
    ArchiveInfo a = inspect(concat({{{"LICENCE.txt", "OGL"}},
                                    legacy_dir("domestic-E06000001-Hartlepool"),
                                    legacy_dir("domestic-E07000146-King-s-Lynn-and-West-Norfolk"),
                                    legacy_dir("domestic-_unknown_local_authority--Unknown-Local-Authority-")}));
    EXPECT_TRUE(a.problems.empty()) << a.problems.front();
    EXPECT_EQ(a.layout, Layout::legacy);
    EXPECT_EQ(a.directories, 3u);
    ASSERT_EQ(a.files.size(), 3u);
    EXPECT_EQ(a.files[0].name, "domestic-E06000001-Hartlepool/certificates.csv");
    EXPECT_EQ(a.files[0].size, kHeader.size() + kRow.size());
    EXPECT_EQ(a.identity.size(), 16u);
}

TEST(Archive, ValidCurrentAndSingleLayouts) {
    ArchiveInfo current = inspect({{"certificates-2024.csv", kHeader + kRow},
                                   {"recommendations-2024.csv", kRecs},
                                   {"certificates-2025.csv", kHeader + kRow},
                                   {"recommendations-2025.csv", kRecs}});
    EXPECT_TRUE(current.problems.empty());
    EXPECT_EQ(current.layout, Layout::current);
    EXPECT_EQ(current.files.size(), 2u);

    ArchiveInfo single = inspect({{"certificates.csv", kHeader + kRow},
                                  {"recommendations.csv", kRecs},
                                  {"schema.json", "{}"},
                                  {"columns.csv", "a"},
                                  {"LICENCE.txt", "OGL"}});
    EXPECT_TRUE(single.problems.empty());
    EXPECT_EQ(single.layout, Layout::single);
    EXPECT_TRUE(single.warnings.empty());
}

TEST(Archive, IdentityChangesWithContent) {
    ArchiveInfo a = inspect(legacy_dir("domestic-E06000001-Hartlepool"));
    ArchiveInfo b = inspect(legacy_dir("domestic-E06000001-Hartlepool", kHeader + kRow + kRow));
    ArchiveInfo a2 = inspect(legacy_dir("domestic-E06000001-Hartlepool"));
    EXPECT_NE(a.identity, b.identity);
    EXPECT_EQ(a.identity, a2.identity);
}

TEST(Archive, ReportsEveryProblemNotJustTheFirst) {
    ArchiveInfo a = inspect(concat({
        legacy_dir("domestic-E06000001-Hartlepool"),
        legacy_dir("domestic-X99-Nowhere"),                                       // bad name
        {{"domestic-E06000002-Middlesbrough/certificates.csv", kHeader + kRow}},  // no recommendations
        legacy_dir("domestic-E06000003-Redcar-and-Cleveland", ""),                // empty certificates
        legacy_dir("domestic-E06000004-Stockton-on-Tees", "KEY,DATE\n1,2\n"),     // no key column
        legacy_dir("non-domestic-E06000005-Darlington"),                          // wrong type
        {{"../../evil.txt", "x"}},                                                // escapes
    }));
    EXPECT_TRUE(mentions(a.problems, "'domestic-X99-Nowhere/' does not match")) << a.problems.size();
    EXPECT_TRUE(mentions(a.problems, "domestic-E06000002-Middlesbrough/' has no recommendations.csv"));
    EXPECT_TRUE(mentions(a.problems, "domestic-E06000003-Redcar-and-Cleveland/certificates.csv is empty"));
    EXPECT_TRUE(mentions(a.problems, "Stockton-on-Tees/certificates.csv: header has no LMK_KEY/certificate_number"));
    EXPECT_TRUE(mentions(a.problems, "holds non-domestic certificates, not domestic"));
    EXPECT_TRUE(mentions(a.problems, "'../../evil.txt' has a path that escapes"));
    EXPECT_EQ(a.problems.size(), 7u);  // the Stockton header also lacks LODGEMENT_DATE
}

TEST(Archive, ExpectedDirectoryCountIsEnforcedOnlyWhenAsked) {
    Entries two = concat(
        {legacy_dir("domestic-E06000001-Hartlepool"), legacy_dir("domestic-W06000001-Isle-of-Anglesey")});
    EXPECT_TRUE(inspect(two).problems.empty());
    EXPECT_TRUE(inspect(two, {CertType::domestic, 2}).problems.empty());
    ArchiveInfo wrong = inspect(two, {CertType::domestic, 349});
    ASSERT_EQ(wrong.problems.size(), 1u);
    EXPECT_EQ(wrong.problems[0], "found 2 Local Authority directories, expected 349 (--expect-dirs)");
}

TEST(Archive, CurrentLayoutNeedsPairs) {
    ArchiveInfo a = inspect({{"certificates-2024.csv", kHeader + kRow},
                             {"recommendations-2025.csv", kRecs},
                             {"certificates-2025.csv", kHeader + kRow}});
    EXPECT_TRUE(mentions(a.problems, "recommendations-2024.csv is missing"));
    EXPECT_EQ(a.problems.size(), 1u);
}

TEST(Archive, NoCertificatesAtAll) {
    ArchiveInfo a = inspect({{"readme.txt", "hello"}});
    EXPECT_TRUE(mentions(a.problems, "no certificates CSV found"));
}

TEST(Archive, ZipBombRatioIsRefused) {
    ArchiveInfo a = inspect(legacy_dir("domestic-E06000001-Hartlepool", kHeader + std::string(50 << 20, ',')));
    EXPECT_TRUE(mentions(a.problems, "beyond a sane ratio")) << (a.problems.empty() ? "" : a.problems[0]);
}

TEST(Archive, NotAZipTruncatedOrMissingIsAnInvalidArchive) {
    std::string junk = tmp("not-a-zip.zip");
    std::ofstream(junk) << "this is an HTML error page, not a zip";
    std::string full = tmp("full.zip");
    epc::test::write_zip(full, legacy_dir("domestic-E06000001-Hartlepool", kHeader + std::string(100000, 'x')));
    std::string cut = tmp("truncated.zip");
    {
        std::ifstream in(full, std::ios::binary);
        std::string bytes((std::istreambuf_iterator<char>(in)), {});
        std::ofstream(cut, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
    }
    for (const auto& [path, expected] : std::vector<std::pair<std::string, std::string>>{
             {junk, "not a zip archive"}, {cut, "not a zip archive"}, {tmp("missing.zip"), "no such file"}}) {
        try {
            inspect_archive(path, {});
            FAIL() << path;
        } catch (const Error& e) {
            EXPECT_EQ(e.code(), exit_invalid_archive);
            EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
            EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
        }
    }
}

TEST(Archive, CorruptDataIsCaughtWhileStreaming) {
    // Flip bytes in the middle of the compressed data: the central directory still reads fine,
    // so only inflating (CRC/inflate error) can tell.
    std::string path = tmp("corrupt.zip");
    std::string body = kHeader;
    for (int i = 0; i < 20000; ++i)
        body += std::to_string(i) + ",\"" + std::to_string(i * 7919) + " Road\",X,2020-01-01,a,1,1,E\n";
    epc::test::write_zip(path, legacy_dir("domestic-E06000001-Hartlepool", body));
    std::string bytes;
    {
        std::ifstream in(path, std::ios::binary);
        bytes.assign((std::istreambuf_iterator<char>(in)), {});
    }
    for (std::size_t i = 20000; i < 20400; ++i) bytes[i] = static_cast<char>(bytes[i] ^ 0x5A);
    std::ofstream(path, std::ios::binary) << bytes;

    ArchiveInfo a = inspect_archive(path, {});
    ASSERT_FALSE(a.files.empty());
    ZipHandle zip = open_zip(path);
    EntrySource source(zip.get(), a.files[0]);
    std::vector<char> buf(1 << 16);
    try {
        while (source.read(buf.data(), static_cast<int>(buf.size())) > 0) {
        }
        FAIL() << "corruption not detected";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), exit_invalid_archive);
        EXPECT_NE(std::string(e.what()).find("certificates.csv is corrupt"), std::string::npos) << e.what();
    }
}

// ---- EntrySource: every decoder, every check ----

namespace {

// A certificates.csv of about 400 KB: more than one buffer of compressed input, many reads.
std::string big_csv() {
    std::string body = kHeader;
    for (int i = 0; body.size() < 400000; ++i)
        body += std::to_string(i) + ",\"" + std::to_string(i * 7919 % 100003) +
                " Road\",AB1 2CD,2020-01-01,rental,50,1,E\n";
    return body;
}

epc::test::RawEntry raw(std::string content, bool deflate, bool zip64) {
    epc::test::RawEntry e;
    e.name = "certificates.csv";
    e.content = std::move(content);
    e.deflate = deflate;
    e.zip64 = zip64;
    return e;
}

struct Streamed {
    std::string text;  // what read() handed out before the end or the error
    std::optional<Error> error;
    EntryDecoder decoder = EntryDecoder::libzip;
};

// Streams the archive's only certificates file as the loader does, `chunk` bytes a read.
Streamed stream_entry(const std::string& path, int chunk = 1 << 16) {
    ArchiveInfo a = inspect_archive(path, {});
    EXPECT_TRUE(a.problems.empty()) << (a.problems.empty() ? "" : a.problems.front());
    EXPECT_EQ(a.files.size(), 1u);
    Streamed s;
    if (a.files.empty()) return s;
    ZipHandle zip = open_zip(path);
    std::vector<char> buf(static_cast<std::size_t>(chunk));
    try {
        EntrySource source(zip.get(), a.files[0]);
        s.decoder = source.decoder();
        for (int n; (n = source.read(buf.data(), chunk)) > 0;) s.text.append(buf.data(), static_cast<std::size_t>(n));
    } catch (const Error& e) {
        s.error = e;
    }
    return s;
}

Streamed stream_raw(const epc::test::RawEntry& entry, int chunk = 1 << 16) {
    std::string path = tmp("raw.zip");
    epc::test::write_raw_zip(path, {entry});
    return stream_entry(path, chunk);
}

std::string describe(bool deflate, bool zip64) {
    return std::string(deflate ? "deflated" : "stored") + (zip64 ? ", Zip64" : "");
}

}  // namespace

TEST(EntrySource, DeflatedAndStoredEntriesReadExactlyWithAndWithoutZip64) {
    const std::string csv = big_csv();
    for (bool deflate : {true, false})
        for (bool zip64 : {false, true})
            for (int chunk : {4096, 1 << 20}) {
                Streamed s = stream_raw(raw(csv, deflate, zip64), chunk);
                EXPECT_FALSE(s.error) << describe(deflate, zip64) << ": " << s.error->what();
                EXPECT_EQ(s.decoder, deflate ? EntryDecoder::isal_inflate : EntryDecoder::stored);
                EXPECT_TRUE(s.text == csv) << describe(deflate, zip64) << ", reads of " << chunk;
            }
    // And what libzip itself wrote (zlib's deflate), as every other test's archive.
    std::string path = tmp("libzip.zip");
    epc::test::write_zip(path, {{"certificates.csv", csv}});
    Streamed s = stream_entry(path);
    EXPECT_EQ(s.decoder, EntryDecoder::isal_inflate);
    EXPECT_TRUE(s.text == csv);
}

TEST(EntrySource, CrcMismatchIsCaughtBeforeTheLastBytesAreHandedOn) {
    const std::string csv = big_csv();
    for (bool deflate : {true, false})
        for (bool zip64 : {false, true}) {
            epc::test::RawEntry e = raw(csv, deflate, zip64);
            e.crc = static_cast<std::uint32_t>(
                        crc32(0, reinterpret_cast<const Bytef*>(csv.data()), static_cast<uInt>(csv.size()))) ^
                    0x1;
            Streamed s = stream_raw(e);
            ASSERT_TRUE(s.error) << describe(deflate, zip64);
            EXPECT_EQ(s.error->code(), exit_invalid_archive);
            EXPECT_NE(std::string(s.error->what()).find("certificates.csv is corrupt: CRC-32"), std::string::npos)
                << s.error->what();
            EXPECT_LT(s.text.size(), csv.size()) << "the whole entry was handed on before the CRC-32 was checked";
        }
}

TEST(EntrySource, LyingSizesAreRefused) {
    const std::string csv = big_csv();
    for (bool deflate : {true, false}) {
        // Declared smaller than it is: stopped as soon as the declared size is passed.
        epc::test::RawEntry small = raw(csv, deflate, false);
        small.size = 100000;
        Streamed s = stream_raw(small);
        ASSERT_TRUE(s.error) << describe(deflate, false);
        EXPECT_EQ(s.error->code(), exit_invalid_archive);
        // A stored entry's two sizes disagree: refused before any byte is read.
        const char* expected = deflate ? "inflates beyond its declared size of 100000 bytes" : "stored, yet";
        EXPECT_NE(std::string(s.error->what()).find(expected), std::string::npos) << s.error->what();
        EXPECT_LE(s.text.size(), 100000u);
        // Declared larger than it is.
        epc::test::RawEntry large = raw(csv, deflate, true);
        large.size = csv.size() + 10;
        s = stream_raw(large);
        ASSERT_TRUE(s.error) << describe(deflate, true);
        EXPECT_EQ(s.error->code(), exit_invalid_archive);
        expected = deflate ? "holds " : "stored, yet";
        EXPECT_NE(std::string(s.error->what()).find(expected), std::string::npos) << s.error->what();
    }
}

TEST(EntrySource, CutDeflateStreamIsCorrupt) {
    epc::test::RawEntry e = raw(big_csv(), true, false);
    e.cut = 1000;
    Streamed s = stream_raw(e);
    ASSERT_TRUE(s.error);
    EXPECT_EQ(s.error->code(), exit_invalid_archive);
    EXPECT_NE(std::string(s.error->what()).find("certificates.csv is corrupt"), std::string::npos) << s.error->what();
}

TEST(EntrySource, OtherCompressionMethodsFallBackToLibzip) {
    if (!zip_compression_method_supported(ZIP_CM_BZIP2, 1)) GTEST_SKIP() << "this libzip has no bzip2";
    const std::string csv = big_csv();
    std::string path = tmp("bzip2.zip");
    int err = 0;
    zip_t* zip = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
    ASSERT_NE(zip, nullptr);
    zip_source_t* src = zip_source_buffer(zip, csv.data(), csv.size(), 0);
    zip_int64_t index = zip_file_add(zip, "certificates.csv", src, 0);
    ASSERT_GE(index, 0);
    ASSERT_EQ(zip_set_file_compression(zip, static_cast<zip_uint64_t>(index), ZIP_CM_BZIP2, 0), 0);
    ASSERT_EQ(zip_close(zip), 0);
    Streamed s = stream_entry(path);
    EXPECT_FALSE(s.error) << s.error->what();
    EXPECT_EQ(s.decoder, EntryDecoder::libzip);
    EXPECT_TRUE(s.text == csv);
}
