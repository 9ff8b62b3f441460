// The CSV hazards of docs/data-formats.md §4, through the real reading path (QuoteAwareSource feeding
// the LineReader, then RecordSplitter).
#include <gtest/gtest.h>

#include "epc/common/types.hpp"
#include "epc/transform/csv.hpp"

using namespace epc;

namespace {

struct Parsed {
    std::vector<std::string> fields;
    std::uint64_t line;
    std::string raw;
};

std::vector<Parsed> parse(const std::string& text, bool backslash = true) {
    CsvReader reader("test.csv", std::make_unique<StringSource>(text), backslash);
    std::vector<Parsed> out;
    Record r;
    while (reader.next(r)) {
        Parsed p;
        for (Field f : r.fields) p.fields.emplace_back(f);
        p.line = r.line;
        p.raw = restore_raw(r.raw);
        out.push_back(p);
    }
    return out;
}

using Fields = std::vector<std::string>;

}  // namespace

TEST(Csv, PlainFieldsAndTrailingEmptyField) {
    auto rows = parse("a,b,c\n1,,3\n4,5,\n");
    ASSERT_EQ(rows.size(), 3u);
    EXPECT_EQ(rows[1].fields, (Fields{"1", "", "3"}));
    EXPECT_EQ(rows[2].fields, (Fields{"4", "5", ""}));
}

TEST(Csv, QuotedCommaAndDoubledQuotes) {
    auto rows = parse("k,addr\n1,\"11, Braddon Road\"\n2,\"The \"\"Old\"\" Mill\"\n3,\"\"\n");
    ASSERT_EQ(rows.size(), 4u);
    EXPECT_EQ(rows[1].fields, (Fields{"1", "11, Braddon Road"}));
    EXPECT_EQ(rows[2].fields, (Fields{"2", "The \"Old\" Mill"}));
    EXPECT_EQ(rows[3].fields, (Fields{"3", ""}));
}

TEST(Csv, QuotedNewlinesKeepRecordsWholeAndCountPhysicalLines) {
    auto rows = parse("k,addr,pc\n1,\"Flat 1\nThe Mill\n\",AB1\n2,plain,CD2\n");
    ASSERT_EQ(rows.size(), 3u);
    EXPECT_EQ(rows[1].fields, (Fields{"1", "Flat 1\nThe Mill\n", "AB1"}));
    EXPECT_EQ(rows[1].line, 2u);
    EXPECT_EQ(rows[2].fields, (Fields{"2", "plain", "CD2"}));
    EXPECT_EQ(rows[2].line, 5u);  // the quoted record spanned lines 2-4
    EXPECT_EQ(rows[1].raw, "1,\"Flat 1\nThe Mill\n\",AB1");
}

TEST(Csv, BackslashEscapedQuotes) {
    auto rows = parse("k,addr\n1,\"The \\\"Old\\\" Mill, Lane\"\n2,x\n");
    ASSERT_EQ(rows.size(), 3u);
    EXPECT_EQ(rows[1].fields, (Fields{"1", "The \"Old\" Mill, Lane"}));
    EXPECT_EQ(rows[2].fields, (Fields{"2", "x"}));
}

TEST(Csv, RfcModeKeepsBackslashLiteral) {
    auto rows = parse("k,path\n1,\"C:\\\"\n2,x\n", /*backslash=*/false);
    ASSERT_EQ(rows.size(), 3u);
    EXPECT_EQ(rows[1].fields, (Fields{"1", "C:\\"}));
}

TEST(Csv, CrlfBomAndBlankLines) {
    auto rows = parse("\xEF\xBB\xBFk,v\r\n1,a\r\n\r\n2,\"x\r\ny\"\r\n\n");
    ASSERT_EQ(rows.size(), 3u);
    EXPECT_EQ(rows[0].fields, (Fields{"k", "v"}));
    EXPECT_EQ(rows[1].fields, (Fields{"1", "a"}));
    EXPECT_EQ(rows[2].fields, (Fields{"2", "x\r\ny"}));
    EXPECT_EQ(rows[2].line, 4u);
}

TEST(Csv, NoNewlineAtEndOfFile) {
    auto rows = parse("k,v\n1,last");
    ASSERT_EQ(rows.size(), 2u);
    EXPECT_EQ(rows[1].fields, (Fields{"1", "last"}));
}

TEST(Csv, QuoteInsideUnquotedFieldIsLiteral) {
    auto rows = parse("k,v,w\n1,12\" pipe,z\n2,a,b\n");
    ASSERT_EQ(rows.size(), 3u);
    EXPECT_EQ(rows[1].fields, (Fields{"1", "12\" pipe", "z"}));
    EXPECT_EQ(rows[2].fields, (Fields{"2", "a", "b"}));
}

TEST(Csv, TextAfterClosingQuoteIsKept) {
    auto rows = parse("k,v,w\n1,\"ab\"cd,z\n");
    ASSERT_EQ(rows[1].fields, (Fields{"1", "abcd", "z"}));
}

TEST(Csv, NulBytesAndInvalidBytesDoNotCutRecords) {
    std::string text = "k,v,w\n1,a";
    text += '\0';
    text += "b,\"q\xFFr\"\n2,c,d\n";
    auto rows = parse(text);
    ASSERT_EQ(rows.size(), 3u);
    EXPECT_EQ(rows[1].fields.size(), 3u);
    EXPECT_EQ(rows[1].fields[1], std::string("a\xFE"
                                             "b"));
    EXPECT_EQ(rows[1].fields[2], std::string("q\xFEr"));  // a real 0xFF is not taken for a newline
    EXPECT_EQ(rows[2].fields, (Fields{"2", "c", "d"}));
}

TEST(Csv, UnclosedQuoteCostsOneRecordNotTheFile) {
    std::string text = "k,v\n1,\"never closed\n";
    std::string filler(kMaxQuotedBytes + 10, 'x');
    text += filler + "\n";
    for (int i = 0; i < 5; ++i) text += std::to_string(i + 10) + ",ok\n";
    auto rows = parse(text);
    ASSERT_GE(rows.size(), 6u);
    // The last five records come through intact.
    for (int i = 0; i < 5; ++i) EXPECT_EQ(rows[rows.size() - 5 + i].fields, (Fields{std::to_string(i + 10), "ok"}));
}

TEST(Csv, LongFileAcrossManyReadBlocks) {
    // Over 32 MiB, read 256 KiB at a time: quoted newlines and records straddle every read's edge.
    std::string text = "k,addr,n\n";
    const int n = 400000;
    for (int i = 0; i < n; ++i)
        text += std::to_string(i) + ",\"" + std::string(50, 'a' + i % 26) + "\n" + std::string(40, 'z') + "\"," +
                std::to_string(i * 2) + "\n";
    CsvReader reader("big.csv", std::make_unique<StringSource>(text));
    Record r;
    ASSERT_TRUE(reader.next(r));
    int count = 0;
    while (reader.next(r)) {
        ASSERT_EQ(r.fields.size(), 3u) << "record " << count;
        ASSERT_EQ(r.fields[0], std::to_string(count));
        ASSERT_EQ(r.fields[1].size(), 91u);
        ASSERT_EQ(r.fields[2], std::to_string(count * 2));
        ASSERT_EQ(r.line, 2u + 2u * count);
        ++count;
    }
    EXPECT_EQ(count, n);
}

namespace {
// Hands out at most `step` bytes per read, so every state crosses buffer boundaries.
class TrickleSource : public io::ByteSourceBase {
public:
    TrickleSource(std::string data, int step) : inner_(std::move(data)), step_(step) {}
    int read(char* buffer, int size) override { return inner_.read(buffer, std::min(size, step_)); }

private:
    StringSource inner_;
    int step_;
};
}  // namespace

TEST(Csv, SameResultWhateverTheReadBoundaries) {
    const std::string text =
        "\xEF\xBB\xBFk,addr,n\r\n1,\"a, \"\"b\"\"\nc\",x\r\n\"2\",\"The \\\"Old\\\" Mill\",y\r\n\r\n3,12\" pipe,\"\"\r\n";
    auto whole = parse(text);
    ASSERT_EQ(whole.size(), 4u);
    EXPECT_EQ(whole[1].fields, (Fields{"1", "a, \"b\"\nc", "x"}));
    EXPECT_EQ(whole[2].fields, (Fields{"2", "The \"Old\" Mill", "y"}));
    EXPECT_EQ(whole[3].fields, (Fields{"3", "12\" pipe", ""}));
    EXPECT_EQ(whole[3].line, 6u);
    for (int step : {2, 3, 5, 7, 11}) {
        CsvReader reader("t.csv", std::make_unique<TrickleSource>(text, step));
        Record r;
        std::size_t i = 0;
        while (reader.next(r)) {
            ASSERT_LT(i, whole.size());
            EXPECT_EQ(std::vector<std::string>(r.fields.begin(), r.fields.end()), whole[i].fields) << "step " << step;
            EXPECT_EQ(r.line, whole[i].line) << "step " << step;
            ++i;
        }
        EXPECT_EQ(i, whole.size()) << "step " << step;
    }
}

TEST(Csv, LongRecordsGrowTheBufferAndTheNextReaderStillReadsRight) {
    // One record of 5 MiB, far longer than a read.
    std::string big = "k,v\n1," + std::string(5 << 20, 'x') + "\n2,y\n";
    auto rows = parse(big);
    ASSERT_EQ(rows.size(), 3u);
    EXPECT_EQ(rows[1].fields[1].size(), 5u << 20);
    EXPECT_EQ(rows[2].fields, (Fields{"2", "y"}));
    // The next reader on this thread takes over the grown buffer.
    auto again = parse("k,v\r\n3,z\r\n");
    ASSERT_EQ(again.size(), 2u);
    EXPECT_EQ(again[1].fields, (Fields{"3", "z"}));
}

TEST(Csv, RecordLongerThanTheLimitStopsTheFileAsBroken) {
    std::string text = "k,v\n1," + std::string(kMaxLineBytes + 10, 'x') + "\n2,y\n";
    try {
        parse(text);
        FAIL() << "no error";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), exit_invalid_archive);
        EXPECT_NE(std::string(e.what()).find("test.csv: record 2 is longer than 16 MiB"), std::string::npos)
            << e.what();
    }
}
