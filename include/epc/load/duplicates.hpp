// Duplicate certificate keys: the later occurrences (in archive order: file, then line) leave
// staging for the rejects, the first stays. A Bloom-filter sieve filled while parsing names the
// only keys that can repeat, so the exact check in PostgreSQL looks at those instead of hashing
// every key (a 2 M-group hash aggregate took 2.5-5 s per 2 M rows here).
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "epc/db/session.hpp"

namespace epc {

// Bits for a key all sit in one 64-bit word: one atomic fetch_or both tests and sets, so of two
// pipelines inserting the same key at once exactly one sees it as present. Its size is fixed up
// front, so memory stays flat; false positives only cost a little SQL.
class KeySieve {
public:
    explicit KeySieve(std::uint64_t expected_keys);
    // Records the key; true when it may have been seen before.
    bool seen(std::string_view key);
    // Keeps a key that may repeat, for the exact check.
    void suspect(std::string_view key);
    // The keys that may repeat, or nullptr when there were too many to be worth listing.
    const std::vector<std::string>* suspects() const { return overflow_ ? nullptr : &suspects_; }

private:
    // Past this many suspects the filter is too full to help: check every key instead.
    static constexpr std::size_t kMaxSuspects = 1 << 20;
    std::vector<std::atomic<std::uint64_t>> words_;
    std::mutex mutex_;
    std::vector<std::string> suspects_;
    bool overflow_ = false;
};

// Moves the later occurrences of repeated keys to the rejects, with the ledger's counts, so
// read = loaded + rejected still holds. `suspects`: the only keys that can repeat, or nullptr to
// check every key. Runs inside the caller's transaction.
void move_duplicates(db::Session& session, long long run_id, const std::vector<std::string>* suspects);

}  // namespace epc
