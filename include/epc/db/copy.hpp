// COPY ... FROM STDIN on one connection, as an object: start, put data in any chunking, finish;
// or abort, which makes the server discard what was sent (and the transaction around it fails).
// Binary COPY streams get their signature and trailer here; the tuples themselves come from
// copy_binary.hpp.
#pragma once

#include <string>
#include <string_view>

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

}  // namespace epc::db
