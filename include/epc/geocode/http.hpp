// Internals of the HTTP geocoding engine (src/geocode/http.cpp), exposed for the unit tests.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace epc::geocode_http {

// Requests per second a provider allows when the options leave `rate` at 0.
double documented_rate(const std::string& provider);

// Seconds to wait according to a Retry-After header value: either delta-seconds ("120") or an
// HTTP date ("Wed, 21 Oct 2015 07:28:00 GMT"), measured from `now`. nullopt if unreadable; a date in
// the past gives 0.
std::optional<double> parse_retry_after(std::string_view value, std::chrono::system_clock::time_point now);

// RFC 3986 percent-encoding of everything but the unreserved characters.
std::string url_encode(std::string_view text);

// `text` with every occurrence of `secret` (and of its URL-encoded form) replaced by "***":
// the last guard before a URL or an error message reaches a log line.
std::string scrub(std::string text, const std::string& secret);

}  // namespace epc::geocode_http
