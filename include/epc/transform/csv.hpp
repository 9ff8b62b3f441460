// Reading EPC CSV records safely in the EPC dialect (docs/data-formats.md §4).
//
// Lines are cut at every '\n', and EPC files have newlines inside quoted fields. QuoteAwareSource
// sits between the byte stream and the LineReader and replaces each newline *inside* quotes by a
// placeholder byte, so every line the LineReader returns is one whole record. RecordSplitter then
// splits a record into fields, unquoting as it goes and turning placeholders back into '\n'.
// Byte sources are fast-cpp-csv-parser's io::ByteSourceBase.
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
// U+FFFD when sanitised); NUL bytes become 0xFE too, since PostgreSQL text cannot hold them.
constexpr char kQuotedNewline = '\xFF';
constexpr char kInvalidByte = '\xFE';

// A quoted field longer than this is taken to be a quote that was never closed: from then on
// newlines end records again, so one stray quote costs one rejected record, not the rest of the file.
constexpr std::size_t kMaxQuotedBytes = std::size_t{64} * 1024;

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

// A record longer than this stops the load: no EPC record comes near it, so it is a broken file.
constexpr std::size_t kMaxLineBytes = 16 << 20;

// Cuts a byte stream into lines: without their '\n' and one '\r' before it, a UTF-8 byte order
// mark at the start skipped, a last line without '\n' kept. It reads a little at a time into one
// buffer that the next LineReader on the same thread takes over, so the bytes are still in the
// cache when they are split, and no file pays for fresh pages (fast-cpp-csv-parser's LineReader,
// used before, took a new 48 MiB buffer per file: zeroing its pages, moving its blocks and finding
// '\n' a byte at a time came to ~20 % of a load's CPU).
class LineReader {
public:
    LineReader(std::string name, std::unique_ptr<io::ByteSourceBase> source);
    ~LineReader();
    LineReader(const LineReader&) = delete;
    LineReader& operator=(const LineReader&) = delete;
    // The next line (valid until the next call), or false at the end. A line longer than
    // kMaxLineBytes throws Error(exit_invalid_archive).
    bool next(std::string_view& line);

private:
    void refill();

    std::string name_;
    std::unique_ptr<io::ByteSourceBase> source_;
    std::unique_ptr<char[]> buffer_;
    std::size_t capacity_ = 0;
    std::size_t begin_ = 0;    // start of the next line
    std::size_t end_ = 0;      // end of the bytes read
    std::size_t scanned_ = 0;  // bytes from begin_ known to hold no '\n'
    std::uint64_t lines_ = 0;  // handed out so far
    bool at_start_ = true;
    bool at_end_ = false;
};

// One CSV record as read from a file.
struct Record {
    std::vector<Field> fields;
    std::string_view raw;    // the record's text as in the file (placeholders still in place)
    std::uint64_t line = 0;  // physical line number where the record starts (header = 1)
};

// Reads records from a byte source, skipping blank lines.
class CsvReader {
public:
    CsvReader(std::string name, std::unique_ptr<io::ByteSourceBase> source, bool backslash_escapes = true);
    bool next(Record& record);
    const std::string& name() const { return name_; }

private:
    std::string name_;
    LineReader lines_;
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
