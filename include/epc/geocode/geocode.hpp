// The geocode stage: locate each distinct address once, ever, asking each provider at its own
// precision. Addresses are normalised into a key when loaded; the keys of a release that the
// permanent cache (epc.geocode_cache) does not answer are found in PostgreSQL; they go through the
// chain of providers in order: offline reference files in one join in PostgreSQL; postcode-level
// web services (postcodes.io) by distinct postcode, each postcode once, ever (epc.postcode_cache);
// address-level ones by address. Web answers are written to the caches in batches as they arrive,
// so a crash loses at most one batch.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "epc/common/types.hpp"
#include "epc/db/session.hpp"
#include "epc/geocode/geocoder.hpp"

namespace epc {

// The address key itself is made while loading: address_key() in epc/transform/fields.hpp.

// One link of --geocoder: `uprn:FILE`, `onspd:FILE`, or an HTTP provider name with an optional
// `=URL` endpoint override (postcodes-io, google, nominatim, os-places).
struct ChainLink {
    std::string provider;
    std::string file;      // offline providers
    std::string base_url;  // HTTP providers
};
// Throws Error(exit_usage) with what is wrong (unknown provider, missing file).
std::vector<ChainLink> parse_chain(const std::string& chain);

struct GeocodeOptions {
    std::vector<ChainLink> chain;
    double rate = 0;                // --geocode-rate: requests per second per HTTP provider (0: documented limit)
    int retry_not_found_days = 90;  // cached "not found" answers older than this are asked again
    std::size_t batch = 1000;       // results per cache write
    HttpGeocoderOptions http;       // retry, breaker and concurrency settings for every HTTP provider
};

struct GeocodeSummary {
    std::uint64_t to_locate = 0;  // distinct addresses of the release the cache did not answer
    std::uint64_t sent = 0;       // addresses handed to the chain (all of to_locate)
    std::uint64_t found = 0;
    std::uint64_t not_found = 0;
    std::uint64_t failed = 0;           // transient: not cached, asked again next run
    std::uint64_t postcodes_asked = 0;  // distinct postcodes sent to postcode-level web services
    std::uint64_t http_requests = 0;
    std::uint64_t http_429 = 0;
    std::map<std::string, std::uint64_t> found_by_provider;
    double seconds = 0;
};

// Locates the addresses of the run in the session's staging, taking the type's lock unless the
// session holds it already.
GeocodeSummary geocode(db::Session& session, const GeocodeOptions& options);

}  // namespace epc
