// Duplicate certificate keys: the later occurrences (in archive order: file, then line) leave
// staging for the rejects, the first stays. A Bloom-filter sieve filled while parsing names the
// only keys that can repeat, so the exact check in PostgreSQL looks at those instead of hashing
// every key (a 2 M-group hash aggregate took 2.5-5 s per 2 M rows here).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "epc/db/session.hpp"

namespace epc {

// Bits for a key all sit in one 64-bit word: one atomic fetch_or both tests and sets, so of two
// pipelines inserting the same key at once exactly one sees it as present. Its size is fixed up
// front, so memory stays flat. False positives are then weeded out exactly: every key's 64-bit
// hash also goes to a temporary file (8 bytes a row; 224 MB for 28 M rows, gone with the sieve),
// and a suspect whose hash occurs only once in it was seen only once. The bench's 28 M rows, none
// repeated, left 14,611 suspects, which cost a 10 s scan of staging; the log clears them all in
// well under a second, and with no suspect left the check sends no SQL at all.
class KeySieve {
public:
    explicit KeySieve(std::uint64_t expected_keys);
    ~KeySieve();
    KeySieve(const KeySieve&) = delete;
    KeySieve& operator=(const KeySieve&) = delete;

    // One per parse thread: it buffers the hashes it logs and writes them out in blocks, and it
    // looks a key up in the filter only when the next key arrives, having asked for the key's word
    // to be fetched into the cache meanwhile: the lookup's cache miss on a filter of 16-64 MiB was
    // 10 % of a load's CPU.
    class Writer {
    public:
        explicit Writer(KeySieve& sieve) : sieve_(sieve) {}
        ~Writer();
        Writer(const Writer&) = delete;
        Writer& operator=(const Writer&) = delete;
        // A loaded row's key. It becomes a suspect (see suspects()) when the filter may have seen
        // it before, or always with `always_suspect`.
        void add(std::string_view key, bool always_suspect);

    private:
        void settle();

        KeySieve& sieve_;
        std::vector<std::uint64_t> hashes_;
        std::string pending_key_;  // the key added last, not yet looked up
        std::uint64_t pending_hash_ = 0;
        bool pending_always_ = false;
        bool pending_ = false;
    };

    // The keys that may repeat, less those the log shows to occur once (a key with non-ASCII bytes
    // stays: it may equal another once invalid UTF-8 is replaced), or nullptr when there were too
    // many to be worth listing. Call after every Writer is gone.
    const std::vector<std::string>* suspects();

private:
    // Keeps a key that may repeat, for the exact check.
    void suspect(std::string_view key);
    bool test_and_set(std::uint64_t hash);
    void log(const std::uint64_t* hashes, std::size_t count);
    void drop_single_occurrences();

    // Past this many suspects the filter is too full to help: check every key instead.
    static constexpr std::size_t kMaxSuspects = 1 << 20;
    struct Free {
        void operator()(std::atomic<std::uint64_t>* p) const;
    };
    std::unique_ptr<std::atomic<std::uint64_t>[], Free> words_;  // a power of two of them, on huge pages
    std::uint64_t mask_ = 0;
    std::mutex mutex_;
    std::vector<std::string> suspects_;
    bool overflow_ = false;
    int log_fd_ = -1;          // the hash log (unlinked at once); -1 before the first write
    bool log_failed_ = false;  // then every suspect stays, as before the log existed
    bool checked_ = false;
};

// Moves the later occurrences of repeated keys to the rejects, with the ledger's counts, so
// read = loaded + rejected still holds. `suspects`: the only keys that can repeat, or nullptr to
// check every key. Runs inside the caller's transaction.
void move_duplicates(db::Session& session, long long run_id, const std::vector<std::string>* suspects);

}  // namespace epc
