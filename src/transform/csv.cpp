#include "epc/transform/csv.hpp"

#include <algorithm>
#include <cstring>
#include <utility>

#include "epc/common/types.hpp"

#ifdef __SSE2__
#include <emmintrin.h>
#endif

namespace epc {

QuoteAwareSource::QuoteAwareSource(std::unique_ptr<io::ByteSourceBase> inner, bool backslash_escapes)
    : inner_(std::move(inner)), backslash_escapes_(backslash_escapes) {}

int QuoteAwareSource::read(char* buffer, int size) {
    // Fill the request: fewer, fuller reads, and only a short read means the end of the file.
    int n = 0;
    while (n < size) {
        int got = inner_->read(buffer + n, size - n);
        if (got <= 0) break;
        n += got;
    }
    if (n <= 0) return n;
    char* begin = buffer;
    if (at_start_) {
        at_start_ = false;
        // The LineReader skips a BOM itself; the scan must only not mistake it for field content.
        if (n >= 3 && std::memcmp(buffer, "\xEF\xBB\xBF", 3) == 0) begin += 3;
    }
    // The scan jumps with strchrnul, which needs a NUL after the data. The last byte's slot serves
    // as that sentinel while the rest is scanned; then the last byte is scanned on its own.
    char tail[2] = {buffer[n - 1], '\0'};
    if (begin < buffer + n - 1) {
        buffer[n - 1] = '\0';
        scan(begin, buffer + n - 1);
    }
    if (begin <= buffer + n - 1) scan(tail, tail + 1);
    buffer[n - 1] = tail[0];
    return n;
}

// The state machine mirrors RecordSplitter: a quote opens a quoted field only at the start of a
// field; inside, "" is a literal quote and (optionally) so is \" ; anything else after a closing
// quote is tolerated as part of an unquoted field. Outside quotes, which is nearly all bytes,
// only quotes (and NULs) need a look, so the scan jumps from one to the next.
void QuoteAwareSource::scan(char* const begin, char* const end) {
    char* p = begin;
    while (p < end) {
        switch (state_) {
            case State::outside: {
                char* q = strchrnul(p, '"');  // stops at the next quote, a NUL, or the sentinel
                if (q == end) {
                    p = end;
                    break;
                }
                if (*q == '\0') {
                    *q = kInvalidByte;  // PostgreSQL text cannot hold NUL
                } else {
                    char before = q > begin ? q[-1] : last_byte_;
                    if (before == ',' || before == '\n') {
                        state_ = State::quoted;
                        quoted_bytes_ = 0;
                    }
                }
                p = q + 1;
                break;
            }
            case State::quoted: {
                // Jump to the next byte that matters inside quotes (strcspn also stops at a NUL).
                std::size_t skip = std::strcspn(p, backslash_escapes_ ? "\"\n\\\xFF" : "\"\n\xFF");
                quoted_bytes_ += skip;
                p += skip;
                if (p == end) break;
                const auto c = static_cast<unsigned char>(*p);
                if (c == '"') {
                    state_ = State::quote_seen;
                } else if (c == '\n') {
                    if (quoted_bytes_ > kMaxQuotedBytes) {
                        state_ = State::outside;  // an unclosed quote: let the record end here
                    } else {
                        *p = kQuotedNewline;
                    }
                } else if (c == 0xFF || c == 0) {
                    *p = kInvalidByte;
                } else if (c == '\\' && backslash_escapes_) {
                    state_ = State::quoted_backslash;
                }
                ++quoted_bytes_;
                ++p;
                break;
            }
            case State::quoted_backslash:
                // A quote right after a backslash is literal; any other byte is handled as usual.
                state_ = State::quoted;
                if (*p == '"') {
                    ++quoted_bytes_;
                    ++p;
                }
                break;
            case State::quote_seen:
                if (*p == '"') {  // doubled quote: still inside
                    state_ = State::quoted;
                    ++p;
                } else {
                    state_ = State::outside;  // closing quote; this byte is outside
                }
                break;
        }
    }
    last_byte_ = end[-1];
}

namespace {

// The next comma at or after `from`, or `end`, 16 bytes at a time (fields are short: a domestic
// row has 92 of them in ~1 KB). Only for the rare text after a quoted field's closing quote.
inline const char* next_comma(const char* from, const char* end) {
#ifdef __SSE2__
    const __m128i comma = _mm_set1_epi8(',');
    while (end - from >= 16) {
        __m128i block = _mm_loadu_si128(reinterpret_cast<const __m128i*>(from));
        const auto mask = static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(block, comma)));
        if (mask) return from + __builtin_ctz(mask);
        from += 16;
    }
#endif
    while (from < end && *from != ',') ++from;
    return from;
}

// The commas of one line as bits, 64 bytes at a time: finding the next comma is then a mask and a
// count of trailing zeros, with no branch on how long the field is. Searching 16 bytes per field
// mispredicted on every field longer than 16 bytes: split took 17 % of the load's CPU, 14 % now
// (what is left is mostly the branch on whether a field starts with a quote).
class CommaBits {
public:
    CommaBits(const char* line, const char* end) : line_(line), end_(end), block_(line), bits_(load(line)) {}
    // The next comma at or after `from` (never before the last position asked for), or end.
    const char* next(const char* from) {
        if (from - block_ >= 64) {
            block_ = line_ + ((from - line_) & ~std::ptrdiff_t{63});
            bits_ = load(block_);
        }
        for (std::uint64_t mask = bits_ & (~0ull << (from - block_));; mask = bits_) {
            if (mask) return block_ + __builtin_ctzll(mask);
            block_ += 64;
            if (block_ >= end_) return end_;
            bits_ = load(block_);
        }
    }

private:
    std::uint64_t load(const char* at) const {
        const auto left = static_cast<std::size_t>(end_ - at);
        if (left >= 64) return bits64(at);
        char tail[64] = {};  // the line's end: never read past it
        std::memcpy(tail, at, left);
        return bits64(tail);
    }
    static std::uint64_t bits64(const char* at) {
        std::uint64_t bits = 0;
#ifdef __SSE2__
        const __m128i comma = _mm_set1_epi8(',');
        for (int i = 0; i < 4; ++i) {
            __m128i block = _mm_loadu_si128(reinterpret_cast<const __m128i*>(at + std::ptrdiff_t{16} * i));
            bits |= static_cast<std::uint64_t>(static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(block, comma))))
                    << (16 * i);
        }
#else
        for (int i = 0; i < 64; ++i) bits |= static_cast<std::uint64_t>(at[i] == ',') << i;
#endif
        return bits;
    }

    const char* const line_;
    const char* const end_;
    const char* block_;
    std::uint64_t bits_;
};

// The next quote or quoted-newline placeholder at or after `from`, or `end`: inside a quoted
// field (an address, ~30 bytes) nothing else needs a look. 16 bytes at a time took split_quoted
// from 5.3 % of the load's CPU to 2.7 %.
inline const char* next_quote_or_placeholder(const char* from, const char* end) {
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"');
    const __m128i placeholder = _mm_set1_epi8(kQuotedNewline);
    while (end - from >= 16) {
        __m128i block = _mm_loadu_si128(reinterpret_cast<const __m128i*>(from));
        __m128i hits = _mm_or_si128(_mm_cmpeq_epi8(block, quote), _mm_cmpeq_epi8(block, placeholder));
        const auto mask = static_cast<unsigned>(_mm_movemask_epi8(hits));
        if (mask) return from + __builtin_ctz(mask);
        from += 16;
    }
#endif
    while (from < end && *from != '"' && *from != kQuotedNewline) ++from;
    return from;
}

}  // namespace

// Reads the quoted field that starts at p (*p == '"'); returns where it ends: at its comma, or end.
// A field without escapes or quoted newlines is a view into the line; the others are unquoted into
// scratch_.
const char* RecordSplitter::split_quoted(const char* p, const char* end, std::vector<Field>& fields,
                                         std::size_t& lines) {
    const char* q = p + 1;
    const char* seg = q;  // start of the not-yet-copied run
    bool copied = false;
    const std::size_t out_start = scratch_.size();
    auto copy_run = [&](const char* to) {
        scratch_.append(seg, to);
        copied = true;
    };
    bool closed = false;
    while ((q = next_quote_or_placeholder(q, end)) < end) {
        const char c = *q;
        if (c == '"') {
            if (backslash_escapes_ && q - 1 > p && q[-1] == '\\') {
                copy_run(q - 1);  // drop the backslash, keep the quote
                seg = q;
                ++q;
                continue;
            }
            if (q + 1 < end && q[1] == '"') {
                copy_run(q + 1);  // keep one of the two quotes
                q += 2;
                seg = q;
                continue;
            }
            closed = true;
            break;
        }
        copy_run(q);  // a quoted-newline placeholder
        scratch_.push_back('\n');
        ++lines;
        seg = ++q;
    }
    if (!copied && !closed) {  // unterminated: the rest of the record
        fields.emplace_back(p + 1, static_cast<std::size_t>(end - (p + 1)));
        return end;
    }
    if (!copied) {
        ++q;  // past the closing quote
        if (q == end || *q == ',') {
            fields.emplace_back(p + 1, static_cast<std::size_t>(q - 1 - (p + 1)));
            return q;
        }
        // Text after the closing quote: keep it, tolerantly, as part of the field.
        scratch_.append(p + 1, q - 1);
    } else {
        copy_run(q);
        if (closed) ++q;
    }
    // The rest up to the next comma (only non-empty after a stray closing quote).
    const char* stop = next_comma(q, end);
    scratch_.append(q, stop);
    fields.emplace_back(scratch_.data() + out_start, scratch_.size() - out_start);
    return stop;
}

std::size_t RecordSplitter::split(const char* line, std::size_t len, std::vector<Field>& fields) {
    fields.clear();
    scratch_.clear();
    // Unquoting only shrinks text, so this capacity is never exceeded and views stay valid.
    if (scratch_.capacity() < len + 1) scratch_.reserve(len + 1);
    std::size_t lines = 1;
    const char* p = line;
    const char* const end = line + len;
    CommaBits commas(line, end);
    for (;;) {
        if (p < end && *p == '"') {
            p = split_quoted(p, end, fields, lines);
        } else {
            const char* stop = commas.next(p);
            fields.emplace_back(p, static_cast<std::size_t>(stop - p));
            p = stop;
        }
        if (p >= end) break;
        ++p;  // past the comma; a trailing comma yields a last, empty field
        if (p == end) {
            fields.emplace_back(end, 0);
            break;
        }
    }
    return lines;
}

namespace {

// Bytes asked of the source per read: small enough that what was just inflated and scanned for
// quotes is still in the core's cache when it is cut into lines and split, large enough that the
// cost of a read call vanishes. The buffer holds two reads, so the unfinished line moved to its
// front before the next read is short.
constexpr std::size_t kReadBytes = 256 << 10;

// The buffer a finished LineReader leaves to the next one on its thread: one per parse thread.
// Thread-local, so no two threads share it.
thread_local std::unique_ptr<char[]> spare_buffer;  // NOLINT(cppcoreguidelines-avoid-non-const-global-variables)
thread_local std::size_t spare_capacity = 0;        // NOLINT(cppcoreguidelines-avoid-non-const-global-variables)

}  // namespace

LineReader::LineReader(std::string name, std::unique_ptr<io::ByteSourceBase> source)
    : name_(std::move(name)), source_(std::move(source)) {
    if (spare_buffer) {
        buffer_ = std::move(spare_buffer);
        capacity_ = std::exchange(spare_capacity, 0);
    } else {
        capacity_ = 2 * kReadBytes;
        buffer_.reset(new char[capacity_]);  // not zeroed: pages are touched only as bytes arrive
    }
}

LineReader::~LineReader() {
    if (buffer_ && capacity_ >= spare_capacity) {
        spare_buffer = std::move(buffer_);
        spare_capacity = capacity_;
    }
}

bool LineReader::next(std::string_view& line) {
    for (;;) {
        const char* const start = buffer_.get() + begin_;
        const std::size_t pending = end_ - begin_;
        if (const void* nl = std::memchr(start + scanned_, '\n', pending - scanned_)) {
            auto len = static_cast<std::size_t>(static_cast<const char*>(nl) - start);
            begin_ += len + 1;
            scanned_ = 0;
            if (len > 0 && start[len - 1] == '\r') --len;
            line = std::string_view(start, len);
            ++lines_;
            return true;
        }
        scanned_ = pending;
        if (at_end_) {
            if (pending == 0) return false;
            begin_ = end_;  // the last line, without '\n'
            scanned_ = 0;
            std::size_t len = pending;
            if (start[len - 1] == '\r') --len;
            line = std::string_view(start, len);
            ++lines_;
            return true;
        }
        refill();
    }
}

// Moves the unfinished line to the front, makes room for it to grow (up to kMaxLineBytes), and
// reads more; sets at_end_ when the source has no more.
void LineReader::refill() {
    const std::size_t pending = end_ - begin_;
    if (begin_ > 0) {
        std::memmove(buffer_.get(), buffer_.get() + begin_, pending);
        begin_ = 0;
        end_ = pending;
    }
    if (end_ == capacity_) {
        if (capacity_ >= kMaxLineBytes)
            throw Error(exit_invalid_archive, name_ + ": record " + std::to_string(lines_ + 1) + " is longer than " +
                                                  std::to_string(kMaxLineBytes >> 20) + " MiB; the file is broken");
        const std::size_t grown = std::min(2 * capacity_, kMaxLineBytes);
        std::unique_ptr<char[]> bigger(new char[grown]);
        std::memcpy(bigger.get(), buffer_.get(), end_);
        buffer_ = std::move(bigger);
        capacity_ = grown;
    }
    const std::size_t want = std::min(capacity_ - end_, kReadBytes);
    const int got = source_->read(buffer_.get() + end_, static_cast<int>(want));
    if (got <= 0) {
        at_end_ = true;
        return;
    }
    if (at_start_ && got >= 3 && std::memcmp(buffer_.get() + end_, "\xEF\xBB\xBF", 3) == 0) begin_ = 3;  // a BOM
    at_start_ = false;
    end_ += static_cast<std::size_t>(got);
}

CsvReader::CsvReader(std::string name, std::unique_ptr<io::ByteSourceBase> source, bool backslash_escapes)
    : name_(std::move(name)), lines_(name_, std::make_unique<QuoteAwareSource>(std::move(source), backslash_escapes)),
      splitter_(backslash_escapes) {}

bool CsvReader::next(Record& record) {
    std::string_view line;
    while (lines_.next(line)) {
        if (line.empty()) {  // blank line (or a lone CR): not a record
            ++next_line_;
            continue;
        }
        record.line = next_line_;
        record.raw = line;
        next_line_ += splitter_.split(line.data(), line.size(), record.fields);
        return true;
    }
    return false;
}

std::string restore_raw(std::string_view raw) {
    std::string out(raw);
    for (char& c : out)
        if (c == kQuotedNewline) c = '\n';
    return out;
}

int StringSource::read(char* buffer, int size) {
    std::size_t n = std::min<std::size_t>(static_cast<std::size_t>(size), data_.size() - pos_);
    std::memcpy(buffer, data_.data() + pos_, n);
    pos_ += n;
    return static_cast<int>(n);
}

}  // namespace epc
