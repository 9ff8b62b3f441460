// Reading EPC CSV records: fast-cpp-csv-parser's LineReader does the buffered, double-threaded
// reading; the pieces here make it safe for the EPC dialect (docs/data-formats.md §4).
//
// fccp cuts lines at every '\n' before it looks at quotes, and EPC files have newlines inside
// quoted fields. QuoteAwareSource sits between the byte stream and the LineReader and replaces
// each newline *inside* quotes by a placeholder byte, so every line the LineReader returns is one
// whole record. RecordSplitter then splits a record into fields, unquoting as it goes and turning
// placeholders back into '\n'.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <libfccp/csv.h>

namespace epc {

// 0xFF never occurs in valid UTF-8, so it is free to stand for "newline inside a quoted field".
// A genuine 0xFF byte inside quotes is turned into 0xFE (equally invalid, so it still becomes
// U+FFFD when sanitised); NUL bytes become 0xFE too, because the LineReader NUL-terminates lines.
constexpr char kQuotedNewline = '\xFF';
constexpr char kInvalidByte = '\xFE';

// A quoted field longer than this is taken to be a quote that was never closed: from then on
// newlines end records again, so one stray quote costs one rejected record, not the rest of the file.
constexpr std::size_t kMaxQuotedBytes = 64 * 1024;

class QuoteAwareSource : public io::ByteSourceBase {
public:
    // backslash_escapes: treat \" inside quotes as an escaped quote (files built before
    // 29 April 2026 escape quotes that way).
    QuoteAwareSource(std::unique_ptr<io::ByteSourceBase> inner, bool backslash_escapes);
    int read(char* buffer, int size) override;

private:
    enum class State { outside, quoted, quoted_backslash, quote_seen };
    void scan(char* begin, char* end);

    std::unique_ptr<io::ByteSourceBase> inner_;
    bool backslash_escapes_;
    bool at_start_ = true;  // still before the first byte (a BOM there is not field content)
    State state_ = State::outside;
    char last_byte_ = '\n';  // the byte before this buffer: a quote first in the file opens a field
    std::size_t quoted_bytes_ = 0;
};

// A field of the current record: points into the LineReader's buffer or the splitter's scratch.
using Field = std::string_view;

class RecordSplitter {
public:
    explicit RecordSplitter(bool backslash_escapes) : backslash_escapes_(backslash_escapes) {}
    // Splits line[0, len) into fields (valid until the next call). Returns the number of
    // physical lines the record spans (1 + the quoted newlines in it).
    std::size_t split(const char* line, std::size_t len, std::vector<Field>& fields);

private:
    const char* split_quoted(const char* p, const char* end, std::vector<Field>& fields, std::size_t& lines);

    bool backslash_escapes_;
    std::string scratch_;
};

// One CSV record as read from a file.
struct Record {
    std::vector<Field> fields;
    std::string_view raw;      // the record's text as in the file (placeholders still in place)
    std::uint64_t line = 0;    // physical line number where the record starts (header = 1)
};

// Reads records from a byte source, skipping blank lines.
class CsvReader {
public:
    CsvReader(std::string name, std::unique_ptr<io::ByteSourceBase> source, bool backslash_escapes = true);
    bool next(Record& record);
    const std::string& name() const { return name_; }

private:
    std::string name_;
    io::LineReader lines_;
    RecordSplitter splitter_;
    std::uint64_t next_line_ = 1;
};

// Copies a raw record for human eyes (rejects table): placeholders become newlines again.
std::string restore_raw(std::string_view raw);

// A byte source over an in-memory string (tests, headers).
class StringSource : public io::ByteSourceBase {
public:
    explicit StringSource(std::string data) : data_(std::move(data)) {}
    int read(char* buffer, int size) override;

private:
    std::string data_;
    std::size_t pos_ = 0;
};

}  // namespace epc
