// Internals of the HTTP geocoding engine (src/geocode/http.cpp), exposed for the unit tests.
#pragma once

#include <string>

namespace epc::geocode_http {

// Requests per second a provider allows when the options leave `rate` at 0.
double documented_rate(const std::string& provider);

}  // namespace epc::geocode_http
