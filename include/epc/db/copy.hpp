// COPY ... FROM STDIN on one connection, as an object: start, put data in any chunking, finish;
// or abort, which makes the server discard what was sent (and the transaction around it fails).
// Binary COPY streams get their signature and trailer here; the tuples themselves come from
// copy_binary.hpp. CopyOut reads a query's rows back in binary, a row at a time, for the few
// places that compare millions of values faster in the importer than in a join.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "epc/db/connection.hpp"

namespace epc::db {

enum class CopyFormat { text, binary };

class CopyIn {
public:
    // `columns`: a column list without parentheses, e.g. "cert_key, lodgement_date".
    CopyIn(Connection& db, const std::string& table, const std::string& columns, CopyFormat format);
    // Aborts a COPY that was neither finished nor aborted (an exception passed by).
    ~CopyIn();
    CopyIn(const CopyIn&) = delete;
    CopyIn& operator=(const CopyIn&) = delete;

    void put(std::string_view data);
    // Ends the stream and checks the server's verdict; throws like Connection::exec.
    void finish();
    // Ends the stream with an error the server reports back as `reason`; never throws.
    void abort(const std::string& reason) noexcept;

private:
    Connection& db_;
    CopyFormat format_;
    bool open_ = false;
};

// COPY (query) TO STDOUT (FORMAT binary): the rows as they arrive, never all at once.
class CopyOut {
public:
    CopyOut(Connection& db, const std::string& query);
    // Reads what is left of a stream not read to its end, so the connection can be used again.
    ~CopyOut();
    CopyOut(const CopyOut&) = delete;
    CopyOut& operator=(const CopyOut&) = delete;

    // The next row's fields (a NULL one has a null data()), valid until the next call; false at
    // the end of the rows. Throws like Connection::exec.
    bool next(std::vector<std::string_view>& fields);

    // Field readers of the binary forms used with it.
    static std::int64_t int8(std::string_view field);
    // A tid ("(block,offset)"), in the text form SQL reads back.
    static std::string tid(std::string_view field);

private:
    void release();

    Connection& db_;
    std::string sql_;
    std::unique_ptr<class StatementTimer> timer_;  // --log-sql: from the start to the last row
    char* message_ = nullptr;                      // libpq's buffer of the current row
    bool header_read_ = false;
    bool done_ = false;
};

}  // namespace epc::db
