// Geocoding vocabulary shared by the offline providers (reference tables in PostgreSQL) and the
// HTTP providers (postcodes.io, Google, Nominatim, OS Places).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace epc {

// How closely a coordinate locates the property.
enum class Precision { property, street, postcode };
const char* precision_name(Precision precision);

// One distinct address to locate. `key` is the normalised address key (see address_key()).
struct GeocodeQuery {
    std::string key;
    std::string address;                // as loaded (may be empty)
    std::string postcode;               // canonical form "AB1 2CD" (may be empty)
    std::optional<std::uint64_t> uprn;  // any UPRN seen with this address
};

struct GeocodeResult {
    enum class Status { found, not_found, failed };
    Status status = Status::failed;
    double latitude = 0;
    double longitude = 0;
    Precision precision = Precision::postcode;
    std::string error;  // for failed: why (never a key or secret)
};

// Counters an HTTP provider run reports (they go into the run summary).
struct HttpGeocodeStats {
    std::uint64_t requests = 0;
    std::uint64_t found = 0;
    std::uint64_t not_found = 0;
    std::uint64_t failed = 0;
    std::uint64_t retries = 0;
    std::uint64_t http_429 = 0;   // also Google's OVER_QUERY_LIMIT (HTTP 200)
    std::uint64_t malformed = 0;  // responses whose body was not the provider's JSON
    bool circuit_opened = false;  // the breaker opened (or was open) during the call
    double seconds = 0;
};

// An HTTP geocoding provider in the chain (postcodes-io, google, nominatim, os-places).
class HttpGeocoder {
public:
    virtual ~HttpGeocoder() = default;
    virtual std::string name() const = 0;
    virtual Precision precision() const = 0;
    // Geocodes `queries`, calling `done(index, result)` for each as results arrive (from the
    // calling thread), so the caller can write them out in batches. Transient trouble ends as
    // Status::failed, never not_found.
    virtual HttpGeocodeStats geocode(const std::vector<GeocodeQuery>& queries,
                                     const std::function<void(std::size_t, const GeocodeResult&)>& done) = 0;
};

struct HttpGeocoderOptions {
    std::string base_url;   // empty: the provider's real endpoint
    double rate = 0;        // requests per second; 0: the provider's documented limit
    int max_in_flight = 8;  // concurrent requests
    int max_attempts = 5;   // per request, for 429/503/5xx/timeouts
    double max_backoff_seconds = 30;
    double backoff_base_seconds = 0.5;     // first retry waits up to this (full jitter), doubling per attempt
    double max_retry_after_seconds = 300;  // a longer Retry-After fails the request instead of stalling the run
    int breaker_failures = 10;             // consecutive failed requests that open the circuit
    double breaker_open_seconds = 30;      // then one probe request; success closes it again
    double timeout_seconds = 30;
    std::string api_key;  // Google / OS Places (from GOOGLE_API_KEY / OS_PLACES_API_KEY)
    std::string user_agent = "epc-import (https://github.com/epc-import)";
};

// Creates a provider by its chain name; nullptr for an unknown name.
std::unique_ptr<HttpGeocoder> make_http_geocoder(const std::string& name, const HttpGeocoderOptions& options);

}  // namespace epc
